//! The strict-catalog check: may a token be issued for these videos?

use deadpool_postgres::Pool;
use kollus_common::domain::MediaContentKey;

use crate::configuration::StrictCatalog;
use crate::request::FieldError;

/// Why the catalog refuses a video (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Deleted,
    InNoChannel,
    Unknown,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::InNoChannel => "in_no_channel",
            Self::Unknown => "unknown",
        }
    }
}

/// The videos the catalog refuses, with the field each one came from. Unknown videos are
/// refused only in `require` mode.
pub async fn refusals(
    pool: &Pool,
    mode: StrictCatalog,
    media: &[MediaContentKey],
) -> anyhow::Result<Vec<(Refusal, FieldError)>> {
    if mode == StrictCatalog::Off {
        return Ok(Vec::new());
    }
    let keys: Vec<&str> = media.iter().map(|k| k.as_str()).collect();
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT media_content_key, deleted_at IS NOT NULL, in_any_channel \
             FROM media_playability WHERE media_content_key = ANY($1)",
            &[&keys],
        )
        .await?;
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let known = rows.iter().find(|r| r.get::<_, &str>(0) == *key);
        let refusal = match known {
            Some(r) if r.get::<_, bool>(1) => Some(Refusal::Deleted),
            Some(r) if !r.get::<_, bool>(2) => Some(Refusal::InNoChannel),
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
            out.push((
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
