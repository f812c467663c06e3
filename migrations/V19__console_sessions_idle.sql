-- Issue 30: a console session also ends when idle. `last_seen_at` is when its agent last loaded a
-- page (each page moves it); a session idle longer than CONSOLE_IDLE_MINUTES is refused and
-- deleted. Existing sessions count as seen now. Names no user: erasure is unaffected.
ALTER TABLE console_sessions ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();
