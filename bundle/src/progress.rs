//! How long-running library work reports progress. Libraries never print; binaries implement
//! this trait (with indicatif, or as JSON events, or not at all).

pub trait Progress: Sync {
    /// A phase starts; `total` bytes are expected (0 when unknown).
    fn begin(&self, _phase: &str, _total: u64) {}
    /// `bytes` more bytes were processed.
    fn advance(&self, _bytes: u64) {}
    /// The phase ended.
    fn end(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
