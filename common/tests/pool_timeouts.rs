//! The pool's and a transaction's timeouts against the test server: an exhausted pool is a
//! transient failure after `DATABASE_POOL_WAIT_MS`, never a hang, and `transaction_timeouts`
//! bounds a statement and an idle transaction on the server's side, for that transaction only.

use std::time::{Duration, Instant};

use kollus_common::db::{is_transient, pool, pool_error_is_transient, transaction_timeouts};
use kollus_common::settings::DatabaseSettings;

/// The test server (`DATABASE_URL`'s, else the local one); no schema needed.
fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[tokio::test]
async fn an_exhausted_pool_fails_transiently_after_its_wait_timeout() {
    let wait = Duration::from_millis(300);
    let pool = pool(&DatabaseSettings {
        pool_size: 1,
        pool_wait: wait,
        ..DatabaseSettings::new(&url())
    })
    .unwrap();
    let held = pool.get().await.expect("the pool's one connection");
    let started = Instant::now();
    let e = pool
        .get()
        .await
        .expect_err("no connection while the only one is held");
    let took = started.elapsed();
    assert!(
        matches!(
            e,
            deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)
        ),
        "{e:?}"
    );
    assert!(pool_error_is_transient(&e), "an API answers 503");
    assert!(
        took >= wait,
        "gave up after {took:?}, before the wait timeout"
    );
    assert!(took < Duration::from_secs(5), "waited {took:?}");
    drop(held);
    let _again = pool.get().await.expect("free again once given back");
}

#[tokio::test]
async fn a_transactions_timeouts_end_it_on_the_server_and_leave_the_connection_as_it_was() {
    let pool = pool(&DatabaseSettings::new(&url())).unwrap();

    // statement_timeout: a statement running longer is cancelled (57014, transient).
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(&transaction_timeouts(
        Duration::from_millis(200),
        Duration::from_secs(60),
    ))
    .await
    .unwrap();
    let e = tx
        .batch_execute("SELECT pg_sleep(10)")
        .await
        .expect_err("cancelled by statement_timeout");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    assert!(is_transient(&e));
    drop(tx);
    // SET LOCAL ended with the transaction: the pooled connection has its defaults back.
    let timeout: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, "0");

    // idle_in_transaction_session_timeout: a transaction left idle (its snapshot held) is
    // ended by the server, its connection closed, whatever the client does.
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(&transaction_timeouts(
        Duration::from_secs(60),
        Duration::from_millis(300),
    ))
    .await
    .unwrap();
    tx.batch_execute("SELECT 1").await.unwrap();
    // Polled without a word to the server, which would end the idleness.
    kollus_test_support::eventually(
        "the server to end the idle transaction",
        Duration::from_secs(20),
        || async { tx.client().is_closed().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_pool_with_a_statement_timeout_cancels_a_long_statement_on_every_connection() {
    // The URL's own options are kept beside the timeout.
    let base = url();
    let join = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{join}options=-c%20application_name%3Dbounded-pool");
    let pool = kollus_common::db::pool_with_statement_timeout(
        &DatabaseSettings {
            pool_size: 2,
            ..DatabaseSettings::new(&url)
        },
        Duration::from_millis(300),
    )
    .unwrap();
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    for client in [&a, &b] {
        let shown: String = client
            .query_one("SHOW statement_timeout", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(shown, "300ms");
        let name: String = client
            .query_one("SHOW application_name", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, "bounded-pool", "the URL's options are kept");
        let e = client
            .batch_execute("SELECT pg_sleep(5)")
            .await
            .expect_err("cancelled at the timeout");
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
        );
        assert!(is_transient(&e), "a page answers 503");
    }
    // The plain pool keeps the server's default (none).
    let plain = pool_of_defaults();
    let shown: String = plain
        .get()
        .await
        .unwrap()
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, "0");
}

fn pool_of_defaults() -> deadpool_postgres::Pool {
    pool(&DatabaseSettings::new(&url())).unwrap()
}
