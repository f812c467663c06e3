//! Kollus's v0 answers (SPEC.md section 7), parsed once into typed values, with v0's quirks:
//! `error` other than 0 is a failure with a message; `items.item` may be absent (no results), an
//! object (one result) or an array, and `items` itself may be `[]`; `duration` is `"MM:SS"` or
//! `"HH:MM:SS"`; numbers may come as strings. Any other shape is refused, naming the field.

use kollus_common::domain::{ChannelKey, MediaContentKey, UploadFileKey};
use kollus_common::kollus::loose;
use serde_json::Value;

/// An answer in a shape Kollus does not document: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ShapeError {
    pub path: String,
    pub problem: String,
}

fn shape(path: impl Into<String>, problem: impl Into<String>) -> ShapeError {
    ShapeError {
        path: path.into(),
        problem: problem.into(),
    }
}

/// What the envelope `{"error": 0, "message": ..., "result": ...}` held.
#[derive(Debug)]
pub enum Envelope {
    Ok(Value),
    /// `error` other than 0: Kollus refused, and said why.
    Refused {
        code: String,
        message: String,
    },
}

/// Reads the envelope of a v0 answer.
pub fn envelope(body: &[u8]) -> Result<Envelope, ShapeError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| shape("(body)", format!("is not JSON: {e}")))?;
    let Value::Object(mut o) = v else {
        return Err(shape("(body)", "is not a JSON object"));
    };
    let code = match o.get("error") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Bool(false)) => "0".into(),
        Some(other) => return Err(shape("error", format!("unexpected {other}"))),
        None => return Err(shape("error", "is missing")),
    };
    if code != "0" {
        let message = o
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_owned();
        return Ok(Envelope::Refused { code, message });
    }
    match o.remove("result") {
        Some(r @ Value::Object(_)) => Ok(Envelope::Ok(r)),
        Some(other) => Err(shape(
            "result",
            format!("is not an object: {}", kind(&other)),
        )),
        None => Err(shape("result", "is missing")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `result.items` in any of its documented shapes, as a list.
pub fn items(result: &Value) -> Result<Vec<&Value>, ShapeError> {
    match result.get("items") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) if a.is_empty() => Ok(Vec::new()),
        Some(Value::Array(_)) => Err(shape(
            "result.items",
            "is a non-empty array; Kollus sends {\"item\": ...} or []",
        )),
        Some(Value::Object(o)) => match o.get("item") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(one @ Value::Object(_)) => Ok(vec![one]),
            Some(Value::Array(many)) => many
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(_) => Ok(v),
                    other => Err(shape(
                        format!("result.items.item[{i}]"),
                        format!("is {}, not an object", kind(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(shape(
                "result.items.item",
                format!("is {}, not an object or an array", kind(other)),
            )),
        },
        Some(other) => Err(shape(
            "result.items",
            format!("is {}, not an object or []", kind(other)),
        )),
    }
}

/// `field` of `v` (at `path`, for errors) as a Kollus number (`kollus::loose`: a number or its
/// digits, never negative); absent, `null` or `""` is `None`.
fn int(v: &Value, field: &str, path: &str) -> Result<Option<i64>, ShapeError> {
    let at = || format!("{path}.{field}");
    let Some(n) = v.get(field) else {
        return Ok(None);
    };
    loose::opt_whole(n)
        .map_err(|problem| shape(at(), problem))?
        .map(|n| i64::try_from(n).map_err(|_| shape(at(), "is out of range")))
        .transpose()
}

fn text(v: &Value, field: &str, path: &str) -> Result<Option<String>, ShapeError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(shape(
            format!("{path}.{field}"),
            format!("is {}, not a string", kind(other)),
        )),
    }
}

fn key<K>(
    v: &Value,
    field: &str,
    path: &str,
    parse: fn(String) -> Result<K, kollus_common::domain::IdError>,
) -> Result<K, ShapeError> {
    let p = format!("{path}.{field}");
    let s = text(v, field, path)?.ok_or_else(|| shape(&p, "is missing"))?;
    parse(s).map_err(|e| shape(&p, e.to_string()))
}

/// `"MM:SS"` or `"HH:MM:SS"` as seconds.
pub fn duration_seconds(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let mut total: i64 = 0;
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: i64 = p.parse().ok()?;
        // Minutes and seconds below 60, except the leading field.
        if i > 0 && n >= 60 {
            return None;
        }
        total = total * 60 + n;
    }
    Some(total)
}

/// One channel of `media/channel/index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub key: ChannelKey,
    pub name: Option<String>,
    pub count_of_media_contents: i64,
}

pub fn channel(v: &Value, path: &str) -> Result<Channel, ShapeError> {
    Ok(Channel {
        key: key(v, "key", path, ChannelKey::parse)?,
        name: text(v, "name", path)?,
        count_of_media_contents: int(v, "count_of_media_contents", path)?.unwrap_or(0),
    })
}

/// One media content item: of a channel's list, the library's, or a detail answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaItem {
    pub upload_file_key: UploadFileKey,
    /// Channel lists only: the key in that channel.
    pub media_content_key: Option<MediaContentKey>,
    pub title: Option<String>,
    pub duration_seconds: Option<i64>,
    pub poster_url: Option<String>,
    pub transcoding_stage: Option<i64>,
    pub transcoding_stage_name: Option<String>,
    pub created_at: Option<i64>,
    pub transcoded_at: Option<i64>,
    /// Library and detail items: `channels[]` as `{channel_key, channel_name, media_content_key}`.
    pub channels: Vec<(ChannelKey, Option<String>, MediaContentKey)>,
}

pub fn media_item(v: &Value, path: &str) -> Result<MediaItem, ShapeError> {
    let duration_seconds = match text(v, "duration", path)? {
        Some(d) => Some(duration_seconds(&d).ok_or_else(|| {
            shape(
                format!("{path}.duration"),
                format!("{d:?} is neither \"MM:SS\" nor \"HH:MM:SS\""),
            )
        })?),
        // Exact milliseconds, when the string is absent.
        None => v
            .pointer("/media_information/file/raw_duration")
            .and_then(Value::as_f64)
            .map(|ms| (ms / 1000.0).round() as i64),
    };
    let channels = match v.get("channels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = format!("{path}.channels[{i}]");
                Ok((
                    key(c, "channel_key", &p, ChannelKey::parse)?,
                    text(c, "channel_name", &p)?,
                    key(c, "media_content_key", &p, MediaContentKey::parse)?,
                ))
            })
            .collect::<Result<_, ShapeError>>()?,
        Some(other) => {
            return Err(shape(
                format!("{path}.channels"),
                format!("is {}, not an array", kind(other)),
            ))
        }
    };
    let media_content_key = match text(v, "media_content_key", path)? {
        Some(k) => Some(
            MediaContentKey::parse(k)
                .map_err(|e| shape(format!("{path}.media_content_key"), e.to_string()))?,
        ),
        None => None,
    };
    Ok(MediaItem {
        upload_file_key: key(v, "upload_file_key", path, UploadFileKey::parse)?,
        media_content_key,
        title: text(v, "title", path)?,
        duration_seconds,
        poster_url: match text(v, "poster_url", path)? {
            Some(p) => Some(p),
            None => text(v, "snapshot_url", path)?,
        },
        transcoding_stage: int(v, "transcoding_stage", path)?,
        transcoding_stage_name: text(v, "transcoding_stage_name", path)?,
        created_at: int(v, "created_at", path)?,
        transcoded_at: int(v, "transcoded_at", path)?,
        channels,
    })
}

/// `result.count` of a list answer (pages: `ceil(count / per_page)`).
pub fn count(result: &Value) -> Result<i64, ShapeError> {
    Ok(int(result, "count", "result")?.unwrap_or(0).max(0))
}

/// `result.per_page`, when the answer says it.
pub fn per_page(result: &Value) -> Result<Option<i64>, ShapeError> {
    Ok(int(result, "per_page", "result")?.filter(|n| *n > 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: Value) -> Value {
        match envelope(v.to_string().as_bytes()).unwrap() {
            Envelope::Ok(r) => r,
            Envelope::Refused { message, .. } => panic!("{message}"),
        }
    }

    #[test]
    fn items_in_every_documented_shape() {
        let one = json!({"key": "7a2bmsarl8sf4d60"});
        for (items, n) in [
            (json!([]), 0),
            (json!({}), 0),
            (json!({"item": one}), 1),
            (json!({"item": [one, one]}), 2),
        ] {
            let r = ok(json!({"error": 0, "result": {"count": n, "items": items}}));
            assert_eq!(items_len(&r), n, "{r}");
        }
        // Kollus's own example, verbatim.
        let real = r#"{"result":{"kind":"package","count":1,"items":{"item":[{"name":"테스트","position":1,"count_of_media_contents":2,"key":"7a2bmsarl8sf4d60","status":1}]},"order":"position_asc"},"error":0}"#;
        let Envelope::Ok(r) = envelope(real.as_bytes()).unwrap() else {
            panic!()
        };
        let c = channel(items(&r).unwrap()[0], "result.items.item[0]").unwrap();
        assert_eq!(c.key.as_str(), "7a2bmsarl8sf4d60");
        assert_eq!(c.name.as_deref(), Some("테스트"));
        assert_eq!(c.count_of_media_contents, 2);
    }

    fn items_len(r: &Value) -> usize {
        items(r).unwrap().len()
    }

    #[test]
    fn error_one_is_refused_with_its_message() {
        let Envelope::Refused { code, message } =
            envelope(br#"{"error":1,"message":"Failed to create."}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("1", "Failed to create.")
        );
    }

    #[test]
    fn durations_in_both_forms_and_nothing_else() {
        assert_eq!(duration_seconds("12:34"), Some(754));
        assert_eq!(duration_seconds("01:02:03"), Some(3723));
        assert_eq!(duration_seconds("125:00"), Some(7500));
        for bad in ["", "12", "1:2:3:4", "ab:cd", "10:75", "-1:00", "1.5:00"] {
            assert_eq!(duration_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostile_shapes_name_the_field() {
        let e = envelope(b"<html>").unwrap_err();
        assert_eq!(e.path, "(body)");
        let r = ok(json!({"error": 0, "result": {"items": "none"}}));
        assert_eq!(items(&r).unwrap_err().path, "result.items");
        let r = ok(json!({"error": 0, "result": {"items": {"item": [1]}}}));
        assert_eq!(items(&r).unwrap_err().path, "result.items.item[0]");
        let item = json!({"upload_file_key": "u1", "duration": "1:2:3:4"});
        let e = media_item(&item, "result.items.item[3]").unwrap_err();
        assert_eq!(e.path, "result.items.item[3].duration");
        let item = json!({"title": "x"});
        let e = media_item(&item, "r").unwrap_err();
        assert_eq!(e.to_string(), "r.upload_file_key: is missing");
        let item = json!({"upload_file_key": "u1", "transcoding_stage": "done"});
        assert_eq!(
            media_item(&item, "r").unwrap_err().path,
            "r.transcoding_stage"
        );
    }

    /// The catalog reads Kollus's numbers as the LMS parser and the play and DRM callbacks do
    /// (`kollus::loose`): a negative one is refused, naming the field, as it is there.
    #[test]
    fn numbers_are_kollus_numbers() {
        let at = |stage: Value| {
            media_item(
                &json!({"upload_file_key": "u1", "transcoding_stage": stage}),
                "r",
            )
        };
        assert_eq!(at(json!("21")).unwrap().transcoding_stage, Some(21));
        assert_eq!(at(json!(12)).unwrap().transcoding_stage, Some(12));
        assert_eq!(at(json!("")).unwrap().transcoding_stage, None);
        for negative in [json!(-1), json!("-1")] {
            assert_eq!(
                at(negative).unwrap_err(),
                shape("r.transcoding_stage", "must not be negative")
            );
        }
        let r = ok(json!({"error": 0, "result": {"count": "-5"}}));
        assert_eq!(count(&r).unwrap_err().path, "result.count");
    }

    #[test]
    fn a_library_item_with_its_channels() {
        let item = json!({
            "upload_file_key": "20170927-j4tu6428", "title": "3강 - 미적분 기초",
            "duration": "00:12:34", "transcoding_stage": 21, "transcoding_stage_name": "완료",
            "snapshot_url": "https://img/1.jpg", "created_at": "1506470400", "transcoded_at": 1506470999,
            "channels": [{"channel_key": "abcd1234", "channel_name": "수학", "media_content_key": "vnCVPVyV"}]
        });
        let m = media_item(&item, "r").unwrap();
        assert_eq!(m.duration_seconds, Some(754));
        assert_eq!(m.poster_url.as_deref(), Some("https://img/1.jpg"));
        assert_eq!(m.created_at, Some(1_506_470_400));
        assert_eq!(m.channels[0].2.as_str(), "vnCVPVyV");
        assert_eq!(m.media_content_key, None);
    }
}
