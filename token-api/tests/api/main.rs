//! token-api against a real PostgreSQL catalog.

mod helpers;
mod openapi;
mod playback;
mod read;
mod tokens;
