//! Property tests for the edge parsers: whatever a player or Kollus sends, parsing returns a
//! value or an error naming a field, and never panics; valid input survives exactly.

use kollus_common::kollus::form::parse_form;
use kollus_common::kollus::lms::checksum;
use kollus_common::kollus::lms::request::locate;
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
