-- When each LMS report was applied (the start of the applying transaction): with `received_at`,
-- how long a report took from ingest to its session row. content_events has the same column.
ALTER TABLE playback_events ADD COLUMN applied_at timestamptz NOT NULL DEFAULT now();
