//! Build the fixture stack and verify it: contents, platform selection, shared blobs,
//! determinism, and that a standard tar reader sees the same archive.

#![allow(clippy::unwrap_used)]

use rin_bundle::Silent;
use rin_bundle::index::Index;
use rin_tests::craft::{self, build_stack, keys, policy};
use rin_tests::fixture::write_stack;
use std::collections::HashSet;
use std::fs;
use std::io::Read;

#[test]
fn two_arch_bundle_verifies_and_extracts_what_went_in() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = write_stack(&tmp.path().join("stack")).unwrap();
    let ks = keys(1);
    let out = tmp.path().join("bundle.tar.zst");
    let built = build_stack(&stack, &out, &ks, &["amd64", "arm64"], 2);

    let staging = tmp.path().join("staging");
    let v = rin_bundle::verify(&out, &policy(&ks, 1), Some(&staging), &Silent).unwrap();
    assert_eq!(v.index, built.index);
    assert_eq!(v.index.platforms, vec!["linux/amd64", "linux/arm64"]);
    assert_eq!(v.index.k3s.as_ref().unwrap().version, "v1.31.4+k3s1");
    assert_eq!(v.index.images.len(), 2);
    for i in &v.index.images {
        assert_eq!(
            i.upstream_digest, None,
            "all platforms kept: the upstream index is carried as is"
        );
        let names: Vec<String> = i.platforms.iter().map(|p| p.platform.to_string()).collect();
        assert_eq!(names, vec!["linux/amd64", "linux/arm64"]);
    }
    assert_eq!(v.index.charts.len(), 1);

    // Extracted content equals the sources, with the right modes.
    assert_eq!(
        fs::read(staging.join("manifests/app/web.yaml")).unwrap(),
        fs::read(stack.join("manifests/app/web.yaml")).unwrap()
    );
    assert_eq!(
        fs::read(staging.join("files/notes.txt")).unwrap(),
        b"operator notes\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| fs::metadata(staging.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("k3s/k3s-arm64"), 0o755);
    assert_eq!(mode("k3s/sha256sum-arm64.txt"), 0o644);
    assert_eq!(
        fs::read(staging.join("rinbundle.json")).unwrap(),
        built.index.to_canonical_json()
    );

    // Every blob once: the stored blobs are exactly the referenced digests, and the base
    // layer that all four manifests share is one of them.
    let blob_entries: Vec<&str> = v
        .index
        .entries
        .iter()
        .map(|e| e.path.as_str())
        .filter(|p| p.starts_with("oci/blobs/"))
        .collect();
    let read_json = |digest: &str| -> serde_json::Value {
        serde_json::from_slice(
            &fs::read(staging.join(format!("oci/blobs/sha256/{}", &digest[7..]))).unwrap(),
        )
        .unwrap()
    };
    let mut referenced = HashSet::new();
    let mut first_layers = HashSet::new();
    for i in &v.index.images {
        referenced.insert(i.digest.clone());
        for p in &i.platforms {
            referenced.insert(p.digest.clone());
            let m = read_json(&p.digest);
            referenced.insert(m["config"]["digest"].as_str().unwrap().to_string());
            for l in m["layers"].as_array().unwrap() {
                referenced.insert(l["digest"].as_str().unwrap().to_string());
            }
            first_layers.insert(m["layers"][0]["digest"].as_str().unwrap().to_string());
        }
    }
    for c in &v.index.charts {
        referenced.insert(c.digest.clone());
        let m = read_json(&c.digest);
        referenced.insert(m["config"]["digest"].as_str().unwrap().to_string());
        referenced.insert(m["layers"][0]["digest"].as_str().unwrap().to_string());
    }
    assert_eq!(
        first_layers.len(),
        1,
        "the fixture's four manifests share one base layer"
    );
    let stored: HashSet<String> = blob_entries
        .iter()
        .map(|p| format!("sha256:{}", &p["oci/blobs/sha256/".len()..]))
        .collect();
    assert_eq!(stored.len(), blob_entries.len(), "no blob is stored twice");
    assert_eq!(stored, referenced);

    // The archive is plain tar: the tar crate lists the same entries in the same order.
    let raw = craft::decompress(&out);
    let mut names = Vec::new();
    for e in tar::Archive::new(&raw[..]).entries().unwrap() {
        let mut e = e.unwrap();
        names.push(e.path().unwrap().to_string_lossy().into_owned());
        e.read_to_end(&mut Vec::new()).unwrap();
    }
    let mut expected = vec!["rinbundle.json".to_string(), "rinbundle.sig".to_string()];
    expected.extend(v.index.entries.iter().map(|e| e.path.clone()));
    assert_eq!(names, expected);
}

#[test]
fn one_arch_keeps_only_that_platform_with_a_recorded_filtered_index() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = write_stack(&tmp.path().join("stack")).unwrap();
    let ks = keys(1);
    let out = tmp.path().join("arm.tar.zst");
    let built = build_stack(&stack, &out, &ks, &["arm64"], 1);
    let idx: &Index = &built.index;
    assert_eq!(idx.platforms, vec!["linux/arm64"]);
    let paths: HashSet<&str> = idx.entries.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains("k3s/k3s-arm64") && !paths.contains("k3s/k3s"));
    assert!(!paths.contains("k3s/k3s-airgap-images-amd64.tar.zst"));
    let staging = tmp.path().join("x");
    rin_bundle::verify(&out, &policy(&ks, 1), Some(&staging), &Silent).unwrap();
    for i in &idx.images {
        let upstream = i
            .upstream_digest
            .as_ref()
            .expect("filtered index records the upstream digest");
        assert_ne!(upstream, &i.digest);
        assert_eq!(i.platforms.len(), 1);
        let filtered: serde_json::Value = serde_json::from_slice(
            &fs::read(staging.join(format!("oci/blobs/sha256/{}", &i.digest[7..]))).unwrap(),
        )
        .unwrap();
        let children = filtered["manifests"].as_array().unwrap();
        assert_eq!(children.len(), 1);
        assert_eq!(children[0]["platform"]["architecture"], "arm64");
        assert_eq!(children[0]["digest"], i.platforms[0].digest.as_str());
        // The upstream index is not carried, nor the amd64 manifest.
        assert!(!paths.contains(format!("oci/blobs/sha256/{}", &upstream[7..]).as_str()));
    }
}

#[test]
fn missing_platform_is_an_error_naming_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = write_stack(&tmp.path().join("stack")).unwrap();
    let s = rin_builder::Stack::load(&stack).unwrap();
    let opts = rin_builder::BuildOptions {
        arches: vec!["riscv64".parse().unwrap()],
        keys: keys(1),
        output: tmp.path().join("b.tar.zst"),
        created: craft::CREATED,
        threads: 1,
        ..Default::default()
    };
    let err = rin_builder::build(&s, &opts, &Silent).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("registry.example/demo/web:1.0")
            && msg.contains("linux/riscv64")
            && msg.contains("linux/arm64"),
        "{msg}"
    );
    assert!(
        !tmp.path().join("b.tar.zst").exists() && !tmp.path().join("b.tar.zst.partial").exists()
    );
}

#[test]
fn builds_are_deterministic_across_directories_mtimes_times_and_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let ks = keys(1);
    let a = write_stack(&tmp.path().join("a/stack")).unwrap();
    let out_a = tmp.path().join("a/bundle.tar.zst");
    let first = build_stack(&a, &out_a, &ks, &["amd64", "arm64"], 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = write_stack(&tmp.path().join("elsewhere/b/stack")).unwrap();
    // Different mtimes on every source file of the second copy.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for entry in walk(&b) {
        fs::File::options()
            .write(true)
            .open(&entry)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let out_b = tmp.path().join("elsewhere/bundle.tar.zst");
    let second = build_stack(&b, &out_b, &ks, &["arm64", "amd64"], 3);
    assert_eq!(first.sha256, second.sha256);
    assert_eq!(fs::read(&out_a).unwrap(), fs::read(&out_b).unwrap());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}
