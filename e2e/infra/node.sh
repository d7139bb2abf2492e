#!/usr/bin/env bash
# A real Kubernetes worker node on this machine, beside the control plane of
# cluster.sh: containerd + runc, a CNI bridge network, kubelet, kube-proxy
# (iptables mode), kube-scheduler and CoreDNS (as a pod). Opt-in: nothing in
# `make test` starts it yet.
#
# Nothing is pulled from a registry: containerd, crictl and CoreDNS are built
# from the Go module proxy, kubelet/kube-proxy/kube-scheduler from the same
# k8s.io/kubernetes version as the API server (cluster.sh build-node), the
# pause image from the Kubernetes source's own pause.c, and every image is
# assembled here (Debian .debs + static binaries) and imported into containerd.
# runc and the CNI plugins come from Debian (deps.sh --node).
#
# Network: a bridge ($BRIDGE) with a private /24 whose first address is the
# host side. Pods get routes only to that /24 and to the Service range (via
# the host side); no default route, no NAT out (CNI ipMasq false), forwarding
# enabled on the bridge alone, and a FORWARD rule drops anything from the
# bridge to another interface. The API server must listen on the host-side
# address: start it with SWITCHBOARD_APISERVER_ADDRESS=<that address> after
# `node.sh network` (with-infra.sh --node does all of this in order).
#
# Usage: node.sh build|network|start|stop [--clean]|status|smoke|host-ip|runtime-image BIN|
#        base-rootfs DIR|import-image TAR NAME
#
#   build     build (or reuse cached) every binary and image the node needs
#   network   create the bridge and its host-side address (idempotent)
#   start     build if needed, then start the node and wait until it is Ready
#             and CoreDNS answers; a no-op when already running and healthy
#   stop      stop every container with SIGTERM and its pod's grace period
#             (then SIGKILL), remove every pod sandbox (CNI teardown, netns), kill and delete
#             leftover containerd tasks, stop scheduler/kube-proxy/kubelet/
#             containerd by pid, remove kube-proxy's and our iptables rules,
#             unmount what is left under the state dir, delete the bridge
#             (kept while the API server / Kafka still listen on it: stop
#             them, then run stop again), restore the kernel settings
#             changed at start; --clean also
#             removes the state dir (containerd's images among it)
#   status    per-component state; exit 0 when everything is up, 3 otherwise
#   smoke     run a pod from a locally assembled image under the restricted
#             Pod Security Standard and check it end to end (needs `start`)
#   host-ip   print the bridge's host-side address (the API server's, Kafka's)
#   base-rootfs DIR    write the distroless/cc-equivalent root into DIR
#   import-image TAR NAME  import an image archive into the node's containerd
#   runtime-image BIN  assemble an image of a switchboard-runtime binary on the
#             base root, import it into the node, print its name
#
# Environment (defaults in brackets):
#   SWITCHBOARD_CACHE, SWITCHBOARD_STATE_DIR   as for cluster.sh; ours is <state>/node
#   SWITCHBOARD_NODE_BRIDGE            bridge name                       [sbnode0]
#   SWITCHBOARD_NODE_NET               first three octets of the /24     [10.213.0]
#   SWITCHBOARD_NODE_NAME              Node name                         [sbnode]
#   SWITCHBOARD_KUBELET_PORT           kubelet API on the bridge address [10250]
#   SWITCHBOARD_KUBELET_HEALTHZ_PORT   kubelet healthz on 127.0.0.1      [10248]
#   SWITCHBOARD_KUBE_PROXY_HEALTHZ_PORT  on 127.0.0.1                    [10256]
#   SWITCHBOARD_KUBE_PROXY_METRICS_PORT  on 127.0.0.1                    [10249]
#   SWITCHBOARD_SCHEDULER_PORT         kube-scheduler https on 127.0.0.1 [10259]
#   SWITCHBOARD_NODE_TIMEOUT           seconds to wait for readiness     [180]
#   SWITCHBOARD_NODE_STOP_GRACE        at most this many seconds of a pod's
#                                      grace period are waited for at stop [30]
set -euo pipefail

# ---------------------------------------------------------------------------
# Versions: change here (Kubernetes' own is cluster.sh's K8S_VERSION).
CONTAINERD_VERSION=v2.4.2
CRITOOLS_VERSION=v1.37.0
COREDNS_VERSION=v1.15.0
FALLBACK_GOTOOLCHAIN=go1.27.3
# Debian packages the images are assembled from (exact files: the cache key).
BASE_DEBS=(libc6 libgcc-s1 libstdc++6 libssl3 ca-certificates)
SMOKE_DEBS=(busybox-static)
# A debug switchboard-runtime links zlib dynamically (release builds in the
# Dockerfile link it statically); only the smoke's runtime image adds it.
RUNTIME_DEBS=(zlib1g)
# ---------------------------------------------------------------------------

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
CLUSTER_SH=$SCRIPT_DIR/cluster.sh

CACHE_ROOT=$(realpath -m "${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}")
NODE_CACHE=$CACHE_ROOT/node
CTR_BIN_DIR=$NODE_CACHE/containerd-$CONTAINERD_VERSION/bin
CRICTL_BIN_DIR=$NODE_CACHE/cri-tools-$CRITOOLS_VERSION/bin
COREDNS_BIN_DIR=$NODE_CACHE/coredns-$COREDNS_VERSION/bin
DEB_DIR=$NODE_CACHE/debs
IMAGE_DIR=$NODE_CACHE/images

STATE_ROOT=$(realpath -m "${SWITCHBOARD_STATE_DIR:-$REPO_ROOT/.state}")
STATE_DIR=$STATE_ROOT/node
CLUSTER_STATE=$STATE_ROOT/cluster
PKI_DIR=$STATE_DIR/pki
CTRD_DIR=$STATE_DIR/containerd
CTRD_SOCK=$CTRD_DIR/containerd.sock
KUBELET_DIR=$STATE_DIR/kubelet
CNI_CONF_DIR=$STATE_DIR/cni/net.d
CNI_IPAM_DIR=$STATE_DIR/cni/ipam
POD_LOGS_DIR=$STATE_DIR/pod-logs
SYSCTL_SAVED=$STATE_DIR/sysctl.saved
CGROUP_FILE=$STATE_DIR/cgroup-root

BRIDGE=${SWITCHBOARD_NODE_BRIDGE:-sbnode0}
NET=${SWITCHBOARD_NODE_NET:-10.213.0}
SUBNET=$NET.0/24
HOST_IP=$NET.1
NODE_NAME=${SWITCHBOARD_NODE_NAME:-sbnode}
KUBELET_PORT=${SWITCHBOARD_KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${SWITCHBOARD_KUBELET_HEALTHZ_PORT:-10248}
PROXY_HEALTHZ_PORT=${SWITCHBOARD_KUBE_PROXY_HEALTHZ_PORT:-10256}
PROXY_METRICS_PORT=${SWITCHBOARD_KUBE_PROXY_METRICS_PORT:-10249}
SCHEDULER_PORT=${SWITCHBOARD_SCHEDULER_PORT:-10259}
TIMEOUT=${SWITCHBOARD_NODE_TIMEOUT:-180}
STOP_GRACE=${SWITCHBOARD_NODE_STOP_GRACE:-30}
# Must match cluster.sh's --service-cluster-ip-range.
SERVICE_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10
FW_CHAIN=SBNODE-FWD

# Stop order; start order is the reverse.
COMPONENTS=(kube-scheduler kube-proxy kubelet containerd)

log() { printf '[node] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $NET =~ ^(10|172|192)\.[0-9]{1,3}\.[0-9]{1,3}$ ]] ||
	die "SWITCHBOARD_NODE_NET must be the first three octets of a private /24, e.g. 10.213.0 (got '$NET')"
[[ $BRIDGE =~ ^[a-z][a-z0-9]{0,14}$ ]] || die "SWITCHBOARD_NODE_BRIDGE must be an interface name like sbnode0 (got '$BRIDGE')"
for _p in "$KUBELET_PORT" "$KUBELET_HEALTHZ_PORT" "$PROXY_HEALTHZ_PORT" "$PROXY_METRICS_PORT" "$SCHEDULER_PORT" "$TIMEOUT" "$STOP_GRACE"; do
	[[ $_p =~ ^[0-9]+$ ]] || die "SWITCHBOARD_KUBELET_*/KUBE_PROXY_*/SCHEDULER_PORT SWITCHBOARD_NODE_TIMEOUT/STOP_GRACE must be numbers (got '$_p')"
done

# shellcheck source=e2e/infra/golib.sh
source "$SCRIPT_DIR/golib.sh"
# shellcheck source=e2e/infra/components.sh
source "$SCRIPT_DIR/components.sh"

K8S_BIN_DIR=$("$CLUSTER_SH" bindir)
KUBECTL=$K8S_BIN_DIR/kubectl

# ===========================================================================
# build
# ===========================================================================

stamp_ok() { [[ -f $1 && $(<"$1") == "$2" ]]; }
write_stamp() { echo "$2" >"$1.tmp" && mv -f "$1.tmp" "$1"; }

# go_module_build NAME MODULE@VERSION OUT_DIR LDFLAGS TAGS PKG...: build main
# packages of one module (its own pinned dependencies) into OUT_DIR through
# a throwaway module that requires it.
go_module_build() {
	local name=$1 modver=$2 out=$3 ldflags=$4 tags=$5
	shift 5
	local src=$NODE_CACHE/src/$name gomod
	rm -rf "$src" && mkdir -p "$src" "$out"
	gomod=$(module_gomod "$modver")
	[[ -f $gomod ]] || die "could not download $modver"
	select_toolchain "$gomod"
	{
		printf '//go:build tools\n\npackage tools\n\nimport (\n'
		printf '\t_ "%s"\n' "$@"
		printf ')\n'
	} >"$src/tools.go"
	{
		printf 'module switchboard.local/%sbuild\n\n' "$name"
		grep -E '^go [0-9.]+$' "$gomod"
		printf '\nrequire %s %s\n' "${modver%@*}" "${modver#*@}"
	} >"$src/go.mod"
	log "$name: resolving modules (go mod tidy)"
	(cd "$src" && go mod tidy)
	local tmp
	tmp=$(mktemp -d "$out/.tmp.XXXXXX")
	log "$name: compiling (package list: $NODE_CACHE/build-$name.log)"
	(cd "$src" && go_build_progress "$NODE_CACHE/build-$name.log" -trimpath -buildvcs=false \
		-tags "$tags" -ldflags "$ldflags" -o "$tmp/" "$@")
	local f
	for f in "$tmp"/*; do
		mv -f "$f" "$out/"
	done
	rmdir "$tmp"
	rm -rf "$src"
}

build_containerd() {
	stamp_ok "$CTR_BIN_DIR/.stamp" "$CONTAINERD_VERSION" && return 0
	local t0=$SECONDS m=github.com/containerd/containerd/v2
	log "building containerd $CONTAINERD_VERSION (first time only)"
	# No cgo: leave out the snapshotters that need it (we use overlayfs).
	go_module_build containerd "$m@$CONTAINERD_VERSION" "$CTR_BIN_DIR" \
		"-s -w -X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Package=$m" \
		"no_btrfs no_devmapper no_zfs" \
		"$m/cmd/containerd" "$m/cmd/containerd-shim-runc-v2" "$m/cmd/ctr"
	write_stamp "$CTR_BIN_DIR/.stamp" "$CONTAINERD_VERSION"
	log "built containerd $CONTAINERD_VERSION in $((SECONDS - t0)) s"
}

build_crictl() {
	stamp_ok "$CRICTL_BIN_DIR/.stamp" "$CRITOOLS_VERSION" && return 0
	local t0=$SECONDS m=sigs.k8s.io/cri-tools
	log "building crictl $CRITOOLS_VERSION (first time only)"
	go_module_build cri-tools "$m@$CRITOOLS_VERSION" "$CRICTL_BIN_DIR" \
		"-s -w -X $m/pkg/version.Version=$CRITOOLS_VERSION" "" "$m/cmd/crictl"
	write_stamp "$CRICTL_BIN_DIR/.stamp" "$CRITOOLS_VERSION"
	log "built crictl $CRITOOLS_VERSION in $((SECONDS - t0)) s"
}

# CoreDNS with only the plugins the node's Corefile uses (no forward, no
# cloud back ends): a main package of ours importing coremain and those
# plugins, which register themselves in init().
COREDNS_PLUGINS=(errors health ready kubernetes cache loadbalance log)
build_coredns() {
	stamp_ok "$COREDNS_BIN_DIR/.stamp" "$COREDNS_VERSION ${COREDNS_PLUGINS[*]}" && return 0
	local t0=$SECONDS m=github.com/coredns/coredns src=$NODE_CACHE/src/coredns gomod
	log "building coredns $COREDNS_VERSION with plugins: ${COREDNS_PLUGINS[*]} (first time only)"
	rm -rf "$src" && mkdir -p "$src" "$COREDNS_BIN_DIR"
	gomod=$(module_gomod "$m@$COREDNS_VERSION")
	[[ -f $gomod ]] || die "could not download $m@$COREDNS_VERSION"
	select_toolchain "$gomod"
	{
		printf 'package main\n\nimport (\n\t"%s/coremain"\n' "$m"
		local p
		for p in "${COREDNS_PLUGINS[@]}"; do
			printf '\t_ "%s/plugin/%s"\n' "$m" "$p"
		done
		printf ')\n\nfunc main() { coremain.Run() }\n'
	} >"$src/main.go"
	{
		printf 'module switchboard.local/coredns\n\n'
		grep -E '^go [0-9.]+$' "$gomod"
		printf '\nrequire %s %s\n' "$m" "$COREDNS_VERSION"
	} >"$src/go.mod"
	log "coredns: resolving modules (go mod tidy)"
	(cd "$src" && go mod tidy)
	log "coredns: compiling (package list: $NODE_CACHE/build-coredns.log)"
	(cd "$src" && go_build_progress "$NODE_CACHE/build-coredns.log" -trimpath -buildvcs=false \
		-ldflags "-s -w -X $m/coremain.GitCommit=$COREDNS_VERSION" -o "$COREDNS_BIN_DIR/coredns.tmp" .)
	mv -f "$COREDNS_BIN_DIR/coredns.tmp" "$COREDNS_BIN_DIR/coredns"
	rm -rf "$src"
	write_stamp "$COREDNS_BIN_DIR/.stamp" "$COREDNS_VERSION ${COREDNS_PLUGINS[*]}"
	log "built coredns $COREDNS_VERSION in $((SECONDS - t0)) s"
}

# The pause program from the k8s.io/kubernetes module source, compiled
# statically as its build/pause/Makefile does; the tag is that Makefile's.
k8s_version() { sed -nE 's/^K8S_VERSION=(v[0-9.]+)$/\1/p' "$CLUSTER_SH"; }
pause_dir() { echo "$NODE_CACHE/pause-$(k8s_version)"; }
pause_image() { echo "registry.k8s.io/pause:$(<"$(pause_dir)/tag")"; }
build_pause() {
	local dir kver
	dir=$(pause_dir)
	kver=$(k8s_version)
	stamp_ok "$dir/.stamp" "$kver" && return 0
	command -v gcc >/dev/null || die "gcc is required to build the pause program"
	log "building pause from k8s.io/kubernetes@$kver build/pause/linux/pause.c"
	local moddir
	moddir=$(go mod download -json "k8s.io/kubernetes@$kver" | sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
	[[ -f $moddir/build/pause/linux/pause.c ]] || die "no build/pause/linux/pause.c in k8s.io/kubernetes@$kver"
	local tag
	tag=$(sed -nE 's/^TAG \?= *([0-9.]+)$/\1/p' "$moddir/build/pause/Makefile")
	[[ -n $tag ]] || die "no TAG in $moddir/build/pause/Makefile"
	mkdir -p "$dir"
	gcc -Os -Wall -Werror -static -DVERSION="v$tag-$kver" -o "$dir/pause.tmp" "$moddir/build/pause/linux/pause.c"
	strip "$dir/pause.tmp"
	mv -f "$dir/pause.tmp" "$dir/pause"
	echo "$tag" >"$dir/tag"
	write_stamp "$dir/.stamp" "$kver"
}

# Debian packages for the image roots: downloaded once into DEB_DIR (the
# exact .deb files are the cache key of the images built from them).
fetch_debs() {
	mkdir -p "$DEB_DIR"
	local p missing=()
	for p in "$@"; do
		compgen -G "$DEB_DIR/${p}_*.deb" >/dev/null || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	log "downloading Debian packages for the images: ${missing[*]}"
	(cd "$DEB_DIR" && apt-get download "${missing[@]}" >/dev/null) ||
		(apt-get update -qq && cd "$DEB_DIR" && apt-get download "${missing[@]}" >/dev/null) ||
		die "apt-get download ${missing[*]} failed"
}
deb_files() {
	local p
	for p in "$@"; do
		compgen -G "$DEB_DIR/${p}_*.deb" | sort | tail -n 1
	done
}

# make_base_rootfs DIR: a distroless/cc-equivalent root: glibc, libgcc, libstdc++, libssl3,
# the CA bundle, /etc/passwd with root and nonroot (65532), /tmp, no shell.
make_base_rootfs() {
	local dir=$1 f
	mkdir -p "$dir"
	while read -r f; do
		dpkg-deb -x "$f" "$dir"
	done < <(deb_files "${BASE_DEBS[@]}")
	# ca-certificates' postinst builds the bundle; we do it without running it.
	mkdir -p "$dir/etc/ssl/certs"
	find "$dir/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z | xargs -0 cat >"$dir/etc/ssl/certs/ca-certificates.crt"
	rm -rf "$dir/usr/share/doc" "$dir/usr/share/man" "$dir/usr/share/lintian" "$dir/usr/share/locale"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
	mkdir -p "$dir/tmp" "$dir/home/nonroot" "$dir/root"
	chmod 1777 "$dir/tmp"
	chown 65532:65532 "$dir/home/nonroot"
}

# oci_archive OUT NAME ROOTFS USER ENTRYPOINT_JSON: an OCI image layout
# archive with one uncompressed layer, named for `ctr images import`.
oci_archive() {
	local out=$1 name=$2 rootfs=$3 user=$4 entry=$5
	local d
	d=$(mktemp -d "$out.XXXXXX")
	mkdir -p "$d/blobs/sha256"
	tar --sort=name --mtime=@0 --numeric-owner -C "$rootfs" -cf "$d/layer.tar" .
	local ldig lsize cdig csize mdig msize
	ldig=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
	lsize=$(stat -c %s "$d/layer.tar")
	mv "$d/layer.tar" "$d/blobs/sha256/$ldig"
	jq -cn --arg user "$user" --argjson entry "$entry" --arg diff "sha256:$ldig" \
		'{architecture:"amd64",os:"linux",config:{User:$user,Entrypoint:$entry,Env:["PATH=/usr/local/bin:/usr/bin:/bin"],WorkingDir:"/"},rootfs:{type:"layers",diff_ids:[$diff]}}' \
		>"$d/config.json"
	cdig=$(sha256sum "$d/config.json" | cut -d' ' -f1)
	csize=$(stat -c %s "$d/config.json")
	mv "$d/config.json" "$d/blobs/sha256/$cdig"
	jq -cn --arg cd "sha256:$cdig" --argjson cs "$csize" --arg ld "sha256:$ldig" --argjson ls "$lsize" \
		'{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$cd,size:$cs},layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar",digest:$ld,size:$ls}]}' \
		>"$d/manifest.json"
	mdig=$(sha256sum "$d/manifest.json" | cut -d' ' -f1)
	msize=$(stat -c %s "$d/manifest.json")
	mv "$d/manifest.json" "$d/blobs/sha256/$mdig"
	jq -cn --arg md "sha256:$mdig" --argjson ms "$msize" --arg name "$name" --arg tag "${name##*:}" \
		'{schemaVersion:2,manifests:[{mediaType:"application/vnd.oci.image.manifest.v1+json",digest:$md,size:$ms,platform:{architecture:"amd64",os:"linux"},annotations:{"io.containerd.image.name":$name,"org.opencontainers.image.ref.name":$tag}}]}' \
		>"$d/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
	tar -C "$d" -cf "$out.tmp" oci-layout index.json blobs
	mv -f "$out.tmp" "$out"
	rm -rf "$d"
}

# Image names (tags are content-derived, so a changed input is a new tag).
image_key() { cat "$@" | sha256sum | cut -c1-12; }
coredns_image() { echo "switchboard.local/coredns:$COREDNS_VERSION-$(image_key "$COREDNS_BIN_DIR/coredns")"; }
smoke_image() {
	# shellcheck disable=SC2046 # one file per line, no spaces
	echo "switchboard.local/node-smoke:$(image_key $(deb_files "${BASE_DEBS[@]}" "${SMOKE_DEBS[@]}"))"
}
image_tar() { local n=${1#*/}; echo "$IMAGE_DIR/${n//[:\/]/_}.tar"; }

build_images() {
	mkdir -p "$IMAGE_DIR"
	fetch_debs "${BASE_DEBS[@]}" "${SMOKE_DEBS[@]}"
	local name tmp
	name=$(pause_image)
	if [[ ! -f $(image_tar "$name") ]]; then
		log "assembling image $name"
		tmp=$(mktemp -d "$IMAGE_DIR/.root.XXXXXX")
		cp "$(pause_dir)/pause" "$tmp/pause"
		oci_archive "$(image_tar "$name")" "$name" "$tmp" "65535:65535" '["/pause"]'
		rm -rf "$tmp"
	fi
	name=$(coredns_image)
	if [[ ! -f $(image_tar "$name") ]]; then
		log "assembling image $name"
		tmp=$(mktemp -d "$IMAGE_DIR/.root.XXXXXX")
		make_base_rootfs "$tmp"
		cp "$COREDNS_BIN_DIR/coredns" "$tmp/coredns"
		oci_archive "$(image_tar "$name")" "$name" "$tmp" "65532:65532" '["/coredns"]'
		rm -rf "$tmp"
	fi
	name=$(smoke_image)
	if [[ ! -f $(image_tar "$name") ]]; then
		log "assembling image $name"
		tmp=$(mktemp -d "$IMAGE_DIR/.root.XXXXXX")
		make_base_rootfs "$tmp"
		local f
		while read -r f; do
			dpkg-deb -x "$f" "$tmp"
		done < <(deb_files "${SMOKE_DEBS[@]}")
		rm -rf "$tmp/usr/share/doc" "$tmp/usr/share/man"
		mkdir -p "$tmp/www"
		echo "switchboard node smoke" >"$tmp/www/index.html"
		echo ok >"$tmp/www/healthz"
		oci_archive "$(image_tar "$name")" "$name" "$tmp" "65532:65532" '["/bin/busybox"]'
		rm -rf "$tmp"
	fi
}

# runtime_image BIN: switchboard.local/switchboard-runtime:dev-<hash> = the
# base root + zlib + BIN as /usr/local/bin/switchboard-runtime (uid 65532),
# imported into the running node's containerd; prints the name.
cmd_runtime_image() {
	local bin=${1:-}
	[[ -n $bin && -x $bin ]] || die "usage: $0 runtime-image PATH_TO_switchboard-runtime"
	running containerd || die "containerd is not running ($0 start)"
	fetch_debs "${BASE_DEBS[@]}" "${RUNTIME_DEBS[@]}"
	mkdir -p "$IMAGE_DIR"
	local name tar
	# shellcheck disable=SC2046 # one file per line, no spaces
	name="switchboard.local/switchboard-runtime:dev-$(image_key "$bin" $(deb_files "${BASE_DEBS[@]}" "${RUNTIME_DEBS[@]}"))"
	tar=$(image_tar "$name")
	if [[ ! -f $tar ]]; then
		log "assembling image $name from $bin"
		local tmp f
		tmp=$(mktemp -d "$IMAGE_DIR/.root.XXXXXX")
		make_base_rootfs "$tmp"
		while read -r f; do
			dpkg-deb -x "$f" "$tmp"
		done < <(deb_files "${RUNTIME_DEBS[@]}")
		rm -rf "$tmp/usr/share/doc"
		install -D -m 0755 "$bin" "$tmp/usr/local/bin/switchboard-runtime"
		oci_archive "$tar" "$name" "$tmp" "65532:65532" '["/usr/local/bin/switchboard-runtime"]'
		rm -rf "$tmp"
	fi
	if ! image_present "$name"; then
		ctr_k8s images import --platform linux/amd64 "$tar" 2>&1 >/dev/null | grep -v 'DEPRECATION: The support for cgroup v1' >&2 || true
	fi
	image_present "$name" || die "importing $name failed"
	printf '%s\n' "$name"
}

# base-rootfs DIR: the distroless/cc-equivalent root (make_base_rootfs) in
# DIR, which must be empty or absent (images.sh builds its local
# gcr.io/distroless/cc-debian12:nonroot from it).
cmd_base_rootfs() {
	local dir=${1:-}
	[[ -n $dir ]] || die "usage: $0 base-rootfs DIR"
	[[ ! -e $dir || -z $(ls -A "$dir") ]] || die "base-rootfs: $dir is not empty"
	fetch_debs "${BASE_DEBS[@]}"
	make_base_rootfs "$dir"
}

# import-image ARCHIVE NAME: import an OCI/docker archive into the running
# node's containerd (namespace k8s.io) unless NAME is already there with the
# same digest; fails when NAME is not present afterwards.
cmd_import_image() {
	local tar=${1:-} name=${2:-}
	[[ -f $tar && -n $name ]] || die "usage: $0 import-image ARCHIVE NAME"
	running containerd || die "containerd is not running ($0 start)"
	ctr_k8s images import --platform linux/amd64 "$tar" 2>&1 >/dev/null | grep -v 'DEPRECATION: The support for cgroup v1' >&2 || true
	image_present "$name" || die "importing $name from $tar failed"
}

cmd_build() {
	local t0=$SECONDS
	"$CLUSTER_SH" build-node
	mkdir -p "$NODE_CACHE"
	exec 8>"$NODE_CACHE/.build.lock"
	flock 8
	go_env
	(build_containerd)
	(build_crictl)
	(build_coredns)
	# The pause build reads the k8s module through the proxy too; it needs
	# cgo-free nothing, but gcc.
	(build_pause)
	build_images
	rm -rf "$NODE_CACHE/src"
	exec 8>&-
	((SECONDS - t0 < 2)) || log "node binaries and images ready in $((SECONDS - t0)) s"
}

# ===========================================================================
# network
# ===========================================================================

cmd_network() {
	[[ $(id -u) == 0 ]] || die "the node network needs root"
	if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
		log "creating bridge $BRIDGE with $HOST_IP/24"
		ip link add "$BRIDGE" type bridge
	fi
	# No IPv6 on the bridge (no link-local, no router solicitations).
	sysctl -qw "net.ipv6.conf.$BRIDGE.disable_ipv6=1" 2>/dev/null || true
	# (grep without -q: with pipefail, an early exit would fail the pipe.)
	ip -4 addr show dev "$BRIDGE" | grep -F " inet $HOST_IP/24" >/dev/null ||
		ip addr add "$HOST_IP/24" dev "$BRIDGE"
	ip link set "$BRIDGE" up
	# The Service range from the host goes onto the bridge (kube-proxy DNATs
	# it to a pod or to the API server): a ClusterIP with no rule behind it
	# then dies on the bridge instead of following the default route out.
	ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$HOST_IP"
	# Forward only what arrives on the bridge (pod -> ClusterIP -> pod), not
	# the machine's other interfaces; and never from the bridge to elsewhere.
	sysctl -qw "net.ipv4.conf.$BRIDGE.forwarding=1"
	iptables -w -N "$FW_CHAIN" 2>/dev/null || true
	iptables -w -C "$FW_CHAIN" -o "$BRIDGE" -j ACCEPT 2>/dev/null ||
		iptables -w -A "$FW_CHAIN" -o "$BRIDGE" -j ACCEPT
	iptables -w -C "$FW_CHAIN" -j DROP 2>/dev/null ||
		iptables -w -A "$FW_CHAIN" -j DROP
	iptables -w -C FORWARD -i "$BRIDGE" -j "$FW_CHAIN" 2>/dev/null ||
		iptables -w -I FORWARD 1 -i "$BRIDGE" -j "$FW_CHAIN"
}

# Sockets bound to the bridge's address (the API server's, Kafka's pod
# listener): while there are any, the bridge stays so that their owners can
# still shut down cleanly (an API server whose own address vanished hangs on
# SIGTERM); stop it after them and run `node.sh stop` again.
bridge_listeners() {
	ss -Hltnu 2>/dev/null | awk -v ip="$HOST_IP" '{a = $5; sub(/^\[::ffff:/, "", a); sub(/\]:/, ":", a); if (index(a, ip ":") == 1) print a}' |
		sort -u | tr '\n' ' '
}

# kube-proxy prepends its own FORWARD jumps when it starts; put ours back in
# front so that nothing it accepts can leave the bridge for another interface.
forward_guard_first() {
	while iptables -w -D FORWARD -i "$BRIDGE" -j "$FW_CHAIN" 2>/dev/null; do :; done
	iptables -w -I FORWARD 1 -i "$BRIDGE" -j "$FW_CHAIN"
}

network_down() {
	local l
	l=$(bridge_listeners)
	if [[ -n $l ]]; then
		log "keeping bridge $BRIDGE: still listened on at $l(stop the control plane / Kafka, then run $0 stop again)"
		return 0
	fi
	while iptables -w -D FORWARD -i "$BRIDGE" -j "$FW_CHAIN" 2>/dev/null; do :; done
	iptables -w -F "$FW_CHAIN" 2>/dev/null || true
	iptables -w -X "$FW_CHAIN" 2>/dev/null || true
	if ip link show "$BRIDGE" >/dev/null 2>&1; then
		log "deleting bridge $BRIDGE"
		ip link del "$BRIDGE"
	fi
}

# ===========================================================================
# certificates, kubeconfigs, configuration
# ===========================================================================

apiserver_url() { sed -nE 's/^[[:space:]]*server: (https:.*)$/\1/p' "$CLUSTER_STATE/kubeconfig" | head -n 1; }

ensure_pki() {
	local ca=$CLUSTER_STATE/pki/ca
	[[ -f $ca.crt && -f $ca.key ]] || die "no cluster CA at $ca.crt (run: cluster.sh start)"
	if [[ -f $PKI_DIR/ca.crt && -f $PKI_DIR/kubelet-serving.crt ]] && cmp -s "$PKI_DIR/ca.crt" "$ca.crt"; then
		return 0
	fi
	log "issuing node certificates from the cluster CA"
	local tmp
	tmp=$(mktemp -d "$STATE_DIR/.pki.XXXXXX")
	(
		cd "$tmp"
		umask 077
		printf '[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n[client]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = clientAuth\n' >openssl.cnf
		local n subj
		for n in kubelet kube-proxy kube-scheduler; do
			case $n in
			kubelet) subj="/O=system:nodes/CN=system:node:$NODE_NAME" ;;
			kube-proxy) subj=/CN=system:kube-proxy ;;
			kube-scheduler) subj=/CN=system:kube-scheduler ;;
			esac
			openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$n.key" 2>/dev/null
			openssl req -new -config openssl.cnf -key "$n.key" -subj "$subj" -out "$n.csr"
			openssl x509 -req -in "$n.csr" -CA "$ca.crt" -CAkey "$ca.key" \
				-set_serial "0x$(openssl rand -hex 16)" -days 3650 \
				-extfile openssl.cnf -extensions client -out "$n.crt" 2>/dev/null
			rm -f "$n.csr"
		done
		# kubelet's serving certificate, for its bridge address: the API
		# server verifies it (--kubelet-certificate-authority) for logs/exec.
		printf '[server]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\nsubjectAltName = IP:%s, DNS:%s\n' "$HOST_IP" "$NODE_NAME" >>openssl.cnf
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out kubelet-serving.key 2>/dev/null
		openssl req -new -config openssl.cnf -key kubelet-serving.key -subj "/O=system:nodes/CN=system:node:$NODE_NAME" -out kubelet-serving.csr
		openssl x509 -req -in kubelet-serving.csr -CA "$ca.crt" -CAkey "$ca.key" \
			-set_serial "0x$(openssl rand -hex 16)" -days 3650 \
			-extfile openssl.cnf -extensions server -out kubelet-serving.crt 2>/dev/null
		rm -f kubelet-serving.csr openssl.cnf
		cp "$ca.crt" ca.crt
	)
	rm -rf "$PKI_DIR"
	mv "$tmp" "$PKI_DIR"
}

write_kubeconfig() {
	local n=$1 file=$STATE_DIR/$1.kubeconfig
	cat >"$file.tmp" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: switchboard
		  cluster:
		    server: $(apiserver_url)
		    certificate-authority: $PKI_DIR/ca.crt
		users:
		- name: $n
		  user:
		    client-certificate: $PKI_DIR/$n.crt
		    client-key: $PKI_DIR/$n.key
		contexts:
		- name: switchboard
		  context:
		    cluster: switchboard
		    user: $n
		current-context: switchboard
	EOF
	chmod 600 "$file.tmp"
	mv -f "$file.tmp" "$file"
}

write_containerd_config() {
	mkdir -p "$CTRD_DIR/root" "$CTRD_DIR/state" "$CNI_CONF_DIR"
	# Plugins left out: snapshotters we did not build or do not use, NRI
	# (it would listen under /var/run/nri), tracing, and CDI/opt dirs in /.
	cat >"$CTRD_DIR/config.toml" <<-EOF
		version = 3
		root = "$CTRD_DIR/root"
		state = "$CTRD_DIR/state"
		disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs",
		  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
		  "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs",
		  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

		[grpc]
		  address = "$CTRD_SOCK"
		[ttrpc]
		  address = "$CTRD_SOCK.ttrpc"
		[debug]
		  address = ""
		[metrics]
		  address = ""

		[plugins.'io.containerd.internal.v1.opt']
		  path = "$CTRD_DIR/opt"

		[plugins.'io.containerd.cri.v1.images']
		  snapshotter = "overlayfs"
		  [plugins.'io.containerd.cri.v1.images'.pinned_images]
		    sandbox = "$(pause_image)"

		[plugins.'io.containerd.cri.v1.runtime']
		  enable_cdi = false
		  # This machine withholds CAP_SYS_RESOURCE even from root, so no
		  # process may lower its oom_score_adj (the pause container asks
		  # for -998): clamp pods' values to containerd's own instead.
		  restrict_oom_score_adj = true
		  [plugins.'io.containerd.cri.v1.runtime'.containerd]
		    default_runtime_name = "runc"
		    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
		        BinaryName = "$(command -v runc)"
		        Root = "$CTRD_DIR/runc"
		        SystemdCgroup = false
		  [plugins.'io.containerd.cri.v1.runtime'.cni]
		    bin_dirs = ["/usr/lib/cni"]
		    conf_dir = "$CNI_CONF_DIR"
		    max_conf_num = 1

		[plugins.'io.containerd.grpc.v1.cri']
		  stream_server_address = "127.0.0.1"
		  stream_server_port = "0"
	EOF
	# ipMasq false: no NAT; isGateway false: the bridge address is ours and
	# the plugin must not turn on forwarding machine-wide. Routes: the /24
	# (on-link) and the Service range via the host side, nothing else.
	cat >"$CNI_CONF_DIR/10-sbnode.conflist.tmp" <<-EOF
		{
		  "cniVersion": "1.0.0",
		  "name": "sbnode",
		  "plugins": [
		    {
		      "type": "bridge",
		      "bridge": "$BRIDGE",
		      "isGateway": false,
		      "isDefaultGateway": false,
		      "ipMasq": false,
		      "hairpinMode": true,
		      "ipam": {
		        "type": "host-local",
		        "dataDir": "$CNI_IPAM_DIR",
		        "ranges": [[{"subnet": "$SUBNET", "rangeStart": "$NET.10", "rangeEnd": "$NET.250", "gateway": "$HOST_IP"}]],
		        "routes": [{"dst": "$SERVICE_CIDR", "gw": "$HOST_IP"}]
		      }
		    }
		  ]
		}
	EOF
	mv -f "$CNI_CONF_DIR/10-sbnode.conflist.tmp" "$CNI_CONF_DIR/10-sbnode.conflist"
}

# The cgroup (same path in every v1 hierarchy) the kubelet puts pods under:
# a child of this shell's memory cgroup, so pods count against whatever
# memory limit the machine's session already has, instead of escaping it.
ensure_cgroup_root() {
	local mem
	mem=$(sed -nE 's/^[0-9]+:memory:(.*)$/\1/p' /proc/self/cgroup)
	local root=${mem%/}/switchboard-node
	local -a parts
	IFS=/ read -ra parts <<<"${root#/}"
	local h p parent part
	for h in /sys/fs/cgroup/*/; do
		h=${h%/}
		[[ -f $h/cgroup.procs ]] || continue
		p=$h
		for part in "${parts[@]}"; do
			parent=$p
			p=$p/$part
			# Remember each level we create (stop removes them, deepest first).
			if [[ ! -d $p ]]; then
				mkdir "$p"
				echo "$p" >>"$CGROUP_FILE.created"
			fi
			# New cpuset children start empty; fill each level from its parent.
			if [[ -f $p/cpuset.cpus ]]; then
				[[ -n $(<"$p/cpuset.cpus") ]] || cat "$parent/cpuset.cpus" >"$p/cpuset.cpus"
				[[ -n $(<"$p/cpuset.mems") ]] || cat "$parent/cpuset.mems" >"$p/cpuset.mems"
			fi
		done
	done
	echo "$root" >"$CGROUP_FILE"
}

remove_cgroup_root() {
	[[ -f $CGROUP_FILE ]] || return 0
	local root h
	root=$(<"$CGROUP_FILE")
	[[ $root == */switchboard-node ]] || return 0
	for h in /sys/fs/cgroup/*/; do
		[[ -d ${h%/}$root ]] || continue
		# Deepest first; rmdir fails (kept, reported) if a process is left.
		find "${h%/}$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[[ -d ${h%/}$root ]] && log "warning: cgroup ${h%/}$root is not empty, left in place"
	done
	# The levels above it that start created (e.g. in hierarchies where this
	# shell sits at the root), deepest first.
	if [[ -f $CGROUP_FILE.created ]]; then
		local d
		while read -r d; do
			[[ $d == /sys/fs/cgroup/* && -d $d ]] && { rmdir "$d" 2>/dev/null || log "warning: cgroup $d not removed"; }
		done < <(sort -r -u "$CGROUP_FILE.created")
		rm -f "$CGROUP_FILE.created"
	fi
	rm -f "$CGROUP_FILE"
}

# kubelet wants these kernel settings (vm.overcommit_memory=1, kernel.panic=10,
# kernel.panic_on_oops=1 among them) and would silently change them for the
# whole machine. We run it with protectKernelDefaults (it then only checks),
# set them here and record the old values, and `stop` puts them back.
KUBELET_SYSCTLS=(vm.overcommit_memory=1 vm.panic_on_oom=0 kernel.panic=10 kernel.panic_on_oops=1
	kernel.keys.root_maxkeys=1000000 kernel.keys.root_maxbytes=25000000)
apply_sysctls() {
	local kv k v cur
	[[ -f $SYSCTL_SAVED ]] || : >"$SYSCTL_SAVED.tmp"
	for kv in "${KUBELET_SYSCTLS[@]}"; do
		k=${kv%%=*} v=${kv#*=}
		cur=$(sysctl -n "$k")
		[[ $cur == "$v" ]] && continue
		[[ -f $SYSCTL_SAVED ]] || echo "$k=$cur" >>"$SYSCTL_SAVED.tmp"
		log "setting $k=$v for the kubelet (was $cur; restored by stop)"
		sysctl -qw "$k=$v"
	done
	[[ -f $SYSCTL_SAVED ]] || mv -f "$SYSCTL_SAVED.tmp" "$SYSCTL_SAVED"
}
restore_sysctls() {
	[[ -f $SYSCTL_SAVED ]] || return 0
	local kv
	while read -r kv; do
		[[ -n $kv ]] || continue
		log "restoring $kv"
		sysctl -qw "$kv" || true
	done <"$SYSCTL_SAVED"
	rm -f "$SYSCTL_SAVED"
}

write_kubelet_config() {
	mkdir -p "$KUBELET_DIR" "$POD_LOGS_DIR"
	cat >"$STATE_DIR/kubelet-config.yaml" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		# This machine mounts cgroup v1 (hybrid); kubelet 1.35+ refuses v1 unless told.
		failCgroupV1: false
		cgroupDriver: cgroupfs
		cgroupRoot: $(<"$CGROUP_FILE")
		containerRuntimeEndpoint: unix://$CTRD_SOCK
		address: $HOST_IP
		port: $KUBELET_PORT
		readOnlyPort: 0
		tlsCertFile: $PKI_DIR/kubelet-serving.crt
		tlsPrivateKeyFile: $PKI_DIR/kubelet-serving.key
		healthzBindAddress: 127.0.0.1
		healthzPort: $KUBELET_HEALTHZ_PORT
		clusterDomain: cluster.local
		clusterDNS: [$DNS_IP]
		# Pods with dnsPolicy Default get no upstream resolver: nothing but
		# cluster.local is ever resolved.
		resolvConf: ""
		failSwapOn: false
		protectKernelDefaults: true
		# Lowering oom_score_adj needs CAP_SYS_RESOURCE, which root lacks here.
		oomScoreAdj: 0
		authentication:
		  anonymous: {enabled: false}
		  webhook: {enabled: true}
		  x509: {clientCAFile: $PKI_DIR/ca.crt}
		authorization:
		  mode: Webhook
		podLogsDir: $POD_LOGS_DIR
		serializeImagePulls: false
		maxPods: 60
		# Shared disk and memory: evict only when nearly exhausted.
		evictionHard:
		  memory.available: 200Mi
		  nodefs.available: 2%
		  nodefs.inodesFree: 2%
		  imagefs.available: 2%
		imageGCHighThresholdPercent: 99
		imageGCLowThresholdPercent: 98
	EOF
}

write_kube_proxy_config() {
	# iptables mode; NodePorts only on the bridge address (never loopback, so
	# no route_localnet); conntrack sysctls left as they are (maxPerCore 0,
	# timeouts 0); clusterCIDR = the bridge /24.
	cat >"$STATE_DIR/kube-proxy-config.yaml" <<-EOF
		apiVersion: kubeproxy.config.k8s.io/v1alpha1
		kind: KubeProxyConfiguration
		mode: iptables
		clientConnection:
		  kubeconfig: $STATE_DIR/kube-proxy.kubeconfig
		hostnameOverride: $NODE_NAME
		bindAddress: 127.0.0.1
		healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
		metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
		clusterCIDR: $SUBNET
		detectLocalMode: ClusterCIDR
		nodePortAddresses: [$HOST_IP/32]
		oomScoreAdj: 0
		conntrack:
		  maxPerCore: 0
		  min: 0
		  tcpEstablishedTimeout: 0s
		  tcpCloseWaitTimeout: 0s
	EOF
}

# ===========================================================================
# processes
# ===========================================================================

component_bin() {
	case $1 in
	containerd) echo "$CTR_BIN_DIR/containerd" ;;
	*) echo "$K8S_BIN_DIR/$1" ;;
	esac
}
# containerd finds runc and its shims on this PATH; node logs accumulate across starts.
COMPONENT_PATH=$CTR_BIN_DIR:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COMPONENT_LOG_APPEND=1

kubectl_admin() { "$KUBECTL" --kubeconfig "$CLUSTER_STATE/kubeconfig" --request-timeout=10s "$@"; }
ctr_k8s() { "$CTR_BIN_DIR/ctr" --address "$CTRD_SOCK" --namespace k8s.io "$@"; }
crictl_node() { "$CRICTL_BIN_DIR/crictl" --runtime-endpoint "unix://$CTRD_SOCK" --image-endpoint "unix://$CTRD_SOCK" --timeout 20s "$@"; }

# Listed first, then searched: `ctr ... | grep -q` under pipefail fails when
# grep exits before ctr has written everything (SIGPIPE).
image_present() {
	local list
	list=$(ctr_k8s images ls -q 2>/dev/null) || return 1
	grep -qxF "$1" <<<"$list"
}
containerd_ready() { "$CTR_BIN_DIR/ctr" --address "$CTRD_SOCK" version >/dev/null 2>&1; }
node_ready() {
	[[ $(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
proxy_healthy() { curl -fsS --noproxy '*' -m 3 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz" >/dev/null 2>&1; }
scheduler_healthy() { [[ $(curl -ksS --noproxy '*' -m 3 "https://127.0.0.1:$SCHEDULER_PORT/healthz" 2>/dev/null) == ok ]]; }
coredns_ready() {
	[[ $(kubectl_admin -n kube-system get deployment coredns -o jsonpath='{.status.readyReplicas}' 2>/dev/null) == 1 ]]
}

start_containerd() {
	launch containerd --config "$CTRD_DIR/config.toml"
}

import_images() {
	local name
	for name in "$(pause_image)" "$(coredns_image)" "$(smoke_image)"; do
		if image_present "$name"; then
			continue
		fi
		log "importing $name into containerd"
		ctr_k8s images import --platform linux/amd64 "$(image_tar "$name")" 2>&1 >/dev/null | grep -v 'DEPRECATION: The support for cgroup v1' >&2 || true
		image_present "$name" || { log "importing $name failed"; return 1; }
	done
}

start_kubelet() {
	launch kubelet \
		--config="$STATE_DIR/kubelet-config.yaml" \
		--kubeconfig="$STATE_DIR/kubelet.kubeconfig" \
		--root-dir="$KUBELET_DIR" \
		--cert-dir="$KUBELET_DIR/pki" \
		--hostname-override="$NODE_NAME" \
		--node-ip="$HOST_IP"
}

start_kube_proxy() {
	launch kube-proxy --config="$STATE_DIR/kube-proxy-config.yaml"
}

start_scheduler() {
	launch kube-scheduler \
		--kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
		--authentication-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
		--authorization-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
		--bind-address=127.0.0.1 \
		--secure-port="$SCHEDULER_PORT" \
		--cert-dir="$STATE_DIR/scheduler-certs" \
		--leader-elect=false
}

# CoreDNS as a Deployment in kube-system, Service at DNS_IP: only the
# cluster.local zone, no forward plugin (it is not even compiled in).
# Restricted-compliant: nonroot, read-only root, no capabilities, so it
# listens on 5353 and the Service maps 53 to it.
apply_coredns() {
	kubectl_admin apply -f - >/dev/null <<-EOF
		apiVersion: v1
		kind: ServiceAccount
		metadata: {name: coredns, namespace: kube-system}
		---
		apiVersion: rbac.authorization.k8s.io/v1
		kind: ClusterRole
		metadata: {name: "system:coredns"}
		rules:
		- apiGroups: [""]
		  resources: [services, namespaces]
		  verbs: [list, watch]
		- apiGroups: [discovery.k8s.io]
		  resources: [endpointslices]
		  verbs: [list, watch]
		---
		apiVersion: rbac.authorization.k8s.io/v1
		kind: ClusterRoleBinding
		metadata: {name: "system:coredns"}
		roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
		subjects:
		- {kind: ServiceAccount, name: coredns, namespace: kube-system}
		---
		apiVersion: v1
		kind: ConfigMap
		metadata: {name: coredns, namespace: kube-system}
		data:
		  Corefile: |
		    cluster.local:5353 {
		        errors
		        health :8080
		        ready :8181
		        kubernetes cluster.local {
		            pods disabled
		        }
		        cache 30
		        loadbalance
		    }
		---
		apiVersion: apps/v1
		kind: Deployment
		metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
		spec:
		  replicas: 1
		  selector: {matchLabels: {k8s-app: kube-dns}}
		  template:
		    metadata: {labels: {k8s-app: kube-dns}}
		    spec:
		      serviceAccountName: coredns
		      dnsPolicy: Default
		      priorityClassName: system-cluster-critical
		      securityContext:
		        runAsNonRoot: true
		        runAsUser: 65532
		        runAsGroup: 65532
		        seccompProfile: {type: RuntimeDefault}
		      containers:
		      - name: coredns
		        image: $(coredns_image)
		        imagePullPolicy: Never
		        args: [-conf, /etc/coredns/Corefile]
		        ports:
		        - {name: dns, containerPort: 5353, protocol: UDP}
		        - {name: dns-tcp, containerPort: 5353, protocol: TCP}
		        securityContext:
		          allowPrivilegeEscalation: false
		          readOnlyRootFilesystem: true
		          capabilities: {drop: [ALL]}
		        resources:
		          requests: {cpu: 50m, memory: 40Mi}
		          limits: {memory: 120Mi}
		        livenessProbe:
		          httpGet: {path: /health, port: 8080}
		          periodSeconds: 10
		        readinessProbe:
		          httpGet: {path: /ready, port: 8181}
		          periodSeconds: 2
		        volumeMounts:
		        - {name: config, mountPath: /etc/coredns, readOnly: true}
		      volumes:
		      - name: config
		        configMap: {name: coredns}
		---
		apiVersion: v1
		kind: Service
		metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
		spec:
		  clusterIP: $DNS_IP
		  selector: {k8s-app: kube-dns}
		  ports:
		  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
		  - {name: dns-tcp, port: 53, targetPort: 5353, protocol: TCP}
	EOF
}

# ===========================================================================
# verbs
# ===========================================================================

require_tools() {
	[[ $(id -u) == 0 ]] || die "the node needs root (containers, bridge, iptables)"
	local t
	for t in ip ss nsenter iptables ip6tables runc jq curl openssl flock setsid findmnt dpkg-deb apt-get gcc strip sysctl; do
		command -v "$t" >/dev/null || die "$t is required (e2e/infra/deps.sh --node installs the node's packages)"
	done
	[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] ||
		die "CNI plugins missing in /usr/lib/cni (e2e/infra/deps.sh --node)"
}

all_up() {
	local c
	for c in "${COMPONENTS[@]}"; do
		running "$c" || return 1
	done
}

cmd_start() {
	require_tools
	local t_build=$SECONDS
	cmd_build
	t_build=$((SECONDS - t_build))
	mkdir -p "$STATE_DIR"
	exec 9>"$STATE_DIR/.lock"
	flock 9

	T0=$SECONDS
	DEADLINE=$((SECONDS + TIMEOUT))
	# First, so an API server bound to the bridge address (which a previous
	# stop removed) is reachable again: its listening socket survives.
	cmd_network
	kubectl_admin get --raw /readyz >/dev/null 2>&1 || die "the control plane is not running (cluster.sh start)"
	local url
	url=$(apiserver_url)
	[[ $url == "https://$HOST_IP:"* ]] ||
		die "the API server is at $url; pods need it on the bridge: run '$0 network', then cluster.sh start with SWITCHBOARD_APISERVER_ADDRESS=$HOST_IP (or use with-infra.sh --node)"

	if all_up; then
		if node_ready && coredns_ready; then
			log "already running and healthy (node $NODE_NAME)"
			return 0
		fi
		log "running but not ready yet; waiting"
		wait_for "node $NODE_NAME Ready" kubelet node_ready || exit 1
		wait_for "CoreDNS ready" kubelet coredns_ready || exit 1
		return 0
	fi
	if running containerd || running kubelet || running kube-proxy || running kube-scheduler; then
		log "only partly running: stopping first"
		do_stop
	fi

	ensure_pki
	local n
	for n in kubelet kube-proxy kube-scheduler; do
		write_kubeconfig "$n"
	done
	ensure_cgroup_root
	write_containerd_config
	write_kubelet_config
	write_kube_proxy_config
	apply_sysctls

	if log "starting containerd $CONTAINERD_VERSION" &&
		start_containerd &&
		wait_for "containerd socket" containerd containerd_ready &&
		import_images &&
		log "starting kubelet (node $NODE_NAME, $HOST_IP)" &&
		start_kubelet &&
		wait_for "node $NODE_NAME Ready" kubelet node_ready &&
		log "starting kube-proxy (iptables)" &&
		start_kube_proxy &&
		wait_for "kube-proxy healthz" kube-proxy proxy_healthy &&
		forward_guard_first &&
		log "starting kube-scheduler" &&
		start_scheduler &&
		wait_for "kube-scheduler healthz" kube-scheduler scheduler_healthy &&
		log "deploying CoreDNS ($DNS_IP, cluster.local only)" &&
		apply_coredns &&
		wait_for "CoreDNS ready" kubelet coredns_ready; then
		log "node ready in $((SECONDS - T0)) s (build check $t_build s)"
		return 0
	fi
	log "start failed; stopping what was started (logs kept in $STATE_DIR)"
	do_stop
	exit 1
}

# Remove every pod sandbox through CRI while containerd still runs (stops
# containers, CNI DEL, netns removal), then whatever tasks are left.
# Grace periods: kubelet is already stopped, so nothing restarts what we stop.
# Every running container gets SIGTERM at once and up to its pod's
# terminationGracePeriodSeconds (from the annotation kubelet put on it,
# capped at STOP_GRACE) before SIGKILL, as kubelet would do; then the exit
# codes are logged (0/143: it stopped on SIGTERM; 137: it had to be killed).
stop_containers_gracefully() {
	[[ -x $CRICTL_BIN_DIR/crictl ]] || return 0
	local ids id grace max=0 pids=()
	ids=$(crictl_node ps -q --state running 2>/dev/null || true)
	[[ -n $ids ]] || return 0
	for id in $ids; do
		grace=$(crictl_node inspect "$id" 2>/dev/null |
			jq -r '.status.annotations["io.kubernetes.pod.terminationGracePeriod"] // "30"' 2>/dev/null || echo 30)
		[[ $grace =~ ^[0-9]+$ ]] || grace=30
		((grace <= STOP_GRACE)) || grace=$STOP_GRACE
		((grace <= max)) || max=$grace
		"$CRICTL_BIN_DIR/crictl" --runtime-endpoint "unix://$CTRD_SOCK" --timeout "$((grace + 15))s" \
			stop --timeout "$grace" "$id" >/dev/null 2>&1 &
		pids+=($!)
	done
	log "stopping $(wc -w <<<"$ids") containers (SIGTERM, then SIGKILL after their grace period, at most ${max} s)"
	wait "${pids[@]}" 2>/dev/null || true
	for id in $ids; do
		crictl_node inspect "$id" 2>/dev/null |
			jq -r '"container \(.status.labels["io.kubernetes.pod.namespace"] // "?")/\(.status.labels["io.kubernetes.pod.name"] // "?")/\(.status.metadata.name) exited \(.status.exitCode)"' 2>/dev/null |
			while read -r line; do log "$line"; done || true
	done
}

remove_pods() {
	running containerd || return 0
	stop_containers_gracefully
	if [[ -x $CRICTL_BIN_DIR/crictl ]]; then
		local ids
		ids=$(crictl_node pods -q 2>/dev/null || true)
		if [[ -n $ids ]]; then
			log "removing $(wc -w <<<"$ids") pod sandboxes"
			# shellcheck disable=SC2086 # one id per word
			crictl_node stopp $ids >/dev/null 2>&1 || true
			# shellcheck disable=SC2086
			crictl_node rmp -f $ids >/dev/null 2>&1 || true
		fi
	fi
	local t
	for t in $(ctr_k8s tasks ls -q 2>/dev/null || true); do
		log "killing leftover containerd task $t"
		ctr_k8s tasks kill -s SIGKILL "$t" 2>/dev/null || true
	done
	sleep 0.5
	for t in $(ctr_k8s tasks ls -q 2>/dev/null || true); do
		ctr_k8s tasks delete -f "$t" >/dev/null 2>&1 || true
	done
	for t in $(ctr_k8s containers ls -q 2>/dev/null || true); do
		ctr_k8s containers delete "$t" >/dev/null 2>&1 || true
	done
}

# Network namespaces our containerd made (named cni-<uuid>, bind-mounted in
# /var/run/netns) are remembered in the state dir while it runs.
record_netns() {
	running containerd || return 0
	local id
	for id in $(ctr_k8s containers ls -q 2>/dev/null || true); do
		ctr_k8s containers info "$id" 2>/dev/null |
			jq -r '.Spec.linux.namespaces[]? | select(.type=="network") | .path // empty' 2>/dev/null
	done | grep -E '^/var/run/netns/cni-|^/run/netns/cni-' >>"$STATE_DIR/netns.list" || true
}

remove_netns() {
	[[ -f $STATE_DIR/netns.list ]] || return 0
	local ns
	while read -r ns; do
		[[ -e $ns ]] || continue
		log "removing leftover network namespace $ns"
		umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
		rm -f "$ns"
	done < <(sort -u "$STATE_DIR/netns.list")
	rm -f "$STATE_DIR/netns.list"
	rmdir /var/run/netns 2>/dev/null || true
}

unmount_state() {
	local m
	# Deepest first.
	while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"
	done < <(findmnt -rn -o TARGET | awk -v p="$STATE_DIR/" 'index($0, p) == 1' | sort -r)
}

# kube-proxy --cleanup removes its iptables/ip6tables (and nftables) rules;
# then any KUBE-* chain left (kubelet's canaries, hints) in either family.
remove_kube_rules() {
	if [[ -x $K8S_BIN_DIR/kube-proxy ]]; then
		"$K8S_BIN_DIR/kube-proxy" --cleanup >>"$STATE_DIR/kube-proxy-cleanup.log" 2>&1 || true
	fi
	local ipt t c rule
	for ipt in iptables ip6tables; do
		for t in filter nat mangle; do
			local -a chains=()
			mapfile -t chains < <("$ipt" -w -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}')
			((${#chains[@]} > 0)) || continue
			while read -r rule; do
				# shellcheck disable=SC2086 # a rule as iptables -S prints it
				"$ipt" -w -t "$t" ${rule/#-A/-D} 2>/dev/null || true
			done < <("$ipt" -w -t "$t" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-')
			for c in "${chains[@]}"; do "$ipt" -w -t "$t" -F "$c" 2>/dev/null || true; done
			for c in "${chains[@]}"; do "$ipt" -w -t "$t" -X "$c" 2>/dev/null || true; done
		done
	done
}

do_stop() {
	stop_component kube-scheduler
	stop_component kube-proxy
	# kubelet first, so it does not restart what we remove next.
	stop_component kubelet
	record_netns
	remove_pods
	stop_component containerd
	# Their logs (kubelet would have removed them with the pods).
	rm -rf "$POD_LOGS_DIR"
	# The shims' sockets and fifos live in containerd's fixed /run/containerd
	# (not configurable); remove those dirs if we left them empty.
	rmdir /run/containerd/s /run/containerd/fifo /run/containerd 2>/dev/null || true
	remove_netns
	unmount_state
	remove_kube_rules
	network_down
	remove_cgroup_root
	restore_sysctls
	# The Node object would otherwise stay NotReady in a still-running cluster.
	if [[ -f $CLUSTER_STATE/kubeconfig ]] && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
		kubectl_admin delete node "$NODE_NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
	fi
}

cmd_stop() {
	local clean=false
	case "${1:-}" in
	"") ;;
	--clean) clean=true ;;
	*) die "unknown stop option: $1" ;;
	esac
	[[ -d $STATE_DIR ]] || { network_down; return 0; }
	exec 9>"$STATE_DIR/.lock"
	flock 9
	do_stop
	if $clean; then
		log "removing $STATE_DIR"
		rm -rf "$STATE_DIR"
	fi
}

cmd_status() {
	local ok=true c pid
	for c in containerd kubelet kube-proxy kube-scheduler; do
		if pid=$(pid_of "$c"); then
			printf '%-24s running (pid %s)\n' "$c" "$pid"
		else
			printf '%-24s not running\n' "$c"
			ok=false
		fi
	done
	if ip link show "$BRIDGE" >/dev/null 2>&1; then
		printf '%-24s up (%s)\n' "bridge $BRIDGE" "$HOST_IP/24"
	else
		printf '%-24s absent\n' "bridge $BRIDGE"
		ok=false
	fi
	if [[ -f $CLUSTER_STATE/kubeconfig ]] && node_ready; then
		printf '%-24s Ready\n' "node $NODE_NAME"
	else
		printf '%-24s not ready\n' "node $NODE_NAME"
		ok=false
	fi
	if [[ -f $CLUSTER_STATE/kubeconfig ]] && coredns_ready; then
		printf '%-24s ready (%s)\n' coredns "$DNS_IP"
	else
		printf '%-24s not ready\n' coredns
		ok=false
	fi
	$ok || exit 3
}

usage() {
	echo "usage: $0 build|network|start|stop [--clean]|status|smoke" >&2
	exit 2
}

main() {
	local verb=${1:-}
	(($# > 0)) && shift
	case "$verb" in
	build) require_tools && cmd_build ;;
	network) cmd_network ;;
	start) cmd_start ;;
	stop) cmd_stop "$@" ;;
	status) cmd_status ;;
	smoke) exec "$SCRIPT_DIR/node-smoke.sh" "$@" ;;
	host-ip) printf '%s\n' "$HOST_IP" ;;
	bridge-name) printf '%s\n' "$BRIDGE" ;;
	smoke-image) smoke_image ;;
	runtime-image) cmd_runtime_image "$@" ;;
	base-rootfs) cmd_base_rootfs "$@" ;;
	import-image) cmd_import_image "$@" ;;
	crictl-path) printf '%s\n' "$CRICTL_BIN_DIR/crictl" ;;
	*) usage ;;
	esac
}

main "$@"
