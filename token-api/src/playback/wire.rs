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
use kollus_common::kollus::loose::{OptText, OptWhole};
use serde_json::Value;
use serde_with::serde_as;

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

/// `POST /kollus/play`'s form, read by derive into [`PlayForm`] (the document's form too).
pub fn play(body: &[u8]) -> Result<PlayCallback, ApiError> {
    let f = form(body, PLAY_STRICT)?;
    let fields = f.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let de = serde::de::value::MapDeserializer::<_, serde::de::value::Error>::new(fields);
    let form: PlayForm = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = match message
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            Some(missing) => missing.to_owned(),
            None => path,
        };
        let field = field.as_str();
        match f.get(field).map(String::as_str) {
            None | Some("") => invalid(field, "is required"),
            Some(other) if field == "kind" => invalid(
                "kind",
                format!("{other:?}: only 1 (before playback) and 3 (player ready) are answered"),
            ),
            Some(_) => invalid(field, message),
        }
    })?;
    let uservalues = match Some(form.uservalues.as_str()).filter(|v| !v.is_empty()) {
        Some(uv) => match serde_json::from_str::<Value>(uv) {
            Ok(v @ Value::Object(_)) => uservalues_of(&v).unwrap_or_default(),
            _ => return Err(invalid("uservalues", "must be a JSON object")),
        },
        None => UserValues::new(),
    };
    Ok(PlayCallback {
        kind: match form.kind {
            PlayKind::BeforePlayback => 1,
            PlayKind::PlayerReady => 3,
        },
        user: form.client_user_id,
        media: form.media_content_key,
        player_id: form.player_id,
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

/// One DRM item as Kollus sends it: numbers as numbers or digits, text as text or a number,
/// `""` and `null` as absent (`kollus::loose`, as the LMS parser and the catalog read them).
/// What we keep, sign or query by is read strictly (a NUL is refused, named); other fields
/// (`device_name`, `hardware_id`, ...) are not read at all.
#[serde_as]
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct WireDrmItem {
    #[serde_as(as = "OptWhole")]
    kind: Option<u64>,
    #[serde_as(as = "OptText")]
    client_user_id: Option<String>,
    #[serde_as(as = "OptText")]
    media_content_key: Option<String>,
    #[serde_as(as = "OptText")]
    session_key: Option<String>,
    #[serde_as(as = "OptWhole")]
    start_at: Option<u64>,
    #[serde_as(as = "OptText")]
    player_id: Option<String>,
    uservalues: Option<Value>,
}

fn drm_item(i: usize, item: &Value) -> Result<DrmItem, ApiError> {
    let field = |name: &str| format!("items[{i}].{name}");
    let kind_refused = || invalid(&field("kind"), "must be 1, 2 or 3");
    let wire: WireDrmItem = serde_path_to_error::deserialize(item).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "kind" => kind_refused(),
            "." => invalid(&format!("items[{i}]"), "must be a JSON object"),
            _ => invalid(&field(&path), e.inner().to_string()),
        }
    })?;
    let kind = wire
        .kind
        .filter(|k| (1..=3).contains(k))
        .ok_or_else(kind_refused)?;
    let user = ClientUserId::parse(
        wire.client_user_id
            .ok_or_else(|| invalid(&field("client_user_id"), "is required"))?,
    )
    .map_err(|e| invalid(&field("client_user_id"), e.to_string()))?;
    let media = MediaContentKey::parse(
        wire.media_content_key
            .ok_or_else(|| invalid(&field("media_content_key"), "is required"))?,
    )
    .map_err(|e| invalid(&field("media_content_key"), e.to_string()))?;
    if kind == 2 && wire.session_key.is_none() {
        return Err(invalid(
            &field("session_key"),
            "is required for a completed download (kind 2): it is what counts it once",
        ));
    }
    Ok(DrmItem {
        kind: kind as i32,
        user,
        media,
        session_key: wire.session_key,
        // Absent: the answer echoes 0, as it always has.
        start_at: match wire.start_at {
            None => 0,
            Some(s) => {
                i64::try_from(s).map_err(|_| invalid(&field("start_at"), "is out of range"))?
            }
        },
        player_id: wire.player_id,
        uservalues: match wire.uservalues {
            None => UserValues::new(),
            Some(v) => uservalues_of(&v)
                .ok_or_else(|| invalid(&field("uservalues"), "must be a JSON object"))?,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// The forms as the API document states them (derived into openapi.json); `play` reads its own.
// ---------------------------------------------------------------------------------------------

/// Kollus's play callback form (SPEC.md 5.1). Other fields Kollus adds are ignored.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = PlayCallback)]
pub struct PlayForm {
    kind: PlayKind,
    client_user_id: ClientUserId,
    media_content_key: MediaContentKey,
    // Absent and empty differ: an empty one is recorded as sent.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String)]
    player_id: Option<String>,
    #[serde(default)]
    #[expect(dead_code, reason = "in the document; read leniently, never used")]
    hardware_id: String,
    #[serde(default)]
    #[expect(dead_code, reason = "in the document; read leniently, never used")]
    device_name: String,
    /// A JSON object, as text.
    #[serde(default)]
    #[schema(content_media_type = "application/json")]
    uservalues: String,
    #[serde(default)]
    #[expect(dead_code, reason = "in the document; read strictly, not used yet")]
    localtime: String,
}

/// A form field that is there, empty or not (a form's values are text: no `null` to read).
fn given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    <String as serde::Deserialize>::deserialize(d).map(Some)
}

/// 1: before playback; 3: the player is ready.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub enum PlayKind {
    #[serde(rename = "1")]
    BeforePlayback,
    #[serde(rename = "3")]
    PlayerReady,
}

/// Kollus's DRM callback form (SPEC.md 5.2).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = DrmCallback)]
#[expect(dead_code, reason = "the document's form; wire::drm reads it")]
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

    fn problem_of(e: ApiError) -> (String, String) {
        match e {
            ApiError::Invalid(errors) => (errors[0].field.clone(), errors[0].message.clone()),
            other => panic!("not a 400 naming a field: {other:?}"),
        }
    }

    /// The play form is read by derive into the document's `PlayForm`; its refusals say what
    /// they said when it was read by hand.
    #[test]
    fn play_refusals_name_the_field_and_say_why() {
        let refused = |body: &str| problem_of(play(body.as_bytes()).unwrap_err());
        let is = |field: &str, message: &str| (field.to_owned(), message.to_owned());
        assert_eq!(
            refused("kind=5&client_user_id=u&media_content_key=m"),
            is(
                "kind",
                "\"5\": only 1 (before playback) and 3 (player ready) are answered"
            )
        );
        assert_eq!(
            refused("client_user_id=u&media_content_key=m"),
            is("kind", "is required")
        );
        assert_eq!(
            refused("kind=&client_user_id=u&media_content_key=m"),
            is("kind", "is required")
        );
        assert_eq!(
            refused("kind=1&media_content_key=m"),
            is("client_user_id", "is required")
        );
        assert_eq!(
            refused("kind=1&client_user_id=&media_content_key=m"),
            is("client_user_id", "is required")
        );
        assert_eq!(
            refused("kind=1&client_user_id=u&media_content_key=bad+key"),
            is(
                "media_content_key",
                "contains ' ', which Kollus keys never contain (allowed: A-Z a-z 0-9 - _ .)"
            )
        );
        assert_eq!(
            refused("kind=1&client_user_id=u&media_content_key=m&uservalues=%5B%5D"),
            is("uservalues", "must be a JSON object")
        );
        let ok = play(b"kind=3&client_user_id=u&media_content_key=m&player_id=").unwrap();
        assert_eq!((ok.kind, ok.player_id.as_deref()), (3, Some("")));
        let ok = play(b"kind=1&client_user_id=u&media_content_key=m").unwrap();
        assert_eq!((ok.kind, ok.player_id), (1, None));
    }

    fn drm_one(item: Value) -> Result<DrmItem, ApiError> {
        let body = format!("items={}", urlencode(&Value::Array(vec![item]).to_string()));
        drm(body.as_bytes()).map(|mut items| items.remove(0))
    }

    /// A DRM item's numbers are read as the LMS parser and the catalog read Kollus's numbers
    /// (`kollus::loose`): a number or its digits; a negative one (`-3`, which this form took
    /// until the three agreed) or text that is no number is refused, naming the field.
    #[test]
    fn drm_numbers_are_kollus_numbers() {
        let base = serde_json::json!({"kind": "2", "client_user_id": 42, "media_content_key": "m", "session_key": "s"});
        let with = |name: &str, v: Value| {
            let mut item = base.clone();
            item[name] = v;
            item
        };
        let ok = drm_one(with("start_at", "1700000000".into())).unwrap();
        assert_eq!((ok.kind, ok.start_at), (2, 1_700_000_000));
        assert_eq!(ok.user.as_str(), "42", "a number as text, as in LMS");
        assert_eq!(drm_one(with("start_at", 7.into())).unwrap().start_at, 7);
        assert_eq!(drm_one(with("start_at", "".into())).unwrap().start_at, 0);
        for (name, v) in [
            ("start_at", Value::from("-3")),
            ("start_at", Value::from(-3)),
            ("start_at", Value::from("soon")),
            ("kind", Value::from("-3")),
            ("kind", Value::from(-1)),
            ("kind", Value::from("4")),
        ] {
            let e = drm_one(with(name, v.clone())).unwrap_err();
            assert_eq!(field_of(e), format!("items[0].{name}"), "{v}");
        }
        let e = drm_one(with("start_at", "-3".into())).unwrap_err();
        let ApiError::Invalid(errors) = e else {
            panic!("not a 400")
        };
        assert_eq!(errors[0].message, "must not be negative");
        assert_eq!(
            field_of(drm_one(Value::from(1)).unwrap_err()),
            "items[0]",
            "an item that is no object"
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

    /// The play form's fields that must be read strictly, as SPEC.md and the module say: the
    /// test's own list, so that dropping a field from `PLAY_STRICT` shows here.
    const PLAY_KEPT: &[&str] = &[
        "kind",
        "client_user_id",
        "media_content_key",
        "player_id",
        "uservalues",
        "localtime",
    ];
    /// A DRM item's fields that must never be taken with a NUL (likewise the test's own list).
    const DRM_KEPT: &[&str] = &[
        "kind",
        "client_user_id",
        "media_content_key",
        "session_key",
        "player_id",
        "start_at",
    ];

    /// Characters that hurt: NUL, DEL, other C0 and C1 controls, what JSON and forms escape,
    /// line and byte-order marks; then ordinary text, then any `char` at all. (`any::<String>()`
    /// is `\PC*`: it never makes a control character, NUL included.)
    fn hostile_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => Just('\0'),
            1 => Just('\u{7f}'),
            3 => prop::sample::select(vec![
                '\u{1}', '\u{8}', '\t', '\n', '\r', '\u{1b}', '\u{1f}', '\u{80}', '\u{85}',
                '\u{9f}', '\u{a0}', '\u{2028}', '\u{feff}', '\u{fffd}', '"', '\\', '%', '&',
                '=', '+', ' ',
            ]),
            5 => prop::sample::select(('a'..='z').chain('0'..='9').collect::<Vec<_>>()),
            2 => any::<char>(),
        ]
    }

    /// Text for a JSON string: hostile characters, and text that looks like an escape
    /// (`%00`, `\u0000`) and must stay the text it is.
    fn hostile_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            6 => hostile_char().prop_map(String::from),
            1 => prop::sample::select(vec!["%00", "%", "%G1", "%FF", "\\u0000", "%2500"])
                .prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
    }

    /// A piece of a form value: what goes on the wire and the bytes it decodes to.
    type Piece = (String, Vec<u8>);

    /// Bytes in a form value, as a hostile sender writes them: NUL, DEL, C0 and C1 controls
    /// (U+0080 to U+009F in UTF-8), invalid UTF-8 (a lone continuation byte, 0xFF, an overlong
    /// NUL, a surrogate, a truncated sequence), percent-escaped; `+`; and invalid escapes
    /// (`%`, `%4`, `%G1`), which a form decoder keeps as the text they are. Every raw piece
    /// starts with `%` or `+`, so no piece can complete the escape its neighbour left open.
    fn hostile_piece() -> impl Strategy<Value = Piece> {
        let escaped = |bytes: Vec<u8>| -> Piece {
            (bytes.iter().map(|b| format!("%{b:02X}")).collect(), bytes)
        };
        let bytes = prop_oneof![
            3 => Just(vec![0u8]),
            1 => Just(vec![0x7f]),
            2 => prop::sample::select(vec![
                vec![0x01], vec![0x1f], vec![0x0a], vec![0xc2, 0x80], vec![0xc2, 0x85],
                vec![0xc2, 0x9f], vec![0x80], vec![0xff], vec![0xc0, 0x80],
                vec![0xed, 0xa0, 0x80], vec![0xc3, 0x28], vec![0xe2, 0x82],
            ]),
            5 => prop::sample::select(b"abcxyz0189-_.".to_vec()).prop_map(|b| vec![b]),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ];
        let invalid_escape = prop::sample::select(vec![
            ("%", "%"),
            ("%4", "%4"),
            ("%G1", "%G1"),
            ("%zz", "%zz"),
            ("%%", "%%"),
            ("+", " "),
        ]);
        prop_oneof![
            4 => bytes.prop_map(escaped),
            1 => invalid_escape
                .prop_map(|(wire, decoded)| (wire.to_owned(), decoded.as_bytes().to_vec())),
        ]
    }

    fn hostile_value() -> impl Strategy<Value = Piece> {
        prop::collection::vec(hostile_piece(), 0..8).prop_map(|pieces| {
            pieces
                .into_iter()
                .fold((String::new(), Vec::new()), |(mut w, mut d), (pw, pd)| {
                    w.push_str(&pw);
                    d.extend(pd);
                    (w, d)
                })
        })
    }

    /// The generators make the hostile cases: many values with a NUL, DEL, a C1 control,
    /// invalid UTF-8, an invalid escape; and clean ones too, so both answers are seen.
    #[test]
    fn the_generators_make_the_hostile_cases() {
        use proptest::strategy::ValueTree as _;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let texts: Vec<String> = (0..256)
            .map(|_| hostile_text().new_tree(&mut runner).unwrap().current())
            .collect();
        let share = |f: &dyn Fn(&String) -> bool| texts.iter().filter(|t| f(t)).count();
        assert!(share(&|t| t.contains('\0')) >= 32, "NUL: {texts:?}");
        assert!(share(&|t| t.contains('\u{7f}')) >= 8, "DEL");
        assert!(share(&|t| t.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c))) >= 8);
        assert!(share(&|t| t.chars().any(|c| c < ' ' && c != '\0')) >= 16);
        assert!(share(&|t| t.contains("%00") || t.contains("\\u0000")) >= 8);
        assert!(share(&|t| !t.is_empty() && !t.chars().any(char::is_control)) >= 32);

        let values: Vec<Piece> = (0..256)
            .map(|_| hostile_value().new_tree(&mut runner).unwrap().current())
            .collect();
        let share = |f: &dyn Fn(&Piece) -> bool| values.iter().filter(|v| f(v)).count();
        assert!(share(&|(_, d)| d.contains(&0)) >= 32, "NUL: {values:?}");
        assert!(share(&|(_, d)| d.contains(&0x7f)) >= 8, "DEL");
        assert!(share(&|(_, d)| std::str::from_utf8(d).is_err()) >= 32);
        assert!(share(&|(w, _)| w.contains("%G1") || w.contains("%4%") || w.ends_with("%4")) >= 8);
        assert!(share(&|(_, d)| !d.is_empty() && clean(d).is_some()) >= 16);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Hostile bytes and escapes in every field of the play form: refused naming that
        /// field, or taken exactly as sent, and a field we keep is never taken with a NUL or
        /// invalid UTF-8.
        #[test]
        fn play_takes_what_was_sent_or_names_the_field(
            field in prop::sample::select(vec!["kind", "client_user_id", "media_content_key", "player_id", "device_name", "hardware_id", "uservalues", "localtime"]),
            (wire, decoded) in hostile_value(),
        ) {
            let mut fields: Vec<(&str, String, Vec<u8>)> = vec![
                ("kind", "1".into(), b"1".to_vec()),
                ("client_user_id", "u1".into(), b"u1".to_vec()),
                ("media_content_key", "m1".into(), b"m1".to_vec()),
                ("player_id", "p1".into(), b"p1".to_vec()),
            ];
            match fields.iter_mut().find(|(n, _, _)| *n == field) {
                Some((_, w, d)) => (*w, *d) = (wire.clone(), decoded.clone()),
                None => fields.push((field, wire.clone(), decoded.clone())),
            }
            let body = fields.iter().map(|(n, w, _)| format!("{n}={w}")).collect::<Vec<_>>().join("&");
            let sent = |name: &str| fields.iter().find(|(n, _, _)| *n == name).map(|(_, _, d)| d.clone());
            match play(body.as_bytes()) {
                Ok(p) => {
                    prop_assert!(
                        !PLAY_KEPT.contains(&field) || clean(&decoded).is_some(),
                        "{} taken with {:?} ({})", field, decoded, body
                    );
                    prop_assert_eq!(p.user.as_str().as_bytes(), &sent("client_user_id").unwrap()[..]);
                    prop_assert_eq!(p.media.as_str().as_bytes(), &sent("media_content_key").unwrap()[..]);
                    prop_assert_eq!(p.player_id.map(String::into_bytes), sent("player_id"));
                    prop_assert_eq!(p.kind.to_string().into_bytes(), sent("kind").unwrap());
                }
                Err(e) => {
                    let named = field_of(e);
                    prop_assert_eq!(&named, field, "the refusal names the field changed");
                    prop_assert!(PLAY_KEPT.contains(&field), "an ignored field never refuses a play");
                }
            }
        }

        /// Hostile text (NUL, DEL, C0 and C1 controls, escapes as text) in every field of a DRM
        /// item: refused naming the item's field, or taken exactly as sent; a field we keep is
        /// never taken with a NUL.
        #[test]
        fn drm_takes_what_was_sent_or_names_the_field(
            field in prop::sample::select(vec!["kind", "client_user_id", "media_content_key", "session_key", "player_id", "start_at", "device_name", "hardware_id"]),
            value in hostile_text(),
        ) {
            let mut item = serde_json::json!({"kind": 2, "client_user_id": "u", "media_content_key": "m", "session_key": "s", "player_id": "p", "start_at": 5});
            item[field] = Value::String(value.clone());
            let body = format!("items={}", urlencode(&Value::Array(vec![item.clone()]).to_string()));
            match drm(body.as_bytes()) {
                Ok(items) => {
                    prop_assert!(
                        clean(value.as_bytes()).is_some() || !DRM_KEPT.contains(&field),
                        "{} taken with {:?}", field, value
                    );
                    prop_assert_eq!(items.len(), 1);
                    let it = &items[0];
                    prop_assert_eq!(it.user.as_str(), item["client_user_id"].as_str().unwrap());
                    prop_assert_eq!(it.media.as_str(), item["media_content_key"].as_str().unwrap());
                    prop_assert_eq!(it.session_key.as_deref(), item["session_key"].as_str());
                    prop_assert_eq!(it.player_id.as_deref(), item["player_id"].as_str().filter(|s| !s.is_empty()));
                    let sent_kind = match &item["kind"] {
                        Value::String(s) => s.trim().parse::<i64>().ok(),
                        v => v.as_i64(),
                    };
                    prop_assert_eq!(Some(i64::from(it.kind)), sent_kind);
                }
                Err(e) => prop_assert_eq!(field_of(e), format!("items[0].{field}")),
            }
        }
    }
}
