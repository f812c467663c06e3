//! Apache Kafka for the tests: one shared broker with topics and groups of each test's own, or a
//! broker of a test's own where the test needs one; and reading what topics hold.
//!
//! Every broker is `scripts/kafka.sh run`, the script `make run` uses. The shared one is
//! started by `scripts/test.sh` before the test runner and named in `KAFKA_TEST_BROKERS`; a
//! single `cargo test -p ...` without it starts one the first time a test asks, for the rest of
//! that test process (the script stops it when the process is gone). A JVM broker takes seconds
//! to start, so a test has one of its own only when it must: it sits behind the fault proxy,
//! or needs another cluster (a new cluster id: the archive's epochs, a restore into a new
//! broker). [`Broker::dedicated_starts`] counts those.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kollus_common::settings::KafkaSettings;

use crate::proxy::ChaosProxy;
use crate::{free_port, workspace_root};

/// The script every broker of the tests is started with.
pub fn broker_script() -> PathBuf {
    workspace_root().join("scripts/kafka.sh")
}

/// What a test's topics and groups are named after: unique on a broker shared by every test.
/// The whole UUID: a v7's first 20 hex digits are its millisecond and the counter's high bits,
/// the same for two tests that start in one millisecond (which then read each other's records).
fn new_namespace() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

static DEDICATED_STARTS: AtomicUsize = AtomicUsize::new(0);

/// A Kafka broker for one test: the shared one, or one of the test's own.
///
/// Whichever it is, [`Broker::settings`] names topics and an archive group of this handle's
/// own, and [`Broker::group`] names consumer groups, so tests on one broker never see each
/// other's records or rebalance each other's groups.
pub struct Broker {
    /// Held for its drop: a broker of the test's own stops with the test.
    _node: Option<Node>,
    producer: OnceLock<rdkafka::producer::FutureProducer>,
    /// What clients connect to: the broker itself, or the fault proxy in front of it.
    pub addr: String,
    namespace: String,
    proxy: Option<ChaosProxy>,
    /// The services' `KAFKA_REPLICATION_FACTOR` on a multi-node cluster (else their default).
    replication: Option<i32>,
}

impl Broker {
    /// The shared broker, with topics and groups of this test's own.
    pub async fn start() -> Self {
        let addr = tokio::task::spawn_blocking(shared_broker)
            .await
            .expect("starting the shared broker");
        Self {
            _node: None,
            producer: Default::default(),
            addr,
            namespace: new_namespace(),
            proxy: None,
            replication: None,
        }
        .registered()
    }

    /// A broker of this test's own: another cluster (its own cluster id), started for this test
    /// and stopped when it is dropped. Only where the shared broker cannot serve.
    pub async fn dedicated() -> Self {
        Self::dedicated_with_config(&[]).await
    }

    /// [`Broker::dedicated`] with broker settings of the test's own (`KEY=VALUE`, as
    /// `scripts/kafka.sh run --config` takes them): a short `log.retention.check.interval.ms`,
    /// say.
    pub async fn dedicated_with_config(config: &[&str]) -> Self {
        let config: Vec<String> = config.iter().map(|c| (*c).to_owned()).collect();
        let node = tokio::task::spawn_blocking(move || Node::start_somewhere(None, true, &config))
            .await
            .expect("starting a broker");
        Self {
            addr: format!("127.0.0.1:{}", node.port),
            _node: Some(node),
            producer: Default::default(),
            namespace: new_namespace(),
            proxy: None,
            replication: None,
        }
        .registered()
    }

    /// Another cluster standing in for this broker's, as after losing it: a broker of this
    /// test's own (a new cluster id) where [`Broker::settings`] names the same topics and
    /// groups, so what an archive of this one holds restores under the same names.
    pub async fn another_cluster(&self) -> Self {
        let mut other = Self::dedicated().await;
        other.namespace = self.namespace.clone();
        other.registered()
    }

    /// A broker of this test's own that clients reach only through a [`ChaosProxy`], so a test
    /// can cut them off. The broker advertises the proxy's address, or clients would bypass it
    /// after their first metadata request.
    pub async fn start_behind_proxy() -> Self {
        // The proxy holds its port from the start; the broker behind it advertises that port.
        // Its upstream is set once the broker found a free port of its own.
        let proxy = ChaosProxy::start_unconnected().await;
        let addr = proxy.addr.to_string();
        let advertised = addr.clone();
        let node = tokio::task::spawn_blocking(move || {
            Node::start_somewhere(Some(&advertised), true, &[])
        })
        .await
        .expect("starting a broker");
        proxy.connect_to(SocketAddr::from(([127, 0, 0, 1], node.port)));
        Self {
            _node: Some(node),
            producer: Default::default(),
            addr,
            namespace: new_namespace(),
            proxy: Some(proxy),
            replication: None,
        }
        .registered()
    }

    /// The brokers of a cluster a test runs ([`crate::cluster::Cluster::broker`]): topics and
    /// groups of this handle's own, which the services create with `replication` copies.
    pub(crate) fn on_cluster(bootstrap: String, replication: i32) -> Self {
        Self {
            _node: None,
            producer: Default::default(),
            addr: bootstrap,
            namespace: new_namespace(),
            proxy: None,
            replication: Some(replication),
        }
        .registered()
    }

    /// Notes this broker's [`Broker::settings`] topics as ones its services are told to use
    /// (see [`expected_topic`]).
    fn registered(self) -> Self {
        let settings = self.settings();
        let mut expected = EXPECTED.lock().unwrap_or_else(|e| e.into_inner());
        for topic in settings.topics() {
            expected.insert((self.addr.clone(), topic.to_owned()));
        }
        drop(expected);
        self
    }

    /// How many brokers of their own tests in this process started so far (each costs a JVM
    /// start: seconds).
    pub fn dedicated_starts() -> usize {
        DEDICATED_STARTS.load(Ordering::Relaxed)
    }

    /// Settings for a service of this test: the broker, and topics and an archive group named
    /// for this test.
    pub fn settings(&self) -> KafkaSettings {
        let mut s = KafkaSettings::with_brokers(&self.addr);
        s.content_topic = format!("{}.content", self.namespace);
        s.playback_topic = format!("{}.playback", self.namespace);
        s.deadletter_topic = format!("{}.deadletter", self.namespace);
        s.erasure_topic = format!("{}.erasure", self.namespace);
        s.archive_group_id = self.group("archive");
        s.topic_partitions = 3;
        if let Some(copies) = self.replication {
            s.replication_factor = copies;
        }
        s
    }

    /// A consumer group named for this test.
    pub fn group(&self, name: &str) -> String {
        format!("{}.{name}", self.namespace)
    }

    /// A topic named for this test (beside those of [`Broker::settings`]).
    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.namespace)
    }

    /// [`Broker::settings`] as the environment of a service's process (`KAFKA_*`,
    /// `ARCHIVE_GROUP_ID`); a worker's own group is `KAFKA_GROUP_ID` (see [`Broker::group`]).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let s = self.settings();
        let mut env = vec![
            ("KAFKA_BROKERS", s.brokers),
            ("KAFKA_CONTENT_TOPIC", s.content_topic),
            ("KAFKA_PLAYBACK_TOPIC", s.playback_topic),
            ("KAFKA_DEADLETTER_TOPIC", s.deadletter_topic),
            ("KAFKA_ERASURE_TOPIC", s.erasure_topic),
            ("KAFKA_TOPIC_PARTITIONS", s.topic_partitions.to_string()),
            ("ARCHIVE_GROUP_ID", s.archive_group_id),
        ];
        if self.replication.is_some() {
            env.push(("KAFKA_REPLICATION_FACTOR", s.replication_factor.to_string()));
        }
        env
    }

    /// The fault proxy in front of the broker (only for [`Broker::start_behind_proxy`]).
    pub fn proxy(&self) -> &ChaosProxy {
        self.proxy
            .as_ref()
            .expect("this broker was started without a proxy")
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

/// The shared broker's address: `KAFKA_TEST_BROKERS`, else one this process started the first
/// time it was asked. Blocking.
fn shared_broker() -> String {
    static SHARED: OnceLock<(String, Option<Node>)> = OnceLock::new();
    if let Ok(brokers) = std::env::var("KAFKA_TEST_BROKERS") {
        if !brokers.trim().is_empty() {
            return brokers;
        }
    }
    let (addr, _) = SHARED.get_or_init(|| {
        eprintln!("KAFKA_TEST_BROKERS is not set: starting a broker for this test process");
        // Its data in a directory the script makes and removes: this node is never dropped,
        // and the script stops it once this process is gone (`--owner`).
        let node = Node::start_somewhere(None, false, &[]);
        // Not counted as a test's own: it serves them all.
        DEDICATED_STARTS.fetch_sub(1, Ordering::Relaxed);
        (format!("127.0.0.1:{}", node.port), Some(node))
    });
    addr.clone()
}

/// One `scripts/kafka.sh run` process (a process group: the script and its JVM), killed on
/// drop, and its data directory (when this owns it) removed.
pub(crate) struct Node {
    pub(crate) child: Mutex<Child>,
    port: u16,
    data: Option<PathBuf>,
}

impl Node {
    /// Starts a node on free ports, advertising `advertised` (or its own address). A port found
    /// free can be taken by another test before the JVM binds it: the script then fails, and
    /// this tries other ports. `own_data`: a data directory this removes on drop, else one
    /// the script makes and removes when it stops.
    fn start_somewhere(advertised: Option<&str>, own_data: bool, config: &[String]) -> Self {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(remove_data_of_dead_runs);
        let mut failures = Vec::new();
        for _ in 0..5 {
            match Self::try_start(free_port(), free_port(), advertised, own_data, config) {
                Ok(node) => {
                    DEDICATED_STARTS.fetch_add(1, Ordering::Relaxed);
                    return node;
                }
                Err(e) => {
                    eprintln!("a broker did not start: {e}");
                    failures.push(e);
                }
            }
        }
        panic!("could not start a broker in 5 tries: {failures:#?}");
    }

    fn try_start(
        port: u16,
        controller: u16,
        advertised: Option<&str>,
        own_data: bool,
        config: &[String],
    ) -> Result<Self, String> {
        let data = own_data.then(|| {
            std::env::temp_dir().join(format!(
                "kollus-test-kafka-{}-{port}-{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ))
        });
        let mut args: Vec<String> = vec!["--controller-port".into(), controller.to_string()];
        if let Some(d) = &data {
            args.extend(["--data".into(), d.display().to_string()]);
        }
        if let Some(a) = advertised {
            args.extend(["--advertise".into(), a.to_owned()]);
        }
        for c in config {
            args.extend(["--config".into(), c.clone()]);
        }
        Self::launch(port, &args, data)
    }

    /// `scripts/kafka.sh run PORT ARGS... --owner <this process>`, in a process group of its
    /// own, once it says `ready`. `data`: a directory removed when this is dropped (`None`: the
    /// script's, or one its caller keeps).
    pub(crate) fn launch(
        port: u16,
        args: &[String],
        data: Option<PathBuf>,
    ) -> Result<Self, String> {
        use std::os::unix::process::CommandExt as _;
        let script = broker_script();
        let mut cmd = Command::new(&script);
        cmd.args(["run", &port.to_string()])
            .args(args)
            // Stopped by the script if this process dies without dropping it.
            .args(["--owner", &std::process::id().to_string()]);
        let started = Instant::now();
        let mut child = cmd
            // A quicker start for less peak throughput, which tests never reach.
            .env("KAFKA_JVM_OPTS", "-XX:TieredStopAtLevel=1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: the JVM goes with the script when the group is killed.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", script.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name(format!("kafka-{port}"))
            .spawn(move || {
                let mut said = Vec::new();
                let mut lines = BufReader::new(stderr).lines();
                for line in lines.by_ref().map_while(Result::ok) {
                    if line == "ready" {
                        let _ = tx.send(Ok(()));
                        // Keep reading: a full pipe would block the script.
                        for _ in lines.by_ref() {}
                        return;
                    }
                    said.push(line);
                }
                let _ = tx.send(Err(said.join("\n")));
            })
            .expect("a thread reading the broker's output");
        let node = Self {
            child: Mutex::new(child),
            port,
            data,
        };
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(Ok(())) => {
                note_started(port, started.elapsed());
                Ok(node)
            }
            Ok(Err(said)) => Err(format!("port {port}: the script exited:\n{said}")),
            Err(_) => Err(format!("port {port}: not ready in 180 s")),
        }
    }
}

/// Removes the data directories of test brokers whose test process is gone: `Drop` removes a
/// broker's own, but a test process that was killed (a runner's timeout) never dropped it. The
/// directories are named `kollus-test-kafka-<pid>-...`; a pid that no longer runs owns nothing.
fn remove_data_of_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("kollus-test-kafka-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// How long a broker took to start, for the test's output (`--no-capture` shows it), and a
/// line in `KAFKA_TEST_START_LOG` if set (`scripts/test.sh` sums them: what brokers of their own
/// cost the suite).
fn note_started(port: u16, took: Duration) {
    eprintln!(
        "broker on 127.0.0.1:{port} ready in {:.1} s",
        took.as_secs_f64()
    );
    if let Some(path) = std::env::var_os("KAFKA_TEST_START_LOG") {
        use std::io::Write as _;
        let line = format!("{port} {:.1}\n", took.as_secs_f64());
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            // The whole group: the script and its JVM. A test's broker holds nothing to keep,
            // so no controlled shutdown is waited for.
            if let Ok(group) = i32::try_from(child.id()) {
                // SAFETY: kill(2) takes any pid; a negative one names the process group that
                // `process_group(0)` made this child the leader of.
                #[expect(unsafe_code, reason = "kill(2) has no safe wrapper in std")]
                unsafe {
                    libc::kill(-group, libc::SIGKILL)
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(d) = &self.data {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// How long a helper waits for a topic no service of this process was told to use (another
/// process may be creating it) before it fails.
const TOPIC_WAIT: Duration = Duration::from_secs(60);

/// (broker address, topic) of every [`Broker::settings`] topic of this process: the topics the
/// services of a test are told to use.
static EXPECTED: Mutex<std::collections::BTreeSet<(String, String)>> =
    Mutex::new(std::collections::BTreeSet::new());

/// Whether `topic` on `brokers` is one of a [`Broker`]'s own topics, which its services create
/// when they start (ingest does so in the background, once Kafka answers). Not created yet, it
/// holds nothing and no group has committed on it; a topic of any other name or broker that
/// does not exist is a mistake to fail on.
fn expected_topic(brokers: &str, topic: &str) -> bool {
    EXPECTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&(brokers.to_owned(), topic.to_owned()))
}

/// The partitions of `topic`, or `None` when it is a topic of a [`Broker`]'s settings not
/// created yet ([`expected_topic`]). Any other topic the broker does not know after `wait`
/// (never created, a misspelt name, another broker) fails the test, naming it: a topic that
/// does not exist holds nothing, but "nothing" read from a wrong name proves nothing. A broker
/// that does not answer fails it too. A blocking call (it never waits for a topic of the
/// settings: an in-process service creating it may need this thread).
pub(crate) fn known_partitions<C, K>(
    consumer: &K,
    brokers: &str,
    topic: &str,
    wait: Duration,
) -> Option<Vec<i32>>
where
    C: rdkafka::consumer::ConsumerContext,
    K: rdkafka::consumer::Consumer<C>,
{
    use rdkafka::types::RDKafkaRespErr;
    let deadline = Instant::now() + wait;
    loop {
        let why = match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(metadata) => {
                let found = metadata.topics().iter().find(|t| t.name() == topic);
                match found.map(|t| (t.error(), t.partitions())) {
                    Some((None, partitions)) if !partitions.is_empty() => {
                        return Some(partitions.iter().map(|p| p.id()).collect());
                    }
                    None
                    | Some((Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART), _))
                        if expected_topic(brokers, topic) =>
                    {
                        return None;
                    }
                    None => "the broker does not know it".to_owned(),
                    Some((Some(e), _)) => format!("{e:?}"),
                    Some((None, _)) => "no partitions".to_owned(),
                }
            }
            Err(e) => format!("metadata: {e}"),
        };
        assert!(
            Instant::now() < deadline,
            "topic {topic} on {brokers}: not readable after {wait:?} ({why}); no Broker of this \
             test process gave it to its services: was it created, is the name right, is it the \
             right broker?"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many records `topic` holds now, counted by reading every partition from its start to
/// its end (librdkafka's end-of-partition event): the records themselves, not the offsets (an
/// idempotent producer's retry or a transaction marker takes an offset and is no record). The
/// way to assert that *nothing* (or exactly so much) arrived.
///
/// 0 for a topic of a [`Broker`]'s settings not created yet (its services create it; nothing
/// can be on it). Any other topic the broker does not know (after a minute) fails the test,
/// naming it, as does any error reading it: never 0 for a topic that could not be read.
pub fn topic_record_count(brokers: &str, topic: &str) -> i64 {
    count_records(brokers, topic, TOPIC_WAIT)
}

fn count_records(brokers: &str, topic: &str, topic_wait: Duration) -> i64 {
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
    let Some(partitions) = known_partitions(&consumer, brokers, topic, topic_wait) else {
        return 0;
    };
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
    // Reading a few records of a test's topic: a minute is for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions.len() {
        assert!(
            Instant::now() < deadline,
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

/// The (partition, low, high) watermarks of every partition of `topic` now. A blocking call.
fn watermarks(brokers: &str, topic: &str) -> Vec<(i32, i64, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::ClientConfig;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-ends-{}", uuid::Uuid::now_v7()))
        .set("log_level", "3")
        .create()
        .expect("creating a consumer to read watermarks");
    known_partitions(&consumer, brokers, topic, TOPIC_WAIT)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("the watermarks of {topic} [{p}]: {e}"));
            (p, low, high)
        })
        .collect()
}

/// How long [`read_topic`] reads on once it has reached the end of the topic, for records
/// published just after: an extra the caller should see is rarely later than this.
const SETTLE: Duration = Duration::from_secs(1);

/// Reads `topic` from the beginning with a throwaway consumer group until `want` records
/// arrived or `timeout` passed; then, once `want` arrived, on to the end of the topic (its high
/// watermarks at that moment) and for a short settle read after. Returns everything read: more
/// than `want` when the topic holds more, so `len() == want` sees extras. Fewer than `want` only
/// when `timeout` passed first.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message as _;
    use rdkafka::types::RDKafkaErrorCode;
    use rdkafka::ClientConfig;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // A reader that never leaves its group keeps it until the session times out: short.
        .set("session.timeout.ms", "6000")
        .set("log_level", "3")
        .create()
        .expect("creating a test consumer");
    consumer.subscribe(&[topic]).expect("subscribing");
    let mut out = Vec::new();
    // Per partition, the offset after the last record read.
    let mut next = std::collections::HashMap::<i32, i64>::new();
    fn take(
        m: rdkafka::message::BorrowedMessage<'_>,
        out: &mut Vec<rdkafka::message::OwnedMessage>,
        next: &mut std::collections::HashMap<i32, i64>,
    ) {
        let after = next.entry(m.partition()).or_default();
        *after = (*after).max(m.offset() + 1);
        out.push(m.detach());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < want {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => take(m, &mut out, &mut next),
            // Not created yet (a service creates its topics once Kafka answers): keep reading.
            Ok(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition))) => {
                continue
            }
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            // What arrived: the caller's count names the shortfall.
            Err(_) => return out,
        }
    }
    // `want` arrived: read on to the end the topic has now, so extras are returned too.
    let (b, t) = (brokers.to_owned(), topic.to_owned());
    let ends = tokio::task::spawn_blocking(move || watermarks(&b, &t))
        .await
        .expect("reading the topic's watermarks");
    let to_end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let short: Vec<(i32, i64, i64)> = ends
            .iter()
            .copied()
            .filter(|(p, low, high)| high > low && next.get(p).copied().unwrap_or(0) < *high)
            .collect();
        if short.is_empty() {
            break;
        }
        match tokio::time::timeout_at(to_end, consumer.recv()).await {
            Ok(Ok(m)) => take(m, &mut out, &mut next),
            Ok(Err(e)) => panic!("reading {topic} to its end: {e}"),
            Err(_) => panic!(
                "reading {topic} to its end: after {} records, (partition, low, high) {short:?} \
                 not reached in 60 s (read up to {next:?})",
                out.len()
            ),
        }
    }
    let settled = tokio::time::Instant::now() + SETTLE;
    loop {
        match tokio::time::timeout_at(settled, consumer.recv()).await {
            Ok(Ok(m)) => take(m, &mut out, &mut next),
            Ok(Err(e)) => panic!("reading {topic} past its end: {e}"),
            Err(_) => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Message as _;

    /// A broker for this test and a topic of its own, created with `records` records on it.
    pub(crate) async fn topic_with(records: usize) -> (Broker, String) {
        let broker = Broker::start().await;
        let settings = broker.settings();
        let topic = settings.content_topic.clone();
        kollus_common::kafka::ensure_topics(&settings, &[&topic])
            .await
            .expect("creating the test's topic");
        for i in 0..records {
            broker
                .publish_raw(&topic, &format!("k{i}"), format!("r{i}").as_bytes())
                .await;
        }
        (broker, topic)
    }

    #[tokio::test]
    #[should_panic(expected = "never-created on")]
    async fn counting_a_topic_the_broker_does_not_know_fails_naming_it() {
        let broker = Broker::start().await;
        count_records(
            &broker.addr,
            &broker.topic("never-created"),
            Duration::from_secs(2),
        );
    }

    #[tokio::test]
    async fn a_topic_of_the_settings_not_created_yet_holds_nothing() {
        let broker = Broker::start().await;
        // At once: an in-process service creating it may need this thread.
        let started = Instant::now();
        assert_eq!(
            topic_record_count(&broker.addr, &broker.settings().playback_topic),
            0
        );
        assert!(started.elapsed() < Duration::from_secs(15));
    }

    #[tokio::test]
    async fn counting_sees_nothing_and_then_each_record() {
        let (broker, topic) = topic_with(0).await;
        assert_eq!(topic_record_count(&broker.addr, &topic), 0);
        broker.publish_raw(&topic, "k", b"one").await;
        broker.publish_raw(&topic, "k", b"two").await;
        assert_eq!(topic_record_count(&broker.addr, &topic), 2);
    }

    #[tokio::test]
    async fn reading_returns_records_past_the_ones_wanted() {
        let (broker, topic) = topic_with(4).await;
        let read = read_topic(&broker.addr, &topic, 3, Duration::from_secs(60)).await;
        let mut values: Vec<&[u8]> = read.iter().filter_map(|m| m.payload()).collect();
        values.sort_unstable();
        assert_eq!(values, [&b"r0"[..], b"r1", b"r2", b"r3"], "want 3 of 4");
    }

    #[tokio::test]
    async fn reading_returns_what_arrived_when_fewer_than_wanted() {
        let (broker, topic) = topic_with(2).await;
        let read = read_topic(&broker.addr, &topic, 3, Duration::from_secs(10)).await;
        assert_eq!(read.len(), 2);
    }
}
