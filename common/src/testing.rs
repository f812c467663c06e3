//! Test support for every crate's integration tests (feature `testing`): a fresh PostgreSQL
//! database per test, a real Kafka-protocol broker per test, a TCP proxy that can cut
//! connections, and polling with a deadline.

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_postgres::NoTls;

use crate::settings::{DatabaseSettings, KafkaSettings};

/// The workspace root (where `Cargo.toml`, `scripts/` and `.local/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("common/ sits in the workspace root")
        .to_path_buf()
}

/// A fixture from `shared/kollus/fixtures/`, without the trailing newline the files end with.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = workspace_root()
        .join("../shared/kollus/fixtures")
        .join(name);
    let mut body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    while body.last().is_some_and(u8::is_ascii_whitespace) {
        body.pop();
    }
    body
}

/// A free TCP port on loopback (the OS's pick; reused at once, so a clash is unlikely).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on loopback")
}

/// Polls `check` until it returns `Some`, or panics after `timeout` saying what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
    }
}

/// The value of one Prometheus sample from `{base}/metrics`, e.g.
/// `scrape("http://127.0.0.1:9101", "kollus_sync_records_total{kind=\"uploaded\",outcome=\"applied\"}")`.
/// `None` when the service does not answer or has no such sample.
pub async fn scrape(base: &str, sample: &str) -> Option<f64> {
    let res = reqwest::get(format!("{base}/metrics")).await.ok()?;
    let text = res.error_for_status().ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// The server tests use: `DATABASE_URL`'s host (its database is ignored), else the local one.
fn admin_url() -> String {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    with_database(&url, "postgres")
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// FNV-1a: a stable hash of the migrations, so a schema change gets a new template database.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A database of its own for one test, cloned from a migrated template (fast), dropped after.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::try_new().await.expect("creating a test database")
    }

    async fn try_new() -> anyhow::Result<Self> {
        let admin = admin_url();
        let (client, conn) = tokio_postgres::connect(&admin, NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {admin} (is it running?)"))?;
        tokio::spawn(conn);
        let sources: String = crate::db::migration_sources()
            .into_iter()
            .map(|(name, sql)| format!("{name}\n{sql}\n"))
            .collect();
        let template = format!("kollus_tpl_{:016x}", fnv1a(sources.as_bytes()));
        // One process builds the template; the others wait on the lock and then find it.
        client.execute("SELECT pg_advisory_lock(7171)", &[]).await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
            .await?
            .is_some();
        if !exists {
            let building = format!("{template}_building");
            // Left over by a run that died while building: start again.
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {building}"))
                .await?;
            client
                .batch_execute(&format!("CREATE DATABASE {building}"))
                .await?;
            {
                let pool =
                    crate::db::pool(&DatabaseSettings::new(&with_database(&admin, &building)))?;
                crate::db::migrate(&pool).await?;
                pool.close();
            }
            client
                .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {template}"))
                .await?;
        }
        client
            .execute("SELECT pg_advisory_unlock(7171)", &[])
            .await?;
        let name = format!("kollus_test_{}", uuid::Uuid::now_v7().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .with_context(|| format!("creating {name} from {template}"))?;
        Ok(Self {
            url: with_database(&admin, &name),
            name,
        })
    }

    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings::new(&self.url)
    }

    /// Settings that reach this database through a fault proxy the test can cut and restore.
    pub async fn behind_proxy(&self) -> (ChaosProxy, DatabaseSettings) {
        let (host, port) = self
            .url
            .split_once('@')
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(hostport, _)| hostport)
            .and_then(|hp| hp.rsplit_once(':'))
            .expect("the test database URL names host:port");
        let upstream: SocketAddr = format!("{host}:{port}")
            .parse()
            .expect("the test database is reached by IP address");
        let proxy = ChaosProxy::start(upstream).await;
        let url = self
            .url
            .replacen(&format!("{host}:{port}"), &proxy.addr.to_string(), 1);
        (proxy, DatabaseSettings::new(&url))
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connecting to the test database");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any async context we can rely on: use a thread with its own runtime.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&admin_url(), NoTls).await?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
    }
}

// ---------------------------------------------------------------------------------------------
// A service under test
// ---------------------------------------------------------------------------------------------

/// A service's real binary as a process, killed (SIGKILL) when dropped so a failing test leaves
/// none behind. Given the harness's database and broker, an ephemeral admin port, error logs.
pub struct ServiceProcess(pub Child);

impl ServiceProcess {
    pub fn start(binary: &str, h: &Harness, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary);
        command
            .env("DATABASE_URL", &h.db.url)
            .env("KAFKA_BROKERS", &h.kafka.brokers)
            .env(
                "KAFKA_TOPIC_PARTITIONS",
                h.kafka.topic_partitions.to_string(),
            )
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "error")
            .env("LOG_FORMAT", "text")
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        Self(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("starting {binary}: {e}")),
        )
    }

    /// `kill -9`: nothing runs in the process after this (no offset commit, no leaving the group).
    pub fn kill_9(&mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reaping the killed process");
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a worker test runs against: its own database and broker, and the running service,
/// stopped (or killed) by the test or on drop.
pub struct Harness {
    pub db: TestDb,
    pub broker: Broker,
    pub kafka: KafkaSettings,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
}

/// Resolves when the test asks the service to stop.
pub type StopSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl Harness {
    pub async fn new() -> Self {
        let db = TestDb::new().await;
        let broker = Broker::start().await;
        let kafka = broker.settings();
        Self {
            db,
            broker,
            kafka,
            running: None,
        }
    }

    /// Runs a service: `run` gets the stop signal and returns the service's run future.
    pub fn spawn<Fut>(&mut self, run: impl FnOnce(StopSignal) -> Fut)
    where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop: StopSignal = Box::pin(async move {
            let _ = rx.await;
        });
        self.running = Some((tx, tokio::spawn(run(stop))));
    }

    /// Asks the service to stop and waits until it did (a graceful shutdown).
    pub async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            task.await
                .expect("the service task did not panic")
                .expect("the service stopped cleanly");
        }
    }

    /// Drops the service mid-flight, as `kill -9` would: nothing after this point runs.
    pub fn kill(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka-protocol broker
// ---------------------------------------------------------------------------------------------

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
        envelope: &crate::envelope::Envelope<P>,
    ) {
        let value = serde_json::to_vec(envelope).expect("serializable");
        self.publish_raw(topic, key, &value).await;
    }

    /// Publishes arbitrary bytes (for poison-record tests).
    pub async fn publish_raw(&self, topic: &str, key: &str, value: &[u8]) {
        let producer = self.producer.get_or_init(|| {
            crate::kafka::durable_producer(
                &KafkaSettings::with_brokers(&self.addr),
                "test-publisher",
                Duration::from_secs(10),
            )
            .expect("creating a test producer")
        });
        crate::kafka::send(
            producer,
            topic,
            key,
            value,
            crate::kafka::headers(&[]),
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
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
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

// ---------------------------------------------------------------------------------------------
// Fault proxy
// ---------------------------------------------------------------------------------------------

/// A TCP proxy a test can cut (every connection dropped, new ones refused) and restore, to
/// simulate a dependency going away without killing it (after crates.io's `chaosproxy.rs`).
///
/// It runs on a thread and runtime of its own: a test that blocks its own runtime (a Kafka
/// client's blocking close, say) must not also stop the traffic that close depends on.
pub struct ChaosProxy {
    pub addr: SocketAddr,
    upstream: watch::Sender<Option<SocketAddr>>,
    up: watch::Sender<bool>,
    accepting: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ChaosProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let proxy = Self::start_unconnected().await;
        proxy.connect_to(upstream);
        proxy
    }

    /// Sets where connections go (connections made before are refused).
    pub fn connect_to(&self, upstream: SocketAddr) {
        self.upstream.send_replace(Some(upstream));
    }

    /// A proxy that holds its port but has nowhere to send traffic yet.
    pub async fn start_unconnected() -> Self {
        let (upstream, upstream_rx) = watch::channel(None);
        let listener = StdListener::bind("127.0.0.1:0").expect("binding the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let (up, _) = watch::channel(true);
        let accepting = Arc::new(AtomicBool::new(true));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (up2, accepting2) = (up.clone(), accepting.clone());
        std::thread::Builder::new()
            .name("chaos-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = Self::run(listener, upstream_rx, up2, accepting2) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("starting the proxy thread");
        Self {
            addr,
            upstream,
            up,
            accepting,
            stop: Some(stop),
        }
    }

    async fn run(
        listener: TcpListener,
        upstream: watch::Receiver<Option<SocketAddr>>,
        up: watch::Sender<bool>,
        accepting: Arc<AtomicBool>,
    ) {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let target = *upstream.borrow();
            let Some(upstream) = target.filter(|_| accepting.load(Ordering::SeqCst)) else {
                drop(client);
                continue;
            };
            let mut down = up.subscribe();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client, mut server) = (client, server);
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = down.wait_for(|up| !*up) => {}
                }
            });
        }
    }

    /// Drops every open connection and refuses new ones until [`ChaosProxy::restore`].
    pub fn cut(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
        self.accepting.store(true, Ordering::SeqCst);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAPI documents
// ---------------------------------------------------------------------------------------------

/// Checks `value` against `schema`, a schema of the OpenAPI 3.1 document `doc` (`$ref`s resolved
/// in it), for the subset our documents use: `type` (or a list of types), `properties`,
/// `required`, `additionalProperties: false`, `items`, `enum`. Returns every mismatch, each
/// with its JSON path, so a test can say exactly where a response and its document disagree.
pub fn openapi_mismatches(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
) -> Vec<String> {
    let mut out = Vec::new();
    check_schema(doc, schema, value, "$", &mut out);
    out
}

fn check_schema(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        match r.strip_prefix('#').and_then(|p| doc.pointer(p)) {
            Some(target) => check_schema(doc, target, value, path, out),
            None => out.push(format!("{path}: unresolved $ref {r}")),
        }
        return;
    }
    let type_of = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if let Some(t) = schema.get("type") {
        let allowed: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = type_of(value);
        let ok = allowed.contains(&actual) || (actual == "integer" && allowed.contains(&"number"));
        if !ok {
            out.push(format!(
                "{path}: is {actual}, the document says {allowed:?}"
            ));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            out.push(format!("{path}: {value} is not one of {options:?}"));
        }
    }
    if let Value::Object(fields) = value {
        let props = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                out.push(format!("{path}: required field {name} is missing"));
            }
        }
        for (name, v) in fields {
            match props.and_then(|p| p.get(name)) {
                Some(s) => check_schema(doc, s, v, &format!("{path}.{name}"), out),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    out.push(format!("{path}: field {name} is not in the document"))
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            check_schema(doc, s, v, &format!("{path}[{i}]"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_rewritten_to_another_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5/kollus?sslmode=disable", "postgres"),
            "postgres://u:p@h:5/postgres?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
