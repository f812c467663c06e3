//! kollus-archive: our own durable copy of every callback, outside Kafka, in a form any machine
//! can read (zstd-compressed JSON Lines, a SHA-256 per segment), that can be verified and
//! produced back into a new Kafka cluster.

pub mod dump;
pub mod metrics;
pub mod progress;
pub mod record;
pub mod restore;
pub mod segment;
pub mod store;
pub mod verify;
