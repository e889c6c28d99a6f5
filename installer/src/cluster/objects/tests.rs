//! Unit tests of `objects`.

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
            "CustomResourceDefinition.apiextensions.k8s.io widgets.example.com",
            "Namespace rin-system",
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
            "ClusterRole.rbac.authorization.k8s.io old",
            "Namespace old-tools",
        ]
    );
    assert_eq!(
        names(&p.kept),
        ["Namespace rin-data", "PersistentVolumeClaim rin-data/pg"]
    );
    let all = prune_set(&old, &new, &claims, true);
    assert_eq!(all.delete.len(), 6);
    assert!(all.kept.is_empty());
    assert_eq!(
        all.delete.last().map(|r| r.kind.as_str()),
        Some("Namespace")
    );
}

#[test]
fn generated_secret_annotations_are_checked_as_the_manifest_is_read() {
    let secret = |annotations: &str, rest: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: n\n  annotations: {annotations}\n{rest}"
        )
    };
    let read = |yaml: &str| parse(yaml, "manifests/s.yaml", Origin::Stack);
    let o = read(&secret(
        "{rin.dev/generate: \" password ,token\"}",
        "stringData: {user: rin}",
    ))
    .unwrap();
    assert_eq!(
        o[0].generated(),
        Some(Generated::Keys(vec!["password".into(), "token".into()]))
    );
    let o = read(&secret("{rin.dev/copy-from: other/s}", "")).unwrap();
    assert_eq!(
        o[0].generated(),
        Some(Generated::CopyFrom {
            namespace: "other".into(),
            name: "s".into()
        })
    );
    assert_eq!(read(&secret("{a: b}", "")).unwrap()[0].generated(), None);
    for (annotations, rest, expected) in [
        (
            "{rin.dev/generate: password}",
            "data: {password: eA==}",
            "also given in the manifest",
        ),
        (
            "{rin.dev/generate: \"a,,b\"}",
            "",
            "\"\" is not a Secret key",
        ),
        (
            "{rin.dev/generate: \"a b\"}",
            "",
            "\"a b\" is not a Secret key",
        ),
        ("{rin.dev/generate: \"a,a\"}", "", "key a is listed twice"),
        (
            "{rin.dev/generate: a, rin.dev/copy-from: x/y}",
            "",
            "not both",
        ),
        ("{rin.dev/copy-from: justaname}", "", "as namespace/name"),
        (
            "{rin.dev/generate: 5}",
            "",
            "annotation rin.dev/generate must be a string",
        ),
        (
            "{rin.dev/copy-from: x/y}",
            "stringData: {a: b}",
            "remove its data and stringData",
        ),
    ] {
        let err = read(&secret(annotations, rest)).unwrap_err().to_string();
        assert!(
            err.contains("manifests/s.yaml, document 1") && err.contains(expected),
            "{annotations}: {err}"
        );
    }
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations: {rin.dev/generate: a}\n";
    let err = read(cm).unwrap_err().to_string();
    assert!(err.contains("for a v1 Secret, not a ConfigMap"), "{err}");
}
