//! Where segments go: a local directory (every write fsynced, file and directory) or an
//! S3-compatible bucket (`s3://bucket/prefix`; credentials, region and endpoint from the usual
//! `AWS_*` variables, e.g. `AWS_ENDPOINT=http://127.0.0.1:9000 AWS_ALLOW_HTTP=true`).

use std::sync::Arc;

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    /// For logs: the DIR as given.
    pub location: String,
}

impl Archive {
    pub fn open(dir: &str) -> anyhow::Result<Self> {
        let store: Arc<dyn ObjectStore> = if let Some(rest) = dir.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            anyhow::ensure!(!bucket.is_empty(), "{dir}: no bucket named");
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .with_context(|| format!("opening {dir}"))?;
            if prefix.trim_matches('/').is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix.trim_matches('/')))
            }
        } else {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
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

    /// Writes `bytes` at `path` whole (a reader never sees part of it), durably: a local file
    /// and its directory are fsynced; an S3 PUT is durable when it returns.
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.store
            .put(&Path::from(path), PutPayload::from(bytes))
            .await
            .with_context(|| format!("writing {path} to {}", self.location))?;
        Ok(())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<bytes::Bytes> {
        let got = self
            .store
            .get(&Path::from(path))
            .await
            .with_context(|| format!("reading {path} from {}", self.location))?;
        Ok(got.bytes().await?)
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
