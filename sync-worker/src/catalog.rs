//! Applying platform callbacks to the catalog tables (`migrations/V1__init.sql`).
//!
//! Idempotence: each envelope id is inserted into `content_events` first, in the same
//! transaction as its effects; a record already there is skipped, so re-delivery changes nothing.
//!
//! Ordering: callbacks carry no event time, so the receive time is the only clock. Membership of
//! a video in a channel is decided by the latest-received membership event (ties broken by the
//! time-ordered envelope id); an older one arriving later (a Kafka re-delivery, a replay) is
//! recorded in `content_events` but does not change the membership. A delete is final: Kollus
//! has no undelete, so a later join does not make a deleted video playable again.

use deadpool_postgres::{Pool, Transaction};
use kollus_common::envelope::Envelope;
use kollus_common::kollus::platform::{ChannelRef, ContentChange, ContentEvent, TranscodingResult};
use kollus_common::worker::{decode_batch, Applied, Apply, ApplyError};
use rdkafka::message::OwnedMessage;
use time::OffsetDateTime;

use crate::metrics::Metrics;

pub struct Catalog {
    pub pool: Pool,
    pub metrics: Metrics,
}

type Event = Envelope<ContentEvent>;

impl Apply for Catalog {
    async fn apply(&self, batch: &[OwnedMessage]) -> Result<Applied, ApplyError> {
        let started = std::time::Instant::now();
        let (events, rejected) = decode_batch::<ContentEvent>(batch);
        let mut applied = Applied {
            rejected,
            newest_received_at: None,
        };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut outcomes = Vec::with_capacity(events.len());
        for (_, event) in &events {
            let fresh = apply_one(&tx, event).await?;
            outcomes.push((event.payload.change.label(), fresh));
            applied.newest_received_at = applied.newest_received_at.max(Some(event.received_at));
        }
        tx.commit().await?;

        for (kind, fresh) in outcomes {
            let outcome = if fresh { "applied" } else { "duplicate" };
            self.metrics
                .records
                .with_label_values(&[kind, outcome])
                .inc();
        }
        if !applied.rejected.is_empty() {
            self.metrics
                .records
                .with_label_values(&["unknown", "rejected"])
                .inc_by(applied.rejected.len() as u64);
        }
        self.metrics
            .apply_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(applied)
    }
}

/// Applies one event; false when it had been applied before.
async fn apply_one(tx: &Transaction<'_>, event: &Event) -> anyhow::Result<bool> {
    let e = &event.payload;
    let at = event.received_at;
    let media = e.media_content_key().map(|k| k.as_str());
    let channel = match &e.change {
        ContentChange::ChannelJoined { channel } | ContentChange::ChannelLeft { channel } => {
            Some(channel.channel_key.as_str())
        }
        ContentChange::OtherUpdate { channel_key, .. } => channel_key.as_ref().map(|c| c.as_str()),
        _ => None,
    };
    let first_time = tx
        .execute(
            "INSERT INTO content_events (envelope_id, received_at, kind, change, upload_file_key, \
                                         media_content_key, channel_key, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (envelope_id) DO NOTHING",
            &[
                &event.id,
                &at,
                &event.kind.as_str(),
                &e.change.label(),
                &e.upload_file_key.as_str(),
                &media,
                &channel,
                &serde_json::to_value(e)?,
            ],
        )
        .await?
        == 1;
    if !first_time {
        return Ok(false);
    }

    upsert_upload(tx, e, at).await?;
    if let Some(media) = media {
        upsert_media(tx, media, e.upload_file_key.as_str(), at).await?;
    }
    let upload = e.upload_file_key.as_str();
    match &e.change {
        ContentChange::Uploaded => {
            tx.execute(
                "UPDATE uploads SET uploaded_at = LEAST(uploaded_at, $2) WHERE upload_file_key = $1",
                &[&upload, &at],
            )
            .await?;
        }
        ContentChange::Transcoded { result } => {
            let state = match result {
                TranscodingResult::Success => "success",
                TranscodingResult::Fail => "fail",
            };
            // The latest-received transcoding result wins (a re-transcode may follow a failure).
            tx.execute(
                "UPDATE uploads SET transcoding_state = $2, transcoded_at = $3 \
                 WHERE upload_file_key = $1 AND (transcoded_at IS NULL OR transcoded_at <= $3)",
                &[&upload, &state, &at],
            )
            .await?;
        }
        ContentChange::ChannelJoined { channel } => {
            set_membership(tx, channel, true, event).await?
        }
        ContentChange::ChannelLeft { channel } => set_membership(tx, channel, false, event).await?,
        ContentChange::Deleted { .. } => {
            tx.execute(
                "UPDATE uploads SET deleted_at = LEAST(deleted_at, $2) WHERE upload_file_key = $1",
                &[&upload, &at],
            )
            .await?;
        }
        ContentChange::PosterChanged { .. } => {
            tx.execute(
                "UPDATE uploads SET poster_changed_at = GREATEST(poster_changed_at, $2) \
                 WHERE upload_file_key = $1",
                &[&upload, &at],
            )
            .await?;
        }
        ContentChange::OtherUpdate { update_type, .. } => {
            tracing::info!(%update_type, upload, "unknown update_type kept in content_events");
        }
    }
    Ok(true)
}

/// Creates the upload on first sight (callbacks can precede the upload callback) and keeps its
/// descriptive fields from the latest-received event that has them.
async fn upsert_upload(
    tx: &Transaction<'_>,
    e: &ContentEvent,
    at: OffsetDateTime,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO uploads AS u (upload_file_key, content_provider_key, filename, full_filename, \
                                   first_event_at, last_event_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (upload_file_key) DO UPDATE SET \
           content_provider_key = CASE WHEN EXCLUDED.last_event_at >= u.last_event_at \
               THEN COALESCE(EXCLUDED.content_provider_key, u.content_provider_key) \
               ELSE COALESCE(u.content_provider_key, EXCLUDED.content_provider_key) END, \
           filename = CASE WHEN EXCLUDED.last_event_at >= u.last_event_at \
               THEN COALESCE(EXCLUDED.filename, u.filename) \
               ELSE COALESCE(u.filename, EXCLUDED.filename) END, \
           full_filename = CASE WHEN EXCLUDED.last_event_at >= u.last_event_at \
               THEN COALESCE(EXCLUDED.full_filename, u.full_filename) \
               ELSE COALESCE(u.full_filename, EXCLUDED.full_filename) END, \
           first_event_at = LEAST(u.first_event_at, EXCLUDED.first_event_at), \
           last_event_at = GREATEST(u.last_event_at, EXCLUDED.last_event_at)",
        &[
            &e.upload_file_key.as_str(),
            &e.content_provider_key,
            &e.filename,
            &e.full_filename,
            &at,
        ],
    )
    .await?;
    Ok(())
}

async fn upsert_media(
    tx: &Transaction<'_>,
    media: &str,
    upload: &str,
    at: OffsetDateTime,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO media_contents AS m (media_content_key, upload_file_key, first_event_at, last_event_at) \
         VALUES ($1, $2, $3, $3) \
         ON CONFLICT (media_content_key) DO UPDATE SET \
           first_event_at = LEAST(m.first_event_at, EXCLUDED.first_event_at), \
           last_event_at = GREATEST(m.last_event_at, EXCLUDED.last_event_at)",
        &[&media, &upload, &at],
    )
    .await?;
    Ok(())
}

async fn set_membership(
    tx: &Transaction<'_>,
    channel: &ChannelRef,
    joined: bool,
    event: &Event,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO channel_memberships AS c (media_content_key, channel_key, channel_name, \
             profile_keys, in_channel, joined_at, left_at, decided_at, decided_by) \
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 THEN $6::timestamptz END, \
                 CASE WHEN NOT $5 THEN $6::timestamptz END, $6, $7) \
         ON CONFLICT (media_content_key, channel_key) DO UPDATE SET \
           channel_name = COALESCE(EXCLUDED.channel_name, c.channel_name), \
           profile_keys = EXCLUDED.profile_keys, \
           in_channel = EXCLUDED.in_channel, \
           joined_at = COALESCE(EXCLUDED.joined_at, c.joined_at), \
           left_at = COALESCE(EXCLUDED.left_at, c.left_at), \
           decided_at = EXCLUDED.decided_at, \
           decided_by = EXCLUDED.decided_by \
         WHERE (EXCLUDED.decided_at, EXCLUDED.decided_by) > (c.decided_at, c.decided_by)",
        &[
            &channel.media_content_key.as_str(),
            &channel.channel_key.as_str(),
            &channel.channel_name,
            &channel.profile_keys,
            &joined,
            &event.received_at,
            &event.id,
        ],
    )
    .await?;
    Ok(())
}
