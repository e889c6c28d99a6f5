//! Host packages from APT repositories: each target's `Packages` index read for each
//! architecture, the stack's packages (the target's own and every component's) resolved with
//! the dependencies a minimal install lacks (`rin_hostpkg`), the result pinned in the lock; then
//! each pinned `.deb` fetched into the cache against its sha256.
//!
//! The index is fetched over HTTPS (or plain HTTP to loopback and `--insecure-registry` hosts).
//! With `signed_by:` (a keyring in the stack, as APT's `Signed-By`), the repository's
//! `InRelease` must carry a good signature by one of its keys (rpgp checks it), and every index
//! must have the sha256 and size that signed text lists, as APT holds a repository to; without
//! it the indexes are trusted as served. From then on the lock's sha256 is what every build
//! holds a package to.

use crate::error::{BuildError, Result};
use crate::fetched::FetchedPackage;
use crate::lock::{Lock, LockedPackage};
use crate::net::http;
use crate::net::session::Session;
use crate::spec::{HostPackagesSpec, Stack, StackSpec};
use rin_bundle::Arch;
use rin_hostpkg::{Release, Repository, Request};
use std::collections::BTreeSet;
use std::path::Path;

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

/// The directory of the repository's `InRelease`, relative to its root: `dists/SUITE/`, or a
/// flat repository's `SUITE`.
fn release_dir(h: &HostPackagesSpec) -> String {
    if h.suite.ends_with('/') {
        h.suite.trim_start_matches("./").to_string()
    } else {
        format!("dists/{}/", h.suite)
    }
}

/// The repository's `InRelease`, its signature checked against the keyring `signed_by` names:
/// the checksums of the indexes it signs (None: the target names no keyring).
async fn signed_release(
    s: &Session,
    stack_dir: &Path,
    h: &HostPackagesSpec,
) -> Result<Option<Release>> {
    let Some(keyring) = &h.signed_by else {
        return Ok(None);
    };
    let keyring_path = stack_dir.join(keyring);
    let keys = std::fs::read(&keyring_path).map_err(|e| BuildError::Spec {
        path: keyring_path.clone(),
        reason: format!("cannot read the keyring signed_by names: {e}"),
    })?;
    let url = format!("{}{}InRelease", root(h), release_dir(h));
    let body = http::get_small(&s.net, &s.http, &http::check_scheme(&url, &s.opts)?).await?;
    let refused = |reason: String| BuildError::RepositorySignature {
        target: h.target.clone(),
        reason: format!("{url}: {reason}"),
    };
    let text = String::from_utf8(body).map_err(|_| refused("it is not text".into()))?;
    let signed = verify_clearsigned(&text, &keys)
        .map_err(|why| refused(format!("{why} (keyring {keyring})")))?;
    let release = Release::parse(&signed).map_err(|e| refused(e.to_string()))?;
    if let Some(v) = &release.valid_until {
        still_valid(v, std::time::SystemTime::now()).map_err(refused)?;
    }
    Ok(Some(release))
}

/// Whether a Release's `Valid-Until` (`Sat, 12 Dec 2026 03:33:28 UTC`, RFC 2822 as APT writes
/// it) is after `now`: a mirror serving an old signed Release (a replay, or a mirror that
/// stopped updating) is refused, as APT refuses it.
pub fn still_valid(
    valid_until: &str,
    now: std::time::SystemTime,
) -> std::result::Result<(), String> {
    let unreadable = || format!("its Valid-Until {valid_until:?} is not a date APT writes");
    let words: Vec<&str> = valid_until.split_whitespace().collect();
    // [weekday,] day month year hh:mm:ss zone
    let words = match words.first() {
        Some(w) if w.ends_with(',') => &words[1..],
        _ => &words[..],
    };
    let [day, month, year, time, zone] = words[..] else {
        return Err(unreadable());
    };
    if !matches!(zone, "UTC" | "GMT" | "UT" | "Z" | "+0000") {
        return Err(unreadable());
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| *m == month)
        .ok_or_else(unreadable)?;
    let day: u32 = day.parse().map_err(|_| unreadable())?;
    let rfc3339 = format!("{year}-{:02}-{day:02}T{time}Z", month + 1);
    let until = humantime::parse_rfc3339(&rfc3339).map_err(|_| unreadable())?;
    if now > until {
        return Err(format!(
            "its signature was valid until {valid_until}: the mirror serves an old InRelease (or this machine's clock is wrong); use an up-to-date mirror"
        ));
    }
    Ok(())
}

/// The text of a cleartext-signed message (`InRelease`) that a key of `keyring` (OpenPGP
/// public keys, armored or binary, primary keys and subkeys) made a good signature of, with
/// `\n` line ends; or why not.
pub fn verify_clearsigned(message: &str, keyring: &[u8]) -> std::result::Result<String, String> {
    use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
    let (keys, _) = SignedPublicKey::from_reader_many(keyring)
        .map_err(|e| format!("the keyring is not OpenPGP public keys: {e}"))?;
    let keys: Vec<SignedPublicKey> = keys
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("the keyring is not OpenPGP public keys: {e}"))?;
    if keys.is_empty() {
        return Err("the keyring holds no key".into());
    }
    let (msg, _) = CleartextSignedMessage::from_string(message)
        .map_err(|e| format!("it is not a cleartext-signed OpenPGP message: {e}"))?;
    let good = keys.iter().any(|k| {
        msg.verify(k).is_ok() || k.public_subkeys.iter().any(|sub| msg.verify(sub).is_ok())
    });
    if !good {
        return Err(format!(
            "none of its {} signature(s) is a good signature by a key of the keyring",
            msg.signatures().len()
        ));
    }
    Ok(msg.signed_text().replace("\r\n", "\n"))
}

/// Read the target's package index for `arch`: `dists/SUITE/COMPONENT/binary-ARCH/Packages.gz`
/// for each component (or `Packages`, uncompressed, when that is all the repository has), or a
/// flat repository's `SUITE/Packages.gz`; each checked against the signed `release`, when there
/// is one.
async fn repository(
    s: &Session,
    h: &HostPackagesSpec,
    release: Option<&Release>,
    arch: &str,
) -> Result<Repository> {
    // Each index's directory, relative to the InRelease's.
    let mut dirs = Vec::new();
    if h.suite.ends_with('/') {
        dirs.push(String::new());
    } else {
        for c in &h.components {
            dirs.push(format!("{c}/binary-{arch}/"));
        }
    }
    // Each index as fetched (compressed when it is `.gz`), read by one streaming pass: the
    // decompressed text (tens of MiB for Debian's main) is never held whole.
    let mut bodies = Vec::new();
    for dir in dirs {
        let base = format!("{}{}{dir}", root(h), release_dir(h));
        let gz = http::check_scheme(&format!("{base}Packages.gz"), &s.opts)?;
        let (gzip, body) = match http::get_small(&s.net, &s.http, &gz).await {
            Ok(b) => (true, b),
            Err(BuildError::NotFound { .. }) => {
                let plain = http::check_scheme(&format!("{base}Packages"), &s.opts)?;
                (false, http::get_small(&s.net, &s.http, &plain).await?)
            }
            Err(e) => return Err(e),
        };
        if let Some(release) = release {
            let name = format!("{dir}Packages{}", if gzip { ".gz" } else { "" });
            let got = (rin_bundle::digest::sha256_hex(&body), body.len() as u64);
            match release.sha256.get(&name) {
                Some(want) if *want == got => {}
                Some((sha, size)) => {
                    return Err(BuildError::RepositorySignature {
                        target: h.target.clone(),
                        reason: format!(
                            "{base}{}: sha256 {} and {} bytes, but the signed InRelease says {sha} and {size}",
                            name.rsplit('/').next().unwrap_or(&name),
                            got.0,
                            got.1
                        ),
                    });
                }
                None => {
                    return Err(BuildError::RepositorySignature {
                        target: h.target.clone(),
                        reason: format!("the signed InRelease lists no {name}"),
                    });
                }
            }
        }
        bodies.push((gzip, body));
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
pub async fn resolve(s: &Session, stack: &Stack, arches: &[Arch], lock: &mut Lock) -> Result<()> {
    let spec = &stack.spec;
    for h in spec.host_packages.iter().filter(|h| !h.is_rpm()) {
        let requests = requests(spec, h)?;
        // Read (and its signature checked) once, when the lock needs the repository at all.
        let stale = |a: &Arch| !requests.is_empty() && !current(lock, h, a, &requests);
        let release = if arches.iter().any(stale) {
            signed_release(s, &stack.dir, h).await?
        } else {
            None
        };
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
            let repo = repository(s, h, release.as_ref(), deb_arch).await?;
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

#[cfg(test)]
mod tests {
    use super::verify_clearsigned;

    const IN_RELEASE: &str = include_str!("../../tests/data/debian-bookworm-security-InRelease");
    const KEYRING: &[u8] = include_bytes!("../../../manifests/keys/debian-archive-keyring.gpg");
    /// Debian 12's release key alone, which does not sign the security archive.
    const RELEASE_KEY: &[u8] =
        include_bytes!("../../tests/data/debian-archive-bookworm-stable.gpg");

    /// Debian's own InRelease (bookworm-security, as APT fetched it) against the
    /// debian-archive-keyring package's binary keyring: good, and its checksums read; the same
    /// text altered, or another Debian key alone, refused.
    #[test]
    fn debians_signed_release_verifies_with_its_keyring_and_nothing_else_does() {
        let text = verify_clearsigned(IN_RELEASE, KEYRING).unwrap();
        assert!(text.starts_with("Origin: Debian\n"), "{}", &text[..40]);
        let release = rin_hostpkg::Release::parse(&text).unwrap();
        // The security archive lists no Packages.gz (only Packages and .xz).
        let (sha, size) = release.sha256.get("main/binary-amd64/Packages").unwrap();
        assert_eq!(sha.len(), 64);
        assert!(*size > 0);

        let altered = IN_RELEASE.replacen("Codename: bookworm-security", "Codename: bookworm", 1);
        assert!(altered.len() < IN_RELEASE.len(), "the text was not altered");
        let why = verify_clearsigned(&altered, KEYRING).unwrap_err();
        assert!(
            why.contains("is a good signature by a key of the keyring"),
            "{why}"
        );
        let why = verify_clearsigned(IN_RELEASE, RELEASE_KEY).unwrap_err();
        assert!(
            why.contains("is a good signature by a key of the keyring"),
            "{why}"
        );
        let why = verify_clearsigned(IN_RELEASE, b"not a key").unwrap_err();
        assert!(
            why.contains("not OpenPGP public keys") || why.contains("no key"),
            "{why}"
        );
        let why = verify_clearsigned("Origin: Debian\n", KEYRING).unwrap_err();
        assert!(
            why.contains("not a cleartext-signed OpenPGP message"),
            "{why}"
        );
    }

    /// Valid-Until as Debian writes it: before it, valid; after it, refused; what is not such a
    /// date, refused as unreadable.
    #[test]
    fn valid_until_is_read_as_apt_writes_it_and_a_past_one_refused() {
        use std::time::{Duration, UNIX_EPOCH};
        // Sat, 12 Dec 2026 03:33:28 UTC is 1797046408 seconds after the epoch.
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let v = "Sat, 12 Dec 2026 03:33:28 UTC";
        assert_eq!(super::still_valid(v, at(1_797_046_408)), Ok(()));
        let why = super::still_valid(v, at(1_797_046_409)).unwrap_err();
        assert!(
            why.contains("valid until Sat, 12 Dec 2026 03:33:28 UTC"),
            "{why}"
        );
        assert_eq!(
            super::still_valid("12 Dec 2026 03:33:28 +0000", at(0)),
            Ok(())
        );
        for bad in [
            "tomorrow",
            "Sat, 12 Dez 2026 03:33:28 UTC",
            "Sat, 12 Dec 2026 03:33:28 CET",
        ] {
            let why = super::still_valid(bad, at(0)).unwrap_err();
            assert!(why.contains("is not a date APT writes"), "{bad}: {why}");
        }
    }
}
