//! The objects a bundle's stack puts on the cluster: every manifest under `manifests/`
//! (multi-document YAML or JSON, files in path order), a `HelmChart` per chart, and the site
//! registry's own objects. They are read from entries kept in memory by the verifying pass
//! (manifests, values and small chart archives are small); a chart too large to carry inline is
//! staged on disk and written into K3s's static charts directory on every server.

use crate::error::{InstallError, Result};
use crate::helmchart::{self, Feed};
use crate::objects::{self, Object, Origin};
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
/// charts', and the manifests'. With `plan_only`, charts carry no content (a dry run).
pub fn objects(
    index: &Index,
    kept: &HashMap<String, Vec<u8>>,
    registry_yaml: Option<&str>,
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
        let feed = if plan_only {
            Feed::Plan
        } else if let Some(bytes) = kept.get(&archive) {
            Feed::Inline(bytes)
        } else if entry(index, &archive).is_some() {
            Feed::Static
        } else {
            return Err(InstallError::Bundle {
                reason: format!(
                    "chart {} {}: its archive {archive} is not in the bundle",
                    c.name, c.version
                ),
            });
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
