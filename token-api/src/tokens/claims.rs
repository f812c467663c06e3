//! The Kollus Video Gateway playback token (SPEC.md section 1): HS256 over `cuid`, `expt`
//! (Unix seconds), `mc` (always an array) and optional player policy, in Kollus's own field
//! names. Only fields that were given are emitted.

use serde::{Deserialize, Serialize};

use super::options::{DrmPolicy, PcSkin, SubtitlePolicy, Thumbnail};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaybackClaims {
    pub cuid: String,
    /// Playback token expiry, Unix seconds.
    pub expt: i64,
    /// RFC 7519 expiry, equal to `expt` unless turned off (Kollus warns registered claims
    /// "may cause errors"; our seed document sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub mc: Vec<MediaItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awtc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_watermarking_code_policy: Option<WatermarkPolicy>,
    /// SPEC.md 5.3, in Kollus's names: the player offers the next video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_episode: Option<bool>,
    /// The playback rates the player offers, ascending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback_rates: Option<Vec<f64>>,
    /// Play without asking the play callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playcallback_ignore: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pc_skin: Option<PcSkin>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaItem {
    pub mckey: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcpf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intr: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seek: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seekable_end: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_playrate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_nscreen: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play_section: Option<PlaySection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drm_policy: Option<DrmPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<Thumbnail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle_policy: Option<SubtitlePolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaySection {
    pub start_time: u32,
    pub end_time: u32,
}

/// `video_watermarking_code_policy`, passed through in Kollus's names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatermarkPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_kind: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::opt_whole"
    )]
    pub font_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub font_color: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::opt_whole"
    )]
    pub show_time: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::opt_whole"
    )]
    pub hide_time: Option<u32>,
    /// 0 (transparent) to 255 (opaque).
    #[schema(maximum = 255)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::opt_whole"
    )]
    pub alpha: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_html5_player: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_kollus_example() {
        let claims = PlaybackClaims {
            cuid: "catenoid".into(),
            expt: 1_462_931_880,
            exp: None,
            mc: vec![MediaItem {
                mckey: "vnCVPVyV".into(),
                ..Default::default()
            }],
            awtc: None,
            video_watermarking_code_policy: None,
            next_episode: None,
            playback_rates: None,
            playcallback_ignore: None,
            pc_skin: None,
        };
        assert_eq!(
            serde_json::to_string(&claims).unwrap(),
            r#"{"cuid":"catenoid","expt":1462931880,"mc":[{"mckey":"vnCVPVyV"}]}"#
        );
    }

    #[test]
    fn header_is_hs256_jwt() {
        let claims = PlaybackClaims {
            cuid: "u".into(),
            expt: 1,
            exp: Some(1),
            mc: vec![],
            awtc: None,
            video_watermarking_code_policy: None,
            next_episode: None,
            playback_rates: None,
            playcallback_ignore: None,
            pc_skin: None,
        };
        let token = crate::signer::Signer::new(&secrecy::SecretString::from("k"))
            .sign(&claims)
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid, None, "Kollus has no key ids");
    }
}
