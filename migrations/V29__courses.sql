-- Courses (issue 33, README "Courses"): an ordered list of lessons (videos) and the rules a
-- course is judged by. token-api writes them (`PUT /v1/courses/{course_id}`) and computes a
-- user's progress, completion and refund from the watch sessions on read: nothing per user is
-- stored here, so a course's rules can change and every user's answer follows, and an erasure
-- has nothing of the user's to reach in these tables (the user's course entitlements are rows of
-- `entitlements`, which it already empties).
--
-- Each fact is in one place: a course's settings are columns of `courses`, its lessons rows of
-- `course_lessons`; the answer of `GET /v1/courses/{course_id}` is built from both.

CREATE TABLE courses (
    course_id            text PRIMARY KEY CHECK (course_id ~ '^[A-Za-z0-9_.-]{1,128}$'),
    title                text NOT NULL,
    channel_key          text,
    lesson_percent       integer NOT NULL CHECK (lesson_percent BETWEEN 1 AND 100),
    course_percent       integer NOT NULL CHECK (course_percent BETWEEN 1 AND 100),
    count                text NOT NULL CHECK (count IN ('showtime', 'blocks')),
    floor_percent        integer NOT NULL CHECK (floor_percent BETWEEN 0 AND 100),
    unlock_percent       integer NOT NULL CHECK (unlock_percent BETWEEN 1 AND 100),
    daily_limit_seconds  integer CHECK (daily_limit_seconds BETWEEN 60 AND 86400),
    one_player_at_a_time boolean NOT NULL,
    unlock_in_order      boolean NOT NULL,
    max_playback_rate    double precision NOT NULL CHECK (max_playback_rate >= 1),
    time_zone            text NOT NULL,
    -- "academy", "none", or {"table": [{"below_percent": n, "refund_percent": m}, ...]}.
    refund               jsonb NOT NULL,
    created_at           timestamptz NOT NULL,
    changed_at           timestamptz NOT NULL,
    changed_by           text NOT NULL  -- the API key's name
);
-- Enrolment by a channel grant: the courses of a channel.
CREATE INDEX courses_channel_idx ON courses (channel_key) WHERE channel_key IS NOT NULL;

CREATE TABLE course_lessons (
    course_id          text NOT NULL REFERENCES courses (course_id) ON DELETE CASCADE,
    position           integer NOT NULL CHECK (position >= 0),
    media_content_key  text NOT NULL,
    -- As given; NULL: the catalog's duration, else the longest duration the video's reports gave.
    recognised_seconds integer CHECK (recognised_seconds > 0),
    PRIMARY KEY (course_id, position),
    UNIQUE (course_id, media_content_key)
);
-- The play callback's "which courses list this video" (a course grant covers its lessons).
CREATE INDEX course_lessons_media_idx ON course_lessons (media_content_key, course_id);

-- A user enrols in a course by a grant of scope `course` (or a channel grant for the course's
-- channel_key).
ALTER TABLE entitlements DROP CONSTRAINT entitlements_scope_check;
ALTER TABLE entitlements ADD CONSTRAINT entitlements_scope_check
    CHECK (scope IN ('media', 'channel', 'course'));
-- A course's users (its export): the grants on the course, and on its channel.
CREATE INDEX entitlements_scope_target_idx ON entitlements (scope, target);
