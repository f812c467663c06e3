//! token-api against a real PostgreSQL catalog.

mod access_log_chain;
mod access_log_record;
mod access_log_review;
mod binary;
mod browser;
mod callback_trust;
mod console;
mod console_bounds;
mod console_sessions;
mod erasure;
mod export;
mod export_stalls;
mod far_and_dots;
mod helpers;
mod hostile;
mod id_limits;
mod listeners;
mod models;
mod openapi;
mod playback;
mod player_options;
mod read;
mod scopes;
mod tokens;
mod unknown_media;
mod vocabulary;
