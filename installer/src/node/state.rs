//! The installer's state directory (`/var/lib/rininstall`, or `--state-dir`): a lock so two runs
//! never interleave, the staging area of the run in progress, and the record of the installed
//! release.
//!
//! ```text
//! STATE/lock                     held (flock) for the whole run; holds the holder's pid
//! STATE/staging/<index sha256>/  files the node needs from the verified bundle (this run only)
//! STATE/release.json             the installed release, written after an apply succeeds
//! STATE/registry/                the site registry's manifests, for the cluster step
//! STATE/releases/<revision>.json  each kept release's objects as applied (for rollback)
//! STATE/indexes/<sha256>.json    the signed index of the installed release and of each release
//!                                kept for rollback (inventory, doctor)
//! ```

use crate::error::{InstallError, Result};
pub use crate::release::Release;
use rin_support::fs::FileError;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A release's objects as applied, kept for rollback: `STATE/releases/<revision>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    pub record: Release,
    pub objects: Vec<crate::cluster::objects::Object>,
}

/// An opened, locked state directory. The lock is released when this is dropped; a run that
/// created the directory and recorded nothing in it (refused, or failed before any record)
/// leaves no directory behind, and no run leaves an empty `staging/`.
#[derive(Debug)]
pub struct State {
    dir: PathBuf,
    _lock: File,
    /// The topmost directory `open` created (None when the state directory existed).
    created: Option<PathBuf>,
}

impl Drop for State {
    fn drop(&mut self) {
        let _ = fs::remove_dir(self.dir.join("staging"));
        let Some(top) = &self.created else {
            return;
        };
        let only_lock = fs::read_dir(&self.dir)
            .is_ok_and(|mut d| d.all(|e| e.is_ok_and(|e| e.file_name() == "lock")));
        if !only_lock || fs::remove_file(self.dir.join("lock")).is_err() {
            return;
        }
        // Each directory this run made, innermost first; one that is not empty stays.
        for d in self.dir.ancestors() {
            if fs::remove_dir(d).is_err() || d == top.as_path() {
                break;
            }
        }
    }
}

impl State {
    /// Create the directory if needed and take its lock, or say who holds it.
    pub fn open(dir: &Path) -> Result<State> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| InstallError::Io { path, source }
        };
        let created = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .last()
            .map(Path::to_path_buf);
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(InstallError::Busy {
                    dir: dir.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(InstallError::Io {
                    path: lock_path,
                    source,
                });
            }
        }
        lock.set_len(0).map_err(io(&lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io(&lock_path))?;
        Ok(State {
            dir: dir.to_path_buf(),
            _lock: lock,
            created,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The installed release, if any.
    pub fn release(&self) -> Result<Option<Release>> {
        read_release(&self.dir)
    }

    /// Record `release` as installed (atomically: a crash leaves the old record or the new one).
    pub fn record(&self, release: &Release) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(release).expect("a release serialises");
        bytes.push(b'\n');
        write_atomic(&self.dir.join("release.json"), &bytes, 0o644)
    }

    /// Keep the signed index of the release being installed (`STATE/indexes/<sha256>.json`):
    /// `rininstall inventory` and `doctor` read the installed release's images and charts from
    /// it. Only this release's and those of the releases kept for rollback stay.
    pub fn keep_index(&self, index_sha256: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&index_file(&self.dir, index_sha256), bytes, 0o644)?;
        let mut keep = std::collections::BTreeSet::from([index_sha256.to_string()]);
        for e in fs::read_dir(self.dir.join("releases"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(kept) = fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Kept>(&b).ok())
            {
                keep.insert(kept.record.index_sha256);
            }
        }
        for e in fs::read_dir(self.dir.join("indexes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let sha = name.strip_suffix(".json").unwrap_or(&name);
            if !keep.contains(sha) {
                let p = e.path();
                fs::remove_file(&p).map_err(|source| InstallError::Io { path: p, source })?;
            }
        }
        Ok(())
    }

    /// Keep the objects of release `record` for a later rollback (read back as [`Kept`]).
    pub fn keep_objects(
        &self,
        record: &crate::release::Release,
        objects: &[crate::cluster::objects::Object],
    ) -> Result<()> {
        let bytes = serde_json::to_vec(&serde_json::json!({"record": record, "objects": objects}))
            .expect("a release serialises");
        write_atomic(&self.releases_file(record.revision()), &bytes, 0o600)
    }

    /// The objects of release `revision`, as kept.
    pub fn kept_objects(&self, revision: u64) -> Result<Kept> {
        let path = self.releases_file(revision);
        let bytes = fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => InstallError::State {
                path: path.clone(),
                reason: format!(
                    "the objects of revision {revision} are not kept on this node: roll back on the first server, where that release was applied"
                ),
            },
            _ => InstallError::Io {
                path: path.clone(),
                source,
            },
        })?;
        serde_json::from_slice(&bytes).map_err(|e| InstallError::State {
            path,
            reason: e.to_string(),
        })
    }

    /// Remove the kept objects of releases not in `revisions`.
    pub fn forget_objects_except(&self, revisions: &[u64]) -> Result<()> {
        let Ok(entries) = fs::read_dir(self.dir.join("releases")) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let rev = name
                .strip_suffix(".json")
                .and_then(|n| n.parse::<u64>().ok());
            if rev.is_some_and(|r| !revisions.contains(&r)) {
                let p = e.path();
                fs::remove_file(&p).map_err(|source| InstallError::Io { path: p, source })?;
            }
        }
        Ok(())
    }

    fn releases_file(&self, revision: u64) -> PathBuf {
        self.dir.join("releases").join(format!("{revision}.json"))
    }

    /// The staging directory for the bundle whose index has `index_sha256`.
    pub fn staging(&self, index_sha256: &str) -> PathBuf {
        self.dir.join("staging").join(index_sha256)
    }

    /// Remove every staging directory but `keep`'s.
    pub fn clear_staging(&self, keep: Option<&str>) -> Result<()> {
        let root = self.dir.join("staging");
        let Ok(entries) = fs::read_dir(&root) else {
            return Ok(());
        };
        for e in entries.flatten() {
            if keep.is_some_and(|k| e.file_name() == k) {
                continue;
            }
            let p = e.path();
            fs::remove_dir_all(&p)
                .or_else(|_| fs::remove_file(&p))
                .map_err(|source| InstallError::Io { path: p, source })?;
        }
        Ok(())
    }
}

/// The release recorded in `dir`, read without taking the lock.
pub fn read_release(dir: &Path) -> Result<Option<Release>> {
    let path = dir.join("release.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| InstallError::State {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::Io { path, source }),
    }
}

/// Write `bytes` to `path` through a temporary file beside it: synced, renamed over the old one,
/// the directory synced (`rin_support::fs`). Readers see the old content or the new, never a part.
fn index_file(dir: &Path, index_sha256: &str) -> PathBuf {
    dir.join("indexes").join(format!("{index_sha256}.json"))
}

/// The signed index of release `index_sha256`, as kept by the apply that installed it (checked
/// against that sha256).
/// The host package list this node installed from (`STATE/host-packages.json`), which
/// `doctor` checks the node against.
pub fn host_list_path(dir: &Path) -> PathBuf {
    dir.join("host-packages.json")
}

pub fn kept_index(dir: &Path, index_sha256: &str) -> Result<Vec<u8>> {
    let path = index_file(dir, index_sha256);
    let bytes = fs::read(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => InstallError::State {
            path: path.clone(),
            reason: "the installed release's index is not kept here (an older rininstall installed it): apply its bundle again, which changes nothing else, then take the inventory".into(),
        },
        _ => InstallError::Io {
            path: path.clone(),
            source,
        },
    })?;
    if rin_bundle::digest::sha256_hex(&bytes) != index_sha256 {
        return Err(InstallError::State {
            path,
            reason: "it does not hash to its name: apply the installed release's bundle again"
                .into(),
        });
    }
    Ok(bytes)
}

pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    rin_support::fs::write_atomic(path, bytes, mode).map_err(file_error)
}

/// A failed write as the installer's error.
pub fn file_error(e: FileError) -> InstallError {
    InstallError::Io {
        path: e.path,
        source: e.source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named_until_the_first_lets_go() {
        let t = tempfile::tempdir().unwrap();
        let first = State::open(t.path()).unwrap();
        let e = State::open(t.path()).unwrap_err().to_string();
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        assert!(e.contains("another rininstall"), "{e}");
        drop(first);
        State::open(t.path()).unwrap();
    }

    #[test]
    fn a_run_that_made_the_state_directory_and_recorded_nothing_leaves_none() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("root/var/lib/rininstall");
        let s = State::open(&dir).unwrap();
        fs::create_dir_all(s.dir().join("staging")).unwrap();
        drop(s);
        assert!(!t.path().join("root").exists());
        // With a record, everything stays but an empty staging/.
        let s = State::open(&dir).unwrap();
        fs::create_dir_all(s.dir().join("staging")).unwrap();
        s.record(&Release::default()).unwrap();
        drop(s);
        assert!(dir.join("release.json").exists() && dir.join("lock").exists());
        assert!(!dir.join("staging").exists());
        // A directory that existed before the run stays, lock and all.
        let kept = t.path().join("kept");
        fs::create_dir(&kept).unwrap();
        drop(State::open(&kept).unwrap());
        assert!(kept.join("lock").exists());
    }

    #[test]
    fn the_release_record_round_trips_and_is_absent_at_first() {
        let t = tempfile::tempdir().unwrap();
        let s = State::open(t.path()).unwrap();
        assert_eq!(s.release().unwrap(), None);
        let r = Release {
            stack: "demo".into(),
            version: "1.2.0".into(),
            k3s: Some("v1.31.4+k3s1".into()),
            index_sha256: "ab".repeat(32),
            installed: "2026-11-22T10:00:00Z".into(),
            revision: Some(2),
            ..Default::default()
        };
        s.record(&r).unwrap();
        assert_eq!(s.release().unwrap(), Some(r));
        assert!(!rin_support::fs::partial_path(&t.path().join("release.json")).exists());
    }

    #[test]
    fn a_release_s_objects_are_kept_for_rollback_and_forgotten_beyond_keep() {
        let t = tempfile::tempdir().unwrap();
        let s = State::open(t.path()).unwrap();
        let objects = crate::cluster::objects::parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: rin-system}\n",
            "manifests/a.yaml",
            crate::cluster::objects::Origin::Stack,
        )
        .unwrap();
        let kept = |revision| Kept {
            record: crate::release::Release {
                revision: Some(revision),
                stack: "demo".into(),
                version: format!("1.{revision}.0"),
                k3s: None,
                index_sha256: "ab".into(),
                images: Default::default(),
                inventory: vec![objects[0].reference.clone()],
                installed: "2026-11-22T10:00:00Z".into(),
            },
            objects: objects.clone(),
        };
        for r in 1..=3 {
            let k = kept(r);
            s.keep_objects(&k.record, &k.objects).unwrap();
        }
        let back = s.kept_objects(2).unwrap();
        assert_eq!(back.record, kept(2).record);
        assert_eq!(back.objects, objects);
        s.forget_objects_except(&[3, 2]).unwrap();
        let e = s.kept_objects(1).unwrap_err().to_string();
        assert!(e.contains("revision 1 are not kept"), "{e}");
        assert!(s.kept_objects(3).is_ok());
        // Nothing but the records in the directory: no partial files.
        let mut names: Vec<_> = fs::read_dir(t.path().join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["2.json", "3.json"]);
    }
}
