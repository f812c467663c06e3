//! A support console page under load: signs in through `/console/login` as a browser would (the
//! cookies and the CSRF field the form gives, then the cookies sign-in sets, whatever their
//! names), checks the page once, then asks for it REQUESTS times from CONCURRENCY keep-alive
//! connections (closed loop), stopping early after MAX_SECONDS. Prints p50, p99 and requests/s
//! on a `RESULT` line.
//!
//! Usage: console-load BASE_URL KEY PATH CELLS REQUESTS CONCURRENCY MAX_SECONDS
//!        (BASE_URL like `http://127.0.0.1:8081`, loopback only; PATH a console page such as
//!        `/console/users/u1`; at least CELLS heatmap or coverage cells are expected on it)

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, SET_COOKIE};
use reqwest::{redirect, Response, StatusCode};

#[path = "../load.rs"]
mod load;

/// Every `name=value` a response sets, as one `Cookie` header.
fn cookies(res: &Response) -> String {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .filter(|pair| pair.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Signs in with `key`; the `Cookie` header value of the session.
async fn sign_in(http: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<String> {
    let form = http.get(format!("{base}/console/login")).send().await?;
    ensure!(form.status() == 200, "the sign-in form: {}", form.status());
    let jar = cookies(&form);
    let body = form.text().await?;
    let field = "name=\"csrf_token\" value=\"";
    let at = body.find(field).context("no CSRF field")? + field.len();
    let csrf = &body[at..at + body[at..].find('"').context("no CSRF field")?];
    let res = http
        .post(format!("{base}/console/login"))
        .header(COOKIE, jar)
        .form(&[("key", key), ("csrf_token", csrf)])
        .send()
        .await?;
    ensure!(
        res.status() == StatusCode::SEE_OTHER,
        "sign-in answered {}",
        res.status()
    );
    let session = cookies(&res);
    ensure!(!session.is_empty(), "no session cookie");
    Ok(session)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, key, path, cells, requests, concurrency, max_seconds] = args.as_slice() else {
        bail!("usage: console-load BASE_URL KEY PATH CELLS REQUESTS CONCURRENCY MAX_SECONDS");
    };
    ensure!(
        base.starts_with("http://127.0.0.1:"),
        "loopback only: {base}"
    );
    let expected: usize = cells.parse().context("CELLS")?;
    let requests: u64 = requests.parse().context("REQUESTS")?;
    let concurrency: u64 = concurrency.parse().context("CONCURRENCY")?;
    let max = Duration::from_secs(max_seconds.parse().context("MAX_SECONDS")?);
    let http = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()?;
    let cookie = sign_in(&http, base, key).await?;
    let url = format!("{base}{path}");

    // The page is the one meant: its cells are there.
    let page = http
        .get(&url)
        .header(COOKIE, &cookie)
        .header(ACCEPT_LANGUAGE, "en")
        .send()
        .await?;
    ensure!(page.status() == 200, "{url}: {}", page.status());
    let body = page.text().await?;
    let cells = body.matches("class=\"cell ").count();
    ensure!(
        cells >= expected,
        "{cells} cells on the page, fewer than {expected}"
    );
    eprintln!(
        "console-load: {path} is {} bytes, {cells} cells, {} timeline bars",
        body.len(),
        body.matches("class=\"segment\"").count()
    );

    let bytes = body.len();
    load::closed_loop("pages", requests, concurrency, max, bytes, move || {
        let (http, url, cookie) = (http.clone(), url.clone(), cookie.clone());
        async move {
            match http
                .get(&url)
                .header(COOKIE, &cookie)
                .header(ACCEPT_LANGUAGE, "en")
                .send()
                .await
            {
                Ok(res) => res.status() == 200 && res.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}
