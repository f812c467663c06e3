//! Production callbacks carry a `request_id` (SPEC.md 4.4): copies with the same id are one Kollus
//! event, dated by their first copy, so a Kollus retry of an old event never overrides a later one.

use kollus_common::kollus::CallbackKind;

use crate::helpers::{assert_same_catalog, envelope, permutations, spawn_worker, Replayer};

const JOIN: &str = "upload_file_key=20251117-fx7k2m9q&update_type=channel_join\
    &media_content_key=fxmck001&channel_key=abcd1234&channel_name=Math\
    &profile_key=acct-pc1-high";
const LEAVE: &str = "upload_file_key=20251117-fx7k2m9q&update_type=channel_leave\
    &media_content_key=fxmck001&channel_key=abcd1234";

fn with_id(form: &str, id: &str) -> String {
    format!("request_id={id}&{form}")
}

/// (in_channel, decided_by is the leave, joined_at, left_at) after the join, the leave, and a
/// retried copy of the join, each `received` seconds in.
async fn after_join_leave_retried_join(
    join: &str,
    leave: &str,
) -> (bool, bool, time::OffsetDateTime, time::OffsetDateTime) {
    let w = spawn_worker().await;
    let leave_envelope = envelope(CallbackKind::Channel, leave, 10);
    for e in [
        envelope(CallbackKind::Channel, join, 0),
        leave_envelope.clone(),
        envelope(CallbackKind::Channel, join, 20),
    ] {
        w.resend(&e).await;
    }
    w.wait_applied(3).await;
    let row =
        w.h.db
            .client()
            .await
            .query_one(
                "SELECT in_channel, decided_by = $1, joined_at, left_at FROM channel_memberships \
             WHERE media_content_key = 'fxmck001' AND channel_key = 'abcd1234'",
                &[&leave_envelope.id],
            )
            .await
            .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

fn at(seconds: i64) -> time::OffsetDateTime {
    envelope(CallbackKind::Channel, JOIN, seconds).received_at
}

#[tokio::test]
async fn a_retried_copy_of_an_old_join_does_not_override_the_leave() {
    let (in_channel, decided_by_leave, joined_at, left_at) = after_join_leave_retried_join(
        &with_id(JOIN, "20251117-callback-aaaa"),
        &with_id(LEAVE, "20251117-callback-bbbb"),
    )
    .await;
    assert!(!in_channel, "the leave came after the join Kollus retried");
    assert!(decided_by_leave);
    assert_eq!(joined_at, at(0), "the join is dated by its first copy");
    assert_eq!(left_at, at(10));
}

#[tokio::test]
async fn without_request_id_the_last_received_event_still_wins() {
    let (in_channel, decided_by_leave, joined_at, _) =
        after_join_leave_retried_join(JOIN, LEAVE).await;
    assert!(in_channel, "nothing tells a retry from a new join");
    assert!(!decided_by_leave);
    assert_eq!(joined_at, at(20));
}

#[tokio::test]
async fn copies_of_one_event_give_one_catalog_in_any_order() {
    let join = with_id(JOIN, "20251117-callback-aaaa");
    let leave = with_id(LEAVE, "20251117-callback-bbbb");
    let events = [
        envelope(CallbackKind::Channel, &join, 0),
        envelope(CallbackKind::Channel, &leave, 10),
        envelope(CallbackKind::Channel, &join, 20),
        envelope(CallbackKind::Channel, &join, 300),
    ];
    let replayer = Replayer::new().await;
    let in_order = replayer.run(vec![events.iter().collect()]).await;
    // All 24 arrival orders, each one per batch and all in one batch.
    for order in permutations(&events.iter().collect::<Vec<_>>()) {
        let received: Vec<i64> = order
            .iter()
            .map(|e| (e.received_at - at(0)).whole_seconds())
            .collect();
        let singly = replayer.run(order.iter().map(|e| vec![*e]).collect()).await;
        assert_same_catalog(
            &singly,
            &in_order,
            &format!("received at {received:?}, singly"),
        );
        let together = replayer.run(vec![order]).await;
        assert_same_catalog(
            &together,
            &in_order,
            &format!("received at {received:?}, together"),
        );
    }
    assert!(
        in_order
            .iter()
            .any(|row| row.contains("\"in_channel\":false")),
        "{in_order:#?}"
    );
}
