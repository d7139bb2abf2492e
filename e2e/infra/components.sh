# Process handling of the infrastructure's long-running components (etcd, the API
# server, kubelet, containerd, ...), sourced by cluster.sh and node.sh. Each component
# NAME has a pid file STATE_DIR/NAME.pid and a log STATE_DIR/NAME.log; the sourcing
# script defines log(), component_bin NAME (the binary's path) and DEADLINE/T0 for
# wait_for, and may set COMPONENT_PATH (the children's PATH) and COMPONENT_LOG_APPEND=1.
# shellcheck shell=bash

# pid_of NAME: the live pid of our NAME (its pid file, and a process whose argv[0] is
# NAME and whose arguments name our state dir: never another user's process).
pid_of() {
	local name=$1 file=$STATE_DIR/$1.pid pid
	[[ -f $file ]] || return 1
	pid=$(<"$file")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	local -a argv
	mapfile -d '' -t argv 2>/dev/null <"/proc/$pid/cmdline" || return 1
	((${#argv[@]} > 0)) || return 1
	[[ ${argv[0]##*/} == "$name" && "${argv[*]}" == *"$STATE_DIR/"* ]] || return 1
	echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

# launch NAME ARGS...: start NAME in its own session (so it outlives this script and
# the caller's Ctrl-C), logging to NAME.log. The child writes its own pid before
# exec'ing, so the pid file holds the component's pid. The lock fds are closed so a
# long-running component never holds the lock.
launch() {
	local name=$1 pidfile=$STATE_DIR/$1.pid bin
	shift
	bin=$(component_bin "$name")
	rm -f "$pidfile"
	[[ ${COMPONENT_LOG_APPEND:-0} == 1 ]] || : >"$STATE_DIR/$name.log"
	# shellcheck disable=SC2016 # $$ and $0/$@ expand in the child shell
	PATH=${COMPONENT_PATH:-$PATH} \
		setsid bash -c 'echo $$ >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' \
		"$pidfile" "$bin" "$@" >>"$STATE_DIR/$name.log" 2>&1 </dev/null 8>&- 9>&- &
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -s $pidfile ]] && return 0
		sleep 0.1
	done
	log "$name did not start (see $STATE_DIR/$name.log)"
	return 1
}

# stop_component NAME: SIGTERM, SIGKILL after 15 s; removes the pid file.
stop_component() {
	local name=$1 pid i
	if pid=$(pid_of "$name"); then
		log "stopping $name (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 150; i++)); do
			running "$name" || break
			sleep 0.1
		done
		if running "$name"; then
			log "$name did not exit in 15 s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				running "$name" || break
				sleep 0.1
			done
		fi
	fi
	rm -f "$STATE_DIR/$name.pid"
}

# wait_for WHAT COMPONENT CHECK...: poll CHECK until it succeeds; give up at
# DEADLINE or as soon as COMPONENT (whose log is shown) has exited.
wait_for() {
	local what=$1 comp=$2 next_report=$((SECONDS + 5))
	shift 2
	until "$@"; do
		if ! running "$comp"; then
			log "$comp exited while waiting for $what; last lines of $STATE_DIR/$comp.log:"
			tail -n 30 "$STATE_DIR/$comp.log" >&2 || true
			return 1
		fi
		if ((SECONDS >= DEADLINE)); then
			log "timed out after $((SECONDS - T0)) s waiting for $what; last lines of $STATE_DIR/$comp.log:"
			tail -n 30 "$STATE_DIR/$comp.log" >&2 || true
			return 1
		fi
		if ((SECONDS >= next_report)); then
			log "waiting for $what ... $((SECONDS - T0)) s"
			next_report=$((SECONDS + 5))
		fi
		sleep 0.5
	done
	log "$what: ok after $((SECONDS - T0)) s"
}
