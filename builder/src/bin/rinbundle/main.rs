//! `rinbundle`: build, sign, inspect and verify bundles on a connected machine.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rin_builder::net::registry::RegistryOptions;
use rin_builder::{BuildError, BuildFailure, BuildOptions, FetchOptions, Stack};
use rin_bundle::Arch;

mod reporters;
use rin_cli::{VerifyArgs, count, env, exit, human_bytes};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rinbundle",
    version = rin_cli::VERSION,
    about = "Build signed air-gap bundles of a Kubernetes stack for K3s sites"
)]
struct Cli {
    /// Print no progress, only results and errors (as --progress none).
    #[arg(long, short, global = true, help_heading = "Global options")]
    quiet: bool,
    /// How to show progress: bars on a terminal, JSON lines on stderr, or none.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "bars",
        help_heading = "Global options"
    )]
    progress: reporters::Mode,
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
        /// Print the result as one JSON object on stdout (a failure too).
        #[arg(long)]
        json: bool,
    },
    /// Build a bundle from a stack directory (bundle.yaml and its files).
    Build {
        /// The stack directory.
        #[arg(long, value_name = "DIR", default_value = "manifests")]
        stack: PathBuf,
        #[command(flatten)]
        args: BuildArgs,
    },
    /// Resolve every image tag, chart and K3s file of a stack afresh and write the lock.
    Lock {
        /// The stack directory.
        #[arg(long, value_name = "DIR", default_value = "manifests")]
        stack: PathBuf,
        /// Architectures whose K3s files to lock (images are locked for every platform they
        /// offer). Default: the stack's `platforms`.
        #[arg(long = "arch", value_name = "ARCH", value_parser = Arch::known)]
        arches: Vec<Arch>,
        /// Keep every entry that still matches the stack and resolve only what the lock lacks
        /// (as a build does, without fetching anything else).
        #[arg(long)]
        missing: bool,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(rin_cli::CompletionsArgs),
    /// Write the manual pages (rinbundle.1 and one per command) into a directory.
    Man(rin_cli::ManArgs),
    /// Show what a bundle carries, without verifying it.
    Inspect {
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle in one pass: signatures against the trusted keys, then every entry.
    Verify(VerifyArgs),
    /// Cut a bundle into parts for removable media: FILE.part-001, FILE.part-002, ... of at most
    /// SIZE bytes, and FILE.parts, the part list signed with the same keys as the bundle (each
    /// part's size and sha256, the whole file's, the bundle's index sha256). The bundle is left
    /// as it is.
    Split {
        file: PathBuf,
        /// The largest part, in bytes or with K, M, G [default: 4294967295, FAT32's limit].
        #[arg(long, value_name = "SIZE", value_parser = rin_support::units::parse_bytes)]
        size: Option<u64>,
        /// Private key to sign the part list with; repeat for several.
        #[arg(
            long = "key",
            value_name = "FILE",
            required_unless_present = "unsigned"
        )]
        keys: Vec<PathBuf>,
        /// Leave the part list unsigned (installers refuse it).
        #[arg(long, conflicts_with = "keys")]
        unsigned: bool,
    },
    /// Co-sign: add a signature by another key to a signed bundle, or to a split bundle's part
    /// list (FILE.parts, or any part), without the other keys or the stack. The bundle is checked
    /// entry by entry first. A bundle file is written again with the index and every entry
    /// byte-identical (the index sha256 does not change): the file a build signed by all those
    /// keys at once writes. A part list gets the signature and the parts stay as they are (the
    /// list's signers count toward the site's threshold).
    Sign {
        file: PathBuf,
        /// The private key to add a signature with (NAME.key).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Write the co-signed bundle here instead of replacing FILE (bundle files only).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Compression threads (the bundle's bytes do not depend on it). Default: cores, at most 4.
        #[arg(long, value_name = "N")]
        threads: Option<u32>,
    },
    /// Sign a file (release checksums) with a key: writes FILE.sig, the raw Ed25519 signature,
    /// which `openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in FILE -sigfile FILE.sig`
    /// checks.
    SignFile {
        file: PathBuf,
        /// The private key (NAME.key from `rinbundle keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

/// Where and how to fetch.
#[derive(clap::Args)]
struct FetchArgs {
    /// The lock file. Default: the stack's `lock:` (images.lock in the stack directory).
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// The download cache. Default: $XDG_CACHE_HOME/rinbundle or ~/.cache/rinbundle.
    #[arg(long, value_name = "DIR", env = env::RIN_CACHE)]
    cache: Option<PathBuf>,
    /// Downloads at a time.
    #[arg(long, value_name = "N", default_value_t = 8)]
    jobs: usize,
    /// A registry or host (HOST[:PORT]) that may be reached over plain HTTP; repeat for several.
    /// Loopback registries may always be.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
    /// A CA certificate (PEM) to trust for registries and downloads; repeat for several.
    #[arg(long = "ca-file", value_name = "FILE")]
    ca_files: Vec<PathBuf>,
    /// Attempts per download before giving up.
    #[arg(long, value_name = "N", default_value_t = 6)]
    attempts: u32,
    /// Give up a request whose server sends nothing for this long (no answer, no byte of a
    /// download) and try it again, resuming the download.
    #[arg(long, value_name = "SECONDS", default_value_t = rin_support::DEFAULT_STALL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    stall_timeout: u64,
    /// Fetch the images of REGISTRY from MIRROR (HOST[:PORT]: a pull-through cache, Harbor
    /// proxy project or copy) under the same repository paths; the bundle keeps the images'
    /// own names and every digest is checked as always. Repeat for several.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=MIRROR")]
    mirrors: Vec<String>,
    /// Fetch URLs (Helm repositories, chart archives, K3s release files) that start with PREFIX
    /// from REPLACEMENT instead, e.g.
    /// https://github.com/k3s-io/k3s/releases/download=https://files.corp/k3s; checksums are
    /// checked as always. Repeat for several.
    #[arg(long = "url-mirror", value_name = "PREFIX=REPLACEMENT")]
    url_mirrors: Vec<String>,
}

impl FetchArgs {
    fn options(&self) -> anyhow::Result<FetchOptions> {
        let cache = match &self.cache {
            Some(c) => c.clone(),
            None => rin_builder::cache::Cache::default_dir()
                .context("no cache directory: set HOME or XDG_CACHE_HOME, or pass --cache DIR")?,
        };
        let mut o = FetchOptions::new(cache);
        o.jobs = self.jobs.max(1);
        o.lock_path = self.lock.clone();
        o.attempts = self.attempts.max(1);
        let mut mirrors = Vec::new();
        for m in &self.mirrors {
            match m.split_once('=') {
                Some((from, to)) if !from.is_empty() && !to.is_empty() && !to.contains('/') => {
                    mirrors.push((from.to_string(), to.to_string()));
                }
                _ => anyhow::bail!(
                    "--registry-mirror {m:?}: give REGISTRY=MIRROR, e.g. docker.io=harbor.site:443 (hosts, no paths)"
                ),
            }
        }
        let mut url_mirrors = Vec::new();
        for m in &self.url_mirrors {
            match m.split_once('=') {
                Some((from, to)) if from.contains("://") && to.contains("://") => {
                    url_mirrors.push((from.to_string(), to.to_string()));
                }
                _ => anyhow::bail!(
                    "--url-mirror {m:?}: give PREFIX=REPLACEMENT, two URLs, e.g. https://charts.jetstack.io=https://mirror.corp/jetstack"
                ),
            }
        }
        o.registry = RegistryOptions {
            insecure: self.insecure.clone(),
            ca_files: self.ca_files.clone(),
            mirrors,
            url_mirrors,
            stall: Some(std::time::Duration::from_secs(self.stall_timeout)),
        };
        Ok(o)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The stack's `platforms:` are read as any architecture name; only known ones are built.
fn check_arches(arches: &[Arch]) -> anyhow::Result<()> {
    for a in arches {
        Arch::known(a.as_str())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Keygen { json, .. } | Command::Inspect { json, .. } => *json,
        Command::Build { args, .. } => args.json,
        Command::Verify(args) => args.json,
        _ => false,
    };
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => ExitCode::from(rin_cli::render_as(
            &e,
            &|e| {
                e.downcast_ref::<BuildError>()
                    .and_then(|b| b.hint())
                    .map(str::to_string)
            },
            json,
        )),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mode = if cli.quiet {
        reporters::Mode::None
    } else {
        cli.progress
    };
    match cli.command {
        Command::Keygen { out, json } => {
            let key = rin_signing::generate()?;
            let (k, p, id) = rin_signing::write_keypair(&out, &key)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"private_key": k, "public_key": p, "key_id": id})
                );
                return Ok(());
            }
            println!(
                "wrote {} (keep it secret) and {} (give it to the sites)",
                k.display(),
                p.display()
            );
            println!("key id {id}");
            Ok(())
        }
        Command::Build { stack, args } => build(&stack, args, mode, cli.quiet),
        Command::Lock {
            stack,
            arches,
            missing,
            fetch,
        } => lock(&stack, arches, missing, &fetch, mode),
        Command::Inspect { file, json } => inspect(&file, json),
        Command::Completions(args) => {
            rin_cli::completions(<Cli as clap::CommandFactory>::command(), &args);
            Ok(())
        }
        Command::Man(args) => rin_cli::man_pages(<Cli as clap::CommandFactory>::command(), &args),
        Command::Verify(args) => rin_cli::verify_command(&args, None, cli.quiet),
        Command::Split {
            file,
            size,
            keys,
            unsigned: _,
        } => {
            let keys = keys
                .iter()
                .map(|k| rin_signing::load_signing_key(k))
                .collect::<Result<Vec<_>, _>>()?;
            split(&file, size.unwrap_or(rin_bundle::parts::FAT32_MAX), &keys)
        }
        Command::Sign {
            file,
            key,
            output,
            threads,
        } => cosign(&file, &key, output, threads, mode),
        Command::SignFile { file, key } => {
            let signing = rin_signing::load_signing_key(&key)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let sig = write_beside(&file, "sig", &rin_signing::sign_detached(&bytes, &signing))?;
            println!(
                "wrote {} (key id {})",
                sig.display(),
                rin_signing::key_id(&signing.verifying_key())
            );
            Ok(())
        }
    }
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Print the result as one JSON object on stdout instead of lines (a failure too): the
    /// bundle's path, size, index sha256, signers, what it carries.
    #[arg(long, conflicts_with = "split")]
    json: bool,
    /// Architecture to carry (amd64, arm64, ...); repeat for several. Default: the stack's `platforms`.
    #[arg(long = "arch", value_name = "ARCH", value_parser = Arch::known)]
    arches: Vec<Arch>,
    /// Private key to sign with (NAME.key); repeat for several signatures.
    #[arg(long = "key", value_name = "FILE")]
    keys: Vec<PathBuf>,
    /// Write an unsigned bundle (installers refuse it; for signing elsewhere later).
    #[arg(long, conflicts_with = "keys")]
    unsigned: bool,
    /// The bundle file to write.
    #[arg(short, long, value_name = "FILE", default_value = "bundle.tar.zst")]
    output: PathBuf,
    /// Compression threads (the bundle's bytes do not depend on it). Default: cores, at most 4.
    #[arg(long, value_name = "N")]
    threads: Option<u32>,
    /// Refuse to build if the lock is missing or would change (for CI and releases).
    #[arg(long)]
    locked: bool,
    /// Build even if manifests or charts use an image the bundle does not carry.
    #[arg(long)]
    allow_missing_image: bool,
    /// Also hash the written bundle and put its checksum beside it as FILE.sha256, for
    /// `sha256sum -c` (costs one more SHA-256 pass; `rininstall verify` checks a copy without it).
    #[arg(long)]
    sha256: bool,
    /// Carry the installer: DIR holds rininstall-linux-ARCH for every architecture built (what
    /// dist/build.sh writes to dist/out), each put in the bundle as installer/rininstall-linux-ARCH.
    #[arg(long, value_name = "DIR")]
    installers: Option<PathBuf>,
    /// Also cut the bundle into parts of at most SIZE bytes (K, M, G allowed) for removable
    /// media, as `rinbundle split` does [default SIZE: 4294967295, FAT32's limit]. The bundle
    /// file is kept.
    #[arg(long, value_name = "SIZE", num_args = 0..=1, default_missing_value = "4294967295",
          value_parser = rin_support::units::parse_bytes)]
    split: Option<u64>,
    /// Build a delta onto BASE, what the site has: the bundle it installed (file or part list),
    /// that bundle's rinbundle.json, or the site's inventory (`rininstall inventory`). Image
    /// layers and configs, and K3s binaries and image archives, that BASE holds are left out; the
    /// site applies the delta only onto that release (or, for an inventory, only when it still
    /// holds them all).
    #[arg(long, value_name = "BASE")]
    base: Option<PathBuf>,
    /// A public key BASE must be signed by (the builders' for a bundle, the site's for an
    /// inventory); repeat for several.
    #[arg(long = "base-key", value_name = "FILE", requires = "base")]
    base_keys: Vec<PathBuf>,
    /// Take in an optional component the stack leaves out by default; repeat for several.
    #[arg(long, value_name = "COMPONENT")]
    with: Vec<String>,
    /// Leave out an optional component the stack takes in by default; repeat for several.
    #[arg(long, value_name = "COMPONENT")]
    without: Vec<String>,
    #[command(flatten)]
    fetch: FetchArgs,
}

fn lock(
    stack_dir: &Path,
    arches: Vec<Arch>,
    missing: bool,
    fetch: &FetchArgs,
    mode: reporters::Mode,
) -> anyhow::Result<()> {
    let stack = Stack::load(stack_dir)?;
    let arches = if arches.is_empty() {
        stack.spec.platforms.clone()
    } else {
        arches
    };
    check_arches(&arches)?;
    let opts = fetch.options()?;
    let display = reporters::reporter(mode);
    let out = runtime()?
        .block_on(rin_builder::net::fetch::lock(
            &stack, &arches, &opts, missing, display,
        ))
        .with_context(|| format!("cannot lock {}", stack_dir.display()))?;
    report_lock(&out);
    Ok(())
}

fn report_lock(out: &rin_builder::LockOutcome) {
    // Each line is why the lock was out of date (the same words `--locked` refuses with).
    if !out.changes.is_empty() {
        println!("the lock was out of date:");
    }
    for c in &out.changes {
        println!("  {c}");
    }
    println!(
        "{} {}: {}, {}, {}{}",
        if out.written { "wrote" } else { "unchanged" },
        out.path.display(),
        count(out.lock.images.len(), "image"),
        count(out.lock.charts.len(), "chart"),
        count(out.lock.k3s.len(), "K3s file"),
        if out.lock.host_packages.is_empty() {
            String::new()
        } else {
            format!(", {}", count(out.lock.host_packages.len(), "host package"))
        }
    );
}

fn build(
    stack_dir: &Path,
    args: BuildArgs,
    mode: reporters::Mode,
    quiet: bool,
) -> anyhow::Result<()> {
    if args.keys.is_empty() && !args.unsigned {
        return Err(rin_cli::CliError::usage(
            "no signing key: pass --key NAME.key, or --unsigned",
            "make a key pair with `rinbundle keygen --out NAME` (NAME.key signs, NAME.pub goes to the sites); --unsigned writes a bundle no site accepts until it is signed",
        ));
    }
    let stack = Stack::load(stack_dir)?;
    let arches = if args.arches.is_empty() {
        stack.spec.platforms.clone()
    } else {
        args.arches
    };
    check_arches(&arches)?;
    let keys = args
        .keys
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
    let threads = compression_threads(args.threads);
    let display = reporters::reporter(mode);
    let mut fetch_opts = args.fetch.options()?;
    fetch_opts.locked = args.locked;
    let rt = runtime()?;
    let opts = BuildOptions {
        arches,
        keys: keys.clone(),
        output: args.output.clone(),
        created,
        threads,
        allow_missing_image: args.allow_missing_image,
        installers: args.installers.clone(),
        with: args.with.clone(),
        without: args.without.clone(),
        checksum: args.sha256,
        base: match &args.base {
            Some(path) => {
                let trust = (!args.base_keys.is_empty())
                    .then(|| rin_signing::TrustPolicy::load(&args.base_keys, None, 1))
                    .transpose()?;
                Some(
                    rin_builder::pack::delta::read_base(path, trust.as_ref())
                        .with_context(|| format!("cannot read the base {}", path.display()))?,
                )
            }
            None => None,
        },
    };
    let built = rin_builder::build::build(
        &stack,
        &opts,
        &fetch_opts,
        rt.handle(),
        display.clone(),
        &|l| {
            if !quiet && l.written {
                report_lock(l);
            }
        },
    )
    .map_err(|e| match e {
        BuildFailure::Fetch(e) => anyhow::Error::new(e)
            .context(format!("cannot fetch what {} needs", stack_dir.display())),
        BuildFailure::Pack(e) => {
            anyhow::Error::new(e).context(format!("cannot build {}", stack_dir.display()))
        }
        BuildFailure::Task(why) => anyhow::anyhow!(why),
    })?;
    // `sha256sum -c` reads FILE.sha256 (with --sha256).
    let sums = match &built.sha256 {
        Some(sha) => {
            let name = args
                .output
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            Some(write_beside(
                &args.output,
                "sha256",
                format!("{sha}  {name}\n").as_bytes(),
            )?)
        }
        None => None,
    };
    if args.json {
        let not_carried: Vec<&str> = built
            .uses
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(u, _)| u.reference.as_str())
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "bundle": args.output,
                "size": built.size,
                "sha256": built.sha256,
                "index_sha256": built.index_sha256,
                "signers": built.signers,
                "stack": built.index.stack,
                "platforms": built.index.platforms,
                "images": built.index.images.len(),
                "charts": built.index.charts.len(),
                "entries": built.index.entries.len(),
                "delta": built.index.base.is_some(),
                "not_carried": not_carried,
            })
        );
        return Ok(());
    }
    if !quiet {
        println!(
            "built {} {} for {}: {} and {} carried, {} in all",
            built.index.stack.name,
            built.index.stack.version,
            rin_bundle::platform::list(&built.index.platforms),
            count(built.index.images.len(), "image"),
            count(built.index.charts.len(), "chart"),
            count(built.index.entries.len(), "file")
        );
        let missing: Vec<_> = built.uses.iter().filter(|(_, ok)| !ok).collect();
        let used = count(built.uses.len(), "image");
        if missing.is_empty() {
            println!("the stack's manifests and charts use {used}, all carried");
        } else {
            println!(
                "the stack's manifests and charts use {used}, {} of them NOT carried:",
                missing.len()
            );
        }
        for (u, _) in missing {
            println!(
                "  NOT CARRIED: {} (in {})",
                rin_support::printable(&u.reference),
                rin_support::printable(&u.place)
            );
        }
        if let Some(b) = &built.index.base {
            println!("{}", delta_line(b));
        }
        if built.signers.is_empty() {
            println!("UNSIGNED: installers will refuse it until it is signed");
        }
        for s in &built.signers {
            println!("signed by {s}");
        }
    }
    match (&built.sha256, sums) {
        (Some(sha), Some(sums)) => {
            println!(
                "{sha}  {} ({}), checksum in {}",
                args.output.display(),
                human_bytes(built.size),
                sums.display()
            );
        }
        _ => println!(
            "{} ({}), index sha256:{}",
            args.output.display(),
            human_bytes(built.size),
            built.index_sha256
        ),
    }
    if let Some(size) = args.split {
        split(&args.output, size, &keys)?;
    }
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
    println!(
        "platforms  {}",
        rin_bundle::platform::list(&index.platforms)
    );
    if let Some(k) = &index.k3s {
        println!("k3s        {}", k.version);
        if !k.disable.is_empty() {
            println!(
                "disables   {} (K3s packaged components)",
                k.disable.join(", ")
            );
        }
    }
    if !index.components.is_empty() {
        println!("components {}", index.components.join(", "));
    }
    if let Some(b) = &index.base {
        println!("delta      {}", delta_line(b));
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
    for ((target, arch), files) in rin_bundle::host::carried(&index) {
        let size: u64 = files.iter().map(|e| e.size).sum();
        println!(
            "host       {target}/{arch}: {} packages ({})",
            files.len(),
            human_bytes(size)
        );
        for e in files {
            println!("  {}", e.path.rsplit('/').next().unwrap_or(&e.path));
        }
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
        "(not verified: a site checks it with `rininstall verify {} --key NAME.pub`)",
        file.display()
    );
    Ok(())
}

/// `rinbundle sign`: `file` (a bundle, or a part list) with `key`'s signature added.
fn cosign(
    file: &Path,
    key: &Path,
    output: Option<PathBuf>,
    threads: Option<u32>,
    mode: reporters::Mode,
) -> anyhow::Result<()> {
    let signing = rin_signing::load_signing_key(key)?;
    let id = rin_signing::key_id(&signing.verifying_key());
    let display = reporters::reporter(mode);
    let add = |bytes: &[u8], sigs: &[u8]| {
        rin_signing::add(bytes, sigs, &signing).map_err(|e| e.to_string())
    };
    if let Some(list_path) = rin_bundle::parts::list_of(file) {
        if output.is_some() {
            anyhow::bail!(
                "--output is for bundle files: a part list is co-signed in place (its parts do not change)"
            );
        }
        let (list, added) = rin_bundle::parts::cosign(&list_path, &add, display.as_ref())
            .with_context(|| format!("cannot co-sign {}", list_path.display()))?;
        if added {
            println!(
                "added the signature of {id} to {} (index sha256:{}); its {} parts are unchanged",
                list_path.display(),
                list.index_sha256,
                list.parts.len()
            );
        } else {
            println!(
                "{} is already signed by {id}: nothing to add",
                list_path.display()
            );
        }
        return Ok(());
    }
    let (index, sigs) = rin_bundle::peek(file)?;
    let index_sha256 = rin_bundle::digest::sha256_hex(&index);
    let Some(new) = add(&index, &sigs).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
    else {
        println!(
            "{} is already signed by {id}: nothing to add",
            file.display()
        );
        return Ok(());
    };
    let out = output.unwrap_or_else(|| file.to_path_buf());
    let resigned = rin_bundle::resign::resign(
        file,
        &index_sha256,
        &new,
        &out,
        compression_threads(threads),
        display.as_ref(),
    )
    .with_context(|| format!("cannot co-sign {}", file.display()))?;
    let signers = rin_signing::SignatureFile::parse(&new)
        .map(|s| s.key_ids())
        .unwrap_or_default();
    println!(
        "co-signed {} {} (index sha256:{}, unchanged); signed by {}",
        resigned.index.stack.name,
        resigned.index.stack.version,
        index_sha256,
        signers.join(", ")
    );
    println!("{} ({})", out.display(), human_bytes(resigned.size));
    Ok(())
}

/// Threads for zstd: as asked, or the cores up to four.
fn compression_threads(asked: Option<u32>) -> u32 {
    asked.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get().min(4) as u32)
            .unwrap_or(1)
    })
}

/// Cut `file` into parts of at most `size` bytes with their part list signed by `keys`, and say
/// what was written.
fn split(file: &Path, size: u64, keys: &[ed25519_dalek::SigningKey]) -> anyhow::Result<()> {
    let (path, list) =
        rin_bundle::parts::split(file, size, &|bytes| rin_signing::sign(bytes, keys))
            .with_context(|| format!("cannot split {}", file.display()))?;
    for p in &list.parts {
        println!("{}  {}  {}", p.sha256, p.name, human_bytes(p.size));
    }
    println!(
        "wrote {} parts and {} ({}, index sha256:{})",
        list.parts.len(),
        path.display(),
        human_bytes(list.size),
        list.index_sha256
    );
    Ok(())
}

/// What a delta leaves out, and onto what.
fn delta_line(b: &rin_bundle::index::Base) -> String {
    let onto = match &b.inventory {
        Some(i) => format!(
            "the site of inventory sha256:{i} (installed index sha256:{})",
            b.index_sha256
        ),
        None => format!("the release of index sha256:{}", b.index_sha256),
    };
    format!(
        "a delta onto {onto}: leaves out {} blobs and {} K3s files the site holds ({})",
        b.blobs.len(),
        b.files.len(),
        human_bytes(b.size)
    )
}

/// Write `FILE.EXT` beside `file` (a signature, a checksum) completely or not at all.
fn write_beside(file: &std::path::Path, ext: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let mut name = file.as_os_str().to_os_string();
    name.push(format!(".{ext}"));
    let path = PathBuf::from(name);
    rin_support::fs::write_atomic(&path, bytes, 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
