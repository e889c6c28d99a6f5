//! The format checked with standard tools: openssl reads our keys and verifies our signatures,
//! our code takes openssl's keys, and the "checking a bundle by hand" commands of docs/FORMAT.md
//! run exactly as written against a bundle the tests build (and fail on a damaged one).

#![allow(clippy::unwrap_used)]

use rin_tests::bin;
use rin_tests::containerd::Containerd;
use rin_tests::craft::{self, build_stack};
use rin_tests::fixture::write_stack;
use rin_tests::registry::{Options, Registry};
use std::fs;
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? .ci/run installs it)")
    })
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn keygen_keys_are_read_by_openssl_and_openssl_verifies_the_index_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("site");
    ok(Command::new(bin("rinbundle"))
        .args(["keygen", "--out"])
        .arg(&base));
    let key = tmp.path().join("site.key");
    let public = tmp.path().join("site.pub");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = ok(Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(&key));
    assert!(text.contains("ED25519 Private-Key"), "{text}");
    let text = ok(Command::new("openssl")
        .args(["pkey", "-pubin", "-noout", "-text", "-in"])
        .arg(&public));
    assert!(text.contains("ED25519 Public-Key"), "{text}");

    let stack = write_stack(&tmp.path().join("stack")).unwrap();
    let out = tmp.path().join("b.tar.zst");
    let signing = rin_signing::load_signing_key(&key).unwrap();
    build_stack(&stack, &out, &[signing], &["amd64"], 1);
    let x = tmp.path().join("x");
    fs::create_dir(&x).unwrap();
    let tar = craft::decompress(&out);
    fs::write(x.join("b.tar"), &tar).unwrap();
    ok(Command::new("tar")
        .args(["-xf", "b.tar", "rinbundle.json", "rinbundle.sig"])
        .current_dir(&x));
    let sigs: serde_json::Value =
        serde_json::from_slice(&fs::read(x.join("rinbundle.sig")).unwrap()).unwrap();
    let entry = &sigs["signatures"][0];
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(entry["signature"].as_str().unwrap())
        .unwrap();
    fs::write(x.join("index.sig"), raw).unwrap();
    let verified = ok(Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(&public)
        .args(["-rawin", "-in", "rinbundle.json", "-sigfile", "index.sig"])
        .current_dir(&x));
    assert!(
        verified.contains("Signature Verified Successfully"),
        "{verified}"
    );

    // The key id is the SHA-256 of the SPKI DER, as openssl encodes it.
    let der = run(Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER", "-in"])
        .arg(&public))
    .stdout;
    assert_eq!(
        entry["key_id"].as_str().unwrap(),
        format!("sha256:{}", rin_bundle::digest::sha256_hex(&der))
    );

    // And openssl refuses the signature over a changed index.
    let mut index = fs::read(x.join("rinbundle.json")).unwrap();
    index[10] ^= 1;
    fs::write(x.join("rinbundle.json"), index).unwrap();
    let out = run(Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(&public)
        .args(["-rawin", "-in", "rinbundle.json", "-sigfile", "index.sig"])
        .current_dir(&x));
    assert!(!out.status.success());
}

#[test]
fn keys_made_by_openssl_sign_and_verify_bundles() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("ops.key");
    let public = tmp.path().join("ops.pub");
    ok(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key));
    ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    let stack = write_stack(&tmp.path().join("stack")).unwrap();
    let out = tmp.path().join("b.tar.zst");
    build_stack(
        &stack,
        &out,
        &[rin_signing::load_signing_key(&key).unwrap()],
        &["arm64"],
        1,
    );
    let policy = rin_signing::TrustPolicy::load(&[public], None, 1).unwrap();
    rin_bundle::verify(&out, &policy, None, &rin_bundle::Silent).unwrap();
}

#[test]
fn the_by_hand_commands_of_format_md_check_a_real_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = write_stack(&tmp.path().join("stack")).unwrap();
    let ks = craft::keys(1);
    rin_signing::write_keypair(&tmp.path().join("site"), &ks[0]).unwrap();
    let public = tmp.path().join("site.pub");
    let out = tmp.path().join("b.tar.zst");
    build_stack(&stack, &out, &ks, &["amd64", "arm64"], 2);

    let good = tmp.path().join("good");
    fs::create_dir(&good).unwrap();
    let (passed, text) = rin_tests::by_hand(&out, &public, &good);
    assert!(passed, "by-hand check failed on a good bundle:\n{text}");
    assert!(
        text.contains("Signature Verified Successfully") && text.contains("bundle checked"),
        "{text}"
    );
    assert!(text.contains("registry.example/demo/web:1.0"), "{text}");

    // One changed byte of content (index and signature intact): the commands must fail.
    let mut tar = craft::decompress(&out);
    let at = tar
        .windows(14)
        .position(|w| w == b"operator notes")
        .expect("notes.txt content");
    tar[at] = b'O';
    let bad_bundle = tmp.path().join("bad.tar.zst");
    fs::write(&bad_bundle, craft::compress(&tar)).unwrap();
    let bad = tmp.path().join("bad");
    fs::create_dir(&bad).unwrap();
    let (passed, text) = rin_tests::by_hand(&bad_bundle, &public, &bad);
    assert!(!passed, "by-hand check passed a damaged bundle:\n{text}");
    assert!(text.contains("files/notes.txt: FAILED"), "{text}");

    // A bundle with no image and no chart (an empty layout, no blobs) passes too.
    let bare_stack = tmp.path().join("bare-stack");
    fs::create_dir_all(bare_stack.join("manifests")).unwrap();
    fs::write(
        bare_stack.join("bundle.yaml"),
        "name: bare\nversion: 1.0.0\nplatforms: [amd64]\n",
    )
    .unwrap();
    fs::write(
        bare_stack.join("manifests/ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bare\n",
    )
    .unwrap();
    let bare_bundle = tmp.path().join("bare.tar.zst");
    build_stack(&bare_stack, &bare_bundle, &ks, &["amd64"], 1);
    let bare_dir = tmp.path().join("bare-check");
    fs::create_dir(&bare_dir).unwrap();
    let (passed, text) = rin_tests::by_hand(&bare_bundle, &public, &bare_dir);
    assert!(passed && text.contains("bundle checked"), "{text}");
    assert!(!bare_dir.join("content/oci/blobs").exists());

    // A bundle signed by another key fails at the signature step.
    let other = tmp.path().join("other.tar.zst");
    build_stack(&stack, &other, &craft::keys(1), &["amd64"], 1);
    let (passed, _) = rin_tests::by_hand(&other, &public, &tmp.path().join("stack"));
    assert!(!passed);
}

#[test]
fn sign_file_writes_a_signature_openssl_verifies_and_refuses_for_a_changed_file() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("release");
    ok(Command::new(bin("rinbundle"))
        .args(["keygen", "--out"])
        .arg(&base));
    let sums = tmp.path().join("SHA256SUMS");
    fs::write(&sums, "0123  rininstall-linux-arm64\n").unwrap();
    let said = ok(Command::new(bin("rinbundle"))
        .arg("sign-file")
        .arg(&sums)
        .arg("--key")
        .arg(tmp.path().join("release.key")));
    assert!(said.contains("SHA256SUMS.sig"), "{said}");
    assert_eq!(
        fs::read(tmp.path().join("SHA256SUMS.sig")).unwrap().len(),
        64
    );
    let verify = || {
        run(Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-inkey", "release.pub"])
            .args(["-rawin", "-in", "SHA256SUMS", "-sigfile", "SHA256SUMS.sig"])
            .current_dir(tmp.path()))
    };
    let out = verify();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully"),
        "{out:?}"
    );
    fs::write(&sums, "0124  rininstall-linux-arm64\n").unwrap();
    assert!(!verify().status.success());
}

/// An image served with Docker media types (a manifest list of schema 2 manifests, as many
/// registries serve them) keeps them in the bundle: the by-hand block walks it, `ctr image import`
/// of the layout as a tar imports it under its name, and a layout missing one of its layers
/// fails the by-hand walk.
#[test]
fn an_image_with_docker_media_types_is_read_by_hand_and_imported_by_ctr() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let reference = reg.push_small_app(t.path(), true);
    let stack = t.path().join("stack");
    fs::create_dir_all(stack.join("manifests")).unwrap();
    fs::write(
        stack.join("bundle.yaml"),
        format!(
            "name: dockerish\nversion: 1.0.0\nplatforms: [amd64, arm64]\nimages:\n  - reference: {reference}\n"
        ),
    )
    .unwrap();
    let ks = craft::keys(1);
    rin_signing::write_keypair(&t.path().join("k"), &ks[0]).unwrap();
    let out = t.path().join("b.tar.zst");
    let (public, index) = rin_tests::build_signed(t.path(), &stack, "1700000000", &out);
    let image = &index.images[0];
    assert_eq!(image.media_type, rin_bundle::oci::MT_DOCKER_LIST);

    let dir = t.path().join("by-hand");
    fs::create_dir(&dir).unwrap();
    let (passed, text) = rin_tests::by_hand(&out, &public, &dir);
    assert!(passed && text.contains("bundle checked"), "{text}");
    assert!(text.contains(&reference), "{text}");
    // The walk reached every blob the bundle carries: the list, two manifests, their configs and
    // layers.
    let needed = fs::read_to_string(dir.join("needed.txt")).unwrap();
    let carried = fs::read_dir(dir.join("content/oci/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(needed.lines().count(), carried, "{needed}");
    for p in &image.platforms {
        assert!(needed.contains(p.digest.trim_start_matches("sha256:")));
    }

    // containerd imports the layout as a tar, Docker media types and all.
    let archive = t.path().join("layout.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(dir.join("content/oci"))
        .arg("-cf")
        .arg(&archive)
        .arg("."));
    let ctr = Containerd::start(t.path());
    ctr.run(
        &["-n", "t", "image", "import", "--all-platforms"],
        Some(&archive),
    );
    let listed = ctr.run(&["-n", "t", "image", "ls"], None);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&format!("{reference} ")))
        .unwrap_or_else(|| panic!("{reference} not imported:\n{listed}"));
    assert!(line.contains(rin_bundle::oci::MT_DOCKER_LIST), "{line}");
    assert!(line.contains(&image.digest), "{line}");
    assert!(line.contains("linux/amd64,linux/arm64"), "{line}");

    // The same bundle re-signed without one layer: the by-hand walk names the missing blob.
    let layer = fs::read_to_string(dir.join("manifests.txt"))
        .unwrap()
        .lines()
        .nth(1)
        .map(|m| {
            let manifest: serde_json::Value = serde_json::from_slice(
                &fs::read(dir.join("content/oci/blobs/sha256").join(m)).unwrap(),
            )
            .unwrap();
            manifest["layers"][0]["digest"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .unwrap();
    let dropped = format!("oci/blobs/sha256/{}", layer.trim_start_matches("sha256:"));
    let mut short = index.clone();
    short.entries.retain(|e| e.path != dropped);
    let mut members = craft::head(&short, &ks);
    for e in &short.entries {
        members.push(craft::Member::file(
            &e.path,
            &fs::read(dir.join("content").join(&e.path)).unwrap(),
        ));
    }
    let bad = t.path().join("short.tar.zst");
    fs::write(&bad, craft::compress(&craft::tar(&members))).unwrap();
    let bad_dir = t.path().join("short");
    fs::create_dir(&bad_dir).unwrap();
    let (passed, text) = rin_tests::by_hand(&bad, &public, &bad_dir);
    assert!(!passed, "{text}");
    assert!(text.contains(&format!("missing blob {layer}")), "{text}");
    // Our reader refuses it too, as malformed (FORMAT.md section 7, step 6).
    let out = run(Command::new(bin("rininstall"))
        .arg("verify")
        .arg(&bad)
        .arg("--key")
        .arg(&public));
    let said = rin_tests::text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains(&format!(
            "names {layer}, which the bundle neither carries nor leaves out in base.blobs"
        )),
        "{said}"
    );
}
