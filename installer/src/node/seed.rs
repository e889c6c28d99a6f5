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
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use rin_bundle::index::{Entry, Index};
use rin_bundle::oci::{self, Descriptor};
use rin_bundle::{Platform, Progress, Sink, Trust};
use rin_support::retry::{Failure, GaveUp, Policy};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// The site's platforms (`linux/arm64`): an image index is pushed with only these children
    /// (a platform-filtered index, see docs/FORMAT.md). None: every platform in the bundle.
    pub platforms: Option<BTreeSet<Platform>>,
}

impl SeedOptions {
    pub fn new(registry: &str) -> Self {
        SeedOptions {
            registry: registry.to_string(),
            plain_http: rin_support::is_loopback(registry),
            ca_files: Vec::new(),
            auth: None,
            jobs: 4,
            attempts: 4,
            platforms: None,
        }
    }
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
    /// Blob digest → repositories that need it.
    blobs: BTreeMap<String, BTreeSet<String>>,
    /// Blob digest → size.
    sizes: BTreeMap<String, u64>,
    documents: Vec<Document>,
    /// The signed index's sha256: the second pass must read the same bundle.
    index_sha256: String,
    /// The index and documents the plan was made from, to narrow it to the site's platforms.
    source: Option<Arc<PlanSource>>,
}

/// The signed index and the documents (bundle path → bytes) a plan was made from.
type PlanSource = (Index, HashMap<String, Vec<u8>>);

impl Plan {
    /// Every (repository, blob digest) pair the registry must hold.
    fn pairs(&self) -> Vec<(String, String)> {
        self.blobs
            .iter()
            .flat_map(|(d, repos)| repos.iter().map(move |r| (r.clone(), d.clone())))
            .collect()
    }
}

/// The repository and tag (if any) an image keeps in the site registry: its path without the
/// registry host, as containerd asks a mirror for it (`docker.io/busybox` → `library/busybox`).
pub fn site_name(reference: &str) -> Result<(String, Option<String>)> {
    let r = parse(reference)?;
    Ok((r.repository().to_string(), r.tag().map(str::to_string)))
}

fn parse(reference: &str) -> Result<Reference> {
    reference.parse().map_err(|e| InstallError::Bundle {
        reason: format!("image reference {reference:?} in the bundle does not parse: {e}"),
    })
}

/// The site names of `references`, refusing two that would share a repository and tag.
pub fn site_names<'a>(
    references: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(String, Option<String>)>> {
    // Each site name and tag, with the first reference that took it, as written and normalised
    // (`org/app:1` and `docker.io/org/app:1` are one image).
    let mut seen: HashMap<(String, String), (&str, String)> = HashMap::new();
    let mut out = Vec::new();
    for reference in references {
        let r = parse(reference)?;
        let (repo, tag, whole) = (
            r.repository().to_string(),
            r.tag().map(str::to_string),
            r.whole(),
        );
        if let Some(t) = &tag
            && let Some((other, other_whole)) =
                seen.insert((repo.clone(), t.clone()), (reference, whole.clone()))
            && other_whole != whole
        {
            return Err(InstallError::Bundle {
                reason: format!(
                    "{other} and {reference} both become {repo}:{t} in the site registry"
                ),
            });
        }
        out.push((repo, tag));
    }
    Ok(out)
}

/// The repository charts are pushed to: `charts/<name>`, tagged with the chart version (the
/// layout `helm pull oci://REGISTRY/charts/<name> --version V` expects).
pub fn chart_repository(name: &str) -> String {
    format!("charts/{name}")
}

/// Keeps the bytes of the documents the signed index names, as they stream by.
pub(crate) struct Collect {
    wanted: BTreeSet<String>,
    /// Other entries to keep (the cluster step's manifests, values and small charts).
    pub(crate) extra: BTreeSet<String>,
    pub(crate) docs: HashMap<String, Vec<u8>>,
    cur: Option<Vec<u8>>,
}

impl Collect {
    /// Collects every manifest and index `index` names.
    pub(crate) fn new(index: &Index) -> Self {
        Collect {
            wanted: document_paths(index),
            extra: BTreeSet::new(),
            docs: HashMap::new(),
            cur: None,
        }
    }
}

impl Sink for Collect {
    fn begin(&mut self, entry: &Entry) -> rin_bundle::Result<bool> {
        let take = (self.wanted.contains(&entry.path) && entry.size <= oci::MAX_DOCUMENT)
            || self.extra.contains(&entry.path);
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
    let mut collect = Collect::new(&index);
    let verified = opened.verify_into(&mut collect, progress)?;
    Plan::build(&index, verified.index_sha256, &collect.docs)
}

impl Plan {
    /// The plan for `index`, from the documents a verifying pass collected.
    pub(crate) fn build(
        index: &Index,
        index_sha256: String,
        docs: &HashMap<String, Vec<u8>>,
    ) -> Result<Plan> {
        let mut plan = plan_from(index, index_sha256, docs, None)?;
        plan.source = Some(Arc::new((index.clone(), docs.clone())));
        Ok(plan)
    }

    /// The plan with every image index cut down to the children for `platforms` (each
    /// `os/arch[/variant]`, as the bundle names them). Images with a single manifest and charts
    /// are kept as they are. Refuses a platform the bundle does not carry, and an index with no
    /// child for any of them.
    pub fn narrowed(&self, platforms: &BTreeSet<Platform>) -> Result<Plan> {
        let Some(source) = &self.source else {
            return Err(InstallError::Bundle {
                reason: "this seeding plan cannot be narrowed to platforms".into(),
            });
        };
        let (index, docs) = source.as_ref();
        if let Some(reason) = platforms_not_carried(index, platforms) {
            return Err(InstallError::Step {
                what: "--platform".into(),
                reason,
            });
        }
        let mut plan = plan_from(index, self.index_sha256.clone(), docs, Some(platforms))?;
        plan.source = self.source.clone();
        Ok(plan)
    }

    /// Blobs the registry must hold (each counted once) and their bytes.
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn blob_bytes(&self) -> u64 {
        self.sizes.values().sum()
    }

    /// The config and layers of the manifest `digest`, if the plan holds it.
    pub fn manifest_blobs(&self, digest: &str) -> Option<Vec<Descriptor>> {
        let d = self.documents.iter().find(|d| d.digest == digest)?;
        let m: ManifestDoc = serde_json::from_slice(&d.bytes).ok()?;
        Some(std::iter::once(m.config).chain(m.layers).collect())
    }

    /// The bytes and media type of the manifest or index `digest`, if the plan holds it.
    pub fn document(&self, digest: &str) -> Option<(&[u8], &str)> {
        let d = self.documents.iter().find(|d| d.digest == digest)?;
        Some((&d.bytes, &d.media_type))
    }

    /// The sha256 of the signed index the plan was made from.
    pub fn index_sha256(&self) -> &str {
        &self.index_sha256
    }
}

fn plan_from(
    index: &Index,
    index_sha256: String,
    docs: &HashMap<String, Vec<u8>>,
    platforms: Option<&BTreeSet<Platform>>,
) -> Result<Plan> {
    let doc = |digest: &str| -> Result<&Vec<u8>> {
        let path = oci::bundle_blob_path(digest).unwrap_or_default();
        docs.get(&path).ok_or_else(|| InstallError::Bundle {
            reason: format!("the manifest {digest} the index names is not in the bundle"),
        })
    };
    let mut plan = Plan {
        index_sha256,
        ..Default::default()
    };
    let add_manifest = |plan: &mut Plan, repo: &str, digest: &str, mt: &str, tag| {
        let bytes = doc(digest)?.clone();
        let m: ManifestDoc = serde_json::from_slice(&bytes).map_err(|e| InstallError::Bundle {
            reason: format!("manifest {digest} does not parse: {e}"),
        })?;
        for d in std::iter::once(&m.config).chain(&m.layers) {
            plan.sizes.insert(d.digest.clone(), d.size);
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
    let names = site_names(index.images.iter().map(|i| i.reference.as_str()))?;
    for (image, (repo, tag)) in index.images.iter().zip(names) {
        if oci::is_index(&image.media_type) {
            let bytes = doc(&image.digest)?.clone();
            let idx: IndexDoc =
                serde_json::from_slice(&bytes).map_err(|e| InstallError::Bundle {
                    reason: format!("index {} does not parse: {e}", image.digest),
                })?;
            let keep: Vec<bool> = idx
                .manifests
                .iter()
                .map(|child| match platforms {
                    None => true,
                    Some(wanted) => {
                        child_platform(image, child).is_some_and(|p| p.matches_any(wanted))
                    }
                })
                .collect();
            if !keep.contains(&true) {
                return Err(InstallError::Step {
                    what: image.reference.clone(),
                    reason: format!(
                        "has no manifest for {} (it has {}); seed it with one of those platforms",
                        rin_bundle::platform::list(platforms.into_iter().flatten()),
                        rin_bundle::platform::list(image.platforms.iter().map(|p| &p.platform))
                    ),
                });
            }
            for (child, _) in idx.manifests.iter().zip(&keep).filter(|(_, k)| **k) {
                add_manifest(&mut plan, &repo, &child.digest, &child.media_type, None)?;
            }
            let (digest, bytes) = if keep.iter().all(|k| *k) {
                (image.digest.clone(), bytes)
            } else {
                let cut = oci::filtered_index(&bytes, &keep).map_err(|e| InstallError::Bundle {
                    reason: format!("index {} does not parse: {e}", image.digest),
                })?;
                (
                    format!("sha256:{}", rin_bundle::digest::sha256_hex(&cut)),
                    cut,
                )
            };
            plan.documents.push(Document {
                repo,
                digest,
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
    Ok(plan)
}

/// The platform of an index's child: from its descriptor, or else from what the signed index
/// says of that manifest.
fn child_platform(image: &rin_bundle::index::Image, child: &Descriptor) -> Option<Platform> {
    child
        .platform
        .as_ref()
        .and_then(|p| p.platform())
        .or_else(|| {
            image
                .platforms
                .iter()
                .find(|p| p.digest == child.digest)
                .map(|p| p.platform.clone())
        })
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
    /// Tries of each request: transient failures are tried again, pauses from 500 ms to 8 s.
    policy: Policy,
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
            policy: policy(opts.attempts),
        })
    }

    fn at(&self, repo: &str, digest: &str) -> Reference {
        Reference::with_digest(self.host.clone(), repo.to_string(), digest.to_string())
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> InstallError {
        InstallError::Registry {
            registry: self.host.clone(),
            // Every request can meet a full disk (blob uploads, manifests, tags): say so.
            reason: format!("{what}: {}", explain(&e.to_string())),
        }
    }

    async fn ready(&self) {
        self.client
            .store_auth_if_needed(&self.host, &self.auth)
            .await;
    }

    /// Run `f` under the retry policy: a transient failure is tried again, a final one (refused
    /// credentials, a name or manifest the registry rejects) ends it at once.
    async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        self.policy
            .run(what, &|_| {}, || {
                let attempt = f();
                async { attempt.await.map_err(classify) }
            })
            .await
            .map_err(|e| match e {
                GaveUp::Fatal(e) | GaveUp::Exhausted { last: e, .. } => self.err(what, causes(&e)),
            })
    }

    /// Whether the registry holds `repo@digest`. One it keeps failing to read (HTTP 5xx: what
    /// it holds for the blob was left damaged, by a full disk say) counts as missing, so the
    /// blob is uploaded again, which rewrites it; a registry that cannot take it either fails
    /// that upload with its own reason.
    async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let r = self.at(repo, digest);
        let what = format!("checking {repo}@{digest}");
        let checked = self
            .policy
            .run(&what, &|_| {}, || async {
                self.client.blob_exists(&r, digest).await.map_err(classify)
            })
            .await;
        match checked {
            Ok(v) => Ok(v),
            Err(GaveUp::Exhausted {
                last: OciDistributionError::RequestError(e),
                ..
            }) if e.status().is_some_and(|s| s.is_server_error()) => Ok(false),
            Err(GaveUp::Fatal(e) | GaveUp::Exhausted { last: e, .. }) => {
                Err(self.err(&what, causes(&e)))
            }
        }
    }

    /// The manifest or index `repo@digest`, if the registry serves it and it hashes to `digest`.
    async fn fetch_document(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        let r = self.at(repo, digest);
        let accept = [
            oci::MT_OCI_MANIFEST,
            oci::MT_OCI_INDEX,
            oci::MT_DOCKER_MANIFEST,
            oci::MT_DOCKER_LIST,
        ];
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&r, &self.auth, &accept)
            .await
            .ok()?;
        let ok = format!("sha256:{}", rin_bundle::digest::sha256_hex(&bytes)) == digest;
        ok.then(|| bytes.to_vec())
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

/// The seeding retry policy: `attempts` tries, pauses from 500 ms doubling to 8 s.
fn policy(attempts: u32) -> Policy {
    Policy {
        attempts: attempts.max(1),
        backoff: Duration::from_millis(500),
        max_delay: Duration::from_secs(8),
    }
}

/// Sort an oci-client error: worth another try (the connection failed or was cut, the registry
/// answered 5xx, 408 or 429, or did not say), or final (credentials refused, a name, tag, digest
/// or manifest rejected, content that does not parse).
fn classify(e: OciDistributionError) -> Failure<OciDistributionError, OciDistributionError> {
    use OciDistributionError as E;
    use oci_client::errors::OciErrorCode as C;
    let transient = match &e {
        E::RequestError(r) => r
            .status()
            .is_none_or(|s| s.is_server_error() || matches!(s.as_u16(), 408 | 429)),
        E::ServerError { code, .. } => *code >= 500 || matches!(code, 408 | 429),
        E::RegistryError { envelope, .. } => !envelope.errors.iter().any(|x| {
            matches!(
                x.code,
                C::Unauthorized
                    | C::Denied
                    | C::NameInvalid
                    | C::TagInvalid
                    | C::ManifestInvalid
                    | C::DigestInvalid
                    | C::SizeInvalid
                    | C::Unsupported
            )
        }),
        E::IoError(_) | E::GenericError(_) => true,
        _ => false,
    };
    if transient {
        Failure::Transient(e)
    } else {
        Failure::Fatal(e)
    }
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
    /// Uploads in flight, oldest first; each yields its size when the registry took the blob.
    running: Vec<tokio::task::JoinHandle<std::result::Result<u64, String>>>,
    /// Sizes of the blobs the registry took.
    sent: Vec<u64>,
    /// Why the last failed upload failed.
    failure: Option<String>,
}

impl Upload<'_> {
    /// Wait for the oldest uploads until fewer than `limit` run.
    fn settle(&mut self, limit: usize) {
        while self.running.len() >= limit.max(1) {
            let h = self.running.remove(0);
            // A failed upload leaves its blob missing: the next round sends it again.
            match self.rt.block_on(h) {
                Ok(Ok(size)) => self.sent.push(size),
                Ok(Err(e)) => self.failure = Some(e),
                Err(e) => self.failure = Some(e.to_string()),
            }
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
        let size = entry.size;
        // A chunk's permit is returned as the chunk is handed to the connection.
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|(bytes, _permit)| (Ok(bytes), rx))
        });
        let task = self.rt.spawn(async move {
            client
                .push_blob_stream(&target, body, &digest, Some(size))
                .await
                .map(|_| size)
                .map_err(|e| format!("uploading {digest}: {}", explain(&causes(&e))))
        });
        self.running.push(task);
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
    let narrowed = site_plan(plan, opts)?;
    let plan = narrowed.as_ref().unwrap_or(plan);
    let reg = Registry::connect(opts)?;
    rt.block_on(reg.ready());
    let mut seeded = Seeded::default();
    let jobs = opts.jobs.max(1);
    let pairs = plan.pairs();
    let mut pass = 0;
    let mut failure: Option<String> = None;
    for round in 0.. {
        // A registry that failed an upload (a full disk) may then fail the checks too, with no
        // reason of their own (a HEAD has no body): the upload's failure is the news.
        let missing =
            rt.block_on(missing(&reg, &pairs, jobs))
                .map_err(|e| match (e, &failure) {
                    (InstallError::Registry { registry, reason }, Some(f)) => {
                        InstallError::Registry {
                            registry,
                            reason: format!("{reason}; an upload before it failed: {f}"),
                        }
                    }
                    (e, _) => e,
                })?;
        if round == 0 {
            seeded.present = pairs.len() - missing.len();
        }
        if missing.is_empty() {
            break;
        }
        // Mount what another repository holds; send what nothing holds or will not mount.
        let holder: HashMap<&str, &str> = pairs
            .iter()
            .filter(|p| !missing.contains(*p))
            .map(|(repo, digest)| (digest.as_str(), repo.as_str()))
            .collect();
        let (mounts, mut unsent): (Vec<_>, Vec<_>) = missing
            .iter()
            .partition(|(_, digest)| holder.contains_key(digest.as_str()));
        let mounts: Vec<_> = mounts
            .into_iter()
            .map(|pair| (pair, holder[pair.1.as_str()]))
            .collect();
        let tried = mounts.len();
        let failed = rt.block_on(mount_all(&reg, mounts, jobs));
        seeded.mounted += tried - failed.len();
        unsent.extend(failed);
        if unsent.is_empty() {
            // Mounted: the next check confirms it.
            if round > opts.attempts.max(1) {
                return Err(still_missing(opts, missing.len(), pass, &failure));
            }
            continue;
        }
        if pass >= opts.attempts.max(1) {
            return Err(still_missing(opts, unsent.len(), pass, &failure));
        }
        if pass > 0 {
            std::thread::sleep(policy(opts.attempts).delay(pass));
        }
        pass += 1;
        // One upload per blob; other repositories mount it in the next round.
        let mut send: HashMap<String, (String, String)> = HashMap::new();
        for (repo, digest) in unsent {
            let path = oci::bundle_blob_path(digest).unwrap_or_default();
            send.entry(path)
                .or_insert_with(|| (repo.clone(), digest.clone()));
        }
        let opened = rin_bundle::open(bundle, trust)?;
        if rin_bundle::digest::sha256_hex(&opened.index_bytes) != plan.index_sha256 {
            return Err(InstallError::Bundle {
                reason: format!(
                    "{} is not the bundle that was verified: it changed while being installed",
                    bundle.display()
                ),
            });
        }
        let mut upload = Upload {
            reg: &reg,
            rt: rt.clone(),
            send,
            jobs,
            budget: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_MIB)),
            cur: None,
            running: Vec::new(),
            sent: Vec::new(),
            failure: None,
        };
        let verified = opened.verify_into(&mut upload, progress);
        upload.settle(1);
        verified?;
        seeded.uploaded += upload.sent.len();
        failure = upload.failure.or(failure);
        seeded.uploaded_bytes += upload.sent.iter().sum::<u64>();
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

/// Why `platforms` cannot be seeded from `index`, if some are of architectures the bundle does
/// not carry.
pub fn platforms_not_carried(index: &Index, platforms: &BTreeSet<Platform>) -> Option<String> {
    let unknown: Vec<&Platform> = platforms
        .iter()
        .filter(|p| !index.platforms.iter().any(|c| c.same_arch(p)))
        .collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "the bundle does not carry {}; it carries {}: name one of those with --platform, or build a bundle with `rinbundle build --arch ...` for it",
            rin_bundle::platform::list(unknown),
            rin_bundle::platform::list(&index.platforms)
        )
    })
}

/// `plan` narrowed to the site's platforms, when `opts` names them.
fn site_plan(plan: &Plan, opts: &SeedOptions) -> Result<Option<Plan>> {
    opts.platforms
        .as_ref()
        .map(|p| plan.narrowed(p))
        .transpose()
}

/// The plan read from the registry instead of the bundle, when the registry already holds every
/// manifest and index the signed index names: each is fetched by its digest and hashed, so
/// nothing unauthenticated is used, and the bundle's entries need not be read at all. None when
/// any is missing (then the bundle is verified and read as usual).
pub fn plan_from_registry(
    index: &Index,
    index_sha256: &str,
    opts: &SeedOptions,
    rt: &Handle,
) -> Result<Option<Plan>> {
    let reg = Registry::connect(opts)?;
    rt.block_on(reg.ready());
    let names = site_names(index.images.iter().map(|i| i.reference.as_str()))?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (image, (repo, _)) in index.images.iter().zip(&names) {
        wanted.push((repo.clone(), image.digest.clone()));
    }
    for chart in &index.charts {
        wanted.push((chart_repository(&chart.name), chart.digest.clone()));
    }
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
    while let Some((repo, digest)) = wanted.pop() {
        let Some(bytes) = rt.block_on(reg.fetch_document(&repo, &digest)) else {
            return Ok(None);
        };
        if let Ok(idx) = serde_json::from_slice::<IndexDoc>(&bytes) {
            wanted.extend(idx.manifests.into_iter().map(|c| (repo.clone(), c.digest)));
        }
        docs.insert(oci::bundle_blob_path(&digest).unwrap_or_default(), bytes);
    }
    Ok(Some(Plan::build(index, index_sha256.to_string(), &docs)?))
}

/// How many blobs (and bytes) the registry lacks for `plan`: what seeding would send or mount.
pub fn missing_blobs(plan: &Plan, opts: &SeedOptions, rt: &Handle) -> Result<(usize, u64)> {
    let narrowed = site_plan(plan, opts)?;
    let plan = narrowed.as_ref().unwrap_or(plan);
    let reg = Registry::connect(opts)?;
    rt.block_on(reg.ready());
    let missing = rt.block_on(missing(&reg, &plan.pairs(), opts.jobs.max(1)))?;
    let digests: BTreeSet<&String> = missing.iter().map(|(_, d)| d).collect();
    let bytes = digests
        .iter()
        .map(|d| plan.sizes.get(*d).copied().unwrap_or(0))
        .sum();
    Ok((digests.len(), bytes))
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

/// An error with the errors under it (`error sending request: ... : Connection refused`), so
/// an unreachable host, a failed name lookup and a refused TLS handshake read differently.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// A registry error with what it means spelled out where the registry only gives a code:
/// Distribution's filesystem driver reports a full disk as `"Err":28` (ENOSPC).
fn explain(e: &str) -> String {
    if e.contains("\"Err\":28") || e.contains("no space left on device") {
        format!("the registry's disk is full (no space left on device): {e}")
    } else {
        e.to_string()
    }
}

fn still_missing(
    opts: &SeedOptions,
    count: usize,
    passes: u32,
    failure: &Option<String>,
) -> InstallError {
    let why = failure
        .as_ref()
        .map(|f| format!("; the last failure: {f}"))
        .unwrap_or_default();
    InstallError::Registry {
        registry: opts.registry.clone(),
        reason: format!("{count} blobs still missing after {passes} passes over the bundle{why}"),
    }
}

/// Mount each (repository, digest) pair from the repository beside it; the pairs that did not.
async fn mount_all<'a>(
    reg: &Registry,
    mounts: Vec<(&'a (String, String), &str)>,
    jobs: usize,
) -> Vec<&'a (String, String)> {
    use futures_util::StreamExt;
    futures_util::stream::iter(mounts)
        .map(|(pair, from)| async move { (!reg.mount(&pair.0, from, &pair.1).await).then_some(pair) })
        .buffer_unordered(jobs)
        .filter_map(std::future::ready)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_and_rejected_content_are_not_retried() {
        use oci_client::errors::{OciEnvelope, OciError, OciErrorCode};
        let transient = |e| matches!(classify(e), Failure::Transient(_));
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        let registry = |code| OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: "m".into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "u".into(),
        };
        assert!(transient(server(503)) && transient(server(429)) && transient(server(408)));
        assert!(!transient(server(404)) && !transient(server(400)));
        assert!(!transient(OciDistributionError::UnauthorizedError {
            url: "u".into()
        }));
        assert!(!transient(OciDistributionError::AuthenticationFailure(
            "no".into()
        )));
        assert!(!transient(registry(OciErrorCode::Denied)));
        assert!(!transient(registry(OciErrorCode::ManifestInvalid)));
        // Distribution reports a full disk as UNKNOWN: tried again, as space may come back.
        assert!(transient(registry(OciErrorCode::Other("UNKNOWN".into()))));
        assert!(transient(OciDistributionError::IoError(
            std::io::Error::other("reset")
        )));
        assert_eq!(policy(4).delay(1), Duration::from_millis(500));
        assert_eq!(policy(4).delay(9), Duration::from_secs(8));
    }

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
    fn two_images_that_would_share_a_site_name_and_tag_are_refused() {
        let e = site_names(["docker.io/org/app:1", "ghcr.io/org/app:1"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker.io/org/app:1 and ghcr.io/org/app:1 both become org/app:1"),
            "{e}"
        );
        // Other tags, digest references and the same reference twice are fine.
        let d = format!("ghcr.io/org/app@sha256:{}", "b".repeat(64));
        let names = site_names(["docker.io/org/app:1", "ghcr.io/org/app:2", &d, "org/app:1"]);
        assert_eq!(names.unwrap().len(), 4);
    }
}
