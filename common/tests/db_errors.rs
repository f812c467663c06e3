//! Real PostgreSQL errors, raised with their SQLSTATE by the test server, classified as a worker
//! classifies them: retried (transient) or dead-lettered (permanent).

use kollus_common::worker::ApplyError;

/// The test server (`DATABASE_URL`'s, else the local one); RAISE needs no schema.
fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn raised(code: &str) -> tokio_postgres::Error {
    let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .expect("connecting to the test server");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$"
        ))
        .await
        .expect_err("RAISE fails")
}

// A full disk or a lock not available is waited out, never dead-lettered; an internal error or
// a trigger's refusal (P0001) repeats, so it is dead-lettered instead of stalling the partition
// forever (the worker retried every code outside 22, 23 and 42).
#[tokio::test]
async fn a_worker_retries_not_now_and_dead_letters_never() {
    for (code, transient) in [
        ("53100", true),
        ("55P03", true),
        ("08006", true),
        ("40P01", true),
        ("23505", false),
        ("22P02", false),
        ("XX000", false),
        ("P0001", false),
    ] {
        let e = ApplyError::from_db(raised(code).await);
        assert_eq!(
            matches!(e, ApplyError::Transient(_)),
            transient,
            "SQLSTATE {code}: {e}"
        );
    }
}
