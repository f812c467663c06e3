-- Watch history no longer remembers every report (history-worker/src/sessions.rs): the session
-- merge is a join (maxima, ORs, minima; the greatest value where a broken player's descriptive
-- fields disagree), so a report applied twice changes nothing, and what PostgreSQL keeps grows
-- with sessions, not with reports.
--
-- - `playback_events` (a claim row per report, about 100 bytes each, kept forever) goes.
-- - `reports` counted deliveries: no count of deliveries can be idempotent without remembering
--   each one, and it doubled as the optimistic-write version, which is now the row's `xmin`.
--   Replaying the same records again (a second restore, a rewind) leaves every table equal.
DROP TABLE playback_events;
ALTER TABLE watch_sessions DROP COLUMN reports;
ALTER TABLE watch_progress DROP COLUMN reports;
