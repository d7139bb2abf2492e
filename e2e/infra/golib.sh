# shellcheck shell=bash
# Go build environment shared by cluster.sh and helm.sh (sourced, not run).
# The caller defines log, die and FALLBACK_GOTOOLCHAIN.

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

# select_toolchain GOMOD: if the local Go is older than the `go` line of
# GOMOD, let the go command switch to a newer toolchain (itself a module on
# the proxy). Needed because GOTOOLCHAIN=local refuses instead of switching.
select_toolchain() {
	local need have
	need=$(sed -nE 's/^go ([0-9.]+)$/\1/p' "$1")
	have=$(go env GOVERSION)
	have=${have#go}
	if [[ $(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1) != "$need" ]]; then
		log "local go $have < go $need required by $1: using GOTOOLCHAIN=$FALLBACK_GOTOOLCHAIN"
		export GOTOOLCHAIN=$FALLBACK_GOTOOLCHAIN
	fi
}

# go_build_progress LOG GO_BUILD_ARGS...: `go build -v` with its package list
# going to LOG, printing a progress line every 20 s (package count and the
# last one compiled) so a long first build is visibly moving. Returns go
# build's status; on failure the end of LOG is shown.
go_build_progress() {
	local logf=$1
	shift
	go build -v "$@" >"$logf" 2>&1 &
	local pid=$! t0=$SECONDS next=$((SECONDS + 20))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= next)); then
			log "  ... $((SECONDS - t0)) s, $(wc -l <"$logf") packages compiled, last: $(tail -n 1 "$logf")"
			next=$((SECONDS + 20))
		fi
		sleep 1
	done
	if ! wait "$pid"; then
		tail -n 30 "$logf" >&2
		return 1
	fi
}
