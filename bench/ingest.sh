#!/usr/bin/env bash
# ingest benchmark: sustained callbacks/s and p50/p99 latency for the seed LMS form, at 64 and
# 256 connections, against a bare actix-web handler that reads the same body and answers 200,
# all in one run on this machine. Also: ingest with Kafka cut off (every callback spooled and
# fsynced), and the broker alone (a plain acks=all producer) as the ceiling. The broker is
# Apache Kafka, one node from scripts/kafka.sh on a fresh log, as in production but unreplicated.
#
#   bench/ingest.sh            DURATION=10 (seconds per run) by default
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
duration="${DURATION:-10}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
body="$root/fixtures/kollus/lms-seed.form"
work=$(mktemp -d)
pids=() kafkas=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${kafkas[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
scripts/kafka.sh install
cargo build --release --locked -q -p kollus-ingest -p kollus-bench

wait_port() { for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on $1" >&2; exit 1; }
# port and kafka: bench/kafka.sh.
. bench/kafka.sh

kafka
dead_port=$(port); ingest_port=$(port); spool_port=$(port); bare_port=$(port)
common=(env CALLBACK_SECRET=bench-callback-secret LMS_CALLBACK_SECRET=bench-lms-callback-secret LOG_FORMAT=json RUST_LOG=warn INGEST_SPOOL_LIMIT_BYTES=$((8 << 30)) KAFKA_TOPIC_PARTITIONS=6)
"${common[@]}" LISTEN_ADDR=127.0.0.1:$ingest_port KAFKA_BROKERS=$broker INGEST_SPOOL_DIR="$work/spool-a" \
  "$target/ingest" 2>"$work/ingest.log" & pids+=($!)
"${common[@]}" LISTEN_ADDR=127.0.0.1:$spool_port KAFKA_BROKERS=127.0.0.1:$dead_port INGEST_SPOOL_DIR="$work/spool-b" \
  "$target/ingest" 2>"$work/ingest-spool.log" & pids+=($!)
"$target/bare-handler" "127.0.0.1:$bare_port" & pids+=($!)
wait_port "$ingest_port"; wait_port "$spool_port"; wait_port "$bare_port"

run() { # name url connections
  BODY_FILE="$body" wrk -t2 -c"$3" -d"${duration}s" --latency -s bench/post.lua "$2" | grep '^RESULT' | sed "s/^RESULT/$1 c=$3/"
}
url_ingest="http://127.0.0.1:$ingest_port/kollus/lms?secret=bench-lms-callback-secret"
url_spool="http://127.0.0.1:$spool_port/kollus/lms?secret=bench-lms-callback-secret"
url_bare="http://127.0.0.1:$bare_port/kollus/lms"
# Warm up (and let the spooling ingest find Kafka gone: its first request waits the ack budget).
BODY_FILE="$body" wrk -t1 -c4 -d2s -s bench/post.lua "$url_ingest" >/dev/null
BODY_FILE="$body" wrk -t1 -c4 -d3s -s bench/post.lua "$url_spool" >/dev/null
BODY_FILE="$body" wrk -t1 -c4 -d2s -s bench/post.lua "$url_bare" >/dev/null

results="$work/results"
for c in 64 256; do
  run bare "$url_bare" "$c" | tee -a "$results"
  run ingest "$url_ingest" "$c" | tee -a "$results"
  run ingest-spool "$url_spool" "$c" | tee -a "$results"
done
"$target/broker-ceiling" "$broker" 200000 "$body" 256 | sed 's/^RESULT/broker-alone/' | tee -a "$results"
"$target/ingest-path" "$body" 200000 | sed 's/^RESULT/own-path/' | tee -a "$results"

echo
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(free -g | awk '/Mem:/{print $2}') GiB; wrk -t2; all processes share the cores"
echo "body: lms-seed.form ($(wc -c <"$body") bytes); ${duration}s per run; durable = Kafka acks=all or spool fsync"
python3 - "$results" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    name, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    rows[(name, d.get("c"))] = d
print(f"{'run':<14}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'vs bare':>9}")
for (name, c), d in rows.items():
    if name in ("broker-alone", "own-path"):
        continue
    bare = rows.get(("bare", c), {}).get("rps")
    ratio = f"{float(d['rps'])/float(bare):.2f}" if bare else "-"
    print(f"{name:<14}{c:>6}{float(d['rps']):>10.0f}{float(d['p50_ms']):>9.2f}{float(d['p99_ms']):>9.2f}{d['errors']:>8}{ratio:>9}")
b = rows.get(("broker-alone", None))
if b:
    print(f"broker alone (plain acks=all producer, 256 in flight): {float(b['rps']):.0f} records/s")
    for c in ("64", "256"):
        i = rows.get(("ingest", c))
        if i:
            print(f"  ingest at {c} connections = {float(i['rps'])/float(b['rps']):.2f} of the broker's ceiling")
o = rows.get(("own-path", None))
if o:
    print(f"ingest's own work (locate + parse + envelope + JSON, no HTTP, no broker), one core: {float(o['rps']):.0f} callbacks/s")
    print(f"  with the LMS hash check (LMS_HASH_POLICY=record): {float(o['rps_with_hash']):.0f} callbacks/s")
    print(f"  for scale, only building a serde_json::Value tree of the document: {float(o['value_tree_only']):.0f}/s")
PY
# ingest's sustained rate (256 connections, Kafka acks), for bench/history.sh's ratio.
mkdir -p "$(dirname "$0")/../.local/bench"
awk '$1 == "ingest" && $2 == "c=256" { sub("rps=", "", $3); print $3 }' "$results" \
  >"$(dirname "$0")/../.local/bench/ingest-rps"
