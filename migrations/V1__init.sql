-- kollus-pipeline schema. Every table can be rebuilt by replaying the Kafka topics.

------------------------------------------------------------------------------------------------
-- Catalog (sync-worker): follows Kollus's platform callbacks.
------------------------------------------------------------------------------------------------

-- Every applied platform callback, once. The primary key makes re-delivery a no-op, and the
-- table is the audit log: unknown update types are kept here even when nothing else changes.
CREATE TABLE content_events (
    envelope_id       uuid PRIMARY KEY,
    received_at       timestamptz NOT NULL,
    kind              text NOT NULL,
    change            text NOT NULL,
    upload_file_key   text NOT NULL,
    media_content_key text,
    channel_key       text,
    payload           jsonb NOT NULL,
    applied_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX content_events_upload_idx ON content_events (upload_file_key, received_at);

CREATE TABLE uploads (
    upload_file_key      text PRIMARY KEY,
    content_provider_key text,
    filename             text,
    full_filename        text,
    uploaded_at          timestamptz,
    transcoding_state    text NOT NULL DEFAULT 'pending'
                         CHECK (transcoding_state IN ('pending', 'success', 'fail')),
    transcoded_at        timestamptz,
    deleted_at           timestamptz,
    poster_changed_at    timestamptz,
    first_event_at       timestamptz NOT NULL,
    last_event_at        timestamptz NOT NULL
);

-- A playable video. One upload may have several (Kollus does not say it cannot).
CREATE TABLE media_contents (
    media_content_key text PRIMARY KEY,
    upload_file_key   text NOT NULL REFERENCES uploads (upload_file_key),
    first_event_at    timestamptz NOT NULL,
    last_event_at     timestamptz NOT NULL
);
CREATE INDEX media_contents_upload_idx ON media_contents (upload_file_key);

CREATE TABLE channel_memberships (
    media_content_key text NOT NULL REFERENCES media_contents (media_content_key),
    channel_key       text NOT NULL,
    channel_name      text,
    profile_keys      text[] NOT NULL DEFAULT '{}',
    in_channel        boolean NOT NULL,
    joined_at         timestamptz,
    left_at           timestamptz,
    -- The membership event that decided `in_channel`: later-received events win.
    decided_at        timestamptz NOT NULL,
    decided_by        uuid NOT NULL,
    PRIMARY KEY (media_content_key, channel_key)
);

-- "Is this media content key playable?": in at least one channel, and its upload not deleted.
CREATE VIEW media_playability AS
SELECT m.media_content_key,
       m.upload_file_key,
       u.deleted_at,
       EXISTS (SELECT 1 FROM channel_memberships c
               WHERE c.media_content_key = m.media_content_key AND c.in_channel) AS in_any_channel,
       u.deleted_at IS NULL
         AND EXISTS (SELECT 1 FROM channel_memberships c
                     WHERE c.media_content_key = m.media_content_key AND c.in_channel) AS playable
FROM media_contents m JOIN uploads u USING (upload_file_key);

------------------------------------------------------------------------------------------------
-- Watch history (history-worker): one row per player session, SPEC.md section 3.
------------------------------------------------------------------------------------------------

-- Merging per-block arrays element by element (the shorter one padded): cumulative block
-- counters keep their maximum, "played" flags their OR.
CREATE FUNCTION merge_max(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(greatest(x, y) ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

CREATE FUNCTION merge_or(a boolean[], b boolean[]) RETURNS boolean[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(x, false) OR coalesce(y, false) ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

-- Union of "played" flags over many sessions (the rollup's blocks ever watched).
CREATE AGGREGATE or_merge(boolean[]) (SFUNC = merge_or, STYPE = boolean[], INITCOND = '{}');

-- Every applied LMS report's envelope id, once: re-delivery is a no-op (so `reports` is exact).
CREATE TABLE playback_events (
    envelope_id uuid PRIMARY KEY,
    received_at timestamptz NOT NULL
);

CREATE TABLE watch_sessions (
    client_user_id       text   NOT NULL,
    media_content_key    text   NOT NULL,
    start_at             bigint NOT NULL,  -- Unix seconds of the Video Gateway call
    channel_key          text,
    encoding_profile     text,
    duration             bigint,
    player_id            text,
    hardware_id          text,
    device               text,
    os                   text,
    version              text,
    host_name            text,
    uservalues           jsonb  NOT NULL DEFAULT '{}',
    -- Cumulative within the session: each keeps the largest value reported.
    playtime             bigint NOT NULL DEFAULT 0,
    real_playtime        bigint NOT NULL DEFAULT 0,
    runtime              bigint NOT NULL DEFAULT 0,
    showtime             bigint NOT NULL DEFAULT 0,
    playtime_percent     bigint NOT NULL DEFAULT 0,
    -- Playback position from the report with the largest runtime (the latest one).
    last_play_at         bigint,
    last_play_at_runtime bigint,
    -- Per block, merged by maximum (played: OR).
    block_count          integer,
    blocks_played        boolean[] NOT NULL DEFAULT '{}',
    block_seconds        bigint[]  NOT NULL DEFAULT '{}',
    block_percent        bigint[]  NOT NULL DEFAULT '{}',
    first_report_at      timestamptz NOT NULL,
    last_report_at       timestamptz NOT NULL,
    reports              bigint NOT NULL,
    PRIMARY KEY (client_user_id, media_content_key, start_at)
);

-- Per (user, video) rollup kept current in the same transaction as the sessions: what support
-- staff and resume need, in one indexed read.
CREATE TABLE watch_progress (
    client_user_id      text NOT NULL,
    media_content_key   text NOT NULL,
    sessions            integer NOT NULL,
    total_playtime      bigint NOT NULL,
    total_real_playtime bigint NOT NULL,
    block_count         integer,
    blocks_ever_played  boolean[] NOT NULL,
    blocks_watched      integer NOT NULL,
    last_position       bigint,
    first_watched_at    timestamptz NOT NULL,
    last_watched_at     timestamptz NOT NULL,
    PRIMARY KEY (client_user_id, media_content_key)
);
