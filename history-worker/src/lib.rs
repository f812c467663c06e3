//! history-worker: consumes `kollus.playback.v1` and keeps watch sessions in PostgreSQL.

pub mod barrier;
pub mod configuration;
pub mod history;
pub mod metrics;
pub mod sessions;
pub mod startup;
pub mod store;
