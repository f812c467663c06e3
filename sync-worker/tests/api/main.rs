//! sync-worker against real PostgreSQL and a real broker.

mod catalog;
mod faults;
mod helpers;
mod rebuild;
mod replay;
mod request_id;
mod snapshot;
