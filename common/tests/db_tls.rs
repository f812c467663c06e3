//! The pool's TLS to the local PostgreSQL (Debian's runs with `ssl=on` and a self-signed
//! "snakeoil" certificate for `localhost`): each `sslmode` as libpq reads it, seen from the
//! server's side in `pg_stat_ssl`.

use kollus_common::settings::DatabaseSettings;
use kollus_test_support::TestDb;

/// The certificate Debian's PostgreSQL presents (public; its key is not readable here).
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
/// Debian's bundle of public CAs (`ca-certificates`).
const PUBLIC_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Whether the server sees this pool's connection as TLS, or why it could not connect.
async fn over_tls(url: &str) -> Result<bool, String> {
    let pool =
        kollus_common::db::pool(&DatabaseSettings::new(url)).map_err(|e| format!("{e:#}"))?;
    let client = pool.get().await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    })?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn the_pool_uses_tls_when_sslmode_asks_and_checks_what_it_is_told_to() {
    let db = TestDb::new().await;
    let ssl_on: String = db
        .client()
        .await
        .query_one("SHOW ssl", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        ssl_on, "on",
        "this test needs the local PostgreSQL with ssl=on (Debian's default)"
    );
    let url = &db.url;
    assert!(url.contains("@127.0.0.1:"), "{url}");
    let by_name = url.replace("@127.0.0.1:", "@localhost:");

    // Unset, disable, prefer: plain, as before.
    assert_eq!(over_tls(url).await, Ok(false));
    assert_eq!(over_tls(&format!("{url}?sslmode=disable")).await, Ok(false));
    assert_eq!(over_tls(&format!("{url}?sslmode=prefer")).await, Ok(false));

    // require: encrypted, the self-signed certificate taken (libpq's require).
    assert_eq!(over_tls(&format!("{url}?sslmode=require")).await, Ok(true));

    // verify-full: the chain and the name, from the root file given.
    assert_eq!(
        over_tls(&format!(
            "{by_name}?sslmode=verify-full&sslrootcert={SNAKEOIL}"
        ))
        .await,
        Ok(true)
    );
    let err = over_tls(&format!("{url}?sslmode=verify-full&sslrootcert={SNAKEOIL}"))
        .await
        .unwrap_err();
    assert!(
        err.contains("not valid for name") || err.contains("NotValidForName"),
        "127.0.0.1 is not the certificate's name: {err}"
    );
    // verify-ca: the chain only, so the address does.
    assert_eq!(
        over_tls(&format!("{url}?sslmode=verify-ca&sslrootcert={SNAKEOIL}")).await,
        Ok(true)
    );
    // require with a root file checks the chain too (libpq).
    assert_eq!(
        over_tls(&format!("{url}?sslmode=require&sslrootcert={SNAKEOIL}")).await,
        Ok(true)
    );
    // Public CAs did not sign the snakeoil certificate. (Not the system's roots: Debian's
    // `/etc/ssl/certs`, which rustls-native-certs reads too, links the snakeoil certificate.)
    for mode in ["verify-ca", "verify-full"] {
        let err = over_tls(&format!(
            "{by_name}?sslmode={mode}&sslrootcert={PUBLIC_CAS}"
        ))
        .await
        .unwrap_err();
        assert!(
            err.to_lowercase().contains("unknown issuer") || err.contains("UnknownIssuer"),
            "{mode}: {err}"
        );
    }
}
