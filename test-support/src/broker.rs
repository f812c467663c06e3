//! A real Kafka-protocol broker (tansu) per test, and reading what topics hold.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::TcpStream;

use kollus_common::settings::KafkaSettings;

use crate::proxy::ChaosProxy;
use crate::{free_port, workspace_root};

/// The broker binary: `TANSU_BIN`, else the one `scripts/broker.sh install` put in `.local/`.
pub fn broker_binary() -> PathBuf {
    std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".local/bin/tansu"))
}

/// A real Kafka-protocol broker (tansu, in-memory storage) in its own process, for one test.
pub struct Broker {
    child: Mutex<Option<Child>>,
    producer: std::sync::OnceLock<rdkafka::producer::FutureProducer>,
    listen_port: u16,
    /// What clients connect to: the broker itself, or the fault proxy in front of it.
    pub addr: String,
    proxy: Option<ChaosProxy>,
}

impl Broker {
    /// Starts a broker that clients reach directly.
    pub async fn start() -> Self {
        let (port, child) = spawn_tansu_somewhere(None).await;
        let addr = format!("127.0.0.1:{port}");
        Self {
            child: Mutex::new(Some(child)),
            producer: Default::default(),
            listen_port: port,
            addr,
            proxy: None,
        }
    }

    /// Starts a broker that clients reach only through a [`ChaosProxy`], so a test can cut
    /// them off. The broker advertises the proxy's address, or clients would bypass it after
    /// their first metadata request.
    pub async fn start_behind_proxy() -> Self {
        // The proxy holds its port from the start; the broker behind it advertises that port.
        // Its upstream is set once the broker found a free port of its own.
        let proxy = ChaosProxy::start_unconnected().await;
        let addr = proxy.addr.to_string();
        let (port, child) = spawn_tansu_somewhere(Some(&addr)).await;
        proxy.connect_to(SocketAddr::from(([127, 0, 0, 1], port)));
        Self {
            child: Mutex::new(Some(child)),
            producer: Default::default(),
            listen_port: port,
            addr,
            proxy: Some(proxy),
        }
    }

    pub fn settings(&self) -> KafkaSettings {
        let mut s = KafkaSettings::with_brokers(&self.addr);
        s.topic_partitions = 3;
        s
    }

    /// The fault proxy in front of the broker (only for [`Broker::start_behind_proxy`]).
    pub fn proxy(&self) -> &ChaosProxy {
        self.proxy
            .as_ref()
            .expect("this broker was started without a proxy")
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// Publishes `envelope` to `topic` as ingest would (same key and JSON) and waits for the
    /// broker's acknowledgement. One producer serves every publish of a test.
    pub async fn publish<P: serde::Serialize>(
        &self,
        topic: &str,
        key: &str,
        envelope: &kollus_common::envelope::Envelope<P>,
    ) {
        let value = serde_json::to_vec(envelope).expect("serializable");
        self.publish_raw(topic, key, &value).await;
    }

    /// Publishes arbitrary bytes (for poison-record tests).
    pub async fn publish_raw(&self, topic: &str, key: &str, value: &[u8]) {
        let producer = self.producer.get_or_init(|| {
            kollus_common::kafka::durable_producer(
                &KafkaSettings::with_brokers(&self.addr),
                "test-publisher",
                Duration::from_secs(10),
            )
            .expect("creating a test producer")
        });
        kollus_common::kafka::send(
            producer,
            topic,
            key,
            value,
            kollus_common::kafka::headers(&[]),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("publishing to {topic}: {e}"));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts tansu listening on `port` and advertising `advertised`, and proves the broker that
/// answers is this one: the port was free a moment ago, but a parallel test may have taken it
/// since, and then a mere TCP connect would succeed against the wrong server. So the broker
/// must advertise exactly `advertised` in its metadata, and the child must still be running.
/// Returns `None` when that is not so (the caller tries another port).
async fn try_spawn_tansu(port: u16, advertised: &str) -> Option<Child> {
    let bin = broker_binary();
    assert!(
        bin.exists(),
        "no broker binary at {} (run `scripts/broker.sh install`, or set TANSU_BIN)",
        bin.display()
    );
    let mut child = Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://{advertised}"),
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let ours = loop {
        tick.tick().await;
        if !matches!(child.try_wait(), Ok(None)) {
            break false; // it exited: most likely the port was taken
        }
        if TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                break false;
            }
            continue;
        }
        let (direct, want) = (format!("127.0.0.1:{port}"), advertised.to_owned());
        let advertised_ok = tokio::task::spawn_blocking(move || advertises(&direct, &want))
            .await
            .unwrap_or(false);
        break advertised_ok && matches!(child.try_wait(), Ok(None));
    };
    if ours {
        Some(child)
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

/// Whether the Kafka broker at `addr` advertises exactly `want` (host:port).
fn advertises(addr: &str, want: &str) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let Ok(client) = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("log_level", "0")
        .create::<BaseConsumer>()
    else {
        return false;
    };
    client
        .fetch_metadata(None, Duration::from_secs(5))
        .map(|m| {
            m.brokers()
                .iter()
                .any(|b| format!("{}:{}", b.host(), b.port()) == want)
        })
        .unwrap_or(false)
}

/// Starts tansu on a port nobody else holds, advertising `advertised` (or its own address).
async fn spawn_tansu_somewhere(advertised: Option<&str>) -> (u16, Child) {
    for _ in 0..20 {
        let port = free_port();
        let own = format!("127.0.0.1:{port}");
        if let Some(child) = try_spawn_tansu(port, advertised.unwrap_or(&own)).await {
            return (port, child);
        }
    }
    panic!("could not start a broker on a free port in 20 tries");
}

/// How many records `topic` holds now, counted by reading every partition from its start to
/// its end (librdkafka's end-of-partition event), not from the watermarks: the local broker
/// (tansu 0.6.0) answers ListOffsets "latest" with the last batch's base offset + 1, which
/// undercounts whenever a batch held several records. The way to assert that *nothing* (or
/// exactly so much) arrived.
pub fn topic_record_count(brokers: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::error::KafkaError;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-count-{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("log_level", "3")
        .create()
        .expect("creating a counting consumer");
    let partitions =
        kollus_common::kafka::partitions(&consumer, topic).unwrap_or_else(|e| panic!("{e:#}"));
    if partitions.is_empty() {
        return 0;
    }
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .expect("a valid partition");
    }
    consumer
        .assign(&assignment)
        .expect("assigning the partitions");
    let mut at_end = std::collections::HashSet::new();
    let mut count = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while at_end.len() < partitions.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "counting {topic}: partitions {:?} never reached their end",
            partitions
                .iter()
                .filter(|p| !at_end.contains(*p))
                .collect::<Vec<_>>()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => count += 1,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("counting {topic}: {e}"),
            None => {}
        }
    }
    count
}

/// Reads `topic` from the beginning with a throwaway consumer group until `want` records
/// arrived or `timeout` passed, and returns what arrived.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    use rdkafka::ClientConfig;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // tansu holds a group join for half the session timeout: keep it short.
        .set("session.timeout.ms", "6000")
        .set("log_level", "3")
        .create()
        .expect("creating a test consumer");
    consumer.subscribe(&[topic]).expect("subscribing");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < want {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            // Not created yet (a service creates its topics once Kafka answers): keep reading.
            Ok(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => continue,
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => break,
        }
    }
    out
}
