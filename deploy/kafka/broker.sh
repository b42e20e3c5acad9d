#!/usr/bin/env bash
# broker.sh: the Apache Kafka broker of viewpulse's tests, benches, load test and local
# cluster: one KRaft node (broker and controller in one process) on loopback ports, from the
# jars Maven Central serves (no download site needed).
#
# Usage:
#   deploy/kafka/broker.sh fetch          the jars, once, into the cache (skipped when there)
#   deploy/kafka/broker.sh start DIR      format DIR (unless it holds a formatted node), start
#                                         the broker with its data and log in DIR, wait until it
#                                         logs "Kafka Server started"; prints HOST:PORT of the
#                                         PLAINTEXT listener. A second start on the same DIR
#                                         keeps its ports and data (a broker restart)
#   deploy/kafka/broker.sh stop DIR       SIGTERM (a clean shutdown), KILL after 30 s
#   deploy/kafka/broker.sh kill DIR       SIGKILL, as a crash
#   deploy/kafka/broker.sh status DIR     "running PID" or "stopped"; exits 0 or 3
#   deploy/kafka/broker.sh tool CLASS ARG...
#                                         a Kafka tool from the same jars, e.g.
#                                         org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
#   deploy/kafka/broker.sh libs           prints the jar folder (fetching it first if needed)
#   deploy/kafka/broker.sh cache          prints the jar folder, a tab and "complete" or
#                                         "missing" (nothing is fetched)
#
# Files in DIR: server.properties, data/ (the log dirs), broker.log (the broker's own log:
# look here when a test names it), broker.pid, broker.addr (PLAINTEXT HOST:PORT) and, with TLS,
# ssl.addr, sasl_ssl.addr and tls/ (ca.pem, the CA a client trusts; broker.p12).
#
# Environment:
#   VIEWPULSE_KAFKA_CACHE  jar cache (default ${XDG_CACHE_HOME:-~/.cache}/viewpulse/kafka-VERSION)
#   VIEWPULSE_KAFKA_POM    the POM that lists the jars (default: pom.xml beside this script)
#   PORT, CONTROLLER_PORT  listener ports (default: free ones, chosen at the first start)
#   TLS=1                  also an SSL and a SASL_SSL (SCRAM-SHA-512) listener, with a CA and a
#                          certificate for 127.0.0.1 made here unless DIR/tls holds them
#   SCRAM_USERS            "user:password,..." SCRAM-SHA-512 users, created at format time by
#                          Kafka's StorageTool (TLS=1 only; default none)
#   WATCH_PID              stop the broker when this process ends (the test binary's pid), so a
#                          broker never outlives the tests that started it
#   CLEANUP=1              with WATCH_PID: also delete DIR once the broker has ended
#   KAFKA_HEAP             the JVM's heap flags (default -Xms256m -Xmx768m)
#   READY_TIMEOUT          seconds to wait for "Kafka Server started" (default 90)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
POM=${VIEWPULSE_KAFKA_POM:-$HERE/pom.xml}

die() {
  echo "broker.sh: $*" >&2
  exit 1
}

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]:-$0}"
}

# The Kafka version the POM names (the cache folder is per version).
kafka_version() {
  [[ -r $POM ]] || die "cannot read the POM $POM (set VIEWPULSE_KAFKA_POM)"
  sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n 1
}

cache_dir() {
  if [[ -n ${VIEWPULSE_KAFKA_CACHE:-} ]]; then
    echo "$VIEWPULSE_KAFKA_CACHE"
  else
    echo "${XDG_CACHE_HOME:-$HOME/.cache}/viewpulse/kafka-$(kafka_version)"
  fi
}

# fetch: every runtime jar of the POM into CACHE/libs; a marker file says it is complete.
fetch() {
  local cache libs
  cache=$(cache_dir)
  libs=$cache/libs
  if [[ -f $cache/complete ]]; then
    echo "$libs"
    return
  fi
  command -v mvn >/dev/null || die "Maven (mvn) is not installed: it fetches Kafka's jars"
  command -v java >/dev/null || die "Java is not installed: Kafka 4 needs Java 17 or later"
  echo "broker.sh: fetching Apache Kafka $(kafka_version) from Maven Central into $libs (once)" >&2
  mkdir -p "$cache"
  rm -rf "$libs.part"
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$libs.part" >"$cache/fetch.log" 2>&1; then
    tail -n 20 "$cache/fetch.log" >&2
    die "Maven could not fetch the jars (whole log: $cache/fetch.log)"
  fi
  rm -rf "$libs"
  mv "$libs.part" "$libs"
  touch "$cache/complete"
  echo "$libs"
}

# free_ports N: N distinct loopback ports nothing listens on now, drawn at random from
# 10000-19999 (below the kernel's ephemeral range, so no outgoing connection can take one
# between this check and the broker's bind; a bind(0) port once went to a client's connection
# while the JVM started: "Address already in use"). The tests' own ports are 20000-31999.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
top = min(20000, low)
chosen = []
if top - 10000 < 4 * n:
    # no room below the ephemeral range: free ports the kernel gives (the old way)
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    print(*[s.getsockname()[1] for s in socks])
    sys.exit(0)
for port in random.sample(range(10000, top), top - 10000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    chosen.append(port)
    if len(chosen) == n:
        break
if len(chosen) < n:
    sys.exit(f"broker.sh: fewer than {n} free loopback ports between 10000 and {top}")
print(*chosen)
PY
}

# pid_alive PID: a live process, not a zombie.
pid_alive() {
  local pid=${1:-} stat
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -r /proc/$pid/stat ]] || return 0
  stat=$(<"/proc/$pid/stat") 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

java_cmd() {
  local libs=$1
  shift
  # shellcheck disable=SC2086
  java ${KAFKA_JVM_OPTS:-} -cp "$libs/*" -Dlog4j2.configurationFile="$LOG4J" "$@"
}

# make_tls DIR: a CA and a broker certificate for 127.0.0.1/localhost, as PKCS#12.
make_tls() {
  local t=$1/tls
  [[ -f $t/broker.p12 && -f $t/ca.pem ]] && return
  command -v openssl >/dev/null || die "openssl is not installed: TLS=1 makes a CA with it"
  mkdir -p "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=viewpulse test CA" \
    -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$t/broker.key" -out "$t/broker.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$t/san.ext"
  openssl x509 -req -in "$t/broker.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
    -days 30 -extfile "$t/san.ext" -out "$t/broker.pem" 2>/dev/null
  openssl pkcs12 -export -in "$t/broker.pem" -inkey "$t/broker.key" -certfile "$t/ca.pem" \
    -name broker -passout pass:viewpulse-test -out "$t/broker.p12"
}

# write_properties DIR: server.properties from DIR/ports (chosen once, kept across restarts).
write_properties() {
  local dir=$1 port cport sslport saslport listeners advertised protomap
  if [[ ! -f $dir/ports ]]; then
    local free
    read -r -a free <<<"$(free_ports 4)"
    ((${#free[@]} == 4)) || die "no free loopback ports for the broker"
    port=${PORT:-${free[0]}}
    cport=${CONTROLLER_PORT:-${free[1]}}
    sslport=${SSL_PORT:-${free[2]}}
    saslport=${SASL_PORT:-${free[3]}}
    printf '%s %s %s %s\n' "$port" "$cport" "$sslport" "$saslport" >"$dir/ports"
  fi
  read -r port cport sslport saslport <"$dir/ports"
  listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
  advertised="PLAINTEXT://127.0.0.1:$port"
  protomap="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ ${TLS:-0} == 1 || -f $dir/tls/enabled ]]; then
    listeners+=",SSL://127.0.0.1:$sslport,SASL_SSL://127.0.0.1:$saslport"
    advertised+=",SSL://127.0.0.1:$sslport,SASL_SSL://127.0.0.1:$saslport"
    protomap+=",SSL:SSL,SASL_SSL:SASL_SSL"
  fi
  cat >"$dir/server.properties" <<EOF
# written by deploy/kafka/broker.sh: one KRaft node for tests
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protomap
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=500
group.max.session.timeout.ms=300000
log.retention.hours=-1
log.segment.bytes=268435456
log.flush.interval.messages=9223372036854775807
num.network.threads=2
num.io.threads=4
EOF
  if [[ ${TLS:-0} == 1 || -f $dir/tls/enabled ]]; then
    make_tls "$dir"
    touch "$dir/tls/enabled"
    cat >>"$dir/server.properties" <<EOF
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/tls/broker.p12
ssl.keystore.password=viewpulse-test
ssl.key.password=viewpulse-test
ssl.client.auth=none
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
    echo "127.0.0.1:$sslport" >"$dir/ssl.addr"
    echo "127.0.0.1:$saslport" >"$dir/sasl_ssl.addr"
  fi
  echo "127.0.0.1:$port" >"$dir/broker.addr"
}

# format DIR: KRaft storage for a new node (SCRAM users added here, by Kafka's StorageTool).
format() {
  local dir=$1 libs=$2 id args=() u
  [[ -f $dir/data/meta.properties ]] && return
  # (base64url of 16 random bytes may begin with "-": hence --cluster-id=ID, not -t ID)
  id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  if [[ -n ${SCRAM_USERS:-} ]]; then
    IFS=',' read -r -a users <<<"$SCRAM_USERS"
    for u in "${users[@]}"; do
      args+=(--add-scram "SCRAM-SHA-512=[name=${u%%:*},password=${u#*:}]")
    done
  fi
  if ! java_cmd "$libs" kafka.tools.StorageTool format --cluster-id="$id" -c "$dir/server.properties" \
    "${args[@]}" >"$dir/format.log" 2>&1; then
    cat "$dir/format.log" >&2
    die "formatting $dir/data failed (log: $dir/format.log)"
  fi
}

# launch DIR LIBS TIMEOUT: start the broker of DIR and wait until it logs "Kafka Server
# started"; returns 2 when it ended on a port already in use, dies on any other failure.
launch() {
  local dir=$1 libs=$2 timeout=$3 pid deadline
  : >>"$dir/broker.log"
  local mark
  mark=$(wc -l <"$dir/broker.log")
  # shellcheck disable=SC2086
  KAFKA_JVM_OPTS="${KAFKA_HEAP:--Xms256m -Xmx768m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true" \
    setsid bash -c 'exec java $KAFKA_JVM_OPTS -cp "$0/*" -Dlog4j2.configurationFile="$1" kafka.Kafka "$2"' \
    "$libs" "$LOG4J" "$dir/server.properties" >>"$dir/broker.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/broker.pid"
  if [[ -n ${WATCH_PID:-} ]]; then
    # the watchdog: ends the broker once the process that asked for it has ended
    # (a broker that ended first, killed by a test, say, only ends the watch)
    setsid bash -c 'while kill -0 "$0" 2>/dev/null && kill -0 "$1" 2>/dev/null; do sleep 1; done
      kill -0 "$0" 2>/dev/null && exit 0
      kill -KILL "$1" 2>/dev/null; while kill -0 "$1" 2>/dev/null; do sleep 0.2; done
      [[ $3 == 1 ]] && rm -rf "$2"' \
      "$WATCH_PID" "$pid" "$dir" "${CLEANUP:-0}" >/dev/null 2>&1 </dev/null &
  fi
  deadline=$((SECONDS + timeout))
  until tail -n +"$((mark + 1))" "$dir/broker.log" | grep -q 'Kafka Server started'; do
    if ! pid_alive "$pid"; then
      tail -n 30 "$dir/broker.log" >&2
      if tail -n +"$((mark + 1))" "$dir/broker.log" | grep -q 'BindException: Address already in use'; then
        return 2
      fi
      die "the broker exited before it was ready (log: $dir/broker.log)"
    fi
    if ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null || true
      tail -n 30 "$dir/broker.log" >&2
      die "the broker was not ready within ${timeout}s (log: $dir/broker.log)"
    fi
    sleep 0.2
  done
}

start() {
  local dir=$1 libs pid deadline timeout=${READY_TIMEOUT:-90}
  libs=$(fetch)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if pid_alive "$(cat "$dir/broker.pid" 2>/dev/null)"; then
    die "a broker already runs from $dir (pid $(cat "$dir/broker.pid"))"
  fi
  LOG4J=$dir/log4j2.properties
  cat >"$LOG4J" <<'EOF'
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.controller.name = org.apache.kafka.controller
logger.controller.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.jetty.name = org.eclipse.jetty
logger.jetty.level = WARN
EOF
  local fresh=0 attempt
  [[ -f $dir/ports ]] || fresh=1
  write_properties "$dir"
  format "$dir" "$libs"
  for attempt in 1 2 3; do
    launch "$dir" "$libs" "$timeout" && break
    # a port chosen here was taken before the broker bound it: choose others (ports given by
    # the caller, or kept from an earlier start, stay: the failure is then the caller's)
    if ((fresh == 0 || attempt == 3)) || [[ -n ${PORT:-}${CONTROLLER_PORT:-}${SSL_PORT:-}${SASL_PORT:-} ]]; then
      die "the broker could not bind its ports $(cat "$dir/ports") (log: $dir/broker.log)"
    fi
    echo "broker.sh: a port was taken before the broker bound it; choosing others" >&2
    rm -f "$dir/ports"
    write_properties "$dir"
  done
  cat "$dir/broker.addr"
}

stop() {
  local dir=$1 signal=${2:-TERM} pid i
  pid=$(cat "$dir/broker.pid" 2>/dev/null || true)
  pid_alive "$pid" || return 0
  kill -"$signal" "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  die "the broker (pid $pid) did not end"
}

cmd=${1:-}
case $cmd in
fetch | libs) fetch ;;
cache)
  if [[ -f $(cache_dir)/complete ]]; then state=complete; else state=missing; fi
  printf '%s\t%s\n' "$(cache_dir)/libs" "$state"
  ;;
start)
  [[ -n ${2:-} ]] || die "usage: broker.sh start DIR"
  start "$2"
  ;;
stop)
  [[ -n ${2:-} ]] || die "usage: broker.sh stop DIR"
  stop "$2" TERM
  ;;
kill)
  [[ -n ${2:-} ]] || die "usage: broker.sh kill DIR"
  stop "$2" KILL
  ;;
status)
  [[ -n ${2:-} ]] || die "usage: broker.sh status DIR"
  pid=$(cat "$2/broker.pid" 2>/dev/null || true)
  if pid_alive "$pid"; then echo "running $pid"; else
    echo stopped
    exit 3
  fi
  ;;
tool)
  [[ -n ${2:-} ]] || die "usage: broker.sh tool CLASS ARG..."
  libs=$(fetch)
  shift
  LOG4J=$(cache_dir)/tools-log4j2.properties
  # Kafka's CLI tools: warnings and errors only, on stderr
  printf '%s\n' 'rootLogger.level = WARN' 'rootLogger.appenderRef.err.ref = err' \
    'appender.err.type = Console' 'appender.err.name = err' 'appender.err.target = SYSTEM_ERR' \
    'appender.err.layout.type = PatternLayout' 'appender.err.layout.pattern = %p %m%n' >"$LOG4J"
  java_cmd "$libs" "$@"
  ;;
-h | --help | help) usage ;;
*)
  usage >&2
  exit 2
  ;;
esac
