#!/usr/bin/env bash
# `make test`: every tier (unit, integration, end-to-end) against a real PostgreSQL and a real
# Kafka-protocol broker, plus the docker-compose.yml check. Installs what is missing first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"

scripts/broker.sh install
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

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
else
  cargo test --locked --workspace --no-fail-fast
fi

# token-api against its own OpenAPI document, by a third-party fuzzer.
scripts/schemathesis.sh "$target/debug"

