//! The path parameters the API's operations share, described once for the OpenAPI document
//! (`params(UserPath, MediaPath)` in an operation's annotation). Handlers read them with
//! `web::Path` and check them themselves (bottom layer: imports nothing of this crate).

/// `{client_user_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The product's user id (Kollus `cuid`).
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub client_user_id: String,
}

/// `{media_content_key}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MediaPath {
    /// Kollus media content key.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub media_content_key: String,
}

/// `{channel_key}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// Kollus channel key: the grant covers every video the catalog has in the channel.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub channel_key: String,
}
