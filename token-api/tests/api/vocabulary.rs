//! One vocabulary: what token-api counts and reads back is made from its enums.

use kollus_common::vocab::labels;
use kollus_token_api::entitlements::model::Entitlement;
use kollus_token_api::playback::policy::Reason;
use kollus_token_api::tokens::catalog::Refusal;

use crate::helpers::*;

/// Every playback reason and catalog refusal is a series on `/metrics` at 0 before anything
/// happened, so a rate or an alert over it is defined from the start.
#[tokio::test]
async fn every_reason_and_refusal_is_on_metrics_from_the_start() {
    let app = spawn_app().await;
    for r in Reason::ALL {
        let [kind, result, reason] = r.first_series();
        let series = format!(
            r#"kollus_token_play_decisions_total{{kind="{kind}",reason="{reason}",result="{result}"}}"#
        );
        assert_eq!(app.metric(&series).await, 0, "{series}");
    }
    for reason in labels::<Refusal>() {
        let series = format!(r#"kollus_token_catalog_rejections_total{{reason="{reason}"}}"#);
        assert_eq!(app.metric(&series).await, 0, "{series}");
    }
}

/// An entitlement row whose `scope` is no scope fails, naming the value, instead of being read
/// as a `media` grant.
#[tokio::test]
async fn an_entitlement_row_with_an_unknown_scope_is_an_error() {
    let app = spawn_app().await;
    let db = app.db.client().await;
    let read = |scope: &'static str| {
        let db = &db;
        async move {
            let row = db
                .query_one(
                    "SELECT $1::text AS scope, 'k' AS target, NULL::timestamptz AS expires_at, \
                        NULL::bigint AS playtime_limit_seconds, false AS download, \
                        NULL::int AS download_limit, 'app' AS granted_by, now() AS granted_at, \
                        NULL::text AS revoked_by, NULL::timestamptz AS revoked_at",
                    &[&scope],
                )
                .await
                .unwrap();
            Entitlement::from_row(&row)
        }
    };
    let channel = read("channel").await.unwrap();
    assert_eq!(channel.scope.as_str(), "channel");
    let e = read("studio").await.unwrap_err();
    let why = std::error::Error::source(&e).map(ToString::to_string);
    assert_eq!(
        why.as_deref(),
        Some(r#""studio" is not a Scope (one of: media, channel, course)"#),
        "{e}"
    );
}
