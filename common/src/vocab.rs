//! One vocabulary: an enum's text is written once, on the enum. Every enum <-> text table of the
//! workspace derives it with strum: `IntoStaticStr` gives the text (`serialize_all =
//! "snake_case"`, the same as serde's `rename_all` where the enum is serde too), `EnumString`
//! parses it, `VariantArray` lists the variants (metric label lists are made from it). A
//! database column holding that text reads into the enum through [`text_column!`]: a value the
//! enum does not know is an error naming it, never a fallback to some variant.

use std::str::FromStr;

pub use strum::VariantArray;

#[doc(hidden)]
pub use bytes::BytesMut as __BytesMut;
#[doc(hidden)]
pub use tokio_postgres::types as __pg;

/// The text of every variant of `T`, in declaration order: a metric's label values, a list in
/// an error message.
pub fn labels<T>() -> impl Iterator<Item = &'static str>
where
    T: VariantArray + Copy + Into<&'static str>,
{
    T::VARIANTS.iter().map(|v| (*v).into())
}

/// A text that is none of an enum's values: names the enum, the text and what it may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a {kind} (one of: {expected})")]
pub struct UnknownText {
    pub kind: &'static str,
    pub text: String,
    pub expected: String,
}

/// Parses `text` into `T`, or says what it may be.
pub fn parse<T>(text: &str) -> Result<T, UnknownText>
where
    T: FromStr + VariantArray + Copy + Into<&'static str>,
{
    text.parse().map_err(|_| {
        let kind = std::any::type_name::<T>();
        UnknownText {
            kind: kind.rsplit("::").next().unwrap_or(kind),
            text: text.to_owned(),
            expected: labels::<T>().collect::<Vec<_>>().join(", "),
        }
    })
}

/// `FromSql` and `ToSql` for a vocabulary enum stored as its text (`text` or `varchar`): one
/// definition for every such column. Reading a value the enum does not know fails the row with
/// [`UnknownText`] (the caller's error path logs and counts it), instead of guessing.
///
/// ```ignore
/// kollus_common::text_column!(Scope);
/// let scope: Scope = row.try_get("scope")?;
/// ```
#[macro_export]
macro_rules! text_column {
    ($t:ty) => {
        impl<'a> $crate::vocab::__pg::FromSql<'a> for $t {
            fn from_sql(
                ty: &$crate::vocab::__pg::Type,
                raw: &'a [u8],
            ) -> ::std::result::Result<
                Self,
                ::std::boxed::Box<
                    dyn ::std::error::Error + ::std::marker::Sync + ::std::marker::Send,
                >,
            > {
                let text = <&str as $crate::vocab::__pg::FromSql>::from_sql(ty, raw)?;
                ::std::result::Result::Ok($crate::vocab::parse::<$t>(text)?)
            }

            fn accepts(ty: &$crate::vocab::__pg::Type) -> bool {
                <&str as $crate::vocab::__pg::FromSql>::accepts(ty)
            }
        }

        impl $crate::vocab::__pg::ToSql for $t {
            fn to_sql(
                &self,
                ty: &$crate::vocab::__pg::Type,
                out: &mut $crate::vocab::__BytesMut,
            ) -> ::std::result::Result<
                $crate::vocab::__pg::IsNull,
                ::std::boxed::Box<
                    dyn ::std::error::Error + ::std::marker::Sync + ::std::marker::Send,
                >,
            > {
                let text: &'static str = (*self).into();
                <&str as $crate::vocab::__pg::ToSql>::to_sql(&text, ty, out)
            }

            fn accepts(ty: &$crate::vocab::__pg::Type) -> bool {
                <&str as $crate::vocab::__pg::ToSql>::accepts(ty)
            }

            $crate::vocab::__pg::to_sql_checked!();
        }
    };
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::*;
    use crate::kollus::binding::Binding;
    use crate::kollus::lms::checksum::HashVerdict;
    use crate::kollus::lms::PlayStatus;
    use crate::kollus::CallbackKind;

    /// serde and strum say the same text for every variant, and strum parses back what it says.
    fn agrees<T>()
    where
        T: Serialize
            + DeserializeOwned
            + FromStr
            + VariantArray
            + Copy
            + Into<&'static str>
            + PartialEq
            + std::fmt::Debug,
    {
        for v in T::VARIANTS {
            let text: &'static str = (*v).into();
            assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(text));
            assert_eq!(serde_json::from_value::<T>(text.into()).unwrap(), *v);
            assert_eq!(parse::<T>(text), Ok(*v));
        }
    }

    #[test]
    fn serde_and_strum_write_every_serde_vocabulary_alike() {
        agrees::<CallbackKind>();
        agrees::<HashVerdict>();
        agrees::<PlayStatus>();
        agrees::<Binding>();
    }

    /// The texts dashboards and alerts name (`sync-worker`'s `records_total{kind}`), pinned.
    #[test]
    fn a_content_change_is_labelled_by_kollus_update_type() {
        use crate::kollus::platform::ChangeKind;
        assert_eq!(
            labels::<ChangeKind>().collect::<Vec<_>>(),
            [
                "uploaded",
                "transcoded",
                "channel_join",
                "channel_leave",
                "content_delete",
                "content_poster",
                "other_update",
                "snapshot"
            ]
        );
    }

    #[derive(
        Debug, Clone, Copy, PartialEq, strum::IntoStaticStr, strum::EnumString, strum::VariantArray,
    )]
    #[strum(serialize_all = "snake_case")]
    enum Colour {
        Red,
        DeepBlue,
    }
    crate::text_column!(Colour);

    #[test]
    fn a_text_column_reads_its_enum_and_refuses_any_other_text() {
        use tokio_postgres::types::{FromSql as _, ToSql as _, Type};
        assert_eq!(
            Colour::from_sql(&Type::TEXT, b"deep_blue").unwrap(),
            Colour::DeepBlue
        );
        let e = Colour::from_sql(&Type::TEXT, b"green").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#""green" is not a Colour (one of: red, deep_blue)"#
        );
        assert!(
            Colour::from_sql(&Type::TEXT, b"Red").is_err(),
            "exact text only"
        );
        assert!(!<Colour as tokio_postgres::types::FromSql>::accepts(
            &Type::INT4
        ));
        let mut out = BytesMut::new();
        Colour::Red.to_sql(&Type::TEXT, &mut out).unwrap();
        assert_eq!(&out[..], b"red");
    }

    use bytes::BytesMut;
}
