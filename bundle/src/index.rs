//! The bundle index (`rinbundle.json`): its types, its canonical JSON form, and its validation.

use crate::digest::{is_oci_digest, is_sha256_hex};
use crate::error::{BundleError, Result};
use crate::json::canonical_json;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `format` value of this version of the format.
pub const FORMAT: &str = "rinbundle/v1";
/// Path of the first entry.
pub const INDEX_PATH: &str = "rinbundle.json";
/// Path of the second entry.
pub const SIGNATURES_PATH: &str = "rinbundle.sig";
/// Largest index a reader accepts.
pub const MAX_INDEX_SIZE: u64 = 16 << 20;
/// Largest signature entry a reader accepts.
pub const MAX_SIGNATURES_SIZE: u64 = 1 << 20;
/// Mode of an ordinary entry.
pub const MODE_FILE: u32 = 0o644;
/// Mode of an executable entry (the K3s binary, install.sh, rininstall).
pub const MODE_EXEC: u32 = 0o755;
/// Longest path an entry may have.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest path component, in bytes: what Linux file systems take (`NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Always [`FORMAT`].
    pub format: String,
    pub stack: Stack,
    /// RFC 3339 UTC, whole seconds; also the mtime of every tar header.
    pub created: String,
    /// `os/arch` of every platform the bundle carries, sorted.
    pub platforms: Vec<crate::Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3s>,
    pub images: Vec<Image>,
    pub charts: Vec<Chart>,
    /// The stack's optional components this bundle carries (sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    /// Set on a delta bundle: the bundle it must be applied onto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
    /// Every entry after the first two, in archive order.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3s {
    pub version: String,
    /// K3s packaged components the installer disables on every node (sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The image reference as the stack names it, e.g. `docker.io/library/nginx:1.27`.
    pub reference: String,
    /// Digest of the top-level manifest or index stored in `oci/` for this image.
    pub digest: String,
    pub media_type: String,
    /// The source's digest when the bundle stores a platform-filtered index instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_digest: Option<String>,
    pub platforms: Vec<ImagePlatform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePlatform {
    /// `os/arch` or `os/arch/variant`.
    pub platform: crate::Platform,
    /// Digest of the platform's image manifest.
    pub digest: String,
    /// Bytes of manifest, config and layers of this platform.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    pub name: String,
    pub version: String,
    /// Digest of the chart's OCI manifest in `oci/`.
    pub digest: String,
    /// sha256 of the chart archive (`.tgz`), the chart layer.
    pub archive_sha256: String,
    /// The entry holding the stack's values for this chart (`charts/<name>-<version>.values.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<String>,
    /// The namespace the chart installs into at the site (absent: the chart's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a delta bundle leaves out, and the release it applies onto (FORMAT.md section 9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// sha256 of the base release's `rinbundle.json`: the release installed at the site.
    pub index_sha256: String,
    /// Blobs (image configs and layers) the delta leaves out because the site registry holds
    /// them, sorted.
    pub blobs: Vec<String>,
    /// K3s release files the delta leaves out because the nodes hold them, sorted by path:
    /// what the entry would have been.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<Entry>,
    /// Bytes left out: the blobs' and the files'.
    pub size: u64,
    /// Set when the delta was built against a site inventory (`rininstall inventory`) rather
    /// than the base bundle: the sha256 of the inventory's signed bytes. Such a delta applies
    /// onto any release of a site whose registry and nodes hold what it leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
}

impl Base {
    /// Whether the delta leaves out the blob `digest`.
    pub fn holds_blob(&self, digest: &str) -> bool {
        self.blobs
            .binary_search_by(|d| d.as_str().cmp(digest))
            .is_ok()
    }

    /// The left-out K3s file at `path`, if any.
    pub fn file(&self, path: &str) -> Option<&Entry> {
        self.files.iter().find(|e| e.path == path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
}

impl Index {
    /// The canonical JSON bytes: object keys sorted, no insignificant white space, integers only.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        canonical_json(self)
    }

    /// Parse and validate an index that has already passed the trust check.
    pub fn from_canonical_json(bytes: &[u8]) -> Result<Self> {
        let invalid = |reason: String| BundleError::InvalidIndex { reason };
        // Look at the format first, so a future format gets a clear message.
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(BundleError::UnsupportedFormat {
                    found: other.to_string(),
                    supported: FORMAT,
                });
            }
            None => return Err(invalid("no \"format\" field".into())),
        }
        let index: Index = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        if index.to_canonical_json() != bytes {
            return Err(invalid("not in canonical form".into()));
        }
        index.validate()?;
        Ok(index)
    }

    /// The creation time as seconds since the Unix epoch.
    pub fn created_epoch(&self) -> Result<u64> {
        parse_created(&self.created).ok_or_else(|| BundleError::InvalidIndex {
            reason: format!(
                "created {:?} is not an RFC 3339 UTC time in whole seconds",
                self.created
            ),
        })
    }

    /// Total bytes of all entries.
    pub fn content_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(BundleError::InvalidIndex { reason });
        self.created_epoch()?;
        // Names the site prints and files it writes come from here: the stack's as bundle.yaml
        // allows them, the rest visible ASCII (no space, no control character).
        if let Err(reason) = check_stack_name(&self.stack.name)
            .and_then(|()| check_stack_version(&self.stack.version))
        {
            return invalid(reason);
        }
        let texts = self
            .images
            .iter()
            .flat_map(|i| [i.reference.as_str(), i.media_type.as_str()])
            .chain(
                self.charts
                    .iter()
                    .flat_map(|c| [c.name.as_str(), c.version.as_str()])
                    .chain(self.charts.iter().filter_map(|c| c.namespace.as_deref())),
            )
            .chain(self.components.iter().map(String::as_str))
            .chain(
                self.k3s
                    .iter()
                    .flat_map(|k| std::iter::once(&k.version).chain(&k.disable))
                    .map(String::as_str),
            );
        for t in texts {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return invalid(format!(
                    "{t:?} is not a name: names are visible ASCII, no space or control character"
                ));
            }
        }
        let mut seen = HashSet::new();
        for e in &self.entries {
            if let Err(problem) = check_entry_path(&e.path) {
                return Err(BundleError::UnsafePath {
                    path: e.path.clone(),
                    problem,
                });
            }
            if e.path == INDEX_PATH || e.path == SIGNATURES_PATH || !seen.insert(e.path.as_str()) {
                return invalid(format!("entry {:?} is listed twice", e.path));
            }
            if !is_sha256_hex(&e.sha256) {
                return invalid(format!("entry {:?} has a malformed sha256", e.path));
            }
            if e.mode != MODE_FILE && e.mode != MODE_EXEC {
                return invalid(format!(
                    "entry {:?} has mode {:o}, only 644 and 755 are allowed",
                    e.path, e.mode
                ));
            }
        }
        // A path that is a file cannot also be a directory of another entry (`files/f` and
        // `files/f/x`): no extraction could hold both.
        for e in &self.entries {
            for (i, _) in e.path.match_indices('/') {
                let parent = &e.path[..i];
                if seen.contains(parent) {
                    return invalid(format!(
                        "entry {:?} is a file, and {:?} puts a file under it",
                        parent, e.path
                    ));
                }
            }
        }
        let digests = self
            .images
            .iter()
            .flat_map(|i| {
                std::iter::once(&i.digest)
                    .chain(i.upstream_digest.iter())
                    .chain(i.platforms.iter().map(|p| &p.digest))
            })
            .chain(self.charts.iter().map(|c| &c.digest));
        for d in digests {
            if !is_oci_digest(d) {
                return invalid(format!("{d:?} is not a sha256 digest"));
            }
        }
        // The lists FORMAT.md says are sorted are sorted, each item once.
        fn sorted<T: Ord>(v: &[T]) -> bool {
            v.windows(2).all(|w| w[0] < w[1])
        }
        let platforms: Vec<String> = self.platforms.iter().map(|p| p.to_string()).collect();
        let images: Vec<&str> = self.images.iter().map(|i| i.reference.as_str()).collect();
        let charts: Vec<(&str, &str)> = self
            .charts
            .iter()
            .map(|c| (c.name.as_str(), c.version.as_str()))
            .collect();
        for (what, ok) in [
            ("platforms", sorted(&platforms) && !platforms.is_empty()),
            ("images", sorted(&images)),
            ("charts", sorted(&charts)),
            ("components", sorted(&self.components)),
            (
                "k3s.disable",
                self.k3s.as_ref().is_none_or(|k| sorted(&k.disable)),
            ),
        ] {
            if !ok {
                return invalid(format!(
                    "{what} is not sorted, lists an item twice, or (platforms) is empty"
                ));
            }
        }
        // An OCI layout whenever there is anything to name.
        if !(self.images.is_empty() && self.charts.is_empty()) {
            for layout in ["oci/oci-layout", "oci/index.json"] {
                if !seen.contains(layout) {
                    return invalid(format!(
                        "the index names images or charts but the bundle carries no {layout}"
                    ));
                }
            }
        }
        if let Some(b) = &self.base {
            self.validate_base(b, &seen)?;
        }
        // What the index says is carried must be carried (or, in a delta, be in its base).
        let in_base = |d: &str| self.base.as_ref().is_some_and(|b| b.holds_blob(d));
        let carried = self
            .images
            .iter()
            .flat_map(|i| std::iter::once(&i.digest).chain(i.platforms.iter().map(|p| &p.digest)))
            .chain(self.charts.iter().map(|c| &c.digest));
        for d in carried {
            // `d` is a well-formed digest (checked just above), so it has a blob path.
            let path = crate::oci::bundle_blob_path(d).unwrap_or_default();
            if !seen.contains(path.as_str()) && !in_base(d) {
                return invalid(format!(
                    "{d} is named by the index but not carried as {path}"
                ));
            }
        }
        for c in &self.charts {
            if let Some(v) = &c.values
                && !seen.contains(v.as_str())
            {
                return invalid(format!(
                    "chart {} names values {v:?}, which is not an entry",
                    c.name
                ));
            }
        }
        Ok(())
    }
}

impl Index {
    /// A delta's `base`: well-formed, sorted, and leaving out nothing the bundle carries.
    fn validate_base(&self, b: &Base, carried: &HashSet<&str>) -> Result<()> {
        let invalid = |reason: String| Err(BundleError::InvalidIndex { reason });
        if !is_sha256_hex(&b.index_sha256)
            || b.inventory.as_ref().is_some_and(|i| !is_sha256_hex(i))
        {
            return invalid("base has a malformed sha256".into());
        }
        for pair in b.blobs.windows(2) {
            if pair[0] >= pair[1] {
                return invalid("base.blobs is not sorted, or lists a blob twice".into());
            }
        }
        for d in &b.blobs {
            if !is_oci_digest(d) {
                return invalid(format!("base.blobs: {d:?} is not a sha256 digest"));
            }
            let path = crate::oci::bundle_blob_path(d).unwrap_or_default();
            if carried.contains(path.as_str()) {
                return invalid(format!("base.blobs lists {d}, which the bundle carries"));
            }
        }
        for pair in b.files.windows(2) {
            if pair[0].path >= pair[1].path {
                return invalid("base.files is not sorted by path, or lists a file twice".into());
            }
        }
        for f in &b.files {
            let k3s_file = f
                .path
                .strip_prefix(crate::k3s::DIR)
                .is_some_and(|rest| rest.starts_with('/'));
            if check_entry_path(&f.path).is_err() || !k3s_file {
                return invalid(format!("base.files: {:?} is not a K3s file's path", f.path));
            }
            if !is_sha256_hex(&f.sha256) || (f.mode != MODE_FILE && f.mode != MODE_EXEC) {
                return invalid(format!(
                    "base.files: {:?} has a malformed sha256 or mode",
                    f.path
                ));
            }
            if carried.contains(f.path.as_str()) {
                return invalid(format!(
                    "base.files lists {:?}, which the bundle carries",
                    f.path
                ));
            }
        }
        Ok(())
    }
}

/// Check that an entry path is relative, normalised and free of surprises.
pub fn check_entry_path(path: &str) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("path too long");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return Err("backslash or control character");
    }
    for comp in path.split('/') {
        match comp {
            "" => return Err("empty path component"),
            "." => return Err("`.` component"),
            ".." => return Err("`..` component"),
            c if c.len() > MAX_COMPONENT_LEN => return Err("path component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// A stack's name: letters, digits, `-`, `_`, `.` (bundle.yaml's rule, which the index holds).
pub fn check_stack_name(name: &str) -> std::result::Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        Ok(())
    } else {
        Err(format!(
            "stack name {name:?} must be letters, digits, '-', '_' or '.'"
        ))
    }
}

/// A stack's version: letters, digits, `-`, `_`, `.`, `+` (`1.2.0`, `2026.12-rc1+build5`).
pub fn check_stack_version(version: &str) -> std::result::Result<(), String> {
    if !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
    {
        Ok(())
    } else {
        Err(format!(
            "stack version {version:?} must be letters, digits, '-', '_', '.' or '+'"
        ))
    }
}

/// `created` for a time given in seconds since the epoch.
pub fn format_created(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(epoch)).to_string()
}

fn parse_created(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (format_created(secs) == s).then_some(secs)
}

/// Seconds since the epoch now.
pub fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Index {
        Index {
            format: FORMAT.into(),
            stack: Stack {
                name: "demo".into(),
                version: "1.0.0".into(),
            },
            created: format_created(1_700_000_000),
            platforms: vec!["linux/amd64".parse().unwrap()],
            k3s: None,
            images: vec![],
            charts: vec![],
            components: Vec::new(),
            base: None,
            entries: vec![Entry {
                path: "manifests/a.yaml".into(),
                size: 3,
                sha256: "0".repeat(64),
                mode: 0o644,
            }],
        }
    }

    #[test]
    fn canonical_round_trip_and_sorted_keys() {
        let i = sample();
        let bytes = i.to_canonical_json();
        let s = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            s.starts_with(
                r#"{"charts":[],"created":"2023-11-14T22:13:20Z","entries":[{"mode":420,"path":"#
            ),
            "{s}"
        );
        assert_eq!(Index::from_canonical_json(&bytes).unwrap(), i);
    }

    #[test]
    fn names_the_site_prints_are_held_to_their_characters() {
        let mut escape = sample();
        escape.stack.name = "demo\u{1b}[2J".into();
        let mut version = sample();
        version.stack.version = "1.0 beta".into();
        let mut reference = sample();
        reference.components = vec!["db\r".into()];
        for (i, want) in [
            (escape, "stack name \"demo\\u{1b}[2J\" must be"),
            (version, "stack version \"1.0 beta\" must be"),
            (reference, "\"db\\r\" is not a name"),
        ] {
            let err = Index::from_canonical_json(&i.to_canonical_json())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
            assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{err:?}");
        }
        let mut ok = sample();
        ok.stack.version = "2026.12-rc1+build5".into();
        assert!(Index::from_canonical_json(&ok.to_canonical_json()).is_ok());
    }

    #[test]
    fn a_named_document_must_be_carried_in_a_layout() {
        let hex = "c".repeat(64);
        let mut i = sample();
        i.charts.push(Chart {
            name: "demo".into(),
            version: "0.1.0".into(),
            digest: format!("sha256:{hex}"),
            archive_sha256: "d".repeat(64),
            values: None,
            namespace: None,
        });
        let err = |i: &Index| {
            Index::from_canonical_json(&i.to_canonical_json())
                .unwrap_err()
                .to_string()
        };
        assert!(err(&i).contains("carries no oci/oci-layout"), "{}", err(&i));
        let entry = |path: String| Entry {
            path,
            size: 1,
            sha256: "0".repeat(64),
            mode: 0o644,
        };
        i.entries.push(entry("oci/oci-layout".into()));
        i.entries.push(entry("oci/index.json".into()));
        assert!(
            err(&i).contains("is named by the index but not carried"),
            "{}",
            err(&i)
        );
        i.entries.push(entry(format!("oci/blobs/sha256/{hex}")));
        assert!(Index::from_canonical_json(&i.to_canonical_json()).is_ok());
    }

    #[test]
    fn lists_said_to_be_sorted_are_sorted() {
        let mut p = sample();
        p.platforms = vec![
            "linux/arm64".parse().unwrap(),
            "linux/amd64".parse().unwrap(),
        ];
        let mut none = sample();
        none.platforms.clear();
        let mut c = sample();
        c.components = vec!["redis".into(), "metallb".into()];
        let mut twice = sample();
        twice.components = vec!["redis".into(), "redis".into()];
        for i in [p, none, c, twice] {
            let err = Index::from_canonical_json(&i.to_canonical_json())
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not sorted"), "{err}");
        }
    }

    #[test]
    fn refuses_a_long_component_and_a_file_that_is_also_a_directory() {
        let mut long = sample();
        long.entries[0].path = format!("files/{}", "a".repeat(256));
        let err = Index::from_canonical_json(&long.to_canonical_json()).unwrap_err();
        assert!(matches!(err, BundleError::UnsafePath { .. }), "{err}");
        let mut max = sample();
        max.entries[0].path = format!("files/{}", "a".repeat(255));
        assert!(Index::from_canonical_json(&max.to_canonical_json()).is_ok());
        let mut both = sample();
        let mut under = both.entries[0].clone();
        under.path = "manifests/a.yaml/x".into();
        both.entries.push(under);
        let err = Index::from_canonical_json(&both.to_canonical_json())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a file, and"), "{err}");
        assert!(both.validate().is_err());
    }

    #[test]
    fn refuses_a_platform_that_is_not_os_arch_variant() {
        let good = String::from_utf8(sample().to_canonical_json()).unwrap();
        assert!(Index::from_canonical_json(good.as_bytes()).is_ok());
        for bad in ["linux//amd64", "amd64", "linux/amd64/v1/x", "Linux/amd64"] {
            let text = good.replace("\"linux/amd64\"", &format!("{bad:?}"));
            assert_ne!(text, good);
            assert!(
                Index::from_canonical_json(text.as_bytes()).is_err(),
                "{bad} was taken"
            );
        }
    }

    #[test]
    fn refuses_non_canonical_unknown_and_future() {
        let i = sample();
        let pretty = serde_json::to_vec_pretty(&i).unwrap();
        assert!(matches!(
            Index::from_canonical_json(&pretty),
            Err(BundleError::InvalidIndex { .. })
        ));
        let s = String::from_utf8(i.to_canonical_json()).unwrap();
        let future = s.replace("rinbundle/v1", "rinbundle/v2");
        assert!(matches!(
            Index::from_canonical_json(future.as_bytes()),
            Err(BundleError::UnsupportedFormat { .. })
        ));
        let unknown = s.replacen("{", r#"{"aaa":1,"#, 1);
        assert!(matches!(
            Index::from_canonical_json(unknown.as_bytes()),
            Err(BundleError::InvalidIndex { .. })
        ));
    }

    #[test]
    fn refuses_unsafe_and_duplicate_paths() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\\b",
            "",
        ] {
            let mut i = sample();
            i.entries[0].path = bad.into();
            let r = Index::from_canonical_json(&i.to_canonical_json());
            assert!(
                matches!(r, Err(BundleError::UnsafePath { .. })),
                "{bad}: {r:?}"
            );
        }
        let mut i = sample();
        i.entries.push(i.entries[0].clone());
        assert!(matches!(
            Index::from_canonical_json(&i.to_canonical_json()),
            Err(BundleError::InvalidIndex { .. })
        ));
        let mut i = sample();
        i.entries[0].mode = 0o4755;
        assert!(matches!(
            Index::from_canonical_json(&i.to_canonical_json()),
            Err(BundleError::InvalidIndex { .. })
        ));
    }

    #[test]
    fn every_named_image_digest_is_carried_or_in_the_base() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let mut i = sample();
        for layout in ["oci/index.json", "oci/oci-layout"] {
            i.entries.push(Entry {
                path: layout.into(),
                size: 1,
                sha256: "0".repeat(64),
                mode: 0o644,
            });
        }
        i.images.push(Image {
            reference: "r/x:1".into(),
            digest: digest.clone(),
            media_type: crate::oci::MT_OCI_MANIFEST.into(),
            upstream_digest: None,
            platforms: vec![ImagePlatform {
                platform: "linux/amd64".parse().unwrap(),
                digest: digest.clone(),
                size: 1,
            }],
        });
        let r = Index::from_canonical_json(&i.to_canonical_json());
        assert!(
            matches!(r, Err(BundleError::InvalidIndex { ref reason }) if reason.contains("not carried")),
            "{r:?}"
        );
        let mut carried = i.clone();
        carried.entries.push(Entry {
            path: format!("oci/blobs/sha256/{}", "a".repeat(64)),
            size: 1,
            sha256: "a".repeat(64),
            mode: 0o644,
        });
        Index::from_canonical_json(&carried.to_canonical_json()).unwrap();
        let mut delta = i;
        delta.base = Some(Base {
            index_sha256: "b".repeat(64),
            blobs: vec![digest.clone()],
            files: vec![Entry {
                path: "k3s/k3s".into(),
                size: 5,
                sha256: "c".repeat(64),
                mode: MODE_EXEC,
            }],
            size: 6,
            inventory: None,
        });
        Index::from_canonical_json(&delta.to_canonical_json()).unwrap();
        // A base that is not sorted, leaves out what is carried, or a file that is not K3s's.
        let refused = |b: Base, why: &str| {
            let mut d = delta.clone();
            d.base = Some(b);
            let r = Index::from_canonical_json(&d.to_canonical_json());
            assert!(
                matches!(r, Err(BundleError::InvalidIndex { ref reason }) if reason.contains(why)),
                "{why}: {r:?}"
            );
        };
        let base = delta.base.clone().unwrap();
        let mut twice = base.clone();
        twice.blobs.push(digest.clone());
        refused(twice, "not sorted");
        let mut carried_too = base.clone();
        let mut with_k3s = delta.clone();
        with_k3s.entries.push(base.files[0].clone());
        carried_too.files[0].mode = MODE_EXEC;
        let mut d = with_k3s;
        d.base = Some(carried_too);
        let r = Index::from_canonical_json(&d.to_canonical_json());
        assert!(
            matches!(r, Err(BundleError::InvalidIndex { ref reason }) if reason.contains("which the bundle carries")),
            "{r:?}"
        );
        let mut manifests = base;
        manifests.files[0].path = "manifests/x.yaml".into();
        refused(manifests, "not a K3s file");
    }

    #[test]
    fn created_is_strict() {
        assert_eq!(parse_created("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_created("2023-11-14T22:13:20.5Z"), None);
        assert_eq!(parse_created("2023-11-14 22:13:20Z"), None);
    }
}
