#!/usr/bin/env bash
# Reading a split bundle: `rininstall verify` from its parts against the same bundle as one file,
# on the same data, in one run.
#
# Builds a bundle holding one incompressible entry of SIZE_MIB MiB (default 1024), splits it into
# parts of PART_MIB MiB (default 400: three parts), then times, RUNS times each and alternating,
# with a warm page cache:
#   file:   rininstall verify --key KEY BUNDLE          (the joined file)
#   parts:  rininstall verify --key KEY BUNDLE.parts    (the parts read in order as one stream)
# and reports the median wall time, the ratio parts/file, peak RSS (GNU time's %M), and the
# bytes in the work directory before and after a verify from parts (no joined copy is made).
# Target (issue: carrying bundles): the same time within noise, no extra disk.
# Needs: GNU time (/usr/bin/time). Writes to bench/out (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
PART_MIB=${PART_MIB:-400}
RUNS=${RUNS:-5}
W=${BENCH_DIR:-bench/out}

source bench/lib.sh
entry_bundle "$SIZE_MIB"
$B/rinbundle split "$BUNDLE" --size "${PART_MIB}M" --key "$W/bench.key" >/dev/null
echo "bundle: $(stat -c %s "$BUNDLE") bytes in $(ls "$BUNDLE".part-* | wc -l) parts of at most ${PART_MIB} MiB; $(nproc) cores; $RUNS runs each"
cat "$BUNDLE" "$BUNDLE".part-* > /dev/null   # warm the page cache


declare -A T M
for i in $(seq "$RUNS"); do
  read -r t m _ < <(measure file "$B/rininstall" verify --quiet --key "$W/bench.pub" "$BUNDLE")
  T[file]+="$t "; M[file]=$(( ${M[file]:-0} > m ? ${M[file]:-0} : m ))
  before=$(du -sb "$W" | cut -f1)
  read -r t m _ < <(measure parts "$B/rininstall" verify --quiet --key "$W/bench.pub" "$BUNDLE.parts")
  T[parts]+="$t "; M[parts]=$(( ${M[parts]:-0} > m ? ${M[parts]:-0} : m ))
  after=$(du -sb "$W" | cut -f1)
done
file=$(echo "${T[file]}" | median)
parts=$(echo "${T[parts]}" | median)
echo "file:   median ${file} s, peak RSS ${M[file]} KiB"
echo "parts:  median ${parts} s, peak RSS ${M[parts]} KiB"
echo "ratio parts/file: $(awk -v a="$parts" -v b="$file" 'BEGIN {printf "%.3f", a / b}')"
echo "work directory: ${before} bytes before a verify from parts, ${after} after"
