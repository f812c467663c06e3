#!/usr/bin/env bash
# Playback authorization benchmark: Kollus play callbacks (kind 1) answered by token-api at a
# steady 2,000/s (open loop: latency counted from each request's scheduled time), against
# 10,000 users holding media or channel entitlements and watch progress; callbacks/s and p99.
# Beside bench/token.sh; the aim is p99 under 20 ms at 2,000/s.
#
#   bench/play.sh [RATE [SECONDS]]     defaults: 2000 20
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rate="${1:-2000}"
seconds="${2:-20}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

scripts/postgres.sh
db=kollus_bench_play
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
cargo build --release --locked -q -p kollus-token-api -p kollus-bench

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# token-api's key files (README "The access record"), fresh for this run.
keys_dir=$(mktemp -d)
for k in ACCESS_LOG_KEY_FILE SUBJECT_TAG_KEY_FILE ARCHIVE_KEK_FILE; do
  (umask 077; head -c 32 /dev/urandom | base64 > "$keys_dir/$k"); export "$k=$keys_dir/$k"
done
env DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db KOLLUS_SECURITY_KEY=bench-security-key \
  KOLLUS_CUSTOM_KEY=bench-custom-key TOKEN_API_KEYS=bench:bench-api-key-0123456789 \
  PLAY_CALLBACK_SECRET=bench-play-callback-secret LOG_FORMAT=json RUST_LOG=warn LISTEN_ADDR=127.0.0.1:$port \
  "$target/token-api" & pids+=($!)
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

# 10 videos in one channel; 10,000 users: even ones hold a grant on each video (with an
# allowance, some of it used), odd ones a channel grant; every tenth user has watched nothing.
psql -h 127.0.0.1 -U postgres -d $db -q <<'SQL'
INSERT INTO uploads (upload_file_key, first_event_at, last_event_at)
SELECT 'bench-u-' || m, now(), now() FROM generate_series(0, 9) m;
INSERT INTO media_contents SELECT 'bench-m' || m, 'bench-u-' || m, now(), now() FROM generate_series(0, 9) m;
INSERT INTO channel_memberships (media_content_key, channel_key, in_channel, decided_at, decided_by)
SELECT 'bench-m' || m, 'bench-ch', true, now(), gen_random_uuid() FROM generate_series(0, 9) m;
INSERT INTO entitlements (client_user_id, scope, target, expires_at, playtime_limit_seconds, download,
                          download_limit, granted_by, granted_at)
SELECT 'bench-u' || u, 'media', 'bench-m' || m, now() + interval '30 days', 7200, false, NULL, 'bench', now()
FROM generate_series(0, 9998, 2) u, generate_series(0, 9) m;
INSERT INTO entitlements (client_user_id, scope, target, expires_at, playtime_limit_seconds, download,
                          download_limit, granted_by, granted_at)
SELECT 'bench-u' || u, 'channel', 'bench-ch', NULL, NULL, true, 3, 'bench', now()
FROM generate_series(1, 9999, 2) u;
-- Three sessions per (user, video) watched: the play callback sums them (watch_progress is a view).
INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, playtime, real_playtime,
                            blocks_played, first_report_at, last_report_at)
SELECT 'bench-u' || u, 'bench-m' || m, 1700000000 + s * 86400, (u * 7) % 2400, (u * 7) % 2400,
       array_fill(true, ARRAY[30]), now(), now()
FROM generate_series(0, 9999) u, generate_series(0, 9) m, generate_series(0, 2) s WHERE u % 10 <> 0;
ANALYZE;
SQL

mkdir -p "$root/.local/bench"
url="http://127.0.0.1:$port/kollus/play?secret=bench-play-callback-secret"
code=$(curl -s -o /dev/null -w '%{http_code}' -d 'kind=1&client_user_id=bench-u2&media_content_key=bench-m1' "$url")
[ "$code" = 200 ] || { echo "token-api answered $code" >&2; exit 1; }
"$target/play-load" "$url" 200 2 10000 10 >/dev/null   # warm up
"$target/play-load" "$url" "$rate" "$seconds" 10000 10 | tee "$root/.local/bench/play.out"

echo
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(free -g | awk '/Mem:/{print $2}') GiB; token-api, PostgreSQL and the load generator share the cores"
psql -h 127.0.0.1 -U postgres -d $db -Atc \
  "SELECT 'decisions recorded: ' || count(*) || ' (' || string_agg(DISTINCT reason, ', ') || ')' FROM playback_decisions"
python3 - "$root/.local/bench/play.out" "$rate" <<'PY'
import re, sys
line = open(sys.argv[1]).read()
d = dict(re.findall(r"(\w+)=([\d.]+)", line))
print(f"play callbacks: {float(d['answered_per_s']):.0f}/s answered at a {sys.argv[2]}/s schedule; p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms (aim: under 20 ms)")
PY
