//! A real registry for the tests: Debian's `docker-registry` (CNCF Distribution 2.8) on a random
//! loopback port, optionally with htpasswd basic auth and TLS from a CA made for the test, and
//! `skopeo` to push fixture layouts into it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Which registry to start.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Basic auth with this user and password (bcrypt htpasswd).
    pub user: Option<(String, String)>,
    /// Serve TLS with a certificate from a CA made for the test.
    pub tls: bool,
}

pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Storage, config, certificates.
    pub dir: tempfile::TempDir,
    pub opts: Options,
}

/// A CA and a server certificate for 127.0.0.1, made with openssl: (ca.crt, server.crt, server.key).
pub fn make_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    crate::pki::ca(dir, "rin test CA");
    crate::pki::issue(
        dir,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

impl Registry {
    pub fn start(opts: Options) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("storage");
        let mut cfg = format!(
            "version: 0.1\nlog: {{ level: info }}\nstorage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\nhttp:\n  addr: 127.0.0.1:0\n",
            root.display()
        );
        if opts.tls {
            let (_, crt, key) = make_ca(dir.path());
            cfg.push_str(&format!(
                "  tls: {{ certificate: {}, key: {} }}\n",
                crt.display(),
                key.display()
            ));
        }
        if let Some((u, p)) = &opts.user {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd runs (apt-get install apache2-utils)");
            assert!(out.status.success());
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, &out.stdout).expect("write htpasswd");
            cfg.push_str(&format!(
                "auth: {{ htpasswd: {{ realm: rin-test, path: {} }} }}\n",
                path.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).expect("write registry config");
        let (child, addr) = spawn(&cfg_path);
        Registry {
            child,
            addr,
            dir,
            opts,
        }
    }

    /// Kill the registry process (SIGKILL) as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A hook that stops the registry process (SIGSTOP): it keeps its sockets and answers
    /// nothing, as a hung server or a frozen machine does. [`Registry::resume`] continues it.
    pub fn pauser(&self) -> std::sync::Arc<dyn Fn() + Send + Sync> {
        let pid = self.child.id();
        std::sync::Arc::new(move || signal(pid, "STOP"))
    }

    /// Continue a stopped registry (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    /// Start the registry again on the same address and storage.
    pub fn restart(&mut self) {
        self.kill();
        let cfg_path = self.dir.path().join("config.yml");
        let cfg = std::fs::read_to_string(&cfg_path).expect("registry config");
        let cfg = cfg.replace("addr: 127.0.0.1:0", &format!("addr: {}", self.addr));
        std::fs::write(&cfg_path, cfg).expect("write registry config");
        let (child, addr) = spawn(&cfg_path);
        assert_eq!(addr, self.addr, "restarted on the same address");
        self.child = child;
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Where Distribution keeps a blob's bytes.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `skopeo copy --all --preserve-digests oci:LAYOUT:NAME docker://ADDR/DEST`.
    pub fn push(&self, layout: &Path, name: &str, dest: &str) {
        self.push_as(layout, name, dest, &["--preserve-digests"]);
    }

    /// [`Registry::push`] converted to Docker media types (`--format v2s2`: a manifest list of
    /// schema 2 manifests), as many registries serve images; new digests.
    pub fn push_docker(&self, layout: &Path, name: &str, dest: &str) {
        self.push_as(layout, name, dest, &["--format", "v2s2"]);
    }

    /// A small two-arch image (`FixtureImage::small("app")`) written under `dir/layout` and
    /// pushed as `test/app:1.0`, with Docker media types when `docker`: its reference.
    pub fn push_small_app(&self, dir: &Path, docker: bool) -> String {
        let layout = dir.join("layout");
        let mut w = crate::fixture::LayoutWriter::new(&layout).expect("layout");
        w.image(&crate::fixture::FixtureImage::small(
            "app",
            &["amd64", "arm64"],
        ))
        .expect("fixture image");
        if docker {
            self.push_docker(&layout, "app", "test/app:1.0");
        } else {
            self.push(&layout, "app", "test/app:1.0");
        }
        format!("{}/test/app:1.0", self.addr)
    }

    fn push_as(&self, layout: &Path, name: &str, dest: &str, how: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--all", "--quiet"]).args(how);
        if self.opts.tls {
            let certs = self.dir.path().join("certs.d");
            std::fs::create_dir_all(&certs).expect("certs dir");
            std::fs::copy(self.ca(), certs.join("ca.crt")).expect("copy ca");
            cmd.arg("--dest-cert-dir").arg(&certs);
        } else {
            cmd.arg("--dest-tls-verify=false");
        }
        if let Some((u, p)) = &self.opts.user {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{name}", layout.display()))
            .arg(format!("docker://{}/{dest}", self.addr));
        let out = cmd.output().expect("skopeo runs (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy to {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Delete a manifest by digest (the registry allows deletes; plain-HTTP registries only).
    pub fn delete_manifest(&self, repo: &str, digest: &str) {
        let (status, body) = crate::net::request(
            &self.addr,
            "DELETE",
            &format!("/v2/{repo}/manifests/{digest}"),
        );
        assert_eq!(status, 202, "delete {repo}@{digest}: {body}");
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Run `docker-registry serve CFG`; its process and the address it listens on.
fn spawn(cfg_path: &Path) -> (Child, String) {
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(cfg_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker-registry runs (apt-get install docker-registry)");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(i) = line.find("listening on ") {
                let rest = &line[i + "listening on ".len()..];
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                let _ = tx.send(addr);
                sent = true;
            }
            // Keep draining so the registry never blocks on a full pipe.
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the registry printed its address");
    (child, addr)
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Docker config directory holding `auth` for `addr` (for `DOCKER_CONFIG`).
pub fn docker_config(dir: &Path, addr: &str, user: &str, pass: &str) -> PathBuf {
    use base64::Engine as _;
    let d = dir.join("docker-config");
    std::fs::create_dir_all(&d).expect("docker config dir");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    std::fs::write(
        d.join("config.json"),
        serde_json::json!({"auths": {addr: {"auth": auth}}}).to_string(),
    )
    .expect("write docker config");
    d
}

/// Push a chart archive as Helm does (`helm push`): an OCI artifact with Helm's media types,
/// at `ADDR/REPO/NAME:VERSION`, with oci-client. Returns the manifest URL it reports.
pub fn push_chart(addr: &str, repo: &str, name: &str, version: &str, tgz: Vec<u8>) -> String {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![addr.to_string()]),
        ..Default::default()
    });
    let reference: oci_client::Reference = format!("{addr}/{repo}/{name}:{version}")
        .parse()
        .expect("chart reference");
    let config = format!(r#"{{"apiVersion":"v2","name":"{name}","version":"{version}"}}"#);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(client.push(
        &reference,
        &[ImageLayer::new(
            tgz,
            rin_bundle::oci::MT_HELM_CHART.to_string(),
            None,
        )],
        Config::new(
            config.into_bytes(),
            rin_bundle::oci::MT_HELM_CONFIG.to_string(),
            None,
        ),
        &oci_client::secrets::RegistryAuth::Anonymous,
        None,
    ))
    .expect("push the chart")
    .manifest_url
}
