//! `/openapi.json` is the document of the routes the service registers: no more, no fewer, and
//! its reviewed snapshot.

use std::collections::BTreeSet;

use kollus_test_support::openapi_mismatches;
use kollus_token_api::routes::{api_routes, derived};
use serde_json::{json, Value};

use crate::helpers::*;

/// The document derived from the code (`routes::ApiDoc`) is its reviewed snapshot,
/// `tests/snapshots/openapi.snap`: a change of the API shows in that file's diff. After a change,
/// `cargo insta review` (or `INSTA_UPDATE=always` and a look at `git diff`) accepts it.
#[test]
fn the_derived_document_is_its_reviewed_snapshot() {
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_json_snapshot!("openapi", derived());
    });
}

#[test]
fn the_document_lists_exactly_the_registered_routes() {
    let doc = derived();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let registered: BTreeSet<(String, String)> = api_routes()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path))
        .collect();
    assert_eq!(documented, registered);
}

#[test]
fn every_reference_resolves_and_every_operation_is_complete() {
    let doc = derived();
    assert_eq!(doc["openapi"], "3.1.0");
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').expect("local reference");
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
            // Every path parameter in the template is declared, and only those.
            let in_template: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert_eq!(in_template, declared, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn the_service_serves_the_document_and_answers_as_it_says() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "served without a key");
    let served: Value = res.json().await.unwrap();
    let doc = derived();
    assert_eq!(served, doc);

    // A real answer of each kind conforms to its documented schema.
    let issued: Value = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "u", "media": [{"media_content_key": "m"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let invalid: Value = app
        .issue(APP_KEY, json!({"client_user_id": "", "media": []}))
        .await
        .json()
        .await
        .unwrap();
    for (schema, body) in [("IssuedToken", issued), ("Problem", invalid)] {
        let m = openapi_mismatches(
            &doc,
            &json!({"$ref": format!("#/components/schemas/{schema}")}),
            &body,
        );
        assert!(m.is_empty(), "{schema}: {m:#?}");
    }
    // And the checker does catch a difference.
    let m = openapi_mismatches(
        &doc,
        &json!({"$ref": "#/components/schemas/IssuedToken"}),
        &json!({"token": 1, "url": "u", "extra": true}),
    );
    assert_eq!(m.len(), 3, "{m:#?}");
}

#[tokio::test]
async fn the_served_document_states_this_servers_limits() {
    let app = spawn_app_with(|s| {
        s.max_media = 3;
        s.max_expires_in = 600;
        s.default_expires_in = 300;
    })
    .await;
    let served: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let request = "/components/schemas/TokenRequest/properties";
    assert_eq!(
        served.pointer(&format!("{request}/media/maxItems")),
        Some(&json!(3))
    );
    assert_eq!(
        served.pointer(&format!("{request}/expires_in/maximum")),
        Some(&json!(600))
    );
    // Only those: with them put back, it is the document in the repository.
    let mut back = served.clone();
    *back
        .pointer_mut(&format!("{request}/media/maxItems"))
        .unwrap() = json!(10);
    *back
        .pointer_mut(&format!("{request}/expires_in/maximum"))
        .unwrap() = json!(86_400);
    assert_eq!(back, derived());
    // And what it says is what the server does: one more video than it allows is refused.
    let media: Vec<Value> = (0..4)
        .map(|i| json!({"media_content_key": format!("m{i}")}))
        .collect();
    let res = app
        .issue(APP_KEY, json!({"client_user_id": "u", "media": media}))
        .await;
    assert_eq!(res.status(), 400);
}

/// The scopes a 403 may name (`problem.rs` states them: the bottom layer cannot import
/// `auth`) are exactly the scopes a key may hold.
#[test]
fn a_403_names_exactly_the_scopes_a_key_may_hold() {
    let doc = derived();
    let named: Vec<&str> = doc["components"]["schemas"]["Problem"]["properties"]["scope"]["enum"]
        .as_array()
        .expect("Problem.scope is an enum")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let held: Vec<&str> = kollus_token_api::auth::ApiScope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(named, held);
}

/// Each documented operation is served where the document says, and its path takes exactly the
/// documented methods: any other gets 405 with `Allow` naming them (the router is built from the
/// handlers' `#[utoipa::path]`, one resource per path).
#[tokio::test]
async fn every_documented_operation_is_served_and_its_path_allows_exactly_its_methods() {
    let app = spawn_app().await;
    let doc = derived();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        let url = format!(
            "{}{}",
            app.address,
            path.split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/")
        );
        let mut documented: Vec<String> = ops
            .as_object()
            .expect("operations")
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        for method in &documented {
            let res = app
                .client
                .request(method.parse().unwrap(), &url)
                .bearer_auth(APP_KEY)
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body = res.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert!(
                !body.contains(" here; the routes are in /openapi.json"),
                "{method} {path} is not served: {status} {body}"
            );
        }
        let res = app
            .client
            .patch(&url)
            .bearer_auth(APP_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "PATCH {path}");
        let mut allow: Vec<String> = res.headers()["allow"]
            .to_str()
            .unwrap()
            .split(", ")
            .map(str::to_owned)
            .collect();
        allow.sort();
        documented.sort();
        assert_eq!(allow, documented, "{path}");
    }
}
