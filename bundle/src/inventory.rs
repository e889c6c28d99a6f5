//! The site inventory (`rininstall inventory`, FORMAT.md section 9): what a site holds, so a
//! connected machine builds a delta against what is truly there. Canonical JSON
//! `{"inventory": INVENTORY, "signatures": SIGS}`, `SIGS` a `rinbundle.sig` document over
//! `INVENTORY`'s canonical bytes by the site's key (empty when the site signed none).

use crate::error::{BundleError, Result};
use crate::json::canonical_json;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The inventory's `format`.
pub const FORMAT: &str = "rinbundle-inventory/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Always [`FORMAT`].
    pub format: String,
    /// The installed release.
    pub stack: crate::index::Stack,
    /// sha256 of the installed release's index.
    pub index_sha256: String,
    /// When it was taken (RFC 3339 UTC).
    pub created: String,
    /// The site registry asked (`host:port`).
    pub registry: String,
    /// Every blob (config or layer) the site registry holds for the release's images and
    /// charts, sorted.
    pub blobs: Vec<String>,
    /// The K3s files in place on the node that took the inventory, sorted by path (relative to
    /// the root: `usr/local/bin/k3s`).
    pub files: Vec<HeldFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    inventory: Inventory,
    signatures: serde_json::Value,
}

impl Inventory {
    /// The file's bytes, with `signatures` (a `rinbundle.sig` document over
    /// [`Inventory::signed_bytes`]).
    pub fn to_file(&self, signatures: &[u8]) -> Result<Vec<u8>> {
        let signatures =
            serde_json::from_slice(signatures).map_err(|e| BundleError::Inventory {
                path: Default::default(),
                reason: format!("the signatures do not parse: {e}"),
            })?;
        Ok(canonical_json(&InventoryFile {
            inventory: self.clone(),
            signatures,
        }))
    }

    /// The bytes the site's key signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        canonical_json(self)
    }
}

/// Read the inventory at `path`: the inventory, its signed bytes and its signature document.
/// Nothing is trusted yet: the caller checks the signatures when it has the site's key.
pub fn read(path: &Path) -> Result<(Inventory, Vec<u8>, Vec<u8>)> {
    let bad = |reason: String| BundleError::Inventory {
        path: path.to_path_buf(),
        reason,
    };
    let (raw, signatures) = crate::json::read_signed(path, "inventory", &bad)?;
    let file: InventoryFile = serde_json::from_value(raw).map_err(|e| bad(e.to_string()))?;
    let inv = file.inventory;
    if inv.format != FORMAT {
        return Err(bad(format!("unknown format {:?}", inv.format)));
    }
    if !crate::digest::is_sha256_hex(&inv.index_sha256)
        || inv.blobs.iter().any(|b| !crate::digest::is_oci_digest(b))
        || inv
            .files
            .iter()
            .any(|f| !crate::digest::is_sha256_hex(&f.sha256))
    {
        return Err(bad("it holds a malformed digest".into()));
    }
    let signed = inv.signed_bytes();
    Ok((inv, signed, signatures))
}
