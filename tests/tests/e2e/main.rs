//! End to end: ingest, sync-worker, history-worker and token-api as separate processes (the
//! real binaries), a real broker and a real PostgreSQL; callbacks over HTTP, results read from
//! the database and token-api.
//!
//! The binaries must be built first (`make test` does: `cargo build --workspace --bins`).

mod archive;
mod authorization;
mod broker_metrics;
mod catalog;
mod courses;
mod erasure;
mod failover;
mod kafka_security;
mod long_tier;
mod operations;
mod pipeline;
mod read_api;
mod readme;
mod settings;
mod stack;
mod your_data;
