//! An erasure beyond the tables (issue 32, its topic-and-receipt slice): published on the
//! erasure topic through an outbox that outlasts Kafka's outage, refused while a topic naming
//! users keeps records forever, and a receipt that lists each archive key location and becomes
//! `complete` once published, past `topics_clear_by` and confirmed everywhere.

use std::time::Duration;

use kollus_common::erasure::{location_record_path, ErasureEvent, LocationErasure};
use kollus_common::kafka;
use kollus_common::settings::KafkaSettings;
use kollus_test_support::{eventually_ok, read_topic, Broker};
use kollus_token_api::auth::ApiKeys;
use kollus_token_api::configuration::Settings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Headers as _, Message as _};
use reqwest::StatusCode;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::helpers::*;

const ERASE_KEY: &str = "erase-key-0123456789abcdef";

async fn spawn_with(kafka: KafkaSettings, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!("app:{APP_KEY},dpo[erase]:{ERASE_KEY}")).unwrap();
        s.kafka = kafka;
        s.erasure.erasure_publish_interval = Duration::from_millis(200);
        tweak(s);
    })
    .await
}

async fn erase(app: &TestApp, user: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/users/{user}/erasure", app.address))
        .bearer_auth(ERASE_KEY)
        .send()
        .await
        .unwrap()
}

/// Erases `user`: the 202's receipt id.
async fn erased(app: &TestApp, user: &str) -> uuid::Uuid {
    let res = erase(app, user).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "applied", "{body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

async fn receipt(app: &TestApp, id: uuid::Uuid) -> Value {
    let res = app
        .client
        .get(format!("{}/v1/erasures/{id}", app.address))
        .bearer_auth(ERASE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn published_at(app: &TestApp, id: uuid::Uuid) -> Option<OffsetDateTime> {
    app.db
        .client()
        .await
        .query_one("SELECT published_at FROM erasures WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    kafka::base_config(&KafkaSettings::with_brokers(brokers), "test-admin")
        .create()
        .unwrap()
}

async fn topic_config(brokers: &str, topic: &str, key: &str) -> Option<String> {
    let results = admin(brokers)
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let config = results.into_iter().next().unwrap().unwrap();
    config.get(key).and_then(|e| e.value.clone())
}

/// Creates `topics` with `config` (`retention.ms`, `segment.ms`, ...).
async fn create_topics(brokers: &str, topics: &[&str], config: &[(&str, &str)]) {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            config.iter().fold(
                NewTopic::new(t, 1, TopicReplication::Fixed(1)),
                |n, (k, v)| n.set(k, v),
            )
        })
        .collect();
    let created = admin(brokers)
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

#[tokio::test]
async fn an_erasure_is_published_on_the_erasure_topic_which_keeps_it_forever() {
    let broker = Broker::start().await;
    let kafka = broker.settings();
    let app = spawn_with(kafka.clone(), |_| {}).await;
    let id = erased(&app, "leaver-1").await;
    let r = receipt(&app, id).await;
    let tag = r["subject_tag"].as_str().unwrap().to_owned();

    let records = read_topic(
        &broker.addr,
        &kafka.erasure_topic,
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(records.len(), 1, "one record on the erasure topic");
    let m = &records[0];
    assert_eq!(m.key(), Some(tag.as_bytes()), "keyed by the subject tag");
    let event: ErasureEvent = serde_json::from_slice(m.payload().unwrap()).unwrap();
    assert_eq!(event.erasure_id, id);
    assert_eq!(event.subject_tag, tag);
    let applied_at = OffsetDateTime::parse(r["applied_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(event.erased_at, applied_at, "erased when applied");
    let payload = String::from_utf8_lossy(m.payload().unwrap()).into_owned();
    assert!(!payload.contains("leaver-1"), "never the id: {payload}");
    let headers: Vec<(String, String)> = m
        .headers()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap()).into_owned(),
            )
        })
        .collect();
    assert!(
        headers.contains(&("kind".into(), "erasure".into())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("id".into(), id.to_string())),
        "{headers:?}"
    );

    // token-api created the erasure topic: forever, whatever KAFKA_RETENTION_DAYS says.
    assert_eq!(
        topic_config(&broker.addr, &kafka.erasure_topic, "retention.ms").await,
        Some("-1".into())
    );
    let r = eventually_ok("the receipt published", Duration::from_secs(30), || async {
        let r = receipt(&app, id).await;
        if r["published_at"].is_string() {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    })
    .await;
    // The topics did not exist: their configured retention (14 days) and a segment (a day).
    let clear_by = OffsetDateTime::parse(r["topics_clear_by"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(clear_by - applied_at, time::Duration::days(15), "{r}");
    assert_eq!(r["status"], "applied", "the topics still hold reports: {r}");
    let kept = r["kept"].to_string();
    assert!(!kept.contains("not handled yet"), "{kept}");
    assert!(
        kept.contains(r["topics_clear_by"].as_str().unwrap()),
        "{kept}"
    );
    assert_eq!(app.metric("kollus_token_erasures_published_total").await, 1);
    assert_eq!(app.metric("kollus_token_erasures_unpublished").await, 0);
}

#[tokio::test]
async fn with_kafka_unreachable_an_erasure_is_answered_kept_and_published_once_it_is_back() {
    let broker = Broker::start_behind_proxy().await;
    let kafka = broker.settings();
    broker.proxy().cut();
    let app = spawn_with(kafka.clone(), |_| {}).await;
    let started = std::time::Instant::now();
    let id = erased(&app, "leaver-2").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "answered without Kafka in {:?}",
        started.elapsed()
    );
    eventually_ok("the backlog counted", Duration::from_secs(60), || async {
        match app.metric("kollus_token_erasures_unpublished").await {
            1 => Ok(()),
            n => Err(format!("{n} unpublished")),
        }
    })
    .await;
    eventually_ok("an attempt failed", Duration::from_secs(60), || async {
        match app
            .metric("kollus_token_erasure_publish_failures_total")
            .await
        {
            0 => Err("no failure counted".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    assert_eq!(
        published_at(&app, id).await,
        None,
        "not published without Kafka"
    );
    assert_eq!(receipt(&app, id).await["published_at"], Value::Null);

    broker.proxy().restore();
    eventually_ok(
        "published once Kafka is back",
        Duration::from_secs(120),
        || async {
            published_at(&app, id)
                .await
                .map(|_| ())
                .ok_or_else(|| "unpublished".to_owned())
        },
    )
    .await;
    let records = read_topic(
        &broker.addr,
        &kafka.erasure_topic,
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(records.len(), 1, "published once");
    let event: ErasureEvent = serde_json::from_slice(records[0].payload().unwrap()).unwrap();
    assert_eq!(event.erasure_id, id);
    assert_eq!(app.metric("kollus_token_erasures_published_total").await, 1);
}

#[tokio::test]
async fn an_erasure_is_refused_while_a_topic_naming_users_keeps_records_forever() {
    let broker = Broker::start().await;
    let kafka = broker.settings();
    create_topics(
        &broker.addr,
        &[&kafka.playback_topic],
        &[("retention.ms", "-1")],
    )
    .await;
    create_topics(
        &broker.addr,
        &[&kafka.deadletter_topic],
        &[("retention.ms", "86400000")],
    )
    .await;
    let app = spawn_with(kafka.clone(), |_| {}).await;
    let res = erase(&app, "leaver-3").await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "a problem"
    );
    let body: Value = res.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(&kafka.playback_topic), "{detail}");
    assert!(detail.contains("finite retention"), "{detail}");
    let n: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM erasures", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing erased");
}

#[tokio::test]
async fn the_receipt_lists_each_key_location_and_completes_once_all_confirmed_past_the_topics() {
    let broker = Broker::start().await;
    let kafka = broker.settings();
    // Topics that forget within a second (and a segment of a second).
    create_topics(
        &broker.addr,
        &[&kafka.playback_topic, &kafka.deadletter_topic],
        &[("retention.ms", "1000"), ("segment.ms", "1000")],
    )
    .await;
    let archive = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let archive_dir = archive.path().to_str().unwrap().to_owned();
    let other_dir = other.path().to_str().unwrap().to_owned();
    let own_keys = format!("{archive_dir}/keys");
    let (a, o) = (archive_dir.clone(), other_dir.clone());
    let app = spawn_with(kafka, move |s| {
        s.archive_dir = Some(a);
        s.erasure.erasure_key_locations = vec![o];
    })
    .await;
    let id = erased(&app, "leaver-4").await;
    let r = eventually_ok("published", Duration::from_secs(60), || async {
        let r = receipt(&app, id).await;
        if r["published_at"].is_string() {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    })
    .await;
    let tag = r["subject_tag"].as_str().unwrap().to_owned();
    let clear_by = OffsetDateTime::parse(r["topics_clear_by"].as_str().unwrap(), &Rfc3339).unwrap();
    let applied_at = OffsetDateTime::parse(r["applied_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(clear_by - applied_at, time::Duration::seconds(2), "{r}");
    assert_eq!(
        r["archive"],
        serde_json::json!({ &own_keys: "pending", &other_dir: "pending" })
    );

    let write = |location: &str| {
        let path = std::path::Path::new(location).join(location_record_path(&tag, id));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let record = LocationErasure {
            erasure_id: id,
            subject_tag: tag.clone(),
            erased_at: applied_at,
            destroyed_at: OffsetDateTime::now_utc(),
            generations: vec![1],
        };
        std::fs::write(path, serde_json::to_vec(&record).unwrap()).unwrap();
    };
    write(&own_keys);
    eventually_ok("past topics_clear_by", Duration::from_secs(30), || async {
        let now = OffsetDateTime::now_utc();
        (now > clear_by)
            .then_some(())
            .ok_or_else(|| format!("{now}"))
    })
    .await;
    let r = receipt(&app, id).await;
    assert_eq!(
        r["archive"],
        serde_json::json!({ &own_keys: "destroyed", &other_dir: "pending" })
    );
    assert_eq!(r["status"], "applied", "a location has not confirmed: {r}");

    write(&other_dir);
    let r = receipt(&app, id).await;
    assert_eq!(r["status"], "complete", "{r}");
    assert!(r["completed_at"].is_string(), "{r}");
    // Kept as it was once complete: a location's record gone later does not undo it.
    std::fs::remove_dir_all(format!("{own_keys}/erasures")).unwrap();
    let again = receipt(&app, id).await;
    assert_eq!(again["status"], "complete");
    assert_eq!(again["archive"][&own_keys], "destroyed");
    assert_eq!(again["completed_at"], r["completed_at"]);
}
