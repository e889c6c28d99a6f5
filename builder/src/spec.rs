//! The stack definition: `bundle.yaml` in a stack directory.

use crate::error::{BuildError, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const SPEC_FILE: &str = "bundle.yaml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    pub name: String,
    pub version: String,
    /// Architectures built when `--arch` is not given (e.g. `[amd64, arm64]`).
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default)]
    pub k3s: Option<K3sSpec>,
    #[serde(default)]
    pub images: Vec<ImageSpec>,
    #[serde(default)]
    pub charts: Vec<ChartSpec>,
    /// Directory of Kubernetes manifests, relative to the stack directory.
    #[serde(default = "default_manifests")]
    pub manifests: String,
    /// Extra files or directories carried under `files/`.
    #[serde(default)]
    pub files: Vec<String>,
}

fn default_manifests() -> String {
    "manifests".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sSpec {
    pub version: String,
    /// Directory holding the release files under their upstream names.
    #[serde(default)]
    pub files: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The reference the stack's manifests use, e.g. `docker.io/library/nginx:1.27`.
    pub reference: String,
    /// A local OCI image layout holding the image.
    #[serde(default)]
    pub layout: Option<String>,
    /// The image's name in the layout's index.json (`org.opencontainers.image.ref.name`);
    /// default: the reference, then its tag, then the layout's only image.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartSpec {
    pub name: String,
    pub version: String,
    /// A chart archive made by `helm package`.
    pub archive: String,
}

/// A loaded stack: its directory and its definition.
#[derive(Debug, Clone)]
pub struct Stack {
    pub dir: PathBuf,
    pub spec: StackSpec,
}

impl Stack {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(SPEC_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| BuildError::Read {
            path: path.clone(),
            source,
        })?;
        let spec: StackSpec = serde_yaml_ng::from_str(&text).map_err(|e| BuildError::Spec {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| {
            Err(BuildError::Spec {
                path: path.clone(),
                reason,
            })
        };
        if spec.name.is_empty()
            || !spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(format!(
                "name {:?} must be letters, digits, '-', '_' or '.'",
                spec.name
            ));
        }
        if spec.version.is_empty() {
            return bad("version is empty".into());
        }
        let mut refs = std::collections::HashSet::new();
        for i in &spec.images {
            if !refs.insert(&i.reference) {
                return bad(format!("image {} is listed twice", i.reference));
            }
        }
        Ok(Stack {
            dir: dir.to_path_buf(),
            spec,
        })
    }

    /// A path named in bundle.yaml, resolved against the stack directory.
    pub fn resolve(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

/// Architectures this builder accepts for `--arch` (Go's names, as OCI platforms use).
pub const KNOWN_ARCHES: &[&str] = &["amd64", "arm64", "arm", "ppc64le", "s390x", "riscv64"];
