//! `images.lock`: what every image tag, chart and K3s file of a stack resolved to, with the
//! semantics of `Cargo.lock`. `rinbundle lock` resolves everything afresh; `rinbundle build` keeps
//! the entries that still match the stack, resolves only what is missing, drops what the stack no
//! longer names and rewrites the file; `--locked` refuses to build when anything would change.
//!
//! The file is TOML, sorted, one value per line, so a change reads well in a diff.

use crate::error::{BuildError, Result};
use crate::spec::StackSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const LOCK_VERSION: u32 = 1;

const HEADER: &str = "\
# images.lock: what each image, chart and K3s file of this stack resolved to.
# Written by `rinbundle lock` and `rinbundle build`; commit it beside bundle.yaml.
# `rinbundle build --locked` builds exactly this and refuses if it is missing or stale.
";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    #[serde(default, rename = "image", skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<LockedImage>,
    #[serde(default, rename = "chart", skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<LockedChart>,
    #[serde(default, rename = "k3s", skip_serializing_if = "Vec::is_empty")]
    pub k3s: Vec<LockedFile>,
    #[serde(
        default,
        rename = "host_package",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub host_packages: Vec<LockedPackage>,
}

/// An operating system package for one target and architecture, with what the site checks
/// before it installs it (its control fields) and what it needs of the other locked packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub target: String,
    pub arch: rin_bundle::Arch,
    /// The repository as `HostPackagesSpec::source` writes it.
    pub source: String,
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Relative to the repository's URL.
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// Named by the stack or one of its components.
    pub requested: bool,
    /// The locked packages its dependencies are met by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub depends: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pre_depends: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provides: String,
}

/// An image pulled from a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// The reference as bundle.yaml writes it.
    pub reference: String,
    /// What it resolved to: an image index (multi-arch) or a single manifest.
    pub digest: String,
    /// Every platform the source offers, with its manifest digest (`linux/arm64` → `sha256:…`).
    #[serde(default)]
    pub platforms: BTreeMap<rin_bundle::Platform, String>,
}

/// A chart from a Helm repository or an OCI registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedChart {
    pub name: String,
    pub version: String,
    /// The repository as bundle.yaml writes it (`https://…` or `oci://…`).
    pub repo: String,
    /// Where the archive was fetched from.
    pub url: String,
    /// sha256 of the chart archive (`.tgz`).
    pub sha256: String,
}

/// One K3s release file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    pub version: String,
    pub file: String,
    pub sha256: String,
}

impl Lock {
    pub fn load(path: &Path) -> Result<Option<Lock>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(BuildError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let lock: Lock = toml::from_str(&text).map_err(|e| BuildError::Lock {
            path: path.to_path_buf(),
            reason: format!("not a valid lock file: {e}"),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(BuildError::Lock {
                path: path.to_path_buf(),
                reason: format!(
                    "lock version {} is not {LOCK_VERSION}; run `rinbundle lock` to rewrite it",
                    lock.version
                ),
            });
        }
        Ok(Some(lock))
    }

    /// Sorted, so the same content is always the same text.
    pub fn sort(&mut self) {
        self.images.sort_by(|a, b| a.reference.cmp(&b.reference));
        self.charts
            .sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        self.k3s
            .sort_by(|a, b| (&a.version, &a.file).cmp(&(&b.version, &b.file)));
        self.host_packages
            .sort_by(|a, b| (&a.target, &a.arch, &a.name).cmp(&(&b.target, &b.arch, &b.name)));
    }

    /// The packages locked for one target and architecture.
    pub fn host_set<'a>(
        &'a self,
        target: &'a str,
        arch: &'a rin_bundle::Arch,
    ) -> impl Iterator<Item = &'a LockedPackage> + 'a {
        self.host_packages
            .iter()
            .filter(move |p| p.target == target && &p.arch == arch)
    }

    pub fn to_text(&self) -> String {
        let mut l = self.clone();
        l.version = LOCK_VERSION;
        l.sort();
        // Plain data with string keys: serialising cannot fail.
        let body = toml::to_string(&l).expect("a lock serialises");
        format!("{HEADER}\n{body}")
    }

    /// Write the lock if its text changed; true when written.
    pub fn save(&self, path: &Path) -> Result<bool> {
        let text = self.to_text();
        if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        crate::cache::write_atomic(path, text.as_bytes())?;
        Ok(true)
    }

    pub fn image(&self, reference: &str) -> Option<&LockedImage> {
        self.images.iter().find(|i| i.reference == reference)
    }

    pub fn chart(&self, name: &str, version: &str, repo: &str) -> Option<&LockedChart> {
        self.charts
            .iter()
            .find(|c| c.name == name && c.version == version && c.repo == repo)
    }

    pub fn k3s_file(&self, version: &str, file: &str) -> Option<&LockedFile> {
        self.k3s
            .iter()
            .find(|f| f.version == version && f.file == file)
    }

    /// Keep only what the stack still names (for the K3s files: its version).
    pub fn retain_for(&mut self, spec: &StackSpec) {
        self.images.retain(|l| {
            spec.images
                .iter()
                .any(|i| i.layout.is_none() && i.reference == l.reference)
        });
        self.charts.retain(|l| {
            spec.charts.iter().any(|c| {
                c.repo.as_deref() == Some(l.repo.as_str())
                    && c.name == l.name
                    && c.version == l.version
            })
        });
        let k3s_version = spec.k3s.as_ref().map(|k| k.version.as_str());
        self.k3s.retain(|f| Some(f.version.as_str()) == k3s_version);
        self.host_packages.retain(|p| {
            spec.host_packages
                .iter()
                .any(|h| h.target == p.target && h.source() == p.source)
        });
    }
}

/// What differs between two locks, one line per entry (for `--locked` errors).
pub fn changes(old: &Lock, new: &Lock) -> Vec<String> {
    let mut out = Vec::new();
    for n in &new.images {
        match old.image(&n.reference) {
            None => out.push(format!("image {} is not locked", n.reference)),
            Some(o) if o != n => out.push(format!(
                "image {} is locked to {}, resolves to {}",
                n.reference, o.digest, n.digest
            )),
            _ => {}
        }
    }
    for o in &old.images {
        if new.image(&o.reference).is_none() {
            out.push(format!(
                "image {} is locked but not in the stack",
                o.reference
            ));
        }
    }
    for n in &new.charts {
        if old.chart(&n.name, &n.version, &n.repo) != Some(n) {
            out.push(format!(
                "chart {} {} from {} is not locked",
                n.name, n.version, n.repo
            ));
        }
    }
    for o in &old.charts {
        if new.chart(&o.name, &o.version, &o.repo).is_none() {
            out.push(format!(
                "chart {} {} is locked but not in the stack",
                o.name, o.version
            ));
        }
    }
    for n in &new.k3s {
        if old.k3s_file(&n.version, &n.file) != Some(n) {
            out.push(format!("K3s {} file {} is not locked", n.version, n.file));
        }
    }
    for o in &old.k3s {
        if new.k3s_file(&o.version, &o.file).is_none() {
            out.push(format!(
                "K3s {} file {} is locked but not needed",
                o.version, o.file
            ));
        }
    }
    let key = |p: &LockedPackage| (p.target.clone(), p.arch.clone(), p.name.clone());
    let olds: BTreeMap<_, _> = old.host_packages.iter().map(|p| (key(p), p)).collect();
    let news: BTreeMap<_, _> = new.host_packages.iter().map(|p| (key(p), p)).collect();
    for (k, n) in &news {
        let what = format!("host package {} for {}/{}", n.name, n.target, n.arch);
        match olds.get(k) {
            None => out.push(format!("{what} is not locked")),
            Some(o) if o.version != n.version => out.push(format!(
                "{what} is locked at {}, resolves to {}",
                o.version, n.version
            )),
            Some(o) if o != n => out.push(format!("{what} {} is locked differently", n.version)),
            _ => {}
        }
    }
    for (k, o) in &olds {
        if !news.contains_key(k) {
            out.push(format!(
                "host package {} for {}/{} is locked but not needed",
                o.name, o.target, o.arch
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        Lock {
            version: LOCK_VERSION,
            images: vec![
                LockedImage {
                    reference: "z.io/b:1".into(),
                    digest: "sha256:bb".into(),
                    platforms: BTreeMap::from([(
                        "linux/arm64".parse().unwrap(),
                        "sha256:b2".into(),
                    )]),
                },
                LockedImage {
                    reference: "a.io/a:1".into(),
                    digest: "sha256:aa".into(),
                    platforms: BTreeMap::from([
                        ("linux/arm64".parse().unwrap(), "sha256:a2".into()),
                        ("linux/amd64".parse().unwrap(), "sha256:a1".into()),
                    ]),
                },
            ],
            charts: vec![],
            k3s: vec![LockedFile {
                version: "v1.31.4+k3s1".into(),
                file: "k3s".into(),
                sha256: "00".into(),
            }],
            host_packages: vec![],
        }
    }

    #[test]
    fn text_is_sorted_stable_and_round_trips() {
        let l = sample();
        let text = l.to_text();
        assert!(text.find("a.io/a:1").unwrap() < text.find("z.io/b:1").unwrap());
        assert!(text.find("linux/amd64").unwrap() < text.find("linux/arm64").unwrap());
        let mut back: Lock = toml::from_str(&text).unwrap();
        assert_eq!(back.to_text(), text);
        back.sort();
        let mut l2 = l.clone();
        l2.sort();
        assert_eq!(back, l2);
    }

    #[test]
    fn another_version_or_an_unknown_field_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("images.lock");
        assert!(
            Lock::load(&p).unwrap().is_none(),
            "a missing lock is no lock"
        );
        std::fs::write(&p, "version = 2\n").unwrap();
        let err = Lock::load(&p).unwrap_err();
        assert!(err.to_string().contains("rinbundle lock"), "{err}");
        std::fs::write(
            &p,
            "version = 1\n[[image]]\nreference = \"a\"\ndigest = \"sha256:00\"\ncolour = \"red\"\n",
        )
        .unwrap();
        let err = Lock::load(&p).unwrap_err();
        assert!(err.to_string().contains("not a valid lock file"), "{err}");
    }

    #[test]
    fn changes_name_each_difference() {
        let old = sample();
        let mut new = sample();
        new.images[0].digest = "sha256:cc".into();
        new.images.remove(1);
        let c = changes(&old, &new);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            c[0].contains("z.io/b:1") && c[0].contains("sha256:bb") && c[0].contains("sha256:cc")
        );
        assert!(c[1].contains("a.io/a:1") && c[1].contains("not in the stack"));
        assert!(changes(&old, &old).is_empty());
    }

    #[test]
    fn changes_name_each_host_package_difference() {
        let pkg = |name: &str, version: &str| LockedPackage {
            target: "debian-12".into(),
            arch: rin_bundle::Arch::known("arm64").unwrap(),
            source: "https://deb.debian.org/debian bookworm main".into(),
            name: name.into(),
            version: version.into(),
            architecture: "arm64".into(),
            file: format!("pool/main/{name}.deb"),
            sha256: "0".repeat(64),
            size: 1,
            requested: true,
            needs: vec![],
            depends: String::new(),
            pre_depends: String::new(),
            provides: String::new(),
        };
        let mut old = sample();
        old.host_packages = vec![pkg("nfs-common", "1:2.6.2-4"), pkg("gone", "1")];
        let mut new = sample();
        new.host_packages = vec![pkg("nfs-common", "1:2.6.2-5"), pkg("open-iscsi", "2.1.8-1")];
        new.host_packages[0].sha256 = "1".repeat(64);
        assert_eq!(
            changes(&old, &new),
            [
                "host package nfs-common for debian-12/arm64 is locked at 1:2.6.2-4, resolves to 1:2.6.2-5",
                "host package open-iscsi for debian-12/arm64 is not locked",
                "host package gone for debian-12/arm64 is locked but not needed",
            ]
        );
        let mut rebuilt = old.clone();
        rebuilt.host_packages[0].sha256 = "1".repeat(64);
        assert_eq!(
            changes(&old, &rebuilt),
            ["host package nfs-common for debian-12/arm64 1:2.6.2-4 is locked differently"]
        );
    }
}
