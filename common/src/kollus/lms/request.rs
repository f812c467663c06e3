//! Where the LMS document is in a request (SPEC.md 4.1).
//!
//! The customer writes the LMS callback as a URL and/or POST-data template in the Kollus console,
//! so the `{JSON_DATA}` document can sit in any form field or query parameter, under any name
//! (`json_data` usually, `lms_data` in Kollus's live sample), with flat placeholders
//! (`client_user_id`, `start_at`, `play_status`, `uv0`, ...) beside it. Some setups post the
//! document as a JSON body, or wrap it as `{"json_data": "<the document as a string>"}`.
//!
//! [`locate`] tries the configured names first (form, then query), then every other field whose
//! value is a JSON object with `user_info` and `content_info`. A template with no document at
//! all cannot be understood without configuration: [`LocateError::Missing`] says so, and ingest
//! keeps the request as a dead letter.

use std::collections::BTreeMap;

use super::report::{LmsReport, PlayStatus};
use crate::kollus::callback::PayloadError;
use crate::kollus::form::{parse_form, FormFields};

/// The default names of the field that holds the document (`INGEST_LMS_FIELDS`).
pub const DEFAULT_FIELDS: &[&str] = &["json_data", "lms_data"];

/// A located and parsed LMS report, and what stood beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub report: LmsReport,
    /// Where the document was: `form:<name>`, `query:<name>`, `body` or `body:<name>`.
    pub source: String,
    /// The flat template fields posted beside the document (form fields, or a JSON wrapper's
    /// other members), without the document and the `hash`.
    pub form: FormFields,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    /// No field holds an LMS document.
    #[error(
        "no form field or query parameter holds an LMS JSON document (an object with user_info \
         and content_info); looked for {looked_for} first, then in every field. A console \
         template of flat fields only needs {{JSON_DATA}} added"
    )]
    Missing { looked_for: String },
    /// A document was found but is not a valid LMS report, or the body is not a valid form.
    #[error(transparent)]
    Invalid(#[from] PayloadError),
}

/// Finds and parses the LMS document in a request. `query` is the callback URL's query without
/// its secret; `names` are the field names to try first.
pub fn locate(
    names: &[String],
    query: &FormFields,
    body: &[u8],
    json_body: bool,
) -> Result<Located, LocateError> {
    let missing = || LocateError::Missing {
        looked_for: names.join(", "),
    };
    let (mut found, mut form) = if json_body {
        from_json_body(names, body)?
    } else {
        let form = parse_form(body)?;
        (from_fields(names, &form, query, "form")?, form)
    };
    if found.is_none() && json_body {
        // A JSON body without the document: the query may still carry it.
        found = from_fields(names, &FormFields::new(), query, "form")?;
    }
    let (report, source) = found.ok_or_else(missing)?;
    if let Some(name) = source.strip_prefix("form:") {
        form.remove(name);
    }
    form.remove("hash");
    let mut report = report;
    report.play_status = form
        .get("play_status")
        .or_else(|| query.get("play_status"))
        .and_then(|s| PlayStatus::parse(s));
    Ok(Located {
        report,
        source,
        form,
    })
}

type Found = Option<(LmsReport, String)>;

/// The configured names in the form, then in the query; then any other field that holds a
/// document.
fn from_fields(
    names: &[String],
    form: &FormFields,
    query: &FormFields,
    form_place: &str,
) -> Result<Found, PayloadError> {
    for name in names {
        for (place, fields) in [(form_place, form), ("query", query)] {
            if let Some(value) = fields.get(name).filter(|v| !v.trim().is_empty()) {
                let report = LmsReport::from_json(value.as_bytes())?;
                return Ok(Some((report, format!("{place}:{name}"))));
            }
        }
    }
    for (place, fields) in [(form_place, form), ("query", query)] {
        for (name, value) in fields {
            if looks_like_document(value) {
                let report = LmsReport::from_json(value.as_bytes())?;
                return Ok(Some((report, format!("{place}:{name}"))));
            }
        }
    }
    Ok(None)
}

/// A cheap test before parsing: a JSON object naming both parts of a report.
fn looks_like_document(value: &str) -> bool {
    value.trim_start().starts_with('{')
        && value.contains("\"user_info\"")
        && value.contains("\"content_info\"")
}

/// A JSON body: the document itself, or an object with the document (as a string or an object)
/// under one of its members; its other scalar members are kept like form fields.
fn from_json_body(names: &[String], body: &[u8]) -> Result<(Found, FormFields), PayloadError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PayloadError::new("body", format!("is not valid JSON: {e}")))?;
    let serde_json::Value::Object(members) = value else {
        return Err(PayloadError::new("body", "must be a JSON object"));
    };
    if members.contains_key("user_info") || members.contains_key("content_info") {
        return Ok((
            Some((LmsReport::from_json(body)?, "body".to_owned())),
            FormFields::new(),
        ));
    }
    // The members as text: strings as they are, anything else as its JSON.
    let fields: BTreeMap<String, String> = members
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    let found = from_fields(names, &fields, &FormFields::new(), "body")?;
    Ok((found, fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"user_info":{"client_user_id":"u1"},"content_info":{"media_content_key":"m1","start_at":"100"}}"#;

    fn names() -> Vec<String> {
        DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect()
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    }

    fn query(pairs: &[(&str, &str)]) -> FormFields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_usual_json_data_field_with_flat_fields_beside_it() {
        let body = form(&[
            ("json_data", DOC),
            ("client_user_id", "u1"),
            ("play_status", "pause"),
            ("hash", "00"),
        ]);
        let got = locate(&names(), &FormFields::new(), &body, false).unwrap();
        assert_eq!(got.source, "form:json_data");
        assert_eq!(got.report.user.client_user_id.as_str(), "u1");
        assert_eq!(got.report.play_status, Some(PlayStatus::Pause));
        assert_eq!(
            got.form,
            query(&[("client_user_id", "u1"), ("play_status", "pause")])
        );
    }

    #[test]
    fn the_document_in_the_query_string_with_an_empty_body() {
        let q = query(&[("lms_data", DOC), ("start_at", "100")]);
        let got = locate(&names(), &q, b"", false).unwrap();
        assert_eq!(got.source, "query:lms_data");
        assert!(got.form.is_empty());
    }

    #[test]
    fn any_field_that_holds_a_document_under_a_customer_name() {
        let body = form(&[("progress", DOC), ("uv0", "production")]);
        let got = locate(&names(), &FormFields::new(), &body, false).unwrap();
        assert_eq!(got.source, "form:progress");
        assert_eq!(got.form, query(&[("uv0", "production")]));
    }

    #[test]
    fn json_bodies_bare_or_wrapped() {
        let bare = locate(&names(), &FormFields::new(), DOC.as_bytes(), true).unwrap();
        assert_eq!(bare.source, "body");
        let wrapped = serde_json::json!({"json_data": DOC, "play_status": "stop"}).to_string();
        let got = locate(&names(), &FormFields::new(), wrapped.as_bytes(), true).unwrap();
        assert_eq!(got.source, "body:json_data");
        assert_eq!(
            got.report,
            bare.report.clone().with_status(PlayStatus::Stop)
        );
    }

    #[test]
    fn flat_fields_only_is_missing_and_says_so() {
        let body = form(&[("userid", "u1"), ("mck", "m1"), ("pt", "30")]);
        let e = locate(&names(), &FormFields::new(), &body, false).unwrap_err();
        assert!(matches!(e, LocateError::Missing { .. }));
        assert!(e.to_string().contains("json_data, lms_data"), "{e}");
        assert!(matches!(
            locate(&names(), &FormFields::new(), b"", false),
            Err(LocateError::Missing { .. })
        ));
    }

    #[test]
    fn a_named_field_that_is_not_a_report_is_invalid_not_missing() {
        let body = form(&[("json_data", "{\"user_info\":{}}")]);
        let e = locate(&names(), &FormFields::new(), &body, false).unwrap_err();
        assert!(
            matches!(e, LocateError::Invalid(ref p) if p.field == "user_info.client_user_id"),
            "{e:?}"
        );
    }

    impl LmsReport {
        fn with_status(mut self, s: PlayStatus) -> Self {
            self.play_status = Some(s);
            self
        }
    }
}
