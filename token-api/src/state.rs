//! What every handler shares: keys, settings and the pool, built once in `startup.rs`.

use deadpool_postgres::Pool;
use jsonwebtoken::{DecodingKey, EncodingKey};

use crate::auth::ApiKeys;
use crate::catalog;
use crate::configuration::StrictCatalog;
use crate::metrics::Metrics;
use crate::request::Limits;

pub struct State {
    pub keys: ApiKeys,
    pub encoding_key: EncodingKey,
    pub decoding_key: DecodingKey,
    pub custom_key: String,
    pub player_url: String,
    pub limits: Limits,
    pub emit_exp: bool,
    pub strict: StrictCatalog,
    pub catalog_cache: catalog::CatalogCache,
    pub pool: Pool,
    pub metrics: Metrics,
    pub play: crate::playback::PlaySettings,
    /// Where user exports find the raw LMS reports (`ARCHIVE_DIR`), if anywhere.
    pub archive: Option<kollus_archive::store::Archive>,
}
