//! Error answers as RFC 7807 `application/problem+json`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::request::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unauthorized,
    #[error("the request has {} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("the request body is not valid JSON for this endpoint: {0}")]
    BadJson(String),
    #[error("{0}")]
    Refused(String, Vec<FieldError>),
    #[error("{0}")]
    BadToken(String),
    #[error("{0}")]
    NotFound(String),
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Invalid(_) | Self::BadJson(_) | Self::BadToken(_) => StatusCode::BAD_REQUEST,
            Self::Refused(..) => StatusCode::CONFLICT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let errors: &[FieldError] = match self {
            Self::Invalid(e) | Self::Refused(_, e) => e,
            _ => &[],
        };
        let mut res = HttpResponse::build(status);
        if matches!(self, Self::Unauthorized) {
            res.insert_header(("WWW-Authenticate", "Bearer"));
        }
        res.content_type("application/problem+json").body(
            serde_json::to_string(&Problem {
                kind: "about:blank",
                title: status.canonical_reason().unwrap_or("Error"),
                status: status.as_u16(),
                detail: self.to_string(),
                errors,
            })
            .unwrap_or_default(),
        )
    }
}
