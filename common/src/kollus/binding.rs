//! Viewer binding: safety that does not rest on a secret the viewer can read.
//!
//! Every callback a player posts (LMS reports, play and DRM callbacks) names its own
//! `client_user_id`, and its URL's secret is in the viewer's hands, so a viewer can post one that
//! names someone else. token-api therefore puts a reserved uservalue in every player URL it
//! builds: a MAC of the user id, `base64url(HMAC-SHA256(PLAYER_BINDING_KEY, cuid))`. Kollus echoes
//! uservalues in LMS reports, play callbacks and DRM items, so a callback whose MAC matches its
//! `client_user_id` came from a player URL we made for that user; one without it, or with another
//! user's, did not. Only whoever holds `PLAYER_BINDING_KEY` (ingest and token-api) can make one.
//!
//! `PLAYER_BINDING=off|record|require`: `record` marks an unbound callback (an envelope field, a
//! metric); `require` also keeps it from changing what its user is allowed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// `PLAYER_BINDING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BindingMode {
    /// Not checked.
    Off,
    /// Checked; an unbound callback is marked (an envelope field, a metric) and otherwise
    /// handled as before.
    Record,
    /// Checked; an unbound callback never changes what its user is allowed.
    Require,
}

/// What a callback's binding says about it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Binding {
    /// The MAC matches the callback's `client_user_id`: a player URL we made for that user.
    Bound,
    /// No binding uservalue: a URL we did not make (or a template that drops uservalues).
    Absent,
    /// A binding for another user, or no MAC at all: made up, or copied from another URL.
    Mismatch,
}

impl Binding {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn is_bound(self) -> bool {
        self == Self::Bound
    }
}

/// The binding in force: the mode, the key, and the uservalue slot it travels in.
#[derive(Clone)]
pub struct PlayerBinding {
    pub mode: BindingMode,
    /// `PLAYER_BINDING_USERVALUE`, e.g. `uservalue99`.
    pub slot: String,
    /// The MAC keyed once with `PLAYER_BINDING_KEY`; cloned for each user id.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for PlayerBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayerBinding")
            .field("mode", &self.mode)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl PlayerBinding {
    /// The binding keyed with `key`; refused only if the MAC cannot take the key (HMAC takes
    /// any length, so in practice never).
    pub fn new(
        mode: BindingMode,
        key: &SecretString,
        slot: impl Into<String>,
    ) -> Result<Self, String> {
        let mac = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes())
            .map_err(|e| format!("PLAYER_BINDING_KEY cannot key HMAC-SHA256: {e}"))?;
        Ok(Self {
            mode,
            slot: slot.into(),
            mac,
        })
    }

    /// The value token-api puts in the player URL's binding uservalue for `user`.
    pub fn value_for(&self, user: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(user.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Judges a callback for `user` whose binding uservalue is `presented` (compared in
    /// constant time).
    pub fn judge(&self, user: &str, presented: Option<&str>) -> Binding {
        let Some(presented) = presented.filter(|p| !p.is_empty()) else {
            return Binding::Absent;
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(presented.trim()) else {
            return Binding::Mismatch;
        };
        let mut mac = self.mac.clone();
        mac.update(user.as_bytes());
        match mac.verify_slice(&tag) {
            Ok(()) => Binding::Bound,
            Err(_) => Binding::Mismatch,
        }
    }

    /// Whether an unbound callback must be kept from changing what its user is allowed.
    pub fn required(&self) -> bool {
        self.mode == BindingMode::Require
    }
}

/// The viewer-binding settings ingest and token-api share.
#[derive(Debug, Clone, clap::Args)]
pub struct BindingSettings {
    /// Viewer binding (README, "Viewer binding"): `off`, `record` (an unbound callback is marked
    /// and counted) or `require` (an unbound callback never changes what its user is allowed).
    /// Default: `record` when PLAYER_BINDING_KEY is set, else `off`.
    #[arg(long, env = "PLAYER_BINDING", value_enum)]
    pub player_binding: Option<BindingMode>,
    /// The key of the binding MAC (HMAC-SHA256 of the user id); the same on ingest and
    /// token-api, and never in a URL. At least 16 characters. Optional: unset, binding is off.
    #[arg(long, env = "PLAYER_BINDING_KEY", value_parser = crate::settings::Redacted(crate::settings::callback_secret), hide_env_values = true)]
    pub player_binding_key: Option<SecretString>,
    /// The uservalue the binding travels in: one Kollus echoes and the product app does not use.
    #[arg(long, env = "PLAYER_BINDING_USERVALUE", default_value = "uservalue99", value_parser = uservalue_slot)]
    pub player_binding_uservalue: String,
}

impl Default for BindingSettings {
    /// The clap defaults (`--help`): off (no key), in the default slot.
    fn default() -> Self {
        crate::settings::defaults()
    }
}

fn uservalue_slot(s: &str) -> Result<String, String> {
    let ok = s
        .strip_prefix("uservalue")
        .is_some_and(|n| !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()))
        && !(s.len() == 11 && s.as_bytes()[9] == b'0');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not one of uservalue0 to uservalue99"))
    }
}

impl BindingSettings {
    /// The binding in force, or none (`off`); a mode that needs the key it lacks is refused.
    pub fn binding(&self) -> Result<Option<PlayerBinding>, String> {
        let key = self.player_binding_key.clone();
        let mode = self.player_binding.unwrap_or(if key.is_some() {
            BindingMode::Record
        } else {
            BindingMode::Off
        });
        match (mode, key) {
            (BindingMode::Off, _) => Ok(None),
            (mode, Some(key)) => {
                PlayerBinding::new(mode, &key, self.player_binding_uservalue.clone()).map(Some)
            }
            (mode, None) => Err(format!(
                "PLAYER_BINDING={} needs PLAYER_BINDING_KEY, which is not set",
                if mode == BindingMode::Require {
                    "require"
                } else {
                    "record"
                }
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> PlayerBinding {
        PlayerBinding::new(
            BindingMode::Require,
            &SecretString::from("binding-key-0123456789"),
            "uservalue99",
        )
        .unwrap()
    }

    #[test]
    fn a_users_own_mac_binds_and_nothing_else_does() {
        let b = binding();
        let mine = b.value_for("181353");
        assert_eq!(mine.len(), 43, "base64url of 32 bytes, unpadded");
        assert_eq!(b.judge("181353", Some(&mine)), Binding::Bound);
        assert_eq!(
            b.judge("victim", Some(&mine)),
            Binding::Mismatch,
            "another user's"
        );
        assert_eq!(b.judge("181353", None), Binding::Absent);
        assert_eq!(b.judge("181353", Some("")), Binding::Absent);
        assert_eq!(b.judge("181353", Some("not base64!")), Binding::Mismatch);
        assert_eq!(b.judge("181353", Some(&mine[..42])), Binding::Mismatch);
        let other_key = PlayerBinding::new(
            BindingMode::Record,
            &SecretString::from("another-key-0123456789"),
            "uservalue99",
        )
        .unwrap();
        assert_eq!(other_key.judge("181353", Some(&mine)), Binding::Mismatch);
    }

    #[test]
    fn the_mode_defaults_to_record_with_a_key_and_needs_one() {
        let mut s = BindingSettings {
            player_binding: None,
            player_binding_key: None,
            player_binding_uservalue: "uservalue99".into(),
        };
        assert!(s.binding().unwrap().is_none(), "no key: off");
        s.player_binding_key = Some(SecretString::from("binding-key-0123456789"));
        assert_eq!(s.binding().unwrap().unwrap().mode, BindingMode::Record);
        s.player_binding = Some(BindingMode::Off);
        assert!(s.binding().unwrap().is_none());
        s.player_binding = Some(BindingMode::Require);
        s.player_binding_key = None;
        let err = s.binding().unwrap_err();
        assert!(err.contains("PLAYER_BINDING_KEY"), "{err}");
    }

    #[test]
    fn the_slot_is_a_uservalue_name() {
        for ok in ["uservalue0", "uservalue9", "uservalue99", "uservalue10"] {
            assert!(uservalue_slot(ok).is_ok(), "{ok}");
        }
        for bad in [
            "uservalue",
            "uservalue100",
            "uservalue07",
            "uv1",
            "uservalue-1",
        ] {
            assert!(uservalue_slot(bad).is_err(), "{bad}");
        }
    }
}
