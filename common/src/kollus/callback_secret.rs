//! The secret Kollus's callback URLs carry (`?secret=`): Kollus signs nothing, so this is what
//! authenticates a callback (DESIGN.md, the delivery contract, 2). One check for every service
//! that takes Kollus callbacks (ingest, token-api's play and DRM callbacks).

use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use super::form::{parse_form, FormFields};

/// The query string's `secret` is missing, wrong, or the query cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the callback URL's secret is missing or wrong")]
pub struct BadSecret;

/// Checks `?secret=` in constant time and returns the other query parameters (decoded strictly,
/// as the body is). A query that cannot be read is refused as a wrong secret: nothing is learned
/// from it.
pub fn check_callback_secret(
    query: &str,
    expected: &SecretString,
) -> Result<FormFields, BadSecret> {
    let mut query = parse_form(query.as_bytes()).map_err(|_| BadSecret)?;
    let given = query.remove("secret").ok_or(BadSecret)?;
    if bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes())) {
        Ok(query)
    } else {
        Err(BadSecret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_passes_and_the_rest_of_the_query_is_kept() {
        let secret = SecretString::from("0123456789abcdef");
        let rest = check_callback_secret("secret=0123456789abcdef&x=1", &secret).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest["x"], "1");
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
                check_callback_secret(wrong, &secret),
                Err(BadSecret),
                "{wrong}"
            );
        }
    }
}
