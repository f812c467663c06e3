-- The session merge lives once, in Rust (history-worker/src/sessions.rs): the worker writes a row
-- back only if unchanged since it read it, so nothing is left for an SQL copy of the policy.
DROP FUNCTION IF EXISTS merge_max(bigint[], bigint[]);
DROP FUNCTION IF EXISTS merge_or(boolean[], boolean[]);

-- The rollup is kept up to date from each session's change (history-worker/src/progress.rs), so
-- it remembers which session its last_position came from: the latest one that reported one.
ALTER TABLE watch_progress ADD COLUMN last_position_start_at bigint;
UPDATE watch_progress p
   SET last_position_start_at = latest.start_at
  FROM (SELECT DISTINCT ON (client_user_id, media_content_key)
               client_user_id, media_content_key, start_at
          FROM watch_sessions
         WHERE last_play_at IS NOT NULL
         ORDER BY client_user_id, media_content_key, start_at DESC) latest
 WHERE p.client_user_id = latest.client_user_id
   AND p.media_content_key = latest.media_content_key;

-- Reports merged into the pair's sessions: raised by every write, so the worker can tell a row
-- is as it read it (history-worker/src/store.rs), and worth showing besides.
ALTER TABLE watch_progress ADD COLUMN reports bigint NOT NULL DEFAULT 0;
UPDATE watch_progress p
   SET reports = s.reports
  FROM (SELECT client_user_id, media_content_key, sum(reports)::bigint AS reports
          FROM watch_sessions GROUP BY 1, 2) s
 WHERE p.client_user_id = s.client_user_id
   AND p.media_content_key = s.media_content_key;
