#!/usr/bin/env bash
# The release build: `rinbundle` and `rininstall` for linux/amd64 and linux/arm64 as static
# executables (glibc linked statically: no dynamic loader, no shared libraries), into dist/out/
# as NAME-linux-ARCH, with SHA256SUMS, signed when RIN_SIGNING_KEY names a rinbundle key.
#
# From a clean checkout on Debian 12 (amd64), once:
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install -y --no-install-recommends rustc-web cargo-web libstd-rust-web-dev:arm64 \
#     gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static binfmt-support file binutils
# then:
#   dist/build.sh                       # both architectures (ARCHES="arm64" for one)
#   RIN_SIGNING_KEY=release.key dist/build.sh
#   dist/check.sh                       # static, --version, and the arm64 build run under qemu
#
# amd64 is built with the rustup toolchain of rust-toolchain / the default one; arm64 with
# Debian's rustc (rustc-web), which ships an arm64 standard library. Paths of this machine are
# remapped out of the binaries; the commit and SOURCE_DATE_EPOCH come from git.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/dist/out}
ARCHES=${ARCHES:-amd64 arm64}
export RIN_COMMIT=${RIN_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/dist}
FLAGS="-C target-feature=+crt-static -C strip=symbols --remap-path-prefix=$ROOT=. --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=cargo"

need() { command -v "$1" >/dev/null || { echo "missing $1: $2" >&2; exit 2; }; }
need readelf "apt-get install binutils"
need file "apt-get install file"
mkdir -p "$OUT"
rm -f "$OUT"/rinbundle-* "$OUT"/rininstall-* "$OUT"/SHA256SUMS "$OUT"/SHA256SUMS.sig

for arch in $ARCHES; do
    case "$arch" in
        amd64)
            triple=x86_64-unknown-linux-gnu
            env=()
            ;;
        arm64)
            triple=aarch64-unknown-linux-gnu
            need /usr/bin/rustc "apt-get install rustc-web libstd-rust-web-dev:arm64 (see the top of this file)"
            need aarch64-linux-gnu-gcc "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
            env=(RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
                 CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
                 CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
                 AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar)
            ;;
        *) echo "unknown architecture $arch (amd64, arm64)" >&2; exit 2 ;;
    esac
    echo "== $arch ($triple)"
    env "${env[@]}" RUSTFLAGS="$FLAGS" cargo build --release --locked --target "$triple" \
        -p rin-builder -p rin-installer --bins
    for name in rinbundle rininstall; do
        bin="$CARGO_TARGET_DIR/$triple/release/$name"
        if readelf -l "$bin" | grep -q "Requesting program interpreter" || readelf -d "$bin" | grep -q NEEDED; then
            echo "$bin is not static:" >&2
            readelf -d "$bin" >&2
            exit 1
        fi
        install -m 0755 "$bin" "$OUT/$name-linux-$arch"
        file "$OUT/$name-linux-$arch"
    done
done

(cd "$OUT" && sha256sum rinbundle-linux-* rininstall-linux-* > SHA256SUMS)
if [ -n "${RIN_SIGNING_KEY:-}" ]; then
    host=$(case "$(uname -m)" in aarch64) echo arm64 ;; *) echo amd64 ;; esac)
    signer="$OUT/rinbundle-linux-$host"
    [ -x "$signer" ] || signer="$CARGO_TARGET_DIR/../debug/rinbundle"
    "$signer" sign-file --key "$RIN_SIGNING_KEY" "$OUT/SHA256SUMS"
fi
echo "== $OUT"
ls -l "$OUT"
