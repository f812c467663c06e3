//! Subject keys through the binary (issue 32): two users' LMS reports and a dead letter naming
//! one of them archived by `dump`: no segment holds either user's id or uservalues readable; an
//! erasure published on the erasure topic destroys the user's key and leaves the location's
//! record; `verify` passes and reports the erased generation, and fails naming a key deleted by
//! hand; `restore` into another cluster brings back only the other user's reports.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kollus_common::erasure::{location_record_path, ErasureEvent};
use kollus_common::subject::Tagger;
use kollus_test_support::{key_files, read_topic, Broker};
use rdkafka::message::Message as _;

const A: &str = "learner-aaa-17";
const B: &str = "learner-bbb-42";

fn env(broker: &Broker, erasure_topic: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = broker
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.extend(
        key_files()
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    env.push(("KAFKA_ERASURE_TOPIC".into(), erasure_topic.into()));
    env
}

fn run(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kollus-archive"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .expect("running kollus-archive");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report(user: &str, n: usize, received_at: &str) -> String {
    serde_json::json!({
        "id": uuid::Uuid::now_v7(), "kind": "lms", "schema_version": 1,
        "received_at": received_at,
        "form": {"client_user_id": user, "uservalue0": format!("uv-{user}-{n}")},
        "payload": {"client_user_id": user, "n": n},
        "raw": {"body": format!("client_user_id={user}&uservalue0=uv-{user}-{n}")},
    })
    .to_string()
}

/// Every segment's text, decompressed.
fn plaintext(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.join("segments")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push_str(&String::from_utf8_lossy(
                    &zstd::decode_all(bytes.as_slice()).unwrap(),
                ));
            }
        }
    }
    out
}

#[tokio::test]
async fn an_erasure_destroys_the_users_key_and_nothing_of_them_is_readable_or_restored() {
    let broker = Broker::start().await;
    let kafka = broker.settings();
    let erasure_topic = kafka.erasure_topic.clone();
    let env = env(&broker, &erasure_topic);
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_owned();
    let tagger = Tagger::from_file(&key_files().files[1].2).unwrap();
    let (tag_a, tag_b) = (tagger.tag(A).to_string(), tagger.tag(B).to_string());
    // The services' four topics, the erasure topic among them.
    let topics = kafka.topics().to_vec();
    kollus_common::kafka::ensure_topics(&kafka, &topics)
        .await
        .unwrap();

    let before = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let before = before
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for n in 0..3 {
        for user in [A, B] {
            broker
                .publish_raw(
                    &kafka.playback_topic,
                    &format!("{user}\u{1f}mck-{n}"),
                    report(user, n, &before).as_bytes(),
                )
                .await;
        }
    }
    // A dead letter naming A in its raw form body only, and one naming nobody.
    let dead = serde_json::json!({
        "id": uuid::Uuid::now_v7(), "stage": "ingest", "reason": "invalid_payload",
        "detail": "x", "dead_lettered_at": before, "received_at": before,
        "raw": {"body": format!("play_status=1&client_user_id={A}&uservalue0=uv-{A}-dead")},
    });
    broker
        .publish_raw(&kafka.deadletter_topic, "", dead.to_string().as_bytes())
        .await;
    // Naming nobody, received 40 days ago: its day's key is destroyed by age at the next start.
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(40);
    let day = kollus_common::archive::subject::unattributed_tag(long_ago);
    let long_ago = long_ago
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let nobody = serde_json::json!({"received_at": long_ago, "raw": {"body": "garbage-body"}});
    broker
        .publish_raw(&kafka.deadletter_topic, "", nobody.to_string().as_bytes())
        .await;
    broker
        .publish_raw(
            &kafka.content_topic,
            "c1",
            br#"{"content":"plain-content-callback"}"#,
        )
        .await;

    let (code, out, err) = run(&["dump", "--to", &to, "--until-end"], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    let text = plaintext(dir.path());
    for secret in [
        A,
        B,
        &format!("uv-{A}-0"),
        &format!("uv-{B}-1"),
        &format!("uv-{A}-dead"),
    ] {
        assert!(!text.contains(secret), "{secret} readable in a segment");
    }
    assert!(
        text.contains("plain-content-callback"),
        "content stays plain"
    );
    assert!(text.contains("\"frame\""));

    // Erase A: on the erasure topic, as token-api publishes it.
    let event = ErasureEvent {
        erasure_id: uuid::Uuid::now_v7(),
        subject_tag: tag_a.clone(),
        erased_at: time::OffsetDateTime::now_utc(),
    };
    broker
        .publish_raw(&erasure_topic, &tag_a, &serde_json::to_vec(&event).unwrap())
        .await;
    let (code, out, err) = run(&["dump", "--to", &to, "--until-end"], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    let keys = dir.path().join("keys");
    assert!(!keys.join(format!("keys/{tag_a}/000001.json")).exists());
    assert!(keys.join(format!("keys/{tag_b}/000001.json")).exists());
    assert!(keys
        .join(location_record_path(&tag_a, event.erasure_id))
        .exists());

    let (code, out, err) = run(&["verify", "--from", &to, "--no-topics"], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("ERASED subject {tag_a} generation 1")),
        "{out}"
    );
    assert!(out.contains(&format!("EXPIRED {day}")), "{out}");

    // Restore into another cluster: B's reports, none of A's.
    let other = broker.another_cluster().await;
    let (code, out, err) = run(
        &["restore", "--from", &to],
        &self::env(&other, &erasure_topic),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("erased: 4 records") && out.contains("1 records of expired"),
        "{out}"
    );
    let restored = read_topic(
        &other.addr,
        &kafka.playback_topic,
        3,
        Duration::from_secs(30),
    )
    .await;
    let keys_restored: Vec<String> = restored
        .iter()
        .map(|m| String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(keys_restored.len(), 3, "{keys_restored:?}");
    assert!(
        keys_restored.iter().all(|k| k.starts_with(B)),
        "{keys_restored:?}"
    );

    // B's key deleted by hand, with no erasure record: verify fails naming it.
    std::fs::remove_file(keys.join(format!("keys/{tag_b}/000001.json"))).unwrap();
    let (code, out, _) = run(&["verify", "--from", &to, "--no-topics"], &env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("MISSING KEY subject {tag_b} generation 1")),
        "{out}"
    );
}

fn record(
    topic: &str,
    offset: i64,
    key: &str,
    value: &str,
) -> kollus_archive::record::ArchivedRecord {
    use kollus_archive::record::{ArchivedRecord, Bytes};
    ArchivedRecord {
        topic: topic.into(),
        partition: 0,
        offset,
        timestamp: Some(1_765_000_000_000 + offset),
        key: Some(Bytes::of(key.as_bytes())),
        headers: vec![],
        value: Some(Bytes::of(value.as_bytes())),
    }
}

/// A plaintext archive as `dump` wrote them before subject keys: one segment per topic.
async fn plaintext_archive(dir: &Path, segments: &[Vec<kollus_archive::record::ArchivedRecord>]) {
    let archive = kollus_archive::store::Archive::open(dir.to_str().unwrap()).unwrap();
    for records in segments {
        let mut open = kollus_archive::segment::Open::new(&records[0], 1, "cluster-a").unwrap();
        for r in records {
            open.push(r).unwrap();
        }
        let (bytes, entry) = open.close().unwrap();
        archive
            .create(&entry.segment, bytes, |_| false)
            .await
            .unwrap();
        let manifest = serde_json::to_vec(&entry).unwrap();
        archive
            .create(&entry.manifest_path(), manifest, |_| false)
            .await
            .unwrap();
    }
}

/// The environment of a `kollus-archive` run on an archive alone (no broker): the test's key
/// files, the playback topic named `p`, and `extra`.
fn offline_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    key_files()
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(std::iter::once((
            "KAFKA_PLAYBACK_TOPIC".to_owned(),
            "p".to_owned(),
        )))
        .chain(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .collect()
}

#[tokio::test]
async fn reencrypt_copies_a_plaintext_archive_under_subject_keys_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let playback: Vec<_> = (0..6)
        .map(|o| {
            let user = if o % 2 == 0 { A } else { B };
            record(
                "p",
                o,
                &format!("{user}\u{1f}m"),
                &report(user, o as usize, "2026-01-01T00:00:00Z"),
            )
        })
        .collect();
    let content = vec![record("c", 0, "c1", r#"{"content":"plain"}"#)];
    plaintext_archive(&a, &[playback, content]).await;
    assert!(plaintext(&a).contains(A));
    let env = offline_env(&[("KAFKA_CONTENT_TOPIC", "c")]);
    let (from, to) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (code, out, err) = run(&["reencrypt", "--from", from, "--to", to], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("re-encrypted 2 segments (7 records, 6 sealed"),
        "{out}"
    );
    assert!(
        err.contains("reencrypt: 7/7 records"),
        "progress on stderr: {err}"
    );
    let text = plaintext(&b);
    assert!(!text.contains(A) && !text.contains(B), "{text}");
    assert!(text.contains("plain"));
    let (code, out, err) = run(&["verify", "--from", to, "--no-topics"], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("p/0 epoch 0001-cluster-a (cluster cluster-a): offsets 0..=5"),
        "{out}"
    );
    // Again: nothing written twice.
    let (code, out, err) = run(&["reencrypt", "--from", from, "--to", to], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("re-encrypted 0 segments") && out.contains("2 segments were there already"),
        "{out}"
    );
}

#[tokio::test]
async fn reencrypt_seals_no_new_key_for_a_user_the_archive_says_was_erased() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let playback: Vec<_> = (0..4)
        .map(|o| {
            let user = if o % 2 == 0 { A } else { B };
            record(
                "p",
                o,
                &format!("{user}\u{1f}m"),
                &report(user, o as usize, "2026-01-01T00:00:00Z"),
            )
        })
        .collect();
    // The plaintext archive also holds the erasure topic's record: A erased after those reports.
    let tagger = Tagger::from_file(&key_files().files[1].2).unwrap();
    let tag_a = tagger.tag(A).to_string();
    let event = serde_json::json!({
        "erasure_id": uuid::Uuid::now_v7(), "subject_tag": tag_a,
        "erased_at": "2026-06-01T00:00:00Z",
    })
    .to_string();
    let erasures = vec![record("e", 0, &tag_a, &event)];
    plaintext_archive(&a, &[playback, erasures]).await;
    let env = offline_env(&[("KAFKA_ERASURE_TOPIC", "e")]);
    let (from, to) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (code, out, err) = run(&["reencrypt", "--from", from, "--to", to], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("2 sealed"), "B's two reports only: {out}");
    // No key of A's was made: their reports are placeholders, never sealed anew.
    let keys = b.join("keys");
    let mut made = Vec::new();
    let mut stack = vec![keys];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                made.push(e.path().display().to_string());
            }
        }
    }
    assert!(
        !made.iter().any(|p| p.contains(&tag_a)),
        "a key for the erased user: {made:?}"
    );
    let text = plaintext(&b);
    assert!(!text.contains(A), "{text}");
    let (code, out, err) = run(&["verify", "--from", to, "--no-topics"], &env);
    assert_eq!(code, 0, "{out}\n{err}");
}

/// The fixture LMS report (`fixtures/kollus/lms-seed.*`) as ingest archives it, for `user`.
fn fixture_report(user: &str, n: usize) -> String {
    let form = String::from_utf8(kollus_test_support::fixture("lms-seed.form"))
        .unwrap()
        .replace("181353", user);
    let json = String::from_utf8(kollus_test_support::fixture("lms-seed.json"))
        .unwrap()
        .replace("181353", user);
    let payload: serde_json::Value = serde_json::from_str(&json).unwrap();
    serde_json::json!({
        "id": uuid::Uuid::now_v7(), "kind": "lms", "schema_version": 1,
        "received_at": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339).unwrap(),
        "form": {"client_user_id": user, "uservalue0": format!("uv-{user}-{n}")},
        "payload": payload,
        "raw": {"content_type": "application/x-www-form-urlencoded", "body": form},
    })
    .to_string()
}

/// Figures for issue 32's note, printed, never asserted on time: archive bytes per LMS report
/// before and after subject keys (10,000 fixture reports across 1,000 users), and `dump` and
/// `restore` records/s with keys. `cargo test -p kollus-archive --test erasure measure --
/// --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement: run it by name with --ignored --nocapture"]
async fn measure_bytes_per_report_and_rates_with_subject_keys() {
    const REPORTS: usize = 10_000;
    const USERS: usize = 1_000;
    let users: Vec<String> = (0..USERS).map(|u| format!("user-{u:05}")).collect();
    let reports: Vec<(String, String)> = (0..REPORTS)
        .map(|n| {
            let user = &users[n % USERS];
            (
                format!("{user}\u{1f}mck-{}", n % 20),
                fixture_report(user, n),
            )
        })
        .collect();

    // Bytes: one partition's segments of 64 MiB (dump's default), plain and sealed.
    let dir = tempfile::tempdir().unwrap();
    let mut ring = kollus_common::archive::KeyRing::open(
        dir.path().join("keys").to_str().unwrap(),
        &key_files().files[2].2,
    )
    .await
    .unwrap();
    let tagger = Tagger::from_file(&key_files().files[1].2).unwrap();
    let records: Vec<_> = reports
        .iter()
        .enumerate()
        .map(|(o, (k, v))| record("p", o as i64, k, v))
        .collect();
    let mut plain = kollus_archive::segment::Open::new(&records[0], 1, "c").unwrap();
    let mut sealed = kollus_archive::segment::Open::new(&records[0], 1, "c").unwrap();
    for r in &records {
        plain.push(r).unwrap();
        let user = r.key.as_ref().map(|k| match k {
            kollus_archive::record::Bytes::Text(t) => t.split('\u{1f}').next().unwrap().to_owned(),
            _ => unreachable!(),
        });
        sealed.push_subject(
            r,
            tagger.tag(&user.unwrap()).as_str(),
            time::OffsetDateTime::now_utc(),
        );
    }
    let raw = plain.raw_bytes;
    let (plain_bytes, _) = plain.close().unwrap();
    let started = std::time::Instant::now();
    let mut keys = std::collections::HashMap::new();
    for tag in sealed.tags_to_seal(&ring.barrier) {
        let key = ring.current(&tag).await.unwrap();
        keys.insert(tag, key);
    }
    let closed = sealed.close_sealed(&keys, &ring.barrier).unwrap();
    let seal_secs = started.elapsed().as_secs_f64();
    println!(
        "MEASURE {REPORTS} fixture LMS reports, {USERS} users, one segment: JSON {} B/report; \
         archived plaintext {} B/report; sealed per subject {} B/report ({:.2}x); \
         sealing (1,000 keys made) {:.2} s",
        raw / REPORTS as u64,
        plain_bytes.len() / REPORTS,
        closed.bytes.len() / REPORTS,
        closed.bytes.len() as f64 / plain_bytes.len() as f64,
        seal_secs
    );

    // Rates through Kafka and the binary.
    let broker = Broker::start().await;
    let kafka = broker.settings();
    let erasure_topic = kafka.erasure_topic.clone();
    // The services' four topics, the erasure topic among them.
    let topics = kafka.topics().to_vec();
    kollus_common::kafka::ensure_topics(&kafka, &topics)
        .await
        .unwrap();
    let producer =
        kollus_common::kafka::durable_producer(&kafka, "measure", Duration::from_secs(30)).unwrap();
    let sends: Vec<_> = reports
        .iter()
        .map(|(k, v)| {
            producer
                .send_result(
                    rdkafka::producer::FutureRecord::to(&kafka.playback_topic)
                        .key(k.as_str())
                        .payload(v.as_str()),
                )
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect();
    for s in sends {
        s.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let env = env(&broker, &erasure_topic);
    let to = dir.path().join("archive");
    let to = to.to_str().unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = run(&["dump", "--to", to, "--until-end"], &env);
    let dump_secs = started.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{out}\n{err}");
    let started = std::time::Instant::now();
    let (code, out, err) = run(&["restore", "--from", to], &env);
    let restore_secs = started.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{out}\n{err}");
    // The same again into another archive whose keys exist already (steady state), and in
    // plaintext (no ARCHIVE_KEK_FILE), for comparison.
    let keys_dir = dir.path().join("archive/keys");
    let mut steady = env.clone();
    steady.push(("ARCHIVE_KEYS_DIR".into(), keys_dir.to_str().unwrap().into()));
    let to2 = dir.path().join("archive2");
    let started = std::time::Instant::now();
    let (code, out, err) = run(
        &["dump", "--to", to2.to_str().unwrap(), "--until-end"],
        &steady,
    );
    let steady_secs = started.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{out}\n{err}");
    let plain_env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "ARCHIVE_KEK_FILE")
        .cloned()
        .collect();
    let to3 = dir.path().join("archive3");
    let started = std::time::Instant::now();
    let (code, out, err) = run(
        &["dump", "--to", to3.to_str().unwrap(), "--until-end"],
        &plain_env,
    );
    let plain_secs = started.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{out}\n{err}");
    println!(
        "MEASURE with subject keys, {REPORTS} reports of {USERS} users: dump --until-end {:.0} \
         records/s ({dump_secs:.1} s, 1,000 keys made, process start included); with the keys \
         there already {:.0} records/s ({steady_secs:.1} s); plaintext {:.0} records/s \
         ({plain_secs:.1} s); restore {:.0} records/s ({restore_secs:.1} s)",
        REPORTS as f64 / dump_secs,
        REPORTS as f64 / steady_secs,
        REPORTS as f64 / plain_secs,
        REPORTS as f64 / restore_secs
    );
}
