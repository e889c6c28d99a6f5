//! A whole build from the network: the lock brought up to date and the documents, charts and
//! K3s files fetched first (the network half), then the image blobs downloaded on the runtime
//! while the packing half writes the bundle on the calling thread, the writer waiting on each
//! layer's gate right behind its download.

use crate::error::BuildError;
use crate::net::fetch::{LockOutcome, NETWORK_STEPS, needs_network, prepare};
use crate::net::session::FetchOptions;
use crate::pack::{BuildOptions, Built, build_from};
use crate::spec::Stack;
use rin_bundle::Progress;
use std::sync::Arc;
use tokio::runtime::Handle;

/// Why `build` failed, by half.
#[derive(Debug)]
pub enum BuildFailure {
    /// Resolving or fetching what the stack needs (a failed download explains a failed write
    /// better than the write's own error, so it wins).
    Fetch(BuildError),
    /// Planning or writing the bundle.
    Pack(BuildError),
    /// The download task itself ended abnormally.
    Task(String),
}

/// Build `stack` into `opts.output`, fetching what it needs; `locked` is called once the lock is
/// settled (before packing starts). Call from a thread outside the runtime `rt`.
pub fn build(
    stack: &Stack,
    opts: &BuildOptions,
    fetch: &FetchOptions,
    rt: &Handle,
    progress: Arc<dyn Progress>,
    locked: &dyn Fn(&LockOutcome),
) -> Result<Built, BuildFailure> {
    let (mut fetched, lock, downloads) = rt
        .block_on(prepare(stack, &opts.arches, fetch, progress.clone()))
        .map_err(BuildFailure::Fetch)?;
    let downloading = downloads.map(|d| {
        let arrivals = d.arrivals();
        fetched.arrivals = Some(arrivals.clone());
        rt.spawn(d.run(arrivals))
    });
    if let Some(l) = &lock {
        locked(l);
    }
    if needs_network(stack) {
        progress.step(NETWORK_STEPS, NETWORK_STEPS, "write");
    } else {
        progress.step(1, 1, "write");
    }
    let built = build_from(stack, opts, &fetched, progress.as_ref());
    if let Some(handle) = downloading {
        if built.is_err() {
            handle.abort();
        }
        match rt.block_on(handle) {
            Ok(Err(e)) => return Err(BuildFailure::Fetch(e)),
            Err(e) if !e.is_cancelled() => {
                return Err(BuildFailure::Task(format!("the download task failed: {e}")));
            }
            _ => {}
        }
    }
    built.map_err(BuildFailure::Pack)
}
