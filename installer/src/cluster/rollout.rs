//! A release rolled out on the cluster: apply the objects in order, wait until they are healthy
//! (bounded, with progress), prune what the previous release had and this one does not, and
//! record the release as a ConfigMap, keeping the newest N.
//!
//! Nothing is pruned or recorded unless everything became healthy: a failed rollout leaves the
//! objects applied (so their state can be looked at) and the previous release as the recorded
//! one, and running again converges.

use crate::cluster::deploy::{Cluster, DeployOptions};
use crate::cluster::health::{self, Health};
use crate::cluster::objects::{self, Object, ObjectRef, Phase};
use crate::cluster::release::{self, ReleaseRecord};
use crate::error::{InstallError, Result};
use rin_bundle::Progress;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

/// How to roll out.
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    pub deploy: DeployOptions,
    /// Delete claims (and namespaces holding them) the new release no longer has.
    pub prune_volumes: bool,
    /// Releases kept (for rollback).
    pub keep: usize,
}

/// What is rolled out: the release's identity and its objects.
#[derive(Debug, Clone)]
pub struct Desired {
    pub stack: String,
    pub version: String,
    pub k3s: Option<String>,
    /// sha256 of the bundle's signed index.
    pub bundle: String,
    pub images: BTreeMap<String, String>,
    /// In any order; they are put in apply order here.
    pub objects: Vec<Object>,
    /// When it was installed (RFC 3339 UTC).
    pub installed: String,
}

/// What a rollout did.
#[derive(Debug, Clone)]
pub struct RolledOut {
    pub record: ReleaseRecord,
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

fn obj_ref(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// Every release recorded for `stack`, in no particular order.
pub async fn releases(cluster: &Cluster, stack: &str) -> Result<Vec<ReleaseRecord>> {
    let cms = cluster
        .list(
            &obj_ref("v1", "ConfigMap", release::NAMESPACE, ""),
            Some(&format!("{}={stack}", release::LABEL)),
            None,
        )
        .await?;
    cms.iter().map(ReleaseRecord::from_config_map).collect()
}

/// `objects` as a release applies them: each defined once, in apply order.
pub fn plan(mut objects: Vec<Object>) -> Result<Vec<Object>> {
    if let Some(dup) = objects::duplicates(&objects) {
        return Err(InstallError::Bundle { reason: dup });
    }
    objects::order(&mut objects);
    Ok(objects)
}

/// Apply, wait, prune, record.
pub async fn roll_out(
    cluster: &Cluster,
    desired: Desired,
    opts: &RolloutOptions,
    report: &dyn Progress,
) -> Result<RolledOut> {
    let objects = plan(desired.objects)?;
    let records = releases(cluster, &desired.stack).await?;
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

    let previous = records.iter().max_by_key(|r| r.revision);
    let (pruned, kept) = match previous {
        Some(p) => prune(cluster, &p.inventory, &inventory, opts, report).await?,
        None => Default::default(),
    };
    if let Some(p) = previous
        && p.bundle == desired.bundle
        && p.version == desired.version
        && p.inventory == inventory
    {
        let mut kept_revisions: Vec<u64> = records.iter().map(|r| r.revision).collect();
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
    let record = ReleaseRecord {
        revision: release::next_revision(&records),
        stack: desired.stack,
        version: desired.version,
        k3s: desired.k3s,
        bundle: desired.bundle,
        images: desired.images,
        inventory,
        installed: desired.installed,
    };
    // The records' namespace, created only when missing: applied bare by the same field manager
    // it would strip the labels the stack (or the site registry) gave it.
    let ns = obj_ref("v1", "Namespace", "", release::NAMESPACE);
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
        .map(|r| obj_ref("v1", "ConfigMap", release::NAMESPACE, &r.name()))
        .collect();
    cluster.delete(&old).await?;
    let mut forgotten: Vec<u64> = beyond.iter().map(|r| r.revision).collect();
    forgotten.sort_unstable();
    let mut kept_revisions: Vec<u64> = all
        .iter()
        .map(|r| r.revision)
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
                    &obj_ref("v1", "PersistentVolumeClaim", &r.name, ""),
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

/// The uids of install Jobs that belong to a HelmChart's previous spec: a HelmChart about to
/// change gets a new Job, and the old one (still Complete) must not count as its success.
async fn stale_chart_jobs(cluster: &Cluster, objects: &[Object]) -> Result<HashSet<String>> {
    let mut stale = HashSet::new();
    for o in objects.iter().filter(|o| is_helm_chart(&o.reference)) {
        let Some(current) = cluster.get(&o.reference).await? else {
            continue;
        };
        if current.get("spec") == o.value.get("spec") {
            continue;
        }
        let job = chart_job_ref(&current);
        if let Some(j) = cluster.get(&job).await?
            && let Some(uid) = j.pointer("/metadata/uid").and_then(Value::as_str)
        {
            stale.insert(uid.to_string());
        }
    }
    Ok(stale)
}

fn is_helm_chart(r: &ObjectRef) -> bool {
    r.kind == "HelmChart" && r.group() == "helm.cattle.io"
}

/// The install Job of a HelmChart (as the helm-controller names it).
fn chart_job_ref(chart: &Value) -> ObjectRef {
    let name = text(chart, "/metadata/name");
    let job = chart
        .pointer("/status/jobName")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("helm-install-{name}"));
    obj_ref("batch/v1", "Job", text(chart, "/metadata/namespace"), &job)
}

fn text<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// An object being waited for.
#[derive(Debug, Clone)]
struct Waited {
    r: ObjectRef,
    /// The chart whose release made it.
    chart: Option<String>,
    health: Health,
    /// What the last look saw, for the timeout message.
    seen: Option<Value>,
}

impl Waited {
    fn new(r: ObjectRef, chart: Option<String>) -> Self {
        Waited {
            r,
            chart,
            health: Health::Waiting {
                ready: 0,
                desired: 1,
            },
            seen: None,
        }
    }

    /// The object, and the chart whose release made it; with `count`, its ready/desired.
    fn describe(&self, count: bool) -> String {
        let count = match &self.health {
            Health::Waiting { ready, desired } if count => format!(" {ready}/{desired}"),
            _ => String::new(),
        };
        match &self.chart {
            Some(c) => format!("{}{count} (chart {c})", self.r),
            None => format!("{}{count}", self.r),
        }
    }

    fn label(&self) -> String {
        self.describe(true)
    }
}

/// Kinds whose health is waited for.
fn tracked(r: &ObjectRef) -> bool {
    matches!(
        (r.group(), r.kind.as_str()),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet")
            | ("batch", "Job")
            | ("", "PersistentVolumeClaim")
            | ("helm.cattle.io", "HelmChart")
    )
}

/// Wait until every workload, Job, claim and chart of `inventory` is healthy, at most
/// `opts.timeout`; a chart counts once its install Job succeeded and then the workloads of its
/// release are waited for too. Progress goes to `report` whenever it changes.
pub async fn wait_healthy(
    cluster: &Cluster,
    inventory: &[ObjectRef],
    stale_jobs: &HashSet<String>,
    opts: &DeployOptions,
    report: &dyn Progress,
) -> Result<()> {
    let started = Instant::now();
    let mut waiting: Vec<Waited> = inventory
        .iter()
        .filter(|r| tracked(r))
        .map(|r| Waited::new(r.clone(), None))
        .collect();
    let mut last_line = String::new();
    loop {
        let mut still = Vec::new();
        let mut found = Vec::new();
        for mut w in waiting {
            let (health, seen) = look(cluster, &w, stale_jobs, &mut found).await?;
            w.seen = seen;
            match health {
                Health::Ready | Health::NotTracked => {}
                Health::Failed(why) => {
                    return Err(InstallError::Unhealthy {
                        after: span(started.elapsed()),
                        stuck: vec![format!("{}: {why}", w.r)],
                    });
                }
                h @ Health::Waiting { .. } => {
                    w.health = h;
                    still.push(w);
                }
            }
        }
        still.extend(found);
        if still.is_empty() {
            report.say("every object is healthy");
            return Ok(());
        }
        let line = format!(
            "waiting for {}: {}",
            if still.len() == 1 {
                "1 object".to_string()
            } else {
                format!("{} objects", still.len())
            },
            still
                .iter()
                .map(Waited::label)
                .collect::<Vec<_>>()
                .join(", ")
        );
        if line != last_line {
            report.say(&line);
            last_line = line;
        }
        if started.elapsed() >= opts.timeout {
            let mut stuck = Vec::new();
            for w in &still {
                let cause = cause(cluster, w, stale_jobs)
                    .await
                    .unwrap_or_else(|e| Some(format!("its pods could not be looked at: {e}")));
                stuck.push(match cause {
                    Some(c) => format!("{}: {c}", w.label()),
                    None => format!("{}: not ready yet", w.label()),
                });
            }
            return Err(InstallError::Unhealthy {
                after: format!("{} (--timeout)", span(opts.timeout)),
                stuck,
            });
        }
        waiting = still;
        tokio::time::sleep(opts.poll).await;
    }
}

/// One look at the health of every workload, Job, claim and chart of `inventory` (and of the
/// charts' release workloads): (object, health), in inventory order.
pub async fn health_of(
    cluster: &Cluster,
    inventory: &[ObjectRef],
) -> Result<Vec<(String, Health)>> {
    let mut queue: Vec<Waited> = inventory
        .iter()
        .filter(|r| tracked(r))
        .map(|r| Waited::new(r.clone(), None))
        .rev()
        .collect();
    let mut out = Vec::new();
    let none = HashSet::new();
    while let Some(w) = queue.pop() {
        let mut found = Vec::new();
        let (h, _) = look(cluster, &w, &none, &mut found).await?;
        out.push((w.describe(false), h));
        queue.extend(found.into_iter().rev());
    }
    Ok(out)
}

/// A wait's length as an operator reads it.
fn span(d: std::time::Duration) -> String {
    if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// One look at `w`: its health and the object seen. A chart whose Job succeeded adds its
/// release's workloads to `found`.
async fn look(
    cluster: &Cluster,
    w: &Waited,
    stale_jobs: &HashSet<String>,
    found: &mut Vec<Waited>,
) -> Result<(Health, Option<Value>)> {
    let Some(obj) = cluster.get(&w.r).await? else {
        return Ok((
            Health::Failed("it was deleted after it was applied".into()),
            None,
        ));
    };
    if is_helm_chart(&w.r) {
        let job_ref = chart_job_ref(&obj);
        let job = cluster.get(&job_ref).await?;
        let job = job.filter(|j| !stale_jobs.contains(text(j, "/metadata/uid")));
        let Some(job) = job else {
            // The helm-controller has not started this spec's install yet.
            return Ok((
                Health::Waiting {
                    ready: 0,
                    desired: 1,
                },
                Some(obj),
            ));
        };
        let h = health::assess(&job);
        if h == Health::Ready {
            found.extend(chart_workloads(cluster, &obj).await?);
        }
        let h = match h {
            Health::Failed(why) => Health::Failed(format!("its install Job {job_ref}: {why}")),
            h => h,
        };
        return Ok((h, Some(obj)));
    }
    let h = match health::assess(&obj) {
        Health::Waiting { .. }
            if w.r.kind == "PersistentVolumeClaim" && waits_for_consumer(cluster, &w.r).await? =>
        {
            // Bound when the first pod using it is scheduled: that pod's workload is waited for.
            Health::Ready
        }
        h => h,
    };
    Ok((h, Some(obj)))
}

/// The Deployments, StatefulSets and DaemonSets of the chart's Helm release.
async fn chart_workloads(cluster: &Cluster, chart: &Value) -> Result<Vec<Waited>> {
    let name = text(chart, "/metadata/name");
    let ns = match text(chart, "/spec/targetNamespace") {
        "" => text(chart, "/metadata/namespace"),
        ns => ns,
    };
    let mut out = Vec::new();
    for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
        for o in cluster
            .list(&obj_ref("apps/v1", kind, ns, ""), None, None)
            .await?
        {
            let release = o
                .pointer("/metadata/annotations/meta.helm.sh~1release-name")
                .and_then(Value::as_str);
            if release == Some(name) {
                out.push(Waited::new(
                    obj_ref("apps/v1", kind, ns, text(&o, "/metadata/name")),
                    Some(name.to_string()),
                ));
            }
        }
    }
    Ok(out)
}

/// The claim waits for its first consumer (K3s's local-path class binds only then).
async fn waits_for_consumer(cluster: &Cluster, r: &ObjectRef) -> Result<bool> {
    Ok(events(cluster, r)
        .await?
        .iter()
        .any(|e| text(e, "/reason") == "WaitForFirstConsumer"))
}

async fn events(cluster: &Cluster, r: &ObjectRef) -> Result<Vec<Value>> {
    cluster
        .list(
            &obj_ref("v1", "Event", &r.namespace, ""),
            None,
            Some(&format!(
                "involvedObject.name={},involvedObject.kind={}",
                r.name, r.kind
            )),
        )
        .await
}

/// The likely reason `w` is not ready: from its pods (a workload's, or its install Job's), or
/// from its events (a claim).
async fn cause(
    cluster: &Cluster,
    w: &Waited,
    stale_jobs: &HashSet<String>,
) -> Result<Option<String>> {
    let Some(seen) = &w.seen else {
        return Ok(None);
    };
    let owner = if is_helm_chart(&w.r) {
        let job_ref = chart_job_ref(seen);
        let job = cluster.get(&job_ref).await?;
        match job.filter(|j| !stale_jobs.contains(text(j, "/metadata/uid"))) {
            Some(job) => job,
            None => {
                return Ok(Some(format!(
                    "the helm-controller has not started the install Job {job_ref} for this version of the chart: check that K3s's helm-controller runs (`k3s kubectl -n kube-system get pods`)"
                )));
            }
        }
    } else {
        seen.clone()
    };
    if w.r.kind == "PersistentVolumeClaim" {
        let evs = events(cluster, &w.r).await?;
        return Ok(evs
            .iter()
            .rev()
            .find(|e| text(e, "/type") == "Warning")
            .map(|e| {
                format!(
                    "the claim is not bound ({}: {}); check its storage class and that class's provisioner",
                    text(e, "/reason"),
                    text(e, "/message")
                )
            }));
    }
    let Some(labels) = owner
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    else {
        return Ok(None);
    };
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",");
    let ns = text(&owner, "/metadata/namespace");
    let pods = cluster
        .list(&obj_ref("v1", "Pod", ns, ""), Some(&selector), None)
        .await?;
    if pods.is_empty() {
        let kind = text(&owner, "/kind");
        let name = text(&owner, "/metadata/name");
        return Ok(Some(match creation_failure(cluster, &owner).await? {
            Some(why) => format!("it has no pods: they cannot be created: {why}"),
            None => format!(
                "it has no pods yet; see `k3s kubectl -n {ns} describe {} {name}`",
                kind.to_lowercase(),
            ),
        }));
    }
    Ok(health::stall_cause(&pods))
}

/// Why a workload's controller cannot create its pods (the API server refused them: Pod
/// Security admission, a quota, a missing service account), as the controller reports it: a
/// Deployment's `ReplicaFailure` condition, or the newest `FailedCreate` event of the object.
async fn creation_failure(cluster: &Cluster, owner: &Value) -> Result<Option<String>> {
    if let Some(c) =
        health::condition(owner, "ReplicaFailure").filter(|c| text(c, "/status") == "True")
    {
        return Ok(Some(text(c, "/message").to_string()));
    }
    let r = obj_ref(
        text(owner, "/apiVersion"),
        text(owner, "/kind"),
        text(owner, "/metadata/namespace"),
        text(owner, "/metadata/name"),
    );
    Ok(events(cluster, &r)
        .await?
        .iter()
        .rev()
        .find(|e| text(e, "/reason") == "FailedCreate")
        .map(|e| text(e, "/message").to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
