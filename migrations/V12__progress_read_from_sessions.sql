-- The per-(user, video) rollup is read from the sessions instead of stored beside them.
--
-- Kept as a table, it cost a second row write for every report (history-worker measured about
-- 1.4x more reports/s without it, bench/history.sh), and a second policy kept up by differences.
-- Read as a view, it is one index range scan over the pair's sessions (the primary key's prefix,
-- or `watch_sessions_media_idx` for a video's viewers): what the play callback, the read API and
-- the exports read stays the same, column by column.
DROP TABLE watch_progress;

-- Blocks played in either list (the longer list's length): the union of sessions' blocks.
CREATE FUNCTION blocks_or(a boolean[], b boolean[]) RETURNS boolean[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(x, false) OR coalesce(y, false) ORDER BY i), '{}')
      FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;
CREATE AGGREGATE blocks_union(boolean[]) (SFUNC = blocks_or, STYPE = boolean[], INITCOND = '{}');

-- A video's viewers (GET /v1/media/{key}/export).
CREATE INDEX watch_sessions_media_idx ON watch_sessions (media_content_key);

CREATE VIEW watch_progress AS
SELECT client_user_id,
       media_content_key,
       count(*)::integer AS sessions,
       -- Sums across different sessions are right (SPEC.md 3): each session's are its maxima.
       sum(playtime)::bigint AS total_playtime,
       sum(real_playtime)::bigint AS total_real_playtime,
       max(block_count) AS block_count,
       blocks_union(blocks_played) AS blocks_ever_played,
       coalesce(cardinality(array_positions(blocks_union(blocks_played), true)), 0)::integer
           AS blocks_watched,
       -- Resume where the latest session that reported a position left off.
       (array_agg(last_play_at ORDER BY start_at DESC)
           FILTER (WHERE last_play_at IS NOT NULL))[1] AS last_position,
       to_timestamp(min(start_at)) AS first_watched_at,
       max(last_report_at) AS last_watched_at,
       max(start_at) FILTER (WHERE last_play_at IS NOT NULL) AS last_position_start_at
  FROM watch_sessions
 GROUP BY client_user_id, media_content_key;
