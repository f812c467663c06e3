//! Data subjects (the learners personal data is about), named without naming them.
//!
//! - A subject's **tag** is an HMAC-SHA256 of its `client_user_id` under `SUBJECT_TAG_KEY_FILE`
//!   (hex, 128 bits): stable, so every record about one user carries the same tag, and useless
//!   without the key to tell who it is.
//! - A subject's **data key** (AES-256-GCM) seals what must stay readable until the subject is
//!   erased (the user id in an access-log row; issue 32's archive frames). Data keys are random,
//!   one per (tag, generation), stored in `subject_keys` wrapped by the key-encryption key
//!   (`ARCHIVE_KEK_FILE`), never derived from it: destroying a subject's wrapped key makes what
//!   was sealed under it unreadable, whoever holds the KEK. A subject erased and seen again gets
//!   a new generation.
//!
//! Key files hold 32 random bytes, base64 (`openssl rand -base64 32 > file`); only their paths
//! are settings, and nothing here logs a key.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tokio_postgres::GenericClient;

/// Bytes of a key file's key, once base64-decoded.
pub const KEY_LEN: usize = 32;

/// Reads a key file: 32 bytes, base64 (surrounding whitespace ignored). Errors name the setting
/// and the path, never the content.
pub fn read_key_file(setting: &str, path: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{setting}: reading {}", path.display()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| {
            anyhow::anyhow!(
                "{setting}: {} does not hold base64 (make one with `openssl rand -base64 32`)",
                path.display()
            )
        })?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        anyhow::anyhow!(
            "{setting}: {} holds {} bytes; a key is {KEY_LEN} (`openssl rand -base64 32`)",
            path.display(),
            bytes.len()
        )
    })
}

/// A subject's tag: 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectTag(String);

impl SubjectTag {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A tag read back from storage (not checked: it was written by [`Tagger::tag`]).
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Display for SubjectTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Tags subjects: HMAC-SHA256 of the user id under `SUBJECT_TAG_KEY_FILE`, first 16 bytes.
#[derive(Clone)]
pub struct Tagger {
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Tagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tagger(..)")
    }
}

impl Tagger {
    pub fn new(key: [u8; KEY_LEN]) -> Self {
        Self { key }
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        read_key_file("SUBJECT_TAG_KEY_FILE", path).map(Self::new)
    }

    pub fn tag(&self, client_user_id: &str) -> SubjectTag {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(client_user_id.as_bytes());
        SubjectTag(hex::encode(&mac.finalize().into_bytes()[..16]))
    }
}

/// An AES-256-GCM key: a subject's data key, or the key-encryption key that wraps them.
/// Sealed bytes are `nonce (12) || ciphertext || tag (16)`, the nonce random.
pub struct SealKey(LessSafeKey);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"),
        ))
    }

    /// A new random key's bytes.
    pub fn random_bytes() -> [u8; KEY_LEN] {
        let mut key = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut key).expect("the system's random source");
        key
    }

    /// Encrypts `plain`, binding `aad` (which [`SealKey::open`] must be given again).
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system's random source");
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .expect("sealing fits in memory");
        out.extend_from_slice(&body);
        out
    }

    /// Decrypts what [`SealKey::seal`] made with the same `aad`; `None` when it was not (another
    /// key, another `aad`, altered bytes).
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// The associated data a subject's key is wrapped with, and a sealed value under it is bound
/// to: the tag and the generation (a key or a value moved to another subject does not open).
fn subject_aad(tag: &SubjectTag, generation: i32, what: &str) -> Vec<u8> {
    format!("kollus-subject-v1|{what}|{}|{generation}", tag.as_str()).into_bytes()
}

/// Subjects' tags and data keys: [`Tagger`] plus the key-encryption key, over `subject_keys`.
#[derive(Clone)]
pub struct Subjects {
    tagger: Tagger,
    kek: std::sync::Arc<SealKey>,
}

impl std::fmt::Debug for Subjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subjects(..)")
    }
}

/// A subject's data key, with the tag and generation it belongs to.
#[derive(Debug)]
pub struct DataKey {
    pub tag: SubjectTag,
    pub generation: i32,
    key: SealKey,
}

impl DataKey {
    /// Seals `plain` as a value of kind `what` (e.g. `"client_user_id"`) of this subject.
    pub fn seal(&self, what: &str, plain: &[u8]) -> Vec<u8> {
        self.key
            .seal(plain, &subject_aad(&self.tag, self.generation, what))
    }

    pub fn open(&self, what: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        self.key
            .open(sealed, &subject_aad(&self.tag, self.generation, what))
    }
}

/// What an access-log row keeps of its subject: the tag, the generation and the sealed id.
#[derive(Debug, Clone)]
pub struct SealedSubject {
    pub tag: SubjectTag,
    pub generation: i32,
    pub sealed_id: Vec<u8>,
}

/// The kind a sealed `client_user_id` is bound to.
pub const CLIENT_USER_ID: &str = "client_user_id";

impl Subjects {
    pub fn new(tagger: Tagger, kek: [u8; KEY_LEN]) -> Self {
        Self {
            tagger,
            kek: std::sync::Arc::new(SealKey::new(&kek)),
        }
    }

    /// From the two key files (`SUBJECT_TAG_KEY_FILE`, `ARCHIVE_KEK_FILE`).
    pub fn from_files(tag_key: &Path, kek: &Path) -> anyhow::Result<Self> {
        Ok(Self::new(
            Tagger::from_file(tag_key)?,
            read_key_file("ARCHIVE_KEK_FILE", kek)?,
        ))
    }

    pub fn tag(&self, client_user_id: &str) -> SubjectTag {
        self.tagger.tag(client_user_id)
    }

    /// The subject's current data key, made (a new generation after an erasure) when it has
    /// none. Safe to race: the first insert wins and every caller reads it.
    pub async fn current_key(
        &self,
        client: &impl GenericClient,
        tag: &SubjectTag,
    ) -> anyhow::Result<DataKey> {
        loop {
            let row = client
                .query_opt(
                    "SELECT generation, wrapped FROM subject_keys WHERE tag = $1 \
                      ORDER BY generation DESC LIMIT 1",
                    &[&tag.as_str()],
                )
                .await
                .context("reading a subject key")?;
            let next = match row {
                Some(row) => {
                    let generation: i32 = row.try_get("generation")?;
                    match row.try_get::<_, Option<Vec<u8>>>("wrapped")? {
                        Some(wrapped) => return self.unwrap_key(tag, generation, &wrapped),
                        None => generation + 1, // erased: the subject starts over
                    }
                }
                None => 1,
            };
            let key = SealKey::random_bytes();
            let wrapped = self.kek.seal(&key, &subject_aad(tag, next, "data_key"));
            let inserted = client
                .execute(
                    "INSERT INTO subject_keys (tag, generation, wrapped) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                    &[&tag.as_str(), &next, &wrapped],
                )
                .await
                .context("storing a subject key")?;
            if inserted == 1 {
                return Ok(DataKey {
                    tag: tag.clone(),
                    generation: next,
                    key: SealKey::new(&key),
                });
            }
            // Another request made it first: read theirs.
        }
    }

    /// The subject's data key of `generation`, `None` when erased or never made.
    pub async fn key_at(
        &self,
        client: &impl GenericClient,
        tag: &SubjectTag,
        generation: i32,
    ) -> anyhow::Result<Option<DataKey>> {
        let row = client
            .query_opt(
                "SELECT wrapped FROM subject_keys WHERE tag = $1 AND generation = $2",
                &[&tag.as_str(), &generation],
            )
            .await
            .context("reading a subject key")?;
        match row.and_then(|r| r.get::<_, Option<Vec<u8>>>("wrapped")) {
            Some(wrapped) => self.unwrap_key(tag, generation, &wrapped).map(Some),
            None => Ok(None),
        }
    }

    /// The user id sealed under its subject's current key, for a record naming it.
    pub async fn seal_id(
        &self,
        client: &impl GenericClient,
        client_user_id: &str,
    ) -> anyhow::Result<SealedSubject> {
        let tag = self.tag(client_user_id);
        let key = self.current_key(client, &tag).await?;
        Ok(SealedSubject {
            sealed_id: key.seal(CLIENT_USER_ID, client_user_id.as_bytes()),
            generation: key.generation,
            tag,
        })
    }

    /// [`Subjects::seal_id`], unless the subject's latest key was destroyed by an erasure: then
    /// the tag alone (generation 0, nothing sealed), so naming an erased id (a search, a read
    /// of what is no longer held) never starts a new key that would make it readable again. A
    /// user who returns gets a new generation from the data's own writers ([`current_key`]).
    ///
    /// [`current_key`]: Subjects::current_key
    pub async fn seal_id_unless_erased(
        &self,
        client: &impl GenericClient,
        client_user_id: &str,
    ) -> anyhow::Result<SealedSubject> {
        let tag = self.tag(client_user_id);
        let erased: bool = client
            .query_opt(
                "SELECT wrapped IS NULL FROM subject_keys WHERE tag = $1 \
                  ORDER BY generation DESC LIMIT 1",
                &[&tag.as_str()],
            )
            .await
            .context("reading a subject key")?
            .is_some_and(|r| r.get(0));
        if erased {
            return Ok(SealedSubject {
                tag,
                generation: 0,
                sealed_id: Vec::new(),
            });
        }
        self.seal_id(client, client_user_id).await
    }

    /// The user id a record sealed, `None` once its subject's key is destroyed.
    pub async fn open_id(
        &self,
        client: &impl GenericClient,
        sealed: &SealedSubject,
    ) -> anyhow::Result<Option<String>> {
        Ok(self
            .key_at(client, &sealed.tag, sealed.generation)
            .await?
            .and_then(|key| key.open(CLIENT_USER_ID, &sealed.sealed_id))
            .and_then(|plain| String::from_utf8(plain).ok()))
    }

    /// Destroys the subject's current data key (`wrapped = NULL, erased_at = now()`): whatever
    /// was sealed under it no longer opens, and the subject's next [`Subjects::current_key`]
    /// starts a new generation. The generation destroyed, `None` when the subject had no live
    /// key (never seen, or erased already).
    pub async fn erase(
        &self,
        client: &impl GenericClient,
        tag: &SubjectTag,
    ) -> anyhow::Result<Option<i32>> {
        let row = client
            .query_opt(
                "UPDATE subject_keys SET wrapped = NULL, erased_at = now() \
                  WHERE tag = $1 AND wrapped IS NOT NULL RETURNING generation",
                &[&tag.as_str()],
            )
            .await
            .context("destroying a subject key")?;
        Ok(row.map(|r| r.get::<_, i32>("generation")))
    }

    fn unwrap_key(
        &self,
        tag: &SubjectTag,
        generation: i32,
        wrapped: &[u8],
    ) -> anyhow::Result<DataKey> {
        let key = self
            .kek
            .open(wrapped, &subject_aad(tag, generation, "data_key"))
            .context(
                "a subject key does not unwrap under ARCHIVE_KEK_FILE (another KEK, or altered)",
            )?;
        let key = <[u8; KEY_LEN]>::try_from(key.as_slice())
            .map_err(|_| anyhow::anyhow!("a subject key of {} bytes", key.len()))?;
        Ok(DataKey {
            tag: tag.clone(),
            generation,
            key: SealKey::new(&key),
        })
    }
}

/// Subject locks are taken on one of this many keys (a tag's [`subject_lock_slot`]), not one per
/// tag: a worker's shard transaction locks every subject it applies reports of, and a batch of a
/// thousand users would otherwise take a thousand entries of PostgreSQL's shared lock table
/// (sized `max_locks_per_transaction` x connections, 64 x 100 by default; "out of shared memory"
/// past it). 64 keys: never more advisory locks per transaction than that default allows. Two
/// subjects on one key only wait on each other while an erasure holds it (milliseconds), and
/// workers' shared locks never wait on each other. Changing this or the slot function needs
/// every service stopped first: token-api and the workers must lock the same keys.
pub const SUBJECT_LOCK_SLOTS: u32 = 64;

/// The first key of the two-key advisory locks subjects are locked with ('KSUB'): a space of its
/// own, apart from the one-key locks of migrations and the access-log sealer.
const SUBJECT_LOCK_SPACE: i32 = 0x4b53_5542;

/// The lock key a subject's data is serialised on: FNV-1a of the tag, modulo
/// [`SUBJECT_LOCK_SLOTS`]. Stable across releases (see there).
pub fn subject_lock_slot(tag: &SubjectTag) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in tag.as_str().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // Below SUBJECT_LOCK_SLOTS (64): the cast is exact.
    (h % SUBJECT_LOCK_SLOTS) as i32
}

/// Serialises everything that changes one subject's data for the rest of the transaction
/// (`pg_advisory_xact_lock` on the tag's [`subject_lock_slot`]): an erasure takes it
/// exclusively, and history-worker's apply takes it shared for each subject of a shard
/// ([`lock_subjects_shared`]), so an erasure waits for the applies under way and the applies
/// after it read its barrier. Call it inside a transaction.
pub async fn lock_subject(client: &impl GenericClient, tag: &SubjectTag) -> anyhow::Result<()> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&SUBJECT_LOCK_SPACE, &subject_lock_slot(tag)],
        )
        .await
        .context("locking a subject")?;
    Ok(())
}

/// The distinct lock slots of `tags`, in increasing order: the order every transaction takes
/// them in.
pub fn subject_lock_slots<'a>(tags: impl IntoIterator<Item = &'a SubjectTag>) -> Vec<i32> {
    let mut slots: Vec<i32> = tags.into_iter().map(subject_lock_slot).collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// [`lock_subject`], shared, for several subjects at once (one statement, slots in increasing
/// order): appliers of different subjects, or of the same one, never wait on each other; an
/// erasure of any of them waits for this transaction, and this one for an erasure under way.
/// Pipelined with the caller's next statements (issued before this is awaited), each of those
/// still runs once the locks are granted, and under READ COMMITTED reads what an erasure
/// committed meanwhile.
pub async fn lock_subjects_shared<'a>(
    client: &impl GenericClient,
    tags: impl IntoIterator<Item = &'a SubjectTag>,
) -> Result<(), tokio_postgres::Error> {
    let slots = subject_lock_slots(tags);
    if slots.is_empty() {
        return Ok(());
    }
    client
        .query_one(
            "SELECT count(pg_advisory_xact_lock_shared($1, s)) \
               FROM (SELECT s FROM unnest($2::int4[]) AS s ORDER BY s) AS slots",
            &[&SUBJECT_LOCK_SPACE, &slots],
        )
        .await?;
    Ok(())
}

/// Key file paths for tests and `make run`: writes a fresh random key to `dir/name` (mode 0600)
/// and returns its path.
pub fn write_random_key_file(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(
        f,
        "{}",
        base64::engine::general_purpose::STANDARD.encode(SealKey::random_bytes())
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_stable_per_key_and_tells_nothing_without_it() {
        let a = Tagger::new([1; KEY_LEN]);
        let b = Tagger::new([2; KEY_LEN]);
        assert_eq!(a.tag("user-1"), a.tag("user-1"));
        assert_ne!(a.tag("user-1"), a.tag("user-2"));
        assert_ne!(a.tag("user-1"), b.tag("user-1"));
        assert_eq!(a.tag("user-1").as_str().len(), 32);
        assert!(!a.tag("user-1").as_str().contains("user"));
    }

    #[test]
    fn subjects_lock_on_a_bounded_stable_set_of_keys() {
        let t = Tagger::new([3; KEY_LEN]);
        let tags: Vec<SubjectTag> = (0..10_000).map(|i| t.tag(&format!("u{i}"))).collect();
        let slots = subject_lock_slots(&tags);
        assert_eq!(slots.len(), SUBJECT_LOCK_SLOTS as usize, "every slot used");
        assert!(slots.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        assert_eq!(
            subject_lock_slot(&SubjectTag::from_stored(
                "0123456789abcdef0123456789abcdef".into()
            )),
            subject_lock_slot(&SubjectTag::from_stored(
                "0123456789abcdef0123456789abcdef".into()
            ))
        );
        // Pinned: token-api and the workers of one deployment must agree on it.
        assert_eq!(subject_lock_slot(&SubjectTag::from_stored("a".into())), 44);
    }

    #[test]
    fn sealed_bytes_open_only_with_their_key_and_aad() {
        let key = SealKey::new(&[7; KEY_LEN]);
        let sealed = key.seal(b"user-1", b"aad");
        assert!(!sealed.windows(6).any(|w| w == b"user-1"));
        assert_eq!(key.open(&sealed, b"aad").as_deref(), Some(&b"user-1"[..]));
        assert_eq!(key.open(&sealed, b"other"), None);
        assert_eq!(SealKey::new(&[8; KEY_LEN]).open(&sealed, b"aad"), None);
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(&altered, b"aad"), None);
        assert_eq!(key.open(&sealed[..5], b"aad"), None);
        // A random nonce: the same id seals differently each time.
        assert_ne!(key.seal(b"user-1", b"aad"), sealed);
    }

    #[test]
    fn key_files_must_hold_32_base64_bytes_and_errors_never_show_them() {
        let dir = std::env::temp_dir().join(format!("kollus-subject-{}", std::process::id()));
        let path = write_random_key_file(&dir, "good").unwrap();
        assert!(read_key_file("X_FILE", &path).is_ok());
        std::fs::write(dir.join("short"), "c2hvcnQ=\n").unwrap();
        let e = read_key_file("X_FILE", &dir.join("short"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("X_FILE") && e.contains("5 bytes"), "{e}");
        std::fs::write(dir.join("text"), "not base64 secret!!\n").unwrap();
        let e = read_key_file("X_FILE", &dir.join("text"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
        let e = read_key_file("X_FILE", &dir.join("missing")).unwrap_err();
        assert!(format!("{e:#}").contains("X_FILE: reading"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
