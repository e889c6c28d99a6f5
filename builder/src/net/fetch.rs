//! The network half of a build: bring the lock up to date with the stack, then fetch every
//! image blob, chart archive and K3s file it pins into the cache. The packer then reads them
//! from the cache like any local file.

use crate::error::{BuildError, Result};
use crate::fetched::Arrivals;
use crate::fetched::Fetched;
use crate::lock::{self, Lock};
use crate::net::registry::{self, parse_reference};
use crate::net::session::{FetchOptions, Session, session};
use crate::net::{charts, hostpkg, k3s};
use crate::spec::Stack;
use rin_bundle::Arch;
use rin_bundle::oci::Descriptor;
use rin_bundle::progress::Progress;
use std::path::PathBuf;
use std::sync::Arc;

/// The image blobs left to download once the lock, the image documents, the charts and the
/// K3s files are in place.
pub struct Downloads {
    session: Session,
    wanted: Vec<(oci_client::Reference, Descriptor)>,
    jobs: usize,
}

impl Downloads {
    /// Which digests are still to arrive (the writer waits for them).
    pub fn arrivals(&self) -> Arc<Arrivals> {
        Arrivals::expect(self.wanted.iter().map(|(_, d)| &d.digest))
    }

    /// Download them, marking each in `arrivals` as it completes.
    pub async fn run(self, arrivals: Arc<Arrivals>) -> Result<()> {
        let s = self.session;
        registry::fetch_blobs(s.regs, s.net, s.cache, self.wanted, self.jobs, arrivals).await
    }
}

/// What happened to the lock.
#[derive(Debug)]
pub struct LockOutcome {
    pub path: PathBuf,
    pub lock: Lock,
    /// The file was (re)written.
    pub written: bool,
    /// One line per change against the file as it was.
    pub changes: Vec<String>,
}

/// The steps of a build that needs the network: `resolve` (tags to digests, the lock), `fetch`
/// (documents, charts, K3s files; image layers go on downloading through the next step) and
/// `write` (each layer written as soon as its download lands). A build from local files alone
/// has only `write`.
pub const NETWORK_STEPS: usize = 3;

/// Does the stack need the network at all (registry images, repository charts, K3s release)?
pub fn needs_network(stack: &Stack) -> bool {
    let s = &stack.spec;
    s.images.iter().any(|i| i.layout.is_none())
        || s.charts.iter().any(|c| c.repo.is_some())
        || s.k3s.as_ref().is_some_and(|k| k.files.is_none())
        || !s.host_packages.is_empty()
}

/// Resolve what `lock` lacks for the stack (everything, when it is empty), after dropping what
/// the stack no longer names.
async fn resolve_into(s: &Session, stack: &Stack, arches: &[Arch], lock: &mut Lock) -> Result<()> {
    let spec = &stack.spec;
    lock.retain_for(spec);
    for i in spec.images.iter().filter(|i| i.layout.is_none()) {
        if lock.image(&i.reference).is_none() {
            let l = s.regs.resolve(&s.net, &s.cache, &i.reference).await?;
            lock.images.push(l);
        }
    }
    for c in &spec.charts {
        if let Some(repo) = &c.repo
            && lock.chart(&c.name, &c.version, repo).is_none()
        {
            let l = charts::resolve(s, c, repo).await?;
            lock.charts.push(l);
        }
    }
    if let Some(k) = &spec.k3s
        && k.files.is_none()
    {
        k3s::resolve(s, k, arches, lock).await?;
    }
    hostpkg::resolve(s, stack, arches, lock).await?;
    lock.sort();
    Ok(())
}

/// `rinbundle lock`: resolve every entry afresh (or, with `missing`, only what the lock lacks)
/// and write the lock.
pub async fn lock(
    stack: &Stack,
    arches: &[Arch],
    opts: &FetchOptions,
    missing: bool,
    reporter: Arc<dyn Progress>,
) -> Result<LockOutcome> {
    let path = opts.lock_path(stack);
    let old = Lock::load(&path)?.unwrap_or_default();
    let s = session(stack, opts, reporter).await?;
    s.net.reporter.step(1, 1, "resolve");
    let mut lock = if missing {
        old.clone()
    } else {
        Lock::default()
    };
    resolve_into(&s, stack, arches, &mut lock).await?;
    let changes = lock::changes(&old, &lock);
    let written = lock.save(&path)?;
    Ok(LockOutcome {
        path,
        lock,
        written,
        changes,
    })
}

/// Bring the lock up to date (or check it, with `locked`), then fetch everything the build
/// needs.
pub async fn fetch(
    stack: &Stack,
    arches: &[Arch],
    opts: &FetchOptions,
    reporter: Arc<dyn Progress>,
) -> Result<(Fetched, Option<LockOutcome>)> {
    let (fetched, lock, downloads) = prepare(stack, arches, opts, reporter).await?;
    if let Some(d) = downloads {
        let arrivals = d.arrivals();
        d.run(arrivals).await?;
    }
    Ok((fetched, lock))
}

/// Bring the lock up to date (or check it, with `locked`) and fetch the image documents,
/// charts and K3s files; return the image blobs still to download, so they can be fetched
/// while the bundle is written.
pub async fn prepare(
    stack: &Stack,
    arches: &[Arch],
    opts: &FetchOptions,
    reporter: Arc<dyn Progress>,
) -> Result<(Fetched, Option<LockOutcome>, Option<Downloads>)> {
    if !needs_network(stack) {
        return Ok((Fetched::default(), None, None));
    }
    let path = opts.lock_path(stack);
    let old = Lock::load(&path)?;
    if opts.locked && old.is_none() {
        return Err(BuildError::Locked {
            path,
            changes: vec!["there is no lock file".into()],
        });
    }
    let old = old.unwrap_or_default();
    let s = session(stack, opts, reporter).await?;
    s.net.reporter.step(1, NETWORK_STEPS, "resolve");
    let mut lock = old.clone();
    resolve_into(&s, stack, arches, &mut lock).await?;
    let changes = lock::changes(&old, &lock);
    if opts.locked && !changes.is_empty() {
        return Err(BuildError::Locked { path, changes });
    }
    let written = if opts.locked {
        false
    } else {
        lock.save(&path)?
    };

    s.net.reporter.step(2, NETWORK_STEPS, "fetch");
    let spec = &stack.spec;
    let mut fetched = Fetched {
        store: Some(s.cache.root().to_path_buf()),
        ..Default::default()
    };
    let mut wanted = Vec::new();
    let mut configs = Vec::new();
    for i in spec.images.iter().filter(|i| i.layout.is_none()) {
        let locked = lock
            .image(&i.reference)
            .ok_or_else(|| BuildError::Image {
                image: i.reference.clone(),
                reason: "not in the lock".into(),
            })?
            .clone();
        let (top, blobs) = s.regs.documents(&s.net, &s.cache, &locked, arches).await?;
        let r = parse_reference(&i.reference)?;
        for (is_config, b) in blobs {
            if is_config {
                configs.push((r.clone(), b));
            } else {
                wanted.push((r.clone(), b));
            }
        }
        fetched.images.insert(i.reference.clone(), top);
    }
    // Image configs now (the packer parses them); layers later, beside the writer.
    let arrivals = Arrivals::expect(configs.iter().map(|(_, d)| &d.digest));
    registry::fetch_blobs(
        s.regs.clone(),
        s.net.clone(),
        s.cache.clone(),
        configs,
        opts.jobs,
        arrivals,
    )
    .await?;
    for c in &spec.charts {
        if let Some(repo) = &c.repo {
            let locked =
                lock.chart(&c.name, &c.version, repo)
                    .ok_or_else(|| BuildError::Chart {
                        chart: c.name.clone(),
                        reason: "not in the lock".into(),
                    })?;
            let p = charts::fetch(&s, c, locked).await?;
            fetched
                .charts
                .insert((c.name.clone(), c.version.clone()), p);
        }
    }
    if let Some(k) = &spec.k3s
        && k.files.is_none()
    {
        fetched.k3s = Some(k3s::fetch(&s, k, arches, &lock).await?);
    }
    fetched.host = hostpkg::fetch(&s, spec, arches, &lock).await?;
    Ok((
        fetched,
        Some(LockOutcome {
            path,
            lock,
            written,
            changes,
        }),
        Some(Downloads {
            session: s,
            wanted,
            jobs: opts.jobs,
        }),
    ))
}
