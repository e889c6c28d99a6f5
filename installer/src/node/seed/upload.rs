//! The second pass: a `Sink` that sends each missing blob while the verified bundle streams by,
//! `jobs` uploads at a time, the bundle read at most 128 MiB ahead of them.

use super::registry::{Registry, causes, explain};
use bytes::Bytes;
use rin_bundle::Sink;
use rin_bundle::index::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// One upload's progress, for telling a registry that stopped taking it from one that is slow:
/// the time the connection last took a chunk (or the body ended), and whether the body is
/// waiting for the bundle (then a quiet connection is not the registry's doing).
pub(super) struct Watch {
    last: std::sync::Mutex<Instant>,
    idle: AtomicBool,
}

impl Watch {
    pub(super) fn new() -> Self {
        Watch {
            last: std::sync::Mutex::new(Instant::now()),
            idle: AtomicBool::new(false),
        }
    }

    /// The connection took a chunk, or the body ended (the answer is awaited from now).
    pub(super) fn touch(&self) {
        self.idle.store(false, Ordering::SeqCst);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Resolves once the upload has waited on the registry for `limit`: data was there to
    /// send, or the body had ended, and the connection took nothing and answered nothing.
    pub(super) async fn stalled(&self, limit: Duration) {
        let tick = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            tokio::time::sleep(tick).await;
            let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
            if !self.idle.load(Ordering::SeqCst) && last.elapsed() >= limit {
                return;
            }
        }
    }
}

/// How far (MiB) the bundle is read ahead of the uploads.
pub(super) const READ_AHEAD_MIB: usize = 128;

/// Uploads the blobs it is told about while the bundle streams by, `jobs` at a time.
pub(super) struct Upload<'a> {
    pub(super) reg: &'a Registry<'a>,
    pub(super) rt: Handle,
    /// Blob path → (repository, digest) for blobs to send in this pass.
    pub(super) send: HashMap<String, (String, String)>,
    pub(super) jobs: usize,
    /// Bytes read ahead of the uploads, in chunks of at most 1 MiB: the bundle decompresses far
    /// faster than one upload goes, so the next blobs start while earlier ones still send.
    pub(super) budget: Arc<tokio::sync::Semaphore>,
    pub(super) cur: Option<mpsc::UnboundedSender<(Bytes, tokio::sync::OwnedSemaphorePermit)>>,
    /// Uploads in flight, oldest first; each yields its size when the registry took the blob.
    pub(super) running: Vec<tokio::task::JoinHandle<std::result::Result<u64, String>>>,
    /// Sizes of the blobs the registry took.
    pub(super) sent: Vec<u64>,
    /// Why the last failed upload failed.
    pub(super) failure: Option<String>,
}

impl<'a> Upload<'a> {
    /// Wait for every upload. One cut short (the pass stopped inside its blob, refused) has its
    /// body closed first, so it ends at once and its blob stays missing.
    pub(super) fn finish(&mut self) {
        self.cur = None;
        self.settle(1);
    }

    pub(super) fn new(
        reg: &'a Registry<'a>,
        rt: &Handle,
        send: HashMap<String, (String, String)>,
        jobs: usize,
    ) -> Self {
        Upload {
            reg,
            rt: rt.clone(),
            send,
            jobs,
            budget: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_MIB)),
            cur: None,
            running: Vec::new(),
            sent: Vec::new(),
            failure: None,
        }
    }

    /// Wait for the oldest uploads until fewer than `limit` run.
    pub(super) fn settle(&mut self, limit: usize) {
        while self.running.len() >= limit.max(1) {
            let h = self.running.remove(0);
            // A failed upload leaves its blob missing: the next round sends it again.
            match self.rt.block_on(h) {
                Ok(Ok(size)) => self.sent.push(size),
                Ok(Err(e)) => self.failure = Some(e),
                Err(e) => self.failure = Some(e.to_string()),
            }
        }
    }
}

impl Sink for Upload<'_> {
    fn begin(&mut self, entry: &Entry) -> rin_bundle::Result<bool> {
        let Some((repo, digest)) = self.send.get(&entry.path).cloned() else {
            return Ok(false);
        };
        self.settle(self.jobs);
        let (tx, rx) = mpsc::unbounded_channel::<(Bytes, tokio::sync::OwnedSemaphorePermit)>();
        let client = self.reg.uploader.clone();
        let target = self.reg.at(&repo, &digest);
        let size = entry.size;
        let stall = self.reg.stall;
        let watch = Arc::new(Watch::new());
        let seen = watch.clone();
        // A chunk's permit is returned as the chunk is handed to the connection.
        let body = futures_util::stream::unfold(rx, move |mut rx| {
            let seen = seen.clone();
            async move {
                // Nothing queued: the bundle is behind, not the registry.
                seen.idle.store(rx.is_empty(), Ordering::SeqCst);
                let next = rx.recv().await;
                seen.touch();
                next.map(|(bytes, _permit)| (Ok(bytes), rx))
            }
        });
        let task = self.rt.spawn(async move {
            tokio::select! {
                r = client.push_blob_stream(&target, body, &digest, Some(size)) => r
                    .map(|_| size)
                    .map_err(|e| format!("uploading {digest}: {}", explain(&causes(&e)))),
                () = watch.stalled(stall) => Err(format!(
                    "uploading {digest}: the registry took no data and gave no answer for {} s (--stall-timeout)",
                    stall.as_secs_f64()
                )),
            }
        });
        self.running.push(task);
        self.cur = Some(tx);
        Ok(true)
    }

    fn data(&mut self, chunk: &[u8]) -> rin_bundle::Result<()> {
        let Some(tx) = &self.cur else {
            return Ok(());
        };
        let permit = self
            .rt
            .block_on(self.budget.clone().acquire_owned())
            .expect("the budget is never closed");
        if tx.send((Bytes::copy_from_slice(chunk), permit)).is_err() {
            // The upload failed; its blob is sent again in the next pass.
            self.cur = None;
        }
        Ok(())
    }

    fn end(&mut self, _entry: &Entry) -> rin_bundle::Result<()> {
        // Closing the channel ends the upload's body.
        self.cur = None;
        Ok(())
    }
}
