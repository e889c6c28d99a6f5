//! Rollouts against the fake API server of `crate::testing`.

use super::*;
use crate::cluster::objects::Origin;
use crate::testing::{Fake, cluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

fn fast(timeout_ms: u64) -> RolloutOptions {
    RolloutOptions {
        deploy: DeployOptions {
            force_conflicts: false,
            timeout: Duration::from_millis(timeout_ms),
            poll: Duration::from_millis(5),
        },
        prune_volumes: false,
        keep: 3,
    }
}

fn desired(version: &str, yaml: &str) -> Desired {
    Desired {
        release: Release {
            stack: "demo".into(),
            version: version.into(),
            k3s: Some("v1.31.4+k3s1".into()),
            index_sha256: format!("bundle-{version}"),
            images: BTreeMap::from([("ghcr.io/rin/api:1.0".to_string(), "sha256:aa".to_string())]),
            installed: "2026-11-23T10:00:00Z".into(),
            ..Default::default()
        },
        objects: objects::parse(yaml, "manifests/stack.yaml", Origin::Stack).unwrap(),
    }
}

const API: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: rin-system}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: "ghcr.io/rin/api:1.0"}]}
"#;

/// The two namespaces of the test releases.
const NAMESPACES: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: rin-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: rin-data}
"#;

const V1_REST: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: rin-data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: old-settings, namespace: rin-system}
data: {a: "1"}
"#;

/// Release 1.0.0: the namespaces, a claim and a setting.
fn v1() -> String {
    format!("{NAMESPACES}---{V1_REST}")
}

fn deployment_status(ready: u64) -> Value {
    json!({"replicas": 2, "updatedReplicas": 2, "readyReplicas": ready, "availableReplicas": ready})
}

fn said() -> (Arc<Mutex<Vec<String>>>, crate::testing::Lines) {
    let lines = crate::testing::Lines::default();
    (lines.0.clone(), lines)
}

use std::sync::{Arc, Mutex};

#[tokio::test]
async fn a_release_is_waited_for_then_recorded_and_the_next_prunes_what_it_dropped_but_not_data() {
    let (c, fake) = cluster(Fake::default());
    {
        let mut f = fake.lock().unwrap();
        f.script(
            "api",
            vec![
                deployment_status(0),
                deployment_status(1),
                deployment_status(2),
            ],
        );
        f.script(
            "data",
            vec![json!({"phase": "Pending"}), json!({"phase": "Bound"})],
        );
    }
    let (lines, say) = said();
    let out = roll_out(
        &c,
        desired("1.0.0", &format!("{}---{API}", v1())),
        &fast(2000),
        &say,
    )
    .await
    .unwrap();
    assert_eq!(out.record.revision(), 1);
    assert!(out.pruned.is_empty());
    // The stack's own rin-system Namespace kept what the stack gave it: the records' namespace
    // exists already and is not applied again bare.
    assert_eq!(
        fake.lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.starts_with("PATCH /api/v1/namespaces/rin-system?"))
            .count(),
        1
    );
    let progress = lines.lock().unwrap().join("\n");
    assert!(
        progress.contains("Deployment.apps rin-system/api 0/2")
            && progress.contains("Deployment.apps rin-system/api 1/2")
            && progress.contains("every object is healthy"),
        "{progress}"
    );
    {
        let f = fake.lock().unwrap();
        let cm = &f.objects["/api/v1/namespaces/rin-system/configmaps/rin-release-demo-1"];
        let stored = Release::from_config_map(cm).unwrap();
        assert_eq!(stored, out.record);
        assert_eq!(stored.inventory.len(), 5);
        // Until every object was ready, nothing was recorded: the record came after the
        // Deployment's last look.
        let log = f.log.join("\n");
        assert!(
            log.rfind("GET /apis/apps/v1/namespaces/rin-system/deployments/api")
                < log.find("PATCH /api/v1/namespaces/rin-system/configmaps/rin-release-demo-1")
        );
    }

    // The same release again: applied and waited for, but no new revision.
    let again = roll_out(
        &c,
        desired("1.0.0", &format!("{}---{API}", v1())),
        &fast(2000),
        &say,
    )
    .await
    .unwrap();
    assert!(!again.recorded);
    assert_eq!(again.record.revision(), 1);
    assert_eq!(
        fake.lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.starts_with("PATCH") && l.contains("rin-release"))
            .count(),
        1
    );

    // 1.1.0 drops the ConfigMap and the rin-data namespace with its claim.
    let next = roll_out(
        &c,
        desired(
            "1.1.0",
            &format!("{}---{API}", &NAMESPACES[..NAMESPACES.find("---").unwrap()]),
        ),
        &RolloutOptions {
            keep: 1,
            ..fast(2000)
        },
        &say,
    )
    .await
    .unwrap();
    assert_eq!(next.record.revision(), 2);
    let names = |v: &[ObjectRef]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&next.pruned), ["ConfigMap rin-system/old-settings"]);
    assert_eq!(
        names(&next.kept),
        ["Namespace rin-data", "PersistentVolumeClaim rin-data/data"]
    );
    assert_eq!(next.forgotten, [1]);
    let kept = releases(&c, "demo").await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].version, "1.1.0");
    assert_eq!(kept[0].revision(), 2);
    let f = fake.lock().unwrap();
    assert!(
        !f.objects
            .contains_key("/api/v1/namespaces/rin-system/configmaps/old-settings")
    );
    assert!(
        f.objects
            .contains_key("/api/v1/namespaces/rin-data/persistentvolumeclaims/data")
    );
    assert!(
        !f.objects
            .contains_key("/api/v1/namespaces/rin-system/configmaps/rin-release-demo-1")
    );
}

#[tokio::test]
async fn a_timeout_names_the_stuck_object_and_the_image_it_cannot_pull_and_records_nothing() {
    let (c, fake) = cluster(Fake::default());
    {
        let mut f = fake.lock().unwrap();
        f.script("api", vec![deployment_status(0)]);
        f.put(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api-7d9f-x2x", "namespace": "rin-system", "labels": {"app": "api"}},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "api", "image": "ghcr.io/rin/api:1.0", "ready": false,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"ghcr.io/rin/api:1.0\""}}}]}
        }));
        // A pod of something else, which must not be blamed.
        f.put(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "other", "namespace": "rin-system", "labels": {"app": "other"}},
            "status": {"containerStatuses": [{"name": "o", "image": "docker.io/library/other:1",
                "state": {"waiting": {"reason": "ErrImagePull"}}}]}
        }));
    }
    let (_, say) = said();
    let e = roll_out(&c, desired("1.0.0", API), &fast(100), &say)
        .await
        .unwrap_err();
    assert!(matches!(e, InstallError::Unhealthy { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("1 object(s) are not healthy")
            && msg.contains("Deployment.apps rin-system/api 0/2")
            && msg.contains("api-7d9f-x2x")
            && msg.contains("ImagePullBackOff")
            && msg.contains("ghcr.io/rin/api:1.0")
            && msg.contains("for ghcr.io")
            && !msg.contains("other"),
        "{msg}"
    );
    assert!(e.hint().unwrap().contains("not recorded"));
    let f = fake.lock().unwrap();
    assert!(
        !f.log.iter().any(|l| l.contains("rin-release")),
        "no release record was written"
    );
}

#[tokio::test]
async fn a_claim_waiting_for_its_first_consumer_counts_and_a_failing_one_is_explained() {
    let claim = |name: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: rin-data}}\nspec: {{accessModes: [ReadWriteOnce]}}\n"
        )
    };
    let event = |name: &str, kind: &str, reason: &str, message: &str| {
        json!({"apiVersion": "v1", "kind": "Event",
               "metadata": {"name": format!("{name}.1"), "namespace": "rin-data"},
               "involvedObject": {"kind": "PersistentVolumeClaim", "name": name, "namespace": "rin-data"},
               "type": kind, "reason": reason, "message": message})
    };
    let (c, fake) = cluster(Fake::default());
    {
        let mut f = fake.lock().unwrap();
        f.script("later", vec![json!({"phase": "Pending"})]);
        f.script("broken", vec![json!({"phase": "Pending"})]);
        f.put(event(
            "later",
            "Normal",
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        ));
        f.put(event(
            "broken",
            "Warning",
            "ProvisioningFailed",
            "storageclass.storage.k8s.io \"fast-ssd\" not found",
        ));
    }
    let (_, say) = say_nothing();
    roll_out(&c, desired("1.0.0", &claim("later")), &fast(1000), &say)
        .await
        .unwrap();
    let e = roll_out(&c, desired("1.0.0", &claim("broken")), &fast(100), &say)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("PersistentVolumeClaim rin-data/broken")
            && e.contains("ProvisioningFailed")
            && e.contains("fast-ssd"),
        "{e}"
    );
}

/// The CloudNativePG operator's chart, as a bundle lists it.
fn cnpg_chart() -> rin_bundle::index::Chart {
    rin_bundle::index::Chart {
        name: "cloudnative-pg".into(),
        version: "0.22.1".into(),
        digest: "sha256:aa".into(),
        archive_sha256: "bb".repeat(32),
        values: None,
        namespace: Some("cnpg-system".into()),
    }
}

fn say_nothing() -> ((), rin_bundle::Silent) {
    ((), rin_bundle::Silent)
}

#[tokio::test]
async fn a_chart_counts_once_its_current_install_job_succeeded_and_its_release_workloads_are_ready()
{
    use crate::cluster::helmchart::{self, Feed};
    let chart = cnpg_chart();
    let with_chart = |content: &[u8]| {
        let mut d = desired("1.0.0", "");
        d.objects = vec![helmchart::helm_chart(&chart, Feed::Inline(content), None).unwrap()];
        d
    };
    let job = |uid: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "helm-install-cloudnative-pg", "namespace": "kube-system", "uid": uid},
               "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}},
               "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}})
    };
    let (c, fake) = cluster(Fake::default());
    {
        let mut f = fake.lock().unwrap();
        // The chart was installed before with other content; its old Job completed.
        let old = helmchart::helm_chart(&chart, Feed::Inline(b"old"), None).unwrap();
        f.put(old.value);
        f.put(job("old-job"));
        f.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "cnpg-operator", "namespace": "cnpg-system",
                         "annotations": {"meta.helm.sh/release-name": "cloudnative-pg"}},
            "spec": {"replicas": 1}}));
        f.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "unrelated", "namespace": "cnpg-system"},
            "spec": {"replicas": 1}}));
        f.script("unrelated", vec![json!({"replicas": 1})]);
    }
    let (_, say) = say_nothing();
    // The old Job does not count: the new spec's install has not started.
    let e = roll_out(&c, with_chart(b"new"), &fast(100), &say)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HelmChart.helm.cattle.io kube-system/cloudnative-pg 0/1")
            && e.contains(
                "has not started the install Job Job.batch kube-system/helm-install-cloudnative-pg"
            ),
        "{e}"
    );
    // The helm-controller ran the new install; the release's Deployment rolls out.
    {
        let mut f = fake.lock().unwrap();
        f.put(job("new-job"));
        f.script(
            "cnpg-operator",
            vec![
                json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 0}),
                json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}),
            ],
        );
    }
    let (lines, say) = said();
    let out = roll_out(&c, with_chart(b"new"), &fast(2000), &say)
        .await
        .unwrap();
    let progress = lines.lock().unwrap().join("\n");
    assert!(
        progress.contains("Deployment.apps cnpg-system/cnpg-operator 0/1 (chart cloudnative-pg)"),
        "{progress}"
    );
    assert!(!progress.contains("unrelated"), "{progress}");
    // The chart's own workloads are Helm's, not in the inventory.
    assert_eq!(out.record.inventory.len(), 1);
}

#[tokio::test]
async fn objects_of_a_kind_a_chart_brings_are_applied_once_the_chart_is_installed() {
    use crate::cluster::helmchart::{self, Feed};
    let chart = cnpg_chart();
    let (c, fake) = cluster(Fake {
        controllers: true,
        chart_kinds: vec![(
            "postgresql.cnpg.io".into(),
            "v1".into(),
            "Cluster".into(),
            "clusters".into(),
            true,
        )],
        ..Default::default()
    });
    let mut d = desired(
        "1.0.0",
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: rin-db, namespace: rin-data}\nspec: {instances: 3}\n",
    );
    d.objects
        .push(helmchart::helm_chart(&chart, Feed::Inline(b"tgz"), None).unwrap());
    let (lines, say) = said();
    let out = roll_out(&c, d, &fast(2000), &say).await.unwrap();
    assert_eq!(out.record.inventory.len(), 2);
    let f = fake.lock().unwrap();
    let log = f.log.join("\n");
    // The install Job was looked at (and found complete) before the Cluster was applied.
    assert!(
        log.find("GET /apis/batch/v1/namespaces/kube-system/jobs/helm-install-cloudnative-pg")
            < log.find("PATCH /apis/postgresql.cnpg.io/v1/namespaces/rin-data/clusters/rin-db"),
        "{log}"
    );
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("waiting for 1 operator object(s) before the rest"))
    );
}

const SECRETS: &str = r#"
# Listed before the Secret it copies: the copy is still made after it.
apiVersion: v1
kind: Secret
metadata:
  name: db-app
  namespace: rin-system
  annotations: {rin.dev/copy-from: rin-data/db-app}
type: kubernetes.io/basic-auth
---
apiVersion: v1
kind: Secret
metadata:
  name: db-app
  namespace: rin-data
  annotations: {rin.dev/generate: password}
type: kubernetes.io/basic-auth
stringData: {username: rin}
---
apiVersion: v1
kind: Secret
metadata:
  name: admin
  namespace: rin-system
  annotations: {rin.dev/generate: "token, salt"}
"#;

fn secret_data(fake: &Arc<Mutex<Fake>>, ns: &str, name: &str) -> Map<String, Value> {
    let f = fake.lock().unwrap();
    f.objects[&format!("/api/v1/namespaces/{ns}/secrets/{name}")]["data"]
        .as_object()
        .unwrap()
        .clone()
}

fn decoded(data: &Map<String, Value>, key: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data[key].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

use serde_json::Map;

#[tokio::test]
async fn generated_secrets_are_made_once_copies_share_them_and_they_are_never_changed_or_pruned() {
    let (c, fake) = cluster(Fake {
        controllers: true,
        ..Fake::default()
    });
    // The operator made `admin` already: it is kept as it is.
    fake.lock()
        .unwrap()
        .put(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "admin", "namespace": "rin-system"}, "data": {"token": "b3duZXI="}}));
    let (lines, say) = said();
    let with_secrets = desired("1.0.0", &format!("{NAMESPACES}---{SECRETS}"));
    let out = roll_out(&c, with_secrets.clone(), &fast(2000), &say)
        .await
        .unwrap();

    let data = secret_data(&fake, "rin-data", "db-app");
    assert_eq!(decoded(&data, "username"), "rin");
    let password = decoded(&data, "password");
    assert_eq!(password.len(), objects::GENERATED_LENGTH);
    assert!(
        password.chars().all(|c| c.is_ascii_alphanumeric()),
        "{password}"
    );
    // The copy in the other namespace has the same values.
    assert_eq!(secret_data(&fake, "rin-system", "db-app"), data);
    let admin = secret_data(&fake, "rin-system", "admin");
    assert_eq!(admin.keys().collect::<Vec<_>>(), ["token"]);
    assert_eq!(decoded(&admin, "token"), "owner");
    let progress = lines.lock().unwrap().join("\n");
    assert!(
        progress.contains("created Secret rin-data/db-app (generated password)")
            && progress.contains("created Secret rin-system/db-app (copied from rin-data/db-app)")
            && !progress.contains("created Secret rin-system/admin"),
        "{progress}"
    );
    // Not part of the release: nothing later prunes them.
    assert!(
        out.record.inventory.iter().all(|r| r.kind != "Secret"),
        "{:?}",
        out.record.inventory
    );

    // Again, and then a release without them: the values stay and nothing is deleted.
    roll_out(&c, with_secrets, &fast(2000), &say).await.unwrap();
    let next = roll_out(&c, desired("1.1.0", NAMESPACES), &fast(2000), &say)
        .await
        .unwrap();
    assert!(next.pruned.is_empty(), "{:?}", next.pruned);
    assert_eq!(secret_data(&fake, "rin-data", "db-app"), data);
    assert_eq!(secret_data(&fake, "rin-system", "db-app"), data);
    let f = fake.lock().unwrap();
    let writes: Vec<&String> = f
        .log
        .iter()
        .filter(|l| l.contains("/secrets") && !l.starts_with("GET "))
        .collect();
    // Two creates in all (admin existed), no apply or delete of a Secret.
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes.iter().all(|l| l.starts_with("POST ")), "{writes:?}");
}

#[tokio::test]
async fn a_copy_of_a_secret_that_is_nowhere_is_refused_naming_both() {
    let (c, _fake) = cluster(Fake {
        controllers: true,
        ..Fake::default()
    });
    let yaml = r#"
apiVersion: v1
kind: Secret
metadata:
  name: db-app
  namespace: default
  annotations: {rin.dev/copy-from: rin-data/db-app}
"#;
    let err = roll_out(&c, desired("1.0.0", yaml), &fast(500), &rin_bundle::Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Secret default/db-app (from manifests/stack.yaml)")
            && err.contains("copied from Secret rin-data/db-app, which is neither in the cluster"),
        "{err}"
    );
}

#[test]
fn two_generated_values_differ_and_use_the_whole_alphabet() {
    let values: Vec<String> = (0..200).map(|_| objects::random_value().unwrap()).collect();
    assert_ne!(values[0], values[1]);
    let all: std::collections::BTreeSet<char> = values.iter().flat_map(|v| v.chars()).collect();
    // 6400 characters drawn from 62: every one appears (missing one by chance: ~1e-42).
    assert_eq!(all.len(), 62, "{all:?}");
    assert!(values.iter().all(|v| v.len() == objects::GENERATED_LENGTH));
}
