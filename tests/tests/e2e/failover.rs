//! Broker failures under steady load through ingest, on a cluster of three Apache Kafka nodes
//! (each its own process, test-support's `Cluster`) with the services' topics at
//! `KAFKA_REPLICATION_FACTOR=3` (min ISR 2): a partition leader killed, the whole cluster
//! restarted under the workers, two of three brokers gone, and every broker gone for 20 s.
//! Every callback ingest answered 200 must be applied once in effect.
//!
//! One cluster and one pipeline serve the four failures in turn (each starts from the cluster
//! the last one left healthy): a JVM cluster start costs tens of seconds here.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kollus_test_support::cluster::Cluster;
use kollus_test_support::{eventually, eventually_ok, free_port, topic_record_count};

use crate::read_api::report;
use crate::stack::*;

/// The steady load: one callback every `PERIOD`, LMS reports and content callbacks in turn.
const PERIOD: Duration = Duration::from_millis(40);
/// ingest's `INGEST_ACK_TIMEOUT_MS` default: the deadline its answers keep.
const ACK_DEADLINE: Duration = Duration::from_millis(1500);
/// What a busy 2-core machine adds to an answer beyond the deadline (the spool's fsync, a
/// scheduler that runs three JVMs and four services).
const ANSWER_SLACK: Duration = Duration::from_secs(3);
/// How long every broker stays down in the outage: ten times a 2 s deadline.
const OUTAGE: Duration = Duration::from_secs(20);
/// The first session's start (each report is a session of its own: `START + seq`).
const START: i64 = 1_700_000_000;

/// One callback of the load and how ingest answered it.
#[derive(Clone, Debug)]
struct Sent {
    seq: u64,
    lms: bool,
    at: Instant,
    status: u16,
    latency: Duration,
    /// Why there was no answer (`status` 0).
    error: Option<String>,
}

/// The client posting callbacks at a steady rate, each request on its own task (a slow answer
/// does not slow the rate), every answer recorded.
struct Load {
    sent: Arc<Mutex<Vec<Sent>>>,
    running: Arc<std::sync::atomic::AtomicBool>,
    next: Arc<std::sync::atomic::AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
    ingest: String,
    http: reqwest::Client,
}

impl Load {
    fn new(stack: &Stack) -> Self {
        Self {
            sent: Default::default(),
            running: Default::default(),
            next: Default::default(),
            task: None,
            ingest: stack.ingest.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                // A connection per callback, as Kollus's: a pooled one that ingest closed as
                // idle just as a request went out fails without an answer.
                .pool_max_idle_per_host(0)
                .build()
                .expect("an HTTP client"),
        }
    }

    fn resume(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        assert!(self.task.is_none(), "the load runs already");
        self.running.store(true, SeqCst);
        let (sent, running, next) = (self.sent.clone(), self.running.clone(), self.next.clone());
        let (ingest, http) = (self.ingest.clone(), self.http.clone());
        self.task = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            let mut inflight = tokio::task::JoinSet::new();
            while running.load(SeqCst) {
                tick.tick().await;
                let seq = next.fetch_add(1, SeqCst);
                let (sent, ingest, http) = (sent.clone(), ingest.clone(), http.clone());
                inflight.spawn(async move {
                    let one = post(&http, &ingest, seq).await;
                    sent.lock().expect("the load's record").push(one);
                });
                while inflight.try_join_next().is_some() {}
            }
            // Every request sent is answered (or timed out) before the load counts as paused.
            while inflight.join_next().await.is_some() {}
        }));
    }

    /// Stops sending and waits for every answer.
    async fn pause(&mut self) {
        self.running
            .store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.await.expect("the load task");
        }
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("the load's record").clone()
    }
}

/// Callback `seq`: an LMS report (even) whose session is `START + seq` with playtime `seq + 1`,
/// or (odd) a content callback for upload `fo-<seq>`. Either mark names one callback only.
async fn post(http: &reqwest::Client, ingest: &str, seq: u64) -> Sent {
    let lms = seq % 2 == 0;
    let (route, secret, content_type, body) = if lms {
        (
            "lms",
            LMS_CALLBACK_SECRET,
            "application/json",
            report(
                "fo-user",
                "fo-media",
                START + seq as i64,
                seq + 1,
                1,
                &[true],
            ),
        )
    } else {
        (
            "content",
            CALLBACK_SECRET,
            "application/x-www-form-urlencoded",
            format!(
                "content_provider_key=providerkey&full_filename=fo-{seq}.mp4&filename=fo-{seq}.mp4\
                 &upload_file_key=fo-{seq}&media_content_key=fo-m{seq}&channel_key=ch-fo\
                 &channel_name=Failover&profile_key=pc-high&update_type=channel_join"
            )
            .into_bytes(),
        )
    };
    let at = Instant::now();
    let answer = http
        .post(format!("{ingest}/kollus/{route}?secret={secret}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await;
    let latency = at.elapsed();
    // No answer at all (the client's 60 s, a refused connection): not a 200, so counted
    // against ingest.
    let (status, error) = match answer {
        Ok(r) => (r.status().as_u16(), None),
        Err(e) => (0, Some(format!("{e:?}"))),
    };
    Sent {
        seq,
        lms,
        at,
        status,
        latency,
        error,
    }
}

/// p50, p99 and max of the latencies, in ms, with how many.
fn quantiles(mut latencies: Vec<Duration>) -> String {
    if latencies.is_empty() {
        return "no requests".to_owned();
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    format!(
        "n={} p50={:.0} ms p99={:.0} ms max={:.0} ms",
        latencies.len(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        at(1.0).as_secs_f64() * 1000.0
    )
}

/// The sum of a service's samples whose line starts with `prefix` (every label set of a
/// counter), or `None` if the service does not answer.
async fn metric_sum(http: &reqwest::Client, base: &str, prefix: &str) -> Option<f64> {
    metric_sum_where(http, base, |l| l.starts_with(prefix)).await
}

/// The sum of the samples of `base`'s `/metrics` whose line `line` accepts.
async fn metric_sum_where(
    http: &reqwest::Client,
    base: &str,
    line: impl Fn(&str) -> bool,
) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| line(l))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// The workers' counters of records they consumed that changed nothing (`duplicate`).
async fn duplicates(stack: &Stack, history: &str, sync: &str) -> (f64, f64) {
    let h = metric_sum(
        &stack.http,
        history,
        "kollus_history_records_total{outcome=\"duplicate\"}",
    );
    let s = metric_sum_where(&stack.http, sync, |l| {
        l.starts_with("kollus_sync_records_total{") && l.contains("outcome=\"duplicate\"")
    });
    let (h, s) = tokio::join!(h, s);
    (
        h.expect("history-worker's metrics"),
        s.expect("sync-worker's metrics"),
    )
}

/// What the services hold in effect, read from the database: each LMS report's session and its
/// playtime (`seq + 1`), and the content events per upload (a callback applied twice under two
/// envelopes would show as 2).
async fn effects(stack: &Stack) -> (BTreeMap<u64, i64>, BTreeMap<u64, i64>) {
    let db = stack.db.client().await;
    let sessions = db
        .query(
            "SELECT start_at, playtime FROM watch_sessions WHERE client_user_id = 'fo-user'",
            &[],
        )
        .await
        .expect("reading the sessions");
    let events = db
        .query(
            "SELECT upload_file_key, count(*) FROM content_events \
             WHERE upload_file_key LIKE 'fo-%' GROUP BY 1",
            &[],
        )
        .await
        .expect("reading the content events");
    (
        sessions
            .iter()
            .map(|r| ((r.get::<_, i64>(0) - START) as u64, r.get::<_, i64>(1)))
            .collect(),
        events
            .iter()
            .map(|r| {
                let key: &str = r.get(0);
                let seq = key
                    .strip_prefix("fo-")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("an upload key of this test: {key}"));
                (seq, r.get::<_, i64>(1))
            })
            .collect(),
    )
}

/// Waits until every callback ingest acknowledged (200) is applied exactly once in effect and
/// nothing else is: each report's session with its own playtime, each content callback as one
/// event. Every answer must have been a 200.
async fn all_applied_once(stack: &Stack, sent: &[Sent], what: &str) {
    let refused: Vec<&Sent> = sent.iter().filter(|s| s.status != 200).collect();
    assert!(
        refused.is_empty(),
        "{what}: {} of {} callbacks not answered 200, first: {:?} ({})",
        refused.len(),
        sent.len(),
        refused.first(),
        refused
            .first()
            .and_then(|s| s.error.as_deref())
            .unwrap_or("answered")
    );
    let want_sessions: BTreeMap<u64, i64> = sent
        .iter()
        .filter(|s| s.lms)
        .map(|s| (s.seq, s.seq as i64 + 1))
        .collect();
    let want_events: BTreeMap<u64, i64> =
        sent.iter().filter(|s| !s.lms).map(|s| (s.seq, 1)).collect();
    eventually_ok(
        &format!("{what}: every acknowledged callback applied once"),
        SLACK,
        || async {
            let (sessions, events) = effects(stack).await;
            if sessions == want_sessions && events == want_events {
                return Ok(());
            }
            let missing = want_sessions
                .keys()
                .filter(|k| !sessions.contains_key(k))
                .count()
                + want_events
                    .keys()
                    .filter(|k| !events.contains_key(k))
                    .count();
            let wrong: Vec<String> = sessions
                .iter()
                .filter(|(k, v)| want_sessions.get(k) != Some(v))
                .map(|(k, v)| format!("session {k}: playtime {v}"))
                .chain(
                    events
                        .iter()
                        .filter(|(k, v)| want_events.get(k) != Some(v))
                        .map(|(k, v)| format!("upload fo-{k}: {v} events")),
                )
                .take(5)
                .collect();
            Err(format!(
                "{missing} acknowledged callbacks not applied; not as sent: {wrong:?}"
            ))
        },
    )
    .await;
}

/// A worker process of this stack's own, started again after `Stack::stop` (same group,
/// database and topics), and its admin address once it answers `/readyz`.
async fn start_worker(stack: &Stack, name: &'static str) -> (Process, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = command(name)
        .envs(stack.broker.env())
        .envs(kollus_test_support::key_files().env())
        .env("KAFKA_GROUP_ID", stack.broker.group(name))
        .env("DATABASE_URL", &stack.db.url)
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .env("LISTEN_ADDR", &addr)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let base = format!("http://{addr}");
    let http = stack.http.clone();
    eventually(&format!("{name} ready again"), SLACK, || {
        let (http, url) = (http.clone(), format!("{base}/readyz"));
        async move {
            let res = http.get(url).send().await.ok()?;
            res.status().is_success().then_some(())
        }
    })
    .await;
    (Process { name, child }, base)
}

/// What the cluster holds of the test's topics and groups: records per topic and the workers'
/// committed offsets.
async fn kept(stack: &Stack) -> [i64; 4] {
    let s = stack.broker.settings();
    let brokers = stack.broker.addr.clone();
    let (playback, content) = (s.playback_topic.clone(), s.content_topic.clone());
    let counts = tokio::task::spawn_blocking(move || {
        (
            topic_record_count(&brokers, &playback),
            topic_record_count(&brokers, &content),
        )
    })
    .await
    .expect("counting records");
    let group = |name| stack.broker.group(name);
    [
        counts.0,
        counts.1,
        kollus_test_support::group::committed(
            &stack.broker.addr,
            &group("history-worker"),
            &s.playback_topic,
        )
        .await,
        kollus_test_support::group::committed(
            &stack.broker.addr,
            &group("sync-worker"),
            &s.content_topic,
        )
        .await,
    ]
}

/// A producer of the test's own, `acks=all` and no retries, so the broker's answer is the error.
async fn produce_once(brokers: &str, topic: &str) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("message.send.max.retries", "0")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("a producer");
    producer
        .send(
            FutureRecord::to(topic).key("probe").payload("probe"),
            Duration::from_secs(20),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// ingest's answers to the callbacks sent since `from`.
fn since(sent: &[Sent], from: Instant) -> Vec<Sent> {
    sent.iter().filter(|s| s.at >= from).cloned().collect()
}

/// Waits until ingest's spool is empty again (every spooled record forwarded); how long that
/// took from `from`.
async fn spool_drained(stack: &Stack, from: Instant, what: &str) -> Duration {
    eventually_ok(what, SLACK, || async {
        let left = metric_sum(&stack.http, &stack.ingest, "kollus_ingest_spooled_records ")
            .await
            .ok_or("ingest's metrics do not answer")?;
        if left == 0.0 {
            Ok(from.elapsed())
        } else {
            Err(format!("{left} records still spooled"))
        }
    })
    .await
}

#[tokio::test]
async fn three_brokers_fail_under_load_and_every_acknowledged_callback_is_applied_once() {
    let test_started = Instant::now();
    let mut cluster = Cluster::start(3).await;
    let cluster_start = cluster.started_in;
    let mut stack = Stack::start_with(cluster.broker(3)).await;
    let playback = stack.broker.settings().playback_topic;
    let mut load = Load::new(&stack);
    load.resume();
    let mut figures = vec![format!(
        "cluster of 3 started in {:.1} s",
        cluster_start.as_secs_f64()
    )];

    // 1. kill -9 of the leader of a playback partition, restarted later. First a steady state:
    // a new cluster's first produces can outlast the deadline (its coordinators still loading),
    // which sends ingest to its spool until that drains.
    eventually("load answered after the start", SLACK, || async {
        (load.sent().len() >= 50).then_some(())
    })
    .await;
    spool_drained(&stack, Instant::now(), "the first spool to drain").await;
    let steady_from = Instant::now();
    let steady = load.sent().len();
    eventually("load answered before the first failure", SLACK, || async {
        (load.sent().len() >= steady + 150).then_some(())
    })
    .await;
    let leader = cluster
        .leader_of(&playback, 0)
        .await
        .expect("the playback partition 0 has a leader");
    let killed_at = Instant::now();
    cluster.kill9(leader);
    let moved = eventually("leadership of playback 0 to move", SLACK, || async {
        cluster
            .leader_of(&playback, 0)
            .await
            .filter(|l| *l != leader)
    })
    .await;
    let moved_in = killed_at.elapsed();
    cluster.start_nodes(&[leader]).await;
    let sent = load.sent();
    let before: Vec<Duration> = sent
        .iter()
        .filter(|s| s.at >= steady_from && s.at < killed_at)
        .map(|s| s.latency)
        .collect();
    let during: Vec<Duration> = sent
        .iter()
        .filter(|s| s.at >= killed_at && s.at <= killed_at + moved_in)
        .map(|s| s.latency)
        .collect();
    note(
        &mut figures,
        format!(
        "1. leader {leader} of playback 0 killed; node {moved} led it {:.1} s later. ack latency \
         before (steady): {}; while leadership moved: {}",
        moved_in.as_secs_f64(),
        quantiles(before),
        quantiles(during)
    ),
    );
    load.pause().await;
    all_applied_once(&stack, &load.sent(), "after the leader was killed").await;

    // 4. Every broker restarted under the workers, which restart too: the topics and the
    // groups' committed offsets survive, and the workers resume where they committed.
    // (Duplicates so far are honest: a group whose coordinator was killed rejoins and is
    // given again what it had not committed; the workers' counters say so.)
    let dups = duplicates(&stack, &stack.history_admin, &stack.sync_admin).await;
    eprintln!("after 1: duplicates (history, sync) {dups:?}");
    // Quiet: everything committed that will be (the workers commit after applying).
    let held = eventually_ok("the workers to commit everything", SLACK, || async {
        let k = kept(&stack).await;
        if k[2] == k[0] && k[3] == k[1] {
            Ok(k)
        } else {
            Err(format!("records and committed offsets: {k:?}"))
        }
    })
    .await;
    stack.stop("history-worker");
    stack.stop("sync-worker");
    let running = cluster.running();
    for id in &running[..running.len() - 1] {
        cluster.stop(*id).await;
    }
    // The last node's controllers have no majority left to finish a controlled shutdown.
    cluster.kill9(running[running.len() - 1]);
    let restarted_in = cluster.start_nodes(&[1, 2, 3]).await;
    let after = kept(&stack).await;
    assert_eq!(
        after, held,
        "records of the playback and content topics and the workers' committed offsets, before \
         and after every broker restarted"
    );
    let (_history, history_admin) = start_worker(&stack, "history-worker").await;
    let (_sync, sync_admin) = start_worker(&stack, "sync-worker").await;
    let before_restart = load.sent().len();
    load.resume();
    eventually("load acknowledged after the restart", SLACK, || async {
        (load.sent().len() >= before_restart + 50).then_some(())
    })
    .await;
    load.pause().await;
    all_applied_once(&stack, &load.sent(), "after every broker restarted").await;
    assert_eq!(
        duplicates(&stack, &history_admin, &sync_admin).await,
        (0.0, 0.0),
        "the restarted workers replayed nothing they had committed"
    );
    note(
        &mut figures,
        format!(
            "4. every broker restarted in {:.1} s; {} records and their commits kept",
            restarted_in.as_secs_f64(),
            held[0] + held[1]
        ),
    );

    // 2. Two of three brokers stopped: acks=all is refused, ingest spools within its deadline.
    load.resume();
    let running = cluster.running();
    let (gone, left) = ([running[0], running[1]], running[2]);
    for id in gone {
        cluster.stop(id).await;
    }
    let lost_quorum = Instant::now();
    let refused = produce_once(&cluster.addr(left), &playback).await;
    assert!(
        matches!(
            refused,
            Err(rdkafka::error::KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::NotEnoughReplicas
            ))
        ),
        "acks=all with one of three brokers: {refused:?}"
    );
    eventually("ingest to spool and say it is not ready", SLACK, || async {
        let spooled =
            metric_sum(&stack.http, &stack.ingest, "kollus_ingest_spooled_total ").await?;
        let ready = stack
            .http
            .get(format!("{}/readyz", stack.ingest))
            .send()
            .await
            .ok()?
            .status();
        (spooled > 0.0 && ready == 503).then_some(())
    })
    .await;
    // A few seconds of callbacks into the spool, then one broker back.
    let spooling = load.sent().len();
    eventually("callbacks answered while spooling", SLACK, || async {
        (load.sent().len() >= spooling + 100).then_some(())
    })
    .await;
    let back = gone[0];
    let back_at = Instant::now();
    cluster.start_nodes(&[back]).await;
    let drained = spool_drained(&stack, back_at, "the spool to drain with two brokers").await;
    let answers = since(&load.sent(), lost_quorum);
    let slowest = answers.iter().map(|s| s.latency).max().unwrap_or_default();
    assert!(
        slowest <= ACK_DEADLINE + ANSWER_SLACK,
        "with two brokers gone ingest answers within its deadline ({ACK_DEADLINE:?} + \
         {ANSWER_SLACK:?} for a busy machine); slowest {slowest:?}"
    );
    note(
        &mut figures,
        format!(
            "2. two of three stopped: NOT_ENOUGH_REPLICAS; ingest answered {}; node {back} back: \
         spool drained {:.1} s after its start began",
            quantiles(answers.iter().map(|s| s.latency).collect()),
            drained.as_secs_f64()
        ),
    );

    // 3. Every broker stopped for 20 s: ingest spools, and forwards once they are back.
    let running = cluster.running();
    for id in &running[..running.len() - 1] {
        cluster.stop(*id).await;
    }
    cluster.kill9(running[running.len() - 1]);
    let down_at = Instant::now();
    tokio::time::sleep(OUTAGE).await; // the outage itself: what is tested is its length
    let during_outage = since(&load.sent(), down_at);
    let back_at = Instant::now();
    cluster.start_nodes(&[1, 2, 3]).await;
    let drained = spool_drained(&stack, back_at, "the spool to drain after the outage").await;
    load.pause().await;
    let slowest = during_outage
        .iter()
        .map(|s| s.latency)
        .max()
        .unwrap_or_default();
    assert!(
        during_outage.len() >= 200 && slowest <= ACK_DEADLINE + ANSWER_SLACK,
        "every broker down: {} callbacks answered, slowest {slowest:?}",
        during_outage.len()
    );
    note(
        &mut figures,
        format!(
            "3. every broker down {:.0} s: ingest answered {}; spool drained {:.1} s after the \
         cluster's start began",
            OUTAGE.as_secs_f64(),
            quantiles(during_outage.iter().map(|s| s.latency).collect()),
            drained.as_secs_f64()
        ),
    );

    let sent = load.sent();
    all_applied_once(&stack, &sent, "after the outage").await;
    let forwarded = metric_sum(&stack.http, &stack.ingest, "kollus_ingest_forwarded_total ")
        .await
        .expect("ingest's metrics");
    note(
        &mut figures,
        format!(
            "{} callbacks acknowledged, {forwarded} through the spool; test took {:.0} s",
            sent.len(),
            test_started.elapsed().as_secs_f64()
        ),
    );
    eprintln!("failover figures:\n  {}", figures.join("\n  "));
}

/// A figure for the report, printed at once too (a later failure keeps it).
fn note(figures: &mut Vec<String>, figure: String) {
    eprintln!("failover: {figure}");
    figures.push(figure);
}
