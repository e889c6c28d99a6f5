//! The seeding plan: from the verified bundle (or, when the registry already holds them, from
//! the registry), every manifest and index to push with its repository and tag, and every blob
//! with the repositories that need it; narrowed to the site's platforms when asked.

use super::SeedOptions;
use crate::error::{InstallError, Result};
use oci_client::Reference;
use rin_bundle::index::{Entry, Index};
use rin_bundle::oci::{self, Descriptor};
use rin_bundle::{Platform, Progress, Sink, Trust};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use tokio::runtime::Handle;

/// One manifest or index to push, in push order.
#[derive(Debug, Clone)]
pub(super) struct Document {
    pub(super) repo: String,
    pub(super) digest: String,
    pub(super) media_type: String,
    pub(super) bytes: Vec<u8>,
    /// The tag it gets (its original reference's tag), if any.
    pub(super) tag: Option<String>,
}

/// Everything the registry must hold, read from the verified bundle.
#[derive(Debug, Default)]
pub struct Plan {
    /// Blob digest → repositories that need it.
    pub(super) blobs: BTreeMap<String, BTreeSet<String>>,
    /// Blob digest → size.
    pub(super) sizes: BTreeMap<String, u64>,
    pub(super) documents: Vec<Document>,
    /// The signed index's sha256: the second pass must read the same bundle.
    pub(super) index_sha256: String,
    /// Blobs a delta leaves out: the registry must hold them already (they are mounted, never
    /// sent).
    pub(super) left_out: BTreeSet<String>,
    /// The index and documents the plan was made from, to narrow it to the site's platforms.
    pub(super) source: Option<Arc<PlanSource>>,
}

/// The signed index and the documents (bundle path → bytes) a plan was made from.
type PlanSource = (Index, HashMap<String, Vec<u8>>);

impl Plan {
    /// Every (repository, blob digest) pair the registry must hold.
    pub(super) fn pairs(&self) -> Vec<(String, String)> {
        self.blobs
            .iter()
            .flat_map(|(d, repos)| repos.iter().map(move |r| (r.clone(), d.clone())))
            .collect()
    }
}

/// The repository and tag (if any) an image keeps in the site registry: its path without the
/// registry host, as containerd asks a mirror for it (`docker.io/busybox` → `library/busybox`).
pub fn site_name(reference: &str) -> Result<(String, Option<String>)> {
    let r = parse(reference)?;
    Ok((r.repository().to_string(), r.tag().map(str::to_string)))
}

fn parse(reference: &str) -> Result<Reference> {
    reference.parse().map_err(|e| InstallError::Bundle {
        reason: format!("image reference {reference:?} in the bundle does not parse: {e}"),
    })
}

/// The site names of `references`, refusing two that would share a repository and tag.
pub fn site_names<'a>(
    references: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(String, Option<String>)>> {
    // Each site name and tag, with the first reference that took it, as written and normalised
    // (`org/app:1` and `docker.io/org/app:1` are one image).
    let mut seen: HashMap<(String, String), (&str, String)> = HashMap::new();
    let mut out = Vec::new();
    for reference in references {
        let r = parse(reference)?;
        let (repo, tag, whole) = (
            r.repository().to_string(),
            r.tag().map(str::to_string),
            r.whole(),
        );
        if let Some(t) = &tag
            && let Some((other, other_whole)) =
                seen.insert((repo.clone(), t.clone()), (reference, whole.clone()))
            && other_whole != whole
        {
            return Err(InstallError::Bundle {
                reason: format!(
                    "{other} and {reference} both become {repo}:{t} in the site registry"
                ),
            });
        }
        out.push((repo, tag));
    }
    Ok(out)
}

/// The repository charts are pushed to: `charts/<name>`, tagged with the chart version (the
/// layout `helm pull oci://REGISTRY/charts/<name> --version V` expects).
pub fn chart_repository(name: &str) -> String {
    format!("charts/{name}")
}

/// Keeps the bytes of the documents the signed index names, as they stream by.
pub(crate) struct Collect {
    wanted: BTreeSet<String>,
    /// Other entries to keep (the cluster step's manifests, values and small charts).
    pub(crate) extra: BTreeSet<String>,
    pub(crate) docs: HashMap<String, Vec<u8>>,
    cur: Option<Vec<u8>>,
}

impl Collect {
    /// The bundle paths of the documents it collects.
    pub(crate) fn documents(&self) -> &BTreeSet<String> {
        &self.wanted
    }

    /// Collects every manifest and index `index` names.
    pub(crate) fn new(index: &Index) -> Self {
        Collect {
            wanted: document_paths(index),
            extra: BTreeSet::new(),
            docs: HashMap::new(),
            cur: None,
        }
    }
}

impl Sink for Collect {
    fn begin(&mut self, entry: &Entry) -> rin_bundle::Result<bool> {
        let take = (self.wanted.contains(&entry.path) && entry.size <= oci::MAX_DOCUMENT)
            || self.extra.contains(&entry.path);
        self.cur = take.then(Vec::new);
        Ok(take)
    }
    fn data(&mut self, chunk: &[u8]) -> rin_bundle::Result<()> {
        if let Some(c) = self.cur.as_mut() {
            c.extend_from_slice(chunk);
        }
        Ok(())
    }
    fn end(&mut self, entry: &Entry) -> rin_bundle::Result<()> {
        if let Some(c) = self.cur.take() {
            self.docs.insert(entry.path.clone(), c);
        }
        Ok(())
    }
}

#[derive(Deserialize)]
pub(super) struct ManifestDoc {
    pub(super) config: Descriptor,
    #[serde(default)]
    pub(super) layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
pub(super) struct IndexDoc {
    pub(super) manifests: Vec<Descriptor>,
}

/// Verify the whole bundle (trust first) and work out what the registry must hold.
pub fn plan(bundle: &Path, trust: &dyn Trust, progress: &dyn Progress) -> Result<Plan> {
    let opened = rin_bundle::open(bundle, trust)?;
    let index = opened.index.clone();
    let mut collect = Collect::new(&index);
    let verified = opened.verify_into(&mut collect, progress)?;
    Plan::build(&index, verified.index_sha256, &collect.docs)
}

impl Plan {
    /// The plan for `index`, from the documents a verifying pass collected.
    pub(crate) fn build(
        index: &Index,
        index_sha256: String,
        docs: &HashMap<String, Vec<u8>>,
    ) -> Result<Plan> {
        let mut plan = plan_from(index, index_sha256, docs, None)?;
        plan.source = Some(Arc::new((index.clone(), docs.clone())));
        Ok(plan)
    }

    /// The plan with every image index cut down to the children for `platforms` (each
    /// `os/arch[/variant]`, as the bundle names them). Images with a single manifest and charts
    /// are kept as they are. Refuses a platform the bundle does not carry, and an index with no
    /// child for any of them.
    pub fn narrowed(&self, platforms: &BTreeSet<Platform>) -> Result<Plan> {
        let Some(source) = &self.source else {
            return Err(InstallError::Bundle {
                reason: "this seeding plan cannot be narrowed to platforms".into(),
            });
        };
        let (index, docs) = source.as_ref();
        if let Some(reason) = platforms_not_carried(index, platforms) {
            return Err(InstallError::Step {
                what: "--platform".into(),
                reason,
            });
        }
        let mut plan = plan_from(index, self.index_sha256.clone(), docs, Some(platforms))?;
        plan.source = self.source.clone();
        Ok(plan)
    }

    /// Blobs the registry must hold (each counted once) and their bytes.
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn blob_bytes(&self) -> u64 {
        self.sizes.values().sum()
    }

    /// The config and layers of the manifest `digest`, if the plan holds it.
    pub fn manifest_blobs(&self, digest: &str) -> Option<Vec<Descriptor>> {
        let d = self.documents.iter().find(|d| d.digest == digest)?;
        let m: ManifestDoc = serde_json::from_slice(&d.bytes).ok()?;
        Some(std::iter::once(m.config).chain(m.layers).collect())
    }

    /// The bytes and media type of the manifest or index `digest`, if the plan holds it.
    pub fn document(&self, digest: &str) -> Option<(&[u8], &str)> {
        let d = self.documents.iter().find(|d| d.digest == digest)?;
        Some((&d.bytes, &d.media_type))
    }

    /// The sha256 of the signed index the plan was made from.
    pub fn index_sha256(&self) -> &str {
        &self.index_sha256
    }
}

fn plan_from(
    index: &Index,
    index_sha256: String,
    docs: &HashMap<String, Vec<u8>>,
    platforms: Option<&BTreeSet<Platform>>,
) -> Result<Plan> {
    let doc = |digest: &str| -> Result<&Vec<u8>> {
        let path = oci::bundle_blob_path(digest).unwrap_or_default();
        docs.get(&path).ok_or_else(|| InstallError::Bundle {
            reason: format!("the manifest {digest} the index names is not in the bundle"),
        })
    };
    let mut plan = Plan {
        index_sha256,
        ..Default::default()
    };
    let add_manifest = |plan: &mut Plan, repo: &str, digest: &str, mt: &str, tag| {
        let bytes = doc(digest)?.clone();
        let m: ManifestDoc = serde_json::from_slice(&bytes).map_err(|e| InstallError::Bundle {
            reason: format!("manifest {digest} does not parse: {e}"),
        })?;
        for d in std::iter::once(&m.config).chain(&m.layers) {
            plan.sizes.insert(d.digest.clone(), d.size);
            plan.blobs
                .entry(d.digest.clone())
                .or_default()
                .insert(repo.to_string());
        }
        plan.documents.push(Document {
            repo: repo.to_string(),
            digest: digest.to_string(),
            media_type: mt.to_string(),
            bytes,
            tag,
        });
        Ok::<_, InstallError>(())
    };
    let names = site_names(index.images.iter().map(|i| i.reference.as_str()))?;
    for (image, (repo, tag)) in index.images.iter().zip(names) {
        if oci::is_index(&image.media_type) {
            let bytes = doc(&image.digest)?.clone();
            let idx: IndexDoc =
                serde_json::from_slice(&bytes).map_err(|e| InstallError::Bundle {
                    reason: format!("index {} does not parse: {e}", image.digest),
                })?;
            let keep: Vec<bool> = idx
                .manifests
                .iter()
                .map(|child| match platforms {
                    None => true,
                    Some(wanted) => {
                        child_platform(image, child).is_some_and(|p| p.matches_any(wanted))
                    }
                })
                .collect();
            if !keep.contains(&true) {
                return Err(InstallError::Step {
                    what: image.reference.clone(),
                    reason: format!(
                        "has no manifest for {} (it has {}); seed it with one of those platforms",
                        rin_bundle::platform::list(platforms.into_iter().flatten()),
                        rin_bundle::platform::list(image.platforms.iter().map(|p| &p.platform))
                    ),
                });
            }
            for (child, _) in idx.manifests.iter().zip(&keep).filter(|(_, k)| **k) {
                add_manifest(&mut plan, &repo, &child.digest, &child.media_type, None)?;
            }
            let (digest, bytes) = if keep.iter().all(|k| *k) {
                (image.digest.clone(), bytes)
            } else {
                let cut = oci::filtered_index(&bytes, &keep).map_err(|e| InstallError::Bundle {
                    reason: format!("index {} does not parse: {e}", image.digest),
                })?;
                (
                    format!("sha256:{}", rin_bundle::digest::sha256_hex(&cut)),
                    cut,
                )
            };
            plan.documents.push(Document {
                repo,
                digest,
                media_type: image.media_type.clone(),
                bytes,
                tag,
            });
        } else {
            add_manifest(&mut plan, &repo, &image.digest, &image.media_type, tag)?;
        }
    }
    for chart in &index.charts {
        let repo = chart_repository(&chart.name);
        add_manifest(
            &mut plan,
            &repo,
            &chart.digest,
            oci::MT_OCI_MANIFEST,
            Some(chart.version.clone()),
        )?;
    }
    if let Some(base) = &index.base {
        plan.left_out = plan
            .blobs
            .keys()
            .filter(|d| base.holds_blob(d))
            .cloned()
            .collect();
    }
    Ok(plan)
}

/// The platform of an index's child: from its descriptor, or else from what the signed index
/// says of that manifest.
fn child_platform(image: &rin_bundle::index::Image, child: &Descriptor) -> Option<Platform> {
    child
        .platform
        .as_ref()
        .and_then(|p| p.platform())
        .or_else(|| {
            image
                .platforms
                .iter()
                .find(|p| p.digest == child.digest)
                .map(|p| p.platform.clone())
        })
}

/// Bundle paths of every manifest and index the signed index names.
fn document_paths(index: &Index) -> BTreeSet<String> {
    let mut digests: Vec<&str> = Vec::new();
    for i in &index.images {
        digests.push(&i.digest);
        digests.extend(i.platforms.iter().map(|p| p.digest.as_str()));
    }
    digests.extend(index.charts.iter().map(|c| c.digest.as_str()));
    digests
        .into_iter()
        .filter_map(oci::bundle_blob_path)
        .collect()
}

/// Why `platforms` cannot be seeded from `index`, if some are of architectures the bundle does
/// not carry.
pub fn platforms_not_carried(index: &Index, platforms: &BTreeSet<Platform>) -> Option<String> {
    let unknown: Vec<&Platform> = platforms
        .iter()
        .filter(|p| !index.platforms.iter().any(|c| c.same_arch(p)))
        .collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "the bundle does not carry {}; it carries {}: name one of those with --platform, or build a bundle with `rinbundle build --arch ...` for it",
            rin_bundle::platform::list(unknown),
            rin_bundle::platform::list(&index.platforms)
        )
    })
}

/// The plan read from the registry instead of the bundle, when the registry already holds every
/// manifest and index the signed index names: each is fetched by its digest and hashed, so
/// nothing unauthenticated is used, and the bundle's entries need not be read at all. None when
/// any is missing (then the bundle is verified and read as usual).
pub fn plan_from_registry(
    index: &Index,
    index_sha256: &str,
    opts: &SeedOptions,
    rt: &Handle,
    progress: &dyn Progress,
) -> Result<Option<Plan>> {
    let reg = super::connect(opts, rt, progress)?;
    let names = site_names(index.images.iter().map(|i| i.reference.as_str()))?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (image, (repo, _)) in index.images.iter().zip(&names) {
        wanted.push((repo.clone(), image.digest.clone()));
    }
    for chart in &index.charts {
        wanted.push((chart_repository(&chart.name), chart.digest.clone()));
    }
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
    while let Some((repo, digest)) = wanted.pop() {
        let Some(bytes) = rt.block_on(reg.fetch_document(&repo, &digest)) else {
            return Ok(None);
        };
        if let Ok(idx) = serde_json::from_slice::<IndexDoc>(&bytes) {
            wanted.extend(idx.manifests.into_iter().map(|c| (repo.clone(), c.digest)));
        }
        docs.insert(oci::bundle_blob_path(&digest).unwrap_or_default(), bytes);
    }
    Ok(Some(Plan::build(index, index_sha256.to_string(), &docs)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names_keep_the_path_and_drop_the_host() {
        assert_eq!(
            site_name("busybox:1.36").unwrap(),
            ("library/busybox".into(), Some("1.36".into()))
        );
        assert_eq!(
            site_name("ghcr.io/org/app:2").unwrap(),
            ("org/app".into(), Some("2".into()))
        );
        let (repo, tag) = site_name(&format!("quay.io/x/y@sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!((repo.as_str(), tag), ("x/y", None));
        assert!(site_name("has space:1").is_err());
        assert!(site_name("app:").is_err());
    }

    #[test]
    fn two_images_that_would_share_a_site_name_and_tag_are_refused() {
        let e = site_names(["docker.io/org/app:1", "ghcr.io/org/app:1"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker.io/org/app:1 and ghcr.io/org/app:1 both become org/app:1"),
            "{e}"
        );
        // Other tags, digest references and the same reference twice are fine.
        let d = format!("ghcr.io/org/app@sha256:{}", "b".repeat(64));
        let names = site_names(["docker.io/org/app:1", "ghcr.io/org/app:2", &d, "org/app:1"]);
        assert_eq!(names.unwrap().len(), 4);
    }
}
