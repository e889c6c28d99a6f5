//! A release rolled out on the cluster: apply the objects in order, wait until they are healthy
//! (bounded, with progress), prune what the previous release had and this one does not, and
//! record the release as a ConfigMap, keeping the newest N.
//!
//! Nothing is pruned or recorded unless everything became healthy: a failed rollout leaves the
//! objects applied (so their state can be looked at) and the previous release as the recorded
//! one, and running again converges.

use crate::cluster::deploy::{Cluster, DeployOptions};
use crate::cluster::objects::{self, Object, ObjectRef, Phase};
use crate::cluster::wait::{stale_chart_jobs, wait_healthy};
use crate::error::{InstallError, Result};
use crate::release::{self, Release};
use rin_bundle::Progress;
use serde_json::json;
use std::collections::{BTreeSet, HashSet};

/// How to roll out.
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    pub deploy: DeployOptions,
    /// Delete claims (and namespaces holding them) the new release no longer has.
    pub prune_volumes: bool,
    /// Releases kept (for rollback).
    pub keep: usize,
}

/// What a rollout did.
#[derive(Debug, Clone)]
pub struct RolledOut {
    pub record: Release,
    /// Deleted: in the previous release, not in this one.
    pub pruned: Vec<ObjectRef>,
    /// Gone from the stack but kept because they hold data.
    pub kept: Vec<ObjectRef>,
    /// Records deleted beyond `keep`.
    pub forgotten: Vec<u64>,
    /// The revisions still recorded, newest first.
    pub kept_revisions: Vec<u64>,
    /// The objects, in the order they were applied (what a rollback re-applies).
    pub objects: Vec<Object>,
    /// False when the installed release was the same bundle with the same objects: it stays
    /// the recorded revision (a re-run records nothing new).
    pub recorded: bool,
}

/// Every release recorded for `stack`, in no particular order.
pub async fn releases(cluster: &Cluster, stack: &str) -> Result<Vec<Release>> {
    let cms = cluster
        .list(
            &objects::obj_ref("v1", "ConfigMap", release::NAMESPACE, ""),
            Some(&format!("{}={stack}", release::LABEL)),
            None,
        )
        .await?;
    cms.iter().map(Release::from_config_map).collect()
}

/// `objects` as a release applies them: each defined once, in apply order.
pub fn plan(mut objects: Vec<Object>) -> Result<Vec<Object>> {
    if let Some(dup) = objects::duplicates(&objects) {
        return Err(InstallError::Bundle { reason: dup });
    }
    objects::order(&mut objects);
    Ok(objects)
}

/// What is rolled out: the release (its identity and images; the rollout fills in its revision
/// and inventory) and its objects, in any order (they are put in apply order here).
#[derive(Debug, Clone)]
pub struct Desired {
    pub release: Release,
    pub objects: Vec<Object>,
}

/// Apply, wait, prune, record.
pub async fn roll_out(
    cluster: &Cluster,
    desired: Desired,
    opts: &RolloutOptions,
    report: &dyn Progress,
) -> Result<RolledOut> {
    let Desired { release, objects } = desired;
    let objects = plan(objects)?;
    let records = releases(cluster, &release.stack).await?;
    let stale = stale_chart_jobs(cluster, &objects).await?;
    report.say(&format!("applying {} objects", objects.len()));
    // Operators (charts among them) install the CRDs that later objects may be of: they are
    // waited for before the rest is applied.
    let split = objects
        .iter()
        .position(|o| o.phase() == Phase::Workloads)
        .unwrap_or(objects.len());
    let (first, rest) = objects.split_at(split);
    let mut inventory = cluster.apply(first, &opts.deploy, report).await?;
    let operators: Vec<ObjectRef> = first
        .iter()
        .zip(&inventory)
        .filter(|(o, _)| o.phase() == Phase::Operators)
        .map(|(_, r)| r.clone())
        .collect();
    if !rest.is_empty() && !operators.is_empty() {
        report.say(&format!(
            "waiting for {} operator object(s) before the rest",
            operators.len()
        ));
        wait_healthy(cluster, &operators, &stale, &opts.deploy, report).await?;
    }
    inventory.extend(cluster.apply(rest, &opts.deploy, report).await?);
    // A generated Secret belongs to the site once made: not in the inventory, never pruned.
    let inventory: Vec<ObjectRef> = objects
        .iter()
        .zip(inventory)
        .filter(|(o, _)| o.generated().is_none())
        .map(|(_, r)| r)
        .collect();
    wait_healthy(cluster, &inventory, &stale, &opts.deploy, report).await?;

    let previous = records.iter().max_by_key(|r| r.revision());
    let (pruned, kept) = match previous {
        Some(p) => prune(cluster, &p.inventory, &inventory, opts, report).await?,
        None => Default::default(),
    };
    if let Some(p) = previous
        && p.index_sha256 == release.index_sha256
        && p.version == release.version
        && p.inventory == inventory
    {
        let mut kept_revisions: Vec<u64> = records.iter().map(|r| r.revision()).collect();
        kept_revisions.sort_unstable_by(|a, b| b.cmp(a));
        return Ok(RolledOut {
            record: p.clone(),
            pruned,
            kept,
            forgotten: Vec::new(),
            kept_revisions,
            recorded: false,
            objects,
        });
    }
    let record = Release {
        revision: Some(release::next_revision(&records)),
        inventory,
        ..release
    };
    // The records' namespace, created only when missing: applied bare by the same field manager
    // it would strip the labels the stack (or the site registry) gave it.
    let ns = objects::obj_ref("v1", "Namespace", "", release::NAMESPACE);
    if cluster.get(&ns).await?.is_none() {
        cluster
            .apply_one(
                &json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": release::NAMESPACE}}),
                &opts.deploy,
            )
            .await?;
    }
    cluster
        .apply_one(&record.to_config_map(), &opts.deploy)
        .await?;
    let mut all = records;
    all.push(record.clone());
    let beyond = release::beyond_keep(&all, opts.keep);
    let old: Vec<ObjectRef> = beyond
        .iter()
        .map(|r| objects::obj_ref("v1", "ConfigMap", release::NAMESPACE, &r.name()))
        .collect();
    cluster.delete(&old).await?;
    let mut forgotten: Vec<u64> = beyond.iter().map(|r| r.revision()).collect();
    forgotten.sort_unstable();
    let mut kept_revisions: Vec<u64> = all
        .iter()
        .map(|r| r.revision())
        .filter(|r| !forgotten.contains(r))
        .collect();
    kept_revisions.sort_unstable_by(|a, b| b.cmp(a));
    Ok(RolledOut {
        record,
        pruned,
        kept,
        forgotten,
        kept_revisions,
        recorded: true,
        objects,
    })
}

/// Delete what `old` has and `new` does not; claims and namespaces holding claims stay unless
/// `--prune-volumes`.
async fn prune(
    cluster: &Cluster,
    old: &[ObjectRef],
    new: &[ObjectRef],
    opts: &RolloutOptions,
    report: &dyn Progress,
) -> Result<(Vec<ObjectRef>, Vec<ObjectRef>)> {
    let keep: HashSet<_> = new.iter().map(ObjectRef::identity).collect();
    let mut with_claims = BTreeSet::new();
    for r in old {
        if r.kind == "Namespace" && r.group().is_empty() && !keep.contains(&r.identity()) {
            let claims = cluster
                .list(
                    &objects::obj_ref("v1", "PersistentVolumeClaim", &r.name, ""),
                    None,
                    None,
                )
                .await?;
            if !claims.is_empty() {
                with_claims.insert(r.name.clone());
            }
        }
    }
    let set = objects::prune_set(old, new, &|ns| with_claims.contains(ns), opts.prune_volumes);
    for r in &set.delete {
        report.say(&format!("pruning {r}: the new release no longer has it"));
    }
    for r in &set.kept {
        report.say(&format!(
            "keeping {r}: the new release no longer has it, but it holds data (--prune-volumes deletes it)"
        ));
    }
    cluster.delete(&set.delete).await?;
    Ok((set.delete, set.kept))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
