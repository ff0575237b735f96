//! One sink made of several: every recording goes to each of them, in order. A chunk is
//! accepted only when every sink accepted it, so an acknowledgement still means stored
//! everywhere. When one sink fails part-way, the client resends the chunk; the sinks that
//! already took it are skipped, so none stores it twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aimcs_domain::ports::{AudioSink, SinkError};
use aimcs_domain::{AudioChunk, RecordingEnd, RecordingId, RecordingStart, StoredProgress};
use async_trait::async_trait;

/// Writes to every sink it holds.
pub struct FanoutAudioSink {
    sinks: Vec<Arc<dyn AudioSink>>,
    /// Per recording, the chunk last written and how many sinks (in order) have it.
    // std Mutex: held for a map access only, never across an `.await`.
    written: Mutex<HashMap<RecordingId, (u64, usize)>>,
}

impl FanoutAudioSink {
    /// A sink writing to each of `sinks`, in that order.
    pub fn new(sinks: Vec<Arc<dyn AudioSink>>) -> Self {
        Self {
            sinks,
            written: Mutex::default(),
        }
    }

    fn record_progress(&self, recording: RecordingId, seq: u64, sinks_done: usize) {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(recording, (seq, sinks_done));
    }
}

#[async_trait]
impl AudioSink for FanoutAudioSink {
    async fn open(&self, start: RecordingStart) -> Result<(), SinkError> {
        for (opened, sink) in self.sinks.iter().enumerate() {
            if let Err(error) = sink.open(start.clone()).await {
                // Those that opened would otherwise keep the recording open forever.
                let abandoned = start.abandoned();
                for sink in &self.sinks[..opened] {
                    let _ = sink.close(abandoned.clone()).await;
                }
                return Err(error);
            }
        }
        Ok(())
    }

    async fn write(
        &self,
        recording: RecordingId,
        seq: u64,
        chunk: AudioChunk,
    ) -> Result<(), SinkError> {
        let already = match self
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&recording)
        {
            Some(&(last, done)) if last == seq => done,
            _ => 0,
        };
        // Cloning a chunk shares its bytes; nothing is copied per sink.
        for (index, sink) in self.sinks.iter().enumerate().skip(already) {
            if let Err(error) = sink.write(recording, seq, chunk.clone()).await {
                self.record_progress(recording, seq, index);
                return Err(error);
            }
        }
        self.record_progress(recording, seq, self.sinks.len());
        Ok(())
    }

    async fn commit(&self, recording: RecordingId) -> Result<(), SinkError> {
        for sink in &self.sinks {
            sink.commit(recording).await?;
        }
        Ok(())
    }

    async fn close(&self, end: RecordingEnd) -> Result<(), SinkError> {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&end.recording);
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

    /// Every sink must be able to continue; the progress reported is the least any of them
    /// holds, so that what one sink lacks is resent (those that have it take it as a repeat).
    async fn continue_recording(&self, start: RecordingStart) -> Result<StoredProgress, SinkError> {
        if !self.can_continue_recordings() {
            return Err(SinkError::CannotContinue(start.recording));
        }
        let mut least: Option<StoredProgress> = None;
        for sink in &self.sinks {
            let progress = sink.continue_recording(start.clone()).await?;
            if least
                .as_ref()
                .is_none_or(|least| progress.last_seq < least.last_seq)
            {
                least = Some(progress);
            }
        }
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&start.recording);
        Ok(least.unwrap_or_default())
    }

    fn can_continue_recordings(&self) -> bool {
        self.sinks.iter().all(|sink| sink.can_continue_recordings())
    }

    async fn check(&self) -> Result<(), SinkError> {
        for sink in &self.sinks {
            sink.check().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use aimcs_domain::{ConnectionId, Session, SessionEnding, Timestamp};

    use super::*;
    use crate::outbound::NullAudioSink;

    /// A sink that fails while `failing` is set and counts what it took.
    #[derive(Default)]
    struct Flaky {
        failing: AtomicBool,
        writes: AtomicUsize,
        closes: AtomicUsize,
    }

    #[async_trait]
    impl AudioSink for Flaky {
        async fn open(&self, _start: RecordingStart) -> Result<(), SinkError> {
            if self.failing.load(Ordering::SeqCst) {
                Err(SinkError::Unavailable("down".into()))
            } else {
                Ok(())
            }
        }
        async fn write(
            &self,
            _recording: RecordingId,
            _seq: u64,
            _chunk: AudioChunk,
        ) -> Result<(), SinkError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(SinkError::Unavailable("down".into()));
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn commit(&self, _recording: RecordingId) -> Result<(), SinkError> {
            Ok(())
        }
        async fn close(&self, _end: RecordingEnd) -> Result<(), SinkError> {
            self.closes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn session() -> Session {
        Session::implicit(ConnectionId::random(), Timestamp::from_unix_millis(0))
    }

    #[tokio::test]
    async fn every_sink_gets_every_chunk() {
        let (a, b) = (
            Arc::new(NullAudioSink::new()),
            Arc::new(NullAudioSink::new()),
        );
        let fanout = FanoutAudioSink::new(vec![a.clone(), b.clone()]);
        let session = session();

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

    #[tokio::test]
    async fn a_chunk_resent_after_a_partial_failure_is_not_stored_twice_by_the_sink_that_took_it() {
        let (first, second) = (Arc::new(Flaky::default()), Arc::new(Flaky::default()));
        let fanout = FanoutAudioSink::new(vec![first.clone(), second.clone()]);
        let session = session();
        fanout.open(session.recording_start()).await.unwrap();
        second.failing.store(true, Ordering::SeqCst);
        let chunk = AudioChunk::new(vec![1; 10]).unwrap();

        assert!(
            fanout
                .write(session.recording(), 1, chunk.clone())
                .await
                .is_err()
        );
        second.failing.store(false, Ordering::SeqCst);
        fanout
            .write(session.recording(), 1, chunk.clone())
            .await
            .unwrap();
        fanout.write(session.recording(), 2, chunk).await.unwrap();

        assert_eq!(
            (
                first.writes.load(Ordering::SeqCst),
                second.writes.load(Ordering::SeqCst)
            ),
            (2, 2)
        );
    }

    #[tokio::test]
    async fn an_open_that_fails_part_way_closes_the_sinks_that_opened() {
        let (first, second) = (Arc::new(Flaky::default()), Arc::new(Flaky::default()));
        second.failing.store(true, Ordering::SeqCst);
        let fanout = FanoutAudioSink::new(vec![first.clone(), second.clone()]);

        assert!(fanout.open(session().recording_start()).await.is_err());

        assert_eq!(
            (
                first.closes.load(Ordering::SeqCst),
                second.closes.load(Ordering::SeqCst)
            ),
            (1, 0)
        );
    }
}
