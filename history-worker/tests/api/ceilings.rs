//! The rollup's sums saturate instead of failing a read.

use kollus_test_support::TestDb;

#[tokio::test]
async fn the_rollup_saturates_sums_past_bigint_instead_of_failing() {
    // Rows written before the ceilings, or by other means: straight into the table.
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, playtime, \
                 real_playtime, first_report_at, last_report_at) VALUES \
             ('u1', 'm1', 1, 9223372036854775806, 9223372036854775806, now(), now()), \
             ('u1', 'm1', 2, 9223372036854775806, 5, now(), now()), \
             ('u2', 'm1', 1, 40, 20, now(), now()), \
             ('u2', 'm1', 2, 2, 1, now(), now())",
        )
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT client_user_id, sessions, total_playtime, total_real_playtime \
             FROM watch_progress ORDER BY client_user_id",
            &[],
        )
        .await
        .expect("watch_progress reads whatever the sessions hold");
    let got: Vec<(String, i32, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        [
            ("u1".into(), 2, i64::MAX, i64::MAX),
            ("u2".into(), 2, 42, 21),
        ]
    );
}
