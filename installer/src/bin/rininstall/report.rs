//! How `rininstall apply` shows progress: step lines and byte bars on a terminal, JSON lines on
//! stderr (`--progress json`), or nothing.

use rin_bundle::progress::{Event, Progress};
use rin_cli::Bars;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Step lines and progress bars (bars only when stderr is a terminal).
    Bars,
    /// One JSON object per line on stderr, for automation.
    Json,
    /// Nothing but results and errors.
    None,
}

pub type Display = rin_cli::Display<Lines, Json>;

/// Bars, or nothing when `quiet`.
pub fn display_unless(quiet: bool) -> Display {
    display(if quiet { Mode::None } else { Mode::Bars })
}

pub fn display(mode: Mode) -> Display {
    match mode {
        Mode::Bars => Display::Bars(Lines(Bars::new(false))),
        Mode::Json => Display::Json(Json::default()),
        Mode::None => Display::None,
    }
}

/// Step lines and notes on stderr, byte bars (when stderr is a terminal).
pub struct Lines(Bars);

impl Progress for Lines {
    fn begin(&self, phase: &str, total: u64) {
        self.0.begin(phase, total);
    }
    fn advance(&self, bytes: u64) {
        self.0.advance(bytes);
    }
    fn end(&self) {
        self.0.end();
    }
    fn step(&self, n: usize, of: usize, name: &str) {
        eprintln!("{}", rin_cli::step_line(n, of, name));
    }
    fn say(&self, line: &str) {
        eprintln!("      {line}");
    }
    /// Seeding reports its retries.
    fn event(&self, e: &Event<'_>) {
        if let Event::Retry {
            what,
            attempt,
            delay_ms,
            error,
        } = e
        {
            self.say(&rin_cli::retry_line(what, *attempt, *delay_ms, error));
        }
    }
}

/// JSON lines on stderr, one event each (docs/EVENTS.md, docs/events.schema.json): `step`,
/// `note`, `pass` when a pass over the bundle starts (with its total bytes), `progress` (id 0)
/// at most every 250 ms, `pass_done`, `retry`.
#[derive(Default)]
pub struct Json {
    pending: Mutex<(u64, Option<Instant>)>,
}

const EVERY: Duration = Duration::from_millis(250);

impl Json {
    fn emit(v: &serde_json::Value) {
        let _ = writeln!(std::io::stderr().lock(), "{v}");
    }

    fn flush(&self, force: bool) {
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        if p.0 > 0 && (force || p.1.is_none_or(|t| t.elapsed() >= EVERY)) {
            Self::emit(&serde_json::json!({"event": "progress", "id": 0, "bytes": p.0}));
            *p = (0, Some(Instant::now()));
        }
    }
}

impl Progress for Json {
    fn begin(&self, phase: &str, total: u64) {
        Self::emit(&serde_json::json!({"event": "pass", "name": phase, "total": total}));
    }

    fn advance(&self, bytes: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.0 += bytes;
        }
        self.flush(false);
    }

    fn end(&self) {
        self.flush(true);
        Self::emit(&serde_json::json!({"event": "pass_done"}));
    }
    fn step(&self, n: usize, of: usize, name: &str) {
        Self::emit(&serde_json::json!({"event": "step", "n": n, "of": of, "name": name}));
    }
    fn say(&self, line: &str) {
        Self::emit(&serde_json::json!({"event": "note", "text": line}));
    }
    fn event(&self, e: &Event<'_>) {
        if matches!(e, Event::Retry { .. }) {
            Self::emit(&serde_json::json!(e));
        }
    }
}
