#!/usr/bin/env bash
# token-api benchmark: tokens/s over HTTP and p50/p99 at 64 connections, against the bare
# actix-web handler (reads the same body, answers 200), all in one run on this machine.
# token-api three times: STRICT_CATALOG=off (sign only) and on (the default: one catalog read per
# video), both at RUST_LOG=warn; and off at RUST_LOG=info, where every token writes its audit line
# (through the non-blocking writer, to a file): what the audit costs.
#
#   bench/token.sh            DURATION=10 (seconds per run) by default
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
duration="${DURATION:-10}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
scripts/postgres.sh
psql -h 127.0.0.1 -U postgres -qc 'DROP DATABASE IF EXISTS kollus_bench_token WITH (FORCE)'
psql -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE kollus_bench_token'
cargo build --release --locked -q -p kollus-token-api -p kollus-bench

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on $1" >&2; exit 1; }

off_port=$(port); on_port=$(port); bare_port=$(port); audit_port=$(port)
# token-api's key files (README "The access record"), fresh for this run.
keys_dir=$(mktemp -d)
for k in ACCESS_LOG_KEY_FILE SUBJECT_TAG_KEY_FILE ARCHIVE_KEK_FILE; do
  (umask 077; head -c 32 /dev/urandom | base64 > "$keys_dir/$k"); export "$k=$keys_dir/$k"
done
common=(env DATABASE_URL=postgres://postgres@127.0.0.1:5432/kollus_bench_token KOLLUS_SECURITY_KEY=bench-security-key
  KOLLUS_CUSTOM_KEY=bench-custom-key TOKEN_API_KEYS=bench:bench-api-key-0123456789 LOG_FORMAT=json RUST_LOG=warn)
"${common[@]}" LISTEN_ADDR=127.0.0.1:$off_port STRICT_CATALOG=off "$target/token-api" & pids+=($!)
wait_port "$off_port"   # it has run the migrations now
"${common[@]}" LISTEN_ADDR=127.0.0.1:$on_port STRICT_CATALOG=on "$target/token-api" & pids+=($!)
"$target/bare-handler" "127.0.0.1:$bare_port" & pids+=($!)
"${common[@]}" RUST_LOG=info LISTEN_ADDR=127.0.0.1:$audit_port STRICT_CATALOG=off \
  "$target/token-api" 2>"$work/audit.log" & pids+=($!)
wait_port "$on_port"; wait_port "$bare_port"; wait_port "$audit_port"
# The video is in the catalog and playable, so strict mode issues.
psql -h 127.0.0.1 -U postgres -d kollus_bench_token -q <<'SQL'
INSERT INTO uploads (upload_file_key, first_event_at, last_event_at) VALUES ('ufk-bench', now(), now());
INSERT INTO media_contents VALUES ('vnCVPVyV', 'ufk-bench', now(), now());
INSERT INTO channel_memberships (media_content_key, channel_key, in_channel, decided_at, decided_by)
VALUES ('vnCVPVyV', 'ch-main', true, now(), gen_random_uuid());
SQL

body="$work/request.json"
cat >"$body" <<'JSON'
{"client_user_id":"181353","media":[{"media_content_key":"vnCVPVyV","profile_key":"pc-high","seek":true,"seekable_end":-1,"play_section":{"start":0,"end":600}}],"expires_in":3600,"uservalues":{"uservalue0":"production","uservalue1":"course-42"},"player":{"autoplay":true,"t":120}}
JSON
# Every request must be a 201 (or 200 for the bare handler): check one of each first.
for p in "$off_port" "$on_port" "$audit_port"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer bench-api-key-0123456789' \
    -H 'Content-Type: application/json' --data-binary @"$body" "http://127.0.0.1:$p/v1/playback-tokens")
  [ "$code" = 201 ] || { echo "token-api on $p answered $code" >&2; exit 1; }
done

run() { # name url
  BODY_FILE="$body" CONTENT_TYPE=application/json AUTH="Bearer bench-api-key-0123456789" \
    wrk -t2 -c64 -d"${duration}s" --latency -s bench/post.lua "$2" | grep '^RESULT' | sed "s/^RESULT/$1 c=64/"
}
results="$work/results"
for name in bare token-strict-off token-strict-on token-audit-log; do
  case $name in
    token-audit-log) url="http://127.0.0.1:$audit_port/v1/playback-tokens" ;;
    bare) url="http://127.0.0.1:$bare_port/v1/playback-tokens" ;;
    token-strict-off) url="http://127.0.0.1:$off_port/v1/playback-tokens" ;;
    token-strict-on) url="http://127.0.0.1:$on_port/v1/playback-tokens" ;;
  esac
  BODY_FILE="$body" CONTENT_TYPE=application/json AUTH="Bearer bench-api-key-0123456789" wrk -t1 -c8 -d2s -s bench/post.lua "$url" >/dev/null
  run "$name" "$url" | tee -a "$results"
done

echo
rps() { sed -n "s/^$1 c=64 rps=\([0-9]*\).*/\1/p" "$results"; }
errors() { sed -n "s/^$1 c=64 .*errors=\([0-9]*\).*/\1/p" "$results"; }
bare=$(rps bare)
for name in token-strict-off token-strict-on token-audit-log; do
  echo "$name / bare: $(python3 -c "print(f'{$(rps $name)/$bare:.2f}')") (non-2xx or socket errors: $(errors $name))"
done
echo "the per-token audit line (RUST_LOG=info, non-blocking writer): $(python3 -c "print(f'{$(rps token-audit-log)/$(rps token-strict-off):.2f}')") of the rate without it; $(grep -c 'playback token issued' "$work/audit.log" || true) lines written"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(free -g | awk '/Mem:/{print $2}') GiB; wrk -t2; wrk, server and PostgreSQL share the cores"
