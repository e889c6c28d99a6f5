//! `rininstall`: verify and install a bundle on an air-gapped node.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use rin_bundle::{Arch, Platform};
use rin_cli::{Bars, TrustArgs, VerifyArgs, count, exit, human_bytes};
use rin_installer::InstallError;
use rin_installer::apply::{self, ApplyOptions, RegistryMode};
use rin_installer::cluster::manage::{self, Target};
use rin_installer::node::host::Role;
use rin_installer::node::packages;
use rin_installer::node::seed::{self, SeedFailure, SeedOptions};
use rin_installer::node::site_registry;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod report;

#[derive(Parser)]
#[command(
    name = "rininstall",
    version = rin_cli::VERSION,
    about = "Verify and install Rin air-gap bundles on a K3s node"
)]
struct Cli {
    /// Print no progress, only results and errors.
    #[arg(long, short, global = true, help_heading = "Global options")]
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
    /// Install a bundle on this node: preflight, verify, K3s's host files, the site registry,
    /// seeding, the stack deployed and waited for, and the release record. Idempotent: a
    /// re-run changes only what differs.
    Apply(Box<ApplyArgs>),
    /// Show the installed release (this node's record and the cluster's), the releases kept
    /// for rollback, and the health of the stack's workloads.
    Status(StatusArgs),
    /// Re-apply a kept release (default: the one before the installed one), with the same
    /// waits, pruning and record as apply.
    Rollback(RollbackArgs),
    /// Verify a bundle and write the installer it carries for an architecture (the next
    /// version of rininstall, for this node or another).
    ExtractInstaller(ExtractArgs),
    /// Check a split bundle's parts before a long apply: the part list's signatures, then every
    /// part's size and sha256; one line per part (good, missing, damaged).
    Check(CheckArgs),
    /// Write what this site holds (the installed release, the blobs its registry holds for it,
    /// the K3s files in place), for `rinbundle build --base` to build a delta against.
    Inventory(InventoryArgs),
    /// Look an installed node over: K3s's service, `k3s check-config`, the host packages, the
    /// release, containerd's mirrors, every
    /// image resolving in the site registry, the nodes Ready, the stack healthy (each cause
    /// named), disk and inodes. Exit code 1 when a check fails.
    Doctor(DoctorArgs),
    /// Write what someone helping from outside needs into one .tar.zst: the release records,
    /// the host checks, K3s's configuration and logs, the cluster's status, nodes, pods and
    /// events; every token, password, secret and key redacted.
    SupportBundle(SupportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(rin_cli::CompletionsArgs),
    /// Write the manual pages (rininstall.1 and one per command) into a directory.
    Man(rin_cli::ManArgs),
}

#[derive(Args)]
struct DoctorArgs {
    #[command(flatten)]
    at: LookArgs,
    #[command(flatten)]
    site: SiteRegistryArgs,
    /// Print the checks as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn doctor_command(args: &DoctorArgs, quiet: bool) -> anyhow::Result<()> {
    use rin_installer::cluster::doctor::{self, Verdict};
    let opts = doctor::DoctorOptions {
        root: args.at.at.root.clone(),
        target: args.at.target(),
        registry: args.site.options_once()?,
    };
    let display = report::display_unless(quiet || args.json);
    let rt = runtime()?;
    let checks = doctor::doctor(&opts, rt.handle(), &display).map_err(anyhow_of)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let v = match c.verdict {
                Verdict::Ok => "ok     ",
                Verdict::Fail => "FAIL   ",
                Verdict::Unknown => "unknown",
            };
            println!("{v} {:<17} {}", c.check, c.detail);
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} checks failed (each says what to do)",
            checks.len()
        );
    }
    Ok(())
}

#[derive(Args)]
struct SupportArgs {
    /// The file to write.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "rin-support.tar.zst"
    )]
    output: PathBuf,
    #[command(flatten)]
    at: LookArgs,
    /// The site registry the doctor's checks ask.
    #[command(flatten)]
    site: SiteRegistryArgs,
    /// The most it takes in all, before compression (K, M, G allowed); each file keeps at most
    /// its last eighth of that.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = rin_support::units::parse_bytes)]
    max_size: u64,
}

fn support_command(args: &SupportArgs, quiet: bool) -> anyhow::Result<()> {
    let opts = rin_installer::node::support::SupportOptions {
        root: args.at.at.root.clone(),
        target: args.at.target(),
        max_bytes: args.max_size,
        registry: args.site.options_once()?,
    };
    let display = report::display_unless(quiet);
    let rt = runtime()?;
    let got = rin_installer::node::support::write(&opts, &args.output, rt.handle(), &display)
        .map_err(anyhow_of)?;
    for (p, n) in &got.files {
        println!("{n:>10}  {p}");
    }
    for c in &got.cut {
        println!("cut: {c}");
    }
    println!(
        "wrote {} ({} files; tokens, passwords, secrets and keys redacted)",
        args.output.display(),
        got.files.len() + 1
    );
    Ok(())
}

#[derive(Args)]
struct InventoryArgs {
    /// The file to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// The site's private key to sign the inventory with (NAME.key from `rinbundle keygen`).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    at: InstalledArgs,
    #[command(flatten)]
    site: SiteRegistryArgs,
}

/// The site registry: shared by `inventory`, `doctor` and `support-bundle`.
#[derive(Args)]
struct SiteRegistryArgs {
    /// The site registry, as HOST:PORT [default: the in-cluster one, 127.0.0.1:NODE_PORT].
    #[arg(long, value_name = "HOST:PORT")]
    registry: Option<String>,
    /// The in-cluster registry's NodePort on this node.
    #[arg(long, value_name = "PORT", default_value_t = site_registry::DEFAULT_NODE_PORT)]
    registry_node_port: u16,
    #[command(flatten)]
    reg: RegistryArgs,
}

impl SiteRegistryArgs {
    /// `--registry`, or the in-cluster one on its NodePort.
    fn options(&self) -> anyhow::Result<SeedOptions> {
        let registry = self
            .registry
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.registry_node_port));
        self.reg.options(&registry)
    }

    /// For checks: each request asked once (a registry that does not answer is the finding).
    fn options_once(&self) -> anyhow::Result<SeedOptions> {
        let mut opts = self.options()?;
        opts.attempts = 1;
        Ok(opts)
    }
}

fn inventory_command(args: &InventoryArgs, quiet: bool) -> anyhow::Result<()> {
    let key = args
        .key
        .as_ref()
        .map(|k| rin_signing::load_signing_key(k))
        .transpose()?;
    let opts = rin_installer::node::inventory::InventoryOptions {
        root: args.at.root.clone(),
        state_dir: args.at.target(0).state_dir,
        seed: args.site.options()?,
    };
    let display = report::display_unless(quiet);
    let rt = runtime()?;
    let inv =
        rin_installer::node::inventory::take(&opts, rt.handle(), &display).map_err(anyhow_of)?;
    let signed = inv.signed_bytes();
    let sigs = rin_signing::sign(&signed, key.as_slice());
    let bytes = inv.to_file(&sigs)?;
    rin_support::fs::write_atomic(&args.output, &bytes, 0o644)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "{} {} (index sha256:{}): {} blobs in {}, {} K3s files in place",
        inv.stack.name,
        inv.stack.version,
        inv.index_sha256,
        inv.blobs.len(),
        inv.registry,
        inv.files.len()
    );
    match &key {
        Some(k) => println!(
            "wrote {}, signed by {}",
            args.output.display(),
            rin_signing::key_id(&k.verifying_key())
        ),
        None => println!("wrote {} (unsigned)", args.output.display()),
    }
    Ok(())
}

#[derive(Args)]
struct CheckArgs {
    /// The part list, NAME.parts (the parts are read from its directory).
    parts: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
}

fn check_command(args: &CheckArgs) -> anyhow::Result<()> {
    use rin_bundle::parts::{self, PartState};
    let policy = args
        .trust
        .policy(Some(Path::new(rin_installer::DEFAULT_TRUSTED_KEYS)))?;
    let (list, states) = parts::check(&args.parts, &policy)?;
    let mut bad = 0;
    for (p, state) in list.parts.iter().zip(&states) {
        let line = match state {
            PartState::Good => format!("good     {}", p.name),
            PartState::Missing => {
                format!("missing  {}: copy it from the connected machine", p.name)
            }
            PartState::WrongSize { size } => format!(
                "damaged  {}: {size} bytes, the list says {}: copy it again",
                p.name, p.size
            ),
            PartState::Damaged { sha256 } => format!(
                "damaged  {}: sha256 {sha256}, the list says {}: copy it again",
                p.name, p.sha256
            ),
        };
        bad += usize::from(*state != PartState::Good);
        println!("{line}");
    }
    if bad > 0 {
        return Err(rin_bundle::BundleError::PartsBad {
            path: args.parts.clone(),
            bad,
            count: states.len(),
        }
        .into());
    }
    println!(
        "all {} parts of {} are good ({}, index sha256:{})",
        states.len(),
        list.bundle,
        human_bytes(list.size),
        list.index_sha256
    );
    Ok(())
}

#[derive(Args)]
struct ExtractArgs {
    /// The bundle file.
    file: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// The architecture [default: this machine's].
    #[arg(long, value_name = "ARCH", value_parser = Arch::known)]
    arch: Option<Arch>,
    /// Where to write it [default: ./rininstall-linux-ARCH].
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn extract_command(args: &ExtractArgs, quiet: bool) -> anyhow::Result<()> {
    let policy = args
        .trust
        .policy(Some(Path::new(rin_installer::DEFAULT_TRUSTED_KEYS)))?;
    let arch = args.arch.clone().unwrap_or_else(Arch::host);
    let dest = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(rin_bundle::k3s::installer(&arch)));
    let bars = Bars::new(quiet);
    let size =
        rin_installer::node::stage::extract_installer(&args.file, &policy, &arch, &dest, &bars)
            .map_err(anyhow_of)?;
    println!(
        "verified {} and wrote {} ({}, {})",
        args.file.display(),
        dest.display(),
        human_bytes(size),
        arch.linux()
    );
    Ok(())
}

/// Where an installation is: shared by `status` and `rollback`.
#[derive(Args)]
struct InstalledArgs {
    /// The root K3s was installed under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// The state directory [default: ROOT/var/lib/rininstall].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The cluster's kubeconfig [default: ROOT/etc/rancher/k3s/k3s.yaml].
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

impl InstalledArgs {
    fn target(&self, timeout: u64) -> Target {
        Target {
            state_dir: self
                .state_dir
                .clone()
                .unwrap_or_else(|| self.root.join("var/lib/rininstall")),
            kubeconfig: self
                .kubeconfig
                .clone()
                .unwrap_or_else(|| rin_installer::cluster::connect::k3s_kubeconfig(&self.root)),
            timeout: std::time::Duration::from_secs(timeout),
        }
    }
}

/// An installation and how long to wait for its cluster's API: `status`, `doctor` and
/// `support-bundle`, which only look.
#[derive(Args)]
struct LookArgs {
    #[command(flatten)]
    at: InstalledArgs,
    /// Bound of the wait for the Kubernetes API, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
}

impl LookArgs {
    fn target(&self) -> Target {
        self.at.target(self.timeout)
    }
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    at: LookArgs,
    /// Print the status as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RollbackArgs {
    #[command(flatten)]
    at: InstalledArgs,
    /// The version to return to [default: the release before the installed one].
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
    #[command(flatten)]
    deploy: DeployArgs,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "bars")]
    progress: report::Mode,
}

/// How the stack is deployed: shared by `apply` and `rollback`.
#[derive(Args)]
struct DeployArgs {
    /// Take over fields another field manager (kubectl, a controller) set on the stack's objects.
    #[arg(long)]
    force_conflicts: bool,
    /// Also delete claims (and namespaces holding them) the new release no longer has: their
    /// data is lost.
    #[arg(long)]
    prune_volumes: bool,
    /// Releases kept for rollback.
    #[arg(long, value_name = "N", default_value_t = rin_installer::release::DEFAULT_KEEP)]
    keep: usize,
    /// Bound of each wait, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout: u64,
}

/// How to reach a registry: shared by `seed` and `apply`.
#[derive(Args)]
struct RegistryArgs {
    /// PEM CA certificate of the registry's TLS; repeat for several.
    #[arg(long, value_name = "FILE")]
    registry_ca: Vec<PathBuf>,
    /// A file holding `user:password` for the registry.
    #[arg(long, value_name = "FILE")]
    registry_auth: Option<PathBuf>,
    /// Speak plain HTTP to the registry (the default only for loopback addresses given no
    /// --registry-ca).
    #[arg(long)]
    plain_http: bool,
    /// Uploads and checks in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    jobs: usize,
    /// Passes over the bundle, and tries of each request, before giving up.
    #[arg(long, value_name = "N", default_value_t = 4)]
    attempts: u32,
    /// Give up a request the registry answers nothing to, or an upload it takes no byte of,
    /// for this long; the request is tried again, the blob sent again in the next pass.
    #[arg(long, value_name = "SECONDS", default_value_t = rin_support::DEFAULT_STALL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    stall_timeout: u64,
    /// Seed only this platform of multi-platform images (`arm64`, `linux/arm64`,
    /// `linux/arm/v7`); repeat for several. Default: every platform the bundle carries.
    #[arg(long = "platform", value_name = "PLATFORM")]
    platforms: Vec<Platform>,
}

impl RegistryArgs {
    fn options(&self, registry: &str) -> anyhow::Result<SeedOptions> {
        let mut opts = SeedOptions::new(registry);
        // A CA file says the registry speaks TLS, loopback or not.
        opts.plain_http = self.plain_http || (opts.plain_http && self.registry_ca.is_empty());
        opts.ca_files = self.registry_ca.clone();
        opts.jobs = self.jobs;
        opts.attempts = self.attempts;
        opts.stall = std::time::Duration::from_secs(self.stall_timeout);
        if !self.platforms.is_empty() {
            opts.platforms = Some(self.platforms.iter().cloned().collect());
        }
        if let Some(f) = &self.registry_auth {
            let text = std::fs::read_to_string(f).map_err(|source| InstallError::Io {
                path: f.clone(),
                source,
            })?;
            let (u, p) = text
                .trim_end()
                .split_once(':')
                .ok_or_else(|| InstallError::Step {
                    what: f.display().to_string(),
                    reason: "must hold user:password".into(),
                })?;
            opts.auth = Some((u.to_string(), p.to_string()));
        }
        Ok(opts)
    }
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
    #[command(flatten)]
    reg: RegistryArgs,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "bars")]
    progress: report::Mode,
    /// Print the result as one JSON object on stdout instead of lines (a failure too).
    #[arg(long)]
    json: bool,
}

fn seed_command(args: &SeedArgs, quiet: bool) -> anyhow::Result<()> {
    let policy = args
        .trust
        .policy(Some(Path::new(rin_installer::DEFAULT_TRUSTED_KEYS)))?;
    let opts = args.reg.options(&args.registry)?;
    let file = args.file.as_path();
    let display = report::display(if quiet {
        report::Mode::None
    } else {
        args.progress
    });
    let rt = runtime()?;
    let run =
        seed::seed_file(file, &policy, &opts, rt.handle(), &display).map_err(|e| match e {
            SeedFailure::Refused(e) => rin_cli::refused_context(anyhow_of(e), file),
            SeedFailure::Platforms(why) => anyhow::anyhow!("--platform: {why}"),
            SeedFailure::Seeding(e) => anyhow_of(e),
        })?;
    let (done, complete) = (run.seeded, run.from_index_alone);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "registry": args.registry,
                "seeded": done,
                "from_index_alone": complete,
            })
        );
    } else if !quiet {
        println!("seeded {}: {}", args.registry, seeded_line(&done));
        if complete {
            println!(
                "the registry already held everything: checked against the signed index by digest, without reading the bundle's entries"
            );
        }
    }
    Ok(())
}

fn seeded_line(done: &seed::Seeded) -> String {
    format!(
        "{} blobs uploaded ({}{}), {} mounted, {} already present, {} further passes over the bundle, {} manifests, tags: {}",
        done.uploaded,
        human_bytes(done.uploaded_bytes),
        if done.during_verify {
            ", while verifying"
        } else {
            ""
        },
        done.mounted,
        done.present,
        done.passes,
        done.manifests,
        done.tags.join(" ")
    )
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RoleArg {
    Server,
    Agent,
}

#[derive(Args)]
struct ApplyArgs {
    /// The bundle file.
    file: PathBuf,
    /// Print the result as one JSON object on stdout instead of lines (a failure too): what was
    /// written, seeded, planned or deployed, and the release recorded.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    trust: TrustArgs,
    /// Install into this directory instead of `/` (K3s is then not started: needs --no-start).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// The state directory: lock, staging, release record [default: ROOT/var/lib/rininstall].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The node's architecture [default: this machine's].
    #[arg(long, value_name = "ARCH", value_parser = Arch::known)]
    arch: Option<Arch>,
    /// The node's role: a server (the first one, or one joining --server) or an agent.
    #[arg(long, value_enum, default_value = "server")]
    role: RoleArg,
    /// The first server starts embedded etcd so more servers can join (HA).
    #[arg(long)]
    cluster_init: bool,
    /// The cluster to join, as https://SERVER:6443 (joining servers and agents).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// File holding the cluster's join token (the first server's /var/lib/rancher/k3s/server/token).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Extra names or addresses for the API server's certificate; repeat for several.
    #[arg(long, value_name = "NAME")]
    tls_san: Vec<String>,
    /// Seed this existing registry (HOST:PORT) instead of running one in the cluster.
    #[arg(long, value_name = "HOST:PORT")]
    registry: Option<String>,
    /// The image the in-cluster registry runs [default: the bundle's docker.io/library/registry].
    #[arg(long, value_name = "REF", conflicts_with = "registry")]
    registry_image: Option<String>,
    /// The NodePort of the in-cluster registry, reached by every node at 127.0.0.1.
    #[arg(long, value_name = "PORT", default_value_t = site_registry::DEFAULT_NODE_PORT)]
    registry_node_port: u16,
    #[command(flatten)]
    reg: RegistryArgs,
    /// Write the files but do not run K3s's install.sh (nor start K3s).
    #[arg(long)]
    no_start: bool,
    /// Print what would change (files to write, blobs to push) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The bundle's operating system packages for this node (host/): `install` what the node
    /// lacks with dpkg and enable their services, `show` the commands only, or `skip` them
    /// [default: install on /, show under --root].
    #[arg(long, value_enum, value_name = "WHAT")]
    host_packages: Option<HostPackagesArg>,
    /// Start K3s even when `k3s check-config` finds the kernel lacking (it runs before K3s's
    /// install.sh, on the real root).
    #[arg(long)]
    no_check_config: bool,
    /// Install a bundle older than the installed release (or an older K3s).
    #[arg(long)]
    allow_downgrade: bool,
    /// The cluster to deploy the stack to [default: ROOT/etc/rancher/k3s/k3s.yaml, which K3s
    /// writes]; with --no-start, deploy to this running cluster.
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    deploy: DeployArgs,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "bars")]
    progress: report::Mode,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HostPackagesArg {
    Install,
    Show,
    Skip,
}

fn apply_command(args: &ApplyArgs, quiet: bool) -> anyhow::Result<()> {
    let policy = args
        .trust
        .policy(Some(Path::new(rin_installer::DEFAULT_TRUSTED_KEYS)))?;
    let role = match (args.role, &args.server, &args.token_file) {
        (RoleArg::Server, None, _) => Role::Server {
            cluster_init: args.cluster_init,
        },
        (RoleArg::Server, Some(url), Some(t)) => Role::JoinServer {
            url: url.clone(),
            token_file: t.clone(),
        },
        (RoleArg::Agent, Some(url), Some(t)) => Role::Agent {
            url: url.clone(),
            token_file: t.clone(),
        },
        _ => anyhow::bail!(
            "joining servers and agents need both --server https://SERVER:6443 and --token-file FILE"
        ),
    };
    if args.root != Path::new("/") && !args.no_start {
        return Err(rin_cli::CliError::usage(
            format!(
                "--root {}: K3s can only be started on the real root",
                args.root.display()
            ),
            "add --no-start to lay the node out under that directory without starting K3s",
        ));
    }
    let (registry, seed_opts) = match &args.registry {
        Some(host) => (RegistryMode::External, args.reg.options(host)?),
        None => (
            RegistryMode::InCluster {
                node_port: args.registry_node_port,
                image: args.registry_image.clone(),
            },
            args.reg
                .options(&format!("127.0.0.1:{}", args.registry_node_port))?,
        ),
    };
    let opts = ApplyOptions {
        state_dir: args
            .state_dir
            .clone()
            .unwrap_or_else(|| args.root.join("var/lib/rininstall")),
        root: args.root.clone(),
        arch: args.arch.clone().unwrap_or_else(Arch::host),
        role,
        tls_san: args.tls_san.clone(),
        registry,
        seed: seed_opts,
        no_start: args.no_start,
        dry_run: args.dry_run,
        allow_downgrade: args.allow_downgrade,
        timeout: std::time::Duration::from_secs(args.deploy.timeout),
        kubeconfig: args.kubeconfig.clone(),
        force_conflicts: args.deploy.force_conflicts,
        prune_volumes: args.deploy.prune_volumes,
        keep: args.deploy.keep,
        host_packages: match args.host_packages {
            Some(HostPackagesArg::Install) => packages::Mode::Install,
            Some(HostPackagesArg::Show) => packages::Mode::Show,
            Some(HostPackagesArg::Skip) => packages::Mode::Skip,
            None if args.root == Path::new("/") => packages::Mode::Install,
            None => packages::Mode::Show,
        },
        check_config: !args.no_check_config,
    };
    let display = report::display(if quiet {
        report::Mode::None
    } else {
        args.progress
    });
    let file = args.file.as_path();
    let rt = runtime()?;
    let done = apply::apply(file, &policy, &opts, rt.handle(), &display).map_err(anyhow_of)?;
    if args.json {
        let root = |p: &String| opts.root.join(p);
        println!(
            "{}",
            serde_json::json!({
                "dry_run": opts.dry_run,
                "written": done.written.iter().map(root).collect::<Vec<_>>(),
                "unchanged": done.unchanged.iter().map(root).collect::<Vec<_>>(),
                "host_packages": done.host.as_ref().map(|h| serde_json::json!({
                    "target": h.target,
                    "installed": h.installed,
                    "present": h.present,
                    "ran": h.ran,
                })),
                "ran_install_sh": done.installed_service,
                "seeded": done.seeded,
                "would_push": done.to_push.map(|(n, b)| serde_json::json!({"blobs": n, "bytes": b})),
                "plan": done.plan,
                "plan_deferred": done.plan_deferred,
                "deployed": done.rolled_out.as_ref().map(|o| serde_json::json!({
                    "objects": o.record.inventory.len(),
                    "revision": o.record.revision(),
                    "pruned": o.pruned.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })),
                "recorded": done.release.as_ref().map(|r| serde_json::json!({
                    "stack": r.stack,
                    "version": r.version,
                    "index_sha256": r.index_sha256,
                })),
            })
        );
        return Ok(());
    }
    if let Some(h) = &done.host {
        let verb = if h.ran { "installed" } else { "would install" };
        if h.installed.is_empty() {
            println!("host packages for {}: all {} present", h.target, h.present);
        } else {
            println!(
                "host packages for {}: {verb} {} ({} present)",
                h.target,
                h.installed.join(", "),
                h.present
            );
        }
        if !h.ran {
            for c in &h.commands {
                println!("would run {c}");
            }
        }
    }
    // Each file was listed under step 3 as it was written; here, how many (--json lists them).
    println!(
        "{} {} under {}{}",
        if opts.dry_run { "would write" } else { "wrote" },
        count(done.written.len(), "file"),
        opts.root.display(),
        match done.unchanged.len() {
            0 => String::new(),
            n => format!(" ({n} already in place, unchanged)"),
        }
    );
    if done.installed_service {
        let what = if opts.dry_run { "would run" } else { "ran" };
        println!("{what} K3s's install.sh ({})", opts.role.exec());
    }
    if let Some((n, bytes)) = done.to_push {
        println!(
            "would push {n} blobs ({}) to {}",
            human_bytes(bytes),
            opts.seed.registry
        );
    }
    if let Some(s) = &done.seeded {
        println!("seeded {}: {}", opts.seed.registry, seeded_line(s));
    }
    if let Some(why) = done.plan_deferred {
        println!("not deployed by this run: {why}");
        println!(
            "a run that deploys would apply {}:",
            count(done.plan.len(), "object")
        );
    }
    for o in &done.plan {
        println!("would apply {}", rin_support::printable(o));
    }
    if let Some(out) = &done.rolled_out {
        print_rolled_out(out);
    }
    if let Some(r) = &done.release {
        if done.rolled_out.is_some() {
            println!(
                "installed {} {} (bundle index sha256 {})",
                r.stack, r.version, r.index_sha256
            );
        } else {
            println!(
                "recorded {} {} on this node (bundle index sha256 {}): its files are in place; the stack was not deployed by this run",
                r.stack, r.version, r.index_sha256
            );
        }
    } else if opts.dry_run {
        println!("dry run: nothing was changed");
    }
    Ok(())
}

fn print_rolled_out(out: &rin_installer::cluster::rollout::RolledOut) {
    for p in &out.pruned {
        println!("pruned {p}");
    }
    for k in &out.kept {
        println!("kept {k} (it holds data; --prune-volumes deletes it)");
    }
    println!(
        "deployed {} {}: {} objects healthy, revision {}{} (kept for rollback: {})",
        out.record.stack,
        out.record.version,
        out.record.inventory.len(),
        out.record.revision(),
        if out.recorded { "" } else { ", unchanged" },
        out.kept_revisions
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn status_command(args: &StatusArgs, quiet: bool) -> anyhow::Result<()> {
    let display = report::display_unless(quiet || args.json);
    let rt = runtime()?;
    let s = manage::status(&args.at.target(), rt.handle(), &display).map_err(anyhow_of)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        match &s.node {
            Some(n) => println!(
                "installed: {} {} (bundle index sha256 {}, at {}{})",
                n.stack,
                n.version,
                n.index_sha256,
                n.installed,
                n.revision
                    .map(|r| format!(", revision {r}"))
                    .unwrap_or_default()
            ),
            None => println!("installed: nothing recorded on this node"),
        }
        if let Some(k) = s.node.as_ref().and_then(|n| n.k3s.as_ref()) {
            println!("k3s: {k}");
        }
        if let Some(c) = &s.cluster {
            println!("cluster: Kubernetes {}", c.kubernetes);
            for r in &c.releases {
                println!(
                    "  revision {}: {} (bundle {}, {})",
                    r.revision,
                    r.version,
                    &r.bundle[..r.bundle.len().min(12)],
                    r.installed
                );
            }
            for h in &c.health {
                let detail = match (h.ready, h.desired, &h.reason) {
                    (Some(r), Some(d), _) => format!(" {r}/{d}"),
                    (_, _, Some(why)) => format!(": {why}"),
                    _ => String::new(),
                };
                println!("  {:<8} {}{detail}", h.state, h.object);
            }
            println!(
                "health: {} ({} objects)",
                if c.healthy { "healthy" } else { "NOT healthy" },
                c.objects
            );
        }
        if let Some(e) = &s.cluster_error {
            println!("cluster: not asked: {e}");
            if s.node.is_some() {
                println!("health: unknown (the cluster was not asked)");
            }
        }
    }
    match &s.cluster {
        Some(c) if !c.healthy => anyhow::bail!("the stack is not healthy (see above)"),
        None if s.node.is_some() => {
            anyhow::bail!("the stack's health is unknown: the cluster was not asked (see above)")
        }
        _ => Ok(()),
    }
}

fn rollback_command(args: &RollbackArgs, quiet: bool) -> anyhow::Result<()> {
    let display = report::display(if quiet {
        report::Mode::None
    } else {
        args.progress
    });
    let opts = manage::RollbackOptions {
        target: args.at.target(args.deploy.timeout),
        to: args.to.clone(),
        force_conflicts: args.deploy.force_conflicts,
        prune_volumes: args.deploy.prune_volumes,
        keep: args.deploy.keep,
    };
    let rt = runtime()?;
    let (target, out) = manage::rollback(&opts, rt.handle(), &display).map_err(anyhow_of)?;
    println!(
        "rolled back to {} (the release of revision {})",
        target.version,
        target.revision()
    );
    print_rolled_out(&out);
    Ok(())
}

/// A verification failure keeps its own type in the chain (the renderer finds refusals by it).
/// The one async runtime of the process (the registry, the cluster).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

fn anyhow_of(e: InstallError) -> anyhow::Error {
    match e {
        InstallError::Verify(b) => b.into(),
        other => other.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Verify(a) => a.json,
        Command::Seed(a) => a.json,
        Command::Apply(a) => a.json,
        // status and doctor print their JSON result even when they fail (exit 1).
        _ => false,
    };
    let result = match &cli.command {
        Command::Verify(args) => rin_cli::verify_command(
            args,
            Some(Path::new(rin_installer::DEFAULT_TRUSTED_KEYS)),
            cli.quiet,
        ),
        Command::Seed(args) => seed_command(args, cli.quiet),
        Command::Apply(args) => apply_command(args, cli.quiet),
        Command::Status(args) => status_command(args, cli.quiet),
        Command::Rollback(args) => rollback_command(args, cli.quiet),
        Command::ExtractInstaller(args) => extract_command(args, cli.quiet),
        Command::Check(args) => check_command(args),
        Command::Inventory(args) => inventory_command(args, cli.quiet),
        Command::SupportBundle(args) => support_command(args, cli.quiet),
        Command::Doctor(args) => doctor_command(args, cli.quiet),
        Command::Completions(args) => {
            rin_cli::completions(<Cli as clap::CommandFactory>::command(), args);
            Ok(())
        }
        Command::Man(args) => rin_cli::man_pages(<Cli as clap::CommandFactory>::command(), args),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => ExitCode::from(rin_cli::render_as(
            &e,
            &|e| {
                e.downcast_ref::<InstallError>()
                    .and_then(|i| i.hint().map(str::to_string))
            },
            json,
        )),
    }
}
