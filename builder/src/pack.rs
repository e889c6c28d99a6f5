//! Packing a stack into a bundle: plan every entry, build the index, sign it, write it.

use crate::collect::{self, BlobSet, FileEntry};
use crate::error::{BuildError, Result};
use crate::spec::Stack;
use ed25519_dalek::SigningKey;
use rin_bundle::index::{self, Entry, Index, K3s};
use rin_bundle::oci::{self, Descriptor};
use rin_bundle::{Progress, Source};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct BuildOptions {
    /// Architectures to keep (Go names: `amd64`, `arm64`).
    pub arches: Vec<String>,
    /// Keys that sign the index; empty makes an unsigned bundle.
    pub keys: Vec<SigningKey>,
    pub output: PathBuf,
    /// Creation time (seconds since the epoch): the index's `created` and every header's mtime.
    pub created: u64,
    /// zstd worker threads; the output is the same for every value of 1 or more.
    pub threads: u32,
}

/// What was written.
#[derive(Debug)]
pub struct Built {
    pub index: Index,
    pub index_sha256: String,
    pub signers: Vec<String>,
    /// sha256 and size of the bundle file.
    pub sha256: String,
    pub size: u64,
}

/// Collect, index, sign and write.
pub fn build(stack: &Stack, opts: &BuildOptions, progress: &dyn Progress) -> Result<Built> {
    let (index, sources) = plan(stack, opts)?;
    let index_bytes = index.to_canonical_json();
    let signatures = rin_signing::sign(&index_bytes, &opts.keys);
    let (sha256, size) = rin_bundle::write_bundle_file(
        &opts.output,
        &index,
        &signatures,
        &sources,
        opts.threads,
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
    })
}

/// The index and one source per entry, in archive order.
pub fn plan(stack: &Stack, opts: &BuildOptions) -> Result<(Index, Vec<Source>)> {
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
    let mut blobs = BlobSet::default();
    let mut layout_index: Vec<(String, Descriptor)> = Vec::new();
    let mut images = Vec::new();
    for i in &spec.images {
        let image = collect::image(stack, i, &arches, &mut blobs)?;
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
    for c in &spec.charts {
        let (chart, desc) = collect::chart(stack, c, &mut blobs)?;
        layout_index.push((format!("charts/{}:{}", chart.name, chart.version), desc));
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
    let layout_json = index::canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MT_OCI_INDEX,
        "manifests": manifests,
    }));

    let mut files: Vec<FileEntry> = Vec::new();
    let manifests_dir = stack.resolve(&spec.manifests);
    if manifests_dir.is_dir() {
        collect::tree(&manifests_dir, "manifests", &mut files)?;
    }
    for f in &spec.files {
        let p = stack.resolve(f);
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_dir() {
            collect::tree(&p, &format!("files/{name}"), &mut files)?;
        } else {
            files.push(FileEntry::regular(format!("files/{name}"), p)?);
        }
    }
    if let Some(k) = &spec.k3s
        && let Some(dir) = &k.files
    {
        files.extend(collect::k3s_files(
            &stack.resolve(dir),
            &k.version,
            &arches,
        )?);
    }

    // Every entry with its source; then sorted by path, which is the archive order.
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
    for (digest, blob) in blobs.blobs {
        let path =
            oci::bundle_blob_path(&digest).expect("blob digests were checked when collected");
        let hex = digest.trim_start_matches("sha256:").to_string();
        add(
            Entry {
                path,
                size: blob.size,
                sha256: hex,
                mode: index::MODE_FILE,
            },
            blob.source,
        )?;
    }
    for f in files {
        add(f.entry, Source::File(f.source))?;
    }

    let (entries, sources): (Vec<Entry>, Vec<Source>) = planned.into_values().unzip();
    let index = Index {
        format: index::FORMAT.into(),
        stack: index::Stack {
            name: spec.name.clone(),
            version: spec.version.clone(),
        },
        created: index::format_created(opts.created),
        platforms: arches.iter().map(|a| format!("linux/{a}")).collect(),
        k3s: spec.k3s.as_ref().map(|k| K3s {
            version: k.version.clone(),
        }),
        images,
        charts,
        base: None,
        entries,
    };
    Ok((index, sources))
}
