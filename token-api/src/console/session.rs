//! Who is signed in to the console: a server-side session (`console_sessions`) referenced by a
//! random id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` unless
//! `CONSOLE_INSECURE_COOKIE`). The table keeps only the id's SHA-256; a session ends when it
//! expires, on sign-out, or when the key that opened it is no longer configured with the
//! `console` scope (a SIGHUP reload). Each session carries the CSRF token its forms echo; the
//! sign-in form, before any session, uses a double-submit cookie instead.

use actix_web::http::header;
use actix_web::HttpRequest;
use deadpool_postgres::Pool;
use rand::RngCore as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use crate::auth::{ApiScope, KeyRing};

/// The session cookie.
pub const SESSION_COOKIE: &str = "console_session";
/// The sign-in form's CSRF cookie (double submit: the form carries the same value).
pub const LOGIN_CSRF_COOKIE: &str = "console_login_csrf";

/// A signed-in agent, as a page sees it.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The name of the API key that signed in (never the key).
    pub key_name: String,
    pub csrf_token: String,
}

/// 32 random bytes, hex: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn id_hash(id: &str) -> Vec<u8> {
    sha2::Sha256::digest(id.as_bytes()).to_vec()
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// A `Set-Cookie` value for the console's cookies: `HttpOnly`, `SameSite=Strict`, scoped to
/// `/console`, `Secure` unless `insecure`; `max_age` 0 removes it.
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

/// Opens a session for the key named `key_name` (fingerprint `print`); returns the id for the
/// cookie and the session.
pub async fn open(
    pool: &Pool,
    key_name: &str,
    print: &[u8],
    hours: u32,
) -> anyhow::Result<(String, Agent)> {
    let id = random_token();
    let csrf_token = random_token();
    let now = OffsetDateTime::now_utc();
    let expires = now + time::Duration::hours(i64::from(hours));
    let client = pool.get().await?;
    // Expired sessions go as new ones come: the table holds live sessions only.
    client
        .execute(
            "DELETE FROM console_sessions WHERE expires_at <= $1",
            &[&now],
        )
        .await?;
    client
        .execute(
            "INSERT INTO console_sessions (id_hash, key_name, key_fingerprint, csrf_token, \
                 created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
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
    Ok((
        id,
        Agent {
            key_name: key_name.to_owned(),
            csrf_token,
        },
    ))
}

/// The request's session, if it has one that is live and whose key is still configured with
/// the `console` scope. A session whose key was revoked is deleted on sight.
pub async fn find(pool: &Pool, keys: &KeyRing, req: &HttpRequest) -> anyhow::Result<Option<Agent>> {
    let Some(id) = cookie(req, SESSION_COOKIE) else {
        return Ok(None);
    };
    let client = pool.get().await?;
    let hash = id_hash(&id);
    let Some(row) = client
        .query_opt(
            "SELECT key_name, key_fingerprint, csrf_token FROM console_sessions \
             WHERE id_hash = $1 AND expires_at > now()",
            &[&hash],
        )
        .await?
    else {
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
    }))
}

/// Deletes the request's session (sign-out).
pub async fn close(pool: &Pool, req: &HttpRequest) -> anyhow::Result<()> {
    if let Some(id) = cookie(req, SESSION_COOKIE) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_strict_and_secure_unless_asked() {
        let c = set_cookie(SESSION_COOKIE, "abc", 60, false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie(SESSION_COOKIE, "abc", 60, true).contains("Secure"));
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 64);
        assert!(same_token("x", "x") && !same_token("x", "y") && !same_token("", ""));
    }
}
