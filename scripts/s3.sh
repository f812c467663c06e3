#!/usr/bin/env bash
# A local S3-compatible server for the archive's tests: moto's server, from PyPI.
#
#   scripts/s3.sh install          install into .local/ (idempotent, fast the second time)
#   scripts/s3.sh run [PORT]       install if needed, then run in the foreground (default 9000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.local/moto-venv"
pkg="moto[server]==5.2.5"

install() {
  if "$venv/bin/moto_server" --help >/dev/null 2>&1; then
    return 0
  fi
  echo "s3: installing $pkg into .local/" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$pkg"
}

case "${1:-install}" in
  install) install ;;
  run)
    install
    exec "$venv/bin/moto_server" -H 127.0.0.1 -p "${2:-9000}"
    ;;
  *) echo "usage: scripts/s3.sh install|run [PORT]" >&2; exit 2 ;;
esac
