//! kollus-catalog against the stand-in for Kollus's API, a real broker and, where the catalog is
//! checked, a real sync-worker on real PostgreSQL.

mod backfill;
mod command;
mod helpers;
mod hostile;
mod sweep;
