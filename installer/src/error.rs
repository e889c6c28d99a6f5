//! Errors of the installer library, each with a hint for the operator.

use rin_bundle::BundleError;
use std::path::PathBuf;

pub type Result<T, E = InstallError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Verify(#[from] BundleError),
    #[error("{reason}")]
    Bundle { reason: String },
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl InstallError {
    /// What the operator can do next.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            InstallError::Verify(b) => return b.hint(),
            InstallError::Bundle { .. } => {
                "the bundle is signed but its content is unusable: rebuild it with rinbundle and report the problem"
            }
            InstallError::Registry { .. } => {
                "check that the registry runs and is reachable from this node (--registry), its CA (--registry-ca) and credentials (--registry-auth), and that it has free disk; re-running resumes and skips what it already holds"
            }
            InstallError::Io { .. } => {
                "check the path exists, is readable and that the disk has room"
            }
        })
    }
}
