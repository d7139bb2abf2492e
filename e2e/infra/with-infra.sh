#!/usr/bin/env bash
# Runs a command with the real test infrastructure up: starts Kafka and the
# Kubernetes control plane (in parallel), exports SWITCHBOARD_TEST_KAFKA and
# KUBECONFIG, runs the command, and stops both again whatever the outcome.
# `with-infra.sh --kafka-only CMD` starts just the broker (benchmarks).
# Without --kafka-only it also starts the secured broker (kafka.sh with
# SWITCHBOARD_KAFKA_SECURITY=1: SASL_SSL + mTLS + ACLs, own ports and state) for
# the security tests and exports SWITCHBOARD_TEST_KAFKA_SECURED=1;
# SWITCHBOARD_INFRA_SECURED=0 leaves it out.
# `with-infra.sh --node CMD` also brings up the real worker node (node.sh):
# its bridge first, the API server and a Kafka listener on the bridge's host
# address (exported as SWITCHBOARD_TEST_KAFKA_PODS for pods), then kubelet,
# containerd, kube-proxy, kube-scheduler and CoreDNS. Opt-in (root, and a
# first build of several minutes); `make test` does not use it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${SWITCHBOARD_STATE_DIR:-$(cd "$here/../.." && pwd)/.state}"
mkdir -p "$state"
with_cluster=1
with_secured="${SWITCHBOARD_INFRA_SECURED:-1}"
with_node=0
if [ "${1:-}" = "--kafka-only" ]; then
  with_cluster=0
  with_secured=0
  shift
elif [ "${1:-}" = "--node" ]; then
  with_node=1
  shift
fi

stop_all() {
  local rc=$?
  echo "with-infra: stopping what it started" >&2
  [ "$with_node" = 0 ] || "$here/node.sh" stop >&2 || true
  [ "$with_cluster" = 0 ] || "$here/cluster.sh" stop >&2 || true
  [ "$with_secured" = 0 ] || SWITCHBOARD_KAFKA_SECURITY=1 "$here/kafka.sh" stop >&2 || true
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
  # Again, now that nothing listens on the bridge: removes it.
  [ "$with_node" = 0 ] || "$here/node.sh" stop >&2 || true
  exit "$rc"
}
trap stop_all EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

if [ "$with_node" = 1 ]; then
  # Build first (minutes, once) so the broker and control plane are not left idle.
  "$here/node.sh" build >&2
  "$here/node.sh" network >&2
  node_ip="$("$here/node.sh" host-ip)"
  export SWITCHBOARD_APISERVER_ADDRESS="$node_ip"
  export SWITCHBOARD_KAFKA_POD_LISTENER="${SWITCHBOARD_KAFKA_POD_LISTENER:-$node_ip:${SWITCHBOARD_KAFKA_POD_PORT:-9099}}"
fi
# Start both at once: the broker's JVM and the control plane each take seconds.
"$here/kafka.sh" start >"$state/kafka-start.log" 2>&1 &
kafka_pid=$!
if [ "$with_cluster" = 1 ]; then
  "$here/cluster.sh" start >"$state/cluster-start.log" 2>&1 &
  cluster_pid=$!
fi
if [ "$with_secured" = 1 ]; then
  SWITCHBOARD_KAFKA_SECURITY=1 "$here/kafka.sh" start >"$state/kafka-secured-start.log" 2>&1 &
  secured_pid=$!
fi
failed=0
wait "$kafka_pid" || { echo "with-infra: Kafka failed to start:" >&2; cat "$state/kafka-start.log" >&2; failed=1; }
if [ "$with_cluster" = 1 ]; then
  wait "$cluster_pid" || { echo "with-infra: control plane failed to start:" >&2; cat "$state/cluster-start.log" >&2; failed=1; }
fi
if [ "$with_secured" = 1 ]; then
  wait "$secured_pid" || { echo "with-infra: secured Kafka failed to start:" >&2; cat "$state/kafka-secured-start.log" >&2; failed=1; }
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
if [ "$with_secured" = 1 ]; then
  tail -n 1 "$state/kafka-secured-start.log" >&2
  SWITCHBOARD_TEST_KAFKA_SECURED=1
  export SWITCHBOARD_TEST_KAFKA_SECURED
fi
if [ "$with_node" = 1 ]; then
  "$here/node.sh" start >"$state/node-start.log" 2>&1 || { echo "with-infra: node failed to start:" >&2; cat "$state/node-start.log" >&2; exit 1; }
  tail -n 1 "$state/node-start.log" >&2
  SWITCHBOARD_TEST_KAFKA_PODS="$SWITCHBOARD_KAFKA_POD_LISTENER"
  export SWITCHBOARD_TEST_KAFKA_PODS
fi
echo "with-infra: SWITCHBOARD_TEST_KAFKA=$SWITCHBOARD_TEST_KAFKA KUBECONFIG=${KUBECONFIG:-}${SWITCHBOARD_TEST_KAFKA_PODS:+ SWITCHBOARD_TEST_KAFKA_PODS=$SWITCHBOARD_TEST_KAFKA_PODS}" >&2

"$@"
