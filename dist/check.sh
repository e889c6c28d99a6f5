#!/usr/bin/env bash
# Checks the release binaries dist/build.sh wrote to dist/out (not part of CI: it needs the
# packages named at the top of dist/build.sh, plus busybox-static and zstd):
#   - each is a static executable: `file` says so and `readelf -d` lists no shared library;
#   - `--version` names the release, the commit and the target;
#   - the arm64 rininstall, run under qemu-aarch64-static, gives the same results as the amd64
#     one on a real bundle: `verify`, the refusal of a tampered copy (exit 3),
#     `apply --root ... --no-start --dry-run` of the arm64 node, and `extract-installer`;
#   - SHA256SUMS matches, and its signature verifies with openssl when SHA256SUMS.sig exists
#     (RELEASE_PUB names the public key).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/dist/out}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }
step() { echo; echo "== $*"; }
command -v qemu-aarch64-static >/dev/null || fail "qemu-aarch64-static is missing (apt-get install qemu-user-static)"

step "static executables"
for f in "$OUT"/rinbundle-linux-* "$OUT"/rininstall-linux-*; do
    file "$f"
    file "$f" | grep -Eq "statically linked|static-pie linked" || fail "$f is not statically linked"
    if readelf -d "$f" 2>/dev/null | grep -q NEEDED; then fail "$f needs shared libraries"; fi
    readelf -l "$f" | grep -q "program interpreter" && fail "$f asks for a dynamic loader"
done

step "checksums"
(cd "$OUT" && sha256sum -c SHA256SUMS)
if [ -f "$OUT/SHA256SUMS.sig" ]; then
    [ -n "${RELEASE_PUB:-}" ] || fail "SHA256SUMS.sig exists: give its public key as RELEASE_PUB"
    openssl pkeyutl -verify -pubin -inkey "$RELEASE_PUB" -rawin -in "$OUT/SHA256SUMS" \
        -sigfile "$OUT/SHA256SUMS.sig"
fi

run() { # run ARCH BINARY ARGS...: under qemu for arm64
    local arch=$1 name=$2
    shift 2
    if [ "$arch" = arm64 ]; then
        qemu-aarch64-static "$OUT/$name-linux-arm64" "$@"
    else
        "$OUT/$name-linux-amd64" "$@"
    fi
}

step "--version"
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
for arch in amd64 arm64; do
    triple=$([ "$arch" = arm64 ] && echo aarch64-unknown-linux-gnu || echo x86_64-unknown-linux-gnu)
    for name in rinbundle rininstall; do
        v=$(run "$arch" "$name" --version)
        echo "$v"
        case "$v" in
            "$name "*"(commit "*", $triple)") ;;
            *) fail "$name for $arch: unexpected --version: $v" ;;
        esac
        case "$v" in *"commit $commit,"*) ;; *) echo "(built from another commit than HEAD $commit)" ;; esac
    done
done

step "a real two-arch bundle carrying both installers"
cargo build --quiet -p rin-tests --bin rin-fixture
target/debug/rin-fixture test-stack --out "$W/stack" >/dev/null
run amd64 rinbundle keygen --out "$W/site" >/dev/null
SOURCE_DATE_EPOCH=1700000000 run amd64 rinbundle build --quiet --stack "$W/stack" \
    --arch amd64 --arch arm64 --key "$W/site.key" --installers "$OUT" -o "$W/b.tar.zst"
cp "$W/b.tar.zst" "$W/tampered.tar.zst"
size=$(stat -c %s "$W/tampered.tar.zst")
printf '\x55' | dd of="$W/tampered.tar.zst" bs=1 seek=$((size / 2)) conv=notrunc status=none

for arch in amd64 arm64; do
    step "rininstall for $arch"
    run "$arch" rininstall verify "$W/b.tar.zst" --key "$W/site.pub" --quiet >"$W/verify.$arch" 2>&1 \
        || fail "$arch: verify of the good bundle failed: $(cat "$W/verify.$arch")"
    set +e
    run "$arch" rininstall verify "$W/tampered.tar.zst" --key "$W/site.pub" --quiet >"$W/tamper.$arch" 2>&1
    rc=$?
    set -e
    [ "$rc" = 3 ] || fail "$arch: the tampered bundle gave exit $rc, not 3: $(cat "$W/tamper.$arch")"
    run "$arch" rininstall apply "$W/b.tar.zst" --key "$W/site.pub" --root "$W/root" --no-start \
        --dry-run --arch arm64 --progress none >"$W/apply.$arch" 2>&1 \
        || fail "$arch: apply --dry-run failed: $(cat "$W/apply.$arch")"
    [ ! -e "$W/root" ] || fail "$arch: the dry run created $W/root"
    run "$arch" rininstall extract-installer "$W/b.tar.zst" --key "$W/site.pub" --arch arm64 \
        -o "$W/extracted.$arch" --quiet >/dev/null
    cmp "$W/extracted.$arch" "$OUT/rininstall-linux-arm64" || fail "$arch: the extracted installer differs"
    cat "$W/apply.$arch"
done

step "identical results on amd64 and arm64"
for what in verify tamper apply; do
    diff -u "$W/$what.amd64" "$W/$what.arm64" || fail "$what differs between amd64 and arm64"
done
echo
echo "dist check: passed"
