//! Caller authentication: `Authorization: Bearer <key>` against named keys, in constant time.

use std::fmt;

use actix_web::HttpRequest;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    key: SecretString,
}

/// The configured keys. Debug shows names only.
#[derive(Clone)]
pub struct ApiKeys(Vec<ApiKey>);

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| &k.name))
            .finish()
    }
}

impl ApiKeys {
    /// Parses `name:key,name2:key2`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, key) = entry
                .split_once(':')
                .ok_or_else(|| "each entry is name:key".to_owned())?;
            if name.is_empty() || key.len() < 16 {
                return Err(format!(
                    "key {name:?}: the name must not be empty and the key must be at least 16 characters"
                ));
            }
            if keys.iter().any(|k: &ApiKey| k.name == name) {
                return Err(format!("key name {name:?} is given twice"));
            }
            keys.push(ApiKey {
                name: name.to_owned(),
                key: SecretString::from(key.to_owned()),
            });
        }
        if keys.is_empty() {
            return Err("at least one name:key is required".into());
        }
        Ok(Self(keys))
    }

    /// The name of the key the request carries, if it carries a valid one. Every configured
    /// key is compared, so timing does not tell which one matched.
    pub fn authenticate(&self, req: &HttpRequest) -> Option<&str> {
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim()
            .as_bytes();
        let mut found = None;
        for k in &self.0 {
            if bool::from(k.key.expose_secret().as_bytes().ct_eq(given)) {
                found = Some(k.name.as_str());
            }
        }
        found
    }
}

/// The API key a request was authenticated with: a handler that takes one answers only callers
/// with a valid key (401 otherwise, and a rate-limited WARN naming the route and the peer).
#[derive(Debug, Clone)]
pub struct Caller(String);

impl Caller {
    /// The key's name (never the key), for logs and audit records.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl actix_web::FromRequest for Caller {
    type Error = crate::problem::ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let name = req
            .app_data::<actix_web::web::Data<crate::state::State>>()
            .and_then(|state| state.keys.authenticate(req).map(str::to_owned));
        std::future::ready(match name {
            Some(name) => Ok(Self(name)),
            None => {
                kollus_common::telemetry::warn_auth_failure(
                    req.match_pattern().as_deref().unwrap_or("unmatched"),
                    req.peer_addr().map(|a| a.ip()),
                );
                Err(crate::problem::ApiError::Unauthorized)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_keys_and_never_shows_them() {
        let keys = ApiKeys::parse("app:0123456789abcdef, ops:fedcba9876543210").unwrap();
        assert_eq!(format!("{keys:?}"), r#"["app", "ops"]"#);
        assert!(ApiKeys::parse("").is_err());
        assert!(ApiKeys::parse("nokey").is_err());
        assert!(ApiKeys::parse("a:short").is_err());
        assert!(ApiKeys::parse("a:0123456789abcdef,a:0123456789abcdeg").is_err());
    }
}
