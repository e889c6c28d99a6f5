//! Which images the stack uses: `image:` (and CloudNativePG's `imageName:`) values in the plain
//! manifests, and in each chart's
//! `values.yaml` (with the stack's values file over it: `image: ref` strings and
//! `{registry, repository, tag, digest}` maps) and literal `image:` lines of its templates.
//! Templated references (`{{ … }}`) cannot be known without rendering; their values are what
//! the values files give, which is what is scanned.

use crate::net::registry::parse_reference;
use rin_bundle::index::Image;
use std::io::Read;

/// An image reference found in the stack, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub reference: String,
    pub place: String,
}

/// Every string under an `image` key in a YAML stream (all documents).
pub fn yaml_images(text: &str, place: &str, out: &mut Vec<Use>) {
    use serde::Deserialize;
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        if let Ok(v) = serde_json::Value::deserialize(doc) {
            walk(&v, None, place, out);
        }
    }
}

fn walk(v: &serde_json::Value, app_version: Option<&str>, place: &str, out: &mut Vec<Use>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                // `imageName`: the image a CloudNativePG Cluster runs.
                if k == "image" || (k == "imageName" && child.is_string()) {
                    match child {
                        Value::String(s) if looks_like_image(s) => out.push(Use {
                            reference: s.clone(),
                            place: place.into(),
                        }),
                        Value::Object(img) => {
                            if let Some(r) = from_parts(img, app_version) {
                                out.push(Use {
                                    reference: r,
                                    place: place.into(),
                                });
                            }
                        }
                        _ => {}
                    }
                }
                walk(child, app_version, place, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| walk(c, app_version, place, out)),
        _ => {}
    }
}

fn looks_like_image(s: &str) -> bool {
    !s.is_empty() && !s.contains("{{") && !s.contains(char::is_whitespace)
}

/// `{registry, repository, tag, digest}` as charts commonly write an image in values.
fn from_parts(
    m: &serde_json::Map<String, serde_json::Value>,
    app_version: Option<&str>,
) -> Option<String> {
    let s = |k: &str| m.get(k).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
    let repo = s("repository").or(s("name"))?;
    let mut r = match s("registry") {
        Some(reg) => format!("{reg}/{repo}"),
        None => repo.to_string(),
    };
    if let Some(d) = s("digest") {
        r = format!("{r}@{d}");
    } else if let Some(t) = s("tag").or(app_version) {
        r = format!("{r}:{t}");
    }
    looks_like_image(&r).then_some(r)
}

/// Images named by a chart archive: values (the stack's values over the chart's own), and
/// literal `image:` lines in templates. Subcharts inside the archive are read the same way.
pub fn chart_images(tgz: impl Read, values: Option<&str>, place: &str) -> Vec<Use> {
    let mut out = Vec::new();
    let mut app_version: Option<String> = None;
    let mut own_values = Vec::new();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let Ok(entries) = a.entries() else {
        return out;
    };
    for e in entries.flatten() {
        let mut e = e;
        let Ok(p) = e.path().map(|p| p.to_string_lossy().into_owned()) else {
            continue;
        };
        let mut text = String::new();
        if e.by_ref().take(8 << 20).read_to_string(&mut text).is_err() {
            continue;
        }
        let parts: Vec<&str> = p.split('/').collect();
        if parts.len() == 2 && parts[1] == "Chart.yaml" {
            if let Ok(v) = serde_yaml_ng::from_str::<serde_json::Value>(&text) {
                app_version = v
                    .get("appVersion")
                    .and_then(|x| x.as_str())
                    .map(str::to_string);
            }
        } else if p.ends_with("/values.yaml") {
            own_values.push((p.clone(), text));
        } else if p.contains("/templates/") {
            for line in text.lines() {
                let t = line.trim_start().trim_start_matches("- ");
                if let Some(rest) = t.strip_prefix("image:") {
                    let r = rest.trim().trim_matches(|c| c == '"' || c == '\'');
                    if looks_like_image(r) {
                        out.push(Use {
                            reference: r.to_string(),
                            place: format!("{place}: {p}"),
                        });
                    }
                }
            }
        }
    }
    let scan_values = |text: &str, where_: String, out: &mut Vec<Use>| {
        if let Ok(v) = serde_yaml_ng::from_str::<serde_json::Value>(text) {
            walk(&v, app_version.as_deref(), &where_, out);
        }
    };
    match values {
        // The stack's values replace the chart's defaults where they set an image.
        Some(v) => {
            let mut merged = serde_json::Value::Null;
            for (_, t) in own_values.iter().filter(|(p, _)| p.split('/').count() == 2) {
                merged = serde_yaml_ng::from_str(t).unwrap_or(serde_json::Value::Null);
            }
            if let Ok(over) = serde_yaml_ng::from_str::<serde_json::Value>(v) {
                merge(&mut merged, over);
            }
            let mut found = Vec::new();
            walk(
                &merged,
                app_version.as_deref(),
                &format!("{place}: values"),
                &mut found,
            );
            out.extend(found);
            for (p, t) in own_values.iter().filter(|(p, _)| p.split('/').count() > 2) {
                scan_values(t, format!("{place}: {p}"), &mut out);
            }
        }
        None => {
            for (p, t) in &own_values {
                scan_values(t, format!("{place}: {p}"), &mut out);
            }
        }
    }
    out
}

/// Helm's values merge: maps merge key by key, anything else is replaced.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// Is the image a reference names in the bundle? Names are compared as Docker normalises them
/// (`nginx:1` is `docker.io/library/nginx:1`); a digest reference matches the image's digest or
/// one of its platform manifests. Not the upstream index digest of a platform-filtered image:
/// that digest cannot exist at the site (docs/FORMAT.md, section 6).
pub fn carried(reference: &str, images: &[Image]) -> bool {
    let Ok(want) = parse_reference(reference) else {
        return false;
    };
    images.iter().any(|i| {
        let Ok(have) = parse_reference(&i.reference) else {
            return false;
        };
        if have.registry() != want.registry() || have.repository() != want.repository() {
            return false;
        }
        match want.digest() {
            Some(d) => {
                i.digest == d
                    || i.platforms.iter().any(|p| p.digest == d)
                    || have.digest() == Some(d)
            }
            None => have.tag() == want.tag(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_value_maps() {
        let mut out = Vec::new();
        yaml_images(
            "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n          image: nginx:1.27\n---\nkind: Pod\nspec:\n  initContainers:\n  - image: \"ghcr.io/x/y@sha256:aa\"\n  - image: \"{{ .Values.x }}\"\n",
            "m.yaml",
            &mut out,
        );
        let refs: Vec<&str> = out.iter().map(|u| u.reference.as_str()).collect();
        assert_eq!(refs, ["nginx:1.27", "ghcr.io/x/y@sha256:aa"]);
        let m = serde_json::json!({"image": {"registry": "quay.io", "repository": "jetstack/cm", "tag": "v1"}});
        let mut out = Vec::new();
        walk(&m, None, "v", &mut out);
        assert_eq!(out[0].reference, "quay.io/jetstack/cm:v1");
        let m = serde_json::json!({"image": {"repository": "a/b"}});
        let mut out = Vec::new();
        walk(&m, Some("2.0"), "v", &mut out);
        assert_eq!(out[0].reference, "a/b:2.0");
    }

    #[test]
    fn carried_normalises_names() {
        let img = Image {
            reference: "docker.io/library/nginx:1.27".into(),
            digest: format!("sha256:{}", "3".repeat(64)),
            media_type: rin_bundle::oci::MT_OCI_INDEX.into(),
            upstream_digest: Some(format!("sha256:{}", "1".repeat(64))),
            platforms: vec![rin_bundle::index::ImagePlatform {
                platform: "linux/arm64".parse().unwrap(),
                digest: format!("sha256:{}", "4".repeat(64)),
                size: 1,
            }],
        };
        let imgs = [img];
        assert!(carried("nginx:1.27", &imgs));
        assert!(carried("docker.io/nginx:1.27", &imgs));
        // The upstream digest of a filtered image cannot be pulled at the site.
        assert!(!carried(&format!("nginx@sha256:{}", "1".repeat(64)), &imgs));
        assert!(carried(&format!("nginx@sha256:{}", "3".repeat(64)), &imgs));
        assert!(carried(&format!("nginx@sha256:{}", "4".repeat(64)), &imgs));
        assert!(!carried("nginx:1.28", &imgs));
        assert!(!carried("ghcr.io/nginx:1.27", &imgs));
    }
}
