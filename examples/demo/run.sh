#!/usr/bin/env bash
# The main job on the embedded demo stack, with no network: make the demo image as a two-arch
# OCI layout (and stand-ins for the registry image and K3s's files), make a signing key, build a
# signed amd64+arm64 bundle, inspect it, verify it the way a site does (signature first, then
# every entry, extracting into a staging directory), and apply it into a directory with --root:
# first as a dry run (the plan: files to write and every object to deploy), then for real.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-demo-out}
echo "== building rinbundle, rininstall and the demo's fixture maker (on a fresh clone this takes"
echo "   several minutes: cargo compiles every dependency once; later runs take seconds)"
cargo build --bins
BIN=target/debug
rm -rf "$OUT" examples/demo/build
mkdir -p "$OUT"

echo "== demo image (two architectures, from examples/demo/image)"
$BIN/rin-fixture image --out examples/demo/build/hello --name hello:0.1.0 --rootfs examples/demo/image --arch amd64 --arch arm64

echo "== stand-ins for the site registry's image and K3s's release files (offline)"
$BIN/rin-fixture busybox-image --out examples/demo/build/registry --name registry:2.8.3
$BIN/rin-fixture k3s-stand-ins --out examples/demo/build/k3s

echo "== signing key"
$BIN/rinbundle keygen --out "$OUT/demo"

echo "== build"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
$BIN/rinbundle build --stack examples/demo --arch amd64 --arch arm64 --key "$OUT/demo.key" -o "$OUT/rin-demo.tar.zst"

echo "== inspect"
$BIN/rinbundle inspect "$OUT/rin-demo.tar.zst"

echo "== verify at the site"
$BIN/rininstall verify "$OUT/rin-demo.tar.zst" --key "$OUT/demo.pub" --extract "$OUT/staging"
ls "$OUT/staging"

echo "== apply at a site, into a directory: what it would do, then do it (K3s is not started)"
$BIN/rininstall apply "$OUT/rin-demo.tar.zst" --key "$OUT/demo.pub" --root "$OUT/site" --no-start --dry-run
$BIN/rininstall apply "$OUT/rin-demo.tar.zst" --key "$OUT/demo.pub" --root "$OUT/site" --no-start
find "$OUT/site" -type f | sort
