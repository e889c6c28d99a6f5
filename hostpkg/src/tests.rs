use super::*;

fn stanza(name: &str, version: &str, arch: &str, extra: &str) -> String {
    format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {arch}\n{extra}Filename: pool/main/{name}_{version}_{arch}.deb\nSize: 100\nSHA256: {}\n\n",
        "ab".repeat(32)
    )
}

fn repo() -> Repository {
    let text = [
        stanza("libc6", "2.36-9", "arm64", "Priority: required\n"),
        stanza("bash", "5.2-2", "arm64", "Essential: yes\n"),
        stanza("mawk", "1.3.4-1", "arm64", "Priority: required\nProvides: awk\n"),
        stanza(
            "nfs-common",
            "1:2.6.2-4",
            "arm64",
            "Depends: libc6 (>= 2.34), libnfsidmap1 (>= 1:2.6), rpcbind | portmap, awk, ucf\nRecommends: python3\n",
        ),
        stanza("nfs-common", "1:2.6.1-1", "arm64", "Depends: libc6\n"),
        stanza("nfs-common", "1:2.7.0-1", "amd64", "Depends: libc6\n"),
        stanza("libnfsidmap1", "1:2.6.2-4", "arm64", "Depends: libc6\n"),
        stanza("rpcbind", "1.2.6-6", "arm64", "Pre-Depends: init-system-helpers (>= 1.54~)\n"),
        stanza("init-system-helpers", "1.65.2", "all", "Depends: perl-base\n"),
        stanza("perl-base", "5.36.0-7", "arm64", "Essential: yes\n"),
        stanza("ucf", "3.0043", "all", "Depends: debconf (>= 1.5.19) | cdebconf\n"),
        stanza("cdebconf", "0.270", "arm64", "Provides: debconf-2.0\n"),
        stanza("open-iscsi", "2.1.8-1", "arm64", "Depends: libisns0 (>= 0.101), missing-lib\n"),
        stanza("libisns0", "0.101-0.2", "arm64", ""),
        stanza("libudev1", "252.39-1", "arm64", "Priority: required\nDepends: libc6 (>= 2.34)\n"),
        stanza("udev", "252.39-1", "arm64", "Depends: libudev1 (= 252.39-1), libc6 (>= 2.36-9)\n"),
        stanza("needs-virtual", "1", "arm64", "Depends: debconf-2.0\n"),
        stanza("needs-versioned-virtual", "1", "arm64", "Depends: debconf-2.0 (>= 1)\n"),
    ]
    .concat();
    Repository::read(text.as_bytes(), "arm64").unwrap()
}

fn names(r: &[Resolved]) -> Vec<String> {
    r.iter()
        .map(|r| format!("{}={}", r.candidate.name, r.candidate.version))
        .collect()
}

fn none(_: &str) -> Option<String> {
    None
}

#[test]
fn resolution_takes_the_newest_and_the_dependencies_a_minimal_install_lacks() {
    let repo = repo();
    assert_eq!(repo.len(), 17, "the amd64 package is not kept");
    let got = repo
        .resolve(&["nfs-common".parse().unwrap()], &none)
        .unwrap();
    // libc6 (required), mawk for `awk` (required) and perl-base (essential) are on every
    // system; rpcbind is the first alternative; ucf's `debconf | cdebconf` takes cdebconf.
    assert_eq!(
        names(&got),
        [
            "cdebconf=0.270",
            "init-system-helpers=1.65.2",
            "libnfsidmap1=1:2.6.2-4",
            "nfs-common=1:2.6.2-4",
            "rpcbind=1.2.6-6",
            "ucf=3.0043",
        ]
    );
    let nfs = got
        .iter()
        .find(|r| r.candidate.name == "nfs-common")
        .unwrap();
    assert!(nfs.requested);
    assert_eq!(
        nfs.needs.iter().cloned().collect::<Vec<_>>(),
        ["libnfsidmap1", "rpcbind", "ucf"]
    );
    assert!(got.iter().filter(|r| r.requested).count() == 1);
}

#[test]
fn a_dependency_on_the_exact_version_of_a_minimal_install_package_is_carried() {
    // A node of the release may have an older libudev1 than the repository's point release;
    // libc6 (>= the current version) the same. Their own unversioned needs stay out.
    let got = repo().resolve(&["udev".parse().unwrap()], &none).unwrap();
    assert_eq!(
        names(&got),
        ["libc6=2.36-9", "libudev1=252.39-1", "udev=252.39-1"]
    );
}

#[test]
fn a_pinned_or_preferred_version_is_kept() {
    let repo = repo();
    let got = repo
        .resolve(&["nfs-common=1:2.6.1-1".parse().unwrap()], &none)
        .unwrap();
    assert_eq!(names(&got), ["nfs-common=1:2.6.1-1"]);
    let prefer = |n: &str| (n == "nfs-common").then(|| "1:2.6.1-1".to_string());
    let got = repo
        .resolve(&["nfs-common".parse().unwrap()], &prefer)
        .unwrap();
    assert_eq!(names(&got), ["nfs-common=1:2.6.1-1"]);
    let err = repo
        .resolve(&["nfs-common=9".parse().unwrap()], &none)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no package nfs-common=9 in the repository for arm64"
    );
}

#[test]
fn what_cannot_be_met_is_named() {
    let repo = repo();
    let err = repo
        .resolve(&["open-iscsi".parse().unwrap()], &none)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "open-iscsi depends on `missing-lib`, which the repository does not have for arm64"
    );
    // A virtual package is met by a provider; a versioned one only by a versioned provide.
    let got = repo
        .resolve(&["needs-virtual".parse().unwrap()], &none)
        .unwrap();
    assert_eq!(names(&got), ["cdebconf=0.270", "needs-virtual=1"]);
    assert!(
        repo.resolve(&["needs-versioned-virtual".parse().unwrap()], &none)
            .is_err()
    );
}

#[test]
fn requests_are_checked_as_they_parse() {
    assert!("nfs-common".parse::<Request>().is_ok());
    assert!("libstdc++6=12.2.0-14".parse::<Request>().is_ok());
    for bad in ["NFS", "a", "nfs common", "x=", "-x"] {
        assert!(bad.parse::<Request>().is_err(), "{bad}");
    }
}

fn pkg<'a>(name: &'a str, version: &'a str, depends: &'a str, requested: bool) -> Package<'a> {
    Package {
        name,
        version,
        depends,
        pre_depends: "",
        provides: "",
        requested,
    }
}

const STATUS: &str = "\
Package: libc6
Status: install ok installed
Version: 2.36-9

Package: rpcbind
Status: deinstall ok config-files
Version: 1.2.6-6

Package: mawk
Status: install ok installed
Version: 1.3.4-1
Provides: awk

Package: libudev1
Status: install ok installed
Version: 252.38-1

Package: udev
Status: install ok installed
Version: 252.38-1
Depends: libudev1 (= 252.38-1), libc6
";

fn planned(set: &[Package<'_>], have: &Have) -> (Vec<String>, Vec<String>) {
    let p = plan(set, have).unwrap();
    (
        p.install.iter().map(|&i| set[i].name.to_string()).collect(),
        p.unmet,
    )
}

#[test]
fn the_plan_installs_what_the_node_lacks_and_changes_nothing_else() {
    let have = Have::from_status(STATUS.as_bytes()).unwrap();
    assert_eq!(have.version("rpcbind"), None, "only config files are left");
    let set = [
        pkg(
            "nfs-common",
            "1:2.6.2-4",
            "libc6 (>= 2.34), rpcbind, awk",
            true,
        ),
        pkg("rpcbind", "1.2.6-6", "libc6", false),
        pkg("libc6", "2.36-10", "", false),
        pkg("unused", "1", "", false),
    ];
    // libc6 is older on the node but meets what is asked: left alone, as is what no one needs.
    assert_eq!(
        planned(&set, &have),
        (vec!["nfs-common".into(), "rpcbind".into()], vec![])
    );
    // A requested package the node has, at any version, is the node's own.
    let have_nfs = {
        let mut h = have.clone();
        h.add(&pkg("nfs-common", "1:2.6.0-1", "", false)).unwrap();
        h
    };
    assert_eq!(planned(&set, &have_nfs), (vec![], vec![]));
}

#[test]
fn what_nothing_meets_and_upgrades_that_would_break_the_node_are_unmet() {
    let have = Have::from_status(STATUS.as_bytes()).unwrap();
    let set = [
        pkg("tool", "1", "libc6 (>= 2.40) | musl, rpcbind", true),
        pkg("open-iscsi", "2.1.8-1", "libudev1 (>= 252.39-1)", true),
        pkg("libudev1", "252.39-1", "", false),
    ];
    let (install, unmet) = planned(&set, &have);
    assert_eq!(install, ["tool", "open-iscsi", "libudev1"]);
    assert_eq!(
        unmet,
        [
            "tool needs libc6 (>= 2.40) | musl",
            "tool needs rpcbind",
            "the upgrade breaks udev 252.38-1, which needs libudev1 (= 252.38-1)",
        ]
    );
    // A dependency the node's older version meets needs no upgrade, so nothing breaks.
    let ok_set = [
        pkg("open-iscsi", "2.1.8-1", "libudev1 (>= 252.38-1)", true),
        pkg("libudev1", "252.39-1", "", false),
    ];
    assert_eq!(planned(&ok_set, &have), (vec!["open-iscsi".into()], vec![]));
}

#[test]
fn a_release_files_sha256_lines_are_read_and_a_malformed_one_refused() {
    let a = "a".repeat(64);
    let b = "B".repeat(64);
    let text = format!(
        "Origin: Debian\nSuite: stable\nValid-Until: Sat, 12 Dec 2026 03:33:28 UTC\nMD5Sum:\n 00 1 main/binary-amd64/Packages\nSHA256:\n {a}     1234 main/binary-amd64/Packages.gz\n {b} 99 main/binary-arm64/Packages\nDescription: x\n"
    );
    let r = Release::parse(&text).unwrap();
    assert_eq!(
        r.sha256.get("main/binary-amd64/Packages.gz"),
        Some(&(a.clone(), 1234))
    );
    assert_eq!(
        r.sha256.get("main/binary-arm64/Packages"),
        Some(&("b".repeat(64), 99))
    );
    assert_eq!(r.sha256.len(), 2);
    assert_eq!(
        r.valid_until.as_deref(),
        Some("Sat, 12 Dec 2026 03:33:28 UTC")
    );
    for bad in [
        "Origin: Debian\n".to_string(),
        format!("SHA256:\n {a} x main/Packages\n"),
        format!("SHA256:\n {a} 12\n"),
        "SHA256:\n abc 12 main/Packages\n".to_string(),
    ] {
        assert!(
            matches!(Release::parse(&bad), Err(Error::Release(_))),
            "{bad}"
        );
    }
}
