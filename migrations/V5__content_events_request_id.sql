-- Production Kollus callbacks carry a `request_id` (SPEC.md 4.4). Copies with the same id are one
-- Kollus event (a retry): the catalog dates such an event by its *first* copy, so a retry of an
-- old join that arrives after the leave that followed it can never override that leave.
ALTER TABLE content_events ADD COLUMN request_id text;
-- Events applied before the id was parsed kept it among the unmodelled fields.
UPDATE content_events
   SET request_id = coalesce(payload->>'request_id', payload->'extra'->>'request_id')
 WHERE request_id IS NULL;
CREATE INDEX content_events_media_idx ON content_events (media_content_key);

-- Every event with the time and id the catalog orders it by: those of the earliest-received copy
-- of its Kollus event (same upload and `request_id`), or its own when it has no `request_id`.
-- The partition names the upload and the media key, so a filter on either is applied before the
-- window (PostgreSQL pushes it down) and a batch reads only the rows of its keys.
CREATE VIEW content_event_order AS
SELECT e.*,
       min(e.received_at) OVER copies AS event_at,
       first_value(e.envelope_id) OVER (copies ORDER BY e.received_at, e.envelope_id) AS event_id
FROM content_events e
WINDOW copies AS (PARTITION BY e.upload_file_key, e.media_content_key,
                               coalesce(e.request_id, e.envelope_id::text));
