//! `rininstall`: verify and install a bundle on an air-gapped node.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use rin_cli::{Bars, TrustArgs, VerifyArgs, exit, human_bytes};
use rin_installer::InstallError;
use rin_installer::seed::{self, SeedOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rininstall",
    version,
    about = "Verify and install Rin air-gap bundles on a K3s node"
)]
struct Cli {
    /// Print no progress, only results and errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a bundle in one pass: signatures against the trusted keys first, then every entry.
    Verify(VerifyArgs),
    /// Push every image and chart of a bundle into a registry under its original repository
    /// name (verified first; no staging copy; resumes and skips what the registry holds).
    Seed(SeedArgs),
}

#[derive(Args)]
struct SeedArgs {
    /// The bundle file.
    file: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// The registry, as HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    registry: String,
    /// PEM CA certificate of the registry's TLS; repeat for several.
    #[arg(long, value_name = "FILE")]
    registry_ca: Vec<PathBuf>,
    /// A file holding `user:password` for the registry.
    #[arg(long, value_name = "FILE")]
    registry_auth: Option<PathBuf>,
    /// Speak plain HTTP to the registry (the default only for loopback addresses).
    #[arg(long)]
    plain_http: bool,
    /// Uploads and checks in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    jobs: usize,
    /// Passes over the bundle, and tries of each request, before giving up.
    #[arg(long, value_name = "N", default_value_t = 4)]
    attempts: u32,
}

fn seed_command(args: &SeedArgs, quiet: bool) -> anyhow::Result<()> {
    let policy = args
        .trust
        .policy(Some(Path::new(rin_installer::DEFAULT_TRUSTED_KEYS)))?;
    let mut opts = SeedOptions::new(&args.registry);
    opts.plain_http |= args.plain_http;
    opts.ca_files = args.registry_ca.clone();
    opts.jobs = args.jobs;
    opts.attempts = args.attempts;
    if let Some(f) = &args.registry_auth {
        let text = std::fs::read_to_string(f).map_err(|source| InstallError::Io {
            path: f.clone(),
            source,
        })?;
        let (u, p) = text
            .trim_end()
            .split_once(':')
            .ok_or_else(|| InstallError::Bundle {
                reason: format!("{} must hold user:password", f.display()),
            })?;
        opts.auth = Some((u.to_string(), p.to_string()));
    }
    let file = args.file.as_path();
    let bars = Bars::new(quiet);
    let plan = seed::plan(file, &policy, &bars)
        .map_err(anyhow_of)
        .with_context(|| format!("bundle {} refused", file.display()))?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let done = seed::seed(file, &policy, &plan, &opts, rt.handle(), &bars).map_err(anyhow_of)?;
    if !quiet {
        println!(
            "seeded {}: {} blobs uploaded ({}), {} mounted, {} already present, {} manifests, tags: {}",
            args.registry,
            done.uploaded,
            human_bytes(done.uploaded_bytes),
            done.mounted,
            done.present,
            done.manifests,
            done.tags.join(" ")
        );
    }
    Ok(())
}

/// A verification failure keeps its own type in the chain (the renderer finds refusals by it).
fn anyhow_of(e: InstallError) -> anyhow::Error {
    match e {
        InstallError::Verify(b) => b.into(),
        other => other.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Verify(args) => rin_cli::verify_command(
            args,
            Some(Path::new(rin_installer::DEFAULT_TRUSTED_KEYS)),
            cli.quiet,
        ),
        Command::Seed(args) => seed_command(args, cli.quiet),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => ExitCode::from(rin_cli::render(&e, &|e| {
            e.downcast_ref::<InstallError>()
                .and_then(|i| i.hint().map(str::to_string))
        })),
    }
}
