//! `rinbundle` against a real registry (CNCF Distribution, Debian's `docker-registry`), with
//! `skopeo` pushing the fixtures and reading the bundle's OCI layout back as an independent
//! client.
#![allow(clippy::unwrap_used)]

use rin_builder::lock::Lock;
use rin_tests::fixture::{FixtureImage, LayerFile, LayoutWriter};
use rin_tests::net::CuttingProxy;
use rin_tests::registry::{Options, Registry, docker_config};
use rin_tests::{assert_only, bin, events, ok};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Two two-arch images, `app` and `tool`, sharing their base layer: (layout, app index digest,
/// tool index digest).
fn fixtures(dir: &Path, big: usize) -> (PathBuf, String, String) {
    let layout = dir.join("layout");
    let mut w = LayoutWriter::new(&layout).unwrap();
    let mut app = FixtureImage::small("app", &["amd64", "arm64"]);
    if big > 0 {
        // Incompressible, so the gzip'd layer stays big (for the cut-connection tests).
        let mut bytes = vec![0u8; big];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for b in bytes.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        app.base.push(LayerFile::new("usr/share/big.bin", bytes));
    }
    let app_digest = w.image(&app).unwrap();
    let tool_digest = w
        .image(&FixtureImage::small("tool", &["amd64", "arm64"]))
        .unwrap();
    (layout, app_digest, tool_digest)
}

/// A stack naming `images`, with a manifest that uses each of them.
fn stack(dir: &Path, images: &[String]) -> PathBuf {
    let s = dir.join("stack");
    fs::create_dir_all(s.join("manifests")).unwrap();
    let mut yaml = "name: pulled\nversion: 1.0.0\nplatforms: [arm64]\nimages:\n".to_string();
    let mut containers = String::new();
    for (n, i) in images.iter().enumerate() {
        yaml.push_str(&format!("  - reference: {i}\n"));
        containers.push_str(&format!("        - name: c{n}\n          image: {i}\n"));
    }
    fs::write(s.join("bundle.yaml"), yaml).unwrap();
    fs::write(
        s.join("manifests/deploy.yaml"),
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  template:\n    spec:\n      containers:\n{containers}"),
    )
    .unwrap();
    s
}

/// `rinbundle build` of `st` signed with `key` into `out`, with `cache`, plus `extra`.
fn build_args(st: &Path, key: &Path, cache: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "build",
        "--stack",
        s(st),
        "--key",
        s(key),
        "--cache",
        s(cache),
        "-o",
        s(out),
    ]
    .map(str::to_string)
    .to_vec();
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

fn rinbundle<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(bin("rinbundle"));
    c.args(args).env("SOURCE_DATE_EPOCH", "1700000000");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn failed(out: &Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what} should fail with exit 1: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn keygen(dir: &Path) -> PathBuf {
    let k = dir.join("k");
    ok(
        &rinbundle(&["keygen", "--out", k.to_str().unwrap()], &[]),
        "keygen",
    );
    dir.join("k.key")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pull_filters_platforms_fetches_shared_blobs_once_locks_and_skopeo_reads_the_bundle() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let (layout, app_digest, tool_digest) = fixtures(t.path(), 0);
    reg.push(&layout, "app", "test/app:1.0");
    reg.push(&layout, "tool", "test/tool:2.0");
    let app = format!("{}/test/app:1.0", reg.addr);
    let tool = format!("{}/test/tool@{tool_digest}", reg.addr);
    let st = stack(t.path(), &[app.clone(), tool.clone()]);
    let key = keygen(t.path());
    let cache = t.path().join("cache");
    let b1 = t.path().join("b1.tar.zst");
    let args = |out: &Path, extra: &[&str]| {
        let mut e = vec!["--progress", "json", "--arch", "arm64"];
        e.extend(extra);
        build_args(&st, &key, &cache, out, &e)
    };
    let a1 = args(&b1, &[]);
    let out = rinbundle(&a1, &[]);
    let stdout1 = ok(&out, "first build");
    // The shared base layer is fetched once: arm64 needs 2 configs + 2 own layers + 1 base.
    let starts = events(&out, "start");
    assert_eq!(starts.len(), 5, "downloads: {starts:?}");
    assert_eq!(events(&out, "done").len(), 5);

    // The lock pins the tag's index digest and every platform the source offers.
    let lock = Lock::load(&st.join("images.lock")).unwrap().unwrap();
    assert_eq!(lock.images.len(), 2);
    let la = lock.image(&app).unwrap();
    assert_eq!(la.digest, app_digest);
    assert_eq!(
        la.platforms.keys().collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    assert_eq!(lock.image(&tool).unwrap().digest, tool_digest);

    // Only arm64 is carried; the filtered index is recorded next to the upstream digest.
    let out = rinbundle(&["inspect", "--json", s(&b1)], &[]);
    let idx: serde_json::Value = serde_json::from_str(&ok(&out, "inspect")).unwrap();
    for img in idx["index"]["images"].as_array().unwrap() {
        let plats: Vec<&str> = img["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["platform"].as_str().unwrap())
            .collect();
        assert_eq!(plats, ["linux/arm64"], "{img}");
        let upstream = img["upstream_digest"].as_str().unwrap();
        assert!(upstream == app_digest || upstream == tool_digest, "{img}");
        assert_ne!(img["digest"].as_str().unwrap(), upstream);
    }

    // skopeo reads every image from the verified, extracted layout.
    let ex = t.path().join("ex");
    fs::create_dir(&ex).unwrap();
    let out = Command::new(bin("rininstall"))
        .args([
            "verify",
            s(&b1),
            "--key",
            s(&t.path().join("k.pub")),
            "--extract",
        ])
        .arg(ex.join("b"))
        .output()
        .unwrap();
    ok(&out, "verify --extract");
    let oci_dir = ex.join("b/oci");
    for r in [&app, &tool] {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:{r}", oci_dir.display()))
            .output()
            .unwrap();
        let raw: serde_json::Value = serde_json::from_str(&ok(&out, "skopeo inspect")).unwrap();
        assert_eq!(raw["manifests"].as_array().unwrap().len(), 1, "{raw}");
        let dest = t.path().join(format!("copy-{}", r.len()));
        let out = Command::new("skopeo")
            .args(["copy", "--all", "--quiet"])
            .arg(format!("oci:{}:{r}", oci_dir.display()))
            .arg(format!("oci:{}:x", dest.display()))
            .output()
            .unwrap();
        ok(&out, "skopeo copy from the bundle");
    }

    // Again, --locked, same cache: nothing is downloaded and the bundle is byte-identical.
    let b2 = t.path().join("b2.tar.zst");
    let a2 = args(&b2, &["--locked"]);
    let out = rinbundle(&a2, &[]);
    let stdout2 = ok(&out, "locked rebuild");
    assert!(events(&out, "start").is_empty());
    assert_eq!(events(&out, "cached").len(), 5);
    // The last line ends with the index digest.
    let sum = |o: &str| {
        o.lines()
            .last()
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .to_string()
    };
    assert!(sum(&stdout1).starts_with("sha256:"), "{stdout1}");
    assert_eq!(sum(&stdout1), sum(&stdout2));
    assert_eq!(fs::read(&b1).unwrap(), fs::read(&b2).unwrap());
    // Nothing partial is left in the cache.
    for e in fs::read_dir(cache.join("blobs/sha256")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains("partial"), "{n} left in the cache");
    }
}

#[test]
fn basic_auth_over_tls_with_a_private_ca() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options {
        user: Some(("rin".into(), "s3cret".into())),
        tls: true,
    });
    let (layout, app_digest, _) = fixtures(t.path(), 0);
    reg.push(&layout, "app", "test/app:1.0");
    let app = format!("{}/test/app:1.0", reg.addr);
    let st = stack(t.path(), std::slice::from_ref(&app));
    let key = keygen(t.path());
    let cache = t.path().join("cache");
    let out_file = t.path().join("b.tar.zst");
    let ca = reg.ca();
    let empty_cfg = t.path().join("no-docker-config");
    fs::create_dir_all(&empty_cfg).unwrap();
    let base = build_args(&st, &key, &cache, &out_file, &["--attempts", "1"]);

    // Without the CA: refused, and the error says why.
    let out = rinbundle(&base, &[("DOCKER_CONFIG", &empty_cfg)]);
    let err = failed(&out, "build without the CA");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // With the CA but no credentials: access denied, with the hint to log in.
    let mut with_ca = base.clone();
    with_ca.extend(["--ca-file".to_string(), s(&ca).to_string()]);
    let out = rinbundle(&with_ca, &[("DOCKER_CONFIG", &empty_cfg)]);
    let err = failed(&out, "build without credentials");
    assert!(
        err.contains("denied") || err.contains("authorized"),
        "{err}"
    );
    assert!(err.contains("docker login"), "{err}");

    // With credentials from a Docker config: pulled.
    let cfg = docker_config(t.path(), &reg.addr, "rin", "s3cret");
    let out = rinbundle(&with_ca, &[("DOCKER_CONFIG", &cfg)]);
    ok(&out, "build with CA and credentials");
    let lock = Lock::load(&st.join("images.lock")).unwrap().unwrap();
    assert_eq!(lock.image(&app).unwrap().digest, app_digest);
    assert!(!out_file.with_extension("zst.partial").exists());
}

#[test]
fn locked_refuses_a_stale_lock_and_a_vanished_digest_names_both_digests() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let (layout, app_digest, _) = fixtures(t.path(), 0);
    reg.push(&layout, "app", "test/app:1.0");
    reg.push(&layout, "tool", "test/tool:1.0");
    let app = format!("{}/test/app:1.0", reg.addr);
    let tool = format!("{}/test/tool:1.0", reg.addr);
    let key = keygen(t.path());
    let cache = t.path().join("cache");
    let out_file = t.path().join("b.tar.zst");
    let build = |st: &Path, extra: &[&str]| {
        let mut e = vec!["--attempts", "2"];
        e.extend(extra);
        rinbundle(&build_args(st, &key, &cache, &out_file, &e), &[])
    };

    // No lock at all.
    let st = stack(t.path(), std::slice::from_ref(&app));
    let err = failed(&build(&st, &["--locked"]), "--locked without a lock");
    assert!(err.contains("no lock file"), "{err}");
    assert!(!st.join("images.lock").exists());
    ok(&build(&st, &[]), "build writes the lock");
    fs::remove_file(&out_file).unwrap();
    let lock_text = fs::read_to_string(st.join("images.lock")).unwrap();

    // The stack gains an image the lock lacks: --locked refuses and leaves the lock alone.
    let st = stack(t.path(), &[app.clone(), tool.clone()]);
    let err = failed(&build(&st, &["--locked"]), "--locked with a stale lock");
    assert!(err.contains(&tool) && err.contains("not locked"), "{err}");
    assert_eq!(
        fs::read_to_string(st.join("images.lock")).unwrap(),
        lock_text
    );
    assert!(!out_file.exists());

    // The tag moves to other content and the locked digest is deleted at the source.
    let st = stack(t.path(), std::slice::from_ref(&app));
    let other = t.path().join("other");
    let mut w = LayoutWriter::new(&other).unwrap();
    let new_digest = w
        .image(&FixtureImage::small("app2", &["amd64", "arm64"]))
        .unwrap();
    reg.push(&other, "app2", "test/app:1.0");
    reg.delete_manifest("test/app", &app_digest);
    let fresh_cache = t.path().join("cache2");
    let out = rinbundle(
        &build_args(&st, &key, &fresh_cache, &out_file, &["--attempts", "2"]),
        &[],
    );
    let err = failed(&out, "build with a lock the source no longer serves");
    assert!(
        err.contains(&app) && err.contains(&app_digest) && err.contains(&new_digest),
        "{err}"
    );
    assert!(err.contains("rinbundle lock"), "{err}");

    // `rinbundle lock` re-resolves, and says what changed.
    let out = rinbundle(
        &["lock", "--stack", s(&st), "--cache", s(&fresh_cache)],
        &[],
    );
    let stdout = ok(&out, "lock");
    assert!(stdout.contains(&new_digest), "{stdout}");
    let lock = Lock::load(&st.join("images.lock")).unwrap().unwrap();
    assert_eq!(lock.image(&app).unwrap().digest, new_digest);
}

#[test]
fn a_cut_connection_and_a_killed_run_resume_with_range() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let (layout, _, _) = fixtures(t.path(), 3 << 20);
    reg.push(&layout, "app", "test/app:1.0");
    let proxy = CuttingProxy::start(&reg.addr, 1 << 20);
    let app = format!("{}/test/app:1.0", proxy.addr);
    let st = stack(t.path(), std::slice::from_ref(&app));
    let key = keygen(t.path());
    let cache = t.path().join("cache");
    let out_file = t.path().join("b.tar.zst");
    let args = build_args(
        &st,
        &key,
        &cache,
        &out_file,
        &["--progress", "json", "--jobs", "1"],
    );

    // The connection is cut 1 MiB into the big layer: the same run resumes it.
    proxy.arm();
    let out = rinbundle(&args, &[]);
    ok(&out, "build through a cutting proxy");
    assert_eq!(proxy.cuts(), 1);
    assert!(proxy.saw_range(), "the retry asked for the rest with Range");
    let retries = events(&out, "retry");
    assert_eq!(retries.len(), 1, "{retries:?}");
    let resumed: Vec<u64> = events(&out, "done")
        .iter()
        .map(|d| d["resumed_at"].as_u64().unwrap())
        .collect();
    assert!(resumed.iter().any(|r| *r > 0), "{resumed:?}");
    let first = fs::read(&out_file).unwrap();

    // A killed run leaves a .partial: the next run continues from it.
    let big = fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let bytes = fs::read(&big).unwrap();
    fs::remove_file(&big).unwrap();
    let partial = big.with_file_name(format!(
        "{}.partial",
        big.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&partial, &bytes[..bytes.len() / 2]).unwrap();
    fs::remove_file(&out_file).unwrap();
    let out = rinbundle(&args, &[]);
    ok(&out, "build after a killed run");
    let done = events(&out, "done");
    assert_eq!(done.len(), 1, "only the partial blob is fetched: {done:?}");
    assert_eq!(
        done[0]["resumed_at"].as_u64().unwrap(),
        (bytes.len() / 2) as u64
    );
    assert_eq!(fs::read(&big).unwrap(), bytes);
    assert!(!partial.exists());
    assert_eq!(fs::read(&out_file).unwrap(), first);
}

#[test]
fn a_registry_serving_a_blob_that_does_not_match_its_digest_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let (layout, _, _) = fixtures(t.path(), 0);
    reg.push(&layout, "app", "test/app:1.0");
    // Damage the arm64 layer of `app` in the registry's own storage (same size).
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(reg.blob_data(&app_index(&layout))).unwrap()).unwrap();
    let arm = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(reg.blob_data(&arm)).unwrap()).unwrap();
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = reg.blob_data(&layer);
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&data, &bytes).unwrap();

    let app = format!("{}/test/app:1.0", reg.addr);
    let st = stack(t.path(), std::slice::from_ref(&app));
    let key = keygen(t.path());
    let cache = t.path().join("cache");
    let out = rinbundle(
        &build_args(
            &st,
            &key,
            &cache,
            &t.path().join("b.tar.zst"),
            &["--arch", "arm64"],
        ),
        &[],
    );
    let err = failed(&out, "build from a registry with a damaged blob");
    assert!(
        err.contains("does not match") && err.contains(&layer),
        "{err}"
    );
    // Nothing of it is kept: no blob under its name, no partial.
    let hex = layer.trim_start_matches("sha256:");
    let left: Vec<String> = fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(hex))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_only(
        t.path(),
        &["cache", "k.key", "k.pub", "layout", "stack"],
        "refused build",
    );
}

/// The digest of `app` in the fixture layout's index.json.
fn app_index(layout: &Path) -> String {
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "app")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_registry_mirror_serves_the_images_under_their_own_names() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let (layout, app_digest, _) = fixtures(t.path(), 0);
    // The mirror holds ghcr.io/rin-platform/app:1.0 and docker.io's library/app:2 under the
    // same repository paths, as a pull-through cache would. References keep their spelling.
    reg.push(&layout, "app", "rin-platform/app:1.0");
    reg.push(&layout, "app", "library/app:2");
    let images = [
        "ghcr.io/rin-platform/app:1.0".to_string(),
        "app:2".to_string(),
    ];
    let st = stack(t.path(), &images);
    let key = keygen(t.path());
    let out = t.path().join("b.tar.zst");
    let ghcr = format!("ghcr.io={}", reg.addr);
    let hub = format!("docker.io={}", reg.addr);
    let built = rinbundle(
        &build_args(
            &st,
            &key,
            &t.path().join("cache"),
            &out,
            &[
                "--arch",
                "arm64",
                "--registry-mirror",
                &ghcr,
                "--registry-mirror",
                &hub,
            ],
        ),
        &[],
    );
    ok(&built, "build through the mirror");
    let (index, _) = rin_bundle::peek(&out).unwrap();
    let index = rin_bundle::Index::from_canonical_json(&index).unwrap();
    let refs: Vec<(&str, &str)> = index
        .images
        .iter()
        .map(|i| {
            (
                i.reference.as_str(),
                i.upstream_digest.as_deref().unwrap_or(&i.digest),
            )
        })
        .collect();
    assert_eq!(
        refs,
        [
            ("app:2", app_digest.as_str()),
            ("ghcr.io/rin-platform/app:1.0", app_digest.as_str()),
        ]
    );
    // The lock pins them under their own names too.
    let lock = Lock::load(&st.join("images.lock")).unwrap().unwrap();
    assert_eq!(
        lock.image("ghcr.io/rin-platform/app:1.0").unwrap().digest,
        app_digest
    );

    let bad = rinbundle(
        &build_args(
            &st,
            &key,
            &t.path().join("cache"),
            &out,
            &["--registry-mirror", "ghcr.io"],
        ),
        &[],
    );
    assert!(failed(&bad, "a mirror without =").contains("REGISTRY=MIRROR"));
    let bad = rinbundle(
        &build_args(
            &st,
            &key,
            &t.path().join("cache"),
            &out,
            &["--url-mirror", "https://charts.jetstack.io=mirror.corp"],
        ),
        &[],
    );
    assert!(failed(&bad, "a URL mirror that is not a URL").contains("PREFIX=REPLACEMENT"));
}
