//! Ports: what the domain needs from the outside world, named by role. Adapters implement them;
//! the application holds them as `Arc<dyn Port>`.
//!
//! Every port is `Send + Sync + 'static` because one instance serves all connections at once.

use std::time::Duration;

use async_trait::async_trait;

use crate::audio::AudioChunk;
use crate::connection::ConnectionInfo;
use crate::ids::{ConnectionId, RecordingId, SessionId};
use crate::recording::{RecordingEnd, RecordingStart};
use crate::session::{SessionSnapshot, StoredProgress};
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

    /// What every replica sharing this store holds, for a store that is shared; `None` for a
    /// store of this process alone.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] if the shared store cannot be reached.
    async fn cluster(&self) -> Result<Option<ClusterView>, StoreError> {
        Ok(None)
    }
}

/// The replicas sharing a connection store, as the store last heard from each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// This replica's id in the store.
    pub replica: String,
    /// Replicas alive (heard from within the store's time to live), this one included.
    pub replicas: usize,
    /// Open connections on all of them.
    pub connections: usize,
    /// Declared sessions they hold, on a connection or waiting for a resume.
    pub sessions: usize,
}

/// Who holds a shared session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionHolder {
    /// The connection in the snapshot streams it now.
    Attached,
    /// Its connection went away; it waits for a resume.
    Parked,
}

/// Keeps the resume state of declared sessions where every replica can read it, so that a
/// client whose replica went away can resume on another one.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores the session's state. `Attached` always wins (a resume took the session over);
    /// `Parked` is stored only while the snapshot's connection is still the recorded holder,
    /// so a replica that lost the session cannot overwrite the one that took it.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] if the store cannot be reached.
    async fn save(
        &self,
        snapshot: SessionSnapshot,
        holder: SessionHolder,
    ) -> Result<(), StoreError>;

    /// The state of session `id`, if the store has it.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] if the store cannot be reached.
    async fn load(&self, id: SessionId) -> Result<Option<SessionSnapshot>, StoreError>;

    /// Forgets a finished session, if `connection` still holds it.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] if the store cannot be reached.
    async fn forget(&self, id: SessionId, connection: ConnectionId) -> Result<(), StoreError>;
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
    /// Another process continued the recording: this one may no longer write to it.
    #[error("recording {0} was taken over by another replica")]
    Superseded(RecordingId),
    /// The recording was finished (on another replica, after it continued it).
    #[error("recording {0} has been finished")]
    Finished(RecordingId),
    /// The sink keeps recordings where only the process that began one can continue it.
    #[error("this audio sink cannot continue recording {0}, which another process began")]
    CannotContinue(RecordingId),
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

    /// Continues a recording another process began (a resume on another replica), returning
    /// what the sink already holds of it. From then on, that process's writes to it fail with
    /// [`SinkError::Superseded`], so no chunk is stored twice or out of order.
    ///
    /// # Errors
    /// [`SinkError::CannotContinue`] (the default) for a sink whose recordings only their own
    /// process can continue, [`SinkError::Unavailable`] if the sink cannot be reached.
    async fn continue_recording(&self, start: RecordingStart) -> Result<StoredProgress, SinkError> {
        Err(SinkError::CannotContinue(start.recording))
    }

    /// Whether [`AudioSink::continue_recording`] can succeed here: asked before anything is
    /// changed, so that a sink made of several never continues in one and fails in another.
    fn can_continue_recordings(&self) -> bool {
        false
    }

    /// Whether the sink can take audio now, for readiness probes.
    ///
    /// # Errors
    /// [`SinkError::Unavailable`] when it cannot.
    async fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Finishes a recording: everything written is flushed and the recording is complete.
    ///
    /// # Errors
    /// MUST return [`SinkError::UnknownRecording`] for a recording not open, and
    /// [`SinkError::Unavailable`] if it could not be finished.
    async fn close(&self, end: RecordingEnd) -> Result<(), SinkError>;
}
