//! Answers Kollus does not document, and refusals: a clear error that says where and what to
//! do, no token in it, and nothing published (so nothing applied).

use kollus_test_support::kollus_api::{video, Fault};

use crate::helpers::{Stack, TOKEN};

async fn refused(s: &Stack) -> String {
    let err = kollus_catalog::backfill(&s.api(100.0), &s.h.kafka)
        .await
        .expect_err("the backfill must stop");
    let text = format!("{err:#}");
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    assert!(text.contains("nothing was published"), "{text}");
    assert_eq!(s.published(), 0, "nothing published: {text}");
    text
}

async fn account() -> Stack {
    let s = Stack::new(false).await;
    s.fake.add_channel("ch000001", "A");
    for i in 0..150 {
        s.fake.add_video(video(
            &format!("u{i}"),
            i,
            &[("ch000001", &format!("m{i}"))],
        ));
    }
    s
}

#[tokio::test]
async fn error_one_stops_with_kollus_message() {
    let s = account().await;
    s.fake.fault(Fault::ErrorOne {
        path_suffix: "library/media_content".into(),
        message: "Failed to read.".into(),
    });
    let text = refused(&s).await;
    assert!(
        text.contains("media/library/media_content (page=1, per_page=100, order=created_at_desc): Kollus answered error 1: Failed to read."),
        "{text}"
    );
}

#[tokio::test]
async fn shapes_kollus_does_not_send_are_named() {
    for (body, expected) in [
        (
            r#"{"error":0,"result":{"count":1,"items":"none"}}"#,
            "result.items: is a string",
        ),
        (
            r#"{"error":0,"result":{"count":1,"items":{"item":{"upload_file_key":"u1","duration":"1:2:3:4"}}}}"#,
            r#"result.items.item[0].duration: "1:2:3:4" is neither"#,
        ),
        (r#"<html>busy</html>"#, "(body): is not JSON"),
        (
            r#"{"error":0,"result":{"count":1,"items":{"item":{"media_content_key":"m1"}}}}"#,
            "upload_file_key: is missing",
        ),
    ] {
        let s = account().await;
        s.fake.fault(Fault::Body {
            path_suffix: "channel/media_content".into(),
            body: body.into(),
        });
        let text = refused(&s).await;
        assert!(text.contains(expected), "{body}: {text}");
    }
}

#[tokio::test]
async fn a_reissued_token_stops_at_once_saying_so() {
    let s = account().await;
    s.fake.reissue_token("a-newer-token");
    let text = refused(&s).await;
    assert!(
        text.contains(
            "The API token was reissued in the console: a new token invalidates the old one"
        ),
        "{text}"
    );
    assert_eq!(s.fake.request_paths().len(), 1, "no retry of a 401");
}

#[tokio::test]
async fn a_redirect_is_not_followed_with_the_token() {
    let s = account().await;
    let elsewhere = format!("{}elsewhere/index", s.fake.url);
    s.fake.fault(Fault::Redirect {
        location: elsewhere,
    });
    let text = refused(&s).await;
    assert!(text.contains("media/channel/index: HTTP 302"), "{text}");
    assert_eq!(
        s.fake.request_paths(),
        ["/0/media/channel/index"],
        "the redirect was not followed"
    );
}
