//! The site registry: by default CNCF Distribution (`registry:2`, carried in the bundle) run in
//! the cluster. No registry is needed to start it: its image is written as an OCI archive into
//! K3s's images directory, which K3s imports at start; the Namespace, PersistentVolumeClaim,
//! Deployment and NodePort Service that run it are written for the cluster step (and applied
//! with K3s's own kubectl when K3s is started here). Every node's containerd reaches it at
//! `http://127.0.0.1:NODEPORT` (kube-proxy serves NodePorts on each node's loopback).

use crate::error::{InstallError, Result};
use crate::node::seed::Plan;
use rin_bundle::Arch;
use rin_bundle::index::{Image, ImagePlatform, Index};
use rin_bundle::oci;
use serde_json::json;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The NodePort the in-cluster registry listens on (every node, loopback included).
pub const DEFAULT_NODE_PORT: u16 = 31555;
/// The namespace it runs in.
pub const NAMESPACE: &str = "rin-registry";

/// The image the site registry runs: `--registry-image`, or else the bundle's
/// `docker.io/library/registry` image.
pub fn pick_image<'a>(index: &'a Index, wanted: Option<&str>) -> Result<&'a Image> {
    let normal = |r: &str| -> Option<(String, String)> {
        let r: oci_client::Reference = r.parse().ok()?;
        Some((r.registry().to_string(), r.repository().to_string()))
    };
    let found = match wanted {
        Some(w) => {
            let w = w.parse::<oci_client::Reference>().ok().map(|r| r.whole());
            index.images.iter().find(|i| {
                i.reference
                    .parse::<oci_client::Reference>()
                    .ok()
                    .map(|r| r.whole())
                    == w
            })
        }
        None => index.images.iter().find(|i| {
            normal(&i.reference) == Some(("docker.io".into(), "library/registry".into()))
        }),
    };
    found.ok_or_else(|| InstallError::Step {
        what: "the site registry".into(),
        reason: match wanted {
            Some(w) => format!("the bundle carries no image {w} (--registry-image)"),
            None => "the bundle carries no registry image (docker.io/library/registry:2.x) to run the site registry".into(),
        },
    })
}

/// The image manifest of `image` for `linux/<arch>` (a variant the architecture defaults to
/// matches: `linux/arm64/v8` for arm64).
pub fn platform_manifest<'a>(image: &'a Image, arch: &Arch) -> Option<&'a ImagePlatform> {
    let want = arch.linux();
    image.platforms.iter().find(|p| p.platform.matches(&want))
}

/// The manifest digest the archive at `path` holds, if it is one of ours and readable.
pub fn archive_holds(path: &Path) -> Option<String> {
    let f = File::open(path).ok()?;
    let mut a = tar::Archive::new(f);
    for e in a.entries().ok()? {
        let mut e = e.ok()?;
        if e.path().ok()?.as_os_str() == "index.json" {
            let mut s = String::new();
            e.read_to_string(&mut s).ok()?;
            let v: serde_json::Value = serde_json::from_str(&s).ok()?;
            return v["manifests"][0]["digest"].as_str().map(str::to_string);
        }
    }
    None
}

/// Bundle paths of the blobs (manifest, config, layers) of the manifest `digest`.
pub fn archive_paths(plan: &Plan, digest: &str) -> Result<Vec<String>> {
    let blobs = plan
        .manifest_blobs(digest)
        .ok_or_else(|| InstallError::Bundle {
            reason: format!("the registry image's manifest {digest} is not in the bundle"),
        })?;
    Ok(std::iter::once(digest.to_string())
        .chain(blobs.into_iter().map(|d| d.digest))
        .filter_map(|d| oci::bundle_blob_path(&d))
        .collect())
}

/// Write an OCI image archive (`oci-layout`, `index.json`, `blobs/`) of the manifest `digest`
/// named `reference`, reading the blobs from `staged` (bundle paths under it), to `out`.
/// Deterministic: the same image gives the same bytes.
pub fn write_archive(
    plan: &Plan,
    digest: &str,
    reference: &str,
    arch: &Arch,
    staged: &Path,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let (bytes, media_type) = plan.document(digest).ok_or_else(|| InstallError::Bundle {
        reason: format!("the registry image's manifest {digest} is not in the bundle"),
    })?;
    let name = reference
        .parse::<oci_client::Reference>()
        .map(|r| r.whole())
        .unwrap_or_else(|_| reference.to_string());
    let tag = name.rsplit_once(':').map(|(_, t)| t.to_string());
    let mut annotations = json!({ oci::ANNOTATION_CONTAINERD_NAME: name });
    if let Some(t) = tag.filter(|t| !t.contains('/')) {
        annotations[oci::ANNOTATION_REF_NAME] = json!(t);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": oci::MT_OCI_INDEX,
        "manifests": [{
            "mediaType": media_type,
            "digest": digest,
            "size": bytes.len(),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": annotations,
        }],
    });
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    let io = |source| InstallError::Io {
        path: staged.to_path_buf(),
        source,
    };
    let add = |b: &mut tar::Builder<&mut dyn std::io::Write>,
               path: &str,
               size: u64,
               data: &mut dyn Read|
     -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).map_err(io)
    };
    let layout = oci::LAYOUT_FILE.as_bytes();
    add(&mut b, "oci-layout", layout.len() as u64, &mut &layout[..])?;
    let index = serde_json::to_vec(&index).expect("an index serialises");
    add(&mut b, "index.json", index.len() as u64, &mut &index[..])?;
    for path in archive_paths(plan, digest)? {
        let src = staged.join(&path);
        let f = File::open(&src).map_err(|source| InstallError::Io {
            path: src.clone(),
            source,
        })?;
        let len = f
            .metadata()
            .map_err(|source| InstallError::Io {
                path: src.clone(),
                source,
            })?
            .len();
        let inner = path.strip_prefix("oci/").unwrap_or(&path);
        add(&mut b, inner, len, &mut std::io::BufReader::new(f))?;
    }
    b.into_inner().map_err(io)?;
    Ok(())
}

/// The Kubernetes objects that run the site registry: a Namespace, a PersistentVolumeClaim
/// (K3s's default local-path storage) of `storage_gib`, a one-replica Deployment of `image`
/// (imported from the images directory: never pulled) and a NodePort Service.
pub fn manifests_yaml(image: &str, node_port: u16, storage_gib: u64) -> String {
    format!(
        r#"# The site registry (CNCF Distribution), written by rininstall; applied by the cluster step.
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    pod-security.kubernetes.io/enforce: baseline
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: site-registry-data
  namespace: {NAMESPACE}
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: {storage_gib}Gi
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: site-registry
  namespace: {NAMESPACE}
  labels:
    app.kubernetes.io/name: site-registry
    app.kubernetes.io/managed-by: rininstall
spec:
  replicas: 1
  strategy:
    type: Recreate
  selector:
    matchLabels:
      app.kubernetes.io/name: site-registry
  template:
    metadata:
      labels:
        app.kubernetes.io/name: site-registry
    spec:
      containers:
        - name: registry
          image: {image}
          imagePullPolicy: IfNotPresent
          ports:
            - containerPort: 5000
          env:
            - name: REGISTRY_STORAGE_DELETE_ENABLED
              value: "true"
          readinessProbe:
            httpGet:
              path: /v2/
              port: 5000
          volumeMounts:
            - name: data
              mountPath: /var/lib/registry
      volumes:
        - name: data
          persistentVolumeClaim:
            claimName: site-registry-data
---
apiVersion: v1
kind: Service
metadata:
  name: site-registry
  namespace: {NAMESPACE}
spec:
  type: NodePort
  selector:
    app.kubernetes.io/name: site-registry
  ports:
    - port: 5000
      targetPort: 5000
      nodePort: {node_port}
"#
    )
}

/// Storage to ask for: twice the bundle's blobs (room for one upgrade beside the release in
/// use), at least 10 GiB.
pub fn storage_gib(blob_bytes: u64) -> u64 {
    (blob_bytes.saturating_mul(2).div_ceil(1 << 30)).max(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_s_manifest_is_found_under_its_architecture_s_default_variant() {
        // Docker Hub lists registry:2's arm64 image as linux/arm64/v8.
        let image = Image {
            reference: "docker.io/library/registry:2.8.3".into(),
            digest: "sha256:i".into(),
            media_type: rin_bundle::oci::MT_OCI_INDEX.into(),
            upstream_digest: None,
            platforms: [
                ("linux/amd64", "sha256:a"),
                ("linux/arm64/v8", "sha256:b"),
                ("linux/arm/v6", "sha256:c"),
            ]
            .iter()
            .map(|(p, d)| ImagePlatform {
                platform: p.parse().unwrap(),
                digest: d.to_string(),
                size: 1,
            })
            .collect(),
        };
        let digest = |arch: &str| {
            platform_manifest(&image, &arch.parse().unwrap()).map(|p| p.digest.clone())
        };
        assert_eq!(digest("arm64").as_deref(), Some("sha256:b"));
        assert_eq!(digest("amd64").as_deref(), Some("sha256:a"));
        // arm means arm/v7: a v6-only image is not taken for it.
        assert_eq!(digest("arm"), None);
    }

    #[test]
    fn storage_is_twice_the_blobs_and_at_least_ten_gib() {
        assert_eq!(storage_gib(0), 10);
        assert_eq!(storage_gib(6 << 30), 12);
        assert_eq!(storage_gib((6 << 30) + 1), 13);
    }

    #[test]
    fn the_manifests_parse_as_four_objects_with_the_port_and_image() {
        let y = manifests_yaml("docker.io/library/registry:2.8.3", 31555, 12);
        let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&y)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "PersistentVolumeClaim",
                "Deployment",
                "Service"
            ]
        );
        assert_eq!(docs[3]["spec"]["ports"][0]["nodePort"], 31555);
        assert_eq!(
            docs[2]["spec"]["template"]["spec"]["containers"][0]["image"],
            "docker.io/library/registry:2.8.3"
        );
        assert_eq!(docs[1]["spec"]["resources"]["requests"]["storage"], "12Gi");
    }
}
