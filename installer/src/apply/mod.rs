//! `rininstall apply`: the node's steps, in order, each idempotent.
//!
//! 1. **preflight**: every check, from the signed index alone (signatures checked first), before
//!    anything changes;
//! 2. **verify**: one streaming pass over the whole bundle, staging the K3s files that are not
//!    already in place and the node's host packages, and keeping the seeding plan; then, still
//!    before any change, a delta's left-out blobs and the host packages' dependencies checked;
//! 3. **host packages and K3s host files**: the operating system packages the node lacks (dpkg)
//!    and their services; K3s's binary, image archives (the site registry's built here),
//!    `.cache.json`, `registries.yaml`, `config.yaml`, and its own `install.sh` (unless
//!    `--no-start`);
//! 4. **site registry**: its manifests for the cluster step; with K3s started here, applied and
//!    waited for;
//! 5. **seed**: every image and chart into the site registry (the first server only);
//! 6. **record**: the release, in the state directory.
//!
//! A re-run compares before it writes: files by sha256, blobs by asking the registry. After a
//! crash or kill at any point the next run converges; the state directory's lock keeps two runs
//! apart.

mod deploy;
mod files;
mod registry;

use crate::cluster::deploy::DeployOptions;
use crate::cluster::rollout::RolledOut;
use crate::cluster::rollout::RolloutOptions;
use crate::cluster::{rollout, stack};
use crate::error::{InstallError, Result};
use crate::node::host;
use crate::node::host::{Role, SiteRegistry};
use crate::node::packages;
use crate::node::preflight::{self, Node};
use crate::node::seed::{self, SeedOptions, Seeded};
use crate::node::site_registry;
use crate::node::stage::{self, Staged};
use crate::node::state::{self, Release, State};
use rin_bundle::digest::sha256_hex;
use rin_bundle::index::Index;
use rin_bundle::{Arch, Opened, Progress, Trust};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::runtime::Handle;

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
    /// What to do with the bundle's host packages.
    pub host_packages: packages::Mode,
    /// Run `k3s check-config` before K3s is first started here (and stop on its failures).
    pub check_config: bool,
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
    /// Why this node would not deploy them now (`--no-start` without `--kubeconfig`): the plan
    /// is what a deploying run applies.
    pub plan_deferred: Option<&'static str>,
    /// The cluster step's outcome, when it ran.
    pub rolled_out: Option<RolledOut>,
    /// The host packages step, when the bundle carries a set for this node.
    pub host: Option<HostDone>,
}

/// What the host packages step did (or would do).
#[derive(Debug, Default, Clone)]
pub struct HostDone {
    pub target: String,
    /// `name version` of each package installed (or to install).
    pub installed: Vec<String>,
    /// Packages the node had already.
    pub present: usize,
    /// The commands, as run or as they would run.
    pub commands: Vec<String>,
    /// The commands ran (false: shown only).
    pub ran: bool,
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

    /// The first server reads the stack's objects: to deploy them, or, in a dry run, to show what
    /// it would deploy.
    fn plans(&self) -> bool {
        self.role.is_first() && (self.dry_run || self.deploys_here().is_none())
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

/// What every step of one run shares.
struct Run<'a> {
    bundle: &'a Path,
    trust: &'a dyn Trust,
    /// The options, with the in-cluster registry's address filled in.
    opts: ApplyOptions,
    rt: &'a Handle,
    report: &'a dyn Progress,
    /// The state directory, locked for the run; None in a dry run.
    state: Option<State>,
    /// What this node recorded last.
    installed: Option<Release>,
    /// `--root` is `/`.
    real_root: bool,
    index: Index,
    index_sha256: String,
    /// What the first pass sent to the registry while it verified (apply's one read).
    early: Option<seed::EarlySent>,
    /// The bundle's host package set for this node, when it takes one.
    host_target: Option<String>,
    /// That set planned against the node, after the first pass.
    host_plan: Option<packages::Plan>,
    done: Applied,
}

/// Run the node's steps for `bundle`, then the cluster step. Call from a thread outside the
/// runtime `rt` (it blocks on it).
pub fn apply(
    bundle: &Path,
    trust: &dyn Trust,
    opts: &ApplyOptions,
    rt: &Handle,
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
    if state.is_some() {
        host::sweep_stale(&opts.root);
    }
    let installed = state::read_release(&opts.state_dir)?;

    report.step(1, STEPS, "preflight");
    let opened = rin_bundle::open(bundle, trust)?;
    let mut run = Run {
        bundle,
        trust,
        index: opened.index.clone(),
        index_sha256: sha256_hex(&opened.index_bytes),
        opts,
        rt,
        report,
        state,
        installed,
        real_root,
        early: None,
        host_target: None,
        host_plan: None,
        done: Applied::default(),
    };
    run.preflight()?;
    let mut files = run.host_files_needed()?;
    if let Some(t) = &run.host_target {
        files
            .wanted
            .extend(packages::staged_entries(&run.index, t, &run.opts.arch));
    }

    report.step(2, STEPS, "verify");
    let staged = run.verify(opened, &files)?;
    run.check_delta(&staged)?;
    run.check_host_packages(&staged)?;

    report.step(3, STEPS, "host packages and K3s files");
    run.install_host_packages(&staged)?;
    run.write_host_files(files, &staged)?;

    report.step(4, STEPS, "site registry");
    let site = run.site_registry(&staged)?;

    report.step(5, STEPS, "seed");
    run.seed(&staged)?;

    report.step(6, STEPS, "deploy");
    run.deploy(&staged, site)?;

    report.step(7, STEPS, "record");
    run.record()?;
    Ok(run.done)
}

impl Run<'_> {
    fn in_cluster(&self) -> bool {
        matches!(self.opts.registry, RegistryMode::InCluster { .. })
    }

    /// The image `--registry-image` names for the in-cluster registry, if it names one.
    fn registry_image(&self) -> Option<&str> {
        match &self.opts.registry {
            RegistryMode::InCluster { image, .. } => image.as_deref(),
            RegistryMode::External => None,
        }
    }

    /// Step 1: every check from the signed index alone.
    fn preflight(&mut self) -> Result<()> {
        let opts = &self.opts;
        let bin = opts.root.join(host::K3S_BIN);
        let found_k3s = if self.real_root
            && self.installed.as_ref().is_none_or(|r| r.k3s.is_none())
            && bin.exists()
        {
            preflight::k3s_version_of(&bin)
        } else {
            None
        };
        // Read once: which of the bundle's package sets this node takes (os-release).
        let host_target = (opts.host_packages != packages::Mode::Skip)
            .then(|| packages::target_for(&self.index, &opts.root, &opts.arch));
        preflight::check(
            &self.index,
            &Node {
                root: &opts.root,
                real_root: self.real_root,
                euid_is_root: rustix::process::geteuid().is_root(),
                arch: &opts.arch,
                state_dir: &opts.state_dir,
                installed: self.installed.as_ref(),
                found_k3s,
                in_cluster_registry: self.in_cluster(),
                first_server: opts.role.is_first(),
                registry_image: self.registry_image(),
                allow_downgrade: opts.allow_downgrade,
                index_sha256: &self.index_sha256,
                site_platforms: opts.seed.platforms.as_ref(),
                role: &opts.role,
                registry_node_port: match opts.registry {
                    RegistryMode::InCluster { node_port, .. } => Some(node_port),
                    RegistryMode::External => None,
                },
                host_target: host_target.as_ref(),
            },
        )?;
        self.hostname_unique()?;
        // Preflight refused a node whose release the bundle carries no set for.
        self.host_target = host_target.and_then(Result::ok).flatten();
        Ok(())
    }

    /// A machine joining a cluster must not take the name of a node the cluster has: K3s
    /// refuses it ("Node password rejected, duplicate hostname"). Asked of the cluster when
    /// `--kubeconfig` reaches it (a joining node has no credentials of its own), and only before
    /// K3s is installed here (after that the node of this name is this machine).
    fn hostname_unique(&self) -> Result<()> {
        let opts = &self.opts;
        let k3s_here = self.installed.is_some() || opts.root.join(host::K3S_BIN).exists();
        let (Some(kc), false, false) = (&opts.kubeconfig, opts.role.is_first(), k3s_here) else {
            return Ok(());
        };
        let Some(name) = crate::node::readiness::node_name(&opts.root) else {
            return Ok(());
        };
        let node = crate::cluster::objects::ObjectRef {
            api_version: "v1".into(),
            kind: "Node".into(),
            namespace: String::new(),
            name: name.clone(),
        };
        let asked = self.rt.block_on(async {
            let ask = async {
                let c = crate::cluster::deploy::Cluster::connect(kc).await?;
                c.get(&node).await
            };
            tokio::time::timeout(opts.timeout, ask).await
        });
        match asked {
            Ok(Ok(Some(_))) => Err(InstallError::Preflight {
                failures: vec![format!(
                    "the cluster has a node named {name} already, and this machine would join under that name, which K3s refuses: give this machine another name (`hostnamectl set-hostname NAME`), or, if that node is this machine installed afresh, remove the old one first (`kubectl delete node {name}`), then run again"
                )],
            }),
            Ok(Ok(None)) => Ok(()),
            Ok(Err(e)) => {
                self.report.say(&format!(
                    "the node names in the cluster could not be read ({e}); K3s will refuse a duplicate name when it joins"
                ));
                Ok(())
            }
            Err(_) => {
                self.report.say(&format!(
                    "the cluster did not answer within {} s for its node names; K3s will refuse a duplicate name when it joins",
                    opts.timeout.as_secs()
                ));
                Ok(())
            }
        }
    }

    /// Step 2: the first verified pass, staging the K3s files `files` needs and keeping what
    /// the cluster step reads; the stack's objects are read (and refused when malformed) before
    /// anything is touched.
    fn verify(&mut self, opened: Opened, files: &files::HostFiles) -> Result<Staged> {
        let mut keep = if self.opts.plans() {
            stack::kept_entries(&self.index)
        } else {
            Default::default()
        };
        if let Some(t) = &self.host_target {
            keep.insert(rin_bundle::host::list_path(t, &self.opts.arch));
        }
        let staging_dir = self.state.as_ref().map(|s| s.staging(&self.index_sha256));
        let pass = |also: &mut dyn rin_bundle::Sink| {
            stage::first_pass(
                opened,
                files.wanted.clone(),
                keep,
                staging_dir.as_deref(),
                also,
                self.report,
            )
        };
        // One read: when the site registry answers already (an existing registry, or the
        // in-cluster one of an installed release), blobs go to it while the bundle verifies.
        let opts = &self.opts;
        let early_here = !opts.dry_run
            && opts.seeds_here().is_none()
            && (!self.in_cluster() || self.installed.is_some());
        let reg = if early_here {
            seed::connect(&opts.seed, self.rt, self.report).ok()
        } else {
            None
        };
        let staged = match &reg {
            Some(reg) => {
                let mut early =
                    seed::Early::new(&self.index, &opts.seed, reg, self.rt, self.report);
                let staged = pass(&mut early);
                let sent = early.finish();
                self.early = Some(sent);
                staged?
            }
            None => pass(&mut rin_bundle::Discard)?,
        };
        if self.opts.plans() {
            rollout::plan(stack::objects(
                &self.index,
                &staged.kept,
                None,
                self.opts.seed.platforms.as_ref(),
                true,
            )?)?;
        }
        Ok(staged)
    }

    /// The rest of a delta's preflight, once the verifying pass has named the blobs this site
    /// needs, and before anything changes: the site registry must hold every blob the delta
    /// leaves out, and the in-cluster registry's image archive, when it must be written anew,
    /// must not need any of them.
    fn check_delta(&self, staged: &Staged) -> Result<()> {
        let Some(base) = &self.index.base else {
            return Ok(());
        };
        let opts = &self.opts;
        let mut failures = Vec::new();
        if self.in_cluster() {
            let image = site_registry::pick_image(&self.index, self.registry_image())?;
            let archive =
                opts.root
                    .join(format!("{}/{}", host::IMAGES_DIR, host::REGISTRY_ARCHIVE));
            if let Some(p) = site_registry::platform_manifest(image, &opts.arch)
                && site_registry::archive_holds(&archive).as_deref() != Some(p.digest.as_str())
                && staged
                    .plan
                    .manifest_blobs(&p.digest)
                    .unwrap_or_default()
                    .iter()
                    .any(|d| base.holds_blob(&d.digest))
            {
                failures.push(format!(
                    "this node has no archive of the site registry's image {} as this bundle has it, and the delta leaves out layers of it: bring the full bundle",
                    image.reference
                ));
            }
        }
        if opts.seeds_here().is_none() {
            let absent = seed::left_out_missing(&staged.plan, &opts.seed, self.rt, self.report)?;
            if !absent.is_empty() {
                failures.push(seed::left_out_absent(&opts.seed, &absent).to_string());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(InstallError::Preflight { failures })
        }
    }

    /// The rest of preflight for host packages, once the first pass has read the set's list:
    /// what the node lacks, and a refusal when a dependency is met neither by the node nor by
    /// the set (before anything changes).
    fn check_host_packages(&mut self, staged: &Staged) -> Result<()> {
        let Some(target) = &self.host_target else {
            return Ok(());
        };
        let path = rin_bundle::host::list_path(target, &self.opts.arch);
        let bad = |reason: String| InstallError::Step {
            what: format!("host packages ({path})"),
            reason,
        };
        let bytes = staged
            .kept
            .get(&path)
            .ok_or_else(|| bad("the list was not read".into()))?;
        let list = rin_bundle::host::read(bytes).map_err(bad)?;
        if list.target != *target || list.arch != self.opts.arch {
            return Err(bad(format!(
                "the list names {}/{}, not {target}/{}",
                list.target, list.arch, self.opts.arch
            )));
        }
        // Staged files are there to check only after a real first pass (not in a dry run).
        let staged_path = |p: &str| staged.path(p).unwrap_or_default();
        let check = staged
            .dir
            .is_some()
            .then_some(&staged_path as packages::StagedPath<'_>);
        let plan = packages::plan(list, &self.opts.root, check)?;
        if let Some(why) = plan.refusal() {
            return Err(InstallError::Preflight {
                failures: vec![why],
            });
        }
        self.host_plan = Some(plan);
        Ok(())
    }

    /// Step 3, first half: the host packages this node lacks, installed with dpkg, and their
    /// services enabled (or the commands shown, with `--host-packages show` and in a dry run).
    fn install_host_packages(&mut self, staged: &Staged) -> Result<()> {
        let Some(plan) = &self.host_plan else {
            return Ok(());
        };
        let opts = &self.opts;
        let staged_path = |p: &str| {
            staged
                .path(p)
                .unwrap_or_else(|| PathBuf::from(p.rsplit('/').next().unwrap_or(p)))
        };
        let commands = plan.commands(&opts.root, &staged_path);
        let run_them = opts.host_packages == packages::Mode::Install && !opts.dry_run;
        let mut done = HostDone {
            target: plan.list.target.clone(),
            installed: plan
                .install
                .iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .collect(),
            present: plan.present.len(),
            commands: commands.iter().map(|c| c.join(" ")).collect(),
            ran: false,
        };
        self.report.say(&format!(
            "host packages for {}: {} to install, {} present",
            done.target,
            done.installed.len(),
            done.present
        ));
        if run_them {
            for c in &commands {
                self.report.say(&format!("running: {}", c.join(" ")));
                packages::run(c)?;
            }
            packages::check_installed(plan, &opts.root)?;
            done.ran = true;
            state::write_atomic(
                &state::host_list_path(&opts.state_dir),
                &rin_bundle::json::canonical_json(&plan.list),
                0o644,
            )?;
        }
        self.done.host = Some(done);
        Ok(())
    }

    /// Step 5: every image and chart into the site registry (the first server only).
    fn seed(&mut self, staged: &Staged) -> Result<()> {
        let opts = &self.opts;
        match opts.seeds_here() {
            Some(why) => self.report.say(&format!("seeding skipped: {why}")),
            None if opts.dry_run => {
                self.done.to_push =
                    seed::missing_blobs(&staged.plan, &opts.seed, self.rt, self.report).ok();
            }
            None => {
                let mut seeded = seed::seed(
                    self.bundle,
                    self.trust,
                    &staged.plan,
                    &opts.seed,
                    self.rt,
                    self.report,
                )?;
                if let Some(early) = self.early.as_ref().filter(|e| e.off.is_none()) {
                    // What the first pass found and sent; `seed` found it present since.
                    seeded.present = early.present;
                    seeded.uploaded += early.uploaded;
                    seeded.uploaded_bytes += early.uploaded_bytes;
                    seeded.mounted += early.mounted;
                    seeded.during_verify = true;
                }
                self.done.seeded = Some(seeded);
            }
        }
        Ok(())
    }

    /// Step 7: the release, in the state directory.
    fn record(&mut self) -> Result<()> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let index = &self.index;
        let release = Release {
            stack: index.stack.name.clone(),
            version: index.stack.version.clone(),
            k3s: index
                .k3s
                .as_ref()
                .map(|k| k.version.clone())
                .or_else(|| self.installed.as_ref().and_then(|r| r.k3s.clone())),
            index_sha256: self.index_sha256.clone(),
            installed: rin_bundle::index::format_created(rin_bundle::index::now_epoch()),
            revision: self
                .done
                .rolled_out
                .as_ref()
                .and_then(|r| r.record.revision),
            ..Default::default()
        };
        state.keep_index(&self.index_sha256, &self.index.to_canonical_json())?;
        state.record(&release)?;
        state.clear_staging(None)?;
        self.done.release = Some(release);
        Ok(())
    }
}
