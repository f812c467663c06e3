//! The LMS checksum (SPEC.md 4.2): players append `&hash=<hex>` to the POST data, where
//!
//! ```text
//! hash = md5( md5(<url-decoded body without the "&hash=..." part>) + "+" + <service account key> )
//! ```
//!
//! (lower-case hex digests; the key is the account's service account key from the Kollus
//! console). It is not a secret-grade MAC, but it tells a report the player signed from one
//! written by hand: support staff see which reports a refund claim rests on.

use md5::{Digest as _, Md5};

use crate::kollus::form::decode_bytes;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

/// What checking a report's `hash` found. Kept in the envelope and, summed up, on the session.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum HashVerdict {
    /// The body carried a `hash` that matches.
    Verified,
    /// The body carried a `hash` that does not match: changed after the player signed it, or
    /// signed with another account's key.
    Mismatch,
    /// The body carried no `hash` (older and HTML5 players, GET templates).
    Absent,
}

impl HashVerdict {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Checks the `hash` field of a form body against `key`.
///
/// The signed text is the body up to the `&hash=` pair, URL-decoded as a whole (`+` as space),
/// exactly as Kollus's own verification does it.
pub fn verify(body: &[u8], key: &[u8]) -> HashVerdict {
    let body = body.trim_ascii_end();
    let Some((signed, given)) = split_hash(body) else {
        return HashVerdict::Absent;
    };
    let expected = expected_hash(signed, key);
    let given = given.to_ascii_lowercase();
    if given.len() == expected.len() && bool::from(given.as_slice().ct_eq(expected.as_bytes())) {
        HashVerdict::Verified
    } else {
        HashVerdict::Mismatch
    }
}

/// The hash a player holding `key` appends to `signed` (the body without `&hash=`).
pub fn expected_hash(signed: &[u8], key: &[u8]) -> String {
    let inner = hex::encode(Md5::digest(decode_bytes(signed)));
    let mut outer = Md5::new();
    outer.update(inner.as_bytes());
    outer.update(b"+");
    outer.update(key);
    hex::encode(outer.finalize())
}

/// Splits `...&hash=<hex>` into the signed part and the hash. Players put the pair last; a body
/// that is only `hash=...` signs the empty text.
fn split_hash(body: &[u8]) -> Option<(&[u8], &[u8])> {
    if let Some(rest) = body.strip_prefix(b"hash=") {
        if !rest.contains(&b'&') {
            return Some((&[], rest));
        }
    }
    // The last pair: should anything follow it, it is part of the "hash" and cannot match, as
    // it would be unsigned.
    let at = find_last(body, b"&hash=")?;
    Some((&body[..at], &body[at + b"&hash=".len()..]))
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kollus::fixture;

    const KEY: &[u8] = b"fixture-service-account-key";

    #[test]
    fn the_android_fixture_verifies_with_its_key() {
        assert_eq!(
            verify(&fixture("lms-android-hash.form"), KEY),
            HashVerdict::Verified
        );
        assert_eq!(
            verify(&fixture("lms-android-hash.form"), b"another-key"),
            HashVerdict::Mismatch
        );
    }

    #[test]
    fn one_changed_byte_anywhere_in_the_signed_part_does_not_verify() {
        let body = fixture("lms-android-hash.form");
        let signed_len = find_last(&body, b"&hash=").unwrap();
        // Every 97th byte, to keep the test fast while covering the whole body.
        for i in (0..signed_len).step_by(97) {
            let mut changed = body.clone();
            changed[i] = if changed[i] == b'1' { b'2' } else { b'1' };
            assert_eq!(verify(&changed, KEY), HashVerdict::Mismatch, "byte {i}");
        }
    }

    #[test]
    fn no_hash_is_absent_and_a_hash_must_come_last() {
        assert_eq!(verify(b"json_data=%7B%7D", KEY), HashVerdict::Absent);
        assert_eq!(verify(b"", KEY), HashVerdict::Absent);
        let signed = b"json_data=%7B%7D&start_at=1";
        let hash = expected_hash(signed, KEY);
        let good = format!("json_data=%7B%7D&start_at=1&hash={hash}");
        assert_eq!(verify(good.as_bytes(), KEY), HashVerdict::Verified);
        assert_eq!(
            verify(format!("{good}\n").as_bytes(), KEY),
            HashVerdict::Verified,
            "a trailing line break is not part of the hash"
        );
        assert_eq!(
            verify(format!("{good}&extra=1").as_bytes(), KEY),
            HashVerdict::Mismatch,
            "a pair after the hash would be unsigned"
        );
    }
}
