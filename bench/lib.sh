# Helpers shared by the bench scripts (sourced; the caller sets W, its output directory).

# measure LABEL COMMAND...: run it once; print "seconds peak_kib user_s sys_s" (GNU time) and
# append the same with LABEL to $W/times.log.
measure() {
  local label=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$W/time.$label" "$@" > /dev/null
  echo "$label $(cat "$W/time.$label")" >> "$W/times.log"
  cat "$W/time.$label"
}

# median: of the numbers on stdin (space or newline separated).
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# start_registry DIR: a fresh Debian docker-registry (CNCF Distribution) on a random loopback port
# with its storage in DIR/data; sets ADDR and REG_PID. stop_registry ends it.
REG_PID=
start_registry() {
  local d=$1
  rm -rf "$d"; mkdir -p "$d"
  printf 'version: 0.1\nlog: { level: info }\nstorage: { filesystem: { rootdirectory: %s/data } }\nhttp: { addr: 127.0.0.1:0 }\n' "$d" > "$d/config.yml"
  docker-registry serve "$d/config.yml" > "$d/log" 2>&1 &
  REG_PID=$!
  ADDR=
  for _ in $(seq 100); do
    ADDR=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$d/log" | head -1 | sed 's/listening on //') || true
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "registry did not start" >&2; exit 1; }
}
stop_registry() { [ -z "$REG_PID" ] || { kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; }; }

# release_bins: the release binaries, built (into CARGO_TARGET_DIR when set); sets B.
release_bins() {
  cargo build --release --quiet -p rin-builder -p rin-installer -p rin-tests --bins
  B=${CARGO_TARGET_DIR:-$PWD/target}/release
}

# fresh_dir: $W emptied and made absolute.
fresh_dir() { rm -rf "$W"; mkdir -p "$W"; W=$(cd "$W" && pwd); }

# images_stack DIR LAYOUT COUNT VERSION [K3S_DIR] [MORE...]: DIR/bundle.yaml of the bench images
# img0 .. img<COUNT-1> and the MORE names of the OCI layout LAYOUT, with K3s's (stand-in) files
# from K3S_DIR when it is not empty.
images_stack() {
  local dir=$1 layout=$2 count=$3 version=$4 k3s=${5:-}
  shift 5 2>/dev/null || shift $#
  mkdir -p "$dir/manifests"
  {
    echo "name: bench"; echo "version: $version"; echo "platforms: [amd64, arm64]"
    [ -z "$k3s" ] || echo "k3s: {version: v1.31.4+k3s1, files: $k3s}"
    echo "images:"
    local names=() i
    for i in $(seq 0 $((count - 1))); do names+=("img$i"); done
    for i in "${names[@]}" "$@"; do
      echo "  - reference: site.example/bench/$i:1.0"
      echo "    layout: $layout"
      echo "    name: $i"
    done
  } > "$dir/bundle.yaml"
}

# entry_bundle SIZE_MIB: release binaries (B) and a signed bundle holding one incompressible entry
# of SIZE_MIB MiB in a fresh $W, with its key ($W/bench.key, .pub); sets BUNDLE.
entry_bundle() {
  release_bins
  fresh_dir
  $B/rin-fixture bench-stack --out "$W/stack" --size-mib "$1" >/dev/null
  $B/rinbundle keygen --out "$W/bench" >/dev/null
  SOURCE_DATE_EPOCH=0 $B/rinbundle build --quiet --stack "$W/stack" --arch amd64 --key "$W/bench.key" -o "$W/bench.tar.zst" >/dev/null
  BUNDLE="$W/bench.tar.zst"
}

# The slow medium: with STICK_MIBPS set (and root, and cgroup v1's blkio), stick_setup throttles
# reads from the disk holding $W to that many MiB/s for commands run through bench/stick.sh, as
# from a USB stick (drop the page cache first, or the reads never reach the disk).
stick_setup() {
  [ "${STICK_MIBPS:-0}" != 0 ] || return 0
  export STICK_MIBPS
  local dev cg=/sys/fs/cgroup/blkio/rin-bench
  dev=$(stat -c '%d' "$W")  # st_dev: major * 256 + minor (for minors below 256)
  mkdir -p "$cg"
  echo "$(( dev >> 8 )):$(( dev & 255 )) $(( STICK_MIBPS << 20 ))" > "$cg/blkio.throttle.read_bps_device"
}
