#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432: the machine's server, started if it is stopped,
# or Debian's package installed and started when there is none. Idempotent and quick when the
# server is up. With DATABASE_URL set, that server is used and nothing is touched here.
#
#   scripts/postgres.sh [DBNAME]   also creates database DBNAME on the local server if missing
set -euo pipefail

if [ -n "${DATABASE_URL:-}" ]; then
  echo "postgres: using DATABASE_URL from the environment" >&2
  exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
ready() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; }

if ! ready; then
  if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "postgres: no server here; installing Debian's postgresql" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    # A development server: trust local TCP connections, as on our machines.
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "postgres: starting cluster $version/main" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do ready && break; sleep 0.5; done
  ready || { echo "postgres: the server did not come up on 127.0.0.1:5432" >&2; exit 1; }
fi

# A server found installed (not by us) may want passwords over TCP (Debian's default is
# scram-sha-256): this development server trusts local TCP connections, as one we install does.
if ! psql -w -h 127.0.0.1 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if [ -z "$version" ] || [ ! -f "$hba" ]; then
    echo "postgres: 127.0.0.1:5432 refuses user postgres without a password, and its pg_hba.conf is not Debian's; set DATABASE_URL" >&2
    exit 1
  fi
  echo "postgres: trusting local TCP connections in $hba (a development server)" >&2
  as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for _ in $(seq 1 20); do
    psql -w -h 127.0.0.1 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.25
  done
  psql -w -h 127.0.0.1 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null \
    || { echo "postgres: still refused after trusting local TCP connections" >&2; exit 1; }
fi

if [ -n "${1:-}" ]; then
  exists=$(psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$1'")
  [ "$exists" = 1 ] || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$1\""
fi
