//! The deterministic bundle writer.
//!
//! Settings are pinned so the same index, signatures and content always give the same bytes:
//! canonical tar headers (see `header`), zstd level 3, window log 21, content checksum, one frame,
//! always in zstd's multi-threaded mode. The worker count does not change the output (that mode
//! produces the same frame for every worker count of one or more; a unit test holds it to that).

use crate::error::{BundleError, Result};
use crate::header::{BLOCK, canonical_header, padding};
use crate::index::{INDEX_PATH, Index, MODE_FILE, SIGNATURES_PATH};
use crate::progress::Progress;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

/// The zstd level of format v1 bundles.
pub const ZSTD_LEVEL: i32 = 3;
/// The zstd window log of format v1 bundles (2 MiB), set explicitly so the frame header is fixed.
pub const ZSTD_WINDOW_LOG: u32 = 21;
/// The bytes every v1 bundle starts with: zstd magic, frame header descriptor (checksum flag,
/// no content size, no dictionary), window descriptor for 2^21.
pub const FRAME_HEADER: [u8; 6] = [0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58];
/// Padding and the end-of-archive marker are taken from here.
pub(crate) const ZEROS: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
    /// A file that is still arriving (a download running beside the writer): the writer waits
    /// on the gate before it opens the file.
    Awaited(PathBuf, std::sync::Arc<dyn Gate>),
}

/// Blocks until a file is complete, or says why it never will be.
pub trait Gate: Send + Sync + std::fmt::Debug {
    fn wait(&self) -> io::Result<Arrived>;
}

/// What a [`Gate`] knows about a file once it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrived {
    /// Nothing about its bytes: the writer hashes them.
    Unchecked,
    /// Its bytes were hashed against the entry's digest as they were written to the file, and
    /// this is the file as it was then. While the file still has this stamp (before and after
    /// it is read), the writer does not hash it a second time; otherwise it does.
    Verified(FileStamp),
}

/// Identifies one version of a file: device, inode, size and modification time. Replacing the
/// file or writing to it changes the stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::File(p) | Source::Awaited(p, _) => p.display().to_string(),
            Source::Bytes(_) => "generated content".to_string(),
        }
    }
}

/// Write a complete bundle to `out`. `sources[i]` supplies `index.entries[i]`; each is hashed
/// again while it is written and must still match the index. The one exception is a file whose
/// gate says it was verified as it arrived and that is, by its [`FileStamp`], still that file.
///
/// Three stages run at once so that no single core sets the pace: a reader thread opens, reads
/// and hashes the sources; the calling thread frames them as tar and feeds zstd (which
/// compresses on its own workers); a writer thread hands the compressed stream to `out`. The
/// stages pass a fixed set of 1 MiB buffers back and forth, so memory stays bounded whatever the
/// entry sizes.
pub fn write_bundle<W: Write + Send>(
    out: W,
    index: &Index,
    signatures: &[u8],
    sources: &[Source],
    threads: u32,
    progress: &dyn Progress,
) -> Result<W> {
    assert_eq!(index.entries.len(), sources.len(), "one source per entry");
    let mtime = index.created_epoch()?;
    let (to_reader, read_pool) = pool(BUFFERS);
    let (read_tx, read_rx) = mpsc::sync_channel::<Read>(BUFFERS + 1);
    let (to_writer, write_pool) = pool(BUFFERS);
    let (out_tx, out_rx) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);

    thread::scope(|scope| {
        let reader = scope.spawn(move || {
            Reader {
                pool: read_pool,
                spare: None,
                tx: read_tx,
            }
            .run(index, sources)
        });
        let writer = scope.spawn(move || -> io::Result<W> {
            let mut out = out;
            for chunk in out_rx {
                out.write_all(&chunk)?;
                // The framing stage may have stopped; then the buffer is simply dropped.
                let _ = to_writer.send(chunk);
            }
            out.flush()?;
            Ok(out)
        });
        let sink = ChunkSink {
            buf: Vec::new(),
            pool: write_pool,
            tx: Some(out_tx),
        };
        let input = Input {
            rx: read_rx,
            back: to_reader,
        };
        // Returning drops the framing's channel ends, which lets both threads finish.
        let framed = frame(
            sink, input, index, sources, signatures, threads, mtime, progress,
        );
        let written = writer.join().expect("bundle writer thread panicked");
        reader.join().expect("bundle reader thread panicked");
        let io_err = |source: io::Error| BundleError::Output {
            path: PathBuf::from("<bundle stream>"),
            source,
        };
        match framed {
            // A failed output stops the framing; the output's own error is the one to report.
            Err(Stop::Output(e)) => Err(io_err(written.err().unwrap_or(e))),
            Err(Stop::Refused(e)) => Err(e),
            Ok(()) => written.map_err(io_err),
        }
    })
}

/// Why the framing stage stopped early.
enum Stop {
    Output(io::Error),
    Refused(BundleError),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Output(e)
    }
}

/// Buffers passed between stages: 1 MiB each, `BUFFERS` of them per direction.
const CHUNK: usize = 1 << 20;
const BUFFERS: usize = 4;

/// A channel pre-filled with `n` empty buffers, and its sender for returning them.
fn pool(n: usize) -> (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::sync_channel(n);
    for _ in 0..n {
        tx.send(Vec::with_capacity(CHUNK))
            .expect("the receiver is alive");
    }
    (tx, rx)
}

/// What the reader thread sends the framing stage.
enum Read {
    /// Bytes of the current entry.
    Chunk(Vec<u8>),
    /// The current entry ended: its hex sha256, its length, and whether the source held more
    /// than planned (those extra bytes are never sent).
    End {
        sha256: String,
        len: u64,
        grew: bool,
    },
    Failed(BundleError),
}

/// The reading stage: sources in entry order, cut into pooled buffers and hashed.
struct Reader {
    pool: Receiver<Vec<u8>>,
    /// A buffer taken from the pool and not filled (end of a file), used next.
    spare: Option<Vec<u8>>,
    tx: SyncSender<Read>,
}

impl Reader {
    fn run(mut self, index: &Index, sources: &[Source]) {
        for (entry, source) in index.entries.iter().zip(sources) {
            let sent = match self.read(entry.size, &entry.sha256, source) {
                Ok(Some(end)) => self.tx.send(end).is_ok(),
                Ok(None) => false,
                Err(e) => {
                    let _ = self.tx.send(Read::Failed(e));
                    false
                }
            };
            if !sent {
                // The framing stage stopped (it reports why), or this source failed.
                return;
            }
        }
    }

    fn buffer(&mut self) -> Option<Vec<u8>> {
        self.spare.take().or_else(|| self.pool.recv().ok())
    }

    /// Send one source in chunks; `None` when the framing stage is gone.
    fn read(&mut self, size: u64, expected: &str, source: &Source) -> Result<Option<Read>> {
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut grew = false;
        // Set when the file is the very one verified as it arrived: then it is not hashed again.
        let mut trusted = None;
        let mut file = match source {
            Source::Bytes(_) => None,
            Source::File(p) | Source::Awaited(p, _) => {
                let arrived = match source {
                    Source::Awaited(_, gate) => gate.wait().map_err(|e| read_err(p, e))?,
                    _ => Arrived::Unchecked,
                };
                let f = File::open(p).map_err(|e| read_err(p, e))?;
                if let Arrived::Verified(stamp) = arrived {
                    trusted = Some(stamp).filter(|s| stamp_of(&f, p).ok() == Some(*s));
                }
                Some((f, p))
            }
        };
        let mut offset = 0usize;
        loop {
            let Some(mut buf) = self.buffer() else {
                return Ok(None);
            };
            match (&mut file, source) {
                (Some((f, p)), _) => {
                    // Buffers come back at full length but for a file's last piece, so this
                    // rarely has anything to zero.
                    buf.resize(CHUNK, 0);
                    let n = read_full(f, &mut buf).map_err(|e| read_err(p, e))?;
                    buf.truncate(n);
                }
                (None, Source::Bytes(b)) => {
                    buf.clear();
                    let end = b.len().min(offset + CHUNK);
                    buf.extend_from_slice(&b[offset..end]);
                    offset = end;
                }
                (None, _) => unreachable!("only generated content has no file"),
            }
            if buf.is_empty() {
                self.spare = Some(buf);
                if let Some((f, _)) = &file {
                    drop_cached(f, None);
                }
                break;
            }
            if len + buf.len() as u64 > size {
                grew = true;
                self.spare = Some(buf);
                break;
            }
            if trusted.is_none() {
                hasher.update(&buf);
            }
            len += buf.len() as u64;
            if self.tx.send(Read::Chunk(buf)).is_err() {
                return Ok(None);
            }
        }
        let sha256 = match (trusted, &file) {
            (Some(stamp), Some((f, p))) => {
                if stamp_of(f, p)? != stamp {
                    return Err(BundleError::InputChanged {
                        path: p.display().to_string(),
                        expected: "no change while it is written into the bundle".into(),
                        actual: "it changed".into(),
                    });
                }
                expected.to_string()
            }
            _ => hex::encode(hasher.finalize()),
        };
        Ok(Some(Read::End { sha256, len, grew }))
    }
}

fn stamp_of(f: &File, path: &Path) -> Result<FileStamp> {
    Ok(FileStamp::of(&f.metadata().map_err(|e| read_err(path, e))?))
}

fn read_err(path: &Path, source: io::Error) -> BundleError {
    BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fill `buf` from `r` unless the end comes first; the number of bytes read.
pub(crate) fn read_full(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The framing stage's end of the reader's channels.
struct Input {
    rx: Receiver<Read>,
    back: SyncSender<Vec<u8>>,
}

/// The framing stage: tar headers, entry bytes and padding, through the zstd encoder.
#[allow(clippy::too_many_arguments)]
fn frame(
    sink: ChunkSink,
    input: Input,
    index: &Index,
    sources: &[Source],
    signatures: &[u8],
    threads: u32,
    mtime: u64,
    progress: &dyn Progress,
) -> std::result::Result<(), Stop> {
    let mut enc = encoder(sink, threads)?;
    let index_bytes = index.to_canonical_json();
    write_small(&mut enc, INDEX_PATH, &index_bytes, mtime)?;
    write_small(&mut enc, SIGNATURES_PATH, signatures, mtime)?;

    progress.begin("write", index.content_size());
    for (entry, source) in index.entries.iter().zip(sources) {
        enc.write_all(&canonical_header(
            &entry.path,
            entry.size,
            entry.mode,
            mtime,
        ))?;
        let (sha, n, grew) = loop {
            match input.rx.recv() {
                Ok(Read::Chunk(buf)) => {
                    enc.write_all(&buf)?;
                    progress.advance(buf.len() as u64);
                    let _ = input.back.send(buf);
                }
                Ok(Read::End { sha256, len, grew }) => break (sha256, len, grew),
                Ok(Read::Failed(e)) => return Err(Stop::Refused(e)),
                Err(_) => return Err(Stop::Output(io::Error::other("the bundle reader stopped"))),
            }
        };
        if grew || n != entry.size || sha != entry.sha256 {
            return Err(Stop::Refused(BundleError::InputChanged {
                path: format!("{} ({})", entry.path, source.describe()),
                expected: format!("{} bytes, sha256 {}", entry.size, entry.sha256),
                actual: if grew {
                    format!("more than {} bytes", entry.size)
                } else {
                    format!("{n} bytes, sha256 {sha}")
                },
            }));
        }
        enc.write_all(&ZEROS[..padding(n)])?;
    }
    enc.write_all(&ZEROS)?;
    progress.end();
    enc.finish()?.finish()?;
    Ok(())
}

/// A writer that cuts the compressed stream into pooled buffers for the writer thread.
struct ChunkSink {
    buf: Vec<u8>,
    pool: Receiver<Vec<u8>>,
    tx: Option<SyncSender<Vec<u8>>>,
}

impl ChunkSink {
    fn stopped() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "the bundle output stopped")
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.pool.recv().map_err(|_| Self::stopped())?;
        let full = std::mem::replace(&mut self.buf, next);
        self.buf.clear();
        let tx = self.tx.as_ref().ok_or_else(Self::stopped)?;
        tx.send(full).map_err(|_| Self::stopped())
    }

    /// Send what is left and close the stream.
    fn finish(mut self) -> io::Result<()> {
        self.send()?;
        self.tx = None;
        Ok(())
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf = self.pool.recv().map_err(|_| Self::stopped())?;
            self.buf.clear();
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A zstd encoder with the format's pinned settings: level 3, window log 21, content checksum,
/// no content size, no dictionary id, and always zstd's multi-threaded mode (its output is the
/// same for every worker count of one or more, but differs from the single-threaded mode's).
pub fn encoder<W: Write>(
    out: W,
    threads: u32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
    enc.include_checksum(true)?;
    enc.include_contentsize(false)?;
    enc.include_dictid(false)?;
    enc.window_log(ZSTD_WINDOW_LOG)?;
    enc.multithread(threads.max(1))?;
    Ok(enc)
}

pub(crate) fn write_small(
    w: &mut impl Write,
    path: &str,
    bytes: &[u8],
    mtime: u64,
) -> io::Result<()> {
    w.write_all(&canonical_header(
        path,
        bytes.len() as u64,
        MODE_FILE,
        mtime,
    ))?;
    w.write_all(bytes)?;
    w.write_all(&ZEROS[..padding(bytes.len() as u64)])
}

/// Write a bundle to `path` safely: into `path.partial`, synced, then renamed, so a file at
/// `path` is always complete. The partial file is removed on any error. Returns the size of the
/// written file and, when `checksum` is set, its sha256 (hashing the output costs as much CPU
/// as hashing every input once more, so it is asked for, not done by default).
pub fn write_bundle_file(
    path: &Path,
    index: &Index,
    signatures: &[u8],
    sources: &[Source],
    threads: u32,
    checksum: bool,
    progress: &dyn Progress,
) -> Result<(Option<String>, u64)> {
    write_file(path, checksum, |out| {
        write_bundle(out, index, signatures, sources, threads, progress)
    })
}

/// Write a file at `path` through `write` safely: into `path.partial`, synced, then renamed, so
/// a file at `path` is always complete; the partial file is removed on any error. The size
/// written and, with `checksum`, the file's sha256.
pub(crate) fn write_file(
    path: &Path,
    checksum: bool,
    write: impl FnOnce(Output) -> Result<Output>,
) -> Result<(Option<String>, u64)> {
    let partial = partial_path(path);
    let out_err = |source: io::Error| BundleError::Output {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let f = File::create(&partial).map_err(out_err)?;
        // The writer stage hands over 1 MiB pieces, so no further buffering is needed.
        let out = Output {
            file: f,
            written: 0,
            advised: 0,
            hasher: checksum.then(Sha256::new),
        };
        // The stream's writer does not know the file's name: name it.
        let out = write(out).map_err(|e| match e {
            BundleError::Output { source, .. } => out_err(source),
            e => e,
        })?;
        let sha256 = out.hasher.map(|h| hex::encode(h.finalize()));
        out.file.sync_all().map_err(out_err)?;
        // Renamed, and the directory synced, so the finished file's name survives a crash too.
        rin_support::fs::rename_synced(&partial, path).map_err(|e| out_err(e.source))?;
        Ok((sha256, out.written))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// Tell the kernel a file's cached pages in its first `len` bytes (all of it when `None`) are
/// not needed again: written pages start going to disk, clean ones are freed. A bundle is
/// gigabytes read or written once; without this it would push everything else out of memory,
/// and on virtual machines fresh page-cache memory is much slower to fill than reused memory.
/// Only advice: a failure changes nothing.
fn drop_cached(f: &File, len: Option<u64>) {
    let _ = rustix::fs::fadvise(
        f,
        0,
        len.and_then(std::num::NonZeroU64::new),
        rustix::fs::Advice::DontNeed,
    );
}

/// The output file, with its written pages handed back to the kernel as the bundle grows: the
/// last `KEEP` bytes stay cached, everything before them is written out and freed.
pub(crate) struct Output {
    file: File,
    written: u64,
    advised: u64,
    /// Hashes what is written, when the caller asked for the file's checksum.
    hasher: Option<Sha256>,
}

impl Output {
    const KEEP: u64 = 64 << 20;
    const EVERY: u64 = 32 << 20;
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.written += n as u64;
        if self.written >= self.advised + Self::EVERY + Self::KEEP {
            // Pages still being written out are not freed by this call; covering everything
            // before the kept tail each time frees them on a later one.
            self.advised = self.written - Self::KEEP;
            drop_cached(&self.file, Some(self.advised));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// `NAME.partial` beside `path`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests;
