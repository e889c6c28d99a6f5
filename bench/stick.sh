#!/usr/bin/env bash
# stick.sh CMD...: CMD with its reads from the disk throttled as bench/lib.sh's stick_setup set
# them (STICK_MIBPS), as from a USB stick; without STICK_MIBPS, CMD as it is.
if [ "${STICK_MIBPS:-0}" != 0 ]; then
  echo $$ > /sys/fs/cgroup/blkio/rin-bench/cgroup.procs
fi
exec "$@"
