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
    /// The user's latest erasure (`erasure_barrier`), when they were erased: reports received
    /// before it are left out even while an archiver has not yet destroyed the key that opens
    /// them; reports after it are a returning user's own.
    pub erased_before: Option<time::OffsetDateTime>,
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
            let erased = source
                .erased_before
                .is_some_and(|at| kollus_common::archive::subject::received_at(&r) < at);
            if !mine || erased || !seen.insert(r.identity()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use kollus_archive::record::{ArchivedRecord, Bytes};
    use kollus_common::archive::KeyRing;
    use kollus_common::erasure::ErasureEvent;

    fn record(offset: i64, user: &str) -> ArchivedRecord {
        ArchivedRecord {
            topic: "p".into(),
            partition: 0,
            offset,
            timestamp: Some(1_700_000_000_000),
            key: Some(Bytes::of(format!("{user}\u{1f}m").as_bytes())),
            headers: vec![],
            value: Some(Bytes::of(
                format!(r#"{{"id":"{user}-{offset}","n":{offset}}}"#).as_bytes(),
            )),
        }
    }

    async fn export(source: &RawReports, user: &str) -> Vec<String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let mut sink = Sink::new(
            tx,
            std::time::Duration::from_secs(10),
            tokio::time::Instant::now() + std::time::Duration::from_secs(60),
        );
        raw_reports(source, user, &mut sink).await.unwrap();
        sink.flush().await;
        drop(sink);
        let mut body = Vec::new();
        while let Some(chunk) = rx.recv().await {
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["type"] == "lms_report")
            .map(|l| l["envelope"]["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_users_export_opens_only_their_frames_and_nothing_once_erased() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap().to_owned();
        let archive = kollus_archive::store::Archive::open(&location).unwrap();
        let kek_file =
            kollus_common::subject::write_random_key_file(&dir.path().join("k"), "kek").unwrap();
        let tagger = kollus_common::subject::Tagger::new([5; 32]);
        let keys_location = kollus_common::erasure::keys_location(&location, None);
        let mut ring = KeyRing::open(&keys_location, &kek_file).await.unwrap();
        // Two segments: u1 and u2 in the first, u2 alone in the second.
        for (first, users) in [(0, vec!["u1", "u2", "u1"]), (3, vec!["u2"])] {
            let mut open =
                kollus_archive::segment::Open::new(&record(first, users[0]), 1, "").unwrap();
            let at = time::OffsetDateTime::now_utc();
            for (i, user) in users.iter().enumerate() {
                let r = record(first + i as i64, user);
                open.push_subject(&r, tagger.tag(user).as_str(), at);
            }
            let mut keys = std::collections::HashMap::new();
            for tag in open.tags_to_seal(&ring.barrier) {
                let key = ring.current(&tag).await.unwrap();
                keys.insert(tag, key);
            }
            let closed = open.close_sealed(&keys, &ring.barrier).unwrap();
            let entry = closed.entry;
            archive
                .create(&entry.segment, closed.bytes, |_| false)
                .await
                .unwrap();
            let manifest = serde_json::to_vec(&entry).unwrap();
            archive
                .create(&entry.manifest_path(), manifest, |_| false)
                .await
                .unwrap();
        }
        let source = RawReports {
            erased_before: None,
            archive,
            topic: "p".into(),
            keys: ArchiveKeys {
                tagger: tagger.clone(),
                location: keys_location,
                kek_file,
            },
        };
        assert_eq!(export(&source, "u1").await, ["u1-0", "u1-2"]);
        assert_eq!(export(&source, "u2").await, ["u2-1", "u2-3"]);
        // u2's key is needed for u2's frames only: with it destroyed (erased), u1's export
        // still opens, and u2's holds nothing.
        ring.erase(&ErasureEvent {
            erasure_id: uuid::Uuid::now_v7(),
            subject_tag: tagger.tag("u2").to_string(),
            erased_at: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
        assert_eq!(export(&source, "u1").await, ["u1-0", "u1-2"]);
        assert!(export(&source, "u2").await.is_empty());
    }
}
