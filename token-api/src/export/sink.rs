//! Where an export's bytes go: chunks handed to the response as they fill, each within the
//! chunk deadline (`EXPORT_CHUNK_DEADLINE_SECONDS`), so a client that stops reading holds the
//! export's snapshot and connection that long at most.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Bytes per chunk written.
pub const CHUNK: usize = 64 * 1024;

/// Writes rows into chunks and hands full chunks to the response.
pub struct Sink {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    deadline: Duration,
    stalled: bool,
}

impl Sink {
    pub fn new(tx: mpsc::Sender<Bytes>, deadline: Duration) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
            deadline,
            stalled: false,
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
        if self.stalled {
            return false;
        }
        if self.buf.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        match tokio::time::timeout(self.deadline, self.tx.send(chunk)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                self.stalled = true;
                false
            }
        }
    }

    /// Did the client take no chunk within the deadline (a reader that stopped)?
    pub fn stalled(&self) -> bool {
        self.stalled
    }
}
