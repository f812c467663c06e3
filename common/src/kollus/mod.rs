//! Kollus's wire formats (`shared/kollus/SPEC.md`), parsed into typed values at the edge.

pub mod binding;
pub mod callback;
pub mod callback_secret;
pub mod form;
pub mod lms;
pub mod loose;
pub mod platform;
pub mod snapshot;

pub use callback::{CallbackKind, PayloadError};

/// A fixture (`fixtures/kollus/` in the repository) for this crate's unit tests, without the
/// trailing line break a saved file has.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../fixtures/kollus/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    body.truncate(body.trim_ascii_end().len());
    body
}
