//! The site registry through `oci-client`: connecting (TLS, CA files, basic auth, plain HTTP),
//! the retry policy of every request (`classify` sorts oci-client's errors into transient and
//! final), and what seeding asks of it: which blobs it holds, mounts, manifests, tags.

use super::SeedOptions;
use super::plan::Document;
use crate::error::{InstallError, Result};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use rin_bundle::Progress;
use rin_bundle::oci::{self};
use rin_support::retry::{Failure, GaveUp, Policy};
use std::sync::Arc;
use std::time::Duration;

/// The site registry, through `oci-client`.
pub struct Registry<'p> {
    /// Every request but blob uploads: an answer is due within the stall timeout.
    pub(super) client: Arc<Client>,
    /// Blob uploads: no timeout of reqwest's, which would count from the request's start and so
    /// cut a long upload that is going well; `upload::Watch` ends one the registry stops
    /// taking instead.
    pub(super) uploader: Arc<Client>,
    /// How long the registry may take nothing and answer nothing before a request is given up.
    pub(super) stall: Duration,
    pub(super) host: String,
    pub(super) auth: RegistryAuth,
    /// Tries of each request: transient failures are tried again, pauses from 500 ms to 8 s.
    pub(super) policy: Policy,
    /// Where each retry is reported.
    progress: &'p dyn Progress,
}

impl<'p> Registry<'p> {
    pub fn connect(opts: &SeedOptions, progress: &'p dyn Progress) -> Result<Self> {
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
        let config = |read_timeout: Option<Duration>| ClientConfig {
            protocol: if opts.plain_http {
                ClientProtocol::HttpsExcept(vec![opts.registry.clone()])
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: certs.clone(),
            // One streamed PUT per blob: no per-chunk round trips, the body never in memory.
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(30).min(opts.stall)),
            read_timeout,
            user_agent: concat!("rininstall/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let client = |c: ClientConfig| {
            Client::try_from(c).map_err(|e| InstallError::Registry {
                registry: opts.registry.clone(),
                reason: e.to_string(),
            })
        };
        let auth = match &opts.auth {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Registry {
            client: Arc::new(client(config(Some(opts.stall)))?),
            uploader: Arc::new(client(config(None))?),
            stall: opts.stall,
            host: opts.registry.clone(),
            auth,
            policy: policy(opts.attempts),
            progress,
        })
    }

    pub(super) fn at(&self, repo: &str, digest: &str) -> Reference {
        Reference::with_digest(self.host.clone(), repo.to_string(), digest.to_string())
    }

    pub(super) fn err(&self, what: &str, e: impl std::fmt::Display) -> InstallError {
        let text = e.to_string();
        if rin_support::is_certificate_error(&text) {
            return InstallError::RegistryCertificate {
                registry: self.host.clone(),
                reason: format!("{what}: {text}"),
            };
        }
        InstallError::Registry {
            registry: self.host.clone(),
            // Every request can meet a full disk (blob uploads, manifests, tags): say so.
            reason: format!("{what}: {}", explain(&text)),
        }
    }

    pub(super) async fn ready(&self) {
        for c in [&self.client, &self.uploader] {
            c.store_auth_if_needed(&self.host, &self.auth).await;
        }
    }

    /// Run `f` under the retry policy: a transient failure is tried again, a final one (refused
    /// credentials, a name or manifest the registry rejects) ends it at once.
    pub(super) async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        self.policy
            .run(what, &|r| self.progress.event(&r.into()), || {
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
    pub(super) async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let r = self.at(repo, digest);
        let what = format!("checking {repo}@{digest}");
        let checked = self
            .policy
            .run(&what, &|r| self.progress.event(&r.into()), || async {
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
    pub(super) async fn fetch_document(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
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

    /// The digest `repo:tag` resolves to, or why it does not.
    pub(super) async fn resolve_tag(
        &self,
        repo: &str,
        tag: &str,
    ) -> std::result::Result<String, String> {
        let r = Reference::with_tag(self.host.clone(), repo.to_string(), tag.to_string());
        self.client
            .fetch_manifest_digest(&r, &self.auth)
            .await
            .map_err(|e| explain(&causes(&e)))
    }

    pub(super) async fn mount(&self, repo: &str, from: &str, digest: &str) -> bool {
        let to = self.at(repo, digest);
        let src = self.at(from, digest);
        self.client.mount_blob(&to, &src, digest).await.is_ok()
    }

    pub(super) async fn push_document(&self, d: &Document) -> Result<()> {
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

/// The seeding retry policy: `attempts` tries, pauses from 500 ms doubling to 8 s.
pub(super) fn policy(attempts: u32) -> Policy {
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
        // A certificate the CA files do not vouch for stays so.
        E::RequestError(r) if rin_support::is_certificate_error(&causes(r)) => false,
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

/// An error with the errors under it (`error sending request: ... : Connection refused`), so
/// an unreachable host, a failed name lookup and a refused TLS handshake read differently.
pub(super) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
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
pub(super) fn explain(e: &str) -> String {
    if e.contains("\"Err\":28") || e.contains("no space left on device") {
        format!("the registry's disk is full (no space left on device): {e}")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn refused_credentials_and_rejected_content_are_not_retried() {
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

    #[tokio::test]
    async fn each_retry_of_a_transient_failure_is_reported() {
        use rin_bundle::progress::Event;
        use std::sync::Mutex;
        #[derive(Default)]
        struct Seen(Mutex<Vec<String>>);
        impl Progress for Seen {
            fn event(&self, e: &Event<'_>) {
                if let Event::Retry { what, attempt, .. } = e {
                    self.0.lock().unwrap().push(format!("{what} #{attempt}"));
                }
            }
        }
        let seen = Seen::default();
        // Nothing listens on port 1: a refused connection, which is worth another try.
        let mut opts = SeedOptions::new("127.0.0.1:1");
        opts.attempts = 2;
        let reg = Registry::connect(&opts, &seen).unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        let e = reg.has_blob("r", &digest).await.unwrap_err().to_string();
        assert_eq!(
            *seen.0.lock().unwrap(),
            [format!("checking r@{digest} #1")],
            "{e}"
        );
        assert!(e.contains("registry 127.0.0.1:1"), "{e}");
    }
}
