//! The body of a grant (`PUT .../entitlements/{media,channel}/{key}`), checked: every invalid
//! field named.

use serde::Deserialize;
use time::OffsetDateTime;

use crate::problem::{ApiError, FieldError};

/// What to grant. Every field may be left out (no expiry, no allowance limit, no downloads).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EntitlementGrant)]
pub struct GrantBody {
    /// Access ends then (RFC 3339); null: never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Seconds of Kollus `playtime` the user may spend on each covered video, over all
    /// sessions; null: no limit.
    #[serde(default, deserialize_with = "crate::json::opt_whole")]
    #[schema(minimum = 1)]
    pub playtime_limit_seconds: Option<i64>,
    /// Whether Kollus may let the player download covered videos (DRM callback kind 1).
    #[serde(default)]
    pub download: bool,
    /// Completed downloads allowed per video; null: no limit.
    #[serde(default, deserialize_with = "crate::json::opt_whole")]
    #[schema(minimum = 0)]
    pub download_limit: Option<i32>,
}

pub fn parse_body(body: &[u8]) -> Result<GrantBody, ApiError> {
    let grant: GrantBody = crate::problem::json_body(body)?;
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
