//! Pulling images from registries with `oci-client`: resolve a reference to its digests (for the
//! lock), then fetch the manifests of the wanted platforms and every blob they name into the
//! cache. Token and basic auth come from `~/.docker/config.json` and its credential helpers.
//! Plain HTTP is used only for loopback registries and for `--insecure-registry` hosts, and
//! only when they do not answer HTTPS.

use crate::cache::Cache;
use crate::error::{BuildError, Result};
use crate::fetched::Arrivals;
use crate::lock::LockedImage;
use crate::net::download::{Body, Downloaded, Downloader};
use crate::net::failure::{classify, is_certificate_error, source_chain};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use rin_bundle::oci::{self, ConfigPlatform, Descriptor, Document};
use rin_bundle::{Arch, Platform};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// Media types asked for when pulling a manifest.
const ACCEPT: &[&str] = &[
    oci::MT_OCI_INDEX,
    oci::MT_OCI_MANIFEST,
    oci::MT_DOCKER_LIST,
    oci::MT_DOCKER_MANIFEST,
];

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) that may be reached over plain HTTP when they do not answer HTTPS.
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM files) trusted for registries, chart repositories and releases.
    pub ca_files: Vec<PathBuf>,
    /// Registry mirrors: (registry, mirror `host[:port]`). Images of that registry are fetched
    /// from the mirror under the same repository path; the bundle keeps their own names and
    /// the digests are checked as always, so a mirror can serve only what the source would.
    pub mirrors: Vec<(String, String)>,
    /// URL mirrors: (prefix, replacement). Helm repositories, chart archives and K3s release
    /// files whose URL starts with the prefix are fetched from the replacement; their checksums
    /// are checked as always.
    pub url_mirrors: Vec<(String, String)>,
    /// How long a connection may send nothing (no response, no byte of a body) before the
    /// request is given up and tried again, resuming what it had; None: [`DEFAULT_STALL`].
    pub stall: Option<std::time::Duration>,
}

use rin_support::DEFAULT_STALL;

impl RegistryOptions {
    /// The stall timeout: [`RegistryOptions::stall`] or [`DEFAULT_STALL`].
    pub fn stall(&self) -> std::time::Duration {
        self.stall.unwrap_or(DEFAULT_STALL)
    }

    pub fn certificates(&self) -> Result<Vec<Vec<u8>>> {
        self.ca_files
            .iter()
            .map(|p| {
                std::fs::read(p).map_err(|source| BuildError::Read {
                    path: p.clone(),
                    source,
                })
            })
            .collect()
    }
}

pub use rin_support::is_loopback;

/// Parse an image reference as Docker does (`nginx` is `docker.io/library/nginx:latest`).
pub fn parse_reference(reference: &str) -> Result<Reference> {
    reference
        .parse::<Reference>()
        .map_err(|e| BuildError::Image {
            image: reference.into(),
            reason: format!("not a valid image reference: {e}"),
        })
}

/// A client for every registry the stack names.
pub struct Registries {
    client: Client,
    auth: HashMap<String, RegistryAuth>,
    mirrors: HashMap<String, String>,
}

impl Registries {
    /// `hosts`: every registry (as `Reference::registry()` names it) that will be contacted.
    pub async fn connect(
        hosts: &[String],
        opts: &RegistryOptions,
        http: &reqwest::Client,
    ) -> Result<Self> {
        let mut hosts = hosts.to_vec();
        hosts.extend(opts.mirrors.iter().map(|(_, m)| m.clone()));
        hosts.sort();
        hosts.dedup();
        let mut plain = Vec::new();
        for h in &hosts {
            if (is_loopback(h) || opts.insecure.iter().any(|i| i == h))
                && !answers_https(http, h).await
            {
                plain.push(h.clone());
            }
        }
        let certs = opts
            .certificates()?
            .into_iter()
            .map(|data| Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            })
            .collect();
        let config = ClientConfig {
            protocol: if plain.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(plain)
            },
            extra_root_certificates: certs,
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(opts.stall()),
            user_agent: concat!("rinbundle/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let client = Client::try_from(config).map_err(|e| BuildError::Fetch {
            what: "registry client".into(),
            reason: e.to_string(),
        })?;
        let mut auth = HashMap::new();
        for h in &hosts {
            auth.insert(h.clone(), credentials(h)?);
        }
        Ok(Registries {
            client,
            auth,
            mirrors: opts.mirrors.iter().cloned().collect(),
        })
    }

    /// `r` as it is fetched: through its registry's mirror, if it has one.
    fn remote(&self, r: &Reference) -> Reference {
        let mut r = r.clone();
        if let Some(m) = self.mirrors.get(r.registry()) {
            r.set_mirror_registry(m.clone());
        }
        r
    }

    fn auth_for(&self, r: &Reference) -> RegistryAuth {
        self.auth
            .get(r.resolve_registry())
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }

    /// Fetch a manifest or index (by tag or digest) with retries: (bytes, digest).
    async fn manifest(&self, net: &Downloader, r: &Reference) -> Result<(Vec<u8>, String)> {
        let what = r.whole();
        let remote = self.remote(r);
        let auth = self.auth_for(&remote);
        let (bytes, digest) = net
            .retry(&what, || async {
                self.client
                    .pull_manifest_raw(&remote, &auth, ACCEPT)
                    .await
                    .map_err(|e| classify(&what, e))
            })
            .await?;
        if bytes.len() as u64 > oci::MAX_DOCUMENT {
            return Err(BuildError::Image {
                image: what,
                reason: format!("manifest is {} bytes, too large", bytes.len()),
            });
        }
        // oci-client checks the body against the digest asked for and the header; check again
        // against what we hash ourselves, since this digest becomes the image's identity.
        let actual = format!("sha256:{}", rin_bundle::digest::sha256_hex(&bytes));
        if actual != digest || r.digest().is_some_and(|d| d != actual) {
            return Err(BuildError::Mismatch {
                what,
                expected: r.digest().unwrap_or(&digest).to_string(),
                actual,
            });
        }
        Ok((bytes.to_vec(), digest))
    }

    /// A manifest as the registry serves it now (by tag or digest); cached by its digest.
    pub async fn manifest_bytes(
        &self,
        net: &Downloader,
        cache: &Cache,
        r: &Reference,
    ) -> Result<Vec<u8>> {
        let (bytes, _) = self.manifest(net, r).await?;
        cache.put(&bytes)?;
        Ok(bytes)
    }

    /// A manifest by digest, from the cache or the registry (then cached).
    async fn manifest_by_digest(
        &self,
        net: &Downloader,
        cache: &Cache,
        r: &Reference,
        digest: &str,
    ) -> Result<Vec<u8>> {
        let hex = digest_hex(digest, r)?;
        if let Some(bytes) = cache.read_small(&hex, oci::MAX_DOCUMENT)? {
            return Ok(bytes);
        }
        let by_digest = r.clone_with_digest(digest.to_string());
        let (bytes, _) = self.manifest(net, &by_digest).await?;
        cache.put(&bytes)?;
        Ok(bytes)
    }

    /// Resolve a reference to its digest and the digests of every platform it offers.
    pub async fn resolve(
        &self,
        net: &Downloader,
        cache: &Cache,
        reference: &str,
    ) -> Result<LockedImage> {
        let r = parse_reference(reference)?;
        let (bytes, digest) = self.manifest(net, &r).await?;
        cache.put(&bytes)?;
        let doc = parse_doc(&bytes, reference)?;
        let mut platforms = BTreeMap::new();
        if let Some(children) = &doc.manifests {
            for c in children {
                if let Some(p) = c.platform.as_ref().and_then(|p| p.platform())
                    && p.os() != "unknown"
                {
                    platforms.insert(p, c.digest.clone());
                }
            }
        } else {
            let config = doc.config.as_ref().ok_or_else(|| BuildError::Image {
                image: reference.into(),
                reason: format!("manifest {digest} has neither `manifests` nor `config`"),
            })?;
            let cp = self.config(net, cache, &r, config).await?;
            platforms.insert(cp, digest.clone());
        }
        Ok(LockedImage {
            reference: reference.into(),
            digest,
            platforms,
        })
    }

    /// The platform an image config says.
    async fn config(
        &self,
        net: &Downloader,
        cache: &Cache,
        r: &Reference,
        desc: &Descriptor,
    ) -> Result<Platform> {
        if desc.size > oci::MAX_DOCUMENT {
            return Err(BuildError::Image {
                image: r.whole(),
                reason: format!("config {} is {} bytes, too large", desc.digest, desc.size),
            });
        }
        let path = self.blob(net, cache, r, desc).await?.path;
        let bytes = std::fs::read(&path).map_err(|source| BuildError::cache(path, source))?;
        let cp: ConfigPlatform = serde_json::from_slice(&bytes).map_err(|e| BuildError::Image {
            image: r.whole(),
            reason: format!("image config {}: {e}", desc.digest),
        })?;
        cp.platform().ok_or_else(|| BuildError::Image {
            image: r.whole(),
            reason: format!(
                "image config {} names no platform (os, architecture)",
                desc.digest
            ),
        })
    }

    /// Make sure the locked image's documents for `arches` are in the cache; return its top
    /// descriptor and every blob the kept platforms need (`true` for a config, `false` for a
    /// layer).
    pub async fn documents(
        &self,
        net: &Downloader,
        cache: &Cache,
        locked: &LockedImage,
        arches: &[Arch],
    ) -> Result<(Descriptor, Vec<(bool, Descriptor)>)> {
        let r = parse_reference(&locked.reference)?;
        let bytes = match self
            .manifest_by_digest(net, cache, &r, &locked.digest)
            .await
        {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => {
                // Say what the tag serves now, so the operator can decide.
                let current = match r.tag() {
                    Some(_) if r.digest().is_none() => self
                        .manifest(net, &r)
                        .await
                        .map(|(_, d)| d)
                        .unwrap_or_else(|e| format!("nothing ({e})")),
                    _ => "nothing under that digest".into(),
                };
                return Err(BuildError::LockGone {
                    image: locked.reference.clone(),
                    locked: locked.digest.clone(),
                    current,
                });
            }
            Err(e) => return Err(e),
        };
        let doc = parse_doc(&bytes, &locked.reference)?;
        let media_type = doc.media_type.clone().unwrap_or_else(|| {
            if doc.manifests.is_some() {
                oci::MT_OCI_INDEX.into()
            } else {
                oci::MT_OCI_MANIFEST.into()
            }
        });
        let top = Descriptor {
            media_type: media_type.clone(),
            digest: locked.digest.clone(),
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
            artifact_type: None,
        };
        let mut blobs = Vec::new();
        let mut add_manifest = |doc: Document| {
            // Configs first: the packer reads them (small); layers are only streamed.
            blobs.extend(doc.config.map(|c| (true, c)));
            blobs.extend(
                doc.layers
                    .unwrap_or_default()
                    .into_iter()
                    .map(|l| (false, l)),
            );
        };
        if oci::is_index(&media_type) {
            for child in doc.manifests.unwrap_or_default() {
                let keep = child
                    .platform
                    .as_ref()
                    .and_then(|p| p.platform())
                    .is_some_and(|p| p.is_linux() && arches.contains(p.arch()));
                if !keep {
                    continue;
                }
                let bytes = self
                    .manifest_by_digest(net, cache, &r, &child.digest)
                    .await?;
                add_manifest(parse_doc(&bytes, &locked.reference)?);
            }
        } else {
            add_manifest(doc);
        }
        Ok((top, blobs))
    }

    /// Fetch one blob into the cache, resuming and retrying.
    pub async fn blob(
        &self,
        net: &Downloader,
        cache: &Cache,
        r: &Reference,
        desc: &Descriptor,
    ) -> Result<Downloaded> {
        let hex = digest_hex(&desc.digest, r)?;
        let remote = self.remote(r);
        let r = &remote;
        let auth = self.auth_for(r);
        self.client
            .store_auth_if_needed(r.resolve_registry(), &auth)
            .await;
        let layer = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size as i64,
            ..Default::default()
        };
        let what = format!("{}@{}", r.repository(), short(&desc.digest));
        net.download(cache, &hex, Some(desc.size), &what, |offset| {
            let layer = layer.clone();
            let what = what.clone();
            async move {
                let resp = self
                    .client
                    .pull_blob_stream_partial(r, &layer, offset, None)
                    .await
                    .map_err(|e| classify(&what, e))?;
                Ok(match resp {
                    oci_client::client::BlobResponse::Full(s) => Body::Full(s.stream),
                    oci_client::client::BlobResponse::Partial(s) => Body::Partial(s.stream),
                })
            }
        })
        .await
    }
}

/// Fetch every blob once, however many images and platforms share it, `jobs` at a time, in
/// digest order (the order the bundle writer reads them), marking each in `arrivals`.
pub async fn fetch_blobs(
    regs: Arc<Registries>,
    net: Arc<Downloader>,
    cache: Arc<Cache>,
    wanted: Vec<(Reference, Descriptor)>,
    jobs: usize,
    arrivals: Arc<Arrivals>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut unique: Vec<_> = wanted
        .into_iter()
        .filter(|(_, d)| seen.insert(d.digest.clone()))
        .collect();
    unique.sort_by(|a, b| a.1.digest.cmp(&b.1.digest));
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (r, d) in unique {
        let (regs, net, cache, sem, arrivals) = (
            regs.clone(),
            net.clone(),
            cache.clone(),
            sem.clone(),
            arrivals.clone(),
        );
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let got = regs.blob(&net, &cache, &r, &d).await?;
            arrivals.done(&d.digest, got.verified);
            Ok(())
        });
    }
    let mut first_err = None;
    while let Some(res) = set.join_next().await {
        let res = res.unwrap_or_else(|e| {
            Err(BuildError::Fetch {
                what: "a download task".into(),
                reason: e.to_string(),
            })
        });
        if let Err(e) = res
            && first_err.is_none()
        {
            // Stop the others: their partial files stay and are resumed next time.
            set.abort_all();
            arrivals.fail_rest(&e.to_string());
            first_err = Some(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

fn digest_hex(digest: &str, r: &Reference) -> Result<String> {
    rin_bundle::digest::digest_hex(digest)
        .map(str::to_string)
        .ok_or_else(|| BuildError::Image {
            image: r.whole(),
            reason: format!("unsupported digest {digest:?} (only sha256 is supported)"),
        })
}

fn parse_doc(bytes: &[u8], image: &str) -> Result<Document> {
    serde_json::from_slice(bytes).map_err(|e| BuildError::Image {
        image: image.into(),
        reason: format!("manifest is not valid JSON: {e}"),
    })
}

fn is_not_found(e: &BuildError) -> bool {
    matches!(e, BuildError::NotFound { .. })
}

/// The repository's registry host for an `oci://` chart repository.
pub fn oci_host(repo: &str) -> Option<String> {
    let rest = repo.strip_prefix("oci://")?;
    Some(rest.split('/').next().unwrap_or_default().to_string())
}

/// Does `host` speak HTTPS? Any HTTP answer counts, and so does a TLS handshake that fails on
/// the certificate (the pull then reports it, rather than silently trying plain HTTP).
async fn answers_https(http: &reqwest::Client, host: &str) -> bool {
    match http
        .get(format!("https://{host}/v2/"))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
    {
        Ok(_) => true,
        Err(e) => is_certificate_error(&format!("{e}: {}", source_chain(&e))),
    }
}

/// Credentials for a registry from the Docker config (`$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`) and its credential helpers; anonymous when none is configured.
fn credentials(host: &str) -> Result<RegistryAuth> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let config = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"));
    if !config.is_some_and(|c| c.exists()) {
        return Ok(RegistryAuth::Anonymous);
    }
    let mut names = vec![host.to_string()];
    if host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io" {
        names.push("https://index.docker.io/v1/".into());
        names.push("index.docker.io".into());
    }
    for name in &names {
        match docker_credential::get_credential(name) {
            Ok(DockerCredential::UsernamePassword(u, p)) => return Ok(RegistryAuth::Basic(u, p)),
            Ok(DockerCredential::IdentityToken(t)) => return Ok(RegistryAuth::Bearer(t)),
            Err(E::NoCredentialConfigured | E::ConfigNotFound) => {}
            Err(e) => {
                return Err(BuildError::Auth {
                    what: format!("registry {host}"),
                    reason: format!("cannot read its credentials from the Docker config: {e}"),
                });
            }
        }
    }
    Ok(RegistryAuth::Anonymous)
}
