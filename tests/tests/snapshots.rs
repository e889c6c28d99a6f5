//! Snapshots of what an operator reads: the demo's build, inspect, verify and dry run, and one
//! error of each kind, stdout and stderr with their exit code, so that no message changes by
//! accident. Paths, ports and digests are placeholders: the temporary directory is `[TMP]`, a
//! loopback port `[PORT]`, and each distinct sha256 `<DIGEST n>`, numbered in order of first
//! appearance (so a snapshot still shows which digests are the same one).
//!
//! A change to a message fails here with the difference; when the new text is the one wanted,
//! review it and accept it (`INSTA_UPDATE=always cargo test -p rin-tests --test snapshots`, or
//! `cargo insta review`) in the same commit as the change.
#![allow(clippy::unwrap_used)]

use rin_tests::bin;
use rin_tests::registry::{Options, Registry};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `out` as the operator sees it: the exit code, stdout, stderr, with placeholders.
fn shown(out: &std::process::Output, tmp: &Path) -> String {
    let mut digests = HashMap::new();
    let text = format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().map_or("none".into(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = text.replace(&tmp.display().to_string(), "[TMP]");
    digest_placeholders(&port_placeholders(&text), &mut digests)
}

/// Every `127.0.0.1:N` as `127.0.0.1:[PORT]`.
fn port_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("127.0.0.1:") {
        let (head, tail) = rest.split_at(at + "127.0.0.1:".len());
        out.push_str(head);
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("[PORT]");
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// Every run of exactly 64 lowercase hex digits as `<DIGEST n>`.
fn digest_placeholders(text: &str, seen: &mut HashMap<String, usize>) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|b| hex(**b)).count();
        if run == 64 {
            let d = &text[i..i + 64];
            let n = seen.len() + 1;
            let n = *seen.entry(d.to_string()).or_insert(n);
            out.push_str(&format!("<DIGEST {n}>"));
            i += 64;
        } else if run > 0 {
            out.push_str(&text[i..i + run]);
            i += run;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// A command of `name` with nothing from the environment that changes what it says.
fn cmd(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env_remove("RIN_TRUSTED_KEYS")
        .env_remove("RIN_CACHE")
        .env_remove("KUBECONFIG")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("NO_COLOR", "1");
    c
}

struct Demo {
    tmp: tempfile::TempDir,
    stack: PathBuf,
}

impl Demo {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let stack = rin_tests::demo::prepare(tmp.path());
        for name in ["demo", "other"] {
            let o = cmd("rinbundle")
                .args(["keygen", "--out"])
                .arg(tmp.path().join(name))
                .output()
                .unwrap();
            rin_tests::ok(&o, "keygen");
        }
        Demo { tmp, stack }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Run `c`: what it showed, with placeholders.
    fn run(&self, c: &mut Command) -> String {
        shown(&c.output().unwrap(), self.tmp.path())
    }

    /// `rinbundle build` of `stack` for both architectures, signed with demo.key.
    fn build(&self, stack: &Path) -> Command {
        let mut c = cmd("rinbundle");
        c.arg("build")
            .arg("--stack")
            .arg(stack)
            .args(["--arch", "amd64", "--arch", "arm64", "--key"])
            .arg(self.path("demo.key"))
            .arg("-o")
            .arg(self.path("rin-demo.tar.zst"));
        c
    }

    fn verify(&self, bundle: &Path, key: &str) -> Command {
        let mut c = cmd("rininstall");
        c.arg("verify").arg(bundle).arg("--key").arg(self.path(key));
        c
    }
}

#[test]
fn the_demo_and_one_error_of_each_kind_say_what_they_said() {
    let d = Demo::new();
    let bundle = d.path("rin-demo.tar.zst");

    // The main job, as examples/demo/run.sh runs it.
    insta::assert_snapshot!("demo_build", d.run(&mut d.build(&d.stack)));
    insta::assert_snapshot!(
        "demo_inspect",
        d.run(cmd("rinbundle").arg("inspect").arg(&bundle))
    );
    insta::assert_snapshot!(
        "demo_verify",
        d.run(
            d.verify(&bundle, "demo.pub")
                .arg("--extract")
                .arg(d.path("staging"))
        )
    );
    let apply = |extra: &[&str]| {
        let mut c = cmd("rininstall");
        c.arg("apply")
            .arg(&bundle)
            .arg("--key")
            .arg(d.path("demo.pub"))
            .arg("--root")
            .arg(d.path("site"))
            .args(extra);
        c
    };
    insta::assert_snapshot!(
        "demo_dry_run",
        d.run(&mut apply(&["--no-start", "--dry-run"]))
    );

    // Exit 1, a local problem: a bundle that is not there; a stack directory that is not
    // there; a private key where the public one belongs.
    insta::assert_snapshot!(
        "error_no_such_bundle",
        d.run(&mut d.verify(&d.path("nowhere.tar.zst"), "demo.pub"))
    );
    insta::assert_snapshot!(
        "error_no_such_stack",
        d.run(&mut d.build(&d.path("nowhere")))
    );
    insta::assert_snapshot!(
        "error_private_key_given",
        d.run(&mut d.verify(&bundle, "demo.key"))
    );

    // Exit 2, a wrong command line: one clap sees, and two only the program can see.
    insta::assert_snapshot!(
        "error_usage_unknown_option",
        d.run(cmd("rininstall").args(["apply", "--no-such-option"]))
    );
    insta::assert_snapshot!(
        "error_usage_build_without_key",
        d.run(
            cmd("rinbundle")
                .arg("build")
                .arg("--stack")
                .arg(&d.stack)
                .arg("-o")
                .arg(d.path("unsigned.tar.zst"))
        )
    );
    insta::assert_snapshot!("error_usage_root_without_no_start", d.run(&mut apply(&[])));

    // Exit 3, the bundle refused: signed by a key the site does not trust; cut short; and the
    // same refusal as the JSON object a script reads.
    insta::assert_snapshot!(
        "error_refused_untrusted_signer",
        d.run(&mut d.verify(&bundle, "other.pub"))
    );
    let bytes = std::fs::read(&bundle).unwrap();
    let cut = d.path("cut.tar.zst");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    insta::assert_snapshot!(
        "error_refused_truncated",
        d.run(&mut d.verify(&cut, "demo.pub"))
    );
    insta::assert_snapshot!(
        "error_refused_json",
        d.run(d.verify(&bundle, "other.pub").arg("--json"))
    );

    // Nothing above touched the site: the refused and the dry runs left no directory.
    assert!(!d.path("site").exists());
}

/// A build that downloads: its three steps, and the lock it wrote, on the demo stack with one
/// image more from a real registry.
#[test]
fn a_build_from_a_registry_shows_its_three_steps_and_the_lock() {
    let d = Demo::new();
    let reg = Registry::start(Options::default());
    let app = reg.push_small_app(d.tmp.path(), false);
    let spec = d.stack.join("bundle.yaml");
    let yaml = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("images:\n", &format!("images:\n  - reference: {app}\n"));
    std::fs::write(&spec, yaml).unwrap();
    insta::assert_snapshot!(
        "registry_build",
        d.run(d.build(&d.stack).arg("--cache").arg(d.path("cache")))
    );
}

#[test]
fn placeholders_number_each_digest_once_and_hide_ports() {
    let a = "a".repeat(64);
    let b = "b".repeat(64);
    let mut seen = HashMap::new();
    assert_eq!(
        digest_placeholders(
            &format!("sha256:{a} {b}\n{a} {}", "c".repeat(65)),
            &mut seen
        ),
        format!(
            "sha256:<DIGEST 1> <DIGEST 2>\n<DIGEST 1> {}",
            "c".repeat(65)
        )
    );
    assert_eq!(
        port_placeholders("to 127.0.0.1:5000 and 127.0.0.1: and 127.0.0.1:1/v2"),
        "to 127.0.0.1:[PORT] and 127.0.0.1: and 127.0.0.1:[PORT]/v2"
    );
}
