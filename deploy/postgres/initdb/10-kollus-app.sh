#!/bin/sh
# Run by the postgres image once, when its volume is first initialised (docker-compose.yml): the
# services' login role, kollus_app, granted kollus_service (V20 gives that role its rights: on the
# access log only INSERT and SELECT, no DDL). The owner, POSTGRES_USER, runs the migrations and
# `token-api access-log maintain` (DATABASE_MIGRATION_URL). README "Production with Compose".
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$(cat /run/secrets/kollus_app_password)" <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kollus_service') THEN
        CREATE ROLE kollus_service NOLOGIN;
    END IF;
END $$;
CREATE ROLE kollus_app LOGIN IN ROLE kollus_service PASSWORD :'pw';
SQL
