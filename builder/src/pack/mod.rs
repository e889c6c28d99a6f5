//! The packing half of a build (synchronous): `scan` finds the images manifests and charts
//! use, `collect` turns local layouts, the cache, charts, K3s files and trees into entries and
//! blobs, and this module plans the bundle (`plan`) and writes it (`build_from`).

pub mod collect;
pub mod delta;
pub mod files;
pub mod host;
pub mod scan;

use crate::error::{BuildError, Result};
use crate::fetched::Fetched;
use crate::fetched::FileEntry;
use crate::spec::{ChartSpec, Stack};
use collect::BlobSet;
use ed25519_dalek::SigningKey;
use rin_bundle::Arch;
use rin_bundle::index::{self, Entry, Index, K3s};
use rin_bundle::oci::{self, Descriptor};
use rin_bundle::{Progress, Source};
use scan::Use;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Default)]
pub struct BuildOptions {
    /// Architectures to keep (Go names: `amd64`, `arm64`).
    pub arches: Vec<Arch>,
    /// Keys that sign the index; empty makes an unsigned bundle.
    pub keys: Vec<SigningKey>,
    pub output: PathBuf,
    /// Creation time (seconds since the epoch): the index's `created` and every header's mtime.
    pub created: u64,
    /// zstd worker threads; the output is the same for every value of 1 or more.
    pub threads: u32,
    /// Build even when the manifests or charts use an image the bundle does not carry.
    pub allow_missing_image: bool,
    /// A directory holding `rininstall-linux-<arch>` for every architecture built: each is
    /// carried as `installer/rininstall-linux-<arch>`.
    pub installers: Option<PathBuf>,
    /// Components to take in beyond the stack's defaults, and to leave out.
    pub with: Vec<String>,
    pub without: Vec<String>,
    /// Also hash the bundle file (a second pass of SHA-256 over every byte written).
    pub checksum: bool,
    /// Build a delta: leave out what the site holds by this base (`delta::read_base`).
    pub base: Option<delta::Holds>,
}

/// What was written.
#[derive(Debug)]
pub struct Built {
    pub index: Index,
    pub index_sha256: String,
    pub signers: Vec<String>,
    /// sha256 of the bundle file, when asked for (`BuildOptions::checksum`), and its size.
    pub sha256: Option<String>,
    pub size: u64,
    /// Image references the manifests and charts use, with whether the bundle carries them.
    pub uses: Vec<(Use, bool)>,
}

/// What a bundle will hold: the index and one source per entry, in archive order.
pub struct Plan {
    pub index: Index,
    pub sources: Vec<Source>,
    pub uses: Vec<(Use, bool)>,
}

/// Collect, index, sign and write a stack whose sources are all local.
pub fn build(stack: &Stack, opts: &BuildOptions, progress: &dyn Progress) -> Result<Built> {
    build_from(stack, opts, &Fetched::default(), progress)
}

/// Collect (local files and what `fetched` brought into the cache), index, sign and write.
pub fn build_from(
    stack: &Stack,
    opts: &BuildOptions,
    fetched: &Fetched,
    progress: &dyn Progress,
) -> Result<Built> {
    let Plan {
        index,
        sources,
        uses,
    } = plan(stack, opts, fetched)?;
    let index_bytes = index.to_canonical_json();
    let signatures = rin_signing::sign(&index_bytes, &opts.keys);
    let (sha256, size) = rin_bundle::write_bundle_file(
        &opts.output,
        &index,
        &signatures,
        &sources,
        opts.threads,
        opts.checksum,
        progress,
    )?;
    Ok(Built {
        index_sha256: rin_bundle::digest::sha256_hex(&index_bytes),
        signers: opts
            .keys
            .iter()
            .map(|k| rin_signing::key_id(&k.verifying_key()))
            .collect(),
        index,
        sha256,
        size,
        uses,
    })
}

/// Plan the bundle: collect and check every entry.
pub fn plan(stack: &Stack, opts: &BuildOptions, fetched: &Fetched) -> Result<Plan> {
    let spec = &stack.spec;
    let mut arches = opts.arches.clone();
    arches.sort();
    arches.dedup();
    if arches.is_empty() {
        return Err(BuildError::Spec {
            path: stack.dir.join(crate::spec::SPEC_FILE),
            reason: "no architecture: pass --arch amd64 and/or --arch arm64, or list `platforms:`"
                .into(),
        });
    }
    let selection = stack.select(&opts.with, &opts.without)?;
    let mut blobs = BlobSet::default();
    let mut layout_index: Vec<(String, Descriptor)> = Vec::new();
    let mut images = Vec::new();
    for i in spec
        .images
        .iter()
        .filter(|i| !selection.images.contains(&i.reference))
    {
        let image = match (&i.layout, fetched.images.get(&i.reference), &fetched.store) {
            (None, Some(top), Some(store)) => {
                collect::fetched_image(store, top, &i.reference, &arches, &mut blobs)?
            }
            _ => collect::image(stack, i, &arches, &mut blobs)?,
        };
        let size = blobs
            .blobs
            .get(&image.digest)
            .map(|b| b.size)
            .unwrap_or_default();
        layout_index.push((
            image.reference.clone(),
            Descriptor {
                media_type: image.media_type.clone(),
                digest: image.digest.clone(),
                size,
                platform: None,
                annotations: None,
                artifact_type: None,
            },
        ));
        images.push(image);
    }
    images.sort_by(|a, b| a.reference.cmp(&b.reference));
    let mut charts = Vec::new();
    let mut files: Vec<FileEntry> = Vec::new();
    let mut chart_archives = Vec::new();
    for c in spec
        .charts
        .iter()
        .filter(|c| !selection.charts.contains(&c.name))
    {
        let archive = match (
            &c.archive,
            fetched.charts.get(&(c.name.clone(), c.version.clone())),
        ) {
            (Some(a), _) => stack.resolve(a),
            (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err(BuildError::Chart {
                    chart: c.name.clone(),
                    reason: format!(
                        "{} was not fetched from {}",
                        c.version,
                        c.repo.as_deref().unwrap_or("its repository")
                    ),
                });
            }
        };
        let values = match &c.values {
            Some(v) => {
                let path = format!("charts/{}-{}.values.yaml", c.name, c.version);
                files.push(FileEntry::regular(path.clone(), stack.resolve(v))?);
                Some(path)
            }
            None => None,
        };
        let (chart, desc) = collect::chart(c, &archive, values, &mut blobs)?;
        layout_index.push((format!("charts/{}:{}", chart.name, chart.version), desc));
        chart_archives.push((c.clone(), archive));
        charts.push(chart);
    }
    charts.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));

    // The layout's index.json names every image and chart.
    layout_index.sort_by(|a, b| a.0.cmp(&b.0));
    let manifests: Vec<Descriptor> = layout_index
        .into_iter()
        .map(|(name, mut d)| {
            d.annotations = Some(BTreeMap::from([
                (oci::ANNOTATION_CONTAINERD_NAME.to_string(), name.clone()),
                (oci::ANNOTATION_REF_NAME.to_string(), name),
            ]));
            d
        })
        .collect();
    let layout_json = rin_bundle::json::canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MT_OCI_INDEX,
        "manifests": manifests,
    }));

    let manifests_dir = stack.resolve(&spec.manifests);
    if manifests_dir.is_dir() {
        let mut all = Vec::new();
        files::tree(&manifests_dir, "manifests", &mut all)?;
        files.extend(all.into_iter().filter(|f| {
            let rel = f
                .entry
                .path
                .strip_prefix("manifests/")
                .unwrap_or(&f.entry.path);
            !selection.leaves_out_manifest(rel)
        }));
    }
    for f in &spec.files {
        let p = stack.resolve(f);
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_dir() {
            files::tree(&p, &format!("files/{name}"), &mut files)?;
        } else {
            files.push(FileEntry::regular(format!("files/{name}"), p)?);
        }
    }
    if let Some(k) = &spec.k3s {
        match (&k.files, &fetched.k3s) {
            (Some(dir), _) => {
                files.extend(files::k3s_files(&stack.resolve(dir), &k.version, &arches)?)
            }
            (None, Some(fetched)) => files.extend(fetched.iter().cloned()),
            (None, None) => {
                return Err(BuildError::K3s {
                    version: k.version.clone(),
                    reason: "the release files were not fetched".into(),
                });
            }
        }
    }
    let (host_files, host_lists) = host::entries(stack, &selection, &arches, fetched)?;
    files.extend(host_files);
    if let Some(dir) = &opts.installers {
        for arch in &arches {
            files.push(files::installer(dir, arch)?);
        }
    }
    let uses = image_uses(
        &files,
        &chart_archives,
        stack,
        &images,
        opts.allow_missing_image,
    )?;

    // Every entry with its source, by path.
    let mut planned: BTreeMap<String, (Entry, Source)> = BTreeMap::new();
    let mut add = |entry: Entry, source: Source| -> Result<()> {
        if let Err(problem) = index::check_entry_path(&entry.path) {
            return Err(BuildError::Spec {
                path: stack.dir.clone(),
                reason: format!("cannot carry {:?}: {problem}", entry.path),
            });
        }
        let path = entry.path.clone();
        if planned.insert(path.clone(), (entry, source)).is_some() {
            return Err(BuildError::PathClash { path });
        }
        Ok(())
    };
    let small = |path: &str, bytes: Vec<u8>| {
        let e = Entry {
            path: path.into(),
            size: bytes.len() as u64,
            sha256: rin_bundle::digest::sha256_hex(&bytes),
            mode: index::MODE_FILE,
        };
        (e, Source::Bytes(bytes))
    };
    let (e, s) = small("oci/oci-layout", oci::LAYOUT_FILE.as_bytes().to_vec());
    add(e, s)?;
    let (e, s) = small("oci/index.json", layout_json);
    add(e, s)?;
    for (path, bytes) in host_lists {
        let (e, s) = small(&path, bytes);
        add(e, s)?;
    }
    for (digest, blob) in blobs.blobs {
        let path =
            oci::bundle_blob_path(&digest).expect("blob digests were checked when collected");
        let hex = digest.trim_start_matches("sha256:").to_string();
        let source = match (&fetched.arrivals, blob.source) {
            (Some(a), Source::File(p)) if a.expects(&digest) => Source::Awaited(p, a.gate(&digest)),
            (_, s) => s,
        };
        add(
            Entry {
                path,
                size: blob.size,
                sha256: hex,
                mode: index::MODE_FILE,
            },
            source,
        )?;
    }
    for f in files {
        add(f.entry, Source::File(f.source))?;
    }

    // Archive order: the manifests and indexes the index names first, so a site has its whole
    // seeding plan before the first layer streams by (it uploads while it verifies); then every
    // other entry. Each group by path.
    let documents: std::collections::BTreeSet<String> = images
        .iter()
        .flat_map(|i| std::iter::once(&i.digest).chain(i.platforms.iter().map(|p| &p.digest)))
        .chain(charts.iter().map(|c| &c.digest))
        .filter_map(|d| oci::bundle_blob_path(d))
        .collect();
    let (mut ordered, rest): (Vec<_>, Vec<_>) = planned
        .into_values()
        .partition(|(e, _)| documents.contains(&e.path));
    ordered.extend(rest);
    let (entries, mut sources): (Vec<Entry>, Vec<Source>) = ordered.into_iter().unzip();
    let mut index = Index {
        format: index::FORMAT.into(),
        stack: index::Stack {
            name: spec.name.clone(),
            version: spec.version.clone(),
        },
        created: index::format_created(opts.created),
        platforms: arches.iter().map(Arch::linux).collect(),
        k3s: spec.k3s.as_ref().map(|k| K3s {
            version: k.version.clone(),
            disable: selection.k3s_disable.iter().cloned().collect(),
        }),
        images,
        charts,
        components: selection.selected,
        base: None,
        entries,
    };
    if let Some(holds) = &opts.base {
        delta::leave_out(&mut index, &mut sources, holds);
    }
    Ok(Plan {
        index,
        sources,
        uses,
    })
}

/// Every image the manifests and charts use, and whether the bundle carries it; an error for
/// the ones it lacks unless `allow_missing`.
fn image_uses(
    files: &[FileEntry],
    charts: &[(ChartSpec, PathBuf)],
    stack: &Stack,
    images: &[rin_bundle::index::Image],
    allow_missing: bool,
) -> Result<Vec<(Use, bool)>> {
    let mut found = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.entry.path.starts_with("manifests/"))
    {
        let p = &f.entry.path;
        if p.ends_with(".yaml") || p.ends_with(".yml") || p.ends_with(".json") {
            let text = std::fs::read_to_string(&f.source).map_err(|source| BuildError::Read {
                path: f.source.clone(),
                source,
            })?;
            scan::yaml_images(&text, p, &mut found);
        }
    }
    for (c, archive) in charts {
        let values = match &c.values {
            Some(v) => Some(std::fs::read_to_string(stack.resolve(v)).map_err(|source| {
                BuildError::Read {
                    path: stack.resolve(v),
                    source,
                }
            })?),
            None => None,
        };
        let file = std::fs::File::open(archive).map_err(|source| BuildError::Read {
            path: archive.clone(),
            source,
        })?;
        found.extend(scan::chart_images(
            file,
            values.as_deref(),
            &format!("chart {} {}", c.name, c.version),
        ));
    }
    found.sort_by(|a, b| (&a.reference, &a.place).cmp(&(&b.reference, &b.place)));
    found.dedup();
    let uses: Vec<(Use, bool)> = found
        .into_iter()
        .map(|u| {
            let ok = scan::carried(&u.reference, images);
            (u, ok)
        })
        .collect();
    let missing: Vec<String> = uses
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(u, _)| format!("{} (in {})", u.reference, u.place))
        .collect();
    if !missing.is_empty() && !allow_missing {
        return Err(BuildError::MissingImages { images: missing });
    }
    Ok(uses)
}
