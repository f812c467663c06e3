//! What a consumer group has done: the offsets it committed. A worker commits an offset only
//! after the transaction that applied the records before it committed (DESIGN.md, the delivery
//! contract), so the committed offsets say how many of a topic's records are applied, with no
//! table that remembers each record.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Records of `topic` that `group` has committed past: the sum of its committed offsets over the
/// partitions (offsets start at 0 on a fresh topic, so this counts the records applied). 0 for a
/// partition the group has committed nothing on yet (a group that never committed has 0).
///
/// 0 too for a topic of a [`crate::Broker`]'s settings not created yet (nothing can be
/// committed on it). Whatever cannot be asked fails the test, naming the group and topic: any
/// other topic the broker does not know (after a minute), or offsets the broker would not give
/// (after 30 s of trying). Never 0 for "could not ask". A blocking call.
pub fn committed_records(brokers: &str, group: &str, topic: &str) -> i64 {
    committed_within(brokers, group, topic, Duration::from_secs(60))
}

fn committed_within(brokers: &str, group: &str, topic: &str, topic_wait: Duration) -> i64 {
    // Fetching a group's offsets (OffsetFetch) does not join the group.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .expect("creating a consumer to read committed offsets");
    // A topic of a Broker's settings not created yet: nothing committed on it.
    let Some(partitions) = crate::broker::known_partitions(&consumer, brokers, topic, topic_wait)
    else {
        return 0;
    };
    let mut list = TopicPartitionList::new();
    for p in partitions {
        list.add_partition(topic, p);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let committed = loop {
        match consumer.committed_offsets(list.clone(), Duration::from_secs(10)) {
            Ok(c) => break c,
            // A broker under load, or the group's coordinator moving: ask again, for a while.
            Err(e) if Instant::now() < deadline => {
                eprintln!("the offsets of group {group} on {topic}: {e}; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                panic!("the offsets group {group} committed on {topic} ({brokers}): {e}, for 30 s")
            }
        }
    };
    committed
        .elements()
        .iter()
        .map(|e| {
            if let Err(err) = e.error() {
                panic!(
                    "the offset group {group} committed on {topic} [{}]: {err}",
                    e.partition()
                );
            }
            match e.offset() {
                Offset::Offset(n) => n,
                // Nothing committed on this partition yet.
                Offset::Invalid => 0,
                other => panic!(
                    "the offset group {group} committed on {topic} [{}]: {other:?}, not an offset",
                    e.partition()
                ),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Broker;
    use rdkafka::consumer::CommitMode;

    #[tokio::test]
    #[should_panic(expected = "never-created on")]
    async fn a_topic_the_broker_does_not_know_fails_naming_it() {
        let broker = Broker::start().await;
        committed_within(
            &broker.addr,
            &broker.group("g"),
            &broker.topic("never-created"),
            Duration::from_secs(2),
        );
    }

    #[tokio::test]
    async fn nothing_is_committed_on_a_topic_of_the_settings_not_created_yet() {
        let broker = Broker::start().await;
        let topic = broker.settings().playback_topic;
        assert_eq!(committed(&broker.addr, &broker.group("g"), &topic).await, 0);
    }

    #[tokio::test]
    async fn nothing_committed_is_0_and_a_commit_is_counted() {
        let broker = Broker::start().await;
        let settings = broker.settings();
        let topic = settings.content_topic.clone();
        kollus_common::kafka::ensure_topics(&settings, &[&topic])
            .await
            .expect("creating the test's topic");
        for i in 0..5 {
            broker.publish_raw(&topic, &format!("k{i}"), b"r").await;
        }
        let group = broker.group("g");
        assert_eq!(committed(&broker.addr, &group, &topic).await, 0);

        // The group commits past 2 records of partition 0 (as a worker that applied them would).
        let member: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut done = TopicPartitionList::new();
        done.add_partition_offset(&topic, 0, Offset::Offset(2))
            .unwrap();
        member.commit(&done, CommitMode::Sync).expect("committing");
        assert_eq!(committed(&broker.addr, &group, &topic).await, 2);
    }
}
