#!/usr/bin/env bash
# `make run`: the whole pipeline on this machine, in the foreground, logs prefixed by service.
# Ctrl-C stops everything. Settings given in the environment (README "Settings") win over the
# development defaults below; KAFKA_BROKERS or DATABASE_URL from outside replace the local ones.
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
# The console's cookie over plain HTTP on this machine (production serves it over HTTPS).
export CONSOLE_INSECURE_COOKIE="${CONSOLE_INSECURE_COOKIE:-1}"
export LOG_FORMAT="${LOG_FORMAT:-text}"
export INGEST_SPOOL_DIR="${INGEST_SPOOL_DIR:-$root/.local/ingest-spool}"
ingest_addr="${INGEST_LISTEN_ADDR:-127.0.0.1:8080}"
token_addr="${TOKEN_API_LISTEN_ADDR:-127.0.0.1:8081}"
sync_addr="${SYNC_WORKER_LISTEN_ADDR:-127.0.0.1:9101}"
history_addr="${HISTORY_WORKER_LISTEN_ADDR:-127.0.0.1:9102}"
archive_addr="${ARCHIVE_LISTEN_ADDR:-127.0.0.1:9103}"
export ARCHIVE_DIR="${ARCHIVE_DIR:-$root/.local/archive}"

if [ -z "${DATABASE_URL:-}" ]; then
  scripts/postgres.sh kollus
  export DATABASE_URL=postgres://postgres@127.0.0.1:5432/kollus
fi
local_broker=
if [ -z "${KAFKA_BROKERS:-}" ]; then
  scripts/broker.sh install
  local_broker=1
  export KAFKA_BROKERS=127.0.0.1:9092
fi

echo "run: building the services ($profile_dir)" >&2
cargo build --locked --workspace --bins $profile_flag

pids=()
stop() {
  trap - INT TERM EXIT
  echo "run: stopping" >&2
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# Starts "$@" with its output prefixed by [name]; remembers the service's own pid.
start() {
  local name=$1; shift
  local pidfile; pidfile=$(mktemp)
  { "$@" 2>&1 & echo $! >"$pidfile"; wait; } | sed -u "s/^/[$name] /" &
  for _ in $(seq 1 50); do [ -s "$pidfile" ] && break; sleep 0.02; done
  pids+=("$(cat "$pidfile")"); rm -f "$pidfile"
}

wait_port() {
  for _ in $(seq 1 200); do
    (echo >"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run: nothing answers on $1" >&2; return 1
}

if [ -n "$local_broker" ]; then
  if (echo >/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
    echo "run: 127.0.0.1:9092 is taken; stop what uses it, or set KAFKA_BROKERS" >&2; exit 1
  fi
  start broker scripts/broker.sh run 9092
  wait_port 127.0.0.1:9092
fi
prometheus_addr="${PROMETHEUS_ADDR:-127.0.0.1:9090}"
if [ "${PROMETHEUS:-on}" != off ]; then
  scripts/prometheus.sh install
  INGEST=$ingest_addr TOKEN_API=$token_addr SYNC_WORKER=$sync_addr HISTORY_WORKER=$history_addr ARCHIVE=$archive_addr \
    PROMETHEUS_ADDR=$prometheus_addr start prometheus scripts/prometheus.sh run "$root/.local/prometheus"
fi
LISTEN_ADDR=$ingest_addr start ingest "$bin/ingest"
# token-api takes the play secret only, as in production: the platform secret stays with ingest.
LISTEN_ADDR=$token_addr start token-api env -u CALLBACK_SECRET "$bin/token-api"
LISTEN_ADDR=$sync_addr start sync-worker "$bin/sync-worker"
LISTEN_ADDR=$history_addr start history-worker "$bin/history-worker"
LISTEN_ADDR=$archive_addr start archive "$bin/kollus-archive" dump
wait_port "$ingest_addr"; wait_port "$token_addr"

# The console's key, and the development defaults in use (never a value from the environment).
console_hint="sign in with a key from TOKEN_API_KEYS that has the console scope"
dev_lines=
for name in "${dev_secrets[@]}"; do
  [ "$name" = TOKEN_API_KEYS ] && console_hint="sign in with the development key $dev_console_key"
  dev_lines+="${dev_lines:+$'\n'                  }$name=${!name}"
done
cat >&2 <<MSG

run: the pipeline is up (Ctrl-C stops it)
  ingest          http://$ingest_addr/kollus/{upload,transcoding,content,channel}?secret=\$CALLBACK_SECRET
                  http://$ingest_addr/kollus/lms?secret=\$LMS_CALLBACK_SECRET   (players' LMS reports)
  token-api       http://$token_addr/v1/playback-tokens   (Authorization: Bearer <key>)
                  http://$token_addr/kollus/{play,drm}?secret=\$PLAY_CALLBACK_SECRET   (Kollus's play and DRM callbacks)
  console         http://$token_addr/console/   ($console_hint)
  sync-worker     http://$sync_addr/metrics
  history-worker  http://$history_addr/metrics
  archive         http://$archive_addr/metrics   (every record, outside Kafka: $ARCHIVE_DIR)
  Prometheus      $([ "${PROMETHEUS:-on}" != off ] && echo "http://$prometheus_addr  (alerts: http://$prometheus_addr/classic/alerts, the page Debian's package serves; PROMETHEUS=off skips it)" || echo "off (PROMETHEUS=off)")
  Kafka           $KAFKA_BROKERS   (topics keep records KAFKA_RETENTION_DAYS=${KAFKA_RETENTION_DAYS:-14} days; the archive keeps them all)
  binaries        $bin/{ingest,sync-worker,history-worker,token-api,kollus-archive}
  ingest spool    $INGEST_SPOOL_DIR
  PostgreSQL      $(echo "$DATABASE_URL" | sed -E 's#//[^:@/]+:[^@]*@#//***@#')
  dev secrets     ${dev_lines:-none printed: every secret came from the environment}

MSG
# Stop everything as soon as any one service exits.
wait -n
echo "run: a service exited; stopping the rest" >&2
exit 1
