//! Sites of several nodes, on a real control plane of their own (`rin_tests::k8s`): the Rin
//! topology, three servers and two agents of another architecture, with a DaemonSet on every node
//! a bundle's images can run on, and each pod only on nodes of an architecture its images are
//! carried for. (The Raspberry Pi site, examples/vinylvault on four arm64 nodes, is in
//! `stacks.rs`, which builds the stacks.)
#![allow(clippy::unwrap_used)]

use rin_tests::build_signed;
use rin_tests::fixture;
use rin_tests::k8s::{ControlPlane, Node};
use rin_tests::registry::{Options, Registry};

/// Build the test stack `name` for `platforms` with a DaemonSet and a four-replica Deployment,
/// and apply it to `cp` as the first server (amd64) would.
fn deploy(cp: &ControlPlane, t: &std::path::Path, reg: &Registry, name: &str, platforms: &str) {
    let stack = fixture::write_named_stack(&t.join(name), name, &[]).unwrap();
    let spec = std::fs::read_to_string(stack.join("bundle.yaml")).unwrap();
    std::fs::write(
        stack.join("bundle.yaml"),
        spec.replace(
            "platforms: [amd64, arm64]",
            &format!("platforms: [{platforms}]"),
        ),
    )
    .unwrap();
    std::fs::write(
        stack.join("manifests/app/site.yaml"),
        format!("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: node-agent, namespace: {name}}}\nspec:\n  selector: {{matchLabels: {{app: node-agent}}}}\n  template:\n    metadata: {{labels: {{app: node-agent}}}}\n    spec: {{containers: [{{name: a, image: registry.example/demo/worker:1.0}}]}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: tool, namespace: {name}}}\nspec:\n  replicas: 4\n  selector: {{matchLabels: {{app: tool}}}}\n  template:\n    metadata: {{labels: {{app: tool}}}}\n    spec: {{containers: [{{name: t, image: registry.example/demo/worker:1.0}}]}}\n"),
    )
    .unwrap();
    let b = t.join(format!("{name}.tar.zst"));
    let (key, _) = build_signed(t, &stack, "1700000000", &b);
    let (ok, said) = cp.rininstall_apply(
        &format!("rininstall-{name}"),
        &b,
        &key,
        "amd64",
        &reg.addr,
        &t.join(format!("root-{name}")),
    );
    assert!(ok, "{said}");
    assert!(said.contains(&format!("deployed {name} 1.0.0")), "{said}");
}

/// The nodes the pods of `app` in `ns` run on, sorted.
fn nodes_of(cp: &ControlPlane, ns: &str, app: &str) -> Vec<String> {
    let mut nodes: Vec<String> = cp
        .list(&format!(
            "/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{app}"
        ))
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn daemonsets_reach_every_node_and_pods_only_nodes_their_images_run_on() {
    // Three amd64 servers (embedded etcd HA) and two arm64 agents.
    let cp = ControlPlane::start(&[
        Node::server("server-0", "amd64"),
        Node::server("server-1", "amd64"),
        Node::server("server-2", "amd64"),
        Node::agent("agent-0", "arm64"),
        Node::agent("agent-1", "arm64"),
    ]);
    let _watch = cp.watch();
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(Options::default());

    // A bundle for both architectures: the DaemonSet has a pod on each of the 5 nodes.
    deploy(&cp, t.path(), &reg, "both", "amd64, arm64");
    let ds = cp
        .get("/apis/apps/v1/namespaces/both/daemonsets/node-agent")
        .unwrap();
    assert_eq!(ds["status"]["desiredNumberScheduled"], 5, "{ds}");
    assert_eq!(ds["status"]["numberReady"], 5, "{ds}");
    assert_eq!(
        nodes_of(&cp, "both", "node-agent"),
        ["agent-0", "agent-1", "server-0", "server-1", "server-2"]
    );

    // A bundle for amd64 only on the same site: its images cannot run on the arm64 agents, so
    // its DaemonSet covers the 3 servers and its Deployment's 4 pods are all on servers.
    deploy(&cp, t.path(), &reg, "amd", "amd64");
    let ds = cp
        .get("/apis/apps/v1/namespaces/amd/daemonsets/node-agent")
        .unwrap();
    assert_eq!(ds["status"]["desiredNumberScheduled"], 3, "{ds}");
    assert_eq!(ds["status"]["numberReady"], 3, "{ds}");
    assert_eq!(
        nodes_of(&cp, "amd", "node-agent"),
        ["server-0", "server-1", "server-2"]
    );
    let tool = nodes_of(&cp, "amd", "tool");
    assert_eq!(tool.len(), 4);
    assert!(tool.iter().all(|n| n.starts_with("server-")), "{tool:?}");
    let d = cp
        .get("/apis/apps/v1/namespaces/amd/deployments/tool")
        .unwrap();
    assert_eq!(d["status"]["readyReplicas"], 4, "{d}");
    assert_eq!(
        d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"],
        serde_json::json!([{"matchExpressions": [
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}])
    );
}
