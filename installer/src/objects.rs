//! Kubernetes objects from a bundle's manifests: parsed from multi-document YAML, put in the order
//! they are applied in, and named for the release inventory (from which the next release prunes
//! what it no longer has).
//!
//! Apply order, by phase: CustomResourceDefinitions; Namespaces; the site registry's own objects;
//! operators (the stack's charts as `HelmChart` resources, and manifests under an `operators/`
//! directory); everything else. Within a phase, kinds follow Helm's install order (ServiceAccounts,
//! Secrets and ConfigMaps before the workloads that mount them, Services before Deployments, ...),
//! then kinds Helm does not know (custom resources) by name; objects of one kind keep the order
//! the manifests give them.

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

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.group() {
            "" => self.kind.clone(),
            g => format!("{}.{g}", self.kind),
        };
        match self.namespace.as_str() {
            "" => write!(f, "{kind}/{}", self.name),
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

/// Sort `objects` into apply order (stable: objects of one kind keep their order).
pub fn order(objects: &mut [Object]) {
    objects.sort_by(|a, b| {
        (a.phase(), kind_rank(&a.reference.kind))
            .cmp(&(b.phase(), kind_rank(&b.reference.kind)))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn r(api: &str, kind: &str, ns: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api.into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    const STACK: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: rin-system}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: rin-system}
---
# a comment only
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: rin-system}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: cfg, namespace: rin-system}
  - apiVersion: v1
    kind: Namespace
    metadata: {name: rin-system}
"#;

    #[test]
    fn objects_are_applied_crds_first_then_namespaces_operators_and_the_rest_in_helms_kind_order() {
        let mut objects = parse(STACK, "manifests/app.yaml", Origin::Stack).unwrap();
        objects.extend(
            parse(
                "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: cnpg, namespace: kube-system}\n",
                "charts",
                Origin::Operator,
            )
            .unwrap(),
        );
        objects.extend(
            parse(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: registry, namespace: rin-system}\n",
                "registry",
                Origin::SiteRegistry,
            )
            .unwrap(),
        );
        order(&mut objects);
        let got: Vec<String> = objects.iter().map(|o| o.reference.to_string()).collect();
        assert_eq!(
            got,
            [
                "CustomResourceDefinition.apiextensions.k8s.io/widgets.example.com",
                "Namespace/rin-system",
                "Deployment.apps rin-system/registry",
                "HelmChart.helm.cattle.io kube-system/cnpg",
                "ConfigMap rin-system/cfg",
                "Service rin-system/api",
                "Deployment.apps rin-system/api",
                "Widget.example.com rin-system/w",
            ]
        );
    }

    #[test]
    fn manifests_under_an_operators_directory_go_in_the_operator_phase() {
        let o = parse(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: op}\n",
            "manifests/operators/op.yaml",
            Origin::Stack,
        )
        .unwrap();
        assert_eq!(o[0].phase(), Phase::Operators);
    }

    #[test]
    fn a_document_without_kind_or_name_is_refused_with_its_file_and_number() {
        let e = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n",
            "manifests/x.yaml",
            Origin::Stack,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("manifests/x.yaml") && e.contains("document 2"),
            "{e}"
        );
        assert!(e.contains("no kind"), "{e}");
        let e = parse(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {generateName: init-}\n",
            "manifests/j.yaml",
            Origin::Stack,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("generateName"), "{e}");
        let e = parse("a: [", "manifests/y.yaml", Origin::Stack)
            .unwrap_err()
            .to_string();
        assert!(e.contains("manifests/y.yaml"), "{e}");
    }

    #[test]
    fn the_same_object_twice_is_found_even_across_api_versions() {
        let mut o = parse(
            "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {name: p, namespace: a}\n",
            "one.yaml",
            Origin::Stack,
        )
        .unwrap();
        assert_eq!(duplicates(&o), None);
        o.extend(
            parse(
                "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p, namespace: a}\n",
                "two.yaml",
                Origin::Stack,
            )
            .unwrap(),
        );
        let d = duplicates(&o).unwrap();
        assert!(d.contains("one.yaml") && d.contains("two.yaml"), "{d}");
    }

    #[test]
    fn pruning_deletes_what_is_gone_but_never_data_unless_asked() {
        let old = vec![
            r("v1", "Namespace", "", "rin-data"),
            r("v1", "Namespace", "", "old-tools"),
            r("v1", "PersistentVolumeClaim", "rin-data", "pg"),
            r("apps/v1", "Deployment", "rin-data", "old-api"),
            r("v1", "Service", "rin-data", "old-api"),
            r("rbac.authorization.k8s.io/v1", "ClusterRole", "", "old"),
            r("policy/v1beta1", "PodDisruptionBudget", "rin-system", "api"),
            r("apps/v1", "Deployment", "rin-system", "api"),
        ];
        // The PDB moved to policy/v1: the same object, not pruned.
        let new = vec![
            r("policy/v1", "PodDisruptionBudget", "rin-system", "api"),
            r("apps/v1", "Deployment", "rin-system", "api"),
        ];
        let claims = |ns: &str| ns == "rin-data";
        let p = prune_set(&old, &new, &claims, false);
        let names = |v: &[ObjectRef]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(&p.delete),
            [
                "Deployment.apps rin-data/old-api",
                "Service rin-data/old-api",
                "ClusterRole.rbac.authorization.k8s.io/old",
                "Namespace/old-tools",
            ]
        );
        assert_eq!(
            names(&p.kept),
            ["Namespace/rin-data", "PersistentVolumeClaim rin-data/pg"]
        );
        let all = prune_set(&old, &new, &claims, true);
        assert_eq!(all.delete.len(), 6);
        assert!(all.kept.is_empty());
        assert_eq!(
            all.delete.last().map(|r| r.kind.as_str()),
            Some("Namespace")
        );
    }
}
