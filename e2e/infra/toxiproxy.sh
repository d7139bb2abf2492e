#!/usr/bin/env bash
# Toxiproxy, a real TCP fault proxy (latency, bandwidth, timeouts, resets), for the
# fault tests: built from source fetched through the Go module proxy and cached per
# version, started on 127.0.0.1 with a pid file.
#
# Usage: toxiproxy.sh build|bin|start|stop|status|url
#
#   build   build (or reuse the cached) toxiproxy-server binary
#   bin     build if needed, then print the binary's absolute path, nothing else
#   start   start the server in the background, wait until its API answers.
#           Idempotent.
#   stop    SIGTERM our server (pid file only), SIGKILL after a timeout. Idempotent.
#   status  exit 0 if running and its API answers, 3 otherwise.
#   url     print the API's base URL (http://127.0.0.1:PORT) and nothing else.
#
# Environment:
#   SWITCHBOARD_CACHE            build cache root (~/.cache/switchboard)
#   SWITCHBOARD_STATE_DIR        state root (<repo>/.state); ours is .../toxiproxy
#   SWITCHBOARD_TOXIPROXY_PORT   API port (8474, or the one it was started on)
set -euo pipefail

# ---------------------------------------------------------------------------
# Version: change here (the newest tag of the module path on the proxy).
TOXIPROXY_VERSION=v2.5.0
# ---------------------------------------------------------------------------

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
CACHE_ROOT=$(realpath -m "${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}")
BUILD_DIR=$CACHE_ROOT/toxiproxy/$TOXIPROXY_VERSION
BIN=$BUILD_DIR/bin/toxiproxy-server
STAMP=$BUILD_DIR/bin/.stamp

STATE_DIR="${SWITCHBOARD_STATE_DIR:-$REPO_ROOT/.state}/toxiproxy"
PID_FILE=$STATE_DIR/toxiproxy.pid
LOG_FILE=$STATE_DIR/toxiproxy.log
HOST=127.0.0.1
PORT_FILE=$STATE_DIR/port
# The port it was started on is remembered, so `stop` finds it without the variable.
PORT="${SWITCHBOARD_TOXIPROXY_PORT:-$(cat "$PORT_FILE" 2>/dev/null || echo 8474)}"
START_TIMEOUT=30
STOP_TIMEOUT=10

log() { printf '[toxiproxy] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# go_env (module proxy only, no go.work)
# shellcheck source=e2e/infra/golib.sh
source "$SCRIPT_DIR/golib.sh"

built() { [[ -x $BIN && -f $STAMP && $(<"$STAMP") == "$TOXIPROXY_VERSION" ]]; }

cmd_build() {
	built && return 0
	mkdir -p "$BUILD_DIR/bin"
	# One build at a time per version; the second caller finds the stamp.
	exec 8>"$BUILD_DIR/.build.lock"
	flock 8
	if ! built; then
		go_env
		local t0=$SECONDS tmp
		log "building toxiproxy $TOXIPROXY_VERSION from the Go module proxy (first time only)"
		tmp=$(mktemp -d "$BUILD_DIR/bin/.tmp.XXXXXX")
		# `go install module@version` builds with the module's own go.mod pins.
		GOBIN=$tmp go install -trimpath -buildvcs=false -ldflags "-s -w" \
			"github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION"
		mv -f "$tmp/server" "$BIN"
		rmdir "$tmp"
		echo "$TOXIPROXY_VERSION" >"$STAMP.tmp" && mv -f "$STAMP.tmp" "$STAMP"
		log "built toxiproxy $TOXIPROXY_VERSION in $((SECONDS - t0)) s"
	fi
	exec 8>&-
}

api_up() { curl -fsS --max-time 2 "http://$HOST:$PORT/version" >/dev/null 2>&1; }

read_pid() {
	[[ -f $PID_FILE ]] || return 1
	local pid
	pid=$(tr -dc '0-9' <"$PID_FILE")
	[[ -n $pid ]] || return 1
	printf '%s\n' "$pid"
}

is_ours() { # pid -> 0 if alive and it is our binary on our port
	[[ -r /proc/$1/cmdline ]] || return 1
	local cmd
	cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)
	[[ $cmd == "$BIN "*"-port $PORT"* ]]
}

cmd_start() {
	mkdir -p "$STATE_DIR"
	exec 9>"$STATE_DIR/.lock"
	flock 9
	local pid
	if pid=$(read_pid) && is_ours "$pid"; then
		log "already running on $HOST:$PORT (pid $pid)"
		return 0
	fi
	cmd_build
	api_up && die "port $PORT answers already (not our toxiproxy)"
	"$BIN" -host "$HOST" -port "$PORT" </dev/null >"$LOG_FILE" 2>&1 8>&- 9>&- &
	pid=$!
	echo "$pid" >"$PID_FILE"
	echo "$PORT" >"$PORT_FILE"
	local t0=$SECONDS
	until api_up; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$LOG_FILE" >&2 || true
			rm -f "$PID_FILE"
			die "toxiproxy exited during start-up"
		fi
		if ((SECONDS - t0 >= START_TIMEOUT)); then
			cmd_stop
			die "toxiproxy API not up after ${START_TIMEOUT}s"
		fi
		sleep 0.2
	done
	log "ready on $HOST:$PORT (pid $pid)"
}

cmd_stop() {
	local pid
	if ! pid=$(read_pid) || ! is_ours "$pid"; then
		rm -f "$PID_FILE"
		log "not running"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	local t0=$SECONDS
	while is_ours "$pid" && ((SECONDS - t0 < STOP_TIMEOUT)); do sleep 0.2; done
	if is_ours "$pid"; then
		log "still alive after ${STOP_TIMEOUT}s; SIGKILL to pid $pid"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$PID_FILE"
	log "stopped (pid $pid)"
}

cmd_status() {
	local pid
	if pid=$(read_pid) && is_ours "$pid" && api_up; then
		echo "toxiproxy: running on $HOST:$PORT (pid $pid)"
		return 0
	fi
	echo "toxiproxy: not running"
	return 3
}

case "${1:-}" in
build) cmd_build ;;
bin)
	cmd_build
	echo "$BIN"
	;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
url) echo "http://$HOST:$PORT" ;;
*)
	echo "usage: $0 build|bin|start|stop|status|url" >&2
	exit 2
	;;
esac
