//! Charts from a Helm repository (index.yaml over HTTP) and from an OCI registry, and K3s
//! release files from a release page, served by the tests; the image-use check over manifests
//! and charts.
#![allow(clippy::unwrap_used)]

use rin_builder::lock::Lock;
use rin_tests::bin;
use rin_tests::fixture::{LayerFile, layer, noise};
use rin_tests::net::FileServer;
use rin_tests::registry::{Options, Registry, push_chart};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const K3S: &str = "v1.31.4+k3s1";

fn chart(name: &str, version: &str, values: &str, template: &str) -> Vec<u8> {
    layer(&[
        LayerFile::new(
            &format!("{name}/Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"9.9\"\n"),
        ),
        LayerFile::new(&format!("{name}/values.yaml"), values),
        LayerFile::new(&format!("{name}/templates/deploy.yaml"), template),
    ])
    .0
}

fn sha256(b: &[u8]) -> String {
    rin_bundle::digest::sha256_hex(b)
}

fn rinbundle(args: &[&str]) -> Output {
    Command::new(bin("rinbundle"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fake K3s release for arm64 on `srv`; returns the binary's bytes.
fn release(srv: &FileServer) -> Vec<u8> {
    let dir = format!("releases/{}", K3S.replace('+', "%2B"));
    let k3s = noise(200_000, 7);
    let images = noise(600_000, 11);
    srv.put(&format!("{dir}/k3s-arm64"), k3s.clone());
    srv.put(
        &format!("{dir}/k3s-airgap-images-arm64.tar.zst"),
        images.clone(),
    );
    srv.put(
        &format!("{dir}/sha256sum-arm64.txt"),
        format!(
            "{}  k3s-arm64\n{}  k3s-airgap-images-arm64.tar.zst\n{}  k3s-images.txt\n",
            sha256(&k3s),
            sha256(&images),
            "0".repeat(64)
        ),
    );
    srv.put(
        &format!("install/{K3S}/install.sh"),
        "#!/bin/sh\necho installing k3s\n",
    );
    k3s
}

#[test]
fn charts_from_a_helm_repository_and_oci_k3s_from_a_release_page_and_the_image_check() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    reg.push_small_app(t.path(), false);
    let app_repo = format!("{}/test/app", reg.addr);

    // A Helm repository: the chart's values name the image as registry/repository/tag parts.
    let srv = FileServer::start();
    let web = chart(
        "web",
        "1.2.0",
        &format!("image:\n  repository: {app_repo}\n  tag: \"0.0\"\n"),
        "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n",
    );
    srv.put("charts/web-1.2.0.tgz", web.clone());
    srv.put(
        "repo/index.yaml",
        format!(
            "apiVersion: v1\nentries:\n  web:\n  - name: web\n    version: 1.2.0\n    urls: [\"{}\"]\n    digest: {}\n  - name: web\n    version: 1.1.0\n    urls: [\"web-1.1.0.tgz\"]\n",
            srv.url("charts/web-1.2.0.tgz"),
            sha256(&web)
        ),
    );
    // An OCI chart whose template names an image the stack does not carry.
    let db = chart(
        "db",
        "0.3.0",
        "replicas: 1\n",
        "kind: StatefulSet\nspec:\n  template:\n    spec:\n      containers:\n      - name: db\n        image: docker.io/library/postgres:16\n",
    );
    push_chart(&reg.addr, "charts", "db", "0.3.0", db.clone());
    let k3s_bin = release(&srv);

    let st = t.path().join("stack");
    fs::create_dir_all(st.join("manifests")).unwrap();
    fs::write(
        st.join("bundle.yaml"),
        format!(
            "name: sources\nversion: 2.0.0\nplatforms: [arm64]\n\
             k3s:\n  version: {K3S}\n  release_url: http://{a}/releases\n  install_script: http://{a}/install/{{version}}/install.sh\n\
             images:\n  - reference: {app_repo}:1.0\n\
             charts:\n  - name: web\n    version: 1.2.0\n    repo: http://{a}/repo\n    values: web-values.yaml\n\
             \x20 - name: db\n    version: 0.3.0\n    repo: oci://{r}/charts\n",
            a = srv.addr,
            r = reg.addr
        ),
    )
    .unwrap();
    // The stack's values point the chart at the carried tag.
    fs::write(st.join("web-values.yaml"), "image:\n  tag: \"1.0\"\n").unwrap();
    fs::write(
        st.join("manifests/job.yaml"),
        format!("kind: Job\nspec:\n  template:\n    spec:\n      containers:\n      - name: j\n        image: {app_repo}:1.0\n"),
    )
    .unwrap();
    let key = t.path().join("k");
    assert!(
        rinbundle(&["keygen", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    let cache = t.path().join("cache");
    let out_file = t.path().join("b.tar.zst");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let args = vec![
        "build".to_string(),
        "--stack".into(),
        p(&st),
        "--key".into(),
        p(&t.path().join("k.key")),
        "--cache".into(),
        p(&cache),
        "-o".into(),
        p(&out_file),
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend(extra);
        rinbundle(&a)
    };

    // The airgap images download is cut a third of the way: resumed with Range.
    srv.cut_next(
        &format!(
            "releases/{}/k3s-airgap-images-arm64.tar.zst",
            K3S.replace('+', "%2B")
        ),
        200_000,
    );
    // postgres:16 is used by the db chart but not carried: refused, naming it and where.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("docker.io/library/postgres:16") && err.contains("chart db 0.3.0"),
        "{err}"
    );
    assert!(err.contains("--allow-missing-image"), "{err}");
    assert!(!out_file.exists());
    let ranged: Vec<_> = srv
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with(".tar.zst") && s.range.is_some())
        .collect();
    assert_eq!(ranged.len(), 1, "{:?}", srv.seen());
    assert_eq!(ranged[0].range.as_deref(), Some("bytes=200000-"));

    // Allowed: built, and the use list says what is not carried.
    let out = run(&["--allow-missing-image"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("NOT CARRIED: docker.io/library/postgres:16"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the stack's manifests and charts use 3 images, 1 of them NOT carried:"),
        "{stdout}"
    );

    let lock = Lock::load(&st.join("images.lock")).unwrap().unwrap();
    let c: Vec<(&str, &str)> = lock
        .charts
        .iter()
        .map(|c| (c.name.as_str(), c.sha256.as_str()))
        .collect();
    assert_eq!(
        c,
        [("db", sha256(&db).as_str()), ("web", sha256(&web).as_str())]
    );
    let files: Vec<&str> = lock.k3s.iter().map(|f| f.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "install.sh",
            "k3s-airgap-images-arm64.tar.zst",
            "k3s-arm64",
            "sha256sum-arm64.txt"
        ]
    );

    let out = rinbundle(&["inspect", "--json", &p(&out_file)]);
    let idx: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = idx["index"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for want in [
        "charts/web-1.2.0.values.yaml",
        "k3s/install.sh",
        "k3s/k3s-arm64",
        "k3s/k3s-airgap-images-arm64.tar.zst",
        "k3s/sha256sum-arm64.txt",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    let charts = idx["index"]["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 2);
    assert_eq!(charts[1]["values"], "charts/web-1.2.0.values.yaml");
    let k3s_entry = idx["index"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "k3s/k3s-arm64")
        .unwrap();
    assert_eq!(k3s_entry["sha256"], sha256(&k3s_bin));
    assert_eq!(k3s_entry["mode"], 0o755);

    // The release page now serves another binary: the locked build refuses it, naming both
    // digests, and keeps nothing of it.
    let evil = noise(200_000, 99);
    srv.put(
        &format!("releases/{}/k3s-arm64", K3S.replace('+', "%2B")),
        evil.clone(),
    );
    fs::remove_dir_all(&cache).unwrap();
    fs::remove_file(&out_file).unwrap();
    let out = run(&["--allow-missing-image", "--locked"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("k3s-arm64")
            && err.contains(&sha256(&k3s_bin))
            && err.contains(&sha256(&evil)),
        "{err}"
    );
    assert!(!out_file.exists());
    assert!(!cache.join("blobs/sha256").join(sha256(&evil)).exists());
}
