#!/usr/bin/env bash
# The Switchboard demo (`make demo`, `make demo-down`).
#
#   e2e/demo.sh up     start Kafka and a Kubernetes control plane on 127.0.0.1, build
#                      the binaries and the Python package, install the CRDs, start
#                      the operator and the node agent (pods as local processes),
#                      apply examples/demo/ (built-ins, an HTTP agent, AutoGen
#                      agents in Python and an LLM agent against a local test model
#                      server), then run a short scripted conversation and leave
#                      everything running
#   e2e/demo.sh down   stop everything `up` started (by the process ids it recorded)
#
# Environment: SWITCHBOARD_STATE_DIR (default <repo>/.state) and the port variables
# of e2e/infra/kafka.sh and cluster.sh; SWITCHBOARD_DEMO_AGENT_PORT (Python agent,
# 8081), SWITCHBOARD_DEMO_METRICS_PORT (operator, 9808), SWITCHBOARD_DEMO_MODEL_PORT
# (test model server, 8082), SWITCHBOARD_DEMO_POD_CIDR
# (pod addresses, 127.0.1.0/24), CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
infra="$here/infra"
state="$(realpath -m "${SWITCHBOARD_STATE_DIR:-$repo/.state}")"
demo="$state/demo"
target="$(realpath -m "${CARGO_TARGET_DIR:-$repo/target}")"
bin="$target/debug"
ns=switchboard-demo
agent_port="${SWITCHBOARD_DEMO_AGENT_PORT:-8081}"
metrics_port="${SWITCHBOARD_DEMO_METRICS_PORT:-9808}"
model_port="${SWITCHBOARD_DEMO_MODEL_PORT:-8082}"
pod_cidr="${SWITCHBOARD_DEMO_POD_CIDR:-127.0.1.0/24}"
runtime_image=ghcr.io/switchboard-dev/switchboard-runtime:dev
# The node agent runs the Python image (python/Dockerfile) from this directory, which
# stands in for the image's filesystem: bin/python (the package's venv) and app/.
python_root="$demo/images/switchboard-python"
# Processes this script starts, in stop order.
services=(model-server python-agent node-agent operator)

t0=$(date +%s)
declare -a summary=()

say() { printf '%s\n' "$*"; }
elapsed() { echo $(($(date +%s) - t0)); }
step() { printf '\n==> [%4ss] %s\n' "$(elapsed)" "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
note() { summary+=("$1|$2"); }

# wait_until WHAT LIMIT_S CMD...: runs CMD every second until it succeeds, showing
# what it waits for and for how long; fails after LIMIT_S seconds.
wait_until() {
	local what=$1 limit=$2 start now
	shift 2
	start=$(date +%s)
	until "$@" >/dev/null 2>&1; do
		now=$(date +%s)
		if ((now - start >= limit)); then
			printf '\n' >&2
			die "gave up waiting for $what after ${limit}s"
		fi
		if [ -t 1 ]; then
			printf '\r    waiting for %s ... %ss ' "$what" "$((now - start))"
		elif (((now - start) % 10 == 0)); then
			printf '    waiting for %s ... %ss\n' "$what" "$((now - start))"
		fi
		sleep 1
	done
	[ -t 1 ] && printf '\r\033[K'
	printf '    %s: after %ss\n' "$what" "$(($(date +%s) - start))"
}

# start_bg NAME CMD...: runs CMD in its own session with output in NAME.log and
# its process id in NAME.pid.
start_bg() {
	local name=$1
	shift
	stop_bg "$name"
	setsid "$@" >"$demo/$name.log" 2>&1 </dev/null &
	echo $! >"$demo/$name.pid"
}

# stop_bg NAME: SIGTERM the recorded process, SIGKILL after 30 s.
stop_bg() {
	local pidfile="$demo/$1.pid" pid i
	[ -f "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 60); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		if kill -0 "$pid" 2>/dev/null; then
			say "demo: $1 ($pid) ignored SIGTERM for 30s; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		say "    stopped $1 (pid $pid)"
	fi
	rm -f "$pidfile"
}

kc() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

condition() { # condition KIND NAME TYPE -> prints the condition's status
	kc -n "$ns" get "$1" "$2" -o "jsonpath={.status.conditions[?(@.type==\"$3\")].status}" 2>/dev/null
}
is_true() { [ "$(condition "$@")" = True ]; }
subscriptions_ready() {
	is_true agentsubscription alerts-to-counter Ready && is_true agentsubscription team-to-relay Ready
}
crds_established() {
	local c
	for c in agentruntimes agentsubscriptions; do
		[ "$(kc get crd "$c.switchboard.dev" \
			-o 'jsonpath={.status.conditions[?(@.type=="Established")].status}')" = True ] || return 1
	done
}
node_ready() {
	[ "$(kc get node "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1"); }
team_log_has() { grep -qs -- "$1" "$demo"/node/pods/"${ns}"_team-*/runtime.log; }
ready_replicas_are() { [ "$(kc -n "$ns" get ar demo -o 'jsonpath={.status.readyReplicas}')" = "$1" ]; }

# pod_ip [RUNTIME]: a running pod's address (each pod gets its own loopback address
# from the node agent); RUNTIME defaults to demo.
pod_ip() {
	kc -n "$ns" get pods -l "app.kubernetes.io/instance=${1:-demo}" \
		--field-selector=status.phase=Running \
		-o 'jsonpath={range .items[*]}{.status.podIP}{"\n"}{end}' | grep -m1 .
}

# rpc KEY_PATH TYPE DATA: an RPC through a pod's HTTP gateway; prints the reply.
rpc() {
	curl -sS --fail-with-body --max-time 15 -X POST -H "ce-type: $2" \
		-H 'content-type: application/json' -d "$3" "http://$gateway/v1/agents/$1"
}

send_cli() { # send_cli AGENT TYPE DATA: the same RPC over Kafka with the CLI
	"$bin/switchboard-runtime" send --bootstrap "$bootstrap" --prefix demo \
		--to "$1" --type "$2" --data "$3" --timeout 15s
}

publish_cli() {
	"$bin/switchboard-runtime" publish --bootstrap "$bootstrap" --prefix demo \
		--topic "$1" --type "$2" --data "$3"
}

up() {
	mkdir -p "$demo"
	say "Switchboard demo: state in $demo, logs in $demo/*.log"

	step "Installing missing system packages (if any)"
	"$infra/deps.sh"

	step "Starting Kafka and the Kubernetes control plane on 127.0.0.1"
	say "    (the first run resolves Kafka from Maven Central and builds etcd and"
	say "     Kubernetes from the Go module proxy: allow 15-25 minutes; later runs: seconds)"
	local s
	s=$(date +%s)
	"$infra/kafka.sh" start >"$demo/kafka-start.log" 2>&1 &
	local kafka_pid=$!
	"$infra/cluster.sh" start >"$demo/cluster-start.log" 2>&1 &
	local cluster_pid=$!
	show_progress() {
		local k c
		k=$(tail -n 1 "$demo/kafka-start.log" 2>/dev/null | cut -c1-60)
		c=$(tail -n 1 "$demo/cluster-start.log" 2>/dev/null | cut -c1-60)
		printf '    [%4ss] kafka: %-60s\n            cluster: %s\n' "$(($(date +%s) - s))" "$k" "$c"
	}
	while kill -0 "$kafka_pid" 2>/dev/null || kill -0 "$cluster_pid" 2>/dev/null; do
		show_progress
		sleep 15
	done
	wait "$kafka_pid" || { cat "$demo/kafka-start.log" >&2; die "Kafka did not start"; }
	wait "$cluster_pid" || { cat "$demo/cluster-start.log" >&2; die "the control plane did not start"; }
	bootstrap=$("$infra/kafka.sh" bootstrap)
	kubeconfig=$("$infra/cluster.sh" kubeconfig)
	kubectl="$("$infra/cluster.sh" bindir)/kubectl"
	note "Kafka + control plane up" "$(($(date +%s) - s)) s"
	say "    Kafka at $bootstrap, API server kubeconfig $kubeconfig"

	step "Building switchboard-runtime, switchboard-operator, switchboard-node-agent and the test model server"
	s=$(date +%s)
	(cd "$repo" && cargo build -p switchboard-runtime -p switchboard-operator \
		-p switchboard-e2e --bin switchboard-runtime --bin switchboard-operator \
		--bin switchboard-node-agent --bin switchboard-model-server)
	note "Build" "$(($(date +%s) - s)) s"

	step "Building the Python package (switchboard-agents) for the AutoGen agents' image"
	say "    (the first run builds the extension in release mode: allow 10-15 minutes)"
	s=$(date +%s)
	local venv
	venv=$("$repo/python/scripts/test.sh" --install | tail -n 1)
	rm -rf "$python_root"
	mkdir -p "$python_root/bin" "$python_root/app"
	printf '#!/bin/sh\nexec "%s/bin/python" "$@"\n' "$venv" >"$python_root/bin/python"
	chmod +x "$python_root/bin/python"
	cp "$repo"/examples/autogen/*.py "$python_root/app/"
	note "Python package" "$(($(date +%s) - s)) s"

	step "Installing the CRDs"
	kc apply -f "$repo/crds/"
	# Polled rather than `kubectl wait`, which fails at once while a just-created CRD
	# has no status conditions yet.
	wait_until "the CRDs Established" 60 crds_established

	step "Starting the operator, the node agent, the Python HTTP agent and the test model server"
	start_bg operator "$bin/switchboard-operator" run --kubeconfig "$kubeconfig" \
		--runtime-image "$runtime_image" --metrics-addr "127.0.0.1:$metrics_port"
	start_bg node-agent "$bin/switchboard-node-agent" --kubeconfig "$kubeconfig" \
		--node-name switchboard-demo --pod-cidr "$pod_cidr" \
		--runtime-bin "$bin/switchboard-runtime" --state-dir "$demo/node" \
		--namespace "$ns" --image-root "*switchboard-python=$python_root"
	start_bg python-agent python3 "$repo/examples/http-agent/agent.py" --port "$agent_port"
	start_bg model-server "$bin/switchboard-model-server" --listen "127.0.0.1:$model_port" \
		--script "$repo/examples/demo/model-script.json"
	wait_until "operator /healthz" 60 curl -sf "http://127.0.0.1:$metrics_port/healthz"
	wait_until "node switchboard-demo Ready" 60 node_ready switchboard-demo
	wait_until "Python agent on 127.0.0.1:$agent_port" 30 port_open "$agent_port"
	wait_until "test model server on 127.0.0.1:$model_port" 30 port_open "$model_port"

	step "Applying examples/demo/ (AgentRuntime demo: echo, counter, relay and an HTTP agent; team: AutoGen agents in Python; assistants: an LLM agent; two AgentSubscriptions)"
	s=$(date +%s)
	kc apply -f "$repo/examples/demo/namespace.yaml"
	sed -e "s|127.0.0.1:9092|$bootstrap|" -e "s|127.0.0.1:8081|127.0.0.1:$agent_port|" \
		"$repo/examples/demo/runtime.yaml" | kc apply -f -
	sed -e "s|127.0.0.1:9092|$bootstrap|" "$repo/examples/demo/autogen.yaml" | kc apply -f -
	sed -e "s|127.0.0.1:9092|$bootstrap|" -e "s|127.0.0.1:8082|127.0.0.1:$model_port|" \
		"$repo/examples/demo/llm.yaml" | kc apply -f -
	kc apply -f "$repo/examples/demo/subscriptions.yaml"
	wait_until "Kafka topics (TopicsReady)" 120 is_true agentruntime demo TopicsReady
	wait_until "a runtime pod Running and Ready (AgentRuntime Ready)" 180 is_true agentruntime demo Ready
	wait_until "the AutoGen runtime pod Ready (AgentRuntime team Ready)" 180 is_true agentruntime team Ready
	wait_until "the LLM agent's pod Ready (AgentRuntime assistants Ready)" 180 is_true agentruntime assistants Ready
	wait_until "both subscriptions Ready" 60 subscriptions_ready
	note "Apply -> Ready" "$(($(date +%s) - s)) s"
	kc -n "$ns" get agentruntimes,agentsubscriptions,pods -o wide
	gateway="$(pod_ip):8080"

	step "An RPC over Kafka: switchboard-runtime send --to echo/a"
	s=$(date +%s%N)
	say "    reply: $(send_cli echo/a demo.Hello '{"hello":"world"}')"
	note "RPC echo/a (CLI, incl. client start)" "$(ms_since "$s") ms"
	s=$(date +%s%N)
	say "    the same through a pod's HTTP gateway ($gateway):"
	say "    reply: $(rpc echo/a demo.Hello '{"hello":"again"}')"
	note "RPC echo/a (gateway)" "$(ms_since "$s") ms"
	s=$(date +%s%N)
	say "    the Python agent (greeter/alice, over HTTP from the runtime):"
	say "    reply: $(rpc greeter/alice demo.Greet '{"name":"Alice"}')"
	note "RPC greeter/alice (Python)" "$(ms_since "$s") ms"

	step "AutoGen agents in Python (runtime team: planner, researcher, archive; examples/autogen/team.py)"
	s=$(date +%s%N)
	say "    through the built-ins' pod gateway to the Python planner, which asks the researcher:"
	say "    reply: $(rpc planner/alice Question '{"text":"why is the sky blue"}')"
	note "RPC planner/alice (AutoGen, Python)" "$(ms_since "$s") ms"
	s=$(date +%s%N)
	say "    the researcher directly, over Kafka with the CLI (its lookup count is agent state):"
	say "    reply: $(send_cli researcher/alice Lookup '{"topic":"green grass grows"}')"
	note "RPC researcher/alice (CLI)" "$(ms_since "$s") ms"
	wait_until "the archive's line in the team pod's log" 30 team_log_has "archive/alice:"
	say "    team pod log: $(grep -h -m1 'archive/alice:' "$demo"/node/pods/"${ns}"_team-*/runtime.log)"

	step "An LLM agent (runtime assistants; examples/demo/llm.yaml) on the local test model server"
	s=$(date +%s%N)
	say "    assistant/alice calls the model, which asks for two tools: counter/alice (RPC) and publish_alerts:"
	say "    reply: $(rpc assistant/alice demo.Ask '{"content":"how many questions so far?"}')"
	note "RPC assistant/alice (LLM, 2 model + 2 tool calls)" "$(ms_since "$s") ms"
	say "    its pod's /metrics:"
	curl -sS --max-time 5 "http://$(pod_ip assistants):8080/metrics" |
		grep -E '^switchboard_llm_(model_calls|tokens|tool_calls)_total' | sed 's/^/      /'

	step "Publish/subscribe: 3 events to alerts/k1, 2 to team.ops/k1 (relayed to alerts/k1)"
	s=$(date +%s%N)
	for i in 1 2 3; do publish_cli alerts/k1 demo.Alert "{\"n\":$i}"; done
	for i in 1 2; do publish_cli team.ops/k1 demo.Alert "{\"team\":$i}"; done
	# Each RPC to the counter counts too, so count - polls = events delivered.
	local polls=0 count=0 delivered=0
	while :; do
		polls=$((polls + 1))
		count=$(rpc counter/k1 demo.Query '{}' | sed -n 's/.*"count":\([0-9]*\).*/\1/p')
		delivered=$((count - polls))
		[ "$delivered" -ge 5 ] && break
		[ "$polls" -ge 30 ] && die "only $delivered of 5 events reached counter/k1"
		sleep 1
	done
	say "    counter/k1 says {\"count\":$count}: 5 events delivered (3 direct, 2 via relay) + $polls RPC(s)"
	note "5 events published -> counted" "$(ms_since "$s") ms"

	step "Scaling to 3 replicas with RPC traffic running (kubectl scale ar demo --replicas=3)"
	local traffic="$demo/traffic"
	rm -f "$traffic".*
	(
		i=0
		while [ ! -e "$traffic.stop" ]; do
			i=$((i + 1))
			b=$(date +%s%N)
			if rpc "echo/k$((i % 32))" demo.Hello "{\"i\":$i}" >/dev/null 2>&1; then
				echo "ok $(ms_since "$b")" >>"$traffic.log"
			else
				echo "fail $(ms_since "$b")" >>"$traffic.log"
			fi
		done
	) &
	local traffic_pid=$!
	s=$(date +%s)
	kc -n "$ns" scale agentruntime demo --replicas=3
	wait_until "3 ready replicas" 180 ready_replicas_are 3
	note "Scale 1 -> 3 ready" "$(($(date +%s) - s)) s"
	sleep 5
	touch "$traffic.stop"
	wait "$traffic_pid" || true
	local ok fail max
	ok=$(grep -c '^ok' "$traffic.log" || true)
	fail=$(grep -c '^fail' "$traffic.log" || true)
	max=$(awk '{ if ($2 > m) m = $2 } END { print m + 0 }' "$traffic.log")
	say "    during the scale-out: $ok RPCs answered, $fail failed, slowest $max ms"
	note "RPCs during scale-out" "$ok ok, $fail failed, max $max ms"
	kc -n "$ns" get pods -o wide

	step "Summary"
	local line
	for line in "${summary[@]}"; do
		printf '    %-40s %s\n' "${line%%|*}" "${line#*|}"
	done
	printf '    %-40s %s\n' "Total" "$(elapsed) s"
	cat <<EOF

Everything is still running. Try:
  export KUBECONFIG=$kubeconfig PATH=$(dirname "$kubectl"):\$PATH
  kubectl -n $ns get ar,asub,pods
  curl -s -XPOST -H 'ce-type: Question' -d '{"text":"why is it dark at night"}' http://$gateway/v1/agents/planner/you
  curl -s -XPOST -H 'ce-type: demo.Greet' -d '{"name":"you"}' http://$gateway/v1/agents/greeter/you
  curl -s -XPOST -H 'ce-type: demo.Ask' -d '{"content":"how many questions so far?"}' http://$gateway/v1/agents/assistant/you
  $bin/switchboard-runtime send --bootstrap $bootstrap --prefix demo --to counter/k1 --type demo.Query --data '{}'
Logs: $demo/*.log (operator, node-agent, python-agent, model-server; pods under $demo/node/pods/)
Stop it all: make demo-down
EOF
}

down() {
	step "Stopping the demo"
	local kubeconfig kubectl
	kubeconfig=$("$infra/cluster.sh" kubeconfig 2>/dev/null || true)
	kubectl="$("$infra/cluster.sh" bindir 2>/dev/null || true)/kubectl"
	if [ -x "$kubectl" ] && [ -f "$kubeconfig" ] && kc get --raw /readyz >/dev/null 2>&1 &&
		[ -f "$demo/operator.pid" ]; then
		# Deleting the runtime lets the operator delete its topics (deletionPolicy: Delete).
		kc delete namespace "$ns" --ignore-not-found --wait=true --timeout=60s || true
	fi
	local name
	for name in "${services[@]}"; do stop_bg "$name"; done
	"$infra/cluster.sh" stop || true
	"$infra/kafka.sh" stop || true
	say "    done (state kept in $state; remove it for a clean start)"
}

case "${1:-up}" in
up) up ;;
down) down ;;
*) die "usage: $0 [up|down]" ;;
esac
