//! `watch_sessions`: one row per (client_user_id, media_content_key, start_at), kept by
//! history-worker and read by token-api (the history page, the console).

use time::OffsetDateTime;

use super::table::table_row;

table_row! {
    /// One `watch_sessions` row.
    SessionRow in "watch_sessions" keyed by 3 {
        client_user_id: String => TEXT,
        media_content_key: String => TEXT,
        /// Kollus's `start_at` (Unix seconds): the session's identity.
        start_at: i64 => INT8,
        channel_key: Option<String> => TEXT,
        encoding_profile: Option<String> => TEXT,
        /// The video's length as the player reported it, in seconds.
        duration: Option<i64> => INT8,
        player_id: Option<String> => TEXT,
        hardware_id: Option<String> => TEXT,
        device: Option<String> => TEXT,
        os: Option<String> => TEXT,
        version: Option<String> => TEXT,
        host_name: Option<String> => TEXT,
        uservalues: serde_json::Value => JSONB,
        playtime: i64 => INT8,
        real_playtime: i64 => INT8,
        runtime: i64 => INT8,
        showtime: i64 => INT8,
        playtime_percent: i64 => INT8,
        last_play_at: Option<i64> => INT8,
        last_play_at_runtime: Option<i64> => INT8,
        block_count: Option<i32> => INT4,
        blocks_played: Vec<bool> => BOOL_ARRAY,
        block_seconds: Vec<i64> => INT8_ARRAY,
        block_percent: Vec<i64> => INT8_ARRAY,
        first_report_at: OffsetDateTime => TIMESTAMPTZ,
        last_report_at: OffsetDateTime => TIMESTAMPTZ,
        /// Played segments, stored merged (common's `merge::to_stored`).
        segments: serde_json::Value => JSONB,
        hash_verified: Option<bool> => BOOL,
        /// Every report carried its user's viewer binding (`None`: binding was off).
        bound: Option<bool> => BOOL,
        device_clock: bool => BOOL,
    }
}

impl SessionRow {
    /// The session's identity as stored: (client_user_id, media_content_key, start_at).
    pub fn id(&self) -> (String, String, i64) {
        (
            self.client_user_id.clone(),
            self.media_content_key.clone(),
            self.start_at,
        )
    }

    /// Blocks played in this session.
    pub fn blocks_watched(&self) -> i32 {
        let n = self.blocks_played.iter().filter(|p| **p).count();
        i32::try_from(n).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_type_per_column_and_the_identity_first() {
        assert_eq!(SessionRow::COLUMNS.len(), SessionRow::TYPES.len());
        assert_eq!(
            &SessionRow::COLUMNS[..SessionRow::KEYS],
            ["client_user_id", "media_content_key", "start_at"]
        );
    }
}
