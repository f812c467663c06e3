-- The rollup is computed in Rust (history-worker/src/store.rs); nothing calls this aggregate.
-- merge_or and merge_max stay while the insert race fallback's ON CONFLICT uses them.
DROP AGGREGATE IF EXISTS or_merge(boolean[]);
