//! Files carried as they are: the installers, K3s's release files from a directory (checked
//! against the release's checksum list) and manifest and file trees, each hashed once.

use crate::error::{BuildError, Result};
use crate::fetched::FileEntry;
use rin_bundle::digest::sha256_reader;
use rin_bundle::index;
use rin_bundle::{Arch, k3s};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// The sha256 (hex) and size of a file, read once in a stream.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let read_err = |source| BuildError::Read {
        path: path.to_path_buf(),
        source,
    };
    sha256_reader(File::open(path).map_err(read_err)?).map_err(read_err)
}

impl FileEntry {
    fn hashed(path: String, source: PathBuf, mode: u32) -> Result<Self> {
        let (sha256, size) = hash_file(&source)?;
        Ok(Self::known(path, source, sha256, size, mode))
    }

    /// A regular file carried as `path`, mode 0755 if it is executable, else 0644.
    pub fn regular(path: String, source: PathBuf) -> Result<Self> {
        let meta = fs::symlink_metadata(&source).map_err(|e| BuildError::Read {
            path: source.clone(),
            source: e,
        })?;
        if !meta.is_file() {
            return Err(BuildError::Read {
                path: source,
                source: std::io::Error::other(
                    "only regular files and directories can be carried (not links or special files)",
                ),
            });
        }
        Self::hashed(path, source, mode_of(&meta))
    }
}

/// `rininstall-linux-<arch>` from `dir`, as the bundle entry `installer/rininstall-linux-<arch>`:
/// an executable ELF file for that architecture (its header is checked, so a binary of another
/// architecture is never carried under the wrong name).
pub fn installer(dir: &Path, arch: &Arch) -> Result<FileEntry> {
    let name = k3s::installer(arch);
    let path = dir.join(&name);
    let bad = |reason: String| BuildError::Installer {
        path: path.clone(),
        reason,
    };
    let mut head = [0u8; 20];
    {
        use std::io::Read as _;
        let mut f = fs::File::open(&path).map_err(|e| bad(e.to_string()))?;
        f.read_exact(&mut head)
            .map_err(|_| bad("it is too short to be an executable".into()))?;
    }
    if &head[..4] != b"\x7fELF" {
        return Err(bad("it is not an ELF executable".into()));
    }
    // e_machine (little-endian, at offset 18).
    let machine = u16::from_le_bytes([head[18], head[19]]);
    let want = match arch.as_str() {
        "amd64" => 62,
        "arm64" => 183,
        "arm" => 40,
        "riscv64" => 243,
        "s390x" => 22,
        "ppc64le" => 21,
        other => return Err(bad(format!("no installer is built for {other}"))),
    };
    if machine != want {
        return Err(bad(format!(
            "it is built for another architecture (ELF machine {machine}), not {arch}"
        )));
    }
    FileEntry::hashed(format!("installer/{name}"), path.clone(), index::MODE_EXEC)
}

fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 != 0 {
        index::MODE_EXEC
    } else {
        index::MODE_FILE
    }
}

/// Every regular file below `dir` (sorted, dot-files skipped), carried under `prefix/`.
pub fn tree(dir: &Path, prefix: &str, out: &mut Vec<FileEntry>) -> Result<()> {
    let read = |p: &Path| {
        fs::read_dir(p).map_err(|source| BuildError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut names: Vec<_> = read(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let name_s = name.to_string_lossy().into_owned();
        if name_s.starts_with('.') {
            continue;
        }
        let path = dir.join(&name);
        let meta = fs::symlink_metadata(&path).map_err(|source| BuildError::Read {
            path: path.clone(),
            source,
        })?;
        let rel = format!("{prefix}/{name_s}");
        if meta.is_dir() {
            tree(&path, &rel, out)?;
        } else {
            out.push(FileEntry::regular(rel, path)?);
        }
    }
    Ok(())
}

/// The K3s release files for the given architectures, checked against `sha256sum-<arch>.txt`.
pub fn k3s_files(dir: &Path, version: &str, arches: &[Arch]) -> Result<Vec<FileEntry>> {
    let err = |reason: String| BuildError::K3s {
        version: version.into(),
        reason,
    };
    let mut out = Vec::new();
    let push = |name: &str, exec: bool, out: &mut Vec<FileEntry>| -> Result<bool> {
        let p = dir.join(name);
        if !p.is_file() {
            return Ok(false);
        }
        let mode = if exec {
            index::MODE_EXEC
        } else {
            index::MODE_FILE
        };
        out.push(FileEntry::hashed(k3s::path(name), p, mode)?);
        Ok(true)
    };
    if !push(k3s::INSTALL_SCRIPT, true, &mut out)? {
        return Err(err(format!("{} has no install.sh", dir.display())));
    }
    for arch in arches {
        let bin = k3s::binary(arch);
        let start = out.len();
        if !push(&bin, true, &mut out)? {
            return Err(err(format!(
                "{} has no {bin} (the K3s binary for {arch})",
                dir.display()
            )));
        }
        let images = k3s::AIRGAP_SUFFIXES
            .iter()
            .map(|x| format!("{}{x}", k3s::airgap_images(arch)))
            .find(|n| dir.join(n).is_file());
        let Some(images) = images else {
            return Err(err(format!(
                "{} has no {}.zst",
                dir.display(),
                k3s::airgap_images(arch)
            )));
        };
        push(&images, false, &mut out)?;
        let sums = k3s::sums(arch);
        if push(&sums, false, &mut out)? {
            let text = fs::read_to_string(dir.join(&sums)).map_err(|source| BuildError::Read {
                path: dir.join(&sums),
                source,
            })?;
            let listed = k3s::parse_sums(&text);
            for f in &out[start..] {
                let name = f.entry.path.trim_start_matches("k3s/");
                if let Some(expected) = listed.get(name) {
                    let actual = f.entry.sha256.clone();
                    if actual != *expected {
                        return Err(BuildError::DigestMismatch {
                            path: f.source.clone(),
                            expected: expected.to_string(),
                            actual,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}
