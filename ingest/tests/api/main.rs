//! ingest against a real broker: what Kollus and players post, and what lands on Kafka.

mod callbacks;
mod faults;
mod helpers;
mod inputs;
mod templates;
mod trust;
