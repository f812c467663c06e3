//! The strict-catalog check: may a token be issued for these videos?

use std::time::Duration;

use deadpool_postgres::Pool;
use kollus_common::domain::MediaContentKey;

use crate::configuration::StrictCatalog;
use crate::problem::FieldError;

/// Why the catalog refuses a video (a bounded metric label: strum's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Refusal {
    Deleted,
    InNoChannel,
    Unknown,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        self.into()
    }
}

/// What the catalog says of one video; `None` in the cache: the catalog has never seen it.
#[derive(Debug, Clone, Copy)]
struct Known {
    deleted: bool,
    in_any_channel: bool,
}

/// Recent catalog answers, reused for the configured time so that a busy token endpoint does
/// not ask PostgreSQL the same question thousands of times a second. Bounded to
/// [`CatalogCache::MAX_ENTRIES`] keys (moka evicts the least useful).
pub struct CatalogCache(Option<moka::sync::Cache<String, Option<Known>>>);

impl CatalogCache {
    const MAX_ENTRIES: u64 = 100_000;

    /// Answers live for `ttl`; zero: no cache.
    pub fn new(ttl: Duration) -> Self {
        Self((!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(Self::MAX_ENTRIES)
                .time_to_live(ttl)
                .build()
        }))
    }

    /// `Some(answer)` when a fresh answer is held.
    fn get(&self, key: &str) -> Option<Option<Known>> {
        self.0.as_ref()?.get(key)
    }

    fn put(&self, answers: impl IntoIterator<Item = (String, Option<Known>)>) {
        if let Some(cache) = &self.0 {
            for (key, known) in answers {
                cache.insert(key, known);
            }
        }
    }
}

/// What the catalog said of a request's videos.
#[derive(Debug, Default)]
pub struct Checked {
    /// The videos it refuses, with the field each one came from.
    pub refusals: Vec<(Refusal, FieldError)>,
    /// How many of the videos it does not know (refused too in `require` mode).
    pub unknown: usize,
}

/// Checks the videos against the catalog. Unknown videos are refused only in `require` mode;
/// with `off` the catalog is not read, so nothing is refused or found unknown.
pub async fn check(
    pool: &Pool,
    cache: &CatalogCache,
    mode: StrictCatalog,
    media: &[MediaContentKey],
) -> anyhow::Result<Checked> {
    if mode == StrictCatalog::Off {
        return Ok(Checked::default());
    }
    let keys: Vec<&str> = media.iter().map(|k| k.as_str()).collect();
    let mut answers: Vec<Option<Option<Known>>> = keys.iter().map(|k| cache.get(k)).collect();
    let missing: Vec<&str> = keys
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.is_none())
        .map(|(k, _)| *k)
        .collect();
    if !missing.is_empty() {
        let client = pool.get().await?;
        // Prepared once per connection: one round trip per check instead of two.
        let statement = client
            .prepare_cached(
                "SELECT media_content_key, deleted_at IS NOT NULL AS deleted, in_any_channel \
                 FROM media_playability WHERE media_content_key = ANY($1)",
            )
            .await?;
        let rows = client.query(&statement, &[&missing]).await?;
        let fetched: Vec<(String, Option<Known>)> = missing
            .iter()
            .map(|key| {
                let known = rows
                    .iter()
                    .find(|r| r.get::<_, &str>("media_content_key") == *key)
                    .map(|r| Known {
                        deleted: r.get("deleted"),
                        in_any_channel: r.get("in_any_channel"),
                    });
                ((*key).to_owned(), known)
            })
            .collect();
        for (answer, key) in answers.iter_mut().zip(&keys) {
            if answer.is_none() {
                *answer = fetched
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, known)| *known);
            }
        }
        cache.put(fetched);
    }
    let mut out = Checked::default();
    for (i, (key, known)) in keys.iter().zip(answers).enumerate() {
        let known = known.flatten();
        out.unknown += usize::from(known.is_none());
        let refusal = match known {
            Some(k) if k.deleted => Some(Refusal::Deleted),
            Some(k) if !k.in_any_channel => Some(Refusal::InNoChannel),
            Some(_) => None,
            None if mode == StrictCatalog::Require => Some(Refusal::Unknown),
            None => None,
        };
        if let Some(refusal) = refusal {
            let message = match refusal {
                Refusal::Deleted => format!("{key} was deleted in Kollus"),
                Refusal::InNoChannel => format!("{key} is in no Kollus channel, so it cannot play"),
                Refusal::Unknown => format!("{key} is not in the catalog (STRICT_CATALOG=require)"),
            };
            out.refusals.push((
                refusal,
                FieldError {
                    field: format!("media[{i}].media_content_key"),
                    message,
                },
            ));
        }
    }
    Ok(out)
}
