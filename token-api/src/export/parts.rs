//! What an export holds: the queries of a user's export and of a video's, each one statement
//! with one parameter (`$1`, the user or the video), in the order they are written.

/// What the catalog says of a video (SPEC.md section 7, from Kollus's API and callbacks): the
/// upload `u`'s columns, null where unknown, named once here and written by `$as`: one jsonb
/// object (a user's `session` and `progress` lines carry it), columns (last in each CSV row and
/// in the video's `media` line), or their names (both CSV headers end with them).
macro_rules! catalog {
    ($as:ident) => {
        $as!(
            title,
            duration_seconds,
            poster_url,
            transcoding_stage,
            transcoding_stage_name,
            absent_since
        )
    };
}

macro_rules! json_object {
    ($first:ident $(, $c:ident)*) => {
        concat!(
            "jsonb_build_object('", stringify!($first), "', u.", stringify!($first),
            $(", '", stringify!($c), "', u.", stringify!($c),)*
            ")"
        )
    };
}

macro_rules! columns {
    ($first:ident $(, $c:ident)*) => {
        concat!("u.", stringify!($first), $(", u.", stringify!($c),)*)
    };
}

#[cfg(test)]
macro_rules! names {
    ($($c:ident),*) => {
        [$(stringify!($c)),*]
    };
}

/// A video's upload, when the catalog knows the video (left joins: history outlives it).
macro_rules! catalog_join {
    ($table:literal) => {
        concat!(
            " LEFT JOIN media_contents mc ON mc.media_content_key = ",
            $table,
            ".media_content_key LEFT JOIN uploads u ON u.upload_file_key = mc.upload_file_key "
        )
    };
}

/// One query of an export: its SQL (one parameter, `$1`) and how each row becomes output.
pub struct Part {
    pub sql: &'static str,
    pub kind: &'static str,
}

pub static USER_PARTS: &[Part] = &[
    Part {
        sql: concat!(
            "SELECT to_jsonb(s) || ",
            catalog!(json_object),
            " FROM watch_sessions s",
            catalog_join!("s"),
            "WHERE s.client_user_id = $1 ORDER BY s.media_content_key, s.start_at"
        ),
        kind: "session",
    },
    Part {
        sql: concat!(
            "SELECT to_jsonb(p) || ",
            catalog!(json_object),
            " FROM watch_progress p",
            catalog_join!("p"),
            "WHERE p.client_user_id = $1 ORDER BY p.media_content_key"
        ),
        kind: "progress",
    },
    Part {
        sql: "SELECT to_jsonb(e) FROM entitlements e WHERE e.client_user_id = $1 \
              ORDER BY e.scope, e.target",
        kind: "entitlement",
    },
    Part {
        sql: "SELECT to_jsonb(d) - 'id' FROM playback_decisions d WHERE d.client_user_id = $1 \
              ORDER BY d.decided_at, d.id",
        kind: "playback_decision",
    },
    // `started_at` only up to 9999-12-31T23:59:59Z, what a time value here holds (a row stored
    // before history-worker bounded `start_at` may be later): empty past it, never a failed row.
    Part {
        sql: concat!(
            "SELECT s.client_user_id, s.media_content_key, s.start_at, \
                    CASE WHEN s.start_at <= 253402300799 THEN to_timestamp(s.start_at) END \
                    AS started_at, s.channel_key, s.duration, s.playtime, \
                    s.real_playtime, s.runtime, s.showtime, s.playtime_percent, s.last_play_at, \
                    s.block_count, cardinality(array_positions(s.blocks_played, true))::int, \
                    s.first_report_at, s.last_report_at, s.hash_verified, s.device_clock, \
                    s.player_id, s.device, s.os, ",
            catalog!(columns),
            " FROM watch_sessions s",
            catalog_join!("s"),
            "WHERE s.client_user_id = $1 ORDER BY s.media_content_key, s.start_at"
        ),
        kind: "csv",
    },
];

pub const USER_CSV: &[&str] = &[
    "client_user_id",
    "media_content_key",
    "start_at",
    "started_at",
    "channel_key",
    "duration",
    "playtime",
    "real_playtime",
    "runtime",
    "showtime",
    "playtime_percent",
    "last_play_at",
    "block_count",
    "blocks_played",
    "first_report_at",
    "last_report_at",
    "hash_verified",
    "device_clock",
    "player_id",
    "device",
    "os",
    "title",
    "duration_seconds",
    "poster_url",
    "transcoding_stage",
    "transcoding_stage_name",
    "absent_since",
];

pub static MEDIA_PARTS: &[Part] = &[
    Part {
        // The view's `deleted_at` counts an absence as a delete (V14); the line says which:
        // `deleted_at` the callback's delete, `absent_since` the absence.
        sql: concat!(
            "SELECT to_jsonb(m) FROM (SELECT p.media_content_key, p.upload_file_key, \
                    u.deleted_at, p.in_any_channel, p.playable, u.filename, u.full_filename, \
                    u.content_provider_key, u.transcoding_state, u.uploaded_at, u.transcoded_at, \
                    u.poster_changed_at, ",
            catalog!(columns),
            " FROM media_playability p JOIN uploads u USING (upload_file_key) \
               WHERE p.media_content_key = $1) m"
        ),
        kind: "media",
    },
    Part {
        sql: "SELECT to_jsonb(c) FROM channel_memberships c WHERE c.media_content_key = $1 \
              ORDER BY c.channel_key",
        kind: "channel",
    },
    Part {
        sql: "SELECT to_jsonb(e) - 'payload' || jsonb_build_object('payload', e.payload) \
              FROM content_event_order e WHERE e.media_content_key = $1 \
              ORDER BY e.event_at, e.envelope_id",
        kind: "content_event",
    },
    Part {
        sql: "SELECT jsonb_build_object('client_user_id', client_user_id, 'sessions', sessions, \
                     'total_playtime', total_playtime, 'total_real_playtime', total_real_playtime, \
                     'blocks_watched', blocks_watched, 'block_count', block_count, \
                     'first_watched_at', first_watched_at, 'last_watched_at', last_watched_at) \
              FROM watch_progress WHERE media_content_key = $1 ORDER BY client_user_id",
        kind: "user_totals",
    },
    Part {
        sql: concat!(
            "SELECT p.client_user_id, p.sessions, p.total_playtime, p.total_real_playtime, \
                    p.blocks_watched, p.block_count, p.first_watched_at, p.last_watched_at, ",
            catalog!(columns),
            " FROM watch_progress p",
            catalog_join!("p"),
            "WHERE p.media_content_key = $1 ORDER BY p.client_user_id"
        ),
        kind: "csv",
    },
];

pub const MEDIA_CSV: &[&str] = &[
    "client_user_id",
    "sessions",
    "total_playtime",
    "total_real_playtime",
    "blocks_watched",
    "block_count",
    "first_watched_at",
    "last_watched_at",
    "title",
    "duration_seconds",
    "poster_url",
    "transcoding_stage",
    "transcoding_stage_name",
    "absent_since",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_csv_headers_end_with_the_catalog_columns() {
        let catalog = catalog!(names);
        for header in [USER_CSV, MEDIA_CSV] {
            assert!(header.ends_with(&catalog), "{header:?}");
        }
    }
}
