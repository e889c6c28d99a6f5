//! rininstall's command line on its own: the trust policy must be given, refusals exit 3.
//! (Verification of real bundles through this binary is in the rin-tests crate.)

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn rininstall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rininstall"))
}

#[test]
fn without_trusted_keys_it_says_how_to_give_them() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("b.tar.zst");
    std::fs::write(&f, b"x").unwrap();
    let out = rininstall()
        .arg("verify")
        .arg(&f)
        .env_remove("RIN_TRUSTED_KEYS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no trusted keys"), "{err}");
    assert!(err.contains("hint: pass --key NAME.pub"), "{err}");
}

#[test]
fn garbage_is_refused_with_exit_3_and_usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let key = rin_signing::generate().unwrap();
    rin_signing::write_keypair(&tmp.path().join("k"), &key).unwrap();
    let f = tmp.path().join("b.tar.zst");
    std::fs::write(&f, b"\x28\xb5\x2f\xfd garbage").unwrap();
    let out = rininstall()
        .arg("verify")
        .arg(&f)
        .arg("--key")
        .arg(tmp.path().join("k.pub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    let out = rininstall().arg("verify").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
