#!/usr/bin/env bash
# A user's course answer (`GET /v1/users/{id}/courses/{course_id}`, README "Courses") for a heavy
# user: 1,000 sessions over a 50-lesson course (20 per lesson, 30 blocks each, one to twelve
# played), in a table that also holds 200,000 other sessions (1,000 other users on the same
# videos), asked REQUESTS times from one connection and from CONCURRENCY; p50, p99, answers/s.
# Each answer also counts its read in the access record, as in production. Aim: p99 under 200 ms.
#
#   bench/course.sh [REQUESTS [CONCURRENCY [SECONDS]]]     defaults: 2000 4 60
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
requests="${1:-2000}"
concurrency="${2:-4}"
seconds="${3:-60}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
key=bench-api-key-0123456789
user=bench-course-user
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

scripts/postgres.sh
db=kollus_bench_course
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
cargo build --release --locked -q -p kollus-token-api -p kollus-bench

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
keys_dir=$(mktemp -d)
for k in ACCESS_LOG_KEY_FILE SUBJECT_TAG_KEY_FILE ARCHIVE_KEK_FILE; do
  (umask 077; head -c 32 /dev/urandom | base64 > "$keys_dir/$k"); export "$k=$keys_dir/$k"
done
env DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db KOLLUS_SECURITY_KEY=bench-security-key \
  KOLLUS_CUSTOM_KEY=bench-custom-key TOKEN_API_KEYS="bench:$key" \
  LOG_FORMAT=json RUST_LOG=warn,rdkafka::client=off LISTEN_ADDR=127.0.0.1:$port \
  "$target/token-api" & pids+=($!)
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
base="http://127.0.0.1:$port"

# The course: 50 catalogued videos of 1,461 s, in order; the user enrolled by a course grant.
lessons=$(python3 -c 'import json; print(json.dumps(["bench-lm%d" % v for v in range(50)]))')
curl -sf -X PUT -H "Authorization: Bearer $key" -H 'content-type: application/json' \
  -d "{\"title\":\"bench course\",\"lessons\":$lessons,\"unlock_in_order\":true}" \
  "$base/v1/courses/bench-course" >/dev/null
curl -sf -X PUT -H "Authorization: Bearer $key" -H 'content-type: application/json' -d '{}' \
  "$base/v1/users/$user/entitlements/course/bench-course" >/dev/null
# Session s of video v plays blocks a .. z-1 of 30 (a = (7v + 3s) mod 30, one to twelve blocks)
# with a showtime of 49 s a block; the other users' sessions are the same shapes.
psql -h 127.0.0.1 -U postgres -d $db -q -v user="$user" <<'SQL'
INSERT INTO uploads (upload_file_key, filename, title, duration_seconds, first_event_at, last_event_at)
SELECT 'bench-lu-' || v, 'lesson-' || v || '.mp4', 'Lesson ' || v, 1461, now(), now()
FROM generate_series(0, 49) v;
INSERT INTO media_contents SELECT 'bench-lm' || v, 'bench-lu-' || v, now(), now() FROM generate_series(0, 49) v;
INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, playtime, real_playtime,
                            runtime, showtime, duration, block_count, blocks_played,
                            first_report_at, last_report_at)
SELECT CASE WHEN u = 0 THEN :'user' ELSE 'bench-other-' || u END, 'bench-lm' || v,
       1750000000 + (20 * v + s) * 3600 + u, n * 49, n * 49, n * 49 + 60, n * 49, 1461, 30,
       (SELECT array_agg(i >= a AND i < a + n ORDER BY i) FROM generate_series(0, 29) i),
       now() - interval '1 day', now() - interval '1 day' + s * interval '1 minute'
FROM generate_series(0, 1000) u, generate_series(0, 49) v,
     generate_series(0, CASE WHEN u = 0 THEN 19 ELSE 3 END) s,
     LATERAL (SELECT (7 * v + 3 * s) % 30 AS a, least(1 + (11 * v + 5 * s) % 12, 30 - (7 * v + 3 * s) % 30) AS n) g;
ANALYZE;
SQL
psql -h 127.0.0.1 -U postgres -d $db -Atc \
  "SELECT 'seeded: ' || count(*) FILTER (WHERE client_user_id = '$user') || ' sessions of the user over ' || count(DISTINCT media_content_key) || ' lessons, ' || count(*) || ' sessions in all' FROM watch_sessions"

mkdir -p "$root/.local/bench"
path="/v1/users/$user/courses/bench-course"
"$target/api-load" "$base" "$key" "$path" '"progress_percent"' 50 1 30 >/dev/null   # warm up
: >"$root/.local/bench/course.out"
for c in 1 "$concurrency"; do
  "$target/api-load" "$base" "$key" "$path" '"progress_percent"' "$requests" "$c" "$seconds"
done | tee -a "$root/.local/bench/course.out"
curl -sf -H "Authorization: Bearer $key" "$base$path" >"$root/.local/bench/course-answer.json"
python3 - "$root/.local/bench/course-answer.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
print(f"the answer: {len(a['lessons'])} lessons, progress {a['progress_percent']}%, "
      f"{a['lessons_complete']} complete, refund {a['refund']['refund_share']}")
PY

echo
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(free -g | awk '/Mem:/{print $2}') GiB; token-api, PostgreSQL and the load generator share the cores"
python3 - "$root/.local/bench/course.out" <<'PY'
import re, sys
for line in open(sys.argv[1]):
    if not line.startswith("RESULT"):
        continue
    d = dict(re.findall(r"(\w+)=([\d.]+)", line))
    print(f"course answer (1,000 sessions over 50 lessons, {int(d['bytes']) // 1024} KiB), {d['concurrency']} connection(s): "
          f"{d['requests']} answers in {d['seconds']} s, {float(d['per_s']):.1f}/s; p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms "
          f"(aim: under 200 ms; {200 / float(d['p99_ms']):.1f}x under it)")
PY
