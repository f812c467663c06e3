//! Caller authentication and authorization (bottom layer: imports only `problem` and
//! `api_scope`).
//!
//! `Authorization: Bearer <key>` against named keys (`TOKEN_API_KEYS`, entries separated by `,`
//! or line breaks). Only each key's SHA-256 is kept, and a given key's digest is compared with
//! every one in constant time: digests all have the same length, so neither a key's length nor
//! its first differing byte shows in the timing. Each key carries scopes
//! (`name[read+export]:key`): an operation needs one, and a key without it gets 403 naming the
//! scope. A key given without scopes keeps every scope but `console` and
//! `tokens:playcallback_ignore` (the deployments before scopes keep working; startup logs a WARN
//! naming it). The keys live in a [`KeyRing`] that
//! `TOKEN_API_KEYS_FILE` reloads on SIGHUP.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use actix_web::HttpRequest;
use subtle::ConstantTimeEq as _;

pub use crate::api_scope::ApiScope;
use crate::problem::ApiError;

#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    pub scopes: BTreeSet<ApiScope>,
    /// Given without `[...]`: every scope but `console` and `tokens:playcallback_ignore`.
    pub unscoped: bool,
    /// The key's SHA-256 ([`fingerprint`]): all that is kept of it.
    digest: [u8; 32],
}

/// The configured keys. Debug shows names and scopes only.
#[derive(Clone)]
pub struct ApiKeys(Vec<ApiKey>);

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| {
                let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                format!("{}[{}]", k.name, scopes.join("+"))
            }))
            .finish()
    }
}

impl ApiKeys {
    /// Parses `name[scope+scope]:key,name2:key2`, entries separated by `,` or line breaks
    /// (`TOKEN_API_KEYS_FILE` may hold one per line). The scopes ride on the name, in `[...]`
    /// before the `:`, so a key may contain `:` (and a scope, `tokens:playcallback_ignore`).
    /// Refused: a name or key holding whitespace or a control character, a key under 16
    /// characters, a name given twice, one key under two names. Errors name the entry, never
    /// show a key.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut keys: Vec<ApiKey> = Vec::new();
        for entry in s
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (name, scopes, unscoped, key) = split_entry(entry)?;
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "key {name:?}: the name must not be empty nor hold whitespace or control characters"
                ));
            }
            if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "key {name:?}: the key holds whitespace or a control character (not shown)"
                ));
            }
            if key.len() < 16 {
                return Err(format!(
                    "key {name:?}: the key must be at least 16 characters"
                ));
            }
            if keys.iter().any(|k| k.name == name) {
                return Err(format!("key name {name:?} is given twice"));
            }
            let digest = fingerprint(key);
            if let Some(same) = keys.iter().find(|k| k.digest == digest) {
                return Err(format!(
                    "keys {:?} and {name:?} are the same key: give each caller its own",
                    same.name
                ));
            }
            keys.push(ApiKey {
                name: name.to_owned(),
                scopes,
                unscoped,
                digest,
            });
        }
        if keys.is_empty() {
            return Err("at least one name:key is required".into());
        }
        Ok(Self(keys))
    }

    /// Names of the keys given without scopes (they may do everything but the console).
    pub fn unscoped(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|k| k.unscoped)
            .map(|k| k.name.as_str())
            .collect()
    }

    /// The key the request carries, if it carries a valid one. Every configured key is
    /// compared, so timing does not tell which one matched.
    pub fn authenticate(&self, req: &HttpRequest) -> Option<&ApiKey> {
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim();
        self.by_key(given)
    }

    /// The key whose digest is `given`'s, comparing every configured one in constant time.
    fn by_key(&self, given: &str) -> Option<&ApiKey> {
        let given = fingerprint(given);
        let mut found = None;
        for k in &self.0 {
            if bool::from(k.digest.ct_eq(&given)) {
                found = Some(k);
            }
        }
        found
    }

    /// Logs a WARN naming each key given without scopes.
    pub fn warn_unscoped(&self) {
        for name in self.unscoped() {
            tracing::warn!(
                key = name,
                "API key {name:?} has no scopes: it may do everything but the console and \
                 signing playcallback_ignore; give it only what it needs, as \
                 {name}[tokens+read]:..."
            );
        }
    }
}

/// The keys in force, shared by every worker; replaced whole on reload.
#[derive(Clone)]
pub struct KeyRing(Arc<RwLock<ApiKeys>>);

impl KeyRing {
    pub fn new(keys: ApiKeys) -> Self {
        Self(Arc::new(RwLock::new(keys)))
    }

    /// Reads `file` (`TOKEN_API_KEYS_FILE`) and puts its keys in force; returns what changed
    /// ([`KeyChange`]: names and scopes, never a key). A file that cannot be read or parsed
    /// changes nothing; the error names why, never a key.
    pub fn reload(&self, file: &std::path::Path) -> Result<KeyChange, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        let keys = ApiKeys::parse(text.trim_end_matches(['\n', '\r']))?;
        keys.warn_unscoped();
        tracing::info!(keys = ?keys, "TOKEN_API_KEYS_FILE reloaded");
        let mut held = self.0.write().unwrap_or_else(|e| e.into_inner());
        let change = KeyChange::between(&held, &keys);
        *held = keys;
        Ok(change)
    }

    /// The caller whose key is `given` (the console's sign-in form posts it once), with the
    /// key's [`fingerprint`]. Every configured key is compared, in constant time.
    pub fn caller_by_key(&self, given: &str) -> Option<(Caller, [u8; 32])> {
        let keys = self.0.read().unwrap_or_else(|e| e.into_inner());
        keys.by_key(given).map(|k| {
            let caller = Caller {
                name: k.name.clone(),
                scopes: k.scopes.clone(),
                addr: None,
            };
            (caller, k.digest)
        })
    }

    /// Whether the key named `name`, with this [`fingerprint`], is still configured with
    /// `scope`: a reload that drops or rotates a key ends what it opened.
    pub fn holds(&self, name: &str, print: &[u8], scope: ApiScope) -> bool {
        let keys = self.0.read().unwrap_or_else(|e| e.into_inner());
        let Ok(print) = <[u8; 32]>::try_from(print) else {
            return false;
        };
        keys.0.iter().any(|k| {
            k.name == name && k.scopes.contains(&scope) && bool::from(k.digest.ct_eq(&print))
        })
    }

    fn caller(&self, req: &HttpRequest, addr: Option<std::net::IpAddr>) -> Option<Caller> {
        let keys = self.0.read().unwrap_or_else(|e| e.into_inner());
        keys.authenticate(req).map(|k| Caller {
            name: k.name.clone(),
            scopes: k.scopes.clone(),
            addr,
        })
    }
}

/// What a key-list reload changed, by key name: added, removed, scopes changed, or the key
/// itself replaced under the same name and scopes (rotated). Names and scopes only, never a key:
/// the access record's `keys_reloaded` row says this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChange {
    /// `name[scope+scope]` of each key added.
    pub added: Vec<String>,
    /// `name[scope+scope]` of each key removed.
    pub removed: Vec<String>,
    /// `name[old scopes]->[new scopes]` of each key whose scopes changed.
    pub scopes_changed: Vec<String>,
    /// Names whose key was replaced, scopes kept.
    pub rotated: Vec<String>,
}

fn scopes_of(k: &ApiKey) -> String {
    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
    scopes.join("+")
}

impl KeyChange {
    pub fn between(before: &ApiKeys, after: &ApiKeys) -> Self {
        let find = |keys: &ApiKeys, name: &str| keys.0.iter().find(|k| k.name == name).cloned();
        let mut change = Self::default();
        for k in &after.0 {
            match find(before, &k.name) {
                None => change.added.push(format!("{}[{}]", k.name, scopes_of(k))),
                Some(was) if was.scopes != k.scopes => change.scopes_changed.push(format!(
                    "{}[{}]->[{}]",
                    k.name,
                    scopes_of(&was),
                    scopes_of(k)
                )),
                Some(was) if !bool::from(was.digest.ct_eq(&k.digest)) => {
                    change.rotated.push(k.name.clone());
                }
                Some(_) => {}
            }
        }
        for k in &before.0 {
            if find(after, &k.name).is_none() {
                change.removed.push(format!("{}[{}]", k.name, scopes_of(k)));
            }
        }
        change
    }

    /// Every key of `keys` as added: the list put in force at start.
    pub fn at_start(keys: &ApiKeys) -> Self {
        Self::between(&ApiKeys(Vec::new()), keys)
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.scopes_changed.is_empty()
            && self.rotated.is_empty()
    }

    /// `added: a[read] b[console]; removed: c[export]; scopes: d[read]->[read+export];
    /// rotated: e`, the parts that hold something.
    pub fn summary(&self) -> String {
        [
            ("added", &self.added),
            ("removed", &self.removed),
            ("scopes", &self.scopes_changed),
            ("rotated", &self.rotated),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(what, v)| format!("{what}: {}", v.join(" ")))
        .collect::<Vec<_>>()
        .join("; ")
    }
}

/// One entry into its name, scopes, whether it was given without scopes, and key:
/// `name:key` or `name[scope+scope]:key`. Errors name the entry, never show the key.
fn split_entry(entry: &str) -> Result<(&str, BTreeSet<ApiScope>, bool, &str), String> {
    let shape = "each entry is name:key or name[scope+scope]:key";
    let at = entry.find([':', '[']).ok_or_else(|| shape.to_owned())?;
    let name = &entry[..at];
    if entry[at..].starts_with(':') {
        return Ok((name, ApiScope::unscoped(), true, &entry[at + 1..]));
    }
    let (list, key) = entry[at + 1..]
        .split_once(']')
        .and_then(|(list, rest)| Some((list, rest.strip_prefix(':')?)))
        .ok_or_else(|| format!("key {name:?}: the scopes end with ']' right before the ':'"))?;
    let scopes = list
        .split('+')
        .map(|s| {
            ApiScope::parse(s.trim()).ok_or_else(|| {
                let known: Vec<&str> = kollus_common::vocab::labels::<ApiScope>().collect();
                // A list missing its `]` may run into the key: such text is not shown.
                let what = if s.contains(':') {
                    "a scope with ':'".to_owned()
                } else {
                    format!("{s:?}")
                };
                format!("key {name:?}: {what} is no scope ({})", known.join(", "))
            })
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok((name, scopes, false, key))
}

/// SHA-256 of a key, to recognise it later without keeping it (the console's sessions).
pub fn fingerprint(key: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// The API key a request was authenticated with: a handler that takes one answers only callers
/// with a valid key (401 otherwise, and a rate-limited WARN naming the route and the peer).
#[derive(Debug, Clone)]
pub struct Caller {
    name: String,
    scopes: BTreeSet<ApiScope>,
    /// The client's address (the TCP peer, or behind `TRUSTED_PROXIES` the forwarded client),
    /// for the access record.
    addr: Option<std::net::IpAddr>,
}

impl Caller {
    /// The client's address as `TRUSTED_PROXIES` decides it (the access record's).
    pub fn client_addr(&self) -> Option<std::net::IpAddr> {
        self.addr
    }

    /// The key's name (never the key), for logs and audit records.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// 403 naming `scope` unless the key has it.
    pub fn require(&self, scope: ApiScope) -> Result<&Self, ApiError> {
        if self.scopes.contains(&scope) {
            Ok(self)
        } else {
            tracing::warn!(
                key = self.name,
                scope = scope.as_str(),
                "API key lacks the scope"
            );
            Err(ApiError::Forbidden(scope.as_str()))
        }
    }
}

/// How long a client address's failed authentications are counted.
pub const AUTH_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Failed authentications a client address may make in [`AUTH_FAILURE_WINDOW`] by default
/// (`AUTH_FAILURES_PER_MINUTE`); past them its requests are a 429 without a key being checked,
/// so keys cannot be tried at speed.
pub const AUTH_FAILURES_ALLOWED: u32 = 30;

/// Failed authentications on `/v1` by client address (`TRUSTED_PROXIES` decides who the client
/// is), counted from an address's first failure for [`AUTH_FAILURE_WINDOW`]. Bounded: at most
/// 100,000 addresses are held, the least recently used going first.
#[derive(Clone)]
pub struct AuthFailures {
    counts: moka::sync::Cache<std::net::IpAddr, Arc<std::sync::atomic::AtomicU32>>,
    proxies: kollus_common::client_addr::Networks,
    allowed: u32,
}

impl AuthFailures {
    /// `allowed` failures a minute per address; 0: not limited.
    pub fn new(proxies: kollus_common::client_addr::Networks, allowed: u32) -> Self {
        Self {
            allowed,
            counts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(AUTH_FAILURE_WINDOW)
                .build(),
            proxies,
        }
    }

    fn client(&self, req: &HttpRequest) -> Option<std::net::IpAddr> {
        kollus_common::client_addr::of_request(req, &self.proxies)
    }

    fn over(&self, ip: std::net::IpAddr) -> bool {
        self.allowed > 0
            && self
                .counts
                .get(&ip)
                .is_some_and(|n| n.load(std::sync::atomic::Ordering::Relaxed) >= self.allowed)
    }

    fn record(&self, ip: std::net::IpAddr) {
        if self.allowed == 0 {
            return;
        }
        self.counts
            .get_with(ip, Default::default)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl actix_web::FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let failures = req.app_data::<actix_web::web::Data<AuthFailures>>();
        let client = match failures {
            Some(f) => f.client(req),
            None => req.peer_addr().map(|a| a.ip()),
        };
        // An address past its failures is refused before any key is compared.
        if let (Some(f), Some(ip)) = (failures, client) {
            if f.over(ip) {
                return std::future::ready(Err(ApiError::TooManyAuthFailures(
                    AUTH_FAILURE_WINDOW.as_secs(),
                )));
            }
        }
        let caller = req
            .app_data::<actix_web::web::Data<KeyRing>>()
            .and_then(|ring| ring.caller(req, client));
        std::future::ready(match caller {
            Some(caller) => Ok(caller),
            None => {
                kollus_common::telemetry::warn_auth_failure(
                    req.match_pattern().as_deref().unwrap_or("unmatched"),
                    client,
                );
                if let (Some(f), Some(ip)) = (failures, client) {
                    f.record(ip);
                }
                Err(ApiError::Unauthorized)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_puts_the_file_in_force_and_a_bad_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        let ring = KeyRing::new(ApiKeys::parse("old[read]:0123456789abcdef").unwrap());
        let names = |ring: &KeyRing| format!("{:?}", ring.0.read().unwrap());
        std::fs::write(&file, "new[export]:fedcba9876543210\n").unwrap();
        let change = ring.reload(&file).unwrap();
        assert_eq!(names(&ring), r#"["new[export]"]"#);
        assert_eq!(
            change.summary(),
            "added: new[export]; removed: old[read]",
            "names and scopes only"
        );
        for bad in [
            "",
            "new[admin]:fedcba9876543210",
            "new:short",
            "a[read]:fedcba9876543210\nb[export]:fedcba9876543210\n",
            "new[export]:fedcba98\u{7}76543210\n",
            "new[export]:fedcba98 76543210\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            let err = ring.reload(&file).unwrap_err();
            assert!(!err.contains("fedcba9876543210"), "never a key: {err}");
            assert_eq!(
                names(&ring),
                r#"["new[export]"]"#,
                "{bad:?} changed nothing"
            );
        }
        assert!(ring.reload(&dir.path().join("missing")).is_err());
        assert_eq!(names(&ring), r#"["new[export]"]"#);
    }

    #[test]
    fn a_key_change_names_keys_added_removed_rescoped_and_rotated_never_a_key() {
        let before =
            ApiKeys::parse("a[read]:0123456789abcdef,b[read]:1123456789abcdef,c:2123456789abcdef")
                .unwrap();
        let after = ApiKeys::parse(
            "a[read+export]:0123456789abcdef,b[read]:9923456789abcdef,d[console]:3123456789abcdef",
        )
        .unwrap();
        let change = KeyChange::between(&before, &after);
        let summary = change.summary();
        assert_eq!(
            summary,
            "added: d[console]; removed: c[tokens+read+entitlements+export]; \
             scopes: a[read]->[read+export]; rotated: b",
            "{change:?}"
        );
        assert!(!summary.contains("23456789abcdef"), "never a key");
        assert!(KeyChange::between(&after, &after).is_empty());
        assert_eq!(
            KeyChange::at_start(&before).added.len(),
            3,
            "at start, every key is added"
        );
    }

    #[test]
    fn parses_named_keys_and_never_shows_them() {
        let keys = ApiKeys::parse("app:0123456789abcdef, ops:fedcba9876543210").unwrap();
        assert_eq!(
            format!("{keys:?}"),
            r#"["app[tokens+read+entitlements+export]", "ops[tokens+read+entitlements+export]"]"#
        );
        assert!(ApiKeys::parse("").is_err());
        assert!(ApiKeys::parse("nokey").is_err());
        assert!(ApiKeys::parse("a:short").is_err());
        assert!(ApiKeys::parse("a:0123456789abcdef,a:0123456789abcdeg").is_err());
    }

    #[test]
    fn scopes_ride_on_the_name_and_keys_may_hold_colons() {
        let keys =
            ApiKeys::parse("support[read+console]:0123:456789abcdef,app:fedcba9876543210").unwrap();
        assert_eq!(
            keys.0[0].scopes,
            BTreeSet::from([ApiScope::Read, ApiScope::Console])
        );
        assert_eq!(keys.0[0].digest, fingerprint("0123:456789abcdef"));
        assert!(!keys.0[0].unscoped);
        assert_eq!(keys.unscoped(), ["app"]);
        assert!(
            !keys.0[1].scopes.contains(&ApiScope::Console),
            "console is only given explicitly"
        );
        for bad in [
            "a[read:0123456789abcdef",
            "a[]:0123456789abcdef",
            "a[read+admin]:0123456789abcdef",
            "[read]:0123456789abcdef",
        ] {
            let err = ApiKeys::parse(bad).unwrap_err();
            assert!(!err.contains("0123456789abcdef"), "never the key: {err}");
        }
    }

    #[test]
    fn a_scope_may_hold_a_colon_and_the_key_after_it_too() {
        let keys =
            ApiKeys::parse("shop[tokens+tokens:playcallback_ignore]:0123:456789abcdef").unwrap();
        assert_eq!(
            keys.0[0].scopes,
            BTreeSet::from([ApiScope::Tokens, ApiScope::TokensPlaycallbackIgnore])
        );
        assert_eq!(keys.0[0].digest, fingerprint("0123:456789abcdef"));
        assert_eq!(keys.0[0].name, "shop");
        // A list missing its `]` runs into the key: refused, the key not shown.
        let err = ApiKeys::parse("shop[tokens:secretsecretsecret]:x").unwrap_err();
        assert!(!err.contains("secretsecretsecret"), "{err}");
        let err = ApiKeys::parse("shop[tokens:0123456789abcdef").unwrap_err();
        assert!(!err.contains("0123456789abcdef"), "{err}");
    }

    #[test]
    fn entries_may_be_separated_by_line_breaks() {
        let keys = ApiKeys::parse(
            "app[tokens]:0123456789abcdef\r\n\n  ops[read]:fedcba9876543210 ,\nx:fedcba9876543211\n",
        )
        .unwrap();
        assert_eq!(
            format!("{keys:?}"),
            r#"["app[tokens]", "ops[read]", "x[tokens+read+entitlements+export]"]"#
        );
        assert_eq!(keys.0[1].digest, fingerprint("fedcba9876543210"));
    }

    #[test]
    fn one_key_under_two_names_is_refused_naming_both_never_the_key() {
        let err =
            ApiKeys::parse("app[tokens]:0123456789abcdef\nops[read]:0123456789abcdef").unwrap_err();
        assert!(err.contains("\"app\"") && err.contains("\"ops\""), "{err}");
        assert!(!err.contains("0123456789abcdef"), "{err}");
    }

    #[test]
    fn whitespace_and_control_characters_in_names_and_keys_are_refused() {
        for bad in [
            "app:0123456789 abcdef",
            "app:0123456789\tabcdef",
            "app:0123456789\u{7f}abcdef",
            "app:0123456789\u{0}abcdef",
            "app:0123456789\u{a0}abcdef",
            "app[read]: 0123456789abcdef",
            "my app:0123456789abcdef",
            "a\u{1b}p[read]:0123456789abcdef",
            "app :0123456789abcdef",
        ] {
            let err = ApiKeys::parse(bad).unwrap_err();
            assert!(!err.contains("0123456789"), "{bad:?}: {err}");
            assert!(err.starts_with("key "), "{bad:?} names the entry: {err}");
        }
    }

    #[test]
    fn keys_are_compared_by_digest_whatever_their_length() {
        let keys = ApiKeys::parse("a:0123456789abcdef,b:0123456789abcdef0123456789").unwrap();
        assert_eq!(keys.by_key("0123456789abcdef").unwrap().name, "a");
        assert_eq!(keys.by_key("0123456789abcdef0123456789").unwrap().name, "b");
        for wrong in ["", "0123456789abcde", "0123456789abcdef0", "x"] {
            assert!(keys.by_key(wrong).is_none(), "{wrong:?}");
        }
        let ring = KeyRing::new(keys);
        let (caller, print) = ring.caller_by_key("0123456789abcdef").unwrap();
        assert_eq!(caller.name(), "a");
        assert!(ring.holds("a", &print, ApiScope::Read));
        assert!(
            !ring.holds("a", &print[..31], ApiScope::Read),
            "a short print"
        );
        assert!(!ring.holds("b", &print, ApiScope::Read));
    }
}
