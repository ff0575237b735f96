//! Ports: what the domain needs from the outside world, named by role. Adapters implement them;
//! the application holds them as `Arc<dyn Port>`.
//!
//! Every port is `Send + Sync + 'static` because one instance serves all connections at once.

use std::time::Duration;

use async_trait::async_trait;

use crate::audio::AudioChunk;
use crate::connection::ConnectionInfo;
use crate::ids::{ConnectionId, RecordingId};
use crate::recording::{RecordingEnd, RecordingStart};
use crate::time::Timestamp;

/// A boxed cause, so that adapters can keep the error chain of their technology without the
/// domain naming it.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the connection store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `register` was called twice with one id.
    #[error("connection {0} is already registered")]
    AlreadyRegistered(ConnectionId),
    /// `remove` was called with an id that is not registered.
    #[error("connection {0} is not registered")]
    UnknownConnection(ConnectionId),
    /// The store cannot be reached or failed.
    #[error("connection store unavailable")]
    Unavailable(#[source] Cause),
}

/// Keeps track of the connections that are open, so that they can be counted.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ConnectionStore: Send + Sync + 'static {
    /// Records a newly opened connection.
    ///
    /// # Errors
    /// MUST return [`StoreError::AlreadyRegistered`] if the id is already registered, and
    /// [`StoreError::Unavailable`] if the store cannot be reached.
    async fn register(&self, connection: ConnectionInfo) -> Result<(), StoreError>;

    /// Forgets a closed connection.
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownConnection`] if the id was never registered or was
    /// already removed, and [`StoreError::Unavailable`] if the store cannot be reached.
    async fn remove(&self, id: ConnectionId) -> Result<(), StoreError>;

    /// Number of connections registered and not yet removed: exact, never an estimate.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] if the store cannot be reached.
    async fn count(&self) -> Result<usize, StoreError>;
}

/// Tells the time. Synchronous: reading a clock never waits.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time, for timestamps.
    fn now(&self) -> Timestamp;

    /// Time elapsed since a fixed, arbitrary origin, never going backwards: for durations
    /// such as uptime, which must not jump when the wall clock is set.
    fn monotonic(&self) -> Duration;
}

/// Why the audio sink could not take audio.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A write, commit or close named a recording the sink does not have open.
    #[error("recording {0} is not open")]
    UnknownRecording(RecordingId),
    /// The sink cannot take audio now (storage full, backend unreachable, I/O failure).
    #[error("audio sink unavailable")]
    Unavailable(#[source] Cause),
}

/// Keeps or forwards the audio of each recording, in order.
///
/// The contract that makes acknowledgements trustworthy: when `write` returns `Ok`, the chunk
/// is the sink's responsibility and the client is told it was received. What that means is
/// the sink's to document (the file sink: handed to the operating system, so a crash of this
/// process loses nothing acknowledged).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AudioSink: Send + Sync + 'static {
    /// Opens a recording, before its first chunk.
    ///
    /// # Errors
    /// MUST return [`SinkError::Unavailable`] if the recording cannot be opened.
    async fn open(&self, start: RecordingStart) -> Result<(), SinkError>;

    /// Accepts chunk `seq` of `recording`. Chunks arrive in order, each once.
    ///
    /// # Errors
    /// MUST return [`SinkError::UnknownRecording`] for a recording not open, and
    /// [`SinkError::Unavailable`] when the chunk was not accepted; the caller then tells the
    /// client its audio was not received.
    async fn write(
        &self,
        recording: RecordingId,
        seq: u64,
        chunk: AudioChunk,
    ) -> Result<(), SinkError>;

    /// Makes everything written to `recording` so far as durable as the sink can (for a file,
    /// on disk rather than in the operating system's cache).
    ///
    /// # Errors
    /// MUST return [`SinkError::UnknownRecording`] for a recording not open, and
    /// [`SinkError::Unavailable`] if durability could not be ensured.
    async fn commit(&self, recording: RecordingId) -> Result<(), SinkError>;

    /// Finishes a recording: everything written is flushed and the recording is complete.
    ///
    /// # Errors
    /// MUST return [`SinkError::UnknownRecording`] for a recording not open, and
    /// [`SinkError::Unavailable`] if it could not be finished.
    async fn close(&self, end: RecordingEnd) -> Result<(), SinkError>;
}
