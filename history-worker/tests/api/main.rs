//! history-worker against real PostgreSQL and a real broker.

mod helpers;
mod sessions;
