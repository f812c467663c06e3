//! Platform callbacks (SPEC.md section 2): upload, transcoding, content update and channel
//! add/delete, sent by Kollus's servers as form posts; and the one event of the content topic
//! that is not a callback, a snapshot of what Kollus's REST API said ([`super::snapshot`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::callback::{CallbackKind, PayloadError};
use super::form::{parse_form, FormFields};
use super::snapshot::UploadSnapshot;
use crate::domain::{ChannelKey, IdError, MediaContentKey, UploadFileKey};

/// One platform callback, as the catalog needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentEvent {
    pub upload_file_key: UploadFileKey,
    /// Kollus's id of the event (`20170927-callback-59cb3a104c18d`), sent by production
    /// accounts (SPEC.md 4.4). Copies with the same id are one event (a Kollus retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_provider_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_filename: Option<String>,
    pub change: ContentChange,
    /// Fields Kollus sent that we do not model, kept as sent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// What happened to the upload. Its [`ChangeKind`]'s text is a short, bounded name for logs and
/// metric labels ([`label`](Self::label)): Kollus's `update_type` where there is one, unlike the
/// serde `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, strum::EnumDiscriminants)]
#[serde(tag = "type", rename_all = "snake_case")]
#[strum_discriminants(
    name(ChangeKind),
    derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray),
    strum(serialize_all = "snake_case")
)]
pub enum ContentChange {
    Uploaded,
    Transcoded {
        result: TranscodingResult,
    },
    /// `update_type=channel_join`: the video became playable in a channel.
    #[strum_discriminants(strum(serialize = "channel_join"))]
    ChannelJoined {
        channel: ChannelRef,
    },
    /// `update_type=channel_leave`.
    #[strum_discriminants(strum(serialize = "channel_leave"))]
    ChannelLeft {
        channel: ChannelRef,
    },
    /// `update_type=content_delete`; may name the video only by its upload.
    #[strum_discriminants(strum(serialize = "content_delete"))]
    Deleted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_content_key: Option<MediaContentKey>,
        /// The channel, when the callback came to a channel's callback URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<ChannelFields>,
    },
    /// `update_type=content_poster`; may name the video only by its upload.
    #[strum_discriminants(strum(serialize = "content_poster"))]
    PosterChanged {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_content_key: Option<MediaContentKey>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<ChannelFields>,
    },
    /// An `update_type` Kollus's docs do not list: kept, never rejected (SPEC.md section 2).
    OtherUpdate {
        update_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_content_key: Option<MediaContentKey>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_key: Option<ChannelKey>,
    },
    /// Not a callback: what Kollus's REST API said about the upload (envelope kind `snapshot`).
    Snapshot(Box<UploadSnapshot>),
}

impl ContentChange {
    /// A short, bounded name for logs and metric labels.
    pub fn label(&self) -> &'static str {
        ChangeKind::from(self).into()
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum TranscodingResult {
    Success,
    Fail,
}

/// A video's place in a channel, from a channel callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRef {
    pub media_content_key: MediaContentKey,
    pub channel_key: ChannelKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_name: Option<String>,
    /// `profile_key`, split on `|`.
    #[serde(default)]
    pub profile_keys: Vec<String>,
}

/// The channel fields of a content update posted to a channel's callback URL (SPEC.md 4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFields {
    pub channel_key: ChannelKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_name: Option<String>,
    /// `profile_key`, split on `|`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile_keys: Vec<String>,
}

impl ContentEvent {
    /// Parses a form body posted to the callback URL of `kind`.
    pub fn from_form(kind: CallbackKind, body: &[u8]) -> Result<Self, PayloadError> {
        let mut f = parse_form(body)?;
        let upload_file_key = required_key(&mut f, "upload_file_key", UploadFileKey::parse)?;
        let request_id = optional(&mut f, "request_id");
        let content_provider_key = optional(&mut f, "content_provider_key");
        let filename = optional(&mut f, "filename");
        let full_filename = optional(&mut f, "full_filename");
        let change = match kind {
            CallbackKind::Upload => ContentChange::Uploaded,
            CallbackKind::Transcoding => {
                let result = crate::vocab::parse(&required(&mut f, "transcoding_result")?)
                    .map_err(|e| PayloadError::new("transcoding_result", e.to_string()))?;
                ContentChange::Transcoded { result }
            }
            CallbackKind::ContentUpdate | CallbackKind::Channel => update(kind, &mut f)?,
            CallbackKind::Lms => {
                return Err(PayloadError::new(
                    "kind",
                    "an LMS callback is not a platform callback",
                ))
            }
            CallbackKind::Snapshot => {
                return Err(PayloadError::new(
                    "kind",
                    "a snapshot comes from Kollus's API, never as a form",
                ))
            }
        };
        Ok(Self {
            upload_file_key,
            request_id,
            content_provider_key,
            filename,
            full_filename,
            change,
            extra: f,
        })
    }

    /// A snapshot of `upload_file_key` (what `kollus-catalog` publishes).
    pub fn snapshot(upload_file_key: UploadFileKey, snapshot: UploadSnapshot) -> Self {
        Self {
            upload_file_key,
            request_id: None,
            content_provider_key: None,
            filename: None,
            full_filename: None,
            change: ContentChange::Snapshot(Box::new(snapshot)),
            extra: BTreeMap::new(),
        }
    }

    /// The video this event names, when it names one (a snapshot may name several: see its
    /// `channels`).
    pub fn media_content_key(&self) -> Option<&MediaContentKey> {
        match &self.change {
            ContentChange::ChannelJoined { channel } | ContentChange::ChannelLeft { channel } => {
                Some(&channel.media_content_key)
            }
            ContentChange::Deleted {
                media_content_key, ..
            }
            | ContentChange::PosterChanged {
                media_content_key, ..
            }
            | ContentChange::OtherUpdate {
                media_content_key, ..
            } => media_content_key.as_ref(),
            ContentChange::Uploaded
            | ContentChange::Transcoded { .. }
            | ContentChange::Snapshot(_) => None,
        }
    }

    /// The Kafka key: the upload. Every platform callback carries it, and every media content
    /// key belongs to exactly one upload, so keying by upload keeps *all* events about a video
    /// (channel moves, delete, poster) in one partition, in arrival order.
    pub fn partition_key(&self) -> &str {
        self.upload_file_key.as_str()
    }
}

fn update(kind: CallbackKind, f: &mut FormFields) -> Result<ContentChange, PayloadError> {
    let update_type = required(f, "update_type")?;
    let media_content_key = optional_key(f, "media_content_key", MediaContentKey::parse)?;
    let channel_key = optional_key(f, "channel_key", ChannelKey::parse)?;
    let profile_keys = |f: &mut FormFields| -> Vec<String> {
        optional(f, "profile_key")
            .map(|p| {
                p.split('|')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let channel = |f: &mut FormFields| -> Result<ChannelRef, PayloadError> {
        let missing =
            |name: &str| PayloadError::new(name, format!("is required for {update_type}"));
        Ok(ChannelRef {
            media_content_key: media_content_key
                .clone()
                .ok_or_else(|| missing("media_content_key"))?,
            channel_key: channel_key.clone().ok_or_else(|| missing("channel_key"))?,
            channel_name: optional(f, "channel_name"),
            profile_keys: profile_keys(f),
        })
    };
    // A content update that reached a channel's URL names the channel too: keep it.
    let channel_fields = |f: &mut FormFields| {
        channel_key.clone().map(|channel_key| ChannelFields {
            channel_key,
            channel_name: optional(f, "channel_name"),
            profile_keys: profile_keys(f),
        })
    };
    let change = match update_type.parse() {
        Ok(ChangeKind::ChannelJoined) => ContentChange::ChannelJoined {
            channel: channel(f)?,
        },
        Ok(ChangeKind::ChannelLeft) => ContentChange::ChannelLeft {
            channel: channel(f)?,
        },
        Ok(ChangeKind::Deleted) => ContentChange::Deleted {
            channel: channel_fields(f),
            media_content_key,
        },
        Ok(ChangeKind::PosterChanged) => ContentChange::PosterChanged {
            channel: channel_fields(f),
            media_content_key,
        },
        _ if kind == CallbackKind::Channel && channel_key.is_none() => {
            return Err(PayloadError::new(
                "channel_key",
                "is required on the channel callback URL",
            ))
        }
        _ => ContentChange::OtherUpdate {
            update_type,
            media_content_key,
            channel_key,
        },
    };
    Ok(change)
}

/// Removes a field; an empty value counts as absent (Kollus sends empty strings for "none").
fn optional(f: &mut FormFields, name: &str) -> Option<String> {
    f.remove(name).filter(|v| !v.is_empty())
}

fn required(f: &mut FormFields, name: &str) -> Result<String, PayloadError> {
    optional(f, name).ok_or_else(|| PayloadError::new(name, "is required"))
}

fn required_key<K>(
    f: &mut FormFields,
    name: &str,
    parse: fn(String) -> Result<K, IdError>,
) -> Result<K, PayloadError> {
    parse(required(f, name)?).map_err(|e| PayloadError::new(name, e.to_string()))
}

fn optional_key<K>(
    f: &mut FormFields,
    name: &str,
    parse: fn(String) -> Result<K, IdError>,
) -> Result<Option<K>, PayloadError> {
    optional(f, name)
        .map(parse)
        .transpose()
        .map_err(|e| PayloadError::new(name, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kollus::fixture;

    #[test]
    fn channel_join_fixture() {
        let e =
            ContentEvent::from_form(CallbackKind::Channel, &fixture("channel-join.form")).unwrap();
        assert_eq!(e.upload_file_key.as_str(), "ufk-0001");
        assert_eq!(e.filename.as_deref(), Some("lecture-01.mp4"));
        let ContentChange::ChannelJoined { channel } = &e.change else {
            panic!("{:?}", e.change)
        };
        assert_eq!(channel.media_content_key.as_str(), "vnCVPVyV");
        assert_eq!(channel.channel_key.as_str(), "ch-main");
        assert_eq!(channel.channel_name.as_deref(), Some("Main"));
        assert_eq!(channel.profile_keys, ["pc-high", "mobile-low"]);
        assert!(e.extra.is_empty(), "{:?}", e.extra);
        assert_eq!(e.partition_key(), "ufk-0001");
    }

    #[test]
    fn every_fixture_parses_to_its_change() {
        let cases = [
            ("upload.form", CallbackKind::Upload, "uploaded"),
            (
                "transcoding-success.form",
                CallbackKind::Transcoding,
                "transcoded",
            ),
            ("channel-leave.form", CallbackKind::Channel, "channel_leave"),
            (
                "content-delete.form",
                CallbackKind::ContentUpdate,
                "content_delete",
            ),
            (
                "content-poster.form",
                CallbackKind::ContentUpdate,
                "content_poster",
            ),
        ];
        for (file, kind, label) in cases {
            let e = ContentEvent::from_form(kind, &fixture(file))
                .unwrap_or_else(|err| panic!("{file}: {err}"));
            assert_eq!(e.change.label(), label, "{file}");
        }
    }

    #[test]
    fn unknown_update_type_and_fields_are_kept() {
        let e = ContentEvent::from_form(
            CallbackKind::ContentUpdate,
            b"upload_file_key=u1&update_type=content_renamed&new_title=Intro&media_content_key=m1",
        )
        .unwrap();
        assert_eq!(
            e.change,
            ContentChange::OtherUpdate {
                update_type: "content_renamed".into(),
                media_content_key: Some(MediaContentKey::parse("m1").unwrap()),
                channel_key: None,
            }
        );
        assert_eq!(e.extra["new_title"], "Intro");
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        let err = ContentEvent::from_form(CallbackKind::Upload, b"filename=x").unwrap_err();
        assert_eq!(err.field, "upload_file_key");
        let err = ContentEvent::from_form(
            CallbackKind::Channel,
            b"upload_file_key=u1&update_type=channel_join&channel_key=c",
        )
        .unwrap_err();
        assert_eq!(err.field, "media_content_key");
        let err = ContentEvent::from_form(
            CallbackKind::Transcoding,
            b"upload_file_key=u1&transcoding_result=maybe",
        )
        .unwrap_err();
        assert_eq!(err.field, "transcoding_result");
        let err = ContentEvent::from_form(
            CallbackKind::Channel,
            b"upload_file_key=u1&update_type=channel_join&channel_key=c&media_content_key=a%20b",
        )
        .unwrap_err();
        assert_eq!(err.field, "media_content_key");
    }

    #[test]
    fn production_callbacks_keep_the_request_id_and_the_folder() {
        let e = ContentEvent::from_form(
            CallbackKind::Transcoding,
            &fixture("transcoding-request-id.form"),
        )
        .unwrap();
        assert_eq!(
            e.request_id.as_deref(),
            Some("20251117-callback-65a1f0c3d2b4e")
        );
        assert_eq!(e.filename.as_deref(), Some("lectures/2025/W01_Intro.MP4"));
        assert!(e.extra.is_empty(), "{:?}", e.extra);
    }

    #[test]
    fn content_updates_on_the_channel_url_keep_the_channel() {
        for (update_type, label) in [
            ("content_delete", "content_delete"),
            ("content_poster", "content_poster"),
        ] {
            let body = format!(
                "upload_file_key=u1&update_type={update_type}&media_content_key=m1\
                 &channel_key=abcd1234&channel_name=Math\
                 &profile_key=acct-pc1-high%7Cacct-mobile1-normal"
            );
            let e = ContentEvent::from_form(CallbackKind::Channel, body.as_bytes()).unwrap();
            assert_eq!(e.change.label(), label);
            let channel = match &e.change {
                ContentChange::Deleted { channel, .. }
                | ContentChange::PosterChanged { channel, .. } => {
                    channel.clone().expect("the channel is kept")
                }
                other => panic!("{other:?}"),
            };
            assert_eq!(channel.channel_key.as_str(), "abcd1234");
            assert_eq!(channel.channel_name.as_deref(), Some("Math"));
            assert_eq!(
                channel.profile_keys,
                ["acct-pc1-high", "acct-mobile1-normal"]
            );
            assert!(e.extra.is_empty(), "{:?}", e.extra);
        }
    }

    #[test]
    fn round_trips_through_json() {
        let e =
            ContentEvent::from_form(CallbackKind::Channel, &fixture("channel-join.form")).unwrap();
        let back: ContentEvent = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
