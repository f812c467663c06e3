//! The whole pipeline as processes, for one test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kollus_test_support::{eventually, free_port, Broker, TestDb};

/// The platform callbacks' secret (ingest's upload, transcoding, content, channel).
pub const CALLBACK_SECRET: &str = "e2e-callback-secret";
/// The play and DRM callbacks' secret (token-api).
pub const PLAY_CALLBACK_SECRET: &str = "e2e-play-callback-secret";
/// The LMS URL's secret (ingest's /kollus/lms): public.
pub const LMS_CALLBACK_SECRET: &str = "e2e-lms-callback-secret";

/// How long a timed assertion of these tests waits for what the services do asynchronously
/// (start, apply, scrape). Four cold binaries, a broker and PostgreSQL share two busy cores
/// here: a short deadline fails a correct pipeline that is merely slow. A deadline only bounds
/// how long a failure takes to show; a pass never waits it out.
pub const SLACK: Duration = Duration::from_secs(120);

/// The viewer binding's key, on ingest and token-api (`record`: marked, not refused).
pub const PLAYER_BINDING_KEY: &str = "e2e-player-binding-key";

/// The secret the Kollus console's URL for `route` carries.
pub fn secret_for(route: &str) -> &'static str {
    match route {
        "lms" => LMS_CALLBACK_SECRET,
        "play" | "drm" => PLAY_CALLBACK_SECRET,
        _ => CALLBACK_SECRET,
    }
}
pub const SECURITY_KEY: &str = "e2e-security-key-0123456789";
pub const CUSTOM_KEY: &str = "e2e-custom-key";
pub const API_KEY: &str = "e2e-api-key-0123456789abcdef";
/// A key with the `console` scope only (`support[console]:...` in `TOKEN_API_KEYS`).
pub const CONSOLE_KEY: &str = "e2e-console-key-0123456789";
/// A key of the `erase` scope alone (README "Erasing a user").
pub const ERASE_KEY: &str = "e2e-erase-key-0123456789";
/// The key `fixtures/lms-android-hash.form` was signed with (SPEC.md 4.2).
pub const SERVICE_ACCOUNT_KEY: &str = "fixture-service-account-key";

/// A service process, killed when dropped.
pub struct Process {
    pub name: &'static str,
    pub child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!(
                "{} had already exited ({status}): see its log above",
                self.name
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fields drop in order: the processes stop before their broker and database go away.
pub struct Stack {
    processes: Vec<Process>,
    pub db: TestDb,
    pub broker: Broker,
    pub ingest: String,
    pub token_api: String,
    pub sync_admin: String,
    pub history_admin: String,
    pub http: reqwest::Client,
}

/// The service `name` as a command, with the test's key files in its environment
/// (`SUBJECT_TAG_KEY_FILE`, `ARCHIVE_KEK_FILE`, `ACCESS_LOG_KEY_FILE`): every process of a test
/// tags and seals a subject alike. A case about a missing key file removes it with `env_remove`.
pub fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    command.envs(kollus_test_support::key_files().env());
    command
}

/// Where cargo put the binaries: next to this test's own `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the services first (`cargo build --workspace --bins`, as `make test` does)",
        path.display()
    );
    path
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(Broker::start().await).await
    }

    /// LMS reports history-worker has applied (or dead-lettered): its group's committed offsets
    /// on the playback topic. It commits only after the transaction that applied them.
    pub async fn applied_reports(&self) -> i64 {
        applied_reports(&self.broker).await
    }

    /// The four services against `broker` (e.g. one behind a fault proxy).
    pub async fn start_with(broker: Broker) -> Self {
        Self::start_with_env(broker, &[]).await
    }

    /// [`Stack::start_with`], with `extra` settings `(service, variable, value)` given after
    /// (so over) the stack's own.
    pub async fn start_with_env(broker: Broker, extra: &[(&str, &str, String)]) -> Self {
        let db = TestDb::new().await;
        // A spool of this test's own, never the working directory.
        let spool_dir = std::env::temp_dir().join(format!(
            "kollus-e2e-spool-{}-{}",
            std::process::id(),
            free_port()
        ));
        // Topics and groups of this stack's own: the broker may be shared.
        let mut common_env = broker.env();
        common_env.extend([
            ("DATABASE_URL", db.url.clone()),
            ("LOG_FORMAT", "text".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]);

        let services: [(&'static str, Vec<(&str, String)>); 4] = [
            (
                "ingest",
                vec![
                    ("CALLBACK_SECRET", CALLBACK_SECRET.into()),
                    ("LMS_CALLBACK_SECRET", LMS_CALLBACK_SECRET.into()),
                    ("PLAYER_BINDING_KEY", PLAYER_BINDING_KEY.into()),
                    ("INGEST_SPOOL_DIR", spool_dir.display().to_string()),
                    ("KOLLUS_SERVICE_ACCOUNT_KEY", SERVICE_ACCOUNT_KEY.into()),
                ],
            ),
            (
                "token-api",
                [
                    ("KOLLUS_SECURITY_KEY", SECURITY_KEY.into()),
                    ("KOLLUS_CUSTOM_KEY", CUSTOM_KEY.into()),
                    (
                        "TOKEN_API_KEYS",
                        format!(
                            "e2e:{API_KEY},support[console]:{CONSOLE_KEY},dpo[erase]:{ERASE_KEY}"
                        ),
                    ),
                    ("CONSOLE_INSECURE_COOKIE", "1".into()),
                    ("PLAY_CALLBACK_SECRET", PLAY_CALLBACK_SECRET.into()),
                    ("PLAYER_BINDING_KEY", PLAYER_BINDING_KEY.into()),
                ]
                .into(),
            ),
            (
                "sync-worker",
                vec![("KAFKA_GROUP_ID", broker.group("sync-worker"))],
            ),
            (
                "history-worker",
                // SUBJECT_TAG_KEY_FILE: token-api's, for the erasure barrier.
                [("KAFKA_GROUP_ID", broker.group("history-worker"))]
                    .into_iter()
                    .chain(kollus_test_support::key_files().env())
                    .collect(),
            ),
        ];
        let spawn = |name: &'static str, env: &[(&str, String)]| {
            let addr = format!("127.0.0.1:{}", free_port());
            let child = command(name)
                .envs(common_env.iter().map(|(k, v)| (*k, v.as_str())))
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .envs(
                    extra
                        .iter()
                        .filter(|(service, _, _)| *service == name)
                        .map(|(_, k, v)| (*k, v.as_str())),
                )
                .env("LISTEN_ADDR", &addr)
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e}"));
            (Process { name, child }, format!("http://{addr}"))
        };
        // All four start side by side; then each is waited for.
        let mut started: Vec<(Process, String)> = services
            .iter()
            .map(|(name, env)| spawn(name, env))
            .collect();
        let http = reqwest::Client::new();
        for ((name, env), (process, base)) in services.iter().zip(started.iter_mut()) {
            // A port found free can be taken before the service binds it (another test's pick):
            // the service then exits at start, and starts again on another port.
            for attempt in 1.. {
                match ready_or_exited(&http, base, &mut process.child).await {
                    Ok(()) => break,
                    Err(status) => {
                        assert!(
                            attempt < 5,
                            "{name} exited at start {attempt} times: {status}"
                        );
                        eprintln!("{name} exited at start ({status}; its port taken?): starting it on another port");
                        (*process, *base) = spawn(name, env);
                    }
                }
            }
        }
        let mut bases = started.iter().map(|(_, base)| base.clone());
        let mut next = || bases.next().expect("four services");
        Self {
            ingest: next(),
            token_api: next(),
            sync_admin: next(),
            history_admin: next(),
            processes: started.into_iter().map(|(p, _)| p).collect(),
            db,
            broker,
            http,
        }
    }

    /// Stops the service `name` as an operator would (SIGTERM: it leaves its consumer group and
    /// commits what it applied) and waits until it has exited.
    pub fn stop(&mut self, name: &str) {
        let at = self
            .processes
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} in the stack"));
        let mut process = self.processes.remove(at);
        let pid = process.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {name}");
        let status = process
            .child
            .wait()
            .expect("waiting for the service to exit");
        assert!(status.success(), "{name} exited with {status} on SIGTERM");
        // Reaped: its `Drop` has nothing left to kill or report.
        std::mem::forget(process);
    }

    pub async fn callback(&self, route: &str, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/kollus/{route}?secret={}",
                self.ingest,
                secret_for(route)
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("posting a callback to ingest")
    }
}

/// Waits until the service at `base` answers `/readyz` with 200 from its own socket (`Ok`), or
/// its process has exited (`Err` with how). Another test's service that took the port first may
/// answer too: only a port `child` itself listens on counts.
async fn ready_or_exited(
    http: &reqwest::Client,
    base: &str,
    child: &mut Child,
) -> Result<(), std::process::ExitStatus> {
    let url = format!("{base}/readyz");
    let port: u16 = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a base URL ends with its port");
    let pid = child.id();
    eventually(&format!("{url} to answer 200"), SLACK, || {
        let exited = child.try_wait().ok().flatten();
        let http = http.clone();
        let url = url.clone();
        async move {
            if let Some(status) = exited {
                return Some(Err(status));
            }
            if !listens_on(pid, port) {
                return None;
            }
            // Bounded: whatever else holds a taken port may never answer.
            let res = http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            res.status().is_success().then_some(Ok(()))
        }
    })
    .await
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`: the socket's inode from
/// `/proc/net/tcp` (state 0A, LISTEN) among the process's open files.
fn listens_on(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening = f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A");
            Some(format!("socket:[{}]", f.get(9)?)).filter(|_| listening)
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

/// [`Stack::applied_reports`] of the history-worker of a stack on `broker`.
pub async fn applied_reports(broker: &Broker) -> i64 {
    kollus_test_support::group::committed(
        &broker.addr,
        &broker.group("history-worker"),
        &broker.settings().playback_topic,
    )
    .await
}
