//! A callback's body: read up to the cap, its format told by the content type, parsed into
//! what its envelope carries (for LMS: the hash and the viewer binding judged on the way).

use std::collections::BTreeMap;

use actix_web::http::header::ContentType;
use actix_web::web;
use kollus_common::kollus::binding::Binding;
use kollus_common::kollus::lms::checksum::{self, HashVerdict};
use kollus_common::kollus::lms::request::{locate, LocateError};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::platform::ContentEvent;
use kollus_common::kollus::CallbackKind;
use kollus_common::settings::KafkaSettings;
use secrecy::ExposeSecret as _;
use serde::Serialize;

use super::error::CallbackError;
use super::State;
use crate::configuration::HashPolicy;

/// Reads at most `limit` bytes; says whether there was more (the rest is not read).
pub(super) async fn read_capped(
    mut payload: web::Payload,
    limit: usize,
) -> Result<(Vec<u8>, bool), CallbackError> {
    use futures_util::StreamExt as _;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| CallbackError::BodyReadFailed(e.to_string()))?;
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
#[expect(
    clippy::large_enum_variant,
    reason = "built once per request and taken apart at once; boxing only adds an allocation"
)]
pub(super) enum Parsed {
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
#[expect(
    clippy::large_enum_variant,
    reason = "built once per request and moved straight into the envelope; boxing only adds an allocation"
)]
pub(super) enum Payload {
    Lms(LmsReport),
    Content(ContentEvent),
}

impl Parsed {
    pub(super) fn topic<'a>(&self, kafka: &'a KafkaSettings) -> &'a str {
        match self {
            Parsed::Lms { .. } => &kafka.playback_topic,
            Parsed::Content(_) => &kafka.content_topic,
        }
    }

    pub(super) fn key(&self) -> String {
        match self {
            Parsed::Lms { report, .. } => report.partition_key(),
            Parsed::Content(e) => e.partition_key().to_owned(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFormat {
    Form,
    Json,
}

/// What the content type says the body is. No content type counts as a form (what Kollus and
/// `curl -d` send); anything but a form (or JSON, for LMS) is refused before parsing.
pub(super) fn body_format(
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
pub(super) fn parse(
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
            return Err(CallbackError::LmsHashMismatch)
        }
        Some((HashPolicy::Require, HashVerdict::Absent)) => {
            return Err(CallbackError::LmsHashAbsent)
        }
        _ => {}
    }
    let located = locate(&state.lms_fields, query, body, format == BodyFormat::Json).map_err(
        |e| match e {
            LocateError::Invalid(p) => CallbackError::InvalidCallback(p),
            missing => CallbackError::LmsDocumentMissing(missing),
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
        return Err(CallbackError::LmsUnbound(verdict));
    }
    Ok(Parsed::Lms {
        report: located.report,
        form: located.form,
        hash: hash.map(|(_, verdict)| verdict),
        binding: binding.map(|(_, verdict)| verdict),
    })
}
