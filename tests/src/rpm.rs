//! Real RPM packages for the host packages tests: `.rpm` files made by `rpmbuild` (noarch, one
//! file each), and a node's root with an rpm database (`rpm --root DIR --initdb`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Build `NAME-VERSION-RELEASE.noarch.rpm` into `dir`, requiring `requires` (an RPM `Requires:`
/// value, or empty).
pub fn build(dir: &Path, name: &str, version: &str, release: &str, requires: &str) -> PathBuf {
    let top = dir.join(format!("rpmbuild-{name}"));
    std::fs::create_dir_all(top.join("SPECS")).expect("mkdir");
    let requires = if requires.is_empty() {
        String::new()
    } else {
        format!("Requires: {requires}\n")
    };
    let spec = top.join("SPECS/p.spec");
    std::fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: {version}\nRelease: {release}\nSummary: a package the tests made\nLicense: Apache-2.0\nBuildArch: noarch\n{requires}%description\ntest\n%install\nmkdir -p %{{buildroot}}/usr/share/rin-test\necho {name} > %{{buildroot}}/usr/share/rin-test/{name}\n%files\n/usr/share/rin-test/{name}\n"
        ),
    )
    .expect("spec");
    let o = Command::new("rpmbuild")
        .args(["--quiet", "-bb", "--define"])
        .arg(format!("_topdir {}", top.display()))
        .arg(&spec)
        .output()
        .expect("rpmbuild (apt-get install rpm)");
    assert!(o.status.success(), "rpmbuild: {}", crate::text(&o));
    let file = format!("{name}-{version}-{release}.noarch.rpm");
    let out = dir.join(&file);
    std::fs::rename(top.join("RPMS/noarch").join(&file), &out).expect("rename rpm");
    std::fs::remove_dir_all(&top).expect("rm rpmbuild");
    out
}

/// A node's root for rpm: `/etc/os-release` saying `id` and `version_id`, an rpm database, and
/// `installed` (.rpm files) installed into it.
pub fn node_root(root: &Path, id: &str, version_id: &str, installed: &[PathBuf]) {
    std::fs::create_dir_all(root.join("etc")).expect("mkdir etc");
    std::fs::write(
        root.join("etc/os-release"),
        format!("NAME=\"test\"\nID=\"{id}\"\nVERSION_ID=\"{version_id}\"\n"),
    )
    .expect("os-release");
    let root_arg = format!("--root={}", root.display());
    let o = Command::new("rpm")
        .args([&root_arg, "--initdb"])
        .output()
        .expect("rpm");
    assert!(o.status.success(), "rpm --initdb: {}", crate::text(&o));
    if !installed.is_empty() {
        let o = Command::new("rpm")
            .args([&root_arg, "-U"])
            .args(installed)
            .output()
            .expect("rpm");
        assert!(o.status.success(), "rpm -U: {}", crate::text(&o));
    }
}

/// The packages rpm's database under `root` holds: `NAME VERSION-RELEASE`, sorted.
pub fn installed(root: &Path) -> Vec<String> {
    let o = Command::new("rpm")
        .arg(format!("--root={}", root.display()))
        .args(["-qa", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\\n"])
        .output()
        .expect("rpm -qa");
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}
