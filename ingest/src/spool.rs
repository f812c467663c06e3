//! The on-disk spool: where a callback goes when Kafka cannot acknowledge it in time, so ingest
//! can still answer 200 (DESIGN.md, delivery contract item 1).
//!
//! Storage is [redb](https://docs.rs/redb): crash-safe, checksummed commits that are durable
//! (fsynced) when `commit` returns. Records are keyed by a sequence number, so they are
//! forwarded in the order they were spooled.
//!
//! One writer thread owns every write. It takes the first waiting append, drains whatever else
//! is queued (up to [`MAX_GROUP`]), commits them in one transaction and only then answers each
//! request: under load one fsync covers many callbacks. Removals after forwarding go through the
//! same thread, so writes are totally ordered.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");

/// Most appends committed together in one transaction.
const MAX_GROUP: usize = 4096;

/// A Kafka record waiting to be forwarded: exactly what would have been produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpooledRecord {
    pub topic: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
    /// The record value (an envelope or a dead letter, JSON).
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({used} of {limit} bytes); retry later")]
    Full { used: u64, limit: u64 },
    #[error("the spool could not store the record: {0}")]
    Storage(String),
}

/// Where the writer answers a request once its transaction committed (or failed).
type Reply = oneshot::Sender<Result<(), SpoolError>>;

enum Op {
    Append(Vec<u8>, Reply),
    /// Forwarded records: (sequence number, stored size).
    Remove(Vec<(u64, u64)>, Reply),
}

/// Handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    db: Arc<Database>,
    ops: mpsc::Sender<Op>,
    records: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    limit: u64,
    /// Woken whenever records are added, so the forwarder starts at once.
    pub appended: Arc<Notify>,
    path: PathBuf,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`. What a previous run left is kept, to be forwarded.
    pub fn open(dir: &Path, limit: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the spool directory {}", dir.display()))?;
        let path = dir.join("spool.redb");
        let db = Database::create(&path)
            .with_context(|| format!("opening the spool {}", path.display()))?;
        // Make sure the table exists, and count what a previous run left.
        let (records, bytes) = {
            let tx = db.begin_write()?;
            {
                tx.open_table(RECORDS)?;
            }
            tx.commit()?;
            let read = db.begin_read()?;
            let table = read.open_table(RECORDS)?;
            let mut bytes = 0u64;
            for entry in table.iter()? {
                bytes += entry?.1.value().len() as u64;
            }
            (table.len()?, bytes)
        };
        let next_seq = {
            let read = db.begin_read()?;
            let table = read.open_table(RECORDS)?;
            let last = table.last()?.map(|(k, _)| k.value());
            last.map_or(0, |k| k + 1)
        };
        if records > 0 {
            tracing::warn!(records, bytes, path = %path.display(), "spool holds records from a previous run; forwarding them");
        }
        let db = Arc::new(db);
        let (ops, rx) = mpsc::channel(MAX_GROUP * 4);
        let spool = Self {
            db: db.clone(),
            ops,
            records: Arc::new(AtomicU64::new(records)),
            bytes: Arc::new(AtomicU64::new(bytes)),
            limit,
            appended: Arc::new(Notify::new()),
            path,
        };
        let writer = Writer {
            db,
            rx,
            next_seq,
            records: spool.records.clone(),
            bytes: spool.bytes.clone(),
            appended: spool.appended.clone(),
        };
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run())
            .context("starting the spool writer")?;
        Ok(spool)
    }

    /// Stores a record durably; returns once it is on disk.
    pub async fn append(&self, record: &SpooledRecord) -> Result<(), SpoolError> {
        let encoded = serde_json::to_vec(record).map_err(|e| SpoolError::Storage(e.to_string()))?;
        let used = self.bytes.load(Ordering::Relaxed);
        if used + encoded.len() as u64 > self.limit {
            return Err(SpoolError::Full {
                used,
                limit: self.limit,
            });
        }
        let (done, wait) = oneshot::channel();
        self.ops
            .send(Op::Append(encoded, done))
            .await
            .map_err(|_| SpoolError::Storage("the spool writer has stopped".into()))?;
        wait.await
            .map_err(|_| SpoolError::Storage("the spool writer has stopped".into()))?
    }

    /// The oldest records, up to `max`, with their sequence numbers and stored sizes.
    pub fn oldest(&self, max: usize) -> anyhow::Result<Vec<(u64, u64, SpooledRecord)>> {
        let read = self.db.begin_read()?;
        let table = read.open_table(RECORDS)?;
        let mut out = Vec::new();
        for entry in table.iter()?.take(max) {
            let (k, v) = entry?;
            let bytes = v.value();
            let record: SpooledRecord = serde_json::from_slice(bytes)
                .with_context(|| format!("spool record {} is unreadable", k.value()))?;
            out.push((k.value(), bytes.len() as u64, record));
        }
        Ok(out)
    }

    /// Removes forwarded records (sequence number, stored size).
    pub async fn remove(&self, done: Vec<(u64, u64)>) -> Result<(), SpoolError> {
        let (tx, wait) = oneshot::channel();
        self.ops
            .send(Op::Remove(done, tx))
            .await
            .map_err(|_| SpoolError::Storage("the spool writer has stopped".into()))?;
        wait.await
            .map_err(|_| SpoolError::Storage("the spool writer has stopped".into()))?
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn is_full(&self) -> bool {
        self.bytes() >= self.limit
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

struct Writer {
    db: Arc<Database>,
    rx: mpsc::Receiver<Op>,
    next_seq: u64,
    records: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    appended: Arc<Notify>,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let (mut appends, mut removals) = (Vec::new(), Vec::new());
            for op in ops {
                match op {
                    Op::Append(v, done) => appends.push((v, done)),
                    Op::Remove(r, done) => removals.push((r, done)),
                }
            }
            let result = self.commit(&appends, &removals);
            let error = result.as_ref().err().map(|e| format!("{e:#}"));
            if let Some(e) = &error {
                tracing::error!(error = %e, "spool commit failed");
            }
            let answer = || match &error {
                None => Ok(()),
                Some(e) => Err(SpoolError::Storage(e.clone())),
            };
            let added = !appends.is_empty() && error.is_none();
            for (_, done) in appends {
                let _ = done.send(answer());
            }
            for (_, done) in removals {
                let _ = done.send(answer());
            }
            if added {
                self.appended.notify_one();
            }
        }
    }

    /// One transaction, one fsync, for a whole group.
    fn commit(
        &mut self,
        appends: &[(Vec<u8>, Reply)],
        removals: &[(Vec<(u64, u64)>, Reply)],
    ) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        let mut seq = self.next_seq;
        let (mut added_bytes, mut removed_bytes, mut removed) = (0u64, 0u64, 0u64);
        {
            let mut table = tx.open_table(RECORDS)?;
            for (value, _) in appends {
                table.insert(seq, value.as_slice())?;
                seq += 1;
                added_bytes += value.len() as u64;
            }
            for (done, _) in removals {
                for (k, size) in done {
                    if table.remove(k)?.is_some() {
                        removed += 1;
                        removed_bytes += size;
                    }
                }
            }
        }
        tx.commit()?;
        self.next_seq = seq;
        self.records
            .fetch_add(appends.len() as u64, Ordering::Relaxed);
        self.records.fetch_sub(removed, Ordering::Relaxed);
        self.bytes.fetch_add(added_bytes, Ordering::Relaxed);
        self.bytes.fetch_sub(removed_bytes, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> SpooledRecord {
        SpooledRecord {
            topic: "t".into(),
            key: format!("k{i}"),
            headers: vec![("id".into(), i.to_string())],
            value: format!("{{\"n\":{i}}}"),
        }
    }

    #[tokio::test]
    async fn records_survive_reopening_in_order_and_removal_is_durable() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", uuid::Uuid::now_v7()));
        {
            let spool = Spool::open(&dir, 1 << 20).unwrap();
            let appends: Vec<_> = (0..100)
                .map(|i| {
                    let s = spool.clone();
                    async move { s.append(&record(i)).await }
                })
                .collect();
            for r in futures_util::future::join_all(appends).await {
                r.unwrap();
            }
            assert_eq!(spool.records(), 100);
            let first: Vec<_> = spool.oldest(10).unwrap();
            spool
                .remove(first.iter().map(|(k, size, _)| (*k, *size)).collect())
                .await
                .unwrap();
            assert_eq!(spool.records(), 90);
        }
        // The writer thread lets go of the file once its channel closes; wait for that.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let spool = loop {
            match Spool::open(&dir, 1 << 20) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() > deadline => panic!("reopening: {e:#}"),
                Err(_) => std::thread::yield_now(),
            }
        };
        assert_eq!(spool.records(), 90);
        let left = spool.oldest(1000).unwrap();
        assert_eq!(left.len(), 90);
        assert!(
            left.windows(2).all(|w| w[0].0 < w[1].0),
            "in sequence order"
        );
        spool.append(&record(1000)).await.unwrap();
        assert_eq!(spool.oldest(1000).unwrap().last().unwrap().2, record(1000));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_full_spool_refuses() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", uuid::Uuid::now_v7()));
        let spool = Spool::open(&dir, 200).unwrap();
        spool.append(&record(1)).await.unwrap();
        spool.append(&record(2)).await.unwrap();
        assert!(matches!(
            spool.append(&record(3)).await,
            Err(SpoolError::Full { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
