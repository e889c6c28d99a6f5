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

mod staging;
mod stream;

use staging::Staging;
use stream::{HeaderGroup, Stream};

use crate::error::{BundleError, Result};
use crate::header::{BLOCK, canonical_header};
use crate::index::{
    Entry, INDEX_PATH, Index, MAX_INDEX_SIZE, MAX_SIGNATURES_SIZE, MODE_FILE, SIGNATURES_PATH,
    check_entry_path,
};
use crate::progress::Progress;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Size of one decompressed buffer handed from the worker to the checker.
const CHUNK: usize = 1 << 20;
/// Buffers in flight: bounds the reader's memory to `CHUNKS * CHUNK` plus the zstd window.
const CHUNKS: usize = 4;
/// Largest zstd window accepted (2^24 = 16 MiB); v1 writers use far less.
pub const MAX_WINDOW_LOG: u32 = 24;
/// Largest extended (PAX) header accepted while explaining a refused entry.
const MAX_EXTENDED_HEADER: u64 = 64 << 10;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decides whether the signatures over an index (or a part list) are acceptable.
pub trait Trust {
    /// Check `signatures` (the `rinbundle.sig` bytes) over the exact `index` bytes. `vouched`:
    /// key ids that already vouch for this index elsewhere (the signers of a part list that
    /// names it by its sha256), counted beside the signatures' own. Returns the key ids that
    /// counted.
    fn check(
        &self,
        index: &[u8],
        signatures: &[u8],
        vouched: &[String],
    ) -> std::result::Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>>;

    /// The trusted keys whose signatures over `bytes` verify, whatever the threshold (at least
    /// one): for a part list, whose signers then count toward the bundle's threshold.
    fn signers(
        &self,
        bytes: &[u8],
        signatures: &[u8],
    ) -> std::result::Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>>;
}

/// Accepts any signatures: co-signing reads a bundle the co-signer may not trust yet (entries
/// are still checked against the index, one by one).
pub(crate) struct AnySigners;

impl Trust for AnySigners {
    fn check(
        &self,
        _: &[u8],
        _: &[u8],
        _: &[String],
    ) -> std::result::Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Vec::new())
    }
    fn signers(
        &self,
        _: &[u8],
        _: &[u8],
    ) -> std::result::Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Vec::new())
    }
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
    /// The part list, when the bundle is read from parts: a refusal is then traced to the part.
    parts: Option<(PathBuf, crate::parts::PartList)>,
    pub index: Index,
    pub index_bytes: Vec<u8>,
    pub signatures: Vec<u8>,
    pub signers: Vec<String>,
}

/// Read the first two entries without any trust decision, from a bundle file or its parts. For
/// display (`inspect`) and for what a check at the site backs (a delta's base): nothing returned
/// here may be trusted.
pub fn peek(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut s = match crate::parts::list_of(path) {
        Some(list) => {
            let (_, _, joined) = crate::parts::open_joined(&list, &AnySigners)?;
            Stream::from_reader(joined, path)?
        }
        None => Stream::open(path)?,
    };
    let (index, sig, _) = read_head(&mut s)?;
    Ok((index, sig))
}

/// Read the index and signatures and check them against `trust` before anything else. `path`
/// is a bundle file, or a split bundle's part list (`NAME.parts`, or any of its parts): then the
/// list's signatures are checked first, every part must be there with its size, the parts are
/// read in order as one stream, and they must make the bundle the list names; the list's
/// trusted signers count toward the threshold beside the index's.
pub fn open(path: &Path, trust: &dyn Trust) -> Result<Opened> {
    match crate::parts::list_of(path) {
        Some(list_path) => {
            let (list, signers, joined) = crate::parts::open_joined(&list_path, trust)?;
            let parts = Some((list_path, list));
            Stream::from_reader(joined, path)
                .and_then(|s| open_stream(s, parts.clone(), &signers, trust))
                .map_err(|e| blame_part(e, parts.as_ref()))
        }
        None => open_stream(Stream::open(path)?, None, &[], trust),
    }
}

/// A refusal while reading parts, traced to the first part that is not what the list says
/// (when one is not: the refusal itself). A damaged part can make the decompressor fail before
/// that part's end, where its hash would have named it.
fn blame_part(e: BundleError, parts: Option<&(PathBuf, crate::parts::PartList)>) -> BundleError {
    match parts {
        Some((list_path, list)) if e.is_refusal() && !e.is_about_a_part() => {
            crate::parts::first_bad(list_path, list).unwrap_or(e)
        }
        _ => e,
    }
}

/// `vouched`: the keys that signed the part list, which count toward the threshold once the
/// stream is found to hold the index the list names.
fn open_stream(
    mut stream: Stream,
    list: Option<(PathBuf, crate::parts::PartList)>,
    vouched: &[String],
    trust: &dyn Trust,
) -> Result<Opened> {
    let (index_bytes, signatures, mtime) = read_head(&mut stream)?;
    if let Some((list_path, list)) = &list {
        let actual = crate::digest::sha256_hex(&index_bytes);
        if actual != list.index_sha256 {
            return Err(BundleError::Parts {
                path: list_path.clone(),
                reason: format!(
                    "its parts make another bundle (index sha256 {actual}, the list names {})",
                    list.index_sha256
                ),
            });
        }
    }
    let signers = trust
        .check(&index_bytes, &signatures, vouched)
        .map_err(|source| BundleError::Untrusted { source })?;
    let index = Index::from_canonical_json(&index_bytes)?;
    if index.created_epoch()? != mtime {
        return Err(BundleError::InvalidIndex {
            reason: "created does not match the time in the tar headers".into(),
        });
    }
    Ok(Opened {
        stream,
        parts: list,
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
pub struct Discard;

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
    pub fn verify_into(self, sink: &mut dyn Sink, progress: &dyn Progress) -> Result<Verified> {
        let parts = self.parts.clone();
        self.verify_stream(sink, progress)
            .map_err(|e| blame_part(e, parts.as_ref()))
    }

    fn verify_stream(mut self, sink: &mut dyn Sink, progress: &dyn Progress) -> Result<Verified> {
        let mtime = self.index.created_epoch()?;
        let lookup: HashMap<&str, usize> = self
            .index
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), i))
            .collect();
        let entries = &self.index.entries;
        let documents = Documents::new(&self.index);
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
            let mut document = documents.begin(entry)?;
            s.take(entry.size, &entry.path, |chunk| {
                hasher.update(chunk);
                progress.advance(chunk.len() as u64);
                if let Some(d) = document.as_mut() {
                    d.extend_from_slice(chunk);
                }
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
            if let Some(d) = document {
                documents.check(entry, &d)?;
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

/// The image indexes and manifests the signed index names (images, their platforms, charts),
/// read as they stream by: each must parse, and every blob it names (children, config, layers)
/// must be carried or, in a delta, left out in `base.blobs`, so a bundle that verifies holds
/// everything seeding needs.
struct Documents<'a> {
    index: &'a Index,
    /// Bundle paths of the documents.
    paths: std::collections::HashSet<String>,
    /// Paths of every entry.
    carried: std::collections::HashSet<&'a str>,
}

impl<'a> Documents<'a> {
    fn new(index: &'a Index) -> Self {
        let paths = index
            .images
            .iter()
            .flat_map(|i| std::iter::once(&i.digest).chain(i.platforms.iter().map(|p| &p.digest)))
            .chain(index.charts.iter().map(|c| &c.digest))
            .filter_map(|d| crate::oci::bundle_blob_path(d))
            .collect();
        Documents {
            index,
            paths,
            carried: index.entries.iter().map(|e| e.path.as_str()).collect(),
        }
    }

    /// A buffer for `entry` when it is one of the documents (at most `MAX_DOCUMENT` bytes).
    fn begin(&self, entry: &Entry) -> Result<Option<Vec<u8>>> {
        if !self.paths.contains(&entry.path) {
            return Ok(None);
        }
        if entry.size > crate::oci::MAX_DOCUMENT {
            return Err(self.bad(
                entry,
                format!(
                    "an image manifest or index of {} bytes, over the {}-byte limit",
                    entry.size,
                    crate::oci::MAX_DOCUMENT
                ),
            ));
        }
        Ok(Some(Vec::with_capacity(entry.size as usize)))
    }

    /// The document's content (verified against the signed index): it parses, and each blob it
    /// names is there.
    fn check(&self, entry: &Entry, bytes: &[u8]) -> Result<()> {
        let doc: crate::oci::Document = serde_json::from_slice(bytes).map_err(|e| {
            self.bad(
                entry,
                format!("does not parse as an image manifest or index: {e}"),
            )
        })?;
        let named = doc
            .manifests
            .iter()
            .flatten()
            .chain(doc.config.iter())
            .chain(doc.layers.iter().flatten());
        for d in named {
            let held = crate::oci::bundle_blob_path(&d.digest)
                .is_some_and(|p| self.carried.contains(p.as_str()))
                || self
                    .index
                    .base
                    .as_ref()
                    .is_some_and(|b| b.holds_blob(&d.digest));
            if !held {
                return Err(self.bad(
                    entry,
                    format!(
                        "names {}, which the bundle neither carries nor leaves out in base.blobs",
                        d.digest
                    ),
                ));
            }
        }
        Ok(())
    }

    fn bad(&self, entry: &Entry, reason: String) -> BundleError {
        BundleError::BadDocument {
            path: entry.path.clone(),
            reason,
        }
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
