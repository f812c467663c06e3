//! token-api: signs Kollus playback tokens for the product app, and answers its questions
//! about watch progress, watch history and the catalog.

pub mod auth;
pub mod catalog;
pub mod claims;
pub mod configuration;
pub mod entitlements;
pub mod export;
pub mod metrics;
pub mod playback;
pub mod problem;
pub mod request;
pub mod routes;
pub mod signer;
pub mod startup;
pub mod state;
