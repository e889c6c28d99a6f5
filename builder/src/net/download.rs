//! The one download routine every fetch goes through, and the retry policy of small requests.
//!
//! A download writes `blobs/sha256/<hex>.partial` in the cache (locked against a second
//! process), hashes while writing, checks size and digest, syncs, then renames. After an
//! interruption the `.partial` stays and the next attempt (or the next run) resumes it with
//! `Range`, but only when the server answers 206; a 200 starts over.

use crate::cache::Cache;
use crate::error::{BuildError, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use rin_bundle::progress::{Event, Progress};
use rin_support::retry::{GaveUp, Policy, Retry};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
/// A blob in the cache, as [`Downloader::download`] left it.
#[derive(Debug)]
pub struct Downloaded {
    pub path: PathBuf,
    /// The file's stamp right after this call downloaded and verified it; `None` when it was
    /// already cached (then nothing vouches for its bytes now).
    pub verified: Option<rin_bundle::FileStamp>,
}

/// A response body as a stream of chunks.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What the server answered to a request starting at some offset.
pub enum Body {
    /// The whole content (status 200): the offset was ignored.
    Full(ByteStream),
    /// The content from the requested offset (status 206).
    Partial(ByteStream),
}

/// Why an attempt failed: worth another try (with its reason), or final.
pub type Failure = rin_support::retry::Failure<BuildError>;

impl From<BuildError> for Failure {
    fn from(e: BuildError) -> Self {
        Failure::Fatal(e)
    }
}

/// Retries, backoff and the reporter, shared by every fetch of a run.
pub struct Downloader {
    pub reporter: Arc<dyn Progress>,
    /// Attempts per request; the pause starts at 500 ms and doubles up to 30 s.
    pub policy: Policy,
    ids: AtomicU64,
}

impl Downloader {
    pub fn new(reporter: Arc<dyn Progress>) -> Self {
        Downloader {
            reporter,
            policy: Policy {
                attempts: 6,
                backoff: Duration::from_millis(500),
                max_delay: Duration::from_secs(30),
            },
            ids: AtomicU64::new(1),
        }
    }

    pub fn event(&self, e: Event<'_>) {
        self.reporter.event(&e);
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// A retry as a reporter event.
    fn report(&self, r: Retry<'_>) {
        self.event(r.into());
    }

    /// Run `op` under the policy: until it succeeds, fails for good, or runs out of attempts.
    pub async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        self.policy
            .run(what, &|r| self.report(r), op)
            .await
            .map_err(|e| match e {
                GaveUp::Fatal(e) => e,
                GaveUp::Exhausted { attempts, last } => BuildError::Fetch {
                    what: what.to_string(),
                    reason: format!("{last} (gave up after {attempts} attempts)"),
                },
            })
    }

    /// Fetch content with a known sha256 (and size, when known) into the cache, resuming a
    /// `.partial` left by an earlier attempt or run. `open(offset)` makes one request.
    pub async fn download<F, Fut>(
        &self,
        cache: &Cache,
        hex: &str,
        size: Option<u64>,
        what: &str,
        mut open: F,
    ) -> Result<Downloaded>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = std::result::Result<Body, Failure>>,
    {
        if let Some(p) = cache.lookup(hex, size) {
            self.event(Event::Cached {
                what,
                bytes: size.unwrap_or_default(),
            });
            return Ok(Downloaded {
                path: p,
                verified: None,
            });
        }
        let partial = cache.partial(hex);
        let cache_err = |source| BuildError::cache(partial.clone(), source);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)
            .map_err(cache_err)?;
        // Another rinbundle may be fetching the same blob into the same cache: wait for it.
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(cache_err(e)),
            }
        }
        if let Some(p) = cache.lookup(hex, size) {
            // The other process finished it.
            return Ok(Downloaded {
                path: p,
                verified: None,
            });
        }
        let id = self.next_id();
        self.event(Event::Start {
            id,
            what,
            total: size,
        });
        let mut from_scratch = false;
        let mut attempt = 0;
        loop {
            let result = self
                .attempt(
                    &mut file,
                    &partial,
                    hex,
                    size,
                    what,
                    id,
                    from_scratch,
                    &mut open,
                )
                .await;
            match result {
                Ok((bytes, resumed_at)) => {
                    let dest = cache.blob(hex);
                    fs::rename(&partial, &dest).map_err(cache_err)?;
                    // Renaming changes the file's ctime: stamp it after.
                    let verified = file.metadata().ok().map(|m| rin_bundle::FileStamp::of(&m));
                    self.event(Event::Done {
                        id,
                        bytes,
                        resumed_at,
                    });
                    return Ok(Downloaded {
                        path: dest,
                        verified,
                    });
                }
                // Kept: the next run, with room, resumes it.
                Err(Failure::Fatal(e @ BuildError::DiskFull { .. })) => return Err(e),
                Err(Failure::Fatal(e)) => {
                    let _ = fs::remove_file(&partial);
                    return Err(e);
                }
                Err(Failure::Transient(reason)) => {
                    attempt += 1;
                    if reason.starts_with(RESTART) {
                        from_scratch = true;
                    }
                    if !self
                        .policy
                        .pause(what, attempt, &reason, &|r| self.report(r))
                        .await
                    {
                        return Err(BuildError::Fetch {
                            what: what.to_string(),
                            reason: format!(
                                "{reason} (gave up after {attempt} attempts; the partial download is kept and the next run resumes it)"
                            ),
                        });
                    }
                }
            }
        }
    }

    /// One request: (bytes in the file, offset resumed from).
    #[allow(clippy::too_many_arguments)]
    async fn attempt<F, Fut>(
        &self,
        file: &mut File,
        partial: &Path,
        hex: &str,
        size: Option<u64>,
        what: &str,
        id: u64,
        from_scratch: bool,
        open: &mut F,
    ) -> std::result::Result<(u64, u64), Failure>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = std::result::Result<Body, Failure>>,
    {
        // A full disk is final (no retry frees space); other cache I/O is tried again.
        let io = |e: std::io::Error| {
            if rin_support::fs::is_disk_full(&e) {
                Failure::Fatal(BuildError::cache(partial.to_path_buf(), e))
            } else {
                Failure::Transient(format!("cache file: {e}"))
            }
        };
        let mut have = file.metadata().map_err(io)?.len();
        if from_scratch || size.is_some_and(|s| have > s) {
            file.set_len(0).map_err(io)?;
            have = 0;
        }
        // Hash what an earlier attempt left, so the final digest covers every byte.
        let mut hasher = Sha256::new();
        if have > 0 {
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut left = have;
            while left > 0 {
                let n = file.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                let n = (n as u64).min(left) as usize;
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
        }
        let resumed_at = have;
        let done_already = size.is_some_and(|s| s == have && have > 0);
        if !done_already {
            let body = open(have).await?;
            let mut stream = match body {
                Body::Full(s) => {
                    file.set_len(0).map_err(io)?;
                    hasher = Sha256::new();
                    have = 0;
                    s
                }
                Body::Partial(s) => s,
            };
            file.seek(SeekFrom::Start(have)).map_err(io)?;
            if have > 0 {
                self.event(Event::Progress { id, bytes: have });
            }
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    // Every byte arrived and the client still complains (some clients check
                    // the digest at the end): our own digest check below decides.
                    Err(_) if size.is_some_and(|s| s == have) => break,
                    Err(e) if crate::net::failure::is_stall(&e) => {
                        return Err(Failure::Transient(format!(
                            "stalled after {have} bytes: {}",
                            crate::net::failure::STALLED
                        )));
                    }
                    Err(e) => {
                        return Err(Failure::Transient(format!(
                            "connection lost after {have} bytes: {e}"
                        )));
                    }
                };
                have += chunk.len() as u64;
                if let Some(s) = size
                    && have > s
                {
                    return Err(Failure::Fatal(BuildError::Mismatch {
                        what: what.to_string(),
                        expected: format!("{s} bytes"),
                        actual: format!("more than {s} bytes"),
                    }));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).map_err(io)?;
                self.event(Event::Progress {
                    id,
                    bytes: chunk.len() as u64,
                });
            }
            if let Some(s) = size
                && have < s
            {
                return Err(Failure::Transient(format!(
                    "connection closed after {have} of {s} bytes"
                )));
            }
        }
        let actual = hex::encode(hasher.finalize());
        if actual != hex {
            if resumed_at > 0 && !from_scratch {
                // The kept prefix may be what is wrong: fetch the whole thing once more.
                return Err(Failure::Transient(format!(
                    "{RESTART}: digest mismatch after resuming at {resumed_at}"
                )));
            }
            return Err(Failure::Fatal(BuildError::Mismatch {
                what: what.to_string(),
                expected: format!("sha256:{hex}"),
                actual: format!("sha256:{actual} ({have} bytes)"),
            }));
        }
        // Syncing blocks: let the runtime move its other downloads to another worker.
        tokio::task::block_in_place(|| file.sync_data()).map_err(io)?;
        Ok((have, resumed_at))
    }
}

const RESTART: &str = "restarting from the beginning";

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    struct Nothing;
    impl Progress for Nothing {
        fn event(&self, _: &Event<'_>) {}
    }

    fn net(attempts: u32) -> Downloader {
        let mut n = Downloader::new(Arc::new(Nothing));
        n.policy.attempts = attempts;
        n.policy.backoff = Duration::from_millis(1);
        n
    }

    fn content() -> Vec<u8> {
        (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn body(bytes: &[u8]) -> ByteStream {
        let chunks: Vec<std::io::Result<Bytes>> = bytes
            .chunks(8192)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        stream::iter(chunks).boxed()
    }

    fn setup() -> (tempfile::TempDir, Cache, Vec<u8>, String) {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::open(t.path()).unwrap();
        let c = content();
        let hex = rin_bundle::digest::sha256_hex(&c);
        (t, cache, c, hex)
    }

    fn names(cache: &Cache) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(cache.root().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partial_resumes_at_its_end_when_the_server_answers_206() {
        let (_t, cache, c, hex) = setup();
        fs::write(cache.partial(&hex), &c[..40_000]).unwrap();
        let offsets = Mutex::new(Vec::new());
        let p = net(3)
            .download(&cache, &hex, Some(c.len() as u64), "blob", |off| {
                offsets.lock().unwrap().push(off);
                let rest = body(&c[off as usize..]);
                async move { Ok(Body::Partial(rest)) }
            })
            .await
            .unwrap();
        assert_eq!(*offsets.lock().unwrap(), [40_000]);
        // A download vouches for the file it verified, as it is now.
        let meta = fs::metadata(&p.path).unwrap();
        assert_eq!(p.verified, Some(rin_bundle::FileStamp::of(&meta)));
        assert_eq!(fs::read(&p.path).unwrap(), c);
        assert_eq!(names(&cache)[..], [hex.as_str()]);
        // A cache hit vouches for nothing.
        let again = net(3)
            .download(&cache, &hex, Some(c.len() as u64), "blob", |_| async {
                Err(Failure::Transient("no request expected".into()))
            })
            .await
            .unwrap();
        assert_eq!((again.path, again.verified), (p.path, None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_200_to_a_range_request_starts_over() {
        let (_t, cache, c, hex) = setup();
        fs::write(cache.partial(&hex), &c[..40_000]).unwrap();
        let p = net(3)
            .download(&cache, &hex, Some(c.len() as u64), "blob", |_| {
                let all = body(&c);
                async move { Ok(Body::Full(all)) }
            })
            .await
            .unwrap();
        assert_eq!(fs::read(p.path).unwrap(), c);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_kept_prefix_is_fetched_again_from_zero() {
        let (_t, cache, c, hex) = setup();
        fs::write(cache.partial(&hex), vec![0xEE; 40_000]).unwrap();
        let offsets = Mutex::new(Vec::new());
        let p = net(3)
            .download(&cache, &hex, Some(c.len() as u64), "blob", |off| {
                offsets.lock().unwrap().push(off);
                let rest = body(&c[off as usize..]);
                async move { Ok(Body::Partial(rest)) }
            })
            .await
            .unwrap();
        assert_eq!(*offsets.lock().unwrap(), [40_000, 0]);
        assert_eq!(fs::read(p.path).unwrap(), c);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_content_is_refused_at_once_and_nothing_is_kept() {
        let (_t, cache, c, hex) = setup();
        let calls = AtomicUsize::new(0);
        let mut bad = c.clone();
        bad[500] ^= 1;
        let err = net(5)
            .download(&cache, &hex, Some(c.len() as u64), "blob", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                let b = body(&bad);
                async move { Ok(Body::Full(b)) }
            })
            .await
            .unwrap_err();
        assert!(matches!(err, BuildError::Mismatch { .. }), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
        assert!(names(&cache).is_empty(), "{:?}", names(&cache));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_bytes_than_declared_are_refused_and_not_kept() {
        let (_t, cache, c, hex) = setup();
        let mut long = c.clone();
        long.extend_from_slice(b"trailing");
        let err = net(5)
            .download(&cache, &hex, Some(c.len() as u64), "blob", |_| {
                let b = body(&long);
                async move { Ok(Body::Full(b)) }
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        assert!(names(&cache).is_empty(), "{:?}", names(&cache));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_failures_give_up_after_the_attempts_and_keep_the_partial() {
        let (_t, cache, c, hex) = setup();
        let calls = AtomicUsize::new(0);
        let err = net(3)
            .download(&cache, &hex, Some(c.len() as u64), "blob", |off| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                // The first answer breaks after 30 000 bytes; later ones fail at once.
                let s: ByteStream = if n == 0 {
                    body(&c[..30_000])
                        .chain(stream::iter([Err(std::io::Error::other("reset"))]))
                        .boxed()
                } else {
                    let _ = off;
                    stream::iter([Err(std::io::Error::other("reset"))]).boxed()
                };
                async move { Ok(Body::Partial(s)) }
            })
            .await
            .unwrap_err();
        assert!(matches!(err, BuildError::Fetch { .. }), "{err}");
        assert!(
            err.to_string().contains("gave up after 3 attempts"),
            "{err}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(fs::read(cache.partial(&hex)).unwrap(), &c[..30_000]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_downloads_of_one_blob_fetch_it_once() {
        let (_t, cache, c, hex) = setup();
        let n = Arc::new(net(3));
        let calls = Arc::new(AtomicUsize::new(0));
        let run = |delay_ms: u64| {
            let (n, cache, c, hex, calls) = (
                n.clone(),
                cache.clone(),
                c.clone(),
                hex.clone(),
                calls.clone(),
            );
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                n.download(&cache, &hex, Some(c.len() as u64), "blob", |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // A slow server: the other download must wait for this one.
                    let chunks: Vec<Bytes> = c.chunks(10_000).map(Bytes::copy_from_slice).collect();
                    let s = stream::iter(chunks)
                        .then(|b| async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok(b)
                        })
                        .boxed();
                    async move { Ok(Body::Full(s)) }
                })
                .await
            })
        };
        let (a, b) = (run(0), run(50));
        let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
        assert_eq!(a.path, b.path);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(fs::read(a.path).unwrap(), c);
    }
}
