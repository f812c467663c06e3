-- Issue 31's second review (database findings): names the log's functions resolve, the workers'
-- `--rebuild`, and months moved out of DEFAULT while rows arrive.
--
-- 1. A session's temporary schema is searched before any other for tables and sequences, even
--    under `SET search_path = public`, and the service role may create temporary tables. A temp
--    `access_log` made the trigger read its own owner (taking the owner's path: an id and a time
--    of the service's choosing); a temp `access_log_reads` made `access_log_close_reads` (run as
--    the migration role) write rows of the service's making into the log. Every name below is
--    schema-qualified, and each function's search_path puts pg_temp last. Behaviour otherwise as
--    in V23 and V24.

CREATE OR REPLACE FUNCTION access_log_before_insert() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    owner_ oid;
BEGIN
    SELECT relowner INTO owner_ FROM pg_catalog.pg_class
     WHERE oid = 'public.access_log'::regclass;
    IF pg_catalog.pg_has_role(current_user, owner_, 'MEMBER') THEN
        IF NEW.id IS NULL THEN
            NEW.id := pg_catalog.nextval('public.access_log_id_seq');
        END IF;
        RETURN NEW;
    END IF;
    NEW.id := pg_catalog.nextval('public.access_log_id_seq');
    IF NEW.at < pg_catalog.clock_timestamp() - interval '10 minutes'
       OR NEW.at > pg_catalog.clock_timestamp() + interval '1 minute' THEN
        RAISE EXCEPTION 'an access log row''s time must be now (given %)', NEW.at
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION access_log_count_read(key_name_ text, tag_ text, generation_ integer,
                                                 sealed_ bytea, addr_ inet)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    UPDATE public.access_log_reads SET count = count + 1, last_at = now()
     WHERE day = (now() AT TIME ZONE 'UTC')::date AND key_name = key_name_
       AND subject_tag = tag_;
    IF FOUND THEN
        RETURN true;
    END IF;
    IF sealed_ IS NULL OR generation_ IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO public.access_log_reads (day, key_name, subject_tag, subject_generation,
                                         subject_sealed, client_addr, first_at, last_at, count)
    VALUES ((now() AT TIME ZONE 'UTC')::date, key_name_, tag_, generation_, sealed_, addr_,
            now(), now(), 1)
    ON CONFLICT (day, key_name, subject_tag)
    DO UPDATE SET count = access_log_reads.count + 1, last_at = now();
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION access_log_close_reads()
RETURNS bigint LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp AS $$
    WITH moved AS (
        DELETE FROM public.access_log_reads WHERE day < (now() AT TIME ZONE 'UTC')::date
        RETURNING *
    ), written AS (
        INSERT INTO public.access_log (class, at, action, key_name, client_addr, subject_tag,
                                       subject_generation, subject_sealed, count)
        SELECT 'access', first_at, 'api_read', key_name, client_addr, subject_tag,
               subject_generation, subject_sealed, count
          FROM moved ORDER BY day, first_at, key_name, subject_tag
        RETURNING 1
    )
    SELECT count(*) FROM written;
$$;

-- 2. history-worker's and sync-worker's `--rebuild` empty their tables with TRUNCATE
--    (history-worker's store::TABLES, sync-worker's catalog::TABLES): exactly those, never a
--    table of the access log.
GRANT TRUNCATE ON public.watch_sessions TO kollus_service;
GRANT TRUNCATE ON public.channel_memberships, public.media_contents, public.uploads,
                  public.content_events, public.snapshot_channels TO kollus_service;

-- 3. A month created while rows arrive: an insert landing in DEFAULT between the count (or the
--    move) and the CREATE/ATTACH failed the creation. The class's table (with every partition,
--    DEFAULT included) is locked against writes first, only when a month is missing; inserts
--    wait at the class's table, before they hold any lock on DEFAULT, so the upgrade to
--    CREATE/ATTACH's locks does not deadlock with them. Names are qualified as in 1.
CREATE OR REPLACE FUNCTION access_log_ensure_partitions(from_ timestamptz, months integer)
RETURNS integer LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
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
                IF to_regclass(format('public.%I', tbl)) IS NULL THEN
                    EXECUTE format('LOCK TABLE public.%I IN SHARE ROW EXCLUSIVE MODE',
                                   parent || '_' || cls);
                    EXECUTE format('SELECT count(*) FROM public.%I WHERE at >= %L AND at < %L',
                                   parent || '_' || cls || '_default', m,
                                   m + interval '1 month') INTO n;
                    IF n = 0 THEN
                        EXECUTE format(
                            'CREATE TABLE public.%I PARTITION OF public.%I '
                            'FOR VALUES FROM (%L) TO (%L)',
                            tbl, parent || '_' || cls, m, m + interval '1 month');
                    ELSE
                        EXECUTE format('CREATE TABLE public.%I (LIKE public.%I '
                                       'INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                                       tbl, parent || '_' || cls);
                        EXECUTE format(
                            'WITH moved AS (DELETE FROM public.%I WHERE at >= %L AND at < %L '
                            'RETURNING *) INSERT INTO public.%I SELECT * FROM moved',
                            parent || '_' || cls || '_default', m, m + interval '1 month', tbl);
                        EXECUTE format(
                            'ALTER TABLE public.%I ATTACH PARTITION public.%I '
                            'FOR VALUES FROM (%L) TO (%L)',
                            parent || '_' || cls, tbl, m, m + interval '1 month');
                    END IF;
                    EXECUTE format('REVOKE ALL ON public.%I FROM kollus_service', tbl);
                    EXECUTE format('GRANT SELECT, INSERT ON public.%I TO kollus_service', tbl);
                    created := created + 1;
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;
