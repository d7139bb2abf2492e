#!/usr/bin/env bash
# The end-to-end suite (e2e/tests/e2e_suite.rs) against the real node, with
# our images: run under `with-infra.sh --node` (make node-e2e), after
# `make images`.
#   1. loads the images built from runtime/Dockerfile and operator/Dockerfile
#      into the node's containerd (images.sh load);
#   2. installs charts/switchboard in-cluster (namespace switchboard-system,
#      labelled to enforce the restricted Pod Security Standard) with those
#      images, and waits until the operator is Ready;
#   3. runs the suite in external mode (SWITCHBOARD_E2E_EXTERNAL=1): the
#      in-cluster operator and kubelet manage the runtime pods, which run the
#      runtime image; Kafka is the broker's listener on the bridge (reachable
#      from the pods and from here);
#   4. uninstalls the chart (also on failure).
# Environment:
#   SWITCHBOARD_E2E_SUITE_BIN  an already built e2e_suite test binary to run
#                              instead of `cargo test -p switchboard-e2e --test e2e_suite`
#   SWITCHBOARD_NODE_E2E_TIMEOUT  seconds for the helm install [300]
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE_ROOT=$(realpath -m "${SWITCHBOARD_STATE_DIR:-$REPO_ROOT/.state}")
KUBECONFIG_FILE=$STATE_ROOT/cluster/kubeconfig
KUBECTL=$("$SCRIPT_DIR/cluster.sh" bindir)/kubectl
OP_NS=switchboard-system
RELEASE=switchboard
TIMEOUT=${SWITCHBOARD_NODE_E2E_TIMEOUT:-300}

log() { printf '[node-e2e] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=15s "$@"; }

[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "SWITCHBOARD_NODE_E2E_TIMEOUT must be a number of seconds (got '$TIMEOUT')"
[[ -n ${SWITCHBOARD_TEST_KAFKA_PODS:-} ]] || die "no Kafka pod listener: run under e2e/infra/with-infra.sh --node"
"$SCRIPT_DIR/node.sh" status >/dev/null || die "the node is not up (with-infra.sh --node starts it)"

"$SCRIPT_DIR/images.sh" load
runtime_image=$("$SCRIPT_DIR/images.sh" names | sed -n 1p)
operator_image=$("$SCRIPT_DIR/images.sh" names | sed -n 2p)
HELM=$("$SCRIPT_DIR/helm.sh" bin)

# shellcheck disable=SC2317 # run by the EXIT trap
uninstall() {
	log "uninstalling the chart"
	"$HELM" --kubeconfig "$KUBECONFIG_FILE" uninstall "$RELEASE" --namespace "$OP_NS" --wait --timeout 120s >/dev/null 2>&1 || true
	k delete namespace "$OP_NS" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
}
trap uninstall EXIT

k create namespace "$OP_NS" --dry-run=client -o yaml | k apply -f - >/dev/null
k label --overwrite namespace "$OP_NS" pod-security.kubernetes.io/enforce=restricted \
	pod-security.kubernetes.io/enforce-version=latest >/dev/null
t0=$SECONDS
log "helm install charts/switchboard into $OP_NS: operator $operator_image, runtime pods $runtime_image"
"$HELM" --kubeconfig "$KUBECONFIG_FILE" upgrade --install "$RELEASE" "$REPO_ROOT/charts/switchboard" \
	--namespace "$OP_NS" \
	--set image.repository="${operator_image%:*}" --set image.tag="${operator_image##*:}" \
	--set image.pullPolicy=Never \
	--set runtimeImage.repository="${runtime_image%:*}" --set runtimeImage.tag="${runtime_image##*:}" \
	--wait --timeout "${TIMEOUT}s" >&2 || {
	k -n "$OP_NS" get pods -o wide >&2 || true
	die "helm install failed"
}
log "operator Ready in-cluster after $((SECONDS - t0)) s"

# KUBECTL: the suite's kubectl, the API server's own version (as the suite's default).
export SWITCHBOARD_E2E_EXTERNAL=1 SWITCHBOARD_E2E_IMAGE=$runtime_image KUBECONFIG=$KUBECONFIG_FILE KUBECTL=$KUBECTL
export SWITCHBOARD_TEST_KAFKA=$SWITCHBOARD_TEST_KAFKA_PODS
log "running the e2e suite against the node (Kafka $SWITCHBOARD_TEST_KAFKA)"
t1=$SECONDS
rc=0
if [[ -n ${SWITCHBOARD_E2E_SUITE_BIN:-} ]]; then
	[[ -x $SWITCHBOARD_E2E_SUITE_BIN ]] || die "SWITCHBOARD_E2E_SUITE_BIN is not an executable: $SWITCHBOARD_E2E_SUITE_BIN"
	(cd "$REPO_ROOT/e2e" && "$SWITCHBOARD_E2E_SUITE_BIN" --test-threads=1) || rc=$?
else
	(cd "$REPO_ROOT" && cargo test -p switchboard-e2e --test e2e_suite) || rc=$?
fi
log "suite finished in $((SECONDS - t1)) s (exit $rc)"
if ((rc != 0)); then
	log "operator log (last 40 lines):"
	k -n "$OP_NS" logs deployment/"$RELEASE"-operator --tail=40 >&2 || true
fi
exit "$rc"
