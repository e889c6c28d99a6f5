//! Fixture images and stacks, made from nothing but the code below: small multi-arch OCI image
//! layouts with real gzip'd tar layers (a base layer shared by every platform and image, plus a
//! per-platform layer), image configs, manifests and an image index.

use flate2::Compression;
use flate2::write::GzEncoder;
use rin_bundle::digest::sha256_hex;
use rin_bundle::oci;
use serde_json::json;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A file inside an image layer.
#[derive(Debug, Clone)]
pub struct LayerFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

impl LayerFile {
    pub fn new(path: &str, content: impl Into<Vec<u8>>) -> Self {
        LayerFile {
            path: path.into(),
            content: content.into(),
            mode: 0o644,
        }
    }
}

/// A multi-arch image to write into a layout.
#[derive(Debug, Clone)]
pub struct FixtureImage {
    /// Name in the layout's index.json (`org.opencontainers.image.ref.name`).
    pub name: String,
    pub arches: Vec<String>,
    /// Files of the base layer, shared by every platform.
    pub base: Vec<LayerFile>,
    /// Files of the per-platform layer; `{arch}` in content is replaced by the architecture.
    pub per_arch: Vec<LayerFile>,
    pub cmd: Vec<String>,
}

impl FixtureImage {
    pub fn small(name: &str, arches: &[&str]) -> Self {
        FixtureImage {
            name: name.into(),
            arches: arches.iter().map(|s| s.to_string()).collect(),
            base: vec![
                LayerFile::new("etc/os-release", "NAME=rin-fixture\n"),
                LayerFile::new("usr/share/base.txt", vec![b'b'; 3000]),
            ],
            per_arch: vec![LayerFile::new(
                "app/arch.txt",
                format!("built for {{arch}} by {name}\n"),
            )],
            cmd: vec!["/bin/sh".into()],
        }
    }
}

/// A deterministic gzip'd tar layer: (gzip bytes, diff_id hex).
pub fn layer(files: &[LayerFile]) -> (Vec<u8>, String) {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        b.mode(tar::HeaderMode::Deterministic);
        let mut files = files.to_vec();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for f in &files {
            let mut h = tar::Header::new_ustar();
            h.set_size(f.content.len() as u64);
            h.set_mode(f.mode);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, &f.path, &f.content[..])
                .expect("in-memory tar");
        }
        b.finish().expect("in-memory tar");
    }
    let diff_id = sha256_hex(&tar_bytes);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&tar_bytes).expect("in-memory gzip");
    (gz.finish().expect("in-memory gzip"), diff_id)
}

/// An OCI image layout being written.
pub struct LayoutWriter {
    pub root: PathBuf,
    manifests: Vec<serde_json::Value>,
}

impl LayoutWriter {
    pub fn new(root: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::write(root.join("oci-layout"), oci::LAYOUT_FILE)?;
        Ok(LayoutWriter {
            root: root.to_path_buf(),
            manifests: Vec::new(),
        })
    }

    /// Store a blob; returns its descriptor fields (digest, size).
    pub fn blob(&self, bytes: &[u8]) -> std::io::Result<(String, u64)> {
        let hex = sha256_hex(bytes);
        fs::write(self.root.join("blobs/sha256").join(&hex), bytes)?;
        Ok((format!("sha256:{hex}"), bytes.len() as u64))
    }

    /// Write one platform's image; returns the manifest descriptor.
    pub fn platform_image(
        &self,
        img: &FixtureImage,
        arch: &str,
        base: &(Vec<u8>, String),
    ) -> std::io::Result<serde_json::Value> {
        let files: Vec<LayerFile> = img
            .per_arch
            .iter()
            .map(|f| LayerFile {
                // Text files get the architecture; binary content is kept as it is.
                content: match std::str::from_utf8(&f.content) {
                    Ok(text) => text.replace("{arch}", arch).into_bytes(),
                    Err(_) => f.content.clone(),
                },
                ..f.clone()
            })
            .collect();
        let arch_layer = layer(&files);
        let (bd, bs) = self.blob(&base.0)?;
        let (ad, as_) = self.blob(&arch_layer.0)?;
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": img.cmd, "Env": ["PATH=/bin:/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", base.1), format!("sha256:{}", arch_layer.1)]},
        }))
        .expect("json");
        let (cd, cs) = self.blob(&config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": oci::MT_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": bd, "size": bs},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ad, "size": as_},
            ],
        }))
        .expect("json");
        let (md, ms) = self.blob(&manifest)?;
        Ok(
            json!({"mediaType": oci::MT_OCI_MANIFEST, "digest": md, "size": ms, "platform": {"architecture": arch, "os": "linux"}}),
        )
    }

    /// Write a multi-arch image (index + one manifest per arch) and name it in index.json.
    pub fn image(&mut self, img: &FixtureImage) -> std::io::Result<String> {
        let base = layer(&img.base);
        let mut children = Vec::new();
        for arch in &img.arches {
            children.push(self.platform_image(img, arch, &base)?);
        }
        let index = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": oci::MT_OCI_INDEX, "manifests": children}),
        )
        .expect("json");
        let (d, s) = self.blob(&index)?;
        self.manifests.push(json!({
            "mediaType": oci::MT_OCI_INDEX, "digest": d, "size": s,
            "annotations": {oci::ANNOTATION_REF_NAME: img.name},
        }));
        self.write_index()?;
        Ok(d)
    }

    fn write_index(&self) -> std::io::Result<()> {
        let index = json!({"schemaVersion": 2, "mediaType": oci::MT_OCI_INDEX, "manifests": self.manifests});
        fs::write(
            self.root.join("index.json"),
            serde_json::to_vec_pretty(&index).expect("json"),
        )
    }
}

/// A gzip'd chart archive as `helm package` lays it out.
pub fn chart_tgz(name: &str, version: &str) -> Vec<u8> {
    let files = vec![
        LayerFile::new(
            &format!("{name}/Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"1.0\"\n"),
        ),
        LayerFile::new(&format!("{name}/values.yaml"), "replicas: 1\n"),
        LayerFile::new(
            &format!("{name}/templates/cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n",
        ),
    ];
    layer(&files).0
}

/// Write a complete test stack into `dir`: two two-arch images sharing a base layer, a chart,
/// manifests, an extra file and stand-in K3s release files. Returns `dir`.
pub fn write_stack(dir: &Path) -> std::io::Result<PathBuf> {
    write_stack_with(dir, &[])
}

/// A runnable image: Debian's static busybox as `/bin/busybox` and `/bin/sh` (busybox-static).
pub fn busybox_image(name: &str, arches: &[&str]) -> FixtureImage {
    let busybox = fs::read("/bin/busybox").expect("/bin/busybox (apt-get install busybox-static)");
    let exe = |path: &str| LayerFile {
        path: path.into(),
        content: busybox.clone(),
        mode: 0o755,
    };
    FixtureImage {
        name: name.into(),
        arches: arches.iter().map(|s| s.to_string()).collect(),
        base: vec![exe("bin/busybox"), exe("bin/sh")],
        per_arch: vec![LayerFile::new("etc/rin-arch", format!("{{arch}} {name}\n"))],
        cmd: vec!["/bin/sh".into(), "-c".into(), "cat /etc/rin-arch".into()],
    }
}

/// The test stack of [`write_stack`] with more images: (reference, image) pairs.
pub fn write_stack_with(dir: &Path, extra: &[(&str, FixtureImage)]) -> std::io::Result<PathBuf> {
    write_named_stack(dir, "demo", extra)
}

/// The test stack of [`write_stack_with`] under another `name`: the stack's name, its namespace
/// and its chart's (so stacks of several names can share one cluster).
pub fn write_named_stack(
    dir: &Path,
    name: &str,
    extra: &[(&str, FixtureImage)],
) -> std::io::Result<PathBuf> {
    fs::create_dir_all(dir.join("manifests/app"))?;
    let mut lw = LayoutWriter::new(&dir.join("images"))?;
    lw.image(&FixtureImage::small("web:1.0", &["amd64", "arm64"]))?;
    lw.image(&FixtureImage::small("worker:1.0", &["amd64", "arm64"]))?;
    let mut more = String::new();
    for (reference, img) in extra {
        lw.image(img)?;
        more.push_str(&format!(
            "  - reference: {reference}\n    layout: images\n    name: {}\n",
            img.name
        ));
    }
    fs::create_dir_all(dir.join("charts"))?;
    fs::write(
        dir.join(format!("charts/{name}-0.1.0.tgz")),
        chart_tgz(name, "0.1.0"),
    )?;
    fs::write(
        dir.join("manifests/00-namespace.yaml"),
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"),
    )?;
    fs::write(
        dir.join("manifests/app/web.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {name}\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n        - name: web\n          image: registry.example/demo/web:1.0\n"
        ),
    )?;
    fs::write(dir.join("notes.txt"), "operator notes\n")?;
    write_k3s_stand_ins(&dir.join("k3s"))?;
    fs::write(
        dir.join("bundle.yaml"),
        format!(
            "name: {name}\nversion: 1.0.0\nplatforms: [amd64, arm64]\nk3s:\n  version: v1.31.4+k3s1\n  files: k3s\nimages:\n  - reference: registry.example/demo/web:1.0\n    layout: images\n    name: web:1.0\n  - reference: registry.example/demo/worker:1.0\n    layout: images\n    name: worker:1.0\n{more}charts:\n  - name: {name}\n    version: 0.1.0\n    archive: charts/{name}-0.1.0.tgz\nfiles: [notes.txt]\n"
        ),
    )?;
    Ok(dir.to_path_buf())
}

/// Stand-ins for K3s's release files for amd64 and arm64 in `k3s`, under their upstream names,
/// with their `sha256sum-<arch>.txt` lists: a few bytes each that say what they are, not K3s.
pub fn write_k3s_stand_ins(k3s: &Path) -> std::io::Result<()> {
    fs::create_dir_all(k3s)?;
    let mut sums = std::collections::BTreeMap::<String, String>::new();
    for (name, content) in [
        ("k3s", b"stand-in k3s amd64 binary".to_vec()),
        ("k3s-arm64", b"stand-in k3s arm64 binary".to_vec()),
        (
            "k3s-airgap-images-amd64.tar.zst",
            b"stand-in airgap images amd64".to_vec(),
        ),
        (
            "k3s-airgap-images-arm64.tar.zst",
            b"stand-in airgap images arm64".to_vec(),
        ),
        (
            "install.sh",
            b"#!/bin/sh\necho stand-in install.sh\n".to_vec(),
        ),
    ] {
        fs::write(k3s.join(name), &content)?;
        sums.insert(name.into(), sha256_hex(&content));
    }
    for arch in ["amd64", "arm64"] {
        let list: String = sums
            .iter()
            .filter(|(n, _)| n.contains(arch) || (arch == "amd64" && n.as_str() == "k3s"))
            .map(|(n, h)| format!("{h}  {n}\n"))
            .collect();
        fs::write(k3s.join(format!("sha256sum-{arch}.txt")), list)?;
    }
    use std::os::unix::fs::PermissionsExt;
    for exe in ["k3s", "k3s-arm64", "install.sh"] {
        fs::set_permissions(k3s.join(exe), fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Incompressible bytes (xorshift64*), different for each seed: layers and files that keep
/// their size through gzip and zstd.
pub fn noise(bytes: usize, seed: u64) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut out = vec![0u8; bytes];
    for chunk in out.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}
