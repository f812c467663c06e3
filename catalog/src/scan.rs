//! A complete scan of the account: the channels, each channel's media contents and the library
//! (uploads in no channel too), every page (`ceil(count / per_page)`), gathered into one snapshot
//! per upload. Nothing is published until the scan is complete: an error anywhere stops it with
//! nothing sent, so a partial answer never reads as "not in that channel".

use std::collections::BTreeMap;

use kollus_common::domain::UploadFileKey;
use kollus_common::kollus::snapshot::{SnapshotChannel, UploadSnapshot};
use serde_json::Value;
use time::OffsetDateTime;

use crate::api::{wire, ApiError, KollusApi};
use kollus_common::progress::Progress;

/// What a complete scan found.
pub struct Scan {
    /// When its first request started: every found snapshot is dated by it (Kollus's answers
    /// may be cached, so the scan says what Kollus knew no later than this).
    pub started_at: OffsetDateTime,
    pub uploads: BTreeMap<UploadFileKey, Found>,
    pub channels: usize,
    pub requests: u64,
}

/// One upload as the scan saw it, and the API items it was built from (the envelope's `raw`).
pub struct Found {
    pub snapshot: UploadSnapshot,
    pub raw: Vec<Value>,
}

/// `ceil(count / per_page)`: the requests a list of `count` items takes.
pub fn pages(count: i64, per_page: i64) -> i64 {
    if count <= 0 {
        1
    } else {
        (count + per_page - 1) / per_page
    }
}

pub async fn scan(
    api: &KollusApi,
    per_page: i64,
    progress: &mut Progress,
) -> Result<Scan, ApiError> {
    let index = api.get("media/channel/index", &[]).await?;
    let started_at = index.requested_at;
    progress.add(1);
    let result = index.result.unwrap_or(Value::Null);
    let shape = |shape| ApiError::Shape {
        what: "media/channel/index".into(),
        shape,
    };
    let channels: Vec<wire::Channel> = wire::items(&result)
        .map_err(shape)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| wire::channel(v, &format!("result.items.item[{i}]")))
        .collect::<Result<_, _>>()
        .map_err(shape)?;
    // The expected requests, from the counts the index gives; the library's adds when known.
    let expected: i64 = channels
        .iter()
        .map(|c| pages(c.count_of_media_contents, per_page))
        .sum();
    progress.set_total(1 + expected as u64 + 1);

    let mut uploads: BTreeMap<UploadFileKey, Found> = BTreeMap::new();
    let mut requests = 1;
    for channel in &channels {
        let mut page = 1;
        loop {
            let params = [
                ("channel_key", channel.key.to_string()),
                ("page", page.to_string()),
                ("per_page", per_page.to_string()),
                ("order", "position_desc".to_owned()),
            ];
            let (items, last_page) =
                list(api, "media/channel/media_content", &params, page, per_page).await?;
            requests += 1;
            progress.add(1);
            for (i, (item, raw)) in items.into_iter().enumerate() {
                // Without it the membership is unknown, and a missing one would read as a leave.
                let Some(m) = item.media_content_key.clone() else {
                    return Err(ApiError::Shape {
                        what: format!(
                            "media/channel/media_content (channel {}, page {page})",
                            channel.key
                        ),
                        shape: wire::ShapeError {
                            path: format!("result.items.item[{i}].media_content_key"),
                            problem: "is missing from a channel's list".into(),
                        },
                    });
                };
                let found = entry(&mut uploads, &item, started_at);
                found.snapshot.channels.push(SnapshotChannel {
                    channel_key: channel.key.clone(),
                    media_content_key: m,
                    channel_name: channel.name.clone(),
                });
                found.raw.push(raw);
            }
            if page >= last_page {
                break;
            }
            page += 1;
        }
    }
    let mut page = 1;
    loop {
        let params = [
            ("page", page.to_string()),
            ("per_page", per_page.to_string()),
            ("order", "created_at_desc".to_owned()),
        ];
        let (items, last_page) =
            list(api, "media/library/media_content", &params, page, per_page).await?;
        requests += 1;
        if page == 1 {
            progress.set_total(1 + expected as u64 + last_page as u64);
        }
        progress.add(1);
        for (item, raw) in items {
            let found = entry(&mut uploads, &item, started_at);
            for (channel_key, channel_name, media_content_key) in &item.channels {
                found.snapshot.channels.push(SnapshotChannel {
                    channel_key: channel_key.clone(),
                    media_content_key: media_content_key.clone(),
                    channel_name: channel_name.clone(),
                });
            }
            found.raw.push(raw);
        }
        if page >= last_page {
            break;
        }
        page += 1;
    }
    for found in uploads.values_mut() {
        let channels = &mut found.snapshot.channels;
        channels.sort();
        // The same membership from the channel's list and the library's `channels[]`: once,
        // with a name when either had one.
        channels.dedup_by(|later, kept| {
            let same = later.channel_key == kept.channel_key
                && later.media_content_key == kept.media_content_key;
            if same && kept.channel_name.is_none() {
                kept.channel_name = later.channel_name.take();
            }
            same
        });
    }
    Ok(Scan {
        started_at,
        uploads,
        channels: channels.len(),
        requests,
    })
}

/// One page of a list: its items (parsed, and as sent) and the last page number.
async fn list(
    api: &KollusApi,
    path: &str,
    params: &[(&str, String)],
    page: i64,
    per_page: i64,
) -> Result<(Vec<(wire::MediaItem, Value)>, i64), ApiError> {
    let answer = api.get(path, params).await?;
    let what = || format!("{path} (page {page})");
    let result = answer.result.ok_or_else(|| ApiError::Status {
        what: what(),
        status: 404,
        attempts: 1,
    })?;
    let shape = |shape| ApiError::Shape {
        what: what(),
        shape,
    };
    let count = wire::count(&result).map_err(shape)?;
    let per_page = wire::per_page(&result).map_err(shape)?.unwrap_or(per_page);
    let items = wire::items(&result)
        .map_err(shape)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            Ok((
                wire::media_item(v, &format!("result.items.item[{i}]"))?,
                v.clone(),
            ))
        })
        .collect::<Result<Vec<_>, wire::ShapeError>>()
        .map_err(shape)?;
    Ok((items, pages(count, per_page)))
}

/// The upload's entry, its descriptive fields filled from `item` where still empty.
fn entry<'a>(
    uploads: &'a mut BTreeMap<UploadFileKey, Found>,
    item: &wire::MediaItem,
    started_at: OffsetDateTime,
) -> &'a mut Found {
    let found = uploads
        .entry(item.upload_file_key.clone())
        .or_insert_with(|| Found {
            snapshot: UploadSnapshot {
                found: true,
                ..UploadSnapshot::absent(started_at)
            },
            raw: Vec::new(),
        });
    fill(&mut found.snapshot, item);
    found
}

/// Fills `s`'s empty descriptive fields from `item`.
pub fn fill(s: &mut UploadSnapshot, item: &wire::MediaItem) {
    s.title = s.title.take().or_else(|| item.title.clone());
    s.duration_seconds = s.duration_seconds.or(item.duration_seconds);
    s.poster_url = s.poster_url.take().or_else(|| item.poster_url.clone());
    s.transcoding_stage = s.transcoding_stage.or(item.transcoding_stage);
    s.transcoding_stage_name = s
        .transcoding_stage_name
        .take()
        .or_else(|| item.transcoding_stage_name.clone());
    s.created_at = s.created_at.or(item.created_at);
    s.transcoded_at = s.transcoded_at.or(item.transcoded_at);
}

#[cfg(test)]
mod tests {
    use super::pages;

    #[test]
    fn pages_are_ceil_count_over_per_page() {
        assert_eq!(pages(0, 100), 1, "an empty list is still one request");
        assert_eq!(pages(100, 100), 1);
        assert_eq!(pages(101, 100), 2);
        assert_eq!(pages(10_000, 100), 100);
    }
}
