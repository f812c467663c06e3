//! `sweep`: a complete scan compared with the catalog, and what differs published as snapshots
//! (only what differs, so a nightly sweep adds rows in proportion to the changes, not to the
//! account). An upload the catalog holds that the scan did not list is asked for once more, on
//! its own, after a grace period (Kollus's lists may be cached): still not found, it is published
//! as absent. Each difference is printed on stdout, one line each, then a summary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::Pool;
use kollus_common::domain::UploadFileKey;
use kollus_common::kollus::snapshot::{SnapshotChannel, UploadSnapshot};
use kollus_common::model::UploadRow;

use crate::api::{wire, ApiError, KollusApi};
use crate::metrics::Metrics;
use crate::publish::Outgoing;
use crate::scan::{fill, Scan};

/// What the catalog holds about one upload.
#[derive(Debug, Default)]
struct Known {
    title: Option<String>,
    duration_seconds: Option<i32>,
    poster_url: Option<String>,
    transcoding_stage: Option<i32>,
    deleted: bool,
    absent: bool,
    /// (channel key, media content key) pairs it is in.
    in_channels: BTreeSet<(String, String)>,
}

/// One way the catalog differed from Kollus's API; its [`kind`](Self::kind) is strum's text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Difference {
    /// Kollus has an upload the catalog never heard of.
    New { upload: String },
    /// In a channel by the API, not by the catalog (a `channel_join` callback was missed).
    Join {
        upload: String,
        media: String,
        channel: String,
    },
    /// In a channel by the catalog, not by the API (a `channel_leave` was missed).
    Leave {
        upload: String,
        media: String,
        channel: String,
    },
    /// Title, duration, poster or transcoding stage missing or different.
    Described { upload: String, fields: String },
    /// Marked absent, and Kollus lists it again.
    Reappeared { upload: String },
    /// Neither the scan nor a detail request after the grace period found it (a delete missed).
    Absent { upload: String },
    /// Listed nowhere, yet a detail request found it: Kollus's lists were stale; the detail
    /// answer (its channels included) is published.
    Unlisted { upload: String },
}

impl Difference {
    pub fn kind(&self) -> &'static str {
        self.into()
    }
}

/// One line of the sweep's report: the kind in a column, then what differed.
impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<12}", self.kind())?;
        match self {
            Self::New { upload } | Self::Reappeared { upload } => write!(f, "upload {upload}"),
            Self::Join {
                upload,
                media,
                channel,
            } => write!(f, "{media} in channel {channel} (upload {upload})"),
            Self::Leave {
                upload,
                media,
                channel,
            } => write!(f, "{media} from channel {channel} (upload {upload})"),
            Self::Described { upload, fields } => write!(f, "upload {upload}: {fields}"),
            Self::Absent { upload } => write!(f, "upload {upload} (not listed, not found)"),
            Self::Unlisted { upload } => {
                write!(f, "upload {upload} (in no list, found on its own)")
            }
        }
    }
}

async fn read_catalog(pool: &Pool) -> anyhow::Result<BTreeMap<String, Known>> {
    let db = pool.get().await.context("connecting to the catalog")?;
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    for r in db
        .query(
            &format!("SELECT {} FROM uploads", UploadRow::COLUMNS.join(", ")),
            &[],
        )
        .await
        .context("reading uploads")?
    {
        let u = UploadRow::from_row(&r).context("reading an upload")?;
        known.insert(
            u.upload_file_key,
            Known {
                title: u.title,
                duration_seconds: u.duration_seconds,
                poster_url: u.poster_url,
                transcoding_stage: u.transcoding_stage,
                deleted: u.deleted_at.is_some(),
                absent: u.absent_since.is_some(),
                in_channels: BTreeSet::new(),
            },
        );
    }
    for r in db
        .query(
            "SELECT m.upload_file_key, c.channel_key, c.media_content_key \
             FROM channel_memberships c JOIN media_contents m USING (media_content_key) \
             WHERE c.in_channel",
            &[],
        )
        .await
        .context("reading channel memberships")?
    {
        known
            .entry(r.get("upload_file_key"))
            .or_default()
            .in_channels
            .insert((r.get("channel_key"), r.get("media_content_key")));
    }
    Ok(known)
}

/// What the sweep found: the differences, and the snapshots that correct them.
pub struct Sweep {
    pub differences: Vec<Difference>,
    pub snapshots: Vec<Outgoing>,
}

/// Compares a complete scan with the catalog; confirms absences with a detail request each after
/// `grace`.
pub async fn sweep(
    api: &KollusApi,
    pool: &Pool,
    scan: Scan,
    grace: Duration,
    metrics: &Metrics,
) -> anyhow::Result<Sweep> {
    let catalog = read_catalog(pool).await?;
    let scanned: BTreeSet<String> = scan.uploads.keys().map(|k| k.to_string()).collect();
    let mut differences = Vec::new();
    let mut snapshots = Vec::new();
    for (upload, found) in scan.uploads {
        let key = upload.to_string();
        let listed: BTreeSet<(String, String)> = found
            .snapshot
            .channels
            .iter()
            .map(|c| (c.channel_key.to_string(), c.media_content_key.to_string()))
            .collect();
        let before = differences.len();
        match catalog.get(&key) {
            // A delete is final in the catalog: nothing to correct.
            Some(k) if k.deleted => {}
            None => differences.push(Difference::New {
                upload: key.clone(),
            }),
            Some(k) => {
                if k.absent {
                    differences.push(Difference::Reappeared {
                        upload: key.clone(),
                    });
                }
                for (channel, media) in listed.difference(&k.in_channels) {
                    differences.push(Difference::Join {
                        upload: key.clone(),
                        media: media.clone(),
                        channel: channel.clone(),
                    });
                }
                for (channel, media) in k.in_channels.difference(&listed) {
                    differences.push(Difference::Leave {
                        upload: key.clone(),
                        media: media.clone(),
                        channel: channel.clone(),
                    });
                }
                let s = &found.snapshot;
                let mut fields = Vec::new();
                if s.title.is_some() && s.title != k.title {
                    fields.push("title");
                }
                if s.duration_seconds.is_some()
                    && s.duration_seconds != k.duration_seconds.map(i64::from)
                {
                    fields.push("duration");
                }
                if s.poster_url.is_some() && s.poster_url != k.poster_url {
                    fields.push("poster");
                }
                if s.transcoding_stage.is_some()
                    && s.transcoding_stage != k.transcoding_stage.map(i64::from)
                {
                    fields.push("transcoding stage");
                }
                if !fields.is_empty() {
                    differences.push(Difference::Described {
                        upload: key.clone(),
                        fields: fields.join(", "),
                    });
                }
            }
        }
        if differences.len() > before {
            snapshots.push(Outgoing {
                upload,
                snapshot: found.snapshot,
                raw: found.raw,
            });
        }
    }

    // Known, not deleted, not already absent, and listed nowhere: ask again, later, one by one.
    let missing: Vec<&String> = catalog
        .iter()
        .filter(|(k, v)| !v.deleted && !v.absent && !scanned.contains(*k))
        .map(|(k, _)| k)
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "sweep: {} uploads of the catalog were listed nowhere; asking for each after {} s",
            missing.len(),
            grace.as_secs()
        );
        tokio::time::sleep(grace).await;
    }
    for key in missing {
        // A key stored before the parser refused it (dots only) cannot be asked about: its path
        // would name another resource. Said, and left as it is, not failing the sweep.
        let upload = match UploadFileKey::parse(key.as_str()) {
            Ok(upload) => upload,
            Err(e) => {
                eprintln!("sweep: the catalog's upload key {key:?} {e}; not asked about");
                continue;
            }
        };
        let path = crate::api::client::upload_detail_path(&upload);
        let answer = api.get(&path, &[]).await?;
        let item = match &answer.result {
            None => None,
            Some(r) => match r.get("item") {
                None | Some(serde_json::Value::Null) => None,
                Some(item) => Some(item.clone()),
            },
        };
        match item {
            None => {
                differences.push(Difference::Absent {
                    upload: key.clone(),
                });
                snapshots.push(Outgoing {
                    upload,
                    snapshot: UploadSnapshot::absent(answer.requested_at),
                    raw: Vec::new(),
                });
            }
            Some(raw) => {
                // Listed nowhere yet there: the lists were stale. What the detail says stands.
                let item =
                    wire::media_item(&raw, "result.item").map_err(|shape| ApiError::Shape {
                        what: path.clone(),
                        shape,
                    })?;
                let mut snapshot = UploadSnapshot {
                    found: true,
                    ..UploadSnapshot::absent(answer.requested_at)
                };
                fill(&mut snapshot, &item);
                snapshot.channels = item
                    .channels
                    .iter()
                    .map(
                        |(channel_key, channel_name, media_content_key)| SnapshotChannel {
                            channel_key: channel_key.clone(),
                            media_content_key: media_content_key.clone(),
                            channel_name: channel_name.clone(),
                        },
                    )
                    .collect();
                differences.push(Difference::Unlisted {
                    upload: key.clone(),
                });
                snapshots.push(Outgoing {
                    upload,
                    snapshot,
                    raw: vec![raw],
                });
            }
        }
    }
    differences.sort();
    for d in &differences {
        metrics.differences.with_label_values(&[d.kind()]).inc();
    }
    Ok(Sweep {
        differences,
        snapshots,
    })
}
