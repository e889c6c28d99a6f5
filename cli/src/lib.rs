//! What both binaries share: the error renderer and exit codes, the progress display, the
//! trust-policy arguments and the `verify` command.

use anyhow::Context as _;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rin_bundle::{BundleError, Progress};
use rin_signing::{KeyError, TrustError, TrustPolicy};
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What `--version` prints: the version, the git commit built and the target triple.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RIN_COMMIT"),
    ", ",
    env!("RIN_TARGET"),
    ")"
);

/// Exit codes of both binaries (documented in README.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A local problem: a file that cannot be read or written, a bad stack, an internal error.
    pub const ERROR: u8 = 1;
    /// The command line was wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// The bundle was refused: damaged, altered, unsigned, untrusted or malformed.
    pub const REFUSED: u8 = 3;
}

/// Every environment variable the programs read, declared once.
pub mod env {
    /// Directory of trusted public keys (`*.pub`), as `--trusted-keys`.
    pub const RIN_TRUSTED_KEYS: &str = "RIN_TRUSTED_KEYS";
    /// Seconds since the epoch to record as the bundle's creation time (reproducible builds).
    pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
    /// rinbundle's download cache directory, as `--cache`.
    pub const RIN_CACHE: &str = "RIN_CACHE";
    /// The cluster `rininstall` deploys to, as `--kubeconfig` (read by clap).
    pub const KUBECONFIG: &str = "KUBECONFIG";
    // Build time only (cli/build.rs): `RIN_COMMIT`, the commit `--version` names.
}

/// An error the binaries raise themselves, with its hint and exit code: a wrong command line
/// that clap cannot see (exit 2), or a local problem (exit 1).
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub hint: &'static str,
    pub code: u8,
}

impl CliError {
    /// A command line that cannot work (exit 2).
    pub fn usage(message: impl Into<String>, hint: &'static str) -> anyhow::Error {
        anyhow::Error::new(CliError {
            message: message.into(),
            hint,
            code: exit::USAGE,
        })
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for CliError {}

/// What [`render`] prints for an error: its one line (each cause once), the hint, the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub error: String,
    pub hint: Option<String>,
    pub code: u8,
}

/// Print `err` as `error: <one line>` and `hint: <next step>`; return the exit code.
pub fn render(
    err: &anyhow::Error,
    extra_hint: &dyn Fn(&(dyn StdError + 'static)) -> Option<String>,
) -> u8 {
    render_as(err, extra_hint, false)
}

/// [`render`], and with `json` also the same as one JSON object on stdout, for a script that
/// asked for JSON: `{"error": LINE, "hint": HINT or null, "exit_code": CODE}`.
pub fn render_as(
    err: &anyhow::Error,
    extra_hint: &dyn Fn(&(dyn StdError + 'static)) -> Option<String>,
    json: bool,
) -> u8 {
    let r = rendered(err, extra_hint);
    eprintln!("error: {}", r.error);
    if let Some(h) = &r.hint {
        eprintln!("hint: {h}");
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"error": r.error, "hint": r.hint, "exit_code": r.code})
        );
    }
    r.code
}

/// The text and exit code of [`render`]. The line is every message of the cause chain joined
/// by `: `, leaving out a cause whose text the message before it already ends with (a message
/// that spells out its source), so each cause is said once.
pub fn rendered(
    err: &anyhow::Error,
    extra_hint: &dyn Fn(&(dyn StdError + 'static)) -> Option<String>,
) -> Rendered {
    let mut line = String::new();
    for e in err.chain() {
        // Causes carry text from outside (a registry's answer, a bundle's names).
        let text = rin_support::printable(&e.to_string()).into_owned();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    let mut refused = false;
    let mut hint = None;
    let mut code = None;
    for e in err.chain() {
        if let Some(c) = e.downcast_ref::<CliError>() {
            hint = hint.or(Some(c.hint.to_string()));
            code = code.or(Some(c.code));
        } else if let Some(b) = e.downcast_ref::<BundleError>() {
            refused |= b.is_refusal();
            hint = hint.or(b.hint().map(str::to_string));
        } else if let Some(t) = e.downcast_ref::<TrustError>() {
            refused = true;
            hint = Some(t.hint().to_string());
        } else if let Some(k) = e.downcast_ref::<KeyError>() {
            hint = hint.or(k.hint().map(str::to_string));
        } else if hint.is_none() {
            hint = extra_hint(e);
        }
    }
    Rendered {
        error: line,
        hint,
        code: code.unwrap_or(if refused { exit::REFUSED } else { exit::ERROR }),
    }
}

/// `err` with "bundle FILE refused" before it when the bundle itself was refused (damaged,
/// altered, untrusted, malformed); a file that cannot be read is no refusal and says so alone.
pub fn refused_context(err: anyhow::Error, file: &Path) -> anyhow::Error {
    let refused = err.chain().any(|e| {
        e.downcast_ref::<BundleError>()
            .is_some_and(BundleError::is_refusal)
            || e.downcast_ref::<TrustError>().is_some()
    });
    if refused {
        err.context(format!("bundle {} refused", file.display()))
    } else {
        err
    }
}

/// indicatif bars for library progress; draws nothing when quiet or when stderr is no terminal.
pub struct Bars {
    quiet: bool,
    /// Draw beside other bars (downloads) rather than alone.
    multi: Option<MultiProgress>,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Bars {
            quiet,
            multi: None,
            bar: Mutex::new(None),
        }
    }

    /// Bars drawn in `multi`, with the other bars it holds.
    pub fn within(multi: MultiProgress) -> Self {
        Bars {
            quiet: false,
            multi: Some(multi),
            bar: Mutex::new(None),
        }
    }

    /// The style of every byte-counting bar: message, bar, bytes, rate, ETA. The bar takes what
    /// the terminal's width leaves, so the line never wraps; the ETA shows only once the rate has
    /// had a few seconds to settle (an early one is noise).
    pub fn style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{msg:>12} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec}{settled_eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("settled_eta", settled_eta)
        .progress_chars("=> ")
    }
}

/// ` eta 1m 20s`, once a bar has run for [`ETA_AFTER`] and is not done; nothing before.
fn settled_eta(s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    if s.elapsed() >= ETA_AFTER && s.fraction() < 1.0 {
        let _ = write!(w, " eta {}", indicatif::HumanDuration(s.eta()));
    }
}

/// How long a bar runs before it shows an ETA.
pub const ETA_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

impl Progress for Bars {
    fn begin(&self, phase: &str, total: u64) {
        if self.quiet {
            return;
        }
        let bar = match &self.multi {
            Some(m) => m.add(ProgressBar::new(total)),
            None => ProgressBar::new(total),
        };
        bar.set_style(Self::style());
        bar.set_message(phase.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }

    fn advance(&self, bytes: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(bar) = b.as_ref()
        {
            bar.inc(bytes);
        }
    }

    fn end(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(bar) = b.take()
        {
            bar.finish_and_clear();
        }
    }

    /// A retry is a line above the bar (unless quiet).
    fn event(&self, e: &rin_bundle::progress::Event<'_>) {
        if let rin_bundle::progress::Event::Retry {
            what,
            attempt,
            delay_ms,
            error,
        } = e
            && !self.quiet
        {
            let line = retry_line(what, *attempt, *delay_ms, error);
            match self.bar.lock().ok().and_then(|b| b.clone()) {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
        }
    }
}

/// What a binary draws progress with: bars (and lines) on a terminal, JSON lines on stderr, or
/// nothing. Every `Progress` call goes to the one chosen.
pub enum Display<B, J> {
    Bars(B),
    Json(J),
    None,
}

impl<B: Progress, J: Progress> Display<B, J> {
    fn chosen(&self) -> Option<&dyn Progress> {
        match self {
            Display::Bars(b) => Some(b),
            Display::Json(j) => Some(j),
            Display::None => None,
        }
    }
}

impl<B: Progress, J: Progress> Progress for Display<B, J> {
    fn begin(&self, phase: &str, total: u64) {
        if let Some(p) = self.chosen() {
            p.begin(phase, total);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(p) = self.chosen() {
            p.advance(bytes);
        }
    }
    fn end(&self) {
        if let Some(p) = self.chosen() {
            p.end();
        }
    }
    fn step(&self, n: usize, of: usize, name: &str) {
        if let Some(p) = self.chosen() {
            p.step(n, of, name);
        }
    }
    fn say(&self, line: &str) {
        if let Some(p) = self.chosen() {
            p.say(&rin_support::printable(line));
        }
    }
    fn event(&self, e: &rin_bundle::progress::Event<'_>) {
        if let Some(p) = self.chosen() {
            p.event(e);
        }
    }
}

/// The trust policy on the command line.
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// A trusted public key (NAME.pub, SPKI PEM); repeat for several.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// A directory whose *.pub files are trusted public keys.
    #[arg(long, value_name = "DIR", env = env::RIN_TRUSTED_KEYS)]
    pub trusted_keys: Option<PathBuf>,
    /// How many distinct trusted keys must have signed the bundle.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threshold: usize,
}

impl TrustArgs {
    /// The policy; `default_dir` is used when neither --key nor --trusted-keys is given.
    pub fn policy(&self, default_dir: Option<&Path>) -> anyhow::Result<TrustPolicy> {
        if let Some(dir) = &self.trusted_keys
            && !dir.is_dir()
        {
            let reason = format!(
                "the trusted-keys directory {} does not exist",
                dir.display()
            );
            return Err(KeyError::NoKeys(reason).into());
        }
        let dir = match (&self.trusted_keys, self.keys.is_empty()) {
            (Some(d), _) => Some(d.as_path()),
            (None, true) => default_dir.filter(|d| d.is_dir()),
            (None, false) => None,
        };
        if self.keys.is_empty() && dir.is_none() {
            let where_ = default_dir
                .map(|d| format!(", and {} does not exist", d.display()))
                .unwrap_or_default();
            let reason = format!("no --key or --trusted-keys was given{where_}");
            return Err(KeyError::NoKeys(reason).into());
        }
        Ok(TrustPolicy::load(&self.keys, dir, self.threshold)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(keys: &[&Path], dir: Option<&Path>) -> TrustArgs {
        TrustArgs {
            keys: keys.iter().map(|k| k.to_path_buf()).collect(),
            trusted_keys: dir.map(Path::to_path_buf),
            threshold: 1,
        }
    }

    #[test]
    fn policy_sources_and_their_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let key = rin_signing::generate().unwrap();
        let (_, public, id) = rin_signing::write_keypair(&tmp.path().join("k"), &key).unwrap();
        let missing = tmp.path().join("missing");
        let e = args(&[], Some(&missing))
            .policy(None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("trusted-keys directory") && e.contains("missing"),
            "{e}"
        );
        let e = args(&[], None)
            .policy(Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no --key or --trusted-keys was given") && e.contains("missing"),
            "{e}"
        );
        assert_eq!(
            args(&[&public], None)
                .policy(Some(&missing))
                .unwrap()
                .key_ids(),
            vec![id.clone()]
        );
        // The default directory is used only when nothing is named.
        assert_eq!(
            args(&[], None).policy(Some(tmp.path())).unwrap().key_ids(),
            vec![id]
        );
    }
}

/// `verify FILE`, the same in both binaries.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The bundle file.
    pub file: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Also extract into this new directory (it appears only when everything verified).
    #[arg(long, value_name = "DIR")]
    pub extract: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `verify FILE`: check the bundle in one pass, optionally extracting it. `default_dir` is the
/// trusted-keys directory used when no key is named.
pub fn verify_command(
    args: &VerifyArgs,
    default_dir: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<()> {
    let VerifyArgs {
        file,
        trust,
        extract,
        json,
    } = args;
    let (file, extract, json) = (file.as_path(), extract.as_deref(), *json);
    let policy = trust.policy(default_dir)?;
    let bars = Bars::new(quiet || json);
    let v = rin_bundle::verify(file, &policy, extract, &bars)
        .map_err(|e| refused_context(e.into(), file))?;
    if json {
        let out = serde_json::json!({
            "verified": true,
            "stack": v.index.stack,
            "index_sha256": v.index_sha256,
            "signers": v.signers,
            "threshold": policy.threshold(),
            "entries": v.index.entries.len(),
            "bytes": v.index.content_size(),
            "extracted": v.extracted,
        });
        println!("{out}");
    } else if !quiet {
        println!(
            "verified {} {}: {} entries, {}, signed by {} ({} of {} required)",
            v.index.stack.name,
            v.index.stack.version,
            v.index.entries.len(),
            human_bytes(v.index.content_size()),
            v.signers.join(", "),
            v.signers.len(),
            policy.threshold()
        );
        if let Some(dir) = &v.extracted {
            println!("extracted to {}", dir.display());
        }
    }
    Ok(())
}

pub use rin_support::{count, human_bytes, is_loopback};

/// `completions SHELL`: a completion script for the shell, on stdout.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell: bash (`source <(rinbundle completions bash)`, or save it in
    /// /etc/bash_completion.d/), zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man --out DIR`: the manual pages.
#[derive(Args)]
pub struct ManArgs {
    /// The directory to write NAME.1 and NAME-COMMAND.1 into (made when missing); read them
    /// with `man -l DIR/NAME.1`, or put them in a man directory.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
}

/// Print the completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, args: &CompletionsArgs) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(args.shell, &mut cmd, name, &mut std::io::stdout());
}

/// Write a manual page for `cmd` and one for each of its commands into `args.out`; say which.
pub fn man_pages(cmd: clap::Command, args: &ManArgs) -> anyhow::Result<()> {
    let dir = &args.out;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write manual pages into {}", dir.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    for p in pages {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// The line a step starts with on a terminal, in both binaries: `[3/7] site registry`.
pub fn step_line(n: usize, of: usize, name: &str) -> String {
    format!("[{n}/{of}] {name}")
}

/// How both binaries tell the operator a request is tried again.
pub fn retry_line(what: &str, attempt: u32, delay_ms: u64, error: &str) -> String {
    format!(
        "retrying {} in {:.1}s (attempt {attempt} failed: {})",
        rin_support::printable(what),
        delay_ms as f64 / 1000.0,
        rin_support::printable(error)
    )
}

#[cfg(test)]
mod render_tests {
    use super::*;

    fn none(_: &(dyn StdError + 'static)) -> Option<String> {
        None
    }

    #[test]
    fn each_enum_renders_its_causes_once_with_its_hint_and_exit_code() {
        let io = anyhow::Error::from(BundleError::Io {
            path: "b.tar.zst".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        let r = rendered(&io, &none);
        assert_eq!(r.error, "cannot read bundle b.tar.zst: entity not found");
        assert_eq!(r.code, exit::ERROR);
        assert!(r.hint.is_some());

        let untrusted = anyhow::Error::from(BundleError::Untrusted {
            source: Box::new(TrustError::BelowThreshold {
                have: 1,
                need: 2,
                signers: vec!["sha256:ab".into()],
            }),
        });
        let r = rendered(&untrusted, &none);
        assert_eq!(
            r.error,
            "it is not signed as this site requires: 1 of the required 2 trusted signatures (signed by: sha256:ab)"
        );
        assert_eq!(r.code, exit::REFUSED);
        assert_eq!(
            r.hint.as_deref(),
            Some(
                TrustError::BelowThreshold {
                    have: 1,
                    need: 2,
                    signers: vec![]
                }
                .hint()
            )
        );

        let key = anyhow::Error::from(KeyError::Read {
            path: "site.pub".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        let r = rendered(&key, &none);
        assert_eq!(r.error, "cannot read key site.pub: entity not found");
        assert_eq!(r.hint.as_deref(), Some("check the key path"));

        // Text from outside cannot drive the terminal.
        let hostile = anyhow::Error::msg("registry said \u{1b}[2Jgone");
        assert_eq!(
            rendered(&hostile, &none).error,
            "registry said \\u{1b}[2Jgone"
        );

        // A message that spells out its source, and a context over it: each said once.
        #[derive(Debug, thiserror::Error)]
        #[error("{path}: {source}")]
        struct Spelled {
            path: String,
            source: std::io::Error,
        }
        let spelled = anyhow::Error::from(Spelled {
            path: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
        .context("writing the state");
        assert_eq!(
            rendered(&spelled, &none).error,
            "writing the state: /x: entity not found"
        );
    }
}

#[cfg(test)]
mod bar_tests {
    use super::*;
    use indicatif::{InMemoryTerm, ProgressDrawTarget, TermLike};

    /// What an 80-column terminal shows of a bar `elapsed` into a 1 GiB pass, half done.
    fn drawn(elapsed: std::time::Duration) -> String {
        let term = InMemoryTerm::new(4, 80);
        let bar = ProgressBar::with_draw_target(
            Some(1 << 30),
            ProgressDrawTarget::term_like(Box::new(term.clone())),
        )
        .with_style(Bars::style())
        .with_message("verify")
        .with_elapsed(elapsed);
        bar.set_position(1 << 29);
        bar.force_draw();
        assert_eq!(term.width(), 80);
        term.contents()
    }

    #[test]
    fn a_bar_fits_the_terminal_and_shows_an_eta_only_once_settled() {
        let early = drawn(std::time::Duration::from_millis(200));
        let late = drawn(std::time::Duration::from_secs(20));
        for screen in [&early, &late] {
            let line = screen.lines().next().unwrap_or_default();
            assert!(
                line.contains("verify [") && line.contains("512.00 MiB/1.00 GiB"),
                "{screen:?}"
            );
            // One line: the bar takes the room left, nothing wraps onto a second line.
            assert!(
                screen.lines().skip(1).all(|l| l.trim().is_empty()),
                "{screen:?}"
            );
        }
        assert!(!early.contains("eta"), "{early:?}");
        assert!(late.contains(" eta "), "{late:?}");
    }
}
