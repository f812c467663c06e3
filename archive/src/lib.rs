//! kollus-archive: our own durable copy of every callback, outside Kafka, in a form any machine
//! can read (zstd-compressed JSON Lines, a SHA-256 per segment, an epoch per incarnation of a
//! partition), that can be verified and produced back into a new Kafka cluster. The format
//! itself lives in `kollus_common::archive` (the workers' `--rebuild` and token-api read it too).

pub mod dump;
pub mod metrics;
pub mod reencrypt;
pub mod restore;
pub mod verify;

pub use kollus_common::archive::{record, segment, store};
