//! The original service's behaviour: audio is acknowledged, counted and thrown away.

use std::sync::atomic::{AtomicU64, Ordering};

use aimcs_domain::ports::{AudioSink, SinkError};
use aimcs_domain::{AudioChunk, RecordingEnd, RecordingId, RecordingStart};
use async_trait::async_trait;

/// Counts audio and discards it. For deployments that only need acknowledgements, and as the
/// baseline that other sinks are measured against.
#[derive(Debug, Default)]
pub struct NullAudioSink {
    recordings: AtomicU64,
    chunks: AtomicU64,
    bytes: AtomicU64,
    finished: AtomicU64,
}

/// What a [`NullAudioSink`] has counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NullSinkTotals {
    /// Recordings opened.
    pub recordings: u64,
    /// Chunks accepted.
    pub chunks: u64,
    /// Bytes accepted.
    pub bytes: u64,
    /// Recordings finished.
    pub finished: u64,
}

impl NullAudioSink {
    /// A sink with all counts at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counts so far.
    pub fn totals(&self) -> NullSinkTotals {
        NullSinkTotals {
            recordings: self.recordings.load(Ordering::Relaxed),
            chunks: self.chunks.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
        }
    }
}

// Relaxed everywhere: these are statistics; nothing is ordered by them.
#[async_trait]
impl AudioSink for NullAudioSink {
    async fn open(&self, _start: RecordingStart) -> Result<(), SinkError> {
        self.recordings.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn write(
        &self,
        _recording: RecordingId,
        _seq: u64,
        chunk: AudioChunk,
    ) -> Result<(), SinkError> {
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn commit(&self, _recording: RecordingId) -> Result<(), SinkError> {
        Ok(())
    }

    async fn close(&self, _end: RecordingEnd) -> Result<(), SinkError> {
        self.finished.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aimcs_domain::{ConnectionId, Session, SessionEnding, Timestamp};

    use super::*;

    #[tokio::test]
    async fn chunks_and_bytes_are_counted_and_discarded() {
        let sink = NullAudioSink::new();
        let session = Session::implicit(ConnectionId::random(), Timestamp::from_unix_millis(0));
        let recording = session.recording();

        sink.open(session.recording_start()).await.unwrap();
        sink.write(recording, 1, AudioChunk::new(vec![0; 3_200]).unwrap())
            .await
            .unwrap();
        sink.write(recording, 2, AudioChunk::new(vec![0; 800]).unwrap())
            .await
            .unwrap();
        sink.close(session.finish(SessionEnding::Ended, Timestamp::from_unix_millis(1)))
            .await
            .unwrap();

        assert_eq!(
            sink.totals(),
            NullSinkTotals {
                recordings: 1,
                chunks: 2,
                bytes: 4_000,
                finished: 1
            }
        );
    }
}
