#!/usr/bin/env bash
# Run each fuzz target for SECONDS (default 300), JOBS at a time (default 1), from the committed
# seeds in fuzz/seeds/TARGET; what a run finds is kept in fuzz/corpus/TARGET (not committed), and
# a crash in fuzz/artifacts/TARGET. Prints executions and coverage per target at the end.
#
#   bash fuzz/run.sh [SECONDS] [JOBS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); stable Rust is enough
# (RUSTC_BOOTSTRAP=1). No sanitizer (-s none): Rust's own checks (bounds, overflow with debug
# assertions, panics) are what finds bugs here, and the targets link C code (zstd) that needs none.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
jobs=${2:-1}
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(index reader tar header stack lock oci documents host release)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none >/dev/null
mkdir -p fuzz/logs
run() {
  local t=$1
  mkdir -p "fuzz/corpus/$t"
  cargo fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    > "fuzz/logs/$t.log" 2>&1 || echo "$t: stopped with a finding (fuzz/artifacts/$t, fuzz/logs/$t.log)"
}
running=0
for t in "${targets[@]}"; do
  run "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true
printf '%-10s %12s %8s %8s %s\n' target executions cov ft crashes
for t in "${targets[@]}"; do
  log="fuzz/logs/$t.log"
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo ?)
  cov=$(grep -o '#[0-9]*.*cov: [0-9]*' "$log" | tail -1 | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo ?)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo ?)
  crashes=$(ls "fuzz/artifacts/$t" 2>/dev/null | wc -l)
  printf '%-10s %12s %8s %8s %s\n' "$t" "$execs" "$cov" "$ft" "$crashes"
done
