//! LMS progress callbacks (SPEC.md sections 3 and 4.1-4.3), posted by viewers' players: untrusted
//! input.
//!
//! - [`wire`] reads the loose document players send (numbers as strings or numbers, fields that
//!   old players omit) into the strict [`LmsReport`] the rest of the pipeline sees, serialized
//!   with numbers as numbers.
//! - [`request`] finds that document wherever the customer's console template put it (any form
//!   field or query parameter, or a JSON body) and keeps the flat template fields beside it.
//! - [`checksum`] verifies the `&hash=` players append to the POST data (SPEC.md 4.2).

pub mod checksum;
pub mod merge;
mod report;
pub mod request;
pub mod wire;

pub use report::{
    Block, Blocks, LmsContent, LmsReport, LmsUser, PlayStatus, Segment, MAX_BLOCKS, MAX_SEGMENTS,
};

impl LmsReport {
    /// Parses the JSON document (`{JSON_DATA}`) a player sends.
    pub fn from_json(json: &[u8]) -> Result<Self, crate::kollus::callback::PayloadError> {
        wire::parse(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_key_separates_user_and_video() {
        let r = LmsReport::from_json(
            br#"{"user_info":{"client_user_id":"a"},"content_info":{"media_content_key":"bc","start_at":"1"}}"#,
        )
        .unwrap();
        assert_eq!(r.partition_key(), "a\u{1f}bc");
    }

    #[test]
    fn play_status_takes_kollus_values_in_any_case() {
        assert_eq!(PlayStatus::parse(" PAUSE"), Some(PlayStatus::Pause));
        assert_eq!(PlayStatus::parse("stop"), Some(PlayStatus::Stop));
        assert_eq!(PlayStatus::parse("seeking"), None);
        assert_eq!(PlayStatus::parse("Playing"), Some(PlayStatus::Play));
        assert_eq!(PlayStatus::parse("paused"), Some(PlayStatus::Pause));
        assert_eq!(PlayStatus::parse("STOPPED\n"), Some(PlayStatus::Stop));
        assert_eq!(
            PlayStatus::Play.as_str(),
            "play",
            "written as Kollus's shortest name"
        );
    }
}
