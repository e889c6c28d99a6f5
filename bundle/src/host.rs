//! Host packages (FORMAT.md section 6, `host/`): the operating system packages a stack needs on
//! every node (an iSCSI initiator, an NFS client), carried for one operating system release and
//! architecture under `host/<target>/<arch>/`, with a list, `packages.json`, that says what each
//! file is. The list is an ordinary entry, so the signed index covers it and every package.

use crate::Arch;
use serde::{Deserialize, Serialize};

/// Where host packages live in a bundle.
pub const DIR: &str = "host";
/// The list's file name in each `host/<target>/<arch>/` directory.
pub const LIST: &str = "packages.json";
/// Debian's packages (`.deb`, installed with `dpkg`).
pub const FORMAT_DEB: &str = "deb";
/// RPM packages (`.rpm`, installed with `rpm`): RHEL and its kin.
pub const FORMAT_RPM: &str = "rpm";
/// Largest list read into memory.
pub const MAX_LIST: u64 = 4 << 20;

/// `host/<target>/<arch>/packages.json`: the packages carried for one target and architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostList {
    /// `deb` or `rpm`.
    pub format: String,
    /// The operating system release: `<os-release ID>-<VERSION_ID>` (`debian-12`,
    /// `ubuntu-24.04`).
    pub target: String,
    /// The node architecture (Go's name, as in the index's platforms).
    pub arch: Arch,
    /// Sorted by name.
    pub packages: Vec<HostPackage>,
    /// systemd units to enable (and start) once the packages are installed; sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// One package file of a [`HostList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPackage {
    pub name: String,
    pub version: String,
    /// The package's own architecture field (`arm64`, `all`).
    pub architecture: String,
    /// The bundle entry holding the file: `host/<target>/<arch>/<file>`.
    pub path: String,
    /// Named by the stack (the rest are their dependencies).
    pub requested: bool,
    /// The control fields the site checks before it installs anything, as the repository gives
    /// them (absent when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub depends: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pre_depends: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provides: String,
}

/// `host/<target>/<arch>/`, the directory of one list.
pub fn dir(target: &str, arch: &Arch) -> String {
    format!("{DIR}/{target}/{arch}")
}

/// The path of a list.
pub fn list_path(target: &str, arch: &Arch) -> String {
    format!("{}/{LIST}", dir(target, arch))
}

/// The target and architecture of a list's path, when `path` is one.
pub fn parse_list_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("host/")?;
    let mut parts = rest.split('/');
    let (target, arch, file) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && file == LIST).then_some((target, arch))
}

/// The package files an index carries, by (target, arch) from their paths (lists left out).
pub fn carried(
    index: &crate::Index,
) -> std::collections::BTreeMap<(&str, &str), Vec<&crate::index::Entry>> {
    let mut out: std::collections::BTreeMap<_, Vec<_>> = Default::default();
    for e in &index.entries {
        let Some(rest) = e.path.strip_prefix("host/") else {
            continue;
        };
        let mut parts = rest.splitn(3, '/');
        if let (Some(t), Some(a), Some(f)) = (parts.next(), parts.next(), parts.next())
            && f != LIST
            && !f.contains('/')
        {
            out.entry((t, a)).or_default().push(e);
        }
    }
    out
}

/// Is `target` well-formed: `<os>-<version>`, lowercase letters, digits, `.`, `_` and `-`, the
/// os part starting with a letter, the version with a digit (`debian-12`, `ubuntu-24.04`,
/// `opensuse-leap-15.6`)?
pub fn check_target(target: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "host package target {target:?} is not `<os>-<version>` as /etc/os-release names them \
             (ID and VERSION_ID: debian-12, ubuntu-24.04, raspbian-12)"
        )
    };
    if target.is_empty()
        || !target
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(bad());
    }
    let (os, version) = target.rsplit_once('-').ok_or_else(bad)?;
    if !os.starts_with(|c: char| c.is_ascii_lowercase())
        || !version.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(bad());
    }
    Ok(())
}

/// Does a node whose `/etc/os-release` says `ID=id` and `VERSION_ID=version_id` run `target`?
/// The target's version is the whole `VERSION_ID` or its leading part (`rhel-9` runs on 9.4).
pub fn target_matches(target: &str, id: &str, version_id: &str) -> bool {
    let Some((os, version)) = target.rsplit_once('-') else {
        return false;
    };
    os == id
        && (version_id == version
            || version_id
                .strip_prefix(version)
                .is_some_and(|rest| rest.starts_with('.')))
}

/// Debian's name of an architecture (`dpkg --print-architecture`).
pub fn deb_arch(arch: &Arch) -> &str {
    match arch.as_str() {
        "arm" => "armhf",
        "386" => "i386",
        "ppc64le" => "ppc64el",
        other => other,
    }
}

/// RPM's name of an architecture (`rpm --eval %_arch`).
pub fn rpm_arch(arch: &Arch) -> &str {
    match arch.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "armv7hl",
        "386" => "i686",
        other => other,
    }
}

/// Parse a list: canonical JSON, known fields, its own target and architecture, every path
/// under its directory, sorted by name.
pub fn read(bytes: &[u8]) -> Result<HostList, String> {
    let list: HostList =
        serde_json::from_slice(bytes).map_err(|e| format!("not a host package list: {e}"))?;
    if crate::json::canonical_json(&list) != bytes {
        return Err("not canonical JSON".into());
    }
    if list.format != FORMAT_DEB && list.format != FORMAT_RPM {
        return Err(format!(
            "package format {:?} is not known (this installer knows {FORMAT_DEB:?} and {FORMAT_RPM:?})",
            list.format
        ));
    }
    check_target(&list.target)?;
    let dir = format!("{}/", dir(&list.target, &list.arch));
    for p in &list.packages {
        if !p.path.starts_with(&dir) || p.path.ends_with(LIST) {
            return Err(format!("{} is not a package file under {dir}", p.path));
        }
    }
    if !list.packages.windows(2).all(|w| w[0].name < w[1].name) {
        return Err("packages are not sorted by name, or one is listed twice".into());
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_an_os_release() {
        for ok in [
            "debian-12",
            "ubuntu-24.04",
            "raspbian-12",
            "opensuse-leap-15.6",
        ] {
            assert!(check_target(ok).is_ok(), "{ok}");
        }
        for bad in [
            "debian",
            "Debian-12",
            "12-debian",
            "debian-",
            "deb ian-12",
            "",
        ] {
            assert!(check_target(bad).is_err(), "{bad}");
        }
        assert!(target_matches("debian-12", "debian", "12"));
        assert!(target_matches("rhel-9", "rhel", "9.4"));
        assert!(!target_matches("rhel-9", "rhel", "10.0"));
        assert!(!target_matches("debian-1", "debian", "12"));
        assert!(!target_matches("debian-12", "raspbian", "12"));
    }

    #[test]
    fn a_list_round_trips_and_is_held_to_its_directory() {
        let list = HostList {
            format: FORMAT_DEB.into(),
            target: "debian-12".into(),
            arch: Arch::known("arm64").unwrap(),
            packages: vec![HostPackage {
                name: "nfs-common".into(),
                version: "1:2.6.2-4".into(),
                architecture: "arm64".into(),
                path: "host/debian-12/arm64/nfs-common_2.6.2-4_arm64.deb".into(),
                requested: true,
                depends: "libc6 (>= 2.34)".into(),
                pre_depends: String::new(),
                provides: String::new(),
            }],
            services: vec![],
        };
        let bytes = crate::json::canonical_json(&list);
        assert_eq!(read(&bytes).unwrap(), list);
        assert_eq!(
            parse_list_path(&list_path("debian-12", &list.arch)),
            Some(("debian-12", "arm64"))
        );
        let mut elsewhere = list.clone();
        elsewhere.packages[0].path = "host/debian-12/amd64/x.deb".into();
        let err = read(&crate::json::canonical_json(&elsewhere)).unwrap_err();
        assert!(err.contains("not a package file under"), "{err}");
        let pretty = serde_json::to_vec_pretty(&list).unwrap();
        assert_eq!(read(&pretty).unwrap_err(), "not canonical JSON");
        let mut apk = list.clone();
        apk.format = "apk".into();
        let err = read(&crate::json::canonical_json(&apk)).unwrap_err();
        assert!(err.contains("package format \"apk\" is not known"), "{err}");
        let mut twice = list.clone();
        twice.packages.push(list.packages[0].clone());
        let err = read(&crate::json::canonical_json(&twice)).unwrap_err();
        assert!(
            err.contains("not sorted by name, or one is listed twice"),
            "{err}"
        );
    }
}
