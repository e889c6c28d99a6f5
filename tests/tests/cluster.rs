//! The cluster step of the `rininstall` binary, end to end, against a real Kubernetes control
//! plane built from upstream source (`rin_tests::k8s`: kube-apiserver on kine, the controller
//! manager, the scheduler, kwok's nodes and K3s's helm-controller), with images seeded into a
//! real registry: deploy order, server-side apply, health driven by the real controllers, charts
//! through the real helm-controller, status, an upgrade that prunes, a rollback, field conflicts,
//! a stuck rollout diagnosed, Pod Security admission. The tests share one control plane, each in
//! namespaces of its own, with a client certificate of its own so that the API server's audit log
//! shows exactly what it asked. What only K3s itself can show is `real_k3s_apply_upgrade_and_rollback`
//! below (ignored, with `tests/k3s-e2e.sh`).
#![allow(clippy::unwrap_used)]

use rin_tests::k8s::{self, ControlPlane};
use rin_tests::registry::{Options, Registry};
use rin_tests::{bin, build_signed, fixture, text};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A node's view of the test world: a temporary directory, a real registry, the shared control
/// plane with a client of this test's own behind `kc`, the node's root, and the test stack named
/// `name` (the stack, its namespace and its chart).
struct Site {
    t: tempfile::TempDir,
    reg: Registry,
    cp: &'static ControlPlane,
    user: String,
    kc: PathBuf,
    root: PathBuf,
    stack: PathBuf,
    name: String,
}

fn site(name: &str) -> Site {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let cp = k8s::shared();
    let user = format!("rininstall-{name}");
    let kc = cp.client_kubeconfig(&user);
    let root = t.path().join("root");
    let stack = fixture::write_named_stack(&t.path().join("stack"), name, &[]).unwrap();
    Site {
        t,
        reg,
        cp,
        user,
        kc,
        root,
        stack,
        name: name.into(),
    }
}

impl Site {
    fn rininstall(&self, args: &[&str], timeout: &str) -> Output {
        Command::new(bin("rininstall"))
            .args(args)
            .arg("--root")
            .arg(&self.root)
            .arg("--kubeconfig")
            .arg(&self.kc)
            .args(["--timeout", timeout])
            .output()
            .unwrap()
    }

    fn apply_with(&self, bundle: &Path, key: &Path, extra: &[&str], timeout: &str) -> Output {
        let mut args = vec![
            "apply",
            bundle.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--arch",
            "amd64",
            "--no-start",
            "--progress",
            "none",
            "--registry",
            &self.reg.addr,
        ];
        args.extend(extra);
        self.rininstall(&args, timeout)
    }

    fn apply(&self, bundle: &Path, key: &Path, extra: &[&str]) -> Output {
        self.apply_with(bundle, key, extra, "90")
    }

    fn write(&self, file: &str, content: &str) {
        let path = self.stack.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Build the stack with `manifests/app/web.yaml` changed by `edit` and apply it, 15 s to get
    /// healthy, expecting a refusal (exit code 1) and nothing recorded: what rininstall said.
    fn refused_with_web(&self, edit: impl Fn(&str) -> String) -> String {
        let web = std::fs::read_to_string(self.stack.join("manifests/app/web.yaml")).unwrap();
        self.write("manifests/app/web.yaml", &edit(&web));
        let b = self.t.path().join("b.tar.zst");
        let (key, _) = build_signed(self.t.path(), &self.stack, "1700000000", &b);
        let out = self.apply_with(&b, &key, &[], "15");
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            !self.writes().iter().any(|l| l.contains("rin-release")),
            "nothing is recorded when the stack is not healthy"
        );
        text(&out)
    }

    /// The writes (anything but get, list and watch) this test's client made, in order.
    fn writes(&self) -> Vec<String> {
        self.cp
            .requests(&self.user)
            .into_iter()
            .filter(|r| !["get ", "list ", "watch "].iter().any(|v| r.starts_with(v)))
            .collect()
    }
}

#[test]
fn apply_deploys_records_upgrades_with_pruning_rolls_back_and_reports_status() {
    let s = site("life");
    let _watch = s.cp.watch();
    let (cp, ns) = (s.cp, s.name.as_str());
    // 1.0.0: the Namespace, the chart, the web Deployment, and workloads of every kind the
    // health waits follow: a StatefulSet whose claims bind to volumes of K3s's default class, a
    // DaemonSet (a pod on every node), a Job, and a claim nothing uses yet (its class binds on
    // first consumer). A second namespace with a ConfigMap, dropped by the upgrade.
    s.write(
        "manifests/app/db.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\n  annotations: {{rin.dev/generate: password}}\nstringData: {{user: demo}}\n"
        ),
    );
    s.write(
        "manifests/app/more.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: store, namespace: {ns}}}\nspec:\n  replicas: 2\n  serviceName: store\n  selector: {{matchLabels: {{app: store}}}}\n  template:\n    metadata: {{labels: {{app: store}}}}\n    spec: {{containers: [{{name: store, image: registry.example/demo/worker:1.0}}]}}\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec: {{containers: [{{name: agent, image: registry.example/demo/worker:1.0}}]}}\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: migrate, namespace: {ns}}}\nspec:\n  template:\n    spec: {{restartPolicy: Never, containers: [{{name: migrate, image: registry.example/demo/worker:1.0}}]}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: scratch, namespace: {ns}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
        ),
    );
    // A CRD of the stack's own and an object of its kind: applied once the CRD is Established.
    s.write(
        "manifests/crd.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.life.rin.test}\nspec:\n  group: life.rin.test\n  names: {kind: Widget, plural: widgets, singular: widget}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec: {type: object, properties: {size: {type: integer}}}\n",
    );
    s.write(
        "manifests/app/widget.yaml",
        &format!(
            "apiVersion: life.rin.test/v1\nkind: Widget\nmetadata: {{name: w, namespace: {ns}}}\nspec: {{size: 3}}\n"
        ),
    );
    s.write(
        "manifests/extra.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}-extra}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}-extra}}\ndata: {{mode: a}}\n"
        ),
    );
    let db_password = || {
        use base64::Engine as _;
        let secret = cp
            .get(&format!("/api/v1/namespaces/{ns}/secrets/db"))
            .unwrap();
        assert_eq!(secret["data"]["user"], "ZGVtbw==");
        let password = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["password"].as_str().unwrap())
            .unwrap();
        let creates = s
            .writes()
            .iter()
            .filter(|l| l.starts_with(&format!("create /api/v1/namespaces/{ns}/secrets")))
            .count();
        (String::from_utf8(password).unwrap(), creates)
    };
    let v1 = s.t.path().join("v1.tar.zst");
    let (key, _) = build_signed(s.t.path(), &s.stack, "1700000000", &v1);
    let out = s.apply(&v1, &key, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("deployed life 1.0.0: 11 objects healthy, revision 1"),
        "{said}"
    );
    let chart = cp
        .get(&format!(
            "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/{ns}"
        ))
        .unwrap();
    assert_eq!(chart["spec"]["targetNamespace"], ns);
    // The chart's archive, inline: the bytes the stack carries.
    use base64::Engine as _;
    let tgz = base64::engine::general_purpose::STANDARD
        .decode(chart["spec"]["chartContent"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        tgz,
        std::fs::read(s.stack.join(format!("charts/{ns}-0.1.0.tgz"))).unwrap()
    );
    // The helm-controller ran the chart's install as a Job, which completed.
    let job_path = format!("/apis/batch/v1/namespaces/kube-system/jobs/helm-install-{ns}");
    let job = cp.get(&job_path).unwrap();
    assert_eq!(k8s::condition(&job, "Complete"), Some("True"), "{job}");
    let web = cp
        .get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web"))
        .unwrap();
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/demo/web:1.0"
    );
    // Server-side apply, with rininstall as the field manager.
    assert!(
        web["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["manager"] == "rininstall" && f["operation"] == "Apply"),
        "{web}"
    );
    // The real controllers made the workloads healthy: a DaemonSet pod on every node, the
    // StatefulSet's claims bound to volumes provisioned on their pods' nodes, the Job complete.
    let ds = cp
        .get(&format!("/apis/apps/v1/namespaces/{ns}/daemonsets/agent"))
        .unwrap();
    assert_eq!(ds["status"]["numberReady"], json!(cp.nodes.len()), "{ds}");
    for i in 0..2 {
        let pvc = cp
            .get(&format!(
                "/api/v1/namespaces/{ns}/persistentvolumeclaims/data-store-{i}"
            ))
            .unwrap();
        assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
    }
    let migrate = cp
        .get(&format!("/apis/batch/v1/namespaces/{ns}/jobs/migrate"))
        .unwrap();
    assert_eq!(k8s::condition(&migrate, "Complete"), Some("True"));
    // The unused claim waits for its first consumer, and counted as ready.
    let scratch = cp
        .get(&format!(
            "/api/v1/namespaces/{ns}/persistentvolumeclaims/scratch"
        ))
        .unwrap();
    assert_eq!(scratch["status"]["phase"], "Pending");
    assert!(
        cp.get(&format!(
            "/api/v1/namespaces/rin-system/configmaps/rin-release-{ns}-1"
        ))
        .is_some()
    );
    // Applied in order, as the audit log saw it: the Namespace, then the chart (and its Job
    // waited for), then the workloads.
    let writes = s.writes();
    let at = |what: &str| {
        writes
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no write of {what}: {writes:#?}"))
    };
    assert!(
        at("/customresourcedefinitions/widgets.life.rin.test?")
            < at(&format!("/api/v1/namespaces/{ns}?"))
            && at(&format!("/api/v1/namespaces/{ns}?")) < at(&format!("/helmcharts/{ns}?"))
            && at(&format!("/helmcharts/{ns}?")) < at("/deployments/web?")
            && at(&format!("/helmcharts/{ns}?")) < at("/widgets/w?"),
        "{writes:#?}"
    );
    let widget = cp
        .get(&format!("/apis/life.rin.test/v1/namespaces/{ns}/widgets/w"))
        .unwrap();
    assert_eq!(widget["spec"]["size"], 3);
    assert!(s.root.join("var/lib/rininstall/releases/1.json").is_file());
    let (password, creates) = db_password();
    assert_eq!((password.len(), creates), (32, 1), "{password}");
    // The generated value is on the cluster only: not in the state the node keeps.
    let kept = std::fs::read_to_string(s.root.join("var/lib/rininstall/releases/1.json")).unwrap();
    assert!(!kept.contains(&password) && kept.contains("rin.dev/generate"));

    let status = s.rininstall(&["status", "--json"], "20");
    assert!(status.status.success(), "{}", text(&status));
    let st: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["node"]["version"], "1.0.0");
    assert_eq!(st["node"]["revision"], 1);
    assert_eq!(st["cluster"]["kubernetes"], "v1.31.4");
    assert_eq!(st["cluster"]["healthy"], true);
    let health: Vec<String> = st["cluster"]["health"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{} {}",
                h["state"].as_str().unwrap(),
                h["object"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        health.contains(&format!("ready Deployment.apps {ns}/web"))
            && health.contains(&format!("ready HelmChart.helm.cattle.io kube-system/{ns}"))
            && health.contains(&format!("ready DaemonSet.apps {ns}/agent")),
        "{health:?}"
    );

    // The same bundle again: nothing to upload, no new revision, no write but the applies.
    let before = s.writes().len();
    let out = s.apply(&v1, &key, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(": 0 blobs uploaded"), "{said}");
    assert!(said.contains("revision 1, unchanged"), "{said}");
    let again = s.writes();
    assert!(
        again[before..].iter().all(|l| l.starts_with("patch ")),
        "{:#?}",
        &again[before..]
    );

    // 1.1.0 replaces web with api, drops the second namespace, and gives the chart values (a
    // new spec: the helm-controller runs a new install Job, which is waited for).
    let old_job = cp.get(&job_path).unwrap()["metadata"]["uid"].clone();
    let web_sets = cp.list(&format!(
        "/apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=app%3Dweb"
    ));
    assert_eq!(web_sets.len(), 1);
    std::fs::remove_file(s.stack.join("manifests/app/web.yaml")).unwrap();
    std::fs::remove_file(s.stack.join("manifests/extra.yaml")).unwrap();
    s.write(
        "manifests/app/api.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api, namespace: {ns}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api}}}}\n    spec: {{containers: [{{name: api, image: registry.example/demo/worker:1.0}}]}}\n"
        ),
    );
    s.write("values.yaml", "replicas: 2\n");
    let spec = std::fs::read_to_string(s.stack.join("bundle.yaml")).unwrap();
    let archive = format!("archive: charts/{ns}-0.1.0.tgz");
    s.write(
        "bundle.yaml",
        &spec.replace(&archive, &format!("{archive}\n    values: values.yaml")),
    );
    let spec = std::fs::read_to_string(s.stack.join("bundle.yaml")).unwrap();
    s.write(
        "bundle.yaml",
        &spec.replace("version: 1.0.0", "version: 1.1.0"),
    );
    let v2 = s.t.path().join("v2.tar.zst");
    build_signed(s.t.path(), &s.stack, "1700000100", &v2);
    let out = s.apply(&v2, &key, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!("pruned Deployment.apps {ns}/web")),
        "{said}"
    );
    assert!(
        said.contains(&format!("pruned Namespace {ns}-extra")),
        "{said}"
    );
    assert!(
        said.contains("deployed life 1.1.0: 9 objects healthy, revision 2"),
        "{said}"
    );
    let job = cp.get(&job_path).unwrap();
    assert_ne!(job["metadata"]["uid"], old_job, "a new install Job");
    assert_eq!(k8s::condition(&job, "Complete"), Some("True"), "{job}");
    assert!(
        cp.get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web"))
            .is_none()
    );
    let api = cp
        .get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/api"))
        .unwrap();
    assert_eq!(api["status"]["readyReplicas"], 2);
    // The namespace controller empties and removes the dropped namespace; the garbage
    // collector removes web's ReplicaSet and pods.
    assert!(
        cp.eventually(Duration::from_secs(60), |cp| {
            cp.get(&format!("/api/v1/namespaces/{ns}-extra")).is_none()
        }),
        "the pruned namespace is still there: {:?}",
        cp.get(&format!("/api/v1/namespaces/{ns}-extra"))
    );
    assert!(
        cp.eventually(Duration::from_secs(60), |cp| {
            cp.list(&format!(
                "/apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=app%3Dweb"
            ))
            .is_empty()
                && cp
                    .list(&format!(
                        "/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dweb"
                    ))
                    .is_empty()
        }),
        "web's ReplicaSet or pods were not collected"
    );

    // Applying 1.0.0 again is a downgrade: refused without --allow-downgrade.
    let out = s.apply(&v1, &key, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--allow-downgrade"), "{}", text(&out));

    // Rollback: back to 1.0.0 from what the state kept, as revision 3.
    let out = s.rininstall(&["rollback", "--progress", "none"], "90");
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("rolled back to 1.0.0 (the release of revision 1)"),
        "{said}"
    );
    assert!(
        said.contains(&format!("pruned Deployment.apps {ns}/api")),
        "{said}"
    );
    assert!(
        said.contains("revision 3 (kept for rollback: 3, 2, 1)"),
        "{said}"
    );
    let web = cp
        .get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web"))
        .unwrap();
    assert_eq!(web["status"]["readyReplicas"], 1);
    assert!(
        cp.get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/api"))
            .is_none()
    );
    assert!(cp.get(&format!("/api/v1/namespaces/{ns}-extra")).is_some());
    // Upgrade and rollback left the generated secret as the first apply made it.
    assert_eq!(db_password(), (password.clone(), 1));
    let status = s.rininstall(&["status", "--json"], "20");
    let st: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["node"]["version"], "1.0.0");
    assert_eq!(st["node"]["revision"], 3);
    let revisions: Vec<u64> = st["cluster"]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, [3, 2, 1]);
    // A version no release has is named with what is kept.
    let out = s.rininstall(&["rollback", "--to", "0.9.0"], "20");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no kept release has version 0.9.0"),
        "{}",
        text(&out)
    );

    // A workload that loses a replica (its pod fails its readiness probe, as its kubelet
    // reports): status says so and exits 1.
    let pod = cp
        .list(&format!(
            "/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dweb"
        ))
        .into_iter()
        .next()
        .unwrap();
    let pod_path = format!(
        "/api/v1/namespaces/{ns}/pods/{}",
        pod["metadata"]["name"].as_str().unwrap()
    );
    let mut conditions = pod["status"]["conditions"].clone();
    for c in conditions.as_array_mut().unwrap() {
        if c["type"] == "Ready" || c["type"] == "ContainersReady" {
            c["status"] = json!("False");
        }
    }
    cp.patch_status(&pod_path, &json!({"status": {"conditions": conditions}}));
    assert!(
        cp.eventually(Duration::from_secs(30), |cp| {
            cp.get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web"))
                .is_some_and(|d| d["status"]["readyReplicas"].as_u64().unwrap_or(0) == 0)
        }),
        "the Deployment did not see its pod go unready"
    );
    let status = s.rininstall(&["status"], "20");
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    let said = text(&status);
    assert!(
        said.contains(&format!("waiting  Deployment.apps {ns}/web 0/1"))
            && said.contains("NOT healthy"),
        "{said}"
    );
    let status = s.rininstall(&["status", "--json"], "20");
    let st: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["cluster"]["healthy"], false);

    // A cluster that does not answer is reported, with the node's record still shown.
    let gone = s.t.path().join("gone-kubeconfig");
    std::fs::write(
        &gone,
        std::fs::read_to_string(&s.kc)
            .unwrap()
            .replace(&cp.server, "https://127.0.0.1:1"),
    )
    .unwrap();
    let out = Command::new(bin("rininstall"))
        .args(["status", "--timeout", "1", "--root"])
        .arg(&s.root)
        .arg("--kubeconfig")
        .arg(&gone)
        .output()
        .unwrap();
    // The record is shown; the health is unknown, which a script must not read as healthy.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("installed: life 1.0.0") && said.contains("cluster: not asked"),
        "{said}"
    );
    assert!(said.contains("health: unknown"), "{said}");
    // A kubeconfig that does not exist is said at once, not waited for.
    let out = Command::new(bin("rininstall"))
        .args(["status", "--timeout", "30", "--root"])
        .arg(&s.root)
        .arg("--kubeconfig")
        .arg(s.t.path().join("no-such-kubeconfig"))
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("no-such-kubeconfig: it does not exist: K3s writes it once it runs"),
        "{said}"
    );
    assert!(!said.contains("waiting for the Kubernetes API"), "{said}");
}

#[test]
fn a_delta_upgrade_deploys_and_rolls_back_to_the_full_release() {
    let s = site("delta");
    let (cp, ns) = (s.cp, s.name.as_str());
    let v1 = s.t.path().join("v1.tar.zst");
    let (key, _) = build_signed(s.t.path(), &s.stack, "1700000000", &v1);
    let out = s.apply(&v1, &key, &[]);
    assert!(out.status.success(), "{}", text(&out));
    // 1.1.0 adds a ConfigMap; its delta against 1.0.0 leaves out every image blob and the K3s
    // files (nothing of them changed).
    s.write(
        "manifests/app/settings.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{mode: b}}\n"
        ),
    );
    let spec = s.stack.join("bundle.yaml");
    let text_of = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text_of.replace("version: 1.0.0", "version: 1.1.0")).unwrap();
    let d2 = s.t.path().join("v2-delta.tar.zst");
    let (_, index) = rin_tests::build_signed_with(
        s.t.path(),
        &s.stack,
        "1700000000",
        &d2,
        &["--base".into(), v1.display().to_string()],
    );
    let base = index.base.expect("a delta");
    assert!(!base.blobs.is_empty() && !base.files.is_empty());
    let out = s.apply(&d2, &key, &[]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("deployed delta 1.1.0"), "{said}");
    let settings = format!("/api/v1/namespaces/{ns}/configmaps/settings");
    assert!(cp.get(&settings).is_some());
    // The release kept for rollback keeps its index (what inventory and doctor read after it).
    let v1_index = rin_bundle::digest::sha256_hex(&rin_bundle::peek(&v1).unwrap().0);
    assert!(
        s.root
            .join(format!("var/lib/rininstall/indexes/{v1_index}.json"))
            .exists()
    );

    // Back to 1.0.0, the full release the delta went onto.
    let out = s.rininstall(&["rollback", "--progress", "none"], "90");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("rolled back to 1.0.0 (the release of revision 1)"),
        "{said}"
    );
    assert!(
        cp.get(&settings).is_none(),
        "the delta's ConfigMap was not pruned"
    );
    let web = cp
        .get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web"))
        .unwrap();
    assert_eq!(web["status"]["readyReplicas"], 1);

    // What the operator carries out: the cluster's status and its nodes, pods and events.
    let support = s.t.path().join("support.tar.zst");
    let out = s.rininstall(
        &["support-bundle", "-o", support.to_str().unwrap(), "--quiet"],
        "30",
    );
    assert!(out.status.success(), "{}", text(&out));
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc {} | tar -t", support.display()))
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    for want in [
        "cluster/status.json",
        "cluster/nodes.json",
        "cluster/pods.json",
        "cluster/events.json",
    ] {
        assert!(
            names.contains(&format!("rin-support/{want}")),
            "{want}: {names}"
        );
    }
    let pods = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc {} | tar -xO rin-support/cluster/pods.json",
            support.display()
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&pods.stdout).contains(&format!("\"namespace\": \"{ns}\"")),
        "the stack's pods are listed"
    );
}

#[test]
fn doctor_looks_over_an_installed_node_and_names_what_is_wrong() {
    let s = site("doctor");
    let v1 = s.t.path().join("v1.tar.zst");
    let (key, index) = build_signed(s.t.path(), &s.stack, "1700000000", &v1);
    let out = s.apply(&v1, &key, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let doctor = |extra: &[&str]| {
        let mut args = vec!["doctor", "--registry", &s.reg.addr, "--quiet"];
        args.extend(extra);
        s.rininstall(&args, "30")
    };
    // K3s is not running here (--no-start), so containerd's mirror files were never written.
    let out = doctor(&[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for line in [
        "unknown k3s service       not the real root",
        "unknown kernel            k3s check-config runs only on the real root",
        "ok      release           doctor 1.0.0",
        "FAIL    registry mirrors  containerd has no mirror to the site registry for registry.example",
        &format!(
            "ok      images            all {} images of the release resolve",
            index.images.len()
        ),
        "ok      nodes             all ",
        "ok      stack             all ",
        "1 of 8 checks failed",
    ] {
        assert!(said.contains(line), "{line:?} in {said}");
    }
    // The files K3s writes from registries.yaml when it starts, as it writes them.
    let registries: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(s.root.join("etc/rancher/k3s/registries.yaml")).unwrap(),
    )
    .unwrap();
    for (name, m) in registries["mirrors"].as_object().unwrap() {
        let dir = s
            .root
            .join("var/lib/rancher/k3s/agent/etc/containerd/certs.d")
            .join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let endpoint = m["endpoint"][0].as_str().unwrap();
        std::fs::write(
            dir.join("hosts.toml"),
            format!("[host.\"{endpoint}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        )
        .unwrap();
    }
    let out = doctor(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(checks.as_array().unwrap().len(), 8);
    assert!(
        checks
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["verdict"] != "fail"),
        "{checks}"
    );
    // An image gone from the registry is named.
    let web = index
        .images
        .iter()
        .find(|i| i.reference.ends_with("/web:1.0"))
        .unwrap();
    s.reg.delete_manifest("demo/web", &web.digest);
    let out = doctor(&[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("FAIL    images") && said.contains("demo/web:1.0 does not resolve"),
        "{said}"
    );
}

#[test]
fn a_field_conflict_stops_apply_with_the_object_and_force_conflicts_takes_it_over() {
    let s = site("conflict");
    let _watch = s.cp.watch();
    let (cp, ns) = (s.cp, s.name.as_str());
    // The stack says one replica; someone scaled web by hand first (another field manager).
    let web = std::fs::read_to_string(s.stack.join("manifests/app/web.yaml")).unwrap();
    s.write(
        "manifests/app/web.yaml",
        &web.replace("spec:\n  selector:", "spec:\n  replicas: 1\n  selector:"),
    );
    cp.apply(
        &format!("/api/v1/namespaces/{ns}"),
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    );
    cp.apply_as(
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/web"),
        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.example/demo/web:1.0"}]}}}}),
        "ops-by-hand",
    );
    let b = s.t.path().join("b.tar.zst");
    let (key, _) = build_signed(s.t.path(), &s.stack, "1700000000", &b);

    let out = s.apply(&b, &key, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!(
            "Deployment.apps {ns}/web (from manifests/app/web.yaml) conflicts"
        )) && said.contains(".spec.replicas")
            && said.contains("ops-by-hand")
            && said.contains("--force-conflicts"),
        "{said}"
    );
    assert!(
        !s.writes().iter().any(|l| l.contains("rin-release")),
        "no release was recorded: {:#?}",
        s.writes()
    );
    let out = s.apply(&b, &key, &["--force-conflicts"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("revision 1"), "{}", text(&out));
    let web = cp
        .get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web"))
        .unwrap();
    assert_eq!(web["spec"]["replicas"], 1);
}

#[test]
fn a_malformed_manifest_is_refused_before_anything_is_touched() {
    let s = site("malformed");
    let _watch = s.cp.watch();
    s.write(
        "manifests/app/db.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: malformed\n  annotations: {rin.dev/generate: password, rin.dev/copy-from: malformed/other}\n",
    );
    let b = s.t.path().join("b.tar.zst");
    let (key, _) = build_signed(s.t.path(), &s.stack, "1700000000", &b);

    let out = s.apply(&b, &key, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("manifests/app/db.yaml, document 1")
            && said
                .contains("generated (rin.dev/generate) or copied (rin.dev/copy-from), not both")
            && said.contains("fix it in the stack"),
        "{said}"
    );
    // Refused after verification, before the host files and the cluster.
    assert!(!s.root.join("usr/local/bin/k3s").exists());
    assert!(!s.root.join("etc/rancher").exists());
    assert_eq!(
        s.writes(),
        Vec::<String>::new(),
        "the cluster was written to"
    );
}

#[test]
fn a_stuck_rollout_is_named_with_its_pod_and_the_image_it_cannot_pull() {
    let s = site("stuck");
    let _watch = s.cp.watch();
    // kwok keeps web's pod waiting in ErrImagePull, as a node whose registry lacks the image.
    let said = s.refused_with_web(|web| {
        web.replace(
            "      labels: {app: web}\n",
            &format!(
                "      labels: {{app: web}}\n      annotations: {{{}: \"yes\"}}\n",
                k8s::STALL_ANNOTATION
            ),
        )
    });
    assert!(
        said.contains("Deployment.apps stuck/web 0/1")
            && said.contains("cannot pull image registry.example/demo/web:1.0 (ErrImagePull)")
            && said.contains("for registry.example"),
        "{said}"
    );
}

#[test]
fn pod_security_admission_refuses_a_privileged_pod_in_a_restricted_namespace() {
    let s = site("psa");
    let _watch = s.cp.watch();
    // The namespace enforces `restricted`; the Deployment's pod runs privileged, the
    // DaemonSet's mounts a host path. (The Deployment's controller reports the refusal in a
    // condition, the DaemonSet's in events.)
    s.write(
        "manifests/00-namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: psa\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n",
    );
    s.write(
        "manifests/app/agent.yaml",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: psa}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      containers: [{name: a, image: registry.example/demo/worker:1.0}]\n      volumes: [{name: host, hostPath: {path: /var/log}}]\n",
    );
    let said = s.refused_with_web(|web| {
        web.replace(
            "          image: registry.example/demo/web:1.0\n",
            "          image: registry.example/demo/web:1.0\n          securityContext: {privileged: true}\n",
        )
    });
    assert!(
        said.contains("Deployment.apps psa/web 0/1")
            && said.contains("violates PodSecurity \"restricted:latest\"")
            && said.contains("privileged"),
        "{said}"
    );
    let agent = said
        .lines()
        .find(|l| l.contains("DaemonSet.apps psa/agent"))
        .unwrap_or_else(|| panic!("the DaemonSet is not named: {said}"));
    assert!(
        agent.contains("they cannot be created")
            && agent.contains("violates PodSecurity \"restricted:latest\"")
            && agent.contains("hostPath"),
        "{agent}"
    );
}

#[test]
fn a_field_the_api_server_does_not_know_is_named_with_the_object_and_its_file() {
    let s = site("misspelt");
    let _watch = s.cp.watch();
    let said = s.refused_with_web(|web| {
        web.replace(
            "          image:",
            "          imagePullPolicey: Always\n          image:",
        )
    });
    assert!(
        said.contains(
            "Deployment.apps misspelt/web (from manifests/app/web.yaml) was refused by the API server"
        ) && said.contains(".imagePullPolicey: field not declared in schema")
            && said.contains("fix the field it names in the stack"),
        "{said}"
    );
}

/// The site registry's objects as `rininstall apply` writes them for a K3s site (applied there
/// only once K3s runs, which these tests do not start): admitted in its `baseline` namespace, its
/// claim provisioned on first consumer, its pod ready, its NodePort the one every node's
/// containerd is pointed at.
#[test]
fn the_site_registry_runs_on_a_real_cluster() {
    use rin_installer::cluster::objects::{self, Origin};
    use rin_installer::node::site_registry;
    let cp = k8s::shared();
    let _watch = cp.watch();
    let yaml = site_registry::manifests_yaml("docker.io/library/registry:2.8.3", 31555, 10);
    for o in objects::parse(&yaml, "the site registry", Origin::SiteRegistry).unwrap() {
        let r = &o.reference;
        let path = cp
            .path_of(&r.api_version, &r.kind, &r.namespace, &r.name)
            .unwrap();
        cp.apply_as(&path, &o.value, "rininstall");
    }
    let ns = site_registry::NAMESPACE;
    assert!(
        cp.eventually(Duration::from_secs(60), |cp| {
            cp.get(&format!(
                "/apis/apps/v1/namespaces/{ns}/deployments/site-registry"
            ))
            .is_some_and(|d| d["status"]["readyReplicas"] == 1)
        }),
        "the site registry did not get ready: {:?}",
        cp.list(&format!("/api/v1/namespaces/{ns}/pods"))
    );
    let claim = cp
        .get(&format!(
            "/api/v1/namespaces/{ns}/persistentvolumeclaims/site-registry-data"
        ))
        .unwrap();
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    let svc = cp
        .get(&format!("/api/v1/namespaces/{ns}/services/site-registry"))
        .unwrap();
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 31555, "{svc}");
}

/// The whole `rininstall apply` on a real K3s host: see `tests/k3s-e2e.sh`, which builds the
/// bundles and runs this with `RIN_K3S_E2E=1` as root on a disposable machine.
#[test]
#[ignore = "needs k3s"]
fn real_k3s_apply_upgrade_and_rollback() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("k3s-e2e.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// A machine joining the cluster under the name of a node the cluster has is refused before
/// anything changes (K3s itself would refuse it only once started); another name passes.
#[test]
fn a_joining_machine_named_like_a_node_of_the_cluster_is_refused() {
    let s = site("joinname");
    let b = s.t.path().join("b.tar.zst");
    let (key, _) = build_signed(s.t.path(), &s.stack, "1700000000", &b);
    let token = s.t.path().join("token");
    std::fs::write(&token, "K10stand-in::server:secret\n").unwrap();
    std::fs::create_dir_all(s.root.join("etc")).unwrap();
    let join = [
        "--role",
        "agent",
        "--server",
        "https://127.0.0.1:6443",
        "--token-file",
        token.to_str().unwrap(),
    ];
    std::fs::write(s.root.join("etc/hostname"), "agent-0\n").unwrap();
    let out = s.apply_with(&b, &key, &join, "30");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("the cluster has a node named agent-0 already")
            && said.contains("kubectl delete node agent-0"),
        "{said}"
    );
    assert!(
        !s.root.join("usr/local/bin/k3s").exists(),
        "nothing written"
    );
    std::fs::write(s.root.join("etc/hostname"), "agent-new\n").unwrap();
    let out = s.apply_with(&b, &key, &join, "30");
    assert!(out.status.success(), "{}", text(&out));
    assert!(s.root.join("usr/local/bin/k3s").exists());
}
