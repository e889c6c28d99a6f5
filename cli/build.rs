//! Records what `--version` prints beside the version: the git commit built (`RIN_COMMIT` when
//! set, as a release build from a tarball sets it; else `git rev-parse`; else `unknown`) and the
//! target triple.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RIN_COMMIT");
    let git = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.git");
    let head = git.join("HEAD");
    if head.exists() {
        println!("cargo:rerun-if-changed={}", head.display());
        if let Ok(text) = std::fs::read_to_string(&head)
            && let Some(r) = text.trim().strip_prefix("ref: ")
            && git.join(r).exists()
        {
            println!("cargo:rerun-if-changed={}", git.join(r).display());
        }
    }
    let commit = std::env::var("RIN_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RIN_COMMIT={commit}");
    println!(
        "cargo:rustc-env=RIN_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}
