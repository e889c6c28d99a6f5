//! Seeding: every image and chart of a verified bundle into the site registry, under its
//! original repository name, digests unchanged.
//!
//! No staging copy of the blobs is made. The bundle is verified in one streaming pass that keeps
//! only the manifests and indexes the signed index names (small JSON documents). The plan then
//! asks the registry which blobs each repository already has. A second streaming pass (only when
//! something is missing) verifies the bundle again and sends each missing blob, while it streams
//! by, as one streamed upload (`POST` then `PUT ?digest=` with the body streamed: memory stays a
//! few MiB however big the layer). A blob needed by several repositories is uploaded once and
//! mounted into the others. Manifests go last, children before indexes, tags last of all, so a
//! tag only appears once everything it points to is in place. The registry checks every blob's
//! digest itself; we check that every tag resolves to the bundle's digest at the end.
//!
//! A failed upload does not stop the pass: the blob is sent again in another pass over the bundle
//! (up to `attempts` passes, with backoff). A killed run resumes by blob: what the registry holds
//! is skipped.

use crate::error::{InstallError, Result};
use bytes::Bytes;
use oci_client::client::{
    Certificate, CertificateEncoding, ClientConfig, ClientProtocol, linux_amd64_resolver,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use rin_bundle::index::{Entry, Index};
use rin_bundle::oci::{self, Descriptor};
use rin_bundle::{Progress, Sink, Trust};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Where and how to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// `host:port` of the site registry.
    pub registry: String,
    /// Plain HTTP (only for loopback, or when asked for explicitly).
    pub plain_http: bool,
    /// PEM CA certificates for the registry's TLS.
    pub ca_files: Vec<PathBuf>,
    /// `user:password` for basic or token auth.
    pub auth: Option<(String, String)>,
    /// Uploads, mounts and checks in flight at once.
    pub jobs: usize,
    /// Passes over the bundle, and tries of each request, before giving up.
    pub attempts: u32,
}

impl SeedOptions {
    pub fn new(registry: &str) -> Self {
        SeedOptions {
            registry: registry.to_string(),
            plain_http: is_loopback(registry),
            ca_files: Vec::new(),
            auth: None,
            jobs: 4,
            attempts: 4,
        }
    }
}

/// True for `localhost`, `127.x.y.z` and `[::1]`, with or without a port.
pub fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// What seeding did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// Blobs uploaded (bytes sent), mounted from another repository, and already present.
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub mounted: usize,
    pub present: usize,
    /// Manifests and indexes pushed, and tags set.
    pub manifests: usize,
    pub tags: Vec<String>,
    /// Passes over the bundle after the verifying one.
    pub passes: u32,
}

/// One manifest or index to push, in push order.
#[derive(Debug, Clone)]
struct Document {
    repo: String,
    digest: String,
    media_type: String,
    bytes: Vec<u8>,
    /// The tag it gets (its original reference's tag), if any.
    tag: Option<String>,
}

/// Everything the registry must hold, read from the verified bundle.
#[derive(Debug, Default)]
pub struct Plan {
    /// Blob digest → repositories that need it (first = where it is uploaded).
    blobs: BTreeMap<String, BTreeSet<String>>,
    /// Blob digest → size.
    sizes: HashMap<String, u64>,
    documents: Vec<Document>,
    /// The signed index's sha256: the second pass must read the same bundle.
    index_sha256: String,
}

impl Plan {
    /// Repositories in the site registry, each with its tags.
    pub fn repositories(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in &self.documents {
            let e = out.entry(d.repo.clone()).or_default();
            if let Some(t) = &d.tag {
                e.push(t.clone());
            }
        }
        out
    }

    /// Total bytes of the distinct blobs.
    pub fn blob_bytes(&self) -> u64 {
        self.sizes.values().sum()
    }
}

/// The repository and tag (if any) an image keeps in the site registry: its path without the
/// registry host, as containerd asks a mirror for it (`docker.io/busybox` → `library/busybox`).
pub fn site_name(reference: &str) -> Result<(String, Option<String>)> {
    let r: Reference = reference.parse().map_err(|e| InstallError::Bundle {
        reason: format!("image reference {reference:?} in the bundle does not parse: {e}"),
    })?;
    Ok((r.repository().to_string(), r.tag().map(str::to_string)))
}

/// The repository charts are pushed to: `charts/<name>`, tagged with the chart version (the
/// layout `helm pull oci://REGISTRY/charts/<name> --version V` expects).
pub fn chart_repository(name: &str) -> String {
    format!("charts/{name}")
}

/// Keeps the bytes of the documents the signed index names, as they stream by.
struct Collect<'a> {
    wanted: &'a BTreeSet<String>,
    docs: HashMap<String, Vec<u8>>,
    cur: Option<Vec<u8>>,
}

impl Sink for Collect<'_> {
    fn begin(&mut self, entry: &Entry) -> rin_bundle::Result<bool> {
        let take = self.wanted.contains(&entry.path) && entry.size <= oci::MAX_DOCUMENT;
        self.cur = take.then(Vec::new);
        Ok(take)
    }
    fn data(&mut self, chunk: &[u8]) -> rin_bundle::Result<()> {
        if let Some(c) = self.cur.as_mut() {
            c.extend_from_slice(chunk);
        }
        Ok(())
    }
    fn end(&mut self, entry: &Entry) -> rin_bundle::Result<()> {
        if let Some(c) = self.cur.take() {
            self.docs.insert(entry.path.clone(), c);
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct ManifestDoc {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct IndexDoc {
    manifests: Vec<Descriptor>,
}

/// Verify the whole bundle (trust first) and work out what the registry must hold.
pub fn plan(bundle: &Path, trust: &dyn Trust, progress: &dyn Progress) -> Result<Plan> {
    let opened = rin_bundle::open(bundle, trust)?;
    let index = opened.index.clone();
    let wanted = document_paths(&index);
    let mut collect = Collect {
        wanted: &wanted,
        docs: HashMap::new(),
        cur: None,
    };
    let verified = opened.verify_into(&mut collect, progress)?;
    let docs = collect.docs;
    let doc = |digest: &str| -> Result<&Vec<u8>> {
        let path = oci::bundle_blob_path(digest).unwrap_or_default();
        docs.get(&path).ok_or_else(|| InstallError::Bundle {
            reason: format!("the manifest {digest} the index names is not in the bundle"),
        })
    };
    let sizes: HashMap<String, u64> = index
        .entries
        .iter()
        .filter_map(|e| {
            let hex = e.path.strip_prefix("oci/blobs/sha256/")?;
            Some((format!("sha256:{hex}"), e.size))
        })
        .collect();
    let mut plan = Plan {
        index_sha256: verified.index_sha256,
        ..Default::default()
    };
    let mut tags: HashMap<(String, String), String> = HashMap::new();
    let add_manifest = |plan: &mut Plan, repo: &str, digest: &str, mt: &str, tag| {
        let bytes = doc(digest)?.clone();
        let m: ManifestDoc = serde_json::from_slice(&bytes).map_err(|e| InstallError::Bundle {
            reason: format!("manifest {digest} does not parse: {e}"),
        })?;
        for d in std::iter::once(&m.config).chain(&m.layers) {
            plan.blobs
                .entry(d.digest.clone())
                .or_default()
                .insert(repo.to_string());
        }
        plan.documents.push(Document {
            repo: repo.to_string(),
            digest: digest.to_string(),
            media_type: mt.to_string(),
            bytes,
            tag,
        });
        Ok::<_, InstallError>(())
    };
    for image in &index.images {
        let (repo, tag) = site_name(&image.reference)?;
        if let Some(t) = &tag {
            let key = (repo.clone(), t.clone());
            if let Some(other) = tags.insert(key, image.reference.clone())
                && other != image.reference
            {
                return Err(InstallError::Bundle {
                    reason: format!(
                        "{other} and {} both become {repo}:{t} in the site registry",
                        image.reference
                    ),
                });
            }
        }
        if oci::is_index(&image.media_type) {
            let bytes = doc(&image.digest)?.clone();
            let idx: IndexDoc =
                serde_json::from_slice(&bytes).map_err(|e| InstallError::Bundle {
                    reason: format!("index {} does not parse: {e}", image.digest),
                })?;
            for child in &idx.manifests {
                add_manifest(&mut plan, &repo, &child.digest, &child.media_type, None)?;
            }
            plan.documents.push(Document {
                repo,
                digest: image.digest.clone(),
                media_type: image.media_type.clone(),
                bytes,
                tag,
            });
        } else {
            add_manifest(&mut plan, &repo, &image.digest, &image.media_type, tag)?;
        }
    }
    for chart in &index.charts {
        let repo = chart_repository(&chart.name);
        add_manifest(
            &mut plan,
            &repo,
            &chart.digest,
            oci::MT_OCI_MANIFEST,
            Some(chart.version.clone()),
        )?;
    }
    plan.sizes = plan
        .blobs
        .keys()
        .map(|d| (d.clone(), sizes.get(d).copied().unwrap_or(0)))
        .collect();
    Ok(plan)
}

/// Bundle paths of every manifest and index the signed index names.
fn document_paths(index: &Index) -> BTreeSet<String> {
    let mut digests: Vec<&str> = Vec::new();
    for i in &index.images {
        digests.push(&i.digest);
        digests.extend(i.platforms.iter().map(|p| p.digest.as_str()));
    }
    digests.extend(index.charts.iter().map(|c| c.digest.as_str()));
    digests
        .into_iter()
        .filter_map(oci::bundle_blob_path)
        .collect()
}

/// The site registry, through `oci-client`.
pub struct Registry {
    client: Arc<Client>,
    host: String,
    auth: RegistryAuth,
    attempts: u32,
}

impl Registry {
    pub fn connect(opts: &SeedOptions) -> Result<Self> {
        let mut certs = Vec::new();
        for f in &opts.ca_files {
            let data = std::fs::read(f).map_err(|source| InstallError::Io {
                path: f.clone(),
                source,
            })?;
            certs.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: if opts.plain_http {
                ClientProtocol::HttpsExcept(vec![opts.registry.clone()])
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: certs,
            // One streamed PUT per blob: no per-chunk round trips, the body never in memory.
            use_monolithic_push: true,
            platform_resolver: Some(Box::new(linux_amd64_resolver)),
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(300)),
            user_agent: concat!("rininstall/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let client = Client::try_from(config).map_err(|e| InstallError::Registry {
            registry: opts.registry.clone(),
            reason: e.to_string(),
        })?;
        let auth = match &opts.auth {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Registry {
            client: Arc::new(client),
            host: opts.registry.clone(),
            auth,
            attempts: opts.attempts.max(1),
        })
    }

    fn at(&self, repo: &str, digest: &str) -> Reference {
        Reference::with_digest(self.host.clone(), repo.to_string(), digest.to_string())
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> InstallError {
        InstallError::Registry {
            registry: self.host.clone(),
            reason: format!("{what}: {e}"),
        }
    }

    async fn ready(&self) {
        self.client
            .store_auth_if_needed(&self.host, &self.auth)
            .await;
    }

    /// Run `f` up to `attempts` times with growing pauses.
    async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<
                Output = std::result::Result<T, oci_client::errors::OciDistributionError>,
            >,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt >= self.attempts => return Err(self.err(what, e)),
                Err(_) => tokio::time::sleep(back_off(attempt)).await,
            }
        }
    }

    async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let r = self.at(repo, digest);
        self.retry(&format!("checking {repo}@{digest}"), || {
            self.client.blob_exists(&r, digest)
        })
        .await
    }

    async fn mount(&self, repo: &str, from: &str, digest: &str) -> bool {
        let to = self.at(repo, digest);
        let src = self.at(from, digest);
        self.client.mount_blob(&to, &src, digest).await.is_ok()
    }

    async fn push_document(&self, d: &Document) -> Result<()> {
        let content_type = d
            .media_type
            .parse()
            .map_err(|e| self.err(&format!("media type of {}", d.digest), e))?;
        let by_digest = self.at(&d.repo, &d.digest);
        self.retry(&format!("pushing {}@{}", d.repo, d.digest), || {
            self.client.push_manifest_raw(
                &by_digest,
                d.bytes.clone(),
                reqwest::header::HeaderValue::clone(&content_type),
            )
        })
        .await?;
        if let Some(tag) = &d.tag {
            let by_tag = Reference::with_tag(self.host.clone(), d.repo.clone(), tag.clone());
            self.retry(&format!("tagging {}:{tag}", d.repo), || {
                self.client.push_manifest_raw(
                    &by_tag,
                    d.bytes.clone(),
                    reqwest::header::HeaderValue::clone(&content_type),
                )
            })
            .await?;
            let got = self
                .retry(&format!("resolving {}:{tag}", d.repo), || {
                    self.client.fetch_manifest_digest(&by_tag, &self.auth)
                })
                .await?;
            if got != d.digest {
                return Err(self.err(
                    &format!("{}:{tag}", d.repo),
                    format!("resolves to {got}, the bundle has {}", d.digest),
                ));
            }
        }
        Ok(())
    }
}

/// How far (MiB) the bundle is read ahead of the uploads.
const READ_AHEAD_MIB: usize = 128;

fn back_off(attempt: u32) -> Duration {
    Duration::from_millis(250 * (1 << attempt.min(5)))
}

/// Uploads the blobs it is told about while the bundle streams by, `jobs` at a time.
struct Upload<'a> {
    reg: &'a Registry,
    rt: Handle,
    /// Blob path → (repository, digest) for blobs to send in this pass.
    send: HashMap<String, (String, String)>,
    jobs: usize,
    /// Bytes read ahead of the uploads, in chunks of at most 1 MiB: the bundle decompresses far
    /// faster than one upload goes, so the next blobs start while earlier ones still send.
    budget: Arc<tokio::sync::Semaphore>,
    cur: Option<mpsc::UnboundedSender<(Bytes, tokio::sync::OwnedSemaphorePermit)>>,
    running: Vec<(String, tokio::task::JoinHandle<bool>)>,
    /// Digests whose upload finished, and the bytes they carried.
    done: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Upload<'_> {
    /// Wait for the oldest uploads until fewer than `limit` run.
    fn settle(&mut self, limit: usize) {
        while self.running.len() >= limit.max(1) {
            let (_, h) = self.running.remove(0);
            let _ = self.rt.block_on(h);
        }
    }
}

impl Sink for Upload<'_> {
    fn begin(&mut self, entry: &Entry) -> rin_bundle::Result<bool> {
        let Some((repo, digest)) = self.send.get(&entry.path).cloned() else {
            return Ok(false);
        };
        self.settle(self.jobs);
        let (tx, rx) = mpsc::unbounded_channel::<(Bytes, tokio::sync::OwnedSemaphorePermit)>();
        let client = self.reg.client.clone();
        let target = self.reg.at(&repo, &digest);
        let done = self.done.clone();
        let size = entry.size;
        let d = digest.clone();
        // A chunk's permit is returned as the chunk is handed to the connection.
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|(bytes, _permit)| (Ok(bytes), rx))
        });
        let task = self.rt.spawn(async move {
            let ok = client
                .push_blob_stream(&target, body, &d, Some(size))
                .await
                .is_ok();
            if ok && let Ok(mut v) = done.lock() {
                v.push((d, size));
            }
            ok
        });
        self.running.push((digest, task));
        self.cur = Some(tx);
        Ok(true)
    }

    fn data(&mut self, chunk: &[u8]) -> rin_bundle::Result<()> {
        let Some(tx) = &self.cur else {
            return Ok(());
        };
        let permit = self
            .rt
            .block_on(self.budget.clone().acquire_owned())
            .expect("the budget is never closed");
        if tx.send((Bytes::copy_from_slice(chunk), permit)).is_err() {
            // The upload failed; its blob is sent again in the next pass.
            self.cur = None;
        }
        Ok(())
    }

    fn end(&mut self, _entry: &Entry) -> rin_bundle::Result<()> {
        // Closing the channel ends the upload's body.
        self.cur = None;
        Ok(())
    }
}

/// Push everything `plan` lists into the registry. Runs the second streaming pass (again
/// verified against `trust`) only when blobs are missing. Call from a thread outside the
/// runtime (it blocks on `rt`).
pub fn seed(
    bundle: &Path,
    trust: &dyn Trust,
    plan: &Plan,
    opts: &SeedOptions,
    rt: &Handle,
    progress: &dyn Progress,
) -> Result<Seeded> {
    let reg = Registry::connect(opts)?;
    rt.block_on(reg.ready());
    let mut seeded = Seeded::default();
    let jobs = opts.jobs.max(1);
    let mut pass = 0;
    loop {
        // Which (repository, blob) pairs are missing.
        let pairs: Vec<(String, String)> = plan
            .blobs
            .iter()
            .flat_map(|(d, repos)| repos.iter().map(move |r| (r.clone(), d.clone())))
            .collect();
        let missing = rt.block_on(missing(&reg, &pairs, jobs))?;
        if pass == 0 {
            seeded.present = pairs.len() - missing.len();
        }
        // Mount what another repository already holds.
        let held: BTreeSet<&(String, String)> =
            pairs.iter().filter(|p| !missing.contains(p)).collect();
        let mut to_send: HashMap<String, (String, String)> = HashMap::new();
        let mut mounts = Vec::new();
        for (repo, digest) in &missing {
            match held.iter().find(|(_, d)| d == digest) {
                Some((from, _)) => mounts.push((repo.clone(), from.clone(), digest.clone())),
                None => {
                    let path = oci::bundle_blob_path(digest).unwrap_or_default();
                    to_send
                        .entry(path)
                        .or_insert_with(|| (repo.clone(), digest.clone()));
                }
            }
        }
        let mounted = rt.block_on(mount_all(&reg, mounts, jobs));
        seeded.mounted += mounted;
        if to_send.is_empty() && missing.len() == mounted {
            break;
        }
        if pass >= opts.attempts.max(1) {
            return Err(InstallError::Registry {
                registry: opts.registry.clone(),
                reason: format!(
                    "{} blobs still missing after {pass} passes over the bundle",
                    missing.len() - mounted
                ),
            });
        }
        if pass > 0 {
            std::thread::sleep(back_off(pass));
        }
        pass += 1;
        if !to_send.is_empty() {
            let opened = rin_bundle::open(bundle, trust)?;
            let mut upload = Upload {
                reg: &reg,
                rt: rt.clone(),
                send: to_send,
                jobs,
                budget: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_MIB)),
                cur: None,
                running: Vec::new(),
                done: Arc::default(),
            };
            let verified = opened.verify_into(&mut upload, progress)?;
            upload.settle(1);
            if verified.index_sha256 != plan.index_sha256 {
                return Err(InstallError::Bundle {
                    reason: "the bundle file changed while it was being installed".into(),
                });
            }
            let done = upload.done.lock().map(|v| v.clone()).unwrap_or_default();
            seeded.uploaded += done.len();
            seeded.uploaded_bytes += done.iter().map(|(_, n)| n).sum::<u64>();
        }
    }
    seeded.passes = pass;
    for d in &plan.documents {
        rt.block_on(reg.push_document(d))?;
        seeded.manifests += 1;
        if let Some(t) = &d.tag {
            seeded.tags.push(format!("{}:{t}", d.repo));
        }
    }
    Ok(seeded)
}

async fn missing(
    reg: &Registry,
    pairs: &[(String, String)],
    jobs: usize,
) -> Result<BTreeSet<(String, String)>> {
    use futures_util::StreamExt;
    let results: Vec<Result<Option<(String, String)>>> = futures_util::stream::iter(pairs)
        .map(|(repo, digest)| async move {
            let has = reg.has_blob(repo, digest).await?;
            Ok((!has).then(|| (repo.clone(), digest.clone())))
        })
        .buffer_unordered(jobs * 4)
        .collect()
        .await;
    let mut out = BTreeSet::new();
    for r in results {
        if let Some(p) = r? {
            out.insert(p);
        }
    }
    Ok(out)
}

async fn mount_all(reg: &Registry, mounts: Vec<(String, String, String)>, jobs: usize) -> usize {
    use futures_util::StreamExt;
    futures_util::stream::iter(mounts)
        .map(|(repo, from, digest)| async move { reg.mount(&repo, &from, &digest).await })
        .buffer_unordered(jobs)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names_keep_the_path_and_drop_the_host() {
        assert_eq!(
            site_name("busybox:1.36").unwrap(),
            ("library/busybox".into(), Some("1.36".into()))
        );
        assert_eq!(
            site_name("ghcr.io/org/app:2").unwrap(),
            ("org/app".into(), Some("2".into()))
        );
        let (repo, tag) = site_name(&format!("quay.io/x/y@sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!((repo.as_str(), tag), ("x/y", None));
        assert!(site_name("has space:1").is_err());
        assert!(site_name("app:").is_err());
    }

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1:5000", "localhost:1", "[::1]:5000", "127.1.2.3"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["registry.site:5000", "10.0.0.1:5000", "[fe80::1]:1"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
