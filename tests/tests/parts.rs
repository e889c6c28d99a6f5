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
