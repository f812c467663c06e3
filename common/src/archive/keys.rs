//! An archive location's subject keys (issue 32; README "Erasing a user"): per (subject tag,
//! generation) a random AES-256-GCM data key, wrapped by the key-encryption key
//! (`ARCHIVE_KEK_FILE`), kept in a key location of its own (`ARCHIVE_KEYS_DIR`, default
//! `<archive>/keys`, [`crate::erasure::keys_location`]) that allows deletion:
//!
//! - `keys/{tag}/{generation:06}.json`: a user's key ([`StoredKey`]), created once;
//! - `unattributed/{unattributed-YYYY-MM-DD}/000001.json`: a day's key for dead letters naming
//!   nobody, destroyed after `ARCHIVE_UNATTRIBUTED_DAYS`;
//! - `erasures/{tag}/{erasure_id}.json` ([`LocationErasure`]): this location destroyed those
//!   generations of the tag for that erasure; never deleted;
//! - `expired/{unattributed-YYYY-MM-DD}.json`: that day's key was destroyed by age.
//!
//! Destroying a key is deleting its object: what was sealed under it no longer opens, whoever
//! holds the KEK. So the key location must not be versioned or replicated (object_store cannot
//! ask S3 whether a bucket is: the operator must see to it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::store::{Archive, Created};
use super::subject::{unattributed_day, UNATTRIBUTED};
use crate::erasure::{location_record_path, Barrier, ErasureEvent, LocationErasure};
use crate::subject::{read_key_file, SealKey, KEY_LEN};

/// What a key object holds: the data key wrapped by the KEK, bound to its tag and generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    pub tag: String,
    pub generation: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// base64 of `nonce || AES-256-GCM(KEK, data key) || tag`.
    pub wrapped: String,
}

/// What `expired/{tag}.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Expired {
    pub tag: String,
    #[serde(with = "time::serde::rfc3339")]
    pub destroyed_at: OffsetDateTime,
}

/// Whether a frame's key opens it, and if not, why.
#[derive(Debug, Clone)]
pub enum KeyState {
    Live(Arc<SealKey>),
    /// An erasure record of this location names the generation.
    Erased,
    /// An unattributed day's key, destroyed by age.
    Expired,
    /// Neither there nor accounted for: an error.
    Missing,
}

/// Where a key of `tag` and `generation` is kept.
pub fn key_path(tag: &str, generation: u32) -> String {
    if tag.starts_with(UNATTRIBUTED) {
        format!("unattributed/{tag}/{generation:06}.json")
    } else {
        format!("keys/{tag}/{generation:06}.json")
    }
}

fn key_prefix(tag: &str) -> String {
    if tag.starts_with(UNATTRIBUTED) {
        format!("unattributed/{tag}")
    } else {
        format!("keys/{tag}")
    }
}

fn wrap_aad(tag: &str, generation: u32) -> Vec<u8> {
    format!("kollus-archive-key-v1|{tag}|{generation}").into_bytes()
}

/// A key location's keys, erasure records and expired days, with the keys read so far.
pub struct KeyRing {
    store: Archive,
    kek: Arc<SealKey>,
    /// Per tag read from the location: its live generations' keys.
    live: HashMap<String, BTreeMap<u32, Arc<SealKey>>>,
    erasures: HashMap<String, Vec<LocationErasure>>,
    expired: BTreeSet<String>,
    /// Every erasure this location has applied, by tag: the latest time.
    pub barrier: Barrier,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({})", self.store.location)
    }
}

impl KeyRing {
    /// The key location at `location`, with the KEK of `kek_file` (`ARCHIVE_KEK_FILE`): its
    /// erasure records and expired days read now, keys as they are needed.
    pub async fn open(location: &str, kek_file: &Path) -> anyhow::Result<Self> {
        let kek = read_key_file("ARCHIVE_KEK_FILE", kek_file)?;
        let store = Archive::open(location)
            .with_context(|| format!("opening the key location {location} (ARCHIVE_KEYS_DIR)"))?;
        Self::with(store, kek).await
    }

    pub async fn with(store: Archive, kek: [u8; KEY_LEN]) -> anyhow::Result<Self> {
        let mut ring = Self {
            store,
            kek: Arc::new(SealKey::new(&kek)),
            live: HashMap::new(),
            erasures: HashMap::new(),
            expired: BTreeSet::new(),
            barrier: Barrier::default(),
        };
        for path in ring.store.list(crate::erasure::LOCATION_RECORDS).await? {
            let bytes = ring.store.get(&path).await?;
            let record: LocationErasure = serde_json::from_slice(&bytes)
                .with_context(|| format!("{path}: not an erasure record"))?;
            ring.barrier.add(&ErasureEvent::from(&record));
            ring.erasures
                .entry(record.subject_tag.clone())
                .or_default()
                .push(record);
        }
        for path in ring.store.list("expired").await? {
            if let Some(tag) = path
                .strip_prefix("expired/")
                .and_then(|p| p.strip_suffix(".json"))
            {
                ring.expired.insert(tag.to_owned());
            }
        }
        Ok(ring)
    }

    pub fn location(&self) -> &str {
        &self.store.location
    }

    /// Reads `tag`'s live keys from the location, once.
    pub async fn load(&mut self, tag: &str) -> anyhow::Result<()> {
        if self.live.contains_key(tag) {
            return Ok(());
        }
        let erased: BTreeSet<u32> = self
            .erasures
            .get(tag)
            .into_iter()
            .flatten()
            .flat_map(|r| r.generations.iter().copied())
            .collect();
        let mut keys = BTreeMap::new();
        for path in self.store.list(&key_prefix(tag)).await? {
            let Some(bytes) = self.store.get_opt(&path).await? else {
                continue; // destroyed meanwhile
            };
            let stored: StoredKey = serde_json::from_slice(&bytes)
                .with_context(|| format!("{path}: not a key object"))?;
            anyhow::ensure!(
                stored.tag == tag,
                "{path}: holds the key of {}, not of {tag}",
                stored.tag
            );
            if erased.contains(&stored.generation) {
                // An erasure record names this generation: its key was to be destroyed (a
                // delete lost to a crash, or a copy put back). The record wins: never used,
                // and deleted again where this reader may.
                tracing::warn!(
                    subject_tag = tag,
                    generation = stored.generation,
                    "a key an erasure destroyed is in the key location: not used, deleted again"
                );
                if let Err(e) = self.store.delete(&path).await {
                    tracing::warn!(error = format!("{e:#}"), "deleting it failed");
                }
                continue;
            }
            keys.insert(stored.generation, Arc::new(self.unwrap(&stored, &path)?));
        }
        self.live.insert(tag.to_owned(), keys);
        Ok(())
    }

    fn unwrap(&self, stored: &StoredKey, path: &str) -> anyhow::Result<SealKey> {
        let wrapped = STANDARD
            .decode(&stored.wrapped)
            .with_context(|| format!("{path}: not base64"))?;
        let key = self
            .kek
            .open(&wrapped, &wrap_aad(&stored.tag, stored.generation))
            .with_context(|| {
                format!("{path}: does not unwrap under ARCHIVE_KEK_FILE (another KEK, or altered)")
            })?;
        let key = <[u8; KEY_LEN]>::try_from(key.as_slice())
            .map_err(|_| anyhow::anyhow!("{path}: a key of {} bytes", key.len()))?;
        Ok(SealKey::new(&key))
    }

    /// Whether the key of (`tag`, `generation`) opens its frames (after [`KeyRing::load`]).
    pub fn state(&self, tag: &str, generation: u32) -> KeyState {
        if let Some(key) = self.live.get(tag).and_then(|g| g.get(&generation)) {
            return KeyState::Live(key.clone());
        }
        let erased = self
            .erasures
            .get(tag)
            .is_some_and(|rs| rs.iter().any(|r| r.generations.contains(&generation)));
        if erased {
            KeyState::Erased
        } else if self.expired.contains(tag) {
            KeyState::Expired
        } else {
            KeyState::Missing
        }
    }

    /// `tag`'s current key: its newest live generation, or a new one after every generation
    /// known (live or erased). Create-only: when two writers race, both use the stored one.
    pub async fn current(&mut self, tag: &str) -> anyhow::Result<(u32, Arc<SealKey>)> {
        self.load(tag).await?;
        if let Some((g, key)) = self.live.get(tag).and_then(|g| g.last_key_value()) {
            return Ok((*g, key.clone()));
        }
        let erased = self
            .erasures
            .get(tag)
            .into_iter()
            .flatten()
            .flat_map(|r| r.generations.iter().copied())
            .max()
            .unwrap_or(0);
        let generation = erased + 1;
        let key = SealKey::random_bytes();
        let stored = StoredKey {
            tag: tag.to_owned(),
            generation,
            created_at: OffsetDateTime::now_utc(),
            wrapped: STANDARD.encode(self.kek.seal(&key, &wrap_aad(tag, generation))),
        };
        let path = key_path(tag, generation);
        let created = self
            .store
            .create(&path, serde_json::to_vec_pretty(&stored)?, |_| true)
            .await?;
        let key = match created {
            Created::New => Arc::new(SealKey::new(&key)),
            // Another writer created it first: the stored one is the key.
            Created::AlreadyThere => {
                let bytes = self.store.get(&path).await?;
                let stored: StoredKey = serde_json::from_slice(&bytes)?;
                Arc::new(self.unwrap(&stored, &path)?)
            }
        };
        self.live
            .entry(tag.to_owned())
            .or_default()
            .insert(generation, key.clone());
        tracing::info!(subject_tag = tag, generation, "subject key created");
        Ok((generation, key))
    }

    /// Applies an erasure to this location: its record first (listing the live generations),
    /// then every key it lists destroyed. Idempotent: done again (a crash before the erasure
    /// topic's offset was committed), the record already there says which generations, so a
    /// generation made since for a returning user is spared. Returns the generations destroyed
    /// now.
    pub async fn erase(&mut self, event: &ErasureEvent) -> anyhow::Result<Vec<u32>> {
        let tag = event.subject_tag.as_str();
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !tag.starts_with(UNATTRIBUTED);
        if !valid {
            // Never a path of its own choosing in the key location; archived, not applied.
            tracing::warn!(
                erasure_id = %event.erasure_id,
                "an erasure record that names no valid subject tag: not applied"
            );
            return Ok(Vec::new());
        }
        self.live.remove(tag);
        self.load(tag).await?;
        let path = location_record_path(tag, event.erasure_id);
        let record = match self.store.get_opt(&path).await? {
            Some(bytes) => serde_json::from_slice::<LocationErasure>(&bytes)
                .with_context(|| format!("{path}: not an erasure record"))?,
            None => {
                let record = LocationErasure {
                    erasure_id: event.erasure_id,
                    subject_tag: tag.to_owned(),
                    erased_at: event.erased_at,
                    destroyed_at: OffsetDateTime::now_utc(),
                    generations: self
                        .live
                        .get(tag)
                        .map(|g| g.keys().copied().collect())
                        .unwrap_or_default(),
                };
                self.store
                    .create(&path, serde_json::to_vec_pretty(&record)?, |_| true)
                    .await?;
                serde_json::from_slice(&self.store.get(&path).await?)?
            }
        };
        let mut destroyed = Vec::new();
        for g in &record.generations {
            if self.store.delete(&key_path(tag, *g)).await? {
                destroyed.push(*g);
            }
            if let Some(live) = self.live.get_mut(tag) {
                live.remove(g);
            }
        }
        self.barrier.add(event);
        let records = self.erasures.entry(tag.to_owned()).or_default();
        if !records.iter().any(|r| r.erasure_id == record.erasure_id) {
            records.push(record);
        }
        tracing::info!(
            subject_tag = tag,
            erasure_id = %event.erasure_id,
            ?destroyed,
            "subject keys destroyed in this location"
        );
        Ok(destroyed)
    }

    /// Destroys the unattributed days' keys older than `days` days before `now` (recording each
    /// under `expired/` first, so verify calls their frames expired, not missing). Returns the
    /// days' tags destroyed.
    pub async fn expire_unattributed(
        &mut self,
        days: u32,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<String>> {
        let oldest_kept = (now - time::Duration::days(i64::from(days))).date();
        let mut gone = Vec::new();
        for path in self.store.list("unattributed").await? {
            let Some(tag) = path.split('/').nth(1) else {
                continue;
            };
            if unattributed_day(tag).is_none_or(|d| d >= oldest_kept) {
                continue;
            }
            let record = Expired {
                tag: tag.to_owned(),
                destroyed_at: now,
            };
            self.store
                .create(
                    &format!("expired/{tag}.json"),
                    serde_json::to_vec_pretty(&record)?,
                    |_| true,
                )
                .await?;
            self.expired.insert(tag.to_owned());
            self.store.delete(&path).await?;
            self.live.remove(tag);
            tracing::info!(day = tag, "unattributed dead letters' key destroyed by age");
            gone.push(tag.to_owned());
        }
        Ok(gone)
    }

    /// Every generation this location knows of, live or not, with its state: for `verify`.
    pub async fn erased_generations(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .erasures
            .iter()
            .flat_map(|(t, rs)| {
                rs.iter()
                    .flat_map(move |r| r.generations.iter().map(move |g| (t.clone(), *g)))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn expired_days(&self) -> impl Iterator<Item = &str> {
        self.expired.iter().map(String::as_str)
    }

    /// Forgets the keys read so far (a reader that reads many subjects once).
    pub fn forget_keys(&mut self) {
        self.live.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kollus-keys-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(crate) async fn ring(dir: &Path) -> KeyRing {
        KeyRing::with(Archive::open(dir.to_str().unwrap()).unwrap(), [9; KEY_LEN])
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_erasure_destroys_every_live_generation_and_a_return_starts_a_new_one() {
        let dir = tempdir("erase");
        let mut keys = ring(&dir).await;
        let (g1, k1) = keys.current("t1").await.unwrap();
        assert_eq!(g1, 1);
        let sealed = k1.seal(b"x", b"a");
        let key_file = std::fs::read(dir.join(key_path("t1", 1))).unwrap();
        // Another reader of the location reads the same key.
        let mut other = ring(&dir).await;
        other.load("t1").await.unwrap();
        let KeyState::Live(k) = other.state("t1", 1) else {
            panic!("live")
        };
        assert_eq!(k.open(&sealed, b"a").as_deref(), Some(&b"x"[..]));
        let event = ErasureEvent {
            erasure_id: uuid::Uuid::now_v7(),
            subject_tag: "t1".into(),
            erased_at: OffsetDateTime::now_utc(),
        };
        assert_eq!(keys.erase(&event).await.unwrap(), vec![1]);
        assert!(matches!(keys.state("t1", 1), KeyState::Erased));
        assert!(!dir.join(key_path("t1", 1)).exists());
        assert!(dir
            .join(location_record_path("t1", event.erasure_id))
            .exists());
        let (g2, _) = keys.current("t1").await.unwrap();
        assert_eq!(g2, 2);
        // Redone (a crash before the commit): the new generation is spared.
        let mut again = ring(&dir).await;
        assert!(again.barrier.erased_at("t1").is_some());
        assert_eq!(again.erase(&event).await.unwrap(), Vec::<u32>::new());
        again.load("t1").await.unwrap();
        assert!(matches!(again.state("t1", 2), KeyState::Live(_)));
        assert!(matches!(again.state("t9", 1), KeyState::Missing));
        // The erased key's file back (an unlink lost to a power cut, a copy restored): the
        // erasure record wins, the key is never used and is deleted again.
        std::fs::write(dir.join(key_path("t1", 1)), &key_file).unwrap();
        let mut back = ring(&dir).await;
        back.load("t1").await.unwrap();
        assert!(matches!(back.state("t1", 1), KeyState::Erased));
        assert!(!dir.join(key_path("t1", 1)).exists());
        assert_eq!(back.current("t1").await.unwrap().0, 2);
    }

    #[tokio::test]
    async fn unattributed_days_expire_and_read_as_expired() {
        let dir = tempdir("expire");
        let mut keys = ring(&dir).await;
        keys.current("unattributed-2020-01-01").await.unwrap();
        keys.current("unattributed-2020-01-30").await.unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_580_515_200).unwrap(); // 2020-02-01
        let gone = keys.expire_unattributed(30, now).await.unwrap();
        assert_eq!(gone, vec!["unattributed-2020-01-01".to_owned()]);
        let reopened = ring(&dir).await;
        assert!(matches!(
            reopened.state("unattributed-2020-01-01", 1),
            KeyState::Expired
        ));
    }
}
