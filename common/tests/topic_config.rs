//! Topic creation against Apache Kafka, started here with `scripts/kafka.sh`: what
//! `ensure_topics` creates is read back from the broker (DescribeConfigs, metadata), a topic
//! made otherwise is reported and left alone, and no topic is created while fewer brokers are
//! alive than its replication factor.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kollus_common::kafka::{self, TooFewBrokers, TopicMismatch, SEGMENT_MS};
use kollus_common::settings::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Each test starts its own broker(s), a JVM each: one test at a time, or two cores thrash.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Apache Kafka nodes run by `scripts/kafka.sh` in a process group of their own; stopped with
/// SIGTERM (the script's controlled shutdown) on drop, the group killed if that hangs.
struct Kafka {
    child: Child,
    brokers: String,
}

impl Kafka {
    /// One node (`run PORT`).
    fn single() -> Self {
        Self::start(1)
    }

    /// `nodes` nodes of one cluster (`cluster N BASEPORT`).
    fn cluster(nodes: u16) -> Self {
        Self::start(nodes)
    }

    fn start(nodes: u16) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            let base = free_base(nodes);
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka.sh");
            let mut cmd = Command::new(script);
            if nodes == 1 {
                cmd.args(["run", &base.to_string()]);
            } else {
                cmd.args(["cluster", &nodes.to_string(), &base.to_string()]);
            }
            let mut child = cmd
                // Stopped by the script if this process dies without dropping it.
                .args(["--owner", &std::process::id().to_string()])
                // A quicker start for less peak throughput, which this test never needs.
                .env("KAFKA_JVM_OPTS", "-XX:TieredStopAtLevel=1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {script}: {e}"));
            let stderr = child.stderr.take().expect("stderr is piped");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    if line.trim() == "ready" {
                        let _ = tx.send(());
                    }
                }
            });
            let brokers = (0..nodes)
                .map(|i| format!("127.0.0.1:{}", base + i))
                .collect::<Vec<_>>()
                .join(",");
            let kafka = Self { child, brokers };
            match rx.recv_timeout(Duration::from_secs(240)) {
                Ok(()) => return kafka,
                // The script exited (a port taken meanwhile, say; its log is above): another try.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    last = format!("scripts/kafka.sh exited before `ready` (base port {base})");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("scripts/kafka.sh printed no `ready` within 240 s")
                }
            }
        }
        panic!("{last}");
    }

    fn settings(&self) -> KafkaSettings {
        KafkaSettings::with_brokers(&self.brokers)
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("scripts/kafka.sh did not stop within 60 s of SIGTERM: killing its group");
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
        let _ = self.child.wait();
    }
}

/// A base port whose `nodes` broker ports and controller ports (+10000) are free now: brokers
/// in 10000-12000, controllers in 20000-22000, both below the ephemeral range (outgoing
/// connections cannot take them meanwhile).
fn free_base(nodes: u16) -> u16 {
    use std::hash::{BuildHasher as _, Hasher as _};
    for _ in 0..200 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let base = 10_000 + (h.finish() % 1_990) as u16;
        let free = (0..nodes)
            .flat_map(|i| [base + i, base + i + 10_000])
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free ports for Kafka in 10000-12000 and 20000-22000");
}

fn admin(kafka: &Kafka) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .expect("an admin client")
}

/// The configuration of `topic` as the broker describes it.
async fn describe(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> HashMap<String, String> {
    let results = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("DescribeConfigs");
    let resource = results
        .into_iter()
        .next()
        .expect("one result")
        .unwrap_or_else(|code| panic!("describing {topic}: {code}"));
    resource
        .entries
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

/// The copies of each partition of `topic`, by metadata (empty: no such topic).
fn replicas(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Vec<usize> {
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.replicas().len()))
        .collect()
}

/// The copies of each partition of `topic` once the metadata shows all `partitions` of it: a
/// broker's metadata may lag a creation the controller acknowledged (seen on busy cores).
async fn replicas_of_created(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: usize,
) -> Vec<usize> {
    kollus_test_support::eventually(
        &format!("{topic}'s {partitions} partitions in the metadata"),
        Duration::from_secs(60),
        || async {
            let r = replicas(admin, topic);
            (r.len() == partitions).then_some(r)
        },
    )
    .await
}

/// `kollus_kafka_topic_config_mismatch{topic,setting}` now, if the series exists.
fn mismatch_gauge(topic: &str, setting: &str) -> Option<i64> {
    kollus_common::metrics::process_registry()
        .gather()
        .iter()
        .filter(|f| f.name() == kafka::TOPIC_CONFIG_MISMATCH)
        .flat_map(|f| f.get_metric().iter())
        .find(|m| {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_owned())
            };
            label("topic").as_deref() == Some(topic) && label("setting").as_deref() == Some(setting)
        })
        .map(|m| m.get_gauge().get_value() as i64)
}

fn sorted(mut mismatches: Vec<TopicMismatch>) -> Vec<(String, &'static str, String, String)> {
    mismatches.sort_by(|a, b| (&a.topic, a.setting).cmp(&(&b.topic, b.setting)));
    mismatches
        .into_iter()
        .map(|m| (m.topic, m.setting, m.found, m.wanted))
        .collect()
}

#[tokio::test]
async fn topics_are_created_as_configured_and_others_are_reported_not_altered() {
    let _one = ONE_AT_A_TIME.lock().await;
    let kafka = Kafka::single();
    let admin = admin(&kafka);
    let settings = kafka.settings();
    let topics = settings.topics();

    let report = kafka::ensure_topics(&settings, &topics).await.unwrap();
    assert_eq!(topics.len(), 4, "content, playback, dead letters, erasures");
    assert_eq!(report.created, topics, "all four created");
    assert_eq!(report.mismatches, [], "what it created is what it wants");
    assert!(report.unchecked.is_empty());

    // Every topic's configuration, as the broker has it.
    for topic in topics {
        let config = describe(&admin, topic).await;
        let value = |key: &str| config.get(key).map(String::as_str);
        // The erasure topic keeps its records forever, whatever KAFKA_RETENTION_DAYS says.
        let retention = if topic == settings.erasure_topic {
            "-1"
        } else {
            "1209600000"
        };
        assert_eq!(
            value("retention.ms"),
            Some(retention),
            "{topic}: 14 days, erasures forever"
        );
        assert_eq!(mismatch_gauge(topic, "retention.ms"), Some(0), "{topic}");
        assert_eq!(
            value("retention.bytes"),
            Some("-1"),
            "{topic}: never by size"
        );
        assert_eq!(value("segment.ms"), Some("86400000"), "{topic}: a day");
        assert_eq!(value("min.insync.replicas"), Some("1"), "{topic}");
        assert_eq!(
            replicas_of_created(&admin, topic, 6).await,
            [1; 6],
            "{topic}: 6 partitions of 1 copy"
        );
        assert_eq!(mismatch_gauge(topic, "segment.ms"), Some(0), "{topic}");
    }
    assert_eq!(SEGMENT_MS, 86_400_000);

    let again = kafka::ensure_topics(&settings, &topics).await.unwrap();
    assert_eq!(
        again,
        kafka::TopicReport::default(),
        "nothing to create or report"
    );

    // A topic made by hand, otherwise: reported, never altered.
    let hand = "hand.made.v1";
    let made = NewTopic::new(hand, 2, TopicReplication::Fixed(1)).set("retention.ms", "3600000");
    let created = admin
        .create_topics(&[made], &AdminOptions::new())
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let report = kafka::ensure_topics(&settings, &[hand]).await.unwrap();
    assert!(report.created.is_empty(), "{:?}", report.created);
    let hand_s = hand.to_owned();
    assert_eq!(
        sorted(report.mismatches),
        [
            (hand_s.clone(), "partitions", "2".into(), "6".into()),
            (
                hand_s.clone(),
                "retention.ms",
                "3600000".into(),
                "1209600000".into()
            ),
            (
                hand_s.clone(),
                "segment.ms",
                "604800000".into(),
                "86400000".into()
            ),
        ]
    );
    assert_eq!(mismatch_gauge(hand, "partitions"), Some(1));
    assert_eq!(mismatch_gauge(hand, "retention.ms"), Some(1));
    assert_eq!(mismatch_gauge(hand, "segment.ms"), Some(1));
    assert_eq!(mismatch_gauge(hand, "min.insync.replicas"), Some(0));
    assert_eq!(mismatch_gauge(hand, "retention.bytes"), Some(0));
    assert_eq!(
        describe(&admin, hand)
            .await
            .get("retention.ms")
            .map(String::as_str),
        Some("3600000"),
        "left as it was"
    );
    assert_eq!(replicas(&admin, hand).len(), 2, "left as it was");

    // Three copies asked of one broker: the missing topic is not created, within the wait.
    let mut three = kafka.settings();
    three.replication_factor = 3;
    assert_eq!(three.min_insync_replicas(), 2);
    let started = Instant::now();
    let err = kafka::ensure_topics_within(&three, &["needs.three.v1"], Duration::from_secs(2))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(
        err.downcast_ref::<TooFewBrokers>(),
        Some(&TooFewBrokers {
            alive: 1,
            replication_factor: 3,
            missing: vec!["needs.three.v1".into()],
        }),
        "{err:#}"
    );
    assert!(
        format!("{err}").contains("KAFKA_REPLICATION_FACTOR=3"),
        "the error names the setting: {err}"
    );
    assert!(
        waited >= Duration::from_secs(2),
        "retried for the wait: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "and no longer: {waited:?}"
    );
    assert!(replicas(&admin, "needs.three.v1").is_empty(), "not created");

    // Topics that exist are checked without waiting for brokers: one copy is reported.
    let report = kafka::ensure_topics_within(&three, &topics, Duration::ZERO)
        .await
        .unwrap();
    let mut want = Vec::new();
    for topic in topics {
        want.push((
            topic.to_owned(),
            "min.insync.replicas",
            "1".into(),
            "2".into(),
        ));
        want.push((
            topic.to_owned(),
            "replication.factor",
            "1".into(),
            "3".into(),
        ));
    }
    want.sort();
    assert_eq!(sorted(report.mismatches), want);

    // A setting no write could meet is refused before the broker is asked.
    let mut impossible = kafka.settings();
    impossible.min_insync = Some(2);
    let err = kafka::ensure_topics(&impossible, &["never.v1"])
        .await
        .unwrap_err();
    assert!(
        format!("{err}").contains("KAFKA_MIN_INSYNC_REPLICAS"),
        "{err}"
    );
    assert!(replicas(&admin, "never.v1").is_empty(), "not created");
}

/// Three nodes: about 25 s here (with the class-data archive `scripts/kafka.sh install` records),
/// so it runs with the rest.
#[tokio::test]
async fn three_brokers_get_topics_of_three_copies_two_in_sync() {
    let _one = ONE_AT_A_TIME.lock().await;
    let kafka = Kafka::cluster(3);
    let admin = admin(&kafka);
    let mut settings = kafka.settings();
    settings.replication_factor = 3;
    settings.topic_partitions = 3;
    let topics = settings.topics();

    let report = kafka::ensure_topics(&settings, &topics).await.unwrap();
    assert_eq!(report.created, topics);
    assert_eq!(report.mismatches, []);
    for topic in topics {
        assert_eq!(
            replicas_of_created(&admin, topic, 3).await,
            [3; 3],
            "{topic}: 3 partitions of 3 copies"
        );
        let config = describe(&admin, topic).await;
        assert_eq!(
            config.get("min.insync.replicas").map(String::as_str),
            Some("2"),
            "{topic}"
        );
        assert_eq!(
            config.get("segment.ms").map(String::as_str),
            Some("86400000"),
            "{topic}"
        );
    }
    let again = kafka::ensure_topics(&settings, &topics).await.unwrap();
    assert_eq!(again, kafka::TopicReport::default());
}
