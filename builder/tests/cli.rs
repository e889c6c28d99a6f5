//! rinbundle's command line on its own: keys, usage errors and their exit codes.
//! (End-to-end builds through the CLI are in the rin-tests crate.)

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn rinbundle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rinbundle"))
}

#[test]
fn keygen_writes_a_key_pair_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let out = rinbundle()
        .args(["keygen", "--out"])
        .arg(tmp.path().join("k"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("key id sha256:"), "{stdout}");
    let key = rin_signing::load_signing_key(&tmp.path().join("k.key")).unwrap();
    let public = rin_signing::load_verifying_key(&tmp.path().join("k.pub")).unwrap();
    assert_eq!(key.verifying_key(), public);
    let again = rinbundle()
        .args(["keygen", "--out"])
        .arg(tmp.path().join("k"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        rin_signing::load_signing_key(&tmp.path().join("k.key"))
            .unwrap()
            .to_bytes(),
        key.to_bytes()
    );
}

#[test]
fn usage_errors_exit_2_and_local_errors_exit_1_with_a_hint() {
    let out = rinbundle()
        .args(["build", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let tmp = tempfile::tempdir().unwrap();
    let out = rinbundle()
        .args(["build", "--stack"])
        .arg(tmp.path())
        .arg("--unsigned")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ")
            && err.contains("is not a stack directory: it holds no bundle.yaml"),
        "{err}"
    );
    assert!(err.contains("\nhint: give --stack the directory"), "{err}");
    let out = rinbundle()
        .args(["build", "--unsigned", "--stack"])
        .arg(tmp.path().join("none"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a stack directory: it does not exist"),
        "{err}"
    );
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = rinbundle()
        .args(["build", "--unsigned", "--stack"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a stack directory: it is not a directory"),
        "{err}"
    );
    let out = rinbundle()
        .args(["build", "--stack"])
        .arg(tmp.path())
        .output()
        .unwrap();
    // No key and no --unsigned: a wrong command line, with a hint.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\nhint: make a key pair with `rinbundle keygen"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_bundle_is_refused_with_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("x.tar.zst");
    std::fs::write(&f, b"not a bundle").unwrap();
    let out = rinbundle().arg("inspect").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a bundle: the file is not zstd-compressed"),
        "{err}"
    );
}

#[test]
fn an_unknown_architecture_is_a_usage_error_naming_the_known_ones() {
    let out = rinbundle()
        .args(["build", "--unsigned", "--arch", "mips"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown architecture \"mips\"; use one of amd64, arm64"),
        "{err}"
    );
}
