use std::path::PathBuf;

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a stack directory: {reason}", dir.display())]
    NoStack { dir: PathBuf, reason: String },
    #[error("stack definition {path}: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error("installer {}: {reason}", path.display())]
    Installer { path: PathBuf, reason: String },
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("image {image}: its layout directory {} does not exist", dir.display())]
    NoLayout { image: String, dir: PathBuf },
    #[error("image {image} has no {platform} manifest (it has: {available})")]
    MissingPlatform {
        image: String,
        platform: String,
        available: String,
    },
    #[error("{path} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("chart {chart}: {reason}")]
    Chart { chart: String, reason: String },
    #[error("K3s {version}: {reason}")]
    K3s { version: String, reason: String },
    #[error("host packages for {target}: {reason}")]
    HostPackages { target: String, reason: String },
    #[error("host packages {target}: {reason}")]
    RepositorySignature { target: String, reason: String },
    #[error("two entries would have the path {path:?}")]
    PathClash { path: String },
    #[error("cache {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no room to write {path}: the disk is full")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fetch {what}: the server's certificate is not trusted: {reason}")]
    Certificate { what: String, reason: String },
    #[error("cannot fetch {what}: {reason}")]
    Fetch { what: String, reason: String },
    #[error("{what} not found: {reason}")]
    NotFound { what: String, reason: String },
    #[error("{what}: access denied: {reason}")]
    Auth { what: String, reason: String },
    #[error(
        "{what}: the source served content that does not match: expected {expected}, got {actual}"
    )]
    Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{image}: the lock pins {locked}, which the source no longer serves (the tag now gives {current})"
    )]
    LockGone {
        image: String,
        locked: String,
        current: String,
    },
    #[error("lock file {path}: {reason}")]
    Lock { path: PathBuf, reason: String },
    #[error("--locked, but {path} is missing or stale: {}", changes.join("; "))]
    Locked { path: PathBuf, changes: Vec<String> },
    #[error("the stack uses images the bundle does not carry: {}", images.join(", "))]
    MissingImages { images: Vec<String> },
    #[error("base {path}: {reason}")]
    Base { path: PathBuf, reason: String },
    #[error(transparent)]
    Bundle(#[from] rin_bundle::BundleError),
}

impl BuildError {
    /// An I/O failure on the cache's file `path`: [`BuildError::DiskFull`] when the disk (or
    /// quota) is full, which no retry mends, else [`BuildError::Cache`].
    pub fn cache(path: PathBuf, source: std::io::Error) -> BuildError {
        if rin_support::fs::is_disk_full(&source) {
            BuildError::DiskFull { path, source }
        } else {
            BuildError::Cache { path, source }
        }
    }

    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            BuildError::Read { .. } => {
                "check that the stack directory holds every file bundle.yaml names"
            }
            BuildError::NoStack { .. } => {
                "give --stack the directory that holds the stack's bundle.yaml (docs/STACK.md; examples/demo is one)"
            }
            BuildError::Spec { .. } => "fix bundle.yaml; docs/STACK.md describes every field",
            BuildError::Installer { .. } => {
                "build the installers with dist/build.sh (it writes dist/out/rininstall-linux-ARCH for each architecture) and give that directory to --installers"
            }
            BuildError::Image { .. } => {
                "check the image's `layout:` directory: it must be an OCI image layout (oci-layout, index.json, blobs/)"
            }
            BuildError::NoLayout { .. } => {
                "write the image's OCI layout there first (e.g. `skopeo copy --all docker://REF oci:DIR:NAME`); examples/demo's layouts are made by ./examples/demo/run.sh"
            }
            BuildError::MissingPlatform { .. } => {
                "build the image for that architecture too, or leave the architecture out with --arch"
            }
            BuildError::DigestMismatch { .. } => {
                "the source is corrupt: rebuild or re-export that image or file"
            }
            BuildError::Chart { .. } => {
                "package the chart with `helm package` and check name and version in bundle.yaml"
            }
            BuildError::K3s { .. } => {
                "put the K3s release files (k3s, k3s-arm64, k3s-airgap-images-<arch>.tar.zst, sha256sum-<arch>.txt, install.sh) in the k3s.files directory"
            }
            BuildError::HostPackages { .. } => {
                "check the package names and the target's repo, suite and components in bundle.yaml (`apt-cache policy NAME` on a machine of that release shows where a package comes from)"
            }
            BuildError::RepositorySignature { .. } => {
                "`signed_by:` must name the keyring that signs the repository (Debian's: /usr/share/keyrings/debian-archive-keyring.gpg from the debian-archive-keyring package); if it does, what the repository serves was altered or is a mirror caught mid-update: do not use it until it verifies"
            }
            BuildError::PathClash { .. } => "rename one of the files",
            BuildError::Cache { .. } => {
                "check the cache directory (--cache) is writable and has room; removing it is always safe"
            }
            BuildError::DiskFull { .. } => {
                "free space on that disk, or put the cache (--cache DIR) or the bundle (-o FILE) on a bigger one; a re-run resumes the downloads kept as .partial files"
            }
            BuildError::Certificate { .. } => {
                "give the CA certificate (PEM) that issued the server's certificate with --ca-file (a CA file given that did not issue it fails the same way); `openssl s_client -connect HOST:PORT -showcerts` shows the issuer"
            }
            BuildError::Fetch { .. } => {
                "check the network, proxy variables (HTTPS_PROXY, NO_PROXY), --ca-file for a private CA, or --insecure-registry for a plain-HTTP registry; re-running resumes what was fetched"
            }
            BuildError::NotFound { .. } => {
                "check the reference or version in bundle.yaml, and that it exists at the source"
            }
            BuildError::Auth { .. } => {
                "log in with `docker login HOST` (rinbundle reads ~/.docker/config.json and its credential helpers)"
            }
            BuildError::Mismatch { .. } => {
                "the source or the network path altered the content; nothing was kept. Check the mirror or proxy, then retry"
            }
            BuildError::LockGone { .. } => {
                "if the new content is wanted, run `rinbundle lock` to re-resolve and review the change; else restore the old tag at the source"
            }
            BuildError::Lock { .. } => "fix or delete the lock file, then run `rinbundle lock`",
            BuildError::Locked { .. } => {
                "run `rinbundle lock` (or a build without --locked) and commit the updated lock"
            }
            BuildError::MissingImages { .. } => {
                "add the images to bundle.yaml's `images:`, or pass --allow-missing-image if the site has them another way"
            }
            BuildError::Base { .. } => {
                "give --base the bundle the site installed (its file or part list), its rinbundle.json, or the site's inventory (rininstall inventory -o site.json)"
            }
            BuildError::Bundle(b) => return b.hint(),
        })
    }
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;

    #[test]
    fn an_error_renders_each_cause_once_with_its_hint() {
        let e = anyhow::Error::from(BuildError::Read {
            path: "stack/bundle.yaml".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        let r = rin_cli::rendered(&e, &|e| {
            e.downcast_ref::<BuildError>()
                .and_then(|b| b.hint())
                .map(str::to_string)
        });
        assert_eq!(r.error, "cannot read stack/bundle.yaml: entity not found");
        assert_eq!(
            r.hint.as_deref(),
            Some("check that the stack directory holds every file bundle.yaml names")
        );
        assert_eq!(r.code, rin_cli::exit::ERROR);
    }
}
