//! Faults met on the way, each against the real part: a registry stopped mid-transfer (SIGSTOP)
//! while `rinbundle` downloads and while `rininstall` uploads, and an upload slower than the
//! stall timeout that must not be cut.
#![allow(clippy::unwrap_used)]

use rin_tests::fixture::{self, FixtureImage, LayerFile, noise};
use rin_tests::net::{OnLimit, Proxy, ProxyOptions};
use rin_tests::registry::{Options, Registry};
use rin_tests::{bin, build_command, build_signed, events, text};
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

/// Let `child` run until `proxy` has stopped the registry, keep it stopped for longer than the
/// tests' stall timeout (2 s), continue it, and wait for the child to end.
fn stopped_then_resumed(child: Child, proxy: &Proxy, reg: &Registry, what: &str) -> Output {
    wait_for(Duration::from_secs(60), "the registry stopped", || {
        proxy.cuts() == 1
    });
    std::thread::sleep(Duration::from_secs(6));
    reg.resume();
    finish(child, Duration::from_secs(180), what)
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
    // Stopped for longer than the stall timeout: the uploads in flight are given up.
    let out = stopped_then_resumed(child, &proxy, &reg, "seed");
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
    rin_tests::keygen_in(t.path());
    proxy.arm();
    let args = ["--progress", "json", "--jobs", "1", "--stall-timeout", "2"].map(String::from);
    let child = build_command(
        t.path(),
        &st,
        "1700000000",
        &t.path().join("b.tar.zst"),
        &args,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let out = stopped_then_resumed(child, &proxy, &reg, "build");
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

/// Run `script` with bash in a private mount namespace (so it can mount a small tmpfs that
/// nobody else sees and that goes away with it); fails the test when bash does.
fn in_mount_namespace(script: &str) {
    let res = Command::new("unshare")
        .args(["-m", "bash", "-c", script])
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", text(&res));
}

#[test]
fn a_full_disk_during_build_fails_clearly_leaves_nothing_that_looks_complete_and_a_rerun_succeeds()
{
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let st = pulled_stack(t.path(), &reg, 16)(&reg.addr);
    rin_tests::keygen_in(t.path());
    let disk = t.path().join("disk");
    let said = t.path().join("said");
    std::fs::create_dir_all(&disk).unwrap();
    std::fs::create_dir_all(&said).unwrap();
    let build = format!(
        "{} build --stack {} --key {} --cache {d}/cache -o {d}/out/b.tar.zst --progress json",
        bin("rinbundle").display(),
        st.display(),
        t.path().join("k.key").display(),
        d = disk.display(),
    );
    // The cache and the output on one tmpfs: 8 MiB (the 16 MiB layer does not fit in the
    // cache), 24 MiB (the cache fits, the bundle does not), then 64 MiB.
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=8m rin-test {d}
mkdir -p {d}/out
run() {{
  {build} > {s}/$1.out 2> {s}/$1.err; echo $? > {s}/$1.rc
  (cd {d} && find . -type f | sort) > {s}/$1.files
  # Cached blobs whose content is not their name.
  for f in {d}/cache/blobs/sha256/*; do
    case $f in *.partial) continue ;; esac
    [ "$(sha256sum < $f | cut -c1-64)" = "$(basename $f)" ] || echo $f
  done > {s}/$1.bad
}}
run first
mount -o remount,size=24m {d}
run second
mount -o remount,size=64m {d}
run third
cp {d}/out/b.tar.zst {s}/b.tar.zst
"#,
        d = disk.display(),
        s = said.display(),
    );
    in_mount_namespace(&script);
    let read = |n: &str| std::fs::read_to_string(said.join(n)).unwrap_or_default();
    for run in ["first", "second"] {
        let err = read(&format!("{run}.err"));
        assert_eq!(read(&format!("{run}.rc")).trim(), "1", "{run}: {err}");
        let last = err
            .lines()
            .filter(|l| !l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            last.to_lowercase().contains("no space left on device"),
            "{run}: {last}"
        );
        assert!(
            last.contains("hint:") && last.contains("free"),
            "{run}: {last}"
        );
        let files = read(&format!("{run}.files"));
        // Nothing looks complete: no bundle, and every cached blob is whole (a download cut
        // short stays a .partial, which the next run resumes).
        assert!(!files.contains("b.tar.zst"), "{run}: {files}");
        assert_eq!(read(&format!("{run}.bad")), "", "{run}: {files}");
    }
    // The first names the cache file, the second the bundle.
    assert!(
        read("first.err").contains("the disk is full") && read("first.err").contains(".partial"),
        "{}",
        read("first.err")
    );
    assert!(
        read("second.err").contains(&format!("cannot write {}/out/b.tar.zst", disk.display())),
        "{}",
        read("second.err")
    );
    assert_eq!(read("third.rc").trim(), "0", "{}", read("third.err"));
    let events = |run: &str, kind: &str| -> Vec<serde_json::Value> {
        read(&format!("{run}.err"))
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == kind)
            .collect()
    };
    // The second run resumed the first's partial download; the third downloaded nothing.
    assert!(
        events("second", "done")
            .iter()
            .any(|d| d["resumed_at"].as_u64().unwrap() > 0),
        "{}",
        read("second.err")
    );
    assert!(events("third", "start").is_empty(), "{}", read("third.err"));
    let verified = Command::new(bin("rininstall"))
        .arg("verify")
        .arg(said.join("b.tar.zst"))
        .arg("--key")
        .arg(t.path().join("k.pub"))
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", text(&verified));
}

#[test]
fn a_full_disk_during_apply_staging_fails_clearly_changes_nothing_and_a_rerun_succeeds() {
    let t = tempfile::tempdir().unwrap();
    let stack = fixture::write_stack(&t.path().join("stack")).unwrap();
    // A K3s image archive of 48 MiB: staging it takes a while.
    let k3s = stack.join("k3s");
    let archive = noise(48 << 20, 5);
    std::fs::write(k3s.join("k3s-airgap-images-amd64.tar.zst"), &archive).unwrap();
    let sums = std::fs::read_to_string(k3s.join("sha256sum-amd64.txt")).unwrap();
    let sums: String = sums
        .lines()
        .map(|l| {
            if l.ends_with("k3s-airgap-images-amd64.tar.zst") {
                format!(
                    "{}  k3s-airgap-images-amd64.tar.zst\n",
                    rin_bundle::digest::sha256_hex(&archive)
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(k3s.join("sha256sum-amd64.txt"), sums).unwrap();
    let bundle = t.path().join("b.tar.zst");
    let (key, index) = build_signed(t.path(), &stack, "1700000000", &bundle);
    let reg = Registry::start(Options::default());
    let root = t.path().join("root");
    let said = t.path().join("said");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&said).unwrap();
    let apply = rin_tests::apply_at_root(&bundle, &key, &root, &["--registry", &reg.addr]);
    let line = format!(
        "{} {}",
        bin("rininstall").display(),
        apply
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    // The node's disk is a tmpfs with room enough for preflight. Once the run stages into its
    // partial staging directory it is stopped, the disk filled up by another writer, and the
    // run continued; then the space is freed and the same command run again.
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=512m rin-test {r}
env -u KUBECONFIG {line} > {s}/first.out 2> {s}/first.err &
pid=$!
until ls -A {r}/var/lib/rininstall/staging 2>/dev/null | grep -q partial; do
  kill -0 $pid 2>/dev/null || break
done
kill -STOP $pid && echo stopped > {s}/stopped
dd if=/dev/zero of={r}/filler bs=1M 2> /dev/null
kill -CONT $pid
wait $pid; echo $? > {s}/first.rc
(cd {r} && find . | sort) > {s}/first.files
rm {r}/filler
env -u KUBECONFIG {line} > {s}/second.out 2> {s}/second.err; echo $? > {s}/second.rc
cp {r}/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst {s}/archive || true
"#,
        r = root.display(),
        s = said.display(),
    );
    in_mount_namespace(&script);
    let read = |n: &str| std::fs::read_to_string(said.join(n)).unwrap_or_default();
    let err = read("first.err");
    assert_eq!(
        read("stopped"),
        "stopped\n",
        "the run ended before it staged: {err}"
    );
    assert_eq!(read("first.rc").trim(), "1", "{err}");
    assert!(
        err.contains("staging") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(err.contains("hint: the disk is full: free space"), "{err}");
    // Nothing was installed and nothing was left: no K3s file, no release, no staging.
    let files = read("first.files");
    for gone in [
        "usr/local/bin",
        "var/lib/rancher",
        "etc/rancher",
        "staging/",
        "release",
    ] {
        assert!(!files.contains(gone), "{gone} in:\n{files}");
    }
    assert_eq!(read("second.rc").trim(), "0", "{}", read("second.err"));
    assert_eq!(std::fs::read(said.join("archive")).unwrap(), archive);
    let _ = index;
}

#[test]
fn a_ca_file_that_does_not_sign_the_registry_certificate_is_named_and_not_retried() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options {
        user: None,
        tls: true,
    });
    let stack = pulled_stack(t.path(), &reg, 0)(&reg.addr);
    // Another CA, of the same name, that did not issue the registry's certificate.
    let other = t.path().join("other-ca");
    std::fs::create_dir_all(&other).unwrap();
    let (wrong, _, _) = rin_tests::registry::make_ca(&other);
    rin_tests::keygen_in(t.path());
    let args = [
        "--ca-file".to_string(),
        wrong.display().to_string(),
        "--progress".into(),
        "json".into(),
    ];
    let out = build_command(
        t.path(),
        &stack,
        "1700000000",
        &t.path().join("b.tar.zst"),
        &args,
    )
    .output()
    .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    // Refused at once, not tried again: no CA file will come in between.
    assert!(events(&out, "retry").is_empty(), "{said}");
    assert!(
        said.contains("the server's certificate is not trusted"),
        "{said}"
    );
    assert!(
        said.contains("hint: give the CA certificate (PEM) that issued the server's certificate with --ca-file"),
        "{said}"
    );

    // The same for seeding, loopback or not: a CA file means TLS.
    let (bundle, key, index) = {
        let stack = fixture::write_stack(&t.path().join("seed-stack")).unwrap();
        let out = t.path().join("s.tar.zst");
        let (key, index) = build_signed(t.path(), &stack, "1700000000", &out);
        (out, key, index)
    };
    let out = seed_command(&bundle, &key, &reg.addr, "10")
        .arg("--registry-ca")
        .arg(&wrong)
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "registry {}: its certificate is not trusted",
            reg.addr
        )),
        "{said}"
    );
    assert!(
        said.contains("hint: give the CA certificate (PEM) that issued the registry's certificate with --registry-ca"),
        "{said}"
    );
    assert!(!said.contains("retry"), "{said}");
    // With the registry's own CA the same command seeds over TLS.
    let out = seed_command(&bundle, &key, &reg.addr, "10")
        .arg("--registry-ca")
        .arg(reg.ca())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_seeded(&reg.addr, &index);
}
