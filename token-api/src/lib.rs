//! token-api: signs Kollus playback tokens for the product app, answers its questions about
//! watch progress, watch history and the catalog, keeps its entitlements, answers Kollus's play
//! and DRM callbacks, and exports what we hold about a user or a video.
//!
//! Layers, one way only (a test holds the import graph free of cycles, `tests/layers.rs`):
//!
//! - top: `startup` (builds each feature's `web::Data`) and `routes` (registers every route);
//! - features: `tokens`, `history` (the read API), `entitlements`, `playback`, `export`,
//!   `console` (the support console's HTML pages, outside the API document), `access_log`
//!   (the record of who accessed whose data: others write it through `access_log::record`); a
//!   feature may use another's model (playback uses `entitlements::model::Scope`), never its
//!   handlers;
//! - bottom, importing nothing above it: `configuration`, `api_scope`, `auth`, `problem`,
//!   `params`, `signer`, `json`, `metrics`.

pub mod startup;

pub mod routes;

pub mod access_log;
pub mod console;
pub mod courses;
pub mod entitlements;
pub mod erasure;
pub mod export;
pub mod history;
pub mod playback;
pub mod tokens;

pub mod api_scope;
pub mod auth;
pub mod configuration;
pub mod json;
pub mod metrics;
pub mod params;
pub mod problem;
pub mod signer;
