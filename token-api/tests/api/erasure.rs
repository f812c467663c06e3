//! Forgetting a user (issue 32, its request-and-tables slice): `POST
//! /v1/users/{id}/erasure` behind `erase` deletes the user's rows from every table naming them
//! and destroys their data key in one transaction, answers 202 with a receipt for anyone (never
//! seen, a repeat), leaves another user's rows as they were, and afterwards the read API, the
//! export and the console answer as for a user never seen, but for the console search's "erased
//! on". The access record is kept and still verifies; what it sealed of the user no longer opens.

use std::time::Duration;

use kollus_common::subject::{SealedSubject, SubjectTag, Subjects};
use kollus_test_support::{eventually_ok, key_files};
use kollus_token_api::access_log::seal::ChainKey;
use kollus_token_api::access_log::verify;
use kollus_token_api::auth::ApiKeys;
use kollus_token_api::erasure::model::USER_TABLES;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::console::{browser, cookie_of, get, seed, sign_in, sign_in_with, SESSION};
use crate::helpers::*;

const ERASE_KEY: &str = "erase-key-0123456789abcdef";
const AUDITOR_KEY: &str = "auditor-key-0123456789abcdef";

/// Keys: `app` (unscoped: every scope but console, audit, erase), `support[console]`,
/// `dpo[erase]`; the access log sealed every 50 ms.
async fn spawn_erasure() -> TestApp {
    spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!(
            "app:{APP_KEY},support[console]:{},dpo[erase]:{ERASE_KEY},\
             auditor[console+audit]:{AUDITOR_KEY}",
            crate::console::SUPPORT_KEY
        ))
        .unwrap();
        s.access_log.access_log_seal_interval = Duration::from_millis(50);
    })
    .await
}

fn subjects() -> Subjects {
    let files = &key_files().files;
    Subjects::from_files(&files[1].2, &files[2].2).unwrap()
}

/// Everything a user is seen in: sessions and a decision (`seed`), a grant through the API
/// (entitlements and its change), a DRM download, a console view, an API read (the day's read
/// counter) and an API export for `reason` (an access-log row).
async fn populate(app: &TestApp, user: &str, reason: &str) {
    seed(app, user, "mck-1").await;
    let db = app.db.client().await;
    db.execute(
        "INSERT INTO drm_downloads (client_user_id, media_content_key, session_key, completed_at) \
         VALUES ($1, 'mck-1', 'sk-1', now())",
        &[&user],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO console_views (key_name, client_user_id, media_content_key, viewed_at) \
         VALUES ('agent', $1, 'mck-1', now())",
        &[&user],
    )
    .await
    .unwrap();
    let res = app
        .client
        .put(format!(
            "{}/v1/users/{user}/entitlements/media/mck-1",
            app.address
        ))
        .bearer_auth(APP_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .client
        .get(format!("{}/v1/users/{user}/history", app.address))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .client
        .get(format!("{}/v1/users/{user}/export", app.address))
        .query(&[("reason", reason)])
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
}

/// Every row naming `user` by id, table by table, as JSON text.
async fn rows_of(db: &tokio_postgres::Client, user: &str) -> Vec<String> {
    let mut out = Vec::new();
    for table in USER_TABLES {
        for row in db
            .query(
                &format!(
                    "SELECT '{table} ' || to_jsonb(t)::text FROM {table} t \
                      WHERE client_user_id = $1 ORDER BY 1"
                ),
                &[&user],
            )
            .await
            .unwrap()
        {
            out.push(row.get(0));
        }
    }
    out
}

async fn erase(app: &TestApp, user: &str, key: &str, body: Option<Value>) -> reqwest::Response {
    let req = app
        .client
        .post(format!("{}/v1/users/{user}/erasure", app.address))
        .bearer_auth(key);
    match body {
        Some(b) => req.json(&b),
        None => req,
    }
    .send()
    .await
    .unwrap()
}

/// An API answer with the user's id replaced, to compare an erased user with one never seen.
async fn answer(app: &TestApp, path: &str, user: &str) -> (u16, String) {
    let res = app
        .client
        .get(format!("{}{}", app.address, path.replace("{u}", user)))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap().replace(user, "{u}"))
}

#[tokio::test]
async fn erasing_a_user_removes_every_row_of_theirs_and_nothing_of_another() {
    let app = spawn_erasure().await;
    let db = app.db.client().await;
    let subjects = subjects();
    let (gone, kept) = ("learner-gone", "learner-kept");
    let (gone_tag, kept_tag) = (subjects.tag(gone), subjects.tag(kept));
    assert_eq!(
        app.metric("kollus_token_erasures_total").await,
        0,
        "pre-registered"
    );
    populate(&app, gone, "ticket 7").await;
    populate(&app, kept, "ticket 8").await;
    let kept_before = rows_of(&db, kept).await;
    let gone_before = rows_of(&db, gone).await;
    for table in USER_TABLES.iter() {
        assert!(
            gone_before
                .iter()
                .any(|r| r.starts_with(&format!("{table} "))),
            "the test seeds {table}: {gone_before:#?}"
        );
    }

    let res = erase(
        &app,
        gone,
        ERASE_KEY,
        Some(json!({"basis": "pipa_36", "note": "ticket 12"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["status"], "applied");
    assert_eq!(
        location,
        format!("/v1/erasures/{}", accepted["id"].as_str().unwrap())
    );
    assert_eq!(app.metric("kollus_token_erasures_total").await, 1);

    // Nothing of them in any table; the other user's rows exactly as they were.
    assert_eq!(rows_of(&db, gone).await, Vec::<String>::new());
    assert_eq!(rows_of(&db, kept).await, kept_before);
    // The day's read counters are the access record's: kept (their sealed id no longer opens).
    let counters: i64 = db
        .query_one(
            "SELECT count(*) FROM access_log_reads WHERE subject_tag = $1",
            &[&gone_tag.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(counters > 0, "the erased user's reads stay recorded");

    // The receipt counts each table's rows and names the subject by tag only.
    let res = app
        .client
        .get(format!("{}{location}", app.address))
        .bearer_auth(ERASE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        !text.contains(gone),
        "the receipt never names the id: {text}"
    );
    let receipt: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(receipt["id"], accepted["id"]);
    assert_eq!(receipt["status"], "applied");
    assert_eq!(receipt["requested_by"], "dpo");
    assert_eq!(receipt["basis"], "pipa_36");
    assert_eq!(receipt["note"], "ticket 12");
    assert_eq!(receipt["subject_tag"], gone_tag.as_str());
    assert_eq!(receipt["generation"], 1);
    // No ARCHIVE_DIR: no key location to wait for. No broker describes the topics: their
    // configured retention (14 days) and a segment (a day).
    assert_eq!(receipt["archive"], json!({}));
    let at = |key: &str| {
        time::OffsetDateTime::parse(
            receipt[key].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        at("topics_clear_by") - at("applied_at"),
        time::Duration::days(15)
    );
    for table in USER_TABLES.iter() {
        let counted = gone_before
            .iter()
            .filter(|r| r.starts_with(&format!("{table} ")))
            .count();
        assert_eq!(receipt["tables"][table], counted, "{table}: {receipt}");
    }
    let kept_things = receipt["kept"].as_array().unwrap();
    assert!(kept_things[0]["why"]
        .as_str()
        .unwrap()
        .contains("안전성 확보조치 기준 제8조"));
    assert!(kept_things[0]["until"].as_str().is_some());
    assert!(
        kept_things
            .iter()
            .all(|k| !k["why"].as_str().unwrap().contains("not handled yet")),
        "{receipt}"
    );
    assert_eq!(
        kept_things[1]["until"], receipt["topics_clear_by"],
        "the topics' reports until they are clear: {receipt}"
    );

    // The access record keeps its rows about them (the erase among them) and still verifies;
    // none of their sealed ids opens any more, the other user's still do.
    eventually_ok("every row sealed", Duration::from_secs(20), || async {
        let unsealed: i64 = db
            .query_one(
                "SELECT count(*) FROM access_log l WHERE NOT EXISTS (SELECT 1 FROM \
                 access_log_seals s WHERE s.class = l.class AND s.log_id = l.id)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (unsealed == 0)
            .then_some(())
            .ok_or(format!("{unsealed} unsealed"))
    })
    .await;
    let key = ChainKey::from_file(key_files().access_log()).unwrap();
    let report = verify::verify(&db, &key, None, 730, None).await.unwrap();
    assert!(report.ok, "{report:?}");
    let sealed_of = |tag: SubjectTag| {
        let db = &db;
        async move {
            db.query(
                "SELECT action, subject_generation, subject_sealed FROM access_log \
                  WHERE subject_tag = $1",
                &[&tag.as_str()],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.get::<_, String>("action"),
                    SealedSubject {
                        tag: tag.clone(),
                        generation: r.get("subject_generation"),
                        sealed_id: r.get("subject_sealed"),
                    },
                )
            })
            .collect::<Vec<_>>()
        }
    };
    let gone_rows = sealed_of(gone_tag.clone()).await;
    let actions: Vec<&str> = gone_rows.iter().map(|(a, _)| a.as_str()).collect();
    for action in ["grant", "api_export", "erase"] {
        assert!(actions.contains(&action), "{action} kept: {actions:?}");
    }
    for (action, sealed) in &gone_rows {
        assert_eq!(
            subjects.open_id(&db, sealed).await.unwrap(),
            None,
            "{action}"
        );
    }
    for (action, sealed) in sealed_of(kept_tag.clone()).await {
        assert_eq!(
            subjects.open_id(&db, &sealed).await.unwrap().as_deref(),
            Some(kept),
            "{action}"
        );
    }
    // Their next reports are sealed under a new generation.
    assert_eq!(
        subjects
            .current_key(&db, &gone_tag)
            .await
            .unwrap()
            .generation,
        2
    );

    // The read API and the export answer as for a user never seen.
    for path in [
        "/v1/users/{u}/history",
        "/v1/users/{u}/media/mck-1/progress",
        "/v1/users/{u}/entitlements",
        "/v1/users/{u}/export?reason=ticket%208",
    ] {
        assert_eq!(
            answer(&app, path, gone).await,
            answer(&app, path, "never-seen-1").await,
            "{path}"
        );
    }
    // The console: the user's page as for no one; the search says "erased on" and nothing else.
    let web = browser();
    let cookie = sign_in(&app, &web).await;
    let page = |u: &'static str| {
        let (app, web, cookie) = (&app, &web, &cookie);
        async move {
            get(app, web, &format!("/console/users/{u}"), cookie)
                .await
                .status()
        }
    };
    assert_eq!(page(gone).await, page("never-seen-2").await);
    assert_eq!(page(gone).await, StatusCode::NOT_FOUND);
    let res = get(&app, &web, &format!("/console/?q={gone}"), &cookie).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    let today = time::OffsetDateTime::now_utc().date();
    let on = format!(
        "Erased on {:04}-{:02}-{:02}",
        today.year(),
        u8::from(today.month()),
        today.day()
    );
    assert!(body.contains(&on), "{body}");
    assert!(!body.contains("Nothing found"), "{body}");
    assert!(!body.contains("href=\"/console/users/"), "{body}");
    // The monthly review still renders the erased user's export (by its reason), key gone.
    let res = sign_in_with(&app, &web, AUDITOR_KEY).await;
    let auditor = format!("{SESSION}={}", cookie_of(&res, SESSION).unwrap());
    let res = get(&app, &web, "/console/review", &auditor).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("ticket 7"), "{body}");
    let res = get(&app, &web, "/console/?q=never-seen-3", &cookie).await;
    let body = res.text().await.unwrap();
    assert!(
        body.contains("Nothing found") && !body.contains("Erased on"),
        "{body}"
    );
}

#[tokio::test]
async fn every_request_gets_a_receipt_and_only_an_erase_key_may_ask() {
    let app = spawn_erasure().await;
    // A user never seen, without a body: 202 too (an erasure tells nothing about existence).
    let res = erase(&app, "never-seen", ERASE_KEY, None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let first: Value = res.json().await.unwrap();
    // A repeat: a new receipt.
    let res = erase(&app, "never-seen", ERASE_KEY, Some(json!({}))).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let second: Value = res.json().await.unwrap();
    assert_ne!(first["id"], second["id"]);
    for (id, generation) in [(&first["id"], json!(1)), (&second["id"], Value::Null)] {
        let receipt: Value = app
            .client
            .get(format!(
                "{}/v1/erasures/{}",
                app.address,
                id.as_str().unwrap()
            ))
            .bearer_auth(ERASE_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(receipt["basis"], "other");
        // The first erase row seals the id under a key made for it (none was live), destroyed
        // with it; the repeat names the erased subject by tag alone and destroys no key (none
        // is started for an erased id).
        assert_eq!(receipt["generation"], generation, "{receipt}");
        assert!(receipt["tables"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| n == 0));
    }

    // Naming the erased id again (a read of what is no longer held) starts no live key: the
    // access record holds the read by tag alone, so the id does not become readable again.
    let res = app
        .client
        .get(format!("{}/v1/users/never-seen/history", app.address))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let tag = subjects().tag("never-seen");
    let live: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM subject_keys WHERE tag = $1 AND wrapped IS NOT NULL",
            &[&tag.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0, "no key started for an erased id");
    // A note naming the user keeps no id: the receipt is kept for good, by tag.
    let res = erase(
        &app,
        "never-seen",
        ERASE_KEY,
        Some(json!({"note": "erase NEVER-SEEN please"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = res.json::<Value>().await.unwrap()["id"].clone();
    let receipt: Value = app
        .client
        .get(format!(
            "{}/v1/erasures/{}",
            app.address,
            id.as_str().unwrap()
        ))
        .bearer_auth(ERASE_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(receipt["note"], "erase [user] please", "{receipt}");

    // An unscoped key has every scope but erase.
    let res = erase(&app, "u1", APP_KEY, None).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["scope"], "erase");
    let res = app
        .client
        .get(format!(
            "{}/v1/erasures/{}",
            app.address,
            first["id"].as_str().unwrap()
        ))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let status_of = |path: String| {
        let app = &app;
        async move {
            let res = app
                .client
                .get(format!("{}{path}", app.address))
                .bearer_auth(ERASE_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(res.headers()["content-type"], "application/problem+json");
            res.status()
        }
    };
    assert_eq!(
        status_of(format!("/v1/erasures/{}", uuid::Uuid::now_v7())).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status_of("/v1/erasures/not-a-uuid".into()).await,
        StatusCode::BAD_REQUEST
    );

    for body in [
        json!({"basis": "whim"}),
        json!({"note": "a\u{7}b"}),
        json!({"note": "가".repeat(501)}),
        json!({"other": 1}),
    ] {
        let res = erase(&app, "u1", ERASE_KEY, Some(body.clone())).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    let receipts: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM erasures", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        receipts, 3,
        "the three accepted above; a refused request leaves no receipt"
    );
}

#[tokio::test]
async fn the_tables_erased_are_every_table_naming_a_client_user_id() {
    let db = kollus_test_support::TestDb::new().await;
    let named: Vec<String> = db
        .client()
        .await
        .query(
            "SELECT c.table_name FROM information_schema.columns c \
               JOIN information_schema.tables t USING (table_schema, table_name) \
              WHERE c.table_schema = 'public' AND c.column_name = 'client_user_id' \
                AND t.table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let mut erased: Vec<String> = USER_TABLES.iter().map(|t| (*t).to_owned()).collect();
    erased.sort();
    assert_eq!(named, erased, "a new table naming users must be erased too");
}
