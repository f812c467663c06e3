//! What a consumer group has done: the offsets it committed. A worker commits an offset only
//! after the transaction that applied the records before it committed (DESIGN.md, the delivery
//! contract), so the committed offsets say how many of a topic's records are applied, with no
//! table that remembers each record.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Records of `topic` that `group` has committed past: the sum of its committed offsets over the
/// partitions (offsets start at 0 on a fresh topic, so this counts the records applied). 0 for a
/// partition with no commit, and for a topic the broker does not know yet. A blocking call.
pub fn committed_records(brokers: &str, group: &str, topic: &str) -> i64 {
    // Fetching a group's offsets (OffsetFetch) does not join the group.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .expect("creating a consumer to read committed offsets");
    let partitions = kollus_common::kafka::partitions(&consumer, topic).unwrap_or_default();
    let mut list = TopicPartitionList::new();
    for p in partitions {
        list.add_partition(topic, p);
    }
    if list.count() == 0 {
        return 0;
    }
    let Ok(committed) = consumer.committed_offsets(list, Duration::from_secs(10)) else {
        return 0;
    };
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        })
        .sum()
}

/// [`committed_records`] off the async threads.
pub async fn committed(brokers: &str, group: &str, topic: &str) -> i64 {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || committed_records(&brokers, &group, &topic))
        .await
        .expect("reading committed offsets")
}
