//! The extraction directory of a verified bundle.

use crate::error::{BundleError, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A fresh extraction directory that only appears at its final path once committed; anything
/// left when it is dropped uncommitted is removed.
pub(super) struct Staging {
    target: PathBuf,
    partial: PathBuf,
    committed: bool,
}

impl Staging {
    pub(super) fn create(target: &Path) -> Result<Self> {
        if target.exists() {
            return Err(BundleError::StagingExists {
                path: target.to_path_buf(),
            });
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "staging".into());
        let partial = target.with_file_name(format!(".{name}.partial"));
        let out = |source| BundleError::Output {
            path: partial.clone(),
            source,
        };
        if partial.exists() {
            // Left by an interrupted run of ours: it never was complete.
            fs::remove_dir_all(&partial).map_err(out)?;
        }
        fs::create_dir_all(&partial).map_err(out)?;
        Ok(Staging {
            target: target.to_path_buf(),
            partial,
            committed: false,
        })
    }

    pub(super) fn create_file(&mut self, rel: &str, mode: u32) -> Result<(File, PathBuf)> {
        // `rel` passed check_entry_path when the signed index was parsed: relative, no `..`.
        let path = self.partial.join(rel);
        let out = |source| BundleError::Output {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(out)?;
        }
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(out)?;
        Ok((f, path))
    }

    pub(super) fn write_whole(&mut self, rel: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let (mut f, p) = self.create_file(rel, mode)?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|source| BundleError::Output { path: p, source })
    }

    /// Make the verified tree durable, then give it its final name: every file was synced when
    /// it was written; here every directory of the tree is synced, the rename is made, and the
    /// parent is synced, so after a power cut the target is either absent or complete.
    pub(super) fn commit(mut self) -> Result<PathBuf> {
        let out = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Output { path, source }
        };
        sync_dirs(&self.partial).map_err(|e| out(&e.path)(e.source))?;
        let renamed = rin_support::fs::rename_synced(&self.partial, &self.target);
        // Renamed even when only the parent's sync failed: nothing is left to remove.
        self.committed = !self.partial.exists();
        renamed.map_err(|e| out(&e.path)(e.source))?;
        Ok(self.target.clone())
    }
}

/// fsync `dir` and every directory below it (files are synced as they are written).
fn sync_dirs(dir: &Path) -> std::result::Result<(), rin_support::fs::FileError> {
    let at = |source| rin_support::fs::FileError {
        path: dir.to_path_buf(),
        source,
    };
    for e in fs::read_dir(dir).map_err(at)? {
        let e = e.map_err(at)?;
        if e.file_type().map_err(at)?.is_dir() {
            sync_dirs(&e.path())?;
        }
    }
    rin_support::fs::sync_dir(dir)
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.partial);
        }
    }
}
