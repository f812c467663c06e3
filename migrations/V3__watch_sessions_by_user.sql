-- A user's watch history newest first (token-api's `GET /v1/users/{id}/history`): one index
-- range scan per page, whatever the number of videos.
CREATE INDEX watch_sessions_user_recent_idx
    ON watch_sessions (client_user_id, start_at DESC, media_content_key DESC);
