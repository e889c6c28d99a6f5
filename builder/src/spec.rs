//! The stack definition: `bundle.yaml` in a stack directory.

use crate::error::{BuildError, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const SPEC_FILE: &str = "bundle.yaml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    pub name: String,
    pub version: String,
    /// Architectures built when `--arch` is not given (e.g. `[amd64, arm64]`).
    #[serde(default)]
    pub platforms: Vec<rin_bundle::Arch>,
    #[serde(default)]
    pub k3s: Option<K3sSpec>,
    #[serde(default)]
    pub images: Vec<ImageSpec>,
    #[serde(default)]
    pub charts: Vec<ChartSpec>,
    /// Directory of Kubernetes manifests, relative to the stack directory.
    #[serde(default = "default_manifests")]
    pub manifests: String,
    /// Extra files or directories carried under `files/`.
    #[serde(default)]
    pub files: Vec<String>,
    /// The lock file, relative to the stack directory.
    #[serde(default = "default_lock")]
    pub lock: String,
    /// Optional parts a build can leave out (`--without NAME`) or take in (`--with NAME`).
    #[serde(default)]
    pub components: std::collections::BTreeMap<String, ComponentSpec>,
    /// The operating system releases the nodes run, each with the repository its packages come
    /// from and the packages every node needs.
    #[serde(default)]
    pub host_packages: Vec<HostPackagesSpec>,
}

/// One operating system release (`target`) and where its packages come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPackagesSpec {
    /// `<os-release ID>-<VERSION_ID>`: `debian-12`, `ubuntu-24.04`, `rhel-9`.
    pub target: String,
    /// `deb` (the default: an APT repository) or `rpm` (local `.rpm` files).
    #[serde(default = "default_format")]
    pub format: String,
    /// An APT repository: `https://deb.debian.org/debian` (deb).
    #[serde(default)]
    pub repo: String,
    /// `bookworm`; a suite ending in `/` names a flat repository (`<repo>/<suite>Packages`).
    #[serde(default)]
    pub suite: String,
    /// Local package files, carried as they are (rpm).
    #[serde(default)]
    pub files: Vec<String>,
    /// Archive components searched, in order [default: main].
    #[serde(default = "default_deb_components")]
    pub components: Vec<String>,
    /// `name` or `name=version`, with the components' `host_packages`.
    #[serde(default)]
    pub packages: Vec<String>,
    /// systemd units enabled and started once the packages are installed.
    #[serde(default)]
    pub services: Vec<String>,
    /// The OpenPGP keyring (a file in the stack, armored or binary) whose keys sign the
    /// repository's `InRelease`, as APT's `Signed-By`: the signature is checked, and every
    /// package index against the checksums it signs. Without it the indexes are trusted as
    /// served over HTTPS.
    #[serde(default)]
    pub signed_by: Option<String>,
}

fn default_format() -> String {
    rin_bundle::host::FORMAT_DEB.into()
}

fn default_deb_components() -> Vec<String> {
    vec!["main".into()]
}

impl HostPackagesSpec {
    pub fn is_rpm(&self) -> bool {
        self.format == rin_bundle::host::FORMAT_RPM
    }

    /// The repository as the lock records it: `URL SUITE COMPONENT...`.
    pub fn source(&self) -> String {
        format!("{} {} {}", self.repo, self.suite, self.components.join(" "))
    }
}

/// An optional part of the stack: manifests (files or directories under the manifests
/// directory), images and charts that go into a bundle only when it is selected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    #[serde(default)]
    pub description: Option<String>,
    /// Selected unless `--without` (true) or only with `--with` (false).
    #[serde(default = "default_true")]
    pub default: bool,
    #[serde(default)]
    pub manifests: Vec<String>,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub charts: Vec<String>,
    /// K3s packaged components this one replaces, disabled on the nodes when it is selected
    /// (e.g. MetalLB replaces `servicelb`).
    #[serde(default)]
    pub k3s_disable: Vec<String>,
    /// Operating system packages every node needs for it (`open-iscsi`), added to each
    /// `host_packages` target.
    #[serde(default)]
    pub host_packages: Vec<String>,
    /// systemd units those packages bring that must run (`iscsid`).
    #[serde(default)]
    pub host_services: Vec<String>,
}

/// K3s's packaged components that `disable` may name (K3s's `--disable`).
pub const K3S_PACKAGED: &[&str] = &[
    "coredns",
    "servicelb",
    "traefik",
    "local-storage",
    "metrics-server",
    "runtimes",
];

fn default_true() -> bool {
    true
}

/// What a build takes from the components: which are selected, the parts of the others it
/// leaves out, and the K3s parts the stack and the selected components disable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The components selected, sorted.
    pub selected: Vec<String>,
    /// Manifest paths (relative to the manifests directory) left out.
    pub manifests: Vec<String>,
    pub images: std::collections::BTreeSet<String>,
    pub charts: std::collections::BTreeSet<String>,
    /// K3s packaged components the bundle disables: the stack's own and the selected
    /// components'.
    pub k3s_disable: std::collections::BTreeSet<String>,
    /// Host packages and services the selected components ask for (each target adds its own).
    pub host_packages: std::collections::BTreeSet<String>,
    pub host_services: std::collections::BTreeSet<String>,
}

impl Selection {
    /// Is the manifest at `rel` (relative to the manifests directory) left out?
    pub fn leaves_out_manifest(&self, rel: &str) -> bool {
        self.manifests
            .iter()
            .any(|m| rel == m || rel.starts_with(&format!("{}/", m.trim_end_matches('/'))))
    }
}

fn default_lock() -> String {
    "images.lock".into()
}

fn default_manifests() -> String {
    "manifests".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sSpec {
    pub version: String,
    /// Directory holding the release files under their upstream names (instead of fetching).
    #[serde(default)]
    pub files: Option<String>,
    /// Base URL of the releases (`<base>/<version>/<file>`); default: K3s's GitHub releases.
    #[serde(default)]
    pub release_url: Option<String>,
    /// URL of install.sh; `{version}` is replaced. Default: the script at the release's tag.
    #[serde(default)]
    pub install_script: Option<String>,
    /// K3s packaged components to disable on every node (K3s's `disable`).
    #[serde(default)]
    pub disable: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The reference the stack's manifests use, e.g. `docker.io/library/nginx:1.27`.
    pub reference: String,
    /// A local OCI image layout holding the image.
    #[serde(default)]
    pub layout: Option<String>,
    /// The image's name in the layout's index.json (`org.opencontainers.image.ref.name`);
    /// default: the reference, then its tag, then the layout's only image.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartSpec {
    pub name: String,
    pub version: String,
    /// A chart archive made by `helm package` (a local chart) ...
    #[serde(default)]
    pub archive: Option<String>,
    /// ... or the repository to fetch it from: `https://…` (a Helm repository with index.yaml)
    /// or `oci://host/path` (the chart is `host/path/<name>:<version>`).
    #[serde(default)]
    pub repo: Option<String>,
    /// A values file for the chart, carried beside it.
    #[serde(default)]
    pub values: Option<String>,
    /// The namespace the chart installs into at the site (default: the chart's name).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// A Kubernetes namespace name (RFC 1123 label).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A loaded stack: its directory and its definition.
#[derive(Debug, Clone)]
pub struct Stack {
    pub dir: PathBuf,
    pub spec: StackSpec,
}

impl Stack {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(SPEC_FILE);
        if !path.exists() {
            return Err(BuildError::NoStack {
                dir: dir.to_path_buf(),
                reason: if dir.is_dir() {
                    format!("it holds no {SPEC_FILE}")
                } else if dir.exists() {
                    "it is not a directory".into()
                } else {
                    "it does not exist".into()
                },
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| BuildError::Read {
            path: path.clone(),
            source,
        })?;
        let spec: StackSpec = serde_yaml_ng::from_str(&text).map_err(|e| BuildError::Spec {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| {
            Err(BuildError::Spec {
                path: path.clone(),
                reason,
            })
        };
        if let Err(reason) = rin_bundle::index::check_stack_name(&spec.name)
            .and_then(|()| rin_bundle::index::check_stack_version(&spec.version))
        {
            return bad(reason);
        }
        let mut refs = std::collections::HashSet::new();
        for i in &spec.images {
            if !refs.insert(&i.reference) {
                return bad(format!("image {} is listed twice", i.reference));
            }
        }
        let mut charts = std::collections::HashSet::new();
        for c in &spec.charts {
            if c.archive.is_some() == c.repo.is_some() {
                return bad(format!(
                    "chart {}: give either `archive:` (a local .tgz) or `repo:` (https:// or oci://)",
                    c.name
                ));
            }
            if let Some(r) = &c.repo
                && !(r.starts_with("https://")
                    || r.starts_with("http://")
                    || r.starts_with("oci://"))
            {
                return bad(format!(
                    "chart {}: repo {r:?} must start with https://, http:// or oci://",
                    c.name
                ));
            }
            if let Some(ns) = &c.namespace
                && !is_dns_label(ns)
            {
                return bad(format!(
                    "chart {}: namespace {ns:?} must be a DNS label: lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit",
                    c.name
                ));
            }
            if !charts.insert((&c.name, &c.version)) {
                return bad(format!("chart {} {} is listed twice", c.name, c.version));
            }
        }
        let disables = spec
            .k3s
            .iter()
            .flat_map(|k| k.disable.iter().map(|d| ("k3s", d)))
            .chain(
                spec.components
                    .iter()
                    .flat_map(|(n, c)| c.k3s_disable.iter().map(move |d| (n.as_str(), d))),
            );
        for (who, d) in disables {
            if !K3S_PACKAGED.contains(&d.as_str()) {
                return bad(format!(
                    "{who}: K3s has no packaged component {d:?} to disable; it has: {}",
                    K3S_PACKAGED.join(", ")
                ));
            }
            if spec.k3s.is_none() {
                return bad(format!(
                    "component {who} disables K3s's {d}, but the stack carries no K3s (`k3s:`)"
                ));
            }
        }
        let mut targets = std::collections::HashSet::new();
        for h in &spec.host_packages {
            let t = &h.target;
            if let Err(reason) = rin_bundle::host::check_target(t) {
                return bad(reason);
            }
            if !targets.insert(t) {
                return bad(format!("host_packages: target {t} is listed twice"));
            }
            if h.is_rpm() {
                if h.files.is_empty() || !h.repo.is_empty() || !h.packages.is_empty() {
                    return bad(format!(
                        "host_packages {t}: an rpm target carries local files (`files:` naming the .rpm files, e.g. k3s-selinux and container-selinux); packages from RPM repositories are not supported yet"
                    ));
                }
                for f in &h.files {
                    if !f.ends_with(".rpm") || !dir.join(f).is_file() {
                        return bad(format!(
                            "host_packages {t}: {f} is not an .rpm file in the stack"
                        ));
                    }
                }
                continue;
            }
            if h.format != rin_bundle::host::FORMAT_DEB {
                return bad(format!(
                    "host_packages {t}: format {:?} is not deb or rpm",
                    h.format
                ));
            }
            if !h.files.is_empty() {
                return bad(format!(
                    "host_packages {t}: local .deb files go in a repository: make one with `dpkg-scanpackages` and name it in `repo:` (docs/STACK.md)"
                ));
            }
            if !(h.repo.starts_with("https://") || h.repo.starts_with("http://")) {
                return bad(format!(
                    "host_packages {t}: repo {:?} must be an APT repository's https:// URL",
                    h.repo
                ));
            }
            if let Some(k) = &h.signed_by
                && !dir.join(k).is_file()
            {
                return bad(format!(
                    "host_packages {t}: signed_by {k:?} is not a file in the stack: copy the repository's keyring into the stack (Debian's is /usr/share/keyrings/debian-archive-keyring.gpg)"
                ));
            }
            let word = |w: &str| !w.is_empty() && !w.contains(char::is_whitespace);
            if !word(&h.suite) || h.components.is_empty() || !h.components.iter().all(|c| word(c)) {
                return bad(format!(
                    "host_packages {t}: give `suite:` (e.g. bookworm) and `components:` (e.g. [main]), single words"
                ));
            }
        }
        let package_lists = spec
            .host_packages
            .iter()
            .map(|h| {
                (
                    format!("host_packages {}", h.target),
                    &h.packages,
                    &h.services,
                )
            })
            .chain(
                spec.components
                    .iter()
                    .map(|(n, c)| (format!("component {n}"), &c.host_packages, &c.host_services)),
            );
        for (who, packages, services) in package_lists {
            for p in packages {
                if let Err(reason) = p.parse::<rin_hostpkg::Request>() {
                    return bad(format!("{who}: {reason}"));
                }
            }
            for u in services {
                if u.is_empty()
                    || !u
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ":_.@-".contains(c))
                {
                    return bad(format!("{who}: {u:?} is not a systemd unit name"));
                }
            }
            if !packages.is_empty() && !spec.host_packages.iter().any(|h| !h.is_rpm()) {
                return bad(format!(
                    "{who} needs host packages, but the stack names no operating system to carry them for: add `host_packages:` with a target and its repository (docs/STACK.md)"
                ));
            }
        }
        let mut owner = std::collections::HashMap::new();
        let manifests_dir = dir.join(&spec.manifests);
        for (name, c) in &spec.components {
            if !is_dns_label(name) {
                return bad(format!(
                    "component {name:?}: names are lower-case letters, digits and '-'"
                ));
            }
            let items = c
                .manifests
                .iter()
                .map(|m| {
                    if manifests_dir.join(m).exists() {
                        Ok(format!("manifest {m}"))
                    } else {
                        Err(format!(
                            "component {name}: manifest {m} is not in {}",
                            spec.manifests
                        ))
                    }
                })
                .chain(c.images.iter().map(|i| {
                    if refs.contains(&i) {
                        Ok(format!("image {i}"))
                    } else {
                        Err(format!("component {name}: image {i} is not in `images:`"))
                    }
                }))
                .chain(c.charts.iter().map(|ch| {
                    if spec.charts.iter().any(|x| &x.name == ch) {
                        Ok(format!("chart {ch}"))
                    } else {
                        Err(format!("component {name}: chart {ch} is not in `charts:`"))
                    }
                }));
            for item in items {
                let item = match item {
                    Ok(i) => i,
                    Err(reason) => return bad(reason),
                };
                if let Some(other) = owner.insert(item.clone(), name.clone()) {
                    return bad(format!("{item} is in two components, {other} and {name}"));
                }
            }
        }
        Ok(Stack {
            dir: dir.to_path_buf(),
            spec,
        })
    }

    /// The selection of components for a build: each component's `default`, then `with` added
    /// and `without` taken away. An unknown name is an error listing the components.
    pub fn select(&self, with: &[String], without: &[String]) -> Result<Selection> {
        let known = &self.spec.components;
        for n in with.iter().chain(without) {
            if !known.contains_key(n) {
                return Err(BuildError::Spec {
                    path: self.dir.join(SPEC_FILE),
                    reason: format!(
                        "no component {n:?}; the stack has: {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                });
            }
        }
        let mut s = Selection::default();
        if let Some(k) = &self.spec.k3s {
            s.k3s_disable.extend(k.disable.iter().cloned());
        }
        for (name, c) in known {
            let on = (c.default || with.contains(name)) && !without.contains(name);
            if on {
                s.selected.push(name.clone());
                s.k3s_disable.extend(c.k3s_disable.iter().cloned());
                s.host_packages.extend(c.host_packages.iter().cloned());
                s.host_services.extend(c.host_services.iter().cloned());
            } else {
                s.manifests.extend(c.manifests.iter().cloned());
                s.images.extend(c.images.iter().cloned());
                s.charts.extend(c.charts.iter().cloned());
            }
        }
        Ok(s)
    }

    /// A path named in bundle.yaml, resolved against the stack directory.
    pub fn resolve(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Stack> {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(SPEC_FILE), yaml).unwrap();
        Stack::load(t.path())
    }

    #[test]
    fn host_packages_are_checked_as_they_load() {
        let base = "name: s\nversion: 1\n";
        let target = "host_packages:\n  - target: debian-12\n    repo: https://deb.debian.org/debian\n    suite: bookworm\n    packages: [nfs-common]\n";
        let ok = load(&format!(
            "{base}{target}components:\n  longhorn:\n    host_packages: [open-iscsi]\n    host_services: [iscsid]\n"
        ))
        .unwrap();
        assert_eq!(
            ok.spec.host_packages[0].source(),
            "https://deb.debian.org/debian bookworm main"
        );
        let sel = ok.select(&[], &[]).unwrap();
        assert!(sel.host_packages.contains("open-iscsi") && sel.host_services.contains("iscsid"));
        let cases = [
            (
                target.replace("debian-12", "Debian"),
                "is not `<os>-<version>`",
            ),
            (
                target.replace("https://deb", "ftp://deb"),
                "must be an APT repository",
            ),
            (
                target.replace("nfs-common", "NFS"),
                "is not a Debian package name",
            ),
            (
                format!("{target}    services: [\"a b\"]\n"),
                "is not a systemd unit name",
            ),
            (
                "host_packages:\n  - target: rhel-9\n    format: rpm\n    packages: [k3s-selinux]\n".to_string(),
                "an rpm target carries local files",
            ),
            (
                "host_packages:\n  - target: rhel-9\n    format: rpm\n    files: [absent.rpm]\n".to_string(),
                "absent.rpm is not an .rpm file in the stack",
            ),
            (
                format!("{target}    files: [x.deb]\n"),
                "local .deb files go in a repository",
            ),
            (
                target.replace("target: debian-12", "target: alpine-3.20\n    format: apk"),
                "format \"apk\" is not deb or rpm",
            ),
            (
                target.replace("suite: bookworm", "suite: book worm"),
                "give `suite:`",
            ),
            (
                format!("{target}    signed_by: keys/absent.gpg\n"),
                "signed_by \"keys/absent.gpg\" is not a file in the stack",
            ),
            (
                "components:\n  longhorn:\n    host_packages: [open-iscsi]\n".to_string(),
                "component longhorn needs host packages, but the stack names no operating system",
            ),
        ];
        for (extra, want) in cases {
            let err = load(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
    }

    #[test]
    fn each_chart_has_exactly_one_source_with_a_known_scheme_and_appears_once() {
        let head = "name: s\nversion: 1\ncharts:\n";
        let cases = [
            ("  - {name: a, version: '1'}\n", "either `archive:`"),
            (
                "  - {name: a, version: '1', archive: a.tgz, repo: 'https://x'}\n",
                "either `archive:`",
            ),
            (
                "  - {name: a, version: '1', repo: 'ftp://x'}\n",
                "must start with",
            ),
            (
                "  - {name: a, version: '1', repo: 'https://x'}\n  - {name: a, version: '1', repo: 'oci://y'}\n",
                "listed twice",
            ),
            (
                "  - {name: a, version: '1', repo: 'https://x', namespace: Cert_Manager}\n",
                "must be a DNS label",
            ),
        ];
        for (charts, want) in cases {
            let err = load(&format!("{head}{charts}")).unwrap_err();
            assert!(err.to_string().contains(want), "{charts}: {err}");
        }
        let ok = load(&format!(
            "{head}  - {{name: a, version: '1', repo: 'oci://r/c'}}\n  - {{name: b, version: '1', archive: b.tgz}}\n"
        ))
        .unwrap();
        assert_eq!(ok.spec.lock, "images.lock");
    }

    #[test]
    fn components_name_what_the_stack_has_and_a_selection_leaves_their_parts_out() {
        let head = "name: s\nversion: 1\nimages:\n  - reference: a:1\n  - reference: b:1\n";
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("manifests/extra")).unwrap();
        std::fs::write(t.path().join("manifests/cache.yaml"), "").unwrap();
        let load_with = |components: &str| {
            std::fs::write(
                t.path().join(SPEC_FILE),
                format!("{head}components:\n{components}"),
            )
            .unwrap();
            Stack::load(t.path())
        };
        for (components, want) in [
            (
                "  c: {manifests: [nope.yaml]}\n",
                "manifest nope.yaml is not in manifests",
            ),
            (
                "  c: {images: [\"z:1\"]}\n",
                "image z:1 is not in `images:`",
            ),
            ("  c: {charts: [x]}\n", "chart x is not in `charts:`"),
            (
                "  c: {images: [\"a:1\"]}\n  d: {images: [\"a:1\"]}\n",
                "image a:1 is in two components, c and d",
            ),
            ("  Big: {}\n", "names are lower-case"),
            (
                "  lb: {k3s_disable: [klipper]}\n",
                "K3s has no packaged component \"klipper\"",
            ),
            (
                "  lb: {k3s_disable: [servicelb]}\n",
                "component lb disables K3s's servicelb, but the stack carries no K3s",
            ),
        ] {
            let e = load_with(components).unwrap_err().to_string();
            assert!(e.contains(want), "{components}: {e}");
        }
        let s = load_with(
            "  cache: {manifests: [cache.yaml], images: [\"a:1\"]}\n  extra: {default: false, manifests: [extra]}\n",
        )
        .unwrap();
        let by_default = s.select(&[], &[]).unwrap();
        assert_eq!(by_default.selected, ["cache"]);
        assert!(by_default.leaves_out_manifest("extra/x.yaml"));
        assert!(!by_default.leaves_out_manifest("extras.yaml"));
        assert!(!by_default.leaves_out_manifest("cache.yaml"));
        let swapped = s.select(&["extra".into()], &["cache".into()]).unwrap();
        assert_eq!(swapped.selected, ["extra"]);
        assert!(swapped.images.contains("a:1"));
        assert!(swapped.leaves_out_manifest("cache.yaml"));
        let e = s.select(&["nope".into()], &[]).unwrap_err().to_string();
        assert!(
            e.contains("no component \"nope\"; the stack has: cache, extra"),
            "{e}"
        );
    }

    #[test]
    fn the_stack_and_its_selected_components_disable_k3s_packaged_parts() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join(SPEC_FILE),
            "name: s\nversion: 1\nk3s: {version: v1.31.4+k3s1, disable: [traefik]}\ncomponents:\n  lb: {default: false, k3s_disable: [servicelb]}\n  storage: {k3s_disable: [local-storage]}\n",
        )
        .unwrap();
        let s = Stack::load(t.path()).unwrap();
        let set = |sel: Selection| sel.k3s_disable.into_iter().collect::<Vec<_>>();
        assert_eq!(
            set(s.select(&[], &[]).unwrap()),
            ["local-storage", "traefik"]
        );
        assert_eq!(
            set(s.select(&["lb".into()], &["storage".into()]).unwrap()),
            ["servicelb", "traefik"]
        );
        std::fs::write(
            t.path().join(SPEC_FILE),
            "name: s\nversion: 1\nk3s: {version: v1.31.4+k3s1, disable: [ingress]}\n",
        )
        .unwrap();
        let e = Stack::load(t.path()).unwrap_err().to_string();
        assert!(
            e.contains("k3s: K3s has no packaged component \"ingress\""),
            "{e}"
        );
    }
}
