//! Step 4 of apply: the in-cluster site registry: its image archive for K3s to import (written
//! in step 3), its objects, and, with K3s started here, those applied and waited for until the
//! registry answers.

use super::{RegistryMode, Run};
use crate::cluster::connect::connect;
use crate::cluster::deploy::Cluster;
use crate::cluster::objects::{self, Origin};
use crate::error::{InstallError, Result};
use crate::node::site_registry;
use crate::node::stage::{Stage, Staged};
use crate::node::state;
use rin_bundle::Progress;
use rin_bundle::digest::sha256_hex;
use rin_support::fs::AtomicFile;
use std::time::{Duration, Instant};

/// What step 4 leaves for the deploy step.
#[derive(Default)]
pub(super) struct Site {
    /// The cluster, when the step already connected to it.
    pub(super) cluster: Option<Cluster>,
    /// The site registry's objects, which the stack's deploy includes.
    pub(super) yaml: Option<String>,
}

impl Run<'_> {
    /// Step 4: the site registry's objects, kept in the state directory; with K3s started here
    /// (or `--kubeconfig`), applied and waited for until the registry answers.
    pub(super) fn site_registry(&mut self, staged: &Staged) -> Result<Site> {
        let opts = &self.opts;
        let RegistryMode::InCluster { node_port, .. } = opts.registry else {
            return Ok(Site::default());
        };
        let live = opts.deploys_here().is_none() && !opts.dry_run;
        let image = site_registry::pick_image(&self.index, self.registry_image())?;
        let yaml = site_registry::manifests_yaml(
            &image.reference,
            node_port,
            site_registry::storage_gib(staged.plan.blob_bytes()),
        );
        let path = opts.state_dir.join("registry/site-registry.yaml");
        if !opts.dry_run {
            state::write_atomic(&path, yaml.as_bytes(), 0o644)?;
        }
        let mut site = Site {
            cluster: None,
            yaml: None,
        };
        if live {
            let (c, _) = connect(&opts.kubeconfig_path(), opts.timeout, self.rt, self.report)?;
            let mut objs = objects::parse(&yaml, "the site registry", Origin::SiteRegistry)?;
            objects::order(&mut objs);
            let ro = opts.rollout();
            let report = self.report;
            self.rt.block_on(async {
                let inventory = c.apply(&objs, &ro.deploy, report).await?;
                crate::cluster::wait::wait_healthy(
                    &c,
                    &inventory,
                    &Default::default(),
                    &ro.deploy,
                    report,
                )
                .await
            })?;
            run_until(opts.timeout, report, "the site registry to answer", || {
                registry_answers(node_port)
            })?;
            site.cluster = Some(c);
        }
        site.yaml = Some(yaml);
        Ok(site)
    }

    /// Write the site registry's image archive into K3s's images directory unless it already holds
    /// the right manifest. Its blobs come from a second verified pass over the bundle. True when it
    /// was (or, in a dry run, would be) written.
    pub(super) fn registry_archive(&self, staged: &Staged, dest: &str) -> Result<bool> {
        let (bundle, trust, opts) = (self.bundle, self.trust, &self.opts);
        let image = site_registry::pick_image(&self.index, self.registry_image())?;
        let digest = site_registry::platform_manifest(image, &opts.arch)
            .map(|p| p.digest.as_str())
            .ok_or_else(|| InstallError::Bundle {
                reason: format!("{} has no {}", image.reference, opts.arch.linux()),
            })?;
        let path = opts.root.join(dest);
        if site_registry::archive_holds(&path).as_deref() == Some(digest) {
            return Ok(false);
        }
        let Some(dir) = &staged.dir else {
            return Ok(true);
        };
        let opened = rin_bundle::open(bundle, trust)?;
        if sha256_hex(&opened.index_bytes) != staged.plan.index_sha256() {
            return Err(InstallError::Bundle {
                reason: format!(
                    "{} is not the bundle that was verified: it changed while being installed",
                    bundle.display()
                ),
            });
        }
        let paths = site_registry::archive_paths(&staged.plan, digest)?;
        let mut sink = Stage::new(dir, paths.into_iter().collect());
        opened.verify_into(&mut sink, &rin_bundle::Silent)?;
        // Removed as it is dropped if writing fails.
        let mut f = AtomicFile::create(&path, 0o644).map_err(state::file_error)?;
        site_registry::write_archive(
            &staged.plan,
            digest,
            &image.reference,
            &opts.arch,
            dir,
            &mut f,
        )?;
        f.commit().map_err(state::file_error)?;
        Ok(true)
    }
}

/// Retry `f` every two seconds until it succeeds or `timeout` passes.
fn run_until(
    timeout: Duration,
    report: &dyn Progress,
    what: &str,
    mut f: impl FnMut() -> std::result::Result<(), String>,
) -> Result<()> {
    let start = Instant::now();
    report.say(&format!(
        "waiting for {what} (up to {}s)",
        timeout.as_secs()
    ));
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() >= timeout => {
                return Err(InstallError::Step {
                    what: format!("waiting for {what}"),
                    reason: format!("not ready after {}s: {e}", timeout.as_secs()),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// `GET /v2/` on the node's loopback NodePort answers (200 or 401).
fn registry_answers(port: u16) -> std::result::Result<(), String> {
    use std::io::{Read as _, Write as _};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&head[9..12]).to_string();
    if status == "200" || status == "401" {
        Ok(())
    } else {
        Err(format!("GET /v2/ answered {status}"))
    }
}
