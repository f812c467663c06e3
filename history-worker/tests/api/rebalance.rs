//! A second history-worker joins the group, then leaves it, while reports arrive at a steady
//! rate, under each group protocol (`KAFKA_GROUP_PROTOCOL`): nothing is lost, nothing doubled in
//! effect, and the rebalance times are printed (README "Operations": group protocol and
//! rebalance times). Under `consumer`, a third member is also killed with -9: the broker's
//! session timeout (lowered on local brokers by scripts/kafka.sh) hands its partitions back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kollus_common::envelope::Envelope;
use kollus_common::kafka::{describe_group, group_members, rewind_group};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::settings::GroupProtocol;
use kollus_history_worker::startup::Application;
use kollus_test_support::{eventually, scrape, Harness, ServiceProcess};

use crate::helpers::{
    applied_once, assert_every_report_left_its_mark, assert_same_rows, group, missing_marks,
    settings, snapshot,
};

/// Reports per second while the members come and go.
const RATE: u64 = 100;
/// Users the reports go round (one session each): report `i` is report `i / USERS + 1` of
/// user `i % USERS`, so a session's reports grow in order, and the users spread over the
/// partitions.
const USERS: u64 = 200;

/// Report `i` of the stream: counters that grow with the user's report number and a played
/// segment that no other report carries (its mark: see `assert_every_report_left_its_mark`).
fn stream_report(i: u64) -> Envelope<LmsReport> {
    let (user, n) = (i % USERS, i / USERS + 1);
    crate::helpers::nth_report(&format!("r{user}"), n)
}

/// The partitions an in-process instance owns now (its gauge, sampled every second).
async fn assigned(port: u16) -> Option<i64> {
    scrape(
        &format!("http://127.0.0.1:{port}"),
        "kollus_history_assigned_partitions",
    )
    .await
    .map(|v| v as i64)
}

/// An instance's `kollus_history_records_total{outcome}`.
async fn outcome(port: u16, outcome: &str) -> u64 {
    scrape(
        &format!("http://127.0.0.1:{port}"),
        &format!("kollus_history_records_total{{outcome=\"{outcome}\"}}"),
    )
    .await
    .unwrap_or(0.0) as u64
}

/// An in-process instance, stopped (gracefully: it leaves the group) by [`Member::stop`].
struct Member {
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Member {
    async fn start(h: &Harness) -> Self {
        let app = Application::build(settings(h))
            .await
            .expect("building history-worker");
        let port = app.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self { port, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the instance's task")
            .expect("the instance stopped cleanly");
    }
}

/// The rebalance times one run measured.
#[derive(Debug, Default)]
struct Times {
    join: Duration,
    leave: Duration,
    kill: Option<Duration>,
}

async fn join_and_leave_under_load(protocol: GroupProtocol, kill_one: bool) -> Times {
    let started = Instant::now();
    let mut h = Harness::new().await;
    h.kafka.group_protocol = protocol;
    let partitions = i64::from(h.kafka.topic_partitions);
    // Give slack: both cores may be busy with other tests, and the JVM broker with them.
    let patience = Duration::from_secs(60);

    let first = Member::start(&h).await;
    eventually(
        "the first instance to own every partition",
        patience,
        || async { (assigned(first.port).await? == partitions).then_some(()) },
    )
    .await;

    let publishing = AtomicBool::new(true);
    let load = async {
        let mut published = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut i = 0;
        while publishing.load(Ordering::Relaxed) {
            tick.tick().await;
            let e = stream_report(i);
            h.broker
                .publish(&h.kafka.playback_topic, &e.payload.partition_key(), &e)
                .await;
            published.push(e);
            i += 1;
        }
        published
    };
    let steps = async {
        // Load before anything moves (4 s of it), so the join meets records in flight, and a
        // member that ignored the group's offsets would have hundreds to read again.
        eventually(
            "the first instance to apply 4 s of reports",
            patience,
            || async { (outcome(first.port, "applied").await > 4 * RATE).then_some(()) },
        )
        .await;

        let joining = Instant::now();
        let second = Member::start(&h).await;
        eventually("both instances to own partitions", patience, || async {
            let (a, b) = (assigned(first.port).await?, assigned(second.port).await?);
            (a > 0 && b > 0 && a + b == partitions).then_some(())
        })
        .await;
        let join = joining.elapsed();
        let members = tokio::task::spawn_blocking({
            let (kafka, group) = (h.kafka.clone(), group(&h));
            move || describe_group(&kafka, &group)
        })
        .await
        .unwrap()
        .expect("describing the group");
        assert_eq!(
            members.members, 2,
            "the group, described under {protocol:?}: {members:?}"
        );
        // So a rebuild's rewind refuses to run under its members (touching nothing).
        let refused = tokio::task::spawn_blocking({
            let (kafka, group) = (h.kafka.clone(), group(&h));
            move || rewind_group(&kafka, &group, &kafka.playback_topic, |_, low| Ok(low))
        })
        .await
        .unwrap()
        .expect_err("a rewind under 2 members");
        assert!(
            format!("{refused:#}").contains("has 2 member(s)"),
            "{refused:#}"
        );
        // Both apply under load before the second leaves.
        let before = outcome(second.port, "applied").await;
        eventually("the second instance to apply reports", patience, || async {
            (outcome(second.port, "applied").await > before + 20).then_some(())
        })
        .await;
        let doubled_by_second = outcome(second.port, "duplicate").await;

        let leaving = Instant::now();
        second.stop().await;
        eventually(
            "the first instance to own every partition again",
            patience,
            || async { (assigned(first.port).await? == partitions).then_some(()) },
        )
        .await;
        let leave = leaving.elapsed();

        // Reports applied again by the join and the leave (the kill's are its own: it replays
        // what was not committed yet, by design).
        let doubled = outcome(first.port, "duplicate").await + doubled_by_second;
        let kill = if kill_one {
            let before = outcome(first.port, "applied").await;
            eventually(
                "the first instance to apply more reports",
                patience,
                || async { (outcome(first.port, "applied").await > before + 20).then_some(()) },
            )
            .await;
            let mut third = ServiceProcess::start(
                env!("CARGO_BIN_EXE_history-worker"),
                &h,
                &[
                    ("KAFKA_GROUP_PROTOCOL", protocol.as_str()),
                    crate::helpers::tag_key_env(),
                ],
            );
            eventually(
                "the third instance (a process) to take partitions",
                patience,
                || async {
                    let a = assigned(first.port).await?;
                    (a > 0 && a < partitions).then_some(())
                },
            )
            .await;
            let killed = Instant::now();
            third.kill_9();
            eventually(
                "the first instance to own every partition after the kill",
                patience,
                || async { (assigned(first.port).await? == partitions).then_some(()) },
            )
            .await;
            let took = killed.elapsed();
            // The broker's session timeout governs under `consumer`: the 6 s local brokers set
            // (scripts/kafka.sh), with slack for a busy machine; Kafka's 45 s would not do.
            assert!(
                took < Duration::from_secs(30),
                "the killed member's partitions moved after {took:?}: is the broker's \
                 group.consumer.session.timeout.ms lowered (scripts/kafka.sh)?"
            );
            Some(took)
        } else {
            None
        };
        // A little more load with one member, then the stream ends.
        let before = outcome(first.port, "applied").await;
        eventually(
            "the first instance to apply more reports",
            patience,
            || async { (outcome(first.port, "applied").await > before + 20).then_some(()) },
        )
        .await;
        publishing.store(false, Ordering::Relaxed);
        (Times { join, leave, kill }, doubled)
    };
    let (published, (times, doubled)) = tokio::join!(load, steps);
    let total = published.len();

    // Nothing lost: every report's own mark reaches its session.
    let db = h.db.client().await;
    eventually(
        "every report's mark in watch_sessions",
        patience,
        || async {
            missing_marks(&db, &published)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert_every_report_left_its_mark(&db, &published).await;
    // Nothing doubled: a report is applied again only when its offset was not committed before
    // its partition moved (at most the batch in flight: a quarter of a second's reports). A
    // member that re-read its partitions from the start would re-apply the hundreds before it.
    assert!(
        doubled <= RATE / 4,
        "{doubled} of {total} reports applied again: partitions moved without their \
         committed offsets"
    );
    // And in effect: the tables are each report applied once; every offset committed.
    let committed = {
        let (brokers, group, topic) = (
            h.kafka.brokers.clone(),
            group(&h),
            h.kafka.playback_topic.clone(),
        );
        eventually("every report committed", patience, || {
            let (brokers, group, topic) = (brokers.clone(), group.clone(), topic.clone());
            async move {
                let done = kollus_test_support::group::committed(&brokers, &group, &topic).await;
                (done == total as i64).then_some(done)
            }
        })
        .await
    };
    assert_eq!(committed, total as i64);
    assert_same_rows(
        &snapshot(&db).await,
        &applied_once(&published).await,
        "the tables equal each report applied exactly once",
    );
    let doubled_in_all = outcome(first.port, "duplicate").await;
    first.stop().await;
    // A group whose last member left has none.
    let (kafka, group_id) = (h.kafka.clone(), group(&h));
    let left = tokio::task::spawn_blocking(move || group_members(&kafka, &group_id))
        .await
        .unwrap()
        .expect("describing the group");
    assert_eq!(left, 0, "members after the last one stopped");

    eprintln!(
        "rebalance under {protocol:?} ({RATE} reports/s, {total} reports, {doubled} applied \
         again by the join and leave, {doubled_in_all} by the first instance in all, \
         {partitions} partitions): join {:.1} s, leave {:.1} s{}; test took {:.1} s",
        times.join.as_secs_f64(),
        times.leave.as_secs_f64(),
        times
            .kill
            .map(|k| format!(", kill -9 {:.1} s", k.as_secs_f64()))
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    times
}

#[tokio::test]
async fn a_second_instance_joins_and_leaves_under_load_with_the_consumer_protocol() {
    let times = join_and_leave_under_load(GroupProtocol::Consumer, true).await;
    assert!(times.kill.is_some());
}

#[tokio::test]
async fn a_second_instance_joins_and_leaves_under_load_with_the_classic_protocol() {
    join_and_leave_under_load(GroupProtocol::Classic, false).await;
}
