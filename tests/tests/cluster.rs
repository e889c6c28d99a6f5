//! The cluster step of the `rininstall` binary, end to end: `apply --kubeconfig` against a fake
//! Kubernetes API server served over HTTP (no API server can be installed here; the real-K3s
//! test is `real_k3s_apply_upgrade_and_rollback` below, ignored, with `tests/k3s-e2e.sh`), with
//! images seeded into a real registry: deploy, status, an upgrade that prunes, a rollback, and a
//! field conflict taken over with --force-conflicts.
#![allow(clippy::unwrap_used)]

use rin_tests::fake_api::{self, Fake};
use rin_tests::registry::{Options, Registry};
use rin_tests::{bin, build_signed, fixture};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

fn rininstall(args: &[&str], root: &Path, kubeconfig: &Path) -> Output {
    Command::new(bin("rininstall"))
        .args(args)
        .arg("--root")
        .arg(root)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--timeout", "20"])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn apply(
    bundle: &Path,
    key: &Path,
    root: &Path,
    kc: &Path,
    reg: &Registry,
    extra: &[&str],
) -> Output {
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
        &reg.addr,
    ];
    args.extend(extra);
    rininstall(&args, root, kc)
}

/// A node's view of the test world: a temporary directory, a real registry, the fake API server
/// (with `fake`'s settings and the built-in kinds) behind a kubeconfig, the node's root, and the
/// test stack.
struct Site {
    t: tempfile::TempDir,
    reg: Registry,
    fake: Arc<Mutex<Fake>>,
    kc: std::path::PathBuf,
    root: std::path::PathBuf,
    stack: std::path::PathBuf,
}

fn site(fake: Fake) -> Site {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let fake = Arc::new(Mutex::new(Fake {
        kinds: fake_api::builtin(),
        controllers: true,
        ..fake
    }));
    let kc = t.path().join("kubeconfig");
    std::fs::write(&kc, fake_api::kubeconfig(fake_api::serve(fake.clone()))).unwrap();
    let root = t.path().join("root");
    let stack = fixture::write_stack(&t.path().join("stack")).unwrap();
    Site {
        t,
        reg,
        fake,
        kc,
        root,
        stack,
    }
}

#[test]
fn apply_deploys_records_upgrades_with_pruning_rolls_back_and_reports_status() {
    let Site {
        t,
        reg,
        fake,
        kc,
        root,
        stack,
    } = site(Fake::default());
    // 1.0.0: a Namespace, the demo chart, the web Deployment.
    // A generated secret: made by the first apply, never changed by the upgrade or the rollback.
    std::fs::write(
        stack.join("manifests/app/db.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: demo\n  annotations: {rin.dev/generate: password}\nstringData: {user: demo}\n",
    )
    .unwrap();
    let db_password = || {
        use base64::Engine as _;
        let f = fake.lock().unwrap();
        let data = &f.objects["/api/v1/namespaces/demo/secrets/db"]["data"];
        assert_eq!(data["user"], "ZGVtbw==");
        let password = base64::engine::general_purpose::STANDARD
            .decode(data["password"].as_str().unwrap())
            .unwrap();
        let creates = f.log.iter().filter(|l| l.starts_with("POST ")).count();
        (String::from_utf8(password).unwrap(), creates)
    };
    let v1 = t.path().join("v1.tar.zst");
    let (key, _) = build_signed(t.path(), &stack, "1700000000", &v1);
    let out = apply(&v1, &key, &root, &kc, &reg, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("deployed demo 1.0.0: 3 objects healthy, revision 1"),
        "{said}"
    );
    {
        let f = fake.lock().unwrap();
        let chart = &f.objects["/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/demo"];
        assert_eq!(chart["spec"]["targetNamespace"], "demo");
        // The chart's archive, inline: the bytes the stack carries.
        use base64::Engine as _;
        let tgz = base64::engine::general_purpose::STANDARD
            .decode(chart["spec"]["chartContent"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            tgz,
            std::fs::read(stack.join("charts/demo-0.1.0.tgz")).unwrap()
        );
        let web = &f.objects["/apis/apps/v1/namespaces/demo/deployments/web"];
        assert_eq!(
            web["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example/demo/web:1.0"
        );
        assert!(
            f.objects
                .contains_key("/api/v1/namespaces/rin-system/configmaps/rin-release-demo-1")
        );
        // Applied in order: the Namespace, then the chart, then the workload.
        let patches: Vec<&String> = f.log.iter().filter(|l| l.starts_with("PATCH")).collect();
        let at = |s: &str| patches.iter().position(|l| l.contains(s)).unwrap();
        assert!(
            at("/namespaces/demo?") < at("/helmcharts/demo")
                && at("/helmcharts/demo") < at("/deployments/web")
        );
    }
    assert!(root.join("var/lib/rininstall/releases/1.json").is_file());
    let (password, creates) = db_password();
    assert_eq!((password.len(), creates), (32, 1), "{password}");
    // The generated value is on the cluster only: not in the state the node keeps.
    let kept = std::fs::read_to_string(root.join("var/lib/rininstall/releases/1.json")).unwrap();
    assert!(!kept.contains(&password) && kept.contains("rin.dev/generate"));

    let status = rininstall(&["status", "--json"], &root, &kc);
    assert!(status.status.success(), "{}", text(&status));
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["node"]["version"], "1.0.0");
    assert_eq!(s["node"]["revision"], 1);
    assert_eq!(s["cluster"]["kubernetes"], "v1.31.4+k3s1");
    assert_eq!(s["cluster"]["healthy"], true);
    let health: Vec<String> = s["cluster"]["health"]
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
        health.contains(&"ready Deployment.apps demo/web".to_string())
            && health.contains(&"ready HelmChart.helm.cattle.io kube-system/demo".to_string()),
        "{health:?}"
    );

    // The same bundle again: nothing to upload, no new revision.
    let out = apply(&v1, &key, &root, &kc, &reg, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(": 0 blobs uploaded"), "{said}");
    assert!(said.contains("revision 1, unchanged"), "{said}");

    // 1.1.0 replaces web with api.
    std::fs::remove_file(stack.join("manifests/app/web.yaml")).unwrap();
    std::fs::write(
        stack.join("manifests/app/api.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: demo}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec: {containers: [{name: api, image: registry.example/demo/worker:1.0}]}\n",
    )
    .unwrap();
    let spec = std::fs::read_to_string(stack.join("bundle.yaml")).unwrap();
    std::fs::write(
        stack.join("bundle.yaml"),
        spec.replace("version: 1.0.0", "version: 1.1.0"),
    )
    .unwrap();
    let v2 = t.path().join("v2.tar.zst");
    build_signed(t.path(), &stack, "1700000100", &v2);
    let out = apply(&v2, &key, &root, &kc, &reg, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("pruned Deployment.apps demo/web"), "{said}");
    assert!(
        said.contains("deployed demo 1.1.0: 3 objects healthy, revision 2"),
        "{said}"
    );
    {
        let f = fake.lock().unwrap();
        assert!(
            !f.objects
                .contains_key("/apis/apps/v1/namespaces/demo/deployments/web")
        );
        assert!(
            f.objects
                .contains_key("/apis/apps/v1/namespaces/demo/deployments/api")
        );
    }

    // Applying 1.0.0 again is a downgrade: refused without --allow-downgrade.
    let out = apply(&v1, &key, &root, &kc, &reg, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--allow-downgrade"), "{}", text(&out));

    // Rollback: back to 1.0.0 from what the state kept, as revision 3.
    let out = rininstall(&["rollback", "--progress", "none"], &root, &kc);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("rolled back to 1.0.0 (the release of revision 1)"),
        "{said}"
    );
    assert!(said.contains("pruned Deployment.apps demo/api"), "{said}");
    assert!(
        said.contains("revision 3 (kept for rollback: 3, 2, 1)"),
        "{said}"
    );
    {
        let f = fake.lock().unwrap();
        assert!(
            f.objects
                .contains_key("/apis/apps/v1/namespaces/demo/deployments/web")
        );
        assert!(
            !f.objects
                .contains_key("/apis/apps/v1/namespaces/demo/deployments/api")
        );
    }
    // Upgrade and rollback left the generated secret as the first apply made it.
    assert_eq!(db_password(), (password.clone(), 1));
    let status = rininstall(&["status", "--json"], &root, &kc);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["node"]["version"], "1.0.0");
    assert_eq!(s["node"]["revision"], 3);
    let revisions: Vec<u64> = s["cluster"]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, [3, 2, 1]);
    // A version no release has is named with what is kept.
    let out = rininstall(&["rollback", "--to", "0.9.0"], &root, &kc);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no kept release has version 0.9.0"),
        "{}",
        text(&out)
    );

    // A workload that loses a replica: status says so and exits 1.
    fake.lock().unwrap().script(
        "web",
        vec![serde_json::json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 0})],
    );
    let status = rininstall(&["status"], &root, &kc);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    let said = text(&status);
    assert!(
        said.contains("waiting  Deployment.apps demo/web 0/1") && said.contains("NOT healthy"),
        "{said}"
    );
    let status = rininstall(&["status", "--json"], &root, &kc);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["cluster"]["healthy"], false);

    // A cluster that does not answer is reported, with the node's record still shown.
    let gone = t.path().join("gone-kubeconfig");
    std::fs::write(
        &gone,
        fake_api::kubeconfig(std::net::SocketAddr::from(([127, 0, 0, 1], 1))),
    )
    .unwrap();
    let out = Command::new(bin("rininstall"))
        .args(["status", "--timeout", "1", "--root"])
        .arg(&root)
        .arg("--kubeconfig")
        .arg(&gone)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("installed: demo 1.0.0") && said.contains("cluster: not asked"),
        "{said}"
    );
}

#[test]
fn a_field_conflict_stops_apply_with_the_object_and_force_conflicts_takes_it_over() {
    let Site {
        t,
        reg,
        fake,
        kc,
        root,
        stack,
    } = site(Fake {
        conflict_on: Some("web".into()),
        ..Fake::default()
    });
    let b = t.path().join("b.tar.zst");
    let (key, _) = build_signed(t.path(), &stack, "1700000000", &b);

    let out = apply(&b, &key, &root, &kc, &reg, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("Deployment.apps demo/web (from manifests/app/web.yaml) conflicts")
            && said.contains(".spec.replicas")
            && said.contains("--force-conflicts"),
        "{said}"
    );
    assert!(
        !fake
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|l| l.contains("rin-release")),
        "no release was recorded"
    );
    let out = apply(&b, &key, &root, &kc, &reg, &["--force-conflicts"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("revision 1"), "{}", text(&out));
}

#[test]
fn a_malformed_manifest_is_refused_before_anything_is_touched() {
    let Site {
        t,
        reg,
        fake,
        kc,
        root,
        stack,
    } = site(Fake::default());
    std::fs::write(
        stack.join("manifests/app/db.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: demo\n  annotations: {rin.dev/generate: password, rin.dev/copy-from: demo/other}\n",
    )
    .unwrap();
    let b = t.path().join("b.tar.zst");
    let (key, _) = build_signed(t.path(), &stack, "1700000000", &b);

    let out = apply(&b, &key, &root, &kc, &reg, &[]);
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
    assert!(!root.join("usr/local/bin/k3s").exists());
    assert!(!root.join("etc/rancher").exists());
    let log = fake.lock().unwrap().log.clone();
    assert!(
        !log.iter().any(|l| !l.starts_with("GET ")),
        "the cluster was written to: {log:?}"
    );
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
