-- Issue 31's review (findings 1, 5, 7): what the service role may write into the access log, and
-- retention's records authenticated under ACCESS_LOG_KEY_FILE.
--
-- A time that is not finite cannot be sealed (its epoch is not a number): refused outright.
ALTER TABLE access_log ADD CONSTRAINT access_log_at_finite CHECK (isfinite(at));
ALTER TABLE access_log_seals ADD CONSTRAINT access_log_seals_at_finite CHECK (isfinite(at));

-- A row's id comes from the sequence and its time is now, unless the writer is the log's owner
-- (the migration role: tests, imports, functions it owns). The service role can then neither
-- pick an id (slip a row in between sealed ones) nor date a row into the past (a backdated
-- row sealed as genuine) or the future (a row in DEFAULT that blocks that month's partition).
-- A BEFORE trigger cannot move a row to another partition, so a bad time is refused, not fixed.
ALTER TABLE access_log ALTER COLUMN id DROP DEFAULT;
CREATE FUNCTION access_log_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owner_ oid;
BEGIN
    SELECT relowner INTO owner_ FROM pg_class WHERE oid = 'access_log'::regclass;
    IF pg_has_role(current_user, owner_, 'MEMBER') THEN
        IF NEW.id IS NULL THEN
            NEW.id := nextval('access_log_id_seq');
        END IF;
        RETURN NEW;
    END IF;
    NEW.id := nextval('access_log_id_seq');
    IF NEW.at < clock_timestamp() - interval '10 minutes'
       OR NEW.at > clock_timestamp() + interval '1 minute' THEN
        RAISE EXCEPTION 'an access log row''s time must be now (given %)', NEW.at
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER access_log_before_insert BEFORE INSERT ON access_log
    FOR EACH ROW EXECUTE FUNCTION access_log_before_insert();

-- Each month retention dropped, authenticated: `auth` is the HMAC under ACCESS_LOG_KEY_FILE of
-- every other column (README "Verifying it and keeping it" gives the encoding). `orphans`: the
-- kept seals whose successor the drop removed (each is then a chain end that is not a break).
CREATE TABLE access_log_drops (
    class       text        NOT NULL,
    partition   text        NOT NULL,
    month_start timestamptz NOT NULL,
    month_end   timestamptz NOT NULL,
    dropped_at  timestamptz NOT NULL,
    orphans     bigint[]    NOT NULL,
    auth        bytea       NOT NULL,
    PRIMARY KEY (class, partition)
);
-- An anchor names its month and carries its own HMAC; one without (written before this
-- migration) is reported by verify as forged: re-anchor it by hand, README says how.
ALTER TABLE access_log_anchors
    ADD COLUMN month_start timestamptz,
    ADD COLUMN month_end timestamptz,
    ADD COLUMN auth bytea;
ALTER TABLE access_log_anchors ALTER COLUMN dropped_at DROP DEFAULT;
REVOKE ALL ON access_log_drops FROM kollus_service;
GRANT SELECT ON access_log_drops TO kollus_service;

-- Partitions created for a month that already has rows in DEFAULT (the owner wrote them, or the
-- months ahead were not created in time): the rows are moved into the new month first, instead of
-- the creation failing on the DEFAULT partition's constraint.
CREATE OR REPLACE FUNCTION access_log_ensure_partitions(from_ timestamptz, months integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
    m timestamptz;
    cls text;
    tbl text;
    parent text;
    n bigint;
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
                    EXECUTE format('SELECT count(*) FROM %I WHERE at >= %L AND at < %L',
                                   parent || '_' || cls || '_default', m,
                                   m + interval '1 month') INTO n;
                    IF n = 0 THEN
                        EXECUTE format(
                            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                            tbl, parent || '_' || cls, m, m + interval '1 month');
                    ELSE
                        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                                       tbl, parent || '_' || cls);
                        EXECUTE format(
                            'WITH moved AS (DELETE FROM %I WHERE at >= %L AND at < %L '
                            'RETURNING *) INSERT INTO %I SELECT * FROM moved',
                            parent || '_' || cls || '_default', m, m + interval '1 month', tbl);
                        EXECUTE format(
                            'ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                            parent || '_' || cls, tbl, m, m + interval '1 month');
                    END IF;
                    EXECUTE format('REVOKE ALL ON %I FROM kollus_service', tbl);
                    EXECUTE format('GRANT SELECT, INSERT ON %I TO kollus_service', tbl);
                    created := created + 1;
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;
REVOKE EXECUTE ON FUNCTION access_log_ensure_partitions(timestamptz, integer) FROM PUBLIC;
