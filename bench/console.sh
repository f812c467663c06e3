#!/usr/bin/env bash
# The support console under a heavy user and an adversarial one, signed in with a console key,
# each page requested REQUESTS times from CONCURRENCY connections on loopback (at most SECONDS),
# and as many from one connection (one agent); p50, p99, pages/s, the page's size and token-api's
# peak RSS while it served that page (VmHWM, reset before each page through clear_refs). Each
# view also writes its audit row, as in production. The aim: p99 under 200 ms.
# - ordinary: a user page of 1,000 sessions over 50 videos (30 blocks each, one to twelve blocks
#   watched per session with partial edges, played segments, mixed badges);
# - adversarial: one user and video with 10,000 sessions of 1,000 played segments each (30
#   blocks), as forged reports could plant them: the refund view, and the user's page.
#
#   bench/console.sh [REQUESTS [CONCURRENCY [SECONDS]]]     defaults: 2000 4 60
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
requests="${1:-2000}"
concurrency="${2:-4}"
seconds="${3:-60}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
key=bench-console-key-0123456789
user=bench-console-user
forged=bench-forged-user
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

scripts/postgres.sh
db=kollus_bench_console
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
  KOLLUS_CUSTOM_KEY=bench-custom-key TOKEN_API_KEYS="bench:bench-api-key-0123456789,support[console]:$key" \
  CONSOLE_INSECURE_COOKIE=1 LOG_FORMAT=json RUST_LOG=warn LISTEN_ADDR=127.0.0.1:$port \
  "$target/token-api" & pids+=($!)
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

# 50 catalogued videos (titles), 20 sessions of the user on each: 1,000 sessions of 30 blocks.
# Session s of video v starts at block a = (7v + 3s) mod 30 and plays len = 1 + (11v + 5s) mod 12
# blocks: the first and last partly, those between fully; one or two played segments.
psql -h 127.0.0.1 -U postgres -d $db -q -v user="$user" <<'SQL'
INSERT INTO uploads (upload_file_key, filename, title, duration_seconds, first_event_at, last_event_at)
SELECT 'bench-cu-' || v, 'lesson-' || v || '.mp4', 'Course ' || v / 10 || ', lesson ' || v % 10, 1461,
       now(), now()
FROM generate_series(0, 49) v;
INSERT INTO media_contents SELECT 'bench-cm' || v, 'bench-cu-' || v, now(), now() FROM generate_series(0, 49) v;
INSERT INTO channel_memberships (media_content_key, channel_key, in_channel, decided_at, decided_by)
SELECT 'bench-cm' || v, 'bench-cch', true, now(), gen_random_uuid() FROM generate_series(0, 49) v;
INSERT INTO entitlements (client_user_id, scope, target, expires_at, playtime_limit_seconds, download,
                          download_limit, granted_by, granted_at)
VALUES (:'user', 'channel', 'bench-cch', now() + interval '90 days', NULL, false, NULL, 'bench', now()),
       (:'user', 'media', 'bench-cm0', now() + interval '30 days', 36000, true, 3, 'bench', now());
WITH p AS (
  SELECT v, s, (7 * v + 3 * s) % 30 AS a, least((7 * v + 3 * s) % 30 + 1 + (11 * v + 5 * s) % 12, 30) AS z
  FROM generate_series(0, 49) v, generate_series(0, 19) s
), b AS (
  SELECT v, s, a, z, array_agg(CASE WHEN i = a THEN 40 + (13 * s) % 60
                                    WHEN i = z - 1 THEN 10 + (17 * v) % 90
                                    WHEN i > a AND i < z THEN 100 ELSE 0 END::bigint ORDER BY i) AS pct
  FROM p, generate_series(0, 29) i GROUP BY v, s, a, z
)
INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, device, os, player_id,
                            playtime, real_playtime, runtime, duration, block_count, blocks_played,
                            block_percent, segments, hash_verified, device_clock,
                            first_report_at, last_report_at)
SELECT :'user', 'bench-cm' || v, 1750000000 + (20 * v + s) * 3600,
       (ARRAY['PC', 'iPhone', 'Galaxy S24'])[1 + s % 3], (ARRAY['Windows', 'iOS', 'Android'])[1 + s % 3],
       'html5', (z - a) * 49 - 20, (z - a) * 49 - 25, (z - a) * 49 + 140, 1461, 30,
       (SELECT array_agg(x > 0 ORDER BY o) FROM unnest(pct) WITH ORDINALITY u(x, o)), pct,
       CASE WHEN s % 2 = 0 THEN jsonb_build_array(jsonb_build_array(a, a * 49 + 20, (z - a) * 49 - 20))
            ELSE jsonb_build_array(jsonb_build_array(a, a * 49 + 20, 30),
                                   jsonb_build_array(a, a * 49 + 80, greatest((z - a) * 49 - 80, 5))) END,
       CASE WHEN s % 5 = 0 THEN false ELSE true END, s % 17 = 0,
       now() - interval '1 day', now() - interval '1 day' + s * interval '1 minute'
FROM b;
ANALYZE;
SQL
psql -h 127.0.0.1 -U postgres -d $db -Atc \
  "SELECT 'seeded: ' || count(*) || ' sessions over ' || count(DISTINCT media_content_key) || ' videos' FROM watch_sessions WHERE client_user_id = '$user'"

# The adversarial pair: 10,000 sessions of one user on one video, each with 1,000 played segments
# (ten patterns spread over the 1,461 s video, a few per timeline pixel) and one of 30 blocks.
psql -h 127.0.0.1 -U postgres -d $db -q -v user="$forged" <<'SQL'
WITH segs AS (
  SELECT w, jsonb_agg(jsonb_build_array(k * 30 / 1000, k * 1461 / 1000 + w, 1 + (k + w) % 3) ORDER BY k) AS j
  FROM generate_series(0, 9) w, generate_series(0, 999) k GROUP BY w
)
INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, device, os, player_id,
                            playtime, real_playtime, runtime, duration, block_count, blocks_played,
                            block_percent, segments, hash_verified, device_clock,
                            first_report_at, last_report_at)
SELECT :'user', 'bench-forged', 1700000000 + 60 * s, 'forged', 'forged', 'html5', 2000, 2000, 2000,
       1461, 30, array_fill(true, ARRAY[30]),
       (SELECT array_agg(((s + b) % 101)::bigint ORDER BY b) FROM generate_series(0, 29) b),
       segs.j, false, false, now(), now()
FROM generate_series(0, 9999) s JOIN segs ON segs.w = s % 10;
ANALYZE;
SQL
psql -h 127.0.0.1 -U postgres -d $db -Atc \
  "SELECT 'seeded: ' || count(*) || ' sessions of $forged, ' || sum(jsonb_array_length(segments)) || ' segments' FROM watch_sessions WHERE client_user_id = '$forged'"

mkdir -p "$root/.local/bench"
base="http://127.0.0.1:$port"
api=${pids[0]}
hwm() { awk '/VmHWM/{print $2}' "/proc/$api/status"; }
# name, path, cells at least: the ordinary user page (50 videos x 30 blocks), the adversarial
# refund view (at least one session's row of 30 cells) and the adversarial user's page.
pages=(
  "ordinary-user|/console/users/$user|1500"
  "adversarial-refund|/console/users/$forged/media/bench-forged|30"
  "adversarial-user|/console/users/$forged|30"
)
: >"$root/.local/bench/console.out"
for entry in "${pages[@]}"; do
  IFS='|' read -r name path cells <<<"$entry"
  "$target/console-load" "$base" "$key" "$path" "$cells" 20 1 30 >/dev/null   # warm up
  echo 5 >"/proc/$api/clear_refs"   # the peak RSS from here on is this page's
  for c in 1 "$concurrency"; do
    "$target/console-load" "$base" "$key" "$path" "$cells" "$requests" "$c" "$seconds" |
      sed "s/^RESULT /RESULT page=$name /"
  done
  echo "RSS page=$name vmhwm_kib=$(hwm)"
done | tee -a "$root/.local/bench/console.out"

echo
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(free -g | awk '/Mem:/{print $2}') GiB; token-api, PostgreSQL and the load generator share the cores"
python3 - "$root/.local/bench/console.out" <<'PY'
import re, sys
what = {"ordinary-user": "user page, 1,000 sessions over 50 videos",
        "adversarial-refund": "refund view, 10,000 sessions x 1,000 segments",
        "adversarial-user": "user page, 10,000 sessions x 1,000 segments on one video"}
for line in open(sys.argv[1]):
    name = re.search(r"page=([\w-]+)", line)
    if not name:
        continue
    name = name.group(1)
    if line.startswith("RSS"):
        kib = int(re.search(r"vmhwm_kib=(\d+)", line).group(1))
        print(f"{name}: token-api peak RSS {kib // 1024} MiB")
        continue
    if not line.startswith("RESULT"):
        continue
    d = dict(re.findall(r"(\w+)=([\d.]+)", line))
    print(f"{name} ({what[name]}, {int(d['bytes']) // 1024} KiB), {d['concurrency']} connection(s): "
          f"{d['pages']} pages in {d['seconds']} s, {float(d['per_s']):.1f} pages/s; p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms (aim: under 200 ms)")
PY
