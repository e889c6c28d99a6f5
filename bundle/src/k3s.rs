//! K3s's release files, as the bundle carries them under `k3s/` by their upstream names, and
//! the installer executables under `installer/`: one place that knows each name per
//! architecture, for the builder that packs them and the installer that looks for them.

use crate::Arch;
use std::collections::BTreeMap;

/// The bundle directory holding K3s's release files.
pub const DIR: &str = "k3s";
/// K3s's install script, carried once.
pub const INSTALL_SCRIPT: &str = "install.sh";
/// Compressions the air-gap images archive is published with, the preferred first.
pub const AIRGAP_SUFFIXES: [&str; 3] = [".zst", ".gz", ""];

/// The release binary: `k3s` for amd64, `k3s-<arch>` otherwise.
pub fn binary(arch: &Arch) -> String {
    if arch.as_str() == "amd64" {
        "k3s".into()
    } else {
        format!("k3s-{arch}")
    }
}

/// The air-gap images archive, uncompressed name (`k3s-airgap-images-<arch>.tar`); see
/// [`AIRGAP_SUFFIXES`].
pub fn airgap_images(arch: &Arch) -> String {
    format!("k3s-airgap-images-{arch}.tar")
}

/// The release's checksum list for an architecture.
pub fn sums(arch: &Arch) -> String {
    format!("sha256sum-{arch}.txt")
}

/// The bundle path of a release file.
pub fn path(name: &str) -> String {
    format!("{DIR}/{name}")
}

/// `sha256sum` output: file name → lowercase hex digest.
pub fn parse_sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(h, n)| {
            (
                n.trim().trim_start_matches('*').to_string(),
                h.to_lowercase(),
            )
        })
        .collect()
}

/// The installer executable for an architecture: `rininstall-linux-<arch>`.
pub fn installer(arch: &Arch) -> String {
    format!("rininstall-{}-{arch}", crate::platform::LINUX)
}

/// The bundle directory holding the installers.
pub const INSTALLER_DIR: &str = "installer";

/// The bundle path of the installer for an architecture.
pub fn installer_path(arch: &Arch) -> String {
    format!("{INSTALLER_DIR}/{}", installer(arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_per_architecture() {
        let amd64: Arch = "amd64".parse().unwrap();
        let arm64: Arch = "arm64".parse().unwrap();
        assert_eq!(binary(&amd64), "k3s");
        assert_eq!(path(&binary(&arm64)), "k3s/k3s-arm64");
        assert_eq!(airgap_images(&arm64), "k3s-airgap-images-arm64.tar");
        assert_eq!(sums(&arm64), "sha256sum-arm64.txt");
        assert_eq!(installer_path(&arm64), "installer/rininstall-linux-arm64");
        let listed = parse_sums("ABC1  k3s-arm64\ndef2 *install.sh\n\n");
        assert_eq!(listed["k3s-arm64"], "abc1");
        assert_eq!(listed["install.sh"], "def2");
    }
}
