//! `rininstall`: verify and install a bundle on an air-gapped node.

use clap::{Parser, Subcommand};
use rin_cli::{VerifyArgs, exit};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verify(args) => rin_cli::verify_command(
            &args,
            Some(std::path::Path::new(rin_installer::DEFAULT_TRUSTED_KEYS)),
            cli.quiet,
        ),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => ExitCode::from(rin_cli::render(&e, &|_| None)),
    }
}
