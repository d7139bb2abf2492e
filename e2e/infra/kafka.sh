#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) for e2e
# tests, run straight from Maven Central jars: no Docker, no tarball download.
#
# Usage: e2e/infra/kafka.sh start|stop|restart|status|bootstrap|pid|fetch|topics [args...]
#        SWITCHBOARD_KAFKA_SECURITY=1 e2e/infra/kafka.sh start|...|env|add-user|acls|...
#
#   fetch      resolve the broker + admin-tool jars into the cache (once; a
#              stamp file makes later calls instant). `start` does this too.
#   start      format a fresh data dir and start the broker in the
#              background, wait until it serves metadata. Idempotent.
#   stop       SIGTERM our broker (pid file only), wait for the controlled
#              shutdown, SIGKILL after a timeout. Idempotent.
#   restart    stop, then start (with SWITCHBOARD_KAFKA_KEEP_DATA=1 the topics,
#              records and committed offsets survive: a broker restart).
#   status     exit 0 if running and the port answers, 3 otherwise.
#   bootstrap  print the bootstrap address (127.0.0.1:PORT) and nothing else.
#   pid        print our running broker's process id (exit 3 if none).
#   topics     run TopicCommand against the broker; no args = --list, e.g.
#              kafka.sh topics --describe --topic foo
#
# Secured mode (SWITCHBOARD_KAFKA_SECURITY=1): a second, independent broker with
# its own state dir (.../kafka-secured) and ports, and no PLAINTEXT listener:
#   - SASL_SSL listener (SCRAM-SHA-512) on SWITCHBOARD_KAFKA_SASL_PORT,
#   - mTLS listener (SSL, ssl.client.auth=required) on SWITCHBOARD_KAFKA_MTLS_PORT,
#     the principal is the client certificate's CN (User:<CN>),
#   - KRaft controller over mTLS on SWITCHBOARD_KAFKA_SECURED_CONTROLLER_PORT,
#   - certificates made per start with openssl under <state>/tls (CA, broker cert
#     with SAN IP:127.0.0.1),
#   - StandardAuthorizer, allow.everyone.if.no.acl.found=false; super users are
#     only User:broker (the broker/controller itself) and User:admin (this
#     script and the test harness, SCRAM password generated per start).
# Extra verbs in secured mode (all go through the broker's own tools):
#   env               KEY=VALUE lines: SASL_BOOTSTRAP, MTLS_BOOTSTRAP, CA_FILE,
#                     TLS_DIR, ADMIN_USER, ADMIN_PASSWORD_FILE
#   bootstrap-mtls    the mTLS listener's address (`bootstrap` = SASL_SSL's)
#   ca                path of the CA certificate (PEM)
#   add-user NAME     create/replace SCRAM-SHA-512 user NAME, password on stdin
#   client-cert NAME  issue a client certificate CN=NAME signed by the CA; prints
#                     the certificate path and the key path (one per line)
#   acls ARGS...      AclCommand (kafka-acls) as admin, e.g.
#                     kafka.sh acls --add --allow-principal User:x --operation Read --topic t
#   configs ARGS...   ConfigCommand (kafka-configs) as admin
#
# Environment:
#   SWITCHBOARD_CACHE                  jar cache root (~/.cache/switchboard)
#   SWITCHBOARD_STATE_DIR              state root (<repo>/.state); ours is .../kafka
#   SWITCHBOARD_KAFKA_VERSION          Kafka version (default below)
#   SWITCHBOARD_KAFKA_PORT             PLAINTEXT listener port (9092)
#   SWITCHBOARD_KAFKA_CONTROLLER_PORT  KRaft controller port (9093)
#   SWITCHBOARD_KAFKA_SECURITY=1       secured mode (see above)
#   SWITCHBOARD_KAFKA_SASL_PORT        secured: SASL_SSL listener port (9094)
#   SWITCHBOARD_KAFKA_MTLS_PORT        secured: mTLS listener port (9095)
#   SWITCHBOARD_KAFKA_SECURED_CONTROLLER_PORT  secured: controller port (9096)
#   SWITCHBOARD_KAFKA_POD_LISTENER     ADDRESS:PORT of an extra PLAINTEXT listener
#                                      for pods on the real node's bridge (node.sh),
#                                      e.g. 10.213.0.1:9099; unset = loopback only
#                                      (plaintext mode only)
#   SWITCHBOARD_KAFKA_KEEP_DATA=1      keep the data dir across stop/start
#                                      (default: fresh, empty cluster per start)
#   SWITCHBOARD_KAFKA_PROXIED_PORT     with ..._PROXIED_ADVERTISED: a second PLAINTEXT
#   SWITCHBOARD_KAFKA_PROXIED_ADVERTISED  listener PROXIED on this port, advertised as
#                                      that HOST:PORT (a TCP fault proxy in front of
#                                      it), so clients that bootstrap through the
#                                      proxy keep using it for every broker connection
#   SWITCHBOARD_KAFKA_HEAP_OPTS        broker heap flags (-Xms128m -Xmx512m)
#   SWITCHBOARD_KAFKA_START_TIMEOUT    seconds to wait for readiness (90)
#   SWITCHBOARD_KAFKA_STOP_TIMEOUT     seconds before SIGKILL on stop (30)
#   SWITCHBOARD_KAFKA_BROKER_PROPS     extra server.properties lines, space-separated
#                                      KEY=VALUE (benchmarks of broker settings, e.g.
#                                      group.consumer.heartbeat.interval.ms=1000)
#   JAVA_HOME                          JDK 17+ to use (else `java` on PATH)
set -euo pipefail

KAFKA_VERSION="${SWITCHBOARD_KAFKA_VERSION:-4.1.1}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"

CACHE_DIR="${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}/kafka/$KAFKA_VERSION"
LIBS_DIR="$CACHE_DIR/libs"
STAMP="$CACHE_DIR/.fetched"

SECURED="${SWITCHBOARD_KAFKA_SECURITY:-0}"
[[ "$SECURED" == 0 || "$SECURED" == 1 ]] || { echo "[kafka] error: SWITCHBOARD_KAFKA_SECURITY must be 0 or 1, got '$SECURED'" >&2; exit 2; }
if [[ "$SECURED" == 1 ]]; then
  STATE_DIR="${SWITCHBOARD_STATE_DIR:-$REPO_ROOT/.state}/kafka-secured"
else
  STATE_DIR="${SWITCHBOARD_STATE_DIR:-$REPO_ROOT/.state}/kafka"
fi
DATA_DIR="$STATE_DIR/data"
LOG_DIR="$STATE_DIR/logs"
PID_FILE="$STATE_DIR/kafka.pid"
SERVER_PROPS="$STATE_DIR/server.properties"
LOG4J_BROKER="$STATE_DIR/log4j2.properties"
LOG4J_TOOLS="$STATE_DIR/tools-log4j2.properties"
ADMIN_PROPS="$STATE_DIR/admin.properties"

TLS_DIR="$STATE_DIR/tls"
ADMIN_USER="admin"
ADMIN_PASSWORD_FILE="$STATE_DIR/admin.password"

HOST=127.0.0.1
if [[ "$SECURED" == 1 ]]; then
  # PORT is the listener the readiness checks and the harness use (SASL_SSL).
  PORT="${SWITCHBOARD_KAFKA_SASL_PORT:-9094}"
  MTLS_PORT="${SWITCHBOARD_KAFKA_MTLS_PORT:-9095}"
  CONTROLLER_PORT="${SWITCHBOARD_KAFKA_SECURED_CONTROLLER_PORT:-9096}"
else
  PORT="${SWITCHBOARD_KAFKA_PORT:-9092}"
  MTLS_PORT=
  CONTROLLER_PORT="${SWITCHBOARD_KAFKA_CONTROLLER_PORT:-9093}"
fi
BOOTSTRAP="$HOST:$PORT"
POD_LISTENER="${SWITCHBOARD_KAFKA_POD_LISTENER:-}"
if [[ -n "$POD_LISTENER" && ! "$POD_LISTENER" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+$ ]]; then
  printf '[kafka] error: SWITCHBOARD_KAFKA_POD_LISTENER must be IPV4:PORT, got %s\n' "$POD_LISTENER" >&2
  exit 1
fi
KEEP_DATA="${SWITCHBOARD_KAFKA_KEEP_DATA:-0}"
HEAP_OPTS="${SWITCHBOARD_KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
START_TIMEOUT="${SWITCHBOARD_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${SWITCHBOARD_KAFKA_STOP_TIMEOUT:-30}"
PROXIED_PORT="${SWITCHBOARD_KAFKA_PROXIED_PORT:-}"
PROXIED_ADVERTISED="${SWITCHBOARD_KAFKA_PROXIED_ADVERTISED:-}"

JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

log() { printf '[kafka] %s\n' "$*" >&2; }
die() { printf '[kafka] error: %s\n' "$*" >&2; exit 1; }

# --- helpers ---------------------------------------------------------------

port_open() { # port -> 0 if something accepts TCP connections on HOST:port
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

read_pid() { # prints the pid from our pid file, if any
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] || return 1
  printf '%s\n' "$pid"
}

is_our_broker() { # pid -> 0 if alive and it is the broker started with our config
  local pid="$1"
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  # Guard against pid reuse: the process must be kafka.Kafka on our config.
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$SERVER_PROPS" || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF kafka.Kafka
}

child_alive() { # pid -> 0 if the process exists and is not a zombie
  local state
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z ]]
}

running_pid() { # prints our live broker pid, or fails
  local pid
  pid="$(read_pid)" || return 1
  is_our_broker "$pid" || return 1
  printf '%s\n' "$pid"
}

classpath() { printf '%s/*' "$LIBS_DIR"; }

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (set JAVA_HOME to a JDK 17+)"
  local v
  v="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
  if ! [[ "${v%%.*}" =~ ^[0-9]+$ ]] || (( ${v%%.*} < 17 )); then
    die "Kafka $KAFKA_VERSION needs Java 17+, $JAVA is '${v:-unknown}'"
  fi
}

# Short-lived CLI JVMs: small heap, C1 only (much faster start-up on 2 cores).
run_tool() { # main-class args...
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_TOOLS" -cp "$(classpath)" "$@"
}

elapsed() { echo $((SECONDS - T0)); }

# --- fetch -------------------------------------------------------------------

pom_hash() { { cat "$POM"; echo "$KAFKA_VERSION"; } | sha256sum | cut -d' ' -f1; }

fetch() {
  [[ -f "$POM" ]] || die "missing $POM"
  local want
  want="$(pom_hash)"
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -d "$LIBS_DIR" ]]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed once to fetch Kafka jars)"
  mkdir -p "$CACHE_DIR"
  exec 8>"$CACHE_DIR/.lock"
  flock 8
  # Another process may have finished the fetch while we waited for the lock.
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -d "$LIBS_DIR" ]]; then
    exec 8>&-
    return 0
  fi
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR"
  local t0=$SECONDS tmp="$CACHE_DIR/libs.tmp.$$"
  rm -rf "$tmp"
  if ! mvn -B -Dstyle.color=never -f "$POM" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >"$CACHE_DIR/mvn.log" 2>&1; then
    grep -E 'ERROR|FAIL' "$CACHE_DIR/mvn.log" | head -n 30 >&2 || true
    rm -rf "$tmp"
    die "mvn failed to resolve Kafka $KAFKA_VERSION (full log: $CACHE_DIR/mvn.log)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar not resolved"; }
  rm -rf "$LIBS_DIR"
  mv "$tmp" "$LIBS_DIR"
  printf '%s\n' "$want" >"$STAMP"
  exec 8>&-
  log "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS_DIR" | cut -f1)) in $((SECONDS - t0))s"
}

# --- config ------------------------------------------------------------------

write_config() {
  mkdir -p "$STATE_DIR" "$LOG_DIR"
  cat >"$SERVER_PROPS" <<EOF
# Generated by e2e/infra/kafka.sh -- edits are overwritten on start.
# Single node, KRaft combined mode, loopback only (plus PODS, if set, on the
# real node's bridge address).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
$(listener_config)
log.dirs=$DATA_DIR

# Our code must create its topics explicitly, as on most production clusters.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# Internal topics on a single broker: RF 1, few partitions (fast creation).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=5

# Tests: no 3 s wait before the first consumer-group rebalance.
group.initial.rebalance.delay.ms=0

# 2-core machine: fewer threads than the defaults (3 network, 8 io).
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
  if [ -n "${SWITCHBOARD_KAFKA_BROKER_PROPS:-}" ]; then
    printf '\n# SWITCHBOARD_KAFKA_BROKER_PROPS\n' >>"$SERVER_PROPS"
    local prop
    for prop in $SWITCHBOARD_KAFKA_BROKER_PROPS; do
      case "$prop" in
        *=*) printf '%s\n' "$prop" >>"$SERVER_PROPS" ;;
        *) die "SWITCHBOARD_KAFKA_BROKER_PROPS: expected KEY=VALUE, got '$prop'" ;;
      esac
    done
  fi

  cat >"$LOG4J_BROKER" <<EOF
# Broker logging: INFO to a file in the state dir, nothing on the console.
status = warn
name = switchboard-kafka
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $LOG_DIR/server.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF

  cat >"$LOG4J_TOOLS" <<EOF
# CLI tools: warnings and errors only, on stderr.
status = warn
name = switchboard-kafka-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF

  cat >"$ADMIN_PROPS" <<EOF
# Admin client settings for kafka.sh's own CLI calls: fail fast.
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
  if [[ "$SECURED" == 1 ]]; then
    chmod 600 "$ADMIN_PROPS"
    cat >>"$ADMIN_PROPS" <<EOF
# Secured mode: the harness's super user over SASL_SSL.
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$ADMIN_USER" password="$(cat "$ADMIN_PASSWORD_FILE")";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.crt
EOF
  fi
}

listener_config() { # the listener block of server.properties
  if [[ "$SECURED" == 0 ]]; then
    local listeners="PLAINTEXT://$HOST:$PORT" advertised="PLAINTEXT://$HOST:$PORT" protocols=""
    if [[ -n "$POD_LISTENER" ]]; then
      listeners+=",PODS://$POD_LISTENER"
      advertised+=",PODS://$POD_LISTENER"
      protocols=",PODS:PLAINTEXT"
    fi
    if [[ -n "$PROXIED_PORT" || -n "$PROXIED_ADVERTISED" ]]; then
      [[ "$PROXIED_PORT" =~ ^[0-9]+$ ]] || die "SWITCHBOARD_KAFKA_PROXIED_PORT must be a port number, got '$PROXIED_PORT'"
      [[ "$PROXIED_ADVERTISED" =~ ^127\.[0-9.]+:[0-9]+$ ]] ||
        die "SWITCHBOARD_KAFKA_PROXIED_ADVERTISED must be a loopback HOST:PORT, got '$PROXIED_ADVERTISED'"
      # A client that connected to this listener is told the proxy's address for the
      # broker (metadata answers with the advertised address of the same listener).
      listeners+=",PROXIED://$HOST:$PROXIED_PORT"
      advertised+=",PROXIED://$PROXIED_ADVERTISED"
      protocols+=",PROXIED:PLAINTEXT"
    fi
    cat <<EOF
listeners=$listeners,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT$protocols
EOF
    return
  fi
  cat <<EOF
# Secured mode: no PLAINTEXT listener. Clients use SASL_SSL (SCRAM-SHA-512) or
# mTLS; the broker talks to itself (controller, inter-broker) over mTLS as
# User:broker.
listeners=SASL_SSL://$HOST:$PORT,MTLS://$HOST:$MTLS_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=SASL_SSL://$HOST:$PORT,MTLS://$HOST:$MTLS_PORT
inter.broker.listener.name=MTLS
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL,MTLS:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/broker.keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.crt
listener.name.mtls.ssl.client.auth=required
listener.name.controller.ssl.client.auth=required
listener.name.sasl_ssl.ssl.client.auth=none
# mTLS principal: the certificate's CN, e.g. User:rt-a for CN=rt-a.
ssl.principal.mapping.rules=RULE:^CN=([^,]+).*\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:broker;User:$ADMIN_USER
EOF
}

# --- certificates (secured mode) ------------------------------------------------

random_password() { head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24; }

issue_cert() { # name cn [san] -> $TLS_DIR/<name>.key, <name>.crt signed by the CA
  local name="$1" cn="$2" san="${3:-}"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TLS_DIR/$name.key" 2>/dev/null
  chmod 600 "$TLS_DIR/$name.key"
  openssl req -new -key "$TLS_DIR/$name.key" -subj "/CN=$cn" \
    -out "$TLS_DIR/$name.csr" 2>/dev/null
  local ext="$TLS_DIR/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [[ -z "$san" ]] || echo "subjectAltName=$san"
  } >"$ext"
  openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -days 2 -sha256 -extfile "$ext" -out "$TLS_DIR/$name.crt" 2>/dev/null
  rm -f "$TLS_DIR/$name.csr" "$ext"
}

make_certs() { # a fresh CA, broker and admin certificates, admin password
  command -v openssl >/dev/null 2>&1 || die "openssl not found (e2e/infra/deps.sh installs it)"
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" \
    -days 2 -subj "/CN=switchboard-e2e-ca" 2>/dev/null || die "openssl: creating the CA failed"
  chmod 600 "$TLS_DIR/ca.key"
  issue_cert broker broker "IP:$HOST,DNS:localhost" || die "openssl: broker certificate failed"
  # Kafka's PEM keystore: unencrypted PKCS#8 key followed by the certificate chain.
  cat "$TLS_DIR/broker.key" "$TLS_DIR/broker.crt" >"$TLS_DIR/broker.keystore.pem"
  chmod 600 "$TLS_DIR/broker.keystore.pem"
  issue_cert admin "$ADMIN_USER" || die "openssl: admin certificate failed"
  random_password >"$ADMIN_PASSWORD_FILE"
  chmod 600 "$ADMIN_PASSWORD_FILE"
}

random_cluster_id() { # 16 random bytes, URL-safe base64 without padding (Kafka Uuid)
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* ]] && { printf '%s\n' "$id"; return; }
  done
}

format_storage() {
  if [[ "$KEEP_DATA" == 1 && -f "$DATA_DIR/meta.properties" ]]; then
    log "keeping existing data dir $DATA_DIR (SWITCHBOARD_KAFKA_KEEP_DATA=1)"
    return 0
  fi
  rm -rf "$DATA_DIR"
  mkdir -p "$DATA_DIR"
  local id out
  id="$(random_cluster_id)"
  local scram=()
  # The harness's SCRAM user exists before the broker first starts.
  [[ "$SECURED" == 0 ]] || scram=(--add-scram "SCRAM-SHA-512=[name=$ADMIN_USER,password=$(cat "$ADMIN_PASSWORD_FILE")]")
  if ! out="$(run_tool kafka.tools.StorageTool format -t "$id" -c "$SERVER_PROPS" "${scram[@]}" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "formatting $DATA_DIR failed"
  fi
  log "formatted $DATA_DIR (cluster id $id)"
}

# --- verbs -------------------------------------------------------------------

broker_ready() { # one metadata round-trip through the admin client
  run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --command-config "$ADMIN_PROPS" --list >/dev/null 2>&1
}

wait_ready() { # pid
  local pid="$1" last=-1 e
  while :; do
    e="$(elapsed)"
    # Liveness, not is_our_broker: right after the fork the child may not have
    # exec'd java yet, and a broker that died is a zombie child of ours.
    if ! child_alive "$pid"; then
      log "broker (pid $pid) exited during start-up; last lines of $LOG_DIR:"
      tail -n 40 "$LOG_DIR/server.log" >&2 2>/dev/null || true
      tail -n 20 "$LOG_DIR/kafka.out" >&2 2>/dev/null || true
      rm -f "$PID_FILE"
      exit 1
    fi
    if (( e >= START_TIMEOUT )); then
      log "broker not ready after ${START_TIMEOUT}s; last lines of $LOG_DIR/server.log:"
      tail -n 40 "$LOG_DIR/server.log" >&2 2>/dev/null || true
      cmd_stop
      exit 1
    fi
    if port_open "$PORT"; then
      if broker_ready; then
        log "ready on $BOOTSTRAP after $(elapsed)s (pid $pid)"
        return 0
      fi
      log "port $PORT open, metadata not served yet (${e}s)"
    elif (( e / 5 != last / 5 )); then
      log "waiting for $BOOTSTRAP (${e}s)"
      last=$e
    fi
    sleep 0.5
  done
}

cmd_start() {
  T0=$SECONDS
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  flock 9
  local pid
  if pid="$(running_pid)"; then
    if port_open "$PORT" && broker_ready; then
      log "already running on $BOOTSTRAP (pid $pid)"
      return 0
    fi
    log "already starting (pid $pid); waiting for readiness"
    wait_ready "$pid"
    return 0
  fi
  rm -f "$PID_FILE"
  check_java
  fetch
  port_open "$PORT" && die "port $PORT is in use by another process (not our broker)"
  port_open "$CONTROLLER_PORT" && die "port $CONTROLLER_PORT is in use by another process (not our broker)"
  if [[ -n "$PROXIED_PORT" ]] && port_open "$PROXIED_PORT"; then
    die "port $PROXIED_PORT is in use by another process (not our broker)"
  fi
  if [[ "$SECURED" == 1 ]]; then
    port_open "$MTLS_PORT" && die "port $MTLS_PORT is in use by another process (not our broker)"
    # Fresh certificates and admin password per start; kept with the data dir.
    if [[ "$KEEP_DATA" != 1 || ! -f "$DATA_DIR/meta.properties" || ! -f "$ADMIN_PASSWORD_FILE" ]]; then
      make_certs
    fi
  fi
  write_config
  format_storage
  [[ -f "$LOG_DIR/server.log" ]] && mv -f "$LOG_DIR/server.log" "$LOG_DIR/server.log.prev"
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $HOST:$CONTROLLER_PORT, state $STATE_DIR)"
  # shellcheck disable=SC2086 # HEAP_OPTS is a list of JVM flags
  nohup "$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_BROKER" -Dlog4j2.shutdownHookEnabled=false \
    -Dkafka.logs.dir="$LOG_DIR" \
    -cp "$(classpath)" kafka.Kafka "$SERVER_PROPS" \
    </dev/null >"$LOG_DIR/kafka.out" 2>&1 8>&- 9>&- &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"
  wait_ready "$pid"
}

cmd_stop() {
  local pid
  if ! pid="$(read_pid)"; then
    log "not running"
    return 0
  fi
  if ! is_our_broker "$pid"; then
    log "not running (removing stale pid file, pid $pid)"
    rm -f "$PID_FILE"
    return 0
  fi
  T0=$SECONDS
  log "stopping broker (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  while is_our_broker "$pid" && (( $(elapsed) < STOP_TIMEOUT )); do
    sleep 0.5
  done
  if is_our_broker "$pid"; then
    log "still alive after ${STOP_TIMEOUT}s; sending SIGKILL to pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
    while [[ -e "/proc/$pid" ]] && is_our_broker "$pid"; do sleep 0.2; done
  fi
  rm -f "$PID_FILE"
  log "stopped after $(elapsed)s"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if port_open "$PORT"; then
      echo "kafka: running on $BOOTSTRAP (pid $pid, state $STATE_DIR)"
      return 0
    fi
    echo "kafka: starting (pid $pid, port $PORT not open yet)"
    return 3
  fi
  echo "kafka: not running"
  return 3
}

cmd_topics() {
  running_pid >/dev/null || die "broker not running (run '$0 start')"
  if (( $# == 0 )); then set -- --list; fi
  run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --command-config "$ADMIN_PROPS" "$@"
}

need_secured() { # verb
  [[ "$SECURED" == 1 ]] || die "'$1' needs the secured broker: set SWITCHBOARD_KAFKA_SECURITY=1"
}

cmd_env() {
  need_secured env
  [[ -f "$ADMIN_PASSWORD_FILE" && -f "$TLS_DIR/ca.crt" ]] || die "no secured broker state in $STATE_DIR (run '$0 start')"
  cat <<EOF
SASL_BOOTSTRAP=$BOOTSTRAP
MTLS_BOOTSTRAP=$HOST:$MTLS_PORT
CA_FILE=$TLS_DIR/ca.crt
TLS_DIR=$TLS_DIR
ADMIN_USER=$ADMIN_USER
ADMIN_PASSWORD_FILE=$ADMIN_PASSWORD_FILE
EOF
}

cmd_add_user() { # name; password on stdin
  need_secured add-user
  local name="${1:-}" pw
  [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "add-user: user name must be [A-Za-z0-9._-]+, got '$name'"
  running_pid >/dev/null || die "broker not running (run '$0 start')"
  IFS= read -r pw || true
  [[ -n "$pw" ]] || die "add-user $name: empty password on stdin"
  [[ "$pw" != *[\],\[=]* ]] || die "add-user $name: password must not contain , = [ ]"
  # The password is an argument of a short-lived local JVM: acceptable for the
  # test harness (ConfigCommand's --add-config-file rejects SCRAM entries).
  run_tool kafka.admin.ConfigCommand --bootstrap-server "$BOOTSTRAP" \
    --command-config "$ADMIN_PROPS" --alter --entity-type users --entity-name "$name" \
    --add-config "SCRAM-SHA-512=[password=$pw]" >/dev/null || die "add-user $name: ConfigCommand failed"
  log "SCRAM-SHA-512 user $name set"
}

cmd_client_cert() { # name -> prints cert path, key path
  need_secured client-cert
  local name="${1:-}"
  [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "client-cert: name must be [A-Za-z0-9._-]+, got '$name'"
  [[ -f "$TLS_DIR/ca.key" ]] || die "no CA in $TLS_DIR (run '$0 start')"
  mkdir -p "$TLS_DIR/clients"
  exec 7>"$TLS_DIR/.ca.lock"
  flock 7 # the CA's serial file is shared
  issue_cert "clients/$name" "$name" || die "openssl: client certificate $name failed"
  exec 7>&-
  printf '%s\n%s\n' "$TLS_DIR/clients/$name.crt" "$TLS_DIR/clients/$name.key"
}

cmd_admin_tool() { # main-class verb args...
  local class="$1" verb="$2"
  shift 2
  need_secured "$verb"
  running_pid >/dev/null || die "broker not running (run '$0 start')"
  run_tool "$class" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_PROPS" "$@"
}

usage() {
  echo "usage: $0 start|stop|restart|status|bootstrap|pid|fetch|topics [TopicCommand args]" >&2
  echo "  secured (SWITCHBOARD_KAFKA_SECURITY=1) also: env|bootstrap-mtls|ca|add-user NAME|client-cert NAME|acls ARGS|configs ARGS" >&2
  exit 2
}

T0=$SECONDS
case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  bootstrap) echo "$BOOTSTRAP" ;;
  pid) pid="$(read_pid)" && is_our_broker "$pid" && echo "$pid" || exit 3 ;;
  fetch) fetch ;;
  topics) shift; cmd_topics "$@" ;;
  env) cmd_env ;;
  bootstrap-mtls) need_secured bootstrap-mtls; echo "$HOST:$MTLS_PORT" ;;
  ca) need_secured ca; echo "$TLS_DIR/ca.crt" ;;
  add-user) shift; cmd_add_user "$@" ;;
  client-cert) shift; cmd_client_cert "$@" ;;
  acls) shift; cmd_admin_tool org.apache.kafka.tools.AclCommand acls "$@" ;;
  configs) shift; cmd_admin_tool kafka.admin.ConfigCommand configs "$@" ;;
  *) usage ;;
esac
