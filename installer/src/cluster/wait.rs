//! Waiting for a release to become healthy: every tracked object polled (bounded by the
//! timeout, progress when it changes), a HelmChart through its current install Job and then its
//! Helm release's workloads, and on timeout the cause of each stall read from pods and events.

use crate::cluster::deploy::{Cluster, DeployOptions};
use crate::cluster::health::{self, Health};
use crate::cluster::objects::{self, Object, ObjectRef};
use crate::error::{InstallError, Result};
use rin_bundle::Progress;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Instant;

/// The uids of install Jobs that belong to a HelmChart's previous spec: a HelmChart about to
/// change gets a new Job, and the old one (still Complete) must not count as its success.
pub(crate) async fn stale_chart_jobs(
    cluster: &Cluster,
    objects: &[Object],
) -> Result<HashSet<String>> {
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
    objects::obj_ref("batch/v1", "Job", text(chart, "/metadata/namespace"), &job)
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
            .list(&objects::obj_ref("apps/v1", kind, ns, ""), None, None)
            .await?
        {
            let release = o
                .pointer("/metadata/annotations/meta.helm.sh~1release-name")
                .and_then(Value::as_str);
            if release == Some(name) {
                out.push(Waited::new(
                    objects::obj_ref("apps/v1", kind, ns, text(&o, "/metadata/name")),
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
            &objects::obj_ref("v1", "Event", &r.namespace, ""),
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
        .list(
            &objects::obj_ref("v1", "Pod", ns, ""),
            Some(&selector),
            None,
        )
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
    let r = objects::obj_ref(
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
