//! How many exports stream at once, and on which connections: the exports' own pool and a
//! slot per connection, taken before anything is streamed (a model the console's downloads
//! use too).

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::archive::RawReports;
use crate::configuration::ExportSettings;
use crate::metrics::Metrics;

/// What exports need, as their own `web::Data`.
pub struct Export {
    /// The exports' own pool, `EXPORT_CONCURRENCY` connections.
    pub pool: Pool,
    /// A slot per export streaming, as many as the pool's connections.
    pub slots: Arc<Semaphore>,
    pub settings: ExportSettings,
    pub metrics: Metrics,
    /// Where user exports find the raw LMS reports (`ARCHIVE_DIR`), if anywhere.
    pub archive: Option<RawReports>,
}

/// An export let in: its slot and its connection, both held until it ends.
pub struct Admitted {
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) client: deadpool_postgres::Object,
}

/// Why an export is not let in now.
#[derive(Debug)]
pub enum NotAdmitted {
    /// Every slot is streaming (`EXPORT_CONCURRENCY`).
    Busy,
    /// No connection of the exports' pool (PostgreSQL not answering in time).
    Database(deadpool_postgres::PoolError),
}

impl Export {
    /// The exports' own pool on `database`'s server, one connection per slot.
    pub fn new(
        database: &kollus_common::settings::DatabaseSettings,
        settings: ExportSettings,
        metrics: Metrics,
        archive: Option<RawReports>,
    ) -> anyhow::Result<Self> {
        let size = usize::from(settings.concurrency);
        let pool = kollus_common::db::pool(&kollus_common::settings::DatabaseSettings {
            pool_size: size,
            ..database.clone()
        })?;
        Ok(Self {
            pool,
            slots: Arc::new(Semaphore::new(size)),
            settings,
            metrics,
            archive,
        })
    }

    /// A slot and a connection for one more export, before anything is streamed: so a full
    /// house or a database not answering is a 503, not a 200 that breaks off.
    pub async fn admit(&self) -> Result<Admitted, NotAdmitted> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.metrics
                .exports_unfinished
                .with_label_values(&["busy"])
                .inc();
            return Err(NotAdmitted::Busy);
        };
        let client = self.pool.get().await.map_err(NotAdmitted::Database)?;
        Ok(Admitted { permit, client })
    }
}
