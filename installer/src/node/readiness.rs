//! Host checks, part of preflight: what K3s needs of the machine, judged before anything changes,
//! each failure with its fix. Every fact is read from `/proc`, `/sys` and `/etc` under the root,
//! so a test feeds a prepared tree for each failure; a fact that is not there is not judged (a
//! `--root` directory of an image build has no `/proc`), except the clock, which is this
//! machine's.

use std::path::Path;

/// The ports K3s documents as inbound: the supervisor and API (servers), the kubelet (every
/// node), and flannel's VXLAN (UDP).
const API_TCP: u16 = 6443;
const KUBELET_TCP: u16 = 10250;
const K3S_UDP: [u16; 1] = [8472];
/// Embedded etcd, on servers of an HA cluster.
const ETCD_TCP: [u16; 2] = [2379, 2380];

/// What the checks need besides the root.
#[derive(Debug, Clone)]
pub struct Host<'a> {
    pub root: &'a Path,
    /// K3s is installed here already (its ports are its own).
    pub k3s_present: bool,
    /// A server (it serves the API), not an agent.
    pub server: bool,
    /// This node runs embedded etcd (a server of an HA cluster).
    pub etcd: bool,
    /// The in-cluster site registry's NodePort, when it runs from the bundle.
    pub registry_node_port: Option<u16>,
    /// A node joining a cluster (its hostname must differ from the others').
    pub joining: bool,
    /// The bundle's creation time and this machine's clock, seconds since the epoch.
    pub created: u64,
    pub now: u64,
    /// The bundle carries `k3s-selinux` in this node's host packages (installed before K3s).
    pub k3s_selinux_carried: bool,
}

/// Every host check that fails, each naming its fix.
pub fn failures(h: &Host<'_>) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(memory_cgroup(h.root));
    out.extend(kernel_modules(h.root));
    out.extend(clock(h.now, h.created));
    if !h.k3s_selinux_carried {
        out.extend(selinux(h.root));
    }
    if !h.k3s_present {
        let mut tcp: Vec<u16> = vec![KUBELET_TCP];
        if h.server {
            tcp.push(API_TCP);
        }
        if h.etcd {
            tcp.extend(ETCD_TCP);
        }
        tcp.extend(h.registry_node_port);
        out.extend(ports_taken(h.root, &tcp, &K3S_UDP));
    }
    out.extend(hostname(h.root, h.joining));
    out
}

fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path)).ok()
}

/// The memory cgroup controller: cgroup v2's `cgroup.controllers`, or v1's `/proc/cgroups`.
fn memory_cgroup(root: &Path) -> Option<String> {
    let enabled = match read(root, "sys/fs/cgroup/cgroup.controllers") {
        Some(c) => c.split_whitespace().any(|w| w == "memory"),
        None => {
            let cgroups = read(root, "proc/cgroups")?;
            cgroups.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&"memory") && f.get(3) == Some(&"1")
            })
        }
    };
    if enabled {
        return None;
    }
    let cmdline = ["boot/firmware/cmdline.txt", "boot/cmdline.txt"]
        .into_iter()
        .find(|p| root.join(p).exists())
        .map(|p| format!("/{p}"))
        .unwrap_or_else(|| {
            "the boot loader's kernel command line (Raspberry Pi OS: /boot/firmware/cmdline.txt)"
                .into()
        });
    Some(format!(
        "the kernel's memory cgroup is not enabled, and K3s cannot run without it: add `cgroup_memory=1 cgroup_enable=memory` to {cmdline} (one line) and reboot"
    ))
}

/// Kernel modules K3s needs: overlay (containerd's snapshots), br_netfilter (pod traffic through
/// the bridge), and nf_tables or ip_tables (K3s's own iptables binaries need one). Each must be
/// loaded, built in, or available to load for the running kernel.
fn kernel_modules(root: &Path) -> Vec<String> {
    let Some(loaded) = read(root, "proc/modules") else {
        return Vec::new();
    };
    let release = read(root, "proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    let dir = format!("lib/modules/{release}");
    let builtin = read(root, &format!("{dir}/modules.builtin")).unwrap_or_default();
    let dep = read(root, &format!("{dir}/modules.dep")).unwrap_or_default();
    let filesystems = read(root, "proc/filesystems").unwrap_or_default();
    let has = |m: &str| {
        let file = |list: &str| {
            list.lines().any(|l| {
                let path = l.split(':').next().unwrap_or_default();
                let name = path.rsplit('/').next().unwrap_or_default();
                name.split('.').next() == Some(m) && name.contains(".ko")
            })
        };
        loaded
            .lines()
            .any(|l| l.split_whitespace().next() == Some(m))
            || file(&builtin)
            || file(&dep)
            || (m == "overlay" && filesystems.split_whitespace().any(|w| w == "overlay"))
    };
    let fix = |what: &str| {
        format!(
            "the kernel module {what} is neither loaded nor available for kernel {release}, and K3s needs it: install the kernel's modules (Debian and Ubuntu: linux-modules-extra-{release}) or boot a kernel that has it"
        )
    };
    let mut out = Vec::new();
    for m in ["overlay", "br_netfilter"] {
        if !has(m) {
            out.push(fix(m));
        }
    }
    if !has("nf_tables") && !has("ip_tables") {
        out.push(fix("nf_tables (or ip_tables)"));
    }
    out
}

/// The clock must not be before the bundle was made: the certificates K3s makes now would not
/// be valid yet by a correct clock, and the bundle's own time would be in the future.
fn clock(now: u64, created: u64) -> Option<String> {
    (now < created).then(|| {
        format!(
            "this machine's clock says {}, before the bundle was made ({}): set the time (timedatectl set-time 'YYYY-MM-DD HH:MM:SS', or date -s) and run again",
            rin_bundle::index::format_created(now),
            rin_bundle::index::format_created(created)
        )
    })
}

/// SELinux enforcing needs K3s's policy (k3s-selinux, with container-selinux).
fn selinux(root: &Path) -> Option<String> {
    if read(root, "sys/fs/selinux/enforce")?.trim() != "1" {
        return None;
    }
    let policy = [
        "usr/share/selinux/packages/k3s.pp",
        "usr/share/selinux/packages/k3s.pp.bz2",
        "var/lib/selinux/targeted/active/modules/200/k3s",
    ];
    if policy.iter().any(|p| root.join(p).exists()) {
        return None;
    }
    Some(
        "SELinux is enforcing and K3s's policy is not installed: carry the container-selinux and k3s-selinux RPMs in the bundle (bundle.yaml host_packages, format: rpm; k3s-selinux from K3s's RPM repository) or install them from local files first, then run again".into(),
    )
}

/// Ports another program already listens on (TCP) or has bound (UDP).
fn ports_taken(root: &Path, tcp: &[u16], udp: &[u16]) -> Vec<String> {
    let bound = |files: [&str; 2], listening: Option<&str>| -> Option<Vec<u16>> {
        let mut ports = Vec::new();
        let mut any = false;
        for f in files {
            let Some(text) = read(root, f) else {
                continue;
            };
            any = true;
            for l in text.lines().skip(1) {
                let cols: Vec<&str> = l.split_whitespace().collect();
                let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                    continue;
                };
                if listening.is_some_and(|s| *state != s) {
                    continue;
                }
                if let Some(port) = local
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
        any.then_some(ports)
    };
    let mut out = Vec::new();
    // TCP state 0A is LISTEN.
    if let Some(taken) = bound(["proc/net/tcp", "proc/net/tcp6"], Some("0A")) {
        for p in tcp.iter().filter(|p| taken.contains(p)) {
            out.push(format!(
                "port {p}/tcp is taken by another program, and K3s needs it: `ss -ltnp 'sport = :{p}'` names the program; stop it, then run again"
            ));
        }
    }
    if let Some(taken) = bound(["proc/net/udp", "proc/net/udp6"], None) {
        for p in udp.iter().filter(|p| taken.contains(p)) {
            out.push(format!(
                "port {p}/udp is taken by another program, and K3s's flannel needs it: `ss -lunp 'sport = :{p}'` names the program; stop it, then run again"
            ));
        }
    }
    out
}

/// The hostname becomes the node's name: a valid Kubernetes name, and not `localhost` on a node
/// that joins others (every node's must differ).
/// The name this machine joins the cluster under: its hostname (under the root).
pub fn node_name(root: &Path) -> Option<String> {
    let name = read(root, "etc/hostname")
        .or_else(|| read(root, "proc/sys/kernel/hostname"))?
        .trim()
        .to_string();
    (!name.is_empty()).then_some(name)
}

fn hostname(root: &Path, joining: bool) -> Option<String> {
    let name = node_name(root)?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Some(format!(
            "this machine's hostname {name:?} is not a valid Kubernetes node name (lowercase letters, digits and '-', dot-separated labels of at most 63): set one with `hostnamectl set-hostname NAME`, then run again"
        ));
    }
    (joining && (name == "localhost" || name.starts_with("localhost."))).then(|| {
        format!(
            "this machine's hostname is {name:?}, and a node joining a cluster needs a name no other node has: set one with `hostnamectl set-hostname NAME`, then run again"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root with every fact of a healthy host planted.
    fn healthy() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let put = |p: &str, s: &str| {
            let path = t.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, s).unwrap();
        };
        put(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        );
        put(
            "proc/modules",
            "overlay 151552 0 - Live 0x0\nbr_netfilter 32768 0 - Live 0x0\n",
        );
        put("proc/sys/kernel/osrelease", "6.1.0-rpi7\n");
        put(
            "lib/modules/6.1.0-rpi7/modules.dep",
            "kernel/net/netfilter/nf_tables.ko.xz: kernel/net/netfilter/nfnetlink.ko.xz\n",
        );
        put(
            "proc/net/tcp",
            "  sl  local_address rem_address   st\n   0: 0100007F:0016 00000000:0000 0A\n",
        );
        put("proc/net/udp", "  sl  local_address rem_address   st\n");
        put("etc/hostname", "pi-1\n");
        t
    }

    fn host(root: &Path) -> Host<'_> {
        Host {
            root,
            k3s_present: false,
            server: true,
            etcd: true,
            registry_node_port: Some(31555),
            joining: false,
            created: 1_700_000_000,
            now: 1_800_000_000,
            k3s_selinux_carried: false,
        }
    }

    fn put(root: &Path, p: &str, s: &str) {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, s).unwrap();
    }

    #[test]
    fn a_healthy_host_and_an_empty_root_pass() {
        let t = healthy();
        assert_eq!(failures(&host(t.path())), Vec::<String>::new());
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(failures(&host(empty.path())), Vec::<String>::new());
    }

    #[test]
    fn each_failing_fact_is_named_with_its_fix() {
        let one = |change: &dyn Fn(&Path), adjust: &dyn Fn(&mut Host<'_>), needle: &str| {
            let t = healthy();
            change(t.path());
            let mut h = host(t.path());
            adjust(&mut h);
            let f = failures(&h);
            assert!(f.len() == 1 && f[0].contains(needle), "{needle}: {f:?}");
        };
        let same = |_: &mut Host<'_>| {};
        // No memory cgroup on a Raspberry Pi: the cmdline.txt that exists is named.
        one(
            &|r| {
                put(
                    r,
                    "sys/fs/cgroup/cgroup.controllers",
                    "cpuset cpu io pids\n",
                );
                put(r, "boot/firmware/cmdline.txt", "console=tty1\n");
            },
            &same,
            "`cgroup_memory=1 cgroup_enable=memory` to /boot/firmware/cmdline.txt",
        );
        // cgroup v1 with memory disabled.
        one(
            &|r| {
                std::fs::remove_file(r.join("sys/fs/cgroup/cgroup.controllers")).unwrap();
                put(
                    r,
                    "proc/cgroups",
                    "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t1\t0\n",
                );
            },
            &same,
            "memory cgroup is not enabled",
        );
        one(
            &|r| put(r, "proc/modules", "overlay 151552 0 - Live 0x0\n"),
            &same,
            "kernel module br_netfilter is neither loaded nor available for kernel 6.1.0-rpi7",
        );
        one(
            &|r| put(r, "lib/modules/6.1.0-rpi7/modules.dep", ""),
            &same,
            "nf_tables (or ip_tables)",
        );
        one(
            &|_| {},
            &|h| h.now = 1_600_000_000,
            "clock says 2020-09-13T12:26:40Z, before the bundle was made (2023-11-14T22:13:20Z)",
        );
        one(
            &|r| put(r, "sys/fs/selinux/enforce", "1"),
            &same,
            "k3s-selinux",
        );
        // 6443 in LISTEN (0x192B), on IPv6.
        one(
            &|r| {
                put(
                    r,
                    "proc/net/tcp6",
                    "  sl  local_address rem_address st\n   0: 00000000000000000000000000000000:192B 00000000000000000000000000000000:0000 0A\n",
                )
            },
            &same,
            "port 6443/tcp is taken",
        );
        // 2380 (etcd, 0x094C) and the registry's NodePort matter only where they are used.
        let etcd = "  sl  local_address rem_address st\n   0: 00000000:094C 00000000:0000 0A\n";
        one(&|r| put(r, "proc/net/tcp", etcd), &same, "port 2380/tcp");
        let t = healthy();
        put(t.path(), "proc/net/tcp", etcd);
        let h = Host {
            etcd: false,
            ..host(t.path())
        };
        assert!(failures(&h).is_empty());
        let k3s_runs = Host {
            k3s_present: true,
            ..host(t.path())
        };
        assert!(failures(&k3s_runs).is_empty(), "K3s's own ports");
        // SELinux enforcing is fine when the bundle brings k3s-selinux for this node.
        let enforcing = healthy();
        put(enforcing.path(), "sys/fs/selinux/enforce", "1");
        assert_eq!(failures(&host(enforcing.path())).len(), 1);
        let carried = Host {
            k3s_selinux_carried: true,
            ..host(enforcing.path())
        };
        assert!(failures(&carried).is_empty());
        one(
            &|r| {
                put(
                    r,
                    "proc/net/udp",
                    "  sl  local_address rem_address st\n   0: 00000000:2118 00000000:0000 07\n",
                )
            },
            &same,
            "port 8472/udp",
        );
        one(
            &|r| put(r, "etc/hostname", "Pi_1\n"),
            &same,
            "hostname \"Pi_1\" is not a valid Kubernetes node name",
        );
        one(
            &|r| put(r, "etc/hostname", "localhost\n"),
            &|h| h.joining = true,
            "a node joining a cluster needs a name no other node has",
        );
    }
}
