//! One sink made of several: every recording goes to each of them, in order. A chunk is
//! accepted only when every sink accepted it, so an acknowledgement still means stored
//! everywhere.

use std::sync::Arc;

use aimcs_domain::ports::{AudioSink, SinkError};
use aimcs_domain::{AudioChunk, RecordingEnd, RecordingId, RecordingStart};
use async_trait::async_trait;

/// Writes to every sink it holds.
pub struct FanoutAudioSink {
    sinks: Vec<Arc<dyn AudioSink>>,
}

impl FanoutAudioSink {
    /// A sink writing to each of `sinks`, in that order.
    pub fn new(sinks: Vec<Arc<dyn AudioSink>>) -> Self {
        Self { sinks }
    }
}

#[async_trait]
impl AudioSink for FanoutAudioSink {
    async fn open(&self, start: RecordingStart) -> Result<(), SinkError> {
        for sink in &self.sinks {
            sink.open(start.clone()).await?;
        }
        Ok(())
    }

    async fn write(
        &self,
        recording: RecordingId,
        seq: u64,
        chunk: AudioChunk,
    ) -> Result<(), SinkError> {
        // Cloning a chunk shares its bytes; nothing is copied per sink.
        for sink in &self.sinks {
            sink.write(recording, seq, chunk.clone()).await?;
        }
        Ok(())
    }

    async fn commit(&self, recording: RecordingId) -> Result<(), SinkError> {
        for sink in &self.sinks {
            sink.commit(recording).await?;
        }
        Ok(())
    }

    async fn close(&self, end: RecordingEnd) -> Result<(), SinkError> {
        // Every sink is closed even if one fails, so none is left with an open recording; the
        // first failure is reported.
        let mut outcome = Ok(());
        for sink in &self.sinks {
            if let Err(error) = sink.close(end.clone()).await {
                tracing::error!(recording = %end.recording, error = %error, "a sink could not finish the recording");
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use aimcs_domain::{ConnectionId, Session, SessionEnding, Timestamp};

    use super::*;
    use crate::outbound::NullAudioSink;

    #[tokio::test]
    async fn every_sink_gets_every_chunk() {
        let (a, b) = (
            Arc::new(NullAudioSink::new()),
            Arc::new(NullAudioSink::new()),
        );
        let fanout = FanoutAudioSink::new(vec![a.clone(), b.clone()]);
        let session = Session::implicit(ConnectionId::random(), Timestamp::from_unix_millis(0));

        fanout.open(session.recording_start()).await.unwrap();
        fanout
            .write(
                session.recording(),
                1,
                AudioChunk::new(vec![1; 10]).unwrap(),
            )
            .await
            .unwrap();
        fanout
            .close(session.finish(SessionEnding::Ended, Timestamp::from_unix_millis(1)))
            .await
            .unwrap();

        assert_eq!(a.totals(), b.totals());
        assert_eq!(
            (a.totals().chunks, a.totals().bytes, a.totals().finished),
            (1, 10, 1)
        );
    }
}
