//! Host packages in the bundle (FORMAT.md section 6, `host/`): for each target and
//! architecture, the packages the stack and its selected components ask for and everything
//! they need of the lock (its `needs`), each under `host/<target>/<arch>/`, with the list
//! `packages.json` the site installs from.

use crate::error::{BuildError, Result};
use crate::fetched::{Fetched, FetchedPackage, FileEntry};
use crate::spec::{Selection, Stack};
use rin_bundle::Arch;
use rin_bundle::host::{self, HostList, HostPackage};
use rin_bundle::index::MODE_FILE;
use std::collections::{BTreeMap, BTreeSet};

/// The package files to carry, and each list (path, canonical JSON).
pub type HostEntries = (Vec<FileEntry>, Vec<(String, Vec<u8>)>);

pub fn entries(
    stack: &Stack,
    selection: &Selection,
    arches: &[Arch],
    fetched: &Fetched,
) -> Result<HostEntries> {
    let mut files = Vec::new();
    let mut lists = Vec::new();
    for h in &stack.spec.host_packages {
        let err = |reason: String| BuildError::HostPackages {
            target: h.target.clone(),
            reason,
        };
        if h.is_rpm() {
            rpm_entries(stack, h, arches, &mut files, &mut lists)?;
            continue;
        }
        let mut wanted = BTreeSet::new();
        for p in h.packages.iter().chain(&selection.host_packages) {
            let r: rin_hostpkg::Request = p.parse().map_err(err)?;
            wanted.insert(r.name);
        }
        if wanted.is_empty() {
            continue;
        }
        let services: BTreeSet<String> = h
            .services
            .iter()
            .chain(&selection.host_services)
            .cloned()
            .collect();
        for arch in arches {
            let set: BTreeMap<&str, &FetchedPackage> = fetched
                .host
                .iter()
                .filter(|p| p.locked.target == h.target && &p.locked.arch == arch)
                .map(|p| (p.locked.name.as_str(), p))
                .collect();
            // The requested packages and, through the lock's `needs`, what they depend on.
            let mut carried = BTreeSet::new();
            let mut work: Vec<&str> = wanted.iter().map(String::as_str).collect();
            while let Some(name) = work.pop() {
                let p = set.get(name).ok_or_else(|| {
                    err(format!(
                        "{name} for {arch} is not in the lock: run `rinbundle lock` or a build without --locked"
                    ))
                })?;
                if carried.insert(name) {
                    work.extend(p.locked.needs.iter().map(String::as_str));
                }
            }
            let dir = host::dir(&h.target, arch);
            let mut packages = Vec::new();
            for name in carried {
                let p = set[name];
                let l = &p.locked;
                let file = l.file.rsplit('/').next().unwrap_or(&l.file);
                let path = format!("{dir}/{file}");
                files.push(FileEntry::known(
                    path.clone(),
                    p.path.clone(),
                    l.sha256.clone(),
                    l.size,
                    MODE_FILE,
                ));
                packages.push(HostPackage {
                    name: l.name.clone(),
                    version: l.version.clone(),
                    architecture: l.architecture.clone(),
                    path,
                    requested: wanted.contains(&l.name),
                    depends: l.depends.clone(),
                    pre_depends: l.pre_depends.clone(),
                    provides: l.provides.clone(),
                });
            }
            let list = HostList {
                format: host::FORMAT_DEB.into(),
                target: h.target.clone(),
                arch: arch.clone(),
                packages,
                services: services.iter().cloned().collect(),
            };
            lists.push((
                host::list_path(&h.target, arch),
                rin_bundle::json::canonical_json(&list),
            ));
        }
    }
    Ok((files, lists))
}

/// An rpm target's local files, as they are: each carried for every architecture it runs on
/// (`noarch` for all), named and versioned from its own header (the `rpm` crate), each one
/// requested; `rpm -U --test` judges their dependencies at the site.
fn rpm_entries(
    stack: &Stack,
    h: &crate::spec::HostPackagesSpec,
    arches: &[Arch],
    files: &mut Vec<FileEntry>,
    lists: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let err = |reason: String| BuildError::HostPackages {
        target: h.target.clone(),
        reason,
    };
    let mut read = Vec::new();
    for f in &h.files {
        let path = stack.resolve(f);
        let m = rpm::PackageMetadata::open(&path)
            .map_err(|e| err(format!("{f} is not an RPM package: {e}")))?;
        let field = |r: std::result::Result<&str, rpm::Error>| {
            r.map(str::to_string).map_err(|e| err(format!("{f}: {e}")))
        };
        let (name, version, release, arch) = (
            field(m.get_name())?,
            field(m.get_version())?,
            field(m.get_release())?,
            field(m.get_arch())?,
        );
        let version = match m.get_epoch() {
            Ok(e) if e > 0 => format!("{e}:{version}-{release}"),
            _ => format!("{version}-{release}"),
        };
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        read.push((name, version, arch, file, path));
    }
    read.sort();
    for arch in arches {
        let dir = host::dir(&h.target, arch);
        let mut packages: Vec<HostPackage> = Vec::new();
        for (name, version, rpm_arch, file, path) in &read {
            if rpm_arch != "noarch" && rpm_arch != host::rpm_arch(arch) {
                continue;
            }
            if packages.iter().any(|p| &p.name == name) {
                return Err(err(format!("two files of {name} for {arch}")));
            }
            let entry = format!("{dir}/{file}");
            files.push(FileEntry::regular(entry.clone(), path.clone())?);
            packages.push(HostPackage {
                name: name.clone(),
                version: version.clone(),
                architecture: rpm_arch.clone(),
                path: entry,
                requested: true,
                depends: String::new(),
                pre_depends: String::new(),
                provides: String::new(),
            });
        }
        if packages.is_empty() {
            continue;
        }
        let list = HostList {
            format: host::FORMAT_RPM.into(),
            target: h.target.clone(),
            arch: arch.clone(),
            packages,
            services: {
                let mut s = h.services.clone();
                s.sort();
                s.dedup();
                s
            },
        };
        lists.push((
            host::list_path(&h.target, arch),
            rin_bundle::json::canonical_json(&list),
        ));
    }
    Ok(())
}
