-- Issue 31: the access record (접속기록). Who processed whose personal data, when, from where, what
-- they did and why; kept by month for as long as the law says, whatever happens to the data it
-- records, and chained by an HMAC whose key the database never holds (token-api's sealer).
--
-- Least privilege: the services run as a role granted `kollus_service`. It reads and writes the
-- service tables, but may only INSERT into and SELECT from the access log, its seals and anchors
-- (anchors: SELECT only); partitions are created and dropped by the migration role
-- (DATABASE_MIGRATION_URL; `token-api access-log maintain`). Creating the role needs CREATEROLE;
-- a migration role without it needs `kollus_service` created beforehand.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kollus_service') THEN
        CREATE ROLE kollus_service NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- another database's migration created it at the same moment
END $$;

-- Per-subject data keys (issue 32 builds on them). A subject is named by its tag, an HMAC of
-- the user id under SUBJECT_TAG_KEY_FILE; its data key (AES-256-GCM) is stored wrapped by
-- ARCHIVE_KEK_FILE. Erasing a subject destroys `wrapped` (kept NULL with `erased_at`, so a
-- returning user gets a new generation), after which whatever was sealed under it is unreadable.
CREATE TABLE subject_keys (
    tag        text        NOT NULL,
    generation integer     NOT NULL,
    wrapped    bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    erased_at  timestamptz,
    PRIMARY KEY (tag, generation),
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL))
);

-- One row per access. `class` is the chain and the retention: `access` (ACCESS_LOG_RETENTION_DAYS,
-- 730 by default) or `rights` (changes of who may access: 1,095 days). `session_hash` is the
-- console session's id hash (console_sessions.id_hash); `subject_*` name the data subject by tag,
-- with the user id sealed under the subject's key (AAD: tag and generation). `count` is 1 except
-- for `api_read`, one row per (key, subject, day) written when the day is over.
CREATE SEQUENCE access_log_id_seq AS bigint;
CREATE TABLE access_log (
    id                 bigint      NOT NULL DEFAULT nextval('access_log_id_seq'),
    class              text        NOT NULL CHECK (class IN ('access', 'rights')),
    at                 timestamptz NOT NULL DEFAULT clock_timestamp(),
    action             text        NOT NULL,
    key_name           text        NOT NULL,
    session_hash       bytea,
    client_addr        inet,
    subject_tag        text,
    subject_generation integer,
    subject_sealed     bytea,
    target             text,
    reason             text,
    count              bigint      NOT NULL DEFAULT 1 CHECK (count > 0)
) PARTITION BY LIST (class);
CREATE TABLE access_log_access PARTITION OF access_log FOR VALUES IN ('access')
    PARTITION BY RANGE (at);
CREATE TABLE access_log_rights PARTITION OF access_log FOR VALUES IN ('rights')
    PARTITION BY RANGE (at);
CREATE INDEX access_log_id_idx ON access_log (id);
CREATE INDEX access_log_subject_idx ON access_log (subject_tag, at) WHERE subject_tag IS NOT NULL;
CREATE INDEX access_log_at_action_idx ON access_log (at, action);

-- The chain: one seal per row, per class, in id order. mac = HMAC-SHA256(ACCESS_LOG_KEY_FILE,
-- previous mac || the row), the first row's previous mac 32 zero bytes or an anchor's. Stored
-- beside the row's (class, month), so retention drops a row and its seal together.
CREATE TABLE access_log_seals (
    class     text        NOT NULL,
    log_id    bigint      NOT NULL,
    prev_id   bigint,
    at        timestamptz NOT NULL,
    mac       bytea       NOT NULL,
    sealed_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY LIST (class);
CREATE TABLE access_log_seals_access PARTITION OF access_log_seals FOR VALUES IN ('access')
    PARTITION BY RANGE (at);
CREATE TABLE access_log_seals_rights PARTITION OF access_log_seals FOR VALUES IN ('rights')
    PARTITION BY RANGE (at);
CREATE INDEX access_log_seals_log_idx ON access_log_seals (class, log_id);

-- Where a chain starts after retention dropped its oldest month: the mac of each dropped row a
-- kept row names as its previous one (usually one: the dropped month's last).
CREATE TABLE access_log_anchors (
    class      text        NOT NULL,
    log_id     bigint      NOT NULL,
    mac        bytea       NOT NULL,
    partition  text        NOT NULL,
    dropped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (class, log_id)
);

-- Reads by the product app, counted per (key, subject, day) until the day is over; then the
-- sealer writes one `api_read` row with the count and deletes the counter.
CREATE TABLE access_log_reads (
    day                date        NOT NULL,
    key_name           text        NOT NULL,
    subject_tag        text        NOT NULL,
    subject_generation integer     NOT NULL,
    subject_sealed     bytea       NOT NULL,
    client_addr        inet,
    first_at           timestamptz NOT NULL,
    last_at            timestamptz NOT NULL,
    count              bigint      NOT NULL,
    PRIMARY KEY (day, key_name, subject_tag)
);

-- The month partitions of the log and its seals, from the month of `from` for `months` months,
-- each created if missing, with the service role's rights cut to INSERT and SELECT.
CREATE FUNCTION access_log_ensure_partitions(from_ timestamptz, months integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
    m timestamptz;
    cls text;
    tbl text;
    parent text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        m := date_trunc('month', from_ AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
             + make_interval(months => i);
        FOREACH cls IN ARRAY ARRAY['access', 'rights'] LOOP
            FOREACH parent IN ARRAY ARRAY['access_log', 'access_log_seals'] LOOP
                tbl := format('%s_%s_y%sm%s', parent, cls,
                              to_char(m AT TIME ZONE 'UTC', 'YYYY'),
                              to_char(m AT TIME ZONE 'UTC', 'MM'));
                IF to_regclass(tbl) IS NULL THEN
                    EXECUTE format(
                        'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                        tbl, parent || '_' || cls, m, m + interval '1 month');
                    EXECUTE format('REVOKE ALL ON %I FROM kollus_service', tbl);
                    EXECUTE format('GRANT SELECT, INSERT ON %I TO kollus_service', tbl);
                    created := created + 1;
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

-- Rows past every month partition (the maintenance job not run for months) are kept, never
-- refused; `token-api access-log verify` reports them.
CREATE TABLE access_log_access_default PARTITION OF access_log_access DEFAULT;
CREATE TABLE access_log_rights_default PARTITION OF access_log_rights DEFAULT;
CREATE TABLE access_log_seals_access_default PARTITION OF access_log_seals_access DEFAULT;
CREATE TABLE access_log_seals_rights_default PARTITION OF access_log_seals_rights DEFAULT;

SELECT access_log_ensure_partitions(now() - interval '1 month', 5);

-- The service role: everything on the service tables, the log only appended to and read.
GRANT USAGE ON SCHEMA public TO kollus_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO kollus_service;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO kollus_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO kollus_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO kollus_service;
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'
           AND (c.relname LIKE 'access\_log\_%' OR c.relname = 'access_log')
           AND c.relname <> 'access_log_reads' AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('REVOKE ALL ON %I FROM kollus_service', t);
        EXECUTE format('GRANT SELECT, INSERT ON %I TO kollus_service', t);
    END LOOP;
END $$;
REVOKE ALL ON access_log_anchors FROM kollus_service;
GRANT SELECT ON access_log_anchors TO kollus_service;
DO $$
BEGIN
    IF to_regclass('refinery_schema_history') IS NOT NULL THEN
        REVOKE ALL ON refinery_schema_history FROM kollus_service;
        GRANT SELECT ON refinery_schema_history TO kollus_service;
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION access_log_ensure_partitions(timestamptz, integer) FROM PUBLIC;

-- console_views (V15) is superseded by the access log. Its rows name a user in the clear, which the
-- log never does: token-api moves them in at start (a `view_user` or `view_refund` row each, at
-- the time it was viewed, the user sealed) and deletes each row it moved, so none is lost.
