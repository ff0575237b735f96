//! Ports: what the domain needs from the outside world, named by role. Adapters implement them;
//! the application holds them as `Arc<dyn Port>`.
//!
//! Every port is `Send + Sync + 'static` because one instance serves all connections at once.

use std::time::Duration;

use async_trait::async_trait;

use crate::audio::AudioChunk;
use crate::connection::ConnectionInfo;
use crate::ids::{ConnectionId, SessionId};
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
    /// A write or close named a session the sink has already closed.
    #[error("audio session {0} is already closed")]
    SessionClosed(SessionId),
    /// The sink cannot take audio now (storage full, backend unreachable, I/O failure).
    #[error("audio sink unavailable")]
    Unavailable(#[source] Cause),
}

/// Takes the audio of each session, in order, and keeps or forwards it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AudioSink: Send + Sync + 'static {
    /// Accepts the next chunk of `session`, opening the session on its first chunk. When this
    /// returns `Ok`, the chunk is the sink's responsibility: the client is told it was
    /// received.
    ///
    /// # Errors
    /// MUST return [`SinkError::Unavailable`] when the chunk was not accepted; the caller then
    /// tells the client its audio was not received. A sink that keeps per-session state MUST
    /// return [`SinkError::SessionClosed`] for a session it has already closed.
    async fn write(&self, session: SessionId, chunk: AudioChunk) -> Result<(), SinkError>;

    /// Ends `session`: everything written before is flushed, nothing more is accepted.
    ///
    /// # Errors
    /// MUST return [`SinkError::Unavailable`] if what was written could not be flushed.
    async fn close(&self, session: SessionId) -> Result<(), SinkError>;
}
