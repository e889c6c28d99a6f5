//! The operator's path through both binaries: keygen, build, inspect, verify (with thresholds,
//! a trusted-keys directory, extraction), refusals and their exit codes, and determinism of
//! `rinbundle build` under SOURCE_DATE_EPOCH.

#![allow(clippy::unwrap_used)]

use rin_tests::fixture::write_stack;
use rin_tests::{bin, text};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cmd(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env_remove("RIN_TRUSTED_KEYS")
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let o = cmd("rinbundle")
        .args(["keygen", "--out"])
        .arg(dir.join(name))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// `rininstall verify --threshold 2` trusting `keys`.
fn verify_two_of(bundle: &Path, keys: &[&Path]) -> Output {
    let mut c = cmd("rininstall");
    c.arg("verify").arg(bundle).args(["--threshold", "2"]);
    for k in keys {
        c.arg("--key").arg(k);
    }
    c.output().unwrap()
}

fn build(stack: &Path, out: &Path, keys: &[&Path], epoch: &str) -> Output {
    let mut c = cmd("rinbundle");
    c.args([
        "build", "--quiet", "--arch", "amd64", "--arch", "arm64", "--stack",
    ])
    .arg(stack)
    .arg("-o")
    .arg(out);
    for k in keys {
        c.arg("--key").arg(k);
    }
    c.env("SOURCE_DATE_EPOCH", epoch).output().unwrap()
}

#[test]
fn build_inspect_verify_and_refuse_through_the_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_key, a_pub) = keygen(tmp.path(), "a");
    let (b_key, b_pub) = keygen(tmp.path(), "b");
    let (_c_key, c_pub) = keygen(tmp.path(), "c");
    let stack = write_stack(&tmp.path().join("stack")).unwrap();
    let bundle = tmp.path().join("bundle.tar.zst");
    // Without --sha256: the index digest, and no checksum file.
    let o = build(&stack, &bundle, &[&a_key, &b_key], "1700000000");
    assert!(o.status.success(), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (index_bytes, _) = rin_bundle::peek(&bundle).unwrap();
    let index_sha = rin_bundle::digest::sha256_hex(&index_bytes);
    assert!(
        line.ends_with(&format!("index sha256:{index_sha}")),
        "{line}"
    );
    let sums = tmp.path().join("bundle.tar.zst.sha256");
    assert!(!sums.exists());
    // With it: the file's sha256, printed and written beside it for `sha256sum -c`.
    let mut c = cmd("rinbundle");
    c.args(["build", "--quiet", "--sha256", "--stack"])
        .arg(&stack)
        .arg("-o")
        .arg(&bundle)
        .arg("--key")
        .arg(&a_key)
        .arg("--key")
        .arg(&b_key)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let sha = rin_bundle::digest::sha256_reader(fs::File::open(&bundle).unwrap())
        .unwrap()
        .0;
    assert!(
        line.starts_with(&sha),
        "the printed sha256 is the file's: {line}"
    );
    assert_eq!(
        fs::read_to_string(&sums).unwrap(),
        format!("{sha}  bundle.tar.zst\n")
    );
    let check = Command::new("sha256sum")
        .args(["-c", "bundle.tar.zst.sha256"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));

    // inspect, text and JSON
    let o = cmd("rinbundle")
        .arg("inspect")
        .arg(&bundle)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for want in [
        "stack      demo 1.0.0",
        "linux/amd64, linux/arm64",
        "k3s        v1.31.4+k3s1",
        "registry.example/demo/worker:1.0",
        "demo 0.1.0",
        "not verified",
    ] {
        assert!(t.contains(want), "inspect lacks {want:?}:\n{t}");
    }
    let o = cmd("rinbundle")
        .args(["inspect", "--json"])
        .arg(&bundle)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["signers"].as_array().unwrap().len(), 2);
    assert_eq!(j["index"]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(j["verified"], false);

    // verify with one key, with 2 of 3, with a directory; JSON; extraction
    for bin_name in ["rininstall", "rinbundle"] {
        let o = cmd(bin_name)
            .arg("verify")
            .arg(&bundle)
            .arg("--key")
            .arg(&a_pub)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("verified demo 1.0.0"), "{}", text(&o));
    }
    let o = verify_two_of(&bundle, &[&a_pub, &b_pub, &c_pub]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("(2 of 2 required)"), "{}", text(&o));
    let dir = tmp.path().join("trusted");
    fs::create_dir(&dir).unwrap();
    fs::copy(&b_pub, dir.join("b.pub")).unwrap();
    let staging = tmp.path().join("staging");
    let o = cmd("rininstall")
        .arg("verify")
        .arg(&bundle)
        .arg("--json")
        .arg("--extract")
        .arg(&staging)
        .env("RIN_TRUSTED_KEYS", &dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["verified"], true);
    assert!(staging.join("manifests/00-namespace.yaml").is_file());

    // 2 of 3 needed, only a signed
    let single = tmp.path().join("single.tar.zst");
    assert!(
        build(&stack, &single, &[&a_key], "1700000000")
            .status
            .success()
    );
    let o = verify_two_of(&single, &[&a_pub, &b_pub, &c_pub]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("1 of the required 2 trusted signatures"),
        "{}",
        text(&o)
    );

    // unknown key
    let o = cmd("rininstall")
        .arg("verify")
        .arg(&single)
        .arg("--key")
        .arg(&c_pub)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o).contains("signed only by unknown key(s) sha256:"),
        "{}",
        text(&o)
    );

    // a damaged copy: exit 3, one error line, a hint, no staging left
    let mut bytes = fs::read(&bundle).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    let damaged = tmp.path().join("damaged.tar.zst");
    fs::write(&damaged, bytes).unwrap();
    let staging2 = tmp.path().join("staging2");
    let o = cmd("rininstall")
        .arg("verify")
        .arg(&damaged)
        .arg("--key")
        .arg(&a_pub)
        .arg("--extract")
        .arg(&staging2)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("error: bundle ") && lines[0].contains(" refused: "),
        "{err}"
    );
    assert!(
        lines[1].starts_with("hint: the file was damaged or altered"),
        "{err}"
    );
    assert!(!staging2.exists() && !tmp.path().join(".staging2.partial").exists());
}

#[test]
fn cli_builds_are_identical_with_source_date_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, _) = keygen(tmp.path(), "k");
    let one = write_stack(&tmp.path().join("one/stack")).unwrap();
    let o1 = build(&one, &tmp.path().join("one.tar.zst"), &[&key], "1750000000");
    assert!(o1.status.success(), "{}", text(&o1));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let two = write_stack(&tmp.path().join("two/deeper/stack")).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(42);
    for f in [
        "bundle.yaml",
        "notes.txt",
        "manifests/00-namespace.yaml",
        "k3s/k3s",
    ] {
        fs::File::options()
            .write(true)
            .open(two.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let o2 = build(&two, &tmp.path().join("two.tar.zst"), &[&key], "1750000000");
    assert!(o2.status.success(), "{}", text(&o2));
    assert_eq!(
        fs::read(tmp.path().join("one.tar.zst")).unwrap(),
        fs::read(tmp.path().join("two.tar.zst")).unwrap()
    );
    // A different SOURCE_DATE_EPOCH is a different bundle.
    let o3 = build(
        &one,
        &tmp.path().join("three.tar.zst"),
        &[&key],
        "1750000001",
    );
    assert!(o3.status.success());
    assert_ne!(
        fs::read(tmp.path().join("one.tar.zst")).unwrap(),
        fs::read(tmp.path().join("three.tar.zst")).unwrap()
    );
}

/// README's main job on a copy of the demo stack: the same steps as examples/demo/run.sh.
#[test]
fn the_embedded_demo_stack_builds_for_two_arches_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = rin_tests::demo::prepare(tmp.path());
    let (key, public) = keygen(tmp.path(), "demo");
    let bundle = tmp.path().join("rin-demo.tar.zst");
    let mut c = cmd("rinbundle");
    c.args(["build", "--stack"])
        .arg(&demo)
        .args(["--arch", "amd64", "--arch", "arm64", "--key"])
        .arg(&key)
        .arg("-o")
        .arg(&bundle);
    let o = c.env("SOURCE_DATE_EPOCH", "1700000000").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = cmd("rininstall")
        .arg("verify")
        .arg(&bundle)
        .arg("--key")
        .arg(&public)
        .arg("--extract")
        .arg(tmp.path().join("staging"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(tmp.path().join("staging/rinbundle.json")).unwrap())
            .unwrap();
    assert_eq!(
        index["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    // Images sorted by reference: the registry stand-in, then the demo image.
    let refs: Vec<&str> = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        refs,
        [
            "docker.io/library/registry:2.8.3",
            "registry.local/rin-demo/hello:0.1.0"
        ]
    );
    assert_eq!(index["k3s"]["version"], "v1.31.4+k3s1");
    assert!(tmp.path().join("staging/manifests/10-hello.yaml").is_file());
}

#[test]
fn version_names_the_release_the_commit_and_the_target() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    for name in ["rinbundle", "rininstall"] {
        let o = cmd(name).arg("--version").output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!(
                "{name} {} (commit {commit}, {target})",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}

/// A stand-in executable: a 64-bit little-endian ELF header for `machine` (62: x86-64, 183:
/// aarch64) and some bytes.
fn fake_elf(machine: u16) -> Vec<u8> {
    let mut b = vec![machine as u8; 4096];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b
}

#[test]
fn the_bundle_carries_the_installer_per_architecture_and_gives_it_back_only_when_verified() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keygen(tmp.path(), "k");
    let stack = write_stack(&tmp.path().join("stack")).unwrap();
    let dist = tmp.path().join("dist");
    fs::create_dir(&dist).unwrap();
    fs::write(dist.join("rininstall-linux-amd64"), fake_elf(62)).unwrap();
    let build_with = |out: &Path| {
        let mut c = cmd("rinbundle");
        c.args([
            "build", "--quiet", "--arch", "amd64", "--arch", "arm64", "--stack",
        ])
        .arg(&stack)
        .arg("--key")
        .arg(&key)
        .arg("--installers")
        .arg(&dist)
        .arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1700000000");
        c.output().unwrap()
    };

    // An architecture without its installer is refused, naming the file and how to make it.
    let bundle = tmp.path().join("b.tar.zst");
    let o = build_with(&bundle);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("rininstall-linux-arm64") && text(&o).contains("dist/build.sh"),
        "{}",
        text(&o)
    );
    assert!(!bundle.exists());
    // A file that is not an executable is refused.
    fs::write(
        dist.join("rininstall-linux-arm64"),
        b"#!/bin/sh\necho not a binary\n",
    )
    .unwrap();
    let o = build_with(&bundle);
    assert!(
        text(&o).contains("it is not an ELF executable"),
        "{}",
        text(&o)
    );
    // An amd64 binary under the arm64 name is refused.
    fs::write(dist.join("rininstall-linux-arm64"), fake_elf(62)).unwrap();
    let o = build_with(&bundle);
    assert!(
        text(&o).contains("built for another architecture"),
        "{}",
        text(&o)
    );
    fs::write(dist.join("rininstall-linux-arm64"), fake_elf(183)).unwrap();
    let o = build_with(&bundle);
    assert!(o.status.success(), "{}", text(&o));

    // Listed and signed like every entry, executable.
    let (index, _) = rin_bundle::peek(&bundle).unwrap();
    let index = rin_bundle::Index::from_canonical_json(&index).unwrap();
    for arch in ["amd64", "arm64"] {
        let e = index
            .entries
            .iter()
            .find(|e| e.path == format!("installer/rininstall-linux-{arch}"))
            .unwrap_or_else(|| panic!("no installer for {arch}"));
        assert_eq!(e.mode, 0o755);
    }

    // Written out after the whole bundle verified: the same bytes, executable.
    let out = tmp.path().join("new-rininstall");
    let o = cmd("rininstall")
        .args(["extract-installer", "--arch", "amd64", "--key"])
        .arg(&public)
        .arg(&bundle)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(&out).unwrap(), fake_elf(62));
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // The documented standard-tools way gives the same file (without verifying).
    let x = tmp.path().join("x");
    fs::create_dir(&x).unwrap();
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc {} | tar -x installer/rininstall-linux-arm64",
            bundle.display()
        ))
        .current_dir(&x)
        .output()
        .unwrap();
    assert!(sh.status.success(), "{}", text(&sh));
    assert_eq!(
        fs::read(x.join("installer/rininstall-linux-arm64")).unwrap(),
        fake_elf(183)
    );

    // A damaged bundle gives nothing back, and leaves nothing.
    let mut bytes = fs::read(&bundle).unwrap();
    let at = bytes.len() - 2000;
    bytes[at] ^= 0x40;
    let damaged = tmp.path().join("damaged.tar.zst");
    fs::write(&damaged, bytes).unwrap();
    let out2 = tmp.path().join("from-damaged");
    let o = cmd("rininstall")
        .args(["extract-installer", "--arch", "amd64", "--key"])
        .arg(&public)
        .arg(&damaged)
        .arg("-o")
        .arg(&out2)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("from-damaged"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A bundle without installers says so.
    let plain = tmp.path().join("plain.tar.zst");
    let o = build(&stack, &plain, &[&key], "1700000000");
    assert!(o.status.success(), "{}", text(&o));
    let o = cmd("rininstall")
        .args(["extract-installer", "--arch", "arm64", "--key"])
        .arg(&public)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(
        text(&o).contains("carries no installer for arm64 (it carries none)"),
        "{}",
        text(&o)
    );
}

/// `rininstall support-bundle`: one tar.zst that standard tools open, holding the node's records,
/// K3s's configuration and logs, with every planted token and password redacted, and bounded.
#[test]
fn a_support_bundle_carries_the_records_and_logs_but_no_token_or_password() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let plant = |p: &str, s: &str| {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, s).unwrap();
    };
    let secrets = [
        "PLANTED-TOKEN-1",
        "PLANTED-PASSWORD-2",
        "PLANTED-TOKEN-3",
        "PLANTED-PW-4",
        "c2VjcmV0LXZhbHVl",
    ];
    plant(
        "var/lib/rininstall/release.json",
        r#"{"stack":"demo","version":"1.0.0","index_sha256":"ab","installed":"2026-12-01T00:00:00Z"}"#,
    );
    plant(
        "var/lib/rininstall/releases/1.json",
        r#"{"record":{"stack":"demo"},"objects":[{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db"},"data":{"password":"c2VjcmV0LXZhbHVl"}}]}"#,
    );
    plant(
        "etc/rancher/k3s/config.yaml",
        "token: K10aa::server:PLANTED-TOKEN-1\nserver: https://10.0.0.1:6443\n",
    );
    plant(
        "etc/rancher/k3s/registries.yaml",
        "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:31555\"]\nconfigs:\n  127.0.0.1:31555:\n    auth: {username: site, password: PLANTED-PASSWORD-2}\n",
    );
    let mut log = String::new();
    for i in 0..3000 {
        log.push_str(&format!(
            "I1201 line {i} starting k3s token=PLANTED-TOKEN-3 password=PLANTED-PW-4 ok\n"
        ));
    }
    plant("var/log/k3s.log", &log);
    let out = t.path().join("support.tar.zst");
    let said = cmd("rininstall")
        .arg("support-bundle")
        .arg("-o")
        .arg(&out)
        .arg("--root")
        .arg(&root)
        .args(["--timeout", "1", "--max-size", "64K", "--quiet"])
        .arg("--kubeconfig")
        .arg(t.path().join("no-cluster.yaml"))
        .output()
        .unwrap();
    assert!(said.status.success(), "{}", text(&said));
    // Opened with standard tools.
    let x = t.path().join("x");
    fs::create_dir(&x).unwrap();
    let unpack = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc {} | tar -x -C {}",
            out.display(),
            x.display()
        ))
        .output()
        .unwrap();
    assert!(unpack.status.success(), "{}", text(&unpack));
    let dir = x.join("rin-support");
    let mut all = String::new();
    let mut names = Vec::new();
    for e in walk(&dir) {
        names.push(e.strip_prefix(&dir).unwrap().display().to_string());
        all.push_str(&fs::read_to_string(&e).unwrap());
    }
    for s in secrets {
        assert!(!all.contains(s), "{s} is in the support bundle");
    }
    for want in [
        "MANIFEST.txt",
        "host-checks.txt",
        "doctor.json",
        "state/release.json",
        "state/releases/1.json",
        "k3s/config.yaml",
        "k3s/registries.yaml",
        "logs/k3s.log",
        "cluster/status.json",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let registries = fs::read_to_string(dir.join("k3s/registries.yaml")).unwrap();
    assert!(
        registries.contains("http://127.0.0.1:31555") && registries.contains("<redacted>"),
        "{registries}"
    );
    // Bounded: the 200 KB log keeps its last 8 KiB (64K / 8), newest lines included.
    let kept = fs::read_to_string(dir.join("logs/k3s.log")).unwrap();
    assert!(
        kept.len() <= 8 << 10 && kept.contains("line 2999"),
        "{}",
        kept.len()
    );
    let manifest = fs::read_to_string(dir.join("MANIFEST.txt")).unwrap();
    assert!(
        manifest.contains("logs/k3s.log: only its last 8192 bytes"),
        "{manifest}"
    );
    let status = fs::read_to_string(dir.join("cluster/status.json")).unwrap();
    assert!(status.contains("cluster_error"), "{status}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The first stumbles of a new operator: each says what was wrong and what to do, with the exit
/// code README.md gives it, and a refused apply leaves nothing on a fresh node.
#[test]
fn a_new_operators_mistakes_are_named_with_the_right_exit_code_and_leave_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (key, public) = keygen(t.path(), "site");
    let stack = write_stack(&t.path().join("stack")).unwrap();
    let bundle = t.path().join("b.tar.zst");
    let o = build(&stack, &bundle, &[&key], "1700000000");
    assert!(o.status.success(), "{}", text(&o));

    // A bundle file that does not exist is a local problem (1), not a refusal.
    let o = cmd("rininstall")
        .arg("verify")
        .arg(t.path().join("nope.tar.zst"))
        .arg("--key")
        .arg(&public)
        .output()
        .unwrap();
    let said = text(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(said.starts_with("error: cannot read bundle"), "{said}");
    assert!(!said.contains("refused"), "{said}");

    // The private key where the public one belongs, and the other way round.
    let o = cmd("rininstall")
        .arg("verify")
        .arg(&bundle)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    let said = text(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(said.contains("site.key is a private key"), "{said}");
    assert!(said.contains("hint: give NAME.pub"), "{said}");
    assert!(!said.contains("ASN.1"), "{said}");
    let o = build(
        &stack,
        &t.path().join("x.tar.zst"),
        &[&public],
        "1700000000",
    );
    assert!(
        text(&o).contains("site.pub is a public key"),
        "{}",
        text(&o)
    );

    // --root without --no-start is a wrong command line (2).
    let root = t.path().join("node");
    let o = cmd("rininstall")
        .arg("apply")
        .arg(&bundle)
        .arg("--key")
        .arg(&public)
        .arg("--root")
        .arg(&root)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let said = text(&o);
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(said.contains("hint: add --no-start"), "{said}");
    assert!(!root.exists());

    // A damaged bundle refused on a fresh node: exit 3, and no state directory, lock or staging.
    let mut bytes = fs::read(&bundle).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    let damaged = t.path().join("damaged.tar.zst");
    fs::write(&damaged, bytes).unwrap();
    let o = cmd("rininstall")
        .arg("apply")
        .arg(&damaged)
        .arg("--key")
        .arg(&public)
        .arg("--root")
        .arg(&root)
        .args(["--no-start", "--arch", "amd64", "--registry", "127.0.0.1:9"])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!root.exists(), "a refused apply left {}", root.display());
}

/// `completions` scripts complete commands in a real bash, and `man` pages render with groff
/// without a macro warning and document every option.
#[test]
fn completions_complete_in_bash_and_man_pages_render_with_groff() {
    let t = tempfile::tempdir().unwrap();
    for (bin_name, partial, want, page, option) in [
        (
            "rinbundle",
            "bu",
            "build",
            "rinbundle-build.1",
            "--stall-timeout",
        ),
        (
            "rininstall",
            "ap",
            "apply",
            "rininstall-apply.1",
            "--host-packages",
        ),
    ] {
        let o = cmd(bin_name)
            .args(["completions", "bash"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let script = t.path().join(format!("{bin_name}.bash"));
        fs::write(&script, &o.stdout).unwrap();
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({bin_name} {partial}); COMP_CWORD=1; _{bin_name} {bin_name} {partial} {bin_name}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let offered = String::from_utf8_lossy(&o.stdout);
        assert!(offered.lines().any(|l| l == want), "{bin_name}: {offered}");
        for shell in ["zsh", "fish", "elvish", "powershell"] {
            let o = cmd(bin_name).args(["completions", shell]).output().unwrap();
            assert!(o.status.success(), "{}", text(&o));
            assert!(String::from_utf8_lossy(&o.stdout).contains(want), "{shell}");
        }

        let dir = t.path().join(format!("man-{bin_name}"));
        let o = cmd(bin_name)
            .arg("man")
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains(&format!("wrote {}", dir.join(page).display())));
        assert!(dir.join(format!("{bin_name}.1")).exists());
        let o = Command::new("groff")
            .args(["-man", "-Tutf8", "-P-cbou", "-wmac", "-Wbreak"])
            .arg(dir.join(page))
            .output()
            .expect("groff runs (apt-get install groff-base)");
        assert!(o.status.success() && o.stderr.is_empty(), "{}", text(&o));
        let rendered = String::from_utf8_lossy(&o.stdout);
        assert!(rendered.contains(option), "{rendered}");
    }
}

/// `--json` where a script reads the result: keygen and build print one JSON object; a failure
/// with `--json` prints the same reason, hint and exit code as one JSON object on stdout.
#[test]
fn json_results_and_json_errors_for_scripts() {
    let t = tempfile::tempdir().unwrap();
    let o = cmd("rinbundle")
        .args(["keygen", "--json", "--out"])
        .arg(t.path().join("k"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let k: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(k["key_id"].as_str().unwrap().starts_with("sha256:"), "{k}");
    let public = std::path::PathBuf::from(k["public_key"].as_str().unwrap());
    assert!(public.exists());

    let stack = write_stack(&t.path().join("stack")).unwrap();
    let bundle = t.path().join("b.tar.zst");
    let o = cmd("rinbundle")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--json", "--sha256", "--stack"])
        .arg(&stack)
        .arg("--key")
        .arg(k["private_key"].as_str().unwrap())
        .arg("-o")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["size"], fs::metadata(&bundle).unwrap().len());
    assert_eq!(b["signers"][0], k["key_id"]);
    assert_eq!(b["stack"]["name"], "demo");
    let sha = b["sha256"].as_str().unwrap();
    let line = fs::read_to_string(t.path().join("b.tar.zst.sha256")).unwrap();
    assert!(line.starts_with(sha), "{line}");

    // A refusal with --json: exit 3, the error on stderr and as JSON on stdout.
    let mut bytes = fs::read(&bundle).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let damaged = t.path().join("d.tar.zst");
    fs::write(&damaged, bytes).unwrap();
    let o = cmd("rininstall")
        .args(["verify", "--json"])
        .arg(&damaged)
        .arg("--key")
        .arg(&public)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["exit_code"], 3);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("error: {}", e["error"].as_str().unwrap())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("hint: {}", e["hint"].as_str().unwrap())),
        "{stderr}"
    );
}
