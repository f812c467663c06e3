//! `POST /v1/playback-tokens` request body, and its validation into claims. Every problem is
//! reported with the field it concerns, all at once.

use std::collections::BTreeMap;

use kollus_common::domain::{ClientUserId, MediaContentKey};
use serde::Deserialize;

use super::claims::{MediaItem, PlaySection, PlaybackClaims, WatermarkPolicy};
use super::options::{self, DrmPolicy, PcSkin, SubtitlePolicy, Thumbnail};
use crate::json::{opt_whole, whole};
use crate::problem::FieldError;

/// What the product app asks a playback token for.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Our user's id (Kollus cuid): any printable text.
    #[schema(value_type = ClientUserId)]
    pub client_user_id: String,
    /// 1 to TOKEN_MAX_MEDIA (default 10) videos.
    #[schema(min_items = 1, max_items = 10)]
    pub media: Vec<MediaRequest>,
    /// Seconds; default TOKEN_DEFAULT_EXPIRES_IN (3600), at most TOKEN_MAX_EXPIRES_IN (86400).
    #[serde(default, deserialize_with = "opt_whole")]
    #[schema(minimum = 1, maximum = 86400)]
    pub expires_in: Option<i64>,
    /// `uservalue0` .. `uservalue99`, echoed back in LMS callbacks.
    #[serde(default)]
    #[schema(schema_with = uservalues_schema)]
    pub uservalues: BTreeMap<String, String>,
    #[serde(default)]
    pub awtc: Option<String>,
    #[serde(default)]
    pub watermark: Option<WatermarkPolicy>,
    #[serde(default)]
    pub player: PlayerOptions,
    /// The player offers the next video (Kollus `next_episode`).
    #[serde(default)]
    pub next_episode: Option<bool>,
    /// The playback rates the player offers: 1 to 10, each from 0.25 to 4.0, ascending.
    #[serde(default)]
    #[schema(schema_with = playback_rates_schema)]
    pub playback_rates: Option<Vec<f64>>,
    /// Play without asking the channel's play callback (Kollus `playcallback_ignore`). `true`
    /// needs the API key's `tokens:playcallback_ignore` scope besides `tokens` (else 403).
    #[serde(default)]
    pub playcallback_ignore: Option<bool>,
    /// The PC player's skin.
    #[serde(default)]
    pub pc_skin: Option<PcSkin>,
}

/// `playback_rates`: numbers from 0.25 to 4.0, 1 to 10 of them (ascending: checked, not
/// expressible in JSON Schema).
fn playback_rates_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(options::MIN_RATE))
                .maximum(Some(options::MAX_RATE)),
        )
        .min_items(Some(1))
        .max_items(Some(options::MAX_RATES))
        .description(Some(
            "The playback rates the player offers: 1 to 10, each from 0.25 to 4.0, ascending (Kollus `playback_rates`).",
        ))
        .build()
}

/// One video of the token (an item of Kollus's `mc`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaRequest {
    #[schema(value_type = MediaContentKey)]
    pub media_content_key: String,
    /// Encoding profile key (Kollus `mcpf`): a Kollus key, checked as one.
    #[serde(default)]
    #[schema(value_type = Option<MediaContentKey>)]
    pub profile_key: Option<String>,
    #[serde(default)]
    pub intro: Option<bool>,
    #[serde(default)]
    pub seek: Option<bool>,
    #[serde(default, deserialize_with = "opt_whole")]
    #[schema(minimum = -1)]
    pub seekable_end: Option<i64>,
    #[serde(default)]
    pub disable_playrate: Option<bool>,
    #[serde(default)]
    pub disable_nscreen: Option<bool>,
    #[serde(default)]
    pub play_section: Option<SectionRequest>,
    #[serde(default)]
    pub title: Option<String>,
    /// Multi-DRM: which DRM, how the video streams, where the licence is.
    #[serde(default)]
    pub drm_policy: Option<DrmPolicy>,
    /// Seek thumbnails.
    #[serde(default)]
    pub thumbnail: Option<Thumbnail>,
    /// Which subtitles the player shows.
    #[serde(default)]
    pub subtitle_policy: Option<SubtitlePolicy>,
}

/// A preview clip: seconds from the start of the video, `end` after `start`.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SectionRequest {
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 0)]
    pub start: i64,
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 0)]
    pub end: i64,
}

/// Options that go in the player URL, not the token.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlayerOptions {
    #[serde(default)]
    pub autoplay: Option<bool>,
    #[serde(default)]
    pub mute: Option<bool>,
    /// Resume position in seconds (`t`).
    #[serde(default, deserialize_with = "opt_whole")]
    pub t: Option<u32>,
}

/// `uservalues`: string values under the names `uservalue0` .. `uservalue99`.
fn uservalues_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .build()
                .into(),
        )))
        .description(Some(
            "`uservalue0` .. `uservalue99`, echoed back in LMS callbacks.",
        ))
        .build();
    object
        .extensions
        .get_or_insert_with(Default::default)
        .insert(
            "propertyNames".into(),
            serde_json::json!({"pattern": "^uservalue([0-9]|[1-9][0-9])$"}),
        );
    object
}

/// Limits the validation applies (settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default_expires_in: i64,
    pub max_expires_in: i64,
    pub max_media: usize,
}

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub client_user_id: ClientUserId,
    pub media: Vec<MediaContentKey>,
    pub expires_in: i64,
    pub uservalues: BTreeMap<String, String>,
    pub player: PlayerOptions,
    claims_media: Vec<MediaItem>,
    awtc: Option<String>,
    watermark: Option<WatermarkPolicy>,
    next_episode: Option<bool>,
    playback_rates: Option<Vec<f64>>,
    playcallback_ignore: Option<bool>,
    pc_skin: Option<PcSkin>,
}

impl ValidRequest {
    pub fn claims(&self, now: i64, emit_exp: bool) -> PlaybackClaims {
        let expt = now + self.expires_in;
        PlaybackClaims {
            cuid: self.client_user_id.as_str().to_owned(),
            expt,
            exp: emit_exp.then_some(expt),
            mc: self.claims_media.clone(),
            awtc: self.awtc.clone(),
            video_watermarking_code_policy: self.watermark.clone(),
            next_episode: self.next_episode,
            playback_rates: self.playback_rates.clone(),
            playcallback_ignore: self.playcallback_ignore,
            pc_skin: self.pc_skin.clone(),
        }
    }
}

fn is_uservalue_key(k: &str) -> bool {
    k.strip_prefix("uservalue")
        .and_then(|n| {
            n.parse::<u8>()
                .ok()
                .filter(|n| *n <= 99)
                .map(|n| n.to_string() == k[9..])
        })
        .unwrap_or(false)
}

impl TokenRequest {
    pub fn validate(self, limits: &Limits) -> Result<ValidRequest, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err = |field: String, message: String| errors.push(FieldError { field, message });

        let client_user_id = ClientUserId::parse(self.client_user_id)
            .map_err(|e| err("client_user_id".into(), e.to_string()))
            .ok();
        if self.media.is_empty() {
            err("media".into(), "must name at least one video".into());
        }
        if self.media.len() > limits.max_media {
            err(
                "media".into(),
                format!(
                    "names {} videos; at most {} are allowed",
                    self.media.len(),
                    limits.max_media
                ),
            );
        }
        let mut keys = Vec::with_capacity(self.media.len());
        let mut items = Vec::with_capacity(self.media.len());
        for (i, m) in self.media.into_iter().enumerate() {
            let field = |name: &str| format!("media[{i}].{name}");
            match MediaContentKey::parse(m.media_content_key) {
                Ok(k) => keys.push(k),
                Err(e) => err(field("media_content_key"), e.to_string()),
            }
            if let Some(p) = &m.profile_key {
                if let Err(e) = MediaContentKey::parse(p.clone()) {
                    err(field("profile_key"), e.to_string());
                }
            }
            if m.seekable_end.is_some_and(|s| s < -1) {
                err(
                    field("seekable_end"),
                    "must be -1 (no limit) or a number of seconds".into(),
                );
            }
            let play_section = m.play_section.and_then(|s| {
                if s.start < 0 || s.end < 0 {
                    err(
                        field("play_section"),
                        "start and end must not be negative".into(),
                    );
                    None
                } else if s.end <= s.start {
                    err(
                        field("play_section"),
                        format!("end ({}) must be after start ({})", s.end, s.start),
                    );
                    None
                } else {
                    match (u32::try_from(s.start), u32::try_from(s.end)) {
                        (Ok(start_time), Ok(end_time)) => Some(PlaySection {
                            start_time,
                            end_time,
                        }),
                        _ => {
                            err(field("play_section"), "is out of range".into());
                            None
                        }
                    }
                }
            });
            if let Some(p) = &m.drm_policy {
                p.check(&field("drm_policy"), &mut err);
            }
            if let Some(t) = &m.thumbnail {
                t.check(&field("thumbnail"), &mut err);
            }
            if let Some(p) = &m.subtitle_policy {
                p.check(&field("subtitle_policy"), &mut err);
            }
            items.push(MediaItem {
                mckey: keys
                    .last()
                    .map(|k| k.as_str().to_owned())
                    .unwrap_or_default(),
                mcpf: m.profile_key,
                title: m.title,
                intr: m.intro,
                seek: m.seek,
                seekable_end: m.seekable_end,
                disable_playrate: m.disable_playrate,
                disable_nscreen: m.disable_nscreen,
                play_section,
                drm_policy: m.drm_policy,
                thumbnail: m.thumbnail,
                subtitle_policy: m.subtitle_policy,
            });
        }
        let expires_in = self.expires_in.unwrap_or(limits.default_expires_in);
        if !(1..=limits.max_expires_in).contains(&expires_in) {
            err(
                "expires_in".into(),
                format!("must be between 1 and {} seconds", limits.max_expires_in),
            );
        }
        for k in self.uservalues.keys() {
            if !is_uservalue_key(k) {
                err(
                    format!("uservalues.{k}"),
                    "keys are uservalue0 to uservalue99".into(),
                );
            }
        }
        if let Some(rates) = &self.playback_rates {
            options::check_rates(rates, &mut err);
        }
        if let Some(skin) = &self.pc_skin {
            skin.check(&mut err);
        }
        match client_user_id {
            Some(client_user_id) if errors.is_empty() => Ok(ValidRequest {
                client_user_id,
                media: keys,
                expires_in,
                uservalues: self.uservalues,
                player: self.player,
                claims_media: items,
                awtc: self.awtc,
                watermark: self.watermark,
                next_episode: self.next_episode,
                playback_rates: self.playback_rates,
                playcallback_ignore: self.playcallback_ignore,
                pc_skin: self.pc_skin,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_be_whole_floats_but_never_fractions() {
        let parse = |json: &str| serde_json::from_str::<TokenRequest>(json);
        let base =
            r#""client_user_id":"u","media":[{"media_content_key":"m","seekable_end":-1.0}]"#;
        let r = parse(&format!(
            r#"{{{base},"expires_in":1025.0,"player":{{"t":60.0}}}}"#
        ))
        .unwrap();
        assert_eq!(r.expires_in, Some(1025));
        assert_eq!(r.media[0].seekable_end, Some(-1));
        assert_eq!(r.player.t, Some(60));
        assert!(parse(&format!(r#"{{{base},"expires_in":1.5}}"#)).is_err());
        assert!(parse(&format!(r#"{{{base},"player":{{"t":-1}}}}"#)).is_err());
        let alpha = |a: &str| parse(&format!(r#"{{{base},"watermark":{{"alpha":{a}}}}}"#));
        assert_eq!(alpha("255.0").unwrap().watermark.unwrap().alpha, Some(255));
        assert!(alpha("256").is_err());
    }

    const LIMITS: Limits = Limits {
        default_expires_in: 3600,
        max_expires_in: 86_400,
        max_media: 10,
    };

    fn request(json: serde_json::Value) -> TokenRequest {
        serde_json::from_value(json).unwrap()
    }

    fn fields(json: serde_json::Value) -> Vec<String> {
        request(json)
            .validate(&LIMITS)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn minimal_request_gives_kollus_claims() {
        let v = request(serde_json::json!({"client_user_id": "181353", "media": [{"media_content_key": "vnCVPVyV"}]}))
            .validate(&LIMITS)
            .unwrap();
        let claims = v.claims(1_000, true);
        assert_eq!(
            serde_json::to_value(&claims).unwrap(),
            serde_json::json!({"cuid": "181353", "expt": 4600, "exp": 4600, "mc": [{"mckey": "vnCVPVyV"}]})
        );
        assert_eq!(v.claims(1_000, false).exp, None);
    }

    #[test]
    fn every_option_is_emitted_in_kollus_names() {
        let v = request(serde_json::json!({
            "client_user_id": "u", "expires_in": 60,
            "media": [
                {"media_content_key": "intro1", "intro": true},
                {"media_content_key": "main1", "profile_key": "pc-high", "seek": false,
                 "seekable_end": -1, "disable_playrate": true, "disable_nscreen": true,
                 "play_section": {"start": 10, "end": 70}, "title": "Lecture 1"}
            ],
            "awtc": "wm", "watermark": {"alpha": 128, "font_size": 12}
        }))
        .validate(&LIMITS)
        .unwrap();
        let c = serde_json::to_value(v.claims(0, true)).unwrap();
        assert_eq!(
            c["mc"][0],
            serde_json::json!({"mckey": "intro1", "intr": true})
        );
        assert_eq!(
            c["mc"][1],
            serde_json::json!({"mckey": "main1", "mcpf": "pc-high", "seek": false, "seekable_end": -1,
                "disable_playrate": true, "disable_nscreen": true, "title": "Lecture 1",
                "play_section": {"start_time": 10, "end_time": 70}})
        );
        assert_eq!(c["awtc"], "wm");
        assert_eq!(
            c["video_watermarking_code_policy"],
            serde_json::json!({"alpha": 128, "font_size": 12})
        );
        assert_eq!(c["expt"], 60);
    }

    #[test]
    fn every_problem_is_named() {
        assert_eq!(
            fields(serde_json::json!({"client_user_id": "", "media": []})),
            ["client_user_id", "media"]
        );
        assert_eq!(
            fields(
                serde_json::json!({"client_user_id": "u", "expires_in": 86401,
                "media": [{"media_content_key": "a b", "seekable_end": -2,
                           "play_section": {"start": 50, "end": 10}}],
                "uservalues": {"uservalue100": "x", "uservalue7": "ok", "user": "x"}})
            ),
            [
                "media[0].media_content_key",
                "media[0].seekable_end",
                "media[0].play_section",
                "expires_in",
                "uservalues.user",
                "uservalues.uservalue100"
            ]
        );
        let many: Vec<_> = (0..11)
            .map(|i| serde_json::json!({"media_content_key": format!("k{i}")}))
            .collect();
        assert_eq!(
            fields(serde_json::json!({"client_user_id": "u", "media": many})),
            ["media"]
        );
    }

    #[test]
    fn uservalue_keys_are_0_to_99() {
        for ok in ["uservalue0", "uservalue9", "uservalue99"] {
            assert!(is_uservalue_key(ok), "{ok}");
        }
        for bad in [
            "uservalue",
            "uservalue100",
            "uservalue01",
            "uservalue-1",
            "uservaluex",
        ] {
            assert!(!is_uservalue_key(bad), "{bad}");
        }
    }
}
