//! One way to write a file: into a temporary sibling, synced, renamed over the destination, the
//! directory synced. A reader sees the old content or the new, never a part, and after a crash
//! the destination is one or the other; an unfinished temporary file is removed when its
//! [`AtomicFile`] is dropped without being committed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An I/O failure and the file it happened to.
#[derive(Debug)]
pub struct FileError {
    pub path: PathBuf,
    pub source: io::Error,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Whether `e` says the disk (or the user's quota) is full: ENOSPC or EDQUOT.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError {
        path: path.to_path_buf(),
        source,
    }
}

/// A file being written under a temporary name beside `dest`, which gets its name only on
/// [`commit`](AtomicFile::commit).
#[derive(Debug)]
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    /// The temporary file has its final name (or is gone).
    done: bool,
}

impl AtomicFile {
    /// Start writing `dest` (its directory is made when missing) with permission bits `mode`.
    pub fn create(dest: &Path, mode: u32) -> Result<AtomicFile, FileError> {
        let dir = parent(dest);
        fs::create_dir_all(dir).map_err(at(dir))?;
        sweep_stale_once(dir);
        let tmp = partial_path(dest);
        let file = create_mode(&tmp, mode).map_err(at(&tmp))?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(file),
            done: false,
        })
    }

    /// The temporary file's path (for messages about a failed write).
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Sync the file, rename it over the destination, sync the directory.
    pub fn commit(mut self) -> Result<(), FileError> {
        self.sync()?;
        fs::rename(&self.tmp, &self.dest).map_err(at(&self.dest))?;
        self.done = true;
        sync_dir(parent(&self.dest))
    }

    /// As [`commit`](AtomicFile::commit), but an existing destination is never replaced: the
    /// error's kind is then `AlreadyExists` and the temporary file is removed.
    pub fn commit_new(mut self) -> Result<(), FileError> {
        self.sync()?;
        fs::hard_link(&self.tmp, &self.dest).map_err(at(&self.dest))?;
        self.done = true;
        fs::remove_file(&self.tmp).map_err(at(&self.tmp))?;
        sync_dir(parent(&self.dest))
    }

    fn sync(&mut self) -> Result<(), FileError> {
        match self.file.take() {
            Some(f) => f.sync_all().map_err(at(&self.tmp)),
            None => Ok(()),
        }
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the file was already committed"))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Write `bytes` to `dest` atomically, replacing what is there.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let mut f = AtomicFile::create(dest, mode)?;
    f.write_all(bytes).map_err(at(&f.tmp.clone()))?;
    f.commit()
}

/// Write `bytes` to `dest` atomically, refusing (`AlreadyExists`) to replace a file.
pub fn write_new(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let mut f = AtomicFile::create(dest, mode)?;
    f.write_all(bytes).map_err(at(&f.tmp.clone()))?;
    f.commit_new()
}

/// `dest`'s temporary sibling, `.NAME.PID.rin-partial`: hidden, never taken for the real file
/// by name, and apart from the one another process may be writing at the same time.
pub fn partial_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}.{}.rin-partial", std::process::id()))
}

/// Remove the temporary files in `dir` that a process which is gone left behind (killed in the
/// middle of writing, so its `Drop` never ran): `.NAME.PID.rin-partial` whose PID is not a
/// running process. A K3s image archive is hundreds of MB; on a small disk a few of those would
/// fail the next run's free-space check. One whose process runs (this one, another writer) is
/// left alone; so is everything when `/proc` cannot tell. Best effort: what cannot be read or
/// removed stays.
pub fn sweep_stale(dir: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .filter(|f| f.starts_with('.'))
            .and_then(|f| f.strip_suffix(".rin-partial"))
            .and_then(|f| f.rsplit_once('.'))
            .map(|(_, pid)| pid)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if !proc.join(pid).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// [`sweep_stale`] the first time this process writes into `dir` (a cache directory of
/// thousands of blobs is listed once, not once per file).
fn sweep_stale_once(dir: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let first = SWEPT.lock().is_ok_and(|mut swept| {
        let new = !swept.iter().any(|d| d == dir);
        if new {
            swept.push(dir.to_path_buf());
        }
        new
    });
    if first {
        sweep_stale(dir);
    }
}

/// Rename the synced file or directory `from` over `to`, then sync `to`'s directory.
pub fn rename_synced(from: &Path, to: &Path) -> Result<(), FileError> {
    fs::rename(from, to).map_err(at(to))?;
    sync_dir(parent(to))
}

/// Sync a directory, so the names it holds survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A new file (replacing a stale one) with exactly `mode`, whatever the umask.
fn create_mode(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_no_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("a/b/config.yaml");
        write_atomic(&dest, b"one", 0o600).unwrap();
        write_atomic(&dest, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let names: Vec<_> = fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn an_uncommitted_file_is_removed_and_the_old_one_kept() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("release.json");
        write_atomic(&dest, b"old", 0o644).unwrap();
        let mut f = AtomicFile::create(&dest, 0o644).unwrap();
        f.write_all(b"half").unwrap();
        assert!(partial_path(&dest).exists());
        drop(f);
        assert!(!partial_path(&dest).exists());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
    }

    #[test]
    fn a_killed_writers_temporary_file_is_swept_and_a_running_ones_kept() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("k3s-airgap-images-amd64.tar.zst");
        // A PID above any pid_max (2^22): no such process. And a process that runs.
        let gone = t
            .path()
            .join(".k3s-airgap-images-amd64.tar.zst.99999999.rin-partial");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let running = t.path().join(format!(
            ".k3s-airgap-images-amd64.tar.zst.{}.rin-partial",
            child.id()
        ));
        // Another file's leftover, and names that only look like one.
        let other = t.path().join(".config.yaml.99999999.rin-partial");
        let odd = t
            .path()
            .join(".k3s-airgap-images-amd64.tar.zst.12ab.rin-partial");
        let visible = t.path().join("k3s.99999999.rin-partial");
        for f in [&gone, &running, &other, &odd, &visible] {
            fs::write(f, b"half").unwrap();
        }
        write_atomic(&dest, b"whole", 0o644).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(!gone.exists() && !other.exists());
        assert!(running.exists() && odd.exists() && visible.exists());
        assert_eq!(fs::read(&dest).unwrap(), b"whole");
    }

    #[test]
    fn write_new_never_replaces() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("k.key");
        write_new(&dest, b"first", 0o600).unwrap();
        let e = write_new(&dest, b"second", 0o600).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&dest).unwrap(), b"first");
        assert!(!partial_path(&dest).exists());
    }
}
