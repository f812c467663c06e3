#!/usr/bin/env bash
# `make run`: the whole pipeline on this machine, in the foreground, logs prefixed by service.
# Ctrl-C stops everything. Settings given in the environment (README "Settings") win over the
# development defaults below; KAFKA_BROKERS or DATABASE_URL from outside replace the local ones.
#
# Kafka is Apache Kafka (KRaft) from scripts/kafka.sh, kept on disk so that a restart keeps the
# topics and the groups' committed offsets (remove the directory to start empty):
#   KAFKA_NODES=1 (default)  one node: broker 127.0.0.1:9092, controller 19092, .local/kafka/run
#   KAFKA_NODES=N (2 to 9)   one cluster: brokers 127.0.0.1:9092.., controllers 19092..,
#                            .local/kafka/node1..N; the services get KAFKA_REPLICATION_FACTOR=min(N, 3)
# Each node serves its metrics (the JMX exporter, `kafka.sh --metrics-port`) on 127.0.0.1:9404..,
# which the local Prometheus scrapes as job kafka.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

profile_flag=""; profile_dir=debug
if [ "${PROFILE:-debug}" = release ]; then profile_flag=--release; profile_dir=release; fi
bin="${CARGO_TARGET_DIR:-$root/target}/$profile_dir"

# Development defaults, never fit for production. Only those used are printed below: a secret
# given in the environment is never echoed.
dev_secrets=()
dev_default() { # NAME VALUE: export VALUE unless NAME is set already, and remember it
  if [ -z "${!1:-}" ]; then export "$1=$2"; dev_secrets+=("$1"); fi
}
# Three callback secrets, one per trust level (README "Callback secrets"): the platform
# callbacks', the play and DRM callbacks', and the LMS URL's (public).
dev_default CALLBACK_SECRET dev-callback-secret
dev_default PLAY_CALLBACK_SECRET dev-play-callback-secret
dev_default LMS_CALLBACK_SECRET dev-lms-callback-secret
# Viewer binding (README "Viewer binding"): player URLs carry a MAC of their user; `record`.
dev_default PLAYER_BINDING_KEY dev-player-binding-key
dev_default KOLLUS_SECURITY_KEY dev-security-key-change-me
dev_default KOLLUS_CUSTOM_KEY dev-custom-key
# `dev` may call every API; `support` may sign in to the support console only.
dev_console_key=dev-console-key-0123456789
dev_default TOKEN_API_KEYS "dev:dev-api-key-0123456789,support[console]:$dev_console_key"
# The key the shared fixtures' LMS hashes were made with, so the walk-through's reports verify.
dev_default KOLLUS_SERVICE_ACCOUNT_KEY fixture-service-account-key
# token-api's key files (README "The access record"): made once under .local/dev-keys and kept,
# so the access log's chain verifies across runs.
dev_key_file() { # NAME FILE: export NAME=FILE unless NAME is set, making FILE when missing
  if [ -z "${!1:-}" ]; then
    if [ ! -s "$2" ]; then
      mkdir -p "$(dirname "$2")"; (umask 077; head -c 32 /dev/urandom | base64 > "$2")
    fi
    export "$1=$2"
  fi
}
dev_key_file ACCESS_LOG_KEY_FILE "$root/.local/dev-keys/access-log.key"
dev_key_file SUBJECT_TAG_KEY_FILE "$root/.local/dev-keys/subject-tag.key"
dev_key_file ARCHIVE_KEK_FILE "$root/.local/dev-keys/archive-kek.key"
# The console's cookie over plain HTTP on this machine (production serves it over HTTPS).
export CONSOLE_INSECURE_COOKIE="${CONSOLE_INSECURE_COOKIE:-1}"
export LOG_FORMAT="${LOG_FORMAT:-text}"
export INGEST_SPOOL_DIR="${INGEST_SPOOL_DIR:-$root/.local/ingest-spool}"
export ARCHIVE_DIR="${ARCHIVE_DIR:-$root/.local/archive}"

# Unset, DATABASE_URL is the services' default: the local PostgreSQL's database `kollus`.
[ -n "${DATABASE_URL:-}" ] || scripts/postgres.sh kollus
local_broker=
if [ -z "${KAFKA_BROKERS:-}" ]; then
  kafka_nodes="${KAFKA_NODES:-1}"
  if ! [[ "$kafka_nodes" =~ ^[1-9]$ ]]; then
    echo "run: KAFKA_NODES is the number of local Kafka nodes, 1 to 9 (1 by default, 3 for a cluster that keeps three copies): not '$kafka_nodes'" >&2
    exit 2
  fi
  # Every node's broker and controller port, all of which must be free.
  kafka_ports=() kafka_addrs=() kafka_metrics=()
  for ((i = 0; i < kafka_nodes; i++)); do
    kafka_ports+=($((9092 + i)) $((19092 + i)) $((9404 + i))); kafka_addrs+=("127.0.0.1:$((9092 + i))")
    kafka_metrics+=("127.0.0.1:$((9404 + i))")
  done
  if [ "$kafka_nodes" = 1 ]; then
    kafka_data=.local/kafka/run
    kafka_cmd=(scripts/kafka.sh run 9092 --data "$kafka_data" --owner $$ --metrics-port 9404)
  else
    kafka_data=.local/kafka
    kafka_cmd=(scripts/kafka.sh cluster "$kafka_nodes" 9092 --data "$kafka_data" --owner $$ --metrics-port 9404)
    # A cluster's voters are fixed when its nodes are formatted: the data of another node count
    # cannot be reused.
    formatted=0
    for meta in .local/kafka/node[1-9]/data/meta.properties; do
      [ ! -f "$meta" ] || formatted=$((formatted + 1))
    done
    if [ "$formatted" != 0 ] && [ "$formatted" != "$kafka_nodes" ]; then
      echo "run: .local/kafka/node* hold a cluster of $formatted nodes, not $kafka_nodes: run with KAFKA_NODES=$formatted, or remove .local/kafka/node[1-9] (their topics and offsets) to start a new one" >&2
      exit 2
    fi
  fi
  # Topics as replicated as the cluster allows, up to three copies; the min ISR is left to the
  # services' default, max(1, RF-1), so that one node may be down.
  export KAFKA_REPLICATION_FACTOR="${KAFKA_REPLICATION_FACTOR:-$((kafka_nodes < 3 ? kafka_nodes : 3))}"
  if ! [[ "$KAFKA_REPLICATION_FACTOR" =~ ^[0-9]+$ ]] || [ "$KAFKA_REPLICATION_FACTOR" -lt 1 ] \
    || [ "$KAFKA_REPLICATION_FACTOR" -gt "$kafka_nodes" ]; then
    echo "run: KAFKA_REPLICATION_FACTOR=$KAFKA_REPLICATION_FACTOR: with KAFKA_NODES=$kafka_nodes it is 1 to $kafka_nodes (a copy per node at most)" >&2
    exit 2
  fi
  scripts/kafka.sh install
  local_broker=1
  KAFKA_BROKERS=$(IFS=,; echo "${kafka_addrs[*]}")
  kafka_where=$kafka_data
  [ "$kafka_nodes" = 1 ] || kafka_where=".local/kafka/node[1-$kafka_nodes]"
  export KAFKA_BROKERS
elif [ -n "${KAFKA_NODES:-}" ]; then
  echo "run: KAFKA_NODES is ignored: KAFKA_BROKERS names the brokers to use" >&2
fi

echo "run: building the services ($profile_dir)" >&2
cargo build --locked --workspace --bins $profile_flag

# The default of the setting read from NAME, from BINARY's own --help (the one place it is
# written): default_of NAME BINARY [SUBCOMMAND].
default_of() {
  local name=$1 value; shift
  value=$(env -u "$name" "$@" --help | sed -n "/\[env: $name[]=]/{n;s/^ *\[default: \(.*\)\]\$/\1/p;}")
  [ -n "$value" ] || { echo "run: $* --help shows no default for $name" >&2; return 1; }
  echo "$value"
}
# Where each service listens: its LISTEN_ADDR default unless <SERVICE>_LISTEN_ADDR says otherwise.
ingest_addr="${INGEST_LISTEN_ADDR:-$(default_of LISTEN_ADDR "$bin/ingest")}"
token_addr="${TOKEN_API_LISTEN_ADDR:-$(default_of LISTEN_ADDR "$bin/token-api")}"
sync_addr="${SYNC_WORKER_LISTEN_ADDR:-$(default_of LISTEN_ADDR "$bin/sync-worker")}"
history_addr="${HISTORY_WORKER_LISTEN_ADDR:-$(default_of LISTEN_ADDR "$bin/history-worker")}"
archive_addr="${ARCHIVE_LISTEN_ADDR:-$(default_of LISTEN_ADDR "$bin/kollus-archive" dump)}"
database_url="${DATABASE_URL:-$(default_of DATABASE_URL "$bin/token-api")}"
retention_days="${KAFKA_RETENTION_DAYS:-$(default_of KAFKA_RETENTION_DAYS "$bin/ingest")}"
stack_started=$SECONDS

pids=() kafka_pid= kafka_out=
alive() { local pid; for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
stop() {
  # A second Ctrl-C while stopping does not leave Kafka or a service behind.
  trap '' INT TERM; trap - EXIT
  echo "run: stopping" >&2
  # The services first, while Kafka is still up to take their last commits (at most 15 s), then
  # Kafka, with a controlled shutdown.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 150); do alive "${pids[@]}" || break; sleep 0.1; done
  if [ -n "$kafka_pid" ]; then
    kill "$kafka_pid" 2>/dev/null || true
    for _ in $(seq 1 600); do alive "$kafka_pid" || break; sleep 0.1; done
    # kafka.sh kills what outlives KAFKA_STOP_TIMEOUT; if even it is stuck, so is nothing here.
    alive "$kafka_pid" && kill -KILL "$kafka_pid" 2>/dev/null
  fi
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$kafka_out" ] || rm -f "$kafka_out"
}
# A signal stops everything and ends the script (it must not go on where it was interrupted).
trap 'stop; exit 130' INT TERM
trap stop EXIT

# Starts "$@" with its output prefixed by [name] (and copied to $START_COPY when set); remembers
# the service's own pid in pids and in $started.
start() {
  local name=$1; shift
  local pidfile; pidfile=$(mktemp)
  if [ -n "${START_COPY:-}" ]; then
    { "$@" 2>&1 & echo $! >"$pidfile"; wait; } | tee -a "$START_COPY" | sed -u "s/^/[$name] /" &
  else
    { "$@" 2>&1 & echo $! >"$pidfile"; wait; } | sed -u "s/^/[$name] /" &
  fi
  for _ in $(seq 1 50); do [ -s "$pidfile" ] && break; sleep 0.02; done
  started=$(cat "$pidfile"); rm -f "$pidfile"
  pids+=("$started")
}

wait_port() {
  for _ in $(seq 1 200); do
    (echo >"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run: nothing answers on $1" >&2; return 1
}

if [ -n "$local_broker" ]; then
  for port in "${kafka_ports[@]}"; do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "run: 127.0.0.1:$port is taken (Kafka's ports: ${kafka_ports[*]}); stop what uses it, or set KAFKA_BROKERS" >&2; exit 1
    fi
  done
  echo "run: starting Apache Kafka, $kafka_nodes node(s) on $KAFKA_BROKERS, data in $kafka_where" >&2
  kafka_started=$SECONDS
  kafka_out=$(mktemp)
  START_COPY=$kafka_out start kafka "${kafka_cmd[@]}"
  # Kafka is stopped last (stop), not with the services.
  kafka_pid=$started; unset 'pids[-1]'
  # kafka.sh says `ready` once every node answers a metadata request; it exits if one does not
  # within KAFKA_START_TIMEOUT (120 s), printing that node's log.
  until grep -qx ready "$kafka_out"; do
    alive "$kafka_pid" || { echo "run: Kafka did not start (its log is above)" >&2; exit 1; }
    sleep 0.2
  done
  echo "run: Kafka is ready after $((SECONDS - kafka_started)) s" >&2
fi
prometheus_addr="${PROMETHEUS_ADDR:-127.0.0.1:9090}"
if [ "${PROMETHEUS:-on}" != off ]; then
  scripts/prometheus.sh install
  # The local brokers' metrics (none when KAFKA_BROKERS names brokers of elsewhere).
  KAFKA=$([ -z "$local_broker" ] || (IFS=,; echo "${kafka_metrics[*]}")) \
  INGEST=$ingest_addr TOKEN_API=$token_addr SYNC_WORKER=$sync_addr HISTORY_WORKER=$history_addr ARCHIVE=$archive_addr \
    PROMETHEUS_ADDR=$prometheus_addr start prometheus scripts/prometheus.sh run "$root/.local/prometheus"
fi
LISTEN_ADDR=$ingest_addr start ingest "$bin/ingest"
# token-api takes the play secret only, as in production: the platform secret stays with ingest.
LISTEN_ADDR=$token_addr start token-api env -u CALLBACK_SECRET "$bin/token-api"
LISTEN_ADDR=$sync_addr start sync-worker "$bin/sync-worker"
LISTEN_ADDR=$history_addr start history-worker "$bin/history-worker"
# dump seals records naming a user with the dev keys above (SUBJECT_TAG_KEY_FILE, ARCHIVE_KEK_FILE);
# their keys go to $ARCHIVE_DIR/keys, where token-api's export reads them.
LISTEN_ADDR=$archive_addr start archive "$bin/kollus-archive" dump
wait_port "$ingest_addr"; wait_port "$token_addr"

kafka_note=
if [ -n "$local_broker" ]; then
  kafka_note="                  Apache Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml) (KRaft), $kafka_nodes node(s), KAFKA_REPLICATION_FACTOR=$KAFKA_REPLICATION_FACTOR
                  broker metrics http://${kafka_metrics[0]}/metrics$([ "$kafka_nodes" = 1 ] || echo " .. ${kafka_metrics[-1]}") (scraped by Prometheus as job kafka)
                  data kept across runs in $kafka_where (rm -rf $kafka_where to start empty)
"
fi
# The console's key, and the development defaults in use (never a value from the environment).
console_hint="sign in with a key from TOKEN_API_KEYS that has the console scope"
dev_lines=
for name in "${dev_secrets[@]}"; do
  [ "$name" = TOKEN_API_KEYS ] && console_hint="sign in with the development key $dev_console_key"
  dev_lines+="${dev_lines:+$'\n'                  }$name=${!name}"
done
cat >&2 <<MSG

run: the pipeline is up in $((SECONDS - stack_started)) s (Ctrl-C stops it)
  ingest          http://$ingest_addr/kollus/{upload,transcoding,content,channel}?secret=\$CALLBACK_SECRET
                  http://$ingest_addr/kollus/lms?secret=\$LMS_CALLBACK_SECRET   (players' LMS reports)
  token-api       http://$token_addr/v1/playback-tokens   (Authorization: Bearer <key>)
                  http://$token_addr/kollus/{play,drm}?secret=\$PLAY_CALLBACK_SECRET   (Kollus's play and DRM callbacks)
  console         http://$token_addr/console/   ($console_hint)
  sync-worker     http://$sync_addr/metrics
  history-worker  http://$history_addr/metrics
  archive         http://$archive_addr/metrics   (every record, outside Kafka: $ARCHIVE_DIR)
  Prometheus      $([ "${PROMETHEUS:-on}" != off ] && echo "http://$prometheus_addr  (alerts: http://$prometheus_addr/classic/alerts, the page Debian's package serves; PROMETHEUS=off skips it)" || echo "off (PROMETHEUS=off)")
  Kafka           $KAFKA_BROKERS   (topics keep records KAFKA_RETENTION_DAYS=$retention_days days; the archive keeps them all)
${kafka_note}  binaries        $bin/{ingest,sync-worker,history-worker,token-api,kollus-archive}
  ingest spool    $INGEST_SPOOL_DIR
  PostgreSQL      $(echo "$database_url" | sed -E 's#//[^:@/]+:[^@]*@#//***@#')
  dev secrets     ${dev_lines:-none printed: every secret came from the environment}

MSG
# Stop everything as soon as any one service exits.
wait -n
echo "run: a service or Kafka exited; stopping the rest" >&2
exit 1
