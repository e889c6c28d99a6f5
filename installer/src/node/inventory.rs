//! `rininstall inventory`: what this site holds (docs/FORMAT.md section 9), so the connected
//! side builds a delta against what is truly here: the installed release, every config and layer
//! of its images and charts that the site registry holds (asked of the registry, blob by blob),
//! and the K3s files in place on this node.

use crate::error::{InstallError, Result};
use crate::node::host;
use crate::node::seed::{self, SeedOptions};
use crate::node::state;
use rin_bundle::Progress;
use rin_bundle::index::Index;
use rin_bundle::inventory::{FORMAT, HeldFile, Inventory};
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

/// Where the installation is and how to reach its registry.
#[derive(Debug, Clone)]
pub struct InventoryOptions {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub seed: SeedOptions,
}

/// Take the inventory. Call from a thread outside the runtime `rt` (it blocks on it).
pub fn take(opts: &InventoryOptions, rt: &Handle, progress: &dyn Progress) -> Result<Inventory> {
    let release = state::read_release(&opts.state_dir)?.ok_or_else(|| InstallError::State {
        path: opts.state_dir.clone(),
        reason: "no release is installed here: a site with nothing installed takes the full bundle"
            .into(),
    })?;
    let bytes = state::kept_index(&opts.state_dir, &release.index_sha256)?;
    let index = Index::from_canonical_json(&bytes)?;
    let blobs = seed::held_blobs(&index, &opts.seed, rt, progress)?;
    Ok(Inventory {
        format: FORMAT.into(),
        stack: index.stack.clone(),
        index_sha256: release.index_sha256.clone(),
        created: rin_bundle::index::format_created(rin_bundle::index::now_epoch()),
        registry: opts.seed.registry.clone(),
        blobs: blobs.into_iter().collect(),
        files: k3s_files(&opts.root)?,
    })
}

/// The K3s binary and air-gap image archives in place under `root`, hashed.
fn k3s_files(root: &Path) -> Result<Vec<HeldFile>> {
    let mut paths = vec![host::K3S_BIN.to_string()];
    if let Ok(dir) = std::fs::read_dir(root.join(host::IMAGES_DIR)) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("k3s-airgap-images-") {
                paths.push(format!("{}/{name}", host::IMAGES_DIR));
            }
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let path = root.join(&p);
        let io = |source| InstallError::Io {
            path: path.clone(),
            source,
        };
        let Ok(f) = std::fs::File::open(&path) else {
            continue;
        };
        let (sha256, size) = rin_bundle::digest::sha256_reader(f).map_err(io)?;
        out.push(HeldFile {
            path: p,
            size,
            sha256,
        });
    }
    Ok(out)
}
