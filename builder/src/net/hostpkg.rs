//! Host packages from APT repositories: each target's `Packages` index read for each
//! architecture, the stack's packages (the target's own and every component's) resolved with
//! the dependencies a minimal install lacks (`rin_hostpkg`), the result pinned in the lock; then
//! each pinned `.deb` fetched into the cache against its sha256.
//!
//! The index is fetched over HTTPS (or plain HTTP to loopback and `--insecure-registry` hosts)
//! and trusted as served when the lock is made; the repository's signed `Release` file is not
//! checked. From then on the lock's sha256 is what every build holds a package to.

use crate::error::{BuildError, Result};
use crate::fetched::FetchedPackage;
use crate::lock::{Lock, LockedPackage};
use crate::net::http;
use crate::net::session::Session;
use crate::spec::{HostPackagesSpec, StackSpec};
use rin_bundle::Arch;
use rin_hostpkg::{Repository, Request};
use std::collections::BTreeSet;

fn err(target: &str, reason: String) -> BuildError {
    BuildError::HostPackages {
        target: target.into(),
        reason,
    }
}

/// Every package the stack may ask of a target: its own and every component's, selected or
/// not (the lock covers every selection).
pub fn requests(spec: &StackSpec, h: &HostPackagesSpec) -> Result<Vec<Request>> {
    let mut all: BTreeSet<Request> = BTreeSet::new();
    for p in h
        .packages
        .iter()
        .chain(spec.components.values().flat_map(|c| &c.host_packages))
    {
        all.insert(p.parse().map_err(|e| err(&h.target, e))?);
    }
    Ok(all.into_iter().collect())
}

/// Does the lock hold a resolution of exactly these requests from this source?
fn current(lock: &Lock, h: &HostPackagesSpec, arch: &Arch, requests: &[Request]) -> bool {
    let set: Vec<&LockedPackage> = lock.host_set(&h.target, arch).collect();
    let source = h.source();
    !set.is_empty()
        && set.iter().all(|p| p.source == source)
        && set.iter().filter(|p| p.requested).count() == requests.len()
        && requests.iter().all(|r| {
            set.iter().any(|p| {
                p.requested
                    && p.name == r.name
                    && r.version.as_ref().is_none_or(|v| *v == p.version)
            })
        })
}

/// The URL of the repository's root, ending in `/`.
fn root(h: &HostPackagesSpec) -> String {
    format!("{}/", h.repo.trim_end_matches('/'))
}

/// Read the target's package index for `arch`: `dists/SUITE/COMPONENT/binary-ARCH/Packages.gz`
/// for each component (or `Packages`, uncompressed, when that is all the repository has), or a
/// flat repository's `SUITE/Packages.gz`.
async fn repository(s: &Session, h: &HostPackagesSpec, arch: &str) -> Result<Repository> {
    let mut dirs = Vec::new();
    if h.suite.ends_with('/') {
        dirs.push(h.suite.trim_start_matches("./").to_string());
    } else {
        for c in &h.components {
            dirs.push(format!("dists/{}/{c}/binary-{arch}/", h.suite));
        }
    }
    // Each index as fetched (compressed when it is `.gz`), read by one streaming pass: the
    // decompressed text (tens of MiB for Debian's main) is never held whole.
    let mut bodies = Vec::new();
    for dir in dirs {
        let base = format!("{}{dir}", root(h));
        let gz = http::check_scheme(&format!("{base}Packages.gz"), &s.opts)?;
        bodies.push(match http::get_small(&s.net, &s.http, &gz).await {
            Ok(b) => (true, b),
            Err(BuildError::NotFound { .. }) => {
                let plain = http::check_scheme(&format!("{base}Packages"), &s.opts)?;
                (false, http::get_small(&s.net, &s.http, &plain).await?)
            }
            Err(e) => return Err(e),
        });
    }
    let mut reader: Box<dyn std::io::Read + '_> = Box::new(std::io::empty());
    for (gzip, body) in &bodies {
        let one: Box<dyn std::io::Read + '_> = if *gzip {
            Box::new(flate2::read::GzDecoder::new(&body[..]))
        } else {
            Box::new(&body[..])
        };
        // Paragraphs of consecutive indexes stay apart.
        let next = std::io::Read::chain(std::io::Read::chain(reader, one), &b"\n"[..]);
        reader = Box::new(next);
    }
    Repository::read(std::io::BufReader::new(reader), arch)
        .map_err(|e| err(&h.target, e.to_string()))
}

/// Bring the lock's host packages up to date: a target and architecture whose locked set does
/// not answer the stack's requests is resolved again, keeping the locked versions that still
/// fit.
pub async fn resolve(
    s: &Session,
    spec: &StackSpec,
    arches: &[Arch],
    lock: &mut Lock,
) -> Result<()> {
    for h in spec.host_packages.iter().filter(|h| !h.is_rpm()) {
        let requests = requests(spec, h)?;
        for arch in arches {
            if requests.is_empty() {
                lock.host_packages
                    .retain(|p| !(p.target == h.target && &p.arch == arch));
                continue;
            }
            if current(lock, h, arch, &requests) {
                continue;
            }
            let deb_arch = rin_bundle::host::deb_arch(arch);
            let repo = repository(s, h, deb_arch).await?;
            let locked: Vec<(String, String)> = lock
                .host_set(&h.target, arch)
                .map(|p| (p.name.clone(), p.version.clone()))
                .collect();
            let prefer = |name: &str| {
                locked
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            let resolved = repo
                .resolve(&requests, &prefer)
                .map_err(|e| err(&h.target, e.to_string()))?;
            lock.host_packages
                .retain(|p| !(p.target == h.target && &p.arch == arch));
            for r in resolved {
                let c = r.candidate;
                lock.host_packages.push(LockedPackage {
                    target: h.target.clone(),
                    arch: arch.clone(),
                    source: h.source(),
                    name: c.name,
                    version: c.version,
                    architecture: c.architecture,
                    file: c.filename,
                    sha256: c.sha256,
                    size: c.size,
                    requested: r.requested,
                    needs: r.needs.into_iter().collect(),
                    depends: c.depends,
                    pre_depends: c.pre_depends,
                    provides: c.provides,
                });
            }
        }
    }
    Ok(())
}

/// Fetch every locked package of the stack's targets for `arches` into the cache.
pub async fn fetch(
    s: &Session,
    spec: &StackSpec,
    arches: &[Arch],
    lock: &Lock,
) -> Result<Vec<FetchedPackage>> {
    let mut out = Vec::new();
    for h in spec.host_packages.iter().filter(|h| !h.is_rpm()) {
        for arch in arches {
            for p in lock.host_set(&h.target, arch) {
                let url = http::check_scheme(&format!("{}{}", root(h), p.file), &s.opts)?;
                let what = format!("{} {} ({}/{arch})", p.name, p.version, h.target);
                let path = match s.cache.lookup(&p.sha256, Some(p.size)) {
                    Some(path) => path,
                    None => {
                        http::download(&s.net, &s.http, &s.cache, &url, &p.sha256, &what).await?
                    }
                };
                out.push(FetchedPackage {
                    locked: p.clone(),
                    path,
                });
            }
        }
    }
    Ok(out)
}
