//! Split parts: a bundle cut into byte ranges for removable media (FAT32 holds no file of 4 GiB
//! or more), with a signed part list naming each part's size and sha256, the whole file's, and
//! the bundle's index sha256. docs/FORMAT.md section 10 is the contract.
//!
//! `NAME.parts` is canonical JSON `{"list": LIST, "signatures": SIGS}`: `LIST` is the part list
//! and `SIGS` a `rinbundle.sig` document over `LIST`'s canonical JSON bytes. Keys sort, so those
//! bytes stand verbatim in the file. A list signed by at least one trusted key is used; its
//! signers then count toward the bundle's threshold beside the index's own (the list names the
//! index by its sha256), so a co-signer can sign the list without rewriting the parts.

use crate::digest::sha256_hex;
use crate::error::{BundleError, Result};
use crate::json::canonical_json;
use crate::reader::Trust;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The part list's `format`.
pub const FORMAT: &str = "rinbundle-parts/v1";
/// The largest file FAT32 holds: the default part size.
pub const FAT32_MAX: u64 = (4 << 30) - 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartList {
    /// Always [`FORMAT`].
    pub format: String,
    /// The bundle's file name (the parts are `NAME.part-001`, `NAME.part-002`, ...).
    pub bundle: String,
    /// sha256 of the bundle's signed index (`rinbundle.json`): which bundle the parts make.
    pub index_sha256: String,
    /// The whole file's size and sha256.
    pub size: u64,
    pub sha256: String,
    /// In order.
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// File name, in the same directory as the part list.
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartsFile {
    list: PartList,
    signatures: serde_json::Value,
}

/// The part list file of `bundle`: `NAME.parts` beside it.
pub fn list_path(bundle: &Path) -> PathBuf {
    with_suffix(bundle, ".parts")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Cut `bundle` into parts of at most `size` bytes beside it (`NAME.part-001`, ...), each written
/// whole or not at all, then write `NAME.parts` with `sign`'s signature document over the list.
/// The bundle itself is read once and not changed.
pub fn split(
    bundle: &Path,
    size: u64,
    sign: &dyn Fn(&[u8]) -> Vec<u8>,
) -> Result<(PathBuf, PartList)> {
    if size == 0 {
        return Err(BundleError::Parts {
            path: bundle.to_path_buf(),
            reason: "the part size must be at least one byte".into(),
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { path, source }
    };
    let (index, _) = crate::reader::peek(bundle)?;
    let name = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut src = File::open(bundle).map_err(io(bundle))?;
    let total = src.metadata().map_err(io(bundle))?.len();
    let mut whole = Sha256::new();
    let mut parts = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = total;
    while left > 0 || parts.is_empty() {
        let part_name = format!("{name}.part-{:03}", parts.len() + 1);
        let path = bundle.with_file_name(&part_name);
        let mut out = rin_support::fs::AtomicFile::create(&path, 0o644).map_err(out_err)?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        while n < size.min(left) {
            let want = (size.min(left) - n).min(buf.len() as u64) as usize;
            let got = src.read(&mut buf[..want]).map_err(io(bundle))?;
            if got == 0 {
                return Err(BundleError::Parts {
                    path: bundle.to_path_buf(),
                    reason: "the file ended early: it changed while being split".into(),
                });
            }
            h.update(&buf[..got]);
            whole.update(&buf[..got]);
            out.write_all(&buf[..got]).map_err(io(out.tmp()))?;
            n += got as u64;
        }
        out.commit().map_err(out_err)?;
        left -= n;
        parts.push(Part {
            name: part_name,
            size: n,
            sha256: hex::encode(h.finalize()),
        });
        if total == 0 {
            break;
        }
    }
    let list = PartList {
        format: FORMAT.into(),
        bundle: name,
        index_sha256: sha256_hex(&index),
        size: total,
        sha256: hex::encode(whole.finalize()),
        parts,
    };
    let path = list_path(bundle);
    write_list(&path, &list, &sign(&canonical_json(&list)))?;
    Ok((path, list))
}

/// Write the part list file at `path`: `list` with the signature document `signatures`.
fn write_list(path: &Path, list: &PartList, signatures: &[u8]) -> Result<()> {
    let signatures: serde_json::Value =
        serde_json::from_slice(signatures).map_err(|e| BundleError::Parts {
            path: path.to_path_buf(),
            reason: format!("the signatures do not parse: {e}"),
        })?;
    rin_support::fs::write_atomic(
        path,
        &canonical_json(&PartsFile {
            list: list.clone(),
            signatures,
        }),
        0o644,
    )
    .map_err(out_err)
}

/// Makes a signature document with one more signature, from the signed bytes and the current
/// document; None when the key already signed, or why it cannot.
pub type AddSignature<'a> =
    dyn Fn(&[u8], &[u8]) -> std::result::Result<Option<Vec<u8>>, String> + 'a;

/// Co-sign the part list at `path` without touching the parts: every part is hashed against the
/// list and the bundle they make is verified entry by entry (the co-signer checks what they
/// sign), then `add` makes the new signature document from the list's bytes and its current
/// one (None: this key already signed). The list's signers count toward the bundle's threshold
/// at the site. The list, and whether a signature was added.
pub fn cosign(
    path: &Path,
    add: &AddSignature<'_>,
    progress: &dyn crate::Progress,
) -> Result<(PartList, bool)> {
    let any = crate::reader::AnySigners;
    let (list, states) = check(path, &any)?;
    let dir = dir_of(path);
    if let Some(e) = list
        .parts
        .iter()
        .zip(states)
        .find_map(|(p, s)| refusal(dir, p, s))
    {
        return Err(e);
    }
    crate::reader::open(path, &any)?.verify(None, progress)?;
    let (_, signatures) = read_list(path)?;
    let added = add(&canonical_json(&list), &signatures).map_err(|reason| BundleError::Parts {
        path: path.to_path_buf(),
        reason,
    })?;
    match added {
        Some(sigs) => {
            write_list(path, &list, &sigs)?;
            Ok((list, true))
        }
        None => Ok((list, false)),
    }
}

fn out_err(e: rin_support::fs::FileError) -> BundleError {
    BundleError::Output {
        path: e.path,
        source: e.source,
    }
}

/// Read `NAME.parts`, check its signatures with `trust` and only then parse the list: the list
/// and the key ids that signed it.
pub fn open_list(path: &Path, trust: &dyn Trust) -> Result<(PartList, Vec<String>)> {
    let bad = |reason: String| BundleError::Parts {
        path: path.to_path_buf(),
        reason,
    };
    let (raw, signatures) = read_list(path)?;
    let list = raw.get("list").map(canonical_json).unwrap_or_default();
    let signers = trust
        .signers(&list, &signatures)
        .map_err(|e| BundleError::PartsUntrusted {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let file: PartsFile = serde_json::from_value(raw).map_err(|e| bad(format!("its list: {e}")))?;
    let list = file.list;
    if list.format != FORMAT {
        return Err(bad(format!("unknown format {:?}", list.format)));
    }
    for p in &list.parts {
        if p.name.contains('/') || p.name.is_empty() || p.name.starts_with('.') {
            return Err(bad(format!("part name {:?} is not a file name", p.name)));
        }
    }
    if list.parts.iter().map(|p| p.size).sum::<u64>() != list.size {
        return Err(bad("its parts do not add up to the bundle's size".into()));
    }
    Ok((list, signers))
}

/// The part list file at `path` as JSON, and its signature document's bytes; nothing in it is
/// trusted yet.
fn read_list(path: &Path) -> Result<(serde_json::Value, Vec<u8>)> {
    let bad = |reason: String| BundleError::Parts {
        path: path.to_path_buf(),
        reason,
    };
    crate::json::read_signed(path, "list", &bad)
}

/// What a part is, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartState {
    Good,
    Missing,
    /// Present, of another size.
    WrongSize {
        size: u64,
    },
    /// Present, of the right size, with other content.
    Damaged {
        sha256: String,
    },
}

/// Every part of the list at `path` (signatures checked first), hashed: one state per part, in
/// order.
pub fn check(path: &Path, trust: &dyn Trust) -> Result<(PartList, Vec<PartState>)> {
    let (list, _) = open_list(path, trust)?;
    let dir = dir_of(path);
    let states = list
        .parts
        .iter()
        .map(|p| state(dir, p, true))
        .collect::<Result<Vec<_>>>()?;
    Ok((list, states))
}

/// The directory a part list's parts are in: its own.
fn dir_of(list_path: &Path) -> &Path {
    list_path.parent().unwrap_or(Path::new("."))
}

/// What part `p` is as found in `dir`: present with its listed size, and with `hash`, its sha256
/// too (a part of the right size is `Good` without it).
fn state(dir: &Path, p: &Part, hash: bool) -> Result<PartState> {
    let file = dir.join(&p.name);
    let io = |source| BundleError::Io {
        path: file.clone(),
        source,
    };
    Ok(match std::fs::metadata(&file) {
        Err(_) => PartState::Missing,
        Ok(m) if m.len() != p.size => PartState::WrongSize { size: m.len() },
        Ok(_) if !hash => PartState::Good,
        Ok(_) => {
            let (sha256, _) =
                crate::digest::sha256_reader(File::open(&file).map_err(io)?).map_err(io)?;
            if sha256 == p.sha256 {
                PartState::Good
            } else {
                PartState::Damaged { sha256 }
            }
        }
    })
}

/// The refusal naming part `p` in `dir` when it is not good.
fn refusal(dir: &Path, p: &Part, state: PartState) -> Option<BundleError> {
    let path = dir.join(&p.name);
    match state {
        PartState::Good => None,
        PartState::Missing => Some(BundleError::PartMissing { path }),
        PartState::WrongSize { size } => Some(BundleError::PartWrongSize {
            path,
            size,
            expected: p.size,
        }),
        PartState::Damaged { sha256 } => Some(BundleError::PartDamaged {
            path,
            expected: p.sha256.clone(),
            actual: sha256,
        }),
    }
}

/// The first part of `list` that is not what it says (missing, of another size, or of other
/// content), as the refusal that names it; None when every part is good (a part that cannot be
/// read at all is passed over: the refusal being explained then stands).
pub(crate) fn first_bad(list_path: &Path, list: &PartList) -> Option<BundleError> {
    let dir = dir_of(list_path);
    list.parts
        .iter()
        .find_map(|p| refusal(dir, p, state(dir, p, true).ok()?))
}

/// The part list a path names, when it names one: `NAME.parts` itself, or any `NAME.part-NNN`.
pub fn list_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with(".parts") {
        return Some(path.to_path_buf());
    }
    let (stem, n) = name.rsplit_once(".part-")?;
    (n.len() >= 3 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| path.with_file_name(format!("{stem}.parts")))
}

/// The parts of the list at `path`, read in order as one stream: the list's signatures are
/// checked with `trust`, then every part must be there with its listed size (checked now,
/// before any long pass: the first one that is not is named). The parts are not hashed on the
/// way: the stream itself is verified byte for byte against the signed index, and a refusal
/// is traced to the damaged part afterwards ([`first_bad`]), so reading parts costs what
/// reading the joined file does. Also returns the trusted keys that signed the list.
pub fn open_joined(
    path: &Path,
    trust: &dyn Trust,
) -> Result<(PartList, Vec<String>, Box<dyn Read + Send>)> {
    let (list, signers) = open_list(path, trust)?;
    let dir = dir_of(path).to_path_buf();
    for p in &list.parts {
        if let Some(e) = refusal(&dir, p, state(&dir, p, false)?) {
            return Err(e);
        }
    }
    let joined = Joined {
        dir,
        parts: list.parts.clone(),
        next: 0,
        cur: None,
    };
    Ok((list, signers, Box::new(joined)))
}

/// The parts, one after the other.
struct Joined {
    dir: PathBuf,
    parts: Vec<Part>,
    next: usize,
    /// The part being read: its file, bytes left, index.
    cur: Option<(File, u64, usize)>,
}

impl Read for Joined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.cur.is_none() {
                let Some(p) = self.parts.get(self.next) else {
                    return Ok(0);
                };
                let f = File::open(self.dir.join(&p.name))?;
                self.cur = Some((f, p.size, self.next));
                self.next += 1;
            }
            let Some((f, left, i)) = self.cur.as_mut() else {
                continue;
            };
            if *left == 0 {
                self.cur = None;
                continue;
            }
            let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                // Shorter than when it was checked: it changed during the read.
                let p = &self.parts[*i];
                return Err(std::io::Error::other(DamagedPart {
                    path: self.dir.join(&p.name),
                    expected: p.sha256.clone(),
                    actual: "(it ended early)".into(),
                }));
            }
            *left -= n as u64;
            return Ok(n);
        }
    }
}

/// A part that changed while it was read, carried through the decompressor's reads.
#[derive(Debug)]
struct DamagedPart {
    path: PathBuf,
    expected: String,
    actual: String,
}

impl std::fmt::Display for DamagedPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is damaged", self.path.display())
    }
}

impl std::error::Error for DamagedPart {}

/// The refusal a damaged part's read error stands for, if it is one.
pub(crate) fn part_error(e: &std::io::Error) -> Option<BundleError> {
    let d = e.get_ref()?.downcast_ref::<DamagedPart>()?;
    Some(BundleError::PartDamaged {
        path: d.path.clone(),
        expected: d.expected.clone(),
        actual: d.actual.clone(),
    })
}
