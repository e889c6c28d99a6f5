#!/usr/bin/env bash
# Build speed, memory and size against standard tools, on the same images, in one run.
#
# Makes COUNT (default 10) two-arch images with SIZE_MIB (default 1024) MiB of layers in all (one
# base layer shared by every image and platform), pushes them with skopeo into a local registry
# (Debian's docker-registry, CNCF Distribution), then times, RUNS times each, alternating:
#   baseline:  skopeo copy --all of every image into one OCI layout, then tar -c | zstd -T2
#   ours:      rinbundle build --arch amd64 --arch arm64 with an empty cache
# and reports median wall time, ratio ours/baseline, peak RSS (GNU time's %M), and the bundle
# size next to the sum of the unique blobs. A run with a warm cache is reported too.
# Targets (issue: builder): ratio <= 0.5, peak RSS <= 256 MiB, size <= unique blobs + 1%.
# Needs: docker-registry, skopeo, zstd, tar, GNU time. Writes to bench/out (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
COUNT=${COUNT:-10}
RUNS=${RUNS:-3}
W=${BENCH_DIR:-bench/out}

cargo build --release --quiet -p rin-builder -p rin-tests --bins
B=${CARGO_TARGET_DIR:-$PWD/target}/release
rm -rf "$W"
mkdir -p "$W"
W=$(cd "$W" && pwd)
$B/rin-fixture bench-images --out "$W/layout" --size-mib "$SIZE_MIB" --count "$COUNT" >/dev/null

source bench/lib.sh
start_registry "$W/registry"
trap stop_registry EXIT

mkdir -p "$W/stack/manifests"
{
  echo "name: bench"; echo "version: 1.0.0"; echo "platforms: [amd64, arm64]"; echo "images:"
} > "$W/stack/bundle.yaml"
for i in $(seq 0 $((COUNT - 1))); do
  skopeo copy --all --preserve-digests --quiet --dest-tls-verify=false \
    "oci:$W/layout:img$i" "docker://$ADDR/bench/img$i:1.0"
  echo "  - reference: $ADDR/bench/img$i:1.0" >> "$W/stack/bundle.yaml"
done
UNIQUE=$(du -cb "$W"/layout/blobs/sha256/* | tail -1 | cut -f1)
echo "$COUNT images, $SIZE_MIB MiB of layers, unique blobs $UNIQUE bytes; registry $ADDR; $(nproc) cores; $RUNS runs each"

skopeo_pipeline() {
  rm -rf "$W/sk" "$W/sk.tar.zst"
  for i in $(seq 0 $((COUNT - 1))); do
    skopeo copy --all --quiet --src-tls-verify=false "docker://$ADDR/bench/img$i:1.0" "oci:$W/sk:img$i"
  done
  tar -C "$W/sk" -c . | zstd -q -T2 -3 -o "$W/sk.tar.zst"
}
export -f skopeo_pipeline
export W COUNT ADDR

declare -A T M
for i in $(seq "$RUNS"); do
  rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
  # Each timed run starts with nothing dirty: the writes of the run before it are on disk.
  sync
  read -r t m _ < <(measure base bash -c skopeo_pipeline)
  T[base]+="$t "; M[base]=$(( ${M[base]:-0} > m ? ${M[base]:-0} : m ))
  rm -rf "$W/cache" "$W/bench.tar.zst" "$W/stack/images.lock"
  sync
  read -r t m _ < <(measure ours env SOURCE_DATE_EPOCH=0 "$B/rinbundle" build --quiet --stack "$W/stack" \
    --arch amd64 --arch arm64 --unsigned --cache "$W/cache" -o "$W/bench.tar.zst")
  T[ours]+="$t "; M[ours]=$(( ${M[ours]:-0} > m ? ${M[ours]:-0} : m ))
done
rm -f "$W/bench.tar.zst"
sync
read -r warm warm_m _ < <(measure warm env SOURCE_DATE_EPOCH=0 "$B/rinbundle" build --quiet --stack "$W/stack" \
  --arch amd64 --arch arm64 --unsigned --locked --cache "$W/cache" -o "$W/bench.tar.zst")

base=$(echo "${T[base]}" | median)
ours=$(echo "${T[ours]}" | median)
SIZE=$(stat -c %s "$W/bench.tar.zst")
SK=$(stat -c %s "$W/sk.tar.zst")
echo "runs (s): skopeo+tar|zstd [${T[base]}] rinbundle build [${T[ours]}]"
awk -v b="$base" -v o="$ours" -v w="$warm" -v mb="${M[base]}" -v mo="${M[ours]}" -v mw="$warm_m" \
    -v s="$SIZE_MIB" -v size="$SIZE" -v sk="$SK" -v u="$UNIQUE" 'BEGIN {
  printf "baseline skopeo copy --all + tar | zstd -T2: %.2f s (%.0f MiB/s), peak RSS %.1f MiB, output %d bytes\n", b, s/b, mb/1024, sk
  printf "rinbundle build (empty cache):              %.2f s (%.0f MiB/s), peak RSS %.1f MiB, ratio %.3f (target <= 0.5)\n", o, s/o, mo/1024, o/b
  printf "rinbundle build --locked (warm cache):      %.2f s, peak RSS %.1f MiB\n", w, mw/1024
  printf "bundle %d bytes vs unique blobs %d bytes: %+.3f%% (target <= +1%%)\n", size, u, (size-u)*100/u
}'
