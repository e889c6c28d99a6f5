//! The deterministic bundle writer.
//!
//! Settings are pinned so the same index, signatures and content always give the same bytes:
//! canonical tar headers (see `header`), zstd level 3, window log 21, content checksum, one frame,
//! always in zstd's multi-threaded mode. The worker count does not change the output (that mode
//! produces the same frame for every worker count of one or more; a unit test holds it to that).

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
/// The zstd window log of format v1 bundles (2 MiB), set explicitly so the frame header is fixed.
pub const ZSTD_WINDOW_LOG: u32 = 21;
/// The bytes every v1 bundle starts with: zstd magic, frame header descriptor (checksum flag,
/// no content size, no dictionary), window descriptor for 2^21.
pub const FRAME_HEADER: [u8; 6] = [0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58];
const COPY_BUF: usize = 256 << 10;
/// Padding and the end-of-archive marker are taken from here.
const ZEROS: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

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
    fn wait(&self) -> io::Result<()>;
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
    let mut enc = encoder(out, threads).map_err(io_err)?;

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
        // Set when the file holds more than planned; its extra bytes are never written.
        let mut grew = false;
        match source {
            Source::Bytes(b) => hw.write_all(b).map_err(io_err)?,
            Source::File(p) | Source::Awaited(p, _) => {
                let read_err = |source| BundleError::Io {
                    path: p.clone(),
                    source,
                };
                if let Source::Awaited(_, gate) = source {
                    gate.wait().map_err(read_err)?;
                }
                let mut f = File::open(p).map_err(read_err)?;
                loop {
                    let n = f.read(&mut buf).map_err(read_err)?;
                    if n == 0 {
                        break;
                    }
                    if hw.written() + n as u64 > entry.size {
                        grew = true;
                        break;
                    }
                    hw.write_all(&buf[..n]).map_err(io_err)?;
                    progress.advance(n as u64);
                }
            }
        }
        let (_, sha, n) = hw.finish();
        if grew || n != entry.size || sha != entry.sha256 {
            return Err(BundleError::InputChanged {
                path: format!("{} ({})", entry.path, source.describe()),
                expected: format!("{} bytes, sha256 {}", entry.size, entry.sha256),
                actual: if grew {
                    format!("more than {} bytes", entry.size)
                } else {
                    format!("{n} bytes, sha256 {sha}")
                },
            });
        }
        enc.write_all(&ZEROS[..padding(n)]).map_err(io_err)?;
    }
    enc.write_all(&ZEROS).map_err(io_err)?;
    progress.end();
    enc.finish().map_err(io_err)
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

fn write_small(w: &mut impl Write, path: &str, bytes: &[u8], mtime: u64) -> io::Result<()> {
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
/// `path` is always complete. The partial file is removed on any error. Returns the sha256 and
/// size of the written file.
pub fn write_bundle_file(
    path: &Path,
    index: &Index,
    signatures: &[u8],
    sources: &[Source],
    threads: u32,
    progress: &dyn Progress,
) -> Result<(String, u64)> {
    let partial = partial_path(path);
    let out_err = |source: io::Error| BundleError::Output {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let f = File::create(&partial).map_err(out_err)?;
        let hw = HashingWriter::new(BufWriter::with_capacity(1 << 20, f));
        let hw = write_bundle(hw, index, signatures, sources, threads, progress)?;
        let (w, sha256, size) = hw.finish();
        let f = w.into_inner().map_err(|e| out_err(e.into_error()))?;
        f.sync_all().map_err(out_err)?;
        fs::rename(&partial, path).map_err(out_err)?;
        Ok((sha256, size))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Entry, FORMAT, Stack, format_created};

    fn index_with(content: &[u8]) -> Index {
        Index {
            format: FORMAT.into(),
            stack: Stack {
                name: "t".into(),
                version: "1".into(),
            },
            created: format_created(0),
            platforms: vec![],
            k3s: None,
            images: vec![],
            charts: vec![],
            base: None,
            entries: vec![Entry {
                path: "files/data".into(),
                size: content.len() as u64,
                sha256: crate::digest::sha256_hex(content),
                mode: 0o644,
            }],
        }
    }

    #[test]
    fn output_and_frame_header_do_not_depend_on_threads() {
        // Several MiB of mixed data so the multi-threaded encoder cuts it into several jobs.
        let content: Vec<u8> = (0..6u64 << 20)
            .map(|i| ((i * 2654435761) >> 13) as u8 ^ (i % 7) as u8)
            .collect();
        let index = index_with(&content);
        let out: Vec<(String, Vec<u8>)> = [0u32, 1, 3]
            .iter()
            .map(|&t| {
                let b = write_bundle(
                    Vec::new(),
                    &index,
                    b"{}",
                    &[Source::Bytes(content.clone())],
                    t,
                    &crate::Silent,
                )
                .unwrap();
                (crate::digest::sha256_hex(&b), b[..6].to_vec())
            })
            .collect();
        assert_eq!(out[0].1, FRAME_HEADER);
        assert_eq!(out[0].0, out[1].0, "0 (meaning 1) and 1 worker differ");
        assert_eq!(out[1].0, out[2].0, "one and three workers differ");
    }

    #[test]
    fn changed_input_is_refused_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"hello").unwrap();
        let index = index_with(b"hellO");
        let out = dir.path().join("b.tar.zst");
        let r = write_bundle_file(&out, &index, b"{}", &[Source::File(src)], 1, &crate::Silent);
        assert!(matches!(r, Err(BundleError::InputChanged { .. })), "{r:?}");
        assert!(!out.exists() && !partial_path(&out).exists());
    }
}
