//! What an API key may do: [`ApiScope`], its text written once (bottom layer: imports nothing of
//! this crate, so `auth` checks it and `problem` documents it).

use std::collections::BTreeSet;

/// What a key may do. Its text (strum) is the scope's name in `TOKEN_API_KEYS`, in a 403's
/// `scope` and in the OpenAPI document.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum ApiScope {
    /// Issue and verify playback tokens.
    Tokens,
    /// Sign `playcallback_ignore: true` into a token (with `tokens`): such a token plays without
    /// Kollus asking our play callback, so no entitlement is checked for it.
    #[strum(serialize = "tokens:playcallback_ignore")]
    TokensPlaycallbackIgnore,
    /// Watch progress, watch history and the catalog state of videos.
    Read,
    /// Grant, revoke and list entitlements.
    Entitlements,
    /// Per-user and per-video exports.
    Export,
    /// The support console's personal data; only ever given explicitly.
    Console,
    /// The access record: its review page in the console (with `console`) and
    /// `GET /v1/access-log/verify`; only ever given explicitly (a privacy officer's key).
    Audit,
    /// Erase a user (`POST /v1/users/{id}/erasure`) and read erasure receipts; only ever given
    /// explicitly (the privacy officer's key).
    Erase,
}

impl ApiScope {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// What a key given without scopes may do: everything but the console, the audit, erasure
    /// and signing `playcallback_ignore` (a token that plays with no entitlement check): those
    /// are given only by name.
    pub(crate) fn unscoped() -> BTreeSet<Self> {
        Self::ALL
            .iter()
            .copied()
            .filter(|s| {
                !matches!(
                    s,
                    Self::Console | Self::Audit | Self::Erase | Self::TokensPlaycallbackIgnore
                )
            })
            .collect()
    }
}
