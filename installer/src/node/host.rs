//! K3s's host files, in K3s's own documented air-gap layout, all under `--root`:
//!
//! ```text
//! usr/local/bin/k3s                                  the binary for the node's architecture
//! var/lib/rancher/k3s/agent/images/<airgap archive>  K3s's own images (imported at start)
//! var/lib/rancher/k3s/agent/images/rin-site-registry.tar   the site registry's image
//! var/lib/rancher/k3s/agent/images/.cache.json       created empty if missing: K3s then skips
//!                                                    unchanged archives at restart
//! etc/rancher/k3s/registries.yaml                    every source registry mirrored to the site
//! etc/rancher/k3s/rin-registry-ca.pem                the site registry's CA, when given
//! etc/rancher/k3s/config.yaml                        the node's role
//! ```
//!
//! A file is written only when its content differs (compared by sha256), through a synced
//! temporary file renamed over the old one, so a re-run changes nothing and a crash leaves each
//! file old or new. Unchanged archives keep their modification time, so K3s does not re-import
//! them.

use crate::error::{InstallError, Result};
use crate::node::state::{file_error, write_atomic};
use rin_bundle::digest::sha256_hex;
use rin_bundle::index::{Entry, Index, K3s};
use rin_bundle::{Arch, k3s};
use rin_support::fs::AtomicFile;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const K3S_BIN: &str = "usr/local/bin/k3s";
pub const IMAGES_DIR: &str = "var/lib/rancher/k3s/agent/images";
pub const REGISTRIES_YAML: &str = "etc/rancher/k3s/registries.yaml";
pub const CONFIG_YAML: &str = "etc/rancher/k3s/config.yaml";
/// The kubeconfig K3s writes on servers (cluster-admin).
pub const KUBECONFIG: &str = "etc/rancher/k3s/k3s.yaml";
pub const REGISTRY_CA: &str = "etc/rancher/k3s/rin-registry-ca.pem";
pub const REGISTRY_ARCHIVE: &str = "rin-site-registry.tar";

/// Remove what a killed run left half-written in the directories apply writes K3s's files to
/// (`rin_support::fs::sweep_stale`), so that preflight counts the space they held as free.
pub fn sweep_stale(root: &Path) {
    let parent = |f: &'static str| Path::new(f).parent().unwrap_or(Path::new(""));
    for dir in [
        parent(K3S_BIN),
        Path::new(IMAGES_DIR),
        parent(CONFIG_YAML),
        Path::new(crate::cluster::helmchart::STATIC_DIR),
    ] {
        rin_support::fs::sweep_stale(&root.join(dir));
    }
}

/// The K3s release entries a node of one architecture uses.
#[derive(Debug, Clone, Default)]
pub struct K3sEntries {
    pub binary: Option<Entry>,
    pub airgap: Option<Entry>,
    pub install_sh: Option<Entry>,
}

impl K3sEntries {
    pub fn all(&self) -> impl Iterator<Item = &Entry> {
        [&self.binary, &self.airgap, &self.install_sh]
            .into_iter()
            .flatten()
    }

    pub fn complete(&self) -> bool {
        self.binary.is_some() && self.airgap.is_some() && self.install_sh.is_some()
    }
}

/// K3s's files for `arch` in the bundle (upstream names: `k3s` is amd64, `k3s-<arch>` the others),
/// or, in a delta, left out of it (`base.files`: the node holds them in place).
pub fn k3s_entries(index: &Index, arch: &Arch) -> K3sEntries {
    let binary = k3s::path(&k3s::binary(arch));
    let airgap = k3s::path(&k3s::airgap_images(arch));
    let install_sh = k3s::path(k3s::INSTALL_SCRIPT);
    let left_out = index.base.iter().flat_map(|b| &b.files);
    let find = |f: &dyn Fn(&str) -> bool| {
        index
            .entries
            .iter()
            .chain(left_out.clone())
            .find(|e| f(&e.path))
            .cloned()
    };
    K3sEntries {
        binary: find(&|p| p == binary),
        airgap: find(&|p| {
            k3s::AIRGAP_SUFFIXES
                .iter()
                .any(|z| p == format!("{airgap}{z}"))
        }),
        install_sh: find(&|p| p == install_sh),
    }
}

/// The node's place in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The first server; `cluster_init` starts embedded etcd so more servers can join (HA).
    Server { cluster_init: bool },
    /// A server joining the cluster of `url`.
    JoinServer { url: String, token_file: PathBuf },
    /// An agent of the cluster of `url`.
    Agent { url: String, token_file: PathBuf },
}

impl Role {
    pub fn is_first(&self) -> bool {
        matches!(self, Role::Server { .. })
    }

    /// `server` or `agent`: what K3s's install.sh is told to run.
    pub fn exec(&self) -> &'static str {
        match self {
            Role::Agent { .. } => "agent",
            _ => "server",
        }
    }

    /// The systemd unit install.sh writes for this role.
    pub fn service(&self) -> &'static str {
        match self {
            Role::Agent { .. } => "k3s-agent",
            _ => "k3s",
        }
    }
}

/// How the node's containerd reaches the site registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRegistry {
    /// `host:port` as containerd and the seeder address it.
    pub host: String,
    pub plain_http: bool,
    /// `user:password`, when the registry wants them.
    pub auth: Option<(String, String)>,
    /// The CA (PEM) the registry's certificate chains to, when given.
    pub ca_pem: Option<Vec<u8>>,
}

impl SiteRegistry {
    pub fn endpoint(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }
}

#[derive(Serialize)]
struct RegistriesYaml {
    mirrors: BTreeMap<String, Mirror>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Serialize)]
struct Mirror {
    endpoint: Vec<String>,
}

#[derive(Serialize, Default)]
struct RegistryConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<Auth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls>,
}

#[derive(Serialize)]
struct Auth {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct Tls {
    ca_file: String,
}

/// The registry host of an image reference, normalised as containerd asks for it.
pub fn registry_host(reference: &str) -> Result<String> {
    let r: oci_client::Reference = reference.parse().map_err(|e| InstallError::Bundle {
        reason: format!("image reference {reference:?} in the bundle does not parse: {e}"),
    })?;
    Ok(r.registry().to_string())
}

/// `registries.yaml`: every registry the stack's images come from, mirrored to the site
/// registry (same repository paths, so the manifests keep their upstream image names), and the
/// site registry's CA and credentials.
pub fn registries_yaml(index: &Index, site: &SiteRegistry) -> Result<String> {
    let mut mirrors = BTreeMap::new();
    for image in &index.images {
        let host = registry_host(&image.reference)?;
        mirrors.insert(
            host,
            Mirror {
                endpoint: vec![site.endpoint()],
            },
        );
    }
    let mut configs = BTreeMap::new();
    if site.auth.is_some() || site.ca_pem.is_some() {
        configs.insert(
            site.host.clone(),
            RegistryConfig {
                auth: site.auth.as_ref().map(|(u, p)| Auth {
                    username: u.clone(),
                    password: p.clone(),
                }),
                tls: site.ca_pem.as_ref().map(|_| Tls {
                    ca_file: format!("/{REGISTRY_CA}"),
                }),
            },
        );
    }
    let body = serde_yaml_ng::to_string(&RegistriesYaml { mirrors, configs })
        .expect("registries.yaml serialises");
    Ok(format!("{HEADER}{body}"))
}

const HEADER: &str = "# Written by rininstall at every apply; local changes are replaced.\n";

#[derive(Serialize, Default)]
#[serde(rename_all = "kebab-case")]
struct ConfigYaml {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cluster_init: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tls_san: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    write_kubeconfig_mode: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_default_registry_endpoint: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    disable: Vec<String>,
}

/// Whether K3s `version` knows `disable-default-registry-endpoint` (January 2024 releases:
/// v1.26.13, v1.27.10, v1.28.6, v1.29.1 and every later minor). Without it, a pull whose mirror
/// fails falls back to the internet.
pub fn has_default_endpoint_switch(version: &str) -> bool {
    let Some((minor, patch)) = k3s_minor_patch(version) else {
        return false;
    };
    match minor {
        ..=25 => false,
        26 => patch >= 13,
        27 => patch >= 10,
        28 => patch >= 6,
        _ => true,
    }
}

/// (minor, patch) of a `v1.MINOR.PATCH+k3sN` version.
pub fn k3s_minor_patch(version: &str) -> Option<(u64, u64)> {
    let v = semver::Version::parse(version.strip_prefix('v').unwrap_or(version)).ok()?;
    (v.major == 1).then_some((v.minor, v.patch))
}

/// `config.yaml` for `role` and the bundle's K3s, with extra `tls_san` names for the API
/// server's certificate. Servers disable the packaged components the bundle names.
pub fn config_yaml(role: &Role, k3s: Option<&K3s>, tls_san: &[String]) -> String {
    let mut c = ConfigYaml {
        disable_default_registry_endpoint: k3s
            .is_some_and(|k| has_default_endpoint_switch(&k.version)),
        ..Default::default()
    };
    match role {
        Role::Server { cluster_init } => c.cluster_init = *cluster_init,
        Role::JoinServer { url, token_file } | Role::Agent { url, token_file } => {
            c.server = Some(url.clone());
            c.token_file = Some(token_file.display().to_string());
        }
    }
    if !matches!(role, Role::Agent { .. }) {
        c.write_kubeconfig_mode = Some("0600".into());
        c.tls_san = tls_san.to_vec();
        c.disable = k3s.map(|k| k.disable.clone()).unwrap_or_default();
    }
    let body = serde_yaml_ng::to_string(&c).expect("config.yaml serialises");
    format!(
        "{HEADER}# Settings of your own go in config.yaml.d/*.yaml, which K3s merges after this file.\n{body}"
    )
}

/// Where one host file's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    /// A staged file whose sha256 is known (from the signed index).
    Staged { path: PathBuf, sha256: String },
    /// Bytes made here.
    Bytes(Vec<u8>),
}

/// One file to put under the root.
#[derive(Debug, Clone)]
pub struct HostFile {
    /// Relative to the root.
    pub dest: String,
    pub mode: u32,
    pub size: u64,
    pub content: Content,
}

impl HostFile {
    /// A file made here.
    pub fn bytes(dest: &str, mode: u32, content: impl Into<Vec<u8>>) -> HostFile {
        let content = content.into();
        HostFile {
            dest: dest.into(),
            mode,
            size: content.len() as u64,
            content: Content::Bytes(content),
        }
    }

    pub fn sha256(&self) -> String {
        match &self.content {
            Content::Staged { sha256, .. } => sha256.clone(),
            Content::Bytes(b) => sha256_hex(b),
        }
    }
}

/// What a host file needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Create,
    Replace,
}

/// Compare `file` with what is at `root/dest` (content and mode).
pub fn change(root: &Path, file: &HostFile) -> Result<Change> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(&file.dest);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Change::Create),
        Err(source) => return Err(InstallError::Io { path, source }),
    };
    if !meta.is_file() || meta.len() != file.size || meta.permissions().mode() & 0o7777 != file.mode
    {
        return Ok(Change::Replace);
    }
    Ok(if hash_file(&path)? == file.sha256() {
        Change::Unchanged
    } else {
        Change::Replace
    })
}

pub fn hash_file(path: &Path) -> Result<String> {
    let io = |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Put `file` under `root`: a staged file is copied (and its sha256 checked on the way), bytes
/// are written; either way through a synced temporary file renamed into place.
pub fn install(root: &Path, file: &HostFile) -> Result<()> {
    let dest = root.join(&file.dest);
    match &file.content {
        Content::Bytes(b) => write_atomic(&dest, b, file.mode),
        Content::Staged { path, sha256 } => {
            let io = |p: &Path| {
                let p = p.to_path_buf();
                move |source| InstallError::Io { path: p, source }
            };
            let mut out = AtomicFile::create(&dest, file.mode).map_err(file_error)?;
            let tmp = out.tmp().to_path_buf();
            {
                let mut src = File::open(path).map_err(io(path))?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = src.read(&mut buf).map_err(io(path))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    out.write_all(&buf[..n]).map_err(io(&tmp))?;
                }
                let got = hex::encode(h.finalize());
                if &got != sha256 {
                    return Err(InstallError::Step {
                        what: format!("copying {}", path.display()),
                        reason: format!(
                            "the staged file changed since it was verified (sha256 {got}, expected {sha256})"
                        ),
                    });
                }
            }
            // Dropped uncommitted on any error above: the temporary file is removed.
            out.commit().map_err(file_error)
        }
    }
}

/// Create K3s's image import cache file if it is missing (an existing one is K3s's: kept).
pub fn ensure_import_cache(root: &Path) -> Result<bool> {
    let path = root.join(IMAGES_DIR).join(".cache.json");
    if path.exists() {
        return Ok(false);
    }
    write_atomic(&path, b"", 0o644)?;
    Ok(true)
}

#[cfg(test)]
mod tests;
