//! Identifiers and quantities in Kollus's vocabulary, parsed once at the edge.
//!
//! A value of one of these types is valid by construction ("parse, don't validate"): code past the
//! edge never re-checks a key's characters or a timestamp's sign.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused. The field name is added by whoever knows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {max} characters")]
    TooLong { max: usize },
    #[error("contains {0:?}, which Kollus keys never contain (allowed: A-Z a-z 0-9 - _ .)")]
    BadChar(char),
    #[error("contains a control character")]
    ControlChar,
    /// `.`, `..`, `...`: in a URL path such a segment means "this" or "the parent" (a browser or
    /// the `url` crate resolves even `%2E%2E`), so a link or an API path built from it would
    /// point to another page. Kollus's characters allow it; no real key or user id is one.
    #[error("is only dots, which would read as a relative path in a URL")]
    DotsOnly,
}

/// Longest key we accept, in characters. Kollus keys seen in the wild are 8 to 40 characters;
/// Kollus documents no limit. The OpenAPI document states this very number (`openapi` feature).
pub const MAX_KEY_LEN: usize = 128;
/// Longest user id we accept, in characters (ours, chosen by the product app).
pub const MAX_USER_ID_LEN: usize = 256;

/// A Kollus key's characters, as the OpenAPI document states them (the length is `maxLength`):
/// at least one of them not a dot ([`IdError::DotsOnly`]).
pub const KEY_PATTERN: &str = "^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$";
/// A user id's characters: anything but a control character (`char::is_control`: C0, DEL, C1),
/// at least one of them not a dot ([`IdError::DotsOnly`]).
pub const USER_ID_PATTERN: &str =
    r"^[^\u0000-\u001f\u007f-\u009f]*[^.\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$";

/// Refuses an id made of dots only; the other checks come first, so an id's first fault is named.
fn not_dots_only(s: &str) -> Result<(), IdError> {
    if s.chars().all(|c| c == '.') {
        return Err(IdError::DotsOnly);
    }
    Ok(())
}

/// The OpenAPI schema of an id: text of 1 to `max_length` characters matching `pattern`. The
/// document takes the limits from the constants the parsers use, so the two cannot disagree.
#[cfg(feature = "openapi")]
fn id_schema(
    max_length: usize,
    pattern: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max_length))
        .pattern(Some(pattern))
        .into()
}

fn parse_kollus_key(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.chars().count() > MAX_KEY_LEN {
        return Err(IdError::TooLong { max: MAX_KEY_LEN });
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(IdError::BadChar(c)),
        None => not_dots_only(s),
    }
}

macro_rules! kollus_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                parse_kollus_key(&s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(k: $name) -> String {
                k.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema(MAX_KEY_LEN, KEY_PATTERN)
            }
        }
        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

kollus_key!(
    /// A video as playback tokens and LMS callbacks name it (`media_content_key`, `mckey`).
    MediaContentKey
);
kollus_key!(
    /// An uploaded file (`upload_file_key`): present in every platform callback.
    UploadFileKey
);
kollus_key!(
    /// A Kollus channel (`channel_key`).
    ChannelKey
);
kollus_key!(
    /// A course (`course_id`, ours, issue 33): Kollus keys' characters, so it sits in a URL path
    /// as it is.
    CourseId
);

/// Our end user's id (`cuid` in tokens, `client_user_id` in callbacks). Chosen by the product app,
/// so any printable text is allowed (Korean, emoji, ...), but not control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientUserId(String);

impl ClientUserId {
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.chars().count() > MAX_USER_ID_LEN {
            return Err(IdError::TooLong {
                max: MAX_USER_ID_LEN,
            });
        }
        if s.chars().any(char::is_control) {
            return Err(IdError::ControlChar);
        }
        not_dots_only(&s)?;
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for ClientUserId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(s)
    }
}
impl From<ClientUserId> for String {
    fn from(k: ClientUserId) -> String {
        k.0
    }
}
impl fmt::Display for ClientUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ClientUserId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        id_schema(MAX_USER_ID_LEN, USER_ID_PATTERN)
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ClientUserId {}

/// A point in time as Kollus writes it: whole seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixSeconds(pub i64);

impl fmt::Display for UnixSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kollus_keys_accept_what_kollus_sends() {
        for k in ["vnCVPVyV", "ufk-0001", "ch_main.2", "mediacontentkey"] {
            assert_eq!(MediaContentKey::parse(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn kollus_keys_refuse_what_kollus_never_sends() {
        assert_eq!(MediaContentKey::parse(""), Err(IdError::Empty));
        assert_eq!(MediaContentKey::parse("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(MediaContentKey::parse("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(
            ChannelKey::parse("x".repeat(MAX_KEY_LEN + 1)),
            Err(IdError::TooLong { max: MAX_KEY_LEN })
        );
    }

    #[test]
    fn ids_of_dots_only_are_refused_as_relative_paths() {
        for dots in [".", "..", "..."] {
            assert_eq!(MediaContentKey::parse(dots), Err(IdError::DotsOnly));
            assert_eq!(UploadFileKey::parse(dots), Err(IdError::DotsOnly));
            assert_eq!(ChannelKey::parse(dots), Err(IdError::DotsOnly));
            assert_eq!(ClientUserId::parse(dots), Err(IdError::DotsOnly));
        }
        // A dot among other characters is Kollus's and ours.
        for k in [".a", "a..", "v1.2", "_."] {
            assert!(MediaContentKey::parse(k).is_ok(), "{k}");
            assert!(ClientUserId::parse(k).is_ok(), "{k}");
        }
        assert!(ClientUserId::parse(". .").is_ok());
    }

    #[test]
    fn user_ids_are_any_printable_text() {
        for u in ["181353", "김철수", "user 🎬 1", "a/b:c"] {
            assert_eq!(ClientUserId::parse(u).unwrap().as_str(), u);
        }
        assert_eq!(ClientUserId::parse(""), Err(IdError::Empty));
        assert_eq!(ClientUserId::parse("a\nb"), Err(IdError::ControlChar));
    }

    #[test]
    fn keys_deserialize_through_parse() {
        let bad: Result<MediaContentKey, _> = serde_json::from_str("\"a b\"");
        assert!(bad.is_err());
        let good: MediaContentKey = serde_json::from_str("\"vnCVPVyV\"").unwrap();
        assert_eq!(good.as_str(), "vnCVPVyV");
    }
}
