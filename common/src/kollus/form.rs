//! `application/x-www-form-urlencoded` bodies, decoded strictly.
//!
//! Unlike the usual lossy decoders this refuses invalid UTF-8, NUL characters and repeated fields,
//! so a damaged callback is reported (and dead-lettered) instead of silently altered. Every
//! service that reads a Kollus form (ingest, token-api's play and DRM callbacks) reads it here.

use std::collections::BTreeMap;

use super::callback::PayloadError;

/// Form fields in a map. Every Kollus value is a string.
pub type FormFields = BTreeMap<String, String>;

/// Every field strictly: a NUL, invalid UTF-8 or a repeat anywhere refuses the form, naming the
/// field.
pub fn parse_form(body: &[u8]) -> Result<FormFields, PayloadError> {
    parse(body, Strict::All)
}

/// The fields named in `strict` (what the caller keeps, signs or queries by) strictly, as
/// [`parse_form`]; every other field leniently: invalid UTF-8 and NUL become U+FFFD and a
/// repeat keeps the last, so an odd value in a field nobody reads (a device name) costs nothing.
pub fn parse_form_strict_in(body: &[u8], strict: &[&str]) -> Result<FormFields, PayloadError> {
    parse(body, Strict::Only(strict))
}

/// Which fields are decoded strictly.
#[derive(Clone, Copy)]
enum Strict<'a> {
    All,
    Only(&'a [&'a str]),
}

impl Strict<'_> {
    fn covers(self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(&name),
        }
    }
}

fn parse(body: &[u8], strict: Strict<'_>) -> Result<FormFields, PayloadError> {
    // A trailing line break (a body saved to a file and posted as is) is not part of a value.
    let body = body.trim_ascii_end();
    let mut fields = FormFields::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let name = match decode(name) {
            Ok(name) => name,
            Err(e) if matches!(strict, Strict::All) => return Err(PayloadError::new("form", e)),
            // An unreadable name is no field the caller reads.
            Err(_) => lossy(name),
        };
        if !strict.covers(&name) {
            fields.insert(name, lossy(value));
            continue;
        }
        let value = decode(value).map_err(|e| PayloadError::new(name.clone(), e))?;
        if fields.contains_key(&name) {
            return Err(PayloadError::new(name, "given more than once"));
        }
        fields.insert(name, value);
    }
    Ok(fields)
}

/// Decodes leniently: invalid UTF-8 and NUL become U+FFFD.
fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(&decode_bytes(raw)).replace('\0', "\u{FFFD}")
}

fn decode(raw: &[u8]) -> Result<String, &'static str> {
    let bytes = decode_bytes(raw);
    // PostgreSQL stores no U+0000, in text or jsonb: refused here, named, not by a worker later.
    if bytes.contains(&0) {
        return Err("contains a NUL character");
    }
    String::from_utf8(bytes).map_err(|_| "is not valid UTF-8")
}

/// URL-decodes form-encoded bytes: `+` is a space, `%XX` a byte; a `%` not followed by two hex
/// digits stays as it is (as browsers and `percent_encoding` leave it). One pass, one buffer.
pub fn decode_bytes(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (raw.get(i + 1).and_then(hex), raw.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::percent_decode;

    #[test]
    fn decodes_percent_and_plus() {
        let f = parse_form(b"a=x%7Cy&b=hello+world&c=&d").unwrap();
        assert_eq!(f["a"], "x|y");
        assert_eq!(f["b"], "hello world");
        assert_eq!(f["c"], "");
        assert_eq!(f["d"], "");
    }

    #[test]
    fn decodes_as_percent_encoding_does() {
        for raw in [
            &b"%zz%4"[..],
            b"100%",
            b"%41%2b%2B+%",
            b"%e2%82%ac",
            b"plain",
        ] {
            let expected: Vec<u8> = percent_decode(
                &raw.iter()
                    .map(|b| if *b == b'+' { b' ' } else { *b })
                    .collect::<Vec<u8>>(),
            )
            .collect();
            assert_eq!(decode(raw).unwrap().as_bytes(), &expected[..], "{raw:?}");
        }
    }

    #[test]
    fn refuses_nul_characters() {
        assert_eq!(
            parse_form(b"a=x%00y").unwrap_err(),
            PayloadError::new("a", "contains a NUL character")
        );
    }

    #[test]
    fn ignores_a_trailing_line_break() {
        assert_eq!(parse_form(b"a=1\r\n").unwrap()["a"], "1");
    }

    #[test]
    fn only_the_named_fields_are_strict() {
        let f = parse_form_strict_in(b"kind=1&device_name=a%00b%FF&hardware_id=%c3%28", &["kind"])
            .unwrap();
        assert_eq!(f["kind"], "1");
        assert_eq!(f["device_name"], "a\u{FFFD}b\u{FFFD}");
        assert_eq!(f["hardware_id"], "\u{FFFD}(");
        assert_eq!(
            parse_form_strict_in(b"kind=1&player_id=p%00", &["kind", "player_id"]).unwrap_err(),
            PayloadError::new("player_id", "contains a NUL character")
        );
        assert_eq!(
            parse_form_strict_in(b"client_user_id=u%c3%28", &["client_user_id"]).unwrap_err(),
            PayloadError::new("client_user_id", "is not valid UTF-8")
        );
        assert_eq!(
            parse_form_strict_in(b"kind=1&kind=3", &["kind"])
                .unwrap_err()
                .problem,
            "given more than once"
        );
        assert_eq!(
            parse_form_strict_in(b"x=1&x=2", &["kind"]).unwrap()["x"],
            "2",
            "a repeated field nobody reads keeps the last"
        );
        assert!(
            parse_form_strict_in(b"%FF=1", &["kind"]).is_ok(),
            "an unreadable name is no strict field"
        );
    }

    #[test]
    fn refuses_invalid_utf8_and_repeats() {
        assert_eq!(parse_form(b"a=%FF").unwrap_err().field, "a");
        assert_eq!(
            parse_form(b"a=1&a=2").unwrap_err().problem,
            "given more than once"
        );
    }
}
