//! Pods only on nodes that can run their images. A site may mix architectures (amd64 servers,
//! arm64 agents), and an image may be carried for only some of them; the scheduler knows nothing
//! of images, so a pod placed on a node of another architecture would fail to pull there. Each
//! workload of the stack therefore gets a required node affinity on `kubernetes.io/arch`: the
//! architectures that every image of its pod is carried (and seeded) for. Terms the manifest
//! already has keep their own expressions; the architecture is added to each (terms are ORed,
//! expressions ANDed). Images the bundle does not carry leave the choice to the others; a pod
//! none of whose images the bundle carries is left as it is.

use crate::cluster::objects::{self, Object, Origin};
use oci_client::Reference;
use rin_bundle::index::Index;
use rin_bundle::{Arch, Platform};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The node label the scheduler matches.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";

/// The images of a bundle with the architectures a site gets them for: what the bundle carries,
/// narrowed to `site` (`--platform`) when given.
pub struct Carried {
    images: Vec<CarriedImage>,
}

struct CarriedImage {
    reference: Reference,
    /// The digest of its index (or manifest) in the bundle.
    digest: String,
    /// (platform manifest digest, architecture) of each platform the site gets.
    platforms: Vec<(String, Arch)>,
}

impl Carried {
    pub fn new(index: &Index, site: Option<&BTreeSet<Platform>>) -> Carried {
        let images = index
            .images
            .iter()
            .filter_map(|i| {
                Some(CarriedImage {
                    reference: i.reference.parse().ok()?,
                    digest: i.digest.clone(),
                    platforms: i
                        .platforms
                        .iter()
                        .filter(|p| site.is_none_or(|s| p.platform.matches_any(s)))
                        .map(|p| (p.digest.clone(), p.platform.arch().clone()))
                        .collect(),
                })
            })
            .collect();
        Carried { images }
    }

    /// The architectures `reference` runs on from the bundle; None when the bundle does not
    /// carry it. Names compare as Docker normalises them. A digest names the image's index (every
    /// platform the site gets) or one platform's manifest (that platform only).
    fn arches(&self, reference: &str) -> Option<BTreeSet<Arch>> {
        let want: Reference = reference.parse().ok()?;
        self.images.iter().find_map(|i| {
            let have = &i.reference;
            if have.registry() != want.registry() || have.repository() != want.repository() {
                return None;
            }
            let all = || i.platforms.iter().map(|(_, a)| a.clone()).collect();
            match want.digest() {
                None => (have.tag() == want.tag()).then(all),
                Some(d) if d == i.digest || have.digest() == Some(d) => Some(all()),
                Some(d) => {
                    let one: BTreeSet<Arch> = i
                        .platforms
                        .iter()
                        .filter(|(pd, _)| pd == d)
                        .map(|(_, a)| a.clone())
                        .collect();
                    (!one.is_empty()).then_some(one)
                }
            }
        })
    }
}

/// The pod spec of a workload (None for other kinds).
fn pod_spec(obj: &mut Value) -> Option<&mut Value> {
    let template = objects::pod_template(obj.get("kind")?.as_str()?)?;
    obj.pointer_mut(&format!("{template}/spec"))
}

/// The architectures every carried image of `pod` is carried for (None: it uses none).
fn pod_arches(pod: &Value, carried: &Carried) -> Option<BTreeSet<Arch>> {
    let mut out: Option<BTreeSet<Arch>> = None;
    for c in ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod.get(*k)?.as_array())
        .flatten()
    {
        let Some(arches) = c
            .get("image")
            .and_then(Value::as_str)
            .and_then(|i| carried.arches(i))
        else {
            continue;
        };
        out = Some(match out {
            None => arches,
            Some(o) => o.intersection(&arches).cloned().collect(),
        });
    }
    out
}

/// Give every workload of the stack a required node affinity to the architectures its images
/// are carried for. Not the site registry's: its image reaches the nodes through K3s's images
/// directory, not through the registry it serves.
pub fn place(objects: &mut [Object], carried: &Carried) {
    for o in objects.iter_mut().filter(|o| o.origin == Origin::Stack) {
        let Some(pod) = pod_spec(&mut o.value) else {
            continue;
        };
        // No architecture runs every image (two images pinned to different platforms'
        // manifests): there is nothing to require, and `In []` is not a valid requirement.
        let Some(arches) = pod_arches(pod, carried).filter(|a| !a.is_empty()) else {
            continue;
        };
        let requirement = json!({"key": ARCH_LABEL, "operator": "In", "values": arches});
        let required =
            &mut pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        let terms = &mut required["nodeSelectorTerms"];
        match terms.as_array_mut() {
            Some(terms) if !terms.is_empty() => {
                for t in terms {
                    match t["matchExpressions"].as_array_mut() {
                        Some(e) => e.push(requirement.clone()),
                        None => t["matchExpressions"] = json!([requirement.clone()]),
                    }
                }
            }
            _ => *terms = json!([{"matchExpressions": [requirement]}]),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cluster::objects::{self, Origin};
    use rin_bundle::index::{Image, ImagePlatform};

    fn image(reference: &str, platforms: &[&str]) -> Image {
        Image {
            reference: reference.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            upstream_digest: None,
            platforms: platforms
                .iter()
                .enumerate()
                .map(|(n, p)| ImagePlatform {
                    platform: p.parse().unwrap(),
                    digest: format!("sha256:{n}{}", "b".repeat(63)),
                    size: 1,
                })
                .collect(),
        }
    }

    fn carried(site: Option<&BTreeSet<Platform>>) -> Carried {
        let index = Index {
            format: rin_bundle::index::FORMAT.into(),
            stack: rin_bundle::index::Stack {
                name: "s".into(),
                version: "1".into(),
            },
            created: "2026-11-23T00:00:00Z".into(),
            platforms: vec![
                "linux/amd64".parse().unwrap(),
                "linux/arm64".parse().unwrap(),
            ],
            k3s: None,
            images: vec![
                image(
                    "docker.io/library/nginx:1.27",
                    &["linux/amd64", "linux/arm64", "linux/arm/v7"],
                ),
                image("ghcr.io/rin/api:1.4", &["linux/amd64"]),
            ],
            charts: vec![],
            components: vec![],
            base: None,
            entries: vec![],
        };
        Carried::new(&index, site)
    }

    fn affinity(o: &Object) -> Value {
        let mut v = o.value.clone();
        pod_spec(&mut v).unwrap()["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            .clone()
    }

    #[test]
    fn a_pod_goes_where_all_its_images_are_carried_and_keeps_its_own_terms() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: a}\nspec:\n  template:\n    spec:\n      containers: [{name: w, image: nginx:1.27}]\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: both, namespace: a}\nspec:\n  template:\n    spec:\n      initContainers: [{name: i, image: 'ghcr.io/rin/api:1.4'}]\n      containers: [{name: w, image: docker.io/library/nginx:1.27}]\n      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            nodeSelectorTerms:\n            - matchExpressions: [{key: disk, operator: In, values: [ssd]}]\n            - matchFields: [{key: metadata.name, operator: In, values: [n1]}]\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c, namespace: a}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers: [{name: c, image: 'ghcr.io/rin/api:1.4'}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec:\n  containers: [{name: c, image: quay.io/not/carried:1}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: m, namespace: a}\n";
        let mut objs = objects::parse(yaml, "m.yaml", Origin::Stack).unwrap();
        place(&mut objs, &carried(None));
        assert_eq!(
            affinity(&objs[0]),
            json!([{"matchExpressions": [{"key": ARCH_LABEL, "operator": "In", "values": ["amd64", "arm", "arm64"]}]}])
        );
        // Both images: only amd64; each of the manifest's terms gets the expression added.
        assert_eq!(
            affinity(&objs[1]),
            json!([
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]},
                    {"key": ARCH_LABEL, "operator": "In", "values": ["amd64"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}],
                 "matchExpressions": [{"key": ARCH_LABEL, "operator": "In", "values": ["amd64"]}]}
            ])
        );
        assert_eq!(
            affinity(&objs[2]),
            json!([{"matchExpressions": [{"key": ARCH_LABEL, "operator": "In", "values": ["amd64"]}]}])
        );
        // An image the bundle does not carry, and a kind without pods: unchanged.
        assert_eq!(objs[3].value["spec"].get("affinity"), None);
        assert_eq!(objs[4].value.get("spec"), None);
    }

    #[test]
    fn the_site_s_platforms_narrow_the_choice_and_the_site_registry_is_left_alone() {
        let site: BTreeSet<Platform> = ["linux/arm64".parse().unwrap()].into();
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: a}\nspec:\n  template:\n    spec:\n      containers: [{name: w, image: nginx:1.27}]\n";
        let mut objs = objects::parse(yaml, "m.yaml", Origin::Stack).unwrap();
        objs.extend(objects::parse(yaml, "r", Origin::SiteRegistry).unwrap());
        place(&mut objs, &carried(Some(&site)));
        assert_eq!(
            affinity(&objs[0]),
            json!([{"matchExpressions": [{"key": ARCH_LABEL, "operator": "In", "values": ["arm64"]}]}])
        );
        assert_eq!(
            objs[1].value["spec"]["template"]["spec"].get("affinity"),
            None
        );
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(v7.arch().as_str(), "arm");
        // By digest: the index means every platform, one platform's manifest that platform.
        let all = carried(None);
        let index = format!("nginx@sha256:{}", "a".repeat(64));
        let arm64 = format!("nginx@sha256:1{}", "b".repeat(63));
        assert_eq!(all.arches(&index).unwrap().len(), 3);
        assert_eq!(all.arches(&arm64), Some(["arm64".parse().unwrap()].into()));
        assert_eq!(
            all.arches(&format!("nginx@sha256:{}", "c".repeat(64))),
            None
        );
        // Images pinned to two different platforms: no architecture runs both, none required.
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: a}}\nspec:\n  containers:\n  - {{name: a, image: '{arm64}'}}\n  - {{name: b, image: 'nginx@sha256:0{}'}}\n",
            "b".repeat(63)
        );
        let mut objs = objects::parse(&yaml, "m.yaml", Origin::Stack).unwrap();
        place(&mut objs, &all);
        assert_eq!(objs[0].value["spec"].get("affinity"), None);
    }
}
