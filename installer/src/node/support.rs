//! `rininstall support-bundle`: what an operator carries back out of the site when something
//! failed, in one `.tar.zst` that standard tools open: the node's release records, the host
//! checks, the doctor's checks, K3s's configuration and registries, K3s's logs, and, when the cluster answers, the
//! stack's status and every node, pod and event. Secrets stay behind: every value under a key
//! that names a token, password, secret or key (and a Secret's data) is replaced by
//! `<redacted>`, in YAML, JSON and log lines alike. Each file keeps at most its last
//! `max_bytes / 8` bytes, and the bundle stops taking files at `max_bytes`; `MANIFEST.txt` says
//! what was cut or left out.

use crate::error::{InstallError, Result};
use crate::node::{host, readiness};
use rin_bundle::Progress;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Where the installation is and how much to take.
#[derive(Debug, Clone)]
pub struct SupportOptions {
    pub root: PathBuf,
    /// The state directory, the cluster, and the bound of the wait for its API.
    pub target: crate::cluster::manage::Target,
    /// Bytes taken in all (before compression).
    pub max_bytes: u64,
    /// The site registry, for the doctor's checks.
    pub registry: crate::node::seed::SeedOptions,
}

/// What the bundle holds.
#[derive(Debug, Default)]
pub struct Collected {
    /// Path in the bundle and bytes, in order.
    pub files: Vec<(String, u64)>,
    /// What was cut to its tail or left out, and why.
    pub cut: Vec<String>,
}

/// Collect, redact and write the support bundle to `out` (whole or not at all). Call from a
/// thread outside the runtime `rt`.
pub fn write(
    opts: &SupportOptions,
    out: &Path,
    rt: &Handle,
    progress: &dyn Progress,
) -> Result<Collected> {
    let mut c = Collector {
        per_file: (opts.max_bytes / 8).max(4096),
        left: opts.max_bytes,
        files: Vec::new(),
        cut: Vec::new(),
        contents: Vec::new(),
    };
    let root = &opts.root;
    // The host as preflight sees it.
    let host = readiness::failures(&readiness::Host {
        root,
        k3s_present: true,
        server: true,
        etcd: false,
        registry_node_port: None,
        joining: false,
        created: 0,
        now: rin_bundle::index::now_epoch(),
        k3s_selinux_carried: false,
    });
    let mut checks = if host.is_empty() {
        "no problem found by the host checks\n".to_string()
    } else {
        host.iter().map(|f| format!("- {f}\n")).collect()
    };
    checks.insert_str(0, "host checks (as preflight runs them)\n");
    c.add("host-checks.txt", checks.into_bytes());
    let target = &opts.target;
    let doctor = crate::cluster::doctor::doctor(
        &crate::cluster::doctor::DoctorOptions {
            root: root.clone(),
            target: target.clone(),
            registry: opts.registry.clone(),
        },
        rt,
        progress,
    )?;
    c.add(
        "doctor.json",
        json_bytes(serde_json::to_value(&doctor).unwrap_or_default()),
    );
    // The node's records and K3s's configuration, redacted.
    let state = &target.state_dir;
    c.add_file(
        "state/release.json",
        &state.join("release.json"),
        Kind::Json,
    );
    for (dir, kind) in [("releases", Kind::Json), ("registry", Kind::Yaml)] {
        for (name, p) in sorted_files(&state.join(dir)) {
            c.add_file(&format!("state/{dir}/{name}"), &p, kind);
        }
    }
    c.add_file(
        "k3s/registries.yaml",
        &root.join(host::REGISTRIES_YAML),
        Kind::Yaml,
    );
    c.add_file("k3s/config.yaml", &root.join(host::CONFIG_YAML), Kind::Yaml);
    for (name, p) in sorted_files(&root.join("etc/rancher/k3s/config.yaml.d")) {
        c.add_file(&format!("k3s/config.yaml.d/{name}"), &p, Kind::Yaml);
    }
    // K3s's logs: its journal on the real root, and any log files it was told to write.
    if root == Path::new("/") {
        for unit in ["k3s", "k3s-agent"] {
            if let Ok(o) = std::process::Command::new("journalctl")
                .args(["-u", unit, "--no-pager", "-n", "20000"])
                .output()
                && o.status.success()
            {
                c.add(&format!("logs/{unit}.journal.txt"), redact_text(&o.stdout));
            }
        }
    }
    for (name, p) in sorted_files(&root.join("var/log")) {
        if name.starts_with("k3s") || name.starts_with("rininstall") {
            c.add_file(&format!("logs/{name}"), &p, Kind::Text);
        }
    }
    // The cluster, when it answers.
    let status = crate::cluster::manage::status(target, rt, progress)?;
    let status = serde_json::to_value(&status).unwrap_or_default();
    let answered = status.get("cluster").is_some();
    c.add("cluster/status.json", json_bytes(status));
    if answered
        && let Ok((cluster, _)) =
            crate::cluster::connect::look(&target.kubeconfig, target.timeout, rt, progress)
    {
        for (what, list) in rt.block_on(cluster.listings()) {
            c.add(&format!("cluster/{what}.json"), json_bytes(list));
        }
    }
    let mut manifest = format!(
        "rininstall {} support bundle, {}\nroot {}\n\n",
        env!("CARGO_PKG_VERSION"),
        rin_bundle::index::format_created(rin_bundle::index::now_epoch()),
        root.display()
    );
    for (p, n) in &c.files {
        manifest.push_str(&format!("{n:>12}  {p}\n"));
    }
    if !c.cut.is_empty() {
        manifest.push_str("\ncut or left out:\n");
        for w in &c.cut {
            manifest.push_str(&format!("- {w}\n"));
        }
    }
    manifest.push_str(&format!(
        "\nevery value under a key naming a token, password, secret or key is {REDACTED}\n"
    ));
    write_archive(out, manifest.as_bytes(), &c.contents)?;
    Ok(Collected {
        files: c.files,
        cut: c.cut,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Json,
    Yaml,
    Text,
}

struct Collector {
    per_file: u64,
    left: u64,
    files: Vec<(String, u64)>,
    cut: Vec<String>,
    /// Each file's path and (redacted, bounded) bytes.
    contents: Vec<(String, Vec<u8>)>,
}

impl Collector {
    fn add(&mut self, path: &str, mut bytes: Vec<u8>) {
        if bytes.len() as u64 > self.per_file {
            let keep = self.per_file as usize;
            bytes.drain(..bytes.len() - keep);
            self.cut.push(format!("{path}: only its last {keep} bytes"));
        }
        if bytes.len() as u64 > self.left {
            self.cut.push(format!(
                "{path}: left out, the bundle reached its size bound"
            ));
            return;
        }
        self.left -= bytes.len() as u64;
        self.files.push((path.to_string(), bytes.len() as u64));
        self.contents.push((path.to_string(), bytes));
    }

    fn add_file(&mut self, path: &str, file: &Path, kind: Kind) {
        let Ok(bytes) = std::fs::read(file) else {
            return;
        };
        let redacted = match kind {
            Kind::Json => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => json_bytes(v),
                Err(_) => redact_text(&bytes),
            },
            Kind::Yaml => redact_yaml(&bytes),
            Kind::Text => redact_text(&bytes),
        };
        self.add(path, redacted);
    }
}

/// The files of `dir` (not below it), sorted, with their names.
fn sorted_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .filter(|(_, p)| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Pretty JSON of `v`, redacted.
fn json_bytes(mut v: Value) -> Vec<u8> {
    redact_value(&mut v);
    let mut b = serde_json::to_vec_pretty(&v).unwrap_or_default();
    b.push(b'\n');
    b
}

/// Whether a key names a secret (a path to one, `*_file`, does not).
fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    let words = [
        "token",
        "password",
        "passwd",
        "secret",
        "key",
        "auth",
        "credential",
    ];
    words.iter().any(|w| k.contains(w)) && !k.ends_with("file") && !k.ends_with("_path")
}

/// Replace every scalar under a secret key, every value of a Secret's `data`/`stringData`, and
/// the `value` of a `{name, value}` pair whose name names a secret (container env).
fn redact_value(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let is_secret_object = m.get("kind").and_then(Value::as_str) == Some("Secret");
            let named_secret = m
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(secret_key);
            for (k, child) in m.iter_mut() {
                let hide = secret_key(k)
                    || (is_secret_object && (k == "data" || k == "stringData"))
                    || (named_secret && k == "value");
                if hide {
                    blank(child);
                } else {
                    redact_value(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_value),
        _ => {}
    }
}

/// Every scalar below `v` replaced.
fn blank(v: &mut Value) {
    match v {
        Value::Object(m) => m.values_mut().for_each(blank),
        Value::Array(a) => a.iter_mut().for_each(blank),
        Value::Null => {}
        other => *other = Value::String(REDACTED.into()),
    }
}

/// YAML, parsed and redacted as JSON values are, written back as YAML; text that does not parse
/// is redacted line by line.
fn redact_yaml(bytes: &[u8]) -> Vec<u8> {
    let docs: std::result::Result<Vec<Value>, _> = serde_yaml_ng::Deserializer::from_slice(bytes)
        .map(<Value as serde::Deserialize>::deserialize)
        .collect();
    match docs {
        Ok(docs) => {
            let mut out = Vec::new();
            for (i, mut d) in docs.into_iter().enumerate() {
                redact_value(&mut d);
                if i > 0 {
                    out.extend_from_slice(b"---\n");
                }
                out.extend(
                    serde_yaml_ng::to_string(&d)
                        .unwrap_or_default()
                        .into_bytes(),
                );
            }
            out
        }
        Err(_) => redact_text(bytes),
    }
}

/// Log and other text: after a word naming a secret and `=` or `:`, the value up to the next
/// blank, quote, comma or brace is replaced; so is any K3s join token (`K10...::...`).
pub fn redact_text(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(&redact_line(line));
    }
    out.into_bytes()
}

fn redact_line(line: &str) -> String {
    let ends = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ';' | '&');
    let lower = line.to_ascii_lowercase();
    let mut out = String::new();
    let mut i = 0;
    while i < line.len() {
        let rest = &lower[i..];
        let word = ["token", "password", "passwd", "secret"]
            .iter()
            .find(|w| rest.starts_with(*w));
        if let Some(w) = word {
            // The key (and any rest of it, `token_file` too), then `=` or `:`, then the value.
            let mut j = i + w.len();
            while j < line.len()
                && (line.as_bytes()[j].is_ascii_alphanumeric()
                    || matches!(line.as_bytes()[j], b'_' | b'-'))
            {
                j += 1;
            }
            let mut k = j;
            while k < line.len() && matches!(line.as_bytes()[k], b'"' | b'\'' | b' ') {
                k += 1;
            }
            if k < line.len() && matches!(line.as_bytes()[k], b'=' | b':') {
                k += 1;
                while k < line.len() && matches!(line.as_bytes()[k], b'"' | b'\'' | b' ') {
                    k += 1;
                }
                let end = line[k..].find(ends).map_or(line.len(), |e| k + e);
                out.push_str(&line[i..k]);
                if end > k {
                    out.push_str(REDACTED);
                }
                i = end;
                continue;
            }
            out.push_str(&line[i..j]);
            i = j;
            continue;
        }
        // A K3s join token: K10<hex>::<user>:<secret>.
        if rest.starts_with("k10") && !ends(line[i..].chars().next().unwrap_or(' ')) {
            let end = line[i..].find(ends).map_or(line.len(), |e| i + e);
            if line[i..end].contains("::") {
                out.push_str(REDACTED);
                i = end;
                continue;
            }
        }
        let c = line[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The tar.zst: `MANIFEST.txt` first, then every file, under `rin-support/`.
fn write_archive(out: &Path, manifest: &[u8], files: &[(String, Vec<u8>)]) -> Result<()> {
    let err = |e: rin_support::fs::FileError| InstallError::Io {
        path: e.path,
        source: e.source,
    };
    let mut f = rin_support::fs::AtomicFile::create(out, 0o600).map_err(err)?;
    let io = |source| InstallError::Io {
        path: out.to_path_buf(),
        source,
    };
    {
        let enc = zstd::stream::write::Encoder::new(&mut f, 3).map_err(io)?;
        let mut tar = tar::Builder::new(enc);
        let now = rin_bundle::index::now_epoch();
        for (path, bytes) in std::iter::once(("MANIFEST.txt", manifest))
            .chain(files.iter().map(|(p, b)| (p.as_str(), b.as_slice())))
        {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(now);
            h.set_cksum();
            tar.append_data(&mut h, format!("rin-support/{path}"), bytes)
                .map_err(io)?;
        }
        let enc = tar.into_inner().map_err(io)?;
        enc.finish().map_err(io)?.flush().map_err(io)?;
    }
    f.commit().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_lose_their_secrets_and_keep_the_rest() {
        let line = "level=info msg=\"joining with token=K10abc::server:f00d and password: hunter2, ok\" url=https://x:6443 K10dead::node:beef";
        let r = String::from_utf8(redact_text(line.as_bytes())).unwrap();
        for s in ["K10abc", "f00d", "hunter2", "K10dead", "beef"] {
            assert!(!r.contains(s), "{s} in {r}");
        }
        assert!(
            r.contains("level=info") && r.contains("url=https://x:6443") && r.contains(", ok"),
            "{r}"
        );
        assert!(
            r.contains("token=<redacted>") && r.contains("password: <redacted>"),
            "{r}"
        );
    }

    #[test]
    fn yaml_and_json_lose_secret_values_keep_paths_and_shape() {
        let yaml = b"token: s3cret\nserver: https://a:6443\ntls-san: [a]\nconfigs:\n  r:5000:\n    auth: {username: u, password: pw}\n    tls: {ca_file: /etc/ca.pem, key_file: /k}\n";
        let r = String::from_utf8(redact_yaml(yaml)).unwrap();
        assert!(
            !r.contains("s3cret") && !r.contains("pw") && !r.contains("username: u"),
            "{r}"
        );
        assert!(
            r.contains("https://a:6443") && r.contains("/etc/ca.pem") && r.contains("/k"),
            "{r}"
        );
        let mut secret: Value = serde_json::json!({"kind": "Secret", "data": {"x": "c2VjcmV0"}, "metadata": {"name": "db"}});
        redact_value(&mut secret);
        assert_eq!(secret["data"]["x"], REDACTED);
        assert_eq!(secret["metadata"]["name"], "db");
        let mut env: Value = serde_json::json!([{"name": "DB_PASSWORD", "value": "pw"}, {"name": "MODE", "value": "a"}]);
        redact_value(&mut env);
        assert_eq!(env[0]["value"], REDACTED);
        assert_eq!(env[1]["value"], "a");
    }
}
