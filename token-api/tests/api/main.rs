//! token-api against a real PostgreSQL catalog.

mod helpers;
mod openapi;
mod read;
mod tokens;
