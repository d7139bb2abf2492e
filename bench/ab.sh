#!/usr/bin/env bash
# A/B of two builds of the benchmarks on one broker, alternated so that load from
# elsewhere on the machine hits both:
#
#   bench/ab.sh OLD_DIR NEW_DIR OUT_DIR ROUNDS SCENARIO...
#
# OLD_DIR and NEW_DIR each hold a `bench` and its `bench_host` (copies of
# target/release/ from the two commits). Each round runs every scenario with both
# builds, the order of the two swapped every other round. Writes
# OUT_DIR/SCENARIO.{A,B}.ROUND.json (A = old, B = new) and OUT_DIR/log with the load
# average before each run. The broker: SWITCHBOARD_BOOTSTRAP_SERVERS (default
# 127.0.0.1:$SWITCHBOARD_KAFKA_PORT), its pid from e2e/infra/kafka.sh for CPU figures.
set -euo pipefail

[ $# -ge 5 ] || { echo "usage: $0 OLD_DIR NEW_DIR OUT_DIR ROUNDS SCENARIO..." >&2; exit 2; }
old=$1 new=$2 out=$3 rounds=$4
shift 4
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bootstrap="${SWITCHBOARD_BOOTSTRAP_SERVERS:-127.0.0.1:${SWITCHBOARD_KAFKA_PORT:-9092}}"
broker_pid="$("$here/../e2e/infra/kafka.sh" pid)"
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  order="A B"
  [ $((r % 2)) = 1 ] || order="B A"
  for scenario in "$@"; do
    for side in $order; do
      dir=$old
      [ "$side" = A ] || dir=$new
      echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $scenario $side round $r" >>"$out/log"
      if ! timeout 900 "$dir/bench" "$scenario" --bootstrap "$bootstrap" --broker-pid "$broker_pid" \
        >"$out/$scenario.$side.$r.json" 2>"$out/$scenario.$side.$r.err"; then
        echo "FAILED $scenario $side round $r" >>"$out/log"
      fi
    done
  done
done
echo "$(date +%T) end load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/log"
