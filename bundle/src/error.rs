//! Errors of the bundle format. Every variant except `Io`, `Output` and `InputChanged`
//! means the bundle itself was refused.

use std::path::PathBuf;

pub type Result<T, E = BundleError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read bundle {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} changed while the bundle was being written (it was {expected}, it is now {actual})"
    )]
    InputChanged {
        path: String,
        expected: String,
        actual: String,
    },

    #[error("not a bundle: {reason}")]
    NotABundle { reason: String },
    #[error("the compressed stream is damaged at byte {offset} of the tar stream: {message}")]
    Compression { offset: u64, message: String },
    #[error("the bundle is truncated: the stream ends inside {context}")]
    Truncated { context: String },
    #[error("trailing data after the end of the {what}")]
    TrailingData { what: &'static str },
    #[error("the bundle index is {size} bytes, over the {max}-byte limit")]
    IndexTooLarge { size: u64, max: u64 },
    #[error("the signature entry is {size} bytes, over the {max}-byte limit")]
    SignaturesTooLarge { size: u64, max: u64 },
    #[error("the bundle is unsigned: it carries no rinbundle.sig entry")]
    Unsigned,
    #[error("it is not signed as this site requires")]
    Untrusted {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("part list {path}: {reason}")]
    Parts { path: PathBuf, reason: String },
    #[error("part list {path}: its signatures were refused: {reason}")]
    PartsUntrusted { path: PathBuf, reason: String },
    #[error("site inventory {path}: {reason}")]
    Inventory { path: PathBuf, reason: String },
    #[error("part {path} is missing")]
    PartMissing { path: PathBuf },
    #[error("part {path} is {size} bytes; the part list says {expected}")]
    PartWrongSize {
        path: PathBuf,
        size: u64,
        expected: u64,
    },
    #[error("part {path} is damaged: its sha256 is {actual}, the part list says {expected}")]
    PartDamaged {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{bad} of the {count} parts of {path} are missing or damaged")]
    PartsBad {
        path: PathBuf,
        bad: usize,
        count: usize,
    },
    #[error("the bundle uses format {found:?}; this program reads {supported:?}")]
    UnsupportedFormat {
        found: String,
        supported: &'static str,
    },
    #[error("the bundle index is invalid: {reason}")]
    InvalidIndex { reason: String },
    /// An image index or manifest (one the signed index names) that does not parse, or names a
    /// blob the bundle neither carries nor leaves out.
    #[error("entry {path:?}: {reason}")]
    BadDocument { path: String, reason: String },

    #[error("corrupt tar header at byte {offset} of the tar stream (checksum mismatch)")]
    CorruptHeader { offset: u64 },
    #[error("entry {path:?} has an unsafe path ({problem})")]
    UnsafePath { path: String, problem: &'static str },
    #[error("entry {path:?} is a {kind}, only regular files are allowed")]
    NonRegularEntry { path: String, kind: String },
    #[error("entry {path:?} is not listed in the signed index")]
    UnlistedEntry { path: String },
    #[error("entry {path:?} appears more than once")]
    DuplicateEntry { path: String },
    #[error("entry {path:?} is out of order: the signed index expects {expected:?} here")]
    OutOfOrder { path: String, expected: String },
    #[error("{count} entries of the signed index are missing, the first is {first:?}")]
    MissingEntries { first: String, count: usize },
    #[error(
        "entry {path:?} is {actual} bytes, larger than the {declared} bytes declared in the signed index"
    )]
    EntryTooLarge {
        path: String,
        declared: u64,
        actual: u64,
    },
    #[error("entry {path:?} is {actual} bytes, the signed index declares {declared}")]
    SizeMismatch {
        path: String,
        declared: u64,
        actual: u64,
    },
    #[error(
        "entry {path:?} has a tar header that is not the canonical one (mode, owner, time or layout differ)"
    )]
    NonCanonicalHeader { path: String },
    #[error("entry {path:?} is followed by non-zero padding")]
    NonZeroPadding { path: String },
    #[error("entry {path:?} does not match the signed index: sha256 {actual}, expected {expected}")]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("cannot extract into {path}: it already exists")]
    StagingExists { path: PathBuf },
}

impl BundleError {
    /// True when the bundle was refused (as opposed to a local I/O or usage problem).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            BundleError::Io { .. }
                | BundleError::Output { .. }
                | BundleError::InputChanged { .. }
                | BundleError::StagingExists { .. }
        )
    }

    /// True when the error names a part of a split bundle (or its list).
    pub fn is_about_a_part(&self) -> bool {
        matches!(
            self,
            BundleError::Parts { .. }
                | BundleError::PartsUntrusted { .. }
                | BundleError::PartsBad { .. }
                | BundleError::PartMissing { .. }
                | BundleError::PartWrongSize { .. }
                | BundleError::PartDamaged { .. }
        )
    }

    /// The next thing the operator can do about this error.
    pub fn hint(&self) -> Option<&'static str> {
        use BundleError::*;
        Some(match self {
            Io { .. } => "check the path and that the file is readable",
            Output { source, .. } if rin_support::fs::is_disk_full(source) => {
                "the disk is full: free space on it (`df -h` shows which), then run the same command again"
            }
            Output { .. } => "check free space and permissions where the output goes",
            InputChanged { .. } => {
                "something modified the stack's files during the build; run the build again"
            }
            Compression { .. }
            | Truncated { .. }
            | TrailingData { .. }
            | CorruptHeader { .. }
            | NonZeroPadding { .. }
            | HashMismatch { .. }
            | MissingEntries { .. }
            | EntryTooLarge { .. }
            | SizeMismatch { .. } => {
                "the file was damaged or altered after it was signed: copy the bundle again from the original (`sha256sum` of both copies shows whether they match; `rinbundle build --sha256` prints and records the file's sha256)"
            }
            NotABundle { .. } => "pass the .tar.zst file that rinbundle build wrote",
            IndexTooLarge { .. }
            | SignaturesTooLarge { .. }
            | UnsafePath { .. }
            | NonRegularEntry { .. }
            | UnlistedEntry { .. }
            | DuplicateEntry { .. }
            | OutOfOrder { .. }
            | NonCanonicalHeader { .. }
            | InvalidIndex { .. }
            | BadDocument { .. } => {
                "this bundle was not written by rinbundle or was crafted; do not use it, and ask its builder for a bundle built with rinbundle build"
            }
            Unsigned => "ask the builder to sign it: rinbundle build --key NAME.key",
            Parts { .. } => {
                "copy NAME.parts again from the connected machine, or split the bundle again with rinbundle split"
            }
            PartMissing { .. } | PartWrongSize { .. } | PartDamaged { .. } => {
                "copy that part again from the connected machine (rininstall check NAME.parts names every bad part), then run the same command again"
            }
            PartsBad { .. } => {
                "copy the parts named above again from the connected machine (their sha256 is in the part list), then run rininstall check again"
            }
            PartsUntrusted { .. } => {
                "the part list must be signed by a key this site trusts: rinbundle split BUNDLE --key NAME.key"
            }
            Inventory { .. } => {
                "write the inventory again at the site: rininstall inventory -o site.json"
            }
            Untrusted { .. } => return None,
            UnsupportedFormat { .. } => "use a rininstall release that reads this format version",
            StagingExists { .. } => {
                "choose a directory that does not exist yet; it is created on success only"
            }
        })
    }
}
