//! What operators watch, against a real Prometheus (Debian's package, started by
//! `scripts/prometheus.sh` as `make run` does) scraping the four real binaries: with traffic
//! flowing, every panel of every dashboard in `deploy/grafana/dashboards/` has data, and cutting
//! ingest's link to Kafka fires the spooling alert.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kollus_test_support::{eventually, fixture, free_port, workspace_root, Broker};
use serde_json::{json, Value};

use crate::stack::*;

/// Every panel query of every dashboard: (dashboard file, panel title, expression).
fn panel_queries() -> Vec<(String, String, String)> {
    let dir = workspace_root().join("deploy/grafana/dashboards");
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the dashboards directory") {
        let path = entry.unwrap().path();
        let dashboard: Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("dashboard JSON");
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                queries.push((
                    file.clone(),
                    panel["title"].as_str().unwrap().to_owned(),
                    target["expr"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    assert!(queries.len() >= 20, "the dashboards have their panels");
    queries
}

/// The project's rules with every `for:` set to 0s, so the live test sees an alert fire as soon
/// as its expression holds. (promtool's unit tests cover the durations.)
fn rules_without_delays(dir: &Path) -> String {
    let rules =
        std::fs::read_to_string(workspace_root().join("deploy/prometheus/rules/kollus.rules.yml"))
            .unwrap();
    let immediate: String = rules
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for: ") {
                format!("{}for: 0s", &l[..l.len() - l.trim_start().len()])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("rules.yml");
    std::fs::write(&path, immediate).unwrap();
    path.display().to_string()
}

struct Prometheus {
    _process: Process,
    base: String,
    http: reqwest::Client,
}

impl Prometheus {
    fn start(stack: &Stack, dir: &Path) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let host = |url: &str| url.trim_start_matches("http://").to_owned();
        let child = Command::new(workspace_root().join("scripts/prometheus.sh"))
            .arg("run")
            .arg(dir)
            .env("PROMETHEUS_ADDR", &addr)
            .env("INGEST", host(&stack.ingest))
            .env("TOKEN_API", host(&stack.token_api))
            .env("SYNC_WORKER", host(&stack.sync_admin))
            .env("HISTORY_WORKER", host(&stack.history_admin))
            .env("SCRAPE_INTERVAL", "1s")
            .env("RULES", rules_without_delays(dir))
            .stdin(Stdio::null())
            .spawn()
            .expect("starting scripts/prometheus.sh");
        Self {
            _process: Process {
                name: "prometheus",
                child,
            },
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .ok()?;
        let body: Value = res.json().await.ok()?;
        (body["status"] == "success").then_some(body["data"].clone())
    }

    /// How many series `expr` returns now.
    async fn series(&self, expr: &str) -> Option<usize> {
        let data = self.get("/api/v1/query", &[("query", expr)]).await?;
        Some(data["result"].as_array()?.len())
    }

    async fn firing(&self, alert: &str) -> bool {
        let Some(data) = self.get("/api/v1/alerts", &[]).await else {
            return false;
        };
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["labels"]["alertname"] == alert && a["state"] == "firing")
    }
}

/// A little of everything the dashboards show: callbacks (good, signed, refused), tokens and
/// reads (issued, refused, unauthorized).
async fn traffic(stack: &Stack) {
    for _ in 0..5 {
        for (route, body) in [
            ("lms", fixture("lms-seed.form")),
            ("lms", fixture("lms-android-hash.form")),
            ("channel", fixture("channel-join.form")),
            ("lms", b"userid=u1&pt=30".to_vec()),
        ] {
            let status = stack.callback(route, body).await.status();
            assert!(status == 200 || status == 400, "{route}: {status}");
        }
        for (key, body) in [
            (
                API_KEY,
                json!({"client_user_id": "u1", "media": [{"media_content_key": "vnCVPVyV"}]}),
            ),
            (API_KEY, json!({"client_user_id": "u1", "media": []})),
            ("wrong-key", json!({"client_user_id": "u1"})),
        ] {
            let _ = stack
                .http
                .post(format!("{}/v1/playback-tokens", stack.token_api))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
        }
        let _ = stack
            .http
            .get(format!("{}/v1/users/181353/history", stack.token_api))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_panel_has_data_and_cutting_kafka_fires_the_spooling_alert() {
    let stack = Stack::start_with(Broker::start_behind_proxy().await).await;
    let dir = std::env::temp_dir().join(format!("kollus-e2e-prometheus-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    // The probe compose runs in each container: `<binary> healthcheck` GETs /healthz.
    for (service, url) in [
        ("ingest", &stack.ingest),
        ("token-api", &stack.token_api),
        ("sync-worker", &stack.sync_admin),
        ("history-worker", &stack.history_admin),
    ] {
        let status = Command::new(binary(service))
            .arg("healthcheck")
            .env("LISTEN_ADDR", url.trim_start_matches("http://"))
            .status()
            .unwrap();
        assert!(status.success(), "{service} healthcheck");
    }
    let prometheus = Prometheus::start(&stack, &dir);
    eventually(
        "Prometheus to scrape all four services",
        Duration::from_secs(60),
        || async {
            let up = prometheus
                .get("/api/v1/query", &[("query", "sum(up)")])
                .await?;
            (up["result"][0]["value"][1] == "4").then_some(())
        },
    )
    .await;

    traffic(&stack).await;
    for (file, title, expr) in panel_queries() {
        eventually(
            &format!("{file} / {title}: `{expr}` to return a series"),
            Duration::from_secs(60),
            || async { (prometheus.series(&expr).await? > 0).then_some(()) },
        )
        .await;
    }
    assert!(!prometheus.firing("KollusIngestSpooling").await);

    // Kafka stops acknowledging: ingest spools (and still answers 200), and the alert fires.
    stack.broker.proxy().cut();
    for _ in 0..3 {
        let res = stack.callback("lms", fixture("lms-seed.form")).await;
        assert_eq!(res.status(), 200, "spooled, not refused");
    }
    eventually(
        "KollusIngestSpooling to fire",
        Duration::from_secs(60),
        || async {
            prometheus
                .firing("KollusIngestSpooling")
                .await
                .then_some(())
        },
    )
    .await;
    stack.broker.proxy().restore();
    let _ = std::fs::remove_dir_all(&dir);
}
