//! The access record (접속기록; README "The access record"): one append-only log of who accessed
//! whose personal data, when, from where, what they did and why, for the console and the API.
//!
//! - `record`: writing rows ([`record::AccessLog`]); every feature that shows or changes a
//!   user's data records through it, before it answers.
//! - `legacy`: `console_views` (V15), moved into the log at start.
//! - `read`: reading rows back for the console (a subject's accesses, the monthly review),
//!   bounded, subjects by tag (no sealed id opened).
//! - Rows are chained by an HMAC keyed by `ACCESS_LOG_KEY_FILE` (a key the database never
//!   holds), sealed in id order a few seconds after they are written.

pub mod legacy;
pub mod read;
pub mod record;
