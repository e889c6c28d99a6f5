//! How `rininstall apply` shows progress: step lines and byte bars on a terminal, JSON lines on
//! stderr (`--progress json`), or nothing.

use rin_bundle::Progress;
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

pub enum Display {
    Bars(Bars),
    Json(Json),
    None,
}

impl Display {
    pub fn new(mode: Mode) -> Self {
        match mode {
            Mode::Bars => Display::Bars(Bars::new(false)),
            Mode::Json => Display::Json(Json::default()),
            Mode::None => Display::None,
        }
    }
}

impl Progress for Display {
    fn begin(&self, phase: &str, total: u64) {
        match self {
            Display::Bars(b) => b.begin(phase, total),
            Display::Json(j) => j.begin(phase, total),
            Display::None => {}
        }
    }
    fn advance(&self, bytes: u64) {
        match self {
            Display::Bars(b) => b.advance(bytes),
            Display::Json(j) => j.advance(bytes),
            Display::None => {}
        }
    }
    fn end(&self) {
        match self {
            Display::Bars(b) => b.end(),
            Display::Json(j) => j.end(),
            Display::None => {}
        }
    }
    fn step(&self, n: usize, of: usize, name: &str) {
        match self {
            Display::Bars(_) => eprintln!("[{n}/{of}] {name}"),
            Display::Json(_) => {
                Json::emit(&serde_json::json!({"event": "step", "n": n, "of": of, "name": name}))
            }
            Display::None => {}
        }
    }
    fn say(&self, line: &str) {
        match self {
            Display::Bars(_) => eprintln!("      {line}"),
            Display::Json(_) => Json::emit(&serde_json::json!({"event": "note", "text": line})),
            Display::None => {}
        }
    }
}

/// JSON lines: `pass` when a pass over the bundle starts (with its total bytes), `progress` at
/// most every 250 ms, `pass_done`.
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
            Self::emit(&serde_json::json!({"event": "progress", "bytes": p.0}));
            *p = (0, Some(Instant::now()));
        }
    }

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
}
