//! The stacks the project carries (the Rin stack in `manifests/`, every stack under `examples/`)
//! checked as a site would need them: `bundle.yaml` loads, every manifest parses into objects
//! that can be applied (no duplicates), every image the manifests use is in the stack's image
//! list, nothing points at a URL outside the cluster, every Secret is generated at apply time,
//! and the pods of namespaces labelled Pod Security `restricted` meet that profile.
#![allow(clippy::unwrap_used)]

use rin_installer::cluster::objects::{self, Object, Origin};
use rin_tests::{build_signed_with, repo_root};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn stacks() -> Vec<PathBuf> {
    let root = repo_root();
    let mut out = vec![root.join("manifests")];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bundle.yaml").is_file())
        .collect();
    examples.sort();
    out.extend(examples);
    out
}

/// Every manifest file of the stack (yaml, yml, json), in path order.
fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            manifest_files(&p, out);
        } else if ["yaml", "yml", "json"]
            .iter()
            .any(|x| p.extension().is_some_and(|e| e == *x))
        {
            out.push(p);
        }
    }
}

struct Loaded {
    stack: rin_builder::Stack,
    objects: Vec<Object>,
    texts: Vec<(String, String)>,
}

fn load(dir: &Path) -> Loaded {
    let stack = rin_builder::Stack::load(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mdir = stack.resolve(&stack.spec.manifests);
    assert!(mdir.is_dir(), "{}: no manifests directory", dir.display());
    let mut files = Vec::new();
    manifest_files(&mdir, &mut files);
    assert!(!files.is_empty(), "{}: no manifests", dir.display());
    let mut objects = Vec::new();
    let mut texts = Vec::new();
    for f in files {
        let rel = f.strip_prefix(dir).unwrap().display().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        objects
            .extend(objects::parse(&text, &rel, Origin::Stack).unwrap_or_else(|e| panic!("{e}")));
        texts.push((rel, text));
    }
    Loaded {
        stack,
        objects,
        texts,
    }
}

#[test]
fn every_stack_parses_into_objects_once_each() {
    for dir in stacks() {
        let l = load(&dir);
        assert_eq!(objects::duplicates(&l.objects), None, "{}", dir.display());
    }
}

/// Every Secret a pod of `v` reads (`secretKeyRef`, `secretRef`, secret volumes), with the
/// namespace given: (secret name, optional).
fn secrets_read(v: &Value, out: &mut Vec<(String, bool)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let name = match k.as_str() {
                    "secretKeyRef" | "secretRef" => x.get("name"),
                    "secret" => x.get("secretName"),
                    _ => None,
                };
                if let Some(n) = name.and_then(Value::as_str) {
                    let optional = x.get("optional").and_then(Value::as_bool) == Some(true);
                    out.push((n.to_string(), optional));
                }
                secrets_read(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| secrets_read(x, out)),
        _ => {}
    }
}

/// Secrets are never committed with values: every Secret of every stack is generated or copied
/// at apply time, and every Secret a pod reads is one of them, so a first apply needs nothing
/// made by hand.
#[test]
fn every_secret_a_stack_uses_is_generated_at_apply_time() {
    for dir in stacks() {
        let l = load(&dir);
        let mut made = std::collections::BTreeSet::new();
        for o in l.objects.iter().filter(|o| o.reference.kind == "Secret") {
            assert!(
                o.generated().is_some(),
                "{}: {} in {} is neither generated nor copied: secrets are never committed",
                dir.display(),
                o.reference,
                o.source
            );
            made.insert((o.reference.namespace.clone(), o.reference.name.clone()));
        }
        for o in &l.objects {
            let mut read = Vec::new();
            secrets_read(&o.value, &mut read);
            for (name, optional) in read {
                let ns = o.reference.namespace.clone();
                assert!(
                    optional || made.contains(&(ns.clone(), name.clone())),
                    "{}: {} in {} reads Secret {ns}/{name}, which the stack does not generate",
                    dir.display(),
                    o.reference,
                    o.source
                );
            }
        }
        if dir.ends_with("manifests") {
            let copy = l
                .objects
                .iter()
                .find(|o| o.reference.namespace == "rin-system" && o.reference.name == "rin-db-app")
                .unwrap();
            assert_eq!(
                copy.generated(),
                Some(objects::Generated::CopyFrom {
                    namespace: "rin-data".into(),
                    name: "rin-db-app".into()
                })
            );
        }
    }
}

#[test]
fn every_image_the_manifests_use_is_in_the_stack() {
    let norm = |r: &str| {
        let p = rin_builder::net::registry::parse_reference(r).unwrap();
        (
            p.registry().to_string(),
            p.repository().to_string(),
            p.tag().map(str::to_string),
            p.digest().map(str::to_string),
        )
    };
    for dir in stacks() {
        let l = load(&dir);
        let listed: Vec<_> = l
            .stack
            .spec
            .images
            .iter()
            .map(|i| norm(&i.reference))
            .collect();
        let mut uses = Vec::new();
        for (file, text) in &l.texts {
            rin_builder::pack::scan::yaml_images(text, file, &mut uses);
        }
        assert!(!uses.is_empty(), "{}: no image found", dir.display());
        for u in uses {
            assert!(
                listed.contains(&norm(&u.reference)),
                "{}: {} uses {}, which bundle.yaml does not list",
                dir.display(),
                u.place,
                u.reference
            );
        }
    }
}

/// Every string in `v`.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|c| strings(c, out)),
        Value::Object(m) => m.values().for_each(|c| strings(c, out)),
        _ => {}
    }
}

/// The URLs in `v` whose host is outside the cluster (not a `.svc` name, not loopback).
fn outside_urls(v: &Value) -> Vec<String> {
    let mut all = Vec::new();
    strings(v, &mut all);
    let mut out = Vec::new();
    for s in all {
        for (i, _) in s.match_indices("://") {
            let host = s[i + 3..]
                .split(|c: char| c == '/' || c == ':' || c.is_whitespace())
                .next()
                .unwrap_or("");
            let inside = host.ends_with(".svc")
                || host.ends_with(".svc.cluster.local")
                || host == "localhost"
                || host.starts_with("127.")
                || host.starts_with("%{");
            if !inside {
                out.push(format!("{host} in {s}"));
            }
        }
    }
    out
}

#[test]
fn nothing_points_outside_the_cluster() {
    for dir in stacks() {
        let l = load(&dir);
        for o in &l.objects {
            let outside = outside_urls(&o.value);
            assert!(
                outside.is_empty(),
                "{}: {} ({}) points outside the cluster: {outside:?}",
                dir.display(),
                o.reference,
                o.source
            );
        }
    }
}

#[test]
fn the_url_check_catches_a_host_outside_the_cluster() {
    let v: Value = serde_json::json!({"data": {
        "inside": "http://api.ns.svc:8080/x nats://nats.ns.svc.cluster.local:4222",
        "config": "upstream https://cdn.example.com/lib.js; also s3://bucket.s3.amazonaws.com"
    }});
    let found = outside_urls(&v);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|f| f.starts_with("cdn.example.com")));
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("bucket.s3.amazonaws.com"))
    );
}

/// Where the restricted profile fails for a pod template (`spec` of the pod).
fn restricted_failures(pod: &Value) -> Vec<String> {
    let mut f = Vec::new();
    let psc = &pod["securityContext"];
    for k in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[k] == true {
            f.push(format!("{k} is set"));
        }
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        if v.get("hostPath").is_some() {
            f.push(format!("volume {} is a hostPath", v["name"]));
        }
    }
    let containers = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().into_iter().flatten());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let csc = &c["securityContext"];
        let non_root = csc["runAsNonRoot"]
            .as_bool()
            .or(psc["runAsNonRoot"].as_bool());
        if non_root != Some(true) {
            f.push(format!("{name}: runAsNonRoot is not true"));
        }
        let uid = csc["runAsUser"].as_u64().or(psc["runAsUser"].as_u64());
        if uid == Some(0) {
            f.push(format!("{name}: runs as user 0"));
        }
        let seccomp = csc["seccompProfile"]["type"]
            .as_str()
            .or(psc["seccompProfile"]["type"].as_str());
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            f.push(format!("{name}: seccompProfile is not RuntimeDefault"));
        }
        if csc["allowPrivilegeEscalation"] != false {
            f.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if csc["privileged"] == true {
            f.push(format!("{name}: privileged"));
        }
        let drops_all = csc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            f.push(format!("{name}: capabilities do not drop ALL"));
        }
        let adds: Vec<&Value> = csc["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| *x != "NET_BIND_SERVICE")
            .collect();
        if !adds.is_empty() {
            f.push(format!("{name}: adds capabilities {adds:?}"));
        }
    }
    f
}

#[test]
fn pods_of_restricted_namespaces_meet_the_restricted_profile() {
    let mut checked = 0;
    for dir in stacks() {
        let l = load(&dir);
        let restricted: Vec<&str> = l
            .objects
            .iter()
            .filter(|o| o.reference.kind == "Namespace")
            .filter(|o| {
                o.value["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
            })
            .map(|o| o.reference.name.as_str())
            .collect();
        for o in &l.objects {
            if !restricted.contains(&o.reference.namespace.as_str()) {
                continue;
            }
            let Some(pod) = objects::pod_template(&o.reference.kind)
                .and_then(|t| o.value.pointer(&format!("{t}/spec")))
            else {
                continue;
            };
            let failures = restricted_failures(pod);
            assert!(
                failures.is_empty(),
                "{}: {} ({}): {failures:?}",
                dir.display(),
                o.reference,
                o.source
            );
            checked += 1;
        }
    }
    // The Rin stack alone has eight workloads in its restricted namespaces.
    assert!(checked >= 8, "only {checked} pods checked");
}

#[test]
fn the_restricted_check_catches_what_the_profile_forbids() {
    let pod: Value = serde_json::json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [
            {"name": "ok", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}}},
            {"name": "bad", "securityContext": {"runAsUser": 0, "privileged": true,
                "capabilities": {"add": ["SYS_ADMIN"]}}}
        ]
    });
    let f = restricted_failures(&pod).join("\n");
    for want in [
        "volume \"host\" is a hostPath",
        "bad: runs as user 0",
        "bad: allowPrivilegeEscalation is not false",
        "bad: privileged",
        "bad: capabilities do not drop ALL",
        "bad: adds capabilities",
    ] {
        assert!(f.contains(want), "{want}: {f}");
    }
    assert!(!f.contains("ok:"), "{f}");
}

#[test]
fn the_rin_stack_has_the_reference_architecture_s_parts() {
    let l = load(&repo_root().join("manifests"));
    let names: Vec<String> = l.objects.iter().map(|o| o.reference.to_string()).collect();
    for want in [
        "Namespace rin-system",
        "Namespace rin-data",
        "Namespace rin-monitoring",
        "Deployment.apps rin-system/rin-api",
        "Deployment.apps rin-system/rin-worker",
        "Deployment.apps rin-system/rin-score-worker",
        "StatefulSet.apps rin-data/nats",
        "Cluster.postgresql.cnpg.io rin-data/rin-db",
        "ClusterIssuer.cert-manager.io rin-internal-ca",
        "Ingress.networking.k8s.io rin-system/rin-api",
    ] {
        assert!(names.iter().any(|n| n == want), "missing {want}: {names:?}");
    }
    let charts: Vec<&str> = l
        .stack
        .spec
        .charts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        charts,
        ["cert-manager", "cloudnative-pg", "longhorn", "metallb"]
    );
    let api = l
        .objects
        .iter()
        .find(|o| o.reference.name == "rin-api" && o.reference.kind == "Deployment")
        .unwrap();
    let c = &api.value["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(api.value["spec"]["replicas"], 2);
    assert_eq!(c["command"][0], "/app/api");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let ports: Vec<u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8080, 9090]);
    assert_eq!(l.stack.spec.images.len(), 28);
    // Longhorn and MetalLB are off unless asked for, and replace K3s's own parts.
    let components = &l.stack.spec.components;
    for (name, replaces) in [("longhorn", "local-storage"), ("metallb", "servicelb")] {
        let c = &components[name];
        assert!(!c.default, "{name}");
        assert_eq!(c.k3s_disable, [replaces], "{name}");
        assert_eq!(c.charts, [name], "{name}");
    }
}

/// A chart archive `name-version` whose template uses `image`.
fn stand_in_chart(name: &str, version: &str, image: &str) -> Vec<u8> {
    use rin_tests::fixture::{LayerFile, layer};
    layer(&[
        LayerFile::new(
            &format!("{name}/Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
        ),
        LayerFile::new(&format!("{name}/values.yaml"), "replicaCount: 1\n"),
        LayerFile::new(
            &format!("{name}/templates/deploy.yaml"),
            format!("kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        image: {image}\n"),
        ),
    ])
    .0
}

/// Stand-ins for everything `stack` pulls, served under its own names: every image (one
/// registry behind `--registry-mirror` for each registry the stack names), every chart (a Helm
/// repository on `srv`, or the registry for `oci://`), and the K3s release (on `srv`). Returns the
/// mirror arguments for `rinbundle build`.
fn serve_stand_ins(
    stack: &rin_builder::Stack,
    reg: &rin_tests::registry::Registry,
    srv: &rin_tests::net::FileServer,
    layout: &Path,
) -> Vec<String> {
    use rin_tests::fixture::{FixtureImage, LayoutWriter};
    let spec = &stack.spec;
    let mut hosts = std::collections::BTreeSet::new();
    let mut w = LayoutWriter::new(layout).unwrap();
    for i in &spec.images {
        if let Some(dir) = &i.layout {
            // An image the stack makes itself (the demo's): a stand-in layout in its place.
            let name = i.name.clone().unwrap_or_else(|| i.reference.clone());
            LayoutWriter::new(&stack.resolve(dir))
                .unwrap()
                .image(&FixtureImage::small(&name, &["amd64", "arm64"]))
                .unwrap();
            continue;
        }
        let r = rin_builder::net::registry::parse_reference(&i.reference).unwrap();
        hosts.insert(r.registry().to_string());
        // The same reference gets the same stand-in in every stack.
        let name: String = i
            .reference
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let img = if r.repository() == "library/registry" {
            rin_tests::fixture::busybox_image(&name, &["amd64", "arm64"])
        } else {
            FixtureImage::small(&name, &["amd64", "arm64"])
        };
        w.image(&img).unwrap();
        reg.push(
            layout,
            &name,
            &format!("{}:{}", r.repository(), r.tag().unwrap()),
        );
    }
    let mut args = Vec::new();
    for c in &spec.charts {
        let repo = c
            .repo
            .as_deref()
            .expect("the stacks' charts come from repositories");
        // The chart's first listed image, so the image check has something to find.
        let image = spec.images[1].reference.clone();
        let tgz = stand_in_chart(&c.name, &c.version, &image);
        if let Some(oci) = repo.strip_prefix("oci://") {
            let (host, path) = oci.split_once('/').unwrap();
            hosts.insert(host.to_string());
            rin_tests::registry::push_chart(&reg.addr, path, &c.name, &c.version, tgz);
        } else {
            let dir = format!("helm/{}", c.name);
            let file = format!("{}-{}.tgz", c.name, c.version);
            srv.put(&format!("{dir}/{file}"), tgz.clone());
            srv.put(
                &format!("{dir}/index.yaml"),
                format!(
                    "apiVersion: v1\nentries:\n  {n}:\n  - name: {n}\n    version: {v}\n    urls: [\"{repo}/{file}\"]\n    digest: {d}\n",
                    n = c.name,
                    v = c.version,
                    d = rin_bundle::digest::sha256_hex(&tgz)
                ),
            );
            args.push("--url-mirror".into());
            args.push(format!("{repo}={}", srv.url(&dir)));
        }
    }
    if let Some(files) = spec.k3s.as_ref().and_then(|k| k.files.as_ref()) {
        // A stack that brings its own K3s files (the demo's stand-ins): made in their place.
        rin_tests::fixture::write_k3s_stand_ins(&stack.resolve(files)).unwrap();
    } else if let Some(k3s) = &spec.k3s {
        let dir = format!("k3s/{}", k3s.version.replace('+', "%2B"));
        for arch in ["amd64", "arm64"] {
            let bin_name = if arch == "amd64" {
                "k3s".to_string()
            } else {
                format!("k3s-{arch}")
            };
            let b = format!("stand-in k3s {arch}").into_bytes();
            let imgs = format!("stand-in airgap images {arch}").into_bytes();
            let images_name = format!("k3s-airgap-images-{arch}.tar.zst");
            srv.put(&format!("{dir}/{bin_name}"), b.clone());
            srv.put(&format!("{dir}/{images_name}"), imgs.clone());
            srv.put(
                &format!("{dir}/sha256sum-{arch}.txt"),
                format!(
                    "{}  {bin_name}\n{}  {images_name}\n",
                    rin_bundle::digest::sha256_hex(&b),
                    rin_bundle::digest::sha256_hex(&imgs)
                ),
            );
        }
        srv.put(
            &format!("install/{}/install.sh", k3s.version),
            "#!/bin/sh\necho stand-in\n",
        );
        for (from, to) in [
            (
                "https://github.com/k3s-io/k3s/releases/download",
                srv.url("k3s"),
            ),
            (
                "https://raw.githubusercontent.com/k3s-io/k3s",
                srv.url("install"),
            ),
        ] {
            args.push("--url-mirror".into());
            args.push(format!("{from}={to}"));
        }
    }
    for h in hosts {
        args.push("--registry-mirror".into());
        args.push(format!("{h}={}", reg.addr));
    }
    // Host packages: a stand-in repository per target holding one package of each name the
    // stack and its components ask for.
    for h in &spec.host_packages {
        let names: std::collections::BTreeSet<String> = h
            .packages
            .iter()
            .chain(spec.components.values().flat_map(|c| &c.host_packages))
            .map(|p| p.split('=').next().unwrap().to_string())
            .collect();
        let debs: Vec<rin_tests::deb::Deb> = names
            .iter()
            .map(|n| rin_tests::deb::Deb::new(n, "1.0-1", "all"))
            .collect();
        let dir = format!("apt/{}", h.target);
        let tmp = layout.with_file_name(format!("apt-{}", h.target));
        let files = rin_tests::deb::repository(&tmp, &h.suite, &["amd64", "arm64"], &debs);
        // Signed by a key of the test's own in place of the archive's, when the stack checks.
        if let Some(keyring) = &h.signed_by {
            let key = rin_tests::deb::ArchiveKey::new(&tmp.join("gnupg"), "ed25519");
            let (path, in_release) = key.in_release(&h.suite, &files);
            srv.put(&format!("{dir}/{path}"), in_release);
            std::fs::write(stack.resolve(keyring), key.public()).unwrap();
        }
        for (path, bytes) in files {
            srv.put(&format!("{dir}/{path}"), bytes);
        }
        args.push("--url-mirror".into());
        args.push(format!(
            "{}={}",
            h.repo.trim_end_matches('/'),
            srv.url(&dir)
        ));
    }
    args
}

/// `rinbundle build` arguments: quiet, for `arches`.
fn quietly_for(arches: &[&str]) -> Vec<String> {
    let mut args = vec!["--quiet".to_string()];
    for a in arches {
        args.extend(["--arch".to_string(), a.to_string()]);
    }
    args
}

/// `rinbundle build --arch amd64 --arch arm64` of every stack as it is in the repository, from
/// stand-ins served under its own names, then `rininstall apply --dry-run` of each bundle plans
/// every object of the stack, charts before the kinds they bring.
#[test]
fn every_stack_builds_for_both_architectures_and_its_plan_has_every_object() {
    use rin_tests::net::FileServer;
    use rin_tests::registry::{Options, Registry};
    use rin_tests::{bin, ok};
    use std::process::Command;

    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let srv = FileServer::start();
    for src in stacks() {
        let name = src.file_name().unwrap().to_string_lossy().to_string();
        // A copy, so the lock (and anything else the build writes) stays out of the repository.
        let repo = t.path().join(&name);
        rin_tests::demo::copy_tree(&src, &repo.join("stack"));
        let dir = repo.join("stack");
        let l = load(&dir);
        let mirrors = serve_stand_ins(
            &l.stack,
            &reg,
            &srv,
            &t.path().join(format!("layout-{name}")),
        );
        let out = t.path().join(format!("{name}.tar.zst"));
        // Every component, so the plan can be checked against every object.
        let every_component: Vec<String> = l
            .stack
            .spec
            .components
            .keys()
            .flat_map(|c| ["--with".to_string(), c.clone()])
            .collect();
        let mut args = quietly_for(&["amd64", "arm64"]);
        args.extend(mirrors.iter().cloned());
        args.extend(every_component);
        build_signed_with(t.path(), &dir, "1700000000", &out, &args);
        // (A stack of local layouts only, like the demo, has nothing to lock.)
        let lock = std::fs::read_to_string(dir.join(&l.stack.spec.lock)).unwrap_or_default();
        assert!(
            !lock.contains(&reg.addr),
            "{name}: the lock names the mirror: {lock}"
        );
        let (index, _) = rin_bundle::peek(&out).unwrap();
        let index = rin_bundle::Index::from_canonical_json(&index).unwrap();
        assert_eq!(index.platforms, ["linux/amd64", "linux/arm64"], "{name}");
        assert_eq!(index.images.len(), l.stack.spec.images.len(), "{name}");
        // Each target's host packages, for both architectures.
        for h in &l.stack.spec.host_packages {
            for arch in ["amd64", "arm64"] {
                let list = format!("host/{}/{arch}/packages.json", h.target);
                assert!(
                    index.entries.iter().any(|e| e.path == list),
                    "{name}: no {list}"
                );
            }
        }
        if l.stack.spec.k3s.is_none() {
            // Only stacks that carry K3s install on a node.
            continue;
        }

        let dry = Command::new(bin("rininstall"))
            .arg("apply")
            .arg(&out)
            .arg("--key")
            .arg(t.path().join("k.pub"))
            .arg("--root")
            .arg(t.path().join("root"))
            .args([
                "--no-start",
                "--dry-run",
                "--arch",
                "arm64",
                "--progress",
                "none",
            ])
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        let plan = ok(&dry, &format!("apply --dry-run of {name}"));
        let planned: Vec<&str> = plan
            .lines()
            .filter_map(|l| l.strip_prefix("would apply "))
            .collect();
        for o in &l.objects {
            let source = format!("{} (from {})", o.reference, o.source);
            assert!(
                planned
                    .iter()
                    .any(|p| p.starts_with(&format!("{} (from ", o.reference))),
                "{name}: {source} is not in the plan:\n{plan}"
            );
        }
        // Every object of the stack, every chart, the site registry's, nothing else.
        let registry_objects = 4;
        assert_eq!(
            planned.len(),
            l.objects.len() + l.stack.spec.charts.len() + registry_objects,
            "{name}: {plan}"
        );
        for c in &l.stack.spec.charts {
            assert!(
                planned
                    .iter()
                    .any(|p| p
                        .starts_with(&format!("HelmChart.helm.cattle.io kube-system/{} ", c.name))),
                "{name}: {plan}"
            );
        }
        let at = |s: &str| planned.iter().position(|p| p.starts_with(s));
        if name == "manifests" {
            assert_eq!(
                index.components,
                ["longhorn", "metallb", "monitoring", "redis"]
            );
            assert_eq!(
                index.k3s.as_ref().unwrap().disable,
                ["local-storage", "servicelb"]
            );
            assert!(
                at("HelmChart.helm.cattle.io kube-system/metallb")
                    < at("IPAddressPool.metallb.io metallb-system/site")
            );
            // The generated secrets are planned as such, the copy after what it copies.
            for (secret, how) in [
                ("rin-system/rin-db-app", "copied from rin-data/rin-db-app"),
                ("rin-data/rin-db-app", "generated password"),
                ("rin-monitoring/grafana-admin", "generated password"),
            ] {
                assert!(
                    planned
                        .iter()
                        .any(|p| p.starts_with(&format!("Secret {secret} (from "))
                            && p.ends_with(&format!("; created when missing, {how})"))),
                    "{secret}: {plan}"
                );
            }
            assert!(at("Secret rin-data/rin-db-app") < at("Secret rin-system/rin-db-app"));
            // Without its optional components: their images and manifests stay out.
            let small = t.path().join("rin-small.tar.zst");
            let mut args = quietly_for(&["arm64"]);
            args.extend(["--without", "monitoring", "--without", "redis"].map(String::from));
            args.extend(mirrors.iter().cloned());
            let (_, small_index) = build_signed_with(t.path(), &dir, "1700000000", &small, &args);
            // (Longhorn and MetalLB are off by default.)
            assert!(small_index.components.is_empty());
            assert!(small_index.k3s.as_ref().unwrap().disable.is_empty());
            assert_eq!(small_index.images.len(), index.images.len() - 3 - 13 - 3);
            assert_eq!(small_index.charts.len(), 2);
            assert!(!small_index.images.iter().any(|i| {
                ["grafana", "redis", "longhorn", "metallb"]
                    .iter()
                    .any(|n| i.reference.contains(n))
            }));
            let carried: Vec<&str> = small_index
                .entries
                .iter()
                .map(|e| e.path.as_str())
                .collect();
            assert!(carried.contains(&"manifests/40-rin.yaml"), "{carried:?}");
            assert!(!carried.contains(&"manifests/35-redis.yaml"), "{carried:?}");
            assert!(
                !carried.contains(&"manifests/60-monitoring.yaml"),
                "{carried:?}"
            );
            // The lock still covers every component.
            let lock = std::fs::read_to_string(dir.join(&l.stack.spec.lock)).unwrap();
            assert!(lock.contains("docker.io/grafana/grafana:11.4.0"), "{lock}");
            assert!(
                at("HelmChart.helm.cattle.io kube-system/cloudnative-pg")
                    < at("Cluster.postgresql.cnpg.io")
            );
            assert!(
                at("HelmChart.helm.cattle.io kube-system/cert-manager")
                    < at("ClusterIssuer.cert-manager.io")
            );
        }
        let _ = std::fs::remove_dir_all(t.path().join("root"));
    }
}

/// The JSON schema of a Kubernetes type, from the OpenAPI definitions k8s-openapi is generated
/// from, made strict: an object schema that lists its properties allows no others (as
/// `kubectl --validate=strict` and kubeconform's strict mode do), so a misspelt field fails.
fn schema_of<T: schemars::JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut v = serde_json::to_value(generator.into_root_schema_for::<T>()).unwrap();
    fn strict(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                    m.insert("additionalProperties".into(), Value::Bool(false));
                }
                m.values_mut().for_each(strict);
            }
            Value::Array(a) => a.iter_mut().for_each(strict),
            _ => {}
        }
    }
    strict(&mut v);
    v
}

/// The schema of a built-in kind; None for kinds the cluster learns from CRDs.
fn builtin_schema(api_version: &str, kind: &str) -> Option<Value> {
    use k8s_openapi::api::{
        apps::v1 as apps, batch::v1 as batch, core::v1 as core, networking::v1 as net,
        policy::v1 as policy, rbac::v1 as rbac, storage::v1 as storage,
    };
    Some(match (api_version, kind) {
        ("v1", "Namespace") => schema_of::<core::Namespace>(),
        ("v1", "ConfigMap") => schema_of::<core::ConfigMap>(),
        ("v1", "Secret") => schema_of::<core::Secret>(),
        ("v1", "Service") => schema_of::<core::Service>(),
        ("v1", "ServiceAccount") => schema_of::<core::ServiceAccount>(),
        ("v1", "PersistentVolumeClaim") => schema_of::<core::PersistentVolumeClaim>(),
        ("v1", "Pod") => schema_of::<core::Pod>(),
        ("apps/v1", "Deployment") => schema_of::<apps::Deployment>(),
        ("apps/v1", "StatefulSet") => schema_of::<apps::StatefulSet>(),
        ("apps/v1", "DaemonSet") => schema_of::<apps::DaemonSet>(),
        ("batch/v1", "Job") => schema_of::<batch::Job>(),
        ("batch/v1", "CronJob") => schema_of::<batch::CronJob>(),
        ("policy/v1", "PodDisruptionBudget") => schema_of::<policy::PodDisruptionBudget>(),
        ("networking.k8s.io/v1", "Ingress") => schema_of::<net::Ingress>(),
        ("networking.k8s.io/v1", "NetworkPolicy") => schema_of::<net::NetworkPolicy>(),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => schema_of::<rbac::ClusterRole>(),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            schema_of::<rbac::ClusterRoleBinding>()
        }
        ("rbac.authorization.k8s.io/v1", "Role") => schema_of::<rbac::Role>(),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => schema_of::<rbac::RoleBinding>(),
        ("storage.k8s.io/v1", "StorageClass") => schema_of::<storage::StorageClass>(),
        _ => return None,
    })
}

/// Kinds defined by the charts the stacks carry (their CRDs come with the chart at the site):
/// checked by the API server against those CRDs when applied, not here.
const CHART_KINDS: &[(&str, &str)] = &[
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("cert-manager.io/v1", "ClusterIssuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("metallb.io/v1beta1", "IPAddressPool"),
    ("metallb.io/v1beta1", "L2Advertisement"),
];

fn schema_errors(schema: &Value, value: &Value) -> Vec<String> {
    let v = jsonschema::validator_for(schema).unwrap();
    v.iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_manifest_matches_the_kubernetes_schema_of_its_kind() {
    let mut checked = 0;
    for dir in stacks() {
        let l = load(&dir);
        for o in &l.objects {
            let (api_version, kind) = (o.reference.api_version.as_str(), o.reference.kind.as_str());
            let Some(schema) = builtin_schema(api_version, kind) else {
                assert!(
                    CHART_KINDS.contains(&(api_version, kind)),
                    "{}: {} ({}) is of a kind neither built in nor brought by a chart",
                    dir.display(),
                    o.reference,
                    o.source
                );
                continue;
            };
            let errors = schema_errors(&schema, &o.value);
            assert!(
                errors.is_empty(),
                "{}: {} ({}): {errors:#?}",
                dir.display(),
                o.reference,
                o.source
            );
            checked += 1;
        }
    }
    assert!(checked >= 35, "only {checked} objects checked");
}

#[test]
fn the_schema_check_catches_a_misspelt_field_and_a_wrong_type() {
    let schema = builtin_schema("apps/v1", "Deployment").unwrap();
    let good: Value = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "a"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
    assert_eq!(schema_errors(&schema, &good), Vec::<String>::new());
    let mut bad = good.clone();
    bad["spec"]["replica"] = 2.into();
    bad["spec"]["template"]["spec"]["containers"][0]["ports"] =
        serde_json::json!([{"containerPort": "http"}]);
    let errors = schema_errors(&schema, &bad).join("\n");
    assert!(errors.contains("replica"), "{errors}");
    assert!(errors.contains("containerPort"), "{errors}");
}

/// A Secret generated (or copied) at apply time as rininstall creates it: its generated keys with
/// values, or the keys of the Secret it copies (from the same stack). None for other objects.
fn as_generated(o: &Object, all: &[Object]) -> Option<Value> {
    let filled = |o: &Object| -> Option<Value> {
        let Some(objects::Generated::Keys(keys)) = o.generated() else {
            return None;
        };
        let mut v = o.value.clone();
        let mut data = v["stringData"].as_object().cloned().unwrap_or_default();
        for k in keys {
            data.insert(k, Value::String("x".repeat(objects::GENERATED_LENGTH)));
        }
        v["stringData"] = Value::Object(data);
        Some(v)
    };
    match o.generated()? {
        objects::Generated::Keys(_) => filled(o),
        objects::Generated::CopyFrom { namespace, name } => {
            let source = all.iter().find(|s| {
                s.reference.kind == "Secret"
                    && s.reference.namespace == namespace
                    && s.reference.name == name
            })?;
            let source = filled(source).unwrap_or_else(|| source.value.clone());
            let mut v = o.value.clone();
            v["data"] = source["data"].clone();
            v["stringData"] = source["stringData"].clone();
            Some(v)
        }
    }
}

/// The pod a workload makes, from its template (None for other kinds): what Pod Security
/// admission judges. A StatefulSet's claim templates become the volumes its pods get.
fn pod_of(o: &Object) -> Option<Value> {
    // A Pod of the stack is dry-run as itself.
    let template = objects::pod_template(&o.reference.kind).filter(|t| !t.is_empty())?;
    let template = o.value.pointer(template)?;
    let mut spec = template["spec"].clone();
    for t in o.value["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = t["metadata"]["name"].clone();
        let mut volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        volumes
            .push(serde_json::json!({"name": name, "persistentVolumeClaim": {"claimName": name}}));
        spec["volumes"] = Value::Array(volumes);
    }
    Some(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": format!("{}-", o.reference.name),
                     "labels": template["metadata"]["labels"].clone()},
        "spec": spec,
    }))
}

/// Every stack as a real API server takes it (`rin_tests::k8s`, built from upstream source):
/// its Namespaces, ServiceAccounts and PriorityClasses applied (what the others lean on), every
/// other object of a kind the server serves applied as a server-side dry run (schema, defaults,
/// validation, admission), and a pod of each workload's template created as a dry run in its
/// namespace, which Pod Security admission judges by the namespace's labels. Kinds that the
/// stacks' charts bring are not served (the charts and their CRDs are fetched at build time, not
/// carried here): they are listed, and the test fails if a built-in kind is among them.
#[test]
fn every_stack_is_accepted_by_a_real_api_server_and_its_pods_admitted() {
    use rin_tests::k8s;
    let cp = k8s::shared();
    let _watch = cp.watch();
    let mut refused = Vec::new();
    let mut unserved = std::collections::BTreeSet::new();
    let (mut total, mut accepted, mut skipped, mut pods) = (0, 0, 0, 0);
    // A server-side dry run of `value`: an apply at `path` (PATCH), or a create in the
    // collection `path` (POST): the status code and the answer.
    let dry_run = |method: &str, path: &str, value: &Value| {
        cp.raw(
            method,
            &format!("{path}?fieldManager=rininstall&dryRun=All"),
            Some(value),
        )
        .unwrap()
    };
    let path = |o: &Object| {
        cp.path_of(
            &o.reference.api_version,
            &o.reference.kind,
            &o.reference.namespace,
            &o.reference.name,
        )
    };
    for dir in stacks() {
        let l = load(&dir);
        let stack = dir.file_name().unwrap().to_string_lossy().to_string();
        let first = |o: &&Object| {
            matches!(
                o.reference.kind.as_str(),
                "Namespace" | "ServiceAccount" | "PriorityClass"
            )
        };
        for o in l.objects.iter().filter(first) {
            cp.apply_as(&path(o).unwrap(), &o.value, "rininstall");
        }
        let namespaces: std::collections::BTreeSet<&str> = l
            .objects
            .iter()
            .map(|o| o.reference.namespace.as_str())
            .filter(|n| !n.is_empty())
            .collect();
        for ns in &namespaces {
            // A namespace the stack does not define is a chart's, made when its release installs.
            let defined = l
                .objects
                .iter()
                .any(|o| o.reference.kind == "Namespace" && o.reference.name == *ns);
            if !defined {
                cp.apply_as(
                    &format!("/api/v1/namespaces/{ns}"),
                    &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                    "helm-controller",
                );
            }
            assert!(
                cp.eventually(std::time::Duration::from_secs(60), |cp| cp
                    .get(&format!("/api/v1/namespaces/{ns}/serviceaccounts/default"))
                    .is_some()),
                "{stack}: namespace {ns} got no default service account"
            );
        }
        for o in l.objects.iter().filter(|o| !first(o)) {
            total += 1;
            let Some(p) = path(o) else {
                unserved.insert(format!("{} {}", o.reference.api_version, o.reference.kind));
                skipped += 1;
                continue;
            };
            // A generated or copied Secret is created as rininstall makes it: with its values.
            let (code, answer) = match as_generated(o, &l.objects) {
                Some(value) => dry_run("POST", p.rsplit_once('/').unwrap().0, &value),
                None => dry_run("PATCH", &p, &o.value),
            };
            if code >= 300 {
                refused.push(format!(
                    "{stack}: {} ({}): {code} {}",
                    o.reference, o.source, answer["message"]
                ));
                continue;
            }
            accepted += 1;
            if let Some(pod) = pod_of(o) {
                let pods_path = format!("/api/v1/namespaces/{}/pods", o.reference.namespace);
                let (code, answer) = dry_run("POST", &pods_path, &pod);
                if code >= 300 {
                    refused.push(format!(
                        "{stack}: a pod of {} ({}): {code} {}",
                        o.reference, o.source, answer["message"]
                    ));
                }
                pods += 1;
            }
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    // Kinds that are not served must be the charts' (no built-in group among them).
    let builtin = unserved
        .iter()
        .filter(|k| !k.split_once(' ').unwrap().0.contains('.') || k.contains(".k8s.io/"))
        .collect::<Vec<_>>();
    assert!(builtin.is_empty(), "built-in kinds not served: {builtin:?}");
    eprintln!(
        "{accepted} objects accepted, {pods} pods admitted; kinds of charts' CRDs not checked: {unserved:?}"
    );
    assert_eq!(accepted + skipped, total);
    assert!(
        accepted >= 90 && pods >= 25,
        "{accepted} objects, {pods} pods"
    );

    // The same checks refuse what they should: a misspelt field, and a pod that breaks the
    // restricted profile of its namespace.
    cp.apply(
        "/api/v1/namespaces/stack-check",
        &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "stack-check",
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}),
    );
    let bad = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bad", "namespace": "stack-check"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "bad"}},
            "template": {"metadata": {"labels": {"app": "bad"}},
                "spec": {"containers": [{"name": "bad", "image": "x", "imagePullPolicy": "Always", "restartPolicy": "Never", "portz": []}]}}}});
    let expect_refusal = |(code, answer): (u16, Value), want: u16, says: &str| {
        assert_eq!(code, want, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    };
    // A real API server answers an apply with an unknown field with a 500 naming the field.
    expect_refusal(
        dry_run(
            "PATCH",
            "/apis/apps/v1/namespaces/stack-check/deployments/bad",
            &bad,
        ),
        500,
        ".portz: field not declared in schema",
    );
    let o = objects::parse(
        &serde_yaml_ng::to_string(&bad).unwrap(),
        "bad.yaml",
        Origin::Stack,
    )
    .unwrap()
    .remove(0);
    let mut pod = pod_of(&o).unwrap();
    pod["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k == "name" || k == "image");
    expect_refusal(
        dry_run("POST", "/api/v1/namespaces/stack-check/pods", &pod),
        403,
        "violates PodSecurity \"restricted:latest\"",
    );
}

/// The Raspberry Pi site: examples/vinylvault, built for arm64 from stand-ins under its own
/// names, applied by `rininstall` to a real control plane of four arm64 nodes (one server, three
/// agents), the stack's NFS provisioner stood in for by the harness. Every workload gets healthy:
/// production's three MongoDB members on three different nodes (their anti-affinity), each on a
/// claim of the stack's `nfs-client` class, and the replica-set Job complete.
#[test]
fn the_raspberry_pi_site_runs_vinylvault_on_four_arm64_nodes() {
    use rin_tests::k8s::{ControlPlane, Node};
    use rin_tests::net::FileServer;
    use rin_tests::registry::{Options, Registry};

    let cp = ControlPlane::start(&[
        Node::server("pi-1", "arm64"),
        Node::agent("pi-2", "arm64"),
        Node::agent("pi-3", "arm64"),
        Node::agent("pi-4", "arm64"),
    ]);
    let _watch = cp.watch();
    // What the stack's own provisioner (an NFS mount kwok's nodes cannot make) would do.
    cp.provision_for("vinylvault.local/nfs-subdir");
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    let srv = FileServer::start();
    let dir = t.path().join("vinylvault");
    rin_tests::demo::copy_tree(&repo_root().join("examples/vinylvault"), &dir);
    let l = load(&dir);
    let mirrors = serve_stand_ins(&l.stack, &reg, &srv, &t.path().join("layout"));
    let bundle = t.path().join("vinylvault.tar.zst");
    let mut args = quietly_for(&["arm64"]);
    args.extend(mirrors);
    let (key, _) = build_signed_with(t.path(), &dir, "1700000000", &bundle, &args);
    let (ok, said) = cp.rininstall_apply(
        "rininstall-pi",
        &bundle,
        &key,
        "arm64",
        &reg.addr,
        &t.path().join("root"),
    );
    assert!(ok, "{said}");
    assert!(said.contains("deployed vinylvault 0.9.0: "), "{said}");

    let ns = "vinylvault-production";
    let mongo = cp
        .list(&format!("/apis/apps/v1/namespaces/{ns}/statefulsets"))
        .into_iter()
        .find(|s| s["spec"]["replicas"] == 3)
        .expect("production's MongoDB StatefulSet");
    assert_eq!(mongo["status"]["readyReplicas"], 3, "{mongo}");
    let selector = mongo["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}%3D{}", v.as_str().unwrap()))
        .collect::<Vec<_>>()
        .join(",");
    let pods = cp.list(&format!(
        "/api/v1/namespaces/{ns}/pods?labelSelector={selector}"
    ));
    let mut nodes: Vec<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "three members on three nodes: {nodes:?}");
    let claims = cp.list(&format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"));
    assert_eq!(claims.len(), 3);
    for c in &claims {
        assert_eq!(c["status"]["phase"], "Bound", "{c}");
        assert_eq!(c["spec"]["storageClassName"], "nfs-client");
    }
    let jobs = cp.list(&format!("/apis/batch/v1/namespaces/{ns}/jobs"));
    assert!(
        !jobs.is_empty()
            && jobs
                .iter()
                .all(|j| rin_tests::k8s::condition(j, "Complete") == Some("True")),
        "{jobs:?}"
    );
    // The members are placed on arm64 nodes, where the bundle's images run.
    assert_eq!(
        mongo["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"],
        serde_json::json!([{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}])
    );
}
