//! `rininstall doctor`: the installed node, looked over: K3s's service, the release recorded,
//! containerd's mirror files for the site registry, the registry serving every image of the
//! release, the nodes Ready and the stack's workloads healthy (with the cause of each that is
//! not), and disk and inode pressure. Each check ends `ok`, `FAIL` (with what to do) or
//! `unknown` (it cannot be told here, e.g. the service under `--root`).

use crate::cluster::manage::{self, Target};
use crate::error::Result;
use crate::node::seed::{self, SeedOptions};
use crate::node::{host, state};
use rin_bundle::Progress;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Fail,
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub root: PathBuf,
    pub target: Target,
    /// The site registry to ask.
    pub registry: SeedOptions,
}

fn check(check: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check {
        check,
        verdict,
        detail: detail.into(),
    }
}

/// Every check, in order. Call from a thread outside the runtime `rt`.
pub fn doctor(o: &DoctorOptions, rt: &Handle, progress: &dyn Progress) -> Result<Vec<Check>> {
    let mut out = vec![service(&o.root), kernel(&o.root)];
    out.extend(host_packages(&o.root, &o.target.state_dir));
    let release = state::read_release(&o.target.state_dir)?;
    let index = match &release {
        None => {
            out.push(check(
                "release",
                Verdict::Fail,
                format!(
                    "no release is recorded in {}: install one with rininstall apply",
                    o.target.state_dir.display()
                ),
            ));
            None
        }
        Some(r) => {
            out.push(check(
                "release",
                Verdict::Ok,
                format!(
                    "{} {} (index sha256 {})",
                    r.stack, r.version, r.index_sha256
                ),
            ));
            state::kept_index(&o.target.state_dir, &r.index_sha256)
                .ok()
                .and_then(|b| rin_bundle::Index::from_canonical_json(&b).ok())
        }
    };
    out.push(mirrors(&o.root));
    out.push(match &index {
        None => check(
            "images",
            Verdict::Unknown,
            "the installed release's index is not kept here (an older rininstall, or nothing installed)",
        ),
        Some(index) => match seed::tags_resolve(index, &o.registry, rt, progress) {
            Err(e) => check(
                "images",
                Verdict::Fail,
                format!("the site registry {} does not answer: {e}", o.registry.registry),
            ),
            Ok(r) => {
                let bad: Vec<String> = r.into_iter().filter_map(|(_, p)| p).collect();
                if bad.is_empty() {
                    check(
                        "images",
                        Verdict::Ok,
                        format!(
                            "all {} images of the release resolve at {}",
                            index.images.len(),
                            o.registry.registry
                        ),
                    )
                } else {
                    check(
                        "images",
                        Verdict::Fail,
                        format!(
                            "{}; seed the release's bundle again: rininstall seed BUNDLE --registry {}",
                            bad.join("; "),
                            o.registry.registry
                        ),
                    )
                }
            }
        },
    });
    out.extend(cluster(&o.target, rt, progress)?);
    out.push(disk(&o.root));
    Ok(out)
}

/// K3s's service: `systemctl is-active` on the real root.
/// `k3s check-config` of the installed K3s (on the real root: it judges the running kernel).
fn kernel(root: &Path) -> Check {
    use crate::node::check_config;
    let bin = root.join(host::K3S_BIN);
    if root != Path::new("/") || !bin.exists() {
        return check(
            "kernel",
            Verdict::Unknown,
            "k3s check-config runs only on the real root with K3s installed",
        );
    }
    match check_config::run(&bin, check_config::TIMEOUT) {
        Ok(r) if r.failures.is_empty() => check("kernel", Verdict::Ok, r.status),
        Ok(r) => check(
            "kernel",
            Verdict::Fail,
            format!("k3s check-config: {}", r.failures.join("; ")),
        ),
        Err(why) => check("kernel", Verdict::Unknown, why),
    }
}

/// The host packages apply installed here, still installed, and their services running.
fn host_packages(root: &Path, state_dir: &Path) -> Option<Check> {
    use crate::node::packages;
    let bytes = std::fs::read(state::host_list_path(state_dir)).ok()?;
    let list = match rin_bundle::host::read(&bytes) {
        Ok(l) => l,
        Err(e) => return Some(check("host packages", Verdict::Unknown, e)),
    };
    let target = list.target.clone();
    let services = list.services.clone();
    let plan = match packages::plan(list, root, None) {
        Ok(p) => p,
        Err(e) => return Some(check("host packages", Verdict::Unknown, e.to_string())),
    };
    let mut missing: Vec<String> = plan
        .install
        .iter()
        .map(|p| format!("{} {} is not installed", p.name, p.version))
        .collect();
    missing.extend(plan.unmet.iter().cloned());
    if root == Path::new("/") {
        for unit in &services {
            let active = std::process::Command::new("systemctl")
                .args(["is-active", "--quiet", unit])
                .status()
                .is_ok_and(|s| s.success());
            if !active {
                missing.push(format!(
                    "{unit} is not running: systemctl enable --now {unit}; why: journalctl -u {unit} -n 50"
                ));
            }
        }
    }
    Some(if missing.is_empty() {
        check(
            "host packages",
            Verdict::Ok,
            format!(
                "the {} packages for {target} are installed{}",
                plan.present.len(),
                if services.is_empty() || root != Path::new("/") {
                    String::new()
                } else {
                    format!(", {} running", services.join(", "))
                }
            ),
        )
    } else {
        check(
            "host packages",
            Verdict::Fail,
            format!(
                "{}; apply the release's bundle again to install them",
                missing.join("; ")
            ),
        )
    })
}

fn service(root: &Path) -> Check {
    if root != Path::new("/") {
        return check("k3s service", Verdict::Unknown, "not the real root");
    }
    for unit in ["k3s", "k3s-agent"] {
        if !root
            .join(format!("etc/systemd/system/{unit}.service"))
            .exists()
        {
            continue;
        }
        let active = std::process::Command::new("systemctl")
            .args(["is-active", "--quiet", unit])
            .status()
            .is_ok_and(|s| s.success());
        return if active {
            check("k3s service", Verdict::Ok, format!("{unit} is active"))
        } else {
            check(
                "k3s service",
                Verdict::Fail,
                format!(
                    "{unit} is not running: systemctl start {unit}; why it stopped: journalctl -u {unit} -n 100"
                ),
            )
        };
    }
    check(
        "k3s service",
        Verdict::Fail,
        "no K3s service is installed: run rininstall apply without --no-start",
    )
}

/// containerd's `hosts.toml` for every mirror `registries.yaml` names, pointing at its endpoints.
fn mirrors(root: &Path) -> Check {
    let Ok(text) = std::fs::read_to_string(root.join(host::REGISTRIES_YAML)) else {
        return check(
            "registry mirrors",
            Verdict::Fail,
            format!(
                "{} is missing: run rininstall apply again",
                root.join(host::REGISTRIES_YAML).display()
            ),
        );
    };
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap_or_default();
    let Some(mirrors) = doc.get("mirrors").and_then(Value::as_object) else {
        return check(
            "registry mirrors",
            Verdict::Ok,
            "registries.yaml names no mirror",
        );
    };
    let certs = root.join("var/lib/rancher/k3s/agent/etc/containerd/certs.d");
    let mut bad = Vec::new();
    for (name, m) in mirrors {
        let hosts = certs.join(name).join("hosts.toml");
        let written = std::fs::read_to_string(&hosts).unwrap_or_default();
        let endpoints: Vec<&str> = m
            .get("endpoint")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let host_of = |e: &str| {
            e.split("://")
                .nth(1)
                .unwrap_or(e)
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        if !endpoints.iter().all(|e| written.contains(&host_of(e))) {
            bad.push(name.clone());
        }
    }
    if bad.is_empty() {
        check(
            "registry mirrors",
            Verdict::Ok,
            format!(
                "containerd mirrors {} registries to the site registry",
                mirrors.len()
            ),
        )
    } else {
        check(
            "registry mirrors",
            Verdict::Fail,
            format!(
                "containerd has no mirror to the site registry for {}: K3s writes them from registries.yaml when it starts; restart it (systemctl restart k3s)",
                bad.join(", ")
            ),
        )
    }
}

/// The nodes Ready and the stack's workloads healthy, from the cluster.
fn cluster(t: &Target, rt: &Handle, progress: &dyn Progress) -> Result<Vec<Check>> {
    let status = manage::status(t, rt, progress)?;
    let Some(c) = status.cluster else {
        let why = status.cluster_error.unwrap_or_default();
        return Ok(vec![
            check(
                "nodes",
                Verdict::Unknown,
                format!("the cluster does not answer: {why}"),
            ),
            check("stack", Verdict::Unknown, "the cluster does not answer"),
        ]);
    };
    let mut out = Vec::new();
    let nodes = match crate::cluster::connect::look(&t.kubeconfig, t.timeout, rt, progress) {
        Ok((cluster, _)) => rt
            .block_on(cluster.listings())
            .into_iter()
            .find(|(w, _)| *w == "nodes")
            .map(|(_, v)| v),
        Err(_) => None,
    };
    out.push(match nodes.as_ref().and_then(Value::as_array) {
        None => check("nodes", Verdict::Unknown, "the nodes could not be listed"),
        Some(list) => {
            let not_ready: Vec<String> = list
                .iter()
                .filter(|n| {
                    !n.pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                })
                .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            if not_ready.is_empty() {
                check(
                    "nodes",
                    Verdict::Ok,
                    format!("all {} nodes Ready", list.len()),
                )
            } else {
                check(
                    "nodes",
                    Verdict::Fail,
                    format!(
                        "not Ready: {}; on each, journalctl -u k3s-agent (or k3s) says why",
                        not_ready.join(", ")
                    ),
                )
            }
        }
    });
    let sick: Vec<String> = c
        .health
        .iter()
        .filter(|h| h.state != "ready")
        .map(|h| match &h.reason {
            Some(r) => format!("{} ({}): {r}", h.object, h.state),
            None => format!("{} ({})", h.object, h.state),
        })
        .collect();
    out.push(if sick.is_empty() {
        check(
            "stack",
            Verdict::Ok,
            format!(
                "all {} workloads, jobs, claims and charts ready",
                c.health.len()
            ),
        )
    } else {
        check("stack", Verdict::Fail, sick.join("; "))
    });
    Ok(out)
}

/// Free bytes and inodes where K3s keeps its data.
fn disk(root: &Path) -> Check {
    let dir = root.join("var/lib/rancher");
    match crate::node::preflight::free_space(&dir) {
        Err(e) => check("disk", Verdict::Unknown, format!("{}: {e}", dir.display())),
        Ok((free, inodes, _)) => {
            let low_bytes = free < 2 << 30;
            let low_inodes = inodes.is_some_and(|i| i < 50_000);
            let detail = format!(
                "{} free{} at {}",
                rin_support::human_bytes(free),
                inodes.map(|i| format!(", {i} inodes")).unwrap_or_default(),
                dir.display()
            );
            if low_bytes || low_inodes {
                check(
                    "disk",
                    Verdict::Fail,
                    format!(
                        "{detail}: kubelet evicts pods and images below its thresholds; free space there (old images: k3s crictl rmi --prune)"
                    ),
                )
            } else {
                check("disk", Verdict::Ok, detail)
            }
        }
    }
}
