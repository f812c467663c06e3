//! ingest: the thin front door. Accepts Kollus callbacks, answers 200 only once they are
//! durable on Kafka, and keeps what it refuses on the dead-letter topic.

pub mod configuration;
pub mod metrics;
pub mod publish;
pub mod routes;
pub mod spool;
pub mod startup;
