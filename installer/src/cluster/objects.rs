//! Kubernetes objects from a bundle's manifests: parsed from multi-document YAML, put in the order
//! they are applied in, and named for the release inventory (from which the next release prunes
//! what it no longer has).
//!
//! Apply order, by phase: CustomResourceDefinitions; Namespaces; the site registry's own objects;
//! operators (the stack's charts as `HelmChart` resources, and manifests under an `operators/`
//! directory); everything else. Within a phase, kinds follow Helm's install order (ServiceAccounts,
//! Secrets and ConfigMaps before the workloads that mount them, Services before Deployments, ...),
//! then kinds Helm does not know (custom resources) by name; objects of one kind keep the order
//! the manifests give them, except that a Secret copied from another comes after the others.
//!
//! A Secret annotated `rin.dev/generate` or `rin.dev/copy-from` is created at apply time when it
//! is missing and never changed or deleted afterwards ([`Generated`], docs/STACK.md).

use crate::error::{InstallError, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;

/// An object as a release records it. Two references name the same object when group, kind,
/// namespace and name agree: a new API version of the same object is not a new object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// The API group (empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }

    /// What stays the same across API versions: (group, kind, namespace, name).
    pub fn identity(&self) -> (&str, &str, &str, &str) {
        (self.group(), &self.kind, &self.namespace, &self.name)
    }
}

/// One form everywhere an object is named: `Kind[.group] [namespace/]name`, e.g.
/// `Namespace rin-demo`, `Service rin-demo/hello`, `Deployment.apps rin-demo/hello` (the group
/// when not the core one, as kubectl spells it).
impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.group() {
            "" => self.kind.clone(),
            g => format!("{}.{g}", self.kind),
        };
        match self.namespace.as_str() {
            "" => write!(f, "{kind} {}", self.name),
            ns => write!(f, "{kind} {ns}/{}", self.name),
        }
    }
}

/// Where an object comes from: decides its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The site registry's Deployment, Service and claim.
    SiteRegistry,
    /// A chart's `HelmChart`, or a manifest under an `operators/` directory.
    Operator,
    /// Any other manifest of the stack.
    Stack,
}

/// The phases of an apply, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Crds,
    Namespaces,
    SiteRegistry,
    Operators,
    Workloads,
}

/// One object to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub reference: ObjectRef,
    /// The whole object as the manifest gives it.
    pub value: Value,
    pub origin: Origin,
    /// The file (bundle path) it came from, for messages.
    pub source: String,
}

impl Object {
    /// One object built here rather than read from a manifest (a release record).
    pub fn from_value(value: Value, source: &str, origin: Origin) -> Result<Object> {
        object(value, source, origin).map_err(|reason| InstallError::Manifest {
            source_file: source.to_string(),
            document: 1,
            reason,
        })
    }

    /// How this object is made when it is missing, if it is a generated Secret.
    pub fn generated(&self) -> Option<Generated> {
        generated(&self.value).ok().flatten()
    }

    pub fn phase(&self) -> Phase {
        match (self.reference.kind.as_str(), self.reference.group()) {
            ("CustomResourceDefinition", "apiextensions.k8s.io") => Phase::Crds,
            ("Namespace", "") => Phase::Namespaces,
            _ => match self.origin {
                Origin::SiteRegistry => Phase::SiteRegistry,
                Origin::Operator => Phase::Operators,
                Origin::Stack => Phase::Workloads,
            },
        }
    }
}

/// Helm's install order of kinds (helm/pkg/release/util/kind_sorter.go); kinds not listed come
/// after these.
const KIND_ORDER: &[&str] = &[
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

fn kind_rank(kind: &str) -> usize {
    KIND_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KIND_ORDER.len())
}

/// Sort `objects` into apply order (stable: objects of one kind keep their order, but a copied
/// Secret comes after every other Secret of its phase, so the one it copies exists first).
pub fn order(objects: &mut [Object]) {
    let copies = |o: &Object| matches!(o.generated(), Some(Generated::CopyFrom { .. }));
    objects.sort_by(|a, b| {
        (a.phase(), kind_rank(&a.reference.kind), copies(a))
            .cmp(&(b.phase(), kind_rank(&b.reference.kind), copies(b)))
            .then_with(|| {
                // Unknown kinds: grouped by kind, by name.
                if kind_rank(&a.reference.kind) == KIND_ORDER.len() {
                    a.reference.kind.cmp(&b.reference.kind)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
    });
}

/// Every object in `text`, a multi-document YAML file at `source`. Empty documents and `List`
/// wrappers (`kind: List` / `*List` with `items`) are handled as kubectl does.
pub fn parse(text: &str, source: &str, origin: Origin) -> Result<Vec<Object>> {
    let bad = |n: usize, reason: String| InstallError::Manifest {
        source_file: source.to_string(),
        document: n,
        reason,
    };
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = Value::deserialize(doc).map_err(|e| bad(n, e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let items = match value.get("items").and_then(Value::as_array) {
            Some(items)
                if value
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List")) =>
            {
                items.clone()
            }
            _ => vec![value],
        };
        for value in items {
            out.push(object(value, source, origin).map_err(|reason| bad(n, reason))?);
        }
    }
    Ok(out)
}

fn object(value: Value, source: &str, origin: Origin) -> std::result::Result<Object, String> {
    let field = |path: &[&str]| -> Option<String> {
        let mut v = &value;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str().map(str::to_string)
    };
    let api_version = field(&["apiVersion"]).ok_or("it has no apiVersion")?;
    let kind = field(&["kind"]).ok_or("it has no kind")?;
    let name = field(&["metadata", "name"]).ok_or_else(|| {
        if field(&["metadata", "generateName"]).is_some() {
            format!(
                "{kind} uses generateName, which cannot be applied idempotently: give it a name"
            )
        } else {
            format!("{kind} has no metadata.name")
        }
    })?;
    let namespace = field(&["metadata", "namespace"]).unwrap_or_default();
    generated(&value)?;
    let origin = match origin {
        Origin::Stack if source.split('/').any(|c| c == "operators") => Origin::Operator,
        o => o,
    };
    Ok(Object {
        reference: ObjectRef {
            api_version,
            kind,
            namespace,
            name,
        },
        value,
        origin,
        source: source.to_string(),
    })
}

/// The annotation naming the keys of a Secret that get random values when it is created.
pub const GENERATE: &str = "rin.dev/generate";
/// The annotation naming the Secret (`namespace/name`) whose keys a Secret is created with.
pub const COPY_FROM: &str = "rin.dev/copy-from";
/// Length of a generated value: 32 characters of `[A-Za-z0-9]`, about 190 bits.
pub const GENERATED_LENGTH: usize = 32;

/// Where the pod template of a workload of `kind` sits (a JSON pointer: its `metadata` and `spec`
/// are the pod's); `""` for a Pod itself. None for kinds that make no pods.
pub fn pod_template(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        "Pod" => Some(""),
        _ => None,
    }
}

/// How a Secret that rininstall creates when it is missing gets its values. Once it exists it
/// belongs to the site: rininstall never changes it, does not record it in a release (so no
/// later release prunes it) and a Secret the operator made first is kept as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generated {
    /// These keys get random values; what the manifest gives (`data`, `stringData`) is kept.
    Keys(Vec<String>),
    /// Every key of this Secret is copied, so two namespaces share one password.
    CopyFrom { namespace: String, name: String },
}

impl std::fmt::Display for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Generated::Keys(keys) => write!(f, "generated {}", keys.join(", ")),
            Generated::CopyFrom { namespace, name } => {
                write!(f, "copied from {namespace}/{name}")
            }
        }
    }
}

/// An annotation's value, trimmed.
fn annotation_text<'a>(v: &'a Value, key: &str) -> std::result::Result<&'a str, String> {
    v.as_str()
        .map(str::trim)
        .ok_or_else(|| format!("annotation {key} must be a string"))
}

/// The `rin.dev/generate` / `rin.dev/copy-from` annotations of `value`, checked.
fn generated(value: &Value) -> std::result::Result<Option<Generated>, String> {
    let annotation = |key: &str| value.pointer("/metadata/annotations")?.get(key);
    let (generate, copy) = (annotation(GENERATE), annotation(COPY_FROM));
    if generate.is_none() && copy.is_none() {
        return Ok(None);
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if (api, kind) != ("v1", "Secret") {
        return Err(format!(
            "{GENERATE} and {COPY_FROM} are for a v1 Secret, not a {kind}: move the annotation to the Secret it is meant for"
        ));
    }
    let given: Vec<&String> = ["data", "stringData"]
        .iter()
        .filter_map(|f| value.get(f).and_then(Value::as_object))
        .flat_map(|m| m.keys())
        .collect();
    match (generate, copy) {
        (Some(_), Some(_)) => Err(format!(
            "a Secret is either generated ({GENERATE}) or copied ({COPY_FROM}), not both"
        )),
        (Some(g), None) => {
            let mut keys: Vec<String> = Vec::new();
            for k in annotation_text(g, GENERATE)?.split(',').map(str::trim) {
                if k.is_empty()
                    || !k
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(format!(
                        "{GENERATE}: {k:?} is not a Secret key (letters, digits, '-', '_', '.'); list the keys separated by commas, e.g. \"password, token\""
                    ));
                }
                if given.iter().any(|g| *g == k) {
                    return Err(format!(
                        "{GENERATE}: key {k} is also given in the manifest; generate it or give it, not both"
                    ));
                }
                if keys.iter().any(|seen| seen == k) {
                    return Err(format!("{GENERATE}: key {k} is listed twice"));
                }
                keys.push(k.to_string());
            }
            Ok(Some(Generated::Keys(keys)))
        }
        (None, Some(c)) => {
            let from = annotation_text(c, COPY_FROM)?;
            let Some((namespace, name)) = from
                .split_once('/')
                .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            else {
                return Err(format!(
                    "{COPY_FROM}: {from:?} must name the Secret to copy as namespace/name"
                ));
            };
            if !given.is_empty() {
                return Err(format!(
                    "{COPY_FROM}: a copied Secret takes every key from {from}; remove its data and stringData"
                ));
            }
            Ok(Some(Generated::CopyFrom {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }))
        }
        (None, None) => Ok(None),
    }
}

/// A random value for a generated key: [`GENERATED_LENGTH`] characters of `[A-Za-z0-9]`, from the
/// operating system's random source, each character equally likely.
pub fn random_value() -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(GENERATED_LENGTH);
    let mut buf = [0u8; 64];
    while out.len() < GENERATED_LENGTH {
        getrandom::fill(&mut buf).map_err(|e| InstallError::Cluster {
            what: "a generated secret value".into(),
            reason: format!("the operating system's random source failed: {e}"),
        })?;
        // 248 = 4 × 62: bytes at or above it are dropped so every character is equally likely.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == GENERATED_LENGTH {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

/// Two manifests that define the same object: the second would silently replace the first.
pub fn duplicates(objects: &[Object]) -> Option<String> {
    let mut seen = std::collections::HashMap::new();
    for o in objects {
        if let Some(first) = seen.insert(o.reference.identity(), &o.source) {
            return Some(format!(
                "{} is defined twice, in {first} and {}",
                o.reference, o.source
            ));
        }
    }
    None
}

/// What pruning removes: objects of the `old` inventory that the `new` one no longer has. A
/// Namespace that holds a PersistentVolumeClaim (`holds_claims` says which) is kept, and so is
/// every claim, unless `prune_volumes`: data is never deleted by default. Namespaced objects come
/// before cluster-scoped ones and Namespaces last, the reverse of apply order.
pub fn prune_set(
    old: &[ObjectRef],
    new: &[ObjectRef],
    holds_claims: &dyn Fn(&str) -> bool,
    prune_volumes: bool,
) -> Prune {
    let keep: BTreeSet<_> = new.iter().map(ObjectRef::identity).collect();
    let mut prune = Prune::default();
    for r in old {
        if keep.contains(&r.identity()) {
            continue;
        }
        let data = match (r.group(), r.kind.as_str()) {
            ("", "Namespace") => holds_claims(&r.name),
            ("", "PersistentVolumeClaim") => true,
            _ => false,
        };
        if data && !prune_volumes {
            prune.kept.push(r.clone());
        } else {
            prune.delete.push(r.clone());
        }
    }
    prune.delete.sort_by_key(|r| {
        let rank = match (r.group(), r.kind.as_str()) {
            ("", "Namespace") => 3,
            ("apiextensions.k8s.io", "CustomResourceDefinition") => 2,
            _ if r.namespace.is_empty() => 1,
            _ => 0,
        };
        (rank, std::cmp::Reverse(kind_rank(&r.kind)))
    });
    prune
}

/// The outcome of [`prune_set`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Prune {
    /// To delete, in this order.
    pub delete: Vec<ObjectRef>,
    /// Gone from the stack but kept because they hold data (`--prune-volumes` deletes them).
    pub kept: Vec<ObjectRef>,
}

/// A reference to an object by its four names.
pub fn obj_ref(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
