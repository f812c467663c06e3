//! What the console needs, as its own `web::Data`: the pool, the keys in force (to refuse a
//! session whose key a reload dropped), the time zone, the sessions as configured, who our
//! proxies are, and the sign-in failure limits ([`SignInLimits`]).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use kollus_common::client_addr::Networks;
use moka::policy::EvictionPolicy;
use secrecy::ExposeSecret as _;
use time_tz::Tz;

use super::session::{bucket, Sessions};
use crate::auth::KeyRing;
use crate::configuration::{ConsoleSettings, Lang};
use crate::metrics::Metrics;

/// Failed sign-ins an address may make at once; then one more each [`SIGN_IN_FAILURE_EVERY`].
pub const SIGN_IN_FAILURES_BURST: u32 = 10;
/// After the burst, one failed sign-in is allowed per this long: 10 a minute.
pub const SIGN_IN_FAILURE_EVERY: Duration = Duration::from_secs(6);
/// Client addresses (or IPv6 /64s) whose failures are remembered; past this many, the one that
/// failed least recently is forgotten.
pub const SIGN_IN_ADDRESSES: u64 = 10_000;

/// What the console needs, as its own `web::Data`.
pub struct Console {
    pub pool: Pool,
    pub keys: KeyRing,
    pub tz: &'static Tz,
    /// Lifetimes, cookies and the sign-in form's signing key.
    pub sessions: Sessions,
    pub insecure_cookie: bool,
    /// The language refused viewers read (`PLAY_MESSAGE_LANG`), to show what they saw.
    pub message_lang: Lang,
    /// `TRUSTED_PROXIES`: who the client is, behind our own proxies.
    pub proxies: Networks,
    /// Failed sign-ins by client address.
    pub sign_ins: SignInLimits,
    pub metrics: Metrics,
}

impl Console {
    pub fn new(
        pool: Pool,
        keys: KeyRing,
        settings: &ConsoleSettings,
        message_lang: Lang,
        proxies: Networks,
        metrics: Metrics,
        security_key: &secrecy::SecretString,
    ) -> anyhow::Result<Self> {
        let tz = time_tz::timezones::get_by_name(&settings.time_zone).ok_or_else(|| {
            anyhow::anyhow!(
                "CONSOLE_TIME_ZONE {:?} is no IANA time zone",
                settings.time_zone
            )
        })?;
        settings.check().map_err(anyhow::Error::msg)?;
        Ok(Self {
            pool,
            keys,
            tz,
            sessions: Sessions::new(
                settings.session_hours,
                settings.idle_minutes,
                settings.insecure_cookie,
                super::session::login_key(security_key.expose_secret().as_bytes()),
            )?,
            insecure_cookie: settings.insecure_cookie,
            message_lang,
            proxies,
            sign_ins: SignInLimits::new(SIGN_IN_ADDRESSES),
            metrics,
        })
    }
}

/// Failed sign-ins by client bucket ([`bucket`]), as a GCRA: each failure pushes the bucket's
/// theoretical arrival time on by [`SIGN_IN_FAILURE_EVERY`] (from now, if it lies behind), and a
/// bucket whose time lies further ahead than the burst allows is refused before any key is
/// compared. Successes change nothing. Bounded: at most `capacity` buckets, the least recently failed evicted first
/// (moka's LRU policy, O(1), no sweep on the request path); an entry a burst and a period old
/// says nothing any more and expires.
pub struct SignInLimits {
    ahead: moka::sync::Cache<IpAddr, Instant>,
    /// Refusals recorded in the access record this minute, by client bucket.
    recorded: moka::sync::Cache<IpAddr, std::sync::Arc<std::sync::atomic::AtomicU32>>,
    /// Refusals recorded this minute from every client: (the minute's start, how many).
    recorded_in_all: std::sync::Mutex<(Instant, u32)>,
    /// Refusals past either cap since the last one recorded: folded into the next row's count.
    unrecorded: std::sync::atomic::AtomicU64,
}

/// Refused sign-ins recorded in the access record per minute from all clients together: many
/// addresses (a botnet, IPv6 /64s) write no more than this either. The rest are counted
/// (`console_sign_in_failures_total`) and folded into the next row's `count`.
pub const REFUSALS_RECORDED_PER_MINUTE_IN_ALL: u32 = 120;

/// Refused sign-ins recorded in the access record per client bucket and minute: a client posting
/// refused forms as fast as it can (a CSRF refusal or one past its limit costs it nothing) writes
/// no more than this to a log nobody may delete from; the rest are counted
/// (`console_sign_in_failures_total`) and logged, not recorded.
pub const REFUSALS_RECORDED_PER_MINUTE: u32 = 20;

impl SignInLimits {
    pub fn new(capacity: u64) -> Self {
        Self {
            ahead: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .eviction_policy(EvictionPolicy::lru())
                .time_to_live(SIGN_IN_FAILURE_EVERY * (SIGN_IN_FAILURES_BURST + 1))
                .build(),
            recorded: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(60))
                .build(),
            recorded_in_all: std::sync::Mutex::new((Instant::now(), 0)),
            unrecorded: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether a refusal of `client` is recorded, and as how many refusals (`Some(count)`: this
    /// one and those past the caps since the last recorded): at most
    /// [`REFUSALS_RECORDED_PER_MINUTE`] per client bucket (counted from its first refusal) and
    /// [`REFUSALS_RECORDED_PER_MINUTE_IN_ALL`] from all clients in a minute. `None`: folded into
    /// the next one recorded.
    pub fn record_refusal(&self, client: Option<IpAddr>, now: Instant) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let per_client = client.is_none_or(|ip| {
            self.recorded
                .get_with(bucket(ip), Default::default)
                .fetch_add(1, Relaxed)
                < REFUSALS_RECORDED_PER_MINUTE
        });
        let in_all = per_client && {
            let mut all = self
                .recorded_in_all
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if now.saturating_duration_since(all.0) >= Duration::from_secs(60) {
                *all = (now, 0);
            }
            all.1 += 1;
            all.1 <= REFUSALS_RECORDED_PER_MINUTE_IN_ALL
        };
        if in_all {
            Some(1 + self.unrecorded.swap(0, Relaxed))
        } else {
            self.unrecorded.fetch_add(1, Relaxed);
            None
        }
    }

    /// Whether `client` may try a key at `now`; `Err` holds how long until it may. A failure
    /// now would put its time more than a burst ahead exactly when it already lies more than a
    /// burst less one period ahead (GCRA's tolerance).
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let tolerance = SIGN_IN_FAILURE_EVERY * (SIGN_IN_FAILURES_BURST - 1);
        let ahead = self
            .ahead
            .get(&bucket(client))
            .map_or(Duration::ZERO, |tat| tat.saturating_duration_since(now));
        if ahead > tolerance {
            Err(ahead - tolerance)
        } else {
            Ok(())
        }
    }

    /// Counts a failed sign-in of `client` at `now`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        self.ahead.entry(bucket(client)).and_upsert_with(|was| {
            was.map_or(now, |e| (*e.value()).max(now)) + SIGN_IN_FAILURE_EVERY
        });
    }

    /// Buckets held, once pending evictions are done (tests, and the bound's check).
    pub fn held(&self) -> u64 {
        self.ahead.run_pending_tasks();
        self.ahead.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_of_failures_then_one_per_period_and_other_buckets_untouched() {
        let limits = SignInLimits::new(100);
        let t0 = Instant::now();
        for _ in 0..SIGN_IN_FAILURES_BURST {
            assert_eq!(limits.check(ip("192.0.2.1"), t0), Ok(()));
            limits.failed(ip("192.0.2.1"), t0);
        }
        assert_eq!(
            limits.check(ip("192.0.2.1"), t0),
            Err(SIGN_IN_FAILURE_EVERY)
        );
        let spread = SignInLimits::new(100);
        for i in 0..SIGN_IN_FAILURES_BURST {
            // Ten failures over 4.5 s: the eleventh still waits.
            spread.failed(ip("192.0.2.3"), t0 + Duration::from_millis(500) * i);
        }
        let eleventh = t0 + Duration::from_millis(4_600);
        assert_eq!(
            spread.check(ip("192.0.2.3"), eleventh),
            Err(Duration::from_millis(1_400))
        );
        assert_eq!(limits.check(ip("192.0.2.2"), t0), Ok(()), "another client");
        let later = t0 + SIGN_IN_FAILURE_EVERY;
        assert_eq!(limits.check(ip("192.0.2.1"), later), Ok(()), "one more");
        limits.failed(ip("192.0.2.1"), later);
        assert!(limits.check(ip("192.0.2.1"), later).is_err());
        let rested = later + SIGN_IN_FAILURE_EVERY * SIGN_IN_FAILURES_BURST;
        for _ in 0..SIGN_IN_FAILURES_BURST {
            assert_eq!(
                limits.check(ip("192.0.2.1"), rested),
                Ok(()),
                "a full burst again"
            );
            limits.failed(ip("192.0.2.1"), rested);
        }
    }

    #[test]
    fn refusals_are_recorded_up_to_the_minutes_cap_per_bucket() {
        let limits = SignInLimits::new(100);
        let now = Instant::now();
        let recorded = (0..REFUSALS_RECORDED_PER_MINUTE + 5)
            .filter(|_| {
                limits
                    .record_refusal(Some(ip("2001:db8::1")), now)
                    .is_some()
            })
            .count();
        assert_eq!(recorded, REFUSALS_RECORDED_PER_MINUTE as usize);
        assert!(
            limits
                .record_refusal(Some(ip("2001:db8::2")), now)
                .is_none(),
            "the same /64"
        );
        assert_eq!(
            limits.record_refusal(Some(ip("192.0.2.9")), now),
            Some(7),
            "another client, carrying the six folded"
        );
        assert!(limits.record_refusal(None, Instant::now()).is_some());
    }

    #[test]
    fn refusals_from_many_clients_are_recorded_up_to_the_minutes_cap_in_all() {
        let limits = SignInLimits::new(100_000);
        let now = Instant::now();
        let clients = (0..u32::from(u16::MAX))
            .map(|n| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n)));
        let recorded: Vec<u64> = clients
            .take(REFUSALS_RECORDED_PER_MINUTE_IN_ALL as usize + 30)
            .filter_map(|c| limits.record_refusal(Some(c), now))
            .collect();
        assert_eq!(recorded.len(), REFUSALS_RECORDED_PER_MINUTE_IN_ALL as usize);
        assert!(recorded.iter().all(|&n| n == 1));
        // A minute on, the next refusal is recorded, standing for the thirty folded too.
        let later = now + Duration::from_secs(60);
        assert_eq!(
            limits.record_refusal(Some(ip("192.0.2.77")), later),
            Some(31)
        );
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_bucket_and_mapped_v4_is_v4() {
        assert_eq!(
            bucket(ip("2001:db8:1:2::1")),
            bucket(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(bucket(ip("2001:db8:1:2::1")), bucket(ip("2001:db8:1:3::1")));
        assert_eq!(bucket(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(bucket(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn the_map_holds_at_most_its_capacity_and_keeps_the_latest_failures() {
        let limits = SignInLimits::new(100);
        let now = Instant::now();
        for i in 0..5_000u32 {
            limits.failed(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), now);
        }
        let held = limits.held();
        assert!(held <= 100, "{held} buckets held");
        let last = ip("192.0.2.200");
        for _ in 0..SIGN_IN_FAILURES_BURST {
            limits.failed(last, now);
        }
        assert!(
            limits.check(last, now).is_err(),
            "the latest failer is still limited"
        );
    }
}
