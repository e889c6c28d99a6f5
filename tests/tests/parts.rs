//! Split parts: `rinbundle split` cuts a real signed bundle into parts with a signed part list,
//! and `rininstall check` names each part that is missing or damaged, before any apply.

#![allow(clippy::unwrap_used)]

use rin_tests::{bin, build_signed, fixture, ok, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A signed bundle of the test stack and its public key, in `dir`.
fn bundle(dir: &Path) -> (PathBuf, PathBuf) {
    let stack = fixture::write_stack(&dir.join("stack")).unwrap();
    let out = dir.join("rin.tar.zst");
    let (key, _) = build_signed(dir, &stack, "1700000000", &out);
    (out, key)
}

fn split(bundle: &Path, size: &str, key: &Path) -> Output {
    Command::new(bin("rinbundle"))
        .arg("split")
        .arg(bundle)
        .args(["--size", size, "--key"])
        .arg(key)
        .output()
        .unwrap()
}

fn check(parts: &Path, key: &Path) -> Output {
    Command::new(bin("rininstall"))
        .arg("check")
        .arg(parts)
        .arg("--key")
        .arg(key)
        .output()
        .unwrap()
}

fn part(bundle: &Path, n: usize) -> PathBuf {
    let mut s = bundle.as_os_str().to_os_string();
    s.push(format!(".part-{n:03}"));
    PathBuf::from(s)
}

#[test]
fn a_bundle_split_into_parts_rejoins_byte_for_byte_and_each_bad_part_is_named() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, public) = bundle(t.path());
    let whole = std::fs::read(&bundle).unwrap();
    let size = whole.len() / 3 + 1;
    let out = ok(
        &split(&bundle, &size.to_string(), &t.path().join("k.key")),
        "split",
    );
    assert!(out.contains("wrote 3 parts"), "{out}");
    let list = t.path().join("rin.tar.zst.parts");
    // Each part within the size, and together exactly the bundle (cat, as an operator would).
    let mut joined = Vec::new();
    for n in 1..=3 {
        let p = std::fs::read(part(&bundle, n)).unwrap();
        assert!(
            p.len() <= size && !p.is_empty(),
            "part {n}: {} bytes",
            p.len()
        );
        joined.extend(p);
    }
    assert!(!part(&bundle, 4).exists());
    assert!(joined == whole, "the parts do not rejoin into the bundle");
    // The part list: canonical JSON whose `list` is signed like the index, checkable by hand.
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&list).unwrap()).unwrap();
    let (index, _) = rin_bundle::peek(&bundle).unwrap();
    assert_eq!(
        doc["list"]["index_sha256"],
        rin_bundle::digest::sha256_hex(&index).as_str()
    );
    assert_eq!(
        doc["list"]["sha256"],
        rin_bundle::digest::sha256_hex(&whole).as_str()
    );
    assert_eq!(doc["list"]["parts"].as_array().unwrap().len(), 3);
    // The signed bytes, as FORMAT.md tells to take them with jq, verify with openssl.
    let signed = Command::new("jq")
        .args(["-jcS", ".list"])
        .arg(&list)
        .output()
        .unwrap();
    assert!(signed.status.success());
    std::fs::write(t.path().join("list.json"), &signed.stdout).unwrap();
    let sig = doc["signatures"]["signatures"][0]["signature"]
        .as_str()
        .unwrap();
    use base64::Engine as _;
    std::fs::write(
        t.path().join("list.sig"),
        base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap(),
    )
    .unwrap();
    ok(
        &Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
            .arg(&public)
            .args(["-rawin", "-in"])
            .arg(t.path().join("list.json"))
            .arg("-sigfile")
            .arg(t.path().join("list.sig"))
            .output()
            .unwrap(),
        "openssl verifies the part list's signature",
    );
    std::fs::remove_file(t.path().join("list.json")).unwrap();
    std::fs::remove_file(t.path().join("list.sig")).unwrap();
    rin_tests::assert_only(
        t.path(),
        &[
            "k.key",
            "k.pub",
            "rin.tar.zst",
            "rin.tar.zst.part-001",
            "rin.tar.zst.part-002",
            "rin.tar.zst.part-003",
            "rin.tar.zst.parts",
            "stack",
        ],
        "after the split",
    );

    let good = ok(&check(&list, &public), "check");
    assert_eq!(good.matches("good     ").count(), 3, "{good}");
    assert!(good.contains("all 3 parts"), "{good}");

    // A flipped byte in part 2: named with its sha256, exit code 3 (refused).
    let p2 = part(&bundle, 2);
    let orig2 = std::fs::read(&p2).unwrap();
    let mut flipped = orig2.clone();
    flipped[orig2.len() / 2] ^= 1;
    std::fs::write(&p2, &flipped).unwrap();
    let out = check(&list, &public);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("good     rin.tar.zst.part-001")
            && said.contains("damaged  rin.tar.zst.part-002: sha256 ")
            && said.contains("good     rin.tar.zst.part-003")
            && said.contains("1 of the 3 parts"),
        "{said}"
    );
    std::fs::write(&p2, &orig2).unwrap();

    // A truncated part and a missing one.
    let p3 = part(&bundle, 3);
    let orig3 = std::fs::read(&p3).unwrap();
    std::fs::write(&p3, &orig3[..orig3.len() - 1]).unwrap();
    std::fs::remove_file(part(&bundle, 1)).unwrap();
    let said = text(&check(&list, &public));
    assert!(
        said.contains("missing  rin.tar.zst.part-001: copy it from the connected machine")
            && said.contains(&format!(
                "damaged  rin.tar.zst.part-003: {} bytes, the list says {}",
                orig3.len() - 1,
                orig3.len()
            ))
            && said.contains("2 of the 3 parts"),
        "{said}"
    );

    // A part list signed by a key the site does not trust is refused before any part is read.
    let other = t.path().join("other");
    ok(
        &Command::new(bin("rinbundle"))
            .args(["keygen", "--out"])
            .arg(&other)
            .output()
            .unwrap(),
        "keygen",
    );
    let out = check(&list, &t.path().join("other.pub"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("its signatures were refused") && !said.contains("missing  "),
        "{said}"
    );
    // A list whose bytes were edited is refused too (here: a part's size).
    let edited = std::fs::read_to_string(&list)
        .unwrap()
        .replacen("\"size\":", "\"size\":1", 1);
    std::fs::write(&list, edited).unwrap();
    let out = check(&list, &public);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

fn verify(arg: &Path, key: &Path, extract: &Path) -> Output {
    Command::new(bin("rininstall"))
        .arg("verify")
        .arg(arg)
        .arg("--key")
        .arg(key)
        .arg("--extract")
        .arg(extract)
        .output()
        .unwrap()
}

#[test]
fn the_site_reads_the_parts_as_one_stream_and_names_the_part_that_is_wrong() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, public) = bundle(t.path());
    let whole = std::fs::read(&bundle).unwrap();
    let size = whole.len() / 3 + 1;
    ok(
        &split(&bundle, &size.to_string(), &t.path().join("k.key")),
        "split",
    );
    // No joined file at the site: only the parts and their list.
    std::fs::remove_file(&bundle).unwrap();
    let list = t.path().join("rin.tar.zst.parts");
    let extract = t.path().join("x");
    let out = ok(
        &verify(&list, &public, &extract),
        "verify from the part list",
    );
    assert!(out.contains("verified"), "{out}");
    assert!(extract.join("manifests").exists());
    std::fs::remove_dir_all(&extract).unwrap();
    // Any part names the same bundle.
    ok(
        &verify(&part(&bundle, 2), &public, &extract),
        "verify from a part",
    );
    std::fs::remove_dir_all(&extract).unwrap();
    // apply reads them too (a dry run here: nothing written).
    let root = t.path().join("root");
    let out = Command::new(bin("rininstall"))
        .arg("apply")
        .arg(&list)
        .arg("--key")
        .arg(&public)
        .arg("--root")
        .arg(&root)
        .args([
            "--no-start",
            "--arch",
            "amd64",
            "--dry-run",
            "--registry",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    let said = ok(&out, "apply --dry-run from parts");
    assert!(said.contains("would write"), "{said}");

    let refused = |what: &str, needle: &str| {
        let out = verify(&list, &public, &extract);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(3), "{what}: {said}");
        assert!(said.contains(needle), "{what}: {said}");
        assert!(!extract.exists(), "{what}: something was extracted");
    };
    // A missing part is named before the long pass.
    let p3 = part(&bundle, 3);
    let orig3 = std::fs::read(&p3).unwrap();
    std::fs::remove_file(&p3).unwrap();
    refused("missing part", "rin.tar.zst.part-003 is missing");
    // So is a short one.
    std::fs::write(&p3, &orig3[..orig3.len() - 7]).unwrap();
    refused(
        "short part",
        &format!(
            "rin.tar.zst.part-003 is {} bytes; the part list says {}",
            orig3.len() - 7,
            orig3.len()
        ),
    );
    std::fs::write(&p3, &orig3).unwrap();
    // A flipped byte in part 2 is named with its sha256.
    let p1 = part(&bundle, 1);
    let p2 = part(&bundle, 2);
    let (orig1, orig2) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    let mut flipped = orig2.clone();
    flipped[orig2.len() / 2] ^= 0x20;
    std::fs::write(&p2, &flipped).unwrap();
    refused(
        "flipped byte",
        "rin.tar.zst.part-002 is damaged: its sha256 is",
    );
    std::fs::write(&p2, &orig2).unwrap();
    // Two parts swapped (both of the full size): the first is named.
    assert_eq!(orig1.len(), orig2.len());
    std::fs::write(&p1, &orig2).unwrap();
    std::fs::write(&p2, &orig1).unwrap();
    refused("swapped parts", "rin.tar.zst.part-001 is damaged");
    std::fs::write(&p1, &orig1).unwrap();
    std::fs::write(&p2, &orig2).unwrap();
    // A part list of another bundle over these parts: the parts it lists do not match.
    let other = t.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let stack = fixture::write_stack(&other.join("stack")).unwrap();
    let other_bundle = other.join("rin.tar.zst");
    build_signed(t.path(), &stack, "1800000000", &other_bundle);
    ok(
        &split(&other_bundle, &size.to_string(), &t.path().join("k.key")),
        "split the other bundle",
    );
    let original = std::fs::read(&list).unwrap();
    std::fs::copy(other.join("rin.tar.zst.parts"), &list).unwrap();
    let out = verify(&list, &public, &extract);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!extract.exists());
    // A list, signed by a trusted key, whose parts are all there and intact but make another
    // bundle than the one it names: refused once the index is read.
    let mut doc: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let (other_index, _) = rin_bundle::peek(&other_bundle).unwrap();
    doc["list"]["index_sha256"] = rin_bundle::digest::sha256_hex(&other_index).into();
    let key = rin_signing::load_signing_key(&t.path().join("k.key")).unwrap();
    let sigs = rin_signing::sign(&rin_bundle::json::canonical_json(&doc["list"]), &[key]);
    doc["signatures"] = serde_json::from_slice(&sigs).unwrap();
    std::fs::write(&list, rin_bundle::json::canonical_json(&doc)).unwrap();
    let out = verify(&list, &public, &extract);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("its parts make another bundle"), "{said}");
    assert!(!extract.exists());
    // The list as it was: read again from the parts.
    std::fs::write(&list, &original).unwrap();
    ok(
        &verify(&list, &public, &extract),
        "verify with the list restored",
    );
}

/// `rinbundle build --split` writes the parts and list `rinbundle split` makes of the same bundle.
#[test]
fn build_split_writes_the_parts_split_would() {
    let t = tempfile::tempdir().unwrap();
    let stack = fixture::write_stack(&t.path().join("stack")).unwrap();
    let built = t.path().join("a");
    std::fs::create_dir(&built).unwrap();
    let bundle = built.join("rin.tar.zst");
    rin_tests::build_signed_with(
        t.path(),
        &stack,
        "1700000000",
        &bundle,
        &["--split".into(), "2000".into()],
    );
    let whole = std::fs::read(&bundle).unwrap();
    let count = whole.len().div_ceil(2000);
    assert!(count >= 3, "the test bundle is {} bytes", whole.len());
    assert!(part(&bundle, count).exists() && !part(&bundle, count + 1).exists());
    let again = t.path().join("b");
    std::fs::create_dir(&again).unwrap();
    std::fs::copy(&bundle, again.join("rin.tar.zst")).unwrap();
    ok(
        &split(&again.join("rin.tar.zst"), "2000", &t.path().join("k.key")),
        "split",
    );
    for n in 1..=count {
        assert!(
            std::fs::read(part(&bundle, n)).unwrap()
                == std::fs::read(part(&again.join("rin.tar.zst"), n)).unwrap()
        );
    }
    assert_eq!(
        std::fs::read(built.join("rin.tar.zst.parts")).unwrap(),
        std::fs::read(again.join("rin.tar.zst.parts")).unwrap()
    );
}

fn keygen(name: &Path) {
    ok(
        &Command::new(bin("rinbundle"))
            .args(["keygen", "--out"])
            .arg(name)
            .output()
            .unwrap(),
        "keygen",
    );
}

fn cosign(file: &Path, key: &Path) -> Output {
    Command::new(bin("rinbundle"))
        .arg("sign")
        .arg(file)
        .arg("--key")
        .arg(key)
        .output()
        .unwrap()
}

/// `rininstall verify` trusting both keys with `--threshold 2`.
fn verify_two(file: &Path, dir: &Path) -> Output {
    Command::new(bin("rininstall"))
        .arg("verify")
        .arg(file)
        .arg("--key")
        .arg(dir.join("k.pub"))
        .arg("--key")
        .arg(dir.join("k2.pub"))
        .args(["--threshold", "2"])
        .output()
        .unwrap()
}

#[test]
fn a_second_key_co_signs_a_bundle_and_its_parts_without_the_first_key_or_the_stack() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    keygen(&dir.join("k2"));
    let stack = fixture::write_stack(&dir.join("stack")).unwrap();
    let one = dir.join("one.tar.zst");
    build_signed(dir, &stack, "1700000000", &one);
    let both = dir.join("both.tar.zst");
    rin_tests::build_signed_with(
        dir,
        &stack,
        "1700000000",
        &both,
        &["--key".into(), dir.join("k2.key").display().to_string()],
    );
    let signed_once = std::fs::read(&one).unwrap();
    let (index_before, _) = rin_bundle::peek(&one).unwrap();

    // One signature is not enough for a site that needs two.
    let out = verify_two(&one, dir);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("1 of the required 2"), "{}", text(&out));

    // The stack is gone: the co-signer has only the bundle and their own key.
    std::fs::remove_dir_all(&stack).unwrap();
    let damaged = dir.join("damaged.tar.zst");
    let mut bytes = signed_once.clone();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    let out = cosign(&damaged, &dir.join("k2.key"));
    assert!(!out.status.success(), "a damaged bundle was co-signed");
    assert!(
        std::fs::read(&damaged).unwrap() == bytes,
        "the damaged file changed"
    );
    std::fs::remove_file(&damaged).unwrap();

    let said = ok(&cosign(&one, &dir.join("k2.key")), "sign");
    assert!(said.contains("co-signed"), "{said}");
    let (index_after, _) = rin_bundle::peek(&one).unwrap();
    assert!(index_after == index_before, "the index changed");
    assert!(
        std::fs::read(&one).unwrap() == std::fs::read(&both).unwrap(),
        "co-signing did not give the bundle a build by both keys writes"
    );
    ok(&verify_two(&one, dir), "verify with two signatures");
    let again = ok(&cosign(&one, &dir.join("k2.key")), "sign again");
    assert!(again.contains("already signed"), "{again}");

    // Parts: split the once-signed bundle, then co-sign only the part list.
    let parts_dir = dir.join("stick");
    std::fs::create_dir(&parts_dir).unwrap();
    let bundle = parts_dir.join("rin.tar.zst");
    std::fs::write(&bundle, &signed_once).unwrap();
    ok(
        &split(
            &bundle,
            &(signed_once.len() / 3 + 1).to_string(),
            &dir.join("k.key"),
        ),
        "split",
    );
    std::fs::remove_file(&bundle).unwrap();
    let list = parts_dir.join("rin.tar.zst.parts");
    let out = verify_two(&list, dir);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let parts_before: Vec<Vec<u8>> = (1..=3)
        .map(|n| std::fs::read(part(&bundle, n)).unwrap())
        .collect();
    // A damaged part is named and the list is not signed.
    let list_before = std::fs::read(&list).unwrap();
    let mut flipped = parts_before[1].clone();
    flipped[10] ^= 1;
    std::fs::write(part(&bundle, 2), &flipped).unwrap();
    let out = cosign(&part(&bundle, 2), &dir.join("k2.key"));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("rin.tar.zst.part-002 is damaged"),
        "{}",
        text(&out)
    );
    assert!(std::fs::read(&list).unwrap() == list_before);
    std::fs::write(part(&bundle, 2), &parts_before[1]).unwrap();

    let said = ok(&cosign(&list, &dir.join("k2.key")), "sign the part list");
    assert!(said.contains("parts are unchanged"), "{said}");
    for (n, before) in (1..=3).zip(&parts_before) {
        assert!(&std::fs::read(part(&bundle, n)).unwrap() == before);
    }
    ok(&verify_two(&list, dir), "verify the co-signed parts");
}
