#!/usr/bin/env bash
# Runs a command with the real test infrastructure up: starts Kafka and the
# Kubernetes control plane (in parallel), exports SWITCHBOARD_TEST_KAFKA and
# KUBECONFIG, runs the command, and stops both again whatever the outcome.
# `with-infra.sh --kafka-only CMD` starts just the broker (benchmarks).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${SWITCHBOARD_STATE_DIR:-$(cd "$here/../.." && pwd)/.state}"
mkdir -p "$state"
with_cluster=1
if [ "${1:-}" = "--kafka-only" ]; then
  with_cluster=0
  shift
fi

stop_all() {
  local rc=$?
  echo "with-infra: stopping what it started" >&2
  [ "$with_cluster" = 0 ] || "$here/cluster.sh" stop >&2 || true
  "$here/kafka.sh" stop >&2 || true
  # Brokers and proxies a test started itself (e2e/src/faults.rs) and could not stop,
  # e.g. because the test process was killed: each by its own pid file.
  local owned
  for owned in "$state"/owned/*/; do
    [ -d "$owned" ] || continue
    SWITCHBOARD_STATE_DIR="$owned" "$here/kafka.sh" stop >&2 || true
    SWITCHBOARD_STATE_DIR="$owned" "$here/toxiproxy.sh" stop >&2 || true
    rm -rf "$owned"
  done
  exit "$rc"
}
trap stop_all EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# Start both at once: the broker's JVM and the control plane each take seconds.
"$here/kafka.sh" start >"$state/kafka-start.log" 2>&1 &
kafka_pid=$!
if [ "$with_cluster" = 1 ]; then
  "$here/cluster.sh" start >"$state/cluster-start.log" 2>&1 &
  cluster_pid=$!
fi
failed=0
wait "$kafka_pid" || { echo "with-infra: Kafka failed to start:" >&2; cat "$state/kafka-start.log" >&2; failed=1; }
if [ "$with_cluster" = 1 ]; then
  wait "$cluster_pid" || { echo "with-infra: control plane failed to start:" >&2; cat "$state/cluster-start.log" >&2; failed=1; }
fi
[ "$failed" = 0 ] || exit 1
tail -n 1 "$state/kafka-start.log" >&2
SWITCHBOARD_TEST_KAFKA="$("$here/kafka.sh" bootstrap)"
export SWITCHBOARD_TEST_KAFKA
if [ "$with_cluster" = 1 ]; then
  tail -n 1 "$state/cluster-start.log" >&2
  KUBECONFIG="$("$here/cluster.sh" kubeconfig)"
  export KUBECONFIG
fi
echo "with-infra: SWITCHBOARD_TEST_KAFKA=$SWITCHBOARD_TEST_KAFKA KUBECONFIG=${KUBECONFIG:-}" >&2

"$@"
