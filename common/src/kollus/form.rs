//! `application/x-www-form-urlencoded` bodies, decoded strictly.
//!
//! Unlike the usual lossy decoders this refuses invalid UTF-8 and repeated fields, so a damaged
//! callback is reported (and dead-lettered) instead of silently altered.

use std::collections::BTreeMap;

use percent_encoding::percent_decode;

use super::PayloadError;

/// Form fields in a map. Every Kollus value is a string.
pub type FormFields = BTreeMap<String, String>;

pub fn parse_form(body: &[u8]) -> Result<FormFields, PayloadError> {
    // A trailing line break (a body saved to a file and posted as is) is not part of a value.
    let body = body.trim_ascii_end();
    let mut fields = FormFields::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let name = decode(name).map_err(|e| PayloadError::new("form", e))?;
        let value = decode(value).map_err(|e| PayloadError::new(name.clone(), e))?;
        if fields.contains_key(&name) {
            return Err(PayloadError::new(name, "given more than once"));
        }
        fields.insert(name, value);
    }
    Ok(fields)
}

fn decode(raw: &[u8]) -> Result<String, &'static str> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let bytes: Vec<u8> = percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).map_err(|_| "is not valid UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_and_plus() {
        let f = parse_form(b"a=x%7Cy&b=hello+world&c=&d").unwrap();
        assert_eq!(f["a"], "x|y");
        assert_eq!(f["b"], "hello world");
        assert_eq!(f["c"], "");
        assert_eq!(f["d"], "");
    }

    #[test]
    fn ignores_a_trailing_line_break() {
        assert_eq!(parse_form(b"a=1\r\n").unwrap()["a"], "1");
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
