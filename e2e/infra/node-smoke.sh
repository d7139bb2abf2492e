#!/usr/bin/env bash
# Smoke test of the real node (`node.sh smoke`; needs `node.sh start`).
# In a namespace that enforces the `restricted` Pod Security Standard:
#   1. a privileged pod is refused by the API server;
#   2. a pod from an image assembled here (Debian .debs + busybox, uid 65532)
#      runs and becomes Ready through kubelet's HTTP readiness probe;
#   3. the host reaches it through its Service's ClusterIP (kube-proxy);
#   4. a second pod resolves the Service's DNS name through CoreDNS, fetches
#      the page through it, fails to resolve a name outside cluster.local, and
#      (if SWITCHBOARD_TEST_KAFKA_PODS is set) connects to Kafka's pod listener;
#   5. on the host, /proc/<pid>/status of the container's process shows uid
#      65532, no capabilities, no_new_privs and seccomp filtering, and its
#      root mount is read-only;
#   6. the pod has no default route, and kube-proxy's NAT only targets the
#      bridge subnet;
#   7. under with-infra.sh --node: a switchboard-runtime pod (the binary at
#      SWITCHBOARD_RUNTIME_BIN on the base root) is Ready by its /readyz and
#      answers an RPC sent from the host through Kafka;
#   8. and the operator (SWITCHBOARD_OPERATOR_BIN, run on the host) turns an
#      AgentRuntime using that image into runtime pods on this node, admitted
#      unchanged under the restricted standard, which answer RPCs;
#   9. with our images built (make images): the Helm chart installs the
#      operator in-cluster from operator/Dockerfile's image (RBAC checked with
#      kubectl auth can-i, Lease held, kubectl logs), and its AgentRuntime
#      runs pods of runtime/Dockerfile's image that answer RPCs.
# Also kubectl exec and logs (the API server's kubelet client certificate).
# Prints one line per check and "N passed, N failed"; exit 1 if any failed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NODE_SH=$SCRIPT_DIR/node.sh
NS=${SWITCHBOARD_SMOKE_NAMESPACE:-sb-node-smoke}
CHART_NS=$NS-chart
WAIT=${SWITCHBOARD_SMOKE_TIMEOUT:-120}
# with-infra.sh --node exports it: Kafka's listener on the bridge.
KAFKA_PODS=${SWITCHBOARD_TEST_KAFKA_PODS:-}
# The operator's /metrics and /healthz (step 8), on 127.0.0.1.
OP_PORT=${SWITCHBOARD_SMOKE_OPERATOR_PORT:-18081}

STATE_ROOT=$(realpath -m "${SWITCHBOARD_STATE_DIR:-$SCRIPT_DIR/../../.state}")
KUBECONFIG_FILE=$STATE_ROOT/cluster/kubeconfig
KUBECTL=$("$SCRIPT_DIR/cluster.sh" bindir)/kubectl
CTRD_SOCK=$STATE_ROOT/node/containerd/containerd.sock

log() { printf '[smoke] %s\n' "$*" >&2; }
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=15s "$@"; }

passed=0 failed=0
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }

"$NODE_SH" status >/dev/null || { log "the node is not up (node.sh start)"; exit 1; }
IMAGE=$("$NODE_SH" smoke-image)
CRICTL=$("$NODE_SH" crictl-path)
crictl() { "$CRICTL" --runtime-endpoint "unix://$CTRD_SOCK" --timeout 20s "$@"; }

op_pid=""
cleanup() {
	if [[ -n $op_pid ]]; then
		# While the operator runs: its finalizer deletes the runtime's topics.
		k -n "$NS" delete agentruntime op --ignore-not-found --timeout=60s >/dev/null 2>&1 || true
		kill -TERM "$op_pid" 2>/dev/null || true
		local i
		for ((i = 0; i < 150; i++)); do
			kill -0 "$op_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$op_pid" 2>/dev/null || true
		op_pid=""
	fi
	# The in-cluster operator (step 9) removes its runtime's topics, then goes.
	k -n "$CHART_NS" delete agentruntime incluster --ignore-not-found --timeout=60s >/dev/null 2>&1 || true
	k delete namespace "$NS" "$CHART_NS" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

t0=$SECONDS
k create namespace "$NS" >/dev/null
k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted \
	pod-security.kubernetes.io/enforce-version=latest >/dev/null

# 1. The restricted standard is enforced.
if out=$(k -n "$NS" run privileged --image="$IMAGE" --image-pull-policy=Never --restart=Never \
	--overrides='{"spec":{"containers":[{"name":"privileged","image":"'"$IMAGE"'","securityContext":{"privileged":true}}]}}' 2>&1); then
	fail "privileged pod was admitted in a restricted namespace"
elif grep -q 'violates PodSecurity "restricted' <<<"$out"; then
	pass "privileged pod refused: $(grep -o 'violates PodSecurity[^:]*' <<<"$out" | head -n 1)"
else
	fail "privileged pod refused for another reason: $out"
fi

restricted_sc='securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}'

# 2. A pod from our image, Ready through kubelet's probe.
k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: web
      image: $IMAGE
      imagePullPolicy: Never
      args: [httpd, -f, -p, "8080", -h, /www]
      ports: [{containerPort: 8080}]
      readinessProbe:
        httpGet: {path: /healthz, port: 8080}
        periodSeconds: 1
      $restricted_sc
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
if k -n "$NS" wait pod/web --for=condition=Ready --timeout="${WAIT}s" >/dev/null 2>&1; then
	pass "pod web Running and Ready (kubelet readiness probe) after $((SECONDS - t0)) s, IP $(k -n "$NS" get pod web -o jsonpath='{.status.podIP}')"
else
	fail "pod web not Ready within ${WAIT}s: $(k -n "$NS" get pod web -o jsonpath='{.status}' 2>&1 | head -c 600)"
fi

# 3. ClusterIP from the host, routed by kube-proxy's rules.
cip=$(k -n "$NS" get service web -o jsonpath='{.spec.clusterIP}')
body=""
for _ in $(seq 1 20); do
	body=$(curl -fsS --noproxy '*' -m 3 "http://$cip/" 2>/dev/null) && break
	sleep 0.5
done
if [[ $body == "switchboard node smoke" ]]; then
	pass "host -> ClusterIP $cip:80 -> pod: '$body'"
else
	fail "host could not reach ClusterIP $cip:80 (got '$body')"
fi

# 3b. kubectl logs and exec through the API server to kubelet (its client
#     certificate toward kubelet, kubelet's serving certificate from the CA).
if out=$(k -n "$NS" exec web -- /bin/busybox cat /www/healthz 2>&1) && [[ $out == ok ]]; then
	pass "kubectl exec web -- cat /www/healthz: '$out' (API server -> kubelet -> containerd)"
else
	fail "kubectl exec web: $out"
fi
if out=$(k -n "$NS" logs web 2>&1); then
	pass "kubectl logs web answered ($(wc -c <<<"$out") bytes)"
else
	fail "kubectl logs web: $out"
fi

# 4. DNS from inside a pod: the Service name resolves and serves; a name
#    outside cluster.local does not (no forwarders).
k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: dns}
spec:
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: dns
      image: $IMAGE
      imagePullPolicy: Never
      command: [/bin/busybox, sh, -c]
      args:
        - |
          set -e
          nslookup web.$NS.svc.cluster.local
          busybox timeout 10 busybox wget -q -O - http://web.$NS.svc.cluster.local/ | grep -qx 'switchboard node smoke'
          echo "fetched through web.$NS.svc.cluster.local"
          if nslookup -timeout=2 example.com; then echo "example.com resolved"; exit 3; fi
          echo "example.com not resolved"
          if [ -n "$KAFKA_PODS" ]; then
            # Connected and idle: nc waits for the broker, timeout ends it (143);
            # refused or unanswered within -w 2: nc exits 1 first.
            rc=0
            busybox timeout 4 busybox nc -w 2 "${KAFKA_PODS%:*}" "${KAFKA_PODS##*:}" </dev/null || rc=\$?
            [ "\$rc" = 0 ] || [ "\$rc" = 143 ]
            echo "Kafka pod listener $KAFKA_PODS accepts connections"
          fi
      $restricted_sc
EOF
phase=""
deadline=$((SECONDS + WAIT))
while ((SECONDS < deadline)); do
	phase=$(k -n "$NS" get pod dns -o jsonpath='{.status.phase}' 2>/dev/null || true)
	[[ $phase == Succeeded || $phase == Failed ]] && break
	sleep 1
done
dns_uid=$(k -n "$NS" get pod dns -o jsonpath='{.metadata.uid}' 2>/dev/null || true)
dns_log=$(find "$STATE_ROOT/node/pod-logs/${NS}_dns_$dns_uid" -name '*.log' -exec cat {} + 2>/dev/null | cut -d' ' -f4- | grep -v '^$' | tr '\n' '|')
if [[ $phase == Succeeded ]]; then
	pass "pod dns: Service DNS name resolved by CoreDNS, page fetched through it, example.com refused (log: ...${dns_log:$((${#dns_log} > 420 ? ${#dns_log} - 420 : 0))})"
else
	fail "pod dns ended '$phase' (log: ${dns_log:0:600})"
fi

# 5. The restricted context as the kernel sees it, from the host.
cid=$(crictl ps -q --name '^web$' --label "io.kubernetes.pod.namespace=$NS" 2>/dev/null | head -n 1)
pid=""
[[ -n $cid ]] && pid=$(crictl inspect "$cid" 2>/dev/null | jq -r '.info.pid // empty')
if [[ -n $pid && -r /proc/$pid/status ]]; then
	st=/proc/$pid/status
	uid=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "$st")
	capeff=$(awk '/^CapEff:/ {print $2}' "$st")
	capbnd=$(awk '/^CapBnd:/ {print $2}' "$st")
	nnp=$(awk '/^NoNewPrivs:/ {print $2}' "$st")
	seccomp=$(awk '/^Seccomp:/ {print $2}' "$st")
	rootopts=$(awk '$5 == "/" {print $6; exit}' "/proc/$pid/mountinfo")
	if [[ $uid == "65532 65532 65532 65532" ]]; then pass "container pid $pid runs as uid 65532 (Uid: $uid)"; else fail "container uid is '$uid'"; fi
	if [[ $capeff == 0000000000000000 && $capbnd == 0000000000000000 ]]; then pass "no capabilities (CapEff $capeff, CapBnd $capbnd)"; else fail "capabilities CapEff $capeff CapBnd $capbnd"; fi
	if [[ $nnp == 1 && $seccomp == 2 ]]; then pass "no_new_privs set, seccomp filter mode (NoNewPrivs $nnp, Seccomp $seccomp)"; else fail "NoNewPrivs $nnp Seccomp $seccomp"; fi
	if [[ $rootopts == ro || $rootopts == ro,* ]]; then pass "root filesystem mounted read-only ($rootopts)"; else fail "root mount options '$rootopts'"; fi
else
	fail "could not find the web container's process on the host (container '$cid', pid '$pid')"
fi

# 6. Nothing routes off the machine: the pod's routes are the bridge /24 and
#    the Service range only, kube-proxy DNATs only to bridge addresses, and
#    the only NAT-out rule is kube-proxy's mark-gated MASQUERADE (service
#    traffic that it DNATs to those addresses).
NET=$("$NODE_SH" host-ip)
NET=${NET%.*}
if [[ -n $pid ]]; then
	routes=$(nsenter -t "$pid" -n ip -4 route show 2>/dev/null | sed 's/ *$//' | sort | tr '\n' ';')
	if grep -q default <<<"$routes" || [[ $routes != *"10.96.0.0/16 via $NET.1"* ]] ||
		[[ $(tr ';' '\n' <<<"$routes" | grep -cv -e "^$NET.0/24 " -e '^10.96.0.0/16 ' -e '^$') != 0 ]]; then
		fail "pod routes: $routes"
	else
		pass "pod routes only to the bridge /24 and the Service range: $routes"
	fi
fi
nat=$(iptables-save -t nat)
bad_dnat=$(grep -oE -- '--to-destination [0-9.]+' <<<"$nat" | awk '{print $2}' | grep -vE "^${NET//./\\.}\.[0-9]+$" || true)
bad_masq=$(grep -E -- '-j (MASQUERADE|SNAT)' <<<"$nat" | grep -v '^-A KUBE-POSTROUTING ' || true)
first_fwd=$(iptables -S FORWARD | grep -m 1 '^-A FORWARD' || true)
if [[ $first_fwd == "-A FORWARD -i $("$NODE_SH" bridge-name) -j SBNODE-FWD" ]]; then
	pass "first FORWARD rule is the bridge guard ($first_fwd: drop what leaves the bridge for another interface)"
else
	fail "first FORWARD rule is '$first_fwd', not the bridge guard"
fi
if [[ -z $bad_dnat && -z $bad_masq ]]; then
	pass "iptables nat: $(grep -c -- '-j DNAT' <<<"$nat") DNAT rules, all to $NET.0/24; NAT out only in KUBE-POSTROUTING (mark 0x4000)"
else
	fail "iptables nat reaches off the bridge: DNAT to [$bad_dnat], MASQUERADE/SNAT [$bad_masq]"
fi

# 7. Our own runtime as a real container: switchboard-runtime on the base
#    root, restricted, Ready by its /readyz (joined its Kafka groups through
#    the broker's pod listener), and an RPC from the host through Kafka to
#    its echo agent. Needs with-infra.sh --node (Kafka) and a binary.
RT_BIN=${SWITCHBOARD_RUNTIME_BIN:-$HOME/.cache/switchboard/target/debug/switchboard-runtime}
if [[ -z $KAFKA_PODS || -z ${SWITCHBOARD_TEST_KAFKA:-} ]]; then
	printf 'SKIP runtime pod: no Kafka (run under with-infra.sh --node)\n'
elif [[ ! -x $RT_BIN ]]; then
	printf 'SKIP runtime pod: no switchboard-runtime at %s (set SWITCHBOARD_RUNTIME_BIN)\n' "$RT_BIN"
else
	t1=$SECONDS
	rt_image=$("$NODE_SH" runtime-image "$RT_BIN")
	k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: rt}
data:
  runtime.yaml: |
    kafka: { bootstrapServers: "$KAFKA_PODS", topicPrefix: nodesmoke }
    runtime: { name: rt-smoke, createTopics: true }
    agents:
      - { type: echo, builtin: echo }
    http: { listen: "0.0.0.0:8080" }
---
apiVersion: v1
kind: Pod
metadata: {name: rt, labels: {app: rt}}
spec:
  terminationGracePeriodSeconds: 30
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: runtime
      image: $rt_image
      imagePullPolicy: Never
      args: [run, --config, /etc/switchboard/runtime.yaml]
      ports: [{containerPort: 8080}]
      readinessProbe:
        httpGet: {path: /readyz, port: 8080}
        periodSeconds: 1
      livenessProbe:
        httpGet: {path: /healthz, port: 8080}
        periodSeconds: 5
      volumeMounts:
        - {name: config, mountPath: /etc/switchboard, readOnly: true}
        - {name: tmp, mountPath: /tmp}
      $restricted_sc
  volumes:
    - {name: config, configMap: {name: rt}}
    - {name: tmp, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata: {name: rt}
spec:
  selector: {app: rt}
  ports: [{port: 80, targetPort: 8080}]
EOF
	if k -n "$NS" wait pod/rt --for=condition=Ready --timeout="${WAIT}s" >/dev/null 2>&1; then
		pass "switchboard-runtime pod ($rt_image) Ready by its /readyz after $((SECONDS - t1)) s (Kafka via $KAFKA_PODS)"
	else
		fail "switchboard-runtime pod not Ready: $(k -n "$NS" get pod rt -o jsonpath='{.status.containerStatuses}' 2>&1 | head -c 600)"
	fi
	rt_cip=$(k -n "$NS" get service rt -o jsonpath='{.spec.clusterIP}')
	code=$(curl -sS --noproxy '*' -m 5 -o /dev/null -w '%{http_code}' "http://$rt_cip/readyz" 2>/dev/null || true)
	if [[ $code == 200 ]]; then pass "host -> runtime ClusterIP $rt_cip/readyz: 200"; else fail "runtime ClusterIP /readyz: '$code'"; fi
	reply=$(timeout 60 "$RT_BIN" send --bootstrap "$SWITCHBOARD_TEST_KAFKA" --prefix nodesmoke \
		--to echo/node --type smoke.Ping --data '{"hello":"node"}' --timeout 30s 2>/dev/null || true)
	if [[ $(jq -cS . <<<"$reply" 2>/dev/null) == '{"hello":"node"}' ]]; then
		pass "RPC host -> Kafka -> echo agent in the runtime pod -> host: $reply"
	else
		fail "RPC to echo/node in the runtime pod: reply '$reply'"
	fi
	rcid=$(crictl ps -q --name '^runtime$' --label "io.kubernetes.pod.namespace=$NS" 2>/dev/null | head -n 1)
	rpid="" ruid="" rroot=""
	[[ -n $rcid ]] && rpid=$(crictl inspect "$rcid" 2>/dev/null | jq -r '.info.pid // empty')
	if [[ -n $rpid ]]; then
		ruid=$(awk '/^Uid:/ {print $2}' "/proc/$rpid/status")
		rroot=$(awk '$5 == "/" {print $6; exit}' "/proc/$rpid/mountinfo")
	fi
	if [[ $ruid == 65532 && $rroot == ro* ]]; then
		pass "switchboard-runtime process $rpid: uid $ruid, root $rroot"
	else
		fail "switchboard-runtime process '$rpid': uid '$ruid', root '$rroot'"
	fi
fi

# 8. The operator (on the host, like `make demo` runs it) turns an
#    AgentRuntime into a Deployment whose pods run on this node, admitted
#    unchanged under the restricted standard, Ready, and answering RPCs.
OP_BIN=${SWITCHBOARD_OPERATOR_BIN:-$HOME/.cache/switchboard/target/debug/switchboard-operator}
if [[ -z $KAFKA_PODS || -z ${SWITCHBOARD_TEST_KAFKA:-} || ! -x $RT_BIN ]]; then
	printf 'SKIP operator-made runtime pods: needs Kafka and a runtime binary (as above)\n'
elif [[ ! -x $OP_BIN ]]; then
	printf 'SKIP operator-made runtime pods: no switchboard-operator at %s (set SWITCHBOARD_OPERATOR_BIN)\n' "$OP_BIN"
else
	t2=$SECONDS
	k apply -f "$SCRIPT_DIR/../../crds/" >/dev/null
	# Until the API server serves the new kinds (a just-created CRD is not yet
	# Established, and `kubectl wait` fails at once while it has no conditions).
	for _ in $(seq 1 60); do
		[[ $(k get crd agentruntimes.switchboard.dev \
			-o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]] && break
		sleep 0.5
	done
	setsid "$OP_BIN" run --kubeconfig "$KUBECONFIG_FILE" --namespace "$NS" \
		--metrics-addr "127.0.0.1:$OP_PORT" >"$STATE_ROOT/node/smoke-operator.log" 2>&1 </dev/null &
	op_pid=$!
	k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: switchboard.dev/v1alpha1
kind: AgentRuntime
metadata: {name: op}
spec:
  replicas: 2
  image: $rt_image
  kafka: {bootstrapServers: "$KAFKA_PODS", topicPrefix: nodesmoke-op}
  agents:
    - {type: echo, builtin: echo}
  deletionPolicy: Delete
EOF
	ready=""
	deadline=$((SECONDS + WAIT))
	while ((SECONDS < deadline)); do
		ready=$(k -n "$NS" get agentruntime op -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
		[[ $ready == True ]] && break
		kill -0 "$op_pid" 2>/dev/null || break
		sleep 1
	done
	if [[ $ready == True ]]; then
		pass "operator: AgentRuntime op Ready, $(k -n "$NS" get deployment op -o jsonpath='{.status.readyReplicas}') runtime pods on node $(k -n "$NS" get pods -l app.kubernetes.io/instance=op -o jsonpath='{.items[0].spec.nodeName}') after $((SECONDS - t2)) s"
	else
		fail "operator: AgentRuntime op not Ready ($ready): $(k -n "$NS" get pods -l app.kubernetes.io/instance=op 2>&1 | tail -n 3 | tr '\n' ' ')"
	fi
	ok=0
	for i in 1 2 3 4; do
		r=$(timeout 40 "$RT_BIN" send --bootstrap "$SWITCHBOARD_TEST_KAFKA" --prefix nodesmoke-op \
			--to "echo/k$i" --type smoke.Ping --data "{\"n\":$i}" --timeout 30s 2>/dev/null || true)
		[[ $(jq -c . <<<"$r" 2>/dev/null) == "{\"n\":$i}" ]] && ok=$((ok + 1))
	done
	if ((ok == 4)); then pass "4/4 RPCs answered by the operator's runtime pods"; else fail "$ok/4 RPCs answered by the operator's runtime pods"; fi
fi

# 9. The operator in-cluster as the Helm chart installs it, from our images
#    (make images: runtime/Dockerfile and operator/Dockerfile built by
#    buildah): its own ServiceAccount and least-privilege RBAC, the chart's
#    securityContext under the restricted standard, Ready by kubelet's probe,
#    leader-elected, and reconciling an AgentRuntime that names no image into
#    runtime pods of the chart's runtime image, which answer RPCs.
IMAGES_SH=$SCRIPT_DIR/images.sh
if [[ -z $KAFKA_PODS || -z ${SWITCHBOARD_TEST_KAFKA:-} || ! -x $RT_BIN ]]; then
	printf 'SKIP chart: needs Kafka and a runtime binary (as above)\n'
elif ! "$IMAGES_SH" load >/dev/null 2>"$STATE_ROOT/node/images-load.log"; then
	printf 'SKIP chart: our images are not built (make images): %s\n' "$(tail -n 1 "$STATE_ROOT/node/images-load.log")"
else
	t3=$SECONDS
	HELM=$("$SCRIPT_DIR/helm.sh" bin)
	op_image=$("$IMAGES_SH" names | sed -n 2p)
	k create namespace "$CHART_NS" >/dev/null
	k label namespace "$CHART_NS" pod-security.kubernetes.io/enforce=restricted \
		pod-security.kubernetes.io/enforce-version=latest >/dev/null
	chart_tag=${op_image##*:}
	if out=$("$HELM" --kubeconfig "$KUBECONFIG_FILE" install sb "$SCRIPT_DIR/../../charts/switchboard" \
		--namespace "$CHART_NS" --set watchNamespace="$CHART_NS" --set image.tag="$chart_tag" \
		--set runtimeImage.tag="$chart_tag" --set image.pullPolicy=Never --wait --timeout "${WAIT}s" 2>&1); then
		pass "helm install: operator Deployment Ready ($op_image, restricted namespace) after $((SECONDS - t3)) s"
	else
		fail "helm install: $out $(k -n "$CHART_NS" get pods -o wide 2>&1 | tail -n 2 | tr '\n' ' ')"
	fi
	op_pod=$(k -n "$CHART_NS" get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
	sa=$(k -n "$CHART_NS" get pod "$op_pod" -o jsonpath='{.spec.serviceAccountName}' 2>/dev/null || true)
	holder=""
	for _ in $(seq 1 30); do
		holder=$(k -n "$CHART_NS" get lease switchboard-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
		[[ -n $holder ]] && break
		sleep 1
	done
	if [[ -n $op_pod && $holder == *"$op_pod"* ]]; then pass "operator pod $op_pod holds the Lease switchboard-operator ($holder)"; else fail "Lease holder '$holder', operator pod '$op_pod'"; fi
	# Least privilege, as the API server's RBAC sees the pod's ServiceAccount.
	as="system:serviceaccount:$CHART_NS:$sa"
	rbac="" want=""
	for q in "create deployments.apps -n $CHART_NS:yes" "patch agentruntimes.switchboard.dev/status -n $CHART_NS:yes" \
		"get secrets -n $CHART_NS:yes" "list secrets -n $CHART_NS:no" "delete deployments.apps -n $CHART_NS:no" \
		"create pods -n $CHART_NS:no" "create pods/exec -n $CHART_NS:no" "get secrets -n kube-system:no" \
		"create deployments.apps -n default:no" "list nodes:no"; do
		# shellcheck disable=SC2086 # the question's words
		got=$(k auth can-i --as="$as" ${q%:*} 2>/dev/null || true)
		rbac+="${q%:*}=$got; "
		want+="${q%:*}=${q##*:}; "
	done
	if [[ $rbac == "$want" ]]; then pass "kubectl auth can-i as $as matches the chart's RBAC ($rbac)"; else fail "auth can-i: got [$rbac] want [$want]"; fi
	k -n "$CHART_NS" apply -f - >/dev/null <<EOF
apiVersion: switchboard.dev/v1alpha1
kind: AgentRuntime
metadata: {name: incluster}
spec:
  replicas: 2
  kafka: {bootstrapServers: "$KAFKA_PODS", topicPrefix: nodesmoke-chart}
  agents:
    - {type: echo, builtin: echo}
  deletionPolicy: Delete
EOF
	ready=""
	deadline=$((SECONDS + WAIT))
	while ((SECONDS < deadline)); do
		ready=$(k -n "$CHART_NS" get agentruntime incluster -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
		[[ $ready == True ]] && break
		sleep 1
	done
	rt_img=$(k -n "$CHART_NS" get deployment incluster -o jsonpath='{.spec.template.spec.containers[0].image}' 2>/dev/null || true)
	if [[ $ready == True ]]; then
		pass "in-cluster operator: AgentRuntime incluster Ready, $(k -n "$CHART_NS" get deployment incluster -o jsonpath='{.status.readyReplicas}') pods of $rt_img (built from runtime/Dockerfile)"
	else
		fail "in-cluster operator: AgentRuntime incluster not Ready ($ready): $(k -n "$CHART_NS" get pods 2>&1 | tail -n 3 | tr '\n' ' ')"
	fi
	ok=0
	for i in 1 2 3 4; do
		r=$(timeout 40 "$RT_BIN" send --bootstrap "$SWITCHBOARD_TEST_KAFKA" --prefix nodesmoke-chart \
			--to "echo/c$i" --type smoke.Ping --data "{\"n\":$i}" --timeout 30s 2>/dev/null || true)
		[[ $(jq -c . <<<"$r" 2>/dev/null) == "{\"n\":$i}" ]] && ok=$((ok + 1))
	done
	if ((ok == 4)); then pass "4/4 RPCs answered by runtime pods of the image built from runtime/Dockerfile"; else fail "$ok/4 RPCs answered by the in-cluster operator's runtime pods"; fi
	if out=$(k -n "$CHART_NS" logs "$op_pod" 2>&1) && grep -qi 'lease\|leader' <<<"$out"; then
		pass "kubectl logs $op_pod: $(grep -ci 'reconcil' <<<"$out") reconcile lines, leadership logged"
	else
		fail "kubectl logs of the operator pod: $(head -c 300 <<<"$out")"
	fi
fi

printf '%d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
