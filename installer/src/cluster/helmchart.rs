//! The stack's charts as K3s `HelmChart` resources (`helm.cattle.io/v1`), which K3s's bundled
//! helm-controller installs with a Job running its job image (`rancher/klipper-helm`, shipped in
//! K3s's airgap images archive, so it is there offline).
//!
//! The chart comes from the bundle, never from a repository: its archive inline as
//! `chartContent` (base64) when it is small enough for an object (the API server stores objects
//! of at most about 1.5 MiB), and otherwise from K3s's static charts directory on the servers,
//! which K3s serves at `https://%{KUBERNETES_API}%/static/charts/`. Values are the stack's values
//! file for the chart, as `valuesContent`. The release is named after the chart and goes into
//! the chart's `namespace:` from the stack (default: the chart's name), created if missing.

use crate::cluster::objects::{Object, ObjectRef, Origin};
use crate::error::{InstallError, Result};
use rin_bundle::index::Chart;
use serde_json::json;

/// Where the HelmChart resources live (where K3s keeps its own).
pub const NAMESPACE: &str = "kube-system";
/// The largest chart archive carried inline (its base64 is about 1 MiB).
pub const INLINE_MAX: u64 = 768 * 1024;
/// K3s's static charts directory, under the root, on servers.
pub const STATIC_DIR: &str = "var/lib/rancher/k3s/server/static/charts";

/// The bundle entry holding the chart's archive (the `.tgz`, its OCI layer).
pub fn archive_entry(chart: &Chart) -> String {
    format!("oci/blobs/sha256/{}", chart.archive_sha256)
}

/// The namespace the chart's release goes into.
pub fn target_namespace(chart: &Chart) -> &str {
    chart.namespace.as_deref().unwrap_or(&chart.name)
}

/// The file name of a chart served from the static charts directory.
pub fn static_name(chart: &Chart) -> String {
    format!("{}-{}.tgz", chart.name, chart.version)
}

/// How the chart's archive reaches the helm-controller.
pub enum Feed<'a> {
    /// The archive's bytes, inline.
    Inline(&'a [u8]),
    /// From the static charts directory (written on every server by `apply`).
    Static,
    /// Not read (a dry run shows the plan only).
    Plan,
}

/// The feed for a chart whose archive has `size` bytes.
pub fn inline(size: u64) -> bool {
    size <= INLINE_MAX
}

/// The HelmChart resource installing `chart` with the stack's `values`.
pub fn helm_chart(chart: &Chart, feed: Feed<'_>, values: Option<&str>) -> Result<Object> {
    use base64::Engine as _;
    let mut spec = json!({
        "version": chart.version,
        "targetNamespace": target_namespace(chart),
        "createNamespace": true,
    });
    match feed {
        Feed::Inline(bytes) => {
            if bytes.len() as u64 > INLINE_MAX {
                return Err(InstallError::Bundle {
                    reason: format!(
                        "chart {} {} is {} bytes: too large to carry inline",
                        chart.name,
                        chart.version,
                        bytes.len()
                    ),
                });
            }
            spec["chartContent"] = base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into();
        }
        Feed::Static => {
            spec["chart"] = format!(
                "https://%{{KUBERNETES_API}}%/static/charts/{}",
                static_name(chart)
            )
            .into();
        }
        Feed::Plan => {}
    }
    if let Some(v) = values {
        spec["valuesContent"] = v.into();
    }
    let value = json!({
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {
            "name": chart.name,
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/managed-by": "rininstall",
                "rin.dev/chart-version": chart.version,
            },
        },
        "spec": spec,
    });
    Ok(Object {
        reference: ObjectRef {
            api_version: "helm.cattle.io/v1".into(),
            kind: "HelmChart".into(),
            namespace: NAMESPACE.into(),
            name: chart.name.clone(),
        },
        value,
        origin: Origin::Operator,
        source: format!("chart {} {}", chart.name, chart.version),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cluster::objects::Phase;

    fn chart(namespace: Option<&str>) -> Chart {
        Chart {
            name: "cloudnative-pg".into(),
            version: "0.22.1".into(),
            digest: "sha256:aa".into(),
            archive_sha256: "bb".repeat(32),
            values: Some("charts/cloudnative-pg-0.22.1.values.yaml".into()),
            namespace: namespace.map(str::to_string),
        }
    }

    #[test]
    fn a_small_chart_goes_inline_with_its_values_into_its_namespace() {
        let c = chart(Some("cnpg-system"));
        let o = helm_chart(&c, Feed::Inline(b"tgz bytes"), Some("replicaCount: 2\n")).unwrap();
        assert_eq!(o.phase(), Phase::Operators);
        assert_eq!(
            o.reference.to_string(),
            "HelmChart.helm.cattle.io kube-system/cloudnative-pg"
        );
        let spec = &o.value["spec"];
        assert_eq!(spec["chartContent"], "dGd6IGJ5dGVz");
        assert_eq!(spec["targetNamespace"], "cnpg-system");
        assert_eq!(spec["createNamespace"], true);
        assert_eq!(spec["valuesContent"], "replicaCount: 2\n");
        assert!(spec.get("chart").is_none() && spec.get("repo").is_none());
        assert_eq!(
            archive_entry(&c),
            format!("oci/blobs/sha256/{}", "bb".repeat(32))
        );
    }

    #[test]
    fn a_large_chart_is_served_by_k3s_from_its_static_charts_directory() {
        let c = chart(None);
        assert!(inline(INLINE_MAX) && !inline(INLINE_MAX + 1));
        let big = vec![0u8; INLINE_MAX as usize + 1];
        let e = helm_chart(&c, Feed::Inline(&big), None).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        let o = helm_chart(&c, Feed::Static, None).unwrap();
        assert_eq!(
            o.value["spec"]["chart"],
            "https://%{KUBERNETES_API}%/static/charts/cloudnative-pg-0.22.1.tgz"
        );
        assert_eq!(o.value["spec"]["targetNamespace"], "cloudnative-pg");
        assert!(o.value["spec"].get("chartContent").is_none());
        assert!(o.value["spec"].get("valuesContent").is_none());
    }
}
