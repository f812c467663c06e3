//! The `kollus-catalog` binary as an operator runs it: the token from KOLLUS_API_TOKEN_FILE,
//! progress on the terminal, a summary on stdout, a non-zero exit with the reason on a refusal,
//! and the token nowhere in what it prints.

use std::process::{Command, Output};

use kollus_test_support::kollus_api::video;

use crate::helpers::{Stack, TOKEN};

async fn run(s: &Stack, token_file: &std::path::Path, args: &[&str]) -> (Output, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kollus-catalog"));
    command
        .args(args)
        .env("KOLLUS_API_URL", &s.fake.url)
        .env("KOLLUS_API_TOKEN_FILE", token_file)
        .env("KOLLUS_API_RATE", "50")
        .envs(s.h.broker.env())
        .env("DATABASE_URL", &s.h.db.url)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .env_remove("KOLLUS_API_TOKEN");
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("running kollus-catalog");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "the token was printed:\n{stdout}\n{stderr}"
    );
    (out, stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_from_the_command_line_then_a_refused_token() {
    let s = Stack::new(false).await;
    s.fake.add_channel("ch000001", "Math");
    s.fake.add_video(video("u1", 1, &[("ch000001", "m1")]));
    s.fake.add_video(video("u2", 2, &[]));
    let dir = std::env::temp_dir().join(format!("kollus-catalog-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    let (out, stdout, stderr) = run(&s, &token_file, &["backfill"]).await;
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("backfill: 2 uploads in 1 channels published as snapshots (3 requests"),
        "{stdout}"
    );
    assert!(
        stderr.contains("backfill: 3/3 requests") && stderr.contains("(done)"),
        "progress on the terminal: {stderr}"
    );
    assert_eq!(s.published(), 2);

    s.fake.reissue_token("a-newer-token");
    let (out, stdout, stderr) = run(&s, &token_file, &["sweep"]).await;
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("a new token invalidates the old one"),
        "{stderr}"
    );
    assert_eq!(s.published(), 2, "nothing more published");
    std::fs::remove_dir_all(&dir).ok();
}
