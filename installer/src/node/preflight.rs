//! Preflight: every check runs before anything on the node changes, from the signed index alone
//! (its signatures are checked before preflight reads it) and the host's facts (`readiness`),
//! and every failure is reported at once, each naming its fix.

use crate::error::{InstallError, Result};
use crate::node::host::{self, k3s_minor_patch};
use crate::node::state::Release;
use rin_bundle::Arch;
use rin_bundle::index::Index;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// This node as preflight sees it (its root, architecture, installed release, free space) and
/// what the run asks of it: everything checked besides the index.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub root: &'a Path,
    /// True when `root` is `/`: the real node, where root privileges are needed.
    pub real_root: bool,
    pub euid_is_root: bool,
    pub arch: &'a Arch,
    pub state_dir: &'a Path,
    pub installed: Option<&'a Release>,
    /// The version of a K3s found on the node, when no release records one.
    pub found_k3s: Option<String>,
    /// The site registry runs in the cluster from the bundle's image (and its data lands here).
    pub in_cluster_registry: bool,
    /// The first server (it seeds the in-cluster registry).
    pub first_server: bool,
    pub registry_image: Option<&'a str>,
    pub allow_downgrade: bool,
    pub index_sha256: &'a str,
    /// The platforms seeding is narrowed to (`--platform`), if any.
    pub site_platforms: Option<&'a std::collections::BTreeSet<rin_bundle::Platform>>,
    /// The node's role (servers serve the API; HA servers run etcd; others join).
    pub role: &'a crate::node::host::Role,
    /// The in-cluster site registry's NodePort, when it runs from the bundle.
    pub registry_node_port: Option<u16>,
    /// The bundle's host package set for this node (`packages::target_for`: a target, none, or
    /// why the node has none); None with `--host-packages skip`.
    pub host_target: Option<&'a std::result::Result<Option<String>, String>>,
}

/// Bytes, and files (inodes), a step needs under a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub what: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub files: u64,
}

/// Files containerd makes importing one image archive, as preflight counts them: K3s's own
/// images unpack into a few thousand files; this leaves room for several times that.
const FILES_PER_IMPORT: u64 = 20_000;
/// Files the registry makes per blob (its data, its directory, each repository's link).
const FILES_PER_BLOB: u64 = 4;

/// Free space (bytes available to this user), free inodes (None where the filesystem has no
/// fixed number of them) and device of the filesystem holding `path`, or of its nearest existing
/// ancestor.
pub fn free_space(path: &Path) -> std::io::Result<(u64, Option<u64>, u64)> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            p = PathBuf::from("/");
            break;
        }
    }
    let vfs = rustix::fs::statvfs(&p)?;
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(&p)?.dev();
    let inodes = (vfs.f_files > 0).then_some(vfs.f_favail);
    Ok((vfs.f_bavail.saturating_mul(vfs.f_frsize), inodes, dev))
}

/// Headroom kept free beyond what the bundle says it needs: 5% plus 64 MiB.
pub fn with_headroom(bytes: u64) -> u64 {
    bytes + bytes / 20 + (64 << 20)
}

/// How much the node's own steps need, where. Containerd's import of an archive is counted as
/// three times the archive (its compressed layers plus the unpacked snapshots).
pub fn disk_needs(index: &Index, f: &Node<'_>) -> Vec<Need> {
    let mut needs = Vec::new();
    let size = |p: &str| {
        index
            .entries
            .iter()
            .find(|e| e.path == p)
            .map_or(0, |e| e.size)
    };
    // What is already in place with the same size is not counted again.
    let unchanged = |dest: &str, bytes: u64| {
        std::fs::metadata(f.root.join(dest)).is_ok_and(|m| m.len() == bytes)
    };
    let k3s = host::k3s_entries(index, f.arch);
    let staged: u64 = crate::node::stage::node_paths(index, f.arch)
        .iter()
        .map(|p| size(p))
        .sum();
    needs.push(Need {
        what: "staging the verified files".into(),
        path: f.state_dir.to_path_buf(),
        bytes: staged,
        files: 3,
    });
    if let Some(b) = &k3s.binary
        && !unchanged(host::K3S_BIN, b.size)
    {
        needs.push(Need {
            what: "the K3s binary".into(),
            path: f.root.join(host::K3S_BIN),
            bytes: b.size,
            files: 1,
        });
    }
    let images = f.root.join(host::IMAGES_DIR);
    let (mut archives, mut count) = (0, 0);
    if let Some(a) = &k3s.airgap {
        let name = a.path.trim_start_matches("k3s/");
        if !unchanged(&format!("{}/{name}", host::IMAGES_DIR), a.size) {
            archives += a.size;
            count += 1;
        }
    }
    if f.in_cluster_registry
        && let Ok(image) = crate::node::site_registry::pick_image(index, f.registry_image)
        && let Some(p) = crate::node::site_registry::platform_manifest(image, f.arch)
    {
        archives += p.size;
        count += 1;
    }
    if archives > 0 {
        needs.push(Need {
            what: "image archives for K3s".into(),
            path: images,
            bytes: archives,
            files: count,
        });
        needs.push(Need {
            what: "containerd's import of them".into(),
            path: f.root.join("var/lib/rancher/k3s/agent/containerd"),
            bytes: archives * 3,
            files: count * FILES_PER_IMPORT,
        });
    }
    let already_seeded = f
        .installed
        .is_some_and(|r| r.index_sha256 == f.index_sha256);
    if f.in_cluster_registry && f.first_server && !already_seeded {
        let blobs: Vec<u64> = index
            .entries
            .iter()
            .filter(|e| e.path.starts_with("oci/blobs/"))
            .map(|e| e.size)
            .collect();
        needs.push(Need {
            what: "the site registry's data".into(),
            path: f.root.join("var/lib/rancher/k3s/storage"),
            bytes: blobs.iter().sum(),
            files: blobs.len() as u64 * FILES_PER_BLOB,
        });
    }
    needs
}

/// Run every check; all failures together, or Ok.
pub fn check(index: &Index, f: &Node<'_>) -> Result<()> {
    let mut failures = Vec::new();
    if f.real_root && !f.euid_is_root {
        failures.push(
            "rininstall must run as root to install K3s: run it with sudo (or use --root DIR to write into a directory instead)".to_string(),
        );
    }
    let platform = f.arch.linux();
    if !index.platforms.contains(&platform) {
        failures.push(format!(
            "this node is {platform} but the bundle carries {}: build a bundle with `rinbundle build --arch {}`",
            rin_bundle::platform::list(&index.platforms),
            f.arch
        ));
    }
    if let Some(why) = f
        .site_platforms
        .and_then(|p| crate::node::seed::platforms_not_carried(index, p))
    {
        failures.push(format!("--platform: {why}"));
    }
    let k3s = host::k3s_entries(index, f.arch);
    let installed_k3s = f
        .installed
        .and_then(|r| r.k3s.clone())
        .or_else(|| f.found_k3s.clone());
    match (&index.k3s, k3s.complete()) {
        (Some(_), true) => {}
        (Some(v), false) => failures.push(format!(
            "the bundle names K3s {} but lacks its files for {} (binary, airgap images, install.sh): rebuild it with `--arch {}`",
            v.version, f.arch, f.arch
        )),
        (None, _) if installed_k3s.is_none() && !f.root.join(host::K3S_BIN).exists() => failures
            .push(
                "the bundle carries no K3s and none is installed on this node: build the bundle with `k3s: {version: ...}` in bundle.yaml".into(),
            ),
        (None, _) => {}
    }
    if let (Some(new), Some(old)) = (&index.k3s, &installed_k3s)
        && let Some(msg) = k3s_skew(old, &new.version, f.allow_downgrade)
    {
        failures.push(msg);
    }
    if let Some(r) = f.installed
        && let Some(msg) = stack_change(
            r,
            &index.stack.name,
            &index.stack.version,
            f.allow_downgrade,
        )
    {
        failures.push(msg);
    }
    if let Some(b) = &index.base
        && let Some(msg) = delta_refusal(b, f)
    {
        failures.push(msg);
    }
    if f.in_cluster_registry {
        match crate::node::site_registry::pick_image(index, f.registry_image) {
            Err(e) => failures.push(format!(
                "{e}: add docker.io/library/registry:2 to the stack's images, or seed an existing registry with --registry HOST:PORT"
            )),
            Ok(image) if crate::node::site_registry::platform_manifest(image, f.arch).is_none() => {
                failures.push(format!(
                    "the registry image {} has no {} platform in the bundle: rebuild with `--arch {}`",
                    image.reference, f.arch.linux(), f.arch
                ))
            }
            Ok(_) => {}
        }
    }
    failures.extend(crate::node::readiness::failures(
        &crate::node::readiness::Host {
            root: f.root,
            k3s_present: f.installed.is_some()
                || f.found_k3s.is_some()
                || f.root.join(host::K3S_BIN).exists(),
            server: f.role.exec() == "server",
            etcd: matches!(
                f.role,
                host::Role::Server { cluster_init: true } | host::Role::JoinServer { .. }
            ),
            registry_node_port: f.registry_node_port,
            joining: !f.first_server,
            created: index.created_epoch().unwrap_or(0),
            now: rin_bundle::index::now_epoch(),
            k3s_selinux_carried: f
                .host_target
                .and_then(|t| t.as_ref().ok())
                .and_then(Option::as_deref)
                .is_some_and(|t| {
                    crate::node::packages::staged_entries(index, t, f.arch)
                        .iter()
                        .any(|p| {
                            p.rsplit('/')
                                .next()
                                .is_some_and(|n| n.starts_with("k3s-selinux-"))
                        })
                }),
        },
    ));
    if let Some(Err(why)) = f.host_target {
        failures.push(why.clone());
    }
    failures.extend(disk_failures(&disk_needs(index, f)));
    if failures.is_empty() {
        Ok(())
    } else {
        Err(InstallError::Preflight { failures })
    }
}

/// Why a delta bundle cannot go onto this node, if it cannot: it needs an installed release, the
/// one it was built against (unless it was built against a site inventory; then what the site
/// holds is checked once the plan is known).
pub fn delta_refusal(base: &rin_bundle::index::Base, f: &Node<'_>) -> Option<String> {
    let left_out = format!(
        "this bundle is a delta: it leaves out {} blobs and {} K3s files ({}) that the release it applies onto holds",
        base.blobs.len(),
        base.files.len(),
        rin_support::human_bytes(base.size)
    );
    match f.installed {
        None if !f.first_server => Some(format!(
            "{left_out}, and this node joins the cluster with nothing installed: bring the full bundle to join a node"
        )),
        None => Some(format!(
            "{left_out}, and this node has no release installed: bring the full bundle"
        )),
        Some(r) if base.inventory.is_none() && r.index_sha256 != base.index_sha256 => {
            Some(format!(
                "{left_out}, index sha256:{}, but this node runs {} {} (index sha256:{}): bring the full bundle, or a delta built with `rinbundle build --base` set to the bundle this node installed or to its inventory (rininstall inventory)",
                base.index_sha256, r.stack, r.version, r.index_sha256
            ))
        }
        Some(_) => None,
    }
}

/// Each filesystem that lacks room (bytes or inodes) for what lands on it.
fn disk_failures(needs: &[Need]) -> Vec<String> {
    struct Fs<'a> {
        free: u64,
        inodes: Option<u64>,
        bytes: u64,
        files: u64,
        needs: Vec<&'a Need>,
    }
    let mut by_dev: BTreeMap<u64, Fs> = BTreeMap::new();
    let mut out = Vec::new();
    for n in needs.iter().filter(|n| n.bytes > 0 || n.files > 0) {
        match free_space(&n.path) {
            Ok((free, inodes, dev)) => {
                let e = by_dev.entry(dev).or_insert(Fs {
                    free,
                    inodes,
                    bytes: 0,
                    files: 0,
                    needs: Vec::new(),
                });
                e.bytes += n.bytes;
                e.files += n.files;
                e.needs.push(n);
            }
            Err(e) => out.push(format!(
                "cannot tell the free space at {}: {e}",
                n.path.display()
            )),
        }
    }
    for fs in by_dev.values() {
        let list = |part: &dyn Fn(&Need) -> String| -> String {
            fs.needs
                .iter()
                .map(|n| format!("{} {} at {}", n.what, part(n), n.path.display()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let want = with_headroom(fs.bytes);
        if fs.free < want {
            out.push(format!(
                "not enough free disk: {} needed with headroom ({}), {} free on that filesystem: free {} there or give the node more disk",
                rin_support::human_bytes(want),
                list(&|n| rin_support::human_bytes(n.bytes)),
                rin_support::human_bytes(fs.free),
                rin_support::human_bytes(want - fs.free)
            ));
        }
        if let Some(inodes) = fs.inodes
            && inodes < fs.files
        {
            out.push(format!(
                "not enough free inodes: {} files to make ({}), {inodes} inodes free on that filesystem: delete files there, or give that directory a filesystem with more inodes",
                fs.files,
                list(&|n| format!("{} files", n.files))
            ));
        }
    }
    out
}

/// A refusal when going from K3s `old` to `new` is a downgrade or skips a minor version.
pub fn k3s_skew(old: &str, new: &str, allow_downgrade: bool) -> Option<String> {
    let (Some(o), Some(n)) = (k3s_minor_patch(old), k3s_minor_patch(new)) else {
        return (old != new).then(|| {
            format!("cannot compare the installed K3s {old} with the bundle's {new}: check both versions")
        });
    };
    if n < o && !allow_downgrade {
        return Some(format!(
            "the bundle's K3s {new} is older than the installed {old}: Kubernetes does not support downgrades; use a bundle with K3s {old} or newer (or --allow-downgrade if you restored the datastore)"
        ));
    }
    if n.0 > o.0 + 1 {
        return Some(format!(
            "the bundle's K3s {new} skips a minor version from the installed {old}: Kubernetes upgrades one minor version at a time; install a bundle with K3s v1.{}.x first",
            o.0 + 1
        ));
    }
    None
}

/// A refusal when the bundle's stack replaces another stack or is older than the installed one.
pub fn stack_change(
    installed: &Release,
    name: &str,
    version: &str,
    allow_downgrade: bool,
) -> Option<String> {
    if installed.stack != name {
        return Some(format!(
            "this node runs the stack {} {}, the bundle carries {name} {version}: one node runs one stack; use a bundle of {}",
            installed.stack, installed.version, installed.stack
        ));
    }
    let parse = |v: &str| semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).ok();
    match (parse(&installed.version), parse(version)) {
        (Some(old), Some(new)) if new < old && !allow_downgrade => Some(format!(
            "the bundle's {name} {version} is older than the installed {}: pass --allow-downgrade to install it anyway",
            installed.version
        )),
        (None, _) | (_, None) if installed.version != version && !allow_downgrade => Some(format!(
            "cannot order the installed {name} {} and the bundle's {version} (not semantic versions): pass --allow-downgrade if {version} is the one you want",
            installed.version
        )),
        _ => None,
    }
}

/// The K3s version of the binary at `bin` (`k3s --version`), when it runs.
pub fn k3s_version_of(bin: &Path) -> Option<String> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3s_upgrades_one_minor_at_a_time_and_never_down() {
        assert_eq!(k3s_skew("v1.31.4+k3s1", "v1.31.4+k3s1", false), None);
        assert_eq!(k3s_skew("v1.31.4+k3s1", "v1.31.9+k3s1", false), None);
        assert_eq!(k3s_skew("v1.31.4+k3s1", "v1.32.1+k3s1", false), None);
        let skip = k3s_skew("v1.30.4+k3s1", "v1.32.1+k3s1", false).unwrap();
        assert!(
            skip.contains("install a bundle with K3s v1.31.x first"),
            "{skip}"
        );
        let down = k3s_skew("v1.31.4+k3s1", "v1.31.3+k3s1", false).unwrap();
        assert!(down.contains("does not support downgrades"), "{down}");
        assert_eq!(k3s_skew("v1.31.4+k3s1", "v1.30.3+k3s1", true), None);
    }

    fn release(stack: &str, version: &str) -> Release {
        Release {
            stack: stack.into(),
            version: version.into(),
            k3s: None,
            index_sha256: String::new(),
            installed: String::new(),
            revision: None,
            ..Default::default()
        }
    }

    #[test]
    fn a_silent_downgrade_or_another_stack_is_refused() {
        let r = release("rin", "1.4.0");
        assert_eq!(stack_change(&r, "rin", "1.4.0", false), None);
        assert_eq!(stack_change(&r, "rin", "1.5.0", false), None);
        let down = stack_change(&r, "rin", "1.3.9", false).unwrap();
        assert!(down.contains("--allow-downgrade"), "{down}");
        assert_eq!(stack_change(&r, "rin", "1.3.9", true), None);
        let other = stack_change(&r, "shop", "9.0.0", true).unwrap();
        assert!(other.contains("runs the stack rin 1.4.0"), "{other}");
        let odd = stack_change(&release("rin", "2024-05"), "rin", "2024-06", false).unwrap();
        assert!(odd.contains("cannot order"), "{odd}");
    }

    #[test]
    fn a_filesystem_without_room_is_named_with_what_lands_on_it() {
        let t = tempfile::tempdir().unwrap();
        let need = |what: &str, bytes| Need {
            what: what.into(),
            path: t.path().join("not/yet/there"),
            bytes,
            files: 1,
        };
        // Two needs on one filesystem are added up; together they exceed any disk.
        let f = disk_failures(&[need("the K3s binary", 1 << 62), need("images", 1 << 62)]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("not enough free disk"), "{}", f[0]);
        assert!(
            f[0].contains("the K3s binary") && f[0].contains("images"),
            "{}",
            f[0]
        );
        assert!(disk_failures(&[need("small", 1)]).is_empty());
        // More files than any filesystem has inodes for (where it counts them).
        let many = Need {
            files: u64::MAX / 2,
            ..need("an import", 1)
        };
        let f = disk_failures(&[many]);
        assert!(
            free_space(t.path()).unwrap().1.is_some(),
            "the tests' filesystem counts its inodes"
        );
        assert!(
            f.len() == 1 && f[0].contains("not enough free inodes") && f[0].contains("an import"),
            "{f:?}"
        );
    }

    #[test]
    fn headroom_is_five_percent_and_64_mib() {
        assert_eq!(with_headroom(0), 64 << 20);
        assert_eq!(with_headroom(100 << 20), (105 << 20) + (64 << 20));
    }
}
