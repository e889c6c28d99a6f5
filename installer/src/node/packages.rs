//! Host packages (FORMAT.md section 6, `host/`): which of the bundle's package sets this node
//! takes (its `/etc/os-release` against each set's target, and its architecture), what of the
//! set it lacks (dpkg's database), whether those can be installed with no network (every
//! dependency met by the node or the set), and the commands that install them and enable the
//! services they bring.

use crate::error::{InstallError, Result};
use rin_bundle::host::{self, HostList, HostPackage};
use rin_bundle::{Arch, Index};
use std::path::{Path, PathBuf};

/// What apply does with the bundle's host packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Install what the node lacks (`dpkg -i`), then enable the services.
    Install,
    /// Plan and show the commands, run nothing (the default under `--root`).
    Show,
    /// Leave them: the node's packages are managed by other means.
    Skip,
}

/// The node's `/etc/os-release` (or `/usr/lib/os-release`): `ID` and `VERSION_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub version_id: String,
}

impl OsRelease {
    pub fn read(root: &Path) -> Option<OsRelease> {
        let text = ["etc/os-release", "usr/lib/os-release"]
            .iter()
            .find_map(|p| std::fs::read_to_string(root.join(p)).ok())?;
        let field = |name: &str| {
            text.lines().find_map(|l| {
                let v = l.strip_prefix(name)?.strip_prefix('=')?;
                Some(v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            })
        };
        Some(OsRelease {
            id: field("ID")?,
            version_id: field("VERSION_ID").unwrap_or_default(),
        })
    }
}

impl std::fmt::Display for OsRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.id, self.version_id)
    }
}

/// The targets the bundle carries packages for on `arch`.
fn targets_for<'a>(index: &'a Index, arch: &Arch) -> Vec<&'a str> {
    index
        .entries
        .iter()
        .filter_map(|e| host::parse_list_path(&e.path))
        .filter(|(_, a)| *a == arch.as_str())
        .map(|(t, _)| t)
        .collect()
}

/// The bundle's package set this node takes: None when the bundle carries none for its
/// architecture, or the node's operating system is not known (no os-release under the root:
/// not judged). A node whose release the bundle carries no set for is a preflight failure.
pub fn target_for(
    index: &Index,
    root: &Path,
    arch: &Arch,
) -> std::result::Result<Option<String>, String> {
    let targets = targets_for(index, arch);
    if targets.is_empty() {
        return Ok(None);
    }
    let Some(os) = OsRelease::read(root) else {
        return Ok(None);
    };
    match targets
        .iter()
        .find(|t| host::target_matches(t, &os.id, &os.version_id))
    {
        Some(t) => Ok(Some(t.to_string())),
        None => Err(format!(
            "this node runs {os} (/etc/os-release) and the bundle carries host packages for {} on {arch} only: build the bundle with a `host_packages` target for {os}, or install the stack's host packages by other means and run again with --host-packages skip",
            targets.join(", ")
        )),
    }
}

/// The entries the first pass stages for a target: its package files.
pub fn staged_entries(index: &Index, target: &str, arch: &Arch) -> Vec<String> {
    let dir = format!("{}/", host::dir(target, arch));
    index
        .entries
        .iter()
        .filter(|e| e.path.starts_with(&dir) && !e.path.ends_with(host::LIST))
        .map(|e| e.path.clone())
        .collect()
}

/// What the node lacks of a set, and whether it can be installed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub list: HostList,
    /// Packages to install: requested ones the node lacks, and what they need that the node
    /// does not meet.
    pub install: Vec<HostPackage>,
    /// Packages of the set the node has (at any version).
    pub present: Vec<String>,
    /// Dependencies neither the node nor the set meets (`A needs B (>= 2)`).
    pub unmet: Vec<String>,
}

/// dpkg's database under `root`.
fn dpkg_status(root: &Path) -> PathBuf {
    root.join("var/lib/dpkg/status")
}

/// Where a staged package file is (after the first pass), to check it with the package tool.
pub type StagedPath<'a> = &'a dyn Fn(&str) -> PathBuf;

/// Plan a set against the node's package database: dpkg's (none: nothing is installed) or
/// rpm's. An rpm set's dependencies are checked with `rpm -U --test` of its staged files when
/// `staged` is given.
pub fn plan(list: HostList, root: &Path, staged: Option<StagedPath<'_>>) -> Result<Plan> {
    if list.format == host::FORMAT_RPM {
        return rpm_plan(list, root, staged);
    }
    let status = dpkg_status(root);
    let have = match std::fs::File::open(&status) {
        Ok(f) => rin_hostpkg::Have::from_status(std::io::BufReader::new(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(rin_hostpkg::Have::default()),
        Err(source) => {
            return Err(InstallError::Io {
                path: status,
                source,
            });
        }
    }
    .map_err(|e| InstallError::Step {
        what: "host packages".into(),
        reason: format!("{}: {e}", status.display()),
    })?;
    let set: Vec<rin_hostpkg::Package<'_>> = list
        .packages
        .iter()
        .map(|p| rin_hostpkg::Package {
            name: &p.name,
            version: &p.version,
            depends: &p.depends,
            pre_depends: &p.pre_depends,
            provides: &p.provides,
            requested: p.requested,
        })
        .collect();
    let planned = rin_hostpkg::plan(&set, &have).map_err(|e| InstallError::Step {
        what: "host packages".into(),
        reason: e.to_string(),
    })?;
    let install: Vec<HostPackage> = planned
        .install
        .iter()
        .map(|&i| list.packages[i].clone())
        .collect();
    Ok(Plan {
        present: list
            .packages
            .iter()
            .filter(|p| have.version(&p.name).is_some())
            .map(|p| p.name.clone())
            .collect(),
        install,
        unmet: planned.unmet,
        list,
    })
}

/// `--root=DIR` for the package tools when the root is not `/`.
fn root_arg(root: &Path) -> Option<String> {
    (root != Path::new("/")).then(|| format!("--root={}", root.display()))
}

fn step(reason: String) -> InstallError {
    InstallError::Step {
        what: "host packages".into(),
        reason,
    }
}

/// An rpm set: each package the node's rpm database lacks (by name), checked with `rpm -U
/// --test`, which changes nothing.
fn rpm_plan(list: HostList, root: &Path, staged: Option<StagedPath<'_>>) -> Result<Plan> {
    let out = std::process::Command::new("rpm")
        .args(root_arg(root))
        .args(["-qa", "--qf", "%{NAME}\\n"])
        .output()
        .map_err(|e| {
            step(format!(
                "this node has no usable rpm tool to install the bundle's RPM packages: {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(step(format!(
            "rpm -qa failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let installed: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let (present, install): (Vec<&HostPackage>, Vec<&HostPackage>) = list
        .packages
        .iter()
        .partition(|p| installed.contains(&p.name));
    let mut unmet = Vec::new();
    if let Some(staged) = staged
        && !install.is_empty()
    {
        let out = std::process::Command::new("rpm")
            .args(root_arg(root))
            .args(["-U", "--test"])
            .args(install.iter().map(|p| staged(&p.path)))
            .output()
            .map_err(|e| step(format!("cannot run rpm -U --test: {e}")))?;
        if !out.status.success() {
            unmet = String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.starts_with(char::is_whitespace))
                .map(|l| l.trim().to_string())
                .collect();
            if unmet.is_empty() {
                unmet.push(format!(
                    "rpm -U --test refused them ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    Ok(Plan {
        present: present.iter().map(|p| p.name.clone()).collect(),
        install: install.into_iter().cloned().collect(),
        unmet,
        list,
    })
}

impl Plan {
    /// The refusal when the set cannot be installed without a network.
    pub fn refusal(&self) -> Option<String> {
        (!self.unmet.is_empty()).then(|| {
            format!(
                "the host packages for {} cannot be installed without a network: {}; neither this node nor the bundle has them. Rebuild the bundle from a repository of this release, or install them first",
                self.list.target,
                self.unmet.join("; ")
            )
        })
    }

    /// The commands that install the packages (their files as staged under `staged`) and
    /// enable the services: `dpkg -i` of every package at once (dpkg orders them), with
    /// `--root` when the root is not `/`.
    pub fn commands(&self, root: &Path, staged: &dyn Fn(&str) -> PathBuf) -> Vec<Vec<String>> {
        let rooted = root != Path::new("/");
        let mut out = Vec::new();
        if !self.install.is_empty() {
            let rpm = self.list.format == host::FORMAT_RPM;
            let mut dpkg = vec![if rpm { "rpm" } else { "dpkg" }.to_string()];
            dpkg.extend(root_arg(root));
            if rpm {
                dpkg.push("-U".into());
            } else {
                dpkg.extend(
                    ["--force-confdef", "--force-confold", "-i"]
                        .iter()
                        .map(|s| s.to_string()),
                );
            }
            dpkg.extend(
                self.install
                    .iter()
                    .map(|p| staged(&p.path).display().to_string()),
            );
            out.push(dpkg);
        }
        if !self.list.services.is_empty() {
            let mut sc = vec!["systemctl".to_string()];
            if rooted {
                sc.push(format!("--root={}", root.display()));
                sc.push("enable".into());
            } else {
                sc.extend(["enable".to_string(), "--now".to_string()]);
            }
            sc.extend(self.list.services.iter().cloned());
            out.push(sc);
        }
        out
    }
}

/// Run one command, no input, output kept for the error.
pub fn run(cmd: &[String]) -> Result<()> {
    let out = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| InstallError::Step {
            what: "host packages".into(),
            reason: format!("cannot run {}: {e}", cmd[0]),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = text.lines().rev().take(8).collect();
    Err(InstallError::Step {
        what: "host packages".into(),
        reason: format!(
            "`{}` failed ({}): {}",
            cmd.join(" "),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ),
    })
}

/// After `dpkg -i`: every package of the plan is installed, and nothing is left to do.
pub fn check_installed(plan: &Plan, root: &Path) -> Result<()> {
    let again = self::plan(plan.list.clone(), root, None)?;
    if again.install.is_empty() && again.unmet.is_empty() {
        return Ok(());
    }
    Err(InstallError::Step {
        what: "host packages".into(),
        reason: format!(
            "dpkg ran, but the node still lacks {}",
            again
                .install
                .iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .chain(again.unmet.iter().cloned())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    })
}

#[cfg(test)]
mod tests;
