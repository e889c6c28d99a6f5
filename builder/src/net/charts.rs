//! Helm charts from a chart repository (`https://…` with `index.yaml`) or an OCI registry
//! (`oci://host/path`, the chart at `host/path/<name>:<version>`), resolved to the archive's
//! sha256 for the lock and fetched into the cache against it.

use crate::cache::Cache;
use crate::error::{BuildError, Result};
use crate::lock::LockedChart;
use crate::net::download::Downloader;
use crate::net::http;
use crate::net::registry::{Registries, parse_reference};
use crate::net::session::Session;
use crate::spec::ChartSpec;
use rin_bundle::oci::{self, Descriptor, Document};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn oci_reference(repo: &str, name: &str, version: &str) -> Option<String> {
    let rest = repo.strip_prefix("oci://")?.trim_end_matches('/');
    // Helm writes `+` in versions as `_` in OCI tags.
    Some(format!("{rest}/{name}:{}", version.replace('+', "_")))
}

#[derive(Deserialize)]
struct RepoIndex {
    #[serde(default)]
    entries: BTreeMap<String, Vec<RepoEntry>>,
}

#[derive(Deserialize)]
struct RepoEntry {
    version: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

fn err(spec: &ChartSpec, reason: String) -> BuildError {
    BuildError::Chart {
        chart: format!("{} {}", spec.name, spec.version),
        reason,
    }
}

/// Resolve a chart to its archive URL and sha256.
pub async fn resolve(s: &Session, spec: &ChartSpec, repo: &str) -> Result<LockedChart> {
    let Session {
        net,
        http,
        regs,
        cache,
        opts,
    } = s;
    if let Some(reference) = oci_reference(repo, &spec.name, &spec.version) {
        let layer = oci_layer(net, regs, cache, spec, &reference).await?;
        let hex = layer.digest.trim_start_matches("sha256:").to_string();
        return Ok(LockedChart {
            name: spec.name.clone(),
            version: spec.version.clone(),
            repo: repo.into(),
            url: format!("oci://{reference}"),
            sha256: hex,
        });
    }
    let base = format!("{}/", repo.trim_end_matches('/'));
    let base_url = http::check_scheme(&base, opts)?;
    let index_url = base_url
        .join("index.yaml")
        .map_err(|e| err(spec, e.to_string()))?;
    let text = http::get_small(net, http, &index_url).await?;
    let index: RepoIndex = serde_yaml_ng::from_slice(&text).map_err(|e| {
        err(
            spec,
            format!("{index_url} is not a Helm repository index: {e}"),
        )
    })?;
    let versions = index.entries.get(&spec.name).ok_or_else(|| {
        err(
            spec,
            format!("the repository {repo} has no chart named {}", spec.name),
        )
    })?;
    let entry = versions
        .iter()
        .find(|e| e.version == spec.version)
        .ok_or_else(|| {
            let have: Vec<&str> = versions
                .iter()
                .map(|e| e.version.as_str())
                .take(10)
                .collect();
            err(
                spec,
                format!(
                    "the repository {repo} has no version {} (it has: {})",
                    spec.version,
                    have.join(", ")
                ),
            )
        })?;
    let first = entry
        .urls
        .first()
        .ok_or_else(|| err(spec, "the repository index lists no URL".into()))?;
    let url = base_url
        .join(first)
        .map_err(|e| err(spec, format!("bad URL {first:?}: {e}")))?;
    http::check_scheme(url.as_str(), opts)?;
    let sha256 = match &entry.digest {
        Some(d) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => d.to_lowercase(),
        _ => {
            // No digest in the index: fetch it once to learn it (it is cached by it).
            let bytes = http::get_small(net, http, &url).await?;
            cache.put(&bytes)?
        }
    };
    Ok(LockedChart {
        name: spec.name.clone(),
        version: spec.version.clone(),
        repo: repo.into(),
        url: url.to_string(),
        sha256,
    })
}

/// The chart layer of a Helm OCI artifact.
async fn oci_layer(
    net: &Downloader,
    regs: &Registries,
    cache: &Cache,
    spec: &ChartSpec,
    reference: &str,
) -> Result<Descriptor> {
    let r = parse_reference(reference)?;
    let bytes = regs.manifest_bytes(net, cache, &r).await?;
    let doc: Document = serde_json::from_slice(&bytes).map_err(|e| {
        err(
            spec,
            format!("{reference}: manifest is not valid JSON: {e}"),
        )
    })?;
    doc.layers
        .unwrap_or_default()
        .into_iter()
        .find(|l| l.media_type == oci::MT_HELM_CHART)
        .ok_or_else(|| {
            err(
                spec,
                format!(
                    "{reference} is not a Helm chart (no {} layer)",
                    oci::MT_HELM_CHART
                ),
            )
        })
}

/// Fetch the locked archive into the cache.
pub async fn fetch(s: &Session, spec: &ChartSpec, locked: &LockedChart) -> Result<PathBuf> {
    let Session {
        net,
        http,
        regs,
        cache,
        opts,
    } = s;
    if let Some(reference) = locked.url.strip_prefix("oci://") {
        if let Some(p) = cache.lookup(&locked.sha256, None) {
            return Ok(p);
        }
        let layer = oci_layer(net, regs, cache, spec, reference).await?;
        let served = layer.digest.trim_start_matches("sha256:");
        if served != locked.sha256 {
            return Err(BuildError::LockGone {
                image: format!("chart {reference}"),
                locked: format!("sha256:{}", locked.sha256),
                current: layer.digest.clone(),
            });
        }
        let r = parse_reference(reference)?;
        return Ok(regs.blob(net, cache, &r, &layer).await?.path);
    }
    let url = http::check_scheme(&locked.url, opts)?;
    let what = format!("chart {} {}", spec.name, spec.version);
    http::download(net, http, cache, &url, &locked.sha256, &what).await
}
