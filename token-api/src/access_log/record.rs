//! Writing the access record: [`AccessLog::record`] appends one row per access (a person's, or
//! the product app's first read of a subject in a day), [`AccessLog::record_read`] counts the
//! product app's reads. Rows are inserted freely; the sealer (`seal`) chains them afterwards, so
//! no request waits on a lock. A request whose access cannot be recorded is refused (the
//! caller answers 503): nothing personal is shown unrecorded.

use std::net::IpAddr;

use anyhow::Context as _;
use kollus_common::subject::{SealedSubject, SubjectTag, Subjects};
use tokio_postgres::GenericClient;

/// What was done. Its text (snake_case) is the row's `action`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum Action {
    /// A console sign-in.
    SignIn,
    /// A console sign-in refused (unknown key, a key without `console`, a bad form, limited).
    SignInRefused,
    /// A console search for a user id (the subject, whether or not it was found).
    Search,
    /// A user's console page.
    ViewUser,
    /// A user's refund view of one video (`target`: the video) or of a course (`target`:
    /// `course:<id>`, the console's course page for the user).
    ViewRefund,
    /// A user's sessions downloaded from the console as CSV (`reason` required).
    ExportCsv,
    /// A user's data downloaded from the console as JSON Lines (`reason` required).
    ExportJsonl,
    /// The product app's reads of a user's data through the API, one row per key, subject and
    /// day with their `count`.
    ApiRead,
    /// An export through the API (`reason` required; `target`: the video of a video export).
    ApiExport,
    /// An entitlement granted (`target`: `scope:target`).
    Grant,
    /// An entitlement revoked (`target`: `scope:target`).
    Revoke,
    /// A course changed (issue 33).
    CourseChange,
    /// A user erased (issue 32).
    Erase,
    /// The API key list reloaded (`target`: what changed): a change of who may access.
    KeysReloaded,
}

impl Action {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The chain and retention the action's rows belong to.
    pub fn class(self) -> Class {
        match self {
            Self::KeysReloaded => Class::Rights,
            _ => Class::Access,
        }
    }

    /// Whether a row of this action must give a reason (every download).
    pub fn needs_reason(self) -> bool {
        matches!(self, Self::ExportCsv | Self::ExportJsonl | Self::ApiExport)
    }
}

/// A chain of its own, with a retention of its own: `access` (accesses to personal data,
/// `ACCESS_LOG_RETENTION_DAYS`) or `rights` (changes of who may access, [`RIGHTS_RETENTION_DAYS`]).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum Class {
    Access,
    Rights,
}

impl Class {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How long rows of access-right changes are kept: three years (안전성 확보조치 기준 제5조).
pub const RIGHTS_RETENTION_DAYS: u32 = 1_095;

/// The longest reason kept, in characters.
pub const REASON_MAX_CHARS: usize = 500;

/// Rows per statement of [`AccessLog::record_each`].
pub const EACH_BATCH: usize = 1_000;

/// A download's reason as given: trimmed, 1 to [`REASON_MAX_CHARS`] characters, no control
/// characters; the error says what is wrong, for a 400 or the console's form. It never names the
/// person: `subject`'s id, in any case, is replaced by [`REDACTED`] (a reason is kept as written
/// for years and outlives an erasure, when the sealed id no longer opens).
pub fn reason(raw: Option<&str>, subject: Option<&str>) -> Result<String, String> {
    let given = raw.map(str::trim).unwrap_or("");
    if given.is_empty() {
        return Err("a reason is required for every download (why this data is needed)".into());
    }
    if given.chars().count() > REASON_MAX_CHARS {
        return Err(format!("a reason is at most {REASON_MAX_CHARS} characters"));
    }
    if given.chars().any(char::is_control) {
        return Err("a reason holds no control characters".into());
    }
    Ok(redacted_all(given, subject))
}

/// `text` with every one of `ids` replaced by [`REDACTED`] ([`redacted`]), cut to
/// [`REASON_MAX_CHARS`]: a short id replaced many times must not make a reason the record
/// refuses (a user `0` in a reason of 500 zeros would make it 3,000 characters).
pub fn redacted_all<'a>(text: &str, ids: impl IntoIterator<Item = &'a str>) -> String {
    let out = ids
        .into_iter()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .fold(text.to_owned(), |r, id| redacted(&r, id));
    out.chars().take(REASON_MAX_CHARS).collect()
}

/// What stands in a reason for the person's id.
pub const REDACTED: &str = "[user]";

/// `text` with every occurrence of `id` (compared char by char, case-insensitively) replaced by
/// [`REDACTED`].
pub fn redacted(text: &str, id: &str) -> String {
    let same = |a: char, b: char| a == b || a.to_lowercase().eq(b.to_lowercase());
    let id: Vec<char> = id.chars().collect();
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let hit = chars.len() - i >= id.len()
            && chars[i..i + id.len()]
                .iter()
                .zip(&id)
                .all(|(&a, &b)| same(a, b));
        if hit {
            out.push_str(REDACTED);
            i += id.len();
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// One access, as [`AccessLog::record`] writes it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub action: Action,
    /// The API key's name (the console agent's key, or the product app's).
    pub key_name: &'a str,
    /// The console session's id hash (`console_sessions.id_hash`), on console actions.
    pub session: Option<&'a [u8]>,
    /// The client's address, through TRUSTED_PROXIES.
    pub client_addr: Option<IpAddr>,
    /// The user whose data it was (`client_user_id`); stored as tag plus sealed id.
    pub subject: Option<&'a str>,
    /// What else the action names: a video, an entitlement, a searched id's outcome.
    pub target: Option<&'a str>,
    /// Why (required on downloads: [`Action::needs_reason`]).
    pub reason: Option<&'a str>,
}

impl<'a> Entry<'a> {
    /// An entry of `action` by `key_name`, naming nothing else yet.
    pub fn new(action: Action, key_name: &'a str) -> Self {
        Self {
            action,
            key_name,
            session: None,
            client_addr: None,
            subject: None,
            target: None,
            reason: None,
        }
    }
}

/// The access record's writer (and the subjects' keys it seals ids with).
#[derive(Clone, Debug)]
pub struct AccessLog {
    pub subjects: Subjects,
    /// Rows written, by action.
    pub rows: prometheus::IntCounterVec,
}

impl AccessLog {
    pub fn new(subjects: Subjects, rows: prometheus::IntCounterVec) -> Self {
        for a in Action::ALL {
            rows.with_label_values(&[a.as_str()]);
        }
        Self { subjects, rows }
    }

    pub fn tag(&self, client_user_id: &str) -> SubjectTag {
        self.subjects.tag(client_user_id)
    }

    /// Appends one row. A download without a reason is refused here too (a handler's mistake,
    /// never stored reasonless).
    pub async fn record(&self, client: &impl GenericClient, e: Entry<'_>) -> anyhow::Result<()> {
        self.record_counted(client, e, 1).await
    }

    /// [`AccessLog::record`] of a row standing for `count` accesses alike (refused sign-ins
    /// past the minute's cap are folded into the next one recorded).
    pub async fn record_counted(
        &self,
        client: &impl GenericClient,
        e: Entry<'_>,
        count: i64,
    ) -> anyhow::Result<()> {
        // Checked again here, and stored as checked (the person's id never in it).
        let cleaned = if e.action.needs_reason() {
            Some(reason(e.reason, e.subject).map_err(anyhow::Error::msg)?)
        } else {
            e.reason.map(|r| r.trim().to_owned())
        };
        let sealed = match e.subject {
            Some(user) => Some(self.subjects.seal_id_unless_erased(client, user).await?),
            None => None,
        };
        let (tag, generation, sealed_id) = split(sealed.as_ref());
        client
            .execute(
                "INSERT INTO access_log (class, action, key_name, session_hash, client_addr, \
                     subject_tag, subject_generation, subject_sealed, target, reason, count) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &e.action.class().as_str(),
                    &e.action.as_str(),
                    &e.key_name,
                    &e.session,
                    &e.client_addr,
                    &tag,
                    &generation,
                    &sealed_id,
                    &e.target,
                    &cleaned,
                    &count.max(1),
                ],
            )
            .await
            .with_context(|| format!("recording a {} access", e.action.as_str()))?;
        self.rows.with_label_values(&[e.action.as_str()]).inc();
        Ok(())
    }

    /// Appends one row of `e` per subject in `subjects` (user ids; each stored by its tag only,
    /// no id sealed): an access that listed many people at once, such as a video's export.
    /// Written [`EACH_BATCH`] rows a statement.
    pub async fn record_each(
        &self,
        client: &impl GenericClient,
        e: Entry<'_>,
        subjects: &[String],
    ) -> anyhow::Result<u64> {
        if e.action.needs_reason() {
            reason(e.reason, None).map_err(anyhow::Error::msg)?;
        }
        let mut tags: Vec<String> = subjects
            .iter()
            .map(|u| self.subjects.tag(u).as_str().to_owned())
            .collect();
        tags.sort_unstable();
        tags.dedup();
        let mut written = 0u64;
        for chunk in tags.chunks(EACH_BATCH) {
            written += client
                .execute(
                    "INSERT INTO access_log (class, action, key_name, session_hash, client_addr, \
                         subject_tag, target, reason) \
                     SELECT $1, $2, $3, $4, $5, t, $6, $7 FROM unnest($8::text[]) t",
                    &[
                        &e.action.class().as_str(),
                        &e.action.as_str(),
                        &e.key_name,
                        &e.session,
                        &e.client_addr,
                        &e.target,
                        &e.reason.map(str::trim),
                        &chunk,
                    ],
                )
                .await
                .with_context(|| format!("recording a {} access per subject", e.action.as_str()))?;
        }
        self.rows
            .with_label_values(&[e.action.as_str()])
            .inc_by(written);
        Ok(written)
    }

    /// Counts one read of `subject`'s data by the product app's key `key_name` today (UTC). The
    /// day's first read makes the counter; the sealer turns each finished day's counter into one
    /// `api_read` row.
    pub async fn record_read(
        &self,
        client: &impl GenericClient,
        key_name: &str,
        client_addr: Option<IpAddr>,
        subject: &str,
    ) -> anyhow::Result<()> {
        // Counting goes through a function of the migration role (V24): the service role may
        // add to a counter, never lower or delete one. A counter exists already on every read
        // but the day's first: no key to unwrap then.
        let tag = self.subjects.tag(subject);
        let none: (Option<i32>, Option<&[u8]>) = (None, None);
        let counted: bool = client
            .query_one(
                "SELECT access_log_count_read($1, $2, $3, $4, $5)",
                &[&key_name, &tag.as_str(), &none.0, &none.1, &client_addr],
            )
            .await
            .context("counting an API read")?
            .get(0);
        if !counted {
            let sealed = self.subjects.seal_id_unless_erased(client, subject).await?;
            client
                .query_one(
                    "SELECT access_log_count_read($1, $2, $3, $4, $5)",
                    &[
                        &key_name,
                        &tag.as_str(),
                        &sealed.generation,
                        &sealed.sealed_id,
                        &client_addr,
                    ],
                )
                .await
                .context("counting an API read")?;
        }
        Ok(())
    }
}

/// A row's subject columns; an erased subject's (generation 0) by tag alone.
fn split(s: Option<&SealedSubject>) -> (Option<&str>, Option<i32>, Option<&[u8]>) {
    match s {
        Some(s) if s.generation == 0 => (Some(s.tag.as_str()), None, None),
        Some(s) => (
            Some(s.tag.as_str()),
            Some(s.generation),
            Some(s.sealed_id.as_slice()),
        ),
        None => (None, None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_downloads_need_a_reason_and_only_key_changes_are_rights() {
        for a in Action::ALL {
            assert_eq!(
                a.needs_reason(),
                a.as_str().contains("export"),
                "{}",
                a.as_str()
            );
            assert_eq!(a.class() == Class::Rights, *a == Action::KeysReloaded);
        }
        assert_eq!(Action::SignInRefused.as_str(), "sign_in_refused");
    }

    #[test]
    fn a_reason_is_trimmed_bounded_and_printable() {
        assert_eq!(
            reason(Some(&"0".repeat(500)), Some("0"))
                .unwrap()
                .chars()
                .count(),
            REASON_MAX_CHARS,
            "a short id replaced many times never makes a reason the record refuses"
        );
        assert_eq!(reason(Some("  refund #12 "), None).unwrap(), "refund #12");
        assert!(reason(None, None).is_err());
        assert!(reason(Some("   "), None).is_err());
        assert!(reason(Some("a\u{7}b"), None).is_err());
        assert!(reason(Some(&"가".repeat(REASON_MAX_CHARS)), None).is_ok());
        assert!(reason(Some(&"가".repeat(REASON_MAX_CHARS + 1)), None).is_err());
    }

    #[test]
    fn a_reason_never_names_the_person() {
        assert_eq!(
            reason(
                Some("refund for Kim-Learner-7, kim-learner-7"),
                Some("kim-learner-7")
            )
            .unwrap(),
            "refund for [user], [user]"
        );
        assert_eq!(
            reason(Some("ticket 12"), Some("kim-learner-7")).unwrap(),
            "ticket 12"
        );
        assert_eq!(
            reason(Some("김철수 문의"), Some("김철수")).unwrap(),
            "[user] 문의"
        );
        assert_eq!(reason(Some("00"), Some("000")).unwrap(), "00");
        assert_eq!(reason(Some("0000"), Some("00")).unwrap(), "[user][user]");
    }
}
