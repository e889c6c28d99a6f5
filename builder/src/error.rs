use std::path::PathBuf;

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stack definition {path}: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("image {image} has no {platform} manifest (it has: {available})")]
    MissingPlatform {
        image: String,
        platform: String,
        available: String,
    },
    #[error("{path} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("chart {chart}: {reason}")]
    Chart { chart: String, reason: String },
    #[error("K3s {version}: {reason}")]
    K3s { version: String, reason: String },
    #[error("two entries would have the path {path:?}")]
    PathClash { path: String },
    #[error(transparent)]
    Bundle(#[from] rin_bundle::BundleError),
}

impl BuildError {
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            BuildError::Read { .. } => {
                "check that the stack directory holds every file bundle.yaml names"
            }
            BuildError::Spec { .. } => "fix bundle.yaml; docs/STACK.md describes every field",
            BuildError::Image { .. } => {
                "check the image's `layout:` directory: it must be an OCI image layout (oci-layout, index.json, blobs/)"
            }
            BuildError::MissingPlatform { .. } => {
                "build the image for that architecture too, or leave the architecture out with --arch"
            }
            BuildError::DigestMismatch { .. } => {
                "the source is corrupt: rebuild or re-export that image or file"
            }
            BuildError::Chart { .. } => {
                "package the chart with `helm package` and check name and version in bundle.yaml"
            }
            BuildError::K3s { .. } => {
                "put the K3s release files (k3s, k3s-arm64, k3s-airgap-images-<arch>.tar.zst, sha256sum-<arch>.txt, install.sh) in the k3s.files directory"
            }
            BuildError::PathClash { .. } => "rename one of the files",
            BuildError::Bundle(b) => return b.hint(),
        })
    }
}
