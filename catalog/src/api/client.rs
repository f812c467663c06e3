//! The HTTP client of Kollus's v0 API, used as Kollus asks (SPEC.md section 7): at most
//! `KOLLUS_API_RATE` requests a second, never more than one at a time (so never more than 60 a
//! minute at the default of 1/s); 429 waits `Retry-After`; 5xx and lost connections are retried
//! with the one `Backoff`; 401 stops at once (a reissued token invalidates the old one).
//!
//! The token travels in the query string, so no URL is ever logged or put in an error: requests
//! are named by their path and parameters, and reqwest's errors are stripped of their URL.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kollus_common::backoff::Backoff;
use kollus_common::domain::UploadFileKey;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use time::OffsetDateTime;

use super::wire::{self, ShapeError};
use crate::metrics::{Metrics, Outcome};

/// Why a request gave no answer to use. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "{what}: 401 Unauthorized. The API token was reissued in the console: a new token \
         invalidates the old one. Set KOLLUS_API_TOKEN (or KOLLUS_API_TOKEN_FILE) to the current one"
    )]
    Unauthorized { what: String },
    #[error("{what}: Kollus answered error {code}: {message}")]
    Refused {
        what: String,
        code: String,
        message: String,
    },
    #[error("{what}: the answer is not in a shape Kollus documents: {shape}")]
    Shape { what: String, shape: ShapeError },
    #[error("{what}: HTTP {status} after {attempts} attempts")]
    Status {
        what: String,
        status: u16,
        attempts: u32,
    },
    #[error("{what}: {error} after {attempts} attempts")]
    Transport {
        what: String,
        error: String,
        attempts: u32,
    },
}

/// Retries of a 5xx or a lost connection before giving up; and of 429s in a row.
const MAX_ATTEMPTS: u32 = 5;
const MAX_RATE_LIMITED: u32 = 10;
/// When a 429 carries no usable `Retry-After`: Kollus counts per minute.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

pub struct KollusApi {
    http: reqwest::Client,
    base: reqwest::Url,
    token: SecretString,
    limiter: DefaultDirectRateLimiter,
    metrics: Metrics,
    retry_start: Duration,
}

/// One answer, and when its request started (what a snapshot is dated by).
pub struct Answer {
    pub requested_at: OffsetDateTime,
    /// `None`: HTTP 404 (a detail request for an upload Kollus does not have).
    pub result: Option<Value>,
}

impl KollusApi {
    /// `rate`: requests a second (> 0). `retry_start`: the first wait after a 5xx.
    pub fn new(
        base: reqwest::Url,
        token: SecretString,
        rate: f64,
        metrics: Metrics,
        retry_start: Duration,
    ) -> anyhow::Result<Self> {
        let period = Duration::from_secs_f64(1.0 / rate);
        let quota = Quota::with_period(period)
            .ok_or_else(|| anyhow::anyhow!("KOLLUS_API_RATE {rate} gives no period"))?
            .allow_burst(NonZeroU32::MIN);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("kollus-catalog/", env!("CARGO_PKG_VERSION")))
            // A redirect would carry the token's URL to wherever it points (and into reqwest's
            // own log lines): a 3xx is an answer we refuse instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            base,
            token,
            limiter: RateLimiter::direct(quota),
            metrics,
            retry_start,
        })
    }

    /// GETs `path` (relative to `KOLLUS_API_URL`) with `params`; `what` names it in errors.
    pub async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Answer, ApiError> {
        let what = describe(path, params);
        let mut url = self.base.join(path).map_err(|e| ApiError::Transport {
            what: what.clone(),
            error: format!("building the URL: {e}"),
            attempts: 0,
        })?;
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .append_pair("access_token", self.token.expose_secret());
        let mut backoff = Backoff::new(self.retry_start, Duration::from_secs(60));
        let (mut failures, mut limited) = (0u32, 0u32);
        loop {
            self.limiter.until_ready().await;
            let requested_at = OffsetDateTime::now_utc();
            let started = Instant::now();
            let sent = self
                .http
                .get(url.clone())
                .header("Accept", "application/json")
                .send()
                .await;
            self.metrics
                .request_duration
                .observe(started.elapsed().as_secs_f64());
            let res = match sent {
                Ok(res) => res,
                Err(e) => {
                    failures += 1;
                    self.count(Outcome::TransportError);
                    let error = chain(&e.without_url());
                    if failures >= MAX_ATTEMPTS {
                        return Err(ApiError::Transport {
                            what,
                            error,
                            attempts: failures,
                        });
                    }
                    tracing::warn!(request = %what, %error, retry_in = ?backoff.next_delay(), "Kollus API unreachable");
                    backoff.wait().await;
                    continue;
                }
            };
            let status = res.status().as_u16();
            match status {
                200 => {}
                401 => {
                    self.count(Outcome::Unauthorized);
                    return Err(ApiError::Unauthorized { what });
                }
                404 => {
                    self.count(Outcome::NotFound);
                    return Ok(Answer {
                        requested_at,
                        result: None,
                    });
                }
                429 => {
                    limited += 1;
                    self.count(Outcome::RateLimited);
                    let wait = retry_after(res.headers()).unwrap_or(DEFAULT_RETRY_AFTER);
                    if limited > MAX_RATE_LIMITED {
                        return Err(ApiError::Status {
                            what,
                            status,
                            attempts: limited,
                        });
                    }
                    tracing::warn!(request = %what, retry_in = ?wait, "Kollus API: 429, waiting Retry-After");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                500..=599 => {
                    failures += 1;
                    self.count(Outcome::ServerError);
                    if failures >= MAX_ATTEMPTS {
                        return Err(ApiError::Status {
                            what,
                            status,
                            attempts: failures,
                        });
                    }
                    tracing::warn!(request = %what, status, retry_in = ?backoff.next_delay(), "Kollus API: server error, retrying");
                    backoff.wait().await;
                    continue;
                }
                _ => {
                    self.count(Outcome::Refused);
                    return Err(ApiError::Status {
                        what,
                        status,
                        attempts: failures + 1,
                    });
                }
            }
            let body = match res.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    failures += 1;
                    self.count(Outcome::TransportError);
                    if failures >= MAX_ATTEMPTS {
                        return Err(ApiError::Transport {
                            what,
                            error: chain(&e.without_url()),
                            attempts: failures,
                        });
                    }
                    backoff.wait().await;
                    continue;
                }
            };
            return match wire::envelope(&body) {
                Ok(wire::Envelope::Ok(result)) => {
                    self.count(Outcome::Ok);
                    Ok(Answer {
                        requested_at,
                        result: Some(result),
                    })
                }
                Ok(wire::Envelope::Refused { code, message }) => {
                    self.count(Outcome::Refused);
                    Err(ApiError::Refused {
                        what,
                        code,
                        message,
                    })
                }
                Err(shape) => {
                    self.count(Outcome::BadShape);
                    Err(ApiError::Shape { what, shape })
                }
            };
        }
    }

    fn count(&self, outcome: Outcome) {
        self.metrics
            .requests
            .with_label_values(&[<&str>::from(outcome)])
            .inc();
    }
}

/// `Retry-After` in seconds (Kollus's form; an HTTP date is not parsed and waits the default).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An error and its causes ("error sending request: ... Connection refused"), which reqwest's
/// own `Display` leaves out.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The path of one upload's detail, `media/library/media_content/{upload_file_key}`, relative
/// to `KOLLUS_API_URL`: the key one segment, percent-encoded (`.` too, as anything but
/// `A-Z a-z 0-9 - _`). A key is never dots only (`UploadFileKey` refuses it): no encoding makes
/// `..` safe, as a URL parser (the `url` crate's, a proxy's) resolves `%2E%2E` as `..` too, and
/// the request would go to the list above it.
pub fn upload_detail_path(upload: &UploadFileKey) -> String {
    let mut path = String::from("media/library/media_content/");
    for b in upload.as_str().bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
            path.push(b as char);
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// A request as logs and errors name it: the path and its parameters, never the token.
fn describe(path: &str, params: &[(&str, String)]) -> String {
    if params.is_empty() {
        return path.to_owned();
    }
    let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{path} ({})", p.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_named_without_its_token() {
        assert_eq!(
            describe(
                "media/channel/media_content",
                &[("channel_key", "abcd1234".into()), ("page", "2".into())]
            ),
            "media/channel/media_content (channel_key=abcd1234, page=2)"
        );
    }

    #[test]
    fn an_uploads_detail_path_stays_under_the_detail_route() {
        let base = reqwest::Url::parse("https://api.kr.kollus.com/0/").unwrap();
        for (key, encoded) in [
            ("ufk-0001", "ufk-0001"),
            ("a.b", "a%2Eb"),
            ("...a", "%2E%2E%2Ea"),
            ("_.", "_%2E"),
        ] {
            let path = upload_detail_path(&UploadFileKey::parse(key).unwrap());
            assert_eq!(path, format!("media/library/media_content/{encoded}"));
            let url = base.join(&path).unwrap();
            assert_eq!(
                url.path(),
                format!("/0/media/library/media_content/{encoded}"),
                "{key}"
            );
        }
        // What no encoding could keep in its place never becomes a key.
        for dots in [".", "..", "..."] {
            assert!(UploadFileKey::parse(dots).is_err(), "{dots}");
        }
        let resolved = base.join("media/library/media_content/%2E%2E").unwrap();
        assert_eq!(resolved.path(), "/0/media/library/", "why: %2E%2E is ..");
    }

    #[test]
    fn the_401_message_says_what_to_do() {
        let e = ApiError::Unauthorized {
            what: "media/channel/index".into(),
        };
        assert!(e
            .to_string()
            .contains("a new token invalidates the old one"));
    }
}
