//! `--rebuild`: replaying a worker's topic from the beginning into emptied tables.

use super::apply::Apply;
use crate::kafka;
use crate::settings::KafkaSettings;

/// Rewinds the group, then empties the tables: in this order, so a refused rewind (the group
/// still has members) leaves the tables as they were. Should the emptying fail after the rewind,
/// the replay applies onto the existing rows, which changes nothing (every apply is idempotent).
pub(super) async fn rebuild<A: Apply>(
    settings: &KafkaSettings,
    group_id: &str,
    topic: &str,
    apply: &A,
) -> anyhow::Result<()> {
    let rewound = {
        let (settings, group_id, topic) = (settings.clone(), group_id.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || kafka::rewind_group(&settings, &group_id, &topic))
            .await??
    };
    apply
        .reset()
        .await
        .map_err(|e| anyhow::anyhow!("emptying the tables for a rebuild: {e}"))?;
    tracing::warn!(
        group = group_id,
        topic,
        records = rewound,
        "rebuild: tables emptied and the group rewound; replaying the topic from the beginning"
    );
    Ok(())
}
