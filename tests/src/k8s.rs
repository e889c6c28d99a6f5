//! A real Kubernetes control plane for the cluster tests, built from upstream source by
//! `tests/k8s/build.sh` (versions in `tests/k8s/versions.env`): kine over SQLite (the datastore
//! a single K3s server runs), kube-apiserver with its own CA, serving certificate and
//! service-account keys, kube-controller-manager, kube-scheduler, kwok playing the nodes (and
//! their kubelets: pods become Running and Ready, a Job's pods Succeed) and K3s's helm-controller.
//! Everything listens on random loopback ports; what K3s ships that stacks lean on is added the
//! way K3s has it: the `local-path` StorageClass (the default class, binding on first consumer),
//! whose claims a stand-in provisioner of the harness provisions (and those of any provisioner a
//! test names: [`ControlPlane::provision_for`]).
//!
//! Processes run under a small `sh` guard each that ends them when the pipe from this process
//! closes: on drop, and also when the test binary exits with a control plane still held in a
//! static ([`shared`]). Their logs and the datastore are in the control plane's directory, which a
//! last guard removes afterwards unless a test using it failed ([`ControlPlane::watch`]) or a
//! component died: then its path is printed with the failure.
#![allow(clippy::unwrap_used)]

use crate::pki::{ca, issue, openssl};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The component versions (`tests/k8s/versions.env`).
const VERSIONS: &str = include_str!("../k8s/versions.env");

/// How long the control plane may take to come up: a cold start on two busy cores.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A simulated node.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// `amd64`, `arm64`: the node's `kubernetes.io/arch`.
    pub arch: String,
    /// A server (control-plane and etcd roles, as K3s labels them) or an agent.
    pub server: bool,
}

impl Node {
    pub fn server(name: &str, arch: &str) -> Node {
        Node {
            name: name.into(),
            arch: arch.into(),
            server: true,
        }
    }
    pub fn agent(name: &str, arch: &str) -> Node {
        Node {
            name: name.into(),
            arch: arch.into(),
            server: false,
        }
    }
}

/// The directory of one component's binaries: `${RIN_K8S_CACHE:-~/.cache/rin-k8s}/NAME-VERSION`.
fn component_dir(name: &str) -> PathBuf {
    let key = name.to_uppercase().replace('-', "_");
    let version = VERSIONS
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("tests/k8s/versions.env names no {key}"));
    let cache = std::env::var_os("RIN_K8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/rin-k8s")
        });
    cache.join(format!("{name}-{version}"))
}

/// The path of a built binary; a clear failure (not a skip) when the control plane was not built.
fn binary(component: &str, name: &str) -> PathBuf {
    let path = component_dir(component).join(name);
    assert!(
        path.is_file(),
        "{} is missing: the cluster tests run against a Kubernetes control plane built from source; run `bash tests/k8s/build.sh` first (it needs Go 1.24+ and the Go module proxy; .ci/run does it)",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1 (the kernel's pick, released for the component to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One component, under its `sh` guard: closing `stdin` (drop, or this process ending) makes the
/// guard end the component and then itself.
struct Proc {
    name: String,
    guard: Child,
    stdin: Option<ChildStdin>,
}

impl Proc {
    fn spawn(dir: &Path, name: &str, exe: &Path, args: &[String]) -> Proc {
        let mut all = vec![name.to_string(), exe.display().to_string()];
        all.extend_from_slice(args);
        Proc::guarded(
            dir,
            name,
            r#""$@" & c=$!; read -r _; kill "$c" 2>/dev/null; wait "$c""#,
            &all,
        )
    }

    /// `script` run by `sh -c` with `args` (`$0`, `$1`, ...), its output into `dir/NAME.log`.
    fn guarded(dir: &Path, name: &str, script: &str, args: &[String]) -> Proc {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(script)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdin = guard.stdin.take();
        Proc {
            name: name.into(),
            guard,
            stdin,
        }
    }

    /// Still running? (A component that exited is a failure to report, with its log.)
    fn running(&mut self) -> bool {
        matches!(self.guard.try_wait(), Ok(None))
    }

    fn stop(&mut self) {
        self.stdin.take();
        let _ = self.guard.wait();
    }
}

/// A running control plane.
pub struct ControlPlane {
    dir: PathBuf,
    procs: Mutex<Vec<Proc>>,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    pub nodes: Vec<Node>,
    keep: AtomicBool,
    api: Arc<Api>,
    /// Provisioners whose claims the harness provisions (see [`ControlPlane::provision_for`]).
    provisioners: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
}

/// A client of the API server for the harness (admin), usable from any thread.
struct Api {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Api {
    /// See [`ControlPlane::raw`].
    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let mut req = http::Request::builder().uri(path);
        if method == "PATCH" {
            req = req
                .method("PATCH")
                .header("Content-Type", "application/apply-patch+yaml");
        } else if method == "MERGE" {
            req = req
                .method("PATCH")
                .header("Content-Type", "application/merge-patch+json");
        } else {
            req = req.method(method);
        }
        if body.is_some() && method != "PATCH" && method != "MERGE" {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(
                body.map(|b| serde_json::to_vec(b).unwrap())
                    .unwrap_or_default(),
            )
            .unwrap();
        self.rt.block_on(async {
            let resp = self
                .client
                .send(req.map(kube::client::Body::from))
                .await
                .map_err(|e| e.to_string())?;
            let code = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect_bytes()
                .await
                .map_err(|e| e.to_string())?;
            let v = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            Ok((code, v))
        })
    }
}

/// The control plane shared by the tests of one test binary (each in its own namespaces): one
/// amd64 server and one amd64 agent.
pub fn shared() -> &'static ControlPlane {
    static SHARED: OnceLock<ControlPlane> = OnceLock::new();
    SHARED.get_or_init(|| {
        ControlPlane::start(&[
            Node::server("server-0", "amd64"),
            Node::agent("agent-0", "amd64"),
        ])
    })
}

fn b64_file(path: &Path) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

/// Wait until `ready` says so, at most `within`; `what` names the wait in the failure.
fn wait_until(cp_dir: &Path, what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < within,
            "the control plane did not come up: {what} after {within:?} (logs in {})",
            cp_dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl ControlPlane {
    /// Start a control plane with `nodes`, and wait (bounded) until every part answers, the nodes
    /// are Ready and a pod gets scheduled and made ready on them.
    pub fn start(nodes: &[Node]) -> ControlPlane {
        let k8s = |n: &str| binary("kubernetes", n);
        let (apiserver, kcm, scheduler) = (
            k8s("kube-apiserver"),
            k8s("kube-controller-manager"),
            k8s("kube-scheduler"),
        );
        let (kine, kwok, helm) = (
            binary("kine", "kine"),
            binary("kwok", "kwok"),
            binary("helm-controller", "helm-controller"),
        );
        let dir = tempfile::Builder::new()
            .prefix("rin-k8s-")
            .tempdir()
            .unwrap()
            .keep();

        // A CA, the API server's serving certificate, an admin client, service-account keys.
        ca(&dir, "rin-test-cluster-ca");
        issue(
            &dir,
            "apiserver",
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.43.0.1,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n",
        );
        issue(
            &dir,
            "admin",
            "/O=system:masters/CN=rin-test-admin",
            "extendedKeyUsage=clientAuth\n",
        );
        openssl(
            &dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-out",
                "sa.key",
            ],
        );
        openssl(
            &dir,
            &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        );

        std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY).unwrap();
        let kine_port = free_port();
        let api_port = free_port();
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = write_kubeconfig(&dir, "admin", &server);

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(config).unwrap()
        });
        let cp = ControlPlane {
            dir: dir.clone(),
            procs: Mutex::new(Vec::new()),
            server,
            nodes: nodes.to_vec(),
            keep: AtomicBool::new(false),
            api: Arc::new(Api { rt, client }),
            provisioners: Arc::new(Mutex::new(BTreeSet::from([LOCAL_PATH.to_string()]))),
            stop: Arc::new(AtomicBool::new(false)),
        };
        // Removes the directory once every component ended, unless a test marked it kept.
        cp.spawn_guarded(
            "janitor",
            r#"read -r _; sleep 1; [ -e "$0/keep" ] || for _ in 1 2 3 4 5; do rm -rf "$0" && break; sleep 1; done"#,
            &[dir.display().to_string()],
        );
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let kc = kubeconfig.to_str().unwrap();

        cp.spawn(
            "kine",
            &kine,
            &s(&[
                "--listen-address",
                &format!("127.0.0.1:{kine_port}"),
                "--endpoint",
                &format!(
                    "sqlite://{}/state.db?_journal=WAL&cache=shared",
                    dir.display()
                ),
                "--metrics-bind-address",
                "0",
            ]),
        );
        wait_until(&dir, "kine answering", START_TIMEOUT, || {
            TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], kine_port))).is_ok()
        });
        cp.spawn(
            "kube-apiserver",
            &apiserver,
            &s(&[
                &format!("--etcd-servers=http://127.0.0.1:{kine_port}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                "--tls-cert-file=apiserver.crt",
                "--tls-private-key-file=apiserver.key",
                "--client-ca-file=ca.crt",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file=sa.pub",
                "--service-account-signing-key-file=sa.key",
                "--service-cluster-ip-range=10.43.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
                "--audit-policy-file=audit-policy.yaml",
                "--audit-log-path=audit.log",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
            ]),
        );
        wait_until(
            &dir,
            "kube-apiserver ready (/readyz)",
            START_TIMEOUT,
            || {
                cp.check_running();
                cp.raw("GET", "/readyz", None)
                    .is_ok_and(|(code, _)| code == 200)
            },
        );
        // What the controller-manager and the scheduler share: the admin client for everything,
        // a serving port of their own on loopback, no leader election.
        let controller = |more: &[&str]| {
            let mut args = s(&[
                "--kubeconfig",
                kc,
                "--authentication-kubeconfig",
                kc,
                "--authorization-kubeconfig",
                kc,
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", free_port()),
                "--leader-elect=false",
            ]);
            args.extend(s(more));
            args
        };
        cp.spawn(
            "kube-controller-manager",
            &kcm,
            &controller(&[
                "--service-account-private-key-file=sa.key",
                "--root-ca-file=ca.crt",
                "--use-service-account-credentials=true",
                "--cluster-signing-cert-file=ca.crt",
                "--cluster-signing-key-file=ca.key",
                // Slack for kwok's node heartbeats when two cores are busy with the tests.
                "--node-monitor-grace-period=60s",
            ]),
        );
        cp.spawn("kube-scheduler", &scheduler, &controller(&[]));
        let stages = dir.join("kwok-stages.yaml");
        std::fs::write(&stages, kwok_stages()).unwrap();
        cp.spawn(
            "kwok",
            &kwok,
            &s(&[
                "--kubeconfig",
                kc,
                "--config",
                stages.to_str().unwrap(),
                "--manage-all-nodes=true",
                "--cidr=10.42.0.0/16",
                "--node-ip=127.0.0.1",
                &format!("--server-address=127.0.0.1:{}", free_port()),
            ]),
        );
        cp.spawn(
            "helm-controller",
            &helm,
            &s(&["--kubeconfig", kc, "--node-name", &nodes[0].name]),
        );

        for n in nodes {
            cp.create_node(n);
        }
        cp.create_storage();
        cp.start_provisioner();
        // The controller-manager runs: it made the default namespace's service account.
        wait_until(
            &dir,
            "kube-controller-manager (the default ServiceAccount)",
            START_TIMEOUT,
            || {
                cp.check_running();
                cp.get("/api/v1/namespaces/default/serviceaccounts/default")
                    .is_some()
            },
        );
        wait_until(&dir, "kwok (every node Ready)", START_TIMEOUT, || {
            cp.check_running();
            nodes.iter().all(|n| {
                cp.get(&format!("/api/v1/nodes/{}", n.name))
                    .is_some_and(|o| condition(&o, "Ready") == Some("True"))
            })
        });
        wait_until(
            &dir,
            "helm-controller (its HelmChart CRD Established)",
            START_TIMEOUT,
            || {
                cp.check_running();
                cp.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/helmcharts.helm.cattle.io")
                    .is_some_and(|o| condition(&o, "Established") == Some("True"))
            },
        );
        // The scheduler and kwok together: a pod is placed and made ready.
        cp.apply(
            "/api/v1/namespaces/default/pods/rin-probe",
            &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "rin-probe", "namespace": "default"},
                "spec": {"containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10"}]}}),
        );
        wait_until(
            &dir,
            "kube-scheduler and kwok (a probe pod Ready)",
            START_TIMEOUT,
            || {
                cp.check_running();
                cp.get("/api/v1/namespaces/default/pods/rin-probe")
                    .is_some_and(|o| condition(&o, "Ready") == Some("True"))
            },
        );
        cp.delete("/api/v1/namespaces/default/pods/rin-probe");
        cp
    }

    fn spawn(&self, name: &str, exe: &Path, args: &[String]) {
        self.procs
            .lock()
            .unwrap()
            .push(Proc::spawn(&self.dir, name, exe, args));
    }

    fn spawn_guarded(&self, name: &str, script: &str, args: &[String]) {
        self.procs
            .lock()
            .unwrap()
            .push(Proc::guarded(&self.dir, name, script, args));
    }

    /// Keep the directory (logs, datastore) after the control plane ends, and say where.
    fn keep(&self) {
        if !self.keep.swap(true, Ordering::SeqCst) {
            let _ = std::fs::write(self.dir.join("keep"), "");
            eprintln!(
                "the control plane's logs are kept in {}",
                self.dir.display()
            );
        }
    }

    /// Fail, naming the component and its log, when a component has exited.
    fn check_running(&self) {
        let exited = self
            .procs
            .lock()
            .unwrap()
            .iter_mut()
            .find_map(|p| (p.name != "janitor" && !p.running()).then(|| p.name.clone()));
        if let Some(name) = exited {
            self.keep();
            let log = self.dir.join(format!("{name}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            panic!(
                "{name} exited; the last lines of {}:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// A guard for one test: if the test fails, the control plane's directory is kept and named.
    pub fn watch(&self) -> Watch<'_> {
        Watch(self)
    }

    /// A request to the API server: (status code, body as JSON, or as a string when not JSON).
    /// `PATCH` is a server-side apply, `MERGE` a JSON merge patch.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        self.api.raw(method, path, body)
    }

    /// The object at `path`, or None when it does not exist.
    pub fn get(&self, path: &str) -> Option<Value> {
        match self.raw("GET", path, None) {
            Ok((200, v)) => Some(v),
            Ok((404, _)) => None,
            Ok((code, v)) => panic!("GET {path}: {code} {v}"),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// The items of the list at `path` (with `?labelSelector=...` and such as given).
    pub fn list(&self, path: &str) -> Vec<Value> {
        let v = self
            .get(path)
            .unwrap_or_else(|| panic!("GET {path}: not found"));
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Server-side apply of `obj` at `path` with field manager `test`, forced.
    pub fn apply(&self, path: &str, obj: &Value) -> Value {
        self.apply_as(path, obj, "test")
    }

    /// Server-side apply of `obj` at `path` with field manager `manager`, forced.
    pub fn apply_as(&self, path: &str, obj: &Value, manager: &str) -> Value {
        let (code, v) = self
            .raw(
                "PATCH",
                &format!("{path}?fieldManager={manager}&force=true"),
                Some(obj),
            )
            .unwrap();
        assert!(code < 300, "apply {path}: {code} {v}");
        v
    }

    /// Delete the object at `path` (absent is fine).
    pub fn delete(&self, path: &str) {
        let (code, v) = self.raw("DELETE", path, None).unwrap();
        assert!(code < 300 || code == 404, "DELETE {path}: {code} {v}");
    }

    /// Wait until `ready` holds, at most `within`: false when it did not.
    pub fn eventually(&self, within: Duration, mut ready: impl FnMut(&Self) -> bool) -> bool {
        let started = Instant::now();
        loop {
            if ready(self) {
                return true;
            }
            if started.elapsed() > within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A kubeconfig for a client of its own, `user` (a cluster admin): what the binary under test
    /// gets, so that [`ControlPlane::requests`] tells its requests from everyone else's.
    pub fn client_kubeconfig(&self, user: &str) -> PathBuf {
        issue(
            &self.dir,
            user,
            &format!("/O=system:masters/O=rin-test:client/CN={user}"),
            "extendedKeyUsage=clientAuth\n",
        );
        write_kubeconfig(&self.dir, user, &self.server)
    }

    /// `rininstall apply BUNDLE` (signed by `key`) as a site's first server of `arch` runs it,
    /// deploying to this control plane as client `user` (K3s not started, the images seeded into
    /// `registry`, the node's files under `root`, at most 120 s to get healthy): whether it
    /// succeeded, and what it said.
    pub fn rininstall_apply(
        &self,
        user: &str,
        bundle: &Path,
        key: &Path,
        arch: &str,
        registry: &str,
        root: &Path,
    ) -> (bool, String) {
        let out = Command::new(crate::bin("rininstall"))
            .arg("apply")
            .arg(bundle)
            .arg("--key")
            .arg(key)
            .args(["--arch", arch, "--no-start", "--progress", "none"])
            .args(["--registry", registry, "--timeout", "120", "--root"])
            .arg(root)
            .arg("--kubeconfig")
            .arg(self.client_kubeconfig(user))
            .output()
            .expect("rininstall runs");
        (out.status.success(), crate::text(&out))
    }

    /// Every request `user` made, in the order the API server received them, from its audit
    /// log: `VERB URI CODE` (verbs as Kubernetes names them: get, list, create, patch, delete).
    pub fn requests(&self, user: &str) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        let mut out: Vec<(String, String)> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["user"]["username"] == user && e["stage"] == "ResponseComplete")
            .map(|e| {
                (
                    e["requestReceivedTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    format!(
                        "{} {} {}",
                        e["verb"].as_str().unwrap_or(""),
                        e["requestURI"].as_str().unwrap_or(""),
                        e["responseStatus"]["code"]
                    ),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, l)| l).collect()
    }

    /// The API path of an object (`name` empty: of the collection), from discovery; None when
    /// the API server does not serve that kind.
    pub fn path_of(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<String> {
        let base = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let list = self.get(&base)?;
        let r = list["resources"]
            .as_array()?
            .iter()
            .find(|r| r["kind"] == kind && !r["name"].as_str().unwrap_or("/").contains('/'))?;
        let plural = r["name"].as_str()?;
        let mut path = base;
        if r["namespaced"] == true {
            path.push_str(&format!("/namespaces/{namespace}"));
        }
        path.push_str(&format!("/{plural}"));
        if !name.is_empty() {
            path.push_str(&format!("/{name}"));
        }
        Some(path)
    }

    /// Patch the status of the object at `path` (a JSON merge patch), as its kubelet or
    /// controller would.
    pub fn patch_status(&self, path: &str, patch: &Value) {
        let (code, v) = self
            .raw("MERGE", &format!("{path}/status"), Some(patch))
            .unwrap();
        assert!(code < 300, "status patch {path}: {code} {v}");
    }

    fn create_node(&self, n: &Node) {
        let mut labels = json!({
            "kubernetes.io/arch": n.arch,
            "kubernetes.io/os": "linux",
            "kubernetes.io/hostname": n.name,
            "beta.kubernetes.io/arch": n.arch,
            "beta.kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": "k3s",
            "type": "kwok",
        });
        if n.server {
            labels["node-role.kubernetes.io/control-plane"] = json!("true");
            labels["node-role.kubernetes.io/master"] = json!("true");
            labels["node-role.kubernetes.io/etcd"] = json!("true");
        }
        self.apply(
            &format!("/api/v1/nodes/{}", n.name),
            &json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n.name, "labels": labels}}),
        );
    }

    /// K3s's default StorageClass `local-path` (binding when the first pod using a claim is
    /// scheduled); its claims are provisioned by the harness, as K3s's local-path provisioner
    /// would.
    fn create_storage(&self) {
        self.apply(
            "/apis/storage.k8s.io/v1/storageclasses/local-path",
            &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "local-path",
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": LOCAL_PATH,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "WaitForFirstConsumer"}),
        );
    }

    /// Provision the claims of every StorageClass whose provisioner is `provisioner` (a stand-in
    /// for a stack's own provisioner, which kwok's nodes cannot run).
    pub fn provision_for(&self, provisioner: &str) {
        self.provisioners
            .lock()
            .unwrap()
            .insert(provisioner.to_string());
    }

    /// The stand-in provisioner: every 300 ms, a volume for each pending claim of a class whose
    /// provisioner it stands in for, once the scheduler chose a node when the class binds on first
    /// consumer (pinned to that node, as a local volume is).
    fn start_provisioner(&self) {
        let (api, provisioners, stop) = (
            self.api.clone(),
            self.provisioners.clone(),
            self.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                provision(&api, &provisioners.lock().unwrap().clone());
                std::thread::sleep(Duration::from_millis(300));
            }
        });
    }
}

/// The provisioner of K3s's default StorageClass.
const LOCAL_PATH: &str = "rancher.io/local-path";

/// One round of the stand-in provisioner (see [`ControlPlane::start_provisioner`]).
fn provision(api: &Api, provisioners: &BTreeSet<String>) {
    let (Ok((200, classes)), Ok((200, claims))) = (
        api.raw("GET", "/apis/storage.k8s.io/v1/storageclasses", None),
        api.raw("GET", "/api/v1/persistentvolumeclaims", None),
    ) else {
        return;
    };
    let empty = Vec::new();
    let classes = classes["items"].as_array().unwrap_or(&empty);
    for c in claims["items"].as_array().unwrap_or(&empty) {
        if c["status"]["phase"] != "Pending" || c["spec"]["volumeName"].is_string() {
            continue;
        }
        let Some(class) = classes
            .iter()
            .find(|k| k["metadata"]["name"] == c["spec"]["storageClassName"])
        else {
            continue;
        };
        if !class["provisioner"]
            .as_str()
            .is_some_and(|p| provisioners.contains(p))
        {
            continue;
        }
        let node = c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"].as_str();
        if class["volumeBindingMode"] == "WaitForFirstConsumer" && node.is_none() {
            continue;
        }
        let name = format!("pvc-{}", c["metadata"]["uid"].as_str().unwrap_or(""));
        let mut pv = json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name,
                "annotations": {"pv.kubernetes.io/provisioned-by": class["provisioner"]}},
            "spec": {"capacity": {"storage": c["spec"]["resources"]["requests"]["storage"]},
                "accessModes": c["spec"]["accessModes"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": class["metadata"]["name"],
                "hostPath": {"path": format!("/var/lib/rin-test/{name}")},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": c["metadata"]["namespace"], "name": c["metadata"]["name"],
                    "uid": c["metadata"]["uid"]}}});
        if let Some(node) = node {
            pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}});
        }
        let _ = api.raw("POST", "/api/v1/persistentvolumes", Some(&pv));
    }
}

/// Write `NAME.kubeconfig` in `dir` for the client certificate `NAME.crt`/`NAME.key` there.
fn write_kubeconfig(dir: &Path, name: &str, server: &str) -> PathBuf {
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: rin-test\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: rin-test\n  context: {{cluster: rin-test, user: {name}}}\ncurrent-context: rin-test\n",
            b64_file(&dir.join("ca.crt")),
            b64_file(&dir.join(format!("{name}.crt"))),
            b64_file(&dir.join(format!("{name}.key"))),
        ),
    )
    .unwrap();
    path
}

/// What the API server's audit log keeps: every request of the clients made by
/// [`ControlPlane::client_kubeconfig`] (the product under test), none of the components'.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  userGroups: [\"rin-test:client\"]\n- level: None\n";

/// See [`ControlPlane::watch`].
pub struct Watch<'a>(&'a ControlPlane);

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.keep();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if std::thread::panicking() {
            self.keep();
        }
        // The janitor (first started) goes last: it removes the directory unless kept.
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        for p in procs.iter_mut().rev() {
            p.stop();
        }
    }
}

/// The status of a condition of `obj` ("True", "False", "Unknown").
pub fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a str> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?
        .get("status")?
        .as_str()
}

/// Annotation that makes kwok keep a pod from getting ready, as a node whose containerd cannot
/// pull the image would: its container waits in `ErrImagePull`.
pub const STALL_ANNOTATION: &str = "rin.test/kwok-pull-fails";

/// How kwok starts a pod (`@NAME@`, `@FAILS@`: whether the pod carries [`STALL_ANNOTATION`],
/// `@READY@`, `@STATE@`, `@PHASE@`): the container statuses, IPs and phase a kubelet reports.
const POD_START: &str = r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: @NAME@
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.podIP', operator: DoesNotExist}
    - {key: '.metadata.annotations["@ANNOTATION@"]', operator: @FAILS@}
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Initialized}
      - {lastTransitionTime: {{ $now | Quote }}, status: "@READY@", type: Ready}
      - {lastTransitionTime: {{ $now | Quote }}, status: "@READY@", type: ContainersReady}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: @READY_BOOL@
        restartCount: 0
        started: @READY_BOOL@
        state: @STATE@
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        state: {terminated: {exitCode: 0, reason: Completed, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      phase: @PHASE@
      startTime: {{ $now | Quote }}
"#;

/// What kwok does after a pod started: a Job's pods Succeed, deleted pods go.
const POD_END: &str = r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-complete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.phase', operator: In, values: [Running]}
    - {key: '.metadata.ownerReferences.[].kind', operator: In, values: [Job]}
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {lastTransitionTime: {{ $now | Quote }}, status: "False", type: Ready, reason: PodCompleted}
      - {lastTransitionTime: {{ $now | Quote }}, status: "False", type: ContainersReady, reason: PodCompleted}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state: {terminated: {exitCode: 0, reason: Completed, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}}
      {{ end }}
      phase: Succeeded
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: Exists}
  next:
    finalizers: {empty: true}
    delete: true
"#;

/// The pod lifecycle kwok plays: pods are made Running and Ready at once, a Job's pods then
/// Succeed, deleted pods go; a pod annotated [`STALL_ANNOTATION`] waits in `ErrImagePull`.
fn kwok_stages() -> String {
    let start = |name: &str, fails: bool| {
        let (ready, state, phase) = if fails {
            (
                "False",
                r#"{waiting: {reason: ErrImagePull, message: {{ printf "failed to pull and unpack image %q: not found" .image | Quote }}}}"#,
                "Pending",
            )
        } else {
            (
                "True",
                "{running: {startedAt: {{ $now | Quote }}}}",
                "Running",
            )
        };
        POD_START
            .replace("@NAME@", name)
            .replace("@ANNOTATION@", STALL_ANNOTATION)
            .replace("@FAILS@", if fails { "Exists" } else { "DoesNotExist" })
            .replace("@READY_BOOL@", &ready.to_lowercase())
            .replace("@READY@", ready)
            .replace("@STATE@", state)
            .replace("@PHASE@", phase)
    };
    format!(
        "{}---\n{}---\n{POD_END}",
        start("pod-ready", false),
        start("pod-pull-fails", true)
    )
}
