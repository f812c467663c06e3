//! The archive's S3 credentials from files (`AWS_ACCESS_KEY_ID_FILE`,
//! `AWS_SECRET_ACCESS_KEY_FILE`), as other secrets are read: the `kollus-archive` binary
//! against moto's S3 (`scripts/s3.sh`) with its IAM checks on, so a request is served only when
//! signed with the secret the file holds; a value and a file both given is refused by name.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kollus_test_support::{eventually, free_port, workspace_root};

/// A child process killed (SIGKILL) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Requests moto serves before it checks signatures: the bucket, then the IAM user, its policy
/// and its access key.
const UNCHECKED_REQUESTS: usize = 4;

/// An IAM request as moto routes it (by the credential scope's service); moto checks no
/// signature during its first [`UNCHECKED_REQUESTS`].
const IAM_SCOPE: &str = "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/aws4_request, \
                         SignedHeaders=host, Signature=unchecked";

/// moto on a free port with IAM checks on, a bucket, and a user allowed `s3:*`: its endpoint
/// and the user's access key id and secret.
async fn moto_with_a_user(bucket: &str) -> (KillOnDrop, String, String, String) {
    let bin = workspace_root().join(".local/moto-venv/bin/moto_server");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/s3.sh install",
        bin.display()
    );
    let port = free_port();
    let server = KillOnDrop(
        Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env(
                "INITIAL_NO_AUTH_ACTION_COUNT",
                UNCHECKED_REQUESTS.to_string(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server"),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("moto to take a bucket", Duration::from_secs(30), || async {
        let res = http.put(format!("{endpoint}/{bucket}")).send().await.ok()?;
        res.status().is_success().then_some(())
    })
    .await;
    let user = [("UserName", "archiver"), ("Version", "2010-05-08")];
    iam(
        &http,
        &endpoint,
        &[&user[..], &[("Action", "CreateUser")]].concat(),
    )
    .await;
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    let put_policy = [
        ("Action", "PutUserPolicy"),
        ("PolicyName", "archive"),
        ("PolicyDocument", policy),
    ];
    iam(&http, &endpoint, &[&user[..], &put_policy[..]].concat()).await;
    let key = iam(
        &http,
        &endpoint,
        &[&user[..], &[("Action", "CreateAccessKey")]].concat(),
    )
    .await;
    let between = |open: &str, close: &str| {
        let start = key.find(open).unwrap_or_else(|| panic!("{key}")) + open.len();
        key[start..start + key[start..].find(close).unwrap()].to_owned()
    };
    let id = between("<AccessKeyId>", "</AccessKeyId>");
    let secret = between("<SecretAccessKey>", "</SecretAccessKey>");
    (server, endpoint, id, secret)
}

/// An IAM request, answered without an error.
async fn iam(http: &reqwest::Client, endpoint: &str, form: &[(&str, &str)]) -> String {
    let res = http
        .post(format!("{endpoint}/"))
        .header("Authorization", IAM_SCOPE)
        .form(form)
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    assert!(!text.contains("<Error>"), "{text}");
    text
}

/// `kollus-archive verify --no-topics` on `location` with only `env` (and S3's endpoint):
/// exit code, stdout, stderr.
fn verify(
    location: &str,
    endpoint: &str,
    env: &[(&str, &Path)],
    values: &[(&str, &str)],
) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kollus-archive"))
        .args(["verify", "--no-topics", "--from", location])
        .env_clear()
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("KAFKA_BROKERS", format!("127.0.0.1:{}", free_port()))
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .envs(values.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running kollus-archive");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn s3_credentials_are_read_from_files_and_a_value_beside_its_file_is_refused() {
    let (_server, endpoint, id, secret) = moto_with_a_user("kollus-creds").await;
    let dir = tempfile::tempdir().unwrap();
    let id_file = dir.path().join("aws_access_key_id");
    let secret_file = dir.path().join("aws_secret_access_key");
    std::fs::write(&id_file, format!("{id}\n")).unwrap();
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let location = "s3://kollus-creds/backups";
    let files = [
        ("AWS_ACCESS_KEY_ID_FILE", id_file.as_path()),
        ("AWS_SECRET_ACCESS_KEY_FILE", secret_file.as_path()),
    ];

    // The files' credentials sign the listing: served (an empty archive, so status 1 and "no
    // manifest", said after the listing succeeded).
    let (code, out, err) = verify(location, &endpoint, &files, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("no manifest"),
        "listed with the files' key: {out}{err}"
    );
    for text in [&out, &err] {
        assert!(!text.contains(&secret), "the secret was printed: {text}");
    }

    // A wrong secret in the file: moto refuses the signature, so the file is what signs.
    let wrong_file = dir.path().join("wrong_secret");
    std::fs::write(&wrong_file, "not-the-secret-0123456789\n").unwrap();
    let wrong = [
        ("AWS_ACCESS_KEY_ID_FILE", id_file.as_path()),
        ("AWS_SECRET_ACCESS_KEY_FILE", wrong_file.as_path()),
    ];
    let (code, out, err) = verify(location, &endpoint, &wrong, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("UNREADABLE") && !out.contains("no manifest"),
        "refused with the wrong secret: {out}{err}"
    );

    // A value and its file both set: refused by name at start (status 2), the value not shown.
    for (name, value) in [
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ] {
        let (code, out, err) = verify(location, &endpoint, &files, &[(name, value)]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(
            err.contains(&format!("{name} and {name}_FILE are both set")),
            "{err}"
        );
        assert!(!err.contains(&secret) && !out.contains(&secret), "{err}");
    }

    // A file that cannot be read: refused by name at start.
    let missing = dir.path().join("missing");
    let (code, _, err) = verify(
        location,
        &endpoint,
        &[
            ("AWS_ACCESS_KEY_ID_FILE", id_file.as_path()),
            ("AWS_SECRET_ACCESS_KEY_FILE", missing.as_path()),
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY_FILE: reading"), "{err}");
}
