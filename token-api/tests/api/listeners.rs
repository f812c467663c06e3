//! token-api's listeners: the console (`CONSOLE_LISTEN_ADDR`) and `/metrics` (`OPS_LISTEN_ADDR`)
//! each on a listener of their own, off the port Kollus's play and DRM callbacks reach (404
//! there); `CONSOLE_INSECURE_COOKIE` refused, naming both settings, where the console is not on
//! a loopback address; HSTS on the console's answers when its cookie is `Secure`.

use std::process::Command;

use kollus_test_support::TestDb;
use kollus_token_api::configuration::Settings;
use kollus_token_api::startup::Application;
use reqwest::{redirect, StatusCode};

use crate::helpers::*;

/// A free port on this machine, for a listener that is set.
const ANY_LOOPBACK: &str = "127.0.0.1:0";

struct Listeners {
    main: String,
    console: Option<String>,
    ops: Option<String>,
    _db: TestDb,
}

async fn spawn_listeners(tweak: impl FnOnce(&mut Settings)) -> Listeners {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    tweak(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("building token-api");
    let at = |port: u16| format!("http://127.0.0.1:{port}");
    let listeners = Listeners {
        main: at(app.port()),
        console: app.console_port().map(at),
        ops: app.ops_port().map(at),
        _db: db,
    };
    tokio::spawn(app.run_until_stopped());
    listeners
}

/// The status `GET base + path` answers, redirects not followed.
async fn status(base: &str, path: &str) -> StatusCode {
    client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"))
        .status()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

/// The play callback's route, as Kollus calls it (a refusal of a bare request still shows the
/// route is served: not 404).
async fn play_callback_status(base: &str) -> StatusCode {
    client()
        .post(format!("{base}/kollus/play?secret={PLAY_SECRET}"))
        .form(&[("kind", "1")])
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn unset_everything_is_on_the_one_listener_as_before() {
    let app = spawn_listeners(|_| {}).await;
    assert_eq!((app.console.as_deref(), app.ops.as_deref()), (None, None));
    assert_eq!(status(&app.main, "/console/login").await, StatusCode::OK);
    assert_eq!(status(&app.main, "/metrics").await, StatusCode::OK);
    assert_eq!(status(&app.main, "/healthz").await, StatusCode::OK);
    assert_eq!(status(&app.main, "/openapi.json").await, StatusCode::OK);
}

#[tokio::test]
async fn the_console_and_metrics_leave_the_port_kollus_reaches() {
    let app = spawn_listeners(|s| {
        s.console_listen_addr = Some(ANY_LOOPBACK.parse().unwrap());
        s.ops_listen_addr = Some(ANY_LOOPBACK.parse().unwrap());
    })
    .await;
    let (console, ops) = (app.console.unwrap(), app.ops.unwrap());

    // LISTEN_ADDR: the API, the callbacks and the probes; neither the console nor /metrics.
    for path in [
        "/console/",
        "/console/login",
        "/console/style.css",
        "/metrics",
    ] {
        assert_eq!(
            status(&app.main, path).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(status(&app.main, "/openapi.json").await, StatusCode::OK);
    assert_eq!(status(&app.main, "/healthz").await, StatusCode::OK);
    assert_eq!(status(&app.main, "/readyz").await, StatusCode::OK);
    assert_ne!(
        play_callback_status(&app.main).await,
        StatusCode::NOT_FOUND,
        "the play callback stays where Kollus reaches it"
    );

    // CONSOLE_LISTEN_ADDR: the console alone.
    assert_eq!(status(&console, "/console/login").await, StatusCode::OK);
    assert_eq!(status(&console, "/console/style.css").await, StatusCode::OK);
    let signed_out = status(&console, "/console/").await;
    assert!(signed_out.is_redirection(), "to the sign-in: {signed_out}");
    for path in ["/metrics", "/healthz", "/openapi.json", "/v1/media/m1"] {
        assert_eq!(
            status(&console, path).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(play_callback_status(&console).await, StatusCode::NOT_FOUND);

    // OPS_LISTEN_ADDR: /metrics and the probes alone.
    let metrics = client().get(format!("{ops}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("kollus_token_"), "{text}");
    assert_eq!(status(&ops, "/healthz").await, StatusCode::OK);
    assert_eq!(status(&ops, "/readyz").await, StatusCode::OK);
    for path in ["/console/login", "/openapi.json"] {
        assert_eq!(status(&ops, path).await, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(play_callback_status(&ops).await, StatusCode::NOT_FOUND);

    // One registry: the requests counted on every listener show on /metrics.
    let text = client()
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("/console/login") && !l.starts_with('#')),
        "the console's requests are counted: {text}"
    );
}

#[tokio::test]
async fn an_insecure_cookie_is_refused_unless_the_console_is_on_loopback() {
    let db = TestDb::new().await;
    let with = |listen: &str, console: Option<&str>| {
        let mut s = test_settings(&db);
        s.listen_addr = listen.parse().unwrap();
        s.console_listen_addr = console.map(|c| c.parse().unwrap());
        s.console.insecure_cookie = true;
        s
    };
    for (listen, console) in [
        ("0.0.0.0:0", None),
        ("[::]:0", None),
        ("127.0.0.1:0", Some("0.0.0.0:0")),
    ] {
        let settings = with(listen, console);
        let err = settings.validate().unwrap_err();
        assert!(
            err.contains("CONSOLE_INSECURE_COOKIE") && err.contains("CONSOLE_LISTEN_ADDR"),
            "{listen} {console:?}: {err}"
        );
        assert!(err.contains("LISTEN_ADDR"), "{err}");
        let Err(err) = Application::build(settings).await else {
            panic!("{listen} {console:?}: built");
        };
        assert!(err.to_string().contains("CONSOLE_INSECURE_COOKIE"), "{err}");
    }
    // The console on loopback, whatever the API's address: taken.
    for (listen, console) in [
        ("127.0.0.1:0", None),
        ("[::1]:0", None),
        ("0.0.0.0:0", Some("127.0.0.1:0")),
    ] {
        let settings = with(listen, console);
        assert_eq!(settings.validate(), Ok(()), "{listen} {console:?}");
    }
    // Two listeners on one address: refused by name, before a bind fails.
    let mut settings = test_settings(&db);
    settings.listen_addr = "127.0.0.1:18081".parse().unwrap();
    settings.ops_listen_addr = Some("127.0.0.1:18081".parse().unwrap());
    let err = settings.validate().unwrap_err();
    assert!(err.contains("LISTEN_ADDR and OPS_LISTEN_ADDR"), "{err}");
}

/// The binary as an operator starts it: exit 2, naming both settings, before any connection.
#[test]
fn the_binary_refuses_an_insecure_cookie_on_a_public_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_token-api"))
        .env_clear()
        .env("KOLLUS_SECURITY_KEY", SECURITY_KEY)
        .envs(kollus_test_support::key_files().env())
        .env("KOLLUS_CUSTOM_KEY", CUSTOM_KEY)
        .env("TOKEN_API_KEYS", format!("app:{APP_KEY}"))
        .env("LISTEN_ADDR", "0.0.0.0:0")
        .env("CONSOLE_INSECURE_COOKIE", "1")
        // Nothing listens here: the refusal comes before any connection.
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CONSOLE_INSECURE_COOKIE") && stderr.contains("CONSOLE_LISTEN_ADDR"),
        "{stderr}"
    );
    assert!(!stderr.contains(APP_KEY), "{stderr}");
}

#[tokio::test]
async fn console_answers_carry_hsts_when_the_cookie_is_secure() {
    for insecure in [false, true] {
        let app = spawn_listeners(|s| s.console.insecure_cookie = insecure).await;
        let res = client()
            .get(format!("{}/console/login", app.main))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let hsts = res
            .headers()
            .get(reqwest::header::STRICT_TRANSPORT_SECURITY)
            .map(|v| v.to_str().unwrap().to_owned());
        if insecure {
            assert_eq!(hsts, None, "no HSTS for a plain-HTTP console");
        } else {
            assert_eq!(hsts.as_deref(), Some("max-age=31536000"));
        }
        let api = client()
            .get(format!("{}/openapi.json", app.main))
            .send()
            .await
            .unwrap();
        assert!(
            api.headers()
                .get(reqwest::header::STRICT_TRANSPORT_SECURITY)
                .is_none(),
            "the console's header only"
        );
    }
}
