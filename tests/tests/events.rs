//! `--progress json` of both binaries against the one documented schema (docs/EVENTS.md,
//! docs/events.schema.json): the real output of a build that downloads, a seed and an apply,
//! every stderr line an event the schema accepts.
#![allow(clippy::unwrap_used)]

use rin_tests::fixture;
use rin_tests::registry::{Options, Registry};
use rin_tests::{bin, build_command, repo_root, text};
use std::collections::BTreeSet;
use std::process::{Command, Output};

/// Every stderr line of a successful run is an event the schema accepts: the kinds seen, with
/// a pass's name as `pass:NAME` and a numbered step as `step:N/OF`.
fn validated_kinds(out: &Output, what: &str) -> BTreeSet<String> {
    assert!(out.status.success(), "{what}: {}", text(out));
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("docs/events.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut kinds = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{what}: not a JSON line ({e}): {line}"));
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{what}: {line}: {errors:?}");
        let kind = v["event"].as_str().unwrap().to_string();
        kinds.insert(match kind.as_str() {
            "pass" => format!("pass:{}", v["name"].as_str().unwrap()),
            "step" if v.get("n").is_some() => format!("step:{}/{}", v["n"], v["of"]),
            _ => kind,
        });
    }
    kinds
}

#[test]
fn build_seed_and_apply_write_the_documented_events() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());
    // The fixture stack, plus one image pulled from a registry so the build downloads.
    let app = reg.push_small_app(t.path(), false);
    let stack = fixture::write_stack(&t.path().join("stack")).unwrap();
    let spec = stack.join("bundle.yaml");
    let yaml = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("images:\n", &format!("images:\n  - reference: {app}\n"));
    std::fs::write(&spec, yaml).unwrap();
    let o = Command::new(bin("rinbundle"))
        .args(["keygen", "--out"])
        .arg(t.path().join("k"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let bundle = t.path().join("b.tar.zst");
    let out = build_command(
        t.path(),
        &stack,
        "1700000000",
        &bundle,
        &[
            "--progress".into(),
            "json".into(),
            "--allow-missing-image".into(),
        ],
    )
    .output()
    .unwrap();
    let kinds = validated_kinds(&out, "build");
    for want in [
        "step:1/3",
        "step:2/3",
        "step:3/3",
        "start",
        "progress",
        "done",
        "pass:write",
        "pass_done",
    ] {
        assert!(kinds.contains(want), "build: no {want} in {kinds:?}");
    }

    let key = t.path().join("k.pub");
    let site = Registry::start(Options::default());
    let out = Command::new(bin("rininstall"))
        .arg("seed")
        .arg(&bundle)
        .arg("--key")
        .arg(&key)
        .args(["--registry", &site.addr, "--progress", "json"])
        .output()
        .unwrap();
    let kinds = validated_kinds(&out, "seed");
    for want in ["pass:verify", "progress", "pass_done"] {
        assert!(kinds.contains(want), "seed: no {want} in {kinds:?}");
    }
    // Again with --json: one JSON object on stdout; the registry holds everything now.
    let out = Command::new(bin("rininstall"))
        .arg("seed")
        .arg(&bundle)
        .arg("--key")
        .arg(&key)
        .args(["--registry", &site.addr, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["registry"], site.addr.as_str());
    assert_eq!(v["from_index_alone"], true, "{v}");
    assert_eq!(v["seeded"]["uploaded"], 0, "{v}");

    let out = rin_tests::apply_at_root(
        &bundle,
        &key,
        &t.path().join("node"),
        &["--registry", &site.addr, "--progress", "json", "--json"],
    )
    .output()
    .unwrap();
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("apply --json: {e}: {}", text(&out)));
    assert_eq!(result["recorded"]["stack"], "demo", "{result}");
    assert!(result["deployed"].is_null(), "{result}");
    assert!(
        result["written"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().ends_with("usr/local/bin/k3s")),
        "{result}"
    );
    let kinds = validated_kinds(&out, "apply");
    for want in [
        "step:1/7",
        "step:7/7",
        "pass:verify",
        "progress",
        "pass_done",
        "note",
    ] {
        assert!(kinds.contains(want), "apply: no {want} in {kinds:?}");
    }
}
