-- The rollup's sums saturate at bigint's limit instead of failing the read.
--
-- `sum(bigint)` is numeric, so `sum(playtime)::bigint` raised "bigint out of range" as soon as a
-- pair's sessions added up past 2^63 - 1: two forged reports with a playtime near that limit did
-- it, and every read of the pair's progress failed from then on (token-api's play callback
-- answered 500 for that user and video). history-worker now refuses counters over 2^40
-- (history-worker/src/sessions.rs), so new sums stay far below; saturating covers rows stored
-- before that, or written by other means. Only the two sums change: columns, names and types
-- stay as V12 made them.
CREATE OR REPLACE VIEW watch_progress AS
SELECT client_user_id,
       media_content_key,
       count(*)::integer AS sessions,
       -- Sums across different sessions are right (SPEC.md 3): each session's are its maxima.
       least(sum(playtime), 9223372036854775807)::bigint AS total_playtime,
       least(sum(real_playtime), 9223372036854775807)::bigint AS total_real_playtime,
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
