-- Issue 31's review (findings 6 and 10).
--
-- The product app's reads of a day are, until the day is over, only a counter. The service role
-- could lower or delete it (a leaked credential erasing a day's reads unnoticed): from here on it
-- may only read the counters; it adds to one through `access_log_count_read`, and the sealer
-- turns finished days into `api_read` rows through `access_log_close_reads`, both functions of
-- the migration role (SECURITY DEFINER) that never lower or remove a count but to move it into
-- the log.

-- One read of `tag_`'s data by `key_name_` today (UTC): the day's counter plus one. Without a
-- sealed id (`sealed_` NULL) only an existing counter is counted: false says there is none yet,
-- and the caller asks again with the id sealed under the subject's key. True once counted.
CREATE FUNCTION access_log_count_read(key_name_ text, tag_ text, generation_ integer,
                                      sealed_ bytea, addr_ inet)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    UPDATE access_log_reads SET count = count + 1, last_at = now()
     WHERE day = (now() AT TIME ZONE 'UTC')::date AND key_name = key_name_
       AND subject_tag = tag_;
    IF FOUND THEN
        RETURN true;
    END IF;
    IF sealed_ IS NULL OR generation_ IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO access_log_reads (day, key_name, subject_tag, subject_generation,
                                  subject_sealed, client_addr, first_at, last_at, count)
    VALUES ((now() AT TIME ZONE 'UTC')::date, key_name_, tag_, generation_, sealed_, addr_,
            now(), now(), 1)
    ON CONFLICT (day, key_name, subject_tag)
    DO UPDATE SET count = access_log_reads.count + 1, last_at = now();
    RETURN true;
END $$;

-- Every finished day's (UTC) counters moved into the log, one `api_read` row each (at: the day's
-- first read; a row of the migration role, so a window on `at` for the service role does not
-- apply); returns how many.
CREATE FUNCTION access_log_close_reads()
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    WITH moved AS (
        DELETE FROM access_log_reads WHERE day < (now() AT TIME ZONE 'UTC')::date
        RETURNING *
    ), written AS (
        INSERT INTO access_log (class, at, action, key_name, client_addr, subject_tag,
                                subject_generation, subject_sealed, count)
        SELECT 'access', first_at, 'api_read', key_name, client_addr, subject_tag,
               subject_generation, subject_sealed, count
          FROM moved ORDER BY day, first_at, key_name, subject_tag
        RETURNING 1
    )
    SELECT count(*) FROM written;
$$;

REVOKE EXECUTE ON FUNCTION access_log_count_read(text, text, integer, bytea, inet) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION access_log_close_reads() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION access_log_count_read(text, text, integer, bytea, inet)
    TO kollus_service;
GRANT EXECUTE ON FUNCTION access_log_close_reads() TO kollus_service;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON access_log_reads FROM kollus_service;

-- The monthly review reads a month's rows of some actions (downloads, refused sign-ins): by
-- action first, so a load reads those rows, not every row of the month.
CREATE INDEX access_log_action_at_idx ON access_log (action, at);
