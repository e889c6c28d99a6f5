//! How long-running library work reports, in both libraries. Libraries never print: each binary
//! implements [`Progress`] (indicatif bars, JSON lines, or nothing), and every method has a
//! do-nothing default, so a display takes only what it shows.

use serde::Serialize;

pub trait Progress: Send + Sync {
    /// A phase starts; `total` bytes are expected (0 when unknown).
    fn begin(&self, _phase: &str, _total: u64) {}
    /// `bytes` more bytes were processed.
    fn advance(&self, _bytes: u64) {}
    /// The phase ended.
    fn end(&self) {}
    /// Step `n` of `of` of a command starts (`rininstall apply`, `rinbundle build`).
    fn step(&self, _n: usize, _of: usize, _name: &str) {}
    /// A line for the operator (a rollout's progress, what was skipped and why).
    fn say(&self, _line: &str) {}
    /// Something happened to a download or a request.
    fn event(&self, _event: &Event<'_>) {}
}

/// One thing that happened while resolving, fetching or sending.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A download starts. `id` is unique within the run; `total` is the size when known.
    Start {
        id: u64,
        what: &'a str,
        total: Option<u64>,
    },
    /// `bytes` more bytes of download `id` arrived.
    Progress { id: u64, bytes: u64 },
    /// Download `id` is complete and verified; `resumed_at` is the offset it resumed from.
    Done {
        id: u64,
        bytes: u64,
        resumed_at: u64,
    },
    /// Something was already in the cache and was not fetched.
    Cached { what: &'a str, bytes: u64 },
    /// A transient failure; the attempt is retried after `delay_ms`.
    Retry {
        what: &'a str,
        attempt: u32,
        delay_ms: u64,
        error: &'a str,
    },
}

impl<'a> From<rin_support::retry::Retry<'a>> for Event<'a> {
    fn from(r: rin_support::retry::Retry<'a>) -> Self {
        Event::Retry {
            what: r.what,
            attempt: r.attempt,
            delay_ms: r.delay.as_millis() as u64,
            error: r.error,
        }
    }
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
