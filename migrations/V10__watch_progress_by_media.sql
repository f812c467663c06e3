-- The per-video export (GET /v1/media/{key}/export) reads every user's rollup of one video.
CREATE INDEX watch_progress_media_idx ON watch_progress (media_content_key);
