//! Steps 1 (second half) and 3 of apply: which K3s host files change, then writing them (and
//! running K3s's `install.sh` when the service is new or a file changed).

use super::Run;
use crate::cluster::helmchart;
use crate::cluster::stack;
use crate::error::{InstallError, Result};
use crate::node::host::{self, Change, Content, HostFile, Role};
use crate::node::stage::Staged;
use rin_bundle::Progress;
use rin_bundle::index::Entry;
use std::collections::BTreeSet;
use std::path::Path;

/// The K3s files this node takes from the bundle, with what each would change, and the bundle
/// entries the first pass must stage for them.
pub(super) struct HostFiles {
    files: Vec<HostFile>,
    changes: Vec<Change>,
    pub(super) wanted: BTreeSet<String>,
    /// K3s files a delta leaves out: the node must hold them already.
    left_out: BTreeSet<String>,
}

impl Run<'_> {
    /// The K3s files already in place are not staged again.
    pub(super) fn host_files_needed(&self) -> Result<HostFiles> {
        let opts = &self.opts;
        let index = &self.index;
        let k3s = host::k3s_entries(index, &opts.arch);
        let staging_dir = self.state.as_ref().map(|s| s.staging(&self.index_sha256));
        let entry_file = |e: &Entry, dest: String| HostFile {
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
        let mut out = HostFiles {
            files: Vec::new(),
            changes: Vec::new(),
            wanted: BTreeSet::new(),
            left_out: index
                .base
                .iter()
                .flat_map(|b| &b.files)
                .map(|e| e.path.clone())
                .collect(),
        };
        let airgap_dest = |a: &Entry| {
            format!(
                "{}/{}",
                host::IMAGES_DIR,
                a.path
                    .trim_start_matches(&format!("{}/", rin_bundle::k3s::DIR))
            )
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
            out.add(&opts.root, f, Some(entry))?;
        }
        if let Some(i) = &k3s.install_sh {
            out.wanted.insert(i.path.clone());
        }
        // Charts too large to go inline are served by K3s from every server's static directory.
        if opts.role.exec() == "server" {
            for (entry, name) in stack::static_charts(index) {
                let f = HostFile {
                    mode: 0o644,
                    ..entry_file(entry, format!("{}/{name}", helmchart::STATIC_DIR))
                };
                out.add(&opts.root, f, Some(entry))?;
            }
        }
        Ok(out)
    }

    /// Step 3: the files, the site registry's image archive, K3s's import cache and, unless
    /// `--no-start`, K3s's own `install.sh`.
    pub(super) fn write_host_files(&mut self, mut files: HostFiles, staged: &Staged) -> Result<()> {
        let opts = &self.opts;
        let site = opts.site()?;
        let mut generated = vec![
            HostFile::bytes(
                host::REGISTRIES_YAML,
                0o600,
                host::registries_yaml(&self.index, &site)?,
            ),
            HostFile::bytes(
                host::CONFIG_YAML,
                0o600,
                host::config_yaml(&opts.role, self.index.k3s.as_ref(), &opts.tls_san),
            ),
        ];
        if let Some(pem) = &site.ca_pem {
            generated.push(HostFile::bytes(host::REGISTRY_CA, 0o644, pem.clone()));
        }
        for f in generated {
            files.add(&opts.root, f, None)?;
        }
        let done = &mut self.done;
        for (f, c) in files.files.iter().zip(&files.changes) {
            if *c == Change::Unchanged {
                done.unchanged.push(f.dest.clone());
                continue;
            }
            if !opts.dry_run {
                host::install(&opts.root, f)?;
            }
            done.written.push(f.dest.clone());
        }
        if self.in_cluster() {
            let archive = format!("{}/{}", host::IMAGES_DIR, host::REGISTRY_ARCHIVE);
            if self.registry_archive(staged, &archive)? {
                self.done.written.push(archive);
            } else {
                self.done.unchanged.push(archive);
            }
        }
        let opts = &self.opts;
        let import_cache = format!("{}/.cache.json", host::IMAGES_DIR);
        if opts.dry_run {
            if !opts.root.join(&import_cache).exists() {
                self.done.written.push(import_cache);
            }
        } else if host::ensure_import_cache(&opts.root)? {
            self.done.written.push(import_cache);
        }
        // Each file under this step, as it is done (the summary at the end only counts them).
        let verb = if opts.dry_run { "would write" } else { "wrote" };
        for (verb, list) in [
            (verb, &self.done.written),
            ("unchanged", &self.done.unchanged),
        ] {
            for f in list {
                self.report
                    .say(&format!("{verb} {}", opts.root.join(f).display()));
            }
        }
        if !opts.no_start {
            let unit = opts.root.join(format!(
                "etc/systemd/system/{}.service",
                opts.role.service()
            ));
            if !self.done.written.is_empty() || !unit.exists() {
                if !opts.dry_run {
                    if opts.check_config {
                        check_config(&opts.root.join(host::K3S_BIN), self.report)?;
                    }
                    let script = staged
                        .path(&rin_bundle::k3s::path(rin_bundle::k3s::INSTALL_SCRIPT))
                        .ok_or_else(|| InstallError::Bundle {
                            reason: "the bundle carries no k3s/install.sh".into(),
                        })?;
                    run_install_sh(&script, &opts.role, self.report)?;
                }
                self.done.installed_service = true;
            }
        }
        Ok(())
    }
}

impl HostFiles {
    /// `f` with what writing it would change; the bundle entry it comes from is staged unless
    /// the file is already in place.
    fn add(&mut self, root: &Path, f: HostFile, entry: Option<&Entry>) -> Result<()> {
        let c = host::change(root, &f)?;
        if let Some(e) = entry
            && c != Change::Unchanged
        {
            if self.left_out.contains(&e.path) {
                return Err(InstallError::Preflight {
                    failures: vec![format!(
                        "this delta leaves out {} (sha256 {}) because the release it applies onto has it, but {} on this node is not that file: bring the full bundle",
                        e.path,
                        e.sha256,
                        root.join(&f.dest).display()
                    )],
                });
            }
            self.wanted.insert(e.path.clone());
        }
        self.files.push(f);
        self.changes.push(c);
        Ok(())
    }
}

/// `k3s check-config` of the binary just put in place, before K3s is started: a failure stops
/// here, with K3s's files written and K3s not started.
fn check_config(bin: &Path, report: &dyn Progress) -> Result<()> {
    use crate::node::check_config;
    match check_config::run(bin, check_config::TIMEOUT) {
        Ok(r) if r.failures.is_empty() => {
            report.say(&format!("k3s check-config: {}", r.status));
            Ok(())
        }
        Ok(r) => Err(InstallError::Step {
            what: "k3s check-config".into(),
            reason: format!(
                "this node's kernel or system lacks what K3s needs, so K3s was not started (its files are in place): {}. Fix each (a kernel module, a sysctl, a firewall port), or run again with --no-check-config if you know K3s runs without it",
                r.failures.join("; ")
            ),
        }),
        Err(why) => {
            report.say(&format!("k3s check-config did not judge this node: {why}"));
            Ok(())
        }
    }
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
