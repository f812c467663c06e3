//! The callback endpoints: `POST /kollus/{upload,transcoding,content,channel,lms}?secret=...`.
//!
//! Order matters: authenticate before reading anything (a wrong secret keeps nothing), cap the
//! body, parse, and answer 200 only once the record is durable.

mod body;
pub mod error;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use kollus_common::client_addr::{self, Networks};
use kollus_common::envelope::query_without_secret;
use kollus_common::envelope::{DeadLetter, Envelope, RawBody, RawRequest};
use kollus_common::kollus::binding::PlayerBinding;
use kollus_common::kollus::callback_secret::{
    check_callback_secret, warn_platform_secret_on_player_route, CallbackSecret, SecretName,
};
use kollus_common::kollus::CallbackKind;
use kollus_common::settings::KafkaSettings;
use secrecy::SecretString;
use serde::Serialize;
use strum::VariantNames as _;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use self::body::{body_format, parse, read_capped, Parsed, Payload};
use self::error::ErrorBody;
pub use self::error::{CallbackError, Refusal};
use crate::configuration::HashPolicy;
use crate::metrics::Metrics;
use crate::publish::{Durable, NotDurable, Publisher};

impl From<NotDurable> for CallbackError {
    fn from(e: NotDurable) -> Self {
        match e {
            NotDurable::Serialize(_) => Self::Unavailable(e.to_string()),
            NotDurable::Full(_) => Self::SpoolFull(e.to_string()),
            NotDurable::Failed(_) => Self::SpoolFailed(e.to_string()),
        }
    }
}

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

#[derive(Serialize)]
struct Accepted {
    id: uuid::Uuid,
    /// True when Kafka was unavailable and the record waits in the local spool.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    spooled: bool,
}

/// The callback routes, `/kollus/{route}`.
#[derive(Debug, Clone, Copy, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
enum Route {
    Upload,
    Transcoding,
    Content,
    Channel,
    Lms,
}

impl Route {
    fn kind(self) -> CallbackKind {
        match self {
            Self::Upload => CallbackKind::Upload,
            Self::Transcoding => CallbackKind::Transcoding,
            Self::Content => CallbackKind::ContentUpdate,
            Self::Channel => CallbackKind::Channel,
            Self::Lms => CallbackKind::Lms,
        }
    }

    /// "upload, transcoding, content, channel or lms".
    fn listed() -> String {
        match Self::VARIANTS.split_last() {
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

pub async fn callback(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<Arc<State>>,
) -> HttpResponse {
    let Ok(route) = path.parse::<Route>() else {
        return HttpResponse::NotFound().json(ErrorBody {
            error: "not_found",
            detail: format!("no callback /kollus/{path}; use {}", Route::listed()),
            field: None,
        });
    };
    let kind = route.kind();
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
                CallbackError::Unavailable(_)
                | CallbackError::SpoolFull(_)
                | CallbackError::SpoolFailed(_) => {
                    tracing::error!(route = kind.as_str(), error = %e, "callback not made durable: 503")
                }
                CallbackError::Unauthorized => {
                    kollus_common::telemetry::warn_auth_failure(kind.as_str(), client)
                }
                // Counted in requests_total{status="403"}: a line each would let anyone flood
                // the log; the first one of a second says who.
                CallbackError::ForbiddenSource(_) => {
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
                return Err(CallbackError::ForbiddenSource(
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
            Err(CallbackError::BodyTooLarge(state.body_limit))
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
    let durable = state.publisher.envelope(topic, key, &envelope).await?;
    Ok((envelope.id, durable))
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

/// Keeps a refused request on the dead-letter topic, with why: fixable later, never dropped.
async fn dead_letter(
    state: &State,
    kind: CallbackKind,
    received_at: OffsetDateTime,
    source_ip: Option<IpAddr>,
    query: BTreeMap<String, String>,
    raw: RawRequest,
    why: &CallbackError,
) {
    let record = DeadLetter {
        source_ip,
        query,
        raw: Some(raw),
        ..DeadLetter::new(
            "ingest",
            why.code(),
            why.to_string(),
            Some(kind),
            received_at,
        )
    };
    match state.publisher.dead_letter(&record).await {
        Ok(_) => state
            .metrics
            .deadletters
            .with_label_values(&[why.code()])
            .inc(),
        // The caller still gets its 4xx; Kollus's retry brings the request back.
        Err(e) => tracing::error!(error = %e, reason = why.code(), "dead letter not stored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_its_path_segment() {
        assert_eq!(
            Route::listed(),
            "upload, transcoding, content, channel or lms"
        );
        let kinds: Vec<CallbackKind> = Route::VARIANTS
            .iter()
            .map(|r| r.parse::<Route>().unwrap().kind())
            .collect();
        assert_eq!(
            kinds,
            [
                CallbackKind::Upload,
                CallbackKind::Transcoding,
                CallbackKind::ContentUpdate,
                CallbackKind::Channel,
                CallbackKind::Lms,
            ]
        );
        assert!("content_update".parse::<Route>().is_err());
    }
}
