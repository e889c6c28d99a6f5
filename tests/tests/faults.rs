//! Faults met on the way, each against the real part: a registry stopped mid-transfer (SIGSTOP)
//! while `rinbundle` downloads and while `rininstall` uploads, and an upload slower than the
//! stall timeout that must not be cut.
#![allow(clippy::unwrap_used)]

use rin_tests::fixture::{self, FixtureImage, LayerFile, noise};
use rin_tests::net::{OnLimit, Proxy, ProxyOptions};
use rin_tests::registry::{Options, Registry};
use rin_tests::{bin, build_signed, ok, text};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A bundle of the test stack plus `count` two-arch images each with `mib` MiB of
/// incompressible data per platform: (bundle, public key, index).
fn big_bundle(dir: &Path, count: usize, mib: usize) -> (PathBuf, PathBuf, rin_bundle::Index) {
    let images: Vec<(&str, FixtureImage)> = (0..count)
        .map(|i| {
            let mut img = FixtureImage::small(&format!("big{i}:1.0"), &["amd64", "arm64"]);
            img.per_arch
                .push(LayerFile::new("data.bin", noise(mib << 20, i as u64 + 3)));
            let reference: &'static str =
                Box::leak(format!("registry.example/big/big{i}:1.0").into_boxed_str());
            (reference, img)
        })
        .collect();
    let stack = fixture::write_stack_with(&dir.join("stack"), &images).unwrap();
    let out = dir.join("b.tar.zst");
    let (key, index) = build_signed(dir, &stack, "1700000000", &out);
    (out, key, index)
}

/// Wait for `child` for at most `limit`; kill it and fail when it runs longer (a hang).
fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} still ran after {limit:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// Wait until `cond` holds, for at most `limit`.
fn wait_for(limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The digest skopeo reads for `docker://ADDR/NAME`.
fn served_digest(addr: &str, name: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{addr}/{name}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    format!("sha256:{}", rin_bundle::digest::sha256_hex(&out.stdout))
}

fn assert_seeded(addr: &str, index: &rin_bundle::Index) {
    for image in &index.images {
        let (repo, tag) = rin_installer::node::seed::site_name(&image.reference).unwrap();
        let name = format!("{repo}:{}", tag.unwrap());
        assert_eq!(served_digest(addr, &name), image.digest, "{name}");
    }
}

fn seed_command(bundle: &Path, key: &Path, registry: &str, stall: &str) -> Command {
    let mut c = Command::new(bin("rininstall"));
    c.arg("seed").arg(bundle).arg("--key").arg(key).args([
        "--registry",
        registry,
        "--stall-timeout",
        stall,
    ]);
    c
}

#[test]
fn a_registry_stopped_mid_upload_is_given_up_after_the_stall_timeout_and_the_same_seed_resumes() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, index) = big_bundle(t.path(), 2, 8);
    let reg = Registry::start(Options::default());
    // The registry is stopped (SIGSTOP) once 4 MiB of uploads have passed the proxy.
    let proxy = Proxy::start_with(
        &reg.addr,
        ProxyOptions {
            limit: 4 << 20,
            towards_server: true,
            on_limit: OnLimit::Call(reg.pauser()),
            rate: None,
        },
    );
    proxy.arm();
    let child = seed_command(&bundle, &key, &proxy.addr, "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "the registry stopped", || {
        proxy.cuts() == 1
    });
    // Stopped for longer than the stall timeout: the uploads in flight are given up.
    std::thread::sleep(Duration::from_secs(6));
    reg.resume();
    let out = finish(child, Duration::from_secs(180), "seed");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("the registry took no data and gave no answer for 2 s (--stall-timeout)"),
        "{said}"
    );
    assert_seeded(&reg.addr, &index);
}

#[test]
fn an_upload_slower_than_the_stall_timeout_but_steady_is_not_cut() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, index) = big_bundle(t.path(), 1, 24);
    let reg = Registry::start(Options::default());
    // 4 MiB/s towards the registry: each 24 MiB blob takes about 6 s, more than the 3 s stall
    // timeout, while data moves all along.
    let proxy = Proxy::start_with(
        &reg.addr,
        ProxyOptions {
            limit: u64::MAX,
            towards_server: true,
            on_limit: OnLimit::Cut,
            rate: Some(4 << 20),
        },
    );
    let out = seed_command(&bundle, &key, &proxy.addr, "3")
        .args(["--attempts", "1"])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    // One pass over the bundle sent everything: no upload was given up and sent again.
    assert!(said.contains(" 1 further passes"), "{said}");
    assert!(!said.contains("--stall-timeout"), "{said}");
    assert_seeded(&reg.addr, &index);
}

/// JSON progress events of a run, by kind.
fn events(out: &Output, kind: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .collect()
}

/// A registry holding `test/app:1.0`, one amd64 image with a layer of `mib` MiB of
/// incompressible data, and a stack naming it through `host` (the registry or a proxy to it).
fn pulled_stack(dir: &Path, reg: &Registry, mib: usize) -> impl Fn(&str) -> PathBuf {
    let layout = dir.join("layout");
    let mut w = fixture::LayoutWriter::new(&layout).unwrap();
    let mut app = FixtureImage::small("app", &["amd64"]);
    app.base
        .push(LayerFile::new("big.bin", noise(mib << 20, 11)));
    w.image(&app).unwrap();
    reg.push(&layout, "app", "test/app:1.0");
    let dir = dir.to_path_buf();
    move |host: &str| {
        let s = dir.join("stack");
        std::fs::create_dir_all(s.join("manifests")).unwrap();
        std::fs::write(
            s.join("bundle.yaml"),
            format!(
                "name: pulled\nversion: 1.0.0\nplatforms: [amd64]\nimages:\n  - reference: {host}/test/app:1.0\n"
            ),
        )
        .unwrap();
        s
    }
}

#[test]
fn a_registry_stopped_mid_download_is_given_up_after_the_stall_timeout_and_the_same_build_resumes()
{
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let stack = pulled_stack(t.path(), &reg, 32);
    // The registry is stopped (SIGSTOP) once 1 MiB of a response has passed the proxy; what
    // the sockets hold still arrives, then nothing.
    let proxy = Proxy::start_with(
        &reg.addr,
        ProxyOptions {
            limit: 1 << 20,
            towards_server: false,
            on_limit: OnLimit::Call(reg.pauser()),
            rate: None,
        },
    );
    let st = stack(&proxy.addr);
    ok(
        &Command::new(bin("rinbundle"))
            .args(["keygen", "--out"])
            .arg(t.path().join("k"))
            .output()
            .unwrap(),
        "keygen",
    );
    proxy.arm();
    let child = Command::new(bin("rinbundle"))
        .arg("build")
        .arg("--stack")
        .arg(&st)
        .arg("--key")
        .arg(t.path().join("k.key"))
        .arg("--cache")
        .arg(t.path().join("cache"))
        .arg("-o")
        .arg(t.path().join("b.tar.zst"))
        .args(["--progress", "json", "--jobs", "1", "--stall-timeout", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "the registry stopped", || {
        proxy.cuts() == 1
    });
    std::thread::sleep(Duration::from_secs(6));
    reg.resume();
    let out = finish(child, Duration::from_secs(180), "build");
    assert!(out.status.success(), "{}", text(&out));
    let retries = events(&out, "retry");
    assert!(!retries.is_empty(), "{}", text(&out));
    assert!(
        retries
            .iter()
            .any(|r| r["error"].as_str().unwrap().contains("--stall-timeout")),
        "{retries:?}"
    );
    // The big layer was resumed from what had arrived, not fetched again from its start.
    let resumed: Vec<u64> = events(&out, "done")
        .iter()
        .map(|d| d["resumed_at"].as_u64().unwrap())
        .collect();
    assert!(resumed.iter().any(|r| *r >= 1 << 20), "{resumed:?}");
}
