//! What every handler shares: keys, settings and the pool, built once in `startup.rs`.

use deadpool_postgres::Pool;
use std::sync::Arc;

use crate::catalog;
use crate::configuration::StrictCatalog;
use crate::metrics::Metrics;
use crate::request::Limits;
use crate::signer::Signer;

pub struct State {
    pub signer: Arc<Signer>,
    pub custom_key: String,
    pub player_url: String,
    pub limits: Limits,
    pub emit_exp: bool,
    pub strict: StrictCatalog,
    pub catalog_cache: catalog::CatalogCache,
    pub pool: Pool,
    pub metrics: Metrics,
    /// Where user exports find the raw LMS reports (`ARCHIVE_DIR`), if anywhere.
    pub archive: Option<kollus_archive::store::Archive>,
}
