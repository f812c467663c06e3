-- The support console (issue 21): its sign-in sessions and the record of who viewed whose data.

-- A signed-in support agent. The browser holds a random id in a cookie; only its SHA-256 is kept
-- here, so a copy of this table opens no session. `key_fingerprint` is the SHA-256 of the API
-- key that signed in: a session whose key is no longer configured (a SIGHUP reload revoked or
-- rotated it) is refused. `csrf_token` is echoed by every state-changing form.
CREATE TABLE console_sessions (
    id_hash         bytea PRIMARY KEY,
    key_name        text NOT NULL,
    key_fingerprint bytea NOT NULL,
    csrf_token      text NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

-- Every page view of a user's data (viewing history is personal data): who, whose, when.
CREATE TABLE console_views (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_name          text NOT NULL,
    client_user_id    text NOT NULL,
    media_content_key text,
    viewed_at         timestamptz NOT NULL
);
CREATE INDEX console_views_user_idx ON console_views (client_user_id, viewed_at);
