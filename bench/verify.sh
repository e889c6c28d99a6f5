#!/usr/bin/env bash
# Verification speed and memory against standard tools, on the same file, in one run.
#
# Builds a bundle holding one incompressible entry of SIZE_MIB MiB (default 1024), then times,
# RUNS times each and alternating, with a warm page cache:
#   baseline:  zstd -dc BUNDLE | openssl dgst -sha256      (decompress + hash, two processes)
#   ours:      rininstall verify --key KEY BUNDLE          (signature, then every entry hashed)
#   ours+x:    rininstall verify --extract DIR             (the same, writing every entry out)
# and reports the median wall time, the ratio ours/baseline, and peak RSS (GNU time's %M).
# Targets (issue: bundle core): ratio <= 1.05, peak RSS <= 64 MiB.
# Needs: zstd, openssl, GNU time (/usr/bin/time). Writes to bench/out (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-5}
W=${BENCH_DIR:-bench/out}

source bench/lib.sh
entry_bundle "$SIZE_MIB"
echo "bundle: $(stat -c %s "$BUNDLE") bytes compressed, ${SIZE_MIB} MiB entry; $(nproc) cores; $RUNS runs each"
cat "$BUNDLE" > /dev/null   # warm the page cache


declare -A T M
for i in $(seq "$RUNS"); do
  read -r t m _ < <(measure base sh -c "zstd -dc '$BUNDLE' | openssl dgst -sha256")
  T[base]+="$t "; M[base]=$m
  read -r t m _ < <(measure ours "$B/rininstall" verify --quiet --key "$W/bench.pub" "$BUNDLE")
  T[ours]+="$t "; M[ours]=$(( ${M[ours]:-0} > m ? ${M[ours]:-0} : m ))
  rm -rf "$W/x"
  read -r t m _ < <(measure oursx "$B/rininstall" verify --quiet --key "$W/bench.pub" --extract "$W/x" "$BUNDLE")
  T[oursx]+="$t "; M[oursx]=$(( ${M[oursx]:-0} > m ? ${M[oursx]:-0} : m ))
done
rm -rf "$W/x"

base=$(echo "${T[base]}" | median)
ours=$(echo "${T[ours]}" | median)
oursx=$(echo "${T[oursx]}" | median)
echo "runs (s): baseline [${T[base]}] verify [${T[ours]}] verify+extract [${T[oursx]}]"
awk -v b="$base" -v o="$ours" -v x="$oursx" -v mb="${M[base]}" -v mo="${M[ours]}" -v mx="${M[oursx]}" -v s="$SIZE_MIB" 'BEGIN {
  printf "baseline zstd -dc | openssl dgst: %.2f s (%.0f MiB/s), peak RSS %.1f MiB (largest process of the pipe)\n", b, s/b, mb/1024
  printf "rininstall verify:               %.2f s (%.0f MiB/s), peak RSS %.1f MiB, ratio %.3f (target <= 1.05)\n", o, s/o, mo/1024, o/b
  printf "rininstall verify --extract:     %.2f s (%.0f MiB/s), peak RSS %.1f MiB, ratio %.3f\n", x, s/x, mx/1024, x/b
}'
