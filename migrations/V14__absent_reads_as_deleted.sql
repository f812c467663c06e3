-- A confirmed absence (`uploads.absent_since`, V13) is a delete whose callback never reached us:
-- Kollus has no other way to say a video is gone (SPEC.md section 7). Readers that ask the view
-- "deleted?" (token-api's strict catalog) must refuse it too, so the view's `deleted_at` is the
-- callback's delete or, missing that, the absence; `absent_since` tells the two apart, and a
-- later callback or snapshot that clears the absence makes the video playable again.
CREATE OR REPLACE VIEW media_playability AS
SELECT m.media_content_key,
       m.upload_file_key,
       coalesce(u.deleted_at, u.absent_since) AS deleted_at,
       EXISTS (SELECT 1 FROM channel_memberships c
               WHERE c.media_content_key = m.media_content_key AND c.in_channel) AS in_any_channel,
       u.deleted_at IS NULL AND u.absent_since IS NULL
         AND EXISTS (SELECT 1 FROM channel_memberships c
                     WHERE c.media_content_key = m.media_content_key AND c.in_channel) AS playable,
       u.absent_since
FROM media_contents m JOIN uploads u USING (upload_file_key);
