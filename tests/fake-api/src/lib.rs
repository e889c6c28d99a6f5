//! A fake Kubernetes API server for tests of the cluster step. It answers discovery,
//! server-side apply, creates (409 when the object exists), gets, lists (label and field
//! selectors) and deletes with the shapes a real API server (K3s v1.31) returns, a Secret's
//! `stringData` folded into base64 `data`: list items come without `apiVersion`/`kind`, errors are
//! `Status` objects. A CRD's kind is served only once the CRD reports Established (after
//! `crd_ready_after` gets); a field conflict is a 409 unless the apply is forced; the status of an
//! object can be scripted (`statuses`) to change from one look to the next. With `controllers`,
//! it plays K3s's controllers: workloads report ready, claims bound, Jobs complete, and a
//! HelmChart whose spec changed gets a new, completed install Job.
//!
//! The installer's unit tests drive it through `tower-test` ([`client`]). The end-to-end tests
//! run against a real control plane instead (`tests/src/k8s.rs`).
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};

/// A kind the fake serves: group, version, kind, plural, namespaced.
pub type Kind = (String, String, String, String, bool);

pub fn builtin() -> Vec<Kind> {
    [
        ("", "v1", "Namespace", "namespaces", false),
        ("", "v1", "ConfigMap", "configmaps", true),
        ("", "v1", "Secret", "secrets", true),
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
        ("", "v1", "Pod", "pods", true),
        ("", "v1", "Event", "events", true),
        (
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
        ),
        ("apps", "v1", "StatefulSet", "statefulsets", true),
        ("apps", "v1", "DaemonSet", "daemonsets", true),
        ("batch", "v1", "Job", "jobs", true),
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
pub struct Fake {
    /// Every request: `METHOD path?query`.
    pub log: Vec<String>,
    /// Stored objects by path.
    pub objects: HashMap<String, Value>,
    pub kinds: Vec<Kind>,
    /// Gets of a CRD before it reports Established (None: never).
    pub crd_ready_after: Option<usize>,
    pub crd_gets: usize,
    /// The name of an object whose apply conflicts unless forced.
    pub conflict_on: Option<String>,
    /// Statuses an object (by name) reports, one per look; the last one stays.
    pub statuses: HashMap<String, VecDeque<Value>>,
    /// Play K3s's controllers (see the module's documentation).
    pub controllers: bool,
    /// Install Jobs started by the played helm-controller.
    pub chart_jobs: usize,
    /// Kinds a chart brings: served from the first look at a chart's install Job on.
    pub chart_kinds: Vec<Kind>,
}

pub fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

impl Fake {
    /// Answer one request: (status code, JSON body).
    pub fn handle(&mut self, method: &str, path: &str, query: &str, body: &[u8]) -> (u16, Value) {
        let path = path.to_string();
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
            ["namespaces", ns, plural] if method == "GET" => {
                return self.list(group, version, Some(ns), plural, query);
            }
            [plural] if method == "GET" => return self.list(group, version, None, plural, query),
            ["namespaces", ns, plural] if method == "POST" => {
                let path = format!("{path}/{}", created_name(body));
                return self.create(path, group, version, Some(ns), plural, query, body);
            }
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
                if self.controllers && kind.2 == "HelmChart" {
                    let before = self.objects.get(&path).map(|o| o["spec"].clone());
                    if before.as_ref() != Some(&obj["spec"]) {
                        self.chart_jobs += 1;
                        let uid = format!("job-{}", self.chart_jobs);
                        self.put(json!({"apiVersion": "batch/v1", "kind": "Job",
                            "metadata": {"name": format!("helm-install-{name}"),
                                         "namespace": ns, "uid": uid},
                            "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}}}));
                    }
                }
                obj["metadata"]["uid"] = json!(format!("uid-{name}"));
                obj["metadata"]["resourceVersion"] = json!("1");
                fold_string_data(&mut obj);
                self.objects.insert(path, obj.clone());
                (200, obj)
            }
            "GET" => {
                let Some(mut obj) = self.objects.get(&path).cloned() else {
                    return status(404, "NotFound", &format!("{plural} \"{name}\" not found"));
                };
                self.scripted(&mut obj);
                if kind.2 == "Job" && name.starts_with("helm-install-") {
                    for k in std::mem::take(&mut self.chart_kinds) {
                        if !self.kinds.contains(&k) {
                            self.kinds.push(k);
                        }
                    }
                }
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

impl Fake {
    /// A create (POST to the collection): 409 AlreadyExists when the object is there.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        path: String,
        group: &str,
        version: &str,
        ns: Option<&str>,
        plural: &str,
        query: &str,
        body: &[u8],
    ) -> (u16, Value) {
        assert!(query.contains("fieldManager=rininstall"), "{query}");
        if !self
            .kinds
            .iter()
            .any(|k| k.0 == group && k.1 == version && k.3 == plural && k.4 == ns.is_some())
        {
            return status(404, "NotFound", &format!("{plural} is not served"));
        }
        let mut obj: Value = serde_json::from_slice(body).unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        assert_eq!(obj["metadata"]["namespace"].as_str(), ns, "{path}");
        if self.objects.contains_key(&path) {
            return status(
                409,
                "AlreadyExists",
                &format!("{plural} \"{name}\" already exists"),
            );
        }
        obj["metadata"]["uid"] = json!(format!("uid-{name}"));
        obj["metadata"]["resourceVersion"] = json!("1");
        fold_string_data(&mut obj);
        self.objects.insert(path, obj.clone());
        (201, obj)
    }

    /// Store `obj` as if it had been created (by a controller, say) at its path.
    pub fn put(&mut self, obj: Value) {
        let path = path_of(&self.kinds, &obj);
        self.objects.insert(path, obj);
    }

    /// Script the statuses `name` reports, one per look.
    pub fn script(&mut self, name: &str, statuses: Vec<Value>) {
        self.statuses.insert(name.into(), statuses.into());
    }

    fn scripted(&mut self, obj: &mut Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if let Some(q) = self.statuses.get_mut(&name) {
            let s = if q.len() > 1 {
                q.pop_front()
            } else {
                q.front().cloned()
            };
            if let Some(s) = s {
                obj["status"] = s;
            }
        } else if self.controllers
            && let Some(s) = settled(obj)
        {
            obj["status"] = s;
        }
    }

    fn list(
        &mut self,
        group: &str,
        version: &str,
        ns: Option<&str>,
        plural: &str,
        query: &str,
    ) -> (u16, Value) {
        let prefix = match (group, ns) {
            ("", Some(ns)) => format!("/api/{version}/namespaces/{ns}/{plural}/"),
            ("", None) => format!("/api/{version}/{plural}/"),
            (g, Some(ns)) => format!("/apis/{g}/{version}/namespaces/{ns}/{plural}/"),
            (g, None) => format!("/apis/{g}/{version}/{plural}/"),
        };
        let param = |key: &str| {
            query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == key).then(|| decode(v))
            })
        };
        let labels = param("labelSelector").unwrap_or_default();
        let fields = param("fieldSelector").unwrap_or_default();
        let mut paths: Vec<&String> = self
            .objects
            .keys()
            .filter(|p| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
            .collect();
        paths.sort();
        let mut items = Vec::new();
        for p in paths.into_iter().cloned().collect::<Vec<_>>() {
            let mut obj = self.objects[&p].clone();
            let labels_match = labels.split(',').filter(|s| !s.is_empty()).all(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                obj["metadata"]["labels"][k].as_str() == Some(v)
            });
            let fields_match = fields.split(',').filter(|s| !s.is_empty()).all(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                let pointer = format!("/{}", k.replace('.', "/"));
                obj.pointer(&pointer).and_then(Value::as_str) == Some(v)
            });
            if labels_match && fields_match {
                self.scripted(&mut obj);
                let m = obj.as_object_mut().unwrap();
                m.remove("apiVersion");
                m.remove("kind");
                items.push(obj);
            }
        }
        (
            200,
            json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "9"},
                   "items": items}),
        )
    }
}

/// The name a create's body gives its object.
fn created_name(body: &[u8]) -> String {
    let obj: Value = serde_json::from_slice(body).unwrap();
    obj["metadata"]["name"].as_str().unwrap().to_string()
}

/// What the API server does with a Secret's `stringData`: merged into `data`, base64-encoded.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine as _;
    if obj["kind"] != "Secret" {
        return;
    }
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (k, v) in strings {
        let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap());
        obj["data"][k] = json!(encoded);
    }
}

/// The status K3s's controllers give `obj` once it settled, for the kinds they track.
fn settled(obj: &Value) -> Option<Value> {
    let n = obj["spec"]["replicas"].as_u64().unwrap_or(1);
    Some(match obj["kind"].as_str()? {
        "Deployment" => {
            json!({"replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n})
        }
        "StatefulSet" => json!({"replicas": n, "updatedReplicas": n, "readyReplicas": n}),
        "DaemonSet" => {
            json!({"desiredNumberScheduled": 1, "updatedNumberScheduled": 1, "numberReady": 1})
        }
        "Job" => json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
        "PersistentVolumeClaim" => json!({"phase": "Bound"}),
        _ => return None,
    })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The API path of `obj` among the `kinds` served.
fn path_of(kinds: &[Kind], obj: &Value) -> String {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let (g, v) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = kinds
        .iter()
        .find(|k| k.0 == g && k.1 == v && k.2 == obj["kind"].as_str().unwrap())
        .unwrap_or_else(|| panic!("the fake does not serve {api_version} {}", obj["kind"]));
    let base = if g.is_empty() {
        format!("/api/{v}")
    } else {
        format!("/apis/{g}/{v}")
    };
    let name = obj["metadata"]["name"].as_str().unwrap();
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) if kind.4 => format!("{base}/namespaces/{ns}/{}/{name}", kind.3),
        _ => format!("{base}/{}/{name}", kind.3),
    }
}

/// A kube client answered by `fake` (with the built-in kinds) from a task, until the test ends;
/// the fake is shared so a test can look at it and change it between calls.
pub fn client(fake: Fake) -> (kube::Client, std::sync::Arc<std::sync::Mutex<Fake>>) {
    use http::{Request, Response};
    use kube::client::Body;
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let fake = std::sync::Arc::new(std::sync::Mutex::new(Fake {
        kinds: builtin(),
        ..fake
    }));
    let state = fake.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let (code, v) = state.lock().unwrap().handle(
                parts.method.as_str(),
                parts.uri.path(),
                parts.uri.query().unwrap_or(""),
                &bytes,
            );
            send.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&v).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(svc, "default"), fake)
}
