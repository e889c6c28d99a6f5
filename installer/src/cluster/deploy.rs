//! The cluster step's Kubernetes layer, through the `kube` crate: server-side apply of a release's
//! objects in order with field manager `rininstall`, waiting for CustomResourceDefinitions to be
//! Established before anything that uses them, and deleting what a release pruned.
//!
//! Kinds are found by discovery of their group and version (`kube::discovery::pinned_kind`), so
//! any kind works, custom resources included, once its CRD is Established. Every wait is bounded.

use crate::cluster::objects::{self, Generated, Object, ObjectRef, Phase};
use crate::error::{InstallError, Result};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Client, Config};
use rin_bundle::Progress;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The field manager every apply uses.
pub const FIELD_MANAGER: &str = "rininstall";

/// What to check when a kind is not served.
const UNKNOWN_KIND: &str = ": if a CRD of the stack defines it, check that CRD; if an operator chart does, check that chart installed";

/// How to apply.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Take ownership of fields another manager set (`--force-conflicts`).
    pub force_conflicts: bool,
    /// Bound of each wait.
    pub timeout: Duration,
    /// Pause between two looks at an object that is not ready yet.
    pub poll: Duration,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            force_conflicts: false,
            timeout: Duration::from_secs(300),
            poll: Duration::from_millis(500),
        }
    }
}

/// A cluster reached through its API.
pub struct Cluster {
    client: Client,
    kinds: Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities)>>,
}

impl Cluster {
    pub fn new(client: Client) -> Self {
        Cluster {
            client,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// A client from the kubeconfig file at `path` (K3s writes `/etc/rancher/k3s/k3s.yaml`).
    pub async fn connect(path: &Path) -> Result<Self> {
        let fail = |reason: String| InstallError::Cluster {
            what: format!("kubeconfig {}", path.display()),
            reason,
        };
        let kubeconfig =
            kube::config::Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let client = Client::try_from(config).map_err(|e| fail(e.to_string()))?;
        Ok(Cluster::new(client))
    }

    /// Wait until the API server answers (after K3s starts), at most `opts.timeout`.
    /// Every Node, Pod and Event of the cluster, as the API serves them (for a support bundle):
    /// (what, the list as JSON); a list the API refuses is left out.
    pub async fn listings(&self) -> Vec<(&'static str, Value)> {
        use k8s_openapi::api::core::v1::{Event, Node, Pod};
        let lp = ListParams::default();
        let mut out = Vec::new();
        if let Ok(l) = Api::<Node>::all(self.client.clone()).list(&lp).await {
            out.push(("nodes", serde_json::to_value(l.items).unwrap_or_default()));
        }
        if let Ok(l) = Api::<Pod>::all(self.client.clone()).list(&lp).await {
            out.push(("pods", serde_json::to_value(l.items).unwrap_or_default()));
        }
        if let Ok(l) = Api::<Event>::all(self.client.clone()).list(&lp).await {
            out.push(("events", serde_json::to_value(l.items).unwrap_or_default()));
        }
        out
    }

    pub async fn wait_for_api(&self, opts: &DeployOptions) -> Result<String> {
        let started = Instant::now();
        loop {
            match self.client.apiserver_version().await {
                Ok(info) => return Ok(info.git_version),
                Err(e) if started.elapsed() >= opts.timeout => {
                    return Err(InstallError::Cluster {
                        what: "the Kubernetes API".into(),
                        reason: format!("did not answer within {}s: {e}", opts.timeout.as_secs()),
                    });
                }
                Err(_) => tokio::time::sleep(opts.poll).await,
            }
        }
    }

    /// The API resource of `r`'s kind, found by discovery (and remembered).
    async fn discover(
        &self,
        r: &ObjectRef,
    ) -> std::result::Result<(ApiResource, ApiCapabilities), kube::Error> {
        let key = (r.api_version.clone(), r.kind.clone());
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match r.api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &r.kind);
        let found = kube::discovery::pinned_kind(&self.client, &gvk).await?;
        self.lock().insert(key, found.clone());
        Ok(found)
    }

    /// `discover`, with a kind the cluster does not serve explained.
    async fn resource(&self, r: &ObjectRef) -> Result<(ApiResource, ApiCapabilities)> {
        self.discover(r).await.map_err(|e| InstallError::Cluster {
            what: r.to_string(),
            reason: match &e {
                kube::Error::Discovery(_) => {
                    format!(
                        "the cluster has no kind {} in {}{UNKNOWN_KIND}",
                        r.kind, r.api_version
                    )
                }
                kube::Error::Api(s) if s.code == 404 => {
                    format!("the cluster does not serve {}{UNKNOWN_KIND}", r.api_version)
                }
                _ => e.to_string(),
            },
        })
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), (ApiResource, ApiCapabilities)>> {
        // The map is only ever inserted into: a panic elsewhere cannot leave it inconsistent.
        self.kinds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Api` for the object `r`, with `r`'s namespace settled by the kind's scope: a namespaced
    /// object without one goes to `default` (as kubectl does); a cluster-scoped one has none.
    async fn api_for(&self, r: &ObjectRef) -> Result<(Api<DynamicObject>, ObjectRef)> {
        let (ar, caps) = self.resource(r).await?;
        let mut settled = r.clone();
        let api = match caps.scope {
            Scope::Namespaced => {
                if settled.namespace.is_empty() {
                    settled.namespace = "default".into();
                }
                Api::namespaced_with(self.client.clone(), &settled.namespace, &ar)
            }
            Scope::Cluster => {
                settled.namespace.clear();
                Api::all_with(self.client.clone(), &ar)
            }
        };
        Ok((api, settled))
    }

    /// `api_for`, waiting (bounded by `opts.timeout`) for a kind the cluster does not serve yet:
    /// a chart's CRDs appear when its install Job has run, and are served once Established.
    async fn api_for_waiting(
        &self,
        r: &ObjectRef,
        opts: &DeployOptions,
    ) -> Result<(Api<DynamicObject>, ObjectRef)> {
        let started = Instant::now();
        loop {
            match self.discover(r).await {
                Err(kube::Error::Discovery(_)) if started.elapsed() < opts.timeout => {}
                Err(kube::Error::Api(s)) if s.code == 404 && started.elapsed() < opts.timeout => {}
                // Served, or not worth waiting for: `api_for` says which.
                _ => return self.api_for(r).await,
            }
            tokio::time::sleep(opts.poll).await;
        }
    }

    /// Apply `objects` (already in apply order) one by one; after the CRDs, wait for each to be
    /// Established. A generated Secret is created when missing and otherwise left alone
    /// (`create_missing`). Returns every object's reference, in order, namespaces settled.
    pub async fn apply(
        &self,
        objects: &[Object],
        opts: &DeployOptions,
        report: &dyn Progress,
    ) -> Result<Vec<ObjectRef>> {
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if opts.force_conflicts {
            params = params.force();
        }
        let mut inventory = Vec::with_capacity(objects.len());
        let mut crds = Vec::new();
        let mut phase = None;
        for o in objects {
            if phase == Some(Phase::Crds) && o.phase() != Phase::Crds {
                self.wait_established(&crds, opts, report).await?;
            }
            phase = Some(o.phase());
            let (api, settled) = self.api_for_waiting(&o.reference, opts).await?;
            let mut value = o.value.clone();
            if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                match settled.namespace.as_str() {
                    "" => meta.remove("namespace"),
                    ns => meta.insert("namespace".into(), ns.into()),
                };
            }
            if let Some(how) = o.generated() {
                self.create_missing(&api, &settled, value, &how, &o.source, report)
                    .await?;
                inventory.push(settled);
                continue;
            }
            api.patch(&settled.name, &params, &Patch::Apply(&value))
                .await
                .map_err(|e| apply_error(&settled, &o.source, e))?;
            if o.phase() == Phase::Crds {
                crds.push(settled.name.clone());
            }
            inventory.push(settled);
        }
        if phase == Some(Phase::Crds) {
            self.wait_established(&crds, opts, report).await?;
        }
        Ok(inventory)
    }

    /// Create the generated Secret `settled` from `value` (its manifest) unless it exists: the
    /// keys `how` names get random values, or every key is copied from the Secret it names. An
    /// existing Secret, whoever made it, is never changed.
    async fn create_missing(
        &self,
        api: &Api<DynamicObject>,
        settled: &ObjectRef,
        mut value: Value,
        how: &Generated,
        source: &str,
        report: &dyn Progress,
    ) -> Result<()> {
        let cluster_error = |e: kube::Error| InstallError::Cluster {
            what: settled.to_string(),
            reason: e.to_string(),
        };
        if api
            .get_opt(&settled.name)
            .await
            .map_err(cluster_error)?
            .is_some()
        {
            return Ok(());
        }
        match how {
            Generated::Keys(keys) => {
                let mut string_data = value
                    .get("stringData")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for k in keys {
                    string_data.insert(k.clone(), objects::random_value()?.into());
                }
                value["stringData"] = Value::Object(string_data);
            }
            Generated::CopyFrom { namespace, name } => {
                let from = ObjectRef {
                    api_version: "v1".into(),
                    kind: "Secret".into(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                };
                let Some(original) = self.get(&from).await? else {
                    return Err(InstallError::Step {
                        what: format!("{settled} (from {source})"),
                        reason: format!(
                            "it is copied from {from}, which is neither in the cluster nor generated before it: create {from}, or generate it in the stack"
                        ),
                    });
                };
                value["data"] = original.get("data").cloned().unwrap_or_else(|| json!({}));
            }
        }
        let object: DynamicObject =
            serde_json::from_value(value).map_err(|e| InstallError::Cluster {
                what: settled.to_string(),
                reason: e.to_string(),
            })?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match api.create(&params, &object).await {
            Ok(_) => {
                report.say(&format!("created {settled} ({how})"));
                Ok(())
            }
            // Made by someone else since the look above: theirs stays.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(apply_error(settled, source, e)),
        }
    }

    /// Wait until every CRD named is Established (its kinds are then served), bounded by
    /// `opts.timeout` in all.
    async fn wait_established(
        &self,
        names: &[String],
        opts: &DeployOptions,
        report: &dyn Progress,
    ) -> Result<()> {
        let ar = ApiResource::erase::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(&());
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let started = Instant::now();
        for name in names {
            report.say(&format!(
                "waiting for CustomResourceDefinition {name} to be Established"
            ));
            loop {
                let crd = api.get(name).await.map_err(|e| InstallError::Cluster {
                    what: format!("CustomResourceDefinition {name}"),
                    reason: e.to_string(),
                })?;
                let conditions = crd
                    .data
                    .pointer("/status/conditions")
                    .and_then(|c| c.as_array())
                    .cloned()
                    .unwrap_or_default();
                let established = conditions.iter().any(|c| {
                    c.get("type").and_then(|t| t.as_str()) == Some("Established")
                        && c.get("status").and_then(|s| s.as_str()) == Some("True")
                });
                if established {
                    break;
                }
                if started.elapsed() >= opts.timeout {
                    let why: Vec<String> = conditions
                        .iter()
                        .filter(|c| c.get("status").and_then(|s| s.as_str()) != Some("True"))
                        .map(|c| {
                            format!(
                                "{} is {}: {}",
                                c.get("type").and_then(|s| s.as_str()).unwrap_or("?"),
                                c.get("status").and_then(|s| s.as_str()).unwrap_or("?"),
                                c.get("message").and_then(|s| s.as_str()).unwrap_or("")
                            )
                        })
                        .collect();
                    return Err(InstallError::Cluster {
                        what: format!("CustomResourceDefinition {name}"),
                        reason: format!(
                            "not Established after {}s ({})",
                            opts.timeout.as_secs(),
                            if why.is_empty() {
                                "no conditions reported yet".to_string()
                            } else {
                                why.join("; ")
                            }
                        ),
                    });
                }
                tokio::time::sleep(opts.poll).await;
            }
        }
        Ok(())
    }

    /// The object `r` as the API server has it, or None when it does not exist.
    pub async fn get(&self, r: &ObjectRef) -> Result<Option<Value>> {
        let (api, settled) = self.api_for(r).await?;
        match api.get_opt(&settled.name).await {
            Ok(found) => Ok(found.map(|o| typed_value(o, r))),
            Err(e) => Err(InstallError::Cluster {
                what: settled.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Every object of `r`'s kind in `r`'s namespace (every namespace for a cluster-scoped
    /// kind), narrowed by a label selector and a field selector when given.
    pub async fn list(
        &self,
        r: &ObjectRef,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<Vec<Value>> {
        let (api, settled) = self.api_for(r).await?;
        let mut params = ListParams::default();
        if let Some(l) = labels {
            params = params.labels(l);
        }
        if let Some(f) = fields {
            params = params.fields(f);
        }
        let list = api.list(&params).await.map_err(|e| InstallError::Cluster {
            what: match settled.namespace.as_str() {
                "" => format!("listing every {}", r.kind),
                ns => format!("listing {} in {ns}", r.kind),
            },
            reason: e.to_string(),
        })?;
        Ok(list.items.into_iter().map(|o| typed_value(o, r)).collect())
    }

    /// Apply one object built here (a release record), not from a manifest.
    pub async fn apply_one(&self, value: &Value, opts: &DeployOptions) -> Result<ObjectRef> {
        let o = Object::from_value(value.clone(), "rininstall", objects::Origin::Stack)?;
        let mut refs = self
            .apply(std::slice::from_ref(&o), opts, &rin_bundle::Silent)
            .await?;
        refs.pop().ok_or_else(|| InstallError::Cluster {
            what: "an object".into(),
            reason: "nothing was applied".into(),
        })
    }

    /// Delete the objects `refs` (in the order given); one already gone is fine.
    pub async fn delete(&self, refs: &[ObjectRef]) -> Result<()> {
        for r in refs {
            let (api, settled) = self.api_for(r).await?;
            match api.delete(&settled.name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(InstallError::Cluster {
                        what: format!("pruning {settled}"),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// An object the API server returned, as JSON with its `apiVersion` and `kind` (list items
/// often come without them).
fn typed_value(o: DynamicObject, r: &ObjectRef) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.entry("apiVersion")
            .or_insert_with(|| r.api_version.clone().into());
        m.entry("kind").or_insert_with(|| r.kind.clone().into());
    }
    v
}

/// The error of a refused apply: a field conflict names the object, the fields and their
/// managers as the API server reports them.
fn apply_error(r: &ObjectRef, source: &str, e: kube::Error) -> InstallError {
    match e {
        kube::Error::Api(s) if s.code == 409 => InstallError::Conflict {
            object: r.to_string(),
            source_file: source.to_string(),
            message: s.message,
        },
        // Invalid (422), malformed (400), or a field the schema lacks, which a real API server
        // answers to an apply with a 500: the manifest is at fault, not the cluster.
        kube::Error::Api(s)
            if matches!(s.code, 400 | 422)
                || (s.code == 500 && s.message.contains("field not declared in schema")) =>
        {
            InstallError::Refused {
                object: r.to_string(),
                source_file: source.to_string(),
                message: s.message,
            }
        }
        kube::Error::Api(s) => InstallError::Cluster {
            what: format!("{r} (from {source})"),
            reason: format!(
                "the API server refused it ({}{}): {}",
                s.code,
                if s.reason.is_empty() {
                    String::new()
                } else {
                    format!(" {}", s.reason)
                },
                s.message
            ),
        },
        e => InstallError::Cluster {
            what: format!("{r} (from {source})"),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
