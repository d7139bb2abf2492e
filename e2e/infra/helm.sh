#!/usr/bin/env bash
# Helm for Switchboard's packaging tests (helm lint / helm template of
# charts/switchboard).
#
# Built from source fetched through the Go module proxy (the only network this
# script uses) and cached per version, so only the first run on a machine pays
# for the build (a few minutes on 2 cores).
#
# Usage: helm.sh build|bin
#
#   build   build (or reuse the cached) helm binary
#   bin     build if needed, then print the absolute path of the helm binary,
#           nothing else on stdout
#
# Environment:
#   SWITCHBOARD_CACHE   build cache root (~/.cache/switchboard)
set -euo pipefail

# ---------------------------------------------------------------------------
# Version: change here.
HELM_VERSION=v3.22.0
# Used only when the local Go is older than the one helm's go.mod asks for;
# the go command then fetches this toolchain through the module proxy.
FALLBACK_GOTOOLCHAIN=go1.27.3
# ---------------------------------------------------------------------------

CACHE_ROOT=$(realpath -m "${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}")
BUILD_DIR=$CACHE_ROOT/helm/$HELM_VERSION
BIN_DIR=$BUILD_DIR/bin
HELM_BIN=$BIN_DIR/helm
STAMP=$BIN_DIR/.helm.stamp

log() { printf '[helm] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# go_env, module_gomod, select_toolchain
# shellcheck source=e2e/infra/golib.sh
source "$(dirname "${BASH_SOURCE[0]}")/golib.sh"

built() { [[ -x $HELM_BIN && -f $STAMP && $(<"$STAMP") == "$HELM_VERSION" ]]; }

build_helm() {
	local t0=$SECONDS src=$BUILD_DIR/src
	log "building helm $HELM_VERSION (first time only)"
	rm -rf "$src" && mkdir -p "$src"
	cd "$src"

	local gomod
	gomod=$(module_gomod "helm.sh/helm/v3@$HELM_VERSION")
	[[ -f $gomod ]] || die "could not download helm.sh/helm/v3@$HELM_VERSION"
	select_toolchain "$gomod"

	# A throwaway module requiring helm at the wanted version; its tools.go
	# (never compiled, only read by tidy) imports the main package. helm's own
	# go.mod pins its dependencies, which MVS keeps as they are.
	printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' >tools.go
	{
		printf 'module switchboard.local/helmbuild\n\n'
		grep -E '^go [0-9.]+$' "$gomod"
		printf '\nrequire helm.sh/helm/v3 %s\n' "$HELM_VERSION"
	} >go.mod
	go mod tidy

	# What helm's Makefile stamps, so `helm version` tells the truth.
	local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
	ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	# Build into a temp dir, then rename: an interrupted build never leaves a
	# half-written binary behind.
	local tmp
	tmp=$(mktemp -d "$BIN_DIR/.tmp.XXXXXX")
	go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
	mv -f "$tmp/helm" "$HELM_BIN"
	rmdir "$tmp"

	echo "$HELM_VERSION" >"$STAMP.tmp" && mv -f "$STAMP.tmp" "$STAMP"
	cd /
	rm -rf "$src"
	log "built helm $HELM_VERSION in $((SECONDS - t0)) s"
}

cmd_build() {
	built && return 0
	mkdir -p "$BIN_DIR"
	# One build at a time per version (e.g. two test runs starting at once);
	# the second one waits, then finds the stamp and returns.
	exec 8>"$BUILD_DIR/.build.lock"
	flock 8
	if ! built; then
		go_env
		(build_helm)
		rm -rf "$BUILD_DIR/src" "$BIN_DIR"/.tmp.*
	fi
	exec 8>&-
}

case "${1:-}" in
build) cmd_build ;;
bin)
	cmd_build
	echo "$HELM_BIN"
	;;
*)
	echo "usage: $0 build|bin" >&2
	exit 2
	;;
esac
