//! Settings as an operator meets them: secrets never printed (`--help`, refusals), and settings
//! that cannot work refused at start with status 2 and the setting named.

use std::process::{Command, Output};

use crate::stack::binary;

const SECRETS: &[(&str, &str)] = &[
    ("CALLBACK_SECRET", "callback-secret-value-0123"),
    ("PLAY_CALLBACK_SECRET", "play-callback-secret-value-0123"),
    ("LMS_CALLBACK_SECRET", "lms-callback-secret-value-0123"),
    ("PLAYER_BINDING_KEY", "player-binding-key-value-0123"),
    ("KOLLUS_SECURITY_KEY", "security-key-value-0123"),
    ("TOKEN_API_KEYS", "app:api-key-value-0123456789"),
    (
        "DATABASE_URL",
        "postgres://kollus:db-password-value@127.0.0.1:1/kollus",
    ),
    ("KOLLUS_SERVICE_ACCOUNT_KEY", "service-account-value-0123"),
];

/// Runs `service` with `env` alone (token-api and history-worker also with their key files,
/// which no case here is about).
fn run(service: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let key_files = match service {
        "token-api" | "history-worker" => kollus_test_support::key_files().env(),
        _ => Vec::new(),
    };
    Command::new(binary(service))
        .args(args)
        .env_clear()
        .envs(key_files)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {service}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_never_prints_a_secret_from_the_environment() {
    for service in ["ingest", "token-api", "sync-worker", "history-worker"] {
        let help = run(service, &["--help"], SECRETS);
        assert!(help.status.success(), "{service} --help");
        let help = text(&help);
        for (name, value) in SECRETS {
            assert!(!help.contains(value), "{service} --help shows {name}");
        }
        assert!(help.contains("LISTEN_ADDR"), "{service}: a real help text");
    }
}

#[test]
fn a_refused_secret_is_named_never_shown() {
    // (service, its environment, the setting refused)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "token-api",
            &[
                ("TOKEN_API_KEYS", "app-api-key-value-without-a-colon"),
                ("KOLLUS_SECURITY_KEY", "k"),
                ("KOLLUS_CUSTOM_KEY", "c"),
            ],
            "TOKEN_API_KEYS",
        ),
        (
            "ingest",
            &[
                ("CALLBACK_SECRET", "short-secret"),
                ("LMS_CALLBACK_SECRET", "lms-callback-secret-value-0123"),
            ],
            "CALLBACK_SECRET",
        ),
        (
            "ingest",
            &[
                ("CALLBACK_SECRET", "callback-secret-value-0123"),
                ("LMS_CALLBACK_SECRET", "short-lms"),
            ],
            "LMS_CALLBACK_SECRET",
        ),
    ];
    for (service, env, name) in cases {
        let out = run(service, &[], env);
        assert_eq!(out.status.code(), Some(2), "{service}: {}", text(&out));
        let said = text(&out);
        assert!(said.contains(name), "{service} names {name}: {said}");
        let (_, refused) = env.iter().find(|(n, _)| n == name).unwrap();
        assert!(
            !said.contains(refused),
            "{service} printed the value: {said}"
        );
    }
}

#[test]
fn settings_that_cannot_work_stop_the_start_with_the_setting_named() {
    let base = [
        ("TOKEN_API_KEYS", "app:api-key-value-0123456789"),
        ("KOLLUS_SECURITY_KEY", "security-key-value-0123"),
        ("KOLLUS_CUSTOM_KEY", "custom"),
    ];
    for (extra, named) in [
        (("TOKEN_MAX_MEDIA", "0"), "TOKEN_MAX_MEDIA"),
        (
            ("TOKEN_DEFAULT_EXPIRES_IN", "90000"),
            "TOKEN_MAX_EXPIRES_IN",
        ),
    ] {
        let mut env = base.to_vec();
        env.push(extra);
        let out = run("token-api", &[], &env);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(named), "{}", text(&out));
    }
}

#[test]
fn one_value_for_two_callback_secrets_or_the_old_single_secret_stops_the_start() {
    const SHARED: &str = "one-value-for-two-secrets-0123";
    let out = run(
        "ingest",
        &[],
        &[("CALLBACK_SECRET", SHARED), ("LMS_CALLBACK_SECRET", SHARED)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("CALLBACK_SECRET and LMS_CALLBACK_SECRET"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(SHARED), "never the value");
    // An LMS secret is required: the URL every viewer holds needs its own.
    let out = run("ingest", &[], &[("CALLBACK_SECRET", SHARED)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("LMS_CALLBACK_SECRET"), "{}", text(&out));
    // token-api given only the platform secret (a deployment from before the split): its play
    // and DRM callbacks would silently be off, and Kollus would refuse every play.
    let token_api = [
        ("TOKEN_API_KEYS", "app:api-key-value-0123456789"),
        ("KOLLUS_SECURITY_KEY", "security-key-value-0123"),
        ("KOLLUS_CUSTOM_KEY", "custom"),
        ("CALLBACK_SECRET", SHARED),
    ];
    let out = run("token-api", &[], &token_api);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("PLAY_CALLBACK_SECRET"),
        "{}",
        text(&out)
    );
    let mut same = token_api.to_vec();
    same.push(("PLAY_CALLBACK_SECRET", SHARED));
    let out = run("token-api", &[], &same);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("same value"), "{}", text(&out));
    assert!(!text(&out).contains(SHARED), "never the value");
}

#[test]
fn secrets_may_come_from_files_and_healthcheck_probes_healthz() {
    let dir = std::env::temp_dir().join(format!("kollus-e2e-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("callback_secret");
    std::fs::write(&file, "short\n").unwrap();
    // The file's content is used: too short, refused, named by its variable, never shown.
    let out = run(
        "ingest",
        &[],
        &[
            ("CALLBACK_SECRET_FILE", file.to_str().unwrap()),
            ("LMS_CALLBACK_SECRET", "lms-callback-secret-value-0123"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("CALLBACK_SECRET"));
    let out = run(
        "ingest",
        &[],
        &[(
            "CALLBACK_SECRET_FILE",
            dir.join("missing").to_str().unwrap(),
        )],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("CALLBACK_SECRET_FILE"),
        "{}",
        text(&out)
    );
    // Nothing listens on this port: the probe fails.
    let port = kollus_test_support::free_port();
    let out = run(
        "sync-worker",
        &["healthcheck"],
        &[("LISTEN_ADDR", &format!("0.0.0.0:{port}"))],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[tokio::test]
async fn failed_authentication_is_logged_rate_limited_without_the_presented_value() {
    let port = kollus_test_support::free_port();
    let spool = std::env::temp_dir().join(format!("kollus-e2e-authlog-{port}"));
    let mut child = Command::new(binary("ingest"))
        .env_clear()
        .envs([
            ("CALLBACK_SECRET", "the-right-callback-secret"),
            ("LMS_CALLBACK_SECRET", "the-right-lms-callback-secret"),
            ("LISTEN_ADDR", &format!("127.0.0.1:{port}")),
            // No broker: ingest starts anyway (it would spool).
            ("KAFKA_BROKERS", "127.0.0.1:1"),
            ("INGEST_SPOOL_DIR", spool.to_str().unwrap()),
            ("LOG_FORMAT", "json"),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/kollus/lms?secret=presented-wrong-value");
    kollus_test_support::eventually("ingest to listen", crate::stack::SLACK, || async {
        http.post(&url).send().await.ok().map(|_| ())
    })
    .await;
    let started = std::time::Instant::now();
    for _ in 0..50 {
        let res = http.post(&url).body("x=1").send().await.unwrap();
        assert_eq!(res.status(), 401);
    }
    // The limit is a line per second of the clock: the 50 refusals span at most this many of
    // its seconds (and the poll above may have been refused in the second before), however
    // slowly a loaded machine answered them.
    let seconds = started.elapsed().as_secs() + 3;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authentication failed"))
        .collect();
    assert!(!lines.is_empty(), "failed authentication is logged: {log}");
    assert!(
        lines.len() as u64 <= seconds,
        "at most a line a second: {} lines in {seconds} seconds",
        lines.len()
    );
    assert!(lines
        .iter()
        .all(|l| l.contains("\"level\":\"WARN\"") && l.contains("\"route\":\"lms\"")));
    assert!(
        lines.iter().all(|l| l.contains("127.0.0.1")),
        "the source is named"
    );
    assert!(
        !log.contains("presented-wrong-value"),
        "never the presented value"
    );
    assert!(!log.contains("the-right-callback-secret"));
    assert!(!log.contains("the-right-lms-callback-secret"));
    let _ = std::fs::remove_dir_all(&spool);
}
