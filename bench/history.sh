#!/usr/bin/env bash
# history-worker benchmark: LMS records/s from topic to table for 1M generated reports over 50k
# sessions, lag from receive time to row at a steady rate, and the same reports applied one per
# transaction (1 and 8 connections), all in one run on this machine (bench/src/bin/history_bench.rs).
# The broker is Apache Kafka, one node from scripts/kafka.sh on a fresh log.
#
#   bench/history.sh [RECORDS [SESSIONS]]      defaults: 1000000 50000
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}/release"
work=$(mktemp -d)
pids=() kafkas=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${kafkas[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT

scripts/kafka.sh install
scripts/postgres.sh
cargo build --release --locked -q -p kollus-history-worker -p kollus-bench

# port and kafka: bench/kafka.sh.
. bench/kafka.sh

kafka
"$target/history-bench" "$broker" "${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}" \
  "$target/history-worker" "${1:-1000000}" "${2:-50000}" | tee "$work/out"

ingest_rps_file=.local/bench/ingest-rps
worker_rps=$(sed -n 's/.*RESULT worker .* rps=\([0-9]*\).*/\1/p' "$work/out")
echo
if [ -s "$ingest_rps_file" ]; then
  ingest_rps=$(cat "$ingest_rps_file")
  python3 -c "import sys; w, i = map(float, sys.argv[1:3]); print(f'history-worker topic to table / ingest sustained (bench/ingest.sh, 256 connections, {i:.0f} req/s on {sys.argv[3]}): {w / i:.2f} (aim: 1.5)')" \
    "$worker_rps" "$ingest_rps" "$(date -r "$ingest_rps_file" +%F)"
else
  echo "ratio to ingest: run bench/ingest.sh first on this machine (it leaves its rate in $ingest_rps_file)"
fi
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(free -g | awk '/Mem:/{print $2}') GiB; broker, worker, PostgreSQL and the generator share the cores"
echo "PostgreSQL: $(psql -h 127.0.0.1 -U postgres -Atc 'SHOW server_version' 2>/dev/null || echo unknown), $(psql -h 127.0.0.1 -U postgres -Atc 'SHOW synchronous_commit' 2>/dev/null | sed 's/^/synchronous_commit=/')"
