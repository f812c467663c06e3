//! What an entitlement is: its [`Scope`] (a video or a channel) and the [`Entitlement`] as
//! stored and answered. Playback's policy uses these (a feature may use another's model, never
//! its handlers).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::{Error, Row};

/// What an entitlement covers.
// (Its text is serde's and strum's alike, a test holds them together; the `scope` column reads
// into it through `kollus_common::text_column!`. Not a doc comment: the API document shows those.)
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Scope {
    /// One video (`media_content_key`).
    Media,
    /// Every video the catalog has in the channel (`channel_key`).
    Channel,
    /// Every lesson of the course (`course_id`), and enrolment in it.
    Course,
}

kollus_common::text_column!(Scope);

impl Scope {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// An entitlement as stored and answered.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Entitlement {
    pub scope: Scope,
    /// The `media_content_key`, `channel_key` or `course_id` it covers.
    pub key: String,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub expires_at: Option<OffsetDateTime>,
    #[schema(required = true)]
    pub playtime_limit_seconds: Option<i64>,
    pub download: bool,
    #[schema(required = true)]
    pub download_limit: Option<i32>,
    /// The name of the API key that granted it.
    pub granted_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub granted_at: OffsetDateTime,
    #[schema(required = true)]
    pub revoked_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    /// Set once revoked; a revoked grant is listed, and answers `content_expired` to Kollus.
    #[schema(required = true)]
    pub revoked_at: Option<OffsetDateTime>,
}

impl Entitlement {
    /// The columns [`Entitlement::from_row`] reads, by name.
    pub const COLUMNS: &str = "scope, target, expires_at, playtime_limit_seconds, download, \
                               download_limit, granted_by, granted_at, revoked_by, revoked_at";

    pub fn from_row(r: &Row) -> Result<Self, Error> {
        Ok(Self {
            scope: r.try_get("scope")?,
            key: r.try_get("target")?,
            expires_at: r.try_get("expires_at")?,
            playtime_limit_seconds: r.try_get("playtime_limit_seconds")?,
            download: r.try_get("download")?,
            download_limit: r.try_get("download_limit")?,
            granted_by: r.try_get("granted_by")?,
            granted_at: r.try_get("granted_at")?,
            revoked_by: r.try_get("revoked_by")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    }
}

/// Whether a grant is in force at `now`: not revoked, and not past its `expires_at` (the end,
/// exclusive). The play callback decides on it and the console lists by it.
pub fn in_force_at(revoked: bool, expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
    !revoked && expires_at.is_none_or(|at| at > now)
}

impl Entitlement {
    /// [`in_force_at`] for this grant.
    pub fn in_force_at(&self, now: OffsetDateTime) -> bool {
        in_force_at(self.revoked_at.is_some(), self.expires_at, now)
    }
}

/// The rows of the user (`$1`) that cover the video (`$2`): on the video itself, on a channel
/// the catalog has the video in *now* (`in_channel`; a channel grant covers "every video the
/// catalog has in the channel", V9), or on a course that lists the video as a lesson now (V29),
/// as a condition on `client_user_id`, `scope` and `target` of `entitlements` or
/// `entitlement_changes`. The play and DRM callbacks decide on it; the console shows the same
/// grants' changes.
macro_rules! grants_covering_video {
    () => {
        "client_user_id = $1 \
         AND ((scope = 'media' AND target = $2) \
           OR (scope = 'channel' AND target IN (SELECT c.channel_key FROM channel_memberships c \
                                                WHERE c.media_content_key = $2 AND c.in_channel)) \
           OR (scope = 'course' AND target IN (SELECT l.course_id FROM course_lessons l \
                                               WHERE l.media_content_key = $2)))"
    };
}
pub(crate) use grants_covering_video;

#[cfg(test)]
mod tests {
    use time::Duration;

    use tokio_postgres::types::{FromSql as _, Type};

    use super::*;

    #[test]
    fn a_grant_is_in_force_until_its_end_exclusive_and_never_once_revoked() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        assert!(in_force_at(false, None, now));
        assert!(in_force_at(false, Some(now + Duration::SECOND), now));
        assert!(!in_force_at(false, Some(now), now), "the end is exclusive");
        assert!(!in_force_at(true, None, now));
    }

    #[test]
    fn a_scope_is_written_alike_in_json_and_in_its_column() {
        for (scope, text) in [
            (Scope::Media, "media"),
            (Scope::Channel, "channel"),
            (Scope::Course, "course"),
        ] {
            assert_eq!(scope.as_str(), text);
            assert_eq!(serde_json::to_value(scope).unwrap(), text);
            assert_eq!(
                Scope::from_sql(&Type::TEXT, text.as_bytes()).unwrap(),
                scope
            );
        }
    }

    /// A `scope` the enum does not know fails the row, naming the value: no longer read as
    /// `media`, a silent guess at what a grant covers.
    #[test]
    fn an_unknown_scope_in_the_column_is_an_error_not_media() {
        let e = Scope::from_sql(&Type::TEXT, b"studio").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#""studio" is not a Scope (one of: media, channel, course)"#
        );
    }
}
