//! `rininstall`: verify and install a bundle on an air-gapped node.

use clap::{Parser, Subcommand};
use rin_cli::{TrustArgs, exit};
use std::path::PathBuf;
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
    Verify {
        file: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        /// Also extract into this new directory (it appears only when everything verified).
        #[arg(long, value_name = "DIR")]
        extract: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verify {
            file,
            trust,
            extract,
            json,
        } => rin_cli::verify_command(
            &file,
            &trust,
            Some(std::path::Path::new(rin_installer::DEFAULT_TRUSTED_KEYS)),
            extract.as_deref(),
            json,
            cli.quiet,
        ),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => ExitCode::from(rin_cli::render(&e, &|_| None)),
    }
}
