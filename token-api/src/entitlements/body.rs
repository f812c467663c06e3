//! The body of a grant (`PUT .../entitlements/{media,channel}/{key}`), checked: every invalid
//! field named.

use serde::Deserialize;
use time::OffsetDateTime;

use crate::problem::{ApiError, FieldError};

/// The latest `expires_at` a grant may name, 2100-12-31T23:59:59Z; later is refused (400). A
/// "never" written as a far date (`9999-12-31T23:59:59Z`) does not fit every time zone's dates
/// and reads as a real date to whoever reads the grant back: null says never.
pub const LATEST_EXPIRES_AT: i64 = 4_133_980_799;

/// What to grant. Every field may be left out (no expiry, no allowance limit, no downloads).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EntitlementGrant)]
pub struct GrantBody {
    /// Access ends then (RFC 3339), at the latest 2100-12-31T23:59:59Z; null: never.
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
    if grant
        .expires_at
        .is_some_and(|t| t.unix_timestamp() > LATEST_EXPIRES_AT)
    {
        errors.push(FieldError {
            field: "expires_at".into(),
            message: "must be 2100-12-31T23:59:59Z or earlier; null for never".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn expiring(at: &str) -> Result<GrantBody, ApiError> {
        parse_body(format!(r#"{{"expires_at":"{at}"}}"#).as_bytes())
    }

    #[test]
    fn expiries_after_2100_are_refused_naming_the_field() {
        assert_eq!(
            OffsetDateTime::from_unix_timestamp(LATEST_EXPIRES_AT).unwrap(),
            OffsetDateTime::new_utc(
                time::Date::from_calendar_date(2100, time::Month::December, 31).unwrap(),
                time::Time::from_hms(23, 59, 59).unwrap(),
            )
        );
        assert!(expiring("2100-12-31T23:59:59Z").is_ok());
        assert!(
            expiring("2101-01-01T08:59:59+09:00").is_ok(),
            "the same instant"
        );
        for late in [
            "2101-01-01T00:00:00Z",
            "2100-12-31T23:59:59-00:01",
            "9999-12-31T23:59:59Z",
        ] {
            match expiring(late) {
                Err(ApiError::Invalid(errors)) => {
                    assert_eq!(errors.len(), 1, "{late}");
                    assert_eq!(errors[0].field, "expires_at", "{late}");
                }
                other => panic!("{late}: {other:?}"),
            }
        }
    }
}
