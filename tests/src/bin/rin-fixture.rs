//! Makes fixture inputs for the demo and the benchmark, offline:
//!
//!   rin-fixture image --out DIR --name NAME --rootfs DIR [--arch ARCH]...
//!       an OCI image layout holding a multi-arch image whose base layer is the rootfs
//!       directory's files and whose per-platform layer records the architecture.
//!   rin-fixture bench-stack --out DIR --size-mib N
//!       a stack whose one extra file is N MiB of incompressible bytes.
//!   rin-fixture k3s-stand-ins --out DIR
//!       stand-ins for K3s's release files (amd64, arm64) with their checksum lists: not K3s.
//!   rin-fixture busybox-image --out DIR --name NAME
//!       an OCI layout holding a runnable two-arch image of Debian's busybox (busybox-static).
//!   rin-fixture test-stack --out DIR
//!       the end-to-end tests' stack (two images, a chart, manifests, stand-in K3s files for
//!       amd64 and arm64) plus a runnable busybox `docker.io/library/registry:2.8.3`.
//!   rin-fixture bench-images --out DIR --size-mib N --count C
//!       an OCI image layout with C two-arch images (img0 … img<C-1>) of N MiB in all: one
//!       incompressible base layer shared by every image and platform, and one per platform.
//!       With `--changed-mib M --revision R`, one more two-arch image, `changed`, whose shared
//!       layer is M MiB of noise that differs with R (a delta between revisions carries it).

use anyhow::{Context as _, bail};
use rin_tests::fixture::{FixtureImage, LayerFile, LayoutWriter, noise};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        bail!("usage: rin-fixture image|bench-stack ... (see the source's header)");
    };
    let mut out = None;
    let mut name = None;
    let mut rootfs = None;
    let mut arches = Vec::new();
    let mut size_mib: u64 = 1024;
    let mut count: u64 = 10;
    let mut changed_mib: u64 = 0;
    let mut revision: u64 = 0;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value)),
            "--name" => name = Some(value.clone()),
            "--rootfs" => rootfs = Some(PathBuf::from(value)),
            "--arch" => arches.push(value.clone()),
            "--size-mib" => size_mib = value.parse().context("--size-mib takes a whole number")?,
            "--count" => count = value.parse().context("--count takes a whole number")?,
            "--changed-mib" => {
                changed_mib = value
                    .parse()
                    .context("--changed-mib takes a whole number")?
            }
            "--revision" => revision = value.parse().context("--revision takes a whole number")?,
            other => bail!("unknown flag {other}"),
        }
    }
    let out = out.context("--out DIR is required")?;
    match command.as_str() {
        "image" => {
            let name = name.context("--name is required")?;
            let rootfs = rootfs.context("--rootfs is required")?;
            if arches.is_empty() {
                arches = vec!["amd64".into(), "arm64".into()];
            }
            let mut base = Vec::new();
            collect(&rootfs, "", &mut base)?;
            let img = FixtureImage {
                name: name.clone(),
                arches,
                base,
                per_arch: vec![LayerFile::new("etc/rin-arch", "{arch}\n")],
                cmd: vec!["/app/hello.sh".into()],
            };
            if out.exists() {
                fs::remove_dir_all(&out)
                    .with_context(|| format!("cannot replace {}", out.display()))?;
            }
            let digest = LayoutWriter::new(&out)?.image(&img)?;
            println!("{name} {digest} -> {}", out.display());
        }
        "bench-stack" => bench_stack(&out, size_mib)?,
        "k3s-stand-ins" => {
            rin_tests::fixture::write_k3s_stand_ins(&out)?;
            println!("K3s stand-ins -> {}", out.display());
        }
        "busybox-image" => {
            let name = name.context("--name is required")?;
            if out.exists() {
                fs::remove_dir_all(&out)
                    .with_context(|| format!("cannot replace {}", out.display()))?;
            }
            let img = rin_tests::fixture::busybox_image(&name, &["amd64", "arm64"]);
            let digest = LayoutWriter::new(&out)?.image(&img)?;
            println!("{name} {digest} -> {}", out.display());
        }
        "test-stack" => {
            let registry = rin_tests::fixture::busybox_image("registry:2.8.3", &["amd64", "arm64"]);
            let dir = rin_tests::fixture::write_stack_with(
                &out,
                &[("docker.io/library/registry:2.8.3", registry)],
            )?;
            println!("test stack -> {}", dir.display());
        }
        "bench-images" => bench_images(&out, size_mib, count.max(1), changed_mib, revision)?,
        other => bail!("unknown command {other}"),
    }
    Ok(())
}

/// Files below `dir` as layer files, with their modes.
fn collect(dir: &Path, prefix: &str, out: &mut Vec<LayerFile>) -> anyhow::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let rel = format!("{prefix}{}", n.to_string_lossy());
        if p.is_dir() {
            collect(&p, &format!("{rel}/"), out)?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            let mode = if fs::metadata(&p)?.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            out.push(LayerFile {
                path: rel,
                content: fs::read(&p)?,
                mode,
            });
        }
    }
    Ok(())
}

/// `count` two-arch images sharing one base layer, `size_mib` MiB of layers in all.
fn bench_images(
    dir: &Path,
    size_mib: u64,
    count: u64,
    changed_mib: u64,
    revision: u64,
) -> anyhow::Result<()> {
    let total = (size_mib << 20) as usize;
    let base = total / 16;
    let per = (total - base) / (2 * count as usize);
    let mut w = LayoutWriter::new(dir)?;
    let base_file = LayerFile::new("usr/lib/base.bin", noise(base, 0));
    for i in 0..count {
        let img = FixtureImage {
            name: format!("img{i}"),
            arches: vec!["amd64".into(), "arm64".into()],
            base: vec![base_file.clone()],
            // `{arch}` makes each platform's layer differ; the noise makes it big.
            per_arch: vec![
                LayerFile::new("etc/rin-arch", "{arch}\n"),
                LayerFile::new("app/data.bin", noise(per, i + 1)),
            ],
            cmd: vec!["/bin/sh".into()],
        };
        w.image(&img)?;
    }
    if changed_mib > 0 {
        w.image(&FixtureImage {
            name: "changed".into(),
            arches: vec!["amd64".into(), "arm64".into()],
            base: vec![LayerFile::new(
                "app/changed.bin",
                noise((changed_mib << 20) as usize, 1_000_000 + revision),
            )],
            per_arch: vec![LayerFile::new("etc/rin-arch", "{arch}\n")],
            cmd: vec!["/bin/sh".into()],
        })?;
    }
    println!(
        "{count} images, {size_mib} MiB of layers -> {}",
        dir.display()
    );
    Ok(())
}

/// A stack with one incompressible file of `size_mib` MiB, written in 1 MiB pieces.
fn bench_stack(dir: &Path, size_mib: u64) -> anyhow::Result<()> {
    fs::create_dir_all(dir.join("manifests"))?;
    fs::write(
        dir.join("manifests/ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n",
    )?;
    fs::write(
        dir.join("bundle.yaml"),
        "name: bench\nversion: 1.0.0\nplatforms: [amd64]\nfiles: [blob.bin]\n",
    )?;
    let mut f = std::io::BufWriter::new(fs::File::create(dir.join("blob.bin"))?);
    // xorshift64*: fast, and its output does not compress.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..size_mib {
        for chunk in buf.chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            chunk.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        f.write_all(&buf)?;
    }
    f.flush()?;
    println!("bench stack with {size_mib} MiB -> {}", dir.display());
    Ok(())
}
