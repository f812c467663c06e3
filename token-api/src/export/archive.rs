//! The raw LMS reports of a user's export, from the archive (`ARCHIVE_DIR`).

use serde_json::Value;

use super::sink::Sink;

/// Where the raw reports are: the archive, and the name the playback topic has in it
/// (`KAFKA_PLAYBACK_TOPIC`, as the services that wrote it were told).
#[derive(Clone)]
pub struct RawReports {
    pub archive: kollus_archive::store::Archive,
    pub topic: String,
    /// What opens the user's frames: the tagger names the user's segments (the manifest's
    /// per-user index), the key location and the KEK open that user's frame only.
    pub keys: ArchiveKeys,
}

#[derive(Clone)]
pub struct ArchiveKeys {
    pub tagger: kollus_common::subject::Tagger,
    /// The archive's key location (`kollus_common::erasure::keys_location`).
    pub location: String,
    pub kek_file: std::path::PathBuf,
}

/// The user's LMS reports as received, from the archive: a segment's manifest entry lists the
/// subject tags it holds frames of, so only the segments naming the user's tag are read, and in
/// each only that frame is opened (segments from before subject keys are read whole; playback
/// records are keyed `{client_user_id}\u{1f}{media_content_key}`, so the key alone selects
/// them). An erased user's frames no longer open: nothing of them is exported. Each report once
/// by envelope id, however often it was archived: twice after a crash of `dump`, or in two
/// epochs (a record restored into a new cluster is the same record). Then an `archive_coverage`
/// line: the newest archived record's time, since a report sent later may still sit in a
/// segment the archive has not closed.
pub async fn raw_reports(source: &RawReports, user: &str, sink: &mut Sink) -> anyhow::Result<()> {
    use kollus_archive::record::Bytes as Raw;
    let archive = &source.archive;
    let prefix = format!("{user}\u{1f}");
    let mut seen = std::collections::HashSet::new();
    let entries = kollus_archive::verify::entries(archive).await?;
    let tag = source.keys.tagger.tag(user).to_string();
    let mine: Vec<_> = entries
        .iter()
        .filter(|e| e.topic == source.topic)
        .filter(|e| e.subjects.as_ref().is_none_or(|s| s.contains(&tag)))
        .collect();
    let mut ring = if kollus_common::archive::holds_frames(&entries) {
        Some(
            kollus_common::archive::KeyRing::open(&source.keys.location, &source.keys.kek_file)
                .await?,
        )
    } else {
        None
    };
    for entry in mine {
        let (records, _) =
            kollus_common::archive::read_segment(archive, entry, ring.as_mut(), Some(&tag)).await?;
        for r in records {
            let mine = matches!(&r.key, Some(Raw::Text(k)) if k.starts_with(&prefix));
            if !mine || !seen.insert(r.identity()) {
                continue;
            }
            let value = match &r.value {
                Some(Raw::Text(t)) => serde_json::from_str(t).unwrap_or(Value::String(t.clone())),
                Some(other) => serde_json::to_value(other)?,
                None => Value::Null,
            };
            let line = serde_json::json!({
                "type": "lms_report", "topic": r.topic, "partition": r.partition,
                "epoch": entry.epoch, "offset": r.offset, "timestamp": r.timestamp,
                "envelope": value,
            });
            if !sink.push(format!("{line}\n").as_bytes()).await {
                return Ok(());
            }
        }
    }
    let covered_until = kollus_common::archive::covered_until(&entries, &source.topic)
        .and_then(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    let line = serde_json::json!({
        "type": "archive_coverage",
        "covered_until": covered_until,
        "detail": "raw reports are those archived up to covered_until; a report sent later may \
                   not be archived yet (a segment closes within ARCHIVE_SEGMENT_SECONDS)",
    });
    sink.push(format!("{line}\n").as_bytes()).await;
    Ok(())
}
