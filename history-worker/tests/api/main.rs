//! history-worker against real PostgreSQL and a real broker.

mod ceilings;
mod erasure;
mod faults;
mod group;
mod helpers;
mod merge;
mod rebalance;
mod rebuild;
mod sessions;
