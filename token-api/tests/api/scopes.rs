//! Keys with scopes (issue 20): an operation needs the scope its `security` names in
//! openapi.json, a key without it gets 403 problem+json naming the scope, audit records keep the
//! key's name, and `TOKEN_API_KEYS_FILE` is read again on SIGHUP.

use std::time::Duration;

use kollus_test_support::eventually;
use kollus_token_api::auth::ApiKeys;
use kollus_token_api::routes::derived;
use serde_json::{json, Value};

use crate::helpers::*;

const SCOPES: [&str; 7] = [
    "tokens",
    "read",
    "entitlements",
    "export",
    "console",
    "audit",
    "erase",
];

fn key_for(scope: &str) -> String {
    format!("{scope}-key-0123456789abcdef")
}

/// Keys named `only-<scope>` (that one scope) and `all-but-<scope>` (every other one).
fn scoped_keys() -> String {
    SCOPES
        .iter()
        .flat_map(|s| {
            let others: Vec<&str> = SCOPES.iter().copied().filter(|o| o != s).collect();
            [
                format!("only-{s}[{s}]:{}", key_for(s)),
                format!("all-but-{s}[{}]:not-{}", others.join("+"), key_for(s)),
            ]
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Every documented operation behind a key: (method, path with sample parameters, scope).
fn operations() -> Vec<(String, String, String)> {
    let doc = derived();
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let Some(scopes) = op["security"][0]["bearer"].as_array() else {
                continue;
            };
            assert_eq!(scopes.len(), 1, "{method} {path} names one scope");
            let concrete = path
                .replace("{client_user_id}", "u1")
                .replace("{media_content_key}", "m1")
                .replace("{channel_key}", "c1")
                .replace("{course_id}", "course-1");
            out.push((
                method.to_uppercase(),
                concrete,
                scopes[0].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn every_operation_needs_the_scope_its_document_names() {
    let app = spawn_app_with(|s| s.api_keys = ApiKeys::parse(&scoped_keys()).unwrap()).await;
    let ops = operations();
    assert_eq!(
        ops.len(),
        22,
        "every /v1 operation is documented with a scope"
    );
    for (method, path, scope) in ops {
        let send = |key: String| {
            let url = format!("{}{path}", app.address);
            let req = match method.as_str() {
                "GET" => app.client.get(url),
                "PUT" => app.client.put(url).json(&json!({})),
                "DELETE" => app.client.delete(url),
                "POST" => app.client.post(url).json(&json!({})),
                other => panic!("{other}"),
            };
            req.bearer_auth(key).send()
        };
        let res = send(format!("not-{}", key_for(&scope))).await.unwrap();
        assert_eq!(res.status(), 403, "{method} {path} without {scope}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(
            problem["scope"],
            scope.as_str(),
            "{method} {path}: {problem}"
        );
        assert!(problem["detail"].as_str().unwrap().contains(&scope));

        let res = send(key_for(&scope)).await.unwrap();
        assert!(
            ![401, 403].contains(&res.status().as_u16()),
            "{method} {path} with only {scope}: {}",
            res.status()
        );
    }
    // Authentication still comes first: no key is 401, not 403.
    let res = app
        .client
        .get(format!("{}/v1/media/m1", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_key_without_scopes_keeps_every_scope_and_audits_keep_the_key_name() {
    let app = spawn_app_with(|s| {
        s.api_keys =
            ApiKeys::parse(&format!("legacy:{APP_KEY},grants[entitlements]:{OPS_KEY}")).unwrap()
    })
    .await;
    for path in ["/v1/media/m1", "/v1/users/u1/entitlements"] {
        let res = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(APP_KEY)
            .send()
            .await
            .unwrap();
        assert!([200, 404].contains(&res.status().as_u16()), "{path}");
    }
    let res = app
        .client
        .put(format!("{}/v1/users/u1/entitlements/media/m1", app.address))
        .bearer_auth(OPS_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let changed_by: String = app
        .db
        .client()
        .await
        .query_one("SELECT changed_by FROM entitlement_changes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(changed_by, "grants", "the name, without its scopes");
}

#[tokio::test]
async fn sighup_reloads_the_keys_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token_api_keys");
    let leaked = "leaked-key-0123456789abcdef";
    let fresh = "fresh-key-0123456789abcdef";
    std::fs::write(&file, format!("app[read]:{leaked}\n")).unwrap();
    let app = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
        s.api_keys_file = Some(file.clone());
    })
    .await;
    let status = |key: &'static str| {
        let req = app
            .client
            .get(format!("{}/v1/media/m1", app.address))
            .bearer_auth(key);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(leaked).await, 404);
    let hangup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    };

    std::fs::write(&file, format!("app[read]:{fresh}\n")).unwrap();
    hangup();
    eventually(
        "the leaked key is refused",
        Duration::from_secs(10),
        || async { (status(leaked).await == 401).then_some(()) },
    )
    .await;
    assert_eq!(status(fresh).await, 404);
    // Scopes change as well (a bad file keeping the keys in force: auth.rs's unit test).
    std::fs::write(&file, format!("app[tokens]:{fresh}\n")).unwrap();
    hangup();
    eventually(
        "the new scopes are in force",
        Duration::from_secs(10),
        || async { (status(fresh).await == 403).then_some(()) },
    )
    .await;
}

/// A token with `playcallback_ignore: true` plays without Kollus asking our play callback, so
/// without an entitlement check (issue 26): a `tokens` key alone may not sign one.
#[tokio::test]
async fn signing_playcallback_ignore_needs_its_own_scope() {
    const SHOP: &str = "shop-key-0123456789abcdef";
    const TRUSTED: &str = "trusted-key-0123456789abcdef";
    const IGNORE_ONLY: &str = "ignore-only-key-0123456789abcdef";
    const LEGACY: &str = "legacy-key-0123456789abcdef";
    let app = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!(
            "shop[tokens]:{SHOP}\n\
             trusted[tokens+tokens:playcallback_ignore]:{TRUSTED}\n\
             ignore-only[tokens:playcallback_ignore]:{IGNORE_ONLY}\n\
             legacy:{LEGACY}"
        ))
        .unwrap()
    })
    .await;
    let body = |ignore: Option<bool>| {
        let mut b = json!({"client_user_id": "u1", "media": [{"media_content_key": "m1"}]});
        if let Some(ignore) = ignore {
            b["playcallback_ignore"] = ignore.into();
        }
        b
    };
    let forbidden = r#"kollus_token_issued_total{outcome="forbidden"}"#;

    let res = app.issue(SHOP, body(Some(true))).await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["scope"], "tokens:playcallback_ignore", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("tokens:playcallback_ignore"),
        "{problem}"
    );
    assert_eq!(app.metric(forbidden).await, 1);
    for ignore in [None, Some(false)] {
        assert_eq!(
            app.issue(SHOP, body(ignore)).await.status(),
            201,
            "{ignore:?}: Kollus's default needs no more than tokens"
        );
    }

    // A key given without scopes (as before scopes existed) is not given this one either.
    let res = app.issue(LEGACY, body(Some(true))).await;
    assert_eq!(res.status(), 403, "only by name");
    assert_eq!(app.issue(LEGACY, body(None)).await.status(), 201);

    let res = app.issue(TRUSTED, body(Some(true))).await;
    assert_eq!(res.status(), 201);
    let issued: Value = res.json().await.unwrap();
    let (_, claims) = verify_independently(issued["token"].as_str().unwrap(), SECURITY_KEY);
    assert_eq!(claims["playcallback_ignore"], true);

    // The scope adds to `tokens`; it does not stand for it.
    let res = app.issue(IGNORE_ONLY, body(Some(true))).await;
    assert_eq!(res.status(), 403);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["scope"], "tokens");
    assert_eq!(app.metric(forbidden).await, 3);
}
