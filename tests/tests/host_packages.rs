//! Host packages end to end with real Debian tools: `.deb` files made by `dpkg-deb`, an APT
//! repository made by `dpkg-scanpackages` served over HTTP, `rinbundle build` resolving and
//! locking them with their dependencies, `rinbundle inspect` listing them, and `rininstall
//! apply` installing what a node lacks with `dpkg --root` (and enabling a service with
//! `systemctl --root`), showing the commands, or refusing before anything changes.
#![allow(clippy::unwrap_used)]

use rin_tests::deb::{self, Deb};
use rin_tests::net::FileServer;
use rin_tests::{bin, build_command, build_signed_with, fixture, ok, text};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository: a tool that needs a library (two versions; the newer is taken) and a package
/// every minimal install has (`Priority: required`, never carried), and a component's package
/// that brings a systemd unit.
fn debs() -> Vec<Deb> {
    vec![
        Deb::new("rin-tool", "1.0-1", "amd64")
            .fields("Depends: rin-lib (>= 2), rin-base (>= 1)\n")
            .file("usr/bin/rin-tool", "#!/bin/sh\necho rin-tool\n"),
        Deb::new("rin-lib", "1.0-1", "all"),
        Deb::new("rin-lib", "2.0-1", "all"),
        Deb::new("rin-base", "1.5", "amd64").fields("Priority: required\n"),
        Deb::new("rin-iscsi", "1:3.0-2", "amd64").file(
            "lib/systemd/system/rin-iscsid.service",
            "[Unit]\nDescription=test\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
        ),
        Deb::new("unrelated", "1.0", "amd64"),
        Deb::new("rin-tool", "9.0", "arm64"),
    ]
}

struct Site {
    srv: FileServer,
    dir: PathBuf,
    stack: PathBuf,
    /// The repository's files, as served under `debian/`.
    repo: Vec<(String, Vec<u8>)>,
}

fn site(dir: &Path) -> Site {
    let srv = FileServer::start();
    let repo = deb::repository(&dir.join("repo"), "bookworm", &["amd64"], &debs());
    for (path, bytes) in &repo {
        srv.put(&format!("debian/{path}"), bytes.clone());
    }
    // With the site registry's image, as a first server's bundle has it.
    let registry = fixture::busybox_image("registry:2.8.3", &["amd64", "arm64"]);
    let stack = fixture::write_stack_with(
        &dir.join("stack"),
        &[("docker.io/library/registry:2.8.3", registry)],
    )
    .unwrap();
    let spec = stack.join("bundle.yaml");
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str(&format!(
        "host_packages:\n  - target: debian-12\n    repo: {}\n    suite: bookworm\n    packages: [rin-tool]\ncomponents:\n  storage:\n    description: block storage\n    host_packages: [rin-iscsi]\n    host_services: [rin-iscsid]\n",
        srv.url("debian")
    ));
    std::fs::write(&spec, text).unwrap();
    Site {
        srv,
        dir: dir.to_path_buf(),
        stack,
        repo,
    }
}

/// What `rinbundle inspect` prints of `bundle`.
fn inspect(bundle: &Path) -> String {
    ok(
        &Command::new(bin("rinbundle"))
            .arg("inspect")
            .arg(bundle)
            .output()
            .unwrap(),
        "inspect",
    )
}

/// `apply --host-packages install` that must succeed: what it printed.
fn install(bundle: &Path, key: &Path, root: &Path, what: &str) -> String {
    ok(
        &apply(bundle, key, root, &["--host-packages", "install"]),
        what,
    )
}

fn apply(bundle: &Path, key: &Path, root: &Path, extra: &[&str]) -> std::process::Output {
    rin_tests::apply_at_root(bundle, key, root, extra)
        .output()
        .unwrap()
}

/// `rininstall doctor --json` under `root`: the host packages check's verdict and detail.
fn doctor_host_packages(root: &Path) -> (String, String) {
    let out = Command::new(bin("rininstall"))
        .args(["doctor", "--json", "--timeout", "1", "--root"])
        .arg(root)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", text(&out)));
    let c = checks
        .as_array()
        .or_else(|| checks["checks"].as_array())
        .unwrap()
        .iter()
        .find(|c| c["check"] == "host packages")
        .unwrap_or_else(|| panic!("no host packages check: {checks}"))
        .clone();
    (
        c["verdict"].as_str().unwrap().to_string(),
        c["detail"].as_str().unwrap().to_string(),
    )
}

const CARRIED: [&str; 3] = [
    "rin-iscsi_3.0-2_amd64.deb",
    "rin-lib_2.0-1_all.deb",
    "rin-tool_1.0-1_amd64.deb",
];

#[test]
fn packages_are_resolved_locked_carried_and_installed_once() {
    let t = tempfile::tempdir().unwrap();
    let s = site(t.path());
    let bundle = s.dir.join("b.tar.zst");
    let arch = ["--arch".to_string(), "amd64".to_string()];
    let (key, index) = build_signed_with(&s.dir, &s.stack, "1700000000", &bundle, &arch);

    // The lock pins the request and its dependencies, not what a minimal install has.
    let lock = std::fs::read_to_string(s.stack.join("images.lock")).unwrap();
    let locked: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .collect();
    assert_eq!(locked, ["rin-iscsi\"", "rin-lib\"", "rin-tool\""], "{lock}");
    assert!(
        lock.contains("version = \"2.0-1\""),
        "the newest rin-lib: {lock}"
    );
    assert!(!lock.contains("rin-base\""), "{lock}");

    // Carried as signed entries with their list, each under host/debian-12/amd64/.
    let mut paths: Vec<&str> = index
        .entries
        .iter()
        .filter_map(|e| e.path.strip_prefix("host/debian-12/amd64/"))
        .collect();
    paths.sort();
    let mut want: Vec<&str> = CARRIED.to_vec();
    want.push("packages.json");
    want.sort();
    assert_eq!(paths, want);
    let inspect = inspect(&bundle);
    assert!(
        inspect.contains("host       debian-12/amd64: 3 packages"),
        "{inspect}"
    );
    assert!(inspect.contains("  rin-lib_2.0-1_all.deb"), "{inspect}");

    // Without the component its package stays out; the lock (every component) is unchanged,
    // and --locked needs no repository.
    let without = s.dir.join("without.tar.zst");
    let args = [
        "--arch".to_string(),
        "amd64".into(),
        "--without".into(),
        "storage".into(),
        "--locked".into(),
    ];
    let asked = s.srv.seen().len();
    let (_, index2) = build_signed_with(&s.dir, &s.stack, "1700000000", &without, &args);
    assert_eq!(
        s.srv.seen().len(),
        asked,
        "the repository was not asked again"
    );
    assert_eq!(
        std::fs::read_to_string(s.stack.join("images.lock")).unwrap(),
        lock
    );
    let carried2: Vec<&str> = index2
        .entries
        .iter()
        .filter(|e| e.path.ends_with(".deb"))
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(
        carried2,
        [
            "host/debian-12/amd64/rin-lib_2.0-1_all.deb",
            "host/debian-12/amd64/rin-tool_1.0-1_amd64.deb"
        ]
    );

    // A Debian 12 node that has the base package: dpkg installs the three, systemctl enables
    // the service; a second apply finds them present.
    let root = s.dir.join("node");
    deb::node_root(&root, "debian", "12", &[("rin-base", "1.5")]);
    let first = install(&bundle, &key, &root, "apply installing host packages");
    assert!(
        first.contains(
            "host packages for debian-12: installed rin-iscsi 1:3.0-2, rin-lib 2.0-1, rin-tool 1.0-1 (0 present)"
        ),
        "{first}"
    );
    assert_eq!(
        deb::installed(&root),
        [
            "rin-base 1.5",
            "rin-iscsi 1:3.0-2",
            "rin-lib 2.0-1",
            "rin-tool 1.0-1"
        ]
    );
    assert!(root.join("usr/bin/rin-tool").is_file());
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/rin-iscsid.service")
            .symlink_metadata()
            .is_ok(),
        "systemctl --root enabled the unit"
    );
    let again = install(&bundle, &key, &root, "second apply");
    assert!(
        again.contains("host packages for debian-12: all 3 present"),
        "{again}"
    );
    // doctor checks them; once one is removed it names it.
    assert_eq!(
        doctor_host_packages(&root),
        (
            "ok".to_string(),
            "the 3 packages for debian-12 are installed".to_string()
        )
    );
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--log=/dev/null", "-r", "rin-tool"])
        .output()
        .unwrap();
    ok(&out, "dpkg -r");
    let (verdict, detail) = doctor_host_packages(&root);
    assert_eq!(verdict, "fail");
    assert!(
        detail.starts_with("rin-tool 1.0-1 is not installed"),
        "{detail}"
    );

    // Under --root without being asked, the commands are shown and nothing is installed.
    let shown = s.dir.join("shown");
    deb::node_root(
        &shown,
        "debian",
        "12",
        &[("rin-base", "1.5"), ("rin-lib", "3.0")],
    );
    let out = ok(&apply(&bundle, &key, &shown, &[]), "apply showing");
    assert!(
        out.contains(
            "host packages for debian-12: would install rin-iscsi 1:3.0-2, rin-tool 1.0-1 (1 present)"
        ),
        "a newer rin-lib counts as present: {out}"
    );
    assert!(
        out.contains(&format!("would run dpkg --root={} ", shown.display()))
            && out.contains("rin-tool_1.0-1_amd64.deb"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "would run systemctl --root={} enable rin-iscsid",
            shown.display()
        )),
        "{out}"
    );
    assert_eq!(deb::installed(&shown), ["rin-base 1.5", "rin-lib 3.0"]);
}

#[test]
fn a_node_that_cannot_take_the_packages_is_refused_before_anything_changes() {
    let t = tempfile::tempdir().unwrap();
    let s = site(t.path());
    let bundle = s.dir.join("b.tar.zst");
    let args = [
        "--arch".to_string(),
        "amd64".into(),
        "--without".into(),
        "storage".into(),
    ];
    let (key, _) = build_signed_with(&s.dir, &s.stack, "1700000000", &bundle, &args);

    // The base package the bundle counts on is missing: refused after the first pass, before
    // dpkg or any K3s file.
    let bare = s.dir.join("bare");
    deb::node_root(&bare, "debian", "12", &[]);
    let out = apply(&bundle, &key, &bare, &["--host-packages", "install"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("rin-tool needs rin-base (>= 1)")
            && msg.contains("cannot be installed without a network"),
        "{msg}"
    );
    assert!(deb::installed(&bare).is_empty());
    assert!(!bare.join("usr/local/bin/k3s").exists(), "no K3s file");
    assert!(!bare.join("var/lib/rininstall/release.json").exists());

    // Another release: preflight names it and the way out.
    let ubuntu = s.dir.join("ubuntu");
    deb::node_root(&ubuntu, "ubuntu", "24.04", &[("rin-base", "1.5")]);
    let out = apply(&bundle, &key, &ubuntu, &["--host-packages", "install"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("this node runs ubuntu-24.04")
            && msg.contains("host packages for debian-12 on amd64 only")
            && msg.contains("--host-packages skip"),
        "{msg}"
    );
    let skipped = ok(
        &apply(&bundle, &key, &ubuntu, &["--host-packages", "skip"]),
        "apply skipping host packages",
    );
    assert!(!skipped.contains("host packages"), "{skipped}");
    assert!(ubuntu.join("usr/local/bin/k3s").exists());
}

#[test]
fn a_package_the_repository_lacks_fails_the_build_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let s = site(t.path());
    let spec = s.stack.join("bundle.yaml");
    let text_before = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        text_before.replace("packages: [rin-tool]", "packages: [rin-tool, rin-absent]"),
    )
    .unwrap();
    ok(
        &Command::new(bin("rinbundle"))
            .args(["keygen", "--out"])
            .arg(s.dir.join("k"))
            .output()
            .unwrap(),
        "keygen",
    );
    let out = build_command(
        &s.dir,
        &s.stack,
        "1700000000",
        &s.dir.join("b.tar.zst"),
        &["--arch".to_string(), "amd64".into()],
    )
    .output()
    .unwrap();
    let msg = text(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(
        msg.contains(
            "host packages for debian-12: no package rin-absent in the repository for amd64"
        ),
        "{msg}"
    );
    assert!(!s.dir.join("b.tar.zst").exists());
}

/// With `signed_by`, the repository's InRelease must be signed by a key of that keyring (an RSA
/// key, as Debian's archive keys are, or its signing subkey), be within its Valid-Until, and
/// list each index with the checksums it has: a signature by another key, an expired InRelease,
/// one that does not list the index, and an index changed after signing fail the lock naming
/// why; and nothing is locked.
#[test]
fn a_signed_repository_is_held_to_the_keyring_signed_by_names() {
    let t = tempfile::tempdir().unwrap();
    let s = site(t.path());
    let archive = deb::ArchiveKey::new(&t.path().join("gnupg-archive"), "rsa3072");
    let other = deb::ArchiveKey::new(&t.path().join("gnupg-other"), "ed25519");
    let (path, in_release) = archive.in_release("bookworm", &s.repo);
    s.srv.put(&format!("debian/{path}"), in_release);
    std::fs::create_dir_all(s.stack.join("keys")).unwrap();
    let keyring = s.stack.join("keys/archive.asc");
    std::fs::write(&keyring, archive.public()).unwrap();
    let spec = s.stack.join("bundle.yaml");
    let yaml = std::fs::read_to_string(&spec).unwrap().replace(
        "suite: bookworm\n",
        "suite: bookworm\n    signed_by: keys/archive.asc\n",
    );
    std::fs::write(&spec, yaml).unwrap();
    let lock_file = s.stack.join("images.lock");
    let lock = || {
        let _ = std::fs::remove_file(&lock_file);
        Command::new(bin("rinbundle"))
            .args(["lock", "--arch", "amd64", "--stack"])
            .arg(&s.stack)
            .arg("--cache")
            .arg(s.dir.join("cache"))
            .output()
            .unwrap()
    };

    // A refused lock: exit 1, every one of `needles` said, no lock file.
    let refused = |needles: &[&str]| {
        let out = lock();
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        for n in needles {
            assert!(said.contains(n), "{n}: {said}");
        }
        assert!(!lock_file.exists());
    };

    let out = lock();
    assert!(out.status.success(), "{}", text(&out));
    let locked = std::fs::read_to_string(&lock_file).unwrap();
    assert!(locked.contains("rin-tool"), "{locked}");

    // The keyring of another key.
    std::fs::write(&keyring, other.public()).unwrap();
    refused(&[
        "dists/bookworm/InRelease: none of its 1 signature(s) is a good signature by a key of the keyring (keyring keys/archive.asc)",
        "hint: `signed_by:` must name the keyring",
    ]);

    // The right keyring, but a Release whose Valid-Until has passed (an old one replayed).
    std::fs::write(&keyring, archive.public()).unwrap();
    let (_, old) = archive.in_release_with(
        "bookworm",
        &s.repo,
        "Valid-Until: Sat, 01 Jan 2000 00:00:00 UTC\n",
    );
    s.srv.put(&format!("debian/{path}"), old);
    refused(&["its signature was valid until Sat, 01 Jan 2000 00:00:00 UTC"]);
    let (_, current) = archive.in_release_with(
        "bookworm",
        &s.repo,
        "Valid-Until: Fri, 31 Dec 2099 00:00:00 UTC\n",
    );
    s.srv.put(&format!("debian/{path}"), current);
    let out = lock();
    assert!(out.status.success(), "{}", text(&out));

    // A Release that does not list the index at all.
    let (_, bare) = archive.in_release("bookworm", &[]);
    s.srv.put(&format!("debian/{path}"), bare);
    refused(&["the signed InRelease lists no main/binary-amd64/Packages.gz"]);

    // Signed by a subkey of the keyring's key (gpg signs with the newest signing subkey).
    archive.add_signing_subkey("ed25519");
    let (_, by_subkey) = archive.in_release("bookworm", &s.repo);
    s.srv.put(&format!("debian/{path}"), by_subkey.clone());
    std::fs::write(&keyring, other.public()).unwrap();
    refused(&["none of its 1 signature(s) is a good signature"]);
    std::fs::write(&keyring, archive.public()).unwrap();
    let out = lock();
    assert!(out.status.success(), "{}", text(&out));

    // An index other than the one signed.
    let changed = deb::repository(
        &t.path().join("repo2"),
        "bookworm",
        &["amd64"],
        &[Deb::new("rin-tool", "6.6.6", "amd64")],
    );
    let (index, bytes) = changed
        .iter()
        .find(|(p, _)| p.ends_with("Packages.gz"))
        .unwrap();
    s.srv.put(&format!("debian/{index}"), bytes.clone());
    refused(&["Packages.gz: sha256 ", "but the signed InRelease says"]);
}

/// An RHEL-family target from local `.rpm` files (made by `rpmbuild`): carried for every
/// architecture (noarch), named from their headers, checked with `rpm -U --test` before anything
/// changes, installed with `rpm --root`, once; a carried `k3s-selinux` lets an enforcing-SELinux
/// node through preflight.
#[test]
fn rpm_files_are_carried_checked_and_installed_once() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let registry = fixture::busybox_image("registry:2.8.3", &["amd64", "arm64"]);
    let stack = fixture::write_stack_with(
        &dir.join("stack"),
        &[("docker.io/library/registry:2.8.3", registry)],
    )
    .unwrap();
    let rpms = stack.join("rpms");
    std::fs::create_dir_all(&rpms).unwrap();
    rin_tests::rpm::build(
        &rpms,
        "k3s-selinux",
        "1.6",
        "1.el9",
        "rin-container-selinux >= 2",
    );
    rin_tests::rpm::build(
        &rpms,
        "rin-container-selinux",
        "2.229.0",
        "1.el9",
        "rin-base",
    );
    let base = rin_tests::rpm::build(dir, "rin-base", "1.0", "1", "");
    let spec = stack.join("bundle.yaml");
    let mut text_ = std::fs::read_to_string(&spec).unwrap();
    text_.push_str(
        "host_packages:\n  - target: rhel-9\n    format: rpm\n    files: [rpms/k3s-selinux-1.6-1.el9.noarch.rpm, rpms/rin-container-selinux-2.229.0-1.el9.noarch.rpm]\n",
    );
    std::fs::write(&spec, text_).unwrap();
    let bundle = dir.join("b.tar.zst");
    let arch = ["--arch".to_string(), "amd64".to_string()];
    let (key, _) = build_signed_with(dir, &stack, "1700000000", &bundle, &arch);
    let inspect = inspect(&bundle);
    assert!(
        inspect.contains("host       rhel-9/amd64: 2 packages")
            && inspect.contains("  k3s-selinux-1.6-1.el9.noarch.rpm"),
        "{inspect}"
    );

    // Without the package they need at the base: rpm's own check refuses, nothing changes.
    let bare = dir.join("bare");
    rin_tests::rpm::node_root(&bare, "rhel", "9.4", &[]);
    let out = apply(&bundle, &key, &bare, &["--host-packages", "install"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("rin-base is needed by rin-container-selinux-2.229.0-1.el9.noarch"),
        "{msg}"
    );
    assert!(rin_tests::rpm::installed(&bare).is_empty());
    assert!(!bare.join("usr/local/bin/k3s").exists(), "no K3s file");

    // A Rocky-style 9.4 node with it: both installed; again: both present.
    // SELinux enforcing without K3s's policy: preflight lets it pass, the bundle brings it.
    let node = dir.join("node");
    rin_tests::rpm::node_root(&node, "rhel", "9.4", &[base]);
    std::fs::create_dir_all(node.join("sys/fs/selinux")).unwrap();
    std::fs::write(node.join("sys/fs/selinux/enforce"), "1\n").unwrap();
    let first = install(&bundle, &key, &node, "apply installing rpm packages");
    assert!(
        first.contains("host packages for rhel-9: installed k3s-selinux 1.6-1.el9, rin-container-selinux 2.229.0-1.el9 (0 present)"),
        "{first}"
    );
    assert_eq!(
        rin_tests::rpm::installed(&node),
        [
            "k3s-selinux 1.6-1.el9",
            "rin-base 1.0-1",
            "rin-container-selinux 2.229.0-1.el9"
        ]
    );
    let again = install(&bundle, &key, &node, "second apply");
    assert!(
        again.contains("host packages for rhel-9: all 2 present"),
        "{again}"
    );
}
