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

use std::collections::{BTreeSet, HashSet};

use deadpool_postgres::{Pool, Transaction};
use kollus_common::kollus::platform::{ContentChange, ContentEvent};
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
        for (i, id) in log.id.iter().enumerate() {
            if fresh.contains(id) {
                uploads.insert(log.upload[i]);
                media.extend(log.media[i]);
            }
        }
        let uploads: Vec<&str> = uploads.into_iter().collect();
        let media: Vec<&str> = media.into_iter().collect();
        if !uploads.is_empty() {
            tx.execute(DERIVE_UPLOADS, &[&uploads]).await?;
            tx.execute(DERIVE_MEDIA, &[&media]).await?;
            tx.execute(DERIVE_MEMBERSHIPS, &[&media]).await?;
        }
        tx.commit().await?;

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
    payload: Vec<serde_json::Value>,
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
            ContentChange::Uploaded | ContentChange::Transcoded { .. } => None,
        };
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
                                         media_content_key, channel_key, payload, request_id) \
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], \
                                  $5::text[], $6::text[], $7::text[], $8::jsonb[], $9::text[]) \
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
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

// "Latest event that has it": the first element of an aggregate ordered newest first, by each
// event's `event_at`/`event_id` (its first copy's; `content_event_order`), then its own id so
// that copies tie deterministically. The payload is the serialized `ContentEvent`
// (common/src/kollus/platform.rs).

/// Recomputes `uploads` rows ($1: upload keys) from all their events.
const DERIVE_UPLOADS: &str = "
INSERT INTO uploads AS u (upload_file_key, content_provider_key, filename, full_filename,
                          uploaded_at, transcoding_state, transcoded_at, deleted_at,
                          poster_changed_at, first_event_at, last_event_at)
SELECT upload_file_key,
       (array_agg(payload->>'content_provider_key' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE payload ? 'content_provider_key'))[1],
       (array_agg(payload->>'filename' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE payload ? 'filename'))[1],
       (array_agg(payload->>'full_filename' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE payload ? 'full_filename'))[1],
       min(event_at) FILTER (WHERE change = 'uploaded'),
       coalesce((array_agg(payload->'change'->>'result' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
            FILTER (WHERE change = 'transcoded'))[1], 'pending'),
       max(event_at) FILTER (WHERE change = 'transcoded'),
       min(event_at) FILTER (WHERE change = 'content_delete'),
       max(event_at) FILTER (WHERE change = 'content_poster'),
       min(event_at),
       max(event_at)
FROM content_event_order
WHERE upload_file_key = ANY($1::text[])
GROUP BY upload_file_key
ON CONFLICT (upload_file_key) DO UPDATE SET
    content_provider_key = EXCLUDED.content_provider_key,
    filename = EXCLUDED.filename,
    full_filename = EXCLUDED.full_filename,
    uploaded_at = EXCLUDED.uploaded_at,
    transcoding_state = EXCLUDED.transcoding_state,
    transcoded_at = EXCLUDED.transcoded_at,
    deleted_at = EXCLUDED.deleted_at,
    poster_changed_at = EXCLUDED.poster_changed_at,
    first_event_at = EXCLUDED.first_event_at,
    last_event_at = EXCLUDED.last_event_at";

/// Recomputes `media_contents` rows ($1: media content keys) from all their events. A media
/// content key belongs to the upload its latest-received event names.
const DERIVE_MEDIA: &str = "
INSERT INTO media_contents AS m (media_content_key, upload_file_key, first_event_at, last_event_at)
SELECT media_content_key,
       (array_agg(upload_file_key ORDER BY event_at DESC, event_id DESC, envelope_id DESC))[1],
       min(event_at),
       max(event_at)
FROM content_event_order
WHERE media_content_key = ANY($1::text[])
GROUP BY media_content_key
ON CONFLICT (media_content_key) DO UPDATE SET
    upload_file_key = EXCLUDED.upload_file_key,
    first_event_at = EXCLUDED.first_event_at,
    last_event_at = EXCLUDED.last_event_at";

/// Recomputes `channel_memberships` ($1: media content keys) from their membership events.
const DERIVE_MEMBERSHIPS: &str = "
WITH ev AS (
    SELECT media_content_key, channel_key, event_at, event_id, envelope_id,
           change = 'channel_join' AS joined, payload->'change'->'channel' AS ch
    FROM content_event_order
    WHERE media_content_key = ANY($1::text[]) AND change IN ('channel_join', 'channel_leave')
), summary AS (
    SELECT media_content_key, channel_key,
           max(event_at) FILTER (WHERE joined) AS joined_at,
           max(event_at) FILTER (WHERE NOT joined) AS left_at,
           (array_agg(ch->>'channel_name' ORDER BY event_at DESC, event_id DESC, envelope_id DESC)
                FILTER (WHERE ch ? 'channel_name'))[1] AS channel_name
    FROM ev GROUP BY media_content_key, channel_key
), decider AS (
    SELECT DISTINCT ON (media_content_key, channel_key)
           media_content_key, channel_key, joined, event_at, event_id,
           ARRAY(SELECT jsonb_array_elements_text(coalesce(ch->'profile_keys', '[]'))) AS profile_keys
    FROM ev
    ORDER BY media_content_key, channel_key, event_at DESC, event_id DESC, envelope_id DESC
)
INSERT INTO channel_memberships AS c (media_content_key, channel_key, channel_name, profile_keys,
                                      in_channel, joined_at, left_at, decided_at, decided_by)
SELECT d.media_content_key, d.channel_key, s.channel_name, d.profile_keys,
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
