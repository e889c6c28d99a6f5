//! K3s release files fetched from the release page (default: K3s's GitHub releases), checked
//! against the release's own `sha256sum-<arch>.txt`, pinned in the lock.
//!
//! Per architecture: the binary (`k3s` for amd64, `k3s-<arch>` otherwise), the air-gap images
//! `k3s-airgap-images-<arch>.tar.zst` and `sha256sum-<arch>.txt`; once: `install.sh`, from the
//! K3s repository at the release's tag (the script get.k3s.io serves; the release publishes no
//! checksum for it, so the lock pins the one first fetched).

use crate::error::{BuildError, Result};
use crate::fetched::FileEntry;
use crate::lock::{Lock, LockedFile};
use crate::net::http;
use crate::net::registry::RegistryOptions;
use crate::net::session::Session;
use crate::spec::K3sSpec;
use rin_bundle::Arch;
use rin_bundle::index;
use rin_bundle::k3s::{self, INSTALL_SCRIPT, binary, parse_sums, sums};

pub const DEFAULT_RELEASES: &str = "https://github.com/k3s-io/k3s/releases/download";
pub const DEFAULT_INSTALL_SCRIPT: &str =
    "https://raw.githubusercontent.com/k3s-io/k3s/{version}/install.sh";

/// The air-gap images archive fetched from a release: the zstd one.
fn airgap_images(arch: &Arch) -> String {
    format!("{}.zst", k3s::airgap_images(arch))
}

fn err(spec: &K3sSpec, reason: String) -> BuildError {
    BuildError::K3s {
        version: spec.version.clone(),
        reason,
    }
}

/// Where a release file is downloaded from.
fn url_of(spec: &K3sSpec, file: &str, opts: &RegistryOptions) -> Result<reqwest::Url> {
    let url = if file == INSTALL_SCRIPT {
        spec.install_script
            .clone()
            .unwrap_or_else(|| DEFAULT_INSTALL_SCRIPT.into())
            .replace("{version}", &spec.version)
    } else {
        let base = spec
            .release_url
            .clone()
            .unwrap_or_else(|| DEFAULT_RELEASES.into());
        // `+` in a path segment: GitHub wants it escaped.
        let version = spec.version.replace('+', "%2B");
        format!("{}/{version}/{file}", base.trim_end_matches('/'))
    };
    http::check_scheme(&url, opts)
}

/// Add to the lock whatever K3s file `arches` need and it lacks.
pub async fn resolve(s: &Session, spec: &K3sSpec, arches: &[Arch], lock: &mut Lock) -> Result<()> {
    let Session {
        net,
        http,
        cache,
        opts,
        ..
    } = s;
    let v = &spec.version;
    if lock.k3s_file(v, INSTALL_SCRIPT).is_none() {
        let bytes = http::get_small(net, http, &url_of(spec, INSTALL_SCRIPT, opts)?).await?;
        if !bytes.starts_with(b"#!") {
            return Err(err(
                spec,
                "install.sh does not start with #! (not a script)".into(),
            ));
        }
        let sha256 = cache.put(&bytes)?;
        lock.k3s.push(LockedFile {
            version: v.clone(),
            file: INSTALL_SCRIPT.into(),
            sha256,
        });
    }
    for arch in arches {
        let wanted = [sums(arch), binary(arch), airgap_images(arch)];
        if wanted.iter().all(|f| lock.k3s_file(v, f).is_some()) {
            continue;
        }
        let bytes = http::get_small(net, http, &url_of(spec, &sums(arch), opts)?).await?;
        let listed = parse_sums(&String::from_utf8_lossy(&bytes));
        let sums_sha = cache.put(&bytes)?;
        lock.k3s
            .retain(|f| !(f.version == *v && wanted.contains(&f.file)));
        lock.k3s.push(LockedFile {
            version: v.clone(),
            file: sums(arch),
            sha256: sums_sha,
        });
        for f in &wanted[1..] {
            let sha256 = listed.get(f).ok_or_else(|| {
                err(
                    spec,
                    format!(
                        "{} does not list {f}; is {v} a K3s release for {arch}?",
                        sums(arch)
                    ),
                )
            })?;
            lock.k3s.push(LockedFile {
                version: v.clone(),
                file: f.clone(),
                sha256: sha256.clone(),
            });
        }
    }
    Ok(())
}

/// Fetch the locked files `arches` need; entries for `k3s/` in the bundle.
pub async fn fetch(
    s: &Session,
    spec: &K3sSpec,
    arches: &[Arch],
    lock: &Lock,
) -> Result<Vec<FileEntry>> {
    let Session {
        net,
        http,
        cache,
        opts,
        ..
    } = s;
    let v = &spec.version;
    let mut names = vec![INSTALL_SCRIPT.to_string()];
    for arch in arches {
        names.extend([sums(arch), binary(arch), airgap_images(arch)]);
    }
    let mut out = Vec::new();
    for name in names {
        let locked = lock.k3s_file(v, &name).ok_or_else(|| {
            err(
                spec,
                format!("{name} is not in the lock; run `rinbundle lock`"),
            )
        })?;
        let what = format!("K3s {v} {name}");
        let path = http::download(
            net,
            http,
            cache,
            &url_of(spec, &name, opts)?,
            &locked.sha256,
            &what,
        )
        .await?;
        let size = std::fs::metadata(&path)
            .map_err(|source| BuildError::cache(path.clone(), source))?
            .len();
        if name.starts_with("sha256sum-") {
            // The pinned checksum list must agree with the pinned files.
            let text = std::fs::read_to_string(&path)
                .map_err(|source| BuildError::cache(path.clone(), source))?;
            let listed = parse_sums(&text);
            for f in lock.k3s.iter().filter(|f| f.version == *v) {
                if let Some(h) = listed.get(&f.file)
                    && *h != f.sha256
                {
                    return Err(BuildError::Mismatch {
                        what: format!("K3s {v} {} (lock vs {name})", f.file),
                        expected: h.clone(),
                        actual: f.sha256.clone(),
                    });
                }
            }
        }
        let exec = name == INSTALL_SCRIPT || name.starts_with("k3s") && !name.contains("airgap");
        out.push(FileEntry::known(
            k3s::path(&name),
            path,
            locked.sha256.clone(),
            size,
            if exec {
                index::MODE_EXEC
            } else {
                index::MODE_FILE
            },
        ));
    }
    Ok(out)
}
