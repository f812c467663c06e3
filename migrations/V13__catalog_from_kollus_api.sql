-- The catalog learns from Kollus's REST API too (SPEC.md section 7, issue 22): `kollus-catalog`
-- publishes snapshot events on kollus.content.v1, and sync-worker derives these columns from them
-- beside the callbacks, still as a function of the set of events.

ALTER TABLE uploads
    ADD COLUMN title                  text,
    ADD COLUMN duration_seconds       integer,
    ADD COLUMN poster_url             text,
    -- Kollus's transcoding stage as the API said it (21 done; 0, 1, 12 in progress; any other
    -- value kept as sent), or 21 from a later successful transcoding callback.
    ADD COLUMN transcoding_stage      integer,
    ADD COLUMN transcoding_stage_name text,
    -- A complete scan did not list the upload and a detail request after a grace period did not
    -- find it: not playable. A later callback or snapshot clears it.
    ADD COLUMN absent_since           timestamptz;

-- A stage the API reports and nobody documented is `unknown` (the number is in
-- `transcoding_stage`), never refused.
ALTER TABLE uploads DROP CONSTRAINT uploads_transcoding_state_check;
ALTER TABLE uploads ADD CONSTRAINT uploads_transcoding_state_check
    CHECK (transcoding_state IN ('pending', 'success', 'fail', 'unknown'));

-- A snapshot is ordered at the instant its request started (`observed_at`), not when it reached
-- the topic: a callback received after that instant wins over it. NULL for callbacks.
ALTER TABLE content_events ADD COLUMN observed_at timestamptz;

-- The channel memberships each snapshot lists (one snapshot, several media content keys), so the
-- catalog finds a video's snapshots by its media content key. Written with its content_events row,
-- from the same envelope; no foreign key, so `TRUNCATE content_events` alone stays valid.
CREATE TABLE snapshot_channels (
    envelope_id       uuid NOT NULL,
    upload_file_key   text NOT NULL,
    media_content_key text NOT NULL,
    channel_key       text NOT NULL,
    channel_name      text,
    observed_at       timestamptz NOT NULL,
    PRIMARY KEY (envelope_id, media_content_key, channel_key)
);
CREATE INDEX snapshot_channels_media_idx ON snapshot_channels (media_content_key);
CREATE INDEX content_events_snapshot_idx ON content_events (upload_file_key)
    WHERE change = 'snapshot';

DROP VIEW content_event_order;
CREATE VIEW content_event_order AS
SELECT e.*,
       coalesce(e.observed_at, min(e.received_at) OVER copies) AS event_at,
       first_value(e.envelope_id) OVER (copies ORDER BY e.received_at, e.envelope_id) AS event_id
FROM content_events e
WINDOW copies AS (PARTITION BY e.upload_file_key, e.media_content_key,
                               coalesce(e.request_id, e.envelope_id::text));

-- Playable: in at least one channel, its upload neither deleted nor absent from Kollus.
CREATE OR REPLACE VIEW media_playability AS
SELECT m.media_content_key,
       m.upload_file_key,
       u.deleted_at,
       EXISTS (SELECT 1 FROM channel_memberships c
               WHERE c.media_content_key = m.media_content_key AND c.in_channel) AS in_any_channel,
       u.deleted_at IS NULL AND u.absent_since IS NULL
         AND EXISTS (SELECT 1 FROM channel_memberships c
                     WHERE c.media_content_key = m.media_content_key AND c.in_channel) AS playable,
       u.absent_since
FROM media_contents m JOIN uploads u USING (upload_file_key);
