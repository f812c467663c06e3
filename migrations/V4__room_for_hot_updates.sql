-- Sessions and rollups are updated in place many times (every LMS report of a session). With
-- room left on each page, PostgreSQL can update a row without touching its indexes (a HOT
-- update): measured on the history benchmark, see README "Benchmarks".
ALTER TABLE watch_sessions SET (fillfactor = 70);
ALTER TABLE watch_progress SET (fillfactor = 70);
