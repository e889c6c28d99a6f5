#!/usr/bin/env bash
# Apply's one read: `rininstall apply` (which seeds while it verifies) against the two passes it
# replaces (`rininstall seed`: a verifying pass, then an upload pass), and apply from split
# parts against apply from the joined file, on the same bundle in one run.
#
# Makes COUNT (default 10) two-arch images with SIZE_MIB (default 1024) MiB of layers (as
# bench/seed.sh), with stand-in K3s files, builds a signed bundle and splits it into parts of
# PART_MIB (default 400) MiB; then, RUNS times each, alternating, each into a fresh registry
# (Debian's docker-registry on loopback) and a fresh scratch root, with the page cache dropped
# first (COLD=1, the default; the bundle is read from disk as from a stick) or not (COLD=0):
#   verify:      rininstall verify BUNDLE                (one pass, nothing sent)
#   two-pass:    rininstall seed BUNDLE                  (verify + plan, then upload: two reads)
#   apply-file:  rininstall apply BUNDLE --no-start --registry ...   (one read)
#   apply-parts: rininstall apply BUNDLE.parts ...       (the same, from the parts)
# and reports median wall times and peak RSS, the ratios apply-file/two-pass and
# apply-parts/apply-file, and the bytes in the work directory before and after an apply from
# parts (no joined copy is made).
# Targets (issue: carrying bundles): apply from parts the same time as from the file within
# noise, no extra disk; one read well under two.
# STICK_MIBPS=N (root, cgroup v1 blkio) throttles the bundle's reads to N MiB/s, as a USB stick
# reads; with COLD=1 every read then comes from the throttled disk.
# Needs: docker-registry, GNU time, root for COLD=1. Writes to bench/out-apply (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
COUNT=${COUNT:-10}
PART_MIB=${PART_MIB:-400}
RUNS=${RUNS:-3}
COLD=${COLD:-1}
W=${BENCH_DIR:-bench/out-apply}

source bench/lib.sh
release_bins
fresh_dir
$B/rin-fixture bench-images --out "$W/layout" --size-mib "$SIZE_MIB" --count "$COUNT" >/dev/null
$B/rin-fixture k3s-stand-ins --out "$W/k3s" >/dev/null
images_stack "$W/stack" "$W/layout" "$COUNT" 1.0.0 "$W/k3s"
$B/rinbundle keygen --out "$W/bench" >/dev/null
mkdir -p "$W/stick"
BUNDLE="$W/stick/bench.tar.zst"
SOURCE_DATE_EPOCH=0 $B/rinbundle build --quiet --stack "$W/stack" --arch amd64 --arch arm64 \
  --key "$W/bench.key" --cache "$W/cache" -o "$BUNDLE" --split "${PART_MIB}M" >/dev/null
stick_setup
echo "bundle: $(stat -c %s "$BUNDLE") bytes, $(ls "$BUNDLE".part-* | wc -l) parts; $(nproc) cores; $RUNS runs each; cold cache: $COLD; reads throttled to: ${STICK_MIBPS:-0} MiB/s (0: not)"

cold() { if [ "$COLD" = 1 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi; }
fresh() {  # a fresh registry and root
  stop_registry
  start_registry "$W/reg"
  rm -rf "$W/root"
}
declare -A T M
record() { T[$1]+="$2 "; M[$1]=$(( ${M[$1]:-0} > $3 ? ${M[$1]:-0} : $3 )); }
apply_args=(--quiet --key "$W/bench.pub" --root "$W/root" --arch amd64 --no-start)
for i in $(seq "$RUNS"); do
  cold
  read -r t m _ < <(measure verify bench/stick.sh "$B/rininstall" verify --quiet --key "$W/bench.pub" "$BUNDLE")
  record verify "$t" "$m"
  fresh; cold
  read -r t m _ < <(measure two-pass bench/stick.sh "$B/rininstall" seed --quiet --key "$W/bench.pub" "$BUNDLE" --registry "$ADDR")
  record two-pass "$t" "$m"
  fresh; cold
  read -r t m _ < <(measure apply-file bench/stick.sh "$B/rininstall" apply "$BUNDLE" "${apply_args[@]}" --registry "$ADDR")
  record apply-file "$t" "$m"
  fresh; cold
  mv "$BUNDLE" "$W/joined.tar.zst"   # no joined file beside the parts
  before=$(du -sb "$W/stick" | cut -f1)
  read -r t m _ < <(measure apply-parts bench/stick.sh "$B/rininstall" apply "$BUNDLE.parts" "${apply_args[@]}" --registry "$ADDR")
  after=$(du -sb "$W/stick" | cut -f1)
  mv "$W/joined.tar.zst" "$BUNDLE"
  record apply-parts "$t" "$m"
done
stop_registry
for k in verify two-pass apply-file apply-parts; do
  echo "$k: median $(echo "${T[$k]}" | median) s (runs: ${T[$k]}), peak RSS ${M[$k]} KiB"
done
ratio() { awk -v a="$(echo "${T[$1]}" | median)" -v b="$(echo "${T[$2]}" | median)" 'BEGIN {printf "%.3f", a / b}'; }
echo "ratio apply-file/two-pass: $(ratio apply-file two-pass)"
echo "ratio apply-file/verify: $(ratio apply-file verify)"
echo "ratio apply-parts/apply-file: $(ratio apply-parts apply-file)"
echo "stick directory: ${before} bytes before an apply from parts, ${after} after"
