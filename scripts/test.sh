#!/usr/bin/env bash
# `make test`: every tier (unit, integration, end-to-end) against a real PostgreSQL and Apache
# Kafka, plus the docker-compose.yml check. Installs what is missing first.
set -euo pipefail
# A step that fails says which; a silent exit 1 cannot be told from anything else.
trap 'echo "test: scripts/test.sh line $LINENO failed: $BASH_COMMAND" >&2' ERR
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"

scripts/kafka.sh install
scripts/s3.sh install
scripts/postgres.sh

if ! command -v docker-compose >/dev/null 2>&1 || ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
  echo "test: installing docker-compose (a Compose parser; no engine needed)" >&2
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi

# Prometheus rules: promtool (Debian's prometheus package) checks them and runs their unit tests.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "test: installing prometheus (promtool; the live dashboard test runs a real Prometheus)" >&2
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The console's browser test (token-api/tests/api/browser.rs): headless Chromium over WebDriver,
# and a Korean font so the console's default language shows in its screenshots.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
  || ! fc-list : family 2>/dev/null | grep -i nanum >/dev/null; then
  echo "test: installing chromium, chromium-driver and fonts-nanum (the console's browser test)" >&2
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-nanum >/dev/null
fi

# PyJWT, another implementation, decodes our tokens (token-api/tests/api/player_options.rs).
pyjwt_venv=.local/pyjwt-venv
if ! "$pyjwt_venv/bin/python" -c 'import jwt' 2>/dev/null; then
  echo "test: installing PyJWT into $pyjwt_venv" >&2
  python3 -m venv "$pyjwt_venv"
  "$pyjwt_venv/bin/pip" install --quiet --disable-pip-version-check 'PyJWT==2.15.1'
fi

promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/rules/*.yml
(cd deploy/prometheus/rules/tests && promtool test rules *.yml)

# The end-to-end tests run the real binaries: build them (and the tests) first.
cargo build --locked --workspace --bins --tests
scripts/check-compose.py "$target/debug"

# One broker for every test (each names topics and groups of its own); a test that needs a
# broker of its own starts one (test-support/src/broker.rs). It starts while nothing else
# loads the machine, and stops with this script.
kafka_port=${KAFKA_TEST_PORT:-19392}
# A broker already there (another `make test`) would be taken for ours: refuse instead.
for port in "$kafka_port" "$((kafka_port + 1))"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "test: 127.0.0.1:$port is taken (another make test?); set KAFKA_TEST_PORT to another port" >&2
    exit 1
  fi
done
kafka_log="$target/kafka-test.log"
KAFKA_JVM_OPTS=-XX:TieredStopAtLevel=1 scripts/kafka.sh run "$kafka_port" \
  --controller-port "$((kafka_port + 1))" --owner $$ 2>"$kafka_log" &
kafka_pid=$!
trap 'kill -TERM "$kafka_pid" 2>/dev/null; wait "$kafka_pid" 2>/dev/null || true' EXIT
until grep -qx ready "$kafka_log" 2>/dev/null; do
  if ! kill -0 "$kafka_pid" 2>/dev/null; then
    echo "test: the shared Kafka broker did not start:" >&2
    cat "$kafka_log" >&2
    exit 1
  fi
  sleep 0.2
done
grep '^kafka: Apache Kafka' "$kafka_log" >&2
export KAFKA_TEST_BROKERS="127.0.0.1:$kafka_port"
# Each broker a test starts for itself appends "port seconds" here; summed after the tests.
export KAFKA_TEST_START_LOG="$target/kafka-test-starts.log"
: >"$KAFKA_TEST_START_LOG"
brokers_of_their_own() {
  awk '{ n++; s += $2 } END { if (n) printf "test: %d brokers of their own started, %.1f s of starts in all\n", n, s }' \
    "$KAFKA_TEST_START_LOG" >&2
}

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast || status=$?
else
  cargo test --locked --workspace --no-fail-fast || status=$?
fi
brokers_of_their_own
[ "$status" = 0 ] || exit "$status"

# token-api against its own OpenAPI document, by a third-party fuzzer.
scripts/schemathesis.sh "$target/debug"

