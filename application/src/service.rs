//! The ingest service: every use case of the backend, each a method with its own error type.

use std::sync::Arc;
use std::time::Duration;

use aimcs_domain::ports::{AudioSink, Clock, ConnectionStore, SinkError, StoreError};
use aimcs_domain::{
    ChatReply, ChatReplyId, ChatRequest, ClientMessage, Connection, ConnectionId, ConnectionInfo,
    Decision, ServerMessage, SessionId, Stamped, Timestamp,
};

#[cfg(test)]
mod tests;

/// Who opened a new connection, as far as the transport can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewConnection {
    /// The peer's address.
    pub peer: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

/// The connection could not be opened; the transport should refuse it.
#[derive(Debug, thiserror::Error)]
pub enum OpenConnectionError {
    /// The connection store did not record it.
    #[error("could not register connection {id}")]
    Store {
        /// The id the connection would have had.
        id: ConnectionId,
        /// What the store reported.
        #[source]
        source: StoreError,
    },
}

/// A client message could not be carried out. The client must be told; nothing was
/// acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum HandleClientMessageError {
    /// The sink did not accept an audio chunk, so it was not acknowledged.
    #[error("audio chunk for session {session} was not stored")]
    Sink {
        /// The session the chunk belonged to.
        session: SessionId,
        /// What the sink reported.
        #[source]
        source: SinkError,
    },
}

/// Closing a connection did not complete cleanly. Both steps are always attempted.
#[derive(Debug, thiserror::Error)]
pub enum CloseConnectionError {
    /// The connection's audio session could not be flushed.
    #[error("audio session {session} was not flushed")]
    Sink {
        /// The session that was being closed.
        session: SessionId,
        /// What the sink reported.
        #[source]
        source: SinkError,
    },
    /// The connection store did not forget the connection.
    #[error("could not remove connection from the store")]
    Store(#[source] StoreError),
}

/// A health or status report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The connection store could not count connections.
    #[error("could not count connections")]
    Store(#[from] StoreError),
}

/// What `/health` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// When the report was made.
    pub at: Timestamp,
    /// How long the service has been up.
    pub uptime: Duration,
    /// Open connections, exactly.
    pub connections: usize,
    /// The service's version.
    pub version: &'static str,
}

/// What `/api/status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// When the report was made.
    pub at: Timestamp,
    /// Open connections, exactly.
    pub active_connections: usize,
}

/// The backend's use cases, over the three ports.
pub struct IngestService {
    store: Arc<dyn ConnectionStore>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn AudioSink>,
    started: Duration,
    version: &'static str,
}

impl IngestService {
    /// A service over the given ports; its uptime counts from now.
    pub fn new(
        store: Arc<dyn ConnectionStore>,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn AudioSink>,
        version: &'static str,
    ) -> Self {
        let started = clock.monotonic();
        Self {
            store,
            clock,
            sink,
            started,
            version,
        }
    }

    /// Opens a connection: registers it and returns it with the greeting to send.
    ///
    /// # Errors
    /// [`OpenConnectionError::Store`] when the store does not record the connection; the
    /// connection must then be refused, or counts would drift.
    pub async fn open_connection(
        &self,
        new: NewConnection,
    ) -> Result<(Connection, Stamped<ServerMessage>), OpenConnectionError> {
        let opened_at = self.clock.now();
        let info = ConnectionInfo {
            id: ConnectionId::random(),
            opened_at,
            peer: new.peer,
            user_agent: new.user_agent,
        };
        let id = info.id;
        self.store
            .register(info.clone())
            .await
            .map_err(|source| OpenConnectionError::Store { id, source })?;
        let greeting = Stamped {
            at: opened_at,
            value: ServerMessage::Connected { connection_id: id },
        };
        Ok((Connection::new(info), greeting))
    }

    /// Handles one client message and returns the reply to send.
    ///
    /// Audio is acknowledged only after the sink has accepted it.
    ///
    /// # Errors
    /// [`HandleClientMessageError::Sink`] when the sink refused the chunk; no acknowledgement
    /// was produced.
    pub async fn handle_client_message(
        &self,
        connection: &mut Connection,
        message: ClientMessage,
    ) -> Result<Stamped<ServerMessage>, HandleClientMessageError> {
        let reply = match connection.decide(message) {
            Decision::Reply(reply) => reply,
            Decision::Store {
                session,
                chunk,
                ack,
            } => {
                let len = chunk.len();
                self.sink
                    .write(session, chunk)
                    .await
                    .map_err(|source| HandleClientMessageError::Sink { session, source })?;
                connection.record_stored(len);
                tracing::trace!(%session, bytes = len, "audio chunk stored");
                ack
            }
        };
        Ok(self.stamp(reply))
    }

    /// Closes a connection: flushes its audio session, then forgets it. Both steps run even
    /// when the first fails, so a sink failure never leaves a phantom connection counted.
    ///
    /// # Errors
    /// [`CloseConnectionError::Sink`] when the session could not be flushed (reported first,
    /// since it may mean lost audio), else [`CloseConnectionError::Store`].
    pub async fn close_connection(
        &self,
        connection: Connection,
    ) -> Result<(), CloseConnectionError> {
        let flushed = match connection.session() {
            Some(session) => self
                .sink
                .close(session)
                .await
                .map_err(|source| CloseConnectionError::Sink { session, source }),
            None => Ok(()),
        };
        let removed = self
            .store
            .remove(connection.id())
            .await
            .map_err(CloseConnectionError::Store);
        match (flushed, removed) {
            (Err(sink), Err(store)) => {
                tracing::warn!(error = %store, "connection also could not be removed from the store");
                Err(sink)
            }
            (flushed, removed) => flushed.and(removed),
        }
    }

    /// The health report: uptime, open connections, version.
    ///
    /// # Errors
    /// [`ReportError::Store`] when connections cannot be counted.
    pub async fn health(&self) -> Result<HealthReport, ReportError> {
        let connections = self.store.count().await?;
        let uptime = self.clock.monotonic().saturating_sub(self.started);
        Ok(HealthReport {
            at: self.clock.now(),
            uptime,
            connections,
            version: self.version,
        })
    }

    /// The status report: open connections.
    ///
    /// # Errors
    /// [`ReportError::Store`] when connections cannot be counted.
    pub async fn status(&self) -> Result<StatusReport, ReportError> {
        let active_connections = self.store.count().await?;
        Ok(StatusReport {
            at: self.clock.now(),
            active_connections,
        })
    }

    /// Answers a chat request (an echo, for now).
    pub fn chat(&self, request: ChatRequest) -> Stamped<ChatReply> {
        self.stamp(ChatReply::echo(ChatReplyId::random(), request))
    }

    /// The time by the service's clock, for transport-level messages the use cases do not
    /// produce (e.g. an error about an oversized frame).
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn stamp<T>(&self, value: T) -> Stamped<T> {
        Stamped {
            at: self.clock.now(),
            value,
        }
    }
}
