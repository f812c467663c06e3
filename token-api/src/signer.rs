//! The one HS256 signer, keyed with the Kollus account's security key: playback tokens and the
//! answers to Kollus's play and DRM callbacks are both JWTs Kollus verifies with it (SPEC.md 1,
//! 5). Bottom layer: imports nothing of this crate.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, TokenData, Validation};
use secrecy::{ExposeSecret as _, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Signer {
    pub fn new(security_key: &SecretString) -> Self {
        let secret = security_key.expose_secret().as_bytes();
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// `{"alg":"HS256","typ":"JWT"}` over `claims`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> jsonwebtoken::errors::Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Checks the signature (HS256 only). Requires no registered claim and checks no `exp`:
    /// Kollus's expiry is `expt`, the caller's to judge.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
    ) -> jsonwebtoken::errors::Result<TokenData<T>> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        jsonwebtoken::decode::<T>(token, &self.decoding, &validation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_what_it_signed_and_nothing_else() {
        let signer = Signer::new(&SecretString::from("k1"));
        let token = signer.sign(&serde_json::json!({"cuid": "u"})).unwrap();
        let back: TokenData<serde_json::Value> = signer.verify(&token).unwrap();
        assert_eq!(back.claims["cuid"], "u");
        assert_eq!(back.header.alg, Algorithm::HS256);
        let other = Signer::new(&SecretString::from("k2"));
        assert!(other.verify::<serde_json::Value>(&token).is_err());
    }
}
