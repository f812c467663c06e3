//! What operators watch, against a real Prometheus (Debian's package, started by
//! `scripts/prometheus.sh` as `make run` does) scraping the four real binaries: with traffic
//! flowing, every panel of every dashboard in `deploy/grafana/dashboards/` has data (a value above
//! 0, but for a short list of panels the traffic leaves at 0, each with its reason), and cutting
//! ingest's link to Kafka fires the spooling alert and fills the spool, which is forwarded once
//! Kafka is back.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kollus_test_support::{eventually, eventually_ok, fixture, free_port, workspace_root, Broker};
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

/// Panel queries the test's traffic leaves at 0, each with why. Each must still return a series
/// of numbers (its metric is exported, the expression is valid, no NaN); every other panel
/// query must return a value above 0 once the traffic has flowed (a series pre-created at 0, or
/// a quantile of nothing, is no data).
const AT_ZERO: &[(&str, &str)] = &[
    (
        "kollus_ingest_spool_bytes",
        "nothing spools while Kafka answers; checked above 0 once Kafka is cut",
    ),
    (
        "kollus_ingest_spooled_records",
        "nothing spools while Kafka answers; checked above 0 once Kafka is cut",
    ),
    (
        "rate(kollus_ingest_forwarded_total[1m])",
        "nothing was spooled to forward; checked above 0 once Kafka is back",
    ),
    (
        "kollus:worker_lag_seconds",
        "whole seconds the oldest record waits: workers keeping up show 0",
    ),
    (
        "kollus:worker_consumer_lag_records",
        "the workers keep up with a few records: no lag to show",
    ),
    (
        "kollus:worker_retries:rate5m",
        "nothing fails, so no batch is retried",
    ),
    (
        "kollus_token_db_pool_waiting",
        "a few requests never wait for a connection",
    ),
    (
        "kollus:db_pool_waiting{service=~\"sync-worker|history-worker\"}",
        "the workers' batches never wait for a connection",
    ),
    (
        "kollus_sync_db_pool_connections{state=\"in_use\"}",
        "a gauge of the moment: between batches no connection is in use",
    ),
    (
        "kollus_history_db_pool_connections{state=\"in_use\"}",
        "a gauge of the moment: between batches no connection is in use",
    ),
];

/// Panel queries the cut of Kafka drives above 0 (they are in [`AT_ZERO`] before it).
const SPOOLING: &[&str] = &["kollus_ingest_spool_bytes", "kollus_ingest_spooled_records"];

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

    /// The `data` of a successful API answer; `Err` says what went wrong (no answer, not JSON,
    /// an error status), never "nothing".
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .map_err(|e| format!("GET {path} {query:?}: {e}"))?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|e| format!("GET {path} {query:?}: {status}, not JSON: {e}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("GET {path} {query:?}: {status} {body}"))
        }
    }

    /// The value of each series `expr` returns now (NaN as NaN).
    async fn values(&self, expr: &str) -> Result<Vec<f64>, String> {
        let data = self.get("/api/v1/query", &[("query", expr)]).await?;
        let result = data["result"]
            .as_array()
            .ok_or_else(|| format!("`{expr}`: no result in {data}"))?;
        result
            .iter()
            .map(|series| {
                series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| format!("`{expr}`: a series without a value: {series}"))
            })
            .collect()
    }

    /// Whether `expr` has data: a value above 0 (`Ok`), else what it returned (`Err`).
    async fn above_zero(&self, expr: &str) -> Result<(), String> {
        let values = self.values(expr).await?;
        if values.iter().any(|v| *v > 0.0) {
            Ok(())
        } else {
            Err(format!("values {values:?}"))
        }
    }

    /// Whether `alert` is firing now. A failed API call fails the test: "not firing" must never
    /// stand for "could not ask".
    async fn firing(&self, alert: &str) -> bool {
        let data = self
            .get("/api/v1/alerts", &[])
            .await
            .unwrap_or_else(|e| panic!("asking Prometheus whether {alert} fires: {e}"));
        let alerts = data["alerts"]
            .as_array()
            .unwrap_or_else(|| panic!("/api/v1/alerts without alerts: {data}"));
        alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == alert && a["state"] == "firing")
    }

    /// Whether Prometheus has loaded the alerting rule `alert` (so "not firing" means its
    /// expression does not hold, not that the rule is missing).
    async fn has_rule(&self, alert: &str) -> bool {
        let data = self
            .get("/api/v1/rules", &[("type", "alert")])
            .await
            .unwrap_or_else(|e| panic!("asking Prometheus for its rules: {e}"));
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .any(|r| r["name"] == alert)
    }
}

/// Makes what one round of [`traffic`] needs: a video the catalog knows in no channel (it left
/// its only one), so a token for it is refused by the catalog.
async fn prepare_traffic(stack: &Stack) {
    let left = String::from_utf8(fixture("channel-leave.form"))
        .unwrap()
        .replace("vnCVPVyV", "mLeft0001")
        .replace("ufk-0001", "ufk-left");
    assert_eq!(
        stack.callback("channel", left.into_bytes()).await.status(),
        200
    );
    eventually(
        "a token for a video in no channel to be refused by the catalog",
        SLACK,
        || async {
            let status = token(
                stack,
                API_KEY,
                json!({"client_user_id": "u1",
                "media": [{"media_content_key": "mLeft0001"}]}),
            )
            .await;
            (status == 409).then_some(())
        },
    )
    .await;
}

/// token-api's status for a playback-token request.
async fn token(stack: &Stack, key: &str, body: Value) -> u16 {
    stack
        .http
        .post(format!("{}/v1/playback-tokens", stack.token_api))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// token-api's status for Kollus's play callback with `form`.
async fn play(stack: &Stack, form: &[(&str, &str)]) -> u16 {
    stack
        .http
        .post(format!(
            "{}/kollus/play?secret={PLAY_CALLBACK_SECRET}",
            stack.token_api
        ))
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// One round of a little of everything the dashboards show: callbacks (good, signed, refused),
/// tokens (issued, refused by the catalog, invalid, unauthorized), a read, and Kollus's play
/// callback (decided, and one left without a decision: an invalid form).
async fn traffic(stack: &Stack, round: usize) {
    for (route, body) in [
        ("lms", fixture("lms-seed.form")),
        ("lms", fixture("lms-android-hash.form")),
        ("channel", fixture("channel-join.form")),
        ("lms", b"userid=u1&pt=30".to_vec()),
    ] {
        let status = stack.callback(route, body).await.status();
        assert!(status == 200 || status == 400, "{route}: {status}");
    }
    for (key, body, want) in [
        (
            API_KEY,
            json!({"client_user_id": "u1", "media": [{"media_content_key": "vnCVPVyV"}]}),
            201,
        ),
        (
            API_KEY,
            json!({"client_user_id": "u1", "media": [{"media_content_key": "mLeft0001"}]}),
            409,
        ),
        (API_KEY, json!({"client_user_id": "u1", "media": []}), 400),
        ("wrong-key", json!({"client_user_id": "u1"}), 401),
    ] {
        // A few wrong keys only: past AUTH_FAILURES_PER_MINUTE (a few a minute), token-api answers this
        // address 429 for every key.
        if key == "wrong-key" && round >= 3 {
            continue;
        }
        assert_eq!(token(stack, key, body.clone()).await, want, "{body}");
    }
    let read = stack
        .http
        .get(format!("{}/v1/users/181353/history", stack.token_api))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    // Kollus asks before a play: decided (u1 has no entitlement: refused, with its reason).
    let decided = play(
        stack,
        &[
            ("kind", "1"),
            ("client_user_id", "u1"),
            ("media_content_key", "vnCVPVyV"),
            ("player_id", "p"),
        ],
    )
    .await;
    assert_eq!(decided, 200, "a play callback is answered");
    // A kind the callback does not answer: no decision.
    let undecided = play(
        stack,
        &[
            ("kind", "9"),
            ("client_user_id", "u1"),
            ("media_content_key", "vnCVPVyV"),
        ],
    )
    .await;
    assert_eq!(undecided, 400, "an invalid play callback is refused");
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
        let status = command(service)
            .arg("healthcheck")
            .env("LISTEN_ADDR", url.trim_start_matches("http://"))
            .status()
            .unwrap();
        assert!(status.success(), "{service} healthcheck");
    }
    let prometheus = Prometheus::start(&stack, &dir);
    eventually_ok("Prometheus to scrape all four services", SLACK, || async {
        let up = prometheus.values("sum(up)").await?;
        (up == [4.0])
            .then_some(())
            .ok_or_else(|| format!("sum(up) {up:?}"))
    })
    .await;

    let panels = panel_queries();
    for (expr, _) in AT_ZERO {
        assert!(
            panels.iter().any(|(_, _, e)| e.as_str() == *expr),
            "AT_ZERO names `{expr}`, which no panel queries"
        );
    }
    prepare_traffic(&stack).await;
    // Traffic flows while the panels are read, so every rate has increases to show, however
    // the rounds fall between scrapes.
    let checks = async {
        for (file, title, expr) in &panels {
            let what = format!("{file} / {title}: `{expr}`");
            if let Some((_, why)) = AT_ZERO.iter().find(|(e, _)| *e == expr.as_str()) {
                eventually_ok(
                    &format!("{what} to return numbers (it may stay 0: {why})"),
                    SLACK,
                    || async {
                        let values = prometheus.values(expr).await?;
                        if !values.is_empty() && values.iter().all(|v| v.is_finite()) {
                            Ok(())
                        } else {
                            Err(format!("values {values:?}"))
                        }
                    },
                )
                .await;
            } else {
                eventually_ok(&format!("{what} to show data above 0"), SLACK, || {
                    prometheus.above_zero(expr)
                })
                .await;
            }
        }
    };
    let flowing = async {
        let mut pace = tokio::time::interval(Duration::from_millis(500));
        for round in 0.. {
            pace.tick().await;
            traffic(&stack, round).await;
        }
    };
    tokio::select! {
        () = checks => {}
        _ = flowing => unreachable!("the traffic never stops"),
    }
    assert!(
        prometheus.has_rule("KollusIngestSpooling").await,
        "the spooling alert is loaded"
    );
    assert!(
        !prometheus.firing("KollusIngestSpooling").await,
        "nothing spooled yet"
    );

    // Kafka stops acknowledging: ingest spools (and still answers 200), and the alert fires.
    stack.broker.proxy().cut();
    for _ in 0..3 {
        let res = stack.callback("lms", fixture("lms-seed.form")).await;
        assert_eq!(res.status(), 200, "spooled, not refused");
    }
    eventually("KollusIngestSpooling to fire", SLACK, || async {
        prometheus
            .firing("KollusIngestSpooling")
            .await
            .then_some(())
    })
    .await;
    for expr in SPOOLING {
        eventually_ok(
            &format!("`{expr}` above 0 while Kafka is cut"),
            SLACK,
            || prometheus.above_zero(expr),
        )
        .await;
    }
    // Kafka is back: ingest forwards what it spooled.
    stack.broker.proxy().restore();
    eventually_ok(
        "the spooled records to be forwarded once Kafka is back",
        SLACK,
        || prometheus.above_zero("rate(kollus_ingest_forwarded_total[1m])"),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
