//! The player options of SPEC.md section 5.3 that Kollus's own code signs into the playback
//! token and ours did not: top level `next_episode`, `playback_rates`, `playcallback_ignore`,
//! `pc_skin`; per video `drm_policy`, `thumbnail`, `subtitle_policy`. Asked for and signed in
//! Kollus's names and shapes (one struct each, for the request, the document and the claims),
//! booleans for the flags, numbers for the rates. SPEC names the fields without their types
//! where Kollus's samples do not show them (`thumbnail`, `subtitle_policy`): those are inferred,
//! flags as booleans and names as text. Every check names the field it refuses.

use serde::{Deserialize, Serialize};

/// The slowest and fastest playback rate a token may offer, and how many rates.
pub const MIN_RATE: f64 = 0.25;
pub const MAX_RATE: f64 = 4.0;
pub const MAX_RATES: usize = 10;

/// Collects one refusal: the field, and what is wrong with it.
pub type Refuse<'a> = dyn FnMut(String, String) + 'a;

/// `playback_rates`: the rates the player offers, 1 to 10 of them, each from 0.25 to 4.0,
/// ascending (each greater than the one before).
pub fn check_rates(rates: &[f64], refuse: &mut Refuse) {
    if rates.is_empty() || rates.len() > MAX_RATES {
        refuse(
            "playback_rates".into(),
            format!(
                "names {} rates; give 1 to {MAX_RATES}, or leave it out",
                rates.len()
            ),
        );
    }
    for (i, rate) in rates.iter().enumerate() {
        let field = format!("playback_rates[{i}]");
        if !(MIN_RATE..=MAX_RATE).contains(rate) {
            refuse(
                field,
                format!("{rate} is not from {MIN_RATE} to {MAX_RATE}"),
            );
        } else if i > 0 && *rate <= rates[i - 1] {
            refuse(
                field,
                format!(
                    "{rate} must be greater than the rate before it ({}): rates ascend",
                    rates[i - 1]
                ),
            );
        }
    }
}

/// The PC player's skin (`pc_skin`): where it is and its SHA-1, so the player can check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PcSkin {
    /// The skin file's URL or path, as the Kollus console gives it.
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub skin_path: String,
    /// The skin file's SHA-1, 40 hexadecimal digits.
    #[schema(pattern = "^[0-9A-Fa-f]{40}$")]
    pub skin_sha1sum: String,
}

impl PcSkin {
    pub fn check(&self, refuse: &mut Refuse) {
        text("pc_skin.skin_path", &self.skin_path, 2048, refuse);
        if self.skin_sha1sum.len() != 40
            || !self.skin_sha1sum.bytes().all(|b| b.is_ascii_hexdigit())
        {
            refuse(
                "pc_skin.skin_sha1sum".into(),
                "must be a SHA-1 sum: 40 hexadecimal digits".into(),
            );
        }
    }
}

/// A video's multi-DRM policy (`drm_policy`): which DRM, how it streams, and where the player
/// gets its licence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrmPolicy {
    /// The DRM service, as Kollus names it.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub kind: String,
    /// How the video streams under it (e.g. `dash`, `hls`).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub streaming_type: String,
    pub data: DrmData,
}

/// Where the player asks for the licence (`drm_policy.data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrmData {
    /// The licence server, an http(s) URL.
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[^\u0000-\u0020\u007f-\u009f]+$"
    )]
    pub license_url: String,
    /// The certificate server (FairPlay), an http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[^\u0000-\u0020\u007f-\u009f]+$"
    )]
    pub certificate_url: Option<String>,
    /// A header the player sends with its licence requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_header: Option<CustomHeader>,
}

/// One HTTP header (`drm_policy.data.custom_header`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomHeader {
    /// A header name (RFC 9110 token).
    #[schema(max_length = 256, pattern = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
    pub key: String,
    /// Its value: no line breaks or other control characters.
    #[schema(max_length = 4096, pattern = r"^[^\u0000-\u0008\u000a-\u001f\u007f]*$")]
    pub value: String,
}

impl DrmPolicy {
    pub fn check(&self, field: &str, refuse: &mut Refuse) {
        text(&format!("{field}.kind"), &self.kind, 64, refuse);
        text(
            &format!("{field}.streaming_type"),
            &self.streaming_type,
            64,
            refuse,
        );
        let data = format!("{field}.data");
        http_url(
            &format!("{data}.license_url"),
            &self.data.license_url,
            refuse,
        );
        if let Some(url) = &self.data.certificate_url {
            http_url(&format!("{data}.certificate_url"), url, refuse);
        }
        if let Some(h) = &self.data.custom_header {
            let header = format!("{data}.custom_header");
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if h.key.is_empty() || h.key.len() > 256 || !h.key.bytes().all(token) {
                refuse(
                    format!("{header}.key"),
                    "must be an HTTP header name: 1 to 256 letters, digits or !#$%&'*+-.^_`|~"
                        .into(),
                );
            }
            if h.value.len() > 4096 || h.value.chars().any(|c| c.is_control() && c != '\t') {
                refuse(
                    format!("{header}.value"),
                    "must be at most 4096 bytes, without line breaks or control characters".into(),
                );
            }
        }
    }
}

/// Seek thumbnails (`thumbnail`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Thumbnail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<bool>,
    /// The kind of thumbnail, as Kollus names it.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub kind: Option<String>,
}

impl Thumbnail {
    pub fn check(&self, field: &str, refuse: &mut Refuse) {
        if let Some(kind) = &self.kind {
            text(&format!("{field}.type"), kind, 64, refuse);
        }
    }
}

/// Which subtitles the player shows (`subtitle_policy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubtitlePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<SubtitleFilter>,
    /// Show only the subtitles `filter` selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_by_filter: Option<bool>,
    /// Whether subtitles may be shown at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_showable: Option<bool>,
}

/// A subtitle track by name or language (`subtitle_policy.filter`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubtitleFilter {
    /// The track's name, as uploaded to Kollus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub name: Option<String>,
    /// The track's language (e.g. `ko`, `en`, `zh-CN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")]
    pub language_code: Option<String>,
}

impl SubtitlePolicy {
    pub fn check(&self, field: &str, refuse: &mut Refuse) {
        let Some(filter) = &self.filter else { return };
        if let Some(name) = &filter.name {
            text(&format!("{field}.filter.name"), name, 255, refuse);
        }
        if let Some(code) = &filter.language_code {
            let mut parts = code.split(['-', '_']);
            let language = parts.next().unwrap_or_default();
            let ok = (2..=3).contains(&language.len())
                && language.bytes().all(|b| b.is_ascii_alphabetic())
                && parts.all(|p| {
                    (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric())
                });
            if !ok {
                refuse(
                    format!("{field}.filter.language_code"),
                    "must be a language code such as ko, en or zh-CN".into(),
                );
            }
        }
    }
}

/// Text Kollus shows or reads back: not empty, no control characters, at most `max` characters.
fn text(field: &str, value: &str, max: usize, refuse: &mut Refuse) {
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        refuse(
            field.into(),
            format!("must be 1 to {max} characters, without control characters"),
        );
    }
}

/// An absolute http(s) URL with a host, without spaces or control characters.
fn http_url(field: &str, value: &str, refuse: &mut Refuse) {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && value.len() <= 2048
        && !value.chars().any(|c| c.is_control() || c.is_whitespace());
    if !ok {
        refuse(
            field.into(),
            "must be an http(s) URL with a host, at most 2048 bytes, without spaces".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(check: impl FnOnce(&mut Refuse)) -> Vec<String> {
        let mut fields = Vec::new();
        check(&mut |field, _| fields.push(field));
        fields
    }

    #[test]
    fn rates_are_one_to_ten_ascending_from_a_quarter_to_four() {
        assert!(refused(|r| check_rates(&[0.25, 0.5, 1.0, 1.5, 2.0, 4.0], r)).is_empty());
        assert_eq!(refused(|r| check_rates(&[], r)), ["playback_rates"]);
        assert_eq!(
            refused(|r| check_rates(&[0.2, 1.0, 4.5], r)),
            ["playback_rates[0]", "playback_rates[2]"]
        );
        assert_eq!(
            refused(|r| check_rates(&[1.0, 1.0, 0.5], r)),
            ["playback_rates[1]", "playback_rates[2]"]
        );
        let eleven: Vec<f64> = (0..11).map(|i| 0.25 + 0.25 * f64::from(i)).collect();
        assert_eq!(refused(|r| check_rates(&eleven, r)), ["playback_rates"]);
    }

    #[test]
    fn urls_headers_sums_and_language_codes_are_checked_and_named() {
        let policy = DrmPolicy {
            kind: "".into(),
            streaming_type: "dash".into(),
            data: DrmData {
                license_url: "ftp://license.example".into(),
                certificate_url: Some("https://".into()),
                custom_header: Some(CustomHeader {
                    key: "X Bad".into(),
                    value: "a\r\nSet-Cookie: x".into(),
                }),
            },
        };
        assert_eq!(
            refused(|r| policy.check("media[1].drm_policy", r)),
            [
                "media[1].drm_policy.kind",
                "media[1].drm_policy.data.license_url",
                "media[1].drm_policy.data.certificate_url",
                "media[1].drm_policy.data.custom_header.key",
                "media[1].drm_policy.data.custom_header.value",
            ]
        );
        let good = DrmPolicy {
            kind: "inka".into(),
            data: DrmData {
                license_url: "https://license.example/ri/licenseManager.do".into(),
                certificate_url: None,
                custom_header: Some(CustomHeader {
                    key: "pallycon-customdata-v2".into(),
                    value: "eyJ0eXAiOi\tJ9".into(),
                }),
            },
            ..policy
        };
        assert!(refused(|r| good.check("d", r)).is_empty());

        let skin = PcSkin {
            skin_path: "https://skins.example/a.zip".into(),
            skin_sha1sum: "da39a3ee5e6b4b0d3255bfef95601890afd8070".into(),
        };
        assert_eq!(refused(|r| skin.check(r)), ["pc_skin.skin_sha1sum"]);

        for (code, ok) in [
            ("ko", true),
            ("zh-CN", true),
            ("en_US", true),
            ("k", false),
            ("한국어", false),
        ] {
            let policy = SubtitlePolicy {
                filter: Some(SubtitleFilter {
                    name: None,
                    language_code: Some(code.into()),
                }),
                ..Default::default()
            };
            assert_eq!(refused(|r| policy.check("s", r)).is_empty(), ok, "{code}");
        }
    }
}
