//! What a Kollus callback is ([`CallbackKind`]) and how reading its payload fails
//! ([`PayloadError`]): the two types every parser of `kollus` shares.

use serde::{Deserialize, Serialize};

/// Which callback URL a request came in on. Also the envelope's `kind`. Its text is serde's and
/// strum's, the same snake_case (a unit test holds them together).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CallbackKind {
    Upload,
    Transcoding,
    ContentUpdate,
    Channel,
    Lms,
    /// Not a callback: what Kollus's REST API said about one upload (`kollus-catalog`).
    Snapshot,
}

impl CallbackKind {
    /// The kinds Kollus posts to a callback URL (a snapshot is not one).
    pub const ALL: [CallbackKind; 5] = [
        Self::Upload,
        Self::Transcoding,
        Self::ContentUpdate,
        Self::Channel,
        Self::Lms,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// A callback that is not what Kollus sends: names the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct PayloadError {
    pub field: String,
    pub problem: String,
}

impl PayloadError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}
