//! `uploads`: one row per Kollus upload, kept by sync-worker from callbacks and the catalog's
//! snapshots, read by token-api (a video's catalog state, the console) and the catalog's sweep.

use time::OffsetDateTime;

use super::table::table_row;

table_row! {
    /// One `uploads` row.
    UploadRow in "uploads" keyed by 1 {
        upload_file_key: String => TEXT,
        content_provider_key: Option<String> => TEXT,
        filename: Option<String> => TEXT,
        full_filename: Option<String> => TEXT,
        uploaded_at: Option<OffsetDateTime> => TIMESTAMPTZ,
        /// `pending`, `success`, `fail` or `unknown` (V13).
        transcoding_state: String => TEXT,
        transcoded_at: Option<OffsetDateTime> => TIMESTAMPTZ,
        /// Kollus's delete callback reached us.
        deleted_at: Option<OffsetDateTime> => TIMESTAMPTZ,
        poster_changed_at: Option<OffsetDateTime> => TIMESTAMPTZ,
        first_event_at: OffsetDateTime => TIMESTAMPTZ,
        last_event_at: OffsetDateTime => TIMESTAMPTZ,
        /// The video's title in Kollus, from its API or a callback that carried it.
        title: Option<String> => TEXT,
        /// The video's length in whole seconds, as Kollus's API gave it.
        duration_seconds: Option<i32> => INT4,
        poster_url: Option<String> => TEXT,
        /// Kollus's transcoding stage as the API said it (21 done; 0, 1, 12 in progress).
        transcoding_stage: Option<i32> => INT4,
        transcoding_stage_name: Option<String> => TEXT,
        /// Since when Kollus's API no longer lists the upload (a delete whose callback was lost).
        absent_since: Option<OffsetDateTime> => TIMESTAMPTZ,
    }
}
