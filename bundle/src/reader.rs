//! The streaming, verifying bundle reader.
//!
//! One pass over the file. A worker thread decompresses into a small pool of fixed buffers while
//! the calling thread checks and hashes, so decompression and hashing run on two cores and memory
//! stays bounded (pool + zstd window) whatever the bundle's size.
//!
//! Order of trust: the first two entries (index and signatures) are read, the signatures are
//! checked against the caller's [`Trust`] over the exact index bytes, and only then is the index
//! parsed and any further byte looked at. Each later entry's header must be byte-identical to the
//! canonical header the index implies, its content must hash to the index's sha256, its padding
//! must be zero, and the archive must end with exactly two zero blocks and the single zstd frame.

use crate::error::{BundleError, Result};
use crate::header::{BLOCK, canonical_header, checksum_ok, padding, parse_pax};
use crate::index::{
    Entry, INDEX_PATH, Index, MAX_INDEX_SIZE, MAX_SIGNATURES_SIZE, MODE_FILE, SIGNATURES_PATH,
    check_entry_path,
};
use crate::progress::Progress;
use crate::writer::{FRAME_HEADER, read_full};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Size of one decompressed buffer handed from the worker to the checker.
const CHUNK: usize = 1 << 20;
/// Buffers in flight: bounds the reader's memory to `CHUNKS * CHUNK` plus the zstd window.
const CHUNKS: usize = 4;
/// Largest zstd window accepted (2^24 = 16 MiB); v1 writers use far less.
pub const MAX_WINDOW_LOG: u32 = 24;
/// Largest extended (PAX) header accepted while explaining a refused entry.
const MAX_EXTENDED_HEADER: u64 = 64 << 10;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decides whether the signatures over an index are acceptable.
pub trait Trust {
    /// Check `signatures` (the `rinbundle.sig` bytes) over the exact `index` bytes. Returns the key
    /// ids whose signatures counted.
    fn check(
        &self,
        index: &[u8],
        signatures: &[u8],
    ) -> std::result::Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>>;
}

/// What a successful verification established.
#[derive(Debug, Clone)]
pub struct Verified {
    pub index: Index,
    /// sha256 of the exact index bytes: the bundle's identity.
    pub index_sha256: String,
    /// Key ids of the signatures that satisfied the trust policy.
    pub signers: Vec<String>,
    /// Where the content was extracted, if asked.
    pub extracted: Option<PathBuf>,
}

/// A bundle whose index and signatures have been read and trusted, positioned at entry 3.
pub struct Opened {
    stream: Stream,
    pub index: Index,
    pub index_bytes: Vec<u8>,
    pub signatures: Vec<u8>,
    pub signers: Vec<String>,
}

/// Read the first two entries without any trust decision. For display only (`inspect`): nothing
/// returned here may be acted upon.
pub fn peek(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut s = Stream::open(path)?;
    let (index, sig, _) = read_head(&mut s)?;
    Ok((index, sig))
}

/// Read the index and signatures and check them against `trust` before anything else.
pub fn open(path: &Path, trust: &dyn Trust) -> Result<Opened> {
    let mut stream = Stream::open(path)?;
    let (index_bytes, signatures, mtime) = read_head(&mut stream)?;
    let signers = trust
        .check(&index_bytes, &signatures)
        .map_err(|source| BundleError::Untrusted { source })?;
    let index = Index::from_canonical_json(&index_bytes)?;
    if index.created_epoch()? != mtime {
        return Err(BundleError::InvalidIndex {
            reason: "created does not match the time in the tar headers".into(),
        });
    }
    Ok(Opened {
        stream,
        index,
        index_bytes,
        signatures,
        signers,
    })
}

/// Open, trust, and verify every entry in one pass; optionally extract into `extract`.
pub fn verify(
    path: &Path,
    trust: &dyn Trust,
    extract: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Verified> {
    open(path, trust)?.verify(extract, progress)
}

/// Receives entries' content while the bundle streams by. Bytes are handed over before the
/// entry's digest is known: nothing may act on them until `end` is called for that entry, which
/// happens only once they hashed to the signed digest. On any refusal the verification returns
/// an error and `end` is never called for the entry in progress.
pub trait Sink {
    /// `entry` begins: true to receive its bytes.
    fn begin(&mut self, entry: &Entry) -> Result<bool>;
    /// The next bytes of the entry begun last.
    fn data(&mut self, chunk: &[u8]) -> Result<()>;
    /// The entry's bytes all arrived and hash to the signed digest.
    fn end(&mut self, entry: &Entry) -> Result<()>;
}

/// Writes every entry into a staging directory (see [`Staging`]).
struct Extract {
    staging: Staging,
    file: Option<(File, PathBuf)>,
}

impl Sink for Extract {
    fn begin(&mut self, entry: &Entry) -> Result<bool> {
        self.file = Some(self.staging.create_file(&entry.path, entry.mode)?);
        Ok(true)
    }

    fn data(&mut self, chunk: &[u8]) -> Result<()> {
        if let Some((f, p)) = self.file.as_mut() {
            f.write_all(chunk).map_err(|source| BundleError::Output {
                path: p.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn end(&mut self, _entry: &Entry) -> Result<()> {
        if let Some((f, p)) = self.file.take() {
            // On disk before the directory can appear under its final name (see `commit`).
            f.sync_all()
                .map_err(|source| BundleError::Output { path: p, source })?;
        }
        Ok(())
    }
}

/// Takes nothing.
struct Discard;

impl Sink for Discard {
    fn begin(&mut self, _: &Entry) -> Result<bool> {
        Ok(false)
    }
    fn data(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn end(&mut self, _: &Entry) -> Result<()> {
        Ok(())
    }
}

impl Opened {
    /// Check every remaining entry against the signed index. With `extract`, content is written
    /// into a fresh directory that only appears at that path once everything has been verified.
    pub fn verify(self, extract: Option<&Path>, progress: &dyn Progress) -> Result<Verified> {
        match extract {
            None => self.verify_into(&mut Discard, progress),
            Some(dir) => {
                let mut staging = Staging::create(dir)?;
                staging.write_whole(INDEX_PATH, &self.index_bytes, MODE_FILE)?;
                staging.write_whole(SIGNATURES_PATH, &self.signatures, MODE_FILE)?;
                let mut sink = Extract {
                    staging,
                    file: None,
                };
                let mut verified = self.verify_into(&mut sink, progress)?;
                verified.extracted = Some(sink.staging.commit()?);
                Ok(verified)
            }
        }
    }

    /// Check every remaining entry against the signed index, handing content to `sink` as it
    /// streams by.
    pub fn verify_into(mut self, sink: &mut dyn Sink, progress: &dyn Progress) -> Result<Verified> {
        let mtime = self.index.created_epoch()?;
        let lookup: HashMap<&str, usize> = self
            .index
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), i))
            .collect();
        let entries = &self.index.entries;
        let s = &mut self.stream;
        progress.begin("verify", self.index.content_size());
        for (pos, entry) in entries.iter().enumerate() {
            let expected = canonical_header(&entry.path, entry.size, entry.mode, mtime);
            let group = match s.read_header_group()? {
                None => {
                    return Err(BundleError::MissingEntries {
                        first: entry.path.clone(),
                        count: entries.len() - pos,
                    });
                }
                Some(g) => g,
            };
            if group.bytes != expected {
                return Err(diagnose(&group, pos, entries, &lookup));
            }
            let mut hasher = Sha256::new();
            let wanted = sink.begin(entry)?;
            s.take(entry.size, &entry.path, |chunk| {
                hasher.update(chunk);
                progress.advance(chunk.len() as u64);
                if wanted {
                    sink.data(chunk)?;
                }
                Ok(())
            })?;
            s.expect_zero_padding(entry.size, &entry.path)?;
            let actual = hex::encode(hasher.finalize());
            if actual != entry.sha256 {
                return Err(BundleError::HashMismatch {
                    path: entry.path.clone(),
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
            if wanted {
                sink.end(entry)?;
            }
        }
        // Exactly two zero blocks, then the end of the stream.
        match s.read_header_group()? {
            Some(g) => return Err(diagnose(&g, entries.len(), entries, &lookup)),
            None => {
                let mut b = [0u8; BLOCK];
                s.read_exact(&mut b, "the end-of-archive marker")?;
                if b.iter().any(|&c| c != 0) {
                    return Err(BundleError::TrailingData {
                        what: "tar archive",
                    });
                }
            }
        }
        if !s.at_end()? {
            return Err(BundleError::TrailingData {
                what: "tar archive",
            });
        }
        progress.end();
        Ok(Verified {
            index_sha256: crate::digest::sha256_hex(&self.index_bytes),
            signers: self.signers,
            index: self.index,
            extracted: None,
        })
    }
}

/// Read entries 1 and 2: (index bytes, signature bytes, header mtime).
fn read_head(s: &mut Stream) -> Result<(Vec<u8>, Vec<u8>, u64)> {
    let not_bundle = |reason: String| BundleError::NotABundle { reason };
    let g = s
        .read_header_group()?
        .ok_or_else(|| not_bundle("the archive is empty".into()))?;
    if g.path != INDEX_PATH.as_bytes() || !is_regular(g.kind) {
        return Err(not_bundle(format!(
            "the first entry is {:?}, not {INDEX_PATH}",
            String::from_utf8_lossy(&g.path)
        )));
    }
    if g.size > MAX_INDEX_SIZE {
        return Err(BundleError::IndexTooLarge {
            size: g.size,
            max: MAX_INDEX_SIZE,
        });
    }
    let mtime = g.mtime;
    if g.bytes != canonical_header(INDEX_PATH, g.size, MODE_FILE, mtime) {
        return Err(BundleError::NonCanonicalHeader {
            path: INDEX_PATH.into(),
        });
    }
    let index = s.take_small(g.size, INDEX_PATH)?;

    let g = match s.read_header_group()? {
        Some(g) if g.path == SIGNATURES_PATH.as_bytes() && is_regular(g.kind) => g,
        _ => return Err(BundleError::Unsigned),
    };
    if g.size > MAX_SIGNATURES_SIZE {
        return Err(BundleError::SignaturesTooLarge {
            size: g.size,
            max: MAX_SIGNATURES_SIZE,
        });
    }
    if g.bytes != canonical_header(SIGNATURES_PATH, g.size, MODE_FILE, mtime) {
        return Err(BundleError::NonCanonicalHeader {
            path: SIGNATURES_PATH.into(),
        });
    }
    let sig = s.take_small(g.size, SIGNATURES_PATH)?;
    Ok((index, sig, mtime))
}

fn is_regular(kind: u8) -> bool {
    kind == b'0' || kind == 0
}

fn kind_name(kind: u8) -> String {
    match kind {
        b'1' => "hard link".into(),
        b'2' => "symbolic link".into(),
        b'3' => "character device".into(),
        b'4' => "block device".into(),
        b'5' => "directory".into(),
        b'6' => "fifo".into(),
        b'7' => "contiguous file".into(),
        b'g' => "PAX global header".into(),
        b'S' => "sparse file".into(),
        k if k.is_ascii_graphic() => format!("tar entry of type '{}'", k as char),
        k => format!("tar entry of type {k}"),
    }
}

/// Explain why a header group is not the one the signed index expects at position `pos`.
fn diagnose(
    g: &HeaderGroup,
    pos: usize,
    entries: &[Entry],
    lookup: &HashMap<&str, usize>,
) -> BundleError {
    let path = String::from_utf8_lossy(&g.path).into_owned();
    if !is_regular(g.kind) {
        return BundleError::NonRegularEntry {
            path,
            kind: kind_name(g.kind),
        };
    }
    if std::str::from_utf8(&g.path).is_err() {
        return BundleError::UnsafePath {
            path,
            problem: "not UTF-8",
        };
    }
    if let Err(problem) = check_entry_path(&path) {
        return BundleError::UnsafePath { path, problem };
    }
    if path == INDEX_PATH || path == SIGNATURES_PATH {
        return BundleError::DuplicateEntry { path };
    }
    match lookup.get(path.as_str()) {
        None => BundleError::UnlistedEntry { path },
        Some(&j) if j < pos => BundleError::DuplicateEntry { path },
        Some(&j) if j > pos => BundleError::OutOfOrder {
            path,
            expected: entries[pos].path.clone(),
        },
        Some(&j) => {
            let declared = entries[j].size;
            if g.size > declared {
                BundleError::EntryTooLarge {
                    path,
                    declared,
                    actual: g.size,
                }
            } else if g.size < declared {
                BundleError::SizeMismatch {
                    path,
                    declared,
                    actual: g.size,
                }
            } else {
                BundleError::NonCanonicalHeader { path }
            }
        }
    }
}

/// One entry's header blocks (extended headers included) and what they say.
struct HeaderGroup {
    bytes: Vec<u8>,
    path: Vec<u8>,
    kind: u8,
    size: u64,
    mtime: u64,
}

enum Msg {
    Data(Vec<u8>, usize),
    End,
    Fail(BundleError),
}

/// The decompressed tar stream, fed by a worker thread.
struct Stream {
    rx: Option<Receiver<Msg>>,
    pool: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<()>>,
    cur: Vec<u8>,
    pos: usize,
    len: usize,
    done: bool,
    offset: u64,
}

impl Stream {
    fn open(path: &Path) -> Result<Self> {
        let io_err = |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let mut head = [0u8; 6];
        let n = read_full(&mut file, &mut head).map_err(io_err)?;
        if n < 4 || head[..4] != ZSTD_MAGIC {
            return Err(BundleError::NotABundle {
                reason: "the file is not zstd-compressed".into(),
            });
        }
        if n < 6 || head != FRAME_HEADER {
            // Only these header bytes are valid in v1: any other value is a damaged or foreign
            // file (decoders ignore some header bits, so a flip there would pass unnoticed).
            return Err(BundleError::NotABundle {
                reason: format!(
                    "the zstd frame header is {:02x?}, a v1 bundle has {:02x?}",
                    &head[..n],
                    FRAME_HEADER
                ),
            });
        }
        let file = {
            use std::io::Seek;
            file.rewind().map_err(io_err)?;
            file
        };
        let (tx, rx) = mpsc::sync_channel(CHUNKS);
        let (pool_tx, pool_rx) = mpsc::sync_channel(CHUNKS);
        for _ in 0..CHUNKS {
            // The pool channel holds exactly CHUNKS buffers and is empty now.
            pool_tx.send(vec![0u8; CHUNK]).expect("pool has room");
        }
        let worker = std::thread::Builder::new()
            .name("rin-decompress".into())
            .spawn(move || produce(file, tx, pool_rx))
            .map_err(io_err)?;
        Ok(Stream {
            rx: Some(rx),
            pool: Some(pool_tx),
            worker: Some(worker),
            cur: Vec::new(),
            pos: 0,
            len: 0,
            done: false,
            offset: 0,
        })
    }

    /// Make sure unread bytes are available; false at the end of the stream.
    fn fill(&mut self) -> Result<bool> {
        if self.pos < self.len {
            return Ok(true);
        }
        if self.done {
            return Ok(false);
        }
        if let (false, Some(pool)) = (self.cur.is_empty(), &self.pool) {
            // Hand the consumed buffer back to the worker for reuse.
            let _ = pool.send(std::mem::take(&mut self.cur));
        }
        let msg = self.rx.as_ref().and_then(|rx| rx.recv().ok());
        match msg {
            Some(Msg::Data(buf, n)) => {
                self.cur = buf;
                self.pos = 0;
                self.len = n;
                Ok(true)
            }
            Some(Msg::End) => {
                self.done = true;
                Ok(false)
            }
            Some(Msg::Fail(e)) => {
                self.done = true;
                Err(e)
            }
            None => Err(BundleError::Compression {
                offset: self.offset,
                message: "the decompression worker stopped".into(),
            }),
        }
    }

    /// Hand the next `n` bytes to `f` in pieces; Truncated if the stream ends first.
    fn take(
        &mut self,
        mut n: u64,
        context: &str,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        while n > 0 {
            if !self.fill()? {
                return Err(BundleError::Truncated {
                    context: format!("entry {context:?}"),
                });
            }
            let k = ((self.len - self.pos) as u64).min(n) as usize;
            f(&self.cur[self.pos..self.pos + k])?;
            self.pos += k;
            self.offset += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    fn take_small(&mut self, size: u64, path: &str) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(size as usize);
        self.take(size, path, |c| {
            v.extend_from_slice(c);
            Ok(())
        })?;
        self.expect_zero_padding(size, path)?;
        Ok(v)
    }

    fn read_exact(&mut self, out: &mut [u8], context: &str) -> Result<()> {
        let mut at = 0;
        let len = out.len() as u64;
        self.take(len, context, |c| {
            out[at..at + c.len()].copy_from_slice(c);
            at += c.len();
            Ok(())
        })
        .map_err(|e| match e {
            BundleError::Truncated { .. } => BundleError::Truncated {
                context: context.to_string(),
            },
            e => e,
        })
    }

    fn expect_zero_padding(&mut self, size: u64, path: &str) -> Result<()> {
        let mut nonzero = false;
        self.take(padding(size) as u64, path, |c| {
            nonzero |= c.iter().any(|&b| b != 0);
            Ok(())
        })?;
        if nonzero {
            return Err(BundleError::NonZeroPadding {
                path: path.to_string(),
            });
        }
        Ok(())
    }

    fn at_end(&mut self) -> Result<bool> {
        Ok(!self.fill()?)
    }

    /// Read one entry's headers: extended headers (`x`, GNU `L`) are followed to the real header.
    /// `None` at a zero block (the end-of-archive marker's first block).
    fn read_header_group(&mut self) -> Result<Option<HeaderGroup>> {
        let mut block = [0u8; BLOCK];
        let offset = self.offset;
        self.read_exact(&mut block, "a tar header")?;
        if block.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(BLOCK);
        let (mut path, mut size) = (None, None);
        for _ in 0..3 {
            if !checksum_ok(&block) {
                return Err(BundleError::CorruptHeader { offset });
            }
            bytes.extend_from_slice(&block);
            let h = tar::Header::from_byte_slice(&block);
            let kind = block[156];
            if kind != b'x' && kind != b'L' {
                let hsize = h
                    .entry_size()
                    .map_err(|_| BundleError::CorruptHeader { offset })?;
                let mtime = h
                    .mtime()
                    .map_err(|_| BundleError::CorruptHeader { offset })?;
                return Ok(Some(HeaderGroup {
                    bytes,
                    path: path.unwrap_or_else(|| h.path_bytes().into_owned()),
                    kind,
                    size: size.unwrap_or(hsize),
                    mtime,
                }));
            }
            let ext = h
                .entry_size()
                .map_err(|_| BundleError::CorruptHeader { offset })?;
            if ext > MAX_EXTENDED_HEADER {
                return Err(BundleError::NonCanonicalHeader {
                    path: "<extended header>".into(),
                });
            }
            let mut data = vec![0u8; ext as usize + padding(ext)];
            self.read_exact(&mut data, "an extended tar header")?;
            bytes.extend_from_slice(&data);
            data.truncate(ext as usize);
            if kind == b'L' {
                let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
                path = Some(data[..end].to_vec());
            } else {
                let recs = parse_pax(&data).ok_or(BundleError::CorruptHeader { offset })?;
                for (k, v) in recs {
                    match k.as_str() {
                        "path" => path = Some(v),
                        "size" => size = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()),
                        _ => {}
                    }
                }
            }
            self.read_exact(&mut block, "a tar header")?;
        }
        Err(BundleError::NonCanonicalHeader {
            path: "<chain of extended headers>".into(),
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Closing both channels makes the worker's next send or receive fail, so it ends.
        self.rx.take();
        self.pool.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The worker: decompress the single zstd frame into pooled buffers.
fn produce(file: File, tx: SyncSender<Msg>, pool: Receiver<Vec<u8>>) {
    let mut offset = 0u64;
    let zerr = |e: io::Error, offset: u64| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            BundleError::Truncated {
                context: "the compressed stream".into(),
            }
        } else {
            BundleError::Compression {
                offset,
                message: e.to_string(),
            }
        }
    };
    let result = (|| -> Result<bool> {
        let mut dec =
            zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(CHUNK, file))
                .map_err(|e| zerr(e, 0))?
                .single_frame();
        dec.window_log_max(MAX_WINDOW_LOG).map_err(|e| zerr(e, 0))?;
        loop {
            let Ok(mut buf) = pool.recv() else {
                return Ok(false);
            };
            let n = read_full(&mut dec, &mut buf).map_err(|e| zerr(e, offset))?;
            offset += n as u64;
            if n > 0 && tx.send(Msg::Data(buf, n)).is_err() {
                return Ok(false);
            }
            if n < CHUNK {
                let mut rest = dec.finish();
                let trailing = !rest.fill_buf().map_err(|e| zerr(e, offset))?.is_empty();
                if trailing {
                    return Err(BundleError::TrailingData {
                        what: "compressed stream",
                    });
                }
                return Ok(true);
            }
        }
    })();
    let _ = match result {
        Ok(true) => tx.send(Msg::End),
        Ok(false) => Ok(()),
        Err(e) => tx.send(Msg::Fail(e)),
    };
}

/// A fresh extraction directory that only appears at its final path once committed; anything
/// left when it is dropped uncommitted is removed.
struct Staging {
    target: PathBuf,
    partial: PathBuf,
    committed: bool,
}

impl Staging {
    fn create(target: &Path) -> Result<Self> {
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

    fn create_file(&mut self, rel: &str, mode: u32) -> Result<(File, PathBuf)> {
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

    fn write_whole(&mut self, rel: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let (mut f, p) = self.create_file(rel, mode)?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|source| BundleError::Output { path: p, source })
    }

    /// Make the verified tree durable, then give it its final name: every file was synced when
    /// it was written; here every directory of the tree is synced, the rename is made, and the
    /// parent is synced, so after a power cut the target is either absent or complete.
    fn commit(mut self) -> Result<PathBuf> {
        let out = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Output { path, source }
        };
        sync_dirs(&self.partial).map_err(out(&self.partial))?;
        fs::rename(&self.partial, &self.target).map_err(out(&self.target))?;
        self.committed = true;
        let parent = match self.target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent).map_err(out(parent))?;
        Ok(self.target.clone())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsync `dir` and every directory below it (files are synced as they are written).
fn sync_dirs(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            sync_dirs(&e.path())?;
        }
    }
    sync_dir(dir)
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.partial);
        }
    }
}
