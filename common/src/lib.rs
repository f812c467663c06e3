//! What the kollus-pipeline services share: the event envelope and Kollus payload types, Kafka
//! and PostgreSQL plumbing, settings, telemetry and metrics helpers, schema migrations.
//! A service's own logic lives in its own crate.

pub mod archive;
pub mod backoff;
pub mod client_addr;
pub mod db;
pub mod domain;
pub mod envelope;
pub mod erasure;
pub mod http;
pub mod kafka;
pub mod kollus;
pub mod metrics;
pub mod model;
pub mod pg_tls;
pub mod progress;
pub mod settings;
pub mod subject;
pub mod telemetry;
pub mod vocab;
pub mod worker;
