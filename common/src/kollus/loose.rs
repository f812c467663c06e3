//! Kollus's loose values, read one way wherever they arrive: the LMS document, the play and DRM
//! callbacks, the catalog's API answers (SPEC.md sections 3, 4.3, 5 and 7).
//!
//! Kollus and its players send a number as a JSON number or as a string (`151`, `"151"`), text as
//! a number (`"client_user_id": 42`), and `""` or `null` for "not said". These `serde_with`
//! adapters accept exactly that and refuse the rest with a short reason; the caller names the
//! field (`serde_path_to_error`, or the path it walks).
//!
//! Every number Kollus sends us is a time, a duration, a count, a position, a kind or a stage:
//! none is negative, so a negative number is refused ("must not be negative") wherever it
//! arrives. serde_with's `PickFirst<(_, DisplayFromStr)>` reads the same two shapes, but answers
//! any failure with "PickFirst could not deserialize data": the reasons below are what the
//! refusals (and their tests) say.
//!
//! ```
//! use kollus_common::kollus::loose::{OptWhole, Text};
//! use serde_with::serde_as;
//!
//! #[serde_as]
//! #[derive(serde::Deserialize)]
//! struct Item {
//!     #[serde_as(as = "Text")]
//!     key: String,
//!     #[serde_as(as = "OptWhole")]
//!     #[serde(default)]
//!     start_at: Option<u64>,
//! }
//! let item: Item = serde_json::from_str(r#"{"key": 42, "start_at": "1700000000"}"#).unwrap();
//! assert_eq!((item.key.as_str(), item.start_at), ("42", Some(1_700_000_000)));
//! assert!(serde_json::from_str::<Item>(r#"{"key": "k", "start_at": "-3"}"#).is_err());
//! ```

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_with::DeserializeAs;

/// A whole, non-negative number given as a JSON number or as a string of digits (spaces around
/// them are allowed).
pub struct Whole;
/// [`Whole`], or absent: `null` and `""` mean the sender did not say.
pub struct OptWhole;
/// Text without NUL; a number is kept as its digits (`"client_user_id": 42`).
pub struct Text;
/// [`Text`], or absent: `null` and `""` mean the sender did not say.
pub struct OptText;

impl<'de> DeserializeAs<'de, u64> for Whole {
    fn deserialize_as<D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        WholeSeed.deserialize(d)
    }
}

impl<'de> DeserializeAs<'de, Option<u64>> for OptWhole {
    fn deserialize_as<D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(Optional(WholeSeed))
    }
}

impl<'de> DeserializeAs<'de, String> for Text {
    fn deserialize_as<D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

impl<'de> DeserializeAs<'de, Option<String>> for OptText {
    fn deserialize_as<D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(Optional(TextVisitor))
    }
}

/// [`Whole`] as a seed, for a caller that reads values one by one (a map's values).
#[derive(Clone, Copy)]
pub struct WholeSeed;

impl<'de> DeserializeSeed<'de> for WholeSeed {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for WholeSeed {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom("must not be negative"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v < 0.0 {
            Err(E::custom("must not be negative"))
        } else if v.fract() != 0.0 || !v.is_finite() {
            Err(E::custom("must be a whole number"))
        } else {
            Err(E::custom("is out of range"))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        let s = v.trim();
        if s.starts_with('-') {
            Err(E::custom("must not be negative"))
        } else if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            Err(E::custom(format!("must be a whole number, got {s:?}")))
        } else {
            s.parse().map_err(|_| E::custom("is out of range"))
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Err(E::custom("must be a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Err(E::custom("is required"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
        Err(de::Error::custom("must be a number"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
        Err(de::Error::custom("must be a number"))
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        no_nul(v)?;
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        no_nul(&v)?;
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<String, E> {
        Err(E::custom("must be a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(E::custom("is required"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(de::Error::custom("must be a string"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(de::Error::custom("must be a string"))
    }
}

/// PostgreSQL stores no U+0000, in text or jsonb: refused at the edge, named, instead of by a
/// worker's database later.
pub fn no_nul<E: de::Error>(v: &str) -> Result<(), E> {
    if v.contains('\0') {
        Err(E::custom("contains a NUL character"))
    } else {
        Ok(())
    }
}

/// Wraps a scalar visitor: `null` and `""` are `None`.
struct Optional<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Optional<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.is_empty() {
            Ok(None)
        } else {
            self.0.visit_str(v).map(Some)
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        if v.is_empty() {
            Ok(None)
        } else {
            self.0.visit_string(v).map(Some)
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.0.visit_u64(v).map(Some)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.0.visit_i64(v).map(Some)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.0.visit_f64(v).map(Some)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.0.visit_bool(v).map(Some)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map).map(Some)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(seq).map(Some)
    }
}

/// [`OptWhole`] of a value already parsed, for a caller that walks a `serde_json::Value` (the
/// catalog's API answers): the reason of a refusal, for the caller to name the field.
pub fn opt_whole(v: &serde_json::Value) -> Result<Option<u64>, String> {
    OptWhole::deserialize_as(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn whole(v: Value) -> Result<u64, String> {
        Whole::deserialize_as(&v).map_err(|e| e.to_string())
    }

    fn opt_whole(v: Value) -> Result<Option<u64>, String> {
        super::opt_whole(&v)
    }

    #[test]
    fn a_number_as_a_number_or_as_digits() {
        assert_eq!(whole(json!(151)), Ok(151));
        assert_eq!(whole(json!("151")), Ok(151));
        assert_eq!(whole(json!(" 151 ")), Ok(151));
        assert_eq!(whole(json!(u64::MAX)), Ok(u64::MAX));
        assert_eq!(opt_whole(json!("0")), Ok(Some(0)));
    }

    /// Kollus sends no negative number (SPEC.md: times, durations, counts, kinds): refused as a
    /// number and as text alike, wherever it arrives.
    #[test]
    fn negatives_are_refused_in_both_shapes() {
        for v in [json!(-3), json!("-3"), json!(" -3"), json!(-0.5)] {
            assert_eq!(whole(v.clone()), Err("must not be negative".into()), "{v}");
            assert_eq!(
                opt_whole(v.clone()),
                Err("must not be negative".into()),
                "{v}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused_with_why() {
        assert_eq!(whole(json!(1.5)), Err("must be a whole number".into()));
        assert_eq!(
            whole(json!("1e3")),
            Err("must be a whole number, got \"1e3\"".into())
        );
        assert_eq!(
            whole(json!("+1")),
            Err("must be a whole number, got \"+1\"".into())
        );
        assert_eq!(
            whole(json!("99999999999999999999")),
            Err("is out of range".into())
        );
        assert_eq!(whole(json!(true)), Err("must be a number".into()));
        assert_eq!(whole(json!([1])), Err("must be a number".into()));
        assert_eq!(whole(json!(null)), Err("is required".into()));
        assert_eq!(
            whole(json!("")),
            Err("must be a whole number, got \"\"".into())
        );
    }

    #[test]
    fn absent_is_null_or_empty() {
        assert_eq!(opt_whole(json!(null)), Ok(None));
        assert_eq!(opt_whole(json!("")), Ok(None));
        assert_eq!(
            OptText::deserialize_as(&json!("")).map_err(|e| e.to_string()),
            Ok(None)
        );
        assert_eq!(
            OptText::deserialize_as(&json!(null)).map_err(|e| e.to_string()),
            Ok(None)
        );
    }

    #[test]
    fn text_keeps_a_number_as_its_digits_and_refuses_nul() {
        let text = |v: Value| Text::deserialize_as(&v).map_err(|e| e.to_string());
        assert_eq!(text(json!(42)), Ok("42".into()));
        assert_eq!(text(json!("kim@example.com")), Ok("kim@example.com".into()));
        assert_eq!(
            text(json!("a\u{0}b")),
            Err("contains a NUL character".into())
        );
        assert_eq!(text(json!(false)), Err("must be a string".into()));
        assert_eq!(text(json!({})), Err("must be a string".into()));
    }
}
