//! The body of a grant (`PUT .../entitlements/{media,channel}/{key}`), checked: every invalid
//! field named.

use serde::Deserialize;
use time::OffsetDateTime;

use crate::problem::{invalid, ApiError, FieldError};

/// The body of a grant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// Access ends then; `null`: never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Seconds of `playtime` the user may spend on each covered video, over all sessions.
    #[serde(default, deserialize_with = "crate::json::opt_whole")]
    pub playtime_limit_seconds: Option<i64>,
    /// Whether Kollus may let the player download covered videos.
    #[serde(default)]
    pub download: bool,
    /// Completed downloads allowed per video; `null`: no limit.
    #[serde(default, deserialize_with = "crate::json::opt_whole")]
    pub download_limit: Option<i32>,
}

pub fn parse_body(body: &[u8]) -> Result<GrantBody, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let grant: GrantBody = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let message = e.inner().to_string();
        if field == "." {
            ApiError::BadJson(message)
        } else {
            invalid(&field, message)
        }
    })?;
    let mut errors = Vec::new();
    if grant.playtime_limit_seconds.is_some_and(|l| l <= 0) {
        errors.push(FieldError {
            field: "playtime_limit_seconds".into(),
            message: "must be a positive number of seconds, or null for no limit".into(),
        });
    }
    if grant.download_limit.is_some_and(|l| l < 0) {
        errors.push(FieldError {
            field: "download_limit".into(),
            message: "must be 0 or more, or null for no limit".into(),
        });
    }
    if errors.is_empty() {
        Ok(grant)
    } else {
        Err(ApiError::Invalid(errors))
    }
}
