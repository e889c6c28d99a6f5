//! Real Debian packages for the host packages tests: `.deb` files made by `dpkg-deb`, an APT
//! repository made by `dpkg-scanpackages` (`dists/SUITE/main/binary-ARCH/Packages.gz` and the
//! pool), and a node's root that dpkg can install into (`--root`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A package to make.
#[derive(Debug, Clone)]
pub struct Deb {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// More control fields (`Depends: ...\n`).
    pub fields: &'static str,
    /// Files it installs: (path under the root, content).
    pub files: Vec<(&'static str, String)>,
}

impl Deb {
    pub fn new(name: &str, version: &str, arch: &str) -> Deb {
        Deb {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            fields: "",
            files: vec![("usr/share/rin-test/NAME", format!("{name} {version}\n"))],
        }
    }

    pub fn fields(mut self, fields: &'static str) -> Deb {
        self.fields = fields;
        self
    }

    pub fn file(mut self, path: &'static str, content: &str) -> Deb {
        self.files.push((path, content.to_string()));
        self
    }

    /// Build it with `dpkg-deb` into `dir` as `NAME_VERSION_ARCH.deb`.
    pub fn build(&self, dir: &Path) -> PathBuf {
        let tree = dir.join(format!("tree-{}-{}", self.name, self.version));
        std::fs::create_dir_all(tree.join("DEBIAN")).expect("mkdir");
        std::fs::write(
            tree.join("DEBIAN/control"),
            format!(
                "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Rin tests <rin@example.invalid>\n{}Description: a package the tests made\n",
                self.name, self.version, self.arch, self.fields
            ),
        )
        .expect("control");
        for (path, content) in &self.files {
            let path = path.replace("NAME", &self.name);
            let p = tree.join(&path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("file");
        }
        let version = self
            .version
            .split_once(':')
            .map_or(self.version.as_str(), |(_, v)| v);
        let out = dir.join(format!("{}_{version}_{}.deb", self.name, self.arch));
        let o = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "-b"])
            .arg(&tree)
            .arg(&out)
            .output()
            .expect("dpkg-deb (apt-get install dpkg)");
        assert!(o.status.success(), "dpkg-deb: {}", crate::text(&o));
        std::fs::remove_dir_all(&tree).expect("rm tree");
        out
    }
}

/// An APT repository in `dir`: every package under `pool/main/`, and for each of `arches`
/// `dists/SUITE/main/binary-ARCH/Packages.gz` as `dpkg-scanpackages` writes it. Returns every
/// file of the repository (path relative to `dir`, bytes), to serve.
pub fn repository(
    dir: &Path,
    suite: &str,
    arches: &[&str],
    debs: &[Deb],
) -> Vec<(String, Vec<u8>)> {
    let pool = dir.join("pool/main");
    std::fs::create_dir_all(&pool).expect("mkdir pool");
    let mut out = Vec::new();
    for d in debs {
        let f = d.build(&pool);
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        out.push((
            format!("pool/main/{name}"),
            std::fs::read(&f).expect("read"),
        ));
    }
    for arch in arches {
        let o = Command::new("dpkg-scanpackages")
            .args(["-m", "-a", arch, "pool"])
            .current_dir(dir)
            .output()
            .expect("dpkg-scanpackages (apt-get install dpkg-dev)");
        assert!(o.status.success(), "dpkg-scanpackages: {}", crate::text(&o));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&o.stdout).expect("gzip");
        out.push((
            format!("dists/{suite}/main/binary-{arch}/Packages.gz"),
            gz.finish().expect("gzip"),
        ));
    }
    out
}

/// A node's root for dpkg: `/etc/os-release` saying `id` and `version_id`, and dpkg's database
/// holding `installed` (`(name, version)`, each installed).
pub fn node_root(root: &Path, id: &str, version_id: &str, installed: &[(&str, &str)]) {
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(d)).expect("mkdir");
    }
    std::fs::create_dir_all(root.join("etc")).expect("mkdir etc");
    std::fs::write(
        root.join("etc/os-release"),
        format!("PRETTY_NAME=\"test\"\nID={id}\nVERSION_ID=\"{version_id}\"\n"),
    )
    .expect("os-release");
    let status: String = installed
        .iter()
        .map(|(n, v)| {
            format!(
                "Package: {n}\nStatus: install ok installed\nMaintainer: x <x@example.invalid>\nArchitecture: all\nVersion: {v}\nDescription: there already\n\n"
            )
        })
        .collect();
    std::fs::write(admin.join("status"), status).expect("status");
    std::fs::write(admin.join("available"), "").expect("available");
}

/// What dpkg's database under `root` says is installed: `name version` lines, sorted.
pub fn installed(root: &Path) -> Vec<String> {
    let o = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${db:Status-Abbrev}${Package} ${Version}\n"])
        .output()
        .expect("dpkg-query");
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("ii ").map(|s| s.trim().to_string()))
        .collect();
    v.sort();
    v
}

/// A signing key made with GnuPG in a home directory of its own (`dir`), as a repository's
/// archive key: `algo` is gpg's name for it (`rsa3072`, `ed25519`).
pub struct ArchiveKey {
    home: PathBuf,
}

impl ArchiveKey {
    pub fn new(dir: &Path, algo: &str) -> ArchiveKey {
        let home = dir.to_path_buf();
        std::fs::create_dir_all(&home).expect("mkdir gnupg home");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let key = ArchiveKey { home };
        key.gpg(&[
            "--quick-gen-key",
            "Rin Test Archive <archive@example.invalid>",
            algo,
            "sign",
            "never",
        ]);
        key
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let o = Command::new("gpg")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg (apt-get install gpg gpg-agent)");
        assert!(o.status.success(), "gpg {args:?}: {}", crate::text(&o));
        o.stdout
    }

    /// Add a signing subkey (`algo`), which gpg then signs with rather than the primary key.
    pub fn add_signing_subkey(&self, algo: &str) {
        let listed =
            String::from_utf8_lossy(&self.gpg(&["--list-keys", "--with-colons"])).into_owned();
        let fpr = listed
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| !f.is_empty()))
            .expect("the primary key's fingerprint")
            .to_string();
        self.gpg(&["--quick-add-key", &fpr, algo, "sign", "never"]);
    }

    /// The public key, ASCII-armored: what a stack's `signed_by` names.
    pub fn public(&self) -> Vec<u8> {
        self.gpg(&["--armor", "--export"])
    }

    /// `dists/SUITE/InRelease` for `files` (the repository's files as [`repository`] returns
    /// them): a Release listing the sha256 and size of each file under `dists/SUITE/`,
    /// clear-signed.
    pub fn in_release(&self, suite: &str, files: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
        self.in_release_with(suite, files, "")
    }

    /// [`in_release`](Self::in_release) with more `fields` in the Release (`Valid-Until: ...\n`).
    pub fn in_release_with(
        &self,
        suite: &str,
        files: &[(String, Vec<u8>)],
        fields: &str,
    ) -> (String, Vec<u8>) {
        use sha2::Digest as _;
        let dir = format!("dists/{suite}/");
        let mut release = format!("Origin: rin-test\nSuite: {suite}\n{fields}SHA256:\n");
        for (path, bytes) in files {
            if let Some(rel) = path.strip_prefix(&dir) {
                let sha = hex::encode(sha2::Sha256::digest(bytes));
                release.push_str(&format!(" {sha} {} {rel}\n", bytes.len()));
            }
        }
        let plain = self.home.join("Release");
        std::fs::write(&plain, release).expect("write Release");
        let signed = self.home.join("InRelease");
        let _ = std::fs::remove_file(&signed);
        self.gpg(&[
            "--clearsign",
            "--output",
            &signed.to_string_lossy(),
            &plain.to_string_lossy(),
        ]);
        (
            format!("{dir}InRelease"),
            std::fs::read(&signed).expect("read InRelease"),
        )
    }
}
