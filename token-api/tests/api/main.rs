//! token-api against a real PostgreSQL catalog.

mod helpers;
mod tokens;
