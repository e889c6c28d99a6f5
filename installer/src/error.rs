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
    #[error("registry {registry}: its certificate is not trusted: {reason}")]
    RegistryCertificate { registry: String, reason: String },
    #[error("the state directory {} is in use by another rininstall (pid {holder})", dir.display())]
    Busy { dir: PathBuf, holder: String },
    #[error("{}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
    #[error("preflight found {} problem(s); nothing was changed:\n{}", failures.len(), failures.iter().map(|f| format!("  - {f}")).collect::<Vec<_>>().join("\n"))]
    Preflight { failures: Vec<String> },
    #[error("{what}: {reason}")]
    Step { what: String, reason: String },
    #[error("{what}: {reason}")]
    Cluster { what: String, reason: String },
    #[error("{object} (from {source_file}) conflicts with fields another manager owns: {message}")]
    Conflict {
        object: String,
        source_file: String,
        message: String,
    },
    /// The API server will not take the object as the stack gives it (a field it does not
    /// know, a value it does not accept).
    #[error("{object} (from {source_file}) was refused by the API server: {message}")]
    Refused {
        object: String,
        source_file: String,
        message: String,
    },
    #[error("after {after}, {} object(s) are not healthy:\n{}", stuck.len(), stuck.iter().map(|s| format!("  - {s}")).collect::<Vec<_>>().join("\n"))]
    Unhealthy { after: String, stuck: Vec<String> },
    #[error("{source_file}, document {document}: {reason}")]
    Manifest {
        source_file: String,
        document: usize,
        reason: String,
    },
    #[error("{}", path.display())]
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
            InstallError::RegistryCertificate { .. } => {
                "give the CA certificate (PEM) that issued the registry's certificate with --registry-ca (a CA file given that did not issue it fails the same way); `openssl s_client -connect HOST:PORT -showcerts` shows the issuer"
            }
            InstallError::Busy { .. } => {
                "wait for the other run to finish (the lock is let go when that process exits, even if it is killed), then run again"
            }
            InstallError::State { .. } => {
                "the state directory holds a damaged record: move it aside and re-run (the install converges again)"
            }
            InstallError::Preflight { .. } => {
                "fix each problem listed (each says how), then run the same command again"
            }
            InstallError::Step { .. } => {
                "fix the cause shown and run the same command again: finished steps are skipped and the rest converges"
            }
            InstallError::Cluster { .. } => {
                "check the cluster with `k3s kubectl get nodes` and the object named; re-running applies again and converges"
            }
            InstallError::Conflict { .. } => {
                "another tool (kubectl, a controller) changed these fields: re-run with --force-conflicts to take them over, or remove that tool's changes"
            }
            InstallError::Unhealthy { .. } => {
                "fix the cause named for each object, then run the same command again: the objects stay applied, nothing was pruned and this release is not recorded (`rininstall status` shows the cluster's state)"
            }
            InstallError::Refused { .. } => {
                "the cluster's Kubernetes does not accept this object as the stack gives it: fix the field it names in the stack and build the bundle again (re-running the same bundle will not help)"
            }
            InstallError::Manifest { .. } => {
                "the stack's manifest is not a valid Kubernetes object: fix it in the stack and build the bundle again"
            }
            InstallError::Io { .. } => {
                "check the path exists, is readable and that the disk has room"
            }
        })
    }
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;

    fn rendered(e: InstallError) -> rin_cli::Rendered {
        rin_cli::rendered(&anyhow::Error::from(e), &|e| {
            e.downcast_ref::<InstallError>()
                .and_then(|i| i.hint().map(str::to_string))
        })
    }

    #[test]
    fn an_error_renders_each_cause_once_with_its_hint() {
        let r = rendered(InstallError::Io {
            path: "/var/lib/rininstall/release.json".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
        assert_eq!(
            r.error,
            "/var/lib/rininstall/release.json: permission denied"
        );
        assert_eq!(
            r.hint.as_deref(),
            Some("check the path exists, is readable and that the disk has room")
        );
        assert_eq!(r.code, rin_cli::exit::ERROR);
        let r = rendered(InstallError::Preflight {
            failures: vec!["one".into(), "two".into()],
        });
        assert_eq!(
            r.error,
            "preflight found 2 problem(s); nothing was changed:\n  - one\n  - two"
        );
        assert!(r.hint.unwrap().starts_with("fix each problem listed"));
    }
}
