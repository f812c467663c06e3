//! JSON helpers every feature's request bodies share (bottom layer: imports nothing of this
//! crate).

use serde::{Deserialize, Deserializer};

/// JSON Schema's `integer` is any whole number, `1025.0` included (schemathesis sends such): a
/// whole float is accepted; a fraction, or a number out of the field's range, is refused.
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("is out of range"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            if v.fract() != 0.0 || !v.is_finite() {
                Err(E::custom(format!("{v} is not a whole number")))
            } else if v < i64::MIN as f64 || v >= i64::MAX as f64 {
                Err(E::custom("is out of range"))
            } else {
                Ok(v as i64)
            }
        }
    }
    let v = d.deserialize_any(Whole)?;
    T::try_from(v).map_err(|_| serde::de::Error::custom(format!("{v} is out of range")))
}

/// [`whole`], for an optional field (`null` is absent).
pub fn opt_whole<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap<T: TryFrom<i64>>(#[serde(deserialize_with = "whole")] T);
    Ok(Option::<Wrap<T>>::deserialize(d)?.map(|w| w.0))
}
