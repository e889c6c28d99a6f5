//! Co-signing: a bundle written again with another signature document. The index and every
//! entry stay byte-identical, so the index sha256 does too; only `rinbundle.sig` changes. The
//! tar stream is otherwise the original's, and it is compressed with the format's pinned
//! settings, so the file is byte for byte the one a build signed by all those keys at once
//! writes.

use crate::error::{BundleError, Result};
use crate::header::{canonical_header, padding};
use crate::index::{INDEX_PATH, Index, SIGNATURES_PATH};
use crate::progress::Progress;
use crate::reader::{AnySigners, Sink};
use crate::writer::{ZEROS, encoder, write_file, write_small};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What was written.
#[derive(Debug)]
pub struct Resigned {
    pub index: Index,
    /// The new file's size.
    pub size: u64,
}

/// The index and signature bytes of the bundle file `path`, and whether the rest of it is
/// intact: every entry checked against the index in one pass. For a co-signer, before signing.
pub fn head_of_intact(path: &Path, progress: &dyn Progress) -> Result<(Vec<u8>, Vec<u8>)> {
    let opened = crate::reader::open(path, &AnySigners)?;
    let head = (opened.index_bytes.clone(), opened.signatures.clone());
    opened.verify(None, progress)?;
    Ok(head)
}

/// Write the bundle file `path` again, into `out` (which may be `path`: it is replaced only once
/// the new file is complete and synced), with `signatures` as its `rinbundle.sig`. Every entry is
/// checked against the index as it streams by, as a reader does, and written with its canonical
/// header; anything refused leaves `out` as it was. `index_sha256` is the index the signatures
/// were made over: another bundle at `path` is refused.
pub fn resign(
    path: &Path,
    index_sha256: &str,
    signatures: &[u8],
    out: &Path,
    threads: u32,
    progress: &dyn Progress,
) -> Result<Resigned> {
    if crate::parts::list_of(path).is_some() {
        return Err(BundleError::NotABundle {
            reason: format!(
                "{} is a split bundle: its part list is co-signed as it is, the parts are not rewritten",
                path.display()
            ),
        });
    }
    let opened = crate::reader::open(path, &AnySigners)?;
    let found = crate::digest::sha256_hex(&opened.index_bytes);
    if found != index_sha256 {
        return Err(BundleError::InvalidIndex {
            reason: format!(
                "{} changed: its index sha256 is {found}, the signatures were made over {index_sha256}",
                path.display()
            ),
        });
    }
    let index = opened.index.clone();
    let mtime = index.created_epoch()?;
    let index_bytes = opened.index_bytes.clone();
    let (_, size) = write_file(out, false, |file| {
        let out_err = |source| BundleError::Output {
            path: out.to_path_buf(),
            source,
        };
        let mut enc = encoder(file, threads).map_err(out_err)?;
        write_small(&mut enc, INDEX_PATH, &index_bytes, mtime).map_err(out_err)?;
        write_small(&mut enc, SIGNATURES_PATH, signatures, mtime).map_err(out_err)?;
        let mut sink = Rewrite {
            enc,
            mtime,
            out: out.to_path_buf(),
        };
        opened.verify_into(&mut sink, progress)?;
        let mut enc = sink.enc;
        enc.write_all(&ZEROS).map_err(out_err)?;
        enc.finish().map_err(out_err)
    })?;
    Ok(Resigned { index, size })
}

/// Frames each verified entry again as the writer does.
struct Rewrite<W: Write> {
    enc: zstd::stream::write::Encoder<'static, W>,
    mtime: u64,
    out: PathBuf,
}

impl<W: Write> Rewrite<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.enc
            .write_all(bytes)
            .map_err(|source| BundleError::Output {
                path: self.out.clone(),
                source,
            })
    }
}

impl<W: Write> Sink for Rewrite<W> {
    fn begin(&mut self, entry: &crate::index::Entry) -> Result<bool> {
        let header = canonical_header(&entry.path, entry.size, entry.mode, self.mtime);
        self.write(&header)?;
        Ok(true)
    }
    fn data(&mut self, chunk: &[u8]) -> Result<()> {
        self.write(chunk)
    }
    fn end(&mut self, entry: &crate::index::Entry) -> Result<()> {
        self.write(&ZEROS[..padding(entry.size)])
    }
}
