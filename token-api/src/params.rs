//! The path parameters the API's operations share, described once for the OpenAPI document
//! (`params(UserPath, MediaPath)` in an operation's annotation). Handlers read them with
//! `web::Path` and check them themselves (bottom layer: imports nothing of this crate). Each
//! names its id type, whose schema carries the limits its parser applies (`common::domain`).

use kollus_common::domain::{ChannelKey, ClientUserId, CourseId, MediaContentKey};

/// `{client_user_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The product's user id (Kollus `cuid`).
    #[param(inline)]
    pub client_user_id: ClientUserId,
}

/// `{media_content_key}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MediaPath {
    /// Kollus media content key.
    #[param(inline)]
    pub media_content_key: MediaContentKey,
}

/// `{channel_key}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// Kollus channel key: the grant covers every video the catalog has in the channel.
    #[param(inline)]
    pub channel_key: ChannelKey,
}

/// `{course_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CoursePath {
    /// The course's id (ours: `PUT /v1/courses/{course_id}`).
    #[param(inline)]
    pub course_id: CourseId,
}
