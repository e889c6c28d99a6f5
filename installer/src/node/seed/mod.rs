//! Seeding: every image and chart of a verified bundle into the site registry, under its
//! original repository name, digests unchanged.
//!
//! No staging copy of the blobs is made. The bundle is verified in one streaming pass that keeps
//! only the manifests and indexes the signed index names (small JSON documents). The plan then
//! asks the registry which blobs each repository already has. A second streaming pass (only when
//! something is missing) verifies the bundle again and sends each missing blob, while it streams
//! by, as one streamed upload (`POST` then `PUT ?digest=` with the body streamed: memory stays a
//! few MiB however big the layer). A blob needed by several repositories is uploaded once and
//! mounted into the others. Manifests go last, children before indexes, tags last of all, so a
//! tag only appears once everything it points to is in place. The registry checks every blob's
//! digest itself; we check that every tag resolves to the bundle's digest at the end.
//!
//! A failed upload does not stop the pass: the blob is sent again in another pass over the bundle
//! (up to `attempts` passes, with backoff). A killed run resumes by blob: what the registry holds
//! is skipped.

mod early;
mod plan;
mod registry;
mod upload;

pub use early::{Early, EarlySent};
pub(crate) use plan::Collect;
pub use plan::{
    Plan, chart_repository, plan, plan_from_registry, platforms_not_carried, site_name, site_names,
};
pub use registry::Registry;
use registry::policy;
use upload::Upload;

use crate::error::{InstallError, Result};
use rin_bundle::oci::{self};
use rin_bundle::{Platform, Progress, Trust};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

/// Where and how to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// `host:port` of the site registry.
    pub registry: String,
    /// Plain HTTP (only for loopback, or when asked for explicitly).
    pub plain_http: bool,
    /// PEM CA certificates for the registry's TLS.
    pub ca_files: Vec<PathBuf>,
    /// `user:password` for basic or token auth.
    pub auth: Option<(String, String)>,
    /// Uploads, mounts and checks in flight at once.
    pub jobs: usize,
    /// Passes over the bundle, and tries of each request, before giving up.
    pub attempts: u32,
    /// The site's platforms (`linux/arm64`): an image index is pushed with only these children
    /// (a platform-filtered index, see docs/FORMAT.md). None: every platform in the bundle.
    pub platforms: Option<BTreeSet<Platform>>,
    /// How long the registry may answer nothing, or take no byte of an upload, before the
    /// request is given up (and tried again, or the blob sent in the next pass).
    pub stall: std::time::Duration,
}

use rin_support::DEFAULT_STALL;

impl SeedOptions {
    pub fn new(registry: &str) -> Self {
        SeedOptions {
            registry: registry.to_string(),
            plain_http: rin_support::is_loopback(registry),
            ca_files: Vec::new(),
            auth: None,
            jobs: 4,
            attempts: 4,
            platforms: None,
            stall: DEFAULT_STALL,
        }
    }
}

/// What seeding did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Seeded {
    /// Blobs uploaded (bytes sent), mounted from another repository, and already present.
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub mounted: usize,
    pub present: usize,
    /// Manifests and indexes pushed, and tags set.
    pub manifests: usize,
    pub tags: Vec<String>,
    /// Passes over the bundle after the verifying one.
    pub passes: u32,
    /// The blobs were sent while the bundle was verified (apply's one read).
    pub during_verify: bool,
}

/// What `seed_file` did.
#[derive(Debug)]
pub struct SeededFile {
    pub seeded: Seeded,
    /// The registry already held everything: it was checked against the signed index by
    /// digest, without reading the bundle's entries.
    pub from_index_alone: bool,
}

/// Why `seed_file` failed.
#[derive(Debug)]
pub enum SeedFailure {
    /// The bundle was refused (its signatures or its content) before anything was sent.
    Refused(InstallError),
    /// `--platform` names platforms the bundle does not carry (why).
    Platforms(String),
    /// Seeding itself failed.
    Seeding(InstallError),
}

/// Seed the bundle `file` into the registry `opts` names: a registry that already holds every
/// manifest the signed index names is checked against it alone (by digest, nothing read from
/// the bundle's entries); otherwise the bundle is verified and planned in one pass, then what the
/// registry lacks is sent.
pub fn seed_file(
    file: &Path,
    trust: &dyn Trust,
    opts: &SeedOptions,
    rt: &Handle,
    progress: &dyn Progress,
) -> std::result::Result<SeededFile, SeedFailure> {
    let opened = rin_bundle::open(file, trust).map_err(|e| SeedFailure::Refused(e.into()))?;
    let index_sha256 = rin_bundle::digest::sha256_hex(&opened.index_bytes);
    if let Some(why) = opts
        .platforms
        .as_ref()
        .and_then(|p| platforms_not_carried(&opened.index, p))
    {
        return Err(SeedFailure::Platforms(why));
    }
    let known = plan_from_registry(&opened.index, &index_sha256, opts, rt, progress)
        .map_err(SeedFailure::Seeding)?;
    let complete = match &known {
        Some(plan) => {
            missing_blobs(plan, opts, rt, progress)
                .map_err(SeedFailure::Seeding)?
                .0
                == 0
        }
        None => false,
    };
    let plan = match known {
        Some(plan) if complete => plan,
        _ => plan::plan(file, trust, progress).map_err(SeedFailure::Refused)?,
    };
    let seeded = seed(file, trust, &plan, opts, rt, progress).map_err(SeedFailure::Seeding)?;
    Ok(SeededFile {
        seeded,
        from_index_alone: complete,
    })
}

/// Push everything `plan` lists into the registry. Runs the second streaming pass (again
/// verified against `trust`) only when blobs are missing. Call from a thread outside the
/// runtime (it blocks on `rt`).
pub fn seed(
    bundle: &Path,
    trust: &dyn Trust,
    plan: &Plan,
    opts: &SeedOptions,
    rt: &Handle,
    progress: &dyn Progress,
) -> Result<Seeded> {
    let narrowed = site_plan(plan, opts)?;
    let plan = narrowed.as_ref().unwrap_or(plan);
    let reg = connect(opts, rt, progress)?;
    let mut seeded = Seeded::default();
    let jobs = opts.jobs.max(1);
    let pairs = plan.pairs();
    let mut pass = 0;
    let mut failure: Option<String> = None;
    for round in 0.. {
        // A registry that failed an upload (a full disk) may then fail the checks too, with no
        // reason of their own (a HEAD has no body): the upload's failure is the news.
        let missing =
            rt.block_on(missing(&reg, &pairs, jobs))
                .map_err(|e| match (e, &failure) {
                    (InstallError::Registry { registry, reason }, Some(f)) => {
                        InstallError::Registry {
                            registry,
                            reason: format!("{reason}; an upload before it failed: {f}"),
                        }
                    }
                    (e, _) => e,
                })?;
        if round == 0 {
            seeded.present = pairs.len() - missing.len();
            let absent = absent_left_out(plan, &pairs, &missing);
            if !absent.is_empty() {
                return Err(left_out_absent(opts, &absent));
            }
        }
        if missing.is_empty() {
            break;
        }
        let (unsent, mounted) = mount_missing(&reg, rt, plan, &pairs, &missing, jobs);
        seeded.mounted += mounted;
        if unsent.is_empty() {
            // Mounted: the next check confirms it.
            if round > opts.attempts.max(1) {
                return Err(still_missing(opts, missing.len(), pass, &failure));
            }
            continue;
        }
        if pass >= opts.attempts.max(1) {
            return Err(still_missing(opts, unsent.len(), pass, &failure));
        }
        if pass > 0 {
            let delay = policy(opts.attempts).delay(pass);
            progress.event(&rin_bundle::progress::Event::Retry {
                what: "sending the blobs the registry still lacks",
                attempt: pass,
                delay_ms: delay.as_millis() as u64,
                error: failure
                    .as_deref()
                    .unwrap_or("the registry did not keep them"),
            });
            std::thread::sleep(delay);
        }
        pass += 1;
        let send = send_map(&unsent);
        let opened = rin_bundle::open(bundle, trust)?;
        if rin_bundle::digest::sha256_hex(&opened.index_bytes) != plan.index_sha256 {
            return Err(InstallError::Bundle {
                reason: format!(
                    "{} is not the bundle that was verified: it changed while being installed",
                    bundle.display()
                ),
            });
        }
        let mut upload = Upload::new(&reg, rt, send, jobs);
        let verified = opened.verify_into(&mut upload, progress);
        upload.finish();
        verified?;
        seeded.uploaded += upload.sent.len();
        failure = upload.failure.or(failure);
        seeded.uploaded_bytes += upload.sent.iter().sum::<u64>();
    }
    seeded.passes = pass;
    for d in &plan.documents {
        rt.block_on(reg.push_document(d))?;
        seeded.manifests += 1;
        if let Some(t) = &d.tag {
            seeded.tags.push(format!("{}:{t}", d.repo));
        }
    }
    Ok(seeded)
}

/// Each image of `index` as the registry serves it under its site name and tag: None when the
/// tag resolves to the bundle's digest (or, on a site seeded for fewer platforms, to a
/// platform-filtered index of it), else what is wrong.
pub fn tags_resolve(
    index: &rin_bundle::Index,
    opts: &SeedOptions,
    rt: &Handle,
    progress: &dyn Progress,
) -> Result<Vec<(String, Option<String>)>> {
    let reg = connect(opts, rt, progress)?;
    let names = site_names(index.images.iter().map(|i| i.reference.as_str()))?;
    let mut out = Vec::new();
    for (image, (repo, tag)) in index.images.iter().zip(names) {
        let Some(tag) = tag else {
            // Pinned by digest: the digest must be there.
            let there = rt
                .block_on(reg.fetch_document(&repo, &image.digest))
                .is_some();
            out.push((
                image.reference.clone(),
                (!there).then(|| format!("{repo}@{} is not in the registry", image.digest)),
            ));
            continue;
        };
        let problem = match rt.block_on(reg.resolve_tag(&repo, &tag)) {
            Ok(d) if d == image.digest => None,
            Ok(d) if opts.platforms.is_some() || oci::is_index(&image.media_type) => {
                // A cut-down index (seeded for fewer platforms) is another digest: it must
                // still name this image's platform manifests.
                match rt.block_on(reg.fetch_document(&repo, &d)) {
                    Some(bytes)
                        if serde_json::from_slice::<plan::IndexDoc>(&bytes).is_ok_and(|i| {
                            i.manifests
                                .iter()
                                .all(|m| image.platforms.iter().any(|p| p.digest == m.digest))
                        }) =>
                    {
                        None
                    }
                    _ => Some(format!(
                        "{repo}:{tag} resolves to {d}, not the release's {}",
                        image.digest
                    )),
                }
            }
            Ok(d) => Some(format!(
                "{repo}:{tag} resolves to {d}, not the release's {}",
                image.digest
            )),
            Err(e) => Some(format!("{repo}:{tag} does not resolve: {e}")),
        };
        out.push((image.reference.clone(), problem));
    }
    Ok(out)
}

/// The registry `opts` names, connected, its credentials asked for once.
pub fn connect<'p>(
    opts: &SeedOptions,
    rt: &Handle,
    progress: &'p dyn Progress,
) -> Result<Registry<'p>> {
    let reg = Registry::connect(opts, progress)?;
    rt.block_on(reg.ready());
    Ok(reg)
}

/// Mount each missing pair that another repository of `pairs` holds; the pairs left to send
/// (what nothing holds, or would not mount; a delta's left-out blobs never: they are not in the
/// bundle) and how many were mounted.
fn mount_missing<'p>(
    reg: &Registry<'_>,
    rt: &Handle,
    plan: &Plan,
    pairs: &'p [(String, String)],
    missing: &'p BTreeSet<(String, String)>,
    jobs: usize,
) -> (Vec<&'p (String, String)>, usize) {
    let holder: HashMap<&str, &str> = pairs
        .iter()
        .filter(|p| !missing.contains(*p))
        .map(|(repo, digest)| (digest.as_str(), repo.as_str()))
        .collect();
    let (mounts, mut unsent): (Vec<_>, Vec<_>) = missing
        .iter()
        .partition(|(_, digest)| holder.contains_key(digest.as_str()));
    let mounts: Vec<_> = mounts
        .into_iter()
        .map(|pair| (pair, holder[pair.1.as_str()]))
        .collect();
    let tried = mounts.len();
    let failed = rt.block_on(mount_all(reg, mounts, jobs));
    let mounted = tried - failed.len();
    unsent.extend(failed);
    unsent.retain(|(_, d)| !plan.left_out.contains(d));
    (unsent, mounted)
}

/// One upload per blob (bundle path → repository and digest); other repositories mount it in
/// the next round.
fn send_map(unsent: &[&(String, String)]) -> HashMap<String, (String, String)> {
    let mut send: HashMap<String, (String, String)> = HashMap::new();
    for (repo, digest) in unsent {
        let path = oci::bundle_blob_path(digest).unwrap_or_default();
        send.entry(path)
            .or_insert_with(|| (repo.clone(), digest.clone()));
    }
    send
}

/// `plan` narrowed to the site's platforms, when `opts` names them.
fn site_plan(plan: &Plan, opts: &SeedOptions) -> Result<Option<Plan>> {
    opts.platforms
        .as_ref()
        .map(|p| plan.narrowed(p))
        .transpose()
}

/// Every config and layer of `index`'s images and charts that the registry holds: each manifest
/// the index names (an image's, each of its platforms', each chart's) that the registry serves
/// by its digest is read, and each blob it names is asked for in that repository. A site seeded
/// for fewer platforms holds those platforms' blobs only.
pub fn held_blobs(
    index: &rin_bundle::Index,
    opts: &SeedOptions,
    rt: &Handle,
    progress: &dyn Progress,
) -> Result<BTreeSet<String>> {
    let reg = connect(opts, rt, progress)?;
    let names = site_names(index.images.iter().map(|i| i.reference.as_str()))?;
    let mut manifests: Vec<(String, &String)> = Vec::new();
    for (image, (repo, _)) in index.images.iter().zip(names) {
        manifests.push((repo.clone(), &image.digest));
        manifests.extend(image.platforms.iter().map(|p| (repo.clone(), &p.digest)));
    }
    for c in &index.charts {
        manifests.push((chart_repository(&c.name), &c.digest));
    }
    let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
    for (repo, digest) in manifests {
        let Some(bytes) = rt.block_on(reg.fetch_document(&repo, digest)) else {
            continue;
        };
        // An index names no blobs; its platforms' manifests are in the list.
        if let Ok(m) = serde_json::from_slice::<plan::ManifestDoc>(&bytes) {
            for d in std::iter::once(m.config).chain(m.layers) {
                pairs.insert((repo.clone(), d.digest));
            }
        }
    }
    let pairs: Vec<(String, String)> = pairs.into_iter().collect();
    let missing = rt.block_on(missing(&reg, &pairs, opts.jobs.max(1)))?;
    Ok(pairs
        .into_iter()
        .filter(|p| !missing.contains(p))
        .map(|(_, d)| d)
        .collect())
}

/// The blobs a delta leaves out that the registry holds in none of the repositories that need
/// them, so that not even a mount could bring them: asked before anything changes (apply runs
/// this right after the verifying pass; `seed` at its start).
pub fn left_out_missing(
    plan: &Plan,
    opts: &SeedOptions,
    rt: &Handle,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    let narrowed = site_plan(plan, opts)?;
    let plan = narrowed.as_ref().unwrap_or(plan);
    if plan.left_out.is_empty() {
        return Ok(Vec::new());
    }
    let reg = connect(opts, rt, progress)?;
    let pairs: Vec<(String, String)> = plan
        .pairs()
        .into_iter()
        .filter(|(_, d)| plan.left_out.contains(d))
        .collect();
    let missing = rt.block_on(missing(&reg, &pairs, opts.jobs.max(1)))?;
    Ok(absent_left_out(plan, &pairs, &missing))
}

/// Left-out blobs of `plan` that no repository of `pairs` holds (`missing` are the pairs the
/// registry lacks).
fn absent_left_out(
    plan: &Plan,
    pairs: &[(String, String)],
    missing: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let held: BTreeSet<&String> = pairs
        .iter()
        .filter(|p| !missing.contains(*p))
        .map(|(_, d)| d)
        .collect();
    plan.left_out
        .iter()
        .filter(|d| !held.contains(d))
        .cloned()
        .collect()
}

/// The refusal of a delta whose left-out blobs the registry lacks.
pub fn left_out_absent(opts: &SeedOptions, absent: &[String]) -> InstallError {
    let shown: Vec<&str> = absent.iter().take(3).map(String::as_str).collect();
    InstallError::Registry {
        registry: opts.registry.clone(),
        reason: format!(
            "it lacks {} of the blobs this delta leaves out ({}{}): they were deleted from it, or it is not the registry the base release was seeded into; bring the full bundle",
            absent.len(),
            shown.join(", "),
            if absent.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ),
    }
}

/// How many blobs (and bytes) the registry lacks for `plan`: what seeding would send or mount.
pub fn missing_blobs(
    plan: &Plan,
    opts: &SeedOptions,
    rt: &Handle,
    progress: &dyn Progress,
) -> Result<(usize, u64)> {
    let narrowed = site_plan(plan, opts)?;
    let plan = narrowed.as_ref().unwrap_or(plan);
    let reg = connect(opts, rt, progress)?;
    let missing = rt.block_on(missing(&reg, &plan.pairs(), opts.jobs.max(1)))?;
    let digests: BTreeSet<&String> = missing.iter().map(|(_, d)| d).collect();
    let bytes = digests
        .iter()
        .map(|d| plan.sizes.get(*d).copied().unwrap_or(0))
        .sum();
    Ok((digests.len(), bytes))
}

async fn missing(
    reg: &Registry<'_>,
    pairs: &[(String, String)],
    jobs: usize,
) -> Result<BTreeSet<(String, String)>> {
    use futures_util::StreamExt;
    let results: Vec<Result<Option<(String, String)>>> = futures_util::stream::iter(pairs)
        .map(|(repo, digest)| async move {
            let has = reg.has_blob(repo, digest).await?;
            Ok((!has).then(|| (repo.clone(), digest.clone())))
        })
        .buffer_unordered(jobs * 4)
        .collect()
        .await;
    let mut out = BTreeSet::new();
    for r in results {
        if let Some(p) = r? {
            out.insert(p);
        }
    }
    Ok(out)
}

fn still_missing(
    opts: &SeedOptions,
    count: usize,
    passes: u32,
    failure: &Option<String>,
) -> InstallError {
    let why = failure
        .as_ref()
        .map(|f| format!("; the last failure: {f}"))
        .unwrap_or_default();
    InstallError::Registry {
        registry: opts.registry.clone(),
        reason: format!("{count} blobs still missing after {passes} passes over the bundle{why}"),
    }
}

/// Mount each (repository, digest) pair from the repository beside it; the pairs that did not.
async fn mount_all<'a>(
    reg: &Registry<'_>,
    mounts: Vec<(&'a (String, String), &str)>,
    jobs: usize,
) -> Vec<&'a (String, String)> {
    use futures_util::StreamExt;
    futures_util::stream::iter(mounts)
        .map(|(pair, from)| async move { (!reg.mount(&pair.0, from, &pair.1).await).then_some(pair) })
        .buffer_unordered(jobs)
        .filter_map(std::future::ready)
        .collect()
        .await
}
