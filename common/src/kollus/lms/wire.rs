//! The LMS document as players send it (SPEC.md sections 3 and 4.3), read with serde derive
//! straight into typed fields: no `serde_json::Value` tree on the way.
//!
//! Players are loose: numbers arrive as strings (`"151"`) or as numbers, text as numbers
//! (`"client_user_id": 42`), empty strings mean "absent", old players omit fields added since
//! 2014, and the block map is flat (`b0`, `t0`, `p0`, `b1`, ...). The adapters of
//! `kollus::loose` (shared with the play and DRM callbacks and the catalog) accept all of that and
//! nothing else; every refusal names the field (`content_info.playtime`, `block_info.blocks.t3`,
//! `block_info.sessions[1].play_time`).
//!
//! Errors are rare, so the fast pass deserializes without tracking where it is; only a document
//! that fails is read a second time through `serde_path_to_error` to name the failing field.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_with::{serde_as, DeserializeAs};

use crate::kollus::loose::{no_nul, OptText, OptWhole, Text, Whole, WholeSeed};

use super::report::{
    Block, Blocks, LmsContent, LmsReport, LmsUser, Segment, MAX_BLOCKS, MAX_SEGMENTS,
};
use crate::domain::{ClientUserId, IdError, MediaContentKey, UnixSeconds};
use crate::kollus::callback::PayloadError;

/// The field name a refusal of the whole document carries (the usual form field's name).
const DOCUMENT: &str = "json_data";

/// Parses one LMS document.
pub fn parse(json: &[u8]) -> Result<LmsReport, PayloadError> {
    match serde_json::from_slice::<Document>(json) {
        Ok(doc) => doc.into_report(),
        Err(e) => Err(locate_error(json, e)),
    }
}

/// Reads a failed document again, tracking the path, to say which field failed and why.
fn locate_error(json: &[u8], first: serde_json::Error) -> PayloadError {
    if !first.is_data() {
        return PayloadError::new(DOCUMENT, format!("is not valid JSON: {first}"));
    }
    let de = &mut serde_json::Deserializer::from_slice(json);
    match serde_path_to_error::deserialize::<_, Document>(de) {
        Ok(_) => PayloadError::new(DOCUMENT, format!("is not valid JSON: {first}")),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            describe(&path, e.inner())
        }
    }
}

/// Turns serde's wording into ours: the field's dotted path and a short problem.
fn describe(path: &str, e: &serde_json::Error) -> PayloadError {
    let message = e.to_string();
    // serde_json appends the position; the path says more.
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => &message,
    };
    let join = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    let at = if path.is_empty() { DOCUMENT } else { path };
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        PayloadError::new(join(name), "is required")
    } else if let Some(name) = message
        .strip_prefix("duplicate field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        PayloadError::new(join(name), "is given more than once")
    } else if message.starts_with("invalid type: null") {
        PayloadError::new(at, "is required")
    } else if (message.starts_with("invalid type:") || message.starts_with("invalid length"))
        && (message.ends_with("expected struct")
            || message.contains("expected struct ")
            || message.contains("expected a map"))
    {
        PayloadError::new(at, "must be a JSON object")
    } else if message.starts_with("invalid type:") && message.contains("expected a sequence") {
        PayloadError::new(at, "must be a JSON array")
    } else {
        PayloadError::new(at, message)
    }
}

// ---------------------------------------------------------------------------------------------
// The document's shape
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Document {
    user_info: UserInfo,
    content_info: ContentInfo,
    #[serde(default)]
    block_info: Option<BlockInfo>,
    #[serde(default)]
    uservalues: UserValues,
}

#[serde_as]
#[derive(Deserialize)]
struct UserInfo {
    #[serde_as(as = "Text")]
    client_user_id: String,
    #[serde_as(as = "OptText")]
    #[serde(default)]
    content_provider_key: Option<String>,
    #[serde_as(as = "OptText")]
    #[serde(default)]
    player_id: Option<String>,
    #[serde_as(as = "OptText")]
    #[serde(default)]
    hardware_id: Option<String>,
    #[serde_as(as = "OptText")]
    #[serde(default)]
    host_name: Option<String>,
    #[serde_as(as = "OptText")]
    #[serde(default)]
    device: Option<String>,
    #[serde_as(as = "OptText")]
    #[serde(default)]
    device_name: Option<String>,
    #[serde_as(as = "OptText")]
    #[serde(default)]
    os: Option<String>,
    #[serde_as(as = "OptText")]
    #[serde(default)]
    version: Option<String>,
}

#[serde_as]
#[derive(Deserialize)]
struct ContentInfo {
    #[serde_as(as = "Text")]
    media_content_key: String,
    #[serde_as(as = "Whole")]
    start_at: u64,
    #[serde_as(as = "OptText")]
    #[serde(default)]
    channel_key: Option<String>,
    #[serde_as(as = "OptText")]
    #[serde(default)]
    encoding_profile: Option<String>,
    #[serde_as(as = "OptWhole")]
    #[serde(default)]
    duration: Option<u64>,
    #[serde_as(as = "OptWhole")]
    #[serde(default)]
    playtime: Option<u64>,
    #[serde_as(as = "OptWhole")]
    #[serde(default)]
    real_playtime: Option<u64>,
    #[serde_as(as = "OptWhole")]
    #[serde(default)]
    playtime_percent: Option<u64>,
    #[serde_as(as = "OptWhole")]
    #[serde(default)]
    last_play_at: Option<u64>,
    #[serde_as(as = "OptWhole")]
    #[serde(default)]
    runtime: Option<u64>,
    #[serde_as(as = "OptWhole")]
    #[serde(default)]
    showtime: Option<u64>,
    #[serde_as(as = "OptWhole")]
    #[serde(default)]
    serial: Option<u64>,
}

#[serde_as]
#[derive(Deserialize)]
struct BlockInfo {
    #[serde_as(as = "OptWhole")]
    #[serde(default)]
    block_count: Option<u64>,
    #[serde(default)]
    blocks: Option<BlockMap>,
    #[serde(default)]
    sessions: Option<Vec<WireSegment>>,
}

#[serde_as]
#[derive(Deserialize)]
struct WireSegment {
    #[serde_as(as = "Whole")]
    block: u64,
    #[serde_as(as = "Whole")]
    start_time: u64,
    #[serde_as(as = "Whole")]
    play_time: u64,
}

impl Document {
    fn into_report(self) -> Result<LmsReport, PayloadError> {
        let u = self.user_info;
        let c = self.content_info;
        let (blocks, segments) = match self.block_info {
            None => (None, Vec::new()),
            Some(info) => info.into_parts()?,
        };
        Ok(LmsReport {
            user: LmsUser {
                client_user_id: id(
                    "user_info.client_user_id",
                    ClientUserId::parse(u.client_user_id),
                )?,
                content_provider_key: u.content_provider_key,
                player_id: u.player_id,
                hardware_id: u.hardware_id,
                host_name: u.host_name,
                device: u.device.or(u.device_name),
                os: u.os,
                version: u.version,
            },
            content: LmsContent {
                media_content_key: id(
                    "content_info.media_content_key",
                    MediaContentKey::parse(c.media_content_key),
                )?,
                start_at: UnixSeconds(
                    i64::try_from(c.start_at).map_err(|_| {
                        PayloadError::new("content_info.start_at", "is out of range")
                    })?,
                ),
                channel_key: c.channel_key,
                encoding_profile: c.encoding_profile,
                duration: c.duration,
                playtime: c.playtime,
                real_playtime: c.real_playtime,
                playtime_percent: c.playtime_percent,
                last_play_at: c.last_play_at,
                runtime: c.runtime,
                showtime: c.showtime,
                serial: c.serial,
            },
            blocks,
            segments,
            uservalues: self.uservalues.0,
            play_status: None,
        })
    }
}

/// An identifier's refusal, named; an empty one is simply missing.
fn id<T>(field: &str, parsed: Result<T, IdError>) -> Result<T, PayloadError> {
    parsed.map_err(|e| match e {
        IdError::Empty => PayloadError::new(field, "is required"),
        e => PayloadError::new(field, e.to_string()),
    })
}

impl BlockInfo {
    fn into_parts(self) -> Result<(Option<Blocks>, Vec<Segment>), PayloadError> {
        let segments = match self.sessions {
            None => Vec::new(),
            Some(list) if list.len() > MAX_SEGMENTS => {
                return Err(PayloadError::new(
                    "block_info.sessions",
                    format!(
                        "has {} segments, over the limit of {MAX_SEGMENTS}",
                        list.len()
                    ),
                ))
            }
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    Ok(Segment {
                        block: u32::try_from(s.block).map_err(|_| {
                            PayloadError::new(
                                format!("block_info.sessions[{i}].block"),
                                "is out of range",
                            )
                        })?,
                        start_time: s.start_time,
                        play_time: s.play_time,
                    })
                })
                .collect::<Result<_, PayloadError>>()?,
        };
        let map = self.blocks.unwrap_or_default();
        let blocks = match self.block_count {
            // Blocks disabled on the channel, or an old player: no block information.
            None if map.is_empty() => None,
            None => {
                return Err(PayloadError::new(
                    "block_info.block_count",
                    "is required when blocks are given",
                ))
            }
            Some(count) if count > u64::from(MAX_BLOCKS) => {
                return Err(PayloadError::new(
                    "block_info.block_count",
                    format!("{count} is over the limit of {MAX_BLOCKS}"),
                ))
            }
            // A count without the map says nothing about which blocks were played.
            Some(count) if count > 0 && map.given.is_empty() && map.items.is_empty() => None,
            Some(count) => Some(map.into_blocks(count as u32)?),
        };
        Ok((blocks, segments))
    }
}

// ---------------------------------------------------------------------------------------------
// The flat block map: `b{i}` (0 or 1), `t{i}` (seconds), `p{i}` (percent)
// ---------------------------------------------------------------------------------------------

/// Which of `b`, `t` and `p` a block index was given with.
const B: u8 = 1;
const T: u8 = 2;
const P: u8 = 4;

/// `block_info.blocks`, filled straight from its keys: no intermediate map.
#[derive(Default)]
struct BlockMap {
    items: Vec<Block>,
    /// Per index, the letters given (`B | T | P`).
    given: Vec<u8>,
    /// The first key or value refused, with why (the key is only formatted on this path).
    refused: Option<(String, String)>,
}

impl BlockMap {
    fn is_empty(&self) -> bool {
        self.given.is_empty() && self.refused.is_none()
    }

    fn into_blocks(self, count: u32) -> Result<Blocks, PayloadError> {
        let field = |name: String| format!("block_info.blocks.{name}");
        if let Some((name, problem)) = self.refused {
            return Err(PayloadError::new(field(name), problem));
        }
        if let Some((index, letters)) = self
            .given
            .iter()
            .enumerate()
            .skip(count as usize)
            .find(|(_, l)| **l != 0)
        {
            return Err(PayloadError::new(
                field(format!("{}{index}", first_letter(*letters))),
                format!("names block {index} but block_count is {count}"),
            ));
        }
        if let Some(missing) =
            (0..count as usize).find(|i| self.given.get(*i).is_none_or(|l| l & B == 0))
        {
            return Err(PayloadError::new(
                field(format!("b{missing}")),
                format!("is missing but block_count is {count}"),
            ));
        }
        let mut items = self.items;
        items.truncate(count as usize);
        Ok(Blocks { count, items })
    }
}

fn first_letter(letters: u8) -> char {
    if letters & B != 0 {
        'b'
    } else if letters & T != 0 {
        't'
    } else {
        'p'
    }
}

impl<'de> Deserialize<'de> for BlockMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BlockMapVisitor)
    }
}

struct BlockMapVisitor;

impl<'de> Visitor<'de> for BlockMapVisitor {
    type Value = BlockMap;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    /// Some players encode "no blocks" as an empty array or string.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BlockMap, A::Error> {
        match seq.next_element::<IgnoredAny>()? {
            None => Ok(BlockMap::default()),
            Some(_) => Err(de::Error::custom("must be a JSON object")),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<BlockMap, E> {
        if v.is_empty() {
            Ok(BlockMap::default())
        } else {
            Err(E::custom("must be a JSON object"))
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BlockMap, A::Error> {
        let mut out = BlockMap::default();
        while let Some(key) = map.next_key_seed(BlockKeySeed)? {
            let (letter, index) = match key {
                BlockKey::Field(letter, index) if index < MAX_BLOCKS => (letter, index as usize),
                BlockKey::Field(letter, index) => {
                    out.refused.get_or_insert_with(|| {
                        (
                            format!("{}{index}", letter as char),
                            format!("names block {index}, over the limit of {MAX_BLOCKS}"),
                        )
                    });
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                BlockKey::Other(name) => {
                    out.refused.get_or_insert_with(|| {
                        (name, "is not a block field (b<i>, t<i> or p<i>)".into())
                    });
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value = map.next_value_seed(WholeSeed)?;
            if out.items.len() <= index {
                out.items.resize(index + 1, Block::default());
                out.given.resize(index + 1, 0);
            }
            let block = &mut out.items[index];
            match letter {
                b'b' if value <= 1 => {
                    block.played = value == 1;
                    out.given[index] |= B;
                }
                b'b' => {
                    out.refused
                        .get_or_insert_with(|| (format!("b{index}"), "must be 0 or 1".into()));
                }
                b't' => {
                    block.seconds = value;
                    out.given[index] |= T;
                }
                _ => {
                    block.percent = value;
                    out.given[index] |= P;
                }
            }
        }
        Ok(out)
    }
}

enum BlockKey {
    /// `b`, `t` or `p`, and the block index.
    Field(u8, u32),
    Other(String),
}

/// Reads a block map key without allocating (the common case).
struct BlockKeySeed;

impl<'de> DeserializeSeed<'de> for BlockKeySeed {
    type Value = BlockKey;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<BlockKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for BlockKeySeed {
    type Value = BlockKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a block field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<BlockKey, E> {
        let bytes = v.as_bytes();
        let parsed = match bytes.first() {
            Some(letter @ (b'b' | b't' | b'p'))
                if bytes.len() > 1 && bytes[1..].iter().all(u8::is_ascii_digit) =>
            {
                // Longer than any index below the limit: over it.
                v[1..]
                    .parse::<u32>()
                    .ok()
                    .or(Some(u32::MAX))
                    .map(|i| BlockKey::Field(*letter, i))
            }
            _ => None,
        };
        Ok(parsed.unwrap_or_else(|| BlockKey::Other(v.to_owned())))
    }
}

/// `uservalues`: an object of text values. `null`, `""` and `[]` (an empty PHP array) are empty.
#[derive(Default)]
struct UserValues(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for UserValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UserValuesVisitor)
    }
}

struct UserValuesVisitor;

impl<'de> Visitor<'de> for UserValuesVisitor {
    type Value = UserValues;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_unit<E: de::Error>(self) -> Result<UserValues, E> {
        Ok(UserValues::default())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<UserValues, E> {
        if v.is_empty() {
            Ok(UserValues::default())
        } else {
            Err(E::custom("must be a JSON object"))
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UserValues, A::Error> {
        match seq.next_element::<IgnoredAny>()? {
            None => Ok(UserValues::default()),
            Some(_) => Err(de::Error::custom("must be a JSON object")),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UserValues, A::Error> {
        let mut values = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            no_nul(&key)?;
            if let Some(v) = map.next_value_seed(OptTextSeed)? {
                values.insert(key, v);
            }
        }
        Ok(UserValues(values))
    }
}

struct OptTextSeed;

impl<'de> DeserializeSeed<'de> for OptTextSeed {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        OptText::deserialize_as(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kollus::fixture;

    #[test]
    fn seed_document() {
        let r = parse(&fixture("lms-seed.json")).unwrap();
        assert_eq!(r.user.client_user_id.as_str(), "181353");
        assert_eq!(r.content.media_content_key.as_str(), "mediacontentkey");
        assert_eq!(r.content.start_at, UnixSeconds(1_593_586_044));
        assert_eq!(r.content.playtime, Some(151));
        assert_eq!(r.content.runtime, Some(2245));
        assert_eq!(r.content.last_play_at, Some(1225));
        assert_eq!(r.content.serial, Some(16));
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
        assert!(r.segments.is_empty());
    }

    #[test]
    fn numbers_may_be_numbers() {
        let r = parse(
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

    #[test]
    fn segments_are_numbers_and_blocks_may_be_empty() {
        let r = parse(
            r#"{"user_info":{"client_user_id":"kim@example.com","device":"starqltesq/SM-G960U"},
                "content_info":{"media_content_key":"m1","start_at":"1700000000"},
                "block_info":{"block_count":"0","blocks":{},"sessions":[
                    {"block":21,"start_time":0,"play_time":3},{"block":"22","start_time":5,"play_time":48}]},
                "uservalues":{"uservalue0":"강의 & a=b","uservalue1":7}}"#
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.user.client_user_id.as_str(), "kim@example.com");
        assert_eq!(r.user.device.as_deref(), Some("starqltesq/SM-G960U"));
        assert_eq!(
            r.blocks,
            Some(Blocks {
                count: 0,
                items: vec![]
            })
        );
        assert_eq!(
            r.segments,
            [
                Segment {
                    block: 21,
                    start_time: 0,
                    play_time: 3
                },
                Segment {
                    block: 22,
                    start_time: 5,
                    play_time: 48
                }
            ]
        );
        assert_eq!(r.uservalues["uservalue0"], "강의 & a=b");
        assert_eq!(r.uservalues["uservalue1"], "7");
    }

    #[test]
    fn old_players_omit_fields_and_some_name_the_device_device_name() {
        let r = parse(
            br#"{"user_info":{"client_user_id":"u","device_name":"iPad"},
                "content_info":{"media_content_key":"m","start_at":"1","playtime":"5","duration":""},
                "block_info":{"block_count":"3"},"uservalues":[]}"#,
        )
        .unwrap();
        assert_eq!(r.user.device.as_deref(), Some("iPad"));
        assert_eq!(r.content.duration, None);
        assert_eq!(r.content.real_playtime, None);
        assert_eq!(r.blocks, None, "a count without the map says nothing");
        assert!(r.uservalues.is_empty());
    }

    fn err(json: &str) -> PayloadError {
        parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn ids_of_dots_only_are_refused_naming_the_field() {
        // Refused, a report goes back as a 400 and to the dead-letter topic with this reason
        // (ingest), as any malformed id does: a `..` would make links point elsewhere.
        let dots = IdError::DotsOnly.to_string();
        assert_eq!(
            err(
                r#"{"user_info":{"client_user_id":".."},"content_info":{"media_content_key":"m","start_at":1}}"#
            ),
            PayloadError::new("user_info.client_user_id", dots.clone())
        );
        assert_eq!(
            err(
                r#"{"user_info":{"client_user_id":"u"},"content_info":{"media_content_key":"...","start_at":1}}"#
            ),
            PayloadError::new("content_info.media_content_key", dots)
        );
    }

    #[test]
    fn bad_reports_name_the_field() {
        let base = r#""user_info":{"client_user_id":"u"},"content_info":{"media_content_key":"m","start_at":"1""#;
        assert_eq!(err("{").field, "json_data");
        assert!(err("{").problem.starts_with("is not valid JSON"));
        assert_eq!(err("[]").field, "json_data");
        assert_eq!(err("[]").problem, "must be a JSON object");
        assert_eq!(
            err(r#"{"content_info":{"media_content_key":"m","start_at":1}}"#),
            PayloadError::new("user_info", "is required")
        );
        assert_eq!(
            err(
                r#"{"user_info":{"client_user_id":""},"content_info":{"media_content_key":"m","start_at":1}}"#
            ),
            PayloadError::new("user_info.client_user_id", "is required")
        );
        assert_eq!(
            err(r#"{"user_info":{"client_user_id":"u"},"content_info":{"media_content_key":"m"}}"#),
            PayloadError::new("content_info.start_at", "is required")
        );
        assert_eq!(
            err(&format!("{{{base},\"playtime\":\"-5\"}}}}")),
            PayloadError::new("content_info.playtime", "must not be negative")
        );
        assert_eq!(
            err(&format!("{{{base},\"playtime\":\"abc\"}}}}")).field,
            "content_info.playtime"
        );
        assert_eq!(
            err(&format!("{{{base},\"runtime\":1.5}}}}")),
            PayloadError::new("content_info.runtime", "must be a whole number")
        );
        assert_eq!(
            err(&format!("{{{base},\"runtime\":99999999999999999999}}}}")),
            PayloadError::new("content_info.runtime", "is out of range")
        );
        assert_eq!(
            err(&format!("{{{base}}},\"block_info\":{{\"block_count\":\"2\",\"blocks\":{{\"b0\":\"1\",\"b1\":\"0\",\"b2\":\"1\"}}}}}}")),
            PayloadError::new("block_info.blocks.b2", "names block 2 but block_count is 2")
        );
        assert_eq!(
            err(&format!(
                "{{{base}}},\"block_info\":{{\"block_count\":\"2\",\"blocks\":{{\"b0\":\"1\"}}}}}}"
            )),
            PayloadError::new("block_info.blocks.b1", "is missing but block_count is 2")
        );
        assert_eq!(
            err(&format!(
                "{{{base}}},\"block_info\":{{\"block_count\":\"99999\"}}}}"
            ))
            .field,
            "block_info.block_count"
        );
        assert_eq!(
            err(&format!(
                "{{{base}}},\"block_info\":{{\"block_count\":\"1\",\"blocks\":{{\"b0\":\"1\",\"t0\":\"x\"}}}}}}"
            ))
            .field,
            "block_info.blocks.t0"
        );
        assert_eq!(
            err(&format!(
                "{{{base}}},\"block_info\":{{\"block_count\":\"1\",\"blocks\":{{\"b0\":\"2\"}}}}}}"
            )),
            PayloadError::new("block_info.blocks.b0", "must be 0 or 1")
        );
        assert_eq!(
            err(&format!(
                "{{{base}}},\"block_info\":{{\"block_count\":\"1\",\"blocks\":{{\"b0\":\"1\",\"x0\":\"1\"}}}}}}"
            ))
            .field,
            "block_info.blocks.x0"
        );
        assert_eq!(
            err(&format!(
                "{{{base}}},\"block_info\":{{\"sessions\":[{{\"block\":1,\"start_time\":0,\"play_time\":3}},{{\"block\":1,\"start_time\":0}}]}}}}"
            )),
            PayloadError::new("block_info.sessions[1].play_time", "is required")
        );
        assert_eq!(
            err(&format!(
                "{{{base}}},\"uservalues\":{{\"uservalue0\":{{}}}}}}"
            ))
            .field,
            "uservalues.uservalue0"
        );
        assert_eq!(err(&format!("{{{base}}}}} trailing")).field, "json_data");
    }
}
