//! A decorator that measures another audio sink: how long each chunk takes to be accepted and
//! which operations fail, labelled with the sink's name. Wrapping keeps measurement out of the
//! sinks themselves and out of the application.

use std::sync::Arc;
use std::time::Instant;

use aimcs_domain::ports::{AudioSink, SinkError};
use aimcs_domain::{AudioChunk, RecordingEnd, RecordingId, RecordingStart, StoredProgress};
use async_trait::async_trait;

use crate::metrics;

/// `inner`, measured under the name `name`.
pub struct InstrumentedAudioSink {
    name: &'static str,
    inner: Arc<dyn AudioSink>,
    metrics: metrics::SinkHandles,
}

impl InstrumentedAudioSink {
    /// Measures `inner` as `name` (`file`, `null`): a label, so one of a fixed set. Build it
    /// after the metrics recorder is installed: it takes its handles now.
    pub fn new(name: &'static str, inner: Arc<dyn AudioSink>) -> Self {
        Self {
            name,
            inner,
            metrics: metrics::SinkHandles::new(name),
        }
    }

    fn count_failure<T>(
        &self,
        operation: &'static str,
        result: Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        if result.is_err() {
            self.metrics.failed(operation);
        }
        result
    }
}

impl std::fmt::Debug for InstrumentedAudioSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstrumentedAudioSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AudioSink for InstrumentedAudioSink {
    async fn open(&self, start: RecordingStart) -> Result<(), SinkError> {
        let result = self.inner.open(start).await;
        self.count_failure("open", result)
    }

    async fn write(
        &self,
        recording: RecordingId,
        seq: u64,
        chunk: AudioChunk,
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        let result = self.inner.write(recording, seq, chunk).await;
        if result.is_ok() {
            self.metrics.written(started.elapsed());
        }
        self.count_failure("write", result)
    }

    async fn commit(&self, recording: RecordingId) -> Result<(), SinkError> {
        let result = self.inner.commit(recording).await;
        self.count_failure("commit", result)
    }

    async fn close(&self, end: RecordingEnd) -> Result<(), SinkError> {
        let result = self.inner.close(end).await;
        self.count_failure("close", result)
    }

    async fn continue_recording(&self, start: RecordingStart) -> Result<StoredProgress, SinkError> {
        let result = self.inner.continue_recording(start).await;
        self.count_failure("continue", result)
    }

    fn can_continue_recordings(&self) -> bool {
        self.inner.can_continue_recordings()
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.inner.check().await
    }
}
