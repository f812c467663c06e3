//! Where an export's bytes go: chunks handed to the response as they fill.

use bytes::Bytes;
use tokio::sync::mpsc;

/// Bytes per chunk written.
pub const CHUNK: usize = 64 * 1024;

/// Writes rows into chunks and hands full chunks to the response.
pub struct Sink {
    pub tx: mpsc::Sender<Bytes>,
    pub buf: Vec<u8>,
}

impl Sink {
    pub async fn push(&mut self, bytes: &[u8]) -> bool {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            return self.flush().await;
        }
        true
    }

    /// False when the client went away (nothing more to do).
    pub async fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send(chunk).await.is_ok()
    }
}
