#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) for e2e
# tests, run straight from Maven Central jars: no Docker, no tarball download.
#
# Usage: e2e/infra/kafka.sh start|stop|restart|status|bootstrap|pid|fetch|topics [args...]
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
# Environment:
#   SWITCHBOARD_CACHE                  jar cache root (~/.cache/switchboard)
#   SWITCHBOARD_STATE_DIR              state root (<repo>/.state); ours is .../kafka
#   SWITCHBOARD_KAFKA_VERSION          Kafka version (default below)
#   SWITCHBOARD_KAFKA_PORT             PLAINTEXT listener port (9092)
#   SWITCHBOARD_KAFKA_CONTROLLER_PORT  KRaft controller port (9093)
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
#   JAVA_HOME                          JDK 17+ to use (else `java` on PATH)
set -euo pipefail

KAFKA_VERSION="${SWITCHBOARD_KAFKA_VERSION:-4.1.1}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"

CACHE_DIR="${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}/kafka/$KAFKA_VERSION"
LIBS_DIR="$CACHE_DIR/libs"
STAMP="$CACHE_DIR/.fetched"

STATE_DIR="${SWITCHBOARD_STATE_DIR:-$REPO_ROOT/.state}/kafka"
DATA_DIR="$STATE_DIR/data"
LOG_DIR="$STATE_DIR/logs"
PID_FILE="$STATE_DIR/kafka.pid"
SERVER_PROPS="$STATE_DIR/server.properties"
LOG4J_BROKER="$STATE_DIR/log4j2.properties"
LOG4J_TOOLS="$STATE_DIR/tools-log4j2.properties"
ADMIN_PROPS="$STATE_DIR/admin.properties"

HOST=127.0.0.1
PORT="${SWITCHBOARD_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${SWITCHBOARD_KAFKA_CONTROLLER_PORT:-9093}"
BOOTSTRAP="$HOST:$PORT"
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
  local listeners="PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT"
  local advertised="PLAINTEXT://$HOST:$PORT"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
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
  cat >"$SERVER_PROPS" <<EOF
# Generated by e2e/infra/kafka.sh -- edits are overwritten on start.
# Single node, KRaft combined mode, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
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
  if ! out="$(run_tool kafka.tools.StorageTool format -t "$id" -c "$SERVER_PROPS" 2>&1)"; then
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

usage() {
  echo "usage: $0 start|stop|restart|status|bootstrap|pid|fetch|topics [TopicCommand args]" >&2
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
  *) usage ;;
esac
