#!/usr/bin/env bash
# Delta bundles: how much a delta carries when one layer of a stack changed, on the same data in
# one run, and what applying it costs against applying the full bundle.
#
# Makes two revisions of a stack of COUNT (default 10) two-arch images with SIZE_MIB (default
# 1024) MiB of layers, plus one image whose one shared layer of CHANGED_MIB (default 50) MiB
# differs between the revisions; builds the full bundle of each and the delta of revision 2 with
# --base the revision-1 bundle; reports the three sizes and the delta against the changed bytes.
# Then, into a fresh registry (Debian's docker-registry) under a scratch root, applies revision 1,
# and times applying the delta against applying the full revision-2 bundle onto revision 1 (each
# from the same starting point: the registry and root copied back before each run).
# Target (issue: carrying bundles): delta size <= the changed bytes + 1 MiB.
# Needs: docker-registry, GNU time. Writes to bench/out-delta (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
COUNT=${COUNT:-10}
CHANGED_MIB=${CHANGED_MIB:-50}
RUNS=${RUNS:-3}
W=${BENCH_DIR:-bench/out-delta}

source bench/lib.sh
release_bins
fresh_dir
$B/rinbundle keygen --out "$W/bench" >/dev/null
$B/rin-fixture k3s-stand-ins --out "$W/k3s" >/dev/null
for rev in 1 2; do
  $B/rin-fixture bench-images --out "$W/layout$rev" --size-mib "$SIZE_MIB" --count "$COUNT" \
    --changed-mib "$CHANGED_MIB" --revision "$rev" >/dev/null
  images_stack "$W/stack$rev" "$W/layout$rev" "$COUNT" "1.$rev.0" "$W/k3s" changed
  SOURCE_DATE_EPOCH=0 $B/rinbundle build --quiet --stack "$W/stack$rev" --arch amd64 --arch arm64 \
    --key "$W/bench.key" --cache "$W/cache" -o "$W/v$rev.tar.zst" >/dev/null
done
SOURCE_DATE_EPOCH=0 $B/rinbundle build --quiet --stack "$W/stack2" --arch amd64 --arch arm64 \
  --key "$W/bench.key" --cache "$W/cache" --base "$W/v1.tar.zst" -o "$W/v2-delta.tar.zst" >/dev/null

size() { stat -c %s "$1"; }
changed=$((CHANGED_MIB << 20))
full1=$(size "$W/v1.tar.zst"); full2=$(size "$W/v2.tar.zst"); delta=$(size "$W/v2-delta.tar.zst")
echo "full v1: $full1 bytes; full v2: $full2 bytes; delta v2 onto v1: $delta bytes"
echo "changed layer: $changed bytes; delta - changed = $((delta - changed)) bytes (target <= 1048576)"
$B/rinbundle inspect "$W/v2-delta.tar.zst" | grep '^delta'

# Applying: revision 1 once, kept as the starting point; then each run from a copy of it.
start_registry "$W/reg"
apply_args=(--quiet --key "$W/bench.pub" --arch amd64 --no-start)
"$B/rininstall" apply "$W/v1.tar.zst" "${apply_args[@]}" --root "$W/root1" --registry "$ADDR" >/dev/null
stop_registry
cp -a "$W/reg/data" "$W/reg-v1"
declare -A T
for i in $(seq "$RUNS"); do
  for kind in delta full; do
    bundle="$W/v2-delta.tar.zst"; [ $kind = full ] && bundle="$W/v2.tar.zst"
    rm -rf "$W/root" "$W/reg/data"; cp -a "$W/root1" "$W/root"; cp -a "$W/reg-v1" "$W/reg/data"
    docker-registry serve "$W/reg/config.yml" > "$W/reg/log" 2>&1 & REG_PID=$!
    for _ in $(seq 100); do ADDR=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$W/reg/log" | head -1 | sed 's/listening on //') || true; [ -n "$ADDR" ] && break; sleep 0.1; done
    read -r t _ < <(measure "$kind" "$B/rininstall" apply "$bundle" "${apply_args[@]}" --root "$W/root" --registry "$ADDR")
    T[$kind]+="$t "
    stop_registry
  done
done
d=$(echo "${T[delta]}" | median); f=$(echo "${T[full]}" | median)
echo "apply onto v1: delta median ${d} s, full v2 median ${f} s, ratio delta/full $(awk -v a="$d" -v b="$f" 'BEGIN {printf "%.3f", a / b}')"
