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
#   SWITCHBOARD_APISERVER_ADDRESS  address kube-apiserver binds to and
#                                advertises (127.0.0.1). node.sh sets it to its
#                                bridge's host-side address so pods reach the
#                                API server (the `kubernetes` Service then gets
#                                that endpoint); the address must already exist
#                                (`node.sh network` creates it).
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

CACHE_ROOT=$(realpath -m "${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}")
BUILD_DIR=$CACHE_ROOT/k8s/$K8S_VERSION
BIN_DIR=$BUILD_DIR/bin

STATE_ROOT=$(realpath -m "${SWITCHBOARD_STATE_DIR:-$REPO_ROOT/.state}")
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
APISERVER_HOST=${SWITCHBOARD_APISERVER_ADDRESS:-$HOST}

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

# go_env, module_gomod, select_toolchain
# shellcheck source=e2e/infra/golib.sh
source "$(dirname "${BASH_SOURCE[0]}")/golib.sh"
# shellcheck source=e2e/infra/components.sh
source "$(dirname "${BASH_SOURCE[0]}")/components.sh"

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
	(cd "$dir" && go_build_progress "$BUILD_DIR/build.log" -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/" "$@")
	local f
	for f in "$tmp"/*; do
		mv -f "$f" "$BIN_DIR/"
	done
	rmdir "$tmp"
}

# build_k8s_set STAMP_NAME CMD...: build the given k8s.io/kubernetes/cmd/<CMD>
# programs into BIN_DIR, once per version (BIN_DIR/.STAMP_NAME.stamp). The
# control plane and the node's programs are separate sets, so `make test`
# (control plane only) never pays for kubelet and kube-proxy.
build_k8s_set() {
	local stamp=$BIN_DIR/.$1.stamp
	shift
	[[ -f $stamp && $(<"$stamp") == "$K8S_VERSION" ]] && return 0

	local t0=$SECONDS src=$BUILD_DIR/src/kubernetes-${stamp##*/.}
	local -a pkgs=()
	local c
	for c in "$@"; do
		pkgs+=("k8s.io/kubernetes/cmd/$c")
	done
	log "building kubernetes $K8S_VERSION: $* (first time only; 5-25 min on 2 cores)"
	rm -rf "$src" && mkdir -p "$src"
	cd "$src"

	local kgomod
	kgomod=$(module_gomod "k8s.io/kubernetes@$K8S_VERSION")
	[[ -f $kgomod ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
	select_toolchain "$kgomod"

	write_tools_module "$src" "$kgomod" "${pkgs[@]}"
	# k/k requires its staging modules at v0.0.0 and replaces them with
	# ./staging/src/k8s.io/<name>; replace directives of a dependency are
	# ignored, so mirror each one here with the published v0.<minor>.<patch>.
	local staging=v0.${K8S_VERSION#v1.}
	{
		printf '\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
		sed -nE "s#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+) => \./staging/src/.*#\t\1 => \1 $staging#p" "$kgomod"
		printf ')\n'
	} >>go.mod
	log "resolving modules (go mod tidy)"
	go mod tidy

	# What hack/lib/version.sh stamps; the apiserver derives its default
	# compatibility/emulation version from gitVersion, so it must be real.
	local minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	local ldflags="-s -w" pkg
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	done
	log "compiling $* (package list: $BUILD_DIR/build.log)"
	build_into_bin "$src" "$ldflags" "${pkgs[@]}"

	echo "$K8S_VERSION" >"$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
	rm -rf "$src"
	log "built $* ($K8S_VERSION) in $((SECONDS - t0)) s"
}

build_kubernetes() {
	build_k8s_set k8s kube-apiserver kube-controller-manager kubectl
}

# The worker node's programs (node.sh), same version as the API server.
build_kubernetes_node() {
	build_k8s_set k8s-node kubelet kube-proxy kube-scheduler
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
	select_toolchain "$egomod"
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

cmd_build_node() {
	cmd_build
	[[ -f $BIN_DIR/.k8s-node.stamp && $(<"$BIN_DIR/.k8s-node.stamp") == "$K8S_VERSION" ]] && return 0
	exec 8>"$BUILD_DIR/.build.lock"
	flock 8
	go_env
	(build_kubernetes_node)
	rm -rf "$BUILD_DIR/src" "$BIN_DIR"/.tmp.*
	exec 8>&-
}

# ===========================================================================
# certificates and kubeconfigs
# ===========================================================================

# openssl config shared by all certificates; sections are picked per cert.
write_openssl_cnf() {
	cat >"$1" <<-EOF
		[req]
		distinguished_name = dn
		prompt = no
		[dn]
		[ca]
		basicConstraints = critical, CA:TRUE
		keyUsage = critical, keyCertSign, cRLSign, digitalSignature
		subjectKeyIdentifier = hash
		[server]
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, digitalSignature, keyEncipherment
		extendedKeyUsage = serverAuth
		subjectAltName = IP:$HOST, IP:$APISERVER_HOST, IP:$FIRST_SERVICE_IP, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
		[client]
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, digitalSignature, keyEncipherment
		extendedKeyUsage = clientAuth
	EOF
}

genkey() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }

# make_ca NAME CN: self-signed NAME.key + NAME.crt.
make_ca() {
	genkey "$1.key"
	openssl req -x509 -new -config openssl.cnf -extensions ca -key "$1.key" \
		-subj "/CN=$2" -days 3650 -out "$1.crt"
}

# sign_cert CA NAME SUBJECT SECTION: NAME.key + NAME.crt signed by CA.
sign_cert() {
	local ca=$1 name=$2
	genkey "$name.key"
	openssl req -new -config openssl.cnf -key "$name.key" -subj "$3" -out "$name.csr"
	openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 3650 \
		-extfile openssl.cnf -extensions "$4" -out "$name.crt" 2>/dev/null
	rm -f "$name.csr"
}

PKI_FILES=(ca.crt ca.key apiserver.crt apiserver.key admin.crt admin.key
	controller-manager.crt controller-manager.key sa.key sa.pub
	apiserver-kubelet-client.crt apiserver-kubelet-client.key
	front-proxy-ca.crt front-proxy-client.crt front-proxy-client.key)

# Generated once per state dir (kept across stop/start); built in a temp dir
# and renamed so an interruption never leaves a half-made PKI.
ensure_pki() {
	local f complete=true
	for f in "${PKI_FILES[@]}"; do
		[[ -f $PKI_DIR/$f ]] || complete=false
	done
	# The serving certificate names the API server's address.
	[[ -f $PKI_DIR/apiserver.address && $(<"$PKI_DIR/apiserver.address") == "$APISERVER_HOST" ]] || complete=false
	$complete && return 0
	log "generating certificates in $PKI_DIR"
	local tmp
	tmp=$(mktemp -d "$STATE_DIR/.pki.XXXXXX")
	(
		cd "$tmp"
		umask 077
		write_openssl_cnf openssl.cnf
		make_ca ca switchboard-ca
		sign_cert ca apiserver /CN=kube-apiserver server
		sign_cert ca admin "/O=system:masters/CN=switchboard-admin" client
		sign_cert ca controller-manager /CN=system:kube-controller-manager client
		# The API server's client certificate toward kubelets (kubectl
		# logs/exec/port-forward on a real node, node.sh), as kubeadm's.
		sign_cert ca apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
		# Aggregation layer ("front proxy"): the apiserver publishes this CA
		# in kube-system/extension-apiserver-authentication, and components
		# doing delegated authentication (the controller-manager's own
		# endpoint, any aggregated API server) expect to find it there.
		make_ca front-proxy-ca switchboard-front-proxy-ca
		sign_cert front-proxy-ca front-proxy-client /CN=front-proxy-client client
		# Service-account token signing key pair.
		genkey sa.key
		openssl pkey -in sa.key -pubout -out sa.pub
		echo "$APISERVER_HOST" >apiserver.address
	)
	rm -rf "$PKI_DIR"
	mv "$tmp" "$PKI_DIR"
}

# write_kubeconfig FILE USER CERT_NAME: certs are embedded so the file works
# when copied elsewhere. Rewritten at each start (the port may have changed).
write_kubeconfig() {
	local file=$1 user=$2 name=$3
	cat >"$file.tmp" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: switchboard
		  cluster:
		    server: https://$APISERVER_HOST:$APISERVER_PORT
		    certificate-authority-data: $(base64 -w0 "$PKI_DIR/ca.crt")
		users:
		- name: $user
		  user:
		    client-certificate-data: $(base64 -w0 "$PKI_DIR/$name.crt")
		    client-key-data: $(base64 -w0 "$PKI_DIR/$name.key")
		contexts:
		- name: switchboard
		  context:
		    cluster: switchboard
		    user: $user
		current-context: switchboard
	EOF
	chmod 600 "$file.tmp"
	mv -f "$file.tmp" "$file"
}

# ===========================================================================
# processes
# ===========================================================================

# Print the pid of COMPONENT if the process in its pid file is alive and is
# really ours: argv[0] is the component's binary and its command line points
# into our state dir (guards against pid reuse; zombies have no cmdline).
component_bin() { echo "$BIN_DIR/$1"; }

stop_all() {
	local c
	for c in "${COMPONENTS[@]}"; do
		stop_component "$c"
	done
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

kubectl_admin() {
	"$BIN_DIR/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=5s "$@"
}

etcd_healthy() { curl -fsS --noproxy '*' -m 3 "http://$HOST:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; }
apiserver_ready() { [[ $(kubectl_admin get --raw /readyz 2>/dev/null) == ok ]]; }
# The token controller creating this proves the controller-manager works.
default_sa_exists() { kubectl_admin get serviceaccount default -n default >/dev/null 2>&1; }

start_etcd() {
	# --unsafe-no-fsync: a throwaway test store; fsync latency on CI disks
	# would otherwise slow every API write. Plain http is fine on loopback.
	launch etcd \
		--name=switchboard \
		--data-dir="$ETCD_DATA_DIR" \
		--listen-client-urls="http://$HOST:$ETCD_PORT" \
		--advertise-client-urls="http://$HOST:$ETCD_PORT" \
		--listen-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
		--initial-cluster="switchboard=http://$HOST:$ETCD_PEER_PORT" \
		--initial-cluster-state=new \
		--unsafe-no-fsync
}

start_apiserver() {
	# --endpoint-reconciler-type=none: the reconciler would publish the
	#   advertise address as the `kubernetes` Service's endpoints, and
	#   Endpoints validation rejects loopback IPs; no pod runs to need them.
	#   With a non-loopback SWITCHBOARD_APISERVER_ADDRESS (a real node's
	#   bridge) the default lease reconciler publishes it for the pods.
	local reconciler=none
	[[ $APISERVER_HOST == 127.* ]] || reconciler=lease
	# --cert-dir: where it would write generated certs (default /var/run).
	# --requestheader-*, --proxy-client-*: the aggregation layer (see ensure_pki).
	# --kubelet-*: how it reaches a real node's kubelet (node.sh issues the
	#   kubelet's serving certificate from the same CA).
	launch kube-apiserver \
		--advertise-address="$APISERVER_HOST" \
		--bind-address="$APISERVER_HOST" \
		--secure-port="$APISERVER_PORT" \
		--endpoint-reconciler-type="$reconciler" \
		--etcd-servers="http://$HOST:$ETCD_PORT" \
		--client-ca-file="$PKI_DIR/ca.crt" \
		--tls-cert-file="$PKI_DIR/apiserver.crt" \
		--tls-private-key-file="$PKI_DIR/apiserver.key" \
		--cert-dir="$STATE_DIR/apiserver-certs" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$PKI_DIR/sa.pub" \
		--service-account-signing-key-file="$PKI_DIR/sa.key" \
		--service-cluster-ip-range="$SERVICE_CIDR" \
		--authorization-mode=Node,RBAC \
		--requestheader-client-ca-file="$PKI_DIR/front-proxy-ca.crt" \
		--requestheader-allowed-names=front-proxy-client \
		--requestheader-username-headers=X-Remote-User \
		--requestheader-group-headers=X-Remote-Group \
		--requestheader-extra-headers-prefix=X-Remote-Extra- \
		--proxy-client-cert-file="$PKI_DIR/front-proxy-client.crt" \
		--proxy-client-key-file="$PKI_DIR/front-proxy-client.key" \
		--kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority="$PKI_DIR/ca.crt" \
		--kubelet-preferred-address-types=InternalIP \
		--allow-privileged=true \
		--profiling=false
}

start_controller_manager() {
	# --use-service-account-credentials: each controller acts as its own
	#   service account, so RBAC is exercised as in a real cluster.
	# --cluster-signing-*: lets the CSR signer controller issue certificates.
	# --authentication/authorization-kubeconfig: delegated authn/authz of
	#   requests to its own HTTPS endpoint (/healthz, /metrics).
	# --flex-volume-plugin-dir: it creates this dir at startup; the default
	#   is under /usr/libexec, outside our state dir.
	launch kube-controller-manager \
		--kubeconfig="$CM_KUBECONFIG" \
		--authentication-kubeconfig="$CM_KUBECONFIG" \
		--authorization-kubeconfig="$CM_KUBECONFIG" \
		--bind-address="$HOST" \
		--secure-port="$CM_PORT" \
		--service-account-private-key-file="$PKI_DIR/sa.key" \
		--root-ca-file="$PKI_DIR/ca.crt" \
		--use-service-account-credentials=true \
		--cluster-signing-cert-file="$PKI_DIR/ca.crt" \
		--cluster-signing-key-file="$PKI_DIR/ca.key" \
		--flex-volume-plugin-dir="$STATE_DIR/flexvolume" \
		--leader-elect=false \
		--controllers='*'
}

# ===========================================================================
# verbs
# ===========================================================================

require_tools() {
	local t
	for t in openssl curl flock setsid base64; do
		command -v "$t" >/dev/null || die "$t is required"
	done
}

cmd_start() {
	require_tools
	cmd_build
	mkdir -p "$STATE_DIR"
	# Serialise start/stop on this state dir.
	exec 9>"$STATE_DIR/.lock"
	flock 9

	T0=$SECONDS
	DEADLINE=$((SECONDS + TIMEOUT))
	local up=0 c
	for c in "${COMPONENTS[@]}"; do
		running "$c" && up=$((up + 1))
	done
	if ((up == ${#COMPONENTS[@]})); then
		if apiserver_ready && default_sa_exists; then
			log "already running and healthy; kubeconfig: $ADMIN_KUBECONFIG"
			return 0
		fi
		log "running but not ready yet; waiting"
		wait_for "kube-apiserver /readyz" kube-apiserver apiserver_ready || exit 1
		wait_for "default ServiceAccount" kube-controller-manager default_sa_exists || exit 1
		return 0
	fi
	if ((up > 0)); then
		log "only partly running: restarting from scratch"
		stop_all
	fi

	local port
	for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$CM_PORT"; do
		port_in_use "$port" && die "port $HOST:$port is already in use (see SWITCHBOARD_*_PORT in $0)"
	done
	if [[ $APISERVER_HOST != "$HOST" ]]; then
		ip -o -4 addr show | grep -F " inet $APISERVER_HOST/" >/dev/null ||
			die "SWITCHBOARD_APISERVER_ADDRESS=$APISERVER_HOST is on no interface (e2e/infra/node.sh network creates the node bridge)"
		(exec 3<>"/dev/tcp/$APISERVER_HOST/$APISERVER_PORT") 2>/dev/null &&
			die "port $APISERVER_HOST:$APISERVER_PORT is already in use"
	fi

	# Every start after a stop begins with an empty cluster.
	rm -rf "$ETCD_DATA_DIR" "$STATE_DIR"/.pki.*
	ensure_pki
	write_kubeconfig "$ADMIN_KUBECONFIG" switchboard-admin admin
	write_kubeconfig "$CM_KUBECONFIG" system:kube-controller-manager controller-manager

	if log "starting etcd $ETCD_VERSION on $HOST:$ETCD_PORT" &&
		start_etcd &&
		wait_for "etcd /health" etcd etcd_healthy &&
		log "starting kube-apiserver $K8S_VERSION on $HOST:$APISERVER_PORT" &&
		start_apiserver &&
		wait_for "kube-apiserver /readyz" kube-apiserver apiserver_ready &&
		log "starting kube-controller-manager" &&
		start_controller_manager &&
		wait_for "default ServiceAccount" kube-controller-manager default_sa_exists; then
		log "cluster ready in $((SECONDS - T0)) s; kubeconfig: $ADMIN_KUBECONFIG"
		return 0
	fi
	log "start failed; stopping what was started (logs kept in $STATE_DIR)"
	stop_all
	exit 1
}

cmd_stop() {
	local clean=false
	case "${1:-}" in
	"") ;;
	--clean) clean=true ;;
	*) die "unknown stop option: $1" ;;
	esac
	[[ -d $STATE_DIR ]] || return 0
	exec 9>"$STATE_DIR/.lock"
	flock 9
	stop_all
	if $clean; then
		log "removing $STATE_DIR"
		rm -rf "$STATE_DIR"
	fi
}

cmd_status() {
	local ok=true c pid
	for c in etcd kube-apiserver kube-controller-manager; do
		if pid=$(pid_of "$c"); then
			printf '%-24s running (pid %s)\n' "$c" "$pid"
		else
			printf '%-24s not running\n' "$c"
			ok=false
		fi
	done
	if [[ -x $BIN_DIR/kubectl && -f $ADMIN_KUBECONFIG ]] && apiserver_ready; then
		printf '%-24s ok\n' "apiserver /readyz"
	else
		printf '%-24s not ready\n' "apiserver /readyz"
		ok=false
	fi
	$ok || exit 3
}

cmd_kubeconfig() {
	[[ -f $ADMIN_KUBECONFIG ]] || die "no kubeconfig yet at $ADMIN_KUBECONFIG (run: $0 start)"
	printf '%s\n' "$ADMIN_KUBECONFIG"
}

usage() {
	echo "usage: $0 start|stop [--clean]|status|kubeconfig|bindir|build" >&2
	exit 2
}

main() {
	local verb=${1:-}
	(($# > 0)) && shift
	case "$verb" in
	build) cmd_build ;;
	build-node) cmd_build_node ;;
	start) cmd_start ;;
	stop) cmd_stop "$@" ;;
	status) cmd_status ;;
	kubeconfig) cmd_kubeconfig ;;
	bindir) printf '%s\n' "$BIN_DIR" ;;
	*) usage ;;
	esac
}

main "$@"
