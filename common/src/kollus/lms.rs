//! LMS progress callbacks (SPEC.md section 3), posted by viewers' players: untrusted input.
//!
//! The wire format is loose (numbers as strings or numbers, `json_data` form field or a JSON
//! body); [`LmsReport`] is the strict form the rest of the pipeline sees, serialized with numbers
//! as numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::form::parse_form;
use super::PayloadError;
use crate::domain::{ClientUserId, MediaContentKey, UnixSeconds};

/// Most blocks a report may describe. A hard ceiling against memory abuse; the history worker
/// applies its own, lower, configurable cap.
pub const MAX_BLOCKS: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmsReport {
    pub user: LmsUser,
    pub content: LmsContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Blocks>,
    /// `uservalueN` values from the player URL, as the player echoed them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uservalues: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmsUser {
    pub client_user_id: ClientUserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_provider_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `content_info`. Counters are cumulative within one player session (`start_at`).
/// Durations and positions are whole seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmsContent {
    pub media_content_key: MediaContentKey,
    /// Unix time of the Video Gateway call: the same for every report of one player session.
    pub start_at: UnixSeconds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playtime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_playtime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playtime_percent: Option<u64>,
    /// Last playback *position*, not a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_play_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub showtime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
}

/// `block_info`: the video split into `count` equal blocks; `items.len() == count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocks {
    pub count: u32,
    pub items: Vec<Block>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// `b{i}`: any of the block was played.
    pub played: bool,
    /// `t{i}`: seconds played in the block.
    pub seconds: u64,
    /// `p{i}`: percent of the block played.
    pub percent: u64,
}

impl Blocks {
    pub fn watched(&self) -> usize {
        self.items.iter().filter(|b| b.played).count()
    }
}

impl LmsReport {
    /// Parses a request body: a form with a `json_data` field, or the JSON document itself.
    pub fn from_body(body: &[u8], is_json_body: bool) -> Result<Self, PayloadError> {
        if is_json_body {
            return Self::from_json(body);
        }
        let mut form = parse_form(body)?;
        let json = form
            .remove("json_data")
            .ok_or_else(|| PayloadError::new("json_data", "is required"))?;
        Self::from_json(json.as_bytes())
    }

    pub fn from_json(json: &[u8]) -> Result<Self, PayloadError> {
        let doc: Value = serde_json::from_slice(json)
            .map_err(|e| PayloadError::new("json_data", format!("is not valid JSON: {e}")))?;
        let root = object(&doc, "json_data")?;
        let user = object(required(root, "user_info", "")?, "user_info")?;
        let content = object(required(root, "content_info", "")?, "content_info")?;
        let blocks = match root.get("block_info") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_blocks(object(v, "block_info")?)?),
        };
        let uservalues = match root.get("uservalues") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => object(v, "uservalues")?
                .iter()
                .map(|(k, v)| Ok((k.clone(), text(v, Path("uservalues", k))?)))
                .collect::<Result<_, PayloadError>>()?,
        };
        let s = |name: &str| opt_text(user, "user_info", name);
        let n = |name: &str| opt_number(content, "content_info", name);
        Ok(LmsReport {
            user: LmsUser {
                client_user_id: ClientUserId::parse(text(
                    required(user, "client_user_id", "user_info")?,
                    "user_info.client_user_id",
                )?)
                .map_err(|e| PayloadError::new("user_info.client_user_id", e.to_string()))?,
                content_provider_key: s("content_provider_key")?,
                player_id: s("player_id")?,
                hardware_id: s("hardware_id")?,
                host_name: s("host_name")?,
                device: s("device")?,
                os: s("os")?,
                version: s("version")?,
            },
            content: LmsContent {
                media_content_key: MediaContentKey::parse(text(
                    required(content, "media_content_key", "content_info")?,
                    "content_info.media_content_key",
                )?)
                .map_err(|e| PayloadError::new("content_info.media_content_key", e.to_string()))?,
                start_at: UnixSeconds(
                    i64::try_from(number(
                        required(content, "start_at", "content_info")?,
                        "content_info.start_at",
                    )?)
                    .map_err(|_| PayloadError::new("content_info.start_at", "is out of range"))?,
                ),
                channel_key: opt_text(content, "content_info", "channel_key")?,
                encoding_profile: opt_text(content, "content_info", "encoding_profile")?,
                duration: n("duration")?,
                playtime: n("playtime")?,
                real_playtime: n("real_playtime")?,
                playtime_percent: n("playtime_percent")?,
                last_play_at: n("last_play_at")?,
                runtime: n("runtime")?,
                showtime: n("showtime")?,
                serial: n("serial")?,
            },
            blocks,
            uservalues,
        })
    }

    /// The Kafka key: one viewer's reports on one video stay in order.
    /// U+001F (unit separator) cannot occur in either part.
    pub fn partition_key(&self) -> String {
        format!(
            "{}\u{1f}{}",
            self.user.client_user_id, self.content.media_content_key
        )
    }
}

fn parse_blocks(info: &Map<String, Value>) -> Result<Blocks, PayloadError> {
    let count = number(
        required(info, "block_count", "block_info")?,
        "block_info.block_count",
    )?;
    if count > u64::from(MAX_BLOCKS) {
        return Err(PayloadError::new(
            "block_info.block_count",
            format!("{count} is over the limit of {MAX_BLOCKS}"),
        ));
    }
    let count = count as u32;
    let mut items = vec![Block::default(); count as usize];
    let mut seen = vec![false; count as usize];
    let entries = match info.get("blocks") {
        None | Some(Value::Null) => &Map::new(),
        Some(v) => object(v, "block_info.blocks")?,
    };
    for (name, value) in entries {
        let field = Path("block_info.blocks", name);
        let (letter, index) = name.split_at(name.len().min(1));
        let index: u32 = index.parse().map_err(|_| {
            PayloadError::new(field.name(), "is not a block field (b<i>, t<i> or p<i>)")
        })?;
        if index >= count {
            return Err(PayloadError::new(
                field.name(),
                format!("names block {index} but block_count is {count}"),
            ));
        }
        let block = &mut items[index as usize];
        let v = number(value, Path("block_info.blocks", name))?;
        match letter {
            "b" if v <= 1 => {
                block.played = v == 1;
                seen[index as usize] = true;
            }
            "b" => return Err(PayloadError::new(field.name(), "must be 0 or 1")),
            "t" => block.seconds = v,
            "p" => block.percent = v,
            _ => {
                return Err(PayloadError::new(
                    field.name(),
                    "is not a block field (b<i>, t<i> or p<i>)",
                ))
            }
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(PayloadError::new(
            format!("block_info.blocks.b{missing}"),
            format!("is missing but block_count is {count}"),
        ));
    }
    Ok(Blocks { count, items })
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, PayloadError> {
    v.as_object()
        .ok_or_else(|| PayloadError::new(field, "must be a JSON object"))
}

fn required<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    parent: &str,
) -> Result<&'a Value, PayloadError> {
    let field = || {
        if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    match obj.get(name) {
        None | Some(Value::Null) => Err(PayloadError::new(field(), "is required")),
        Some(Value::String(s)) if s.is_empty() => Err(PayloadError::new(field(), "is required")),
        Some(v) => Ok(v),
    }
}

/// A string field; numbers are accepted and kept as their text.
fn text(v: &Value, field: impl FieldName) -> Result<String, PayloadError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(PayloadError::new(field.name(), "must be a string")),
    }
}

fn opt_text(
    obj: &Map<String, Value>,
    parent: &str,
    name: &str,
) -> Result<Option<String>, PayloadError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(text(v, Path(parent, name))?).filter(|s| !s.is_empty())),
    }
}

/// A field's dotted path, built only when an error needs it (the success path allocates none).
trait FieldName {
    fn name(&self) -> String;
}

impl FieldName for &str {
    fn name(&self) -> String {
        (*self).to_owned()
    }
}

impl FieldName for String {
    fn name(&self) -> String {
        self.clone()
    }
}

/// `parent.child`, formatted on demand.
struct Path<'a>(&'a str, &'a str);

impl FieldName for Path<'_> {
    fn name(&self) -> String {
        format!("{}.{}", self.0, self.1)
    }
}

/// A whole, non-negative number given as a JSON number or as a string of digits.
fn number(v: &Value, field: impl FieldName) -> Result<u64, PayloadError> {
    let bad = |what: &str| PayloadError::new(field.name(), what.to_owned());
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            if n.as_i64().is_some_and(|i| i < 0) {
                bad("must not be negative")
            } else if n.is_f64() {
                bad("must be a whole number")
            } else {
                bad("is out of range")
            }
        }),
        Value::String(s) => {
            let s = s.trim();
            if s.starts_with('-') {
                Err(bad("must not be negative"))
            } else if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                Err(PayloadError::new(
                    field.name(),
                    format!("must be a whole number, got {s:?}"),
                ))
            } else {
                s.parse().map_err(|_| bad("is out of range"))
            }
        }
        _ => Err(bad("must be a number")),
    }
}

fn opt_number(
    obj: &Map<String, Value>,
    parent: &str,
    name: &str,
) -> Result<Option<u64>, PayloadError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => number(v, Path(parent, name)).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../shared/kollus/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn seed_form_and_seed_json_agree() {
        let mut form = fixture("lms-seed.form");
        while form.last().is_some_and(u8::is_ascii_whitespace) {
            form.pop();
        }
        let from_form = LmsReport::from_body(&form, false).unwrap();
        let from_json = LmsReport::from_body(&fixture("lms-seed.json"), true).unwrap();
        assert_eq!(from_form, from_json);

        let r = from_form;
        assert_eq!(r.user.client_user_id.as_str(), "181353");
        assert_eq!(r.content.media_content_key.as_str(), "mediacontentkey");
        assert_eq!(r.content.start_at, UnixSeconds(1_593_586_044));
        assert_eq!(r.content.playtime, Some(151));
        assert_eq!(r.content.runtime, Some(2245));
        assert_eq!(r.content.last_play_at, Some(1225));
        let blocks = r.blocks.unwrap();
        assert_eq!(blocks.count, 30);
        assert_eq!(blocks.watched(), 5);
        assert_eq!(
            blocks.items[22],
            Block {
                played: true,
                seconds: 48,
                percent: 100
            }
        );
    }

    #[test]
    fn numbers_may_be_numbers() {
        let r = LmsReport::from_json(
            br#"{"user_info":{"client_user_id":42},"content_info":{"media_content_key":"m1",
                "start_at":1700000000,"playtime":40,"real_playtime":20,"runtime":30,"showtime":20}}"#,
        )
        .unwrap();
        assert_eq!(r.user.client_user_id.as_str(), "42");
        assert_eq!(
            (
                r.content.playtime,
                r.content.real_playtime,
                r.content.runtime,
                r.content.showtime
            ),
            (Some(40), Some(20), Some(30), Some(20))
        );
        assert_eq!(r.blocks, None);
    }

    fn err(json: &str) -> PayloadError {
        LmsReport::from_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn bad_reports_name_the_field() {
        let base = r#""user_info":{"client_user_id":"u"},"content_info":{"media_content_key":"m","start_at":"1""#;
        assert_eq!(err("{").field, "json_data");
        assert_eq!(err("[]").field, "json_data");
        assert_eq!(err(r#"{"content_info":{}}"#).field, "user_info");
        assert_eq!(
            err(&format!("{{{base},\"playtime\":\"-5\"}}}}")).problem,
            "must not be negative"
        );
        assert_eq!(
            err(&format!("{{{base},\"playtime\":\"abc\"}}}}")).field,
            "content_info.playtime"
        );
        assert_eq!(
            err(&format!("{{{base},\"runtime\":1.5}}}}")).problem,
            "must be a whole number"
        );
        assert_eq!(
            err(&format!("{{{base},\"runtime\":99999999999999999999}}}}")).field,
            "content_info.runtime"
        );
        assert_eq!(
            err(&format!("{{{base}}},\"block_info\":{{\"block_count\":\"2\",\"blocks\":{{\"b0\":\"1\",\"b1\":\"0\",\"b2\":\"1\"}}}}}}")).field,
            "block_info.blocks.b2"
        );
        assert_eq!(
            err(&format!(
                "{{{base}}},\"block_info\":{{\"block_count\":\"2\",\"blocks\":{{\"b0\":\"1\"}}}}}}"
            ))
            .field,
            "block_info.blocks.b1"
        );
        assert_eq!(
            err(&format!(
                "{{{base}}},\"block_info\":{{\"block_count\":\"99999\"}}}}"
            ))
            .field,
            "block_info.block_count"
        );
    }

    #[test]
    fn form_without_json_data_is_refused() {
        assert_eq!(
            LmsReport::from_body(b"other=1", false).unwrap_err().field,
            "json_data"
        );
    }

    #[test]
    fn partition_key_separates_user_and_video() {
        let r = LmsReport::from_json(
            br#"{"user_info":{"client_user_id":"a"},"content_info":{"media_content_key":"bc","start_at":"1"}}"#,
        )
        .unwrap();
        assert_eq!(r.partition_key(), "a\u{1f}bc");
    }
}
