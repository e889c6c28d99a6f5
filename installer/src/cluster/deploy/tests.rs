//! The Kubernetes layer against the fake API server of `crate::testing`.

use super::*;
use crate::cluster::objects::{self, Origin};
use crate::testing::{Fake, cluster};

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
    let lines = crate::testing::Lines::default();
    let said = lines.0.clone();
    let inventory = c.apply(&ordered(), &fast(), &lines).await.unwrap();
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
        .apply(&ordered(), &fast(), &rin_bundle::Silent)
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
    let e = c
        .apply(&ordered(), &fast(), &rin_bundle::Silent)
        .await
        .unwrap_err();
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
    c.apply(&ordered(), &forced, &rin_bundle::Silent)
        .await
        .unwrap();
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
    let e = c
        .apply(&o, &fast(), &rin_bundle::Silent)
        .await
        .unwrap_err()
        .to_string();
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
    let old = c
        .apply(&ordered(), &fast(), &rin_bundle::Silent)
        .await
        .unwrap();
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

#[test]
fn a_refusal_of_the_object_itself_points_at_the_stack_and_others_at_the_cluster() {
    let r = ObjectRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: "rin-system".into(),
        name: "api".into(),
    };
    let api = |code: u16, reason: &str, message: &str| {
        let s: kube::core::Status = serde_json::from_value(serde_json::json!({
            "code": code, "reason": reason, "message": message}))
        .unwrap();
        kube::Error::Api(Box::new(s))
    };
    // What a real API server answers to an apply with a field its schema lacks.
    let unknown = "failed to create typed patch object (rin-system/api; apps/v1, Kind=Deployment): .spec.replicaz: field not declared in schema";
    for e in [
        api(500, "", unknown),
        api(
            422,
            "Invalid",
            "Deployment.apps \"api\" is invalid: spec.replicas: Invalid value: -1",
        ),
        api(400, "BadRequest", "the object is malformed"),
    ] {
        let e = super::apply_error(&r, "manifests/app.yaml", e);
        assert!(matches!(e, InstallError::Refused { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(
                "Deployment.apps rin-system/api (from manifests/app.yaml) was refused"
            ),
            "{e}"
        );
        assert!(
            e.hint()
                .unwrap()
                .contains("fix the field it names in the stack")
        );
    }
    // Anything else is the cluster's: named with its code, an empty reason left out.
    let e = super::apply_error(
        &r,
        "manifests/app.yaml",
        api(503, "", "etcdserver: leader changed"),
    );
    assert!(matches!(e, InstallError::Cluster { .. }), "{e:?}");
    assert!(e.to_string().contains("(503): etcdserver"), "{e}");
}
