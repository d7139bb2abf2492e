#!/usr/bin/env bash
# Switchboard's e2e suite on a real cluster: kind, the two images built from the
# Dockerfiles, single-node Kafka, the Helm chart. For users with Docker and kind on
# Linux; our CI does not run it (see README.md beside this file).
#
# Usage: e2e/kind/run.sh [up|images|kafka|install|test|down|all]
#
#   up       create the kind cluster (kept if it exists)
#   images   docker build runtime/Dockerfile and operator/Dockerfile, kind load both
#   kafka    deploy Kafka (kafka.yaml) advertising NODE_IP:30092, wait until it serves
#   install  helm upgrade --install charts/switchboard with the loaded images
#   test     run the e2e suite against the cluster (SWITCHBOARD_E2E_EXTERNAL=1)
#   down     delete the kind cluster
#   all      (default) up, images, kafka, install, test; the cluster is kept: run
#            `down` when done, or KEEP=0 to delete it at the end (also on failure)
#
# Environment:
#   KIND_CLUSTER   cluster name           (switchboard-e2e)
#   IMAGE_TAG      tag of both images     (e2e)
#   KIND           kind binary            (kind)
#   DOCKER         docker binary          (docker)
#   KEEP           1: keep the cluster after `all` (1)
# Writes the cluster's kubeconfig to e2e/kind/.state/kubeconfig.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE_DIR=$SCRIPT_DIR/.state
KUBECONFIG_FILE=$STATE_DIR/kubeconfig

CLUSTER=${KIND_CLUSTER:-switchboard-e2e}
TAG=${IMAGE_TAG:-e2e}
KIND=${KIND:-kind}
DOCKER=${DOCKER:-docker}
KEEP=${KEEP:-1}
RUNTIME_IMAGE=switchboard-runtime:$TAG
OPERATOR_IMAGE=switchboard-operator:$TAG
KAFKA_PORT=30092
OPERATOR_NS=switchboard-system

log() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null || die "$t is required (see e2e/kind/README.md)"
	done
}

kubectl_() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# helm from PATH, else the one e2e/infra/helm.sh builds (needs Go).
helm_bin() {
	if command -v helm >/dev/null; then
		command -v helm
	else
		"$REPO_ROOT/e2e/infra/helm.sh" bin
	fi
}

cluster_exists() { "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

# Address of the kind node container on Docker's network: reachable from the host
# (Linux) and, with the NodePort, from every pod.
node_ip() {
	local ip
	ip=$("$DOCKER" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' \
		"$CLUSTER-control-plane")
	ip=${ip%% *}
	[[ -n $ip ]] || die "no address for node $CLUSTER-control-plane"
	echo "$ip"
}

cmd_up() {
	need "$KIND" "$DOCKER" kubectl
	mkdir -p "$STATE_DIR"
	if cluster_exists; then
		log "cluster $CLUSTER exists"
	else
		log "creating cluster $CLUSTER"
		"$KIND" create cluster --name "$CLUSTER" --config "$SCRIPT_DIR/kind-config.yaml" --wait 120s
	fi
	"$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
	chmod 600 "$KUBECONFIG_FILE"
	log "kubeconfig: $KUBECONFIG_FILE"
}

cmd_images() {
	need "$KIND" "$DOCKER"
	cluster_exists || die "no cluster $CLUSTER: run '$0 up' first"
	log "building $RUNTIME_IMAGE and $OPERATOR_IMAGE (the first build compiles librdkafka: minutes)"
	"$DOCKER" build -f "$REPO_ROOT/runtime/Dockerfile" -t "$RUNTIME_IMAGE" "$REPO_ROOT"
	"$DOCKER" build -f "$REPO_ROOT/operator/Dockerfile" -t "$OPERATOR_IMAGE" "$REPO_ROOT"
	"$KIND" load docker-image --name "$CLUSTER" "$RUNTIME_IMAGE" "$OPERATOR_IMAGE"
}

cmd_kafka() {
	need kubectl "$DOCKER"
	local ip
	ip=$(node_ip)
	log "deploying Kafka, advertised as $ip:$KAFKA_PORT"
	sed "s/NODE_IP/$ip/g" "$SCRIPT_DIR/kafka.yaml" | kubectl_ apply -f -
	kubectl_ -n kafka rollout status deployment/kafka --timeout=300s
	# The test process connects from the host: check that path too.
	local i
	for ((i = 0; i < 60; i++)); do
		if (exec 3<>"/dev/tcp/$ip/$KAFKA_PORT") 2>/dev/null; then
			log "Kafka answers on $ip:$KAFKA_PORT"
			return 0
		fi
		sleep 2
	done
	die "Kafka is not reachable from this host at $ip:$KAFKA_PORT (Docker Desktop does not route to container addresses; see README.md)"
}

cmd_install() {
	need kubectl
	local helm
	helm=$(helm_bin)
	log "installing charts/switchboard into $OPERATOR_NS"
	# pullPolicy Never: the images exist only inside the node (kind load). The runtime
	# pods' image has a non-latest tag, so Kubernetes defaults them to IfNotPresent.
	"$helm" upgrade --install switchboard "$REPO_ROOT/charts/switchboard" \
		--kubeconfig "$KUBECONFIG_FILE" \
		--namespace "$OPERATOR_NS" --create-namespace \
		--set image.repository=switchboard-operator \
		--set image.tag="$TAG" \
		--set image.pullPolicy=Never \
		--set runtimeImage.repository=switchboard-runtime \
		--set runtimeImage.tag="$TAG" \
		--wait --timeout 5m
	# Helm installs crds/ only on first install: keep them current on reruns. A rebuilt
	# image keeps its tag, so restart the operator to pick it up.
	kubectl_ apply --server-side --force-conflicts -f "$REPO_ROOT/charts/switchboard/crds/"
	kubectl_ -n "$OPERATOR_NS" rollout restart deployment/switchboard-operator
	kubectl_ -n "$OPERATOR_NS" rollout status deployment/switchboard-operator --timeout=300s
}

cmd_test() {
	need cargo "$DOCKER"
	local ip
	ip=$(node_ip)
	log "running the e2e suite (SWITCHBOARD_TEST_KAFKA=$ip:$KAFKA_PORT)"
	cd "$REPO_ROOT"
	# The suite's AgentRuntimes name the runtime image (spec.image); runtime pods are
	# reached through the API server's pod proxy, Kafka at the node address.
	SWITCHBOARD_E2E_EXTERNAL=1 \
		SWITCHBOARD_E2E_IMAGE="$RUNTIME_IMAGE" \
		KUBECONFIG="$KUBECONFIG_FILE" \
		SWITCHBOARD_TEST_KAFKA="$ip:$KAFKA_PORT" \
		cargo test -p switchboard-e2e --test e2e_suite
}

cmd_down() {
	need "$KIND"
	if cluster_exists; then
		"$KIND" delete cluster --name "$CLUSTER"
	fi
	rm -f "$KUBECONFIG_FILE"
}

cmd_all() {
	if [[ $KEEP != 1 ]]; then
		trap cmd_down EXIT
	fi
	cmd_up
	cmd_images
	cmd_kafka
	cmd_install
	cmd_test
	if [[ $KEEP == 1 ]]; then
		log "passed; cluster $CLUSTER kept (KUBECONFIG=$KUBECONFIG_FILE); '$0 down' deletes it"
	else
		log "passed"
	fi
}

case "${1:-all}" in
up) cmd_up ;;
images) cmd_images ;;
kafka) cmd_kafka ;;
install) cmd_install ;;
test) cmd_test ;;
down) cmd_down ;;
all) cmd_all ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
