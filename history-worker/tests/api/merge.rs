//! The two ways a report meets its stored session must agree: the usual one (row read and
//! locked, merged in Rust by `Session::merge`, written back) and the race fallback (an insert
//! that finds a row another consumer wrote, merged by the SQL of `ON CONFLICT`).

use kollus_common::kollus::lms::checksum::HashVerdict::{Absent, Verified};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::lms::Segment;
use kollus_common::testing::TestDb;
use kollus_history_worker::sessions::{Assessment, Session};
use kollus_history_worker::store;
use serde_json::json;

use crate::helpers::{report, snapshot};

/// Three reports of one session, arriving out of order: counters not monotone in arrival,
/// block lists of different lengths, uservalues that differ, a position from a smaller runtime.
fn reports() -> Vec<Session> {
    let mut docs = [
        report(
            "u1",
            "m1",
            1_700_000_000,
            [50, 40, 60, 45, 30],
            &[(1, 10, 50), (0, 0, 0)],
        ),
        report(
            "u1",
            "m1",
            1_700_000_000,
            [20, 10, 25, 15, 12],
            &[(0, 0, 0), (1, 7, 35), (1, 3, 15)],
        ),
        report(
            "u1",
            "m1",
            1_700_000_000,
            [80, 30, 90, 70, 55],
            &[(1, 4, 20)],
        ),
    ];
    docs[0]["uservalues"] = json!({"uservalue0": "first"});
    docs[1]["uservalues"] = json!({"uservalue0": "second", "uservalue1": "only-second"});
    docs.iter()
        .enumerate()
        .map(|(i, d)| {
            let r = LmsReport::from_json(d.to_string().as_bytes()).expect("a valid report");
            let at =
                time::OffsetDateTime::from_unix_timestamp(1_700_000_100 + 10 * i as i64).unwrap();
            let mut r = r;
            // Segments reported again, grown and late; one report unsigned; one offline
            // report whose device clock was flagged.
            r.segments = [
                vec![seg(21, 0, 3), seg(22, 0, 20)],
                vec![seg(21, 0, 3)],
                vec![seg(22, 0, 48), seg(23, 5, 10)],
            ][i]
                .clone();
            let verdict = [Some(Verified), Some(Verified), Some(Absent)][i];
            let assessment = Assessment {
                device_clock: i == 1,
            };
            Session::from_report(&r, at, [], verdict, assessment)
        })
        .collect()
}

fn seg(block: u32, start_time: u64, play_time: u64) -> Segment {
    Segment {
        block,
        start_time,
        play_time,
    }
}

/// Applies each session in its own transaction, through `write`, and returns the table.
async fn apply_one_by_one<F>(write: F) -> Vec<String>
where
    F: AsyncFn(&deadpool_postgres::Transaction<'_>, Session),
{
    let db = TestDb::new().await;
    let pool = kollus_common::db::pool(&db.settings()).unwrap();
    for s in reports() {
        let mut client = pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        write(&tx, s).await;
        tx.commit().await.unwrap();
    }
    let rows = snapshot(&db.client().await).await;
    pool.close();
    rows
}

#[tokio::test]
async fn the_sql_fallback_merges_exactly_as_the_rust_merge() {
    let rust = apply_one_by_one(async |tx, s| {
        store::write_sessions(tx, vec![s]).await.unwrap();
    })
    .await;
    let sql = apply_one_by_one(async |tx, s| {
        store::upsert_sessions(tx, &[s]).await.unwrap();
    })
    .await;
    assert_eq!(rust, sql);

    // And both are the session policy: maximums, blocks merged per block, the position of the
    // largest runtime, the first-seen uservalue kept.
    let row: serde_json::Value = serde_json::from_str(&rust[0]).unwrap();
    assert_eq!(row["playtime"], 80);
    assert_eq!(row["real_playtime"], 40);
    assert_eq!(row["last_play_at"], 55);
    assert_eq!(row["reports"], 3);
    assert_eq!(row["blocks_played"], json!([true, true, true]));
    assert_eq!(row["block_seconds"], json!([10, 7, 3]));
    assert_eq!(
        row["uservalues"],
        json!({"uservalue0": "first", "uservalue1": "only-second"})
    );
    assert_eq!(
        row["segments"],
        json!([[21, 0, 3], [22, 0, 48], [23, 5, 10]])
    );
    assert_eq!(
        row["hash_verified"],
        json!(false),
        "one report was unsigned"
    );
    assert_eq!(row["device_clock"], json!(true));
}
