//! The `token-api` binary itself, as an operator starts it: keys from `TOKEN_API_KEYS_FILE`,
//! a WARN naming each key given without scopes (never a key), and `kill -HUP` revoking a key.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kollus_test_support::{eventually, TestDb};

use crate::helpers::*;

const LEGACY: &str = "legacy-key-0123456789abcdef";
const SCOPED: &str = "scoped-key-0123456789abcdef";
const FRESH: &str = "fresh-key-0123456789abcdef";

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Log lines until one contains `what` (all lines read so far are kept in `seen`).
    fn until(&mut self, what: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no {what:?} in {:#?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(what) {
                return line;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_binary_warns_about_unscoped_keys_and_sighup_revokes_a_key() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token_api_keys");
    std::fs::write(&file, format!("legacy:{LEGACY},scoped[read]:{SCOPED}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_token-api"))
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("KOLLUS_SECURITY_KEY", SECURITY_KEY)
        .envs(kollus_test_support::key_files().env())
        .env("KOLLUS_CUSTOM_KEY", CUSTOM_KEY)
        .env("TOKEN_API_KEYS_FILE", &file)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut app = Running {
        child,
        lines,
        seen: Vec::new(),
    };
    let listening = app.until("token-api listening");
    let warned: Vec<&String> = app.seen.iter().filter(|l| l.contains("WARN")).collect();
    assert!(
        warned
            .iter()
            .any(|l| l.contains("\"legacy\" has no scopes")),
        "{warned:#?}"
    );
    assert!(
        !warned
            .iter()
            .any(|l| l.contains("\"scoped\" has no scopes")),
        "{warned:#?}"
    );
    let port: u16 = listening
        .split("port=")
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listening}"));
    let client = reqwest::Client::new();
    let status = |key: &'static str| {
        let req = client
            .get(format!("http://127.0.0.1:{port}/v1/media/m1"))
            .bearer_auth(key);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        status(LEGACY).await,
        404,
        "unscoped: every scope but console"
    );
    assert_eq!(status(SCOPED).await, 404);

    std::fs::write(&file, format!("scoped[read]:{FRESH}\n")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &app.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually(
        "the old keys are refused",
        Duration::from_secs(10),
        || async { (status(LEGACY).await == 401 && status(SCOPED).await == 401).then_some(()) },
    )
    .await;
    assert_eq!(status(FRESH).await, 404);
    app.until("TOKEN_API_KEYS_FILE reloaded");
    for line in &app.seen {
        for key in [LEGACY, SCOPED, FRESH] {
            assert!(!line.contains(key), "a key in the log: {line}");
        }
    }
}

/// Starts the binary with its keys from `file` and waits until it listens; its port.
fn start_with_keys_file(db_url: &str, file: &std::path::Path) -> (Running, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_token-api"))
        .env_clear()
        .env("DATABASE_URL", db_url)
        .env("KOLLUS_SECURITY_KEY", SECURITY_KEY)
        .envs(kollus_test_support::key_files().env())
        .env("KOLLUS_CUSTOM_KEY", CUSTOM_KEY)
        .env("TOKEN_API_KEYS_FILE", file)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut app = Running {
        child,
        lines,
        seen: Vec::new(),
    };
    let listening = app.until("token-api listening");
    let port = listening
        .split("port=")
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listening}"));
    (app, port)
}

/// A keys file may hold one entry per line (CRLF and blank lines included), besides commas.
#[tokio::test]
async fn a_keys_file_may_hold_one_key_per_line() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token_api_keys");
    std::fs::write(
        &file,
        format!("legacy[read]:{LEGACY}\r\n\nscoped[read]:{SCOPED},\nfresh[tokens]:{FRESH}\n"),
    )
    .unwrap();
    let (app, port) = start_with_keys_file(&db.url, &file);
    let client = reqwest::Client::new();
    let status = |key: &'static str| {
        let req = client
            .get(format!("http://127.0.0.1:{port}/v1/media/m1"))
            .bearer_auth(key);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(LEGACY).await, 404);
    assert_eq!(status(SCOPED).await, 404);
    assert_eq!(status(FRESH).await, 403, "tokens only");
    assert_eq!(status("not-a-key-0123456789abcdef").await, 401);
    drop(app);
}

/// Keys that are ambiguous or would be mangled stop the start (status 2) naming the entry,
/// never showing a key: one key under two names, whitespace or a control character in a key
/// or a name. From `TOKEN_API_KEYS` and from `TOKEN_API_KEYS_FILE` alike.
#[test]
fn duplicate_keys_and_blanks_or_control_characters_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token_api_keys");
    for (keys, named, from_file) in [
        (
            format!("shop[tokens]:{LEGACY},billing[entitlements]:{LEGACY}"),
            &["\"shop\"", "\"billing\"", "same key"][..],
            false,
        ),
        (
            format!("shop[tokens]:{LEGACY}\nbilling[entitlements]:{LEGACY}\n"),
            &["\"shop\"", "\"billing\"", "same key"][..],
            true,
        ),
        (
            "shop[tokens]:legacy-key 0123456789abcdef".to_owned(),
            &["\"shop\"", "whitespace"][..],
            false,
        ),
        (
            "shop[tokens]:legacy-key\u{1}0123456789abcdef".to_owned(),
            &["\"shop\"", "control"][..],
            true,
        ),
        (
            "shop[tokens]:legacy-key\t0123456789abcdef".to_owned(),
            &["\"shop\"", "whitespace"][..],
            true,
        ),
        (
            "my shop[tokens]:legacy-key-0123456789abcdef".to_owned(),
            &["\"my shop\"", "name"][..],
            false,
        ),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_token-api"));
        command
            .env_clear()
            .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
            .env("KOLLUS_SECURITY_KEY", SECURITY_KEY)
            .envs(kollus_test_support::key_files().env())
            .env("KOLLUS_CUSTOM_KEY", CUSTOM_KEY);
        if from_file {
            std::fs::write(&file, &keys).unwrap();
            command.env("TOKEN_API_KEYS_FILE", &file);
        } else {
            command.env("TOKEN_API_KEYS", &keys);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{keys:?}: {stderr}");
        assert!(stderr.contains("TOKEN_API_KEYS"), "{stderr}");
        for what in named {
            assert!(stderr.contains(what), "{keys:?}: no {what} in {stderr}");
        }
        for part in ["legacy-key", "0123456789abcdef"] {
            assert!(!stderr.contains(part), "a key shown: {stderr}");
        }
    }
}
