//! What an export holds: the queries of a user's export and of a video's, each one statement
//! with one parameter (`$1`, the user or the video), in the order they are written.

/// One query of an export: its SQL (one parameter, `$1`) and how each row becomes output.
pub struct Part {
    pub sql: &'static str,
    pub kind: &'static str,
}

pub static USER_PARTS: &[Part] = &[
    Part {
        sql: "SELECT to_jsonb(s) FROM watch_sessions s WHERE s.client_user_id = $1 \
              ORDER BY s.media_content_key, s.start_at",
        kind: "session",
    },
    Part {
        sql: "SELECT to_jsonb(p) FROM watch_progress p WHERE p.client_user_id = $1 \
              ORDER BY p.media_content_key",
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
    Part {
        sql: "SELECT client_user_id, media_content_key, start_at, \
                     to_timestamp(start_at) AS started_at, channel_key, duration, playtime, \
                     real_playtime, runtime, showtime, playtime_percent, last_play_at, \
                     block_count, cardinality(array_positions(blocks_played, true))::int, \
                     first_report_at, last_report_at, hash_verified, device_clock, \
                     player_id, device, os \
              FROM watch_sessions WHERE client_user_id = $1 ORDER BY media_content_key, start_at",
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
];

pub static MEDIA_PARTS: &[Part] = &[
    Part {
        sql: "SELECT to_jsonb(m) FROM (SELECT p.*, u.filename, u.full_filename, \
                     u.content_provider_key, u.transcoding_state, u.uploaded_at, u.transcoded_at, \
                     u.poster_changed_at \
              FROM media_playability p JOIN uploads u USING (upload_file_key) \
              WHERE p.media_content_key = $1) m",
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
        sql: "SELECT client_user_id, sessions, total_playtime, total_real_playtime, \
                     blocks_watched, block_count, first_watched_at, last_watched_at \
              FROM watch_progress WHERE media_content_key = $1 ORDER BY client_user_id",
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
];
