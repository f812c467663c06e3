//! A stand-in for Kollus's v0 REST API (SPEC.md section 7) on 127.0.0.1, answering exactly the
//! documented shapes and their quirks: `items` as `[]` or `{}` when empty (no `item`), `item` an
//! object for one result and an array for several; `duration` as `"MM:SS"` under an hour and
//! `"HH:MM:SS"` above; numbers sometimes as strings; the library's media content keys only inside
//! `channels[]`; `{"error": 1, "message": ...}` failures; 401 for a wrong token; 429 with
//! `Retry-After`. It records when each request came (never the token) so a test can check the
//! rate limit held, and it can be told to misbehave ([`Fault`]).
//!
//! Inferred, not documented: a detail request for an upload Kollus does not have answers 404.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// One video: an upload, in zero or more channels (one media content key in each).
#[derive(Debug, Clone)]
pub struct FakeVideo {
    pub upload_file_key: String,
    pub title: String,
    pub duration_seconds: u32,
    pub transcoding_stage: i64,
    /// (channel key, media content key)
    pub channels: Vec<(String, String)>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct FakeChannel {
    pub key: String,
    pub name: String,
}

/// A way to misbehave, applied to the next requests.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with `Retry-After: seconds`, for the next `times` requests.
    TooMany { times: u32, retry_after: u64 },
    /// 503 for the next `times` requests.
    Unavailable { times: u32 },
    /// `{"error": 1, "message": message}` (HTTP 200) for every request whose path ends with
    /// `path_suffix`.
    ErrorOne {
        path_suffix: String,
        message: String,
    },
    /// This body (HTTP 200) for every request whose path ends with `path_suffix`.
    Body { path_suffix: String, body: String },
    /// `302 Found` to `location` for every request.
    Redirect { location: String },
}

#[derive(Default)]
struct State {
    token: String,
    channels: Vec<FakeChannel>,
    videos: Vec<FakeVideo>,
    requests: Vec<(Instant, String)>,
    faults: Vec<Fault>,
    /// Uploads the lists leave out (a stale cached answer) though a detail request finds them.
    unlisted: Vec<String>,
}

/// The running stand-in. `url` is the base to give `KOLLUS_API_URL` (`http://127.0.0.1:<port>/0/`).
pub struct FakeKollusApi {
    pub url: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeKollusApi {
    /// Starts an empty account that accepts `token`.
    pub fn start(token: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            ..State::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake Kollus API");
        let port = listener.local_addr().unwrap().port();
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(answer))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listening")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/0/"),
            state,
            handle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_channel(&self, key: &str, name: &str) {
        self.lock().channels.push(FakeChannel {
            key: key.into(),
            name: name.into(),
        });
    }

    pub fn add_video(&self, video: FakeVideo) {
        self.lock().videos.push(video);
    }

    /// Deletes a video in Kollus: it disappears from every list (there is no deleted flag).
    pub fn delete_video(&self, upload_file_key: &str) {
        self.lock()
            .videos
            .retain(|v| v.upload_file_key != upload_file_key);
    }

    /// Adds a video to a channel, as the console's "add to channel" does.
    pub fn join(&self, upload_file_key: &str, channel_key: &str, media_content_key: &str) {
        let mut s = self.lock();
        let v = s
            .videos
            .iter_mut()
            .find(|v| v.upload_file_key == upload_file_key)
            .expect("a video of the fake account");
        v.channels
            .push((channel_key.into(), media_content_key.into()));
    }

    /// Removes a video from a channel.
    pub fn leave(&self, upload_file_key: &str, channel_key: &str) {
        let mut s = self.lock();
        for v in s
            .videos
            .iter_mut()
            .filter(|v| v.upload_file_key == upload_file_key)
        {
            v.channels.retain(|(c, _)| c != channel_key);
        }
    }

    /// Leaves a video out of every list, as a stale cached list would, while a detail request
    /// still finds it.
    pub fn hide_from_lists(&self, upload_file_key: &str) {
        self.lock().unlisted.push(upload_file_key.into());
    }

    /// Issues a new token: the old one gets 401 from now on.
    pub fn reissue_token(&self, token: &str) {
        self.lock().token = token.into();
    }

    pub fn fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Paths of the requests received, in order (the token is never kept).
    pub fn request_paths(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Each request's path and its time after the first request, in order.
    pub fn requests(&self) -> Vec<(Duration, String)> {
        let s = self.lock();
        let Some((first, _)) = s.requests.first() else {
            return Vec::new();
        };
        s.requests
            .iter()
            .map(|(t, p)| (t.duration_since(*first), p.clone()))
            .collect()
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Builds a video with a plausible title and duration; `i` varies both.
pub fn video(upload_file_key: &str, i: u32, channels: &[(&str, &str)]) -> FakeVideo {
    FakeVideo {
        upload_file_key: upload_file_key.into(),
        title: format!("{}강 - 미적분 기초", i + 1),
        // Every 7th is longer than an hour: "HH:MM:SS".
        duration_seconds: if i % 7 == 0 { 3600 + i } else { 60 + i % 3000 },
        transcoding_stage: if i % 11 == 0 { 12 } else { 21 },
        channels: channels
            .iter()
            .map(|(c, m)| ((*c).to_owned(), (*m).to_owned()))
            .collect(),
        created_at: 1_700_000_000 + i64::from(i),
    }
}

fn duration(seconds: u32) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

/// `items` in v0's shapes: none as `[]` (`empty_as_array`) or `{}`, one as an object, several as
/// an array.
fn items(list: Vec<Value>, empty_as_array: bool) -> Value {
    match list.len() {
        0 if empty_as_array => json!([]),
        0 => json!({}),
        1 => json!({ "item": list.into_iter().next().unwrap() }),
        _ => json!({ "item": list }),
    }
}

fn ok(result: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({"error": 0, "message": "", "result": result}))
}

fn item_common(v: &FakeVideo) -> serde_json::Map<String, Value> {
    let mut o = serde_json::Map::new();
    o.insert("upload_file_key".into(), json!(v.upload_file_key));
    o.insert("title".into(), json!(v.title));
    o.insert("duration".into(), json!(duration(v.duration_seconds)));
    o.insert(
        "media_information".into(),
        json!({"file": {"raw_duration": u64::from(v.duration_seconds) * 1000}}),
    );
    o.insert("transcoding_stage".into(), json!(v.transcoding_stage));
    o.insert(
        "transcoding_stage_name".into(),
        json!(if v.transcoding_stage == 21 {
            "Transcoded"
        } else {
            "Transcoding"
        }),
    );
    o.insert(
        "poster_url".into(),
        json!(format!(
            "https://v.kr.kollus.com/poster/{}.jpg",
            v.upload_file_key
        )),
    );
    // Kollus sends some numbers as strings.
    o.insert("created_at".into(), json!(v.created_at.to_string()));
    o.insert("status".into(), json!(1));
    o.insert("use_encryption".into(), json!(0));
    o.insert("kind".into(), json!(1));
    o
}

fn library_item(v: &FakeVideo, channels: &[FakeChannel]) -> Value {
    let mut o = item_common(v);
    let list: Vec<Value> = v
        .channels
        .iter()
        .map(|(c, m)| {
            let name = channels
                .iter()
                .find(|ch| &ch.key == c)
                .map(|ch| ch.name.clone());
            json!({"channel_key": c, "channel_name": name, "media_content_key": m})
        })
        .collect();
    o.insert("channels".into(), Value::Array(list));
    Value::Object(o)
}

fn param(req: &HttpRequest, name: &str) -> Option<String> {
    form_pairs(req.query_string())
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn form_pairs(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn page(req: &HttpRequest) -> (usize, usize) {
    let page = param(req, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    let per_page = param(req, "per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100usize)
        .max(1);
    (page, per_page)
}

fn paged(all: Vec<Value>, page: usize, per_page: usize) -> Value {
    let count = all.len();
    let list: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    json!({"count": count, "per_page": per_page, "items": items(list, false)})
}

async fn answer(req: HttpRequest, state: web::Data<Mutex<State>>) -> HttpResponse {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let path = req.path().to_owned();
    s.requests.push((Instant::now(), path.clone()));
    if param(&req, "access_token").as_deref() != Some(s.token.as_str()) {
        return HttpResponse::Unauthorized()
            .json(json!({"error": 1, "message": "Invalid access token."}));
    }
    // Faults, in the order they were added; counted ones wear out.
    let mut i = 0;
    while i < s.faults.len() {
        match &mut s.faults[i] {
            Fault::TooMany { times, retry_after } => {
                let after = *retry_after;
                *times -= 1;
                if *times == 0 {
                    s.faults.remove(i);
                }
                return HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", after.to_string()))
                    .json(json!({"error": 1, "message": "Too many requests."}));
            }
            Fault::Unavailable { times } => {
                *times -= 1;
                if *times == 0 {
                    s.faults.remove(i);
                }
                return HttpResponse::ServiceUnavailable().body("upstream busy");
            }
            Fault::ErrorOne {
                path_suffix,
                message,
            } if path.ends_with(path_suffix.as_str()) => {
                return HttpResponse::Ok().json(json!({"error": 1, "message": message}));
            }
            Fault::Redirect { location } => {
                return HttpResponse::Found()
                    .insert_header(("Location", location.clone()))
                    .finish();
            }
            Fault::Body { path_suffix, body } if path.ends_with(path_suffix.as_str()) => {
                return HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body.clone());
            }
            _ => i += 1,
        }
    }
    let Some(rest) = path.strip_prefix("/0/") else {
        return HttpResponse::NotFound().finish();
    };
    match rest {
        "media/channel/index" => {
            let list: Vec<Value> = s
                .channels
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let n = s
                        .videos
                        .iter()
                        .filter(|v| !s.unlisted.contains(&v.upload_file_key))
                        .filter(|v| v.channels.iter().any(|(k, _)| k == &c.key))
                        .count();
                    json!({"key": c.key, "name": c.name, "position": i + 1, "status": 1,
                           "count_of_media_contents": n})
                })
                .collect();
            ok(
                json!({"kind": "package", "count": list.len(), "items": items(list, true),
                      "order": "position_asc"}),
            )
        }
        "media/channel/media_content" => {
            let Some(channel) = param(&req, "channel_key") else {
                return HttpResponse::Ok()
                    .json(json!({"error": 1, "message": "channel_key is required."}));
            };
            let (page, per_page) = page(&req);
            let all: Vec<Value> = s
                .videos
                .iter()
                .rev()
                .filter(|v| !s.unlisted.contains(&v.upload_file_key))
                .filter_map(|v| {
                    let (_, m) = v.channels.iter().find(|(k, _)| *k == channel)?;
                    let mut o = item_common(v);
                    o.insert("media_content_key".into(), json!(m));
                    Some(Value::Object(o))
                })
                .collect();
            ok(paged(all, page, per_page))
        }
        "media/library/media_content" => {
            let (page, per_page) = page(&req);
            let all: Vec<Value> = s
                .videos
                .iter()
                .rev()
                .filter(|v| !s.unlisted.contains(&v.upload_file_key))
                .map(|v| library_item(v, &s.channels))
                .collect();
            ok(paged(all, page, per_page))
        }
        other => match other.strip_prefix("media/library/media_content/") {
            Some(key) => match s.videos.iter().find(|v| v.upload_file_key == key) {
                Some(v) => ok(json!({"item": library_item(v, &s.channels)})),
                None => HttpResponse::NotFound()
                    .json(json!({"error": 1, "message": "Not found media content."})),
            },
            None => HttpResponse::NotFound().finish(),
        },
    }
}
