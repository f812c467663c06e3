//! token-api's key files (`ACCESS_LOG_KEY_FILE`, `SUBJECT_TAG_KEY_FILE`, `ARCHIVE_KEK_FILE`) for
//! tests: random keys written once per test process into a directory of its own.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The three key files' settings: (environment variable, flag, path).
pub struct KeyFiles {
    pub dir: PathBuf,
    pub files: [(&'static str, &'static str, PathBuf); 3],
}

impl KeyFiles {
    /// As environment variables, for a spawned `token-api`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.files
            .iter()
            .map(|(var, _, path)| (*var, path.display().to_string()))
            .collect()
    }

    /// As `--flag=path` arguments, for [`crate::settings`].
    pub fn args(&self) -> Vec<String> {
        self.files
            .iter()
            .map(|(_, flag, path)| format!("{flag}={}", path.display()))
            .collect()
    }

    /// `ACCESS_LOG_KEY_FILE`'s path.
    pub fn access_log(&self) -> &PathBuf {
        &self.files[0].2
    }
}

/// This process's key files (made on first use).
pub fn key_files() -> &'static KeyFiles {
    static FILES: OnceLock<KeyFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kollus-test-keys-{}", std::process::id()));
        let file = |var: &'static str, flag: &'static str, name: &str| {
            let path = kollus_common::subject::write_random_key_file(&dir, name)
                .unwrap_or_else(|e| panic!("writing a test key file: {e:#}"));
            (var, flag, path)
        };
        KeyFiles {
            files: [
                file(
                    "ACCESS_LOG_KEY_FILE",
                    "--access-log-key-file",
                    "access-log.key",
                ),
                file(
                    "SUBJECT_TAG_KEY_FILE",
                    "--subject-tag-key-file",
                    "subject-tag.key",
                ),
                file("ARCHIVE_KEK_FILE", "--archive-kek-file", "archive-kek.key"),
            ],
            dir,
        }
    })
}
