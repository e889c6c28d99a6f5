//! How `rinbundle` shows progress: `[n/N]` step lines and indicatif bars (one per download and
//! one for the whole fetch, then one for writing), JSON lines on stderr (`--progress json`), or
//! nothing.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
use rin_builder::Event;
use rin_bundle::Progress;
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Progress bars on a terminal (nothing when stderr is not one).
    Bars,
    /// One JSON object per line on stderr, for automation.
    Json,
    /// Nothing.
    None,
}

pub fn reporter(mode: Mode) -> std::sync::Arc<Display> {
    std::sync::Arc::new(match mode {
        Mode::Bars => Display::Bars(Bars::new()),
        Mode::Json => Display::Json(Json::default()),
        Mode::None => Display::None,
    })
}

pub type Display = rin_cli::Display<Bars, Json>;

/// A bar per download and one for the whole fetch (id 0), then the packing bar, all in one
/// `MultiProgress`.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<u64, ProgressBar>>,
    pack: rin_cli::Bars,
}

impl Bars {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        Bars {
            pack: rin_cli::Bars::within(multi.clone()),
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn add(&self, id: u64, total: u64, message: String) {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(rin_cli::Bars::style());
        bar.set_message(message);
        if let Ok(mut bars) = self.bars.lock() {
            if let Some(all) = bars.get(&0).filter(|_| id != 0) {
                all.inc_length(total);
            }
            bars.insert(id, bar);
        }
    }
}

impl Progress for Bars {
    fn event(&self, e: &Event<'_>) {
        match e {
            Event::Cached { .. } => {}
            Event::Start { id, what, total } => self.add(*id, total.unwrap_or(0), short(what)),
            Event::Progress { id, bytes } => {
                if let Ok(bars) = self.bars.lock() {
                    for b in [bars.get(id), bars.get(&0)].into_iter().flatten() {
                        b.inc(*bytes);
                    }
                }
            }
            Event::Done { id, .. } => {
                if let Ok(mut bars) = self.bars.lock()
                    && let Some(b) = bars.remove(id)
                {
                    b.finish_and_clear();
                    self.multi.remove(&b);
                }
            }
            Event::Retry {
                what,
                attempt,
                delay_ms,
                error,
            } => {
                let _ = self
                    .multi
                    .println(rin_cli::retry_line(what, *attempt, *delay_ms, error));
            }
        }
    }

    /// `[n/N] name` above the bars (on stderr even when it is no terminal, as `rininstall`'s);
    /// the fetch step starts the bar of the whole fetch.
    fn step(&self, n: usize, of: usize, name: &str) {
        self.multi
            .suspend(|| eprintln!("{}", rin_cli::step_line(n, of, name)));
        if name == "fetch" {
            self.add(0, 0, "fetch".into());
        }
    }

    fn begin(&self, phase: &str, total: u64) {
        self.pack.begin(phase, total);
    }

    fn advance(&self, bytes: u64) {
        self.pack.advance(bytes);
    }

    /// Packing is the last step: clear every bar still drawn (the whole-fetch one).
    fn end(&self) {
        self.pack.end();
        if let Ok(mut bars) = self.bars.lock() {
            for (_, b) in bars.drain() {
                b.finish_and_clear();
            }
        }
    }
}

fn short(what: &str) -> String {
    let n = what.chars().count();
    if n <= 40 {
        what.to_string()
    } else {
        what.chars().skip(n - 40).collect()
    }
}

/// JSON lines on stderr, one event each (docs/EVENTS.md, docs/events.schema.json). Byte
/// progress is sent at most every 250 ms per download and for the pass (id 0).
#[derive(Default)]
pub struct Json {
    pending: Mutex<HashMap<u64, (u64, Option<Instant>)>>,
}

const EVERY: Duration = Duration::from_millis(250);
/// The id `progress` events of a pass over the bundle (writing it) carry.
const PACK_ID: u64 = 0;

impl Json {
    fn emit(v: &serde_json::Value) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{v}");
    }

    /// Add `bytes` to download `id`; send them when due (or `flush`).
    fn progress(&self, id: u64, bytes: u64, flush: bool) {
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        let entry = p.entry(id).or_insert((0, None));
        entry.0 += bytes;
        let due = entry.1.is_none_or(|t| t.elapsed() >= EVERY);
        if entry.0 > 0 && (due || flush) {
            Self::emit(&serde_json::json!({"event": "progress", "id": id, "bytes": entry.0}));
            *entry = (0, Some(Instant::now()));
        }
        if flush {
            p.remove(&id);
        }
    }
}

impl Progress for Json {
    fn event(&self, e: &Event<'_>) {
        if let Event::Progress { id, bytes } = e {
            self.progress(*id, *bytes, false);
            return;
        }
        if let Event::Done { id, .. } = e {
            self.progress(*id, 0, true);
        }
        if let Ok(v) = serde_json::to_value(e) {
            Self::emit(&v);
        }
    }

    fn begin(&self, phase: &str, total: u64) {
        Self::emit(&serde_json::json!({"event": "pass", "name": phase, "total": total}));
    }

    fn advance(&self, bytes: u64) {
        self.progress(PACK_ID, bytes, false);
    }

    fn end(&self) {
        self.progress(PACK_ID, 0, true);
        Self::emit(&serde_json::json!({"event": "pass_done"}));
    }

    fn step(&self, n: usize, of: usize, name: &str) {
        Self::emit(&serde_json::json!({"event": "step", "n": n, "of": of, "name": name}));
    }

    fn say(&self, line: &str) {
        Self::emit(&serde_json::json!({"event": "note", "text": line}));
    }
}
