-- Viewer binding (README "Viewer binding"): whether a session's reports came from a player URL
-- token-api made for its user. NULL when no report was judged (PLAYER_BINDING=off when they
-- arrived); true only when every report was bound; false once one was not (under `record`: under
-- `require` an unbound report never reaches a session). The console shows false as "unbound".
ALTER TABLE watch_sessions ADD COLUMN bound boolean;
