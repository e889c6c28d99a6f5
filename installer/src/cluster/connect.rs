//! Reaching the cluster: K3s's kubeconfig, and a bounded wait until the API answers.

use crate::cluster::deploy::{Cluster, DeployOptions};
use crate::error::Result;
use rin_bundle::Progress;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The kubeconfig K3s writes under `root`.
pub fn k3s_kubeconfig(root: &Path) -> PathBuf {
    root.join(crate::node::host::KUBECONFIG)
}

/// [`connect`] for a look at a cluster that should be running (status, doctor, rollback,
/// support bundles): a kubeconfig that does not exist is said at once instead of waited for.
pub fn look(
    kubeconfig: &Path,
    timeout: Duration,
    rt: &tokio::runtime::Handle,
    report: &dyn Progress,
) -> Result<(Cluster, String)> {
    if !kubeconfig.exists() {
        return Err(crate::error::InstallError::Cluster {
            what: format!("kubeconfig {}", kubeconfig.display()),
            reason: "it does not exist: K3s writes it once it runs on this node (not yet, or not here with --no-start); give --kubeconfig or KUBECONFIG for a running cluster".into(),
        });
    }
    connect(kubeconfig, timeout, rt, report)
}

/// Connect to the cluster of `kubeconfig` and wait until its API answers: the cluster and its
/// Kubernetes version.
pub fn connect(
    kubeconfig: &Path,
    timeout: Duration,
    rt: &tokio::runtime::Handle,
    report: &dyn Progress,
) -> Result<(Cluster, String)> {
    report.say(&format!(
        "waiting for the Kubernetes API ({}, up to {}s)",
        kubeconfig.display(),
        timeout.as_secs()
    ));
    let opts = DeployOptions {
        timeout,
        poll: Duration::from_secs(2),
        ..Default::default()
    };
    rt.block_on(async {
        // K3s writes its kubeconfig once it has started: wait for the file too.
        let started = Instant::now();
        while !kubeconfig.exists() && started.elapsed() < timeout {
            tokio::time::sleep(opts.poll).await;
        }
        let cluster = Cluster::connect(kubeconfig).await?;
        let opts = DeployOptions {
            timeout: timeout.saturating_sub(started.elapsed()),
            ..opts
        };
        let version = cluster.wait_for_api(&opts).await?;
        report.say(&format!("the Kubernetes API answers ({version})"));
        Ok((cluster, version))
    })
}
