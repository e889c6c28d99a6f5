//! `rinbundle`: build, sign, inspect and verify bundles on a connected machine.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rin_builder::{BuildError, BuildOptions, Stack};
use rin_cli::{Bars, VerifyArgs, env, exit, human_bytes};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rinbundle",
    version,
    about = "Build signed air-gap bundles of a Kubernetes stack for K3s sites"
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
    /// Make a signing key pair: NAME.key (private, PKCS#8 PEM, mode 0600) and NAME.pub (public, SPKI PEM).
    Keygen {
        /// NAME of the files to write.
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
    },
    /// Build a bundle from a stack directory (bundle.yaml and its files).
    Build {
        /// The stack directory.
        #[arg(long, value_name = "DIR", default_value = "manifests")]
        stack: PathBuf,
        /// Architecture to carry (amd64, arm64, ...); repeat for several. Default: the stack's `platforms`.
        #[arg(long = "arch", value_name = "ARCH")]
        arches: Vec<String>,
        /// Private key to sign with (NAME.key); repeat for several signatures.
        #[arg(long = "key", value_name = "FILE")]
        keys: Vec<PathBuf>,
        /// Write an unsigned bundle (installers refuse it; for signing elsewhere later).
        #[arg(long, conflicts_with = "keys")]
        unsigned: bool,
        /// The bundle file to write.
        #[arg(short, long, value_name = "FILE", default_value = "bundle.tar.zst")]
        output: PathBuf,
        /// Compression threads (the bundle's bytes do not depend on it).
        #[arg(long, value_name = "N")]
        jobs: Option<u32>,
    },
    /// Show what a bundle carries, without verifying it.
    Inspect {
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle in one pass: signatures against the trusted keys, then every entry.
    Verify(VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => ExitCode::from(rin_cli::render(&e, &|e| {
            e.downcast_ref::<BuildError>()
                .and_then(|b| b.hint())
                .map(str::to_string)
        })),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { out } => {
            let key = rin_signing::generate()?;
            let (k, p, id) = rin_signing::write_keypair(&out, &key)?;
            println!(
                "wrote {} (keep it secret) and {} (give it to the sites)",
                k.display(),
                p.display()
            );
            println!("key id {id}");
            Ok(())
        }
        Command::Build {
            stack,
            arches,
            keys,
            unsigned,
            output,
            jobs,
        } => build(&stack, arches, &keys, unsigned, output, jobs, cli.quiet),
        Command::Inspect { file, json } => inspect(&file, json),
        Command::Verify(args) => rin_cli::verify_command(&args, None, cli.quiet),
    }
}

fn build(
    stack_dir: &Path,
    arches: Vec<String>,
    keys: &[PathBuf],
    unsigned: bool,
    output: PathBuf,
    jobs: Option<u32>,
    quiet: bool,
) -> anyhow::Result<()> {
    if keys.is_empty() && !unsigned {
        anyhow::bail!(
            "no signing key: pass --key NAME.key (make one with rinbundle keygen --out NAME), or --unsigned"
        );
    }
    let stack = Stack::load(stack_dir)?;
    let arches = if arches.is_empty() {
        stack.spec.platforms.clone()
    } else {
        arches
    };
    for a in &arches {
        if !rin_builder::spec::KNOWN_ARCHES.contains(&a.as_str()) {
            anyhow::bail!(
                "unknown architecture {a:?}; use one of {}",
                rin_builder::spec::KNOWN_ARCHES.join(", ")
            );
        }
    }
    let keys = keys
        .iter()
        .map(|k| rin_signing::load_signing_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let created = match std::env::var(env::SOURCE_DATE_EPOCH) {
        Ok(v) => v.trim().parse::<u64>().with_context(|| {
            format!(
                "{} must be whole seconds since 1970, not {v:?}",
                env::SOURCE_DATE_EPOCH
            )
        })?,
        Err(_) => rin_bundle::index::now_epoch(),
    };
    let threads = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get().min(4) as u32)
            .unwrap_or(1)
    });
    let opts = BuildOptions {
        arches,
        keys,
        output: output.clone(),
        created,
        threads,
    };
    let bars = Bars::new(quiet);
    let built = rin_builder::build(&stack, &opts, &bars)
        .with_context(|| format!("cannot build {}", stack_dir.display()))?;
    if !quiet {
        println!(
            "built {} {} for {}: {} images, {} charts, {} entries",
            built.index.stack.name,
            built.index.stack.version,
            built.index.platforms.join(", "),
            built.index.images.len(),
            built.index.charts.len(),
            built.index.entries.len()
        );
        if built.signers.is_empty() {
            println!("UNSIGNED: installers will refuse it until it is signed");
        }
        for s in &built.signers {
            println!("signed by {s}");
        }
    }
    println!(
        "{}  {} ({})",
        built.sha256,
        output.display(),
        human_bytes(built.size)
    );
    Ok(())
}

fn inspect(file: &Path, json: bool) -> anyhow::Result<()> {
    let (index_bytes, sig_bytes) = rin_bundle::peek(file)?;
    let index = rin_bundle::Index::from_canonical_json(&index_bytes)?;
    let signers = rin_signing::SignatureFile::parse(&sig_bytes)
        .map(|s| s.key_ids())
        .unwrap_or_default();
    let index_sha256 = rin_bundle::digest::sha256_hex(&index_bytes);
    if json {
        let out = serde_json::json!({ "index": index, "index_sha256": index_sha256, "signers": signers, "verified": false });
        println!("{out}");
        return Ok(());
    }
    println!("stack      {} {}", index.stack.name, index.stack.version);
    println!("format     {}", index.format);
    println!("created    {}", index.created);
    println!("platforms  {}", index.platforms.join(", "));
    if let Some(k) = &index.k3s {
        println!("k3s        {}", k.version);
    }
    println!("images     {}", index.images.len());
    for i in &index.images {
        let total: u64 = i.platforms.iter().map(|p| p.size).sum();
        println!("  {}  {}  {}", i.reference, i.digest, human_bytes(total));
        if let Some(u) = &i.upstream_digest {
            println!("    platform-filtered from {u}");
        }
        for p in &i.platforms {
            println!(
                "    {:<16} {}  {}",
                p.platform,
                p.digest,
                human_bytes(p.size)
            );
        }
    }
    println!("charts     {}", index.charts.len());
    for c in &index.charts {
        println!("  {} {}  {}", c.name, c.version, c.digest);
    }
    println!(
        "entries    {} ({})",
        index.entries.len(),
        human_bytes(index.content_size())
    );
    println!("index      sha256:{index_sha256}");
    if signers.is_empty() {
        println!("signed by  nobody (unsigned)");
    }
    for s in &signers {
        println!("signed by  {s}");
    }
    println!(
        "(not verified: run `rinbundle verify --key NAME.pub {}`)",
        file.display()
    );
    Ok(())
}
