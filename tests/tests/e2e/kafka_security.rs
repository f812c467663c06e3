//! The Kafka connection secured, as production runs it: a broker of this file's own with a
//! `SASL_SSL` listener (SCRAM-SHA-512 users, a certificate from a CA the test made), and every
//! service, `kollus-archive` and `kollus-catalog` connecting over it with
//! `KAFKA_SECURITY_PROTOCOL=sasl_ssl`. A wrong password and a CA the client does not trust are
//! clear errors in the log and a service that is not ready; the password is in no log line.
//!
//! One broker serves every test of this file (started by the first that asks: a JVM start is
//! seconds), stopped by `scripts/kafka.sh --owner` when the test process is gone.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kollus_test_support::kollus_api::video;
use kollus_test_support::tls::TestCa;
use kollus_test_support::{broker_script, eventually, fixture, free_port, FakeKollusApi, TestDb};

use crate::stack::{command, CALLBACK_SECRET, LMS_CALLBACK_SECRET, PLAYER_BINDING_KEY, SLACK};

/// The broker's SCRAM user and its password: distinctive, so a log line holding it is found.
const USER: &str = "kollus-e2e";
const PASSWORD: &str = "sasl-pw-7Hq2vX9kLm4e";

/// The broker of this file: PLAINTEXT on one port (the controller and inter-broker listener),
/// SASL_SSL on another.
struct SecureBroker {
    sasl_addr: String,
    ca: TestCa,
    /// A CA that signed nothing of this broker's: a client trusting only it must refuse.
    other_ca: TestCa,
    password_file: PathBuf,
    _script: Mutex<Child>,
}

fn secure_broker() -> &'static SecureBroker {
    static BROKER: OnceLock<SecureBroker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let started = Instant::now();
        let ca = TestCa::new();
        let other_ca = TestCa::new();
        std::fs::write(ca.path("users"), format!("{USER} {PASSWORD}\n")).expect("users file");
        let password_file = ca.path("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
        let (port, sasl_port, controller) = (free_port(), free_port(), free_port());
        let mut child = Command::new(broker_script())
            .args([
                "run",
                &port.to_string(),
                "--controller-port",
                &controller.to_string(),
            ])
            .args(["--sasl-ssl", &sasl_port.to_string()])
            .arg(&ca.dir)
            .args(["--owner", &std::process::id().to_string()])
            .env(
                "KAFKA_JVM_OPTS",
                std::env::var("KAFKA_JVM_OPTS")
                    .unwrap_or_else(|_| "-XX:TieredStopAtLevel=1".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting scripts/kafka.sh");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut said = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line == "ready" => break,
                Some(Ok(line)) => said.push(line),
                _ => panic!("the SASL_SSL broker did not start:\n{}", said.join("\n")),
            }
        }
        // The script keeps logging (a stop, say): drained so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        eprintln!(
            "kafka_security: broker with a SASL_SSL listener up in {:.1} s (CAs made, JVM started)",
            started.elapsed().as_secs_f64()
        );
        SecureBroker {
            sasl_addr: format!("127.0.0.1:{sasl_port}"),
            ca,
            other_ca,
            password_file,
            _script: Mutex::new(child),
        }
    })
}

/// The environment of a service connecting over SASL_SSL, with topics and groups named for one
/// test (`ns`). The password comes from a file (`KAFKA_SASL_PASSWORD_FILE`), as Compose secrets
/// give it; the protocol and mechanism in the case an operator might write them.
fn secure_env(b: &SecureBroker, ns: &str) -> Vec<(String, String)> {
    [
        ("KAFKA_BROKERS", b.sasl_addr.clone()),
        ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL".into()),
        ("KAFKA_SASL_MECHANISM", "scram-sha-512".into()),
        ("KAFKA_SASL_USERNAME", USER.into()),
        (
            "KAFKA_SASL_PASSWORD_FILE",
            b.password_file.display().to_string(),
        ),
        (
            "KAFKA_SSL_CA_LOCATION",
            b.ca.ca_cert().display().to_string(),
        ),
        ("KAFKA_CONTENT_TOPIC", format!("{ns}.content")),
        ("KAFKA_PLAYBACK_TOPIC", format!("{ns}.playback")),
        ("KAFKA_DEADLETTER_TOPIC", format!("{ns}.deadletter")),
        ("KAFKA_TOPIC_PARTITIONS", "1".into()),
        ("ARCHIVE_GROUP_ID", format!("{ns}.archive")),
        ("LOG_FORMAT", "text".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn namespace() -> String {
    format!("sec{}", uuid_like())
}

fn uuid_like() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

/// Every line a process wrote (stdout and stderr), echoed to the test's stderr as it comes.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn capture(&self, name: &'static str, child: &mut Child) {
        let out = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let err = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for stream in [out, err].into_iter().flatten() {
            let lines = self.0.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn find(&self, pattern: &str) -> Option<String> {
        self.lines().into_iter().find(|l| l.contains(pattern))
    }

    /// The password is in no line, nor a panic.
    fn assert_clean(&self, secrets: &[&str]) {
        for line in self.lines() {
            for s in secrets {
                assert!(
                    !line.contains(s),
                    "a log line shows the SASL password: {line}"
                );
            }
            assert!(!line.contains("panicked"), "a panic: {line}");
        }
    }
}

/// A service process, killed when dropped.
struct Service {
    name: &'static str,
    child: Child,
    base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, env: &[(String, String)], log: &Log) -> Service {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = command(name)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("LISTEN_ADDR", &addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    log.capture(name, &mut child);
    Service {
        name,
        child,
        base: format!("http://{addr}"),
    }
}

/// The status `/readyz` answers now (0: no answer).
async fn readyz(http: &reqwest::Client, service: &Service) -> u16 {
    http.get(format!("{}/readyz", service.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn wait_ready(http: &reqwest::Client, service: &mut Service) {
    let what = format!("{} ready over SASL_SSL", service.name);
    let url = format!("{}/readyz", service.base);
    let (name, child) = (service.name, &mut service.child);
    eventually(&what, SLACK, || {
        let exited = child.try_wait().ok().flatten();
        assert!(exited.is_none(), "{name} exited: {exited:?}");
        let (http, url) = (http.clone(), url.clone());
        async move {
            let res = http.get(url).timeout(Duration::from_secs(2)).send().await;
            res.ok()?.status().is_success().then_some(())
        }
    })
    .await;
}

/// Runs a command-line tool to completion with `env`; its output (stdout, stderr) and status.
fn run_tool(name: &'static str, args: &[&str], env: &[(String, String)], log: &Log) -> String {
    let out = command(name)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    log.0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(stdout.lines().chain(stderr.lines()).map(str::to_owned));
    assert!(
        out.status.success(),
        "{name} {args:?} over SASL_SSL: {}\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

fn ingest_env() -> Vec<(String, String)> {
    let spool = std::env::temp_dir().join(format!("kollus-sec-spool-{}", uuid_like()));
    [
        ("CALLBACK_SECRET", CALLBACK_SECRET.to_owned()),
        ("LMS_CALLBACK_SECRET", LMS_CALLBACK_SECRET.to_owned()),
        ("PLAYER_BINDING_KEY", PLAYER_BINDING_KEY.to_owned()),
        ("INGEST_SPOOL_DIR", spool.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_the_archive_and_the_catalog_work_over_sasl_ssl() {
    let started = Instant::now();
    let broker = tokio::task::spawn_blocking(secure_broker).await.unwrap();
    let db = TestDb::new().await;
    let ns = namespace();
    let mut env = secure_env(broker, &ns);
    env.push(("DATABASE_URL".into(), db.url.clone()));
    let log = Log::default();
    let http = reqwest::Client::new();

    let with = |extra: Vec<(String, String)>| [env.clone(), extra].concat();
    let mut services = vec![
        spawn("ingest", &with(ingest_env()), &log),
        spawn(
            "sync-worker",
            &with(vec![("KAFKA_GROUP_ID".into(), format!("{ns}.sync"))]),
            &log,
        ),
        spawn(
            "history-worker",
            &with(
                [("KAFKA_GROUP_ID".into(), format!("{ns}.history"))]
                    .into_iter()
                    .chain(
                        kollus_test_support::key_files()
                            .env()
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v)),
                    )
                    .collect(),
            ),
            &log,
        ),
    ];
    for s in &mut services {
        wait_ready(&http, s).await;
    }

    // A callback through ingest reaches both workers' tables.
    let ingest = services[0].base.clone();
    for (route, secret, file) in [
        ("lms", LMS_CALLBACK_SECRET, "lms-seed.form"),
        ("channel", CALLBACK_SECRET, "channel-join.form"),
    ] {
        let res = http
            .post(format!("{ingest}/kollus/{route}?secret={secret}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(fixture(file))
            .send()
            .await
            .expect("posting a callback");
        assert_eq!(res.status(), 200, "{file} through ingest over SASL_SSL");
    }
    let client = db.client().await;
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .ok()
                .map(|r| r.get::<_, i64>(0))
                .filter(|n| *n > 0)
        }
    };
    eventually("history-worker applied the LMS report", SLACK, || {
        count("SELECT count(*) FROM watch_sessions WHERE client_user_id = '181353'")
    })
    .await;
    eventually("sync-worker applied the channel join", SLACK, || {
        count("SELECT count(*) FROM media_playability WHERE media_content_key = 'vnCVPVyV'")
    })
    .await;

    // kollus-catalog publishes a backfill; sync-worker applies it.
    let fake = FakeKollusApi::start("sec-api-token");
    fake.add_channel("ch-main", "Main");
    fake.add_video(video("20250101-old00001", 2, &[("ch-main", "oldmedia1")]));
    let catalog_env = [
        env.clone(),
        vec![
            ("KOLLUS_API_URL".into(), fake.url.clone()),
            ("KOLLUS_API_TOKEN".into(), "sec-api-token".into()),
            ("KOLLUS_API_RATE".into(), "20".into()),
            ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ],
    ]
    .concat();
    let out = {
        let (env, log) = (catalog_env.clone(), log.clone());
        tokio::task::spawn_blocking(move || run_tool("kollus-catalog", &["backfill"], &env, &log))
            .await
            .unwrap()
    };
    assert!(out.contains("backfill: 1 uploads in 1 channels"), "{out}");
    eventually("the backfilled video in the catalog", SLACK, || {
        count("SELECT count(*) FROM media_playability WHERE media_content_key = 'oldmedia1'")
    })
    .await;

    // kollus-archive: dump, verify, and restore into topics of another name.
    let dir = std::env::temp_dir().join(format!("kollus-sec-archive-{}", uuid_like()));
    let dir_s = dir.display().to_string();
    let (dump_env, log2) = (env.clone(), log.clone());
    let restore_env = secure_env(broker, &format!("{ns}r"));
    let dir2 = dir_s.clone();
    let (dumped, verified, restored) = tokio::task::spawn_blocking(move || {
        let d = run_tool(
            "kollus-archive",
            &["dump", "--until-end", "--to", &dir2],
            &dump_env,
            &log2,
        );
        let v = run_tool(
            "kollus-archive",
            &["verify", "--from", &dir2],
            &dump_env,
            &log2,
        );
        let r = run_tool(
            "kollus-archive",
            &["restore", "--from", &dir2],
            &restore_env,
            &log2,
        );
        (d, v, r)
    })
    .await
    .unwrap();
    // Two callbacks and the backfill's records (an upload, its join).
    let archived: u64 = dumped
        .split("archived ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in the dump's output: {dumped}"));
    assert!(archived >= 3, "{dumped}");
    assert!(verified.ends_with("ok\n"), "{verified}");
    // verify read the topics too (it says "not compared" and still ends ok when it cannot).
    assert_eq!(
        verified.matches("COVERED ").count(),
        4,
        "verify compared each topic's partition over SASL_SSL: {verified}"
    );
    // Every archived record restored, or skipped as a repeat of one restored.
    let number = |text: &str, before: &str, after: &str| -> u64 {
        text.split(before)
            .nth(1)
            .and_then(|r| r.split(after).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let (produced, repeats) = (
        number(&restored, "restored ", " records"),
        number(&restored, "(", " repeats skipped"),
    );
    assert!(produced > 0, "{restored}");
    assert_eq!(produced + repeats, archived, "{dumped}\n{restored}");
    let _ = std::fs::remove_dir_all(&dir);

    for s in &mut services {
        assert!(
            s.child.try_wait().ok().flatten().is_none(),
            "{} exited",
            s.name
        );
    }
    drop(services);
    log.assert_clean(&[PASSWORD]);
    eprintln!(
        "kafka_security: every service, the catalog and the archive over SASL_SSL in {:.1} s \
         (the broker's start included when this test started it)",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_untrusted_ca_is_a_clear_error_and_not_ready() {
    let started = Instant::now();
    let broker = tokio::task::spawn_blocking(secure_broker).await.unwrap();
    let db = TestDb::new().await;
    let ns = namespace();
    let http = reqwest::Client::new();
    let wrong = "wrong-sasl-pw-Zr81";

    // A wrong password, given directly (not from the file).
    let mut env: Vec<(String, String)> = secure_env(broker, &ns)
        .into_iter()
        .filter(|(k, _)| k != "KAFKA_SASL_PASSWORD_FILE")
        .collect();
    env.push(("KAFKA_SASL_PASSWORD".into(), wrong.into()));
    env.push(("DATABASE_URL".into(), db.url.clone()));
    env.push(("KAFKA_GROUP_ID".into(), format!("{ns}.sync")));
    let auth_log = Log::default();
    let mut worker = spawn("sync-worker", &env, &auth_log);

    // A client trusting another CA, with the right password.
    let mut env = secure_env(broker, &ns);
    env.retain(|(k, _)| k != "KAFKA_SSL_CA_LOCATION");
    env.push((
        "KAFKA_SSL_CA_LOCATION".into(),
        broker.other_ca.ca_cert().display().to_string(),
    ));
    env.push(("DATABASE_URL".into(), db.url.clone()));
    env.extend(ingest_env());
    let tls_log = Log::default();
    let mut ingest = spawn("ingest", &env, &tls_log);

    let auth_line = eventually("sync-worker logs the SASL refusal", SLACK, || async {
        auth_log.find("Authentication failed")
    })
    .await;
    assert!(auth_line.contains("SCRAM-SHA-512"), "{auth_line}");
    let tls_line = eventually("ingest logs the TLS failure", SLACK, || async {
        tls_log.find("SSL handshake failed")
    })
    .await;
    assert!(tls_line.contains("certificate verify failed"), "{tls_line}");

    // The worker cannot consume: it stops at start with that reason (status 1, no panic).
    let status = eventually("sync-worker exits", SLACK, || {
        let status = worker.child.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    assert_eq!(status.code(), Some(1), "sync-worker: {status}");
    let reason = auth_log
        .find("Kafka connection failed")
        .unwrap_or_else(|| panic!("no reason given:\n{}", auth_log.lines().join("\n")));
    assert!(reason.contains("Authentication failed"), "{reason}");
    // Ingest serves without Kafka: a callback is acknowledged into its spool (200 within its
    // deadline), after which it says it is not ready (Kafka does not take its records).
    let status = ingest.child.try_wait().ok().flatten();
    assert!(status.is_none(), "ingest exited ({status:?})");
    let res = http
        .post(format!(
            "{}/kollus/lms?secret={LMS_CALLBACK_SECRET}",
            ingest.base
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(fixture("lms-seed.form"))
        .send()
        .await
        .expect("posting a callback");
    assert_eq!(res.status(), 200, "spooled");
    eventually("ingest's /readyz says 503", SLACK, || async {
        (readyz(&http, &ingest).await == 503).then_some(())
    })
    .await;
    auth_log.assert_clean(&[PASSWORD, wrong]);
    tls_log.assert_clean(&[PASSWORD, wrong]);
    eprintln!(
        "kafka_security: wrong password and untrusted CA seen in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The settings as an operator meets them, without a broker: a SASL setting missing or
/// misspelt stops the service at start naming it; the password is never shown (`--help` with
/// it in the environment, a refusal, two sources of it).
#[test]
fn security_settings_are_checked_at_start_and_the_password_never_shown() {
    let password = "sasl-pw-in-env-Qw7Zk2";
    let run = |binary: &str, args: &[&str], env: &[(&str, &str)]| {
        // Bounded: a setting wrongly accepted would leave the service running.
        let out = Command::new("timeout")
            .arg("60")
            .arg(crate::stack::binary(binary))
            .args(args)
            .envs(ingest_env())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {binary}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains(password),
            "{binary} {args:?} shows the password: {text}"
        );
        assert!(!text.contains("panicked"), "{binary} {args:?}: {text}");
        (out.status, text)
    };
    let env = [("KAFKA_SASL_PASSWORD", password)];
    for (binary, args) in [
        ("ingest", &["--help"][..]),
        ("sync-worker", &["--help"]),
        ("history-worker", &["--help"]),
        ("kollus-archive", &["dump", "--help"]),
        ("kollus-catalog", &["backfill", "--help"]),
    ] {
        let (status, help) = run(binary, args, &env);
        assert!(status.success(), "{binary} --help: {help}");
        assert!(help.contains("KAFKA_SECURITY_PROTOCOL"), "{binary}: {help}");
        assert!(help.contains("KAFKA_SASL_PASSWORD"), "{binary}: {help}");
    }
    let sasl = [
        ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
        ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        ("KAFKA_SASL_USERNAME", USER),
    ];
    // (the environment, what the refusal must name)
    let dir = std::env::temp_dir().join(format!("kollus-sec-pw-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let file = file.display().to_string();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            sasl.to_vec(),
            "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            [&sasl[..2], &[("KAFKA_SASL_PASSWORD", password)]].concat(),
            "KAFKA_SASL_USERNAME",
        ),
        (
            vec![("KAFKA_SECURITY_PROTOCOL", "tls")],
            "KAFKA_SECURITY_PROTOCOL",
        ),
        (
            vec![("KAFKA_SASL_PASSWORD", password)],
            "KAFKA_SASL_PASSWORD is set but KAFKA_SECURITY_PROTOCOL=plaintext",
        ),
        (
            [
                &sasl[..],
                &[
                    ("KAFKA_SASL_PASSWORD", password),
                    ("KAFKA_SASL_PASSWORD_FILE", &file),
                ],
            ]
            .concat(),
            "KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set",
        ),
    ];
    for (env, want) in cases {
        let (status, text) = run("ingest", &[], &env);
        assert!(!status.success(), "ingest started with {env:?}");
        assert!(text.contains(want), "{env:?}: wanted {want:?} in: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
