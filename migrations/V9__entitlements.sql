-- Playback authorization (token-api answers Kollus's play and DRM callbacks, SPEC.md section 5).

-- What the product app has granted: access to one video, or to every video the catalog has in a
-- channel. A revoked grant stays (revoked_at) so a later callback can say "revoked", not "never".
CREATE TABLE entitlements (
    client_user_id         text NOT NULL,
    scope                  text NOT NULL CHECK (scope IN ('media', 'channel')),
    target                 text NOT NULL,  -- media_content_key or channel_key
    expires_at             timestamptz,
    playtime_limit_seconds bigint CHECK (playtime_limit_seconds > 0),
    download               boolean NOT NULL,
    download_limit         integer CHECK (download_limit >= 0),
    granted_by             text NOT NULL,  -- the API key's name
    granted_at             timestamptz NOT NULL,
    revoked_by             text,
    revoked_at             timestamptz,
    PRIMARY KEY (client_user_id, scope, target)
);

-- Every change ever made, for "why could this user watch this?".
CREATE TABLE entitlement_changes (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_user_id         text NOT NULL,
    scope                  text NOT NULL,
    target                 text NOT NULL,
    action                 text NOT NULL CHECK (action IN ('grant', 'revoke')),
    expires_at             timestamptz,
    playtime_limit_seconds bigint,
    download               boolean,
    download_limit         integer,
    changed_by             text NOT NULL,
    changed_at             timestamptz NOT NULL
);
CREATE INDEX entitlement_changes_user_idx ON entitlement_changes (client_user_id, changed_at);

-- Completed downloads (DRM kind 2), once per Kollus session_key however often Kollus retries.
CREATE TABLE drm_downloads (
    client_user_id    text NOT NULL,
    media_content_key text NOT NULL,
    session_key       text NOT NULL,
    completed_at      timestamptz NOT NULL,
    PRIMARY KEY (client_user_id, media_content_key, session_key)
);

-- Every answer given to Kollus, with the numbers it was made from.
CREATE TABLE playback_decisions (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decided_at             timestamptz NOT NULL,
    callback               text NOT NULL CHECK (callback IN ('play', 'drm')),
    kind                   integer NOT NULL,
    client_user_id         text NOT NULL,
    media_content_key      text NOT NULL,
    result                 integer NOT NULL,
    reason                 text NOT NULL,
    scope                  text,
    target                 text,
    expires_at             timestamptz,
    playtime_limit_seconds bigint,
    playtime_used_seconds  bigint,
    downloads              bigint,
    download_limit         integer,
    player_id              text,
    session_key            text
);
CREATE INDEX playback_decisions_user_idx
    ON playback_decisions (client_user_id, media_content_key, decided_at);
