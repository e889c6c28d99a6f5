//! The decompressed tar stream: a worker thread decompresses into a pool of fixed buffers and
//! the checker reads header blocks and content from it, with the exact zstd frame checked at both
//! ends.

use super::{CHUNK, CHUNKS, MAX_EXTENDED_HEADER, MAX_WINDOW_LOG, ZSTD_MAGIC};
use crate::error::{BundleError, Result};
use crate::header::{BLOCK, checksum_ok, padding, parse_pax};
use crate::writer::{FRAME_HEADER, read_full};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// One entry's header blocks (extended headers included) and what they say.
pub(super) struct HeaderGroup {
    pub(super) bytes: Vec<u8>,
    pub(super) path: Vec<u8>,
    pub(super) kind: u8,
    pub(super) size: u64,
    pub(super) mtime: u64,
}

pub(super) enum Msg {
    Data(Vec<u8>, usize),
    End,
    Fail(BundleError),
}

/// The decompressed tar stream, fed by a worker thread.
pub(super) struct Stream {
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
    pub(super) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Stream::from_reader(Box::new(file), path)
    }

    /// The stream of a compressed bundle read from `file` (a file, or parts joined); `path`
    /// names it in errors.
    pub(super) fn from_reader(mut file: Box<dyn Read + Send>, path: &Path) -> Result<Self> {
        let io_err = |source: io::Error| match crate::parts::part_error(&source) {
            Some(e) => e,
            None => BundleError::Io {
                path: path.to_path_buf(),
                source,
            },
        };
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
        // The head goes back in front of the rest.
        let file: Box<dyn Read + Send> = Box::new(io::Cursor::new(head[..n].to_vec()).chain(file));
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
    pub(super) fn fill(&mut self) -> Result<bool> {
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
    pub(super) fn take(
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

    pub(super) fn take_small(&mut self, size: u64, path: &str) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(size as usize);
        self.take(size, path, |c| {
            v.extend_from_slice(c);
            Ok(())
        })?;
        self.expect_zero_padding(size, path)?;
        Ok(v)
    }

    pub(super) fn read_exact(&mut self, out: &mut [u8], context: &str) -> Result<()> {
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

    pub(super) fn expect_zero_padding(&mut self, size: u64, path: &str) -> Result<()> {
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

    pub(super) fn at_end(&mut self) -> Result<bool> {
        Ok(!self.fill()?)
    }

    /// Read one entry's headers: extended headers (`x`, GNU `L`) are followed to the real header.
    /// `None` at a zero block (the end-of-archive marker's first block).
    pub(super) fn read_header_group(&mut self) -> Result<Option<HeaderGroup>> {
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
pub(super) fn produce(file: Box<dyn Read + Send>, tx: SyncSender<Msg>, pool: Receiver<Vec<u8>>) {
    let mut offset = 0u64;
    let zerr = |e: io::Error, offset: u64| {
        if let Some(part) = crate::parts::part_error(&e) {
            part
        } else if e.kind() == io::ErrorKind::UnexpectedEof {
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
