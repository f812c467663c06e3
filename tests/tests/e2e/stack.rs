//! The whole pipeline as processes, for one test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kollus_test_support::{eventually, free_port, Broker, TestDb};

pub const CALLBACK_SECRET: &str = "e2e-callback-secret";
pub const SECURITY_KEY: &str = "e2e-security-key-0123456789";
pub const CUSTOM_KEY: &str = "e2e-custom-key";
pub const API_KEY: &str = "e2e-api-key-0123456789abcdef";
/// A key with the `console` scope only (`support[console]:...` in `TOKEN_API_KEYS`).
pub const CONSOLE_KEY: &str = "e2e-console-key-0123456789";
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
        applied_reports(&self.broker.addr).await
    }

    /// The four services against `broker` (e.g. one behind a fault proxy).
    pub async fn start_with(broker: Broker) -> Self {
        let db = TestDb::new().await;
        let ports = [free_port(), free_port(), free_port(), free_port()];
        // A spool of this test's own, never the working directory.
        let spool_dir = std::env::temp_dir().join(format!("kollus-e2e-spool-{}", ports[0]));
        let addr = |p: u16| format!("127.0.0.1:{p}");
        let common_env = [
            ("KAFKA_BROKERS", broker.addr.clone()),
            ("KAFKA_TOPIC_PARTITIONS", "3".to_owned()),
            ("DATABASE_URL", db.url.clone()),
            ("LOG_FORMAT", "text".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        let spawn = |name: &'static str, env: &[(&str, String)]| {
            let child = Command::new(binary(name))
                .envs(common_env.iter().map(|(k, v)| (*k, v.as_str())))
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e}"));
            Process { name, child }
        };
        let processes = vec![
            spawn(
                "ingest",
                &[
                    ("LISTEN_ADDR", addr(ports[0])),
                    ("CALLBACK_SECRET", CALLBACK_SECRET.into()),
                    ("INGEST_SPOOL_DIR", spool_dir.display().to_string()),
                    ("KOLLUS_SERVICE_ACCOUNT_KEY", SERVICE_ACCOUNT_KEY.into()),
                ],
            ),
            spawn(
                "token-api",
                &[
                    ("LISTEN_ADDR", addr(ports[1])),
                    ("KOLLUS_SECURITY_KEY", SECURITY_KEY.into()),
                    ("KOLLUS_CUSTOM_KEY", CUSTOM_KEY.into()),
                    (
                        "TOKEN_API_KEYS",
                        format!("e2e:{API_KEY},support[console]:{CONSOLE_KEY}"),
                    ),
                    ("CONSOLE_INSECURE_COOKIE", "1".into()),
                    ("CALLBACK_SECRET", CALLBACK_SECRET.into()),
                ],
            ),
            spawn("sync-worker", &[("LISTEN_ADDR", addr(ports[2]))]),
            spawn("history-worker", &[("LISTEN_ADDR", addr(ports[3]))]),
        ];
        let stack = Self {
            processes,
            db,
            broker,
            ingest: format!("http://{}", addr(ports[0])),
            token_api: format!("http://{}", addr(ports[1])),
            sync_admin: format!("http://{}", addr(ports[2])),
            history_admin: format!("http://{}", addr(ports[3])),
            http: reqwest::Client::new(),
        };
        for base in [
            &stack.ingest,
            &stack.token_api,
            &stack.sync_admin,
            &stack.history_admin,
        ] {
            stack.wait_ready(base).await;
        }
        stack
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

    async fn wait_ready(&self, base: &str) {
        let url = format!("{base}/readyz");
        eventually(
            &format!("{url} to answer 200"),
            Duration::from_secs(30),
            || async {
                let res = self.http.get(&url).send().await.ok()?;
                res.status().is_success().then_some(())
            },
        )
        .await;
    }

    pub async fn callback(&self, route: &str, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/kollus/{route}?secret={CALLBACK_SECRET}",
                self.ingest
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("posting a callback to ingest")
    }
}

/// [`Stack::applied_reports`] of the history-worker on `brokers`.
pub async fn applied_reports(brokers: &str) -> i64 {
    kollus_test_support::group::committed(brokers, "kollus-history-worker", "kollus.playback.v1")
        .await
}
