//! sync-worker: consumes `kollus.content.v1` and keeps the media catalog in PostgreSQL.

pub mod catalog;
pub mod configuration;
pub mod metrics;
pub mod startup;
