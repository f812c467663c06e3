//! Where segments go: a local directory (every write fsynced, file and directory; objects only
//! ever created, never replaced) or an S3-compatible bucket (`s3://bucket/prefix`; credentials, region and endpoint from the usual
//! `AWS_*` variables, e.g. `AWS_ENDPOINT=http://127.0.0.1:9000 AWS_ALLOW_HTTP=true`, or given
//! to [`Archive::open_s3`]).

use std::sync::Arc;

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};

#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    /// For logs: the DIR as given.
    pub location: String,
}

/// What [`Archive::create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    /// The object was there already with the same content (a retry after a crash).
    AlreadyThere,
}

impl Archive {
    /// The archive at `dir`, for writing: a directory is created when missing.
    pub fn open(dir: &str) -> anyhow::Result<Self> {
        Self::open_with(dir, true, None)
    }

    /// The archive at `dir`, for reading: a directory that does not exist is an error, never an
    /// empty archive (a mistyped path must not read as "nothing archived").
    pub fn open_existing(dir: &str) -> anyhow::Result<Self> {
        Self::open_with(dir, false, None)
    }

    /// The archive at `s3://bucket/prefix` with the S3 settings given here, by object_store's
    /// names (`aws_endpoint`, `aws_region`, `aws_access_key_id`, `aws_allow_http`, ...), and
    /// none read from the process's `AWS_*` variables: for a program that talks to more than one
    /// S3 server at once (tests sharing a process), where process-wide variables would be shared.
    pub fn open_s3(dir: &str, config: &[(&str, &str)]) -> anyhow::Result<Self> {
        anyhow::ensure!(dir.starts_with("s3://"), "{dir}: not an s3:// location");
        let mut builder = AmazonS3Builder::new();
        for (key, value) in config {
            let key = key
                .parse()
                .with_context(|| format!("S3 setting {key} for {dir}"))?;
            builder = builder.with_config(key, *value);
        }
        Self::open_with(dir, true, Some(builder))
    }

    /// `s3`: the S3 settings, when not those of the `AWS_*` variables.
    fn open_with(dir: &str, create: bool, s3: Option<AmazonS3Builder>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !dir.trim().is_empty(),
            "no archive location given (ARCHIVE_DIR or --from/--to)"
        );
        let store: Arc<dyn ObjectStore> = if let Some(rest) = dir.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            anyhow::ensure!(!bucket.is_empty(), "{dir}: no bucket named");
            let s3 = s3
                .unwrap_or_else(AmazonS3Builder::from_env)
                .with_bucket_name(bucket)
                .build()
                .with_context(|| format!("opening {dir}"))?;
            if prefix.trim_matches('/').is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix.trim_matches('/')))
            }
        } else {
            if create {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
            } else {
                anyhow::ensure!(
                    std::path::Path::new(dir).is_dir(),
                    "{dir}: no such directory, so no archive there"
                );
            }
            Arc::new(
                LocalFileSystem::new_with_prefix(dir)
                    .with_context(|| format!("opening {dir}"))?
                    .with_fsync(true),
            )
        };
        Ok(Self {
            store,
            location: dir.to_owned(),
        })
    }

    /// Creates `path` with `bytes`, whole (a reader never sees part of it) and durably (a local
    /// file and its directory are fsynced; an S3 PUT is durable when it returns), and never
    /// over an existing object: a local file is linked in place only if the name is free; S3
    /// gets `If-None-Match: *`. When the object exists already, it counts as written if `same`
    /// says its content is ours (a retry after a crash converges); otherwise it is a collision,
    /// an error, and the object is left as it was.
    pub async fn create(
        &self,
        path: &str,
        bytes: Vec<u8>,
        same: impl FnOnce(&[u8]) -> bool,
    ) -> anyhow::Result<Created> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Path::from(path), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Created::New),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.get(path).await?;
                anyhow::ensure!(
                    same(&existing),
                    "{path} exists in {} with other content: a collision; the existing object is \
                     kept and nothing is written over it",
                    self.location
                );
                Ok(Created::AlreadyThere)
            }
            Err(e) => {
                Err(anyhow::Error::from(e).context(format!("writing {path} to {}", self.location)))
            }
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<bytes::Bytes> {
        let got = self
            .store
            .get(&Path::from(path))
            .await
            .with_context(|| format!("reading {path} from {}", self.location))?;
        Ok(got.bytes().await?)
    }

    /// The object at `path`, `None` when there is none.
    pub async fn get_opt(&self, path: &str) -> anyhow::Result<Option<bytes::Bytes>> {
        match self.store.get(&Path::from(path)).await {
            Ok(got) => Ok(Some(got.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => {
                Err(anyhow::Error::from(e)
                    .context(format!("reading {path} from {}", self.location)))
            }
        }
    }

    /// For a local directory: fsyncs the directory that held `path`, so a delete survives a
    /// power loss (object_store's local delete unlinks without it). Nothing for S3.
    fn sync_parent(&self, path: &str) -> anyhow::Result<()> {
        if self.location.starts_with("s3://") {
            return Ok(());
        }
        let full = std::path::Path::new(&self.location).join(path);
        if let Some(dir) = full.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {} after a delete", dir.display()))?;
        }
        Ok(())
    }

    /// Deletes `path` (for the key location only: segments are never deleted); whether it was
    /// there. A local file is gone from its directory when this returns; an S3 DELETE is not
    /// undone by anything but a versioned bucket, which a key location must not be.
    pub async fn delete(&self, path: &str) -> anyhow::Result<bool> {
        match self.store.delete(&Path::from(path)).await {
            Ok(()) => {
                self.sync_parent(path)?;
                Ok(true)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => {
                Err(anyhow::Error::from(e).context(format!("deleting {path} in {}", self.location)))
            }
        }
    }

    /// Every object under `prefix`, by path.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut paths: Vec<String> = self
            .store
            .list(Some(&Path::from(prefix)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .with_context(|| format!("listing {prefix} in {}", self.location))?;
        paths.sort();
        Ok(paths)
    }
}
