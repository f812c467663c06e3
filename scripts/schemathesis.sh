#!/usr/bin/env bash
# schemathesis (PyPI) against token-api's served openapi.json, with token-api/schemathesis.toml:
# no 5xx, every answer in the document, every request the document allows accepted.
# Installs schemathesis into .local/ when missing; runs token-api on a fresh database, with no
# Kafka (erasures wait in their outbox; librdkafka's "all brokers down" is not logged).
#
#   scripts/schemathesis.sh [BIN_DIR]     BIN_DIR: where token-api was built (target/debug)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin_dir=${1:-${CARGO_TARGET_DIR:-$root/target}/debug}
[ -x "$bin_dir/token-api" ] || { echo "schemathesis: $bin_dir/token-api is missing: build it first" >&2; exit 1; }
venv="$root/.local/schemathesis-venv"
pkg="schemathesis==4.32.5"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "4.32.5"; then
  echo "schemathesis: installing $pkg into .local/" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$pkg"
fi

scripts/postgres.sh >/dev/null
db=kollus_schemathesis
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key=schemathesis-api-key-0123456789
# token-api's key files (README "The access record"), fresh for this run.
keys_dir=$(mktemp -d)
for k in ACCESS_LOG_KEY_FILE SUBJECT_TAG_KEY_FILE ARCHIVE_KEK_FILE; do
  (umask 077; head -c 32 /dev/urandom | base64 > "$keys_dir/$k"); export "$k=$keys_dir/$k"
done
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db KOLLUS_SECURITY_KEY=schemathesis-security-key \
  KOLLUS_CUSTOM_KEY=schemathesis-custom-key TOKEN_API_KEYS="schemathesis[tokens+tokens:playcallback_ignore+read+entitlements+export+audit+erase]:$key" \
  PLAY_CALLBACK_SECRET=schemathesis-play-callback-secret AUTH_FAILURES_PER_MINUTE=0 \
  LISTEN_ADDR=127.0.0.1:$port RUST_LOG=error,rdkafka::client=off "$bin_dir/token-api" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
TOKEN_API_KEY=$key PLAY_CALLBACK_SECRET=schemathesis-play-callback-secret "$venv/bin/schemathesis" --no-color --config-file token-api/schemathesis.toml \
  run "http://127.0.0.1:$port/openapi.json" --generation-deterministic
