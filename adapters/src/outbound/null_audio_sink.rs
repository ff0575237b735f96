//! The original service's behaviour: audio is acknowledged, counted and thrown away.

use std::sync::atomic::{AtomicU64, Ordering};

use aimcs_domain::ports::{AudioSink, SinkError};
use aimcs_domain::{AudioChunk, SessionId};
use async_trait::async_trait;

/// Counts audio and discards it. For deployments that only need acknowledgements, and as the
/// baseline that other sinks are measured against.
#[derive(Debug, Default)]
pub struct NullAudioSink {
    chunks: AtomicU64,
    bytes: AtomicU64,
    sessions_closed: AtomicU64,
}

/// What a [`NullAudioSink`] has counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NullSinkTotals {
    /// Chunks accepted.
    pub chunks: u64,
    /// Bytes accepted.
    pub bytes: u64,
    /// Sessions closed.
    pub sessions_closed: u64,
}

impl NullAudioSink {
    /// A sink with all counts at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counts so far.
    pub fn totals(&self) -> NullSinkTotals {
        NullSinkTotals {
            chunks: self.chunks.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            sessions_closed: self.sessions_closed.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl AudioSink for NullAudioSink {
    async fn write(&self, _session: SessionId, chunk: AudioChunk) -> Result<(), SinkError> {
        // Relaxed: these are statistics; nothing is ordered by them.
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn close(&self, _session: SessionId) -> Result<(), SinkError> {
        self.sessions_closed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_and_bytes_are_counted_and_discarded() {
        let sink = NullAudioSink::new();
        let session = SessionId::random();

        sink.write(session, AudioChunk::new(vec![0; 3_200]).unwrap())
            .await
            .unwrap();
        sink.write(session, AudioChunk::new(vec![0; 800]).unwrap())
            .await
            .unwrap();
        sink.close(session).await.unwrap();

        assert_eq!(
            sink.totals(),
            NullSinkTotals {
                chunks: 2,
                bytes: 4_000,
                sessions_closed: 1
            }
        );
    }
}
