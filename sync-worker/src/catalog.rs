//! Applying platform callbacks to the catalog tables (`migrations/V1__init.sql`).
//!
//! The catalog is a function of the *set* of callbacks received, so it cannot depend on the
//! order they arrive in or on how often each does:
//!
//! 1. Each batch's envelopes are inserted into `content_events` (the audit log), keyed by
//!    envelope id: a re-delivered record inserts nothing. This is how applying twice changes
//!    nothing.
//! 2. For every upload and media content key a batch brought a new event for, the rows of
//!    `uploads`, `media_contents` and `channel_memberships` are recomputed from all of that key's
//!    events in `content_events` (a handful per video), in the same transaction.
//!
//! Rules the recomputation applies. Callbacks carry no event time (SPEC.md section 2), so
//! ingest's receive time is the only clock; ties are broken by the envelope id (UUIDv7,
//! time-ordered), so there are none. Production callbacks carry a `request_id` (SPEC.md 4.4):
//! copies with the same upload and `request_id` are one Kollus event, ordered by the time and id
//! of its *first-received* copy (the `content_event_order` view, `migrations/V5`).
//! - Membership of a video in a channel: decided by the latest-received `channel_join` or
//!   `channel_leave` for that pair; `joined_at` / `left_at` are the latest of each.
//! - **Stale retries.** A Kafka re-delivery or a replay keeps its original envelope and receive
//!   time, so it can never override a later event. A *Kollus* retry of an event we already have
//!   carries its `request_id`, so it takes the first copy's time and cannot override a later
//!   event either. Only a callback without `request_id` that Kollus retries after a later event
//!   (its first try never reached us) wins by arriving last: nothing in it tells the two apart;
//!   `content_events` keeps the whole sequence so support can see it.
//! - Descriptive fields (filename, provider key, channel name, profile keys) come from the
//!   latest-received event that carries them; the transcoding state from the latest-received
//!   transcoding callback.
//! - A delete is final: Kollus has no undelete, so no later join makes a deleted video playable.
//! - An unknown `update_type` is kept in `content_events` and changes nothing else.
//!
//! Snapshots (envelope kind `snapshot`, published by `kollus-catalog` from Kollus's REST API,
//! SPEC.md section 7) are events too, ordered at the instant their request *started*
//! (`observed_at`), because Kollus's answers may be cached: a callback received after that
//! instant always wins over a snapshot, one received before it loses to it.
//! - Title, duration, poster URL and the transcoding stage come from the latest snapshot that
//!   carries them (a later transcoding callback sets the stage: success is 21). The upload time
//!   and transcoding time from callbacks, else from the snapshot.
//! - A found snapshot lists every channel the upload is in (`snapshot_channels`): a listed pair
//!   is a join, and a channel the video was known in but the snapshot does not list is a leave,
//!   each at the snapshot's instant. `joined_at` / `left_at` stay the callbacks' own times.
//! - "Replace content" moves a media content key to another upload: the key belongs to the
//!   upload of its latest event, a snapshot listing it included.
//! - A snapshot never deletes. One that says the upload is absent (a complete scan and a detail
//!   request did not find it) sets `absent_since` until any later event clears it.

use std::collections::{BTreeSet, HashSet};

use deadpool_postgres::{Pool, Transaction};
use kollus_common::kollus::platform::{ContentChange, ContentEvent};
use kollus_common::kollus::snapshot::UploadSnapshot;
use kollus_common::worker::{Applied, Apply, ApplyError, Record};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::metrics::Metrics;

pub struct Catalog {
    pub pool: Pool,
    pub metrics: Metrics,
}

/// The catalog's tables, in an order `TRUNCATE` accepts together.
pub const TABLES: &[&str] = &[
    "channel_memberships",
    "media_contents",
    "uploads",
    "content_events",
    "snapshot_channels",
];

impl Apply for Catalog {
    type Payload = ContentEvent;

    async fn apply(&self, batch: &[Record<ContentEvent>]) -> Result<Applied, ApplyError> {
        let started = std::time::Instant::now();
        let mut log = EventColumns::default();
        for Record {
            envelope: event, ..
        } in batch
        {
            // The payload is re-serialized for the audit log: should that ever fail, retrying
            // cannot help, so the batch is refused and the culprit dead-lettered.
            log.push(
                event.id,
                event.received_at,
                event.kind.as_str(),
                &event.payload,
            )
            .map_err(ApplyError::Permanent)?;
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut fresh = insert_events(&tx, &log).await?;
        let mut uploads = BTreeSet::new();
        let mut media = BTreeSet::new();
        let mut snapshot_uploads = BTreeSet::new();
        for (i, id) in log.id.iter().enumerate() {
            if fresh.contains(id) {
                uploads.insert(log.upload[i]);
                media.extend(log.media[i]);
                if log.observed_at[i].is_some() {
                    snapshot_uploads.insert(log.upload[i]);
                }
            }
        }
        let listed = insert_snapshot_channels(&tx, &log.channels, &fresh).await?;
        media.extend(listed.iter().map(String::as_str));
        let uploads: Vec<&str> = uploads.into_iter().collect();
        let mut media: Vec<&str> = media.into_iter().collect();
        let snapshot_uploads: Vec<&str> = snapshot_uploads.into_iter().collect();
        let mut absent_before = Vec::new();
        let mut absent_after = Vec::new();
        if !uploads.is_empty() {
            absent_before = absent_among(&tx, &uploads).await?;
            tx.execute(DERIVE_UPLOADS, &[&uploads]).await?;
            // Only a snapshot sets an absence, and only an absent upload can lose one.
            if !absent_before.is_empty() || !snapshot_uploads.is_empty() {
                absent_after = absent_among(&tx, &uploads).await?;
            }
            tx.execute(DERIVE_MEDIA, &[&media]).await?;
            // A snapshot of an upload speaks for every media content key of it, listed or not.
            let linked: Vec<String> = tx
                .query(
                    "SELECT media_content_key FROM media_contents \
                     WHERE upload_file_key = ANY($1::text[])",
                    &[&snapshot_uploads],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            media.extend(linked.iter().map(String::as_str));
            media.sort_unstable();
            media.dedup();
            tx.execute(DERIVE_MEMBERSHIPS, &[&media]).await?;
        }
        tx.commit().await?;

        let marked = absent_after
            .iter()
            .filter(|u| !absent_before.contains(u))
            .count();
        let cleared = absent_before
            .iter()
            .filter(|u| !absent_after.contains(u))
            .count();
        self.metrics
            .absences
            .with_label_values(&["marked"])
            .inc_by(marked as u64);
        self.metrics
            .absences
            .with_label_values(&["cleared"])
            .inc_by(cleared as u64);
        for (id, change) in log.id.iter().zip(&log.change) {
            // The first copy of a fresh envelope in the batch is the applied one.
            let outcome = if fresh.remove(id) {
                "applied"
            } else {
                "duplicate"
            };
            self.metrics
                .records
                .with_label_values(&[change, outcome])
                .inc();
        }
        self.metrics
            .apply_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(Applied::default())
    }

    async fn reset(&self) -> Result<(), ApplyError> {
        let client = self.pool.get().await?;
        client
            .batch_execute(&format!("TRUNCATE {}", TABLES.join(", ")))
            .await?;
        Ok(())
    }
}

/// A batch's events as columns, for one `unnest` insert.
#[derive(Default)]
struct EventColumns<'a> {
    id: Vec<Uuid>,
    received_at: Vec<OffsetDateTime>,
    kind: Vec<&'static str>,
    change: Vec<&'static str>,
    upload: Vec<&'a str>,
    request_id: Vec<Option<&'a str>>,
    media: Vec<Option<&'a str>>,
    channel: Vec<Option<&'a str>>,
    /// Snapshots only: the instant their request started.
    observed_at: Vec<Option<OffsetDateTime>>,
    payload: Vec<serde_json::Value>,
    /// Snapshots' listed memberships, for `snapshot_channels`.
    channels: SnapshotChannelColumns<'a>,
}

/// `snapshot_channels` rows of a batch, as columns.
#[derive(Default)]
struct SnapshotChannelColumns<'a> {
    envelope_id: Vec<Uuid>,
    upload: Vec<&'a str>,
    media: Vec<&'a str>,
    channel: Vec<&'a str>,
    channel_name: Vec<Option<&'a str>>,
    observed_at: Vec<OffsetDateTime>,
}

impl<'a> EventColumns<'a> {
    fn push(
        &mut self,
        id: Uuid,
        received_at: OffsetDateTime,
        kind: &'static str,
        e: &'a ContentEvent,
    ) -> anyhow::Result<()> {
        let channel = match &e.change {
            ContentChange::ChannelJoined { channel } | ContentChange::ChannelLeft { channel } => {
                Some(channel.channel_key.as_str())
            }
            ContentChange::OtherUpdate { channel_key, .. } => {
                channel_key.as_ref().map(|c| c.as_str())
            }
            ContentChange::Deleted { channel, .. }
            | ContentChange::PosterChanged { channel, .. } => {
                channel.as_ref().map(|c| c.channel_key.as_str())
            }
            ContentChange::Uploaded
            | ContentChange::Transcoded { .. }
            | ContentChange::Snapshot(_) => None,
        };
        let snapshot: Option<&UploadSnapshot> = match &e.change {
            ContentChange::Snapshot(s) => Some(s),
            _ => None,
        };
        if let Some(s) = snapshot {
            for c in &s.channels {
                self.channels.envelope_id.push(id);
                self.channels.upload.push(e.upload_file_key.as_str());
                self.channels.media.push(c.media_content_key.as_str());
                self.channels.channel.push(c.channel_key.as_str());
                self.channels.channel_name.push(c.channel_name.as_deref());
                self.channels.observed_at.push(s.requested_at);
            }
        }
        self.observed_at.push(snapshot.map(|s| s.requested_at));
        self.id.push(id);
        self.received_at.push(received_at);
        self.kind.push(kind);
        self.change.push(e.change.label());
        self.upload.push(e.upload_file_key.as_str());
        self.request_id.push(e.request_id.as_deref());
        self.media.push(e.media_content_key().map(|k| k.as_str()));
        self.channel.push(channel);
        self.payload.push(serde_json::to_value(e)?);
        Ok(())
    }
}

/// Inserts the batch into the audit log; returns the envelope ids that were not there yet.
async fn insert_events(
    tx: &Transaction<'_>,
    log: &EventColumns<'_>,
) -> Result<HashSet<Uuid>, ApplyError> {
    let rows = tx
        .query(
            "INSERT INTO content_events (envelope_id, received_at, kind, change, upload_file_key, \
                                         media_content_key, channel_key, payload, request_id, \
                                         observed_at) \
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], \
                                  $5::text[], $6::text[], $7::text[], $8::jsonb[], $9::text[], \
                                  $10::timestamptz[]) \
             ON CONFLICT (envelope_id) DO NOTHING RETURNING envelope_id",
            &[
                &log.id,
                &log.received_at,
                &log.kind,
                &log.change,
                &log.upload,
                &log.media,
                &log.channel,
                &log.payload,
                &log.request_id,
                &log.observed_at,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Which of `uploads` are marked absent now.
async fn absent_among(tx: &Transaction<'_>, uploads: &[&str]) -> Result<Vec<String>, ApplyError> {
    let rows = tx
        .query(
            "SELECT upload_file_key FROM uploads \
             WHERE upload_file_key = ANY($1::text[]) AND absent_since IS NOT NULL",
            &[&uploads],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Inserts the memberships listed by the batch's fresh snapshots; returns their media content
/// keys. Only fresh envelopes' rows: a re-delivered snapshot's are there already.
async fn insert_snapshot_channels(
    tx: &Transaction<'_>,
    c: &SnapshotChannelColumns<'_>,
    fresh: &HashSet<Uuid>,
) -> Result<BTreeSet<String>, ApplyError> {
    let keep: Vec<usize> = (0..c.envelope_id.len())
        .filter(|&i| fresh.contains(&c.envelope_id[i]))
        .collect();
    if keep.is_empty() {
        return Ok(BTreeSet::new());
    }
    let pick = |v: &[&str]| -> Vec<String> { keep.iter().map(|&i| v[i].to_owned()).collect() };
    let ids: Vec<Uuid> = keep.iter().map(|&i| c.envelope_id[i]).collect();
    let names: Vec<Option<&str>> = keep.iter().map(|&i| c.channel_name[i]).collect();
    let at: Vec<OffsetDateTime> = keep.iter().map(|&i| c.observed_at[i]).collect();
    let media = pick(&c.media);
    tx.execute(
        "INSERT INTO snapshot_channels (envelope_id, upload_file_key, media_content_key, \
                                        channel_key, channel_name, observed_at) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                              $6::timestamptz[]) \
         ON CONFLICT DO NOTHING",
        &[
            &ids,
            &pick(&c.upload),
            &media,
            &pick(&c.channel),
            &names,
            &at,
        ],
    )
    .await?;
    Ok(media.into_iter().collect())
}

// "Latest event that has it": the first element of an aggregate ordered newest first, by each
// event's `event_at`/`event_id` (its first copy's, or a snapshot's request instant;
// `content_event_order`), then its own id so that copies tie deterministically. The payload is
// the serialized `ContentEvent` (common/src/kollus/platform.rs); a snapshot's fields are under
// `change` (common/src/kollus/snapshot.rs).

/// Recomputes `uploads` rows ($1: upload keys) from all their events.
const DERIVE_UPLOADS: &str = "
WITH ev AS (
    SELECT o.*, o.payload->'change' AS c,
           o.change = 'snapshot' AND o.payload->'change'->>'found' = 'false' AS absence
    FROM content_event_order o
    WHERE o.upload_file_key = ANY($1::text[])
), ranked AS (
    SELECT ev.*,
           max(event_at) FILTER (WHERE NOT absence) OVER (PARTITION BY upload_file_key) AS last_present,
           CASE WHEN change = 'transcoded' THEN c->>'result'
                WHEN (c->>'transcoding_stage')::bigint = 21 THEN 'success'
                WHEN (c->>'transcoding_stage')::bigint IN (0, 1, 12) THEN 'pending'
                ELSE 'unknown' END AS stage_state,
           CASE WHEN change = 'transcoded' THEN CASE WHEN c->>'result' = 'success' THEN 21 END
                ELSE (c->>'transcoding_stage')::integer END AS stage,
           change = 'transcoded' OR (change = 'snapshot' AND c ? 'transcoding_stage') AS staged
    FROM ev
)
INSERT INTO uploads AS u (upload_file_key, content_provider_key, filename, full_filename,
                          uploaded_at, transcoding_state, transcoding_stage, transcoding_stage_name,
                          transcoded_at, deleted_at, poster_changed_at, title, duration_seconds,
                          poster_url, absent_since, first_event_at, last_event_at)
SELECT upload_file_key,
       (array_agg(payload->>'content_provider_key' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE payload ? 'content_provider_key'))[1],
       (array_agg(payload->>'filename' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE payload ? 'filename'))[1],
       (array_agg(payload->>'full_filename' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE payload ? 'full_filename'))[1],
       coalesce(min(event_at) FILTER (WHERE change = 'uploaded'),
                min(to_timestamp((c->>'created_at')::bigint)) FILTER (WHERE c ? 'created_at')),
       coalesce((array_agg(stage_state ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE staged))[1], 'pending'),
       (array_agg(stage ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE staged))[1],
       (array_agg(c->>'transcoding_stage_name' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE staged))[1],
       coalesce(max(event_at) FILTER (WHERE change = 'transcoded'),
                max(to_timestamp((c->>'transcoded_at')::bigint)) FILTER (WHERE c ? 'transcoded_at')),
       min(event_at) FILTER (WHERE change = 'content_delete'),
       max(event_at) FILTER (WHERE change = 'content_poster'),
       (array_agg(c->>'title' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE change = 'snapshot' AND c ? 'title'))[1],
       (array_agg((c->>'duration_seconds')::integer ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE change = 'snapshot' AND c ? 'duration_seconds'))[1],
       (array_agg(c->>'poster_url' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE change = 'snapshot' AND c ? 'poster_url'))[1],
       min(event_at) FILTER (WHERE absence AND event_at > coalesce(last_present, '-infinity')),
       min(event_at),
       max(event_at)
FROM ranked
GROUP BY upload_file_key
ON CONFLICT (upload_file_key) DO UPDATE SET
    content_provider_key = EXCLUDED.content_provider_key,
    filename = EXCLUDED.filename,
    full_filename = EXCLUDED.full_filename,
    uploaded_at = EXCLUDED.uploaded_at,
    transcoding_state = EXCLUDED.transcoding_state,
    transcoding_stage = EXCLUDED.transcoding_stage,
    transcoding_stage_name = EXCLUDED.transcoding_stage_name,
    transcoded_at = EXCLUDED.transcoded_at,
    deleted_at = EXCLUDED.deleted_at,
    poster_changed_at = EXCLUDED.poster_changed_at,
    title = EXCLUDED.title,
    duration_seconds = EXCLUDED.duration_seconds,
    poster_url = EXCLUDED.poster_url,
    absent_since = EXCLUDED.absent_since,
    first_event_at = EXCLUDED.first_event_at,
    last_event_at = EXCLUDED.last_event_at";

/// Recomputes `media_contents` rows ($1: media content keys) from all their events. A media
/// content key belongs to the upload its latest event names: a callback, or a snapshot listing
/// it ("replace content" moves a key to another upload).
const DERIVE_MEDIA: &str = "
WITH links AS (
    SELECT media_content_key, upload_file_key, event_at, event_id, envelope_id
    FROM content_event_order
    WHERE media_content_key = ANY($1::text[])
    UNION ALL
    SELECT media_content_key, upload_file_key, observed_at, envelope_id, envelope_id
    FROM snapshot_channels
    WHERE media_content_key = ANY($1::text[])
)
INSERT INTO media_contents AS m (media_content_key, upload_file_key, first_event_at, last_event_at)
SELECT media_content_key,
       (array_agg(upload_file_key ORDER BY event_at DESC, event_id DESC, envelope_id DESC))[1],
       min(event_at),
       max(event_at)
FROM links
GROUP BY media_content_key
ON CONFLICT (media_content_key) DO UPDATE SET
    upload_file_key = EXCLUDED.upload_file_key,
    first_event_at = EXCLUDED.first_event_at,
    last_event_at = EXCLUDED.last_event_at";

/// Recomputes `channel_memberships` ($1: media content keys, whose `media_contents` rows are
/// current) from their membership events: join and leave callbacks, snapshots listing the pair
/// (a join), and found snapshots of the key's upload that do not list a pair known otherwise
/// (a leave).
const DERIVE_MEMBERSHIPS: &str = "
WITH cb AS (
    SELECT media_content_key, channel_key, event_at, event_id, envelope_id,
           change = 'channel_join' AS joined, payload->'change'->'channel' AS ch
    FROM content_event_order
    WHERE media_content_key = ANY($1::text[]) AND change IN ('channel_join', 'channel_leave')
), listed AS (
    SELECT media_content_key, channel_key, observed_at AS event_at, envelope_id AS event_id,
           envelope_id, channel_name
    FROM snapshot_channels
    WHERE media_content_key = ANY($1::text[])
), pairs AS (
    SELECT media_content_key, channel_key FROM cb
    UNION
    SELECT media_content_key, channel_key FROM listed
), unlisted AS (
    SELECT p.media_content_key, p.channel_key, e.observed_at AS event_at,
           e.envelope_id AS event_id, e.envelope_id
    FROM pairs p
    JOIN media_contents m USING (media_content_key)
    JOIN content_events e ON e.upload_file_key = m.upload_file_key AND e.change = 'snapshot'
                         AND e.payload->'change'->>'found' = 'true'
    WHERE NOT EXISTS (SELECT 1 FROM snapshot_channels s
                      WHERE s.envelope_id = e.envelope_id
                        AND s.media_content_key = p.media_content_key
                        AND s.channel_key = p.channel_key)
), ev AS (
    SELECT media_content_key, channel_key, event_at, event_id, envelope_id, joined,
           true AS callback, ch->>'channel_name' AS channel_name, ch->'profile_keys' AS profile_keys
    FROM cb
    UNION ALL
    SELECT media_content_key, channel_key, event_at, event_id, envelope_id, true, false,
           channel_name, NULL
    FROM listed
    UNION ALL
    SELECT media_content_key, channel_key, event_at, event_id, envelope_id, false, false,
           NULL, NULL
    FROM unlisted
), summary AS (
    SELECT media_content_key, channel_key,
           max(event_at) FILTER (WHERE joined AND callback) AS joined_at,
           max(event_at) FILTER (WHERE NOT joined AND callback) AS left_at,
           (array_agg(channel_name ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
                FILTER (WHERE channel_name IS NOT NULL))[1] AS channel_name,
           (array_agg(profile_keys ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
                FILTER (WHERE callback))[1] AS profile_keys
    FROM ev GROUP BY media_content_key, channel_key
), decider AS (
    SELECT DISTINCT ON (media_content_key, channel_key)
           media_content_key, channel_key, joined, event_at, event_id
    FROM ev
    ORDER BY media_content_key, channel_key, event_at DESC, event_id DESC, envelope_id DESC
)
INSERT INTO channel_memberships AS c (media_content_key, channel_key, channel_name, profile_keys,
                                      in_channel, joined_at, left_at, decided_at, decided_by)
SELECT d.media_content_key, d.channel_key, s.channel_name,
       ARRAY(SELECT jsonb_array_elements_text(coalesce(s.profile_keys, '[]'))),
       d.joined, s.joined_at, s.left_at, d.event_at, d.event_id
FROM decider d JOIN summary s USING (media_content_key, channel_key)
ON CONFLICT (media_content_key, channel_key) DO UPDATE SET
    channel_name = EXCLUDED.channel_name,
    profile_keys = EXCLUDED.profile_keys,
    in_channel = EXCLUDED.in_channel,
    joined_at = EXCLUDED.joined_at,
    left_at = EXCLUDED.left_at,
    decided_at = EXCLUDED.decided_at,
    decided_by = EXCLUDED.decided_by";
