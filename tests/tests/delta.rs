//! Delta bundles against real parts (Debian's `docker-registry`, `skopeo`): built against the
//! previous bundle, a delta carries the one changed layer and none of what the site holds; it
//! applies onto the release it names, taking the left-out blobs from the site registry and the
//! K3s files from the node, and chains; it is refused onto no release, another release, a
//! joining node, and a registry that lost the blobs it leaves out, with nothing changed.
#![allow(clippy::unwrap_used)]

use rin_bundle::Index;
use rin_tests::fixture::{self, FixtureImage, LayerFile, noise};
use rin_tests::registry::{Options, Registry};
use rin_tests::{bin, build_signed_with, ok, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const APP: &str = "docker.io/rin/app:1";

/// The test stack at `version`, with an app image whose shared base layer holds 256 KiB of
/// noise; `revision` is written into its small per-platform layer (one changed layer per
/// platform).
fn stack(dir: &Path, version: &str, revision: u32) -> PathBuf {
    let mut app = FixtureImage::small("app:1", &["amd64", "arm64"]);
    app.base
        .push(LayerFile::new("opt/big.bin", noise(256 << 10, 7)));
    app.per_arch.push(LayerFile::new(
        "opt/revision",
        format!("revision {revision}\n"),
    ));
    let stack = fixture::write_stack_with(dir, &[(APP, app)]).unwrap();
    let spec = stack.join("bundle.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        text.replace("version: 1.0.0", &format!("version: {version}")),
    )
    .unwrap();
    stack
}

/// Build `stack` into `out` signed with `dir/k.key`, with `extra` arguments.
fn build(dir: &Path, stack: &Path, out: &Path, extra: &[String]) -> Index {
    build_signed_with(dir, stack, "1700000000", out, extra).1
}

fn apply(bundle: &Path, dir: &Path, root: &Path, reg: &Registry, extra: &[&str]) -> Output {
    Command::new(bin("rininstall"))
        .arg("apply")
        .arg(bundle)
        .arg("--key")
        .arg(dir.join("k.pub"))
        .arg("--root")
        .arg(root)
        .args(["--arch", "amd64", "--no-start", "--progress", "none"])
        .args(["--registry", &reg.addr])
        .args(extra)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

fn index_sha256(bundle: &Path) -> String {
    rin_bundle::digest::sha256_hex(&rin_bundle::peek(bundle).unwrap().0)
}

/// The installed release's index sha256 in `root`'s state directory.
fn installed(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("var/lib/rininstall/release.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    Some(v["index_sha256"].as_str().unwrap().to_string())
}

/// The digest `docker://ADDR/NAME` resolves to, by skopeo.
fn resolved(reg: &Registry, name: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{name}", reg.addr))
        .output()
        .unwrap();
    let raw = ok(&out, &format!("skopeo inspect {name}"));
    format!("sha256:{}", rin_bundle::digest::sha256_hex(raw.as_bytes()))
}

/// Every image of `index` resolves by its site name to the bundle's digest, and every layer of
/// its amd64 manifest comes back whole (skopeo copies the image out of the registry).
fn assert_served(reg: &Registry, index: &Index, scratch: &Path) {
    std::fs::create_dir_all(scratch).unwrap();
    for image in &index.images {
        let (repo, tag) = rin_installer::node::seed::site_name(&image.reference).unwrap();
        let name = format!("{repo}:{}", tag.unwrap());
        assert_eq!(resolved(reg, &name), image.digest, "{name}");
        let dest = scratch.join(repo.replace('/', "_"));
        ok(
            &Command::new("skopeo")
                .args(["copy", "--src-tls-verify=false", "--override-arch", "amd64"])
                .arg(format!("docker://{}/{name}", reg.addr))
                .arg(format!("oci:{}:x", dest.display()))
                .output()
                .unwrap(),
            &format!("skopeo copy {name}"),
        );
    }
}

#[test]
fn a_delta_carries_the_changed_layer_applies_onto_its_base_chains_and_is_refused_elsewhere() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let v1 = dir.join("v1.tar.zst");
    let i1 = build(dir, &stack(&dir.join("s1"), "1.0.0", 0), &v1, &[]);
    let s2 = stack(&dir.join("s2"), "1.1.0", 1);
    let full2 = dir.join("v2-full.tar.zst");
    let i2 = build(dir, &s2, &full2, &[]);
    let d2 = dir.join("v2-delta.tar.zst");
    let base_arg = |b: &Path| vec!["--base".to_string(), b.display().to_string()];
    let di2 = build(dir, &s2, &d2, &base_arg(&v1));

    // What the delta leaves out: every blob v1 carries that v2 still uses, except the manifests
    // and chart archives (always carried); the changed layer is carried; the K3s binaries and image archives are
    // left out (unchanged), install.sh is carried.
    let base = di2.base.clone().expect("a delta has a base");
    assert_eq!(base.index_sha256, index_sha256(&v1));
    assert!(base.inventory.is_none());
    let blobs = |i: &Index| -> std::collections::BTreeSet<String> {
        i.entries
            .iter()
            .filter_map(|e| e.path.strip_prefix("oci/blobs/sha256/"))
            .map(|h| format!("sha256:{h}"))
            .collect()
    };
    let (b1, b2, bd) = (blobs(&i1), blobs(&i2), blobs(&di2));
    let documents: std::collections::BTreeSet<String> = i2
        .images
        .iter()
        .flat_map(|i| {
            std::iter::once(i.digest.clone()).chain(i.platforms.iter().map(|p| p.digest.clone()))
        })
        .chain(i2.charts.iter().map(|c| c.digest.clone()))
        .chain(
            i2.charts
                .iter()
                .map(|c| format!("sha256:{}", c.archive_sha256)),
        )
        .collect();
    for d in &b2 {
        let shared = b1.contains(d);
        let carried = bd.contains(d);
        let left_out = base.blobs.contains(d);
        assert!(
            carried != left_out,
            "{d}: carried {carried}, left out {left_out}"
        );
        if documents.contains(d) {
            assert!(carried, "manifest or chart {d} left out");
        } else {
            assert_eq!(left_out, shared, "{d}");
        }
    }
    assert!(!base.blobs.is_empty());
    let new_layers: Vec<&String> = bd.iter().filter(|d| !b1.contains(*d)).collect();
    assert!(!new_layers.is_empty());
    let files: Vec<&str> = base.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        files,
        [
            "k3s/k3s",
            "k3s/k3s-airgap-images-amd64.tar.zst",
            "k3s/k3s-airgap-images-arm64.tar.zst",
            "k3s/k3s-arm64"
        ]
    );
    assert!(di2.entries.iter().any(|e| e.path == "k3s/install.sh"));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&d2) + (200 << 10) < size(&full2),
        "delta {} bytes, full {}",
        size(&d2),
        size(&full2)
    );
    let shown = ok(
        &Command::new(bin("rinbundle"))
            .arg("inspect")
            .arg(&d2)
            .output()
            .unwrap(),
        "inspect",
    );
    assert!(
        shown.contains("a delta onto the release of index sha256:")
            && shown.contains("leaves out")
            && shown.contains("4 K3s files"),
        "{shown}"
    );

    let reg = Registry::start(Options::default());
    let scratch = dir.join("scratch");

    // A node with no release, and a joining node, are refused a delta; nothing is written.
    let fresh = dir.join("fresh");
    let out = apply(&d2, dir, &fresh, &reg, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("this node has no release installed: bring the full bundle"),
        "{}",
        text(&out)
    );
    std::fs::write(dir.join("token"), "token\n").unwrap();
    let token = dir.join("token").display().to_string();
    let out = apply(
        &d2,
        dir,
        &fresh,
        &reg,
        &[
            "--role",
            "agent",
            "--server",
            "https://10.0.0.1:6443",
            "--token-file",
            &token,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("bring the full bundle to join a node"),
        "{}",
        text(&out)
    );
    assert!(!fresh.join("usr/local/bin/k3s").exists());
    assert!(installed(&fresh).is_none());

    // The delta onto its base: the left-out blobs come from the registry, the K3s files from
    // the node; every image of v2 is then served whole.
    let root = dir.join("root");
    ok(&apply(&v1, dir, &root, &reg, &[]), "apply v1");
    let said = ok(&apply(&d2, dir, &root, &reg, &[]), "apply the delta");
    assert_eq!(installed(&root), Some(index_sha256(&d2)), "{said}");
    assert_served(&reg, &i2, &scratch);

    // The chain: v3 by a delta built against the v2 delta.
    let s3 = stack(&dir.join("s3"), "1.2.0", 2);
    let d3 = dir.join("v3-delta.tar.zst");
    let di3 = build(dir, &s3, &d3, &base_arg(&d2));
    let base3 = di3.base.clone().unwrap();
    assert_eq!(base3.index_sha256, index_sha256(&d2));
    assert_eq!(
        base3.files.len(),
        4,
        "K3s files held since v1 are still left out"
    );
    ok(&apply(&d3, dir, &root, &reg, &[]), "apply the second delta");
    assert_eq!(installed(&root), Some(index_sha256(&d3)));
    assert_served(&reg, &di3, &dir.join("scratch3"));

    // The v2 delta onto v3: the wrong release, refused in preflight.
    let out = apply(&d2, dir, &root, &reg, &["--allow-downgrade"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("but this node runs demo 1.2.0"),
        "{}",
        text(&out)
    );
    assert_eq!(installed(&root), Some(index_sha256(&d3)));

    // A delta against what the site holds: its inventory, signed by the site's key.
    ok(
        &Command::new(bin("rinbundle"))
            .args(["keygen", "--out"])
            .arg(dir.join("site"))
            .output()
            .unwrap(),
        "keygen",
    );
    let inventory = dir.join("site.json");
    let said = ok(
        &Command::new(bin("rininstall"))
            .arg("inventory")
            .arg("-o")
            .arg(&inventory)
            .arg("--key")
            .arg(dir.join("site.key"))
            .arg("--root")
            .arg(&root)
            .args(["--registry", &reg.addr, "--quiet"])
            .output()
            .unwrap(),
        "inventory",
    );
    assert!(said.contains("demo 1.2.0"), "{said}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&inventory).unwrap()).unwrap();
    let held: Vec<String> = doc["inventory"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    // Every config and layer of v3 is held (its amd64 and arm64 alike: all were seeded).
    let not_held: std::collections::BTreeSet<String> = blobs(&di3)
        .into_iter()
        .chain(base3.blobs.iter().cloned())
        .filter(|d| !held.contains(d))
        .collect();
    for d in &not_held {
        assert!(
            di3.images
                .iter()
                .any(|i| &i.digest == d || i.platforms.iter().any(|p| &p.digest == d))
                || di3.charts.iter().any(|c| &c.digest == d),
            "{d} is neither held nor a manifest"
        );
    }
    assert_eq!(
        doc["inventory"]["files"].as_array().unwrap().len(),
        2,
        "{doc}"
    );
    let s4 = stack(&dir.join("s4"), "1.3.0", 3);
    let d4 = dir.join("v4-delta.tar.zst");
    let mut args = base_arg(&inventory);
    args.extend([
        "--base-key".into(),
        dir.join("site.pub").display().to_string(),
    ]);
    let di4 = build(dir, &s4, &d4, &args);
    let base4 = di4.base.clone().unwrap();
    assert!(base4.inventory.is_some());
    assert_eq!(base4.index_sha256, index_sha256(&d3));
    assert_eq!(base4.files.len(), 2, "only amd64's K3s files are in place");
    // Signed by another key than the one given: refused before anything is built.
    let mut wrong_key = args.clone();
    wrong_key[3] = dir.join("k.pub").display().to_string();
    let refused = rin_tests::build_command(
        dir,
        &s4,
        "1700000000",
        &dir.join("never.tar.zst"),
        &wrong_key,
    )
    .output()
    .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("the site's signatures were refused"),
        "{}",
        text(&refused)
    );
    assert!(!dir.join("never.tar.zst").exists());
    ok(
        &apply(&d4, dir, &root, &reg, &[]),
        "apply the inventory delta",
    );
    assert_eq!(installed(&root), Some(index_sha256(&d4)));
    assert_served(&reg, &di4, &dir.join("scratch4"));
    // Four releases applied, none kept for rollback here (no cluster step): one index kept.
    let indexes: Vec<String> = std::fs::read_dir(root.join("var/lib/rininstall/indexes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(indexes, [format!("{}.json", index_sha256(&d4))]);

    // A site whose registry lost a blob the delta leaves out: refused before anything changes.
    let reg2 = Registry::start(Options::default());
    let root2 = dir.join("root2");
    ok(
        &apply(&v1, dir, &root2, &reg2, &[]),
        "apply v1 at the second site",
    );
    // A K3s binary on the node that is not the one the delta leaves out: refused, naming it.
    let k3s = root2.join("usr/local/bin/k3s");
    let original = std::fs::read(&k3s).unwrap();
    std::fs::write(&k3s, b"another k3s").unwrap();
    let out = apply(&d2, dir, &root2, &reg2, &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("this delta leaves out k3s/k3s (sha256 ")
            && said.contains("usr/local/bin/k3s on this node is not that file"),
        "{said}"
    );
    assert_eq!(std::fs::read(&k3s).unwrap(), b"another k3s");
    assert_eq!(installed(&root2), Some(index_sha256(&v1)));
    std::fs::write(&k3s, &original).unwrap();
    let tags_before = resolved(&reg2, "rin/app:1");
    let lost = base
        .blobs
        .iter()
        .find(|d| {
            // A layer of the app image (the big one): 256 KiB of noise.
            std::fs::metadata(reg2.blob_data(d)).is_ok_and(|m| m.len() > 200 << 10)
        })
        .unwrap()
        .clone();
    std::fs::remove_dir_all(reg2.blob_data(&lost).parent().unwrap()).unwrap();
    let host_files = |root: &Path| {
        std::fs::read_dir(root.join("etc/rancher/k3s"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (p.clone(), std::fs::read(&p).unwrap_or_default())
            })
            .collect::<Vec<_>>()
    };
    let before = host_files(&root2);
    let out = apply(&d2, dir, &root2, &reg2, &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("lacks 1 of the blobs this delta leaves out") && said.contains(&lost),
        "{said}"
    );
    assert_eq!(installed(&root2), Some(index_sha256(&v1)));
    assert_eq!(resolved(&reg2, "rin/app:1"), tags_before, "a tag moved");
    assert_eq!(host_files(&root2), before, "a host file changed");
}
