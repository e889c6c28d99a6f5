#!/usr/bin/env bash
# Seeding speed, memory and disk against a standard tool, on the same images, in one run.
#
# Makes COUNT (default 10) two-arch images with SIZE_MIB (default 1024) MiB of layers in all (one
# base layer shared by every image and platform) as an OCI layout, builds a signed bundle of them,
# then times, RUNS times each, alternating, each into a fresh registry (Debian's docker-registry,
# CNCF Distribution, on loopback):
#   baseline:  skopeo copy --all of every image from the OCI layout into the registry
#   ours:      rininstall seed BUNDLE (verify, then stream the blobs from the bundle)
#   floor:     every blob PUT by curl straight from the layout (what the registry alone costs)
# then a re-seed of the same bundle into the last registry (everything already there), and
# reports median wall times, the ratio ours/baseline, peak RSS (GNU time's %M), and the disk
# rininstall used beyond the registry's own data.
# Targets (issue: installer node): seed <= 0.5x skopeo, re-seed <= 1 s per GB, peak RSS <= 256
# MiB, extra disk <= 5% of the bundle.
# Needs: docker-registry, skopeo, GNU time. Writes to bench/out-seed (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
COUNT=${COUNT:-10}
RUNS=${RUNS:-3}
W=${BENCH_DIR:-bench/out-seed}

source bench/lib.sh
release_bins
fresh_dir
$B/rin-fixture bench-images --out "$W/layout" --size-mib "$SIZE_MIB" --count "$COUNT" >/dev/null
images_stack "$W/stack" "$W/layout" "$COUNT" 1.0.0
$B/rinbundle keygen --out "$W/bench" >/dev/null
SOURCE_DATE_EPOCH=0 $B/rinbundle build --quiet --stack "$W/stack" --arch amd64 --arch arm64 \
  --key "$W/bench.key" --cache "$W/cache" -o "$W/bench.tar.zst" >/dev/null
rm -rf "$W/cache"
BUNDLE_SIZE=$(stat -c %s "$W/bench.tar.zst")
echo "$COUNT images, $SIZE_MIB MiB of layers, bundle $BUNDLE_SIZE bytes; $(nproc) cores; $RUNS runs each"

trap stop_registry EXIT

skopeo_all() {
  for i in $(seq 0 $((COUNT - 1))); do
    skopeo copy --all --preserve-digests --quiet --dest-tls-verify=false \
      "oci:$W/layout:img$i" "docker://$ADDR/bench/img$i:1.0"
  done
}
export -f skopeo_all
# The registry's own floor: every blob of the layout sent with curl, 4 at a time, one monolithic
# streamed PUT each, read from the page cache with no decompression and no hashing on our side.
# No client that moves these bytes into this registry can be faster.
curl_put() {
  local f=$1 loc
  loc=$(curl -sf -D - -o /dev/null -X POST "http://$ADDR/v2/floor/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  case "$loc" in http*) ;; *) loc="http://$ADDR$loc" ;; esac
  curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$f" "$loc&digest=sha256:$(basename "$f")"
}
curl_all() { find "$W/layout/blobs/sha256" -type f | xargs -P 4 -I{} bash -c 'curl_put {}'; }
export -f curl_put curl_all
export W COUNT

declare -A T M
for i in $(seq "$RUNS"); do
  cat "$W"/layout/blobs/sha256/* > /dev/null
  start_registry "$W/reg-floor"; export ADDR
  read -r t _ < <(measure floor bash -c curl_all)
  T[floor]+="$t "
  stop_registry; rm -rf "$W/reg-floor"
  rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
  start_registry "$W/reg-base"; export ADDR
  read -r t m _ < <(measure base bash -c skopeo_all)
  T[base]+="$t "; M[base]=$m
  stop_registry; rm -rf "$W/reg-base"
  start_registry "$W/reg-ours"
  FREE_BEFORE=$(df -B1 --output=avail "$W" | tail -1)
  read -r t m _ < <(measure ours "$B/rininstall" seed --quiet --key "$W/bench.pub" --registry "$ADDR" "$W/bench.tar.zst")
  T[ours]+="$t "; M[ours]=$(( ${M[ours]:-0} > m ? ${M[ours]:-0} : m ))
  REG_BYTES=$(du -sb "$W/reg-ours/data" | cut -f1)
  FREE_AFTER=$(df -B1 --output=avail "$W" | tail -1)
  [ "$i" = "$RUNS" ] || stop_registry
done
read -r reseed reseed_m _ < <(measure reseed "$B/rininstall" seed --quiet --key "$W/bench.pub" --registry "$ADDR" "$W/bench.tar.zst")
stop_registry

floor=$(echo "${T[floor]}" | median)
base=$(echo "${T[base]}" | median)
ours=$(echo "${T[ours]}" | median)
echo "runs (s): skopeo copy [${T[base]}] rininstall seed [${T[ours]}] curl floor [${T[floor]}]"
awk -v f="$floor" -v b="$base" -v o="$ours" -v r="$reseed" -v mb="${M[base]}" -v mo="${M[ours]}" -v mr="$reseed_m" \
    -v size="$BUNDLE_SIZE" -v reg="$REG_BYTES" -v fb="$FREE_BEFORE" -v fa="$FREE_AFTER" 'BEGIN {
  gb = size / 1e9
  extra = (fb - fa) - reg
  printf "skopeo copy --all into a fresh registry: %.2f s, peak RSS %.1f MiB\n", b, mb/1024
  printf "rininstall seed into a fresh registry:   %.2f s, peak RSS %.1f MiB, ratio %.3f (target <= 0.5)\n", o, mo/1024, o/b
  printf "the registry floor (curl, no client work): %.2f s, ratio %.3f to skopeo\n", f, f/b
  printf "re-seed of the same bundle:              %.2f s (%.2f s per GB, target <= 1), peak RSS %.1f MiB\n", r, r/gb, mr/1024
  printf "disk used beyond the registry data (last run): %d bytes, %.2f%% of the bundle (target <= 5%%)\n", extra, extra*100/size
}'
