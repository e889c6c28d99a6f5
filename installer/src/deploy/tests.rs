//! The Kubernetes layer against a fake API server behind `tower-test`: it answers discovery,
//! server-side apply, gets and deletes with the shapes a real API server (K3s v1.31) returns,
//! serves a CRD's kind only once the CRD is Established, and reports field conflicts as a
//! 409 `Status`.

use super::*;
use crate::objects::{self, Origin};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use std::sync::Arc;

/// A kind the fake serves: group, version, kind, plural, namespaced.
type Kind = (String, String, String, String, bool);

fn builtin() -> Vec<Kind> {
    [
        ("", "v1", "Namespace", "namespaces", false),
        ("", "v1", "ConfigMap", "configmaps", true),
        ("", "v1", "Service", "services", true),
        ("apps", "v1", "Deployment", "deployments", true),
        (
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
        ("helm.cattle.io", "v1", "HelmChart", "helmcharts", true),
    ]
    .iter()
    .map(|(g, v, k, p, n)| {
        (
            g.to_string(),
            v.to_string(),
            k.to_string(),
            p.to_string(),
            *n,
        )
    })
    .collect()
}

#[derive(Default)]
struct Fake {
    /// Every request: `METHOD path?query`.
    log: Vec<String>,
    /// Stored objects by path.
    objects: HashMap<String, Value>,
    kinds: Vec<Kind>,
    /// Gets of a CRD before it reports Established (None: never).
    crd_ready_after: Option<usize>,
    crd_gets: usize,
    /// The name of an object whose apply conflicts unless forced.
    conflict_on: Option<String>,
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

impl Fake {
    fn handle(&mut self, method: &str, uri: &http::Uri, body: &[u8]) -> (u16, Value) {
        let path = uri.path().to_string();
        let query = uri.query().unwrap_or("");
        self.log.push(format!("{method} {path}?{query}"));
        if path == "/version" {
            return (
                200,
                json!({"major": "1", "minor": "31", "gitVersion": "v1.31.4+k3s1",
                       "gitCommit": "a", "gitTreeState": "clean", "buildDate": "2024-12-01T00:00:00Z",
                       "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64"}),
            );
        }
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (gv_len, group, version) = match segs.as_slice() {
            ["api", v, ..] => (2, "", *v),
            ["apis", g, v, ..] => (3, *g, *v),
            _ => {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
        };
        let rest = &segs[gv_len..];
        if rest.is_empty() {
            let resources: Vec<Value> = self
                .kinds
                .iter()
                .filter(|k| k.0 == group && k.1 == version)
                .map(|k| {
                    json!({"name": k.3, "singularName": k.2.to_lowercase(), "namespaced": k.4,
                           "kind": k.2, "verbs": ["create","delete","get","list","patch","update","watch"]})
                })
                .collect();
            if resources.is_empty() {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
            let gv = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            return (
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                       "resources": resources}),
            );
        }
        let (ns, plural, name) = match rest {
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, *name),
            [plural, name] => (None, *plural, *name),
            _ => return status(405, "MethodNotAllowed", "not served by this fake"),
        };
        let Some(kind) = self
            .kinds
            .iter()
            .find(|k| k.0 == group && k.1 == version && k.3 == plural)
            .cloned()
        else {
            return status(404, "NotFound", &format!("{plural} is not served"));
        };
        assert_eq!(kind.4, ns.is_some(), "{path}: scope");
        match method {
            "PATCH" => {
                assert!(query.contains("fieldManager=rininstall"), "{query}");
                if self.conflict_on.as_deref() == Some(name) && !query.contains("force=true") {
                    return status(
                        409,
                        "Conflict",
                        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas",
                    );
                }
                let mut obj: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(obj["metadata"]["name"], name);
                assert_eq!(obj["metadata"]["namespace"].as_str(), ns, "{path}");
                obj["metadata"]["uid"] = json!(format!("uid-{name}"));
                obj["metadata"]["resourceVersion"] = json!("1");
                self.objects.insert(path, obj.clone());
                (200, obj)
            }
            "GET" => {
                let Some(mut obj) = self.objects.get(&path).cloned() else {
                    return status(404, "NotFound", &format!("{plural} \"{name}\" not found"));
                };
                if kind.2 == "CustomResourceDefinition" {
                    self.crd_gets += 1;
                    let ready = self.crd_ready_after.is_some_and(|n| self.crd_gets > n);
                    obj["status"] = json!({"conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                         "message": "no conflicts found"},
                        {"type": "Established", "status": if ready { "True" } else { "False" },
                         "reason": if ready { "InitialNamesAccepted" } else { "Installing" },
                         "message": if ready { "the initial names have been accepted" } else { "the CRD is being installed" }}
                    ]});
                    if ready {
                        let spec = &obj["spec"];
                        for v in spec["versions"].as_array().unwrap() {
                            let k = (
                                spec["group"].as_str().unwrap().to_string(),
                                v["name"].as_str().unwrap().to_string(),
                                spec["names"]["kind"].as_str().unwrap().to_string(),
                                spec["names"]["plural"].as_str().unwrap().to_string(),
                                spec["scope"] == "Namespaced",
                            );
                            if !self.kinds.contains(&k) {
                                self.kinds.push(k);
                            }
                        }
                    }
                }
                (200, obj)
            }
            "DELETE" => match self.objects.remove(&path) {
                Some(_) => (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success",
                                         "details": {"name": name, "kind": plural}}),
                ),
                None => status(404, "NotFound", &format!("{plural} \"{name}\" not found")),
            },
            m => status(405, "MethodNotAllowed", m),
        }
    }
}

/// A cluster backed by `fake`, answered by a task until the test ends.
fn cluster(fake: Fake) -> (Cluster, Arc<std::sync::Mutex<Fake>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let fake = Arc::new(std::sync::Mutex::new(Fake {
        kinds: builtin(),
        ..fake
    }));
    let state = fake.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let (code, v) = state
                .lock()
                .unwrap()
                .handle(parts.method.as_str(), &parts.uri, &bytes);
            send.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&v).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Cluster::new(Client::new(svc, "default")), fake)
}

const STACK: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: rin-system}
spec: {size: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: rin-system}
spec: {replicas: 2}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: defaults}
data: {a: "1"}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets}
  versions: [{name: v1, served: true, storage: true}]
---
apiVersion: v1
kind: Namespace
metadata: {name: rin-system}
"#;

fn ordered() -> Vec<Object> {
    let mut o = objects::parse(STACK, "manifests/app.yaml", Origin::Stack).unwrap();
    objects::order(&mut o);
    o
}

fn fast() -> DeployOptions {
    DeployOptions {
        force_conflicts: false,
        timeout: Duration::from_millis(500),
        poll: Duration::from_millis(5),
    }
}

fn patches(fake: &Fake) -> Vec<String> {
    fake.log
        .iter()
        .filter(|l| l.starts_with("PATCH"))
        .map(|l| l.split('?').next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn objects_are_applied_in_order_and_custom_kinds_only_after_their_crd_is_established() {
    let (c, fake) = cluster(Fake {
        crd_ready_after: Some(3),
        ..Default::default()
    });
    let said = std::sync::Mutex::new(Vec::new());
    let inventory = c
        .apply(&ordered(), &fast(), &|s| said.lock().unwrap().push(s))
        .await
        .unwrap();
    let f = fake.lock().unwrap();
    assert_eq!(
        patches(&f),
        [
            "PATCH /apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
            "PATCH /api/v1/namespaces/rin-system",
            "PATCH /api/v1/namespaces/default/configmaps/defaults",
            "PATCH /apis/apps/v1/namespaces/rin-system/deployments/api",
            "PATCH /apis/example.com/v1/namespaces/rin-system/widgets/w",
        ]
    );
    // The CRD was polled until Established, before the Namespace (the next phase) was applied.
    let log = f.log.join("\n");
    let last_crd_get = log
        .rfind("GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
        .unwrap();
    assert!(last_crd_get < log.find("PATCH /api/v1/namespaces/rin-system").unwrap());
    assert_eq!(f.crd_gets, 4);
    // Every apply is server-side, by rininstall, without force.
    assert!(
        f.log
            .iter()
            .filter(|l| l.starts_with("PATCH"))
            .all(|l| l.contains("fieldManager=rininstall") && !l.contains("force=true"))
    );
    // The inventory has the namespace the server put each object in.
    let names: Vec<String> = inventory.iter().map(|r| r.to_string()).collect();
    assert!(
        names.contains(&"ConfigMap default/defaults".to_string()),
        "{names:?}"
    );
    assert!(said.lock().unwrap()[0].contains("widgets.example.com"));
}

#[tokio::test]
async fn a_crd_that_never_establishes_stops_the_apply_with_its_conditions() {
    let (c, fake) = cluster(Fake::default());
    let e = c
        .apply(&ordered(), &fast(), &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CustomResourceDefinition widgets.example.com")
            && e.contains("not Established")
            && e.contains("Established is False: the CRD is being installed"),
        "{e}"
    );
    // Nothing after the CRD phase was applied.
    assert_eq!(patches(&fake.lock().unwrap()).len(), 1);
}

#[tokio::test]
async fn a_field_conflict_names_the_object_and_field_and_force_takes_it_over() {
    let (c, fake) = cluster(Fake {
        crd_ready_after: Some(0),
        conflict_on: Some("api".into()),
        ..Default::default()
    });
    let e = c.apply(&ordered(), &fast(), &|_| {}).await.unwrap_err();
    assert!(matches!(e, InstallError::Conflict { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("Deployment.apps rin-system/api")
            && msg.contains("manifests/app.yaml")
            && msg.contains(".spec.replicas")
            && msg.contains("kubectl-edit"),
        "{msg}"
    );
    assert!(e.hint().unwrap().contains("--force-conflicts"));
    // The custom resource after it was not applied.
    assert!(
        !patches(&fake.lock().unwrap())
            .iter()
            .any(|p| p.contains("widgets/w"))
    );

    let forced = DeployOptions {
        force_conflicts: true,
        ..fast()
    };
    c.apply(&ordered(), &forced, &|_| {}).await.unwrap();
    let f = fake.lock().unwrap();
    assert!(f.log.iter().any(|l| {
        l.starts_with("PATCH /apis/apps/v1/namespaces/rin-system/deployments/api?")
            && l.contains("force=true")
    }));
}

#[tokio::test]
async fn a_kind_the_cluster_does_not_serve_is_explained() {
    let (c, _) = cluster(Fake::default());
    let o = objects::parse(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg, namespace: rin-data}\n",
        "manifests/pg.yaml",
        Origin::Stack,
    )
    .unwrap();
    let e = c.apply(&o, &fast(), &|_| {}).await.unwrap_err().to_string();
    assert!(
        e.contains("Cluster.postgresql.cnpg.io rin-data/pg")
            && e.contains("does not serve postgresql.cnpg.io/v1"),
        "{e}"
    );
}

#[tokio::test]
async fn pruning_deletes_in_order_and_an_object_already_gone_is_fine() {
    let (c, fake) = cluster(Fake {
        crd_ready_after: Some(0),
        ..Default::default()
    });
    let old = c.apply(&ordered(), &fast(), &|_| {}).await.unwrap();
    let prune = objects::prune_set(&old, &old[..2], &|_| false, false);
    c.delete(&prune.delete).await.unwrap();
    // Again: everything is already gone.
    c.delete(&prune.delete).await.unwrap();
    let f = fake.lock().unwrap();
    let deletes: Vec<&str> = f
        .log
        .iter()
        .filter(|l| l.starts_with("DELETE"))
        .map(|l| l.split('?').next().unwrap())
        .collect();
    assert_eq!(
        &deletes[..3],
        [
            "DELETE /apis/example.com/v1/namespaces/rin-system/widgets/w",
            "DELETE /apis/apps/v1/namespaces/rin-system/deployments/api",
            "DELETE /api/v1/namespaces/default/configmaps/defaults",
        ]
    );
    assert_eq!(deletes.len(), 6);
    assert_eq!(f.objects.len(), 2, "the CRD and the Namespace stay");
}

#[tokio::test]
async fn the_api_is_waited_for_and_reports_its_version() {
    let (c, _) = cluster(Fake::default());
    assert_eq!(c.wait_for_api(&fast()).await.unwrap(), "v1.31.4+k3s1");
}
