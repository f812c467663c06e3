use std::time::Duration;

use kollus_common::envelope::header;
use kollus_common::settings::KafkaSettings;
use kollus_ingest::configuration::Settings;
use kollus_ingest::startup::Application;
use kollus_test_support::{eventually, read_topic, topic_record_count, Broker};
use rdkafka::message::{Headers as _, Message as _, OwnedMessage};

/// The platform secret (`CALLBACK_SECRET`).
pub const SECRET: &str = "test-callback-secret";
/// The LMS secret (`LMS_CALLBACK_SECRET`): [`settings`] appends `-lms`.
pub const LMS_SECRET: &str = "test-callback-secret-lms";

/// The secret the Kollus console's URL for `route` carries.
pub fn secret_for(route: &str) -> &'static str {
    if route == "lms" {
        LMS_SECRET
    } else {
        SECRET
    }
}

pub struct TestApp {
    pub address: String,
    pub broker: Broker,
    /// This ingest's topics (named for the test: the broker is shared).
    pub topics: Topics,
    pub client: reqwest::Client,
}

pub struct Topics {
    pub content: String,
    pub playback: String,
    pub deadletter: String,
}

/// One ingest on a random port with its own broker.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(Broker::start().await, tweak).await
}

/// A fresh spool directory for one ingest.
pub fn spool_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("kollus-ingest-test-{}", uuid::Uuid::now_v7()))
}

/// ingest's settings as the binary parses them, with the test's broker, [`SECRET`] and
/// [`LMS_SECRET`], a fresh spool, an ephemeral port and two HTTP workers.
pub fn settings(kafka: KafkaSettings) -> Settings {
    let mut s: Settings = kollus_test_support::settings(&[
        kollus_test_support::EPHEMERAL_PORT,
        "--callback-secret",
        SECRET,
        "--lms-callback-secret",
        LMS_SECRET,
        "--http-workers=2",
    ]);
    s.spool_dir = spool_dir();
    s.kafka = kafka;
    s
}

pub async fn spawn_app_on(broker: Broker, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = settings(broker.settings());
    tweak(&mut settings);
    let topics = Topics {
        content: settings.kafka.content_topic.clone(),
        playback: settings.kafka.playback_topic.clone(),
        deadletter: settings.kafka.deadletter_topic.clone(),
    };
    let app = Application::build(settings).await.expect("building ingest");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    wait_for_topics(
        &broker.addr,
        [&topics.content, &topics.playback, &topics.deadletter],
    )
    .await;
    TestApp {
        address,
        broker,
        topics,
        client: reqwest::Client::new(),
    }
}

/// Waits until ingest has made its topics (in the background, once Kafka answers), so a count
/// is of a topic that exists: 0 then means nothing arrived, not "not made yet".
async fn wait_for_topics(brokers: &str, topics: [&str; 3]) {
    let brokers = brokers.to_owned();
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    eventually("ingest to make its topics", Duration::from_secs(60), || {
        let (brokers, topics) = (brokers.clone(), topics.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("log_level", "3")
                    .create()
                    .ok()?;
                topics
                    .iter()
                    .all(|t| {
                        kollus_common::kafka::partitions(&consumer, t).is_ok_and(|p| !p.is_empty())
                    })
                    .then_some(())
            })
            .await
            .ok()?
        }
    })
    .await;
}

impl TestApp {
    pub async fn post(&self, route: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        self.post_with_secret(route, secret_for(route), content_type, body)
            .await
    }

    pub async fn post_with_secret(
        &self,
        route: &str,
        secret: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}/kollus/{route}?secret={secret}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("sending a callback")
    }

    /// Records on `topic` now: everything acknowledged with a 200 is already there.
    pub fn count(&self, topic: &str) -> i64 {
        topic_record_count(&self.broker.addr, topic)
    }

    /// The records `topic` holds, which must be exactly `want`: read until `want` arrived, then
    /// the topic counted to its end, so one record more (a callback published twice, a refused
    /// one published anyway) fails as surely as one fewer.
    pub async fn records(&self, topic: &str, want: usize) -> Vec<OwnedMessage> {
        let records = read_topic(&self.broker.addr, topic, want, Duration::from_secs(15)).await;
        assert_eq!(
            records.len(),
            want,
            "{topic}: {} records read, {want} expected",
            records.len()
        );
        let held = self.count(topic);
        assert_eq!(
            held, want as i64,
            "{topic} holds {held} records, not {want}"
        );
        records
    }

    /// The dead letters, which must be exactly `want`, as JSON.
    pub async fn dead_letters(&self, want: usize) -> Vec<serde_json::Value> {
        let records = self.records(&self.topics.deadletter, want).await;
        records.iter().map(value).collect()
    }
}

pub const FORM: &str = "application/x-www-form-urlencoded";

pub fn value(m: &OwnedMessage) -> serde_json::Value {
    serde_json::from_slice(m.payload().expect("a record value")).expect("the value is JSON")
}

pub fn key(m: &OwnedMessage) -> String {
    String::from_utf8(m.key().expect("a record key").to_vec()).expect("a UTF-8 key")
}

pub fn header_value(m: &OwnedMessage, name: &str) -> Option<String> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

pub const KIND: &str = header::KIND;
