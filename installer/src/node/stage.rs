//! The first pass of `apply`: verify the whole bundle while streaming it, keeping the manifests
//! and indexes the seeding plan needs and writing the files the node needs (K3s's files for the
//! node's architecture, those not already in place) into a staging directory
//! under the state directory. The staging directory appears under its final name only after the
//! whole bundle verified; until then it is `.NAME.partial` and a failure removes it.

use crate::error::{InstallError, Result};
use crate::node::seed::{Collect, Plan};
use rin_bundle::Arch;
use rin_bundle::index::{Entry, Index};
use rin_bundle::{Opened, Progress, Sink};
use rin_support::fs::{AtomicFile, FileError};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the first pass produced.
#[derive(Debug)]
pub struct Staged {
    pub plan: Plan,
    /// The entries kept in memory for the cluster step, by path.
    pub kept: HashMap<String, Vec<u8>>,
    /// The staging directory (None in a dry run, which writes nothing).
    pub dir: Option<PathBuf>,
}

impl Staged {
    /// Where the bundle entry `path` was staged.
    pub fn path(&self, path: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(path))
    }
}

/// Writes the entries it is given into a directory, each through a temporary file renamed only
/// after its bytes hashed right (one left unfinished is removed as it is dropped).
pub(crate) struct Stage {
    dir: PathBuf,
    wanted: BTreeSet<String>,
    file: Option<AtomicFile>,
}

impl Stage {
    pub(crate) fn new(dir: &Path, wanted: BTreeSet<String>) -> Self {
        Stage {
            dir: dir.to_path_buf(),
            wanted,
            file: None,
        }
    }
}

fn output(e: FileError) -> rin_bundle::BundleError {
    rin_bundle::BundleError::Output {
        path: e.path,
        source: e.source,
    }
}

impl Sink for Stage {
    fn begin(&mut self, entry: &Entry) -> rin_bundle::Result<bool> {
        if !self.wanted.contains(&entry.path) {
            return Ok(false);
        }
        // Index paths are checked safe (relative, no `..`) before any entry streams.
        let target = self.dir.join(&entry.path);
        self.file = Some(AtomicFile::create(&target, entry.mode).map_err(output)?);
        Ok(true)
    }

    fn data(&mut self, chunk: &[u8]) -> rin_bundle::Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.write_all(chunk)
                .map_err(|source| rin_bundle::BundleError::Output {
                    path: f.tmp().to_path_buf(),
                    source,
                })?;
        }
        Ok(())
    }

    fn end(&mut self, _entry: &Entry) -> rin_bundle::Result<()> {
        match self.file.take() {
            Some(f) => f.commit().map_err(output),
            None => Ok(()),
        }
    }
}

/// One pass feeding two sinks, as `tee` feeds two outputs; each entry goes to those that want it.
struct Tee<'a>(&'a mut dyn Sink, &'a mut dyn Sink, [bool; 2]);

impl Sink for Tee<'_> {
    fn begin(&mut self, entry: &Entry) -> rin_bundle::Result<bool> {
        self.2 = [self.0.begin(entry)?, self.1.begin(entry)?];
        Ok(self.2[0] || self.2[1])
    }
    fn data(&mut self, chunk: &[u8]) -> rin_bundle::Result<()> {
        if self.2[0] {
            self.0.data(chunk)?;
        }
        if self.2[1] {
            self.1.data(chunk)?;
        }
        Ok(())
    }
    fn end(&mut self, entry: &Entry) -> rin_bundle::Result<()> {
        if self.2[0] {
            self.0.end(entry)?;
        }
        if self.2[1] {
            self.1.end(entry)?;
        }
        Ok(())
    }
}

/// The bundle paths a node of `arch` may need on disk: its K3s files.
pub fn node_paths(index: &Index, arch: &Arch) -> BTreeSet<String> {
    crate::node::host::k3s_entries(index, arch)
        .all()
        .map(|e| e.path.clone())
        .collect()
}

/// Verify the opened bundle in one pass; stage `wanted` under `staging` unless it is None
/// (dry run), and hand every entry to `also` as well (apply's seeding during the pass, or
/// nothing). A staging directory left by an earlier, interrupted run is replaced.
pub fn first_pass(
    opened: Opened,
    wanted: BTreeSet<String>,
    keep: BTreeSet<String>,
    staging: Option<&Path>,
    also: &mut dyn Sink,
    progress: &dyn Progress,
) -> Result<Staged> {
    let index = opened.index.clone();
    let mut collect = Collect::new(&index);
    collect.extra = keep;
    let Some(dir) = staging else {
        let verified = opened.verify_into(&mut Tee(&mut collect, also, [false; 2]), progress)?;
        let plan = Plan::build(&index, verified.index_sha256, &collect.docs)?;
        let kept = take_kept(&mut collect);
        return Ok(Staged {
            plan,
            kept,
            dir: None,
        });
    };
    let tmp = dir.with_file_name(format!(
        ".{}.partial",
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| InstallError::Io { path: p, source }
    };
    for stale in [&tmp, &dir.to_path_buf()] {
        if stale.exists() {
            fs::remove_dir_all(stale).map_err(io(stale))?;
        }
    }
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut stage = Stage::new(&tmp, wanted);
    let mut stage_too = Tee(&mut stage, also, [false; 2]);
    let verified = opened.verify_into(&mut Tee(&mut collect, &mut stage_too, [false; 2]), progress);
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e.into());
        }
    };
    rin_support::fs::rename_synced(&tmp, dir).map_err(crate::node::state::file_error)?;
    let plan = Plan::build(&index, verified.index_sha256, &collect.docs)?;
    let kept = take_kept(&mut collect);
    Ok(Staged {
        plan,
        kept,
        dir: Some(dir.to_path_buf()),
    })
}

/// The kept entries, moved out of what the pass collected (the plan is built already).
fn take_kept(collect: &mut Collect) -> HashMap<String, Vec<u8>> {
    let extra = std::mem::take(&mut collect.extra);
    extra
        .into_iter()
        .filter_map(|p| {
            let bytes = collect.docs.remove(&p)?;
            Some((p, bytes))
        })
        .collect()
}

/// Verify the whole bundle and write its installer for `arch` to `dest` (mode 0755): through a
/// temporary directory beside `dest`, renamed into place only after every entry verified, so a
/// refused bundle leaves nothing. Returns the installer's size.
pub fn extract_installer(
    bundle: &Path,
    trust: &dyn rin_bundle::Trust,
    arch: &Arch,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<u64> {
    let opened = rin_bundle::open(bundle, trust)?;
    let path = rin_bundle::k3s::installer_path(arch);
    let Some(entry) = opened
        .index
        .entries
        .iter()
        .find(|e| e.path == path)
        .cloned()
    else {
        let carried: Vec<String> = opened
            .index
            .entries
            .iter()
            .filter_map(|e| e.path.strip_prefix("installer/rininstall-linux-"))
            .map(str::to_string)
            .collect();
        return Err(InstallError::Bundle {
            reason: format!(
                "{} carries no installer for {arch} ({}): build it with `rinbundle build --installers DIR`",
                bundle.display(),
                if carried.is_empty() {
                    "it carries none".to_string()
                } else {
                    format!("it carries {}", carried.join(", "))
                }
            ),
        });
    };
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = parent.join(format!(
        ".{}.partial",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| InstallError::Io { path: p, source }
    };
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut stage = Stage::new(&tmp, BTreeSet::from([path.clone()]));
    let done = opened
        .verify_into(&mut stage, progress)
        .map_err(InstallError::from)
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            let staged = tmp.join(&path);
            fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).map_err(io(&staged))?;
            rin_support::fs::rename_synced(&staged, dest).map_err(crate::node::state::file_error)
        });
    let _ = fs::remove_dir_all(&tmp);
    done.map(|()| entry.size)
}
