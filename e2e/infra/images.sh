#!/usr/bin/env bash
# `make images`: builds the switchboard-runtime and switchboard-operator images
# from runtime/Dockerfile and operator/Dockerfile (the files users build with
# `docker build`) with buildah (Debian, daemonless), and loads them into the
# real node's containerd when it runs (e2e/infra/node.sh).
#
# Nothing is pulled: the two base images the Dockerfiles name are assembled
# here under the same names, in buildah's own storage under the cache dir:
#   gcr.io/distroless/cc-debian12:nonroot  the node's distroless/cc-equivalent
#       root (glibc, libgcc, libstdc++, libssl3, CA bundle, user 65532) from
#       Debian .debs (node.sh base-rootfs);
#   rust:<RUST_VERSION>-bookworm  a Debian bookworm root (mmdebstrap) with the
#       build tools the Dockerfiles install (cmake, pkg-config, libssl-dev)
#       already installed and no apt sources (so their `apt-get update &&
#       apt-get install` succeeds offline), plus this machine's Rust toolchain
#       and cargo set to offline mode.
# Builds run with --network none. The Dockerfiles' cargo cache mounts are
# buildah cache directories under the cache dir; the registry one is seeded
# from ~/.cargo/registry (index and .crate files), so cargo builds offline
# from the crates this machine already has, and the target one keeps the
# release build between runs (a warm rebuild only recompiles what changed).
#
# Usage: images.sh build [runtime|operator]...   (default: both)
#        images.sh load                          import the built images into the node
#        images.sh names                         print the image names
#        images.sh bases                         (re)build the two base images only
#
# Environment:
#   SWITCHBOARD_CACHE          as for cluster.sh; ours is <cache>/images
#   SWITCHBOARD_STATE_DIR      buildah's run root is <state>/buildah
#   SWITCHBOARD_IMAGE_TAG      tag of our images [the chart's appVersion]
#   SWITCHBOARD_IMAGE_JOBS     cargo jobs inside the build [2]
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
NODE_SH=$SCRIPT_DIR/node.sh

CACHE_ROOT=$(realpath -m "${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}")
IMG_CACHE=$CACHE_ROOT/images
STORAGE=$IMG_CACHE/storage
STATE_ROOT=$(realpath -m "${SWITCHBOARD_STATE_DIR:-$REPO_ROOT/.state}")
RUNROOT=$STATE_ROOT/buildah
ARCHIVES=$IMG_CACHE/archives
# buildah (as root) puts RUN --mount=type=cache directories under $TMPDIR/buildah-cache.
BUILD_TMP=$IMG_CACHE/tmp
CACHE_MOUNTS=$BUILD_TMP/buildah-cache

RUST_VERSION=$(sed -nE 's/^ARG RUST_VERSION=(.*)$/\1/p' "$REPO_ROOT/runtime/Dockerfile" | head -n 1)
DISTROLESS=gcr.io/distroless/cc-debian12:nonroot
RUST_BASE=docker.io/library/rust:$RUST_VERSION-bookworm
# What rust:<v>-bookworm brings that the Dockerfiles use, plus what they
# apt-get install (kept installed here, so that step needs no network).
# (rust:*-bookworm is buildpack-deps:bookworm: librdkafka's build finds curl's and
# zlib's headers there.)
RUST_BASE_PACKAGES=ca-certificates,curl,git,build-essential,libcurl4-openssl-dev,zlib1g-dev,cmake,pkg-config,libssl-dev
APP_VERSION=$(sed -nE 's/^appVersion: "?([^"]*)"?$/\1/p' "$REPO_ROOT/charts/switchboard/Chart.yaml")
TAG=${SWITCHBOARD_IMAGE_TAG:-$APP_VERSION}
JOBS=${SWITCHBOARD_IMAGE_JOBS:-2}

log() { printf '[images] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[[ -n $RUST_VERSION ]] || die "no ARG RUST_VERSION in runtime/Dockerfile"
[[ -n $TAG && $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "SWITCHBOARD_IMAGE_TAG must be an image tag (got '$TAG')"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "SWITCHBOARD_IMAGE_JOBS must be a positive number (got '$JOBS')"

image_name() { echo "ghcr.io/switchboard-dev/switchboard-$1:$TAG"; }
archive_of() { echo "$ARCHIVES/switchboard-$1-$TAG.tar"; }

bh() { TMPDIR=$BUILD_TMP buildah --root "$STORAGE" --runroot "$RUNROOT" --storage-driver overlay "$@"; }

require_tools() {
	local t missing=()
	for t in buildah mmdebstrap runc; do
		command -v "$t" >/dev/null || missing+=("$t")
	done
	((${#missing[@]} == 0)) || die "missing ${missing[*]}: run e2e/infra/deps.sh --images"
	[[ $(id -u) == 0 ]] || die "images.sh runs buildah as root (overlay storage, runc)"
}

# have_image NAME KEY: NAME exists and was made from inputs with digest KEY.
have_image() {
	[[ $(bh inspect --type image --format '{{index .OCIv1.Config.Labels "dev.switchboard.base-key"}}' "$1" 2>/dev/null) == "$2" ]]
}
input_key() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# commit_root NAME USER ENV... : commit the working container $ctr as NAME,
# labelled with the caller's $key (the digest of its inputs).
commit_root() {
	local name=$1 user=$2
	shift 2
	local e args=()
	for e in "$@"; do args+=(--env "$e"); done
	bh config --user "$user" --label "dev.switchboard.base-key=$key" "${args[@]}" "$ctr" >/dev/null
	bh commit --quiet --rm "$ctr" "$name" >/dev/null
	ctr=""
}

ctr=""
# On exit: our working container, the containers a failed build leaves, and
# the overlay driver's own mounts (none stays mounted between runs).
cleanup() {
	[[ -z $ctr ]] || bh rm "$ctr" >/dev/null 2>&1 || true
	if [[ -d $STORAGE ]]; then
		bh rm --all >/dev/null 2>&1 || true
		local m
		while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done < <(findmnt -rn -o TARGET | awk -v p="$STORAGE/" 'index($0, p) == 1' | sort -r)
	fi
}
trap cleanup EXIT

build_distroless() {
	local key
	key=$(input_key "$(sha256sum "$NODE_SH")")
	have_image "$DISTROLESS" "$key" && return 0
	log "assembling base image $DISTROLESS from Debian packages (node.sh base-rootfs)"
	ctr=$(bh from --pull=never scratch)
	local mnt
	mnt=$(bh mount "$ctr")
	"$NODE_SH" base-rootfs "$mnt"
	bh umount "$ctr" >/dev/null
	bh config --workingdir /home/nonroot "$ctr" >/dev/null
	commit_root "$DISTROLESS" 65532:65532 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
}

build_rust_base() {
	local toolchain="" tc
	for tc in "+$RUST_VERSION" "+$RUST_VERSION.0" ""; do
		# shellcheck disable=SC2086 # an empty tc means the default toolchain
		if [[ $(rustc $tc --version 2>/dev/null) == "rustc $RUST_VERSION"[.\ ]* ]]; then
			toolchain=$(rustc $tc --print sysroot) && break
		fi
	done
	[[ -n $toolchain ]] || die "this machine has no Rust $RUST_VERSION toolchain (rustup toolchain install $RUST_VERSION)"
	local key
	key=$(input_key "$RUST_BASE_PACKAGES" "$(rustc "$tc" -vV 2>/dev/null || rustc -vV)" "$JOBS")
	have_image "$RUST_BASE" "$key" && return 0
	log "assembling base image $RUST_BASE: Debian bookworm (mmdebstrap: $RUST_BASE_PACKAGES) + Rust from $toolchain"
	local t0=$SECONDS
	ctr=$(bh from --pull=never scratch)
	local mnt
	mnt=$(bh mount "$ctr")
	mmdebstrap --quiet --variant=apt --include="$RUST_BASE_PACKAGES" \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		bookworm "$mnt" http://deb.debian.org/debian >&2 ||
		die "mmdebstrap bookworm failed (needs deb.debian.org)"
	# No sources: the Dockerfiles' `apt-get update` is then a no-op and their
	# `apt-get install` finds the packages already installed.
	rm -rf "$mnt/etc/apt/sources.list" "$mnt/etc/apt/sources.list.d"/* "$mnt/var/lib/apt/lists"/*
	mkdir -p "$mnt/usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu" "$mnt/usr/local/cargo/bin"
	tar -C "$toolchain" --exclude=./share/doc -cf - . |
		tar -C "$mnt/usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu" -xf -
	local b
	for b in cargo rustc rustdoc; do
		ln -s "/usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu/bin/$b" "$mnt/usr/local/cargo/bin/$b"
	done
	# Offline: crates come from the registry cache mount (seeded below).
	printf '[net]\noffline = true\n' >"$mnt/usr/local/cargo/config.toml"
	bh umount "$ctr" >/dev/null
	commit_root "$RUST_BASE" 0:0 RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
		PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		RUST_VERSION="$RUST_VERSION" CARGO_BUILD_JOBS="$JOBS"
	log "base image $RUST_BASE ready in $((SECONDS - t0)) s"
}

# The Dockerfiles' registry cache mount, seeded with this machine's crate
# index and .crate files (cargo extracts the sources itself).
seed_registry() {
	local reg=$CACHE_MOUNTS/usr/local/cargo/registry src=${CARGO_HOME:-$HOME/.cargo}/registry
	[[ -d $src/index && -d $src/cache ]] || die "no crate registry at $src: run cargo fetch on the host first"
	mkdir -p "$reg"
	log "seeding the registry cache mount from $src"
	cp -a --update "$src/index" "$src/cache" "$reg/"
}

build_one() {
	local what=$1 name archive t0=$SECONDS
	name=$(image_name "$what")
	archive=$(archive_of "$what")
	log "building $name from $what/Dockerfile (buildah, --network none; progress below)"
	bh build --pull=never --network none --isolation oci --layers --force-rm \
		--build-arg RUST_VERSION="$RUST_VERSION" \
		-f "$REPO_ROOT/$what/Dockerfile" -t "$name" "$REPO_ROOT" >&2 ||
		die "building $name failed"
	mkdir -p "$ARCHIVES"
	rm -f "$archive.tmp"
	bh push --quiet "$name" "oci-archive:$archive.tmp:$name" >&2
	mv -f "$archive.tmp" "$archive"
	log "$name built in $((SECONDS - t0)) s ($(du -h "$archive" | cut -f1) archive)"
}

cmd_bases() {
	require_tools
	mkdir -p "$STORAGE" "$RUNROOT" "$BUILD_TMP"
	build_distroless
	build_rust_base
}

cmd_build() {
	local what list=("$@") t0=$SECONDS
	((${#list[@]} > 0)) || list=(runtime operator)
	for what in "${list[@]}"; do
		[[ $what == runtime || $what == operator ]] || die "unknown image '$what' (runtime or operator)"
	done
	cmd_bases
	seed_registry
	for what in "${list[@]}"; do
		build_one "$what"
	done
	log "images built in $((SECONDS - t0)) s"
	if "$NODE_SH" status >/dev/null 2>&1; then
		cmd_load "${list[@]}"
	else
		log "the node is not running: load them later with $0 load"
	fi
}

cmd_load() {
	local what list=("$@")
	((${#list[@]} > 0)) || list=(runtime operator)
	for what in "${list[@]}"; do
		[[ -f $(archive_of "$what") ]] || die "$(image_name "$what") is not built ($0 build $what)"
		log "loading $(image_name "$what") into the node's containerd"
		"$NODE_SH" import-image "$(archive_of "$what")" "$(image_name "$what")"
	done
}

# One build at a time (cleanup removes every buildah container in our storage).
if [[ ${1:-} == build || ${1:-} == bases ]]; then
	mkdir -p "$IMG_CACHE"
	exec 7>"$IMG_CACHE/.lock"
	flock 7
fi

case "${1:-}" in
build) shift && cmd_build "$@" ;;
load) shift && cmd_load "$@" ;;
bases) cmd_bases ;;
names) image_name runtime && image_name operator ;;
*)
	echo "usage: $0 build [runtime|operator]...|load [runtime|operator]...|names|bases" >&2
	exit 2
	;;
esac
