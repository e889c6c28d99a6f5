//! The content-addressed download cache (`~/.cache/rinbundle`, or `--cache DIR`), which the
//! network half fills ([`crate::net::download`]) and the packing half reads.
//!
//! The cache is an OCI image layout's blob store: `blobs/sha256/<hex>`, plus an `oci-layout` file,
//! so the packer reads images from it exactly as from any local layout. Blobs, chart archives and
//! K3s files all live there by their sha256; a file under its final name is always complete and
//! verified.

use crate::error::{BuildError, Result};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// Open (creating it if needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|source| BuildError::cache(blobs.clone(), source))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, rin_bundle::oci::LAYOUT_FILE.as_bytes())?;
        }
        Ok(Cache {
            root: root.to_path_buf(),
        })
    }

    /// The default location: `$XDG_CACHE_HOME/rinbundle`, else `~/.cache/rinbundle`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("rinbundle"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this sha256 (hex) lives once complete.
    pub fn blob(&self, hex: &str) -> PathBuf {
        self.root.join("blobs").join("sha256").join(hex)
    }

    pub(crate) fn partial(&self, hex: &str) -> PathBuf {
        self.root
            .join("blobs")
            .join("sha256")
            .join(format!("{hex}.partial"))
    }

    /// The complete blob, if the cache has it with the expected size.
    pub fn lookup(&self, hex: &str, size: Option<u64>) -> Option<PathBuf> {
        let p = self.blob(hex);
        let m = fs::metadata(&p).ok()?;
        (m.is_file() && size.is_none_or(|s| s == m.len())).then_some(p)
    }

    /// Store small bytes already in memory under their sha256; returns the hex digest.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let hex = rin_bundle::digest::sha256_hex(bytes);
        if self.lookup(&hex, Some(bytes.len() as u64)).is_none() {
            write_atomic(&self.blob(&hex), bytes)?;
        }
        Ok(hex)
    }

    /// Read a small cached document, checking its digest again (it is about to be parsed).
    pub fn read_small(&self, hex: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(p) = self.lookup(hex, None) else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        File::open(&p)
            .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
            .map_err(|source| BuildError::cache(p.clone(), source))?;
        if rin_bundle::digest::sha256_hex(&bytes) != hex {
            // Damaged cache entry: drop it so it is fetched again.
            let _ = fs::remove_file(&p);
            return Ok(None);
        }
        Ok(Some(bytes))
    }
}

/// Write a small file completely or not at all (`rin_support::fs::write_atomic`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    rin_support::fs::write_atomic(path, bytes, 0o644)
        .map_err(|e| BuildError::cache(e.path, e.source))
}
