//! The deterministic bundle writer.
//!
//! Settings are pinned so the same index, signatures and content always give the same bytes:
//! canonical tar headers (see `header`), zstd level 3 with a content checksum, one frame. The
//! worker count does not change the output (zstd's multi-threaded mode produces the same frame
//! for every worker count of one or more; a unit test holds it to that).

use crate::digest::HashingWriter;
use crate::error::{BundleError, Result};
use crate::header::{BLOCK, canonical_header, padding};
use crate::index::{INDEX_PATH, Index, MODE_FILE, SIGNATURES_PATH};
use crate::progress::Progress;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The zstd level of format v1 bundles.
pub const ZSTD_LEVEL: i32 = 3;
const COPY_BUF: usize = 256 << 10;

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Bytes(_) => "generated content".to_string(),
        }
    }
}

/// Write a complete bundle to `out`. `sources[i]` supplies `index.entries[i]`; each is hashed
/// again while it is written and must still match the index.
pub fn write_bundle<W: Write>(
    out: W,
    index: &Index,
    signatures: &[u8],
    sources: &[Source],
    threads: u32,
    progress: &dyn Progress,
) -> Result<W> {
    assert_eq!(index.entries.len(), sources.len(), "one source per entry");
    let mtime = index.created_epoch()?;
    let io_err = |source: io::Error| BundleError::Output {
        path: PathBuf::from("<bundle stream>"),
        source,
    };
    let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(io_err)?;
    enc.include_checksum(true).map_err(io_err)?;
    enc.include_contentsize(false).map_err(io_err)?;
    if threads > 0 {
        enc.multithread(threads).map_err(io_err)?;
    }

    let index_bytes = index.to_canonical_json();
    write_small(&mut enc, INDEX_PATH, &index_bytes, mtime).map_err(io_err)?;
    write_small(&mut enc, SIGNATURES_PATH, signatures, mtime).map_err(io_err)?;

    progress.begin("write", index.content_size());
    let mut buf = vec![0u8; COPY_BUF];
    for (entry, source) in index.entries.iter().zip(sources) {
        enc.write_all(&canonical_header(
            &entry.path,
            entry.size,
            entry.mode,
            mtime,
        ))
        .map_err(io_err)?;
        let mut hw = HashingWriter::new(&mut enc);
        match source {
            Source::Bytes(b) => hw.write_all(b).map_err(io_err)?,
            Source::File(p) => {
                let mut f = File::open(p).map_err(|source| BundleError::Io {
                    path: p.clone(),
                    source,
                })?;
                // Copy at most the declared size plus one byte, so a grown file is noticed
                // without writing past the entry.
                let mut left = entry.size + 1;
                while left > 0 {
                    let want = buf.len().min(left as usize);
                    let n = f.read(&mut buf[..want]).map_err(|source| BundleError::Io {
                        path: p.clone(),
                        source,
                    })?;
                    if n == 0 {
                        break;
                    }
                    if hw.written() + n as u64 > entry.size {
                        return Err(changed(entry.path.clone(), source, &entry.sha256, "grew"));
                    }
                    hw.write_all(&buf[..n]).map_err(io_err)?;
                    progress.advance(n as u64);
                    left -= n as u64;
                }
            }
        }
        let (_, sha, n) = hw.finish();
        if n != entry.size || sha != entry.sha256 {
            return Err(BundleError::InputChanged {
                path: source.describe(),
                expected: entry.sha256.clone(),
                actual: sha,
            });
        }
        enc.write_all(&vec![0u8; padding(n)]).map_err(io_err)?;
    }
    enc.write_all(&[0u8; 2 * BLOCK]).map_err(io_err)?;
    progress.end();
    enc.finish().map_err(io_err)
}

fn changed(path: String, source: &Source, expected: &str, what: &str) -> BundleError {
    BundleError::InputChanged {
        path: format!("{path} ({})", source.describe()),
        expected: expected.to_string(),
        actual: what.to_string(),
    }
}

fn write_small(w: &mut impl Write, path: &str, bytes: &[u8], mtime: u64) -> io::Result<()> {
    w.write_all(&canonical_header(
        path,
        bytes.len() as u64,
        MODE_FILE,
        mtime,
    ))?;
    w.write_all(bytes)?;
    w.write_all(&vec![0u8; padding(bytes.len() as u64)])
}

/// Write a bundle to `path` safely: into `path.partial`, synced, then renamed, so a file at
/// `path` is always complete. The partial file is removed on any error.
pub fn write_bundle_file(
    path: &Path,
    index: &Index,
    signatures: &[u8],
    sources: &[Source],
    threads: u32,
    progress: &dyn Progress,
) -> Result<()> {
    let partial = partial_path(path);
    let out_err = |source: io::Error| BundleError::Output {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let f = File::create(&partial).map_err(out_err)?;
        let w = write_bundle(
            BufWriter::with_capacity(1 << 20, f),
            index,
            signatures,
            sources,
            threads,
            progress,
        )?;
        let f = w.into_inner().map_err(|e| out_err(e.into_error()))?;
        f.sync_all().map_err(out_err)?;
        fs::rename(&partial, path).map_err(out_err)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// `NAME.partial` beside `path`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}
