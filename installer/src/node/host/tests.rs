//! Unit tests of `host`.

use super::*;

fn index(refs: &[&str]) -> Index {
    let mut i: Index = serde_json::from_value(serde_json::json!({
        "format": "rinbundle/v1", "stack": {"name": "s", "version": "1.0.0"},
        "created": "2026-11-22T10:00:00Z", "platforms": ["linux/amd64"],
        "images": [], "charts": [], "entries": []
    }))
    .unwrap();
    for r in refs {
        i.images.push(rin_bundle::index::Image {
            reference: r.to_string(),
            digest: format!("sha256:{}", "a".repeat(64)),
            media_type: rin_bundle::oci::MT_OCI_MANIFEST.into(),
            upstream_digest: None,
            platforms: vec![],
        });
    }
    i
}

fn in_cluster() -> SiteRegistry {
    SiteRegistry {
        host: "127.0.0.1:31555".into(),
        plain_http: true,
        auth: None,
        ca_pem: None,
    }
}

#[test]
fn registries_yaml_mirrors_every_source_registry_to_the_in_cluster_registry() {
    let i = index(&[
        "busybox:1.36",
        "ghcr.io/org/app:2",
        "docker.io/library/registry:2.8.3",
        "registry.example:5000/team/tool@sha256:",
    ]);
    // The last reference does not parse: a clear error, not a silent skip.
    assert!(registries_yaml(&i, &in_cluster()).is_err());
    let i = index(&[
        "busybox:1.36",
        "ghcr.io/org/app:2",
        "docker.io/library/registry:2.8.3",
        "registry.example:5000/team/tool:1",
    ]);
    assert_eq!(
        registries_yaml(&i, &in_cluster()).unwrap(),
        "\
# Written by rininstall at every apply; local changes are replaced.
mirrors:
  docker.io:
    endpoint:
    - http://127.0.0.1:31555
  ghcr.io:
    endpoint:
    - http://127.0.0.1:31555
  registry.example:5000:
    endpoint:
    - http://127.0.0.1:31555
"
    );
}

#[test]
fn registries_yaml_for_an_existing_registry_carries_its_ca_and_credentials() {
    let site = SiteRegistry {
        host: "harbor.site:443".into(),
        plain_http: false,
        auth: Some(("robot$rin".into(), "p: w#d".into())),
        ca_pem: Some(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
    };
    assert_eq!(
        registries_yaml(&index(&["quay.io/x/y:1"]), &site).unwrap(),
        "\
# Written by rininstall at every apply; local changes are replaced.
mirrors:
  quay.io:
    endpoint:
    - https://harbor.site:443
configs:
  harbor.site:443:
    auth:
      username: robot$rin
      password: 'p: w#d'
    tls:
      ca_file: /etc/rancher/k3s/rin-registry-ca.pem
"
    );
}

const TOP: &str = "# Written by rininstall at every apply; local changes are replaced.\n# Settings of your own go in config.yaml.d/*.yaml, which K3s merges after this file.\n";

#[test]
fn config_yaml_per_role() {
    let k3s = |v: &str| K3s {
        version: v.into(),
        disable: vec![],
    };
    let with_lb = K3s {
        version: "v1.31.4+k3s1".into(),
        disable: vec!["servicelb".into()],
    };
    let first = config_yaml(
        &Role::Server { cluster_init: true },
        Some(&with_lb),
        &["10.0.0.10".into(), "k3s.site".into()],
    );
    assert_eq!(
        first,
        format!(
            "{TOP}cluster-init: true\ntls-san:\n- 10.0.0.10\n- k3s.site\nwrite-kubeconfig-mode: '0600'\ndisable-default-registry-endpoint: true\ndisable:\n- servicelb\n"
        )
    );
    let single = config_yaml(
        &Role::Server {
            cluster_init: false,
        },
        None,
        &[],
    );
    assert_eq!(single, format!("{TOP}write-kubeconfig-mode: '0600'\n"));
    let join = config_yaml(
        &Role::JoinServer {
            url: "https://10.0.0.10:6443".into(),
            token_file: "/etc/rin/token".into(),
        },
        Some(&k3s("v1.28.5+k3s1")),
        &[],
    );
    assert_eq!(
        join,
        format!(
            "{TOP}server: https://10.0.0.10:6443\ntoken-file: /etc/rin/token\nwrite-kubeconfig-mode: '0600'\n"
        )
    );
    let agent = config_yaml(
        &Role::Agent {
            url: "https://10.0.0.10:6443".into(),
            token_file: "/etc/rin/token".into(),
        },
        Some(&with_lb),
        &["ignored.for.agents".into()],
    );
    assert_eq!(
        agent,
        format!(
            "{TOP}server: https://10.0.0.10:6443\ntoken-file: /etc/rin/token\ndisable-default-registry-endpoint: true\n"
        )
    );
}

#[test]
fn the_default_endpoint_switch_follows_the_releases_that_have_it() {
    for (v, has) in [
        ("v1.25.16+k3s4", false),
        ("v1.26.12+k3s1", false),
        ("v1.26.13+k3s1", true),
        ("v1.27.9+k3s1", false),
        ("v1.28.6+k3s2", true),
        ("v1.29.0+k3s1", true),
        ("v1.31.4+k3s1", true),
        ("not a version", false),
    ] {
        assert_eq!(has_default_endpoint_switch(v), has, "{v}");
    }
}

#[test]
fn host_files_are_written_only_when_they_differ() {
    let t = tempfile::tempdir().unwrap();
    let f = HostFile {
        dest: "etc/x.yaml".into(),
        mode: 0o600,
        size: 3,
        content: Content::Bytes(b"abc".to_vec()),
    };
    assert_eq!(change(t.path(), &f).unwrap(), Change::Create);
    install(t.path(), &f).unwrap();
    assert_eq!(change(t.path(), &f).unwrap(), Change::Unchanged);
    // Same size, other bytes; then the right bytes with another mode.
    fs::write(t.path().join("etc/x.yaml"), b"abd").unwrap();
    assert_eq!(change(t.path(), &f).unwrap(), Change::Replace);
    install(t.path(), &f).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        t.path().join("etc/x.yaml"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert_eq!(change(t.path(), &f).unwrap(), Change::Replace);
}

#[test]
fn a_staged_file_that_changed_after_verification_is_not_installed() {
    let t = tempfile::tempdir().unwrap();
    let staged = t.path().join("staged");
    fs::write(&staged, b"tampered").unwrap();
    let f = HostFile {
        dest: "usr/local/bin/k3s".into(),
        mode: 0o755,
        size: 8,
        content: Content::Staged {
            path: staged,
            sha256: sha256_hex(b"original"),
        },
    };
    let e = install(t.path(), &f).unwrap_err().to_string();
    assert!(e.contains("changed since it was verified"), "{e}");
    assert!(!t.path().join("usr/local/bin/k3s").exists());
    assert!(!rin_support::fs::partial_path(&t.path().join("usr/local/bin/k3s")).exists());
}
