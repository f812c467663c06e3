#!/usr/bin/env bash
# Archive benchmark: how long kollus-archive takes to dump, verify and restore RECORDS records
# (ingest's envelope of the seed LMS report, ~4.7 kB each before compression), each step timed,
# with records/s and the archive's size. One run on this machine.
#
#   bench/archive.sh [RECORDS]     default 1000000
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
records="${1:-1000000}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

scripts/broker.sh install
cargo build --release --locked -q -p kollus-archive -p kollus-bench

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on $1" >&2; exit 1; }
broker() { local p; p=$(port); .local/bin/tansu broker --listener-url "tcp://127.0.0.1:$p" \
  --advertised-listener-url "tcp://127.0.0.1:$p" --storage-engine memory://tansu/ >/dev/null 2>&1 & pids+=($!); wait_port "$p"; echo "127.0.0.1:$p"; }

source_broker=$(broker)
body=../shared/kollus/fixtures/lms-seed.form
echo "archive: publishing $records records to kollus.playback.v1" >&2
BENCH_TOPIC=kollus.playback.v1 "$target/broker-ceiling" "$source_broker" "$records" "$body" 256 | tee "$work/publish"

timed() { # name command...
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@" | tee "$work/$name.out"
  python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'RESULT {sys.argv[3]} records=$records seconds={s:.1f} rps={$records/s:.0f}')" "$t0" "$(date +%s.%N)" "$name" | tee -a "$work/results"
}
export LOG_FORMAT=text RUST_LOG=warn
timed dump env KAFKA_BROKERS="$source_broker" "$target/kollus-archive" dump --until-end --to "$work/archive"
timed verify "$target/kollus-archive" verify --from "$work/archive"
restore_broker=$(broker)
timed restore env KAFKA_BROKERS="$restore_broker" "$target/kollus-archive" restore --from "$work/archive"

echo
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(free -g | awk '/Mem:/{print $2}') GiB; broker(s), the archive and the disk share them"
echo "archive: $(du -sh "$work/archive" | cut -f1) on disk for $records records ($(find "$work/archive/segments" -type f | wc -l) segments), fsynced local directory"
cat "$work/results"
