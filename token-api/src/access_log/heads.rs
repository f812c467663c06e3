//! Daily heads: once per UTC day each chain's end (class -> log id, mac, time) is written to the
//! archive (`ARCHIVE_DIR`) as a create-only object `access-log/heads/YYYY-MM-DD.json`, which
//! carries its own HMAC under the chain key. The database alone cannot then cut the chain's tail
//! (rows and seals deleted together leave a chain that verifies): `verify` finds each head's row
//! still sealed with that mac, or accounted for by retention.

use std::collections::BTreeMap;

use anyhow::Context as _;
use kollus_archive::store::Archive;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::access_log::record::Class;
use crate::access_log::seal::{ChainKey, End};

/// Where the heads are, in the archive.
pub const PREFIX: &str = "access-log/heads/";

/// One chain's end in a head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub log_id: i64,
    /// Hex.
    pub mac: String,
    /// The row's time (RFC 3339); absent for an anchor.
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
}

/// A head object's content; `mac` is over the same object serialized without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The UTC day (`YYYY-MM-DD`).
    pub day: String,
    /// Each class's chain end (a chain without a row is absent).
    pub chains: BTreeMap<String, ChainHead>,
    #[serde(with = "time::serde::rfc3339")]
    pub written_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mac: Option<String>,
}

impl Head {
    fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Self {
            mac: None,
            ..self.clone()
        };
        serde_json::to_vec(&unsigned).expect("a head serializes")
    }

    fn mac(&self, key: &ChainKey) -> [u8; 32] {
        key.mac(&[b"kollus access-log head\n", &self.signed_bytes()])
    }

    /// The head of `ends` on `now`'s UTC day, signed.
    pub fn new(key: &ChainKey, ends: &[(Class, Option<End>)], now: OffsetDateTime) -> Self {
        let now = now.to_offset(time::UtcOffset::UTC);
        let mut head = Self {
            day: day(now),
            chains: ends
                .iter()
                .filter_map(|(class, end)| {
                    end.as_ref().map(|e| {
                        (
                            class.as_str().to_owned(),
                            ChainHead {
                                log_id: e.log_id,
                                mac: hex::encode(&e.mac),
                                at: e.at,
                            },
                        )
                    })
                })
                .collect(),
            written_at: now,
            mac: None,
        };
        head.mac = Some(hex::encode(head.mac(key)));
        head
    }

    /// Parses a head object and checks its HMAC; the error says which fails.
    pub fn open(key: &ChainKey, bytes: &[u8]) -> Result<Self, String> {
        let head: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("not a head object: {e}"))?;
        let given = head
            .mac
            .as_deref()
            .and_then(|m| hex::decode(m).ok())
            .ok_or("the head carries no mac")?;
        // Constant time: a timing difference would let a caller who can plant heads and ask for
        // verifications find a head's mac byte by byte.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_slice(),
            head.mac(key).as_slice(),
        )) {
            return Err("the head's mac does not verify under ACCESS_LOG_KEY_FILE".into());
        }
        Ok(head)
    }
}

/// `YYYY-MM-DD` of a UTC time.
pub fn day(t: OffsetDateTime) -> String {
    let d = t.to_offset(time::UtcOffset::UTC).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The object's path for a day.
pub fn path(day: &str) -> String {
    format!("{PREFIX}{day}.json")
}

/// Writes today's head unless it exists (another replica, or this one before a restart, wrote
/// it: fine, the first written stands). Returns whether this call wrote it.
pub async fn write(archive: &Archive, head: &Head) -> anyhow::Result<bool> {
    let bytes = serde_json::to_vec_pretty(head).expect("a head serializes");
    let created = archive
        .create(&path(&head.day), bytes, |_| true)
        .await
        .context("writing the access log's daily head")?;
    Ok(created == kollus_archive::store::Created::New)
}

/// Every head object's path, oldest day first.
pub async fn list(archive: &Archive) -> anyhow::Result<Vec<String>> {
    archive.list(PREFIX).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_verifies_and_any_change_does_not() {
        let key = ChainKey::new(&[3; 32]);
        let end = End {
            log_id: 42,
            mac: vec![7; 32],
            at: Some(OffsetDateTime::UNIX_EPOCH),
            sealed_at: None,
            highest: 42,
        };
        let head = Head::new(
            &key,
            &[(Class::Access, Some(end)), (Class::Rights, None)],
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(head.day, "1970-01-01");
        let bytes = serde_json::to_vec_pretty(&head).unwrap();
        assert_eq!(Head::open(&key, &bytes).unwrap(), head);
        let forged = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("42", "41");
        assert!(Head::open(&key, forged.as_bytes()).is_err());
        assert!(Head::open(&ChainKey::new(&[4; 32]), &bytes).is_err());
    }
}
