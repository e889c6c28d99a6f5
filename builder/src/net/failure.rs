//! How a failed request reads: oci-client's errors sorted into "try again" and "final" for the
//! retry policy, with the causes under an error spelled out and certificate failures named.

use crate::error::BuildError;
use crate::net::download::Failure;
use oci_client::errors::{OciDistributionError, OciErrorCode};

/// Sort an oci-client error into "try again" and "final".
pub(crate) fn classify(what: &str, e: OciDistributionError) -> Failure {
    use OciDistributionError as E;
    match e {
        E::RequestError(e) => transport(what, &e),
        E::IoError(e) => Failure::Transient(e.to_string()),
        E::ServerError { code, message, .. } if code >= 500 || code == 429 || code == 408 => {
            Failure::Transient(format!("HTTP {code}: {}", message.trim()))
        }
        E::ServerError { code: 404, .. } | E::ImageManifestNotFoundError(_) => {
            Failure::Fatal(BuildError::NotFound {
                what: what.into(),
                reason: e.to_string(),
            })
        }
        E::RegistryError { ref envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|x| &x.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                Failure::Transient(e.to_string())
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Failure::Fatal(BuildError::NotFound {
                    what: what.into(),
                    reason: e.to_string(),
                })
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                Failure::Fatal(BuildError::Auth {
                    what: what.into(),
                    reason: e.to_string(),
                })
            } else {
                Failure::Fatal(BuildError::Fetch {
                    what: what.into(),
                    reason: e.to_string(),
                })
            }
        }
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
            Failure::Fatal(BuildError::Auth {
                what: what.into(),
                reason: e.to_string(),
            })
        }
        E::DigestError(_) => Failure::Fatal(BuildError::Mismatch {
            what: what.into(),
            expected: "the digest asked for".into(),
            actual: e.to_string(),
        }),
        other => Failure::Fatal(BuildError::Fetch {
            what: what.into(),
            reason: other.to_string(),
        }),
    }
}

/// The causes below an error, joined (reqwest hides the useful part, e.g. "connection refused").
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// A request that failed below HTTP (both clients, registries and plain downloads): a
/// certificate no trusted CA vouches for is final; a timeout is a stall; the rest is tried again.
pub(crate) fn transport(what: &str, e: &reqwest::Error) -> Failure {
    let text = format!("{e}: {}", source_chain(e));
    if is_certificate_error(&text) {
        Failure::Fatal(BuildError::Certificate {
            what: what.into(),
            reason: text,
        })
    } else if is_stall(e) {
        Failure::Transient(format!("no answer: {STALLED}"))
    } else {
        Failure::Transient(text)
    }
}

/// What a timed-out request says: the server sent nothing for the stall timeout.
pub const STALLED: &str = "the server sent nothing for --stall-timeout";

/// Whether `e`, or an error under it, is a timeout (reqwest's, or an I/O `TimedOut`).
pub fn is_stall(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if x.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
            || x.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = x.source();
    }
    false
}

pub use rin_support::is_certificate_error;
