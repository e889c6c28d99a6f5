//! What the network half hands the packing half: where each fetched thing is.

use rin_bundle::index::Entry;
use rin_bundle::oci::Descriptor;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What was fetched, for the packer.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The cache root: an OCI blob store.
    pub store: Option<PathBuf>,
    /// Registry images: reference → the descriptor of what the lock pins (in the store).
    pub images: BTreeMap<String, Descriptor>,
    /// Repository charts: (name, version) → the archive in the cache.
    pub charts: BTreeMap<(String, String), PathBuf>,
    /// K3s release files, when fetched rather than read from `k3s.files`.
    pub k3s: Option<Vec<FileEntry>>,
    /// Host packages the lock pins for the stack's targets and these architectures, in the
    /// cache (the packer carries the selection's).
    pub host: Vec<FetchedPackage>,
    /// Image blobs still downloading while the bundle is written (see [`Downloads`]).
    pub arrivals: Option<Arc<Arrivals>>,
}

/// A host package in the cache.
#[derive(Debug, Clone)]
pub struct FetchedPackage {
    pub locked: crate::lock::LockedPackage,
    pub path: PathBuf,
}

/// A file to carry: its index entry (hashed once, when it is collected) and where it comes from.
#[derive(Debug, Clone)]
pub struct FileEntry {
    pub entry: Entry,
    pub source: PathBuf,
}

impl FileEntry {
    /// A file whose sha256 and size are already known (checked when it was downloaded); the
    /// bundle writer hashes it again as it streams it.
    pub fn known(path: String, source: PathBuf, sha256: String, size: u64, mode: u32) -> Self {
        FileEntry {
            entry: Entry {
                path,
                size,
                sha256,
                mode,
            },
            source,
        }
    }
}

/// Blobs still being downloaded while the bundle is written: the writer waits on each one's
/// [`rin_bundle::Gate`] before it reads the file, so packing follows the downloads instead of
/// starting after the last one.
#[derive(Debug, Default)]
pub struct Arrivals {
    state: std::sync::Mutex<std::collections::HashMap<String, Arrival>>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Clone)]
enum Arrival {
    Pending,
    Done(rin_bundle::Arrived),
    Failed(String),
}

impl Arrivals {
    /// Expect these digests.
    pub fn expect<'a>(digests: impl IntoIterator<Item = &'a String>) -> Arc<Self> {
        let a = Arrivals::default();
        if let Ok(mut s) = a.state.lock() {
            for d in digests {
                s.insert(d.clone(), Arrival::Pending);
            }
        }
        Arc::new(a)
    }

    fn set(&self, digest: &str, to: Arrival) {
        if let Ok(mut s) = self.state.lock() {
            s.insert(digest.to_string(), to);
        }
        self.changed.notify_all();
    }

    /// The blob is in the cache; `verified` is its file's stamp when this process downloaded
    /// and verified it (the writer then need not hash it again).
    pub fn done(&self, digest: &str, verified: Option<rin_bundle::FileStamp>) {
        let arrived = verified.map_or(
            rin_bundle::Arrived::Unchecked,
            rin_bundle::Arrived::Verified,
        );
        self.set(digest, Arrival::Done(arrived));
    }

    /// Every blob not yet done fails with `reason` (the downloads stopped).
    pub fn fail_rest(&self, reason: &str) {
        if let Ok(mut s) = self.state.lock() {
            for v in s.values_mut() {
                if matches!(v, Arrival::Pending) {
                    *v = Arrival::Failed(reason.to_string());
                }
            }
        }
        self.changed.notify_all();
    }

    /// Is this digest one of the downloads (done or not)?
    pub fn expects(&self, digest: &str) -> bool {
        self.state.lock().is_ok_and(|s| s.contains_key(digest))
    }

    /// The gate the writer waits on for one digest.
    pub fn gate(self: &Arc<Self>, digest: &str) -> Arc<dyn rin_bundle::Gate> {
        Arc::new(BlobGate {
            arrivals: self.clone(),
            digest: digest.to_string(),
        })
    }
}

#[derive(Debug)]
struct BlobGate {
    arrivals: Arc<Arrivals>,
    digest: String,
}

impl rin_bundle::Gate for BlobGate {
    fn wait(&self) -> std::io::Result<rin_bundle::Arrived> {
        let a = &self.arrivals;
        let mut s = a
            .state
            .lock()
            .map_err(|_| std::io::Error::other("download state poisoned"))?;
        loop {
            match s.get(&self.digest) {
                Some(Arrival::Done(arrived)) => return Ok(*arrived),
                None => return Ok(rin_bundle::Arrived::Unchecked),
                Some(Arrival::Failed(why)) => {
                    return Err(std::io::Error::other(format!("not downloaded: {why}")));
                }
                Some(Arrival::Pending) => {
                    s = a
                        .changed
                        .wait(s)
                        .map_err(|_| std::io::Error::other("download state poisoned"))?;
                }
            }
        }
    }
}
