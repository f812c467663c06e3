-- A completed download (DRM kind 2) is counted only when a DRM kind 1 approval of ours issued its
-- session key, for the same user, video and player (issue 26: a forged completion must not use up
-- someone's download limit). This finds that approval per completion; only approvals are kept in
-- it, a small part of the decisions.
CREATE INDEX playback_decisions_drm_approved_idx
    ON playback_decisions (client_user_id, media_content_key, session_key)
    WHERE callback = 'drm' AND kind = 1 AND result = 1;
