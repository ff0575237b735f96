//! The ingest service: every use case of the backend, each a method with its own error type.

use std::sync::Arc;
use std::time::Duration;

use aimcs_domain::ports::{AudioSink, Clock, ConnectionStore, SinkError, StoreError};
use aimcs_domain::{
    ChatReply, ChatReplyId, ChatRequest, ClientMessage, Connection, ConnectionId, ConnectionInfo,
    Decision, RecordingEnd, RecordingId, Rejection, ServerMessage, Session, SessionEnding,
    SessionId, SessionInfo, SessionSummary, Stamped, StoreChunk, Timestamp,
};

use crate::sessions::{SessionRegistry, TakeError};

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

/// Settings of the service itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The version `/health` reports.
    pub version: &'static str,
    /// How long a declared session whose connection dropped waits to be resumed.
    pub resume_grace: Duration,
    /// How many sessions may wait to be resumed at once; beyond it the oldest is finished.
    /// Each holds an open recording, so this bounds what dropped connections can pin.
    pub max_parked_sessions: usize,
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
    #[error("audio chunk {seq} of recording {recording} was not stored")]
    Sink {
        /// The recording the chunk belonged to.
        recording: RecordingId,
        /// The chunk's sequence number.
        seq: u64,
        /// What the sink reported.
        #[source]
        source: SinkError,
    },
    /// The sink could not open, commit or finish a recording.
    #[error("recording {recording} could not be {action}")]
    Recording {
        /// The recording.
        recording: RecordingId,
        /// `opened`, `committed` or `finished`.
        action: &'static str,
        /// What the sink reported.
        #[source]
        source: SinkError,
    },
    /// A resume asked for a session another connection of this process holds. The transport
    /// must make that connection let go (it is superseded) and then retry.
    #[error("session {session} is held by connection {holder}")]
    SessionHeld {
        /// The session.
        session: SessionId,
        /// The connection holding it.
        holder: ConnectionId,
    },
}

/// Closing a connection did not complete cleanly. Both steps are always attempted.
#[derive(Debug, thiserror::Error)]
pub enum CloseConnectionError {
    /// The connection's recording could not be finished.
    #[error("recording {recording} was not finished")]
    Sink {
        /// The recording.
        recording: RecordingId,
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
    /// Declared sessions whose connection dropped, waiting to be resumed.
    pub parked_sessions: usize,
}

/// The backend's use cases, over the three ports.
pub struct IngestService {
    store: Arc<dyn ConnectionStore>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn AudioSink>,
    sessions: SessionRegistry,
    config: ServiceConfig,
    started: Duration,
}

impl IngestService {
    /// A service over the given ports; its uptime counts from now.
    pub fn new(
        store: Arc<dyn ConnectionStore>,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn AudioSink>,
        config: ServiceConfig,
    ) -> Self {
        let started = clock.monotonic();
        Self {
            store,
            clock,
            sink,
            sessions: SessionRegistry::default(),
            config,
            started,
        }
    }

    /// The service's settings.
    pub fn config(&self) -> ServiceConfig {
        self.config
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
    /// [`HandleClientMessageError`] when the sink refused a chunk or a recording operation
    /// (nothing was acknowledged), or when a resume needs another connection to let go.
    pub async fn handle_client_message(
        &self,
        connection: &mut Connection,
        message: ClientMessage,
    ) -> Result<Stamped<ServerMessage>, HandleClientMessageError> {
        let now = self.clock.now();
        let reply = match connection.decide(message, now) {
            Decision::Reply(reply) => reply,
            Decision::Store(store) => self.store_chunk(connection, store).await?,
            Decision::Start(session) => self.start_session(connection, session).await?,
            Decision::Commit { recording } => {
                self.sink.commit(recording).await.map_err(|source| {
                    HandleClientMessageError::Recording {
                        recording,
                        action: "committed",
                        source,
                    }
                })?;
                connection.committed()
            }
            Decision::End => self.end_session(connection, now).await?,
            Decision::Resume {
                session,
                token,
                last_acked_seq,
            } => {
                tracing::debug!(session_id = %session, ?last_acked_seq, "resume requested");
                self.resume_session(connection, session, &token, now)
                    .await?
            }
        };
        Ok(self.stamp(reply))
    }

    async fn store_chunk(
        &self,
        connection: &mut Connection,
        store: StoreChunk,
    ) -> Result<ServerMessage, HandleClientMessageError> {
        let StoreChunk {
            recording,
            open,
            seq,
            gap,
            chunk,
            encoded_size,
            report_progress,
        } = store;
        if let Some(start) = open {
            if let Err(source) = self.sink.open(start).await {
                // The implicit session is dropped: the next chunk opens a fresh one rather than
                // retrying a recording some sink may have half-created.
                connection.take_session();
                return Err(HandleClientMessageError::Recording {
                    recording,
                    action: "opened",
                    source,
                });
            }
            connection.recording_opened();
        }
        let len = chunk.len();
        self.sink
            .write(recording, seq, chunk)
            .await
            .map_err(|source| HandleClientMessageError::Sink {
                recording,
                seq,
                source,
            })?;
        tracing::trace!(%recording, seq, bytes = len, "audio chunk stored");
        Ok(connection.stored(seq, gap, len, encoded_size, report_progress))
    }

    async fn start_session(
        &self,
        connection: &mut Connection,
        session: Session,
    ) -> Result<ServerMessage, HandleClientMessageError> {
        let recording = session.recording();
        self.sink
            .open(session.recording_start())
            .await
            .map_err(|source| HandleClientMessageError::Recording {
                recording,
                action: "opened",
                source,
            })?;
        self.sessions.attach(&session, connection.id());
        tracing::info!(session_id = %session.id(), %recording, format = ?session.format(), "session started");
        let info = self.info(&session);
        connection.adopt(session);
        Ok(ServerMessage::SessionStarted(info))
    }

    async fn end_session(
        &self,
        connection: &mut Connection,
        now: Timestamp,
    ) -> Result<ServerMessage, HandleClientMessageError> {
        let Some(session) = connection.session() else {
            return Ok(ServerMessage::Rejected(Rejection::NoActiveSession));
        };
        let end = session.end_record(SessionEnding::Ended, now);
        let summary = summary(&end);
        let recording = end.recording;
        // The session stays on the connection until its recording is finished: if finishing
        // fails, the client is told and may send session_end again.
        self.sink
            .close(end)
            .await
            .map_err(|source| HandleClientMessageError::Recording {
                recording,
                action: "finished",
                source,
            })?;
        if let Some(session) = connection.take_session() {
            self.sessions.forget(session.id());
        }
        tracing::info!(session_id = %summary.session, %recording, bytes = summary.totals.bytes, chunks = summary.totals.chunks, "session ended");
        Ok(ServerMessage::SessionEnded(summary))
    }

    async fn resume_session(
        &self,
        connection: &mut Connection,
        id: SessionId,
        token: &str,
        now: Timestamp,
    ) -> Result<ServerMessage, HandleClientMessageError> {
        let rejected = |rejection| Ok(ServerMessage::Rejected(rejection));
        match self
            .sessions
            .take(id, token, connection.id(), now, self.config.resume_grace)
        {
            Ok(session) => {
                tracing::info!(session_id = %id, last_seq = ?session.last_seq(), "session resumed");
                let info = self.info(&session);
                connection.adopt(session);
                Ok(ServerMessage::SessionResumed(info))
            }
            Err(TakeError::NotFound) => rejected(Rejection::SessionNotFound(id)),
            Err(TakeError::WrongToken) => {
                tracing::warn!(session_id = %id, "resume refused: wrong token");
                rejected(Rejection::WrongResumeToken(id))
            }
            Err(TakeError::Expired(session)) => {
                self.finish(*session, SessionEnding::Expired, now).await;
                rejected(Rejection::SessionExpired(id))
            }
            Err(TakeError::HeldBy(holder)) => Err(HandleClientMessageError::SessionHeld {
                session: id,
                holder,
            }),
        }
    }

    /// Closes a connection: a declared session is parked for a resume, an implicit one is
    /// finished with `ending` (`ConnectionClosed`, or `Shutdown` when the service is stopping);
    /// then the connection is forgotten. Both steps run even when the first fails, so a sink
    /// failure never leaves a phantom connection counted.
    ///
    /// # Errors
    /// [`CloseConnectionError::Sink`] when a recording could not be finished (reported first,
    /// since it may mean lost audio), else [`CloseConnectionError::Store`].
    pub async fn close_connection(
        &self,
        mut connection: Connection,
        ending: SessionEnding,
    ) -> Result<(), CloseConnectionError> {
        let recording_open = connection.is_recording_open();
        let now = self.clock.now();
        let finished = match connection.take_session() {
            Some(mut session) if session.is_declared() => {
                session.detach(now);
                tracing::info!(session_id = %session.id(), grace_secs = self.config.resume_grace.as_secs(), "session parked for resume");
                if let Some(evicted) = self.sessions.park(session, self.config.max_parked_sessions)
                {
                    tracing::warn!(session_id = %evicted.id(), max = self.config.max_parked_sessions, "too many sessions waiting to be resumed: finishing the oldest");
                    self.finish(evicted, SessionEnding::Evicted, now).await;
                }
                Ok(())
            }
            Some(session) if recording_open => {
                let end = session.finish(ending, now);
                let recording = end.recording;
                self.sink
                    .close(end)
                    .await
                    .map_err(|source| CloseConnectionError::Sink { recording, source })
            }
            _ => Ok(()),
        };
        let removed = self
            .store
            .remove(connection.id())
            .await
            .map_err(CloseConnectionError::Store);
        match (finished, removed) {
            (Err(sink), Err(store)) => {
                tracing::warn!(error = %store, "connection also could not be removed from the store");
                Err(sink)
            }
            (finished, removed) => finished.and(removed),
        }
    }

    /// Finishes the parked sessions whose grace period has passed; returns how many. Meant to
    /// be called periodically.
    pub async fn expire_sessions(&self) -> usize {
        let now = self.clock.now();
        let expired = self.sessions.take_expired(now, self.config.resume_grace);
        let count = expired.len();
        for session in expired {
            tracing::info!(session_id = %session.id(), "session expired: nobody resumed it");
            self.finish(session, SessionEnding::Expired, now).await;
        }
        count
    }

    /// Finishes every parked session, at shutdown; returns how many.
    pub async fn finish_parked_sessions(&self) -> usize {
        let now = self.clock.now();
        let parked = self.sessions.take_all_parked();
        let count = parked.len();
        for session in parked {
            self.finish(session, SessionEnding::Shutdown, now).await;
        }
        count
    }

    async fn finish(&self, session: Session, ending: SessionEnding, now: Timestamp) {
        let end = session.finish(ending, now);
        let recording = end.recording;
        if let Err(error) = self.sink.close(end).await {
            tracing::error!(%recording, error = %error, cause = ?std::error::Error::source(&error), "recording could not be finished");
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
            version: self.config.version,
        })
    }

    /// The status report: open connections and parked sessions.
    ///
    /// # Errors
    /// [`ReportError::Store`] when connections cannot be counted.
    pub async fn status(&self) -> Result<StatusReport, ReportError> {
        let active_connections = self.store.count().await?;
        Ok(StatusReport {
            at: self.clock.now(),
            active_connections,
            parked_sessions: self.sessions.parked(),
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

    fn info(&self, session: &Session) -> SessionInfo {
        SessionInfo {
            session: session.id(),
            recording: session.recording(),
            resume_token: session.token().reveal().to_owned(),
            format: session.format(),
            resume_grace: self.config.resume_grace,
            last_seq: session.last_seq(),
            totals: session.totals(),
        }
    }

    fn stamp<T>(&self, value: T) -> Stamped<T> {
        Stamped {
            at: self.clock.now(),
            value,
        }
    }
}

fn summary(end: &RecordingEnd) -> SessionSummary {
    SessionSummary {
        session: end.session,
        recording: end.recording,
        totals: end.totals,
        duration: end.duration,
        last_seq: end.last_seq,
        gaps: end.gaps.clone(),
        duplicates: end.duplicates,
    }
}
