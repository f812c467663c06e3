//! Why a callback was not accepted, and how each refusal answers: one status and a JSON body
//! `{"error": code, "detail": why}`. The codes are the variants' names ([`Refusal`]), and so
//! are the dead-letter reasons ingest counts.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use kollus_common::kollus::binding::Binding;
use kollus_common::kollus::lms::request::LocateError;
use kollus_common::kollus::PayloadError;
use serde::Serialize;
use strum::VariantArray as _;

/// Why a callback was not accepted; [`Refusal`] names each kind (its `error` code).
#[derive(Debug, thiserror::Error, strum::EnumDiscriminants)]
#[strum_discriminants(
    name(Refusal),
    derive(strum::IntoStaticStr, strum::VariantArray),
    strum(serialize_all = "snake_case")
)]
pub enum CallbackError {
    #[error("the callback URL's secret is missing or wrong")]
    Unauthorized,
    #[error("platform callbacks are not taken from {0} (CALLBACK_ALLOW_CIDRS)")]
    ForbiddenSource(String),
    #[error("content type {0:?} is not accepted here; send application/x-www-form-urlencoded{1}")]
    UnsupportedMediaType(String, &'static str),
    #[error("the body is over the limit of {0} bytes")]
    BodyTooLarge(usize),
    #[error("{0}")]
    InvalidCallback(#[from] PayloadError),
    #[error("{0}")]
    LmsDocumentMissing(LocateError),
    #[error("the LMS report's hash does not match its body (LMS_HASH_POLICY=require)")]
    LmsHashMismatch,
    #[error("the LMS report carries no hash (LMS_HASH_POLICY=require)")]
    LmsHashAbsent,
    #[error("the LMS report's viewer binding is {}: it does not come from a player URL made for its user (PLAYER_BINDING=require)", .0.as_str())]
    LmsUnbound(Binding),
    #[error("{0} is not accepted on /kollus/{1}; Kollus POSTs platform callbacks")]
    MethodNotAllowed(String, &'static str),
    #[error("reading the request body failed: {0}")]
    BodyReadFailed(String),
    #[error("too many requests in flight; retry later")]
    Overloaded,
    #[error("the record could not be made durable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    SpoolFull(String),
    #[error("{0}")]
    SpoolFailed(String),
}

impl Refusal {
    pub fn code(self) -> &'static str {
        self.into()
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ForbiddenSource => StatusCode::FORBIDDEN,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidCallback
            | Self::LmsDocumentMissing
            | Self::LmsHashMismatch
            | Self::LmsHashAbsent
            | Self::LmsUnbound
            | Self::BodyReadFailed => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded | Self::Unavailable | Self::SpoolFull | Self::SpoolFailed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// An authenticated request that is not a valid callback (DESIGN.md, delivery contract
    /// item 3): its raw bytes go to the dead-letter topic with this reason.
    pub fn dead_lettered(self) -> bool {
        matches!(self.status().as_u16(), 400 | 413 | 415)
    }

    /// Every reason ingest dead-letters a request for (the metric's labels).
    pub fn dead_letter_reasons() -> impl Iterator<Item = &'static str> {
        Self::VARIANTS
            .iter()
            .filter(|r| r.dead_lettered())
            .map(|r| r.code())
    }
}

impl CallbackError {
    /// Short and bounded: the JSON `error` field and the dead-letter reason label.
    pub fn code(&self) -> &'static str {
        Refusal::from(self).code()
    }
}

#[derive(Serialize)]
pub(super) struct ErrorBody<'a> {
    pub error: &'a str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}

impl ResponseError for CallbackError {
    fn status_code(&self) -> StatusCode {
        Refusal::from(self).status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header((header::RETRY_AFTER, "5"));
        }
        if matches!(self, Self::MethodNotAllowed(..)) {
            res.insert_header((header::ALLOW, "POST"));
        }
        res.json(ErrorBody {
            error: self.code(),
            detail: self.to_string(),
            field: match self {
                Self::InvalidCallback(e) | Self::LmsDocumentMissing(LocateError::Invalid(e)) => {
                    Some(&e.field)
                }
                Self::LmsHashMismatch | Self::LmsHashAbsent => Some("hash"),
                Self::LmsUnbound(_) => Some("uservalues"),
                _ => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_variants_names_and_the_dead_letter_reasons_the_4xx_of_a_bad_callback() {
        assert_eq!(Refusal::ForbiddenSource.code(), "forbidden_source");
        assert_eq!(Refusal::LmsDocumentMissing.code(), "lms_document_missing");
        assert_eq!(
            Refusal::dead_letter_reasons().collect::<Vec<_>>(),
            [
                "unsupported_media_type",
                "body_too_large",
                "invalid_callback",
                "lms_document_missing",
                "lms_hash_mismatch",
                "lms_hash_absent",
                "lms_unbound",
                "body_read_failed",
            ]
        );
    }
}
