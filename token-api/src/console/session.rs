//! Who is signed in to the console: a server-side session (`console_sessions`) referenced by a
//! random id in an `HttpOnly`, `SameSite=Strict` browser-session cookie (no `Max-Age`: it goes
//! when the browser closes), named `__Host-console_session` so the browser insists on `Secure`,
//! `Path=/` and no `Domain` and no sibling host can set or shadow it. Under
//! `CONSOLE_INSECURE_COOKIE` (plain HTTP on one's own machine) a prefixed cookie cannot be set,
//! so the name is unprefixed there and `Secure` is dropped.
//!
//! The table keeps only the id's SHA-256. A session ends at its absolute lifetime
//! (`CONSOLE_SESSION_HOURS`), when idle longer than `CONSOLE_IDLE_MINUTES` (each page moves
//! `last_seen_at`), on sign-out, when the same browser signs in again (rotation), or when the key
//! that opened it is no longer configured with the `console` scope (a SIGHUP reload). Each
//! session carries the CSRF token its forms echo.
//!
//! The sign-in form, before any session, carries a token signed under a key derived from
//! `KOLLUS_SECURITY_KEY` (every replica holds it) over a nonce, an issue time (checked for age)
//! and the client's address bucket (`bucket`: the address `TRUSTED_PROXIES` finds, an IPv6
//! address by its /64); the form and a cookie both hold it. What each part stops:
//! - `SameSite=Strict`: a form posted from another site carries no cookie, so it is refused
//!   (a sibling host is the same site: this alone does not stop it).
//! - The `__Host-` prefix: no sibling host (`evil.example.com` beside `console.example.com`) and
//!   no plain-HTTP answer can set or shadow the cookie, so over HTTPS no other host can toss a
//!   cookie of its choosing into an agent's browser.
//! - The signature: a cookie and form value someone made up are refused.
//! - The address in the signature: a genuine token anyone may fetch from `GET /console/login`
//!   (valid for an hour), tossed into another client's browser, is refused there (login CSRF:
//!   signing the victim in as the attacker). It does not stop a tosser who shares the victim's
//!   bucket (one NAT address, one IPv6 /64, or every client when a proxy in front is not listed
//!   in `TRUSTED_PROXIES`); under `CONSOLE_INSECURE_COOKIE` the cookies are unprefixed and this
//!   binding is all that stands against a tossed one.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::HttpRequest;
use deadpool_postgres::Pool;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use crate::access_log::record::{AccessLog, Action, Entry};
use crate::auth::{ApiScope, KeyRing};

/// How long a sign-in form may be posted after it was served.
pub const LOGIN_FORM_LIFETIME: time::Duration = time::Duration::hours(1);

/// The cookies of earlier versions, scoped to `/console` and persistent: cleared with the sign-in
/// form and at sign-in, so an old one cannot shadow the new for long (a browser sends the longer
/// path's cookie first; under `CONSOLE_INSECURE_COOKIE` the names are the same).
const LEGACY_COOKIES: [&str; 2] = ["console_session", "console_login_csrf"];

/// A signed-in agent, as a page sees it.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The name of the API key that signed in (never the key).
    pub key_name: String,
    pub csrf_token: String,
    /// The session id's SHA-256 (`console_sessions.id_hash`): what the access record names the
    /// session by.
    pub session_hash: Vec<u8>,
}

/// 32 random bytes, hex: session ids, CSRF tokens, nonces.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn id_hash(id: &str) -> Vec<u8> {
    sha2::Sha256::digest(id.as_bytes()).to_vec()
}

/// Every value of the cookie `name` in the request's `Cookie` headers, in the order sent (a
/// browser may send several of one name: other paths, or an old one beside the new).
pub fn cookies<'r>(req: &'r HttpRequest, name: &'r str) -> impl Iterator<Item = String> + 'r {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// A cookie's value from the request's `Cookie` headers: the first sent of that name.
pub fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    cookies(req, name).next()
}

/// A `Set-Cookie` value for the console's persistent cookies (the language): `HttpOnly`,
/// `SameSite=Strict`, scoped to `/console`, `Secure` unless `insecure`; `max_age` 0 removes it.
pub fn set_cookie(name: &str, value: &str, max_age: i64, insecure: bool) -> String {
    format!(
        "{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if insecure { "" } else { "; Secure" }
    )
}

/// Whether `given` equals `expected`, in constant time; an empty token never matches.
pub fn same_token(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Who a client is, as far as its address tells: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber commonly holds a whole /64, so its addresses are one client). The sign-in form's
/// token is bound to it ([`Sessions::login_token`]), and failed sign-ins count by it
/// (`state::SignInLimits`).
pub fn bucket(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

/// The console's sessions as configured: their lifetimes, their cookies, and the key the
/// sign-in form's tokens are signed with ([`login_key`]: every replica sharing
/// `KOLLUS_SECURITY_KEY` holds the same one, so a form served by one replica signs in at
/// another, and after a restart).
pub struct Sessions {
    /// `CONSOLE_SESSION_HOURS`, checked to be 1 to 12.
    pub hours: u32,
    /// `CONSOLE_IDLE_MINUTES`, checked to be 1 to 720.
    pub idle_minutes: i32,
    /// `CONSOLE_INSECURE_COOKIE`: no `Secure`, no `__Host-` prefix.
    pub insecure: bool,
    login_key: [u8; 32],
}

/// The sign-in form's signing key, derived from `secret` (the Kollus security key every
/// replica holds) under a label of its own, so it is no key Kollus or a player sees and no
/// token signed with it passes for anything else.
pub fn login_key(secret: &[u8]) -> [u8; 32] {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"kollus-pipeline console sign-in form key v1");
    mac.finalize().into_bytes().into()
}

impl Sessions {
    pub fn new(
        hours: u32,
        idle_minutes: u32,
        insecure: bool,
        login_key: [u8; 32],
    ) -> anyhow::Result<Self> {
        Ok(Self {
            hours,
            idle_minutes: i32::try_from(idle_minutes)
                .map_err(|_| anyhow::anyhow!("CONSOLE_IDLE_MINUTES {idle_minutes} is too large"))?,
            insecure,
            login_key,
        })
    }

    /// The session cookie's name: `__Host-` prefixed unless insecure.
    pub fn cookie_name(&self) -> &'static str {
        if self.insecure {
            "console_session"
        } else {
            "__Host-console_session"
        }
    }

    /// The sign-in form's CSRF cookie's name: `__Host-` prefixed unless insecure.
    pub fn login_cookie_name(&self) -> &'static str {
        if self.insecure {
            "console_login_csrf"
        } else {
            "__Host-console_login_csrf"
        }
    }

    /// A browser-session `Set-Cookie` (no `Max-Age` or `Expires`): `HttpOnly`, `SameSite=Strict`,
    /// `Path=/` and no `Domain` (as `__Host-` requires), `Secure` unless insecure.
    pub fn set_cookie(&self, name: &str, value: &str) -> String {
        format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Strict{}",
            if self.insecure { "" } else { "; Secure" }
        )
    }

    /// The `Set-Cookie` that removes the cookie `name` set by [`Self::set_cookie`].
    pub fn removal(&self, name: &str) -> String {
        format!("{}; Max-Age=0", self.set_cookie(name, ""))
    }

    /// Removals of the cookies earlier versions set under `/console`.
    pub fn legacy_removals(&self) -> impl Iterator<Item = String> + '_ {
        LEGACY_COOKIES
            .iter()
            .map(|name| set_cookie(name, "", 0, self.insecure))
    }

    fn login_mac(&self, nonce: &str, issued: i64, client: Option<IpAddr>) -> Hmac<sha2::Sha256> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.login_key)
            .expect("HMAC takes a key of any length");
        // v2: bound to the client's bucket; a v1 token (unbound) no longer holds.
        mac.update(b"kollus console sign-in v2\0");
        mac.update(nonce.as_bytes());
        mac.update(b"\0");
        mac.update(issued.to_string().as_bytes());
        mac.update(b"\0");
        match client {
            Some(ip) => mac.update(bucket(ip).to_string().as_bytes()),
            None => mac.update(b"unknown"),
        }
        mac
    }

    /// A sign-in form's CSRF token, issued at `now` to `client` (the address `TRUSTED_PROXIES`
    /// finds; `None` when there is no peer address): `nonce.issued.mac`, the MAC also over the
    /// client's bucket ([`bucket`]: IPv6 by /64), which the token does not show.
    pub fn login_token(&self, now: OffsetDateTime, client: Option<IpAddr>) -> String {
        let nonce = random_token();
        let issued = now.unix_timestamp();
        let mac = self
            .login_mac(&nonce, issued, client)
            .finalize()
            .into_bytes();
        format!("{nonce}.{issued}.{}", hex::encode(mac))
    }

    /// Whether `token` is one this process (or a replica sharing `KOLLUS_SECURITY_KEY`) signed
    /// for `client`'s bucket, at most [`LOGIN_FORM_LIFETIME`] before `now`.
    pub fn login_token_holds(
        &self,
        token: &str,
        now: OffsetDateTime,
        client: Option<IpAddr>,
    ) -> bool {
        let mut parts = token.split('.');
        let (Some(nonce), Some(issued), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Ok(issued), Ok(mac)) = (issued.parse::<i64>(), hex::decode(mac)) else {
            return false;
        };
        let age = now.unix_timestamp().saturating_sub(issued);
        (0..=LOGIN_FORM_LIFETIME.whole_seconds()).contains(&age)
            && self
                .login_mac(nonce, issued, client)
                .verify_slice(&mac)
                .is_ok()
    }

    /// The request's session id, from its cookie.
    pub fn id_of(&self, req: &HttpRequest) -> Option<String> {
        cookie(req, self.cookie_name())
    }

    /// Opens a session for the key named `key_name` (fingerprint `print`), ending the session
    /// `replaces` names (the one the signing-in browser held: rotation) and any past its
    /// lifetime or idle time, and records the sign-in from `from` in the access record, in
    /// the same transaction (no session opens unrecorded); returns the id for the cookie and
    /// the session.
    pub async fn open(
        &self,
        pool: &Pool,
        log: &AccessLog,
        key_name: &str,
        print: &[u8],
        replaces: Option<&str>,
        from: Option<IpAddr>,
    ) -> anyhow::Result<(String, Agent)> {
        let id = random_token();
        let csrf_token = random_token();
        let now = OffsetDateTime::now_utc();
        let expires = now + time::Duration::hours(i64::from(self.hours));
        let replaced = replaces.map(id_hash);
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        // Ended sessions go as new ones come: the table holds live sessions only.
        tx.execute(
            "DELETE FROM console_sessions WHERE expires_at <= $1 \
                 OR last_seen_at <= $1 - make_interval(mins => $2) OR id_hash = $3",
            &[&now, &self.idle_minutes, &replaced],
        )
        .await?;
        tx.execute(
            "INSERT INTO console_sessions (id_hash, key_name, key_fingerprint, csrf_token, \
                 created_at, expires_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $5)",
            &[
                &id_hash(&id),
                &key_name,
                &print,
                &csrf_token,
                &now,
                &expires,
            ],
        )
        .await?;
        let session_hash = id_hash(&id);
        log.record(
            &*tx,
            Entry {
                session: Some(&session_hash),
                client_addr: from,
                ..Entry::new(Action::SignIn, key_name)
            },
        )
        .await?;
        tx.commit().await?;
        Ok((
            id,
            Agent {
                key_name: key_name.to_owned(),
                csrf_token,
                session_hash,
            },
        ))
    }

    /// The request's session, if it has one within its lifetime, not idle too long, and whose
    /// key is still configured with the `console` scope; finding it moves its `last_seen_at`.
    /// A session idle too long, past its lifetime or whose key was revoked is deleted on sight.
    pub async fn find(
        &self,
        pool: &Pool,
        keys: &KeyRing,
        req: &HttpRequest,
    ) -> anyhow::Result<Option<Agent>> {
        let Some(id) = self.id_of(req) else {
            return Ok(None);
        };
        let client = pool.get().await?;
        let hash = id_hash(&id);
        let Some(row) = client
            .query_opt(
                "UPDATE console_sessions SET last_seen_at = now() \
                 WHERE id_hash = $1 AND expires_at > now() \
                   AND last_seen_at > now() - make_interval(mins => $2) \
                 RETURNING key_name, key_fingerprint, csrf_token",
                &[&hash, &self.idle_minutes],
            )
            .await?
        else {
            // Idle too long or past its lifetime (or never ours): gone, so it cannot come back.
            if let Some(ended) = client
                .query_opt(
                    "DELETE FROM console_sessions WHERE id_hash = $1 RETURNING key_name",
                    &[&hash],
                )
                .await?
            {
                let key_name: String = ended.try_get("key_name")?;
                tracing::info!(
                    key = key_name,
                    "console session ended: idle too long or past its lifetime"
                );
            }
            return Ok(None);
        };
        let key_name: String = row.try_get("key_name")?;
        let print: Vec<u8> = row.try_get("key_fingerprint")?;
        if !keys.holds(&key_name, &print, ApiScope::Console) {
            tracing::warn!(
                key = key_name,
                "console session refused: its key is no longer configured with the console scope"
            );
            client
                .execute("DELETE FROM console_sessions WHERE id_hash = $1", &[&hash])
                .await?;
            return Ok(None);
        }
        Ok(Some(Agent {
            key_name,
            csrf_token: row.try_get("csrf_token")?,
            session_hash: hash,
        }))
    }

    /// Whether the request's session was opened by a key still configured with `scope` too (a
    /// page beyond `console`'s: the access record's review asks for `audit`). Read at each such
    /// page, so a reload that takes the scope away ends what it opened there.
    pub async fn key_holds(
        &self,
        pool: &Pool,
        keys: &KeyRing,
        req: &HttpRequest,
        scope: ApiScope,
    ) -> anyhow::Result<bool> {
        let Some(id) = self.id_of(req) else {
            return Ok(false);
        };
        let row = pool
            .get()
            .await?
            .query_opt(
                "SELECT key_name, key_fingerprint FROM console_sessions WHERE id_hash = $1",
                &[&id_hash(&id)],
            )
            .await?;
        Ok(match row {
            Some(r) => keys.holds(
                &r.try_get::<_, String>("key_name")?,
                &r.try_get::<_, Vec<u8>>("key_fingerprint")?,
                scope,
            ),
            None => false,
        })
    }

    /// Deletes the request's session (sign-out).
    pub async fn close(&self, pool: &Pool, req: &HttpRequest) -> anyhow::Result<()> {
        if let Some(id) = self.id_of(req) {
            pool.get()
                .await?
                .execute(
                    "DELETE FROM console_sessions WHERE id_hash = $1",
                    &[&id_hash(&id)],
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(insecure: bool) -> Sessions {
        Sessions::new(8, 30, insecure, login_key(b"a security key")).unwrap()
    }

    #[test]
    fn session_cookies_are_host_prefixed_browser_session_cookies_unless_insecure() {
        let s = sessions(false);
        let c = s.set_cookie(s.cookie_name(), "abc");
        assert!(c.starts_with("__Host-console_session=abc; "), "{c}");
        for attribute in ["; Path=/;", "HttpOnly", "SameSite=Strict", "Secure"] {
            assert!(c.contains(attribute), "{attribute} in {c}");
        }
        for absent in ["Max-Age", "Expires", "Domain"] {
            assert!(!c.contains(absent), "{absent} in {c}");
        }
        assert!(s.removal(s.cookie_name()).ends_with("Secure; Max-Age=0"));
        let plain = sessions(true);
        let c = plain.set_cookie(plain.cookie_name(), "abc");
        assert!(
            c.starts_with("console_session=abc; ") && !c.contains("Secure"),
            "{c}"
        );
        assert_eq!(plain.login_cookie_name(), "console_login_csrf");
        assert_eq!(s.login_cookie_name(), "__Host-console_login_csrf");
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 64);
        assert!(same_token("x", "x") && !same_token("x", "y") && !same_token("", ""));
    }

    #[test]
    fn login_tokens_hold_only_when_signed_here_and_young() {
        let s = sessions(false);
        let now = OffsetDateTime::now_utc();
        let a = Some("198.51.100.7".parse().unwrap());
        let token = s.login_token(now, a);
        assert!(s.login_token_holds(&token, now, a));
        assert!(s.login_token_holds(&token, now + time::Duration::minutes(59), a));
        assert!(
            !s.login_token_holds(&token, now + time::Duration::minutes(61), a),
            "too old"
        );
        assert!(
            !s.login_token_holds(&token, now - time::Duration::minutes(1), a),
            "issued in the future"
        );
        assert!(
            sessions(false).login_token_holds(&token, now, a),
            "a replica"
        );
        let elsewhere = Sessions::new(8, 30, false, login_key(b"another key")).unwrap();
        assert!(
            !elsewhere.login_token_holds(&token, now, a),
            "another security key"
        );
        // A token whose nonce or time was changed keeps its MAC and fails.
        let (nonce, rest) = token.split_once('.').unwrap();
        let flipped = if nonce.starts_with('0') { "1" } else { "0" };
        let other_nonce = format!("{flipped}{}.{rest}", &nonce[1..]);
        let (head, mac) = token.rsplit_once('.').unwrap();
        let (nonce, issued) = head.split_once('.').unwrap();
        let earlier = format!("{nonce}.{}.{mac}", issued.parse::<i64>().unwrap() - 1);
        for forged in [
            "",
            "aaaa",
            "aaaa.1.bbbb",
            &other_nonce,
            &earlier,
            &format!("{token}.x"),
        ] {
            assert!(!s.login_token_holds(forged, now, a), "{forged:?}");
        }
    }

    #[test]
    fn login_tokens_hold_only_for_the_bucket_they_were_served_to() {
        let s = sessions(false);
        let now = OffsetDateTime::now_utc();
        let ip = |a: &str| Some(a.parse::<IpAddr>().unwrap());
        let token = s.login_token(now, ip("198.51.100.7"));
        assert!(!s.login_token_holds(&token, now, ip("198.51.100.8")));
        assert!(!s.login_token_holds(&token, now, None));
        let v6 = s.login_token(now, ip("2001:db8:1:2::1"));
        assert!(s.login_token_holds(&v6, now, ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert!(!s.login_token_holds(&v6, now, ip("2001:db8:1:3::1")));
        let mapped = s.login_token(now, ip("::ffff:198.51.100.7"));
        assert!(s.login_token_holds(&mapped, now, ip("198.51.100.7")));
        let nowhere = s.login_token(now, None);
        assert!(s.login_token_holds(&nowhere, now, None));
        assert!(!s.login_token_holds(&nowhere, now, ip("198.51.100.7")));
    }
}
