//! The objects a bundle's stack puts on the cluster: every manifest under `manifests/`
//! (multi-document YAML or JSON, files in path order), a `HelmChart` per chart, and the site
//! registry's own objects. They are read from entries kept in memory by the verifying pass
//! (manifests, values and small chart archives are small); a chart too large to carry inline is
//! staged on disk and written into K3s's static charts directory on every server.

use crate::cluster::helmchart::{self, Feed};
use crate::cluster::objects::{self, Object, Origin};
use crate::cluster::placement;
use crate::error::{InstallError, Result};
use rin_bundle::index::{Entry, Index};
use std::collections::{BTreeSet, HashMap};

/// Manifest files: `manifests/**.yaml|yml|json`.
fn is_manifest(path: &str) -> bool {
    path.starts_with("manifests/")
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| path.ends_with(ext))
}

fn entry<'a>(index: &'a Index, path: &str) -> Option<&'a Entry> {
    index.entries.iter().find(|e| e.path == path)
}

/// The entries the cluster step reads, kept in memory while the bundle is verified.
pub fn kept_entries(index: &Index) -> BTreeSet<String> {
    let mut keep: BTreeSet<String> = index
        .entries
        .iter()
        .filter(|e| is_manifest(&e.path))
        .map(|e| e.path.clone())
        .collect();
    for c in &index.charts {
        keep.extend(c.values.iter().cloned());
        let archive = helmchart::archive_entry(c);
        if entry(index, &archive).is_some_and(|e| helmchart::inline(e.size)) {
            keep.insert(archive);
        }
    }
    keep
}

/// Chart archives too large to carry inline: (entry path, file name in K3s's static charts
/// directory). Every server writes them.
pub fn static_charts(index: &Index) -> Vec<(&Entry, String)> {
    index
        .charts
        .iter()
        .filter_map(|c| {
            let e = entry(index, &helmchart::archive_entry(c))?;
            (!helmchart::inline(e.size)).then(|| (e, helmchart::static_name(c)))
        })
        .collect()
}

/// Every object of the stack, not yet ordered: the site registry's (`registry_yaml`), the
/// charts', and the manifests', each workload placed on the architectures its images are carried
/// for (`placement`; `site_platforms`: the site's `--platform`s). With `plan_only`, charts carry
/// no content (a dry run).
pub fn objects(
    index: &Index,
    kept: &HashMap<String, Vec<u8>>,
    registry_yaml: Option<&str>,
    site_platforms: Option<&BTreeSet<rin_bundle::Platform>>,
    plan_only: bool,
) -> Result<Vec<Object>> {
    let text = |path: &str| -> Result<&str> {
        let bytes = kept.get(path).ok_or_else(|| InstallError::Bundle {
            reason: format!("{path} was not read from the bundle"),
        })?;
        std::str::from_utf8(bytes).map_err(|_| InstallError::Manifest {
            source_file: path.to_string(),
            document: 1,
            reason: "it is not UTF-8 text".into(),
        })
    };
    let mut out = Vec::new();
    if let Some(y) = registry_yaml {
        out.extend(objects::parse(
            y,
            "the site registry",
            Origin::SiteRegistry,
        )?);
    }
    for c in &index.charts {
        let values = c.values.as_deref().map(text).transpose()?;
        let archive = helmchart::archive_entry(c);
        let size = entry(index, &archive)
            .ok_or_else(|| InstallError::Bundle {
                reason: format!(
                    "chart {} {}: its archive {archive} is not in the bundle",
                    c.name, c.version
                ),
            })?
            .size;
        // The same rule as `kept_entries` and `static_charts`: by the archive's size.
        let feed = if plan_only {
            Feed::Plan
        } else if helmchart::inline(size) {
            let bytes = kept.get(&archive).ok_or_else(|| InstallError::Bundle {
                reason: format!("{archive} was not read from the bundle"),
            })?;
            Feed::Inline(bytes)
        } else {
            Feed::Static
        };
        out.push(helmchart::helm_chart(c, feed, values)?);
    }
    let mut manifests: Vec<&Entry> = index
        .entries
        .iter()
        .filter(|e| is_manifest(&e.path))
        .collect();
    manifests.sort_by(|a, b| a.path.cmp(&b.path));
    for m in manifests {
        out.extend(objects::parse(text(&m.path)?, &m.path, Origin::Stack)?);
    }
    placement::place(&mut out, &placement::Carried::new(index, site_platforms));
    Ok(out)
}

/// Image reference → the digest the bundle carries it under.
pub fn images(index: &Index) -> std::collections::BTreeMap<String, String> {
    index
        .images
        .iter()
        .map(|i| (i.reference.clone(), i.digest.clone()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rin_bundle::index::{Chart, Entry, Index, Stack};

    fn chart(name: &str, archive: &str) -> Chart {
        Chart {
            name: name.into(),
            version: "1.0.0".into(),
            digest: "sha256:00".into(),
            archive_sha256: archive.into(),
            values: None,
            namespace: None,
        }
    }

    fn entry(path: &str, size: u64) -> Entry {
        Entry {
            path: path.into(),
            size,
            sha256: "00".repeat(32),
            mode: 0o644,
        }
    }

    #[test]
    fn small_charts_and_manifests_are_kept_in_memory_and_a_large_chart_goes_to_k3s_static_charts() {
        let small = "aa".repeat(32);
        let big = "bb".repeat(32);
        let index = Index {
            format: rin_bundle::index::FORMAT.into(),
            stack: Stack {
                name: "s".into(),
                version: "1".into(),
            },
            created: "2026-11-23T00:00:00Z".into(),
            platforms: vec!["linux/arm64".parse().unwrap()],
            k3s: None,
            images: vec![],
            charts: vec![chart("big", &big), chart("small", &small)],
            components: vec![],
            base: None,
            entries: vec![
                entry("manifests/app.yaml", 100),
                entry("manifests/notes.txt", 10),
                entry(
                    &format!("oci/blobs/sha256/{big}"),
                    helmchart::INLINE_MAX + 1,
                ),
                entry(&format!("oci/blobs/sha256/{small}"), 1000),
            ],
        };
        let kept = kept_entries(&index);
        assert_eq!(
            kept.into_iter().collect::<Vec<_>>(),
            [
                "manifests/app.yaml".to_string(),
                format!("oci/blobs/sha256/{small}")
            ]
        );
        let statics: Vec<(String, String)> = static_charts(&index)
            .into_iter()
            .map(|(e, name)| (e.path.clone(), name))
            .collect();
        assert_eq!(
            statics,
            [(
                format!("oci/blobs/sha256/{big}"),
                "big-1.0.0.tgz".to_string()
            )]
        );
        // What the verifying pass kept: the manifest and the small chart's archive.
        let read = HashMap::from([
            (
                "manifests/app.yaml".to_string(),
                b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: n}\n".to_vec(),
            ),
            (format!("oci/blobs/sha256/{small}"), b"tgz".to_vec()),
        ]);
        let objects = objects(&index, &read, None, None, false).unwrap();
        let names: Vec<String> = objects.iter().map(|o| o.reference.to_string()).collect();
        assert_eq!(
            names,
            [
                "HelmChart.helm.cattle.io kube-system/big",
                "HelmChart.helm.cattle.io kube-system/small",
                "ConfigMap n/a"
            ]
        );
        assert_eq!(
            objects[0].value["spec"]["chart"],
            "https://%{KUBERNETES_API}%/static/charts/big-1.0.0.tgz"
        );
        assert_eq!(objects[1].value["spec"]["chartContent"], "dGd6");
        // An entry the pass did not keep is an error, not a chart pointing nowhere or an
        // empty stack.
        let without = |path: &str| {
            let mut r = read.clone();
            r.remove(path);
            super::objects(&index, &r, None, None, false)
                .unwrap_err()
                .to_string()
        };
        let e = without(&format!("oci/blobs/sha256/{small}"));
        assert!(
            e.contains(&format!("{small} was not read from the bundle")),
            "{e}"
        );
        let e = without("manifests/app.yaml");
        assert!(
            e.contains("manifests/app.yaml was not read from the bundle"),
            "{e}"
        );
    }
}
