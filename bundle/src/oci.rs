//! The parts of the OCI image layout and image specs the bundle uses: media types, descriptors,
//! and the documents' fields we read. Blobs are stored byte for byte and never re-serialised,
//! so these types only need the fields that are read; unknown fields are ignored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const MT_HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// Annotation holding an image's name in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The name containerd gives an image it imports from an OCI archive.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Contents of `oci-layout`.
pub const LAYOUT_FILE: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// Largest manifest, index or config document read into memory.
pub const MAX_DOCUMENT: u64 = 4 << 20;

pub fn is_index(media_type: &str) -> bool {
    media_type == MT_OCI_INDEX || media_type == MT_DOCKER_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type == MT_OCI_MANIFEST || media_type == MT_DOCKER_MANIFEST
}

/// Path of a blob inside an OCI layout: `blobs/sha256/<hex>`.
pub fn blob_path(digest: &str) -> Option<String> {
    crate::digest::digest_hex(digest).map(|h| format!("blobs/sha256/{h}"))
}

/// The bundle's OCI layout directory.
pub const BUNDLE_LAYOUT_DIR: &str = "oci";

/// Path of a blob inside a bundle: `oci/blobs/sha256/<hex>`.
pub fn bundle_blob_path(digest: &str) -> Option<String> {
    blob_path(digest).map(|p| format!("{BUNDLE_LAYOUT_DIR}/{p}"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        rename = "artifactType",
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this descriptor names; None when its fields are empty or malformed.
    pub fn platform(&self) -> Option<crate::Platform> {
        crate::Platform::from_parts(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// An image index or an image manifest, read leniently.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Document {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
}

/// The fields of an image config that say which platform it is for.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl ConfigPlatform {
    /// The platform this config is for; None when its fields are empty or malformed.
    pub fn platform(&self) -> Option<crate::Platform> {
        crate::Platform::from_parts(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// The index `original` with only the manifests whose `keep` flag is set, in their original order
/// and with every other field as it was; written as canonical JSON, so the same selection always
/// has the same digest (the builder and the installer make the same bytes).
pub fn filtered_index(original: &[u8], keep: &[bool]) -> Result<Vec<u8>, serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_slice(original)?;
    if let Some(list) = v.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        let kept: Vec<serde_json::Value> = list
            .drain(..)
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(d, _)| d)
            .collect();
        *list = kept;
    }
    Ok(crate::json::canonical_json(&v))
}
