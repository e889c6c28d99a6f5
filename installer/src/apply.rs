//! `rininstall apply`: the node's steps, in order, each idempotent.
//!
//! 1. **preflight**: every check, from the signed index alone (signatures checked first), before
//!    anything changes;
//! 2. **verify**: one streaming pass over the whole bundle, staging the K3s files that are not
//!    already in place and keeping the seeding plan;
//! 3. **K3s host files**: binary, image archives (the site registry's built here), `.cache.json`,
//!    `registries.yaml`, `config.yaml`, and K3s's own `install.sh` (unless `--no-start`);
//! 4. **site registry**: its manifests for the cluster step; with K3s started here, applied and
//!    waited for;
//! 5. **seed**: every image and chart into the site registry (the first server only);
//! 6. **record**: the release, in the state directory.
//!
//! A re-run compares before it writes: files by sha256, blobs by asking the registry. After a
//! crash or kill at any point the next run converges; the state directory's lock keeps two runs
//! apart.

use crate::cluster::connect::connect;
use crate::cluster::deploy::DeployOptions;
use crate::cluster::objects::{self, Origin};
use crate::cluster::rollout::{self, Desired, RolledOut, RolloutOptions};
use crate::cluster::stack;
use crate::error::{InstallError, Result};
use crate::node::host::{self, Change, Content, HostFile, Role, SiteRegistry};
use crate::node::preflight::{self, Facts};
use crate::node::seed::{self, SeedOptions, Seeded};
use crate::node::site_registry;
use crate::node::stage::{self, Stage, Staged};
use crate::node::state::{self, Release, State};
use rin_bundle::Arch;
use rin_bundle::Progress;
use rin_bundle::Trust;
use rin_bundle::digest::sha256_hex;
use rin_support::fs::AtomicFile;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the images go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryMode {
    /// The bundle's `registry:2` image run in the cluster, on this NodePort.
    InCluster {
        node_port: u16,
        image: Option<String>,
    },
    /// An existing registry (`SeedOptions::registry`).
    External,
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    /// The node's architecture (`amd64`, `arm64`).
    pub arch: Arch,
    pub role: Role,
    pub tls_san: Vec<String>,
    pub registry: RegistryMode,
    /// How to reach the registry to seed (for `InCluster`, its host is set from the NodePort).
    pub seed: SeedOptions,
    pub no_start: bool,
    pub dry_run: bool,
    pub allow_downgrade: bool,
    /// Bound of each wait (the K3s API, the registry, the stack's health).
    pub timeout: Duration,
    /// The cluster to deploy to [default: K3s's `ROOT/etc/rancher/k3s/k3s.yaml`]. Given with
    /// `--no-start`, the stack is deployed to that (running) cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Take over fields another field manager owns.
    pub force_conflicts: bool,
    /// Delete claims (and namespaces holding them) the new release no longer has.
    pub prune_volumes: bool,
    /// Releases kept for rollback.
    pub keep: usize,
}

/// What apply did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct Applied {
    /// Host files written (or to write), relative to the root.
    pub written: Vec<String>,
    pub unchanged: Vec<String>,
    pub seeded: Option<Seeded>,
    /// Blobs a dry run found missing in the registry, and their bytes (None: not asked).
    pub to_push: Option<(usize, u64)>,
    pub installed_service: bool,
    pub release: Option<Release>,
    /// A dry run's objects, in apply order (`Kind ns/name (from FILE)`).
    pub plan: Vec<String>,
    /// The cluster step's outcome, when it ran.
    pub rolled_out: Option<RolledOut>,
}

const STEPS: usize = 7;

impl ApplyOptions {
    fn site(&self) -> Result<SiteRegistry> {
        let ca_pem = if self.seed.ca_files.is_empty() {
            None
        } else {
            let mut pem = Vec::new();
            for f in &self.seed.ca_files {
                let mut b = std::fs::read(f).map_err(|source| InstallError::Io {
                    path: f.clone(),
                    source,
                })?;
                if !b.ends_with(b"\n") {
                    b.push(b'\n');
                }
                pem.extend(b);
            }
            Some(pem)
        };
        Ok(SiteRegistry {
            host: self.seed.registry.clone(),
            plain_http: self.seed.plain_http,
            auth: self.seed.auth.clone(),
            ca_pem,
        })
    }

    fn seeds_here(&self) -> Option<&'static str> {
        if !self.role.is_first() {
            return Some("only the first server seeds the site registry");
        }
        if matches!(self.registry, RegistryMode::InCluster { .. })
            && self.no_start
            && self.kubeconfig.is_none()
        {
            return Some(
                "the in-cluster registry runs once K3s starts: run apply again without --no-start",
            );
        }
        None
    }

    /// Why the stack is not deployed from this node, if it is not.
    fn deploys_here(&self) -> Option<&'static str> {
        if !self.role.is_first() {
            return Some("only the first server deploys the stack");
        }
        if self.no_start && self.kubeconfig.is_none() {
            return Some(
                "K3s is not started here (--no-start): give --kubeconfig to deploy to a running cluster",
            );
        }
        None
    }

    fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig
            .clone()
            .unwrap_or_else(|| crate::cluster::connect::k3s_kubeconfig(&self.root))
    }

    fn rollout(&self) -> RolloutOptions {
        RolloutOptions {
            deploy: DeployOptions {
                force_conflicts: self.force_conflicts,
                timeout: self.timeout,
                poll: Duration::from_secs(2),
            },
            prune_volumes: self.prune_volumes,
            keep: self.keep,
        }
    }
}

/// Run the node's steps for `bundle`.
pub fn apply(
    bundle: &Path,
    trust: &dyn Trust,
    opts: &ApplyOptions,
    report: &dyn Progress,
) -> Result<Applied> {
    let real_root = opts.root == Path::new("/");
    if !real_root && !opts.no_start {
        return Err(InstallError::Step {
            what: "--root".into(),
            reason: format!(
                "K3s can only be started on the real root, not under {}: add --no-start",
                opts.root.display()
            ),
        });
    }
    let mut opts = opts.clone();
    if let RegistryMode::InCluster { node_port, .. } = opts.registry {
        opts.seed.registry = format!("127.0.0.1:{node_port}");
        opts.seed.plain_http = true;
    }
    // A dry run takes no lock and creates nothing.
    let state = if opts.dry_run {
        None
    } else {
        Some(State::open(&opts.state_dir)?)
    };
    let installed = state::read_release(&opts.state_dir)?;
    let mut done = Applied::default();

    report.step(1, STEPS, "preflight");
    let opened = rin_bundle::open(bundle, trust)?;
    let index = opened.index.clone();
    let index_sha256 = sha256_hex(&opened.index_bytes);
    let bin = opts.root.join(host::K3S_BIN);
    let found_k3s =
        if real_root && installed.as_ref().is_none_or(|r| r.k3s.is_none()) && bin.exists() {
            preflight::k3s_version_of(&bin)
        } else {
            None
        };
    let in_cluster = matches!(opts.registry, RegistryMode::InCluster { .. });
    let registry_image = match &opts.registry {
        RegistryMode::InCluster { image, .. } => image.clone(),
        RegistryMode::External => None,
    };
    preflight::check(
        &index,
        &Facts {
            root: &opts.root,
            real_root,
            euid_is_root: rustix::process::geteuid().is_root(),
            arch: &opts.arch,
            state_dir: &opts.state_dir,
            installed: installed.as_ref(),
            found_k3s,
            in_cluster_registry: in_cluster,
            first_server: opts.role.is_first(),
            registry_image: registry_image.as_deref(),
            allow_downgrade: opts.allow_downgrade,
            index_sha256: &index_sha256,
            site_platforms: opts.seed.platforms.as_ref(),
        },
    )?;

    // The K3s files already in place are not staged again.
    let k3s = host::k3s_entries(&index, &opts.arch);
    let staging_dir = state.as_ref().map(|s| s.staging(&index_sha256));
    let entry_file = |e: &rin_bundle::index::Entry, dest: String| HostFile {
        dest,
        mode: e.mode,
        size: e.size,
        content: Content::Staged {
            path: staging_dir
                .as_ref()
                .map(|d| d.join(&e.path))
                .unwrap_or_default(),
            sha256: e.sha256.clone(),
        },
    };
    let mut files = Vec::new();
    let mut changes = Vec::new();
    let mut wanted = std::collections::BTreeSet::new();
    let airgap_dest = |a: &rin_bundle::index::Entry| {
        format!("{}/{}", host::IMAGES_DIR, a.path.trim_start_matches("k3s/"))
    };
    let from_bundle = [
        k3s.binary
            .as_ref()
            .map(|b| (b, host::K3S_BIN.to_string(), 0o755)),
        k3s.airgap.as_ref().map(|a| (a, airgap_dest(a), 0o644)),
    ];
    for (entry, dest, mode) in from_bundle.into_iter().flatten() {
        let f = HostFile {
            mode,
            ..entry_file(entry, dest)
        };
        let c = host::change(&opts.root, &f)?;
        if c != Change::Unchanged {
            wanted.insert(entry.path.clone());
        }
        files.push(f);
        changes.push(c);
    }
    if let Some(i) = &k3s.install_sh {
        wanted.insert(i.path.clone());
    }
    // Charts too large to go inline are served by K3s from every server's static directory.
    if opts.role.exec() == "server" {
        for (entry, name) in stack::static_charts(&index) {
            let f = HostFile {
                mode: 0o644,
                ..entry_file(
                    entry,
                    format!("{}/{name}", crate::cluster::helmchart::STATIC_DIR),
                )
            };
            let c = host::change(&opts.root, &f)?;
            if c != Change::Unchanged {
                wanted.insert(entry.path.clone());
            }
            files.push(f);
            changes.push(c);
        }
    }
    // The first server deploys (or, in a dry run, shows what it would deploy).
    let plans = opts.role.is_first() && (opts.dry_run || opts.deploys_here().is_none());
    let keep = if plans {
        stack::kept_entries(&index)
    } else {
        Default::default()
    };

    report.step(2, STEPS, "verify");
    let staged = stage::first_pass(opened, wanted, keep, staging_dir.as_deref(), report)?;
    // The stack's objects are read (and refused when malformed) before anything is touched.
    if plans {
        rollout::plan(stack::objects(
            &index,
            &staged.kept,
            None,
            opts.seed.platforms.as_ref(),
            true,
        )?)?;
    }

    report.step(3, STEPS, "K3s host files");
    let site = opts.site()?;
    let mut generated = vec![
        HostFile::bytes(
            host::REGISTRIES_YAML,
            0o600,
            host::registries_yaml(&index, &site)?,
        ),
        HostFile::bytes(
            host::CONFIG_YAML,
            0o600,
            host::config_yaml(&opts.role, index.k3s.as_ref(), &opts.tls_san),
        ),
    ];
    if let Some(pem) = &site.ca_pem {
        generated.push(HostFile::bytes(host::REGISTRY_CA, 0o644, pem.clone()));
    }
    for f in &generated {
        changes.push(host::change(&opts.root, f)?);
    }
    files.extend(generated);
    for (f, c) in files.iter().zip(&changes) {
        if *c == Change::Unchanged {
            done.unchanged.push(f.dest.clone());
            continue;
        }
        if !opts.dry_run {
            host::install(&opts.root, f)?;
        }
        done.written.push(f.dest.clone());
    }
    if in_cluster {
        let archive = format!("{}/{}", host::IMAGES_DIR, host::REGISTRY_ARCHIVE);
        if registry_archive(bundle, trust, &opts, &index, &staged, &archive)? {
            done.written.push(archive);
        } else {
            done.unchanged.push(archive);
        }
    }
    if !opts.dry_run && host::ensure_import_cache(&opts.root)? {
        done.written
            .push(format!("{}/.cache.json", host::IMAGES_DIR));
    }
    if !opts.no_start {
        let unit = opts.root.join(format!(
            "etc/systemd/system/{}.service",
            opts.role.service()
        ));
        if !done.written.is_empty() || !unit.exists() {
            if !opts.dry_run {
                let script = staged
                    .path("k3s/install.sh")
                    .ok_or_else(|| InstallError::Bundle {
                        reason: "the bundle carries no k3s/install.sh".into(),
                    })?;
                run_install_sh(&script, &opts.role, report)?;
            }
            done.installed_service = true;
        }
    }

    report.step(4, STEPS, "site registry");
    let rt = tokio::runtime::Runtime::new().map_err(|e| InstallError::Step {
        what: "starting the async runtime".into(),
        reason: e.to_string(),
    })?;
    let live = opts.deploys_here().is_none() && !opts.dry_run;
    let mut cluster = None;
    let mut registry_yaml = None;
    if in_cluster {
        let image = site_registry::pick_image(&index, registry_image.as_deref())?;
        let RegistryMode::InCluster { node_port, .. } = opts.registry else {
            unreachable!("in_cluster")
        };
        let yaml = site_registry::manifests_yaml(
            &image.reference,
            node_port,
            site_registry::storage_gib(staged.plan.blob_bytes()),
        );
        let path = opts.state_dir.join("registry/site-registry.yaml");
        if !opts.dry_run {
            state::write_atomic(&path, yaml.as_bytes(), 0o644)?;
        }
        if live {
            let (c, _) = connect(&opts.kubeconfig_path(), opts.timeout, &rt, report)?;
            let mut objs = objects::parse(&yaml, "the site registry", Origin::SiteRegistry)?;
            objects::order(&mut objs);
            let ro = opts.rollout();
            rt.block_on(async {
                let inventory = c.apply(&objs, &ro.deploy, report).await?;
                rollout::wait_healthy(&c, &inventory, &Default::default(), &ro.deploy, report).await
            })?;
            run_until(opts.timeout, report, "the site registry to answer", || {
                registry_answers(node_port)
            })?;
            cluster = Some(c);
        }
        registry_yaml = Some(yaml);
    }

    report.step(5, STEPS, "seed");
    match opts.seeds_here() {
        Some(why) => report.say(&format!("seeding skipped: {why}")),
        None if opts.dry_run => {
            done.to_push = seed::missing_blobs(&staged.plan, &opts.seed, rt.handle()).ok();
        }
        None => {
            done.seeded = Some(seed::seed(
                bundle,
                trust,
                &staged.plan,
                &opts.seed,
                rt.handle(),
                report,
            )?);
        }
    }

    report.step(6, STEPS, "deploy");
    match opts.deploys_here() {
        _ if opts.dry_run && plans => {
            let objs = rollout::plan(stack::objects(
                &index,
                &staged.kept,
                registry_yaml.as_deref(),
                opts.seed.platforms.as_ref(),
                true,
            )?)?;
            done.plan = objs
                .iter()
                .map(|o| match o.generated() {
                    Some(how) => format!(
                        "{} (from {}; created when missing, {how})",
                        o.reference, o.source
                    ),
                    None => format!("{} (from {})", o.reference, o.source),
                })
                .collect();
        }
        Some(why) => report.say(&format!("deploy skipped: {why}")),
        // A dry run stops above: the first server plans, any other node deploys nothing.
        None => {
            let c = match cluster.take() {
                Some(c) => c,
                None => connect(&opts.kubeconfig_path(), opts.timeout, &rt, report)?.0,
            };
            let objs = stack::objects(
                &index,
                &staged.kept,
                registry_yaml.as_deref(),
                opts.seed.platforms.as_ref(),
                false,
            )?;
            let desired = Desired {
                stack: index.stack.name.clone(),
                version: index.stack.version.clone(),
                k3s: index.k3s.as_ref().map(|k| k.version.clone()),
                bundle: index_sha256.clone(),
                images: stack::images(&index),
                objects: objs,
                installed: rin_bundle::index::format_created(rin_bundle::index::now_epoch()),
            };
            let out = rt.block_on(rollout::roll_out(&c, desired, &opts.rollout(), report))?;
            if let Some(state) = &state {
                state.keep_objects(&out.record, &out.objects)?;
                state.forget_objects_except(&out.kept_revisions)?;
            }
            done.rolled_out = Some(out);
        }
    }

    report.step(7, STEPS, "record");
    if let Some(state) = &state {
        let release = Release {
            stack: index.stack.name.clone(),
            version: index.stack.version.clone(),
            k3s: index
                .k3s
                .as_ref()
                .map(|k| k.version.clone())
                .or_else(|| installed.as_ref().and_then(|r| r.k3s.clone())),
            index_sha256,
            installed: rin_bundle::index::format_created(rin_bundle::index::now_epoch()),
            revision: done.rolled_out.as_ref().map(|r| r.record.revision),
        };
        state.record(&release)?;
        state.clear_staging(None)?;
        done.release = Some(release);
    }
    Ok(done)
}

/// Write the site registry's image archive into K3s's images directory unless it already holds
/// the right manifest. Its blobs come from a second verified pass over the bundle. True when it
/// was (or, in a dry run, would be) written.
fn registry_archive(
    bundle: &Path,
    trust: &dyn Trust,
    opts: &ApplyOptions,
    index: &rin_bundle::Index,
    staged: &Staged,
    dest: &str,
) -> Result<bool> {
    let wanted_image = match &opts.registry {
        RegistryMode::InCluster { image, .. } => image.as_deref(),
        RegistryMode::External => None,
    };
    let image = site_registry::pick_image(index, wanted_image)?;
    let digest = site_registry::platform_manifest(image, &opts.arch)
        .map(|p| p.digest.as_str())
        .ok_or_else(|| InstallError::Bundle {
            reason: format!("{} has no {}", image.reference, opts.arch.linux()),
        })?;
    let path = opts.root.join(dest);
    if site_registry::archive_holds(&path).as_deref() == Some(digest) {
        return Ok(false);
    }
    let Some(dir) = &staged.dir else {
        return Ok(true);
    };
    let opened = rin_bundle::open(bundle, trust)?;
    if sha256_hex(&opened.index_bytes) != staged.plan.index_sha256() {
        return Err(InstallError::Bundle {
            reason: format!(
                "{} is not the bundle that was verified: it changed while being installed",
                bundle.display()
            ),
        });
    }
    let paths = site_registry::archive_paths(&staged.plan, digest)?;
    let mut sink = Stage::new(dir, paths.into_iter().collect());
    opened.verify_into(&mut sink, &rin_bundle::Silent)?;
    // Removed as it is dropped if writing fails.
    let mut f = AtomicFile::create(&path, 0o644).map_err(state::file_error)?;
    site_registry::write_archive(
        &staged.plan,
        digest,
        &image.reference,
        &opts.arch,
        dir,
        &mut f,
    )?;
    f.commit().map_err(state::file_error)?;
    Ok(true)
}

/// K3s's own installer, told not to download: it installs the service for the role and starts
/// it (restarting K3s when it runs, so a changed registries.yaml takes effect).
fn run_install_sh(script: &Path, role: &Role, report: &dyn Progress) -> Result<()> {
    report.say(&format!("running K3s's install.sh ({})", role.exec()));
    let out = std::process::Command::new("sh")
        .arg(script)
        .env("INSTALL_K3S_SKIP_DOWNLOAD", "true")
        .env("INSTALL_K3S_EXEC", role.exec())
        .output()
        .map_err(|e| InstallError::Step {
            what: "running K3s's install.sh".into(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(InstallError::Step {
            what: "K3s's install.sh".into(),
            reason: format!(
                "{}; its output ends: {}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr))
            ),
        });
    }
    Ok(())
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Retry `f` every two seconds until it succeeds or `timeout` passes.
fn run_until(
    timeout: Duration,
    report: &dyn Progress,
    what: &str,
    mut f: impl FnMut() -> std::result::Result<(), String>,
) -> Result<()> {
    let start = Instant::now();
    report.say(&format!(
        "waiting for {what} (up to {}s)",
        timeout.as_secs()
    ));
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() >= timeout => {
                return Err(InstallError::Step {
                    what: format!("waiting for {what}"),
                    reason: format!("not ready after {}s: {e}", timeout.as_secs()),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// `GET /v2/` on the node's loopback NodePort answers (200 or 401).
fn registry_answers(port: u16) -> std::result::Result<(), String> {
    use std::io::{Read as _, Write as _};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&head[9..12]).to_string();
    if status == "200" || status == "401" {
        Ok(())
    } else {
        Err(format!("GET /v2/ answered {status}"))
    }
}
