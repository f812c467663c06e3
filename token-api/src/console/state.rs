//! What the console needs, as its own `web::Data`: the pool, the keys in force (to refuse a
//! session whose key a reload dropped), the time zone, the session settings, and the sign-in
//! rate limiter.

use std::net::IpAddr;
use std::num::NonZeroU32;

use deadpool_postgres::Pool;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use time_tz::Tz;

use crate::auth::KeyRing;
use crate::configuration::{ConsoleSettings, Lang};

/// Sign-in attempts allowed per client address: a burst of 10, then one every 6 seconds.
const SIGN_INS_PER_MINUTE: u32 = 10;

/// What the console needs, as its own `web::Data`.
pub struct Console {
    pub pool: Pool,
    pub keys: KeyRing,
    pub tz: &'static Tz,
    pub session_hours: u32,
    pub insecure_cookie: bool,
    /// The language refused viewers read (`PLAY_MESSAGE_LANG`), to show what they saw.
    pub message_lang: Lang,
    /// Sign-in attempts by client address.
    pub sign_ins: DefaultKeyedRateLimiter<IpAddr>,
}

impl Console {
    pub fn new(
        pool: Pool,
        keys: KeyRing,
        settings: &ConsoleSettings,
        message_lang: Lang,
    ) -> anyhow::Result<Self> {
        let tz = time_tz::timezones::get_by_name(&settings.time_zone).ok_or_else(|| {
            anyhow::anyhow!(
                "CONSOLE_TIME_ZONE {:?} is no IANA time zone",
                settings.time_zone
            )
        })?;
        let per_minute = NonZeroU32::new(SIGN_INS_PER_MINUTE).expect("a positive constant");
        Ok(Self {
            pool,
            keys,
            tz,
            session_hours: settings.session_hours,
            insecure_cookie: settings.insecure_cookie,
            message_lang,
            sign_ins: RateLimiter::keyed(Quota::per_minute(per_minute)),
        })
    }
}
