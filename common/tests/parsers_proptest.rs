//! Property tests for the edge parsers: whatever a player or Kollus sends, parsing returns a
//! value or an error naming a field, and never panics; valid input survives exactly; and the
//! fixtures with any one field (or node of an LMS document) made hostile are kept with that
//! value where it belongs, or refused naming that very field.

use kollus_common::kollus::form::{self, parse_form};
use kollus_common::kollus::lms::checksum;
use kollus_common::kollus::lms::request::{self, locate};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::platform::ContentEvent;
use kollus_common::kollus::CallbackKind;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_input_panics_the_parsers(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for kind in CallbackKind::ALL {
            let _ = ContentEvent::from_form(kind, &body);
        }
        let names = vec!["json_data".to_owned()];
        let _ = locate(&names, &Default::default(), &body, true);
        let _ = locate(&names, &Default::default(), &body, false);
        let _ = LmsReport::from_json(&body);
        let _ = checksum::verify(&body, b"key");
        let _ = parse_form(&body);
    }

    #[test]
    fn almost_valid_json_never_panics(
        cuid in ".{0,20}",
        mck in "[a-zA-Z0-9 /_-]{0,12}",
        start in any::<i64>(),
        n in any::<i64>(),
        count in 0u64..50,
        block in any::<i64>(),
    ) {
        let doc = serde_json::json!({
            "user_info": {"client_user_id": cuid},
            "content_info": {"media_content_key": mck, "start_at": start.to_string(), "playtime": n},
            "block_info": {"block_count": count.to_string(), "blocks": {"b0": block, "t0": n.to_string()}},
        });
        if let Err(e) = LmsReport::from_json(doc.to_string().as_bytes()) {
            prop_assert!(!e.field.is_empty());
        }
    }

    #[test]
    fn valid_reports_parse_exactly_whatever_the_number_format(
        counters in proptest::array::uniform6(0u64..10_000_000),
        as_strings in any::<bool>(),
        played in proptest::collection::vec(any::<bool>(), 0..40),
        segments in proptest::collection::vec((0u32..40, 0u64..100, 0u64..100), 0..10),
        field in "[a-z_]{1,10}",
        in_query in any::<bool>(),
    ) {
        let num = |v: u64| if as_strings { serde_json::json!(v.to_string()) } else { serde_json::json!(v) };
        let mut blocks = serde_json::Map::new();
        for (i, p) in played.iter().enumerate() {
            blocks.insert(format!("b{i}"), num(u64::from(*p)));
            blocks.insert(format!("t{i}"), num(i as u64));
            blocks.insert(format!("p{i}"), num(100));
        }
        let [playtime, real, runtime, showtime, position, start] = counters;
        let doc = serde_json::json!({
            "user_info": {"client_user_id": "u1"},
            "content_info": {"media_content_key": "m1", "start_at": num(start), "playtime": num(playtime),
                "real_playtime": num(real), "runtime": num(runtime), "showtime": num(showtime),
                "last_play_at": num(position)},
            "block_info": {"block_count": num(played.len() as u64), "blocks": blocks,
                "sessions": segments.iter().map(|(b, s, p)| serde_json::json!({"block": b, "start_time": s, "play_time": p})).collect::<Vec<_>>()},
        });
        let r = LmsReport::from_json(doc.to_string().as_bytes()).unwrap();
        prop_assert_eq!(r.segments.iter().map(|s| (s.block, s.start_time, s.play_time)).collect::<Vec<_>>(), segments);
        // The strict form on Kafka reads back as itself.
        let strict: LmsReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        prop_assert_eq!(&strict, &r);
        // Wherever a template puts the document, under whatever name, it is found.
        let pairs = [(field.as_str(), doc.to_string()), ("flat_field", "1".to_owned())];
        let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs.iter()).finish();
        let query: std::collections::BTreeMap<String, String> = if in_query {
            pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
        } else {
            Default::default()
        };
        let body = if in_query { "" } else { encoded.as_str() };
        let located = locate(&[], &query, body.as_bytes(), false).unwrap();
        prop_assert_eq!(&located.report, &r);
        prop_assert_eq!(r.content.start_at.0, start as i64);
        prop_assert_eq!((r.content.playtime, r.content.real_playtime, r.content.runtime, r.content.showtime, r.content.last_play_at),
            (Some(playtime), Some(real), Some(runtime), Some(showtime), Some(position)));
        let b = r.blocks.unwrap();
        prop_assert_eq!(b.items.iter().map(|b| b.played).collect::<Vec<_>>(), played);
    }

    #[test]
    fn a_nul_anywhere_in_a_form_value_is_refused_and_named(
        before in "[a-z]{0,10}",
        after in "[a-z]{0,10}",
    ) {
        let body = format!("f={before}%00{after}");
        let e = parse_form(body.as_bytes()).unwrap_err();
        prop_assert_eq!((e.field.as_str(), e.problem.as_str()), ("f", "contains a NUL character"));
    }

    #[test]
    fn a_signed_body_verifies_and_any_change_to_it_does_not(
        fields in proptest::collection::btree_map("[a-z_]{1,12}", ".{0,30}", 1..8),
        key in "[a-zA-Z0-9-]{1,40}",
        flip in any::<prop::sample::Index>(),
    ) {
        let signed = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
        let hash = checksum::expected_hash(signed.as_bytes(), key.as_bytes());
        let body = format!("{signed}&hash={hash}");
        prop_assert_eq!(checksum::verify(body.as_bytes(), key.as_bytes()), checksum::HashVerdict::Verified);
        let mut changed = signed.into_bytes();
        let i = flip.index(changed.len());
        changed[i] = if changed[i] == b'x' { b'y' } else { b'x' };
        let changed = format!("{}&hash={hash}", String::from_utf8_lossy(&changed));
        // Only an encoding that decodes to the same text could keep the hash (e.g. '+' for ' ').
        if changed != body {
            let verdict = checksum::verify(changed.as_bytes(), key.as_bytes());
            prop_assert!(verdict == checksum::HashVerdict::Mismatch || verdict == checksum::HashVerdict::Verified && decodes_equal(&changed, &body));
        }
    }

    #[test]
    fn encoded_forms_decode_to_their_fields(
        // Any text but U+0000, which the parser refuses (PostgreSQL cannot store it).
        fields in proptest::collection::btree_map("[a-z_]{1,12}", "[^\\x00]{0,30}", 0..12),
    ) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter())
            .finish();
        prop_assert_eq!(parse_form(body.as_bytes()).unwrap(), fields);
    }
}

fn decodes_equal(a: &str, b: &str) -> bool {
    let d =
        |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).collect::<Vec<u8>>();
    d(a) == d(b)
}

// ---------------------------------------------------------------------------------------------
// Mutations of real callbacks: inputs that get past the first byte
//
// Random bytes are refused at their first `%` or `{`: they never reach a field's own check.
// These start from the fixtures (`fixtures/kollus`, as Kollus sends them), change one field (or
// one node of an LMS document) to a hostile value and leave the rest valid, so the parser must
// read everything else and then either keep the changed value where it belongs or refuse
// naming that very field.
// ---------------------------------------------------------------------------------------------

use kollus_common::kollus::platform::ContentChange;
use kollus_common::kollus::PayloadError;
use serde_json::{json, Value};

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/kollus")
        .join(name);
    let mut body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    while body.last().is_some_and(u8::is_ascii_whitespace) {
        body.pop();
    }
    body
}

/// Every platform fixture with the callback URL it is posted to.
const PLATFORM_FIXTURES: [(&str, CallbackKind); 8] = [
    ("upload.form", CallbackKind::Upload),
    ("transcoding-success.form", CallbackKind::Transcoding),
    ("transcoding-request-id.form", CallbackKind::Transcoding),
    ("channel-join.form", CallbackKind::Channel),
    ("channel-leave.form", CallbackKind::Channel),
    ("channel-join-seed.form", CallbackKind::Channel),
    ("content-delete.form", CallbackKind::ContentUpdate),
    ("content-poster.form", CallbackKind::ContentUpdate),
];

/// A fixture's fields in order, decoded.
fn pairs(body: &[u8]) -> Vec<(String, Vec<u8>)> {
    body.split(|b| *b == b'&')
        .map(|pair| {
            let at = pair.iter().position(|b| *b == b'=').expect("name=value");
            let name = form::decode_bytes(&pair[..at]);
            (
                String::from_utf8(name).unwrap(),
                form::decode_bytes(&pair[at + 1..]),
            )
        })
        .collect()
}

/// The fields encoded again, as a browser or Kollus would (every byte, whatever it is).
fn encode(fields: &[(String, Vec<u8>)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(n, v)| {
            format!(
                "{}={}",
                form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>(),
                form_urlencoded::byte_serialize(v).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// Where a parsed platform callback keeps the field `name` (None: absent).
fn kept(event: &ContentEvent, name: &str) -> Option<String> {
    let (channel_key, channel_name, profile_keys) = match &event.change {
        ContentChange::ChannelJoined { channel } | ContentChange::ChannelLeft { channel } => (
            Some(channel.channel_key.as_str().to_owned()),
            channel.channel_name.clone(),
            Some(channel.profile_keys.clone()),
        ),
        ContentChange::Deleted {
            channel: Some(c), ..
        }
        | ContentChange::PosterChanged {
            channel: Some(c), ..
        } => (
            Some(c.channel_key.as_str().to_owned()),
            c.channel_name.clone(),
            Some(c.profile_keys.clone()),
        ),
        ContentChange::OtherUpdate { channel_key, .. } => (
            channel_key.as_ref().map(|k| k.as_str().to_owned()),
            None,
            None,
        ),
        _ => (None, None, None),
    };
    match name {
        "upload_file_key" => Some(event.upload_file_key.as_str().to_owned()),
        "request_id" => event.request_id.clone(),
        "content_provider_key" => event.content_provider_key.clone(),
        "filename" => event.filename.clone(),
        "full_filename" => event.full_filename.clone(),
        "media_content_key" => event.media_content_key().map(|k| k.as_str().to_owned()),
        "channel_key" => channel_key,
        "channel_name" => channel_name,
        "profile_key" => profile_keys.filter(|p| !p.is_empty()).map(|p| p.join("|")),
        "transcoding_result" => match &event.change {
            ContentChange::Transcoded { result } => Some(
                serde_json::to_value(result)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            _ => None,
        },
        "update_type" => match &event.change {
            ContentChange::OtherUpdate { update_type, .. } => Some(update_type.clone()),
            ContentChange::Uploaded | ContentChange::Transcoded { .. } => None,
            other => Some(other.label().to_owned()),
        },
        other => event.extra.get(other).cloned(),
    }
}

/// What a valid value of `name` is kept as: an empty value is absent; `profile_key` is a list
/// split on `|`, empty parts dropped.
fn as_kept(name: &str, value: &str) -> Option<String> {
    let value = if name == "profile_key" {
        value
            .split('|')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("|")
    } else {
        value.to_owned()
    };
    (!value.is_empty()).then_some(value)
}

/// Parses the fixture with field `at` set to `value` and checks the outcome: refused naming
/// that field (or, for `update_type`, a field the new type requires that the fixture lacks),
/// or parsed with the value kept where it belongs and everything else as in the fixture.
/// Returns the field a refusal named.
fn check_platform(file: &str, kind: CallbackKind, at: usize, value: &[u8]) -> Option<String> {
    let original = fixture(file);
    let mut fields = pairs(&original);
    let name = fields[at].0.clone();
    fields[at].1 = value.to_vec();
    let body = encode(&fields);
    let what = format!("{file} with {name}={:?}", String::from_utf8_lossy(value));
    let before = ContentEvent::from_form(kind, &original).unwrap();
    match ContentEvent::from_form(kind, &body) {
        Err(PayloadError { field, problem }) => {
            let lacking = |f: &str| !fields.iter().any(|(n, _)| n == f);
            let named = field == name
                || (name == "update_type"
                    && ["media_content_key", "channel_key"].contains(&field.as_str())
                    && lacking(&field));
            assert!(named, "{what}: refused naming {field:?} ({problem})");
            Some(field)
        }
        Ok(event) => {
            let text = std::str::from_utf8(value)
                .unwrap_or_else(|_| panic!("{what}: invalid UTF-8 accepted"));
            assert!(!text.contains('\0'), "{what}: a NUL accepted");
            // (A known update type is kept as its variant, whose label is the type.)
            assert_eq!(
                kept(&event, &name),
                as_kept(&name, text),
                "{what}: {event:?}"
            );
            // Every other field as the fixture had it (but the channel's, which another update
            // type keeps elsewhere).
            for (other, _) in fields.iter().filter(|(n, _)| *n != name) {
                if name == "update_type" && (other.starts_with("channel") || other == "profile_key")
                {
                    continue;
                }
                assert_eq!(
                    kept(&event, other),
                    kept(&before, other),
                    "{what}: {other} changed"
                );
            }
            None
        }
    }
}

/// Values a form field may be set to: empty, NUL, invalid UTF-8, controls, form syntax, long,
/// Korean, the known update types and transcoding results.
fn hostile_form_values() -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = [
        "",
        "\0",
        "a\0b",
        "\u{1}",
        "\u{7f}",
        "\t",
        "a&b=c",
        "%",
        "%00",
        "+",
        " ",
        "|",
        "a|b||c",
        "../../etc/passwd",
        "제목 🎬",
        "ufk-0002",
        "m.2_x-Y",
        "channel_join",
        "channel_leave",
        "content_delete",
        "content_poster",
        "something_new",
        "success",
        "fail",
        "SUCCESS",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    values.push(vec![0xff, 0xfe]);
    values.push(b"ok\xc3".to_vec());
    values.push("x".repeat(300).into_bytes());
    values.push("k".repeat(5000).into_bytes());
    values
}

#[test]
fn every_field_of_every_platform_fixture_set_to_a_hostile_value_is_kept_or_named() {
    let mut refusals = std::collections::BTreeSet::new();
    let mut kept_values = 0;
    for (file, kind) in PLATFORM_FIXTURES {
        for at in 0..pairs(&fixture(file)).len() {
            for value in hostile_form_values() {
                match check_platform(file, kind, at, &value) {
                    Some(field) => {
                        refusals.insert(field);
                    }
                    None => kept_values += 1,
                }
            }
        }
    }
    // The fuzz reached each field's own check, and values got through to the event.
    for field in [
        "upload_file_key",
        "media_content_key",
        "channel_key",
        "transcoding_result",
        "update_type",
        "filename",
    ] {
        assert!(
            refusals.contains(field),
            "no refusal of {field}: {refusals:?}"
        );
    }
    assert!(kept_values > 200, "{kept_values} values kept");
}

/// Every node of a JSON document with its path as the parser names fields
/// (`block_info.blocks.b3`, `block_info.sessions[1].play_time`).
fn nodes(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.push(p.clone());
                nodes(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.push(p.clone());
                nodes(child, p, out);
            }
        }
        _ => {}
    }
}

/// The node at `path` (as [`nodes`] names it): its parent and its key or index.
fn parent_of<'a>(doc: &'a mut Value, path: &str) -> (&'a mut Value, String) {
    let mut parts: Vec<String> = Vec::new();
    for dotted in path.split('.') {
        let mut rest = dotted;
        if let Some(i) = rest.find('[') {
            parts.push(rest[..i].to_owned());
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                parts.push(rest[..=end].to_owned());
                rest = &rest[end + 1..];
            }
        } else {
            parts.push(rest.to_owned());
        }
    }
    let last = parts.pop().unwrap();
    let mut node = doc;
    for p in parts {
        node = match p.strip_prefix('[') {
            Some(i) => &mut node[i.trim_end_matches(']').parse::<usize>().unwrap()],
            None => &mut node[p.as_str()],
        };
    }
    (node, last)
}

/// What the document with the node at `path` replaced by `value` (None: removed) parses as,
/// checked: a refusal names that node, one inside it, or the node it sits in (never the whole
/// document: it is valid JSON), or, for a node of `block_info` (whose parts are checked against
/// each other), a node of `block_info`; a report keeps everything outside that node as the
/// fixture's report has it, and a block map and session list whole.
/// Returns the field a refusal named.
fn check_lms(original: &Value, path: &str, value: Option<Value>) -> Result<Option<String>, String> {
    let mut doc = original.clone();
    let (parent, last) = parent_of(&mut doc, path);
    match (last.strip_prefix('['), value.clone()) {
        (Some(i), v) => {
            let i: usize = i.trim_end_matches(']').parse().unwrap();
            let a = parent.as_array_mut().unwrap();
            match v {
                Some(v) => a[i] = v,
                None => {
                    a.remove(i);
                }
            }
        }
        (None, Some(v)) => parent[last.as_str()] = v,
        (None, None) => {
            parent.as_object_mut().unwrap().remove(&last);
        }
    }
    let what = format!("{path} set to {value:?}");
    let bytes = serde_json::to_vec(&doc).unwrap();
    let within = |a: &str, b: &str| {
        a == b
            || [".", "["]
                .iter()
                .any(|sep| a.starts_with(&format!("{b}{sep}")))
    };
    let parsed = LmsReport::from_json(&bytes);
    // The same document as the usual form field: the same outcome.
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("json_data", std::str::from_utf8(&bytes).unwrap())
        .finish();
    let located = locate(
        &["json_data".to_owned()],
        &Default::default(),
        form.as_bytes(),
        false,
    );
    match (&parsed, &located) {
        (Ok(r), Ok(l)) if *r == l.report => {}
        (Err(e), Err(request::LocateError::Invalid(l))) if e == l => {}
        // A document that lost `user_info` or `content_info` is no LMS document to `locate`.
        (Err(_), Err(request::LocateError::Missing { .. }))
            if doc.get("user_info").is_none() || doc.get("content_info").is_none() => {}
        (p, l) => return Err(format!("{what}: from_json {p:?} but locate {l:?}")),
    }
    match parsed {
        Err(PayloadError { field, problem }) => {
            let named = within(&field, path)
                || within(path, &field) && field != "json_data"
                || path.starts_with("block_info") && field.starts_with("block_info");
            if !named {
                return Err(format!("{what}: refused naming {field:?} ({problem})"));
            }
            Ok(Some(field))
        }
        Ok(report) => {
            let before = LmsReport::from_json(&serde_json::to_vec(original).unwrap()).unwrap();
            // The report outside the node's own part: as the fixture's.
            let part = |p: &str| -> Option<(&'static str, String)> {
                let (top, rest) = p.split_once('.').unwrap_or((p, ""));
                let field = rest.split(['.', '[']).next().unwrap_or("").to_owned();
                let field = if field == "device_name" {
                    "device".to_owned()
                } else {
                    field
                };
                match top {
                    "user_info" => Some(("user", field)),
                    "content_info" => Some(("content", field)),
                    "block_info" => Some(("block_info", field)),
                    "uservalues" => Some(("uservalues", field)),
                    _ => None,
                }
            };
            let strip = |r: &LmsReport| {
                let mut v = serde_json::to_value(r).unwrap();
                match part(path) {
                    Some(("block_info", _)) => {
                        let m = v.as_object_mut().unwrap();
                        m.remove("blocks");
                        m.remove("segments");
                    }
                    Some(("uservalues", _)) => {
                        v.as_object_mut().unwrap().remove("uservalues");
                    }
                    Some((top, field)) if field.is_empty() => {
                        v.as_object_mut().unwrap().remove(top);
                    }
                    Some((top, field)) => {
                        v[top].as_object_mut().unwrap().remove(&field);
                    }
                    None => {}
                }
                v
            };
            if strip(&report) != strip(&before) {
                return Err(format!(
                    "{what}: the report changed outside it:\n{report:?}\nwas\n{before:?}"
                ));
            }
            // A block map is kept whole: one block per `b` key, as many as block_count says.
            if let Some(b) = &report.blocks {
                let keys = doc["block_info"]["blocks"].as_object().map_or(0, |m| {
                    m.keys()
                        .filter(|k| {
                            k.strip_prefix('b')
                                .is_some_and(|n| n.parse::<u32>().is_ok())
                        })
                        .count()
                });
                if (b.count as usize, b.items.len()) != (keys, keys) {
                    return Err(format!(
                        "{what}: block_count {} and {} blocks kept of {keys} given",
                        b.count,
                        b.items.len()
                    ));
                }
            }
            let sessions = doc["block_info"]["sessions"].as_array().map_or(0, Vec::len);
            if report.segments.len() != sessions {
                return Err(format!(
                    "{what}: {} segments kept of {sessions}",
                    report.segments.len()
                ));
            }
            Ok(None)
        }
    }
}

/// The LMS documents of the fixtures: the seed's, and the Android player's (sessions,
/// uservalues).
fn lms_documents() -> Vec<(&'static str, Value)> {
    let android = parse_form(&fixture("lms-android-hash.form")).unwrap();
    vec![
        (
            "lms-seed.json",
            serde_json::from_slice(&fixture("lms-seed.json")).unwrap(),
        ),
        (
            "lms-android-hash.form",
            serde_json::from_str(&android["json_data"]).unwrap(),
        ),
    ]
}

fn hostile_json_values() -> Vec<Value> {
    vec![
        json!(""),
        json!("\u{0}"),
        json!("a\u{1}b"),
        json!("\u{7f}"),
        json!("-1"),
        json!(-1),
        json!("1.5"),
        json!(1.5),
        json!("99999999999999999999999"),
        json!(u64::MAX),
        json!(1e300),
        json!("0"),
        json!("1"),
        json!(2),
        json!("29"),
        json!(30),
        json!("31"),
        json!(" 5"),
        json!("+3"),
        json!(null),
        json!(true),
        json!([]),
        json!([1]),
        json!({}),
        json!({"b0": "1"}),
        json!("x".repeat(3000)),
        json!("제목 🎬"),
    ]
}

#[test]
fn every_node_of_the_lms_fixtures_set_to_a_hostile_value_is_kept_or_named() {
    let mut refusals = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    let mut reports = 0;
    for (name, doc) in lms_documents() {
        let mut paths = Vec::new();
        nodes(&doc, String::new(), &mut paths);
        for path in &paths {
            for value in hostile_json_values().into_iter().map(Some).chain([None]) {
                match check_lms(&doc, path, value) {
                    Ok(Some(field)) => {
                        refusals.insert(field);
                    }
                    Ok(None) => reports += 1,
                    Err(e) => failures.push(format!("{name}: {e}")),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Refusals from every part of the document, down to a block and a session's field.
    for field in [
        "user_info.client_user_id",
        "content_info.media_content_key",
        "content_info.start_at",
        "content_info.playtime",
        "block_info.block_count",
        "block_info.blocks.b21",
        "block_info.sessions[1].play_time",
    ] {
        assert!(
            refusals.contains(field),
            "no refusal of {field}: {refusals:?}"
        );
    }
    assert!(reports > 500, "{reports} changed documents parsed");
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[0-9]{0,25}".prop_map(Value::from),
        "[\\x00-\\x1f\\x7f0-9a-z .+-]{0,8}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        (-1e20f64..1e20).prop_map(|f| json!(f)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_value_in_any_platform_field_is_kept_or_named(
        fixture_at in 0..PLATFORM_FIXTURES.len(),
        field in any::<prop::sample::Index>(),
        value in proptest::collection::vec(
            prop_oneof![any::<u8>(), Just(0u8), Just(b'&'), Just(b'='), Just(b'%'), Just(b'|'), 0x20u8..0x7f],
            0..40,
        ),
    ) {
        let (file, kind) = PLATFORM_FIXTURES[fixture_at];
        let at = field.index(pairs(&fixture(file)).len());
        check_platform(file, kind, at, &value);
    }

    #[test]
    fn any_value_in_any_node_of_an_lms_document_is_kept_or_named(
        which in 0..2usize,
        node in any::<prop::sample::Index>(),
        value in proptest::option::weighted(0.9, json_leaf()),
    ) {
        let (_, doc) = lms_documents().swap_remove(which);
        let mut paths = Vec::new();
        nodes(&doc, String::new(), &mut paths);
        let path = &paths[node.index(paths.len())];
        if let Err(e) = check_lms(&doc, path, value) {
            prop_assert!(false, "{}", e);
        }
    }
}
