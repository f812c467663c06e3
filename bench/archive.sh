#!/usr/bin/env bash
# Archive benchmark, one run on this machine, with varied real-shaped LMS reports
# (bench/src/bin/archive_bench.rs: 40,000 sessions of 12,000 users on 1,500 videos, 10 to 120
# blocks each, the form body Kollus posts in ingest's envelope and headers):
#
# 1. RECORDS/2 reports published to broker A, `kollus-archive dump --until-end` timed: the
#    archive's bytes per report (what the long tier costs), then `verify`.
# 2. The other RECORDS/2 published to a fresh broker B (offsets from 0 again, as after losing a
#    cluster), and `history-worker --rebuild` timed on a fresh database with ARCHIVE_DIR and B:
#    the archive first, then B's topic, until the worker's group committed B's every record.
# 3. `restore` of the archive into broker C, timed.
#
# Each broker is Apache Kafka, one node from scripts/kafka.sh on a fresh log: B and C are new
# clusters, as after losing one.
#
#   bench/archive.sh [RECORDS]     default 1000000
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
records="${1:-1000000}"
half=$((records / 2))
target="${CARGO_TARGET_DIR:-$root/target}/release"
work=$(mktemp -d)
pids=() kafkas=()
db=kollus_bench_archive
admin_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${kafkas[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

scripts/kafka.sh install
scripts/postgres.sh
cargo build --release --locked -q -p kollus-archive -p kollus-history-worker -p kollus-bench

# port and kafka: bench/kafka.sh.
. bench/kafka.sh

timed() { # name count command...
  local name=$1 count=$2; shift 2
  local t0; t0=$(date +%s.%N)
  "$@" | tee "$work/$name.out"
  python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); n=int(sys.argv[4]); print(f'RESULT {sys.argv[3]} records={n} seconds={s:.1f} rps={n/s:.0f}')" \
    "$t0" "$(date +%s.%N)" "$name" "$count" | tee -a "$work/results"
}
export LOG_FORMAT=text RUST_LOG=warn KAFKA_TOPIC_PARTITIONS=6

# 1. The first half, archived.
kafka; broker_a=$broker
echo "archive: publishing $half varied reports to broker A" >&2
"$target/archive-bench" publish "$broker_a" "$half" 0 | tee -a "$work/results"
timed dump "$half" env KAFKA_BROKERS="$broker_a" "$target/kollus-archive" dump --until-end --to "$work/archive"
archive_bytes=$(du -sb "$work/archive/segments" | cut -f1)
timed verify "$half" "$target/kollus-archive" verify --no-topics --from "$work/archive"

# 2. The second half on a fresh broker only; the rebuild reads both.
kafka; broker_b=$broker
echo "archive: publishing the other $((records - half)) reports to a fresh broker B" >&2
"$target/archive-bench" publish "$broker_b" "$((records - half))" "$half" | tee -a "$work/results"
psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
db_url="${admin_url%/*}/$db"
head -c 32 /dev/urandom | base64 >"$work/subject-tag.key"
KAFKA_BROKERS="$broker_b" DATABASE_URL="$db_url" ARCHIVE_DIR="$work/archive" LISTEN_ADDR=127.0.0.1:0 \
  SUBJECT_TAG_KEY_FILE="$work/subject-tag.key" "$target/history-worker" --rebuild >"$work/rebuild.log" 2>&1 & worker=$!; pids+=($worker)
timed rebuild "$records" "$target/archive-bench" committed "$broker_b" kollus-history-worker kollus.playback.v1 "$((records - half))"
sessions=$(psql "$db_url" -Atc "SELECT count(*) FROM watch_sessions")
kill "$worker"; wait "$worker" 2>/dev/null || true

# 3. Restore into another broker.
kafka; broker_c=$broker
timed restore "$half" env KAFKA_BROKERS="$broker_c" "$target/kollus-archive" restore --from "$work/archive"

echo
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(free -g | awk '/Mem:/{print $2}') GiB; brokers, the archive, history-worker, PostgreSQL and the disk share them"
echo "PostgreSQL: $(psql "$admin_url" -Atc 'SHOW server_version' 2>/dev/null || echo unknown)"
python3 -c "import sys; b, n = int(sys.argv[1]), int(sys.argv[2]); print(f'archive: {b} bytes of segments for {n} varied reports: {b/n:.0f} bytes per report (zstd level 3, fsynced local directory, {sys.argv[3]} segments)')" \
  "$archive_bytes" "$half" "$(find "$work/archive/segments" -type f | wc -l)"
echo "rebuild: $records reports ($half from the archive, $((records - half)) from broker B) into $sessions sessions"
grep -E "replaying the archive|rebuild:" "$work/rebuild.log" | tail -3 || true
cat "$work/results"
