//! The callback endpoints: `POST /kollus/{upload,transcoding,content,channel,lms}?secret=...`.
//!
//! Order matters: authenticate before reading anything (a wrong secret keeps nothing), cap the
//! body, parse, and answer 200 only once the record is durable.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use kollus_common::client_addr::{self, Networks};
use kollus_common::envelope::query_without_secret;
use kollus_common::envelope::{
    header as h, DeadLetter, Envelope, RawBody, RawRequest, SCHEMA_VERSION,
};
use kollus_common::kollus::binding::{Binding, PlayerBinding};
use kollus_common::kollus::callback_secret::{
    check_callback_secret, warn_platform_secret_on_player_route, CallbackSecret, SecretName,
};
use kollus_common::kollus::lms::checksum::{self, HashVerdict};
use kollus_common::kollus::lms::request::{locate, LocateError};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::platform::ContentEvent;
use kollus_common::kollus::{CallbackKind, PayloadError};
use kollus_common::settings::KafkaSettings;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::configuration::HashPolicy;
use crate::metrics::Metrics;
use crate::publish::{Durable, Publisher};
use crate::spool::{SpoolError, SpooledRecord};

/// What every handler needs, shared across HTTP workers.
pub struct State {
    /// `CALLBACK_SECRET` (with its previous value during a rotation): the platform routes.
    pub platform_secret: CallbackSecret,
    /// `LMS_CALLBACK_SECRET`: /kollus/lms only.
    pub lms_secret: CallbackSecret,
    /// `CALLBACK_ALLOW_CIDRS`: where platform callbacks may come from (empty: anywhere).
    pub allow: Networks,
    /// `TRUSTED_PROXIES`: when `X-Forwarded-For` is believed.
    pub proxies: Networks,
    /// Viewer binding (`PLAYER_BINDING*`), unless off.
    pub binding: Option<PlayerBinding>,
    pub body_limit: usize,
    pub in_flight: Semaphore,
    pub publisher: Publisher,
    pub kafka: KafkaSettings,
    pub metrics: Metrics,
    /// Names of the field that holds the LMS document, tried first.
    pub lms_fields: Vec<String>,
    /// The LMS hash policy and the service account key, unless the check is off.
    pub hash_check: Option<(HashPolicy, SecretString)>,
}

/// Why a callback was not accepted. Each maps to one status and a JSON body
/// `{"error": code, "detail": why}`.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback URL's secret is missing or wrong")]
    Unauthorized,
    #[error("platform callbacks are not taken from {0} (CALLBACK_ALLOW_CIDRS)")]
    Forbidden(String),
    #[error("content type {0:?} is not accepted here; send application/x-www-form-urlencoded{1}")]
    UnsupportedMediaType(String, &'static str),
    #[error("the body is over the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Invalid(#[from] PayloadError),
    #[error("{0}")]
    NoLmsDocument(LocateError),
    #[error("the LMS report's hash does not match its body (LMS_HASH_POLICY=require)")]
    HashMismatch,
    #[error("the LMS report carries no hash (LMS_HASH_POLICY=require)")]
    HashAbsent,
    #[error("the LMS report's viewer binding is {}: it does not come from a player URL made for its user (PLAYER_BINDING=require)", .0.as_str())]
    Unbound(Binding),
    #[error("{0} is not accepted on /kollus/{1}; Kollus POSTs platform callbacks")]
    MethodNotAllowed(String, &'static str),
    #[error("reading the request body failed: {0}")]
    BodyRead(String),
    #[error("too many requests in flight; retry later")]
    Overloaded,
    #[error("the record could not be made durable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

impl CallbackError {
    /// Short and bounded: the JSON `error` field and the dead-letter reason label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden_source",
            Self::UnsupportedMediaType(..) => "unsupported_media_type",
            Self::PayloadTooLarge(_) => "body_too_large",
            Self::Invalid(_) => "invalid_callback",
            Self::NoLmsDocument(_) => "lms_document_missing",
            Self::HashMismatch => "lms_hash_mismatch",
            Self::HashAbsent => "lms_hash_absent",
            Self::Unbound(_) => "lms_unbound",
            Self::MethodNotAllowed(..) => "method_not_allowed",
            Self::BodyRead(_) => "body_read_failed",
            Self::Overloaded => "overloaded",
            Self::Unavailable(_) => "unavailable",
            Self::Spool(SpoolError::Full { .. }) => "spool_full",
            Self::Spool(SpoolError::Storage(_)) => "spool_failed",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ResponseError for CallbackError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnsupportedMediaType(..) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid(_)
            | Self::NoLmsDocument(_)
            | Self::HashMismatch
            | Self::HashAbsent
            | Self::Unbound(_)
            | Self::BodyRead(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed(..) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded | Self::Unavailable(_) | Self::Spool(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if matches!(
            self,
            Self::Overloaded | Self::Unavailable(_) | Self::Spool(_)
        ) {
            res.insert_header((header::RETRY_AFTER, "5"));
        }
        if matches!(self, Self::MethodNotAllowed(..)) {
            res.insert_header((header::ALLOW, "POST"));
        }
        res.json(ErrorBody {
            error: self.code(),
            detail: self.to_string(),
            field: match self {
                Self::Invalid(e) | Self::NoLmsDocument(LocateError::Invalid(e)) => Some(&e.field),
                Self::HashMismatch | Self::HashAbsent => Some("hash"),
                Self::Unbound(_) => Some("uservalues"),
                _ => None,
            },
        })
    }
}

#[derive(Serialize)]
struct Accepted {
    id: uuid::Uuid,
    /// True when Kafka was unavailable and the record waits in the local spool.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    spooled: bool,
}

fn route_kind(segment: &str) -> Option<CallbackKind> {
    match segment {
        "upload" => Some(CallbackKind::Upload),
        "transcoding" => Some(CallbackKind::Transcoding),
        "content" => Some(CallbackKind::ContentUpdate),
        "channel" => Some(CallbackKind::Channel),
        "lms" => Some(CallbackKind::Lms),
        _ => None,
    }
}

pub async fn callback(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<Arc<State>>,
) -> HttpResponse {
    let Some(kind) = route_kind(&path) else {
        return HttpResponse::NotFound().json(ErrorBody {
            error: "not_found",
            detail: format!(
                "no callback /kollus/{path}; use upload, transcoding, content, channel or lms"
            ),
            field: None,
        });
    };
    let started = Instant::now();
    let client = client_addr::of_request(&req, &state.proxies);
    let result = accept(kind, &req, client, payload, &state).await;
    let response = match &result {
        Ok((id, durable)) => HttpResponse::Ok().json(Accepted {
            id: *id,
            spooled: *durable == Durable::Spool,
        }),
        Err(e) => {
            match e {
                CallbackError::Unavailable(_) | CallbackError::Spool(_) => {
                    tracing::error!(route = kind.as_str(), error = %e, "callback not made durable: 503")
                }
                CallbackError::Unauthorized => {
                    kollus_common::telemetry::warn_auth_failure(kind.as_str(), client)
                }
                // Counted in requests_total{status="403"}: a line each would let anyone flood
                // the log; the first one of a second says who.
                CallbackError::Forbidden(_) => {
                    kollus_common::telemetry::warn_auth_failure(kind.as_str(), client)
                }
                // Counted in requests_total{status="503"}; a line each would flood the log.
                CallbackError::Overloaded => {}
                other => tracing::warn!(route = kind.as_str(), error = %other, "callback refused"),
            }
            e.error_response()
        }
    };
    let route = kind.as_str();
    state
        .metrics
        .requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    state
        .metrics
        .request_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn accept(
    kind: CallbackKind,
    req: &HttpRequest,
    client: Option<IpAddr>,
    payload: web::Payload,
    state: &State,
) -> Result<(uuid::Uuid, Durable), CallbackError> {
    let _permit = state
        .in_flight
        .try_acquire()
        .map_err(|_| CallbackError::Overloaded)?;
    if kind != CallbackKind::Lms && !state.allow.is_empty() {
        match client {
            Some(ip) if state.allow.contains(ip) => {}
            other => {
                return Err(CallbackError::Forbidden(
                    other.map_or_else(|| "an unknown address".into(), |ip| ip.to_string()),
                ))
            }
        }
    }
    let mut query = authenticate(kind, req, state)?;
    // Kollus POSTs every callback; only an LMS template may make the player GET.
    let method = req.method().as_str();
    if kind != CallbackKind::Lms && method != "POST" {
        return Err(CallbackError::MethodNotAllowed(
            method.to_owned(),
            kind.as_str(),
        ));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let received_at = OffsetDateTime::now_utc();
    let source_ip = client;
    let (body, too_large) = read_capped(payload, state.body_limit).await?;
    let raw = RawRequest {
        method: Some(method.to_owned()),
        content_type: content_type.clone(),
        query_string: query_without_secret(req.query_string()),
        body: RawBody::from_bytes(&body),
    };
    let parsed = body_format(kind, content_type.as_deref()).and_then(|format| {
        if too_large {
            Err(CallbackError::PayloadTooLarge(state.body_limit))
        } else {
            parse(kind, format, &body, &mut query, state)
        }
    });
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(refused) => {
            dead_letter(state, kind, received_at, source_ip, query, raw, &refused).await;
            return Err(refused);
        }
    };
    let topic = parsed.topic(&state.kafka);
    let key = parsed.key();
    let (payload, form, lms_hash, binding) = match parsed {
        Parsed::Lms {
            report,
            form,
            hash,
            binding,
        } => (Payload::Lms(report), form, hash, binding),
        Parsed::Content(event) => (Payload::Content(event), BTreeMap::new(), None, None),
    };
    let envelope = Envelope {
        received_at,
        source_ip,
        query,
        form,
        lms_hash,
        binding,
        ..Envelope::new(kind, payload, raw)
    };
    let id = envelope.id;
    let value = serde_json::to_string(&envelope)
        .map_err(|e| CallbackError::Unavailable(format!("serializing envelope: {e}")))?;
    let record = SpooledRecord {
        topic: topic.to_owned(),
        key,
        headers: vec![
            (h::KIND.into(), kind.as_str().into()),
            (h::SCHEMA_VERSION.into(), SCHEMA_VERSION.to_string()),
            (h::ID.into(), id.to_string()),
        ],
        value,
    };
    let durable = state.publisher.publish(record).await?;
    Ok((id, durable))
}

/// Checks `?secret=` (common's one check, as token-api's callbacks do) and returns the other
/// query parameters. A platform route takes the platform secret only; /kollus/lms takes the LMS
/// secret, and the platform secret with a WARN once and a count (an upgrade not finished).
fn authenticate(
    kind: CallbackKind,
    req: &HttpRequest,
    state: &State,
) -> Result<BTreeMap<String, String>, CallbackError> {
    let accepted: &[&CallbackSecret] = if kind == CallbackKind::Lms {
        &[&state.lms_secret, &state.platform_secret]
    } else {
        &[&state.platform_secret]
    };
    let found = check_callback_secret(req.query_string(), accepted, OffsetDateTime::now_utc())
        .map_err(|_| CallbackError::Unauthorized)?;
    if kind == CallbackKind::Lms && found.secret == SecretName::Platform {
        warn_platform_secret_on_player_route(kind.as_str());
    }
    state
        .metrics
        .callback_auth
        .with_label_values(&[
            kind.as_str(),
            found.secret.label(),
            found.generation.label(),
        ])
        .inc();
    Ok(found.rest)
}

/// Reads at most `limit` bytes; says whether there was more (the rest is not read).
async fn read_capped(
    mut payload: web::Payload,
    limit: usize,
) -> Result<(Vec<u8>, bool), CallbackError> {
    use futures_util::StreamExt as _;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| CallbackError::BodyRead(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            let room = limit - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// A callback parsed, with what its envelope keeps beside the payload.
#[allow(
    clippy::large_enum_variant,
    reason = "built once per request and taken apart at once; boxing only adds an allocation"
)]
enum Parsed {
    Lms {
        report: LmsReport,
        /// The flat template fields posted beside the document.
        form: BTreeMap<String, String>,
        hash: Option<HashVerdict>,
        /// The viewer binding's verdict, unless binding is off.
        binding: Option<Binding>,
    },
    Content(ContentEvent),
}

/// What goes on Kafka as the envelope's payload (serialized untagged: the envelope's `kind`
/// already says which).
#[derive(Serialize)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per request and moved straight into the envelope; boxing only adds an allocation"
)]
enum Payload {
    Lms(LmsReport),
    Content(ContentEvent),
}

impl Parsed {
    fn topic<'a>(&self, kafka: &'a KafkaSettings) -> &'a str {
        match self {
            Parsed::Lms { .. } => &kafka.playback_topic,
            Parsed::Content(_) => &kafka.content_topic,
        }
    }

    fn key(&self) -> String {
        match self {
            Parsed::Lms { report, .. } => report.partition_key(),
            Parsed::Content(e) => e.partition_key().to_owned(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    Form,
    Json,
}

/// What the content type says the body is. No content type counts as a form (what Kollus and
/// `curl -d` send); anything but a form (or JSON, for LMS) is refused before parsing.
fn body_format(
    kind: CallbackKind,
    content_type: Option<&str>,
) -> Result<BodyFormat, CallbackError> {
    let mime = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if mime.is_empty() || mime == ContentType::form_url_encoded().essence_str() {
        Ok(BodyFormat::Form)
    } else if kind == CallbackKind::Lms && mime == "application/json" {
        Ok(BodyFormat::Json)
    } else if kind == CallbackKind::Lms {
        Err(CallbackError::UnsupportedMediaType(
            mime,
            " with json_data, or application/json",
        ))
    } else {
        Err(CallbackError::UnsupportedMediaType(mime, ""))
    }
}

/// Parses a callback. For LMS, `query` loses the document when the query carried it (the
/// envelope keeps it once, as the payload; the raw query string keeps it byte for byte).
fn parse(
    kind: CallbackKind,
    format: BodyFormat,
    body: &[u8],
    query: &mut BTreeMap<String, String>,
    state: &State,
) -> Result<Parsed, CallbackError> {
    if kind != CallbackKind::Lms {
        return Ok(Parsed::Content(ContentEvent::from_form(kind, body)?));
    }
    let hash = state.hash_check.as_ref().map(|(policy, key)| {
        let verdict = checksum::verify(body, key.expose_secret().as_bytes());
        state
            .metrics
            .lms_hash
            .with_label_values(&[verdict.as_str()])
            .inc();
        (*policy, verdict)
    });
    match hash {
        Some((HashPolicy::Require, HashVerdict::Mismatch)) => {
            return Err(CallbackError::HashMismatch)
        }
        Some((HashPolicy::Require, HashVerdict::Absent)) => return Err(CallbackError::HashAbsent),
        _ => {}
    }
    let located = locate(&state.lms_fields, query, body, format == BodyFormat::Json).map_err(
        |e| match e {
            LocateError::Invalid(p) => CallbackError::Invalid(p),
            missing => CallbackError::NoLmsDocument(missing),
        },
    )?;
    if let Some(name) = located.source.strip_prefix("query:") {
        query.remove(name);
    }
    let binding = state.binding.as_ref().map(|b| {
        // The document's uservalues, or the URL's (a template may put {USERVALUEn} there).
        let presented = located
            .report
            .uservalues
            .get(&b.slot)
            .or_else(|| query.get(&b.slot))
            .or_else(|| located.form.get(&b.slot));
        let verdict = b.judge(
            located.report.user.client_user_id.as_str(),
            presented.map(String::as_str),
        );
        state
            .metrics
            .lms_binding
            .with_label_values(&[verdict.as_str()])
            .inc();
        (b.required(), verdict)
    });
    if let Some((true, verdict)) = binding.filter(|(_, v)| !v.is_bound()) {
        return Err(CallbackError::Unbound(verdict));
    }
    Ok(Parsed::Lms {
        report: located.report,
        form: located.form,
        hash: hash.map(|(_, verdict)| verdict),
        binding: binding.map(|(_, verdict)| verdict),
    })
}

/// Keeps a refused request on the dead-letter topic, with why: fixable later, never dropped.
async fn dead_letter(
    state: &State,
    kind: CallbackKind,
    received_at: OffsetDateTime,
    source_ip: Option<std::net::IpAddr>,
    query: BTreeMap<String, String>,
    raw: RawRequest,
    why: &CallbackError,
) {
    let record = DeadLetter {
        id: uuid::Uuid::now_v7(),
        stage: "ingest".into(),
        reason: why.code().into(),
        detail: why.to_string(),
        dead_lettered_at: OffsetDateTime::now_utc(),
        kind: Some(kind),
        received_at,
        source_ip,
        query,
        record: None,
        raw: Some(raw),
    };
    let value = match serde_json::to_string(&record) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "serializing a dead letter failed");
            return;
        }
    };
    let spooled = SpooledRecord {
        topic: state.kafka.deadletter_topic.clone(),
        key: kind.as_str().into(),
        headers: vec![
            (h::KIND.into(), kind.as_str().into()),
            (h::REASON.into(), why.code().into()),
            (h::ID.into(), record.id.to_string()),
        ],
        value,
    };
    match state.publisher.publish(spooled).await {
        Ok(_) => state
            .metrics
            .deadletters
            .with_label_values(&[why.code()])
            .inc(),
        // The caller still gets its 4xx; Kollus's retry brings the request back.
        Err(e) => tracing::error!(error = %e, reason = why.code(), "dead letter not stored"),
    }
}
