#![allow(dead_code)]
//! What the targets share: a trust that accepts any signatures, so the checks after them are
//! what is fuzzed.

type Boxed = Box<dyn std::error::Error + Send + Sync>;

pub struct AnyTrust;

impl rin_bundle::Trust for AnyTrust {
    fn check(&self, _: &[u8], _: &[u8], _: &[String]) -> Result<Vec<String>, Boxed> {
        Ok(Vec::new())
    }
    fn signers(&self, _: &[u8], _: &[u8]) -> Result<Vec<String>, Boxed> {
        Ok(vec!["sha256:00".into()])
    }
}

/// Write `data` as `name` in a new temporary directory: (the directory, the file).
pub fn file(name: &str, data: &[u8]) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join(name);
    std::fs::write(&path, data).ok()?;
    Some((dir, path))
}

/// Verify and extract the bundle at `file`: a refusal leaves no extraction behind.
pub fn verify(dir: &std::path::Path, file: &std::path::Path) {
    let out = dir.join("x");
    if rin_bundle::verify(file, &AnyTrust, Some(&out), &rin_bundle::Silent).is_err() {
        assert!(!out.exists(), "a refused bundle left its extraction behind");
    }
}
