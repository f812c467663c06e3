//! The secrets Kollus's callback URLs carry (`?secret=`): Kollus signs nothing, so this is what
//! authenticates a callback (DESIGN.md, the delivery contract, 2). One check for every service
//! that takes Kollus callbacks (ingest; token-api's play and DRM callbacks).
//!
//! There are three secrets, one per trust level, because the URLs that carry them are not equally
//! private (README, "Callback secrets"):
//!
//! | secret | routes | who holds the URL |
//! |---|---|---|
//! | `CALLBACK_SECRET` | `upload`, `transcoding`, `content`, `channel` | Kollus's servers |
//! | `PLAY_CALLBACK_SECRET` | token-api's `play`, `drm` | possibly the viewer's player |
//! | `LMS_CALLBACK_SECRET` | `lms` | every viewer's player: public |
//!
//! A secret opens only its own routes, except that the platform secret, the strongest, is also
//! taken on the player routes (with a WARN once and a counter: a URL a viewer holds should never
//! carry it). During a rotation a secret's previous value is taken beside the current one until
//! an expiry at most a day ahead, so Kollus's retries of the old URL (up to 15 minutes) land.
//!
//! Values are compared as SHA-256 digests in constant time: `ct_eq` on the raw values returns
//! early on a length mismatch and would tell an attacker the secret's length.

use std::sync::atomic::{AtomicBool, Ordering};

use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use super::form::{parse_form, FormFields};

/// The query string's `secret` is missing, wrong, or the query cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the callback URL's secret is missing or wrong")]
pub struct BadSecret;

/// Which of the three secrets; its text is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum SecretName {
    /// `CALLBACK_SECRET`: platform callbacks, posted by Kollus's servers.
    Platform,
    /// `PLAY_CALLBACK_SECRET`: play and DRM callbacks; assume a viewer can read it.
    Play,
    /// `LMS_CALLBACK_SECRET`: LMS progress reports; public (every viewer's player holds it).
    Lms,
}

impl SecretName {
    /// The setting's name.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Platform => "CALLBACK_SECRET",
            Self::Play => "PLAY_CALLBACK_SECRET",
            Self::Lms => "LMS_CALLBACK_SECRET",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        self.into()
    }
}

/// Whether the current value or the previous one (during a rotation) matched; its text is the
/// metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Generation {
    Current,
    Previous,
}

impl Generation {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    pub fn label(self) -> &'static str {
        self.into()
    }
}

type Digest = [u8; 32];

fn digest(value: &[u8]) -> Digest {
    Sha256::digest(value).into()
}

/// One secret setting: its current value and, during a rotation, the previous value until an
/// expiry. Only digests are kept.
#[derive(Clone)]
pub struct CallbackSecret {
    name: SecretName,
    current: Digest,
    previous: Option<(Digest, OffsetDateTime)>,
}

impl std::fmt::Debug for CallbackSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSecret")
            .field("name", &self.name.setting())
            .field("previous_until", &self.previous.map(|(_, until)| until))
            .finish_non_exhaustive()
    }
}

impl CallbackSecret {
    /// A secret without a previous value.
    pub fn new(name: SecretName, current: &SecretString) -> Self {
        Self {
            name,
            current: digest(current.expose_secret().as_bytes()),
            previous: None,
        }
    }

    /// Also takes `previous` until `until`.
    pub fn with_previous(mut self, previous: &SecretString, until: OffsetDateTime) -> Self {
        self.previous = Some((digest(previous.expose_secret().as_bytes()), until));
        self
    }

    pub fn name(&self) -> SecretName {
        self.name
    }

    /// When the previous value stops being taken, if there is one.
    pub fn previous_until(&self) -> Option<OffsetDateTime> {
        self.previous.map(|(_, until)| until)
    }

    /// Which value `given` is, at `now`. Both comparisons always run, in constant time.
    fn matches(&self, given: &Digest, now: OffsetDateTime) -> Option<Generation> {
        let current = bool::from(self.current.ct_eq(given));
        let previous = self
            .previous
            .is_some_and(|(value, until)| bool::from(value.ct_eq(given)) & (now < until));
        if current {
            Some(Generation::Current)
        } else if previous {
            Some(Generation::Previous)
        } else {
            None
        }
    }
}

/// A callback's secret, checked: which setting and value it matched, and the query's other
/// parameters (decoded strictly, as the body is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub secret: SecretName,
    pub generation: Generation,
    pub rest: FormFields,
}

/// Checks `?secret=` against the secrets a route takes (its own first, then any it also
/// accepts) and returns which matched with the other query parameters. A query that cannot be
/// read is refused as a wrong secret: nothing is learned from it. The name is matched decoded
/// (`s%65cret=` is `secret=`), so the value found here is the one the archive never keeps.
pub fn check_callback_secret(
    query: &str,
    accepted: &[&CallbackSecret],
    now: OffsetDateTime,
) -> Result<Authenticated, BadSecret> {
    let mut rest = parse_form(query.as_bytes()).map_err(|_| BadSecret)?;
    let given = rest.remove("secret").ok_or(BadSecret)?;
    let given = digest(given.as_bytes());
    // Every candidate is compared, so the time taken does not say which one came close.
    let mut found = None;
    for secret in accepted {
        let matched = secret.matches(&given, now);
        if found.is_none() {
            found = matched.map(|generation| (secret.name, generation));
        }
    }
    let (secret, generation) = found.ok_or(BadSecret)?;
    Ok(Authenticated {
        secret,
        generation,
        rest,
    })
}

/// Says once per process, as a WARN, that the platform secret came on a route a viewer's player
/// calls: the URL in the Kollus console should carry the route's own secret (README, "Callback
/// secrets", the upgrade steps). The caller counts every such request in its metrics.
pub fn warn_platform_secret_on_player_route(route: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            route,
            "a player callback carried CALLBACK_SECRET, the platform secret: viewers can read \
             this URL. Put the route's own secret in the Kollus console (README, \"Callback \
             secrets\") and rotate CALLBACK_SECRET; said once, counted in \
             callback_auth_total{{secret=\"platform\"}}"
        );
    }
}

/// Refuses two settings with one value: each secret must open only its own routes. `values`
/// are (setting name, value) pairs, previous values included.
pub fn ensure_distinct(values: &[(&str, &SecretString)]) -> Result<(), String> {
    for (i, (a, va)) in values.iter().enumerate() {
        for (b, vb) in &values[i + 1..] {
            let equal =
                digest(va.expose_secret().as_bytes()).ct_eq(&digest(vb.expose_secret().as_bytes()));
            if bool::from(equal) {
                return Err(format!(
                    "{a} and {b} have the same value: each secret must open only its own \
                     routes (README, \"Callback secrets\"); give each its own"
                ));
            }
        }
    }
    Ok(())
}

/// The longest a previous value may stay accepted after a rotation: Kollus retries for 15
/// minutes, and a day leaves room for a deployment; longer would keep a leaked value alive.
pub const MAX_PREVIOUS_OVERLAP: time::Duration = time::Duration::DAY;

/// Builds a secret from its settings (`NAME`, `NAME_PREVIOUS`, `NAME_PREVIOUS_UNTIL`), checked:
/// a previous value needs an expiry at most [`MAX_PREVIOUS_OVERLAP`] after `now`, differs from
/// the current one, and one already expired is dropped (with a WARN, since the setting can go).
pub fn rotating(
    name: SecretName,
    current: &SecretString,
    previous: Option<&SecretString>,
    until: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<CallbackSecret, String> {
    let setting = name.setting();
    let secret = CallbackSecret::new(name, current);
    match (previous, until) {
        (None, None) => Ok(secret),
        (None, Some(_)) => Err(format!(
            "{setting}_PREVIOUS_UNTIL is set without {setting}_PREVIOUS"
        )),
        (Some(_), None) => Err(format!(
            "{setting}_PREVIOUS needs {setting}_PREVIOUS_UNTIL: the RFC 3339 time it stops \
             being accepted, at most a day ahead"
        )),
        (Some(previous), Some(until)) => {
            ensure_distinct(&[
                (setting, current),
                (&format!("{setting}_PREVIOUS"), previous),
            ])?;
            if until > now + MAX_PREVIOUS_OVERLAP {
                return Err(format!(
                    "{setting}_PREVIOUS_UNTIL is more than a day ahead: a rotation's overlap \
                     only needs to cover Kollus's retries (15 minutes) and a deployment"
                ));
            }
            if until <= now {
                tracing::warn!(
                    setting,
                    "{setting}_PREVIOUS expired at {until}; it is no longer accepted and the \
                     setting can be removed"
                );
                return Ok(secret);
            }
            tracing::info!(setting, %until, "{setting}_PREVIOUS is accepted until its expiry");
            Ok(secret.with_previous(previous, until))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    #[test]
    fn only_the_exact_secret_passes_and_the_rest_of_the_query_is_kept() {
        let secret = CallbackSecret::new(SecretName::Platform, &s("0123456789abcdef"));
        let now = OffsetDateTime::now_utc();
        let ok = check_callback_secret("secret=0123456789abcdef&x=1", &[&secret], now).unwrap();
        assert_eq!(ok.rest.len(), 1);
        assert_eq!(ok.rest["x"], "1");
        assert_eq!(ok.secret, SecretName::Platform);
        assert_eq!(ok.generation, Generation::Current);
        for wrong in [
            "",
            "x=1",
            "secret=",
            "secret=0123456789abcde",
            "secret=0123456789abcdefg",
            "secret=0123456789abcdef%00",
            "secret=0123456789abcdef&secret=0123456789abcdef",
            "secret=0123456789abcdef&y=%FF",
        ] {
            assert_eq!(
                check_callback_secret(wrong, &[&secret], now),
                Err(BadSecret),
                "{wrong}"
            );
        }
    }

    #[test]
    fn an_encoded_name_is_the_same_parameter() {
        let secret = CallbackSecret::new(SecretName::Lms, &s("0123456789abcdef"));
        let ok = check_callback_secret(
            "s%65cret=0123456789abcdef&a=1",
            &[&secret],
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert!(!ok.rest.contains_key("secret") && !ok.rest.contains_key("s%65cret"));
    }

    #[test]
    fn a_route_takes_only_the_secrets_it_is_given_and_says_which_matched() {
        let now = OffsetDateTime::now_utc();
        let platform = CallbackSecret::new(SecretName::Platform, &s("platform-secret-0001"));
        let lms = CallbackSecret::new(SecretName::Lms, &s("lms-secret-000000001"));
        // A platform route: the LMS secret opens nothing.
        assert_eq!(
            check_callback_secret("secret=lms-secret-000000001", &[&platform], now),
            Err(BadSecret)
        );
        // The LMS route takes its own and the platform secret, and says which.
        let own = check_callback_secret("secret=lms-secret-000000001", &[&lms, &platform], now);
        assert_eq!(own.unwrap().secret, SecretName::Lms);
        let strong = check_callback_secret("secret=platform-secret-0001", &[&lms, &platform], now);
        assert_eq!(strong.unwrap().secret, SecretName::Platform);
    }

    #[test]
    fn a_previous_value_is_taken_until_its_expiry_and_never_after() {
        let now = OffsetDateTime::now_utc();
        let until = now + time::Duration::minutes(20);
        let secret = rotating(
            SecretName::Play,
            &s("new-play-secret-0001"),
            Some(&s("old-play-secret-0001")),
            Some(until),
            now,
        )
        .unwrap();
        let check = |q: &str, at| check_callback_secret(q, &[&secret], at).map(|a| a.generation);
        assert_eq!(
            check("secret=old-play-secret-0001", now),
            Ok(Generation::Previous)
        );
        assert_eq!(
            check(
                "secret=old-play-secret-0001",
                until - time::Duration::SECOND
            ),
            Ok(Generation::Previous)
        );
        assert_eq!(check("secret=old-play-secret-0001", until), Err(BadSecret));
        assert_eq!(
            check("secret=new-play-secret-0001", until),
            Ok(Generation::Current)
        );
    }

    #[test]
    fn a_rotation_is_refused_without_an_expiry_or_with_one_past_a_day() {
        let now = OffsetDateTime::now_utc();
        let (cur, old) = (s("current-secret-00001"), s("previous-secret-0001"));
        let err = rotating(SecretName::Platform, &cur, Some(&old), None, now).unwrap_err();
        assert!(err.contains("CALLBACK_SECRET_PREVIOUS_UNTIL"), "{err}");
        let far = now + time::Duration::hours(25);
        let err = rotating(SecretName::Platform, &cur, Some(&old), Some(far), now).unwrap_err();
        assert!(err.contains("more than a day"), "{err}");
        let err = rotating(SecretName::Platform, &cur, None, Some(now), now).unwrap_err();
        assert!(err.contains("without"), "{err}");
        let err = rotating(
            SecretName::Platform,
            &cur,
            Some(&cur),
            Some(now + time::Duration::HOUR),
            now,
        )
        .unwrap_err();
        assert!(err.contains("same value"), "{err}");
        // An expired previous value is dropped, not refused: the service still starts.
        let past = now - time::Duration::HOUR;
        let secret = rotating(SecretName::Platform, &cur, Some(&old), Some(past), now).unwrap();
        assert_eq!(secret.previous_until(), None);
    }

    #[test]
    fn two_settings_with_one_value_are_refused_by_name_and_never_by_value() {
        let a = s("the-one-value-00001");
        let b = s("another-value-00001");
        ensure_distinct(&[("CALLBACK_SECRET", &a), ("LMS_CALLBACK_SECRET", &b)]).unwrap();
        let err = ensure_distinct(&[
            ("CALLBACK_SECRET", &a),
            ("LMS_CALLBACK_SECRET", &b),
            ("PLAY_CALLBACK_SECRET", &a),
        ])
        .unwrap_err();
        assert!(
            err.contains("CALLBACK_SECRET and PLAY_CALLBACK_SECRET"),
            "{err}"
        );
        assert!(!err.contains("the-one-value"), "{err}");
    }
}
