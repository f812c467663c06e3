//! Error answers as RFC 7807 `application/problem+json`, and PostgreSQL failures classified
//! where they happen (bottom layer: imports only `api_scope`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::api_scope::ApiScope;

/// One problem with one field, e.g. `media[1].play_section`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A JSON request body as `T`. A value of the wrong type, or an unknown field inside an object,
/// is a 400 naming the field (`media[0].drm_policy.kind`); a body that is not JSON, or wrong at
/// its top level, a 400 saying why.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let message = e.inner().to_string();
        if field == "." {
            ApiError::BadJson(message)
        } else {
            invalid(&field, message)
        }
    })
}

/// A 400 naming one field.
pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unauthorized,
    /// Past its failed keys, an address waits this many seconds.
    #[error("too many requests without a valid API key from this address; retry in {0} s")]
    TooManyAuthFailures(u64),
    #[error("this API key lacks the scope {0:?}, which this operation needs")]
    Forbidden(&'static str),
    #[error("the callback URL's secret is missing or wrong")]
    BadSecret,
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
    #[error("{method} is not allowed here; use {allow}")]
    MethodNotAllowed { method: String, allow: String },
}

/// A PostgreSQL failure: does it mean the database is not answering (so the caller may retry)?
pub trait DbFailure: std::error::Error {
    fn not_answering(&self) -> bool;
}

/// The one classifier every service uses (`kollus_common::db`): a lock not available, a full
/// disk or a statement timeout is a 503 like a lost connection; a statement refused is a 500.
impl DbFailure for tokio_postgres::Error {
    fn not_answering(&self) -> bool {
        kollus_common::db::is_transient(self)
    }
}

impl DbFailure for deadpool_postgres::PoolError {
    fn not_answering(&self) -> bool {
        kollus_common::db::pool_error_is_transient(self)
    }
}

/// The failure and every cause under it ("db error" alone says nothing).
fn chain(e: &dyn std::error::Error) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Classifies a PostgreSQL failure where it happens: not answering is a 503 with `retry` as the
/// detail (the cause logged at WARN); anything else is a 500, its cause logged at ERROR.
pub fn db_error<E: DbFailure>(retry: &'static str) -> impl Fn(E) -> ApiError {
    move |e| {
        if e.not_answering() {
            tracing::warn!(error = chain(&e), "PostgreSQL is not answering");
            ApiError::Unavailable(retry.into())
        } else {
            tracing::error!(error = chain(&e), "PostgreSQL refused a statement");
            ApiError::Internal("the database refused a statement; the cause is logged".into())
        }
    }
}

/// Whether any cause in `e`'s chain is PostgreSQL not answering, as [`DbFailure`] classifies a
/// cause: the one test for an `anyhow` chain (the API's and the console's).
pub fn not_answering(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .is_some_and(DbFailure::not_answering)
            || cause
                .downcast_ref::<deadpool_postgres::PoolError>()
                .is_some_and(DbFailure::not_answering)
    })
}

/// A failure to write the access record (`access_log::record`): the access is refused, never
/// answered unrecorded. A 503 when any cause is PostgreSQL not answering (as [`db_error`]
/// classifies it), else a 500; the cause is logged either way.
/// A change that failed, in the database (`retry` said when it is not answering) or in its
/// access record, which undoes the change (one transaction).
pub fn change_failed(retry: &'static str) -> impl Fn(anyhow::Error) -> ApiError {
    move |e| match e.downcast::<tokio_postgres::Error>() {
        Ok(e) => db_error(retry)(e),
        Err(e) => not_recorded(e),
    }
}

pub fn not_recorded(e: anyhow::Error) -> ApiError {
    if not_answering(&e) {
        tracing::warn!(
            error = format!("{e:#}"),
            "access not recorded: PostgreSQL is not answering"
        );
        ApiError::Unavailable("the access record could not be written; retry shortly".into())
    } else {
        tracing::error!(error = format!("{e:#}"), "access not recorded");
        ApiError::Internal("the access record could not be written; the cause is logged".into())
    }
}

/// Parses a request's query string into `T` (after authentication, so a caller without a key
/// learns nothing about the parameters): a refusal names the parameter, as RFC 7807.
pub fn parse_query<T: serde::de::DeserializeOwned>(
    req: &actix_web::HttpRequest,
) -> Result<T, ApiError> {
    serde_urlencoded::from_str(req.query_string()).map_err(|e| {
        let message = e.to_string();
        let field = message.split('`').nth(1).unwrap_or("query").to_owned();
        let message = if message.starts_with("missing field") {
            "is required".to_owned()
        } else if message.starts_with("duplicate field") {
            "is given more than once".to_owned()
        } else {
            message
        };
        ApiError::Invalid(vec![FieldError { field, message }])
    })
}

/// Any path the API does not have: 404 as problem+json.
pub async fn unknown_route(req: actix_web::HttpRequest) -> HttpResponse {
    ApiError::NotFound(format!(
        "no {} {} here; the routes are in /openapi.json",
        req.method(),
        req.path()
    ))
    .error_response()
}

/// A route asked with a method it does not take: 405 with `Allow`, as problem+json.
pub fn method_not_allowed(
    allow: Vec<actix_web::http::Method>,
) -> impl Fn(actix_web::HttpRequest) -> std::future::Ready<HttpResponse> + Clone {
    let allow = allow
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    move |req| {
        std::future::ready(
            ApiError::MethodNotAllowed {
                method: req.method().to_string(),
                allow: allow.clone(),
            }
            .error_response(),
        )
    }
}

/// An error answer (RFC 7807); a validation error lists every invalid field.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    #[schema(value_type = i64)]
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[schema(inline)]
    errors: &'a [FieldError],
    /// On a 403: the scope the API key lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = scope_schema)]
    scope: Option<&'static str>,
}

/// The scopes a key may lack: every [`ApiScope`]'s text.
fn scope_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(kollus_common::vocab::labels::<ApiScope>()))
        .description(Some("On a 403: the scope the API key lacks."))
        .build()
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::BadSecret => StatusCode::UNAUTHORIZED,
            Self::TooManyAuthFailures(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Invalid(_) | Self::BadJson(_) | Self::BadToken(_) => StatusCode::BAD_REQUEST,
            Self::Refused(..) => StatusCode::CONFLICT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
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
        if let Self::TooManyAuthFailures(seconds) = self {
            res.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        if let Self::MethodNotAllowed { allow, .. } = self {
            res.insert_header((actix_web::http::header::ALLOW, allow.as_str()));
        }
        res.content_type("application/problem+json").body(
            serde_json::to_string(&Problem {
                kind: "about:blank",
                title: status.canonical_reason().unwrap_or("Error"),
                status: status.as_u16(),
                detail: self.to_string(),
                errors,
                scope: match self {
                    Self::Forbidden(scope) => Some(scope),
                    _ => None,
                },
            })
            .unwrap_or_default(),
        )
    }
}

/// The answers every operation behind an API key of one scope may give besides its own, for the
/// OpenAPI document (`responses(..., ReadKeyRefused)`): no valid key, a key without the scope.
macro_rules! key_refused {
    ($(#[$doc:meta])* $name:ident, $scope:literal) => {
        $(#[$doc])*
        #[derive(utoipa::IntoResponses)]
        pub enum $name {
            #[response(status = 401, description = "No valid API key.", content_type = "application/problem+json")]
            Unauthorized(Problem<'static>),
            #[response(
                status = 403,
                description = concat!("The API key lacks the `", $scope, "` scope (named in `scope`)."),
                content_type = "application/problem+json"
            )]
            Forbidden(Problem<'static>),
            #[response(
                status = 429,
                description = "Too many requests without a valid key from this client address: none is checked until the minute is over (`Retry-After`).",
                content_type = "application/problem+json",
                headers(("Retry-After" = u64, description = "Seconds to wait."))
            )]
            TooManyAuthFailures(Problem<'static>),
        }
    };
}

key_refused!(
    /// 401 and 403 of an operation that needs the `tokens` scope.
    TokensKeyRefused,
    "tokens"
);
/// 401 and 403 of `POST /v1/playback-tokens`: `tokens`, and for `playcallback_ignore: true`
/// also `tokens:playcallback_ignore`.
#[derive(utoipa::IntoResponses)]
pub enum IssueKeyRefused {
    #[response(
        status = 401,
        description = "No valid API key.",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem<'static>),
    #[response(
        status = 403,
        description = "The API key lacks the `tokens` scope, or the `tokens:playcallback_ignore` scope a token with `playcallback_ignore: true` needs (named in `scope`).",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem<'static>),
    #[response(
        status = 429,
        description = "Too many requests without a valid key from this client address: none is checked until the minute is over (`Retry-After`).",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait."))
    )]
    TooManyAuthFailures(Problem<'static>),
}

key_refused!(
    /// 401 and 403 of an operation that needs the `read` scope.
    ReadKeyRefused,
    "read"
);
key_refused!(
    /// 401 and 403 of an operation that needs the `entitlements` scope.
    EntitlementsKeyRefused,
    "entitlements"
);
key_refused!(
    /// 401 and 403 of an operation that needs the `export` scope.
    ExportKeyRefused,
    "export"
);
key_refused!(
    /// 401 and 403 of an operation that needs the `audit` scope.
    AuditKeyRefused,
    "audit"
);
key_refused!(
    /// 401 and 403 of an operation that needs the `erase` scope.
    EraseKeyRefused,
    "erase"
);

/// What an operation that reads or writes PostgreSQL may answer besides its own (the
/// classification of [`db_error`]), for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
pub enum DatabaseFailed {
    #[response(
        status = 500,
        description = "The database refused a statement: our fault; the cause is logged.",
        content_type = "application/problem+json"
    )]
    Refused(Problem<'static>),
    #[response(
        status = 503,
        description = "PostgreSQL is not answering; retry.",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem<'static>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real error from the test server with SQLSTATE `code`, raised by PL/pgSQL.
    async fn raised(url: &str, code: &str) -> tokio_postgres::Error {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the test database");
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$"
            ))
            .await
            .expect_err("RAISE fails")
    }

    fn status(e: ApiError) -> StatusCode {
        ResponseError::status_code(&e)
    }

    // The worker always retried these; this API answered 500 to them. A full disk and a lock
    // held past `lock_timeout` pass: retrying later is the right advice, not "our fault".
    #[tokio::test]
    async fn a_full_disk_or_a_lock_not_available_is_a_503_and_a_refused_value_a_500() {
        let db = kollus_test_support::db::TestDb::new().await;
        for (code, expected) in [
            ("53100", StatusCode::SERVICE_UNAVAILABLE),
            ("55P03", StatusCode::SERVICE_UNAVAILABLE),
            ("57014", StatusCode::SERVICE_UNAVAILABLE),
            ("40001", StatusCode::SERVICE_UNAVAILABLE),
            ("22P02", StatusCode::INTERNAL_SERVER_ERROR),
            ("42703", StatusCode::INTERNAL_SERVER_ERROR),
            ("XX000", StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let e = raised(&db.url, code).await;
            assert_eq!(status(db_error("retry")(e)), expected, "SQLSTATE {code}");
        }
    }

    // A connection the pool cannot open (here: its database does not exist, 3D000) is the
    // database unavailable to us: 503, as the workers wait for it. It was a 500.
    #[tokio::test]
    async fn a_connection_the_pool_cannot_open_is_a_503() {
        let db = kollus_test_support::db::TestDb::new().await;
        let config: tokio_postgres::Config = format!("{}_missing", db.url).parse().unwrap();
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(manager).build().unwrap();
        let e = pool.get().await.expect_err("no such database");
        assert!(
            matches!(&e, deadpool_postgres::PoolError::Backend(b) if b.code().is_some()),
            "the server refused: {e:?}"
        );
        assert_eq!(
            status(db_error("retry")(e)),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
