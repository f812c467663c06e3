//! README.md's example commands, run as a reader would run them: every `sh` block (and the `sql`
//! one) is taken from README.md and run against a pipeline of the test's own, with only the
//! addresses, secrets, paths and the binaries' directory put in. Each command's answer is checked
//! against what README says it does; a command without a check here fails the test, so a new
//! example cannot go untried.
//!
//! A block is skipped only when README marks it, on the line before its fence, with
//! `<!-- not run by tests/tests/e2e/readme.rs: why -->` (what our machines lack, such as a Docker
//! engine); the test names each skipped block with its reason. "Your data" is run by
//! `your_data.rs` with the same reader.
//!
//! Reads of what the workers apply are asynchronous: a command that reads (a GET, `psql`) is run
//! again until its answer is the one README describes, as a reader would run it again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kollus_test_support::kollus_api::video;
use kollus_test_support::{
    eventually, eventually_ok, free_port, scrape, workspace_root, FakeKollusApi,
};

use crate::stack::*;

/// One fenced block of README.md.
#[derive(Debug, Clone)]
pub struct Block {
    /// The heading the block is under, without its `#`s.
    pub section: String,
    /// README.md's line of the opening fence (1-based).
    pub line: usize,
    /// `sh` or `sql`.
    pub lang: String,
    pub commands: Vec<Example>,
    /// The reason README gives for not running it.
    pub not_run: Option<String>,
}

/// One command of a block (`\`-continued lines joined; a SQL statement up to its `;`), with
/// the comment lines right after it (README's word for what it prints).
#[derive(Debug, Clone)]
pub struct Example {
    pub text: String,
    pub prints: Vec<String>,
}

const NOT_RUN: &str = "<!-- not run by tests/tests/e2e/readme.rs:";

/// Every `sh` and `sql` block of README.md, in order.
pub fn blocks() -> Vec<Block> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut previous = "";
    let mut current: Option<Block> = None;
    let mut continued = String::new();
    // Inside a fence without a language (a picture, output): nothing in it is a heading.
    let mut plain = false;
    for (i, line) in readme.lines().enumerate() {
        if current.is_none() && (plain || line == "```") {
            plain ^= line == "```";
        } else if let Some(block) = current.as_mut() {
            if line == "```" {
                blocks.push(current.take().unwrap());
            } else if !continued.is_empty() || !line.trim().is_empty() {
                let trimmed = line.trim();
                if continued.is_empty() && trimmed.starts_with('#') && block.lang == "sh" {
                    // A comment after a command says what it prints; before one, what it does.
                    if let Some(last) = block.commands.last_mut() {
                        last.prints
                            .push(trimmed.trim_start_matches('#').trim().to_owned());
                    }
                } else if let Some(head) = line.strip_suffix('\\') {
                    continued.push_str(head);
                } else if block.lang == "sql" && !line.ends_with(';') {
                    // A statement ends at its `;`.
                    continued.push_str(line);
                    continued.push('\n');
                } else {
                    continued.push_str(line);
                    block.commands.push(Example {
                        text: std::mem::take(&mut continued),
                        prints: Vec::new(),
                    });
                }
            }
        } else if let Some(lang) = line.strip_prefix("```").filter(|l| !l.is_empty()) {
            let not_run = previous
                .strip_prefix(NOT_RUN)
                .and_then(|r| r.strip_suffix("-->"))
                .map(|r| r.trim().to_owned());
            current = Some(Block {
                section: section.clone(),
                line: i + 1,
                lang: lang.to_owned(),
                commands: Vec::new(),
                not_run,
            });
        } else if line.starts_with('#') {
            section = line.trim_start_matches('#').trim().to_owned();
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    blocks
}

/// The prose between the block at `line` and the next heading.
pub fn prose_after(line: usize) -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let mut out = String::new();
    let mut in_block = true;
    for l in readme.lines().skip(line) {
        if in_block {
            in_block = l != "```";
            continue;
        }
        if l.starts_with('#') {
            break;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// What a command printed.
#[derive(Debug)]
pub struct Ran {
    pub command: String,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The HTTP statuses curl answered, in order (curl writes them to stderr: see [`Reader`]).
    pub fn statuses(&self) -> Vec<u16> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("HTTP "))
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }
}

/// A terminal: runs README's commands one by one from `cwd` in bash, with what the test puts in
/// for addresses, secrets and paths. Assignments (`F=...`, `export K=...`) carry over to the
/// commands after them. Every `curl -s` also writes `HTTP <status>` to stderr, so a check can
/// read the status without changing what the command prints.
pub struct Reader {
    cwd: PathBuf,
    env: Vec<(String, String)>,
    put_in: Vec<(String, String)>,
    assignments: String,
}

impl Reader {
    pub fn new(cwd: &Path) -> Self {
        Self {
            cwd: cwd.to_owned(),
            env: vec![
                ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
                ("LOG_FORMAT".into(), "text".into()),
                ("RUST_LOG".into(), "warn".into()),
            ],
            put_in: vec![(
                "curl -s ".into(),
                "curl -sS -w '%{stderr}HTTP %{http_code}\\n' ".into(),
            )],
            assignments: String::from("set -euo pipefail\n"),
        }
    }

    /// The pipeline's addresses and secrets for README's development ones, and the binaries'
    /// directory for `target/debug/`.
    pub fn for_stack(cwd: &Path, stack: &Stack) -> Self {
        let bin_dir = binary("ingest").parent().unwrap().display().to_string();
        // The stack's topics and groups (the broker is shared): a command of README's that
        // names its own broker (a new cluster's) keeps the topic names.
        let mut reader = Self::new(cwd);
        for (name, value) in stack.broker.env() {
            reader = reader.env(name, &value);
        }
        // The stack's key files: history-worker tags subjects, and the archive's frames open,
        // with the keys the services used.
        for (name, value) in kollus_test_support::key_files().env() {
            reader = reader.env(name, &value);
        }
        reader
            .env("DATABASE_URL", &stack.db.url)
            .put_in("http://127.0.0.1:8080", &stack.ingest)
            .put_in("http://127.0.0.1:8081", &stack.token_api)
            .put_in(
                "127.0.0.1:8081",
                stack.token_api.trim_start_matches("http://"),
            )
            .put_in("dev-callback-secret", CALLBACK_SECRET)
            .put_in("dev-play-callback-secret", PLAY_CALLBACK_SECRET)
            .put_in("dev-lms-callback-secret", LMS_CALLBACK_SECRET)
            .put_in("dev-api-key-0123456789", API_KEY)
            .put_in("dev-console-key-0123456789", CONSOLE_KEY)
            .put_in(
                "psql -h 127.0.0.1 -U postgres -d kollus",
                &format!("psql '{}'", stack.db.url),
            )
            .put_in("target/debug/", &format!("{bin_dir}/"))
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn put_in(mut self, what: &str, with: &str) -> Self {
        self.put_in.push((what.into(), with.into()));
        self
    }

    /// `command` with the test's values put in.
    pub fn line(&self, command: &str) -> String {
        self.put_in
            .iter()
            .fold(command.to_owned(), |line, (what, with)| {
                line.replace(what, with)
            })
    }

    /// Keeps an assignment for the commands after it; false when `command` is not one.
    fn assign(&mut self, line: &str) -> bool {
        if !is_assignment(line) {
            return false;
        }
        self.assignments.push_str(line);
        self.assignments.push('\n');
        true
    }

    fn bash(&self, line: &str) -> Command {
        // `exec` (through `env` for a leading `NAME=value`), so the process a test holds, and
        // kills at the end, is the command itself.
        let first = line.split_whitespace().next().unwrap_or("");
        let exec = if first.contains('=') {
            "exec env "
        } else if line.contains('|') || line.contains("&&") || line.contains(';') {
            ""
        } else {
            "exec "
        };
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("{}{exec}{line}", self.assignments))
            .current_dir(&self.cwd)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `command` to its end; None for an assignment (kept for the commands after it).
    pub async fn run(&mut self, command: &str) -> Option<Ran> {
        let line = self.line(command);
        if self.assign(&line) {
            return None;
        }
        Some(self.again(command).await)
    }

    /// Runs `command` (not an assignment) again, as the same terminal.
    async fn again(&self, command: &str) -> Ran {
        let line = self.line(command);
        let mut cmd = self.bash(&line);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("running bash");
        Ran {
            command: line,
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `command` in the background (a worker), as `name`.
    pub fn spawn(&mut self, name: &'static str, command: &str) -> Process {
        let line = self.line(command);
        let child = self.bash(&line).spawn().expect("starting bash");
        Process { name, child }
    }
}

/// `NAME=value` alone (the value may be quoted), or `export NAME=value`.
fn is_assignment(line: &str) -> bool {
    let line = line.strip_prefix("export ").unwrap_or(line).trim();
    let Some((name, value)) = line.split_once('=') else {
        return false;
    };
    let name_ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let value_ok = match value.chars().next() {
        Some(q @ ('\'' | '"')) => {
            value.len() >= 2 && value.ends_with(q) && value[1..value.len() - 1].find(q).is_none()
        }
        _ => !value.contains(char::is_whitespace),
    };
    name_ok && value_ok
}

/// What README says a command does: the HTTP statuses curl must answer, and text its output
/// must hold (once the workers have applied what it reads, for a read).
struct Says {
    /// A substring naming the command in its section.
    command: &'static str,
    statuses: &'static [u16],
    prints: &'static [&'static str],
    /// A read of what the workers apply: run again until it answers as README says.
    read: bool,
}

const fn says(
    command: &'static str,
    statuses: &'static [u16],
    prints: &'static [&'static str],
) -> Says {
    Says {
        command,
        statuses,
        prints,
        read: false,
    }
}

const fn reads(
    command: &'static str,
    statuses: &'static [u16],
    prints: &'static [&'static str],
) -> Says {
    Says {
        command,
        statuses,
        prints,
        read: true,
    }
}

/// "Try it", command by command.
const TRY_IT: &[Says] = &[
    says("@$F/lms-seed.form", &[200], &["{\"id\":\""]),
    says("@$F/channel-join-seed.form", &[200], &["{\"id\":\""]),
    says(
        "secret=dev-callback-secret\" --data-binary @$F/channel-join.form",
        &[200],
        &["{\"id\":\""],
    ),
    says("secret=wrong", &[401], &[]),
    says(
        "channel?secret=dev-lms-callback-secret",
        &[401],
        &["unauthorized"],
    ),
    reads(
        "psql",
        &[],
        &[
            " 181353         | mediacontentkey   |",
            " mediacontentkey   | t",
            " vnCVPVyV          | t",
        ],
    ),
    says(
        "/v1/playback-tokens",
        &[201],
        &[
            "\"token\":\"ey",
            "\"url\":\"https://v.kr.kollus.com/s?jwt=ey",
        ],
    ),
    reads(
        "/progress",
        &[200],
        &[
            "\"count\":30,\"watched\":5",
            "\"watched_blocks\":[21,22,23,24,25]",
        ],
    ),
    reads(
        "/history?limit=10",
        &[200],
        &["\"media_content_key\":\"mediacontentkey\""],
    ),
    reads("/v1/media/vnCVPVyV", &[200], &["\"playable\":true"]),
    says("/openapi.json", &[200], &["\"openapi\":\"3."]),
    says("lms-android-hash.form", &[200], &["{\"id\":\""]),
    says("lms-query-string.url", &[200], &["{\"id\":\""]),
    reads(
        "fixture-user-7/history",
        &[200],
        &["\"media_content_key\":\"fxAndr01\"", "\"verified\":false"],
    ),
    says("-d 'userid=u1&pt=30'", &[400], &["lms_document_missing"]),
    says("/metrics", &[], &["kollus_ingest_requests_total{"]),
];

/// "Playback authorization", command by command.
const AUTHORIZATION: &[Says] = &[
    says(
        "/entitlements/media/mediacontentkey",
        &[200, 201],
        &["\"playtime_limit_seconds\":3600"],
    ),
    says("-d '{}'", &[200, 201], &["\"scope\":\"channel\""]),
    says(
        "curl -s -H \"$K\" http://127.0.0.1:8081/v1/users/181353/entitlements",
        &[200],
        &["ch-main"],
    ),
    says("-X DELETE", &[204], &[]),
    // Allowed, with the hour granted less the seed report's 151 s played.
    says(
        "kind=1",
        &[200],
        &["\"result\":1", "\"expiration_playtime\":3449"],
    ),
];

/// "Courses", command by command: the seed report posted by hand counts nothing (unbound); posted
/// as its player does, its 151 s are capped by its 5 played blocks of 30.
const COURSES: &[Says] = &[
    says(
        "/v1/courses/safety-101",
        &[200, 201],
        &[
            "\"course_id\":\"safety-101\"",
            "\"completion\":{\"lesson_percent\":80,\"course_percent\":80,\"count\":\"showtime\",\"floor_percent\":50,\"unlock_percent\":80}",
            "\"refund\":\"academy\"",
        ],
    ),
    says(
        "/entitlements/course/safety-101",
        &[200],
        &["\"scope\":\"course\",\"key\":\"safety-101\""],
    ),
    reads(
        "a[\"unbound_sessions\"]",
        &[200],
        &["1 0 all"],
    ),
    // With the binding of a player URL token-api makes for 181353.
    says("sed 's/1593586044/1593590000/'", &[200], &["{\"id\":\""]),
    reads(
        "json.tool",
        &[200],
        &[
            "\"enrolled\": true,",
            "\"recognised_seconds\": 50,",
            "\"progress_percent\": 16,",
            "\"durations_known\": false,",
            "\"unbound_sessions\": 1,",
            "\"refund_percent\": 66.67,",
            "\"refund_share\": \"2/3\",",
        ],
    ),
];

fn says_for<'a>(table: &'a [Says], command: &str) -> &'a Says {
    let found: Vec<&Says> = table
        .iter()
        .filter(|s| command.contains(s.command))
        .collect();
    assert!(
        found.len() == 1,
        "README command {command:?}: {} checks in readme.rs name it (a new example needs one)",
        found.len()
    );
    found[0]
}

fn answers_as_said(ran: &Ran, says: &Says) -> Result<(), String> {
    let statuses = ran.statuses();
    let status_ok = says.statuses.is_empty() || statuses.iter().any(|s| says.statuses.contains(s));
    let missing: Vec<&&str> = says
        .prints
        .iter()
        .filter(|p| !ran.stdout.contains(**p))
        .collect();
    if ran.success && status_ok && missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "README command {:?}\nexited ok: {}, statuses {statuses:?} (README: {:?}), missing {missing:?}\nstdout:\n{}\nstderr:\n{}",
        ran.command, ran.success, says.statuses, ran.stdout, ran.stderr
    ))
}

/// Runs each command of `block` and checks it against `table`; returns what they printed.
async fn run_block(reader: &mut Reader, block: &Block, table: &[Says]) -> Vec<Ran> {
    let mut done = Vec::new();
    for example in &block.commands {
        let line = reader.line(&example.text);
        if is_assignment(&line) {
            reader.run(&example.text).await;
            continue;
        }
        let says = says_for(table, &example.text);
        let ran = if says.read {
            // Run again until it answers as README says; on a timeout, say what it answered.
            let reader = &*reader;
            eventually_ok(
                &format!("{line:?} to answer as README says"),
                SLACK,
                || async {
                    let ran = reader.again(&example.text).await;
                    answers_as_said(&ran, says).map(|()| ran)
                },
            )
            .await
        } else {
            let ran = reader.run(&example.text).await.unwrap();
            if let Err(e) = answers_as_said(&ran, says) {
                panic!("{e}");
            }
            ran
        };
        done.push(ran);
    }
    done
}

/// Signs in to the console through its form, as a browser would; returns the session cookie.
async fn console_sign_in(http: &reqwest::Client, base: &str, key: &str) -> String {
    let form = http
        .get(format!("{base}/console/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let csrf = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next()?.strip_prefix("console_login_csrf="))
        .expect("a CSRF cookie")
        .to_owned();
    let res = http
        .post(format!("{base}/console/login"))
        .header("cookie", format!("console_login_csrf={csrf}"))
        .form(&[("key", key), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "signing in with README's key");
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.split(';')
                .next()
                .filter(|p| p.starts_with("console_session="))
        })
        .expect("a session cookie")
        .to_owned()
}

/// The console pages the prose after "Try it" sends a reader to, checked against what it says.
async fn the_console_as_readme_describes(stack: &Stack, prose: &str) {
    assert!(
        prose.contains("dev-console-key-0123456789"),
        "README names make run's console key: {prose}"
    );
    let run_sh = std::fs::read_to_string(workspace_root().join("scripts/run.sh")).unwrap();
    assert!(
        run_sh.contains("dev_console_key=dev-console-key-0123456789"),
        "the key README names is the one make run configures"
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = console_sign_in(&http, &stack.token_api, CONSOLE_KEY).await;
    let urls: Vec<&str> = prose
        .match_indices("http://127.0.0.1:8081/console/")
        .map(|(at, _)| {
            let rest = &prose[at..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            rest[..end].trim_end_matches(['.', ',', ':', ')'])
        })
        .collect();
    assert_eq!(urls.len(), 4, "the console pages README names: {urls:?}");
    let mut pages = Vec::new();
    for url in &urls {
        let path = url.trim_start_matches("http://127.0.0.1:8081");
        let res = http
            .get(format!("{}{path}", stack.token_api))
            .header("cookie", &cookie)
            .header("accept-language", "en")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{url}");
        pages.push((path.to_owned(), res.text().await.unwrap()));
    }
    let page = |suffix: &str| {
        pages
            .iter()
            .find(|(p, _)| p.ends_with(suffix))
            .map(|(_, body)| body.as_str())
            .unwrap_or_else(|| panic!("README sends the reader to a page ending {suffix}"))
    };
    assert!(page("/console/").contains("name=\"q\""), "the search form");
    let user = page("/users/181353");
    for said in [
        "mediacontentkey",
        "lecture-seed.mp4",
        "5 / 30",
        // The reader's own visit and the walk-through's API reads, in the access list.
        "<td><span class=\"who\">support</span></td><td><code>view_user</code></td>",
        "<code>api_read</code> <span class=\"open\">",
    ] {
        assert!(
            user.contains(said),
            "the user's page shows {said:?}: {user}"
        );
    }
    let refund = page("/users/181353/media/mediacontentkey");
    assert_eq!(refund.matches("class=\"union ").count(), 30, "{refund}");
    assert_eq!(
        refund.matches("class=\"cell ").count(),
        30,
        "one session of 30 blocks"
    );
    assert!(refund.contains("badge unsigned"), "{refund}");
    assert!(
        refund.contains("/console/users/181353/export.csv")
            && refund.contains("/console/users/181353/export.jsonl")
    );
    let android = page("/users/fixture-user-7/media/fxAndr01");
    assert_eq!(
        android.matches("class=\"cell ").count(),
        30,
        "one session: {android}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_command_runs_and_does_what_readme_says() {
    let blocks = blocks();
    let not_run: Vec<String> = blocks
        .iter()
        .filter_map(|b| {
            Some(format!(
                "{} (line {}): {}",
                b.section,
                b.line,
                b.not_run.as_ref()?
            ))
        })
        .collect();
    eprintln!(
        "README blocks not run, by README's own mark:\n  {}",
        not_run.join("\n  ")
    );
    // Skipped only for what a test cannot run: `make` itself, and Docker Compose (no engine);
    // or a block another test runs, named in the mark as `run by <file>`, a file that reads the
    // block out of README itself.
    for block in blocks.iter().filter(|b| b.not_run.is_some()) {
        let lacking = block
            .commands
            .iter()
            .any(|c| c.text.starts_with("make ") || c.text.contains("docker compose "));
        let run_elsewhere = block
            .not_run
            .as_deref()
            .and_then(|why| why.strip_prefix("run by "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|file| std::fs::read_to_string(workspace_root().join(file)).ok())
            .is_some_and(|test| {
                test.contains("README.md") && test.contains(&format!("```{}", block.lang))
            });
        assert!(
            lacking || run_elsewhere,
            "README marks a block it could run as not run: {block:#?}"
        );
    }
    assert!(not_run.len() >= 2, "{not_run:?}");

    let mut stack = Stack::start().await;
    let root = workspace_root();
    let mut reader = Reader::for_stack(&root, &stack);
    let db = stack.db.client().await;
    let fake = FakeKollusApi::start("e2e-kollus-api-token");
    let scratch = std::env::temp_dir().join(format!("kollus-e2e-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let mut ran_sections = Vec::new();
    let mut workers = Vec::new();

    for block in blocks.iter().filter(|b| b.not_run.is_none()) {
        match block.section.as_str() {
            "Try it" => {
                run_block(&mut reader, block, TRY_IT).await;
                the_console_as_readme_describes(&stack, &prose_after(block.line)).await;
            }
            "Rebuilding the tables from the archive and Kafka" => {
                // What `make run`'s archiver keeps in `.local/archive`: every record so far.
                let archive = scratch.join("archive");
                let dump = reader
                    .run(&format!(
                        "target/debug/kollus-archive dump --to {} --until-end",
                        archive.display()
                    ))
                    .await
                    .unwrap();
                assert!(dump.success, "{dump:?}");
                let before = kollus_test_support::db::history_snapshot(&db).await;
                assert!(!before.is_empty());
                // "1. stop every instance of that worker": then the README's command.
                stack.stop("history-worker");
                // Emptied first, so only the rebuild can make them equal again.
                db.execute("DELETE FROM watch_sessions", &[]).await.unwrap();
                let [example] = block.commands.as_slice() else {
                    panic!("one command: {block:?}")
                };
                let admin = format!("127.0.0.1:{}", free_port());
                let mut rebuild = Reader::for_stack(&root, &stack)
                    .env("LISTEN_ADDR", &admin)
                    .put_in(".local/archive", &archive.display().to_string());
                workers.push(rebuild.spawn("history-worker --rebuild", &example.text));
                eventually(
                    "the rebuilt history to equal the history before",
                    SLACK,
                    || async {
                        (kollus_test_support::db::history_snapshot(&db).await == before)
                            .then_some(())
                    },
                )
                .await;
                // Its progress, on /metrics: the 3 reports the archive holds, all replayed.
                let base = format!("http://{admin}");
                for state in ["done", "total"] {
                    let sample = format!("kollus_history_rebuild_records{{state=\"{state}\"}}");
                    assert_eq!(scrape(&base, &sample).await, Some(3.0), "{sample}");
                }
            }
            "Your data" => continue,
            "Playback authorization" if block.lang == "sh" => {
                let ran = run_block(&mut reader, block, AUTHORIZATION).await;
                assert_eq!(ran.len(), 5, "the commands that print");
            }
            "Courses" => {
                let ran = run_block(&mut reader, block, COURSES).await;
                assert_eq!(ran.len(), 5);
            }
            "Playback authorization" => {
                // The decisions and changes those commands left.
                assert_eq!(block.lang, "sql");
                for example in block.commands.iter() {
                    let rows = db
                        .query(&example.text.replace(';', ""), &[])
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e}", example.text));
                    assert!(
                        !rows.is_empty(),
                        "README's query finds what the commands did: {}",
                        example.text
                    );
                }
            }
            "Bringing an existing Kollus account" | "After an outage" => {
                let out = catalog_block(&stack, &fake, &scratch, block).await;
                if block.section == "After an outage" {
                    for said in &block.commands[0].prints[..2] {
                        assert!(out.contains(said.as_str()), "sweep prints {said:?}: {out}");
                    }
                    let summary = &block.commands[0].prints[2];
                    let head = &summary[..summary.find(';').unwrap()];
                    assert!(out.contains(head), "sweep prints {head:?}: {out}");
                } else {
                    assert!(
                        out.contains("uploads in 4 channels published as snapshots"),
                        "{out}"
                    );
                }
            }
            other => panic!(
                "README's block at line {} (section {other:?}) is run by no test: run it in \
                 readme.rs, or mark it with `{NOT_RUN} why -->`",
                block.line
            ),
        }
        ran_sections.push(block.section.clone());
    }
    for section in [
        "Try it",
        "Rebuilding the tables from the archive and Kafka",
        "Playback authorization",
        "Courses",
        "Bringing an existing Kollus account",
        "After an outage",
    ] {
        assert!(
            ran_sections.iter().any(|s| s == section),
            "{section} was run"
        );
    }
    drop(workers);
    fake.stop().await;
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Runs a `kollus-catalog` block against the stand-in for Kollus's API (an account holding the
/// walk-through's two videos, then missing a join and a delete in an outage); returns stdout.
async fn catalog_block(
    stack: &Stack,
    fake: &FakeKollusApi,
    scratch: &Path,
    block: &Block,
) -> String {
    if block.section == "Bringing an existing Kollus account" {
        fake.add_channel("ch-main", "Main");
        fake.add_channel("channelkey", "Seed course");
        fake.add_channel("cha00001", "Course A");
        fake.add_channel("chb00001", "Course B");
        fake.add_video(video("ufk-0001", 1, &[("ch-main", "vnCVPVyV")]));
        fake.add_video(video("ufk-seed", 2, &[("channelkey", "mediacontentkey")]));
        fake.add_video(video("u1", 3, &[("cha00001", "m1a")]));
        fake.add_video(video("u2", 4, &[("cha00001", "m2a")]));
        fake.add_video(video("u3", 5, &[("cha00001", "m3a")]));
    } else {
        // The outage: a join and a delete whose callbacks never came.
        fake.join("u2", "chb00001", "m2b");
        fake.delete_video("u3");
    }
    let mut reader = Reader::for_stack(scratch, stack)
        .env("KOLLUS_API_URL", &fake.url)
        // The sweep's wait before it believes an absence, 300 s by default, is not the test's.
        .env("KOLLUS_ABSENCE_GRACE_SECONDS", "0")
        .put_in("<the API access token>", "e2e-kollus-api-token")
        .put_in(
            "DATABASE_URL=...",
            &format!("DATABASE_URL='{}'", stack.db.url),
        );
    let mut out = String::new();
    for example in &block.commands {
        let ran = reader.run(&example.text).await.expect("a command");
        assert!(ran.success, "{ran:?}");
        out.push_str(&ran.stdout);
    }
    out
}
