//! Building and running history-worker: the same [`Application`] runs in `main` and in tests.

use kollus_common::db::connect_database;
use kollus_common::worker::{Worker, WorkerParts};

use crate::configuration::Settings;
use crate::history::History;
use crate::metrics::Metrics;

pub struct Application(Worker<History>);

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let tagger = kollus_common::subject::Tagger::from_file(&settings.subject_tag_key_file)?;
        let pool = connect_database(&settings.database).await?;
        if settings.consume.rebuild {
            // Before the replay (which `Worker::build` runs): whom not to bring back.
            crate::barrier::load_for_rebuild(
                &pool,
                &settings.kafka,
                settings.consume.archive_dir.as_deref(),
                settings.consume.archive_keys_dir.as_deref(),
            )
            .await?;
        }
        let metrics = Metrics::new();
        kollus_common::metrics::register_pool(&metrics.registry, &pool);
        let parts = WorkerParts {
            listen_addr: settings.listen_addr,
            kafka: &settings.kafka,
            group_id: &settings.group_id,
            topic: &settings.kafka.playback_topic,
            stage: "history-worker",
            consume: &settings.consume,
            registry: metrics.registry.clone(),
            metrics: metrics.consume.clone(),
        };
        Ok(Self(
            Worker::build(
                parts,
                History {
                    pool,
                    metrics,
                    plausibility: settings.plausibility,
                    tagger,
                    write_shards: settings
                        .write_shards
                        .clamp(1, settings.database.pool_size.max(1)),
                },
            )
            .await?,
        ))
    }

    pub fn port(&self) -> u16 {
        self.0.port()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }

    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        self.0.run_until(shutdown).await
    }
}
