//! sync-worker against real PostgreSQL and a real broker.

mod catalog;
mod helpers;
mod replay;
