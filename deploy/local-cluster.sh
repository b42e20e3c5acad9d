#!/usr/bin/env bash
# local-cluster.sh: a viewpulse scale-out group on this machine, to watch partitions move
# when members come and go (one broker, several `viewpulse run` members of one group).
#
# Usage:
#   deploy/local-cluster.sh start N          a broker (unless BROKER is set) and members 1..N
#   deploy/local-cluster.sh add              one more member, numbered after the highest
#   deploy/local-cluster.sh kill I [SIGNAL]  send SIGNAL (default KILL) to member I, wait for
#                                            it to go (not for STOP, TSTP, TTIN, TTOU or CONT)
#   deploy/local-cluster.sh stop             SIGTERM to every member (they drain; KILL after
#                                            STOP_TIMEOUT s), then the broker if this started it
#   deploy/local-cluster.sh status           a line per member and for the broker; exits 0
#
# Environment:
#   VIEWPULSE_CLUSTER_DIR  pid files and logs (default ./local-cluster): member-I.pid,
#                          member-I.log, broker.addr, and kafka/ (the broker's data and
#                          kafka/broker.log, when this script started it)
#   VIEWPULSE_BIN          the viewpulse binary (default: target/release/viewpulse, else
#                          target/debug/viewpulse of this repository, else viewpulse on PATH)
#   VIEWPULSE_ARGS         more arguments for every member's `viewpulse run`, split on blanks
#                          (no quoting), e.g. "--model /data/model --shards 2"
#   BROKER                 HOST:PORT of a running Kafka; unset: start Apache Kafka on 127.0.0.1
#                          with deploy/kafka/broker.sh (its jars fetched once from Maven Central)
#   KAFKA_PORT             the port of that broker (default 9092)
#   TOPIC                  the input topic (default viewstream)
#   CONFIG                 a viewpulse configuration for every member (--config), optional;
#                          a cluster one, e.g. deploy/systemd/viewpulse.toml with its paths
#                          changed (no state.dir, no until_end)
#   HTTP_PORT_BASE         member I serves /readyz, /livez, /snapshot, /metrics on
#                          127.0.0.1:HTTP_PORT_BASE+I-1 (default 9898); "off": leave http.listen
#   STOP_TIMEOUT           seconds to wait for a member to go (default 30)
#
# Each member runs `$VIEWPULSE_BIN run [--config $CONFIG] --member member-I $VIEWPULSE_ARGS` in
# its own session (it outlives this script), with these defaults unless already set:
#   VIEWPULSE_SOURCE=kafka://$BROKER/$TOPIC
#   VIEWPULSE_CHANGELOG=kafka://$BROKER/$TOPIC-changelog
#   VIEWPULSE_COORDINATOR=kafka://$BROKER/$TOPIC-coordinator
#   VIEWPULSE_TRIGGER_INTERVAL=5s (only without CONFIG: cluster mode needs an interval)
#   VIEWPULSE_HTTP_LISTEN=127.0.0.1:PORT (see HTTP_PORT_BASE; members must not share a port)
# These override CONFIG's keys (the environment wins over the file), so that every member
# talks to the broker this script knows; set them yourself to point elsewhere.
#
# Example, from the repository root, with a model in ./model:
#   cargo build --release
#   deploy/local-cluster.sh start 3
#   viewpulse replay --file views.csv --to kafka://127.0.0.1:9092/viewstream --partitions 6
#   curl -s 127.0.0.1:9898/readyz; deploy/local-cluster.sh kill 2; deploy/local-cluster.sh add
#   deploy/local-cluster.sh stop
set -euo pipefail
shopt -s nullglob

DIR=${VIEWPULSE_CLUSTER_DIR:-./local-cluster}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
HTTP_PORT_BASE=${HTTP_PORT_BASE:-9898}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_FIXTURE=$ROOT/deploy/kafka/broker.sh

die() {
  echo "local-cluster: $*" >&2
  exit 1
}

say() { echo "local-cluster: $*"; }

usage() {
  # the comment block at the top of this file, from its second line to the first non-comment
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

# pid_alive PID [MARKER]: whether PID is a live process (not a zombie) and, where /proc tells,
# one whose command line has the argument MARKER (so that a pid reused by another program
# after a member died does not count as that member).
pid_alive() {
  local pid=${1:-} marker=${2:-} stat arg
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -r /proc/$pid/stat ]] || return 0
  stat=$(<"/proc/$pid/stat") 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]] || return 1
  [[ -n $marker && -r /proc/$pid/cmdline ]] || return 0
  while IFS= read -r -d '' arg; do
    [[ $arg == "$marker" ]] && return 0
  done <"/proc/$pid/cmdline"
  return 1
}

# read_value FILE: the first line of FILE (a pid, an address, a topic), or nothing.
read_value() {
  local line=""
  [[ -s $1 ]] && IFS= read -r line <"$1" 2>/dev/null
  echo "$line"
}

# member_ids: the numbers of the members with a pid file, ascending.
member_ids() {
  local f n
  for f in "$DIR"/member-*.pid; do
    n=${f##*/member-}
    n=${n%.pid}
    if [[ $n =~ ^[0-9]+$ ]]; then
      echo "$n"
    fi
  done | sort -n
}

member_running() {
  pid_alive "$(read_value "$DIR/member-$1.pid")" "member-$1"
}

broker_running() {
  "$KAFKA_FIXTURE" status "$DIR/kafka" >/dev/null 2>&1
}

# port_open HOST PORT: whether HOST:PORT accepts a TCP connection.
port_open() {
  if command -v timeout >/dev/null 2>&1; then
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
  else
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
  fi
}

# wait_gone PID MARKER SECONDS: wait until the process is gone; false if it is still there.
wait_gone() {
  local pid=$1 marker=$2 tenths=$(($3 * 10)) i
  for ((i = 0; i < tenths; i++)); do
    pid_alive "$pid" "$marker" || return 0
    sleep 0.1
  done
  ! pid_alive "$pid" "$marker"
}

# Use (and create) the cluster folder as an absolute path, and hold its lock, so that two
# invocations that change it do not interleave.
enter_dir() {
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$DIR/.lock"
    flock -n 9 || die "another local-cluster.sh is working on $DIR"
  fi
}

resolve_bin() {
  if [[ -n ${VIEWPULSE_BIN:-} ]]; then
    BIN=$VIEWPULSE_BIN
  elif [[ -x $ROOT/target/release/viewpulse ]]; then
    BIN=$ROOT/target/release/viewpulse
  elif [[ -x $ROOT/target/debug/viewpulse ]]; then
    BIN=$ROOT/target/debug/viewpulse
  elif BIN=$(command -v viewpulse 2>/dev/null); then
    :
  else
    die "no viewpulse binary: cargo build --release, or set VIEWPULSE_BIN"
  fi
  if [[ $BIN != */* ]]; then
    BIN=$(command -v "$BIN" 2>/dev/null) || die "VIEWPULSE_BIN=$VIEWPULSE_BIN is not on PATH"
  fi
  [[ -x $BIN ]] || die "$BIN is not executable"
}

# launch PIDFILE LOG COMMAND...: run COMMAND in the background in a session of its own (it
# survives this script and the terminal), output appended to LOG. The process writes its own
# pid before it becomes COMMAND (exec keeps the pid), so PIDFILE names COMMAND's process even
# where setsid has to fork.
launch() {
  local pidfile=$1 log=$2 detach=nohup i
  shift 2
  local name=${1##*/}
  command -v setsid >/dev/null 2>&1 && detach=setsid
  rm -f "$pidfile"
  echo "=== $(date '+%Y-%m-%d %H:%M:%S') $*" >>"$log"
  # shellcheck disable=SC2016 # expanded by the inner bash
  "$detach" bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
    </dev/null >>"$log" 2>&1 9>&- &
  for ((i = 0; i < 50; i++)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.1
  done
  die "$name did not start; see $log"
}

start_broker() {
  local port=${KAFKA_PORT:-9092} addr
  [[ $port =~ ^[0-9]+$ ]] || die "KAFKA_PORT=$port is not a port"
  if port_open 127.0.0.1 "$port"; then
    die "127.0.0.1:$port already accepts connections: set BROKER=127.0.0.1:$port to use that broker, or KAFKA_PORT to a free port"
  fi
  rm -rf "$DIR/kafka"
  # (fd 9, the folder lock, is not handed to the broker: it would hold the lock for its life)
  if ! addr=$(PORT=$port "$KAFKA_FIXTURE" start "$DIR/kafka" 9>&-); then
    die "Apache Kafka did not start; see $DIR/kafka/broker.log"
  fi
  echo "$addr" >"$DIR/broker.addr"
  say "broker (Apache Kafka) running pid $(read_value "$DIR/kafka/broker.pid") on $addr, log $DIR/kafka/broker.log"
}

# start_member I BROKER TOPIC
start_member() {
  local i=$1 broker=$2 topic=$3 args=(run) envs=() extra=()
  [[ -n ${CONFIG:-} ]] && args+=(--config "$CONFIG")
  args+=(--member "member-$i")
  read -r -a extra <<<"${VIEWPULSE_ARGS:-}" || true
  args+=(${extra[@]+"${extra[@]}"})
  envs+=("VIEWPULSE_SOURCE=${VIEWPULSE_SOURCE:-kafka://$broker/$topic}")
  envs+=("VIEWPULSE_CHANGELOG=${VIEWPULSE_CHANGELOG:-kafka://$broker/$topic-changelog}")
  envs+=("VIEWPULSE_COORDINATOR=${VIEWPULSE_COORDINATOR:-kafka://$broker/$topic-coordinator}")
  if [[ -z ${CONFIG:-} && -z ${VIEWPULSE_TRIGGER_INTERVAL:-} ]]; then
    envs+=(VIEWPULSE_TRIGGER_INTERVAL=5s)
  fi
  if [[ $HTTP_PORT_BASE != off && -z ${VIEWPULSE_HTTP_LISTEN:-} ]]; then
    envs+=("VIEWPULSE_HTTP_LISTEN=127.0.0.1:$((HTTP_PORT_BASE + i - 1))")
  fi
  launch "$DIR/member-$i.pid" "$DIR/member-$i.log" env "${envs[@]}" "$BIN" "${args[@]}"
  say "member-$i started, pid $(read_value "$DIR/member-$i.pid"), log $DIR/member-$i.log"
}

# last_start LOG: what LOG holds since its last start (launch appends a "=== " line per start).
last_start() {
  awk '/^=== / { n = 0; next } { lines[n++] = $0 } END { for (i = 0; i < n; i++) print lines[i] }' "$1"
}

# check_started I...: a second after the start, report the members that already exited (a
# configuration refused at once, exit code 2, is the usual cause).
check_started() {
  local i failed=0
  sleep 1
  for i in "$@"; do
    if ! member_running "$i"; then
      echo "local-cluster: member-$i exited at once; the end of $DIR/member-$i.log:" >&2
      last_start "$DIR/member-$i.log" | tail -n 5 >&2 || true
      failed=1
    fi
  done
  ((failed == 0)) || echo "local-cluster: the rest keeps running (status; stop)" >&2
  return "$failed"
}

check_http_port_base() {
  [[ $HTTP_PORT_BASE == off || $HTTP_PORT_BASE =~ ^[0-9]+$ ]] ||
    die "HTTP_PORT_BASE=$HTTP_PORT_BASE is neither a port nor off"
}

cmd_start() {
  local n=${1:-} i running=() broker topic ids=()
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "usage: $0 start N (N >= 1)"
  check_http_port_base
  enter_dir
  for i in $(member_ids); do
    member_running "$i" && running+=("member-$i")
  done
  broker_running && running+=(broker)
  if ((${#running[@]} > 0)); then
    die "already started in $DIR (${running[*]} running): use add, status or stop"
  fi
  resolve_bin
  # forget the previous run's pid files (its logs are appended to)
  rm -f "$DIR"/member-*.pid "$DIR/broker.addr" "$DIR/topic"
  topic=${TOPIC:-viewstream}
  if [[ -n ${BROKER:-} ]]; then
    broker=$BROKER
    echo "$broker" >"$DIR/broker.addr"
  else
    start_broker
    broker=$(<"$DIR/broker.addr")
  fi
  echo "$topic" >"$DIR/topic"
  for ((i = 1; i <= n; i++)); do
    start_member "$i" "$broker" "$topic"
    ids+=("$i")
  done
  check_started "${ids[@]}"
}

cmd_add() {
  local broker topic i max=0
  check_http_port_base
  enter_dir
  if [[ -n ${BROKER:-} ]]; then
    broker=$BROKER
    [[ -s $DIR/broker.addr ]] || echo "$broker" >"$DIR/broker.addr"
  else
    broker=$(read_value "$DIR/broker.addr")
    [[ -n $broker ]] || die "no broker known in $DIR: use start N first, or set BROKER"
    if [[ -e $DIR/kafka/broker.pid ]] && ! broker_running; then
      die "the broker this script started is not running: use stop, then start N"
    fi
  fi
  topic=${TOPIC:-$(read_value "$DIR/topic")}
  topic=${topic:-viewstream}
  resolve_bin
  for i in $(member_ids); do
    max=$i
  done
  i=$((max + 1))
  start_member "$i" "$broker" "$topic"
  check_started "$i"
}

cmd_kill() {
  local i=${1:-} sig=${2:-KILL} pid
  [[ $i =~ ^[1-9][0-9]*$ ]] || die "usage: $0 kill I [SIGNAL]"
  sig=${sig#SIG}
  enter_dir
  member_running "$i" || die "member-$i is not running"
  pid=$(read_value "$DIR/member-$i.pid")
  kill -"$sig" "$pid" || die "cannot send SIG$sig to member-$i (pid $pid)"
  case $sig in
    STOP | TSTP | TTIN | TTOU | CONT | 0)
      say "sent SIG$sig to member-$i (pid $pid)"
      return 0
      ;;
  esac
  wait_gone "$pid" "member-$i" "$STOP_TIMEOUT" ||
    die "member-$i (pid $pid) still runs $STOP_TIMEOUT s after SIG$sig"
  say "member-$i (pid $pid) stopped by SIG$sig"
}

# stop_process NAME PID MARKER: SIGTERM (and SIGCONT, in case it was stopped), then SIGKILL
# after STOP_TIMEOUT seconds.
stop_process() {
  local name=$1 pid=$2 marker=$3
  if wait_gone "$pid" "$marker" "$STOP_TIMEOUT"; then
    say "$name (pid $pid) stopped"
  else
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" "$marker" 5 || true
    say "$name (pid $pid) killed after $STOP_TIMEOUT s"
  fi
}

cmd_stop() {
  local i pid names=() pids=() k
  [[ -d $DIR ]] || {
    say "nothing to stop in $DIR"
    return 0
  }
  enter_dir
  # every member at once, so that they drain together rather than the last ones taking over
  # the partitions of the first
  for i in $(member_ids); do
    if member_running "$i"; then
      pid=$(read_value "$DIR/member-$i.pid")
      kill -TERM "$pid" 2>/dev/null || true
      kill -CONT "$pid" 2>/dev/null || true
      names+=("member-$i")
      pids+=("$pid")
    fi
  done
  for k in "${!pids[@]}"; do
    stop_process "${names[$k]}" "${pids[$k]}" "${names[$k]}"
  done
  if broker_running; then
    "$KAFKA_FIXTURE" stop "$DIR/kafka" || die "the broker did not stop; see $DIR/kafka/broker.log"
  fi
  rm -f "$DIR/broker.addr" "$DIR/topic"
  ((${#pids[@]} > 0)) || say "no member was running"
}

cmd_status() {
  local i pid addr
  if [[ -d $DIR ]]; then
    for i in $(member_ids); do
      if member_running "$i"; then
        echo "member-$i running pid $(read_value "$DIR/member-$i.pid")"
      else
        echo "member-$i stopped"
      fi
    done
  fi
  addr=$(read_value "$DIR/broker.addr")
  if broker_running; then
    echo "broker running pid $(read_value "$DIR/kafka/broker.pid") $addr"
  elif [[ -n $addr && ! -e $DIR/kafka/broker.pid ]]; then
    echo "broker external $addr"
  else
    echo "broker stopped"
  fi
}

case ${1:-} in
  start)
    shift
    cmd_start "$@"
    ;;
  add) cmd_add ;;
  kill)
    shift
    cmd_kill "$@"
    ;;
  stop) cmd_stop ;;
  status)
    cmd_status || true
    exit 0
    ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
