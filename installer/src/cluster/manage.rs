//! The commands that look after an installed stack: `status` (what is installed, by the node's
//! record and the cluster's, and how healthy it is) and `rollback` (re-apply a kept release from
//! the objects the state directory kept and the images the site registry still holds, with the
//! same waits, pruning and record as an apply).

use crate::cluster::connect::look;
use crate::cluster::deploy::DeployOptions;
use crate::cluster::health::Health;
use crate::cluster::rollout::{self, Desired, RolledOut, RolloutOptions};
use crate::error::{InstallError, Result};
use crate::node::state::{self, State};
use crate::release::Release;
use rin_bundle::Progress;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::runtime::Handle;

/// Where the installation is and how to reach its cluster.
#[derive(Debug, Clone)]
pub struct Target {
    pub state_dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// Bound of the wait for the API (and, for a rollback, of each health wait).
    pub timeout: Duration,
}

/// What `status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    /// This node's record (`STATE/release.json`).
    pub node: Option<Release>,
    /// The cluster's view, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// Why the cluster could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    /// The API server's version (K3s's).
    pub kubernetes: String,
    /// Recorded releases of the stack, newest first.
    pub releases: Vec<ReleaseLine>,
    /// The installed release's objects.
    pub objects: usize,
    /// Each workload, Job, claim and chart of the installed release.
    pub health: Vec<ObjectHealth>,
    pub healthy: bool,
}

#[derive(Debug, Serialize)]
pub struct ReleaseLine {
    pub revision: u64,
    pub version: String,
    pub bundle: String,
    pub installed: String,
}

#[derive(Debug, Serialize)]
pub struct ObjectHealth {
    pub object: String,
    /// `ready`, `waiting` or `failed`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The installed release and its health. A cluster that does not answer is reported, not an
/// error: the node's record is still shown.
pub fn status(t: &Target, rt: &Handle, report: &dyn Progress) -> Result<Status> {
    let node = state::read_release(&t.state_dir)?;
    let mut out = Status {
        node,
        cluster: None,
        cluster_error: None,
    };
    let Some(stack) = out.node.as_ref().map(|n| n.stack.clone()) else {
        out.cluster_error = Some(format!(
            "no release is recorded in {}: nothing was installed from this node",
            t.state_dir.display()
        ));
        return Ok(out);
    };
    let (cluster, kubernetes) = match look(&t.kubeconfig, t.timeout, rt, report) {
        Ok(c) => c,
        Err(e) => {
            out.cluster_error = Some(e.to_string());
            return Ok(out);
        }
    };
    let looked = rt.block_on(async {
        let mut records = rollout::releases(&cluster, &stack).await?;
        records.sort_by_key(|r| std::cmp::Reverse(r.revision()));
        let health = match records.first() {
            Some(r) => crate::cluster::wait::health_of(&cluster, &r.inventory).await?,
            None => Vec::new(),
        };
        Ok::<_, InstallError>((records, health))
    });
    match looked {
        Ok((records, health)) => {
            let health: Vec<ObjectHealth> = health.into_iter().map(object_health).collect();
            out.cluster = Some(ClusterStatus {
                kubernetes,
                objects: records.first().map_or(0, |r| r.inventory.len()),
                releases: records
                    .iter()
                    .map(|r| ReleaseLine {
                        revision: r.revision(),
                        version: r.version.clone(),
                        bundle: r.index_sha256.clone(),
                        installed: r.installed.clone(),
                    })
                    .collect(),
                healthy: health.iter().all(|h| h.state == "ready"),
                health,
            });
        }
        Err(e) => out.cluster_error = Some(e.to_string()),
    }
    Ok(out)
}

fn object_health((object, h): (String, Health)) -> ObjectHealth {
    let (state, ready, desired, reason) = match h {
        Health::Ready | Health::NotTracked => ("ready", None, None, None),
        Health::Waiting { ready, desired } => ("waiting", Some(ready), Some(desired), None),
        Health::Failed(why) => ("failed", None, None, Some(why)),
    };
    ObjectHealth {
        object,
        state,
        ready,
        desired,
        reason,
    }
}

/// How to roll back.
#[derive(Debug, Clone)]
pub struct RollbackOptions {
    pub target: Target,
    /// The version to return to [default: the release before the installed one].
    pub to: Option<String>,
    pub force_conflicts: bool,
    pub prune_volumes: bool,
    pub keep: usize,
}

/// Re-apply a kept release: its objects as the state directory kept them; its images are those
/// the site registry was seeded with for it (the registry keeps every image it was given).
pub fn rollback(
    opts: &RollbackOptions,
    rt: &Handle,
    report: &dyn Progress,
) -> Result<(Release, RolledOut)> {
    let state = State::open(&opts.target.state_dir)?;
    let Some(installed) = state.release()? else {
        return Err(InstallError::Step {
            what: "rollback".into(),
            reason: format!(
                "no release is recorded in {}: run rollback on the first server, where apply ran",
                opts.target.state_dir.display()
            ),
        });
    };
    let (cluster, _) = look(&opts.target.kubeconfig, opts.target.timeout, rt, report)?;
    let records = rt.block_on(rollout::releases(&cluster, &installed.stack))?;
    let target = crate::release::rollback_target(&records, opts.to.as_deref())?.clone();
    let kept = state.kept_objects(target.revision())?;
    report.say(&format!(
        "rolling back {} to {} (revision {}, installed {})",
        installed.stack,
        target.version,
        target.revision(),
        target.installed
    ));
    let desired = Desired {
        release: Release {
            stack: target.stack.clone(),
            version: target.version.clone(),
            // K3s itself is not rolled back.
            k3s: installed.k3s.clone(),
            index_sha256: target.index_sha256.clone(),
            images: target.images.clone(),
            installed: rin_bundle::index::format_created(rin_bundle::index::now_epoch()),
            ..Default::default()
        },
        objects: kept.objects,
    };
    let ro = RolloutOptions {
        deploy: DeployOptions {
            force_conflicts: opts.force_conflicts,
            timeout: opts.target.timeout,
            poll: Duration::from_secs(2),
        },
        prune_volumes: opts.prune_volumes,
        keep: opts.keep,
    };
    let out = rt.block_on(rollout::roll_out(&cluster, desired, &ro, report))?;
    state.keep_objects(&out.record, &out.objects)?;
    state.forget_objects_except(&out.kept_revisions)?;
    state.record(&Release {
        stack: target.stack.clone(),
        version: target.version.clone(),
        k3s: installed.k3s,
        index_sha256: target.index_sha256.clone(),
        installed: out.record.installed.clone(),
        revision: out.record.revision,
        ..Default::default()
    })?;
    Ok((target, out))
}
