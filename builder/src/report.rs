//! How the builder reports what it fetches. The library never prints: the binary implements
//! [`Reporter`] with indicatif bars, JSON lines on stderr, or nothing.

use serde::Serialize;

/// One thing that happened while resolving and fetching.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A step of the build starts (`resolve`, `fetch`, `pack`).
    Step { name: &'a str },
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

pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event<'_>);
}
