//! `rininstall apply` on a node laid out under `--root`, against real parts: Debian's
//! `docker-registry`, `skopeo`, containerd's `ctr` with a `hosts.toml` mirror (what K3s makes of
//! registries.yaml), a network namespace with only loopback (`unshare -n`), a registry killed
//! mid-seed, and a registry whose disk fills up (a small tmpfs in a private mount namespace).
//! These need root, as the tests' machines run them.
#![allow(clippy::unwrap_used)]

use rin_bundle::Index;
use rin_tests::containerd::Containerd;
use rin_tests::fixture::{self, FixtureImage, LayerFile, noise};
use rin_tests::registry::{Options, Registry};
use rin_tests::{bin, build_signed, ok, text};
use std::path::{Path, PathBuf};
use std::process::Command;

const REGISTRY_IMAGE: &str = "docker.io/library/registry:2.8.3";

/// Run `cmd`, which must succeed: what it said, stdout then stderr (a step's notes).
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap();
    ok(&out, what);
    text(&out)
}

/// The test stack plus a runnable (busybox) `registry:2.8.3`, and `extra` images, with K3s's
/// Traefik turned off, built into a signed bundle: (bundle, public key, index).
fn bundle(dir: &Path, extra: &[(&str, FixtureImage)]) -> (PathBuf, PathBuf, Index) {
    let mut images = vec![(
        REGISTRY_IMAGE,
        fixture::busybox_image("registry:2.8.3", &["amd64", "arm64"]),
    )];
    images.extend(extra.iter().cloned());
    let stack = fixture::write_stack_with(&dir.join("stack"), &images).unwrap();
    let spec = stack.join("bundle.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(text.contains("  files: k3s\n"), "{text}");
    std::fs::write(
        &spec,
        text.replace("  files: k3s\n", "  files: k3s\n  disable: [traefik]\n"),
    )
    .unwrap();
    let out = dir.join("b.tar.zst");
    let (key, index) = build_signed(dir, &stack, "1700000000", &out);
    (out, key, index)
}

fn apply(bundle: &Path, key: &Path, root: &Path, extra: &[&str]) -> Command {
    rin_tests::apply_at_root(bundle, key, root, extra)
}

/// The digest `docker://ADDR/NAME` resolves to, by skopeo.
fn skopeo_digest(addr: &str, name: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{addr}/{name}"))
        .output()
        .unwrap();
    let raw = ok(&out, &format!("skopeo inspect {name}"));
    format!("sha256:{}", rin_bundle::digest::sha256_hex(raw.as_bytes()))
}

/// Every image of `index` resolves by its site name to the bundle's digest.
fn assert_seeded(addr: &str, index: &Index) {
    for image in &index.images {
        let (repo, tag) = rin_installer::node::seed::site_name(&image.reference).unwrap();
        let name = format!("{repo}:{}", tag.unwrap());
        assert_eq!(skopeo_digest(addr, &name), image.digest, "{name}");
    }
}

/// A config for a registry on 127.0.0.1:5000 (inside a new network namespace) storing into
/// `storage`, and a directory for the run's outputs: (config, outputs).
fn namespace_registry(dir: &Path, storage: &Path) -> (PathBuf, PathBuf) {
    let cfg = dir.join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog: {{ level: warn }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\nhttp: {{ addr: 127.0.0.1:5000 }}\n",
            storage.display()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    (cfg, out)
}

#[test]
fn apply_up_to_seeding_runs_with_no_network_but_loopback_and_a_rerun_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, index) = bundle(t.path(), &[]);
    let root = t.path().join("root");
    let storage = t.path().join("storage");
    let (cfg, out) = namespace_registry(t.path(), &storage);
    let apply_cmd = |extra: &str| {
        format!(
            "{} apply {} --key {} --root {} --arch amd64 --no-start --registry 127.0.0.1:5000 --progress json {extra}",
            bin("rininstall").display(),
            bundle.display(),
            key.display(),
            root.display()
        )
    };
    // Everything below runs in a new network namespace that has nothing but loopback.
    let script = format!(
        r#"set -eu
ip link set lo up
ip -o link show | awk -F': ' '{{print $2}}' > {out}/links
docker-registry serve {cfg} 2> {out}/registry.log &
for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null && break; sleep 0.05; done
{first} > {out}/first 2> {out}/first.err
{first} > {out}/second 2> {out}/second.err
{dry} > {out}/dry 2> {out}/dry.err
for name in demo/web:1.0 demo/worker:1.0 library/registry:2.8.3 charts/demo:0.1.0; do
  skopeo inspect --raw --tls-verify=false docker://127.0.0.1:5000/$name | sha256sum | cut -c1-64 >> {out}/digests
done
kill %1
"#,
        out = out.display(),
        cfg = cfg.display(),
        first = apply_cmd(""),
        dry = apply_cmd("--dry-run"),
    );
    let res = Command::new("unshare")
        .args(["-n", "bash", "-c", &script])
        .output()
        .unwrap();
    let read = |n: &str| std::fs::read_to_string(out.join(n)).unwrap_or_default();
    assert!(
        res.status.success(),
        "{}\nfirst: {}{}\nsecond: {}{}",
        String::from_utf8_lossy(&res.stderr),
        read("first"),
        read("first.err"),
        read("second"),
        read("second.err")
    );
    // The namespace had loopback only: anything that needed another network would have failed.
    assert_eq!(read("links").trim(), "lo");

    let first = read("first");
    // Each file is a note of step 3 as it is written; the result on stdout counts them.
    let notes = read("first.err");
    for f in [
        "usr/local/bin/k3s",
        "var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst",
        "var/lib/rancher/k3s/agent/images/.cache.json",
        "etc/rancher/k3s/registries.yaml",
        "etc/rancher/k3s/config.yaml",
    ] {
        assert!(
            notes.contains(&format!(r#""text":"wrote {}""#, root.join(f).display())),
            "{f}: {notes}"
        );
    }
    assert!(
        first.contains(&format!("wrote 5 files under {}", root.display())),
        "{first}"
    );
    assert!(first.contains("seeded 127.0.0.1:5000"), "{first}");
    // Recorded, and said to be not deployed (no cluster here).
    assert!(
        first.contains("recorded demo 1.0.0 on this node")
            && first.contains("the stack was not deployed by this run"),
        "{first}"
    );
    // Progress: seven steps, as JSON lines; without a cluster, the deploy step says why it
    // did not run.
    let steps = read("first.err")
        .lines()
        .filter(|l| l.contains(r#""event":"step""#))
        .count();
    assert_eq!(steps, 7, "{}", read("first.err"));
    assert!(
        read("first.err").contains("deploy skipped: K3s is not started here (--no-start)"),
        "{}",
        read("first.err")
    );

    // The K3s files are the bundle's, in K3s's layout.
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/k3s")).unwrap(),
        b"stand-in k3s amd64 binary"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("usr/local/bin/k3s"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let registries = std::fs::read_to_string(root.join("etc/rancher/k3s/registries.yaml")).unwrap();
    for host in ["docker.io", "registry.example"] {
        assert!(
            registries.contains(&format!(
                "  {host}:\n    endpoint:\n    - http://127.0.0.1:5000\n"
            )),
            "{registries}"
        );
    }
    // The stack turns off K3s's Traefik on the server; the bundle says so.
    let inspect = run(
        Command::new(bin("rinbundle")).arg("inspect").arg(&bundle),
        "inspect",
    );
    assert!(
        inspect.contains("disables   traefik (K3s packaged components)"),
        "{inspect}"
    );
    assert_eq!(index.k3s.as_ref().unwrap().disable, ["traefik"]);
    let config = std::fs::read_to_string(root.join("etc/rancher/k3s/config.yaml")).unwrap();
    assert!(config.contains("\ndisable:\n- traefik\n"), "{config}");
    assert!(root.join("var/lib/rininstall/release.json").exists());
    // No staging copy is left behind.
    let staging = root.join("var/lib/rininstall/staging");
    assert_eq!(std::fs::read_dir(&staging).map_or(0, |d| d.count()), 0);

    // The second run found everything in place.
    let second = read("second");
    assert!(second.contains("wrote 0 files under"), "{second}");
    assert!(
        !read("second.err").contains(r#""text":"wrote "#),
        "{second}"
    );
    assert!(second.contains(" 0 blobs uploaded"), "{second}");
    assert!(second.contains(" 0 mounted"), "{second}");
    let dry = read("dry");
    assert!(dry.contains("would push 0 blobs"), "{dry}");
    assert!(dry.contains("dry run: nothing was changed"), "{dry}");

    // Every image and the chart resolve by their site names to the bundle's digests.
    let digests: Vec<String> = read("digests")
        .lines()
        .map(|l| format!("sha256:{l}"))
        .collect();
    let want: Vec<&str> = [
        "registry.example/demo/web:1.0",
        "registry.example/demo/worker:1.0",
        REGISTRY_IMAGE,
    ]
    .iter()
    .map(|r| {
        index
            .images
            .iter()
            .find(|i| i.reference == *r)
            .unwrap()
            .digest
            .as_str()
    })
    .chain([index.charts[0].digest.as_str()])
    .collect();
    assert_eq!(digests, want);
}

#[test]
fn a_dry_run_changes_nothing_and_preflight_names_every_problem_before_any_change() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, _) = bundle(t.path(), &[]);
    let root = t.path().join("root");
    let reg = Registry::start(Options::default());

    let dry = run(
        &mut apply(
            &bundle,
            &key,
            &root,
            &["--registry", &reg.addr, "--dry-run"],
        ),
        "dry run",
    );
    assert!(
        dry.contains(&format!(
            "would write {}",
            root.join("usr/local/bin/k3s").display()
        )),
        "{dry}"
    );
    let to_push: usize = dry
        .split("would push ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{dry}"));
    // Every blob of the bundle's images and chart: the registry is empty.
    assert!(to_push >= 10, "{dry}");
    // The plan of the cluster step: every object of the stack, in apply order, the chart as
    // a HelmChart among the operators before the workloads.
    let plan: Vec<&str> = dry
        .lines()
        .filter_map(|l| l.strip_prefix("would apply "))
        .collect();
    assert_eq!(
        plan,
        [
            "Namespace demo (from manifests/00-namespace.yaml)",
            "HelmChart.helm.cattle.io kube-system/demo (from chart demo 0.1.0)",
            "Deployment.apps demo/web (from manifests/app/web.yaml)",
        ],
        "{dry}"
    );
    // The same files a real run writes (K3s's import cache among them), and the objects are
    // said to be applied only by a run that deploys (K3s is not started here).
    assert!(
        dry.contains(&format!(
            "would write {}",
            root.join("var/lib/rancher/k3s/agent/images/.cache.json")
                .display()
        )),
        "{dry}"
    );
    assert!(
        dry.contains("not deployed by this run: K3s is not started here (--no-start)")
            && dry.contains("a run that deploys would apply 3 objects:"),
        "{dry}"
    );
    assert!(!root.exists(), "a dry run created {}", root.display());

    // An architecture the bundle lacks, and a node that records a newer release: both named,
    // nothing written.
    let state = root.join("var/lib/rininstall");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("release.json"),
        r#"{"stack":"demo","version":"2.0.0","k3s":"v1.31.4+k3s1","index_sha256":"x","installed":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    // And a host K3s cannot run on, as its /proc, /sys and /etc tell (read under the root): no
    // memory cgroup on a Raspberry Pi, no br_netfilter, a hostname Kubernetes refuses. (A port another program holds is
    // judged only where K3s is not installed yet: here a release is recorded.)
    let plant = |p: &str, s: &str| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, s).unwrap();
    };
    plant("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n");
    plant("boot/firmware/cmdline.txt", "console=tty1\n");
    plant(
        "proc/net/tcp",
        "  sl  local_address rem_address st\n   0: 00000000:192B 00000000:0000 0A\n",
    );
    plant("proc/modules", "overlay 151552 0 - Live 0x0\n");
    plant("etc/hostname", "Site_Node\n");
    let planted = |r: &Path| {
        ["sys", "boot", "proc", "etc"]
            .iter()
            .map(|d| std::fs::read_dir(r.join(d)).map(|e| e.count()).unwrap_or(0))
            .sum::<usize>()
    };
    let before = planted(&root);
    let out = Command::new(bin("rininstall"))
        .arg("apply")
        .arg(&bundle)
        .arg("--key")
        .arg(&key)
        .arg("--root")
        .arg(&root)
        .args(["--arch", "riscv64", "--no-start", "--registry", &reg.addr])
        .args(["--platform", "linux/s390x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("preflight found"), "{err}");
    assert!(
        err.contains("`cgroup_memory=1 cgroup_enable=memory` to /boot/firmware/cmdline.txt")
            && !err.contains("port 6443/tcp")
            && err.contains("kernel module br_netfilter")
            && err.contains("hostname \"Site_Node\" is not a valid Kubernetes node name"),
        "{err}"
    );
    assert_eq!(
        planted(&root),
        before,
        "something was written under the root"
    );
    assert!(err.contains("this node is linux/riscv64"), "{err}");
    assert!(
        err.contains("--platform: the bundle does not carry linux/s390x"),
        "{err}"
    );
    assert!(err.contains("older than the installed 2.0.0"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(!root.join("usr").exists());
    assert!(!root.join("etc/rancher").exists());
}

#[test]
fn the_bootstrap_archive_imports_into_containerd_and_seeded_images_pull_through_a_mirror_and_run() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, index) = bundle(t.path(), &[]);
    let reg = Registry::start(Options::default());
    // A node seeding an existing registry, and a first server of the in-cluster registry (not
    // started: it writes the registry's image archive and skips seeding).
    let seeded_root = t.path().join("seeded");
    run(
        &mut apply(&bundle, &key, &seeded_root, &["--registry", &reg.addr]),
        "apply with a registry",
    );
    let cluster_root = t.path().join("cluster");
    let out = run(
        &mut apply(&bundle, &key, &cluster_root, &[]),
        "apply in-cluster",
    );
    let archive = cluster_root.join("var/lib/rancher/k3s/agent/images/rin-site-registry.tar");
    assert!(
        out.contains(&format!("wrote {}", archive.display())),
        "{out}"
    );
    let manifests = std::fs::read_to_string(
        cluster_root.join("var/lib/rininstall/registry/site-registry.yaml"),
    )
    .unwrap();
    assert!(
        manifests.contains(&format!("image: {REGISTRY_IMAGE}")),
        "{manifests}"
    );
    assert!(manifests.contains("nodePort: 31555"), "{manifests}");
    let registries =
        std::fs::read_to_string(cluster_root.join("etc/rancher/k3s/registries.yaml")).unwrap();
    assert!(
        registries.contains("- http://127.0.0.1:31555"),
        "{registries}"
    );

    let ctr = Containerd::start(t.path());
    // K3s's images directory takes the archive as it is.
    ctr.run(&["-n", "boot", "image", "import"], Some(&archive));
    let listed = ctr.run(&["-n", "boot", "image", "ls", "-q"], None);
    assert!(listed.lines().any(|l| l == REGISTRY_IMAGE), "{listed}");
    let said = ctr.run(
        &["-n", "boot", "run", "--rm", REGISTRY_IMAGE, "boot-1"],
        None,
    );
    assert_eq!(said.trim(), "amd64 registry:2.8.3");

    // hosts.toml files made from the registries.yaml apply wrote, as K3s makes them.
    let hosts = t.path().join("certs.d");
    let written =
        std::fs::read_to_string(seeded_root.join("etc/rancher/k3s/registries.yaml")).unwrap();
    let parsed: serde_json::Value = serde_yaml_ng_value(&written);
    for (host, mirror) in parsed["mirrors"].as_object().unwrap() {
        let endpoint = mirror["endpoint"][0].as_str().unwrap();
        let dir = hosts.join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hosts.toml"),
            format!(
                "server = \"{endpoint}\"\n\n[host.\"{endpoint}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .unwrap();
    }
    for image in &index.images {
        ctr.run(
            &[
                "-n",
                "mirror",
                "image",
                "pull",
                "--hosts-dir",
                hosts.to_str().unwrap(),
                &image.reference,
            ],
            None,
        );
    }
    let said = ctr.run(
        &["-n", "mirror", "run", "--rm", REGISTRY_IMAGE, "mirror-1"],
        None,
    );
    assert_eq!(said.trim(), "amd64 registry:2.8.3");
}

fn serde_yaml_ng_value(text: &str) -> serde_json::Value {
    serde_yaml_ng::from_str(text).unwrap()
}

/// Three two-arch images with 6 MiB of incompressible data per platform.
fn big_images() -> Vec<(&'static str, FixtureImage)> {
    ["one", "two", "three"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut img = FixtureImage::small(&format!("{name}:1.0"), &["amd64", "arm64"]);
            img.per_arch
                .push(LayerFile::new("data.bin", noise(6 << 20, i as u64 + 7)));
            let reference: &'static str =
                Box::leak(format!("registry.example/big/{name}:1.0").into_boxed_str());
            (reference, img)
        })
        .collect()
}

#[test]
fn a_registry_killed_mid_seed_and_restarted_ends_with_every_digest_intact() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, index) = bundle(t.path(), &big_images());
    let mut reg = Registry::start(Options::default());
    let blobs = reg
        .dir
        .path()
        .join("storage/docker/registry/v2/blobs/sha256");
    let seeding = Command::new(bin("rininstall"))
        .arg("seed")
        .arg(&bundle)
        .arg("--key")
        .arg(&key)
        .args(["--registry", &reg.addr, "--jobs", "1", "--attempts", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the registry once it holds some blobs but not all.
    let count = |dir: &Path| {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.flatten()
                .map(|p| std::fs::read_dir(p.path()).map_or(0, |q| q.count()))
                .sum::<usize>()
        })
    };
    let start = std::time::Instant::now();
    while count(&blobs) < 2 && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    reg.kill();
    let held = count(&blobs);
    let failed = seeding.wait_with_output().unwrap();
    assert!(!failed.status.success(), "seeding went on with no registry");
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("registry"), "{err}");
    assert!(err.contains("re-running resumes"), "{err}");

    reg.restart();
    let again = run(
        Command::new(bin("rininstall"))
            .arg("seed")
            .arg(&bundle)
            .arg("--key")
            .arg(&key)
            .args(["--registry", &reg.addr]),
        "seed after the restart",
    );
    // What the registry held before the kill was not sent again.
    assert!(held >= 2, "{held}");
    assert!(!again.contains(" 0 already present"), "{again}");
    assert_seeded(&reg.addr, &index);
    // Every blob the registry stores hashes to its name.
    for d in std::fs::read_dir(&blobs).unwrap().flatten() {
        for b in std::fs::read_dir(d.path()).unwrap().flatten() {
            let name = b.file_name().to_string_lossy().to_string();
            let data = b.path().join("data");
            let hex = rin_bundle::digest::sha256_hex(&std::fs::read(&data).unwrap());
            assert_eq!(hex, name, "{}", data.display());
        }
    }
}

#[test]
fn a_full_registry_disk_fails_clearly_and_a_rerun_after_freeing_space_succeeds() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, index) = bundle(t.path(), &big_images());
    let storage = t.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let (cfg, out) = namespace_registry(t.path(), &storage);
    let seed = format!(
        "{} seed {} --key {} --registry 127.0.0.1:5000 --attempts 2",
        bin("rininstall").display(),
        bundle.display(),
        key.display()
    );
    // A private mount and network namespace: the registry's storage is a 12 MiB tmpfs, then
    // grows to 256 MiB (space freed) for the second run.
    let script = format!(
        r#"set -u
ip link set lo up
mount -t tmpfs -o size=12m rin-test {storage}
docker-registry serve {cfg} 2> {out}/registry.log &
for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null && break; sleep 0.05; done
{seed} > {out}/first 2> {out}/first.err; echo $? > {out}/first.rc
mount -o remount,size=256m {storage}
{seed} > {out}/second 2> {out}/second.err; echo $? > {out}/second.rc
for name in big/one:1.0 big/two:1.0 big/three:1.0; do
  skopeo inspect --raw --tls-verify=false docker://127.0.0.1:5000/$name | sha256sum | cut -c1-64 >> {out}/digests
done
kill %1
"#,
        storage = storage.display(),
        cfg = cfg.display(),
        out = out.display(),
    );
    let res = Command::new("unshare")
        .args(["-m", "-n", "bash", "-c", &script])
        .output()
        .unwrap();
    let read = |n: &str| std::fs::read_to_string(out.join(n)).unwrap_or_default();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(read("first.rc").trim(), "1", "{}", read("first.err"));
    let err = read("first.err");
    assert!(err.contains("registry 127.0.0.1:5000"), "{err}");
    assert!(err.contains("the registry's disk is full"), "{err}");
    assert!(err.contains("free disk"), "{err}");
    assert_eq!(
        read("second.rc").trim(),
        "0",
        "{}{}",
        read("second"),
        read("second.err")
    );
    let digests: Vec<String> = read("digests")
        .lines()
        .map(|l| format!("sha256:{l}"))
        .collect();
    let want: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|n| {
            index
                .images
                .iter()
                .find(|i| i.reference == format!("registry.example/big/{n}:1.0"))
                .unwrap()
                .digest
                .clone()
        })
        .collect();
    assert_eq!(digests, want);
}

/// Apply's one read: with the registry answering before the pass (here an existing one), blobs
/// go to it while the bundle verifies, so the bundle is read once; a bundle refused late in that
/// read leaves no tag, no manifest and no host file behind.
#[test]
fn apply_reads_the_bundle_once_and_a_late_refusal_leaves_no_image_and_no_host_file() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, index) = bundle(t.path(), &big_images());
    let reg = Registry::start(Options::default());
    let run = |file: &Path, root: &Path| {
        Command::new(bin("rininstall"))
            .arg("apply")
            .arg(file)
            .arg("--key")
            .arg(&key)
            .arg("--root")
            .arg(root)
            .args(["--arch", "amd64", "--no-start", "--progress", "json"])
            .args(["--registry", &reg.addr])
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    };
    let tag_of = |image: &rin_bundle::index::Image| {
        let (repo, tag) = rin_installer::node::seed::site_name(&image.reference).unwrap();
        format!("docker://{}/{repo}:{}", reg.addr, tag.unwrap())
    };

    // A byte flipped near the end of the file: the refusal comes late in the one read.
    let mut damaged = std::fs::read(&bundle).unwrap();
    let at = damaged.len() - damaged.len() / 20;
    damaged[at] ^= 0x55;
    let bad = t.path().join("damaged.tar.zst");
    std::fs::write(&bad, &damaged).unwrap();
    let root = t.path().join("root");
    let out = run(&bad, &root);
    assert_eq!(out.status.code(), Some(3), "{}", rin_tests::text(&out));
    for image in &index.images {
        let inspect = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(tag_of(image))
            .output()
            .unwrap();
        assert!(
            !inspect.status.success(),
            "{} has a tag after a refused apply",
            image.reference
        );
    }
    assert!(!root.join("usr/local/bin/k3s").exists());
    assert!(!root.join("etc/rancher/k3s").exists());
    assert!(!root.join("var/lib/rininstall/release.json").exists());

    // The intact bundle: one pass over it, every blob sent during it.
    let out = run(&bundle, &root);
    let said = ok(&out, "apply");
    let events = String::from_utf8_lossy(&out.stderr);
    assert_eq!(events.matches("\"event\":\"pass\"").count(), 1, "{events}");
    assert!(
        said.contains("while verifying") && said.contains("0 further passes"),
        "{said}"
    );
    assert_seeded(&reg.addr, &index);
}

/// A run killed while writing leaves `.NAME.PID.rin-partial` files (its clean-up never ran):
/// the next real run removes them before preflight counts free space; a dry run leaves them;
/// one of a process that still runs is never touched.
#[test]
fn a_killed_runs_half_written_files_are_swept_by_the_next_run_but_not_by_a_dry_run() {
    let t = tempfile::tempdir().unwrap();
    let (bundle, key, _) = bundle(t.path(), &[]);
    let root = t.path().join("root");
    let images = root.join("var/lib/rancher/k3s/agent/images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    // PIDs above any pid_max: processes that are gone.
    let stale = [
        images.join(".k3s-airgap-images-amd64.tar.zst.99999998.rin-partial"),
        root.join("usr/local/bin/.k3s.99999999.rin-partial"),
    ];
    for f in &stale {
        std::fs::write(f, vec![0u8; 1 << 20]).unwrap();
    }
    let mut alive = Command::new("sleep").arg("60").spawn().unwrap();
    let running = images.join(format!(".rin-site-registry.tar.{}.rin-partial", alive.id()));
    std::fs::write(&running, b"being written").unwrap();

    run(&mut apply(&bundle, &key, &root, &["--dry-run"]), "dry run");
    assert!(stale.iter().all(|f| f.exists()), "a dry run removed a file");
    run(&mut apply(&bundle, &key, &root, &[]), "apply");
    let _ = alive.kill();
    let _ = alive.wait();
    for f in &stale {
        assert!(!f.exists(), "{} is left", f.display());
    }
    assert!(running.exists(), "a running writer's file was removed");
    assert!(images.join("k3s-airgap-images-amd64.tar.zst").is_file());
}
