//! kollus-catalog end to end: the binary against the stand-in for Kollus's API, ingest,
//! sync-worker and token-api as processes. A backfill brings the videos uploaded before the
//! callbacks; a delete whose callback never came keeps a video playable until a sweep finds it
//! gone, after which token-api's strict catalog refuses its playback token.

use kollus_test_support::kollus_api::video;
use kollus_test_support::{eventually, fixture, FakeKollusApi};

use crate::stack::*;

const API_TOKEN: &str = "e2e-kollus-api-token";

async fn kollus_catalog(stack: &Stack, fake: &FakeKollusApi, args: &[&str]) -> String {
    let mut command = command("kollus-catalog");
    command
        .args(args)
        .env("KOLLUS_API_URL", &fake.url)
        .env("KOLLUS_API_TOKEN", API_TOKEN)
        .env("KOLLUS_API_RATE", "20")
        .env("KOLLUS_ABSENCE_GRACE_SECONDS", "0")
        .envs(stack.broker.env())
        .env("DATABASE_URL", &stack.db.url)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn");
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("running kollus-catalog");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kollus-catalog {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

impl Stack {
    async fn token_status(&self, media: &str) -> u16 {
        self.http
            .post(format!("{}/v1/playback-tokens", self.token_api))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({
                "client_user_id": "181353",
                "media": [{"media_content_key": media}],
            }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_then_a_sweep_finds_the_delete_the_callbacks_missed() {
    let stack = Stack::start().await;
    let fake = FakeKollusApi::start(API_TOKEN);
    fake.add_channel("ch-main", "Main");
    // The fixture's video, and one uploaded before the callbacks were configured.
    fake.add_video(video("ufk-0001", 1, &[("ch-main", "vnCVPVyV")]));
    fake.add_video(video("20250101-old00001", 2, &[("ch-main", "oldmedia1")]));
    assert_eq!(
        stack
            .callback("channel", fixture("channel-join.form"))
            .await
            .status(),
        200
    );
    let db = stack.db.client().await;
    let count = |sql: &'static str| {
        let db = &db;
        async move {
            db.query_one(sql, &[])
                .await
                .ok()
                .map(|r| r.get::<_, i64>(0))
        }
    };

    let out = kollus_catalog(&stack, &fake, &["backfill"]).await;
    assert!(out.contains("backfill: 2 uploads in 1 channels"), "{out}");
    eventually("both videos playable and titled", SLACK, || async {
        count(
            "SELECT count(*) FROM media_playability p JOIN uploads u USING (upload_file_key) \
             WHERE p.playable AND u.title IS NOT NULL",
        )
        .await
        .filter(|n| *n == 2)
    })
    .await;
    assert_eq!(stack.token_status("vnCVPVyV").await, 201);

    // Deleted in Kollus while ingest was down for longer than Kollus retries: no callback.
    fake.delete_video("ufk-0001");
    let out = kollus_catalog(&stack, &fake, &["sweep"]).await;
    assert!(out.contains("absent      upload ufk-0001"), "{out}");
    assert!(out.contains("sweep: 1 differences corrected"), "{out}");
    eventually("token-api to refuse the absent video", SLACK, || async {
        (stack.token_status("vnCVPVyV").await == 409).then_some(())
    })
    .await;
    assert_eq!(
        stack.token_status("oldmedia1").await,
        201,
        "the other plays on"
    );
    fake.stop().await;
}
