//! Kollus's v0 REST API: the rate-limited client ([`client`]) and the answers' shapes ([`wire`]).

pub mod client;
pub mod wire;

pub use client::{Answer, ApiError, KollusApi};
