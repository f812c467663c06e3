-- What real players add to a session (SPEC.md 4.2, 4.3):
-- - segments: played segments (`block_info.sessions`) as [block, start_time, play_time] triples,
--   one per (block, start_time), keeping the longest play time; in (block, start_time) order.
-- - hash_verified: NULL when no report was checked (LMS_HASH_POLICY=off); true only when every
--   report applied to the session carried a valid hash; false otherwise.
-- - device_clock: an offline report's times only fit a wrong device clock; applied, and flagged.
ALTER TABLE watch_sessions
    ADD COLUMN segments      jsonb   NOT NULL DEFAULT '[]',
    ADD COLUMN hash_verified boolean,
    ADD COLUMN device_clock  boolean NOT NULL DEFAULT false;
