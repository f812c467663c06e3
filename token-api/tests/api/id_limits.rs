//! The document states the limits the parsers apply: every id parameter and property of the
//! derived document carries its id type's length and characters (`common::domain`'s constants,
//! through the id types' `ToSchema`), and the parser takes that length and refuses one more.
//! The document once said 64 and 255 where the service took 128 and 256. Neither takes an id of
//! dots only.

use kollus_common::domain::{
    ChannelKey, ClientUserId, CourseId, IdError, MediaContentKey, KEY_PATTERN, MAX_KEY_LEN,
    MAX_USER_ID_LEN, USER_ID_PATTERN,
};
use serde_json::Value;

/// An id the document names, by its parameter or property name.
struct Id {
    max: usize,
    pattern: &'static str,
    parse: fn(String) -> Result<(), IdError>,
    /// A character the id may hold: the longest id is `max` of them (characters, not bytes:
    /// JSON Schema's `maxLength` counts characters, as the parser does).
    filler: char,
}

fn id_named(name: &str) -> Option<Id> {
    let key = |parse| Id {
        max: MAX_KEY_LEN,
        pattern: KEY_PATTERN,
        parse,
        filler: 'k',
    };
    match name {
        "client_user_id" => Some(Id {
            max: MAX_USER_ID_LEN,
            pattern: USER_ID_PATTERN,
            parse: |s| ClientUserId::parse(s).map(drop),
            filler: '김',
        }),
        // `profile_key` is checked as a media content key (`tokens::request`); `?media` is the
        // history's query filter.
        "media_content_key" | "profile_key" | "?media" => {
            Some(key(|s| MediaContentKey::parse(s).map(drop)))
        }
        "channel_key" => Some(key(|s| ChannelKey::parse(s).map(drop))),
        "course_id" => Some(key(|s| CourseId::parse(s).map(drop))),
        _ => None,
    }
}

/// Every id the service parses, as the document states it: (where, name, schema) of each
/// operation's parameters and of each property of its request body (`$ref`s followed). Answers
/// are what we send, not what we parse: not held here.
fn id_places(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        panic!("the document has no paths")
    };
    for (path, operations) in paths {
        for (method, op) in operations.as_object().into_iter().flatten() {
            let at = format!("{method} {path}");
            for p in op["parameters"].as_array().into_iter().flatten() {
                // A query parameter is named `?name`: the history's `media` filter is not the
                // token request's `media` list.
                let name = match (p["in"].as_str(), p["name"].as_str()) {
                    (Some("query"), Some(n)) => format!("?{n}"),
                    (_, n) => n.unwrap_or_default().to_owned(),
                };
                if id_named(&name).is_some() {
                    out.push((at.clone(), name, &p["schema"]));
                }
            }
            for (_, content) in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
            {
                let mut seen = Vec::new();
                request_ids(doc, &content["schema"], &at, &mut seen, &mut out);
            }
        }
    }
    out
}

fn request_ids<'a>(
    doc: &'a Value,
    schema: &'a Value,
    at: &str,
    seen: &mut Vec<&'a str>,
    out: &mut Vec<(String, String, &'a Value)>,
) {
    if !schema.is_object() {
        return;
    }
    if let Some(r) = schema["$ref"].as_str() {
        if seen.contains(&r) {
            return;
        }
        seen.push(r);
        let name = r.trim_start_matches("#/components/schemas/");
        return request_ids(doc, &doc["components"]["schemas"][name], at, seen, out);
    }
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        if id_named(name).is_some() {
            out.push((format!("{at} (body)"), name.clone(), property));
        }
        request_ids(doc, property, at, seen, out);
    }
    request_ids(doc, &schema["items"], at, seen, out);
    for alternatives in ["oneOf", "anyOf", "allOf"] {
        for s in schema[alternatives].as_array().into_iter().flatten() {
            request_ids(doc, s, at, seen, out);
        }
    }
}

/// The schema that states the limits: the schema itself, the one it refers to (an id type's
/// component), or the alternative that has them (an optional value's non-null one).
fn limits_of<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return limits_of(doc, &doc["components"]["schemas"][name]);
    }
    for alternatives in ["oneOf", "anyOf", "allOf"] {
        for s in schema[alternatives].as_array().into_iter().flatten() {
            let s = limits_of(doc, s);
            if s.get("maxLength").is_some() {
                return s;
            }
        }
    }
    schema
}

#[test]
fn every_id_in_the_document_states_the_limits_its_parser_applies() {
    let doc = kollus_token_api::routes::derived();
    let places = id_places(&doc);
    let names: std::collections::BTreeSet<&str> =
        places.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "?media",
            "channel_key",
            "client_user_id",
            "course_id",
            "media_content_key",
            "profile_key"
        ]
        .into(),
        "the ids the document names"
    );
    for (at, name, schema) in &places {
        let id = id_named(name).unwrap();
        let s = limits_of(&doc, schema);
        assert_eq!(s["maxLength"], id.max, "{at}/{name}: {schema}");
        assert_eq!(s["minLength"], 1, "{at}/{name}: {schema}");
        assert_eq!(s["pattern"], id.pattern, "{at}/{name}: {schema}");
    }
    for name in names {
        let id = id_named(name).unwrap();
        let longest: String = std::iter::repeat_n(id.filler, id.max).collect();
        assert_eq!(
            (id.parse)(longest.clone()),
            Ok(()),
            "{name} of {} characters",
            id.max
        );
        assert_eq!(
            (id.parse)(format!("{longest}{}", id.filler)),
            Err(IdError::TooLong { max: id.max }),
            "{name} of {} characters",
            id.max + 1
        );
        assert_eq!(
            (id.parse)(String::new()),
            Err(IdError::Empty),
            "{name}: minLength 1"
        );
        // The pattern asks for one character that is not a dot: `..` in a path is the parent.
        for dots in [".", "..", "..."] {
            assert_eq!(
                (id.parse)(dots.to_owned()),
                Err(IdError::DotsOnly),
                "{name}: {dots}"
            );
        }
    }
}
