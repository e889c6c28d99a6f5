//! Releases: what one apply installed (the bundle, the stack's version, K3s, every image digest,
//! and the inventory of applied objects), kept as a ConfigMap in the cluster and as JSON in the
//! state directory. The next apply prunes what the last release had and the new one does not; a
//! rollback re-applies a kept release. The last `keep` releases are kept (default 3).

use crate::cluster::objects::ObjectRef;
use crate::error::{InstallError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Where the records live in the cluster.
pub const NAMESPACE: &str = "rin-system";
/// The label every record carries (its value is the stack's name), to list them.
pub const LABEL: &str = "rin.dev/release-of";
/// The key of the record in the ConfigMap's `data`.
pub const DATA_KEY: &str = "release.json";
/// Releases kept unless told otherwise.
pub const DEFAULT_KEEP: usize = 3;

/// One release of a stack, wherever it is recorded: this node's `release.json` (its identity
/// and, when this node deployed it, the cluster's revision), the cluster's record ConfigMap
/// (also the images and the inventory), and what an apply or a rollback installs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub stack: String,
    pub version: String,
    /// The K3s version the bundle carried (absent when it carried none).
    #[serde(default)]
    pub k3s: Option<String>,
    /// sha256 of the bundle's signed index: the bundle's identity. (Cluster records written
    /// before this name call it `bundle`.)
    #[serde(alias = "bundle")]
    pub index_sha256: String,
    /// When it was installed (RFC 3339, UTC).
    pub installed: String,
    /// The cluster's revision: counts up from 1 on every apply of a stack, rollbacks included.
    /// None in a node record when this node did not deploy the stack, and before a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Image reference → the digest the site registry serves it under (cluster records).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// Every object applied, namespaces settled (cluster records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<ObjectRef>,
}

impl Release {
    /// The cluster's revision (0 when it has none).
    pub fn revision(&self) -> u64 {
        self.revision.unwrap_or(0)
    }

    /// The ConfigMap's name: one per revision.
    pub fn name(&self) -> String {
        let stack: String = self
            .stack
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
                _ => '-',
            })
            .collect();
        format!("rin-release-{stack}-{}", self.revision())
    }

    /// The record as a ConfigMap (applied server-side like every other object).
    pub fn to_config_map(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name(),
                "namespace": NAMESPACE,
                "labels": {
                    LABEL: self.stack,
                    "app.kubernetes.io/managed-by": "rininstall",
                },
                "annotations": {
                    "rin.dev/version": self.version,
                    "rin.dev/revision": self.revision().to_string(),
                },
            },
            "data": { DATA_KEY: serde_json::to_string_pretty(self).unwrap_or_default() },
        })
    }

    /// The record a ConfigMap holds.
    pub fn from_config_map(cm: &Value) -> Result<Release> {
        let name = cm
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let bad = |reason: String| InstallError::Cluster {
            what: format!("release record ConfigMap {NAMESPACE}/{name}"),
            reason,
        };
        let text = cm
            .pointer(&format!("/data/{}", DATA_KEY.replace('/', "~1")))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("it has no data.{DATA_KEY}")))?;
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))
    }
}

/// The records to delete so that only the newest `keep` remain (never fewer than one).
pub fn beyond_keep(records: &[Release], keep: usize) -> Vec<&Release> {
    let mut sorted: Vec<&Release> = records.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.revision()));
    sorted.into_iter().skip(keep.max(1)).collect()
}

/// The next revision after `records`.
pub fn next_revision(records: &[Release]) -> u64 {
    records.iter().map(|r| r.revision()).max().unwrap_or(0) + 1
}

/// The release a rollback goes to: with `to`, the newest kept release of that version; without,
/// the newest release before the installed one (the highest revision) that differs from it.
pub fn rollback_target<'a>(records: &'a [Release], to: Option<&str>) -> Result<&'a Release> {
    let mut sorted: Vec<&Release> = records.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.revision()));
    let Some(current) = sorted.first() else {
        return Err(InstallError::Step {
            what: "rollback".into(),
            reason: "no release is recorded on this cluster: there is nothing to roll back to"
                .into(),
        });
    };
    let kept = || {
        sorted
            .iter()
            .map(|r| format!("{} (revision {})", r.version, r.revision()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found = match to {
        Some(v) => sorted.iter().find(|r| r.version == v),
        None => sorted
            .iter()
            .skip(1)
            .find(|r| r.index_sha256 != current.index_sha256 || r.version != current.version),
    };
    found.copied().ok_or_else(|| InstallError::Step {
        what: "rollback".into(),
        reason: match to {
            Some(v) => format!("no kept release has version {v}; kept: {}", kept()),
            None => format!(
                "only the installed release {} is kept: there is no earlier one (kept: {})",
                current.version,
                kept()
            ),
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(revision: u64, version: &str, bundle: &str) -> Release {
        Release {
            revision: Some(revision),
            stack: "rin".into(),
            version: version.into(),
            k3s: Some("v1.31.4+k3s1".into()),
            index_sha256: bundle.into(),
            images: BTreeMap::from([(
                "docker.io/library/nginx:1.27".to_string(),
                "sha256:ab".to_string(),
            )]),
            inventory: vec![ObjectRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: "rin-system".into(),
                name: "api".into(),
            }],
            installed: "2026-11-23T10:00:00Z".into(),
        }
    }

    #[test]
    fn a_record_survives_the_round_trip_through_its_config_map() {
        let r = rec(4, "1.2.0", "aa");
        let cm = r.to_config_map();
        assert_eq!(cm["metadata"]["name"], "rin-release-rin-4");
        assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
        assert_eq!(cm["metadata"]["labels"][LABEL], "rin");
        // As the API server returns it: extra metadata does not matter.
        let mut served = cm.clone();
        served["metadata"]["uid"] = json!("u");
        assert_eq!(Release::from_config_map(&served).unwrap(), r);
        served["data"] = json!({});
        let e = Release::from_config_map(&served).unwrap_err().to_string();
        assert!(
            e.contains("rin-release-rin-4") && e.contains("release.json"),
            "{e}"
        );
    }

    #[test]
    fn records_written_under_the_old_digest_name_still_read() {
        let old = r#"{"revision": 2, "stack": "rin", "version": "1.1.0", "bundle": "ab",
            "images": {}, "inventory": [], "installed": "2026-11-23T10:00:00Z"}"#;
        let cm = json!({"metadata": {"name": "rin-release-rin-2"}, "data": {DATA_KEY: old}});
        let r = Release::from_config_map(&cm).unwrap();
        assert_eq!(
            (r.revision(), r.index_sha256.as_str(), r.k3s.clone()),
            (2, "ab", None)
        );
        // A node record carries no images or inventory, and says so by leaving them out.
        let node = Release {
            revision: None,
            images: Default::default(),
            inventory: vec![],
            ..r
        };
        let text = serde_json::to_string(&node).unwrap();
        assert_eq!(
            text,
            r#"{"stack":"rin","version":"1.1.0","k3s":null,"index_sha256":"ab","installed":"2026-11-23T10:00:00Z"}"#
        );
    }

    #[test]
    fn only_the_newest_releases_are_kept() {
        let all = vec![
            rec(1, "1.0.0", "a"),
            rec(3, "1.2.0", "c"),
            rec(2, "1.1.0", "b"),
            rec(4, "1.3.0", "d"),
        ];
        let gone: Vec<u64> = beyond_keep(&all, 3).iter().map(|r| r.revision()).collect();
        assert_eq!(gone, [1]);
        let gone: Vec<u64> = beyond_keep(&all, 0).iter().map(|r| r.revision()).collect();
        assert_eq!(gone, [3, 2, 1], "the installed release is always kept");
        assert_eq!(next_revision(&all), 5);
        assert_eq!(next_revision(&[]), 1);
    }

    #[test]
    fn rollback_goes_to_the_release_before_the_installed_one_or_to_the_version_asked() {
        // 1.1.0 was installed, then 1.2.0, then 1.2.0 applied again (revision 3).
        let all = vec![
            rec(1, "1.1.0", "b1"),
            rec(2, "1.2.0", "b2"),
            rec(3, "1.2.0", "b2"),
        ];
        assert_eq!(rollback_target(&all, None).unwrap().revision(), 1);
        assert_eq!(rollback_target(&all, Some("1.2.0")).unwrap().revision(), 3);
        let e = rollback_target(&all, Some("0.9.0"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0.9.0") && e.contains("1.1.0 (revision 1)"),
            "{e}"
        );
        // After a rollback (revision 4 = 1.1.0), the next rollback goes back to 1.2.0.
        let mut after = all.clone();
        after.push(rec(4, "1.1.0", "b1"));
        assert_eq!(rollback_target(&after, None).unwrap().revision(), 3);
        let e = rollback_target(&all[..1], None).unwrap_err().to_string();
        assert!(e.contains("no earlier one"), "{e}");
        assert!(rollback_target(&[], None).is_err());
    }
}
