#![allow(clippy::unwrap_used)]
use super::*;
use rin_bundle::host::FORMAT_DEB;

fn list(services: &[&str]) -> HostList {
    let pkg = |name: &str, version: &str, depends: &str| HostPackage {
        name: name.into(),
        version: version.into(),
        architecture: "arm64".into(),
        path: format!("host/debian-12/arm64/{name}.deb"),
        requested: name == "nfs-common",
        depends: depends.into(),
        pre_depends: String::new(),
        provides: String::new(),
    };
    HostList {
        format: FORMAT_DEB.into(),
        target: "debian-12".into(),
        arch: Arch::known("arm64").unwrap(),
        packages: vec![
            pkg("libnfsidmap1", "1:2.6.2-4", "libc6"),
            pkg(
                "nfs-common",
                "1:2.6.2-4",
                "libnfsidmap1 (>= 1:2.6), libc6 (>= 2.34)",
            ),
        ],
        services: services.iter().map(|s| s.to_string()).collect(),
    }
}

fn root_with(os_release: Option<&str>, status: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    if let Some(o) = os_release {
        std::fs::create_dir_all(t.path().join("usr/lib")).unwrap();
        std::fs::write(t.path().join("usr/lib/os-release"), o).unwrap();
    }
    std::fs::create_dir_all(t.path().join("var/lib/dpkg")).unwrap();
    std::fs::write(t.path().join("var/lib/dpkg/status"), status).unwrap();
    t
}

const LIBC: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n";

#[test]
fn os_release_is_read_from_etc_or_usr_lib() {
    let t = root_with(
        Some("NAME=\"Raspbian GNU/Linux\"\nID=raspbian\nID_LIKE=debian\nVERSION_ID=\"12\"\n"),
        "",
    );
    let os = OsRelease::read(t.path()).unwrap();
    assert_eq!(os.to_string(), "raspbian-12");
    std::fs::create_dir_all(t.path().join("etc")).unwrap();
    std::fs::write(
        t.path().join("etc/os-release"),
        "ID='rocky'\nVERSION_ID=9.4\n",
    )
    .unwrap();
    assert_eq!(OsRelease::read(t.path()).unwrap().to_string(), "rocky-9.4");
    assert!(OsRelease::read(&t.path().join("none")).is_none());
}

#[test]
fn the_plan_installs_what_the_node_lacks_and_refuses_what_cannot_be_met() {
    let older = "Package: libnfsidmap1\nStatus: install ok installed\nVersion: 1:2.6.1-1\n";
    let t = root_with(None, &format!("{LIBC}\n{older}"));
    let plan = plan(list(&[]), t.path(), None).unwrap();
    assert_eq!(
        plan.install
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["nfs-common"],
        "the node's libnfsidmap1 meets `>= 1:2.6`: left as it is"
    );
    assert_eq!(plan.present, ["libnfsidmap1"]);
    assert!(plan.refusal().is_none(), "{:?}", plan.unmet);

    let mut strict = list(&[]);
    strict.packages[1].depends = "libnfsidmap1 (>= 1:2.6.2-4), libc6".into();
    let plan = self::plan(strict, t.path(), None).unwrap();
    assert_eq!(
        plan.install
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["libnfsidmap1", "nfs-common"],
        "upgraded when the newer one is needed"
    );

    let bare = root_with(None, "");
    let plan2 = self::plan(list(&[]), bare.path(), None).unwrap();
    let why = plan2.refusal().unwrap();
    assert!(
        why.contains("nfs-common needs libc6 (>= 2.34)")
            && why.contains("libnfsidmap1 needs libc6"),
        "{why}"
    );

    let current = root_with(
        None,
        &format!(
            "{LIBC}\n{older}\nPackage: nfs-common\nStatus: install ok installed\nVersion: 1:2.7-1\n"
        ),
    );
    let plan3 = self::plan(list(&["rpc-statd"]), current.path(), None).unwrap();
    assert!(plan3.install.is_empty());
    assert_eq!(plan3.present, ["libnfsidmap1", "nfs-common"]);
    // Nothing to install: the services are still enabled (idempotent).
    assert_eq!(
        plan3.commands(Path::new("/"), &|p| PathBuf::from(p)),
        [vec!["systemctl", "enable", "--now", "rpc-statd"]]
    );
}

#[test]
fn commands_name_the_staged_files_and_the_root() {
    let t = root_with(None, LIBC);
    let plan = plan(list(&["iscsid"]), t.path(), None).unwrap();
    let staged = |p: &str| Path::new("/state/staging/abc").join(p);
    let cmds = plan.commands(Path::new("/"), &staged);
    assert_eq!(
        cmds[0],
        [
            "dpkg",
            "--force-confdef",
            "--force-confold",
            "-i",
            "/state/staging/abc/host/debian-12/arm64/libnfsidmap1.deb",
            "/state/staging/abc/host/debian-12/arm64/nfs-common.deb"
        ]
    );
    assert_eq!(cmds[1], ["systemctl", "enable", "--now", "iscsid"]);
    let rooted = plan.commands(Path::new("/mnt/node"), &staged);
    assert_eq!(rooted[0][1], "--root=/mnt/node");
    assert_eq!(
        rooted[1],
        ["systemctl", "--root=/mnt/node", "enable", "iscsid"]
    );
}
