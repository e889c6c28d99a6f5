//! The stacks the project carries (the Rin stack in `manifests/`, every stack under `examples/`)
//! checked as a site would need them: `bundle.yaml` loads, every manifest parses into objects
//! that can be applied (no duplicates), every image the manifests use is in the stack's image
//! list, nothing points at a URL outside the cluster, and the pods of namespaces labelled
//! Pod Security `restricted` meet that profile.
#![allow(clippy::unwrap_used)]

use rin_installer::objects::{self, Object, Origin};
use rin_tests::repo_root;
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

#[test]
fn every_image_the_manifests_use_is_in_the_stack() {
    let norm = |r: &str| {
        let p = rin_builder::registry::parse_reference(r).unwrap();
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
            rin_builder::scan::yaml_images(text, file, &mut uses);
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

#[test]
fn nothing_points_outside_the_cluster() {
    for dir in stacks() {
        let l = load(&dir);
        for o in &l.objects {
            let mut all = Vec::new();
            strings(&o.value, &mut all);
            for s in all {
                for (i, _) in s.match_indices("://") {
                    let rest = &s[i + 3..];
                    let host = rest
                        .split(|c: char| c == '/' || c == ':' || c.is_whitespace())
                        .next()
                        .unwrap_or("");
                    let inside = host.ends_with(".svc")
                        || host.ends_with(".svc.cluster.local")
                        || host == "localhost"
                        || host.starts_with("127.")
                        || host.starts_with("%{");
                    assert!(
                        inside,
                        "{}: {} ({}) points at {host}, outside the cluster: {s}",
                        dir.display(),
                        o.reference,
                        o.source
                    );
                }
            }
        }
    }
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
            let pod = match o.reference.kind.as_str() {
                "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
                    &o.value["spec"]["template"]["spec"]
                }
                "CronJob" => &o.value["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                "Pod" => &o.value["spec"],
                _ => continue,
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
        "Namespace/rin-system",
        "Namespace/rin-data",
        "Namespace/rin-monitoring",
        "Deployment.apps rin-system/rin-api",
        "Deployment.apps rin-system/rin-worker",
        "Deployment.apps rin-system/rin-score-worker",
        "StatefulSet.apps rin-data/nats",
        "Cluster.postgresql.cnpg.io rin-data/rin-db",
        "ClusterIssuer.cert-manager.io/rin-internal-ca",
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
    assert_eq!(charts, ["cert-manager", "cloudnative-pg"]);
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
    assert_eq!(l.stack.spec.images.len(), 12);
}
