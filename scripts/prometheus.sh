#!/usr/bin/env bash
# A local Prometheus (Debian's package) scraping the four services, with the project's rules.
#
#   scripts/prometheus.sh install     install Debian's prometheus package when it is missing
#   scripts/prometheus.sh run DIR     write DIR/prometheus.yml and run Prometheus in the foreground
#
# run reads: PROMETHEUS_ADDR (127.0.0.1:9090); INGEST, TOKEN_API, SYNC_WORKER, HISTORY_WORKER, ARCHIVE
# (host:port of each service); KAFKA (host:port,... of the brokers' metrics, `scripts/kafka.sh
# --metrics-port`: job kafka, left out when unset); SCRAPE_INTERVAL (5s); RULES
# (deploy/prometheus/rules/*.yml).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

install() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  echo "prometheus: installing Debian's prometheus package" >&2
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

case "${1:-install}" in
  install) install ;;
  run)
    install
    dir=${2:?usage: $0 run DIR}
    mkdir -p "$dir/data"
    interval=${SCRAPE_INTERVAL:-5s}
    kafka_job=""
    if [ -n "${KAFKA:-}" ]; then
      kafka_job="  - job_name: kafka
    static_configs: [{ targets: [\"${KAFKA//,/\", \"}\"] }]"
    fi
    cat >"$dir/prometheus.yml" <<YML
# Written by scripts/prometheus.sh: the jobs of deploy/prometheus/prometheus.yml, local targets.
global:
  scrape_interval: $interval
  evaluation_interval: $interval
rule_files:
  - ${RULES:-$root/deploy/prometheus/rules/*.yml}
scrape_configs:
  - job_name: ingest
    static_configs: [{ targets: ["${INGEST:-127.0.0.1:8080}"] }]
  - job_name: token-api
    static_configs: [{ targets: ["${TOKEN_API:-127.0.0.1:8081}"] }]
  - job_name: sync-worker
    static_configs: [{ targets: ["${SYNC_WORKER:-127.0.0.1:9101}"] }]
  - job_name: history-worker
    static_configs: [{ targets: ["${HISTORY_WORKER:-127.0.0.1:9102}"] }]
  - job_name: archive
    static_configs: [{ targets: ["${ARCHIVE:-127.0.0.1:9103}"] }]
$kafka_job
YML
    exec prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
      --web.listen-address="${PROMETHEUS_ADDR:-127.0.0.1:9090}" --log.level=warn
    ;;
  *) echo "usage: $0 install | run DIR" >&2; exit 2 ;;
esac
