-- Issue 32: the erasure barrier. Per subject tag, the latest erasure: history-worker drops every
-- report of that subject received before it (live, replayed, or rebuilt), and applies those
-- received after it (a returning user). Kept at the greatest time per tag whoever writes it:
-- `erasures` (V22) through the trigger below, and `--rebuild`, which loads it from the erasure
-- topic and the archive's key locations before the replay, so a rebuild after losing PostgreSQL
-- erases the same users. The workers' rebuild empties their own tables, never this one.
--
-- Privileges: the service role reads it and adds to it (INSERT, UPDATE); it may not delete from
-- it, and an update never moves a subject's time back (the BEFORE UPDATE trigger keeps the
-- greatest), so nothing the service does lets an erased user's past come back.
CREATE TABLE erasure_barrier (
    subject_tag text        PRIMARY KEY,
    erased_at   timestamptz NOT NULL
);

CREATE FUNCTION erasure_barrier_keep_latest() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    NEW.subject_tag := OLD.subject_tag;
    NEW.erased_at := GREATEST(OLD.erased_at, NEW.erased_at);
    RETURN NEW;
END $$;
CREATE TRIGGER erasure_barrier_keep_latest BEFORE UPDATE ON erasure_barrier
    FOR EACH ROW EXECUTE FUNCTION erasure_barrier_keep_latest();

-- An erasure's receipt raises its subject's barrier to when it was applied (when it was asked,
-- while not applied yet): in the erasure's own transaction, so a worker that waits on the
-- subject's lock (common::subject) reads it once the erasure commits.
CREATE FUNCTION erasures_raise_barrier() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO public.erasure_barrier AS b (subject_tag, erased_at)
    VALUES (NEW.subject_tag, COALESCE(NEW.applied_at, NEW.requested_at))
    ON CONFLICT (subject_tag) DO UPDATE
        SET erased_at = GREATEST(b.erased_at, EXCLUDED.erased_at);
    RETURN NULL;
END $$;
CREATE TRIGGER erasures_raise_barrier AFTER INSERT OR UPDATE OF applied_at ON erasures
    FOR EACH ROW EXECUTE FUNCTION erasures_raise_barrier();

INSERT INTO erasure_barrier (subject_tag, erased_at)
SELECT subject_tag, max(coalesce(applied_at, requested_at)) FROM erasures GROUP BY subject_tag;

REVOKE ALL ON erasure_barrier FROM kollus_service;
GRANT SELECT, INSERT, UPDATE ON erasure_barrier TO kollus_service;
