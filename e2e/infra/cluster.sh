#!/usr/bin/env bash
# Local Kubernetes control plane for Switchboard's end-to-end tests.
#
# Runs a real etcd + kube-apiserver + kube-controller-manager as plain
# processes on 127.0.0.1 (no Docker, no kubelet, no nodes): enough for the
# operator to create Deployments/Services/ConfigMaps and for the built-in
# controllers (deployment, replicaset, garbage collector, namespace,
# serviceaccount, ...) to act on them. Pods stay Pending, as there are no nodes.
#
# The binaries are compiled from source fetched through the Go module proxy
# (the only network this script uses) and cached per version, so only the
# first run on a machine pays for the build.
#
# Usage: cluster.sh start|stop [--clean]|status|kubeconfig|bindir|build
#
#   build       build (or reuse cached) etcd, kube-apiserver,
#               kube-controller-manager and kubectl
#   start       build if needed, then start the control plane and wait until it
#               is ready; a no-op when it is already running and healthy.
#               A start after a stop begins with an empty etcd (certs are kept).
#   stop        stop the processes started by `start` (by their pid files);
#               --clean also removes the state dir (certs, etcd data, logs)
#   status      per-component state; exit 0 when everything is up, 3 otherwise
#   kubeconfig  print the absolute path of the admin kubeconfig, nothing else
#   bindir      print the absolute path of the directory holding the binaries
#               (kubectl among them), nothing else
#
# Environment:
#   SWITCHBOARD_CACHE            build cache root       (~/.cache/switchboard)
#   SWITCHBOARD_STATE_DIR        state root              (<repo>/.state)
#   SWITCHBOARD_ETCD_PORT        etcd client port        (23790)
#   SWITCHBOARD_ETCD_PEER_PORT   etcd peer port          (23800)
#   SWITCHBOARD_APISERVER_PORT   kube-apiserver port     (6443)
#   SWITCHBOARD_CM_PORT          controller-manager port (10257)
#   SWITCHBOARD_CLUSTER_TIMEOUT  seconds to wait for readiness (120)
set -euo pipefail

# ---------------------------------------------------------------------------
# Versions: change here. The k8s staging modules (k8s.io/api, client-go, ...)
# are released as v0.<minor>.<patch> alongside k8s.io/kubernetes v1.<minor>.<patch>.
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
# Used only when the local Go is older than the one k8s's go.mod asks for;
# the go command then fetches this toolchain through the module proxy.
FALLBACK_GOTOOLCHAIN=go1.27.3
# ---------------------------------------------------------------------------

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

CACHE_ROOT=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}
BUILD_DIR=$CACHE_ROOT/k8s/$K8S_VERSION
BIN_DIR=$BUILD_DIR/bin

STATE_ROOT=${SWITCHBOARD_STATE_DIR:-$REPO_ROOT/.state}
STATE_DIR=$STATE_ROOT/cluster
PKI_DIR=$STATE_DIR/pki
ETCD_DATA_DIR=$STATE_DIR/etcd-data
ADMIN_KUBECONFIG=$STATE_DIR/kubeconfig
CM_KUBECONFIG=$STATE_DIR/controller-manager.kubeconfig

HOST=127.0.0.1
ETCD_PORT=${SWITCHBOARD_ETCD_PORT:-23790}
ETCD_PEER_PORT=${SWITCHBOARD_ETCD_PEER_PORT:-23800}
APISERVER_PORT=${SWITCHBOARD_APISERVER_PORT:-6443}
CM_PORT=${SWITCHBOARD_CM_PORT:-10257}
TIMEOUT=${SWITCHBOARD_CLUSTER_TIMEOUT:-120}

# Services only get addresses allocated from this range (stored in etcd);
# nothing routes to it. The first address goes to the `kubernetes` Service.
SERVICE_CIDR=10.96.0.0/16
FIRST_SERVICE_IP=10.96.0.1

# Stop order; start order is the reverse.
COMPONENTS=(kube-controller-manager kube-apiserver etcd)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ===========================================================================
# build
# ===========================================================================

# Go environment for the builds: the default module and build caches (so CI
# and developers share them), no go.work from anywhere up the tree, and the
# module proxy only (a ",direct" fallback would fetch from origin servers).
go_env() {
	command -v go >/dev/null || die "go is not installed"
	export GOWORK=off CGO_ENABLED=0
	local proxy
	proxy=$(go env GOPROXY)
	proxy=${proxy%,direct}
	proxy=${proxy%|direct}
	[[ -n $proxy && $proxy != direct && $proxy != off ]] ||
		die "GOPROXY ($(go env GOPROXY)) names no module proxy"
	export GOPROXY=$proxy
}

# Print the go.mod path of module@version, downloading it through the proxy.
module_gomod() {
	go mod download -json "$1" | sed -nE 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p'
}

# If the local Go is older than what k8s.io/kubernetes requires, let the go
# command switch to a newer toolchain (itself a module on the proxy).
select_toolchain() {
	local need have
	need=$(sed -nE 's/^go ([0-9.]+)$/\1/p' "$1")
	have=$(go env GOVERSION)
	have=${have#go}
	if [[ $(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1) != "$need" ]]; then
		log "local go $have < $need required by k8s $K8S_VERSION: using GOTOOLCHAIN=$FALLBACK_GOTOOLCHAIN"
		export GOTOOLCHAIN=$FALLBACK_GOTOOLCHAIN
	fi
}

# Write a throwaway module in $1 whose tools.go imports the given main
# packages (the usual "tools" pattern: never compiled, only read by tidy).
write_tools_module() {
	local dir=$1 gomod=$2
	shift 2
	{
		printf '//go:build tools\n\npackage tools\n\nimport (\n'
		printf '\t_ "%s"\n' "$@"
		printf ')\n'
	} >"$dir/tools.go"
	cat >"$dir/go.mod" <<-EOF
		module switchboard.local/k8sbuild

		$(grep -E '^go [0-9.]+$' "$gomod")
	EOF
}

# go build the given main packages from module dir $1 into BIN_DIR. Builds
# into a temp dir first, then renames, so an interrupted build never leaves a
# half-written binary behind.
build_into_bin() {
	local dir=$1 ldflags=$2
	shift 2
	local tmp
	tmp=$(mktemp -d "$BIN_DIR/.tmp.XXXXXX")
	(cd "$dir" && go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/" "$@")
	local f
	for f in "$tmp"/*; do
		mv -f "$f" "$BIN_DIR/"
	done
	rmdir "$tmp"
}

build_kubernetes() {
	local stamp=$BIN_DIR/.k8s.stamp
	[[ -f $stamp && $(<"$stamp") == "$K8S_VERSION" ]] && return 0

	local t0=$SECONDS src=$BUILD_DIR/src/kubernetes
	log "building kubernetes $K8S_VERSION (first time only; 10-25 min on 2 cores)"
	rm -rf "$src" && mkdir -p "$src"
	cd "$src"

	local kgomod
	kgomod=$(module_gomod "k8s.io/kubernetes@$K8S_VERSION")
	[[ -f $kgomod ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
	select_toolchain "$kgomod"

	write_tools_module "$src" "$kgomod" \
		k8s.io/kubernetes/cmd/kube-apiserver \
		k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kubectl
	# k/k requires its staging modules at v0.0.0 and replaces them with
	# ./staging/src/k8s.io/<name>; replace directives of a dependency are
	# ignored, so mirror each one here with the published v0.<minor>.<patch>.
	local staging=v0.${K8S_VERSION#v1.}
	{
		printf '\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
		sed -nE "s#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+) => \./staging/src/.*#\t\1 => \1 $staging#p" "$kgomod"
		printf ')\n'
	} >>go.mod
	go mod tidy

	# What hack/lib/version.sh stamps; the apiserver derives its default
	# compatibility/emulation version from gitVersion, so it must be real.
	local minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	local ldflags="-s -w" pkg
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	done
	build_into_bin "$src" "$ldflags" \
		k8s.io/kubernetes/cmd/kube-apiserver \
		k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kubectl

	echo "$K8S_VERSION" >"$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
	rm -rf "$src"
	log "built kubernetes $K8S_VERSION in $((SECONDS - t0)) s"
}

build_etcd() {
	local stamp=$BIN_DIR/.etcd.stamp
	[[ -f $stamp && $(<"$stamp") == "$ETCD_VERSION" ]] && return 0

	local t0=$SECONDS src=$BUILD_DIR/src/etcd
	log "building etcd $ETCD_VERSION"
	rm -rf "$src" && mkdir -p "$src"
	cd "$src"

	local egomod
	egomod=$(module_gomod "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
	[[ -f $egomod ]] || die "could not download go.etcd.io/etcd/server/v3@$ETCD_VERSION"
	# A separate module from kubernetes' so that etcd is built with its own
	# pinned dependency versions, not whatever MVS would pick for both.
	# The etcd server's main package is the module root (main.go).
	write_tools_module "$src" "$egomod" go.etcd.io/etcd/server/v3
	printf '\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >>go.mod
	go mod tidy

	local tmp
	tmp=$(mktemp -d "$BIN_DIR/.tmp.XXXXXX")
	go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
	mv -f "$tmp/etcd" "$BIN_DIR/etcd"
	rmdir "$tmp"

	echo "$ETCD_VERSION" >"$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
	rm -rf "$src"
	log "built etcd $ETCD_VERSION in $((SECONDS - t0)) s"
}

cmd_build() {
	# Fast path: everything already built for these versions.
	if [[ -f $BIN_DIR/.k8s.stamp && $(<"$BIN_DIR/.k8s.stamp") == "$K8S_VERSION" &&
		-f $BIN_DIR/.etcd.stamp && $(<"$BIN_DIR/.etcd.stamp") == "$ETCD_VERSION" ]]; then
		return 0
	fi
	mkdir -p "$BIN_DIR"
	# One build at a time per version (e.g. two test runs starting at once);
	# the second one waits, then finds the stamps and returns.
	exec 8>"$BUILD_DIR/.build.lock"
	flock 8
	go_env
	(build_etcd)
	(build_kubernetes)
	rm -rf "$BUILD_DIR/src" "$BIN_DIR"/.tmp.*
	exec 8>&-
}

case "${1:-}" in build) cmd_build ;; esac
