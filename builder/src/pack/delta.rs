//! Delta bundles (docs/FORMAT.md section 9): what a site holds already, read from the base (the
//! previous bundle's file or parts, its index, or a site inventory), and a planned bundle with
//! all of that left out.
//!
//! Left out: image configs and layers the base holds (the site registry has them), and the K3s
//! binary and air-gap image archives the base holds (the nodes have them in place). Always
//! carried, whatever the base holds: every manifest and index the signed index names and every
//! chart archive (the installer reads them from the bundle to plan, seed and deploy; they are a
//! few KiB), and every other entry (manifests, values, files, K3s's `install.sh` and checksums,
//! the installer).

use crate::error::{BuildError, Result};
use rin_bundle::index::{Base, Entry, Index};
use rin_bundle::{Arch, Source};
use rin_signing::TrustPolicy;
use std::collections::BTreeSet;
use std::path::Path;

/// What the site holds, by the base.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    /// The base release's index sha256.
    pub index_sha256: String,
    /// Blob digests.
    pub blobs: BTreeSet<String>,
    /// sha256 of K3s files.
    pub files: BTreeSet<String>,
    /// The inventory's signed bytes' sha256, when the base is a site inventory.
    pub inventory: Option<String>,
    /// The base release, for messages (`demo 1.0.0`).
    pub release: String,
}

fn base_error(path: &Path, reason: impl Into<String>) -> BuildError {
    BuildError::Base {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Read the base at `path`: a bundle file, its part list (or a part), its `rinbundle.json`, or a
/// site inventory (`rininstall inventory`). With `trust`, the base must be signed by it (an index
/// alone carries no signature and is then refused). Without, the base is taken as it says: the
/// site checks that it holds what the delta leaves out before anything changes.
pub fn read_base(path: &Path, trust: Option<&TrustPolicy>) -> Result<Holds> {
    let mut head = [0u8; 4];
    let is_bundle = rin_bundle::parts::list_of(path).is_some() || {
        use std::io::Read as _;
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && head == rin_bundle::writer::FRAME_HEADER[..4]
    };
    if is_bundle {
        let (index_bytes, sigs) = rin_bundle::peek(path)?;
        if let Some(t) = trust {
            t.evaluate(&index_bytes, &sigs)
                .map_err(|e| base_error(path, format!("its signatures were refused: {e}")))?;
        }
        let index = Index::from_canonical_json(&index_bytes)?;
        return Ok(holds_of(
            &index,
            rin_bundle::digest::sha256_hex(&index_bytes),
        ));
    }
    let bytes = std::fs::read(path).map_err(|source| BuildError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        base_error(
            path,
            format!("it is neither a bundle, a rinbundle.json nor a site inventory: {e}"),
        )
    })?;
    if value.get("inventory").is_some() {
        let (inv, signed, sigs) = rin_bundle::inventory::read(path)?;
        if let Some(t) = trust {
            t.evaluate(&signed, &sigs).map_err(|e| {
                base_error(path, format!("the site's signatures were refused: {e}"))
            })?;
        }
        return Ok(Holds {
            index_sha256: inv.index_sha256.clone(),
            blobs: inv.blobs.iter().cloned().collect(),
            files: inv.files.iter().map(|f| f.sha256.clone()).collect(),
            inventory: Some(rin_bundle::digest::sha256_hex(&signed)),
            release: format!("{} {}", inv.stack.name, inv.stack.version),
        });
    }
    if trust.is_some() {
        return Err(base_error(
            path,
            "an index alone carries no signature: give the base bundle (or its part list) with --base-key",
        ));
    }
    let index = Index::from_canonical_json(&bytes)?;
    Ok(holds_of(&index, rin_bundle::digest::sha256_hex(&bytes)))
}

/// What a site that installed `index` holds: every blob and K3s file it carries, and what it
/// left out itself when it is a delta (the site held those already).
fn holds_of(index: &Index, index_sha256: String) -> Holds {
    let mut h = Holds {
        index_sha256,
        release: format!("{} {}", index.stack.name, index.stack.version),
        ..Default::default()
    };
    let blob_prefix = "oci/blobs/sha256/";
    let k3s_prefix = format!("{}/", rin_bundle::k3s::DIR);
    for e in &index.entries {
        if let Some(hex) = e.path.strip_prefix(blob_prefix) {
            h.blobs.insert(format!("sha256:{hex}"));
        } else if e.path.starts_with(&k3s_prefix) {
            h.files.insert(e.sha256.clone());
        }
    }
    if let Some(b) = &index.base {
        h.blobs.extend(b.blobs.iter().cloned());
        h.files.extend(b.files.iter().map(|f| f.sha256.clone()));
    }
    h
}

/// Leave out of the planned bundle (`index` with one source per entry) what `holds` holds, and
/// record it as the index's `base`.
pub fn leave_out(index: &mut Index, sources: &mut Vec<Source>, holds: &Holds) {
    let mut carried: BTreeSet<String> = BTreeSet::new();
    for i in &index.images {
        carried.insert(i.digest.clone());
        carried.extend(i.platforms.iter().map(|p| p.digest.clone()));
    }
    for c in &index.charts {
        carried.insert(c.digest.clone());
        carried.insert(format!("sha256:{}", c.archive_sha256));
    }
    let big_k3s: BTreeSet<String> = index
        .platforms
        .iter()
        .flat_map(|p| {
            let arch: Arch = p.arch().clone();
            let airgap = rin_bundle::k3s::airgap_images(&arch);
            std::iter::once(rin_bundle::k3s::binary(&arch)).chain(
                rin_bundle::k3s::AIRGAP_SUFFIXES
                    .iter()
                    .map(move |z| format!("{airgap}{z}")),
            )
        })
        .map(|name| rin_bundle::k3s::path(&name))
        .collect();
    let mut base = Base {
        index_sha256: holds.index_sha256.clone(),
        blobs: Vec::new(),
        files: Vec::new(),
        size: 0,
        inventory: holds.inventory.clone(),
    };
    let entries = std::mem::take(&mut index.entries);
    let all_sources = std::mem::take(sources);
    for (e, s) in entries.into_iter().zip(all_sources) {
        match left_out(&e, holds, &carried, &big_k3s) {
            Some(LeftOut::Blob(d)) => {
                base.size += e.size;
                base.blobs.push(d);
            }
            Some(LeftOut::File) => {
                base.size += e.size;
                base.files.push(e);
            }
            None => {
                index.entries.push(e);
                sources.push(s);
            }
        }
    }
    // Left-out entries are never documents, and the rest of the entries are in path order, so
    // both lists come out sorted.
    index.base = Some(base);
}

enum LeftOut {
    Blob(String),
    File,
}

fn left_out(
    e: &Entry,
    holds: &Holds,
    carried: &BTreeSet<String>,
    big_k3s: &BTreeSet<String>,
) -> Option<LeftOut> {
    if let Some(hex) = e.path.strip_prefix("oci/blobs/sha256/") {
        let d = format!("sha256:{hex}");
        return (holds.blobs.contains(&d) && !carried.contains(&d)).then_some(LeftOut::Blob(d));
    }
    (big_k3s.contains(&e.path) && holds.files.contains(&e.sha256)).then_some(LeftOut::File)
}
