//! The test harness: fixture image builders (real multi-arch OCI layouts with gzip'd tar
//! layers), test stacks, bundle crafting and tampering helpers, and the paths of the binaries.

pub mod containerd;
pub mod craft;
pub mod deb;
pub mod demo;
pub mod fixture;
pub mod k8s;
pub mod net;
pub mod pki;
pub mod registry;
pub mod rpm;

use std::path::{Path, PathBuf};

/// Path of a workspace binary (`rinbundle`, `rininstall`), built by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it) or `cargo build --bins` first",
        path.display()
    );
    path
}

/// What a command said: its stdout, then its stderr.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Assert that a command's run succeeded (`what` names it in the failure); its stdout.
pub fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Assert that `dir` holds exactly `names` and nothing else: no staging directory, no partial
/// file, no output left behind by a refused run. `what` says which run, for the failure message.
pub fn assert_only(dir: &Path, names: &[&str], what: &str) {
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .expect("readable test directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    left.sort();
    assert_eq!(
        left,
        names,
        "{what}: something was left behind in {}",
        dir.display()
    );
}

/// Build the stack at `stack` into `out` with `rinbundle build`, signed with `dir/k.key` (made
/// with `rinbundle keygen` when missing), downloads cached in `dir/cache`, at `epoch`:
/// (public key, the bundle's index).
pub fn build_signed(
    dir: &Path,
    stack: &Path,
    epoch: &str,
    out: &Path,
) -> (PathBuf, rin_bundle::Index) {
    build_signed_with(dir, stack, epoch, out, &[])
}

/// `rinbundle build` of `stack` at `epoch` into `out`, signed with `dir/k.key`, with the cache in
/// `dir/cache` and more arguments `args`: to run, when the build may be refused.
pub fn build_command(
    dir: &Path,
    stack: &Path,
    epoch: &str,
    out: &Path,
    args: &[String],
) -> std::process::Command {
    let mut c = std::process::Command::new(bin("rinbundle"));
    c.env("SOURCE_DATE_EPOCH", epoch)
        .arg("build")
        .arg("--stack")
        .arg(stack)
        .arg("--key")
        .arg(dir.join("k.key"))
        .arg("--cache")
        .arg(dir.join("cache"))
        .arg("-o")
        .arg(out)
        .args(args);
    c
}

/// `dir/k.key` and `dir/k.pub`, made with `rinbundle keygen` unless they exist: the key
/// [`build_command`] signs with.
pub fn keygen_in(dir: &Path) {
    if !dir.join("k.key").exists() {
        ok(
            &std::process::Command::new(bin("rinbundle"))
                .args(["keygen", "--out"])
                .arg(dir.join("k"))
                .output()
                .expect("rinbundle keygen runs"),
            "keygen",
        );
    }
}

/// [`build_signed`] with more `rinbundle build` arguments (`--arch`, mirrors, components).
pub fn build_signed_with(
    dir: &Path,
    stack: &Path,
    epoch: &str,
    out: &Path,
    args: &[String],
) -> (PathBuf, rin_bundle::Index) {
    keygen_in(dir);
    ok(
        &build_command(dir, stack, epoch, out, args)
            .output()
            .expect("rinbundle build runs"),
        &format!("build of {}", stack.display()),
    );
    let (index, _) = rin_bundle::peek(out).expect("the built bundle opens");
    (
        dir.join("k.pub"),
        rin_bundle::Index::from_canonical_json(&index).expect("its index parses"),
    )
}

/// `rininstall apply BUNDLE --key KEY --root ROOT --arch amd64 --no-start` (its step lines and
/// notes on stderr), with `extra` arguments and no cluster of the environment (with --no-start
/// the stack is not deployed).
pub fn apply_at_root(
    bundle: &Path,
    key: &Path,
    root: &Path,
    extra: &[&str],
) -> std::process::Command {
    let mut c = std::process::Command::new(bin("rininstall"));
    c.arg("apply")
        .arg(bundle)
        .arg("--key")
        .arg(key)
        .arg("--root")
        .arg(root)
        .args(["--arch", "amd64", "--no-start"])
        .args(extra)
        .env_remove("KUBECONFIG");
    c
}

/// The JSON progress events (`--progress json`, on stderr) of a run, of one kind.
pub fn events(out: &std::process::Output, kind: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .collect()
}

/// The fenced block after `<!-- by-hand -->` in docs/FORMAT.md.
pub fn by_hand_block() -> String {
    let doc = std::fs::read_to_string(repo_root().join("docs/FORMAT.md")).expect("docs/FORMAT.md");
    let after = doc
        .split("<!-- by-hand -->")
        .nth(1)
        .expect("FORMAT.md has a by-hand block");
    let body = after.split("```sh\n").nth(1).expect("a ```sh block");
    body.split("\n```").next().unwrap_or_default().to_string()
}

/// Run FORMAT.md's by-hand block with bash in `dir` on `bundle` and `pubkey`: whether it passed,
/// and all it printed.
pub fn by_hand(bundle: &Path, pubkey: &Path, dir: &Path) -> (bool, String) {
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(by_hand_block())
        .current_dir(dir)
        .env("BUNDLE", bundle)
        .env("PUBKEY", pubkey)
        .output()
        .expect("bash runs");
    (o.status.success(), text(&o))
}
