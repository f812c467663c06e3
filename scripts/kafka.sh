#!/usr/bin/env bash
# The local broker: Apache Kafka (KRaft, no ZooKeeper), resolved from Maven Central with the
# pinned versions in scripts/kafka/pom.xml. The one way to a broker for `make run`, `make test`,
# the benchmarks and the fault runs.
#
#   scripts/kafka.sh install
#       Resolve Kafka and its logging into .local/kafka/libs (idempotent; quick the second time).
#   scripts/kafka.sh run PORT [--controller-port P] [--advertise HOST:PORT] [--data DIR] [--owner PID]
#                        [--config KEY=VALUE]... [--metrics-port P] [--sasl-ssl SPORT DIR]
#                        [--node-id N --voters LIST --cluster-id ID]
#       One combined broker and controller in the foreground. The controller listens on
#       PORT+10000 unless given; clients are told HOST:PORT (default 127.0.0.1:PORT). Without
#       --data, a fresh directory under .local/kafka/tmp/, removed on exit; a directory that
#       already holds a node keeps its cluster id (no re-format). Prints `ready` on stderr once
#       PORT answers a metadata request. SIGTERM is a controlled shutdown (exit 0). With
#       --owner, it stops once process PID is gone (a test runner that died keeps no broker).
#       --config adds a broker setting (a test's log.retention.check.interval.ms, say).
#       --sasl-ssl SPORT DIR adds a SASL_SSL listener on 127.0.0.1:SPORT (SCRAM-SHA-512 and
#       SCRAM-SHA-256) beside PLAINTEXT (kept for the controller and between brokers): DIR holds
#       server.crt (PEM, the chain), server.key (PEM, unencrypted PKCS#8) and users (one
#       `NAME PASSWORD` a line, created at format time: a --data directory formatted before
#       keeps the users it had).
#       One node of a multi-node cluster, run as its own process (a test stops, kills and
#       restarts each): --node-id N --voters "1@127.0.0.1:P1,2@127.0.0.1:P2,..." --cluster-id ID,
#       with --data kept across its restarts (a node restarted on its data rejoins with what it
#       held; a different ID than the data's is refused). Every node of one cluster gets the
#       same --voters and --cluster-id; none is `ready` until a majority of voters runs.
#   scripts/kafka.sh cluster N BASEPORT [--data DIR] [--owner PID] [--metrics-port P]
#       N such nodes of one cluster: brokers on BASEPORT.., controllers on BASEPORT+10000..,
#       data in DIR/node1.. (default: fresh, removed on exit). `ready` once all N answer.
#
# --metrics-port P serves the broker's metrics as Prometheus text on http://127.0.0.1:P/metrics
# (node i of a cluster on P+i-1): the Prometheus JMX exporter's Java agent (its version in the
# POM, copied once into .local/kafka/jmx-exporter/, never onto Kafka's classpath) with the
# rules of scripts/kafka/jmx-exporter.yml (kafka_server_replicamanager_underreplicatedpartitions..).
#
# Each node's JVM heap is KAFKA_HEAP (default -Xms256m -Xmx512m); KAFKA_JVM_OPTS adds JVM flags
# (the tests add -XX:TieredStopAtLevel=1: a quicker start for less peak throughput). A node's
# log is <data>/server.log, and a failed start prints that log's tail.
#
# A JVM broker spends its start loading and verifying classes: `install` records the classes
# one start loads in a class-data archive (.local/kafka/kafka.jsa, Java's AppCDS), which every
# later start maps instead (on this 2-core machine, 14-18 s became 6 s with the other core
# busy). A JVM that cannot use the archive says so in <data>/stdout.log and starts without it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
home="$root/.local/kafka"
libs="$home/libs"
pom="$root/scripts/kafka/pom.xml"
heap="${KAFKA_HEAP:--Xms256m -Xmx512m}"

log() { echo "kafka: $*" >&2; }

# The version the POM pins, read from it (one place).
kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom"; }

# --metrics-port: the JMX exporter's agent jar, copied from Maven Central once per version (the
# POM's `provided` dependency: install's runtime copy leaves it out), one copy at a time.
metrics_agent() {
  local v dir jar
  v=$(sed -n 's:.*<jmx-exporter.version>\(.*\)</jmx-exporter.version>.*:\1:p' "$pom")
  dir="$home/jmx-exporter" jar="$home/jmx-exporter/jmx_prometheus_javaagent-$v.jar"
  if [ ! -f "$jar" ]; then
    mkdir -p "$dir"
    exec {alock}>"$home/.jmx-exporter.lock"
    flock "$alock"
    if [ ! -f "$jar" ]; then
      command -v mvn >/dev/null 2>&1 || { log "mvn (Maven) is needed to resolve the JMX exporter from Maven Central"; exit 1; }
      log "installing the Prometheus JMX exporter $v (a Java agent) into .local/kafka/jmx-exporter"
      if ! mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=provided \
        -DincludeArtifactIds=jmx_prometheus_javaagent -DoutputDirectory="$dir" >&2 || [ ! -f "$jar" ]; then
        log "could not resolve the JMX exporter $v from Maven Central into $dir"
        exit 1
      fi
    fi
    flock -u "$alock"
  fi
  echo "$jar"
}

cds="$home/kafka.jsa"

install() {
  command -v java >/dev/null 2>&1 || { log "java is needed (Kafka 4.x runs on Java 17+)"; exit 1; }
  local want stamp
  want="$(kafka_version) $(sha256sum "$pom" | cut -c1-16) $(java -version 2>&1 | head -n 1)"
  stamp="$libs/.installed"
  # Done once per POM and JDK (the class-data archive is attempted then, and not again if it
  # could not be recorded), and one install at a time: the shared test broker, a test's own and
  # `make run` may all ask at once.
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  mkdir -p "$home"
  exec {lock}>"$home/.install.lock"
  flock "$lock"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    flock -u "$lock"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || { log "mvn (Maven) is needed to resolve Kafka from Maven Central"; exit 1; }
  log "installing Apache Kafka $(kafka_version) from Maven Central into .local/kafka/libs"
  rm -rf "$libs.new"
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs.new" >&2
  rm -rf "$libs" "$cds"
  mv "$libs.new" "$libs"
  log "installed: $(ls "$libs" | wc -l) jars; recording a class-data archive (one start and stop)"
  record_cds
  echo "$want" >"$stamp"
  flock -u "$lock"
}

# One node started and stopped with -XX:ArchiveClassesAtExit: the classes a start loads, in
# $cds. Best effort: without the archive a broker starts all the same, only slower.
record_cds() {
  local dir port cport
  dir=$(mktemp -d)
  node_pid=""
  # Interrupted (Ctrl-C during a first `make run`), the recording broker goes too.
  trap 'kill -KILL "${node_pid:-0}" 2>/dev/null; rm -rf "$dir" "$cds.new"; exit 130' INT TERM
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cds_flags="-XX:ArchiveClassesAtExit=$cds.new"
  if start_node "$dir" 1 "$port" "$cport" "127.0.0.1:$port" "1@127.0.0.1:$cport" 1 "$(new_cluster_id)" \
    && wait_ready "$node_pid" "$dir" "127.0.0.1:$port" 1 "127.0.0.1:$port"; then
    kill -TERM "$node_pid"
    wait "$node_pid" || true
    [ -s "$cds.new" ] && mv "$cds.new" "$cds"
  else
    [ -z "${node_pid:-}" ] || kill -KILL "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$dir" "$cds.new"
  trap - INT TERM
  cds_flags=""
  [ -f "$cds" ] && log "class-data archive: $cds" || log "no class-data archive (brokers start slower)"
}

cds_flags=""

java_cmd() {
  local share="$cds_flags"
  [ -n "$share" ] || { [ -f "$cds" ] && share="-XX:SharedArchiveFile=$cds"; }
  # shellcheck disable=SC2086 # KAFKA_HEAP and KAFKA_JVM_OPTS are lists of JVM flags
  echo java $heap -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    $share ${KAFKA_JVM_OPTS:-} \
    -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties"
}

# A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what StorageTool makes),
# never starting with '-' (StorageTool would read it as an option: 1 start in 64).
new_cluster_id() {
  python3 -c '
import base64, uuid
while True:
    id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not id.startswith("-"):
        print(id)
        break'
}

# write_config DIR NODE_ID PORT CONTROLLER_PORT ADVERTISE VOTERS NODES
write_config() {
  local dir=$1 id=$2 port=$3 cport=$4 advertise=$5 voters=$6 nodes=$7
  local rf=$((nodes < 3 ? nodes : 3))
  local isr=$((rf > 1 ? rf - 1 : 1))
  cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka.sh; rewritten at every start.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://$advertise
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
# The services create their topics, with the replication their settings name.
auto.create.topics.enable=false
num.partitions=1
# Kafka's internal topics, sized to the cluster (one node cannot hold three copies).
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
# A local broker: a group's first member need not wait for others, and a new cluster's first
# group creates 10 partitions of __consumer_offsets, not 50 (each loaded before it answers).
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=10
# Consumer groups of the KIP-848 protocol (KAFKA_GROUP_PROTOCOL=consumer, the services' default)
# take their session timeout and heartbeat interval from the broker, not the client. A local
# broker lowers them, with the minimums that bound them: a member killed with -9 hands its
# partitions on after 6 s (a test waits that, not 45 s), and a heartbeat every second carries
# a rebalance's steps sooner. Production brokers keep Kafka's 45 s session and 5 s heartbeat
# (README "Operations": group protocol and rebalance times).
group.consumer.session.timeout.ms=6000
group.consumer.min.session.timeout.ms=6000
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.heartbeat.interval.ms=1000
EOF
  local c
  for c in "${extra_config[@]}"; do echo "$c" >>"$dir/server.properties"; done
}

# start_node DIR NODE_ID PORT CONTROLLER_PORT ADVERTISE VOTERS NODES CLUSTER_ID: formats DIR if
# it holds no node yet, then starts the JVM in the background; its pid in $node_pid.
start_node() {
  local dir=$1 id=$2 port=$3 cport=$4 advertise=$5 voters=$6 nodes=$7 cluster=$8
  mkdir -p "$dir/data"
  write_config "$dir" "$id" "$port" "$cport" "$advertise" "$voters" "$nodes"
  local java
  java=$(java_cmd)
  if [ ! -f "$dir/data/meta.properties" ]; then
    # shellcheck disable=SC2086
    if ! $java -Dkafka.logs.dir="$dir" -cp "$libs/*" kafka.tools.StorageTool format \
      -t "$cluster" -c "$dir/server.properties" "${format_args[@]}" >"$dir/format.log" 2>&1; then
      log "formatting $dir failed:"
      tail -n 20 "$dir/format.log" >&2
      return 1
    fi
  fi
  # shellcheck disable=SC2086
  $java $metrics_flag -Dkafka.logs.dir="$dir" -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/stdout.log" 2>&1 &
  node_pid=$!
}

# The cluster id a node's data directory already holds, if any.
existing_cluster_id() {
  [ -f "$1/data/meta.properties" ] || return 0
  sed -n 's/^cluster.id=//p' "$1/data/meta.properties" | head -n 1
}

# wait_ready PID DIR HOST:PORT NODE_ID ADVERTISED: until PORT answers a metadata request that
# lists this node as ADVERTISED (not merely some broker: another may hold a port that was free a
# moment ago), or the node exits (its log printed).
wait_ready() {
  local pid=$1 dir=$2 addr=$3 id=$4 adv=$5 deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-120}))
  until kill -0 "$pid" 2>/dev/null \
    && python3 "$root/scripts/kafka/ready.py" "$addr" 2>/dev/null | tr ' ' '\n' | grep -qxF "$id@$adv"; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      log "the broker on $addr did not start; the end of $dir/server.log:"
      tail -n 40 "$dir/server.log" >&2 2>/dev/null || true
      tail -n 20 "$dir/stdout.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.2
  done
}

pids=()
cleanup_dirs=()
# Each node gets a controlled shutdown, last started first, within KAFKA_STOP_TIMEOUT seconds
# (default 60) in all; what is still running then is killed. A combined node whose controller
# quorum has gone can wait for it forever in its controlled shutdown.
stop_all() {
  local p i deadline=$((SECONDS + ${KAFKA_STOP_TIMEOUT:-60}))
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p=${pids[$i]}
    kill -TERM "$p" 2>/dev/null || continue
    while kill -0 "$p" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then
      log "node $((i + 1)) did not stop within KAFKA_STOP_TIMEOUT; killing it"
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  pids=()
  local d
  for d in "${cleanup_dirs[@]}"; do rm -rf "$d"; done
}

on_signal() {
  log "stopping (controlled shutdown)"
  stop_all
  exit 0
}

# run_nodes N BASEPORT CPORT ADVERTISE DATA: the common part of `run` and `cluster`. A `run`
# with --voters is one node (id $node_id) of the cluster they name.
run_nodes() {
  local n=$1 base=$2 cbase=$3 advertise=$4 data=$5
  install
  if [ -z "$data" ]; then
    mkdir -p "$home/tmp"
    data=$(mktemp -d "$home/tmp/kafka.XXXXXX")
    cleanup_dirs+=("$data")
  fi
  local voters="" i
  for ((i = 1; i <= n; i++)); do
    voters+="${voters:+,}$i@127.0.0.1:$((cbase + i - 1))"
  done
  local members=$n first_id=1
  if [ -n "$voters_arg" ]; then
    voters=$voters_arg members=$(($(tr -cd ',' <<<"$voters_arg" | wc -c) + 1)) first_id=$node_id
  fi
  local dirs=()
  if [ "$n" = 1 ]; then dirs=("$data"); else
    for ((i = 1; i <= n; i++)); do dirs+=("$data/node$i"); done
  fi
  local cluster="" d
  for d in "${dirs[@]}"; do
    [ -n "$cluster" ] || cluster=$(existing_cluster_id "$d")
  done
  if [ -n "$cluster_arg" ]; then
    [ -z "$cluster" ] || [ "$cluster" = "$cluster_arg" ] \
      || { log "$data holds cluster $cluster, not --cluster-id $cluster_arg"; exit 2; }
    cluster=$cluster_arg
  fi
  [ -n "$cluster" ] || cluster=$(new_cluster_id)
  trap on_signal TERM INT
  trap stop_all EXIT
  local started=$SECONDS
  for ((i = 1; i <= n; i++)); do
    local port=$((base + i - 1)) adv="$advertise"
    [ -n "$adv" ] || adv="127.0.0.1:$port"
    [ -z "$metrics_base" ] || metrics_flag="-javaagent:$agent=127.0.0.1:$((metrics_base + i - 1)):$root/scripts/kafka/jmx-exporter.yml"
    start_node "${dirs[$((i - 1))]}" "$((first_id + i - 1))" "$port" "$((cbase + i - 1))" "$adv" "$voters" "$members" "$cluster" || exit 1
    pids+=("$node_pid")
  done
  for ((i = 1; i <= n; i++)); do
    local port=$((base + i - 1)) adv="$advertise"
    [ -n "$adv" ] || adv="127.0.0.1:$port"
    wait_ready "${pids[$((i - 1))]}" "${dirs[$((i - 1))]}" "127.0.0.1:$port" "$((first_id + i - 1))" "$adv" || exit 1
  done
  log "Apache Kafka $(kafka_version): $n node(s) on 127.0.0.1:$base$([ "$n" = 1 ] || echo "-$((base + n - 1))"), cluster $cluster, data in $data, up in $((SECONDS - started)) s"
  echo ready >&2
  # Until a signal stops them all, a node exits (then the rest stop and this fails), or the
  # owner is gone.
  local p
  while true; do
    for p in "${pids[@]}"; do
      kill -0 "$p" 2>/dev/null || { log "a node exited; stopping the rest"; exit 1; }
    done
    if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
      log "owner $owner is gone; stopping"
      stop_all
      exit 0
    fi
    sleep 1 &
    wait $! || true
  done
}

usage() {
  # The comment at the top of this file, up to its first line of code.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
}

# sasl_ssl SPORT DIR PORT CPORT ADVERTISE: the broker settings and format arguments of
# `run --sasl-ssl` (appended settings win over write_config's: Java properties, last one wins).
sasl_ssl() {
  local sport=$1 dir=$2 port=$3 cport=$4 adv=${5:-127.0.0.1:$3} f name pw
  for f in server.crt server.key users; do
    [ -r "$dir/$f" ] || { log "--sasl-ssl: $dir/$f is missing"; exit 2; }
  done
  # PEM inline, its line breaks as \n (a PEM key file would need a password of its own).
  pem() { awk '{ printf "%s\\n", $0 }' "$1"; }
  extra_config+=(
    "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_SSL://127.0.0.1:$sport"
    "advertised.listeners=PLAINTEXT://$adv,SASL_SSL://127.0.0.1:$sport"
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
    "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256"
    "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
    "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
    "ssl.keystore.type=PEM"
    "ssl.keystore.certificate.chain=$(pem "$dir/server.crt")"
    "ssl.keystore.key=$(pem "$dir/server.key")"
  )
  while read -r name pw; do
    [ -n "$name" ] || continue
    format_args+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$pw]"
      --add-scram "SCRAM-SHA-256=[name=$name,password=$pw]")
  done <"$dir/users"
}

port_arg() {
  [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 55535 ] || { log "not a port (1-55535): $1"; exit 2; }
}

owner=""
extra_config=()
metrics_base="" metrics_flag="" agent=""
format_args=()
node_id=1 voters_arg="" cluster_arg=""
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  install) install ;;
  run)
    [ $# -ge 1 ] || usage
    port=$1; shift; port_arg "$port"
    cport=$((port + 10000)) advertise="" data="" sasl_port="" sasl_dir=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --owner) owner=${2:?--owner needs a PID}; shift 2 ;;
        --controller-port) cport=${2:?--controller-port needs a port}; port_arg "$cport"; shift 2 ;;
        --advertise) advertise=${2:?--advertise needs HOST:PORT}; shift 2 ;;
        --data) data=${2:?--data needs a directory}; shift 2 ;;
        --node-id)
          node_id=${2:-}; [[ "$node_id" =~ ^[1-9][0-9]*$ ]] || { log "--node-id takes a number from 1: '$node_id'"; exit 2; }
          shift 2 ;;
        --voters)
          voters_arg=${2:-}
          [[ "$voters_arg" =~ ^[0-9]+@[^,@]+:[0-9]+(,[0-9]+@[^,@]+:[0-9]+)*$ ]] \
            || { log "--voters takes ID@HOST:PORT,...: '$voters_arg'"; exit 2; }
          shift 2 ;;
        --cluster-id) cluster_arg=${2:?--cluster-id needs an id}; shift 2 ;;
        --config)
          [[ "${2:-}" =~ ^[a-z0-9._-]+=.*$ ]] || { log "--config takes KEY=VALUE: '${2:-}'"; exit 2; }
          extra_config+=("$2"); shift 2 ;;
        --metrics-port) metrics_base=${2:?--metrics-port needs a port}; port_arg "$metrics_base"; shift 2 ;;
        --sasl-ssl)
          sasl_port=${2:?--sasl-ssl needs PORT DIR}; sasl_dir=${3:?--sasl-ssl needs PORT DIR}
          port_arg "$sasl_port"; shift 3 ;;
        *) usage ;;
      esac
    done
    [ -z "$metrics_base" ] || agent=$(metrics_agent)
    [ -z "$sasl_port" ] || sasl_ssl "$sasl_port" "$sasl_dir" "$port" "$cport" "$advertise"
    if [ -n "$voters_arg" ]; then
      grep -qE "(^|,)$node_id@127\.0\.0\.1:$cport(,|$)" <<<"$voters_arg" \
        || { log "--voters must name this node as $node_id@127.0.0.1:$cport: '$voters_arg'"; exit 2; }
      [ -n "$data" ] && [ -n "$cluster_arg" ] \
        || { log "a node of a cluster (--voters) needs --data and --cluster-id"; exit 2; }
    fi
    run_nodes 1 "$port" "$cport" "$advertise" "$data"
    ;;
  cluster)
    [ $# -ge 2 ] || usage
    n=$1 base=$2; shift 2; port_arg "$base"
    [[ "$n" =~ ^[1-9]$ ]] || { log "N is 1 to 9: $n"; exit 2; }
    data=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --owner) owner=${2:?--owner needs a PID}; shift 2 ;;
        --data) data=${2:?--data needs a directory}; shift 2 ;;
        --metrics-port) metrics_base=${2:?--metrics-port needs a port}; port_arg "$metrics_base"; shift 2 ;;
        *) usage ;;
      esac
    done
    [ -z "$metrics_base" ] || agent=$(metrics_agent)
    run_nodes "$n" "$base" "$((base + 10000))" "" "$data"
    ;;
  *) usage ;;
esac
