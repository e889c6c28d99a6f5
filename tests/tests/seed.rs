//! `rininstall seed` against a real registry (CNCF Distribution, Debian's `docker-registry`),
//! with `skopeo` as the independent client that pulls everything back by its original name.
#![allow(clippy::unwrap_used)]

use rin_bundle::Index;
use rin_installer::node::seed::{self, SeedOptions};
use rin_tests::registry::{Options, Registry};
use rin_tests::{bin, build_signed, fixture, ok};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command, what: &str) -> String {
    ok(&cmd.output().unwrap(), what)
}

/// The test stack built into a signed bundle: (bundle, public key, its index).
fn bundle(dir: &Path) -> (PathBuf, PathBuf, Index) {
    bundle_at(dir, "1700000000", "b.tar.zst")
}

/// The test stack built at `epoch` into `dir/name`, signed with `dir/k.key`.
fn bundle_at(dir: &Path, epoch: &str, name: &str) -> (PathBuf, PathBuf, Index) {
    let stack = fixture::write_stack(&dir.join("stack")).unwrap();
    let out = dir.join(name);
    let (key, index) = build_signed(dir, &stack, epoch, &out);
    (out, key, index)
}

fn seed(bundle: &Path, key: &Path, reg: &Registry) -> String {
    run(
        Command::new(bin("rininstall"))
            .arg("seed")
            .arg(bundle)
            .arg("--key")
            .arg(key)
            .args(["--registry", &reg.addr]),
        "seed",
    )
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A number printed before `word` in the seed summary.
fn count(summary: &str, word: &str) -> usize {
    let before = &summary[..summary
        .find(word)
        .unwrap_or_else(|| panic!("{word} in {summary}"))];
    before
        .split_whitespace()
        .last()
        .unwrap()
        .trim_start_matches('(')
        .parse()
        .unwrap()
}

#[test]
fn seeding_pushes_every_image_and_chart_under_its_name_and_a_rerun_sends_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, index) = bundle(t.path());
    let reg = Registry::start(Options::default());

    let first = seed(&bundle, &key, &reg);
    // web and worker share their base layer: it is uploaded once and mounted into the other.
    assert!(count(&first, "mounted") >= 1, "{first}");
    assert_eq!(count(&first, "already present"), 0, "{first}");

    // skopeo pulls every image by its original repository and tag; the digests are the bundle's.
    for image in &index.images {
        let (repo, tag) = seed::site_name(&image.reference).unwrap();
        let name = format!("docker://{}/{repo}:{}", reg.addr, tag.unwrap());
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &name]);
        assert_eq!(
            format!("sha256:{}", rin_bundle::digest::sha256_hex(&raw)),
            image.digest,
            "{name}"
        );
        let dest = t.path().join(format!("pulled-{}", repo.replace('/', "-")));
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &name,
            &format!("oci:{}:x", dest.display()),
        ]);
        for p in &image.platforms {
            let by_digest = format!("docker://{}/{repo}@{}", reg.addr, p.digest);
            skopeo(&["inspect", "--raw", "--tls-verify=false", &by_digest]);
        }
    }
    // The chart, as `helm pull oci://REGISTRY/charts/demo --version 0.1.0` asks for it.
    let chart = &index.charts[0];
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/charts/demo:0.1.0", reg.addr),
    ]);
    assert_eq!(
        format!("sha256:{}", rin_bundle::digest::sha256_hex(&raw)),
        chart.digest
    );

    // Seeding again: every blob is found in place, nothing is uploaded or mounted.
    let again = seed(&bundle, &key, &reg);
    assert!(again.contains(" 0 blobs uploaded"), "{again}");
    assert_eq!(count(&again, "mounted"), 0, "{again}");
    assert!(count(&again, "already present") > 0, "{again}");
    // ... and found so from the signed index and the registry alone.
    assert!(
        again.contains("without reading the bundle's entries"),
        "{again}"
    );
}

#[test]
fn an_untrusted_bundle_is_refused_before_the_registry_is_touched() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, _, _) = bundle(t.path());
    run(
        Command::new(bin("rinbundle")).args([
            "keygen",
            "--out",
            t.path().join("other").to_str().unwrap(),
        ]),
        "keygen",
    );
    let reg = Registry::start(Options::default());
    let out = Command::new(bin("rininstall"))
        .arg("seed")
        .arg(&bundle)
        .arg("--key")
        .arg(t.path().join("other.pub"))
        .args(["--registry", &reg.addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // Nothing reached the registry.
    let repos = skopeo_catalog(&reg.addr);
    assert!(repos.is_empty(), "{repos:?}");
}

#[test]
fn a_bundle_that_changed_since_it_was_verified_is_refused_before_any_upload() {
    let t = tempfile::tempdir().unwrap();
    let (first, key, _) = bundle(t.path());
    // Same stack and key, another build time: another signed index.
    let (second, _, _) = bundle_at(t.path(), "1700000001", "c.tar.zst");
    let policy = rin_signing::TrustPolicy::load(&[key], None, 1).unwrap();
    let plan = seed::plan(&first, &policy, &rin_bundle::Silent).unwrap();
    let reg = Registry::start(Options::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The verified bundle's file is replaced by another one between the passes.
    std::fs::rename(&second, &first).unwrap();
    let e = seed::seed(
        &first,
        &policy,
        &plan,
        &SeedOptions::new(&reg.addr),
        rt.handle(),
        &rin_bundle::Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("is not the bundle that was verified"), "{e}");
    let repos = skopeo_catalog(&reg.addr);
    assert!(repos.is_empty(), "{repos:?}");
}

fn skopeo_catalog(addr: &str) -> Vec<String> {
    let (code, body) = rin_tests::net::request(addr, "GET", "/v2/_catalog");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_site_platform_gets_a_filtered_index_under_the_original_tag_and_no_other_platform() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, index) = bundle(t.path());
    let reg = Registry::start(Options::default());
    let seed_for = |platform: &str| {
        Command::new(bin("rininstall"))
            .arg("seed")
            .arg(&bundle)
            .arg("--key")
            .arg(&key)
            .args(["--registry", &reg.addr, "--platform", platform])
            .output()
            .unwrap()
    };

    // A platform the bundle does not carry is refused before the registry is written to.
    let out = seed_for("riscv64");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not carry linux/riscv64") && err.contains("linux/amd64, linux/arm64"),
        "{err}"
    );
    assert!(skopeo_catalog(&reg.addr).is_empty());

    let first = ok(&seed_for("arm64"), "seed arm64");
    let multi: Vec<_> = index
        .images
        .iter()
        .filter(|i| i.platforms.len() > 1)
        .collect();
    assert!(!multi.is_empty());
    for image in multi {
        let (repo, tag) = seed::site_name(&image.reference).unwrap();
        let arm = image
            .platforms
            .iter()
            .find(|p| p.platform == "linux/arm64")
            .unwrap();
        let amd = image
            .platforms
            .iter()
            .find(|p| p.platform == "linux/amd64")
            .unwrap();
        // The original tag resolves to an index holding only the arm64 manifest.
        let name = format!("docker://{}/{repo}:{}", reg.addr, tag.unwrap());
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &name]);
        assert_ne!(
            format!("sha256:{}", rin_bundle::digest::sha256_hex(&raw)),
            image.digest
        );
        let doc: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let children = doc["manifests"].as_array().unwrap();
        assert_eq!(children.len(), 1, "{doc}");
        assert_eq!(children[0]["digest"], arm.digest.as_str());
        // An arm64 client pulls it whole; the amd64 manifest is not in the registry at all.
        let dest = t.path().join(format!("arm-{}", repo.replace('/', "-")));
        skopeo(&[
            "copy",
            "--override-arch",
            "arm64",
            "--src-tls-verify=false",
            &name,
            &format!("oci:{}:x", dest.display()),
        ]);
        let by_digest = |d: &str| {
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{}/{repo}@{d}", reg.addr))
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(by_digest(&arm.digest));
        assert!(
            !by_digest(&amd.digest),
            "{repo}@{} is in the registry",
            amd.digest
        );
    }

    // A re-run for the same platform finds everything in place.
    let again = ok(&seed_for("linux/arm64"), "seed arm64 again");
    assert!(again.contains(" 0 blobs uploaded"), "{again}");
    // The site seeded one platform of two: fewer blobs than the bundle holds.
    let plan = seed::plan(
        &bundle,
        &rin_signing::TrustPolicy::load(std::slice::from_ref(&key), None, 1).unwrap(),
        &rin_bundle::Silent,
    )
    .unwrap();
    assert!(
        count(&first, "blobs uploaded") < plan.blob_count(),
        "{first}: the bundle has {} blobs",
        plan.blob_count()
    );
}

#[test]
fn an_unreachable_registry_is_named_with_the_reason_under_the_error() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, _) = bundle(t.path());
    // Nothing listens on port 1 of loopback.
    let out = Command::new(bin("rininstall"))
        .arg("seed")
        .arg(&bundle)
        .arg("--key")
        .arg(&key)
        .args(["--registry", "127.0.0.1:1", "--attempts", "1", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("registry 127.0.0.1:1") && err.contains("Connection refused"),
        "{err}"
    );
}
