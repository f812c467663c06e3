//! history-worker against real PostgreSQL and a real broker.

mod group;
mod helpers;
mod sessions;
