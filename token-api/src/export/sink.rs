//! Where an export's bytes go: chunks handed to the response as they fill, each within the
//! chunk deadline (`EXPORT_CHUNK_DEADLINE_SECONDS`) and all before the export's own deadline
//! (`EXPORT_MAX_SECONDS`), so a client that stops reading holds the export's snapshot and
//! connection the chunk deadline at most, and one that reads slowly the export's deadline.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes per chunk written.
pub const CHUNK: usize = 64 * 1024;

/// Why a sink stopped taking bytes before the export's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The client took no chunk within the chunk deadline.
    Stalled,
    /// The export's own deadline passed while a chunk waited for the client.
    Overtime,
}

/// Writes rows into chunks and hands full chunks to the response.
pub struct Sink {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    deadline: Duration,
    ends_at: Instant,
    cut: Option<Cut>,
}

impl Sink {
    /// Each chunk within `deadline`, none after `ends_at`.
    pub fn new(tx: mpsc::Sender<Bytes>, deadline: Duration, ends_at: Instant) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
            deadline,
            ends_at,
            cut: None,
        }
    }

    /// False when the export should stop: the client went away, or took no chunk in time.
    pub async fn push(&mut self, bytes: &[u8]) -> bool {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            return self.flush().await;
        }
        true
    }

    /// False when the export should stop, as [`Sink::push`].
    pub async fn flush(&mut self) -> bool {
        if self.cut.is_some() {
            return false;
        }
        if self.buf.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        let chunk_due = Instant::now() + self.deadline;
        let due = chunk_due.min(self.ends_at);
        match tokio::time::timeout_at(due, self.tx.send(chunk)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                self.cut = Some(if due < chunk_due {
                    Cut::Overtime
                } else {
                    Cut::Stalled
                });
                false
            }
        }
    }

    /// Why the sink stopped taking chunks in time, if it did.
    pub fn cut(&self) -> Option<Cut> {
        self.cut
    }
}
