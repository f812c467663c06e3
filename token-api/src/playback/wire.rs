//! Kollus's play and DRM callback forms (SPEC.md 5.1, 5.2) into typed callbacks, through
//! common's form decoder (the one ingest uses).
//!
//! Every field we keep, sign or query by (user, video, player, session key, kind, times) is read
//! strictly: a NUL or invalid UTF-8 is a 400 naming the field, before anything reaches
//! PostgreSQL (which refuses NUL) or a stored row (which would keep replacement characters).
//! Fields we ignore (device name, hardware id) are read leniently: an odd device never costs a
//! viewer playback.

use kollus_common::domain::{ClientUserId, MediaContentKey};
use kollus_common::kollus::form::{parse_form_strict_in, FormFields};
use serde_json::Value;

use crate::problem::{invalid, ApiError};

/// The play callback's fields read strictly; the rest (`device_name`, `hardware_id`, ...) are
/// read leniently.
const PLAY_STRICT: &[&str] = &[
    "kind",
    "client_user_id",
    "media_content_key",
    "player_id",
    "uservalues",
    "localtime",
    "channel_key",
];

/// What a DRM item keeps, signs or queries by: read strictly.
const DRM_ITEM_STRICT: &[&str] = &[
    "kind",
    "client_user_id",
    "media_content_key",
    "session_key",
    "player_id",
    "start_at",
];

/// Most items one DRM callback may carry. Kollus sends a handful (a download, its completion, a
/// few downloaded files' checks); every item costs a read, so a forged callback may not ask for
/// thousands.
pub const MAX_DRM_ITEMS: usize = 100;

/// A play callback (SPEC.md 5.1), checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayCallback {
    /// 1 (before playback) or 3 (player ready).
    pub kind: i32,
    pub user: ClientUserId,
    pub media: MediaContentKey,
    pub player_id: Option<String>,
    /// The player URL's `uservalueN`, as Kollus echoes them (the viewer binding among them).
    pub uservalues: UserValues,
}

/// A callback's `uservalues`: text values by name (a number is kept as its text).
pub type UserValues = std::collections::BTreeMap<String, String>;

/// Reads `uservalues` given as a JSON object, or as the text of one; anything else is `None`.
fn uservalues_of(v: &Value) -> Option<UserValues> {
    let object = match v {
        Value::Object(o) => o.clone(),
        Value::String(s) if s.trim().is_empty() => return Some(UserValues::new()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => o,
            _ => return None,
        },
        Value::Null => return Some(UserValues::new()),
        // An empty PHP array, as some SDKs send for "none".
        Value::Array(a) if a.is_empty() => return Some(UserValues::new()),
        _ => return None,
    };
    Some(
        object
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Number(n) => Some((k, n.to_string())),
                _ => None,
            })
            .collect(),
    )
}

/// One DRM item (SPEC.md 5.2), checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DrmItem {
    /// 1 approve a download, 2 download completed, 3 play of a downloaded file.
    pub kind: i32,
    pub user: ClientUserId,
    pub media: MediaContentKey,
    pub session_key: Option<String>,
    pub start_at: i64,
    pub player_id: Option<String>,
    /// The item's `uservalues` (an object, or the text of one), as Kollus echoes them.
    pub uservalues: UserValues,
}

fn form(body: &[u8], strict: &[&str]) -> Result<FormFields, ApiError> {
    parse_form_strict_in(body, strict).map_err(|e| invalid(&e.field, e.problem))
}

fn required<'a>(f: &'a FormFields, field: &str) -> Result<&'a str, ApiError> {
    f.get(field)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(field, "is required"))
}

/// An integer Kollus may send as a JSON number or a string.
fn int_of(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// `POST /kollus/play`'s form.
pub fn play(body: &[u8]) -> Result<PlayCallback, ApiError> {
    let f = form(body, PLAY_STRICT)?;
    let kind = match required(&f, "kind")? {
        "1" => 1,
        "3" => 3,
        other => {
            return Err(invalid(
                "kind",
                format!("{other:?}: only 1 (before playback) and 3 (player ready) are answered"),
            ))
        }
    };
    let user = ClientUserId::parse(required(&f, "client_user_id")?)
        .map_err(|e| invalid("client_user_id", e.to_string()))?;
    let media = MediaContentKey::parse(required(&f, "media_content_key")?)
        .map_err(|e| invalid("media_content_key", e.to_string()))?;
    let uservalues = match f.get("uservalues").filter(|v| !v.is_empty()) {
        Some(uv) => match serde_json::from_str::<Value>(uv) {
            Ok(v @ Value::Object(_)) => uservalues_of(&v).unwrap_or_default(),
            _ => return Err(invalid("uservalues", "must be a JSON object")),
        },
        None => UserValues::new(),
    };
    Ok(PlayCallback {
        kind,
        user,
        media,
        player_id: f.get("player_id").cloned(),
        uservalues,
    })
}

/// `POST /kollus/drm`'s form: a JSON array of items in `items`.
pub fn drm(body: &[u8]) -> Result<Vec<DrmItem>, ApiError> {
    let f = form(body, &["items"])?;
    let items: Vec<Value> = serde_json::from_str(required(&f, "items")?)
        .map_err(|e| invalid("items", format!("must be a JSON array of objects: {e}")))?;
    if items.is_empty() {
        return Err(invalid("items", "must hold at least one item"));
    }
    if items.len() > MAX_DRM_ITEMS {
        return Err(invalid(
            "items",
            format!(
                "holds {} items; at most {MAX_DRM_ITEMS} are answered in one callback",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| drm_item(i, item))
        .collect()
}

fn drm_item(i: usize, item: &Value) -> Result<DrmItem, ApiError> {
    let field = |name: &str| format!("items[{i}].{name}");
    // A JSON escape (`\u0000`) is as much a NUL as a raw byte.
    for name in DRM_ITEM_STRICT {
        if item
            .get(*name)
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains('\0'))
        {
            return Err(invalid(&field(name), "contains a NUL character"));
        }
    }
    let text = |name: &str| {
        item.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let kind = item
        .get("kind")
        .and_then(int_of)
        .filter(|k| (1..=3).contains(k))
        .ok_or_else(|| invalid(&field("kind"), "must be 1, 2 or 3"))?;
    let user = ClientUserId::parse(
        text("client_user_id").ok_or_else(|| invalid(&field("client_user_id"), "is required"))?,
    )
    .map_err(|e| invalid(&field("client_user_id"), e.to_string()))?;
    let media = MediaContentKey::parse(
        text("media_content_key")
            .ok_or_else(|| invalid(&field("media_content_key"), "is required"))?,
    )
    .map_err(|e| invalid(&field("media_content_key"), e.to_string()))?;
    let session_key = text("session_key").map(str::to_owned);
    if kind == 2 && session_key.is_none() {
        return Err(invalid(
            &field("session_key"),
            "is required for a completed download (kind 2): it is what counts it once",
        ));
    }
    Ok(DrmItem {
        kind: kind as i32,
        user,
        media,
        session_key,
        start_at: item.get("start_at").and_then(int_of).unwrap_or(0),
        player_id: text("player_id").map(str::to_owned),
        uservalues: match item.get("uservalues") {
            None => UserValues::new(),
            Some(v) => uservalues_of(v)
                .ok_or_else(|| invalid(&field("uservalues"), "must be a JSON object"))?,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// The forms as the API document states them (derived into openapi.json; never built).
// ---------------------------------------------------------------------------------------------

/// Kollus's play callback form (SPEC.md 5.1). Other fields Kollus adds are ignored.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = PlayCallback)]
#[allow(dead_code, reason = "the document's form; wire::play reads it")]
pub struct PlayForm {
    kind: PlayKind,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    client_user_id: String,
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    media_content_key: String,
    #[serde(default)]
    player_id: String,
    #[serde(default)]
    hardware_id: String,
    #[serde(default)]
    device_name: String,
    /// A JSON object, as text.
    #[serde(default)]
    #[schema(content_media_type = "application/json")]
    uservalues: String,
    #[serde(default)]
    localtime: String,
}

/// 1: before playback; 3: the player is ready.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code, reason = "the document's form; wire::play reads it")]
pub enum PlayKind {
    #[serde(rename = "1")]
    BeforePlayback,
    #[serde(rename = "3")]
    PlayerReady,
}

/// Kollus's DRM callback form (SPEC.md 5.2).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = DrmCallback)]
#[allow(dead_code, reason = "the document's form; wire::drm reads it")]
pub struct DrmForm {
    /// A JSON array of 1 to 100 items, each with `kind` (1 approve a download, 2 download
    /// completed, 3 play of a downloaded file), `client_user_id`, `media_content_key`,
    /// `session_key` (required for kind 2), `start_at`, ...
    #[schema(content_media_type = "application/json")]
    items: String,
}

/// A JWT (HS256, KOLLUS_SECURITY_KEY) of `{"data": ...}`: Kollus's answer (`answer.rs`).
pub struct KollusAnswer;

impl utoipa::PartialSchema for KollusAnswer {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"))
            .description(Some(
                "A JWT (HS256, KOLLUS_SECURITY_KEY) of `{\"data\": ...}`. Play kind 1: `{result, \
                 message, expiration_date, expiration_playtime, vmcheck, disable_tvout}`; kind 3: \
                 `{result, message, content_expired}`; DRM: an array, one item per request item, \
                 in order: `{kind, media_content_key, session_key, start_at, result, message, \
                 expiration_date, expiration_count, expiration_playtime, vmcheck, \
                 content_expired, content_delete}`. Integers are JSON integers.",
            ))
            .build()
            .into()
    }
}

impl utoipa::ToSchema for KollusAnswer {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::Invalid(errors) => errors[0].field.clone(),
            other => panic!("not a 400 naming a field: {other:?}"),
        }
    }

    #[test]
    fn hostile_bytes_in_what_we_keep_are_refused_naming_the_field() {
        let base = "kind=1&client_user_id=u1&media_content_key=m1";
        for (extra, field) in [
            ("&player_id=p%00", "player_id"),
            ("&player_id=p%FF", "player_id"),
            ("&uservalues=%00", "uservalues"),
        ] {
            let e = play(format!("{base}{extra}").as_bytes()).unwrap_err();
            assert_eq!(field_of(e), field, "{extra}");
        }
        let e = play(b"kind=1&client_user_id=u%c3%28&media_content_key=m1").unwrap_err();
        assert_eq!(field_of(e), "client_user_id");
        let e = play(b"kind=1%00&client_user_id=u&media_content_key=m1").unwrap_err();
        assert_eq!(field_of(e), "kind");
    }

    #[test]
    fn odd_bytes_in_what_we_ignore_cost_nothing() {
        let ok = play(
            b"kind=1&client_user_id=u1&media_content_key=m1&player_id=p\
              &device_name=Galaxy%00%FF&hardware_id=%c3%28&device_name=again",
        )
        .unwrap();
        assert_eq!(ok.user.as_str(), "u1");
        assert_eq!(ok.player_id.as_deref(), Some("p"));
        let items = r#"[{"kind":1,"client_user_id":"u","media_content_key":"m","device_name":"a\u0000b","hardware_id":"\u0000"}]"#;
        let body = format!("items={}", urlencode(items));
        assert_eq!(drm(body.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn nul_escapes_in_drm_items_are_refused_naming_the_item_and_field() {
        for (name, value) in [
            ("session_key", r#""s\u0000""#),
            ("player_id", r#""p\u0000""#),
            ("client_user_id", r#""u\u0000""#),
            ("kind", r#""1\u0000""#),
        ] {
            let mut item =
                serde_json::json!({"kind": 1, "client_user_id": "u", "media_content_key": "m"});
            item[name] = serde_json::from_str(value).unwrap();
            let items = serde_json::json!([{"kind": 1, "client_user_id": "u", "media_content_key": "m"}, item]);
            let body = format!("items={}", urlencode(&items.to_string()));
            assert_eq!(
                field_of(drm(body.as_bytes()).unwrap_err()),
                format!("items[1].{name}")
            );
        }
        let body = format!(
            "items={}",
            urlencode(r#"[{"kind":1,"client_user_id":"\ud800","media_content_key":"m"}]"#)
        );
        assert_eq!(
            field_of(drm(body.as_bytes()).unwrap_err()),
            "items",
            "a lone surrogate"
        );
    }

    #[test]
    fn at_most_a_hundred_items_are_answered() {
        let item = serde_json::json!({"kind": 1, "client_user_id": "u", "media_content_key": "m"});
        let body = |n: usize| {
            format!(
                "items={}",
                urlencode(&Value::Array(vec![item.clone(); n]).to_string())
            )
        };
        assert_eq!(drm(body(MAX_DRM_ITEMS).as_bytes()).unwrap().len(), 100);
        assert_eq!(
            field_of(drm(body(MAX_DRM_ITEMS + 1).as_bytes()).unwrap_err()),
            "items"
        );
    }

    fn urlencode(s: &str) -> String {
        form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    /// What a value must be, decoded, to be taken as it is: UTF-8 without NUL.
    fn clean(bytes: &[u8]) -> Option<&str> {
        std::str::from_utf8(bytes)
            .ok()
            .filter(|s| !s.contains('\0'))
    }

    fn percent(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("%{b:02X}")).collect()
    }

    proptest! {
        /// Arbitrary bytes in every field of the play form: refused naming that field, or taken
        /// exactly as sent.
        #[test]
        fn play_takes_what_was_sent_or_names_the_field(
            field in prop::sample::select(vec!["kind", "client_user_id", "media_content_key", "player_id", "device_name", "hardware_id", "uservalues", "localtime"]),
            bytes in prop::collection::vec(any::<u8>(), 0..12),
        ) {
            let mut fields = vec![
                ("kind", b"1".to_vec()),
                ("client_user_id", b"u1".to_vec()),
                ("media_content_key", b"m1".to_vec()),
                ("player_id", b"p1".to_vec()),
            ];
            match fields.iter_mut().find(|(n, _)| *n == field) {
                Some((_, v)) => *v = bytes.clone(),
                None => fields.push((field, bytes.clone())),
            }
            let body = fields.iter().map(|(n, v)| format!("{n}={}", percent(v))).collect::<Vec<_>>().join("&");
            match play(body.as_bytes()) {
                Ok(p) => {
                    let sent = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
                    prop_assert_eq!(p.user.as_str().as_bytes(), &sent("client_user_id").unwrap()[..]);
                    prop_assert_eq!(p.media.as_str().as_bytes(), &sent("media_content_key").unwrap()[..]);
                    prop_assert_eq!(p.player_id.map(String::into_bytes), sent("player_id"));
                    prop_assert_eq!(p.kind.to_string().into_bytes(), sent("kind").unwrap());
                }
                Err(e) => {
                    let named = field_of(e);
                    prop_assert_eq!(&named, field, "the refusal names the field changed");
                    prop_assert!(PLAY_STRICT.contains(&field), "an ignored field never refuses a play");
                }
            }
        }

        /// Arbitrary text (any char, NUL included) in every field of a DRM item.
        #[test]
        fn drm_takes_what_was_sent_or_names_the_field(
            field in prop::sample::select(vec!["kind", "client_user_id", "media_content_key", "session_key", "player_id", "start_at", "device_name", "hardware_id"]),
            value in any::<String>(),
        ) {
            let mut item = serde_json::json!({"kind": 2, "client_user_id": "u", "media_content_key": "m", "session_key": "s", "player_id": "p", "start_at": 5});
            item[field] = Value::String(value.clone());
            let body = format!("items={}", urlencode(&Value::Array(vec![item.clone()]).to_string()));
            match drm(body.as_bytes()) {
                Ok(items) => {
                    let it = &items[0];
                    prop_assert_eq!(it.user.as_str(), item["client_user_id"].as_str().unwrap());
                    prop_assert_eq!(it.media.as_str(), item["media_content_key"].as_str().unwrap());
                    prop_assert_eq!(it.session_key.as_deref(), item["session_key"].as_str());
                    prop_assert_eq!(it.player_id.as_deref(), item["player_id"].as_str().filter(|s| !s.is_empty()));
                    prop_assert!(clean(value.as_bytes()).is_some() || !DRM_ITEM_STRICT.contains(&field));
                }
                Err(e) => prop_assert_eq!(field_of(e), format!("items[0].{field}")),
            }
        }
    }
}
