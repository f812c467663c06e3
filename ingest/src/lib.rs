//! ingest: the thin front door. Accepts Kollus callbacks, answers 200 only once they are
//! durable on Kafka, and keeps what it refuses on the dead-letter topic.

pub mod configuration;
pub mod metrics;
pub mod routes;
pub mod startup;
