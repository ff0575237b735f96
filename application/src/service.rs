//! The ingest service: every use case of the backend, each a method with its own error type.

use std::sync::Arc;
use std::time::Duration;

use aimcs_domain::ports::{
    AudioSink, Clock, ClusterView, ConnectionStore, SessionHolder, SessionStore, SinkError,
    StoreError,
};
use aimcs_domain::{
    ChatReply, ChatReplyId, ChatRequest, ClientMessage, Connection, ConnectionId, ConnectionInfo,
    Decision, RecordingEnd, RecordingId, Rejection, ResumeError, ServerMessage, Session,
    SessionEnding, SessionId, SessionInfo, SessionSummary, Stamped, StoreChunk, Timestamp,
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
    /// The shared session store did not take or give a session's state: a new session is not
    /// started (it could not be resumed elsewhere), a resume is not carried out.
    #[error("session {session} could not be {action} the shared session store")]
    SessionStore {
        /// The session.
        session: SessionId,
        /// `saved in` or `read from`.
        action: &'static str,
        /// What the store reported.
        #[source]
        source: StoreError,
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

/// The service cannot take new clients now.
#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    /// The connection store (or the shared store behind it) does not answer.
    #[error("the connection store does not answer")]
    Store(#[from] StoreError),
    /// The audio sink cannot take audio.
    #[error("the audio sink cannot take audio")]
    Sink(#[from] SinkError),
}

/// What the replicas sharing a store hold, as far as this one can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterReport {
    /// As the shared store reports it.
    Seen(ClusterView),
    /// The shared store does not answer; only this replica's counts are known.
    Unreachable,
}

/// What `/health` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// When the report was made.
    pub at: Timestamp,
    /// How long the service has been up.
    pub uptime: Duration,
    /// Open connections on this replica, exactly.
    pub connections: usize,
    /// The service's version.
    pub version: &'static str,
    /// Every replica's counts, when the store is shared.
    pub cluster: Option<ClusterReport>,
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
    /// Every replica's counts, when the store is shared.
    pub cluster: Option<ClusterReport>,
}

/// The backend's use cases, over the three ports.
pub struct IngestService {
    store: Arc<dyn ConnectionStore>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn AudioSink>,
    sessions: SessionRegistry,
    shared: Option<Arc<dyn SessionStore>>,
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
            shared: None,
            config,
            started,
        }
    }

    /// Shares declared sessions through `store`, so that they can be resumed on any replica
    /// that shares it too.
    #[must_use]
    pub fn with_session_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.shared = Some(store);
        self
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
        if let Err(source) = self.sink.write(recording, seq, chunk).await {
            if lost_to_another_replica(&source) {
                self.let_go(connection).await;
                tracing::info!(%recording, "session continued on another replica: letting go");
            }
            return Err(HandleClientMessageError::Sink {
                recording,
                seq,
                source,
            });
        }
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
        if let Some(shared) = &self.shared
            && let Err(source) = shared
                .save(session.snapshot(), SessionHolder::Attached)
                .await
        {
            // A session that could not be shared cannot be resumed elsewhere: refuse it
            // now rather than promise a resume that would fail.
            let id = session.id();
            let end = session.finish(SessionEnding::Failed, self.clock.now());
            if let Err(error) = self.sink.close(end).await {
                tracing::warn!(%recording, error = %error, cause = ?std::error::Error::source(&error), "abandoned recording could not be finished");
            }
            return Err(HandleClientMessageError::SessionStore {
                session: id,
                action: "saved in",
                source,
            });
        }
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
        if let Err(source) = self.sink.close(end).await {
            if lost_to_another_replica(&source) {
                self.let_go(connection).await;
            }
            return Err(HandleClientMessageError::Recording {
                recording,
                action: "finished",
                source,
            });
        }
        if let Some(session) = connection.take_session() {
            self.sessions.forget(session.id());
            self.forget_shared(&session).await;
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
            Ok(mut session) => {
                if let Some(shared) = &self.shared {
                    // Another replica may have continued the session since it was parked here:
                    // take the recording back and catch up with what it stored. A sink only
                    // this process writes to cannot have been continued by anyone else.
                    if self.sink.can_continue_recordings() {
                        match self
                            .sink
                            .continue_recording(session.recording_start())
                            .await
                        {
                            Ok(stored) => session.catch_up(stored),
                            Err(SinkError::Finished(_)) => {
                                tracing::info!(session_id = %id, "resume refused: another replica finished the session");
                                self.sessions.forget(id);
                                self.forget_shared(&session).await;
                                return rejected(Rejection::SessionNotFound(id));
                            }
                            Err(source) => {
                                let recording = session.recording();
                                session.detach(now);
                                self.repark(session, now).await;
                                return Err(HandleClientMessageError::Recording {
                                    recording,
                                    action: "continued",
                                    source,
                                });
                            }
                        }
                    }
                    // The shared state must name the new holder, or its park would be refused.
                    if let Err(error) = shared
                        .save(session.snapshot(), SessionHolder::Attached)
                        .await
                    {
                        tracing::warn!(session_id = %id, error = %error, cause = ?std::error::Error::source(&error), "resumed session could not be saved in the shared store");
                    }
                }
                tracing::info!(session_id = %id, last_seq = ?session.last_seq(), "session resumed");
                let info = self.info(&session);
                connection.adopt(session);
                Ok(ServerMessage::SessionResumed(info))
            }
            Err(TakeError::NotFound) => match &self.shared {
                Some(shared) => {
                    self.resume_shared(Arc::clone(shared), connection, id, token, now)
                        .await
                }
                None => rejected(Rejection::SessionNotFound(id)),
            },
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

    /// Resumes a session this replica does not have, from the shared store: another replica
    /// started it, and its connection (or the replica) went away.
    async fn resume_shared(
        &self,
        shared: Arc<dyn SessionStore>,
        connection: &mut Connection,
        id: SessionId,
        token: &str,
        now: Timestamp,
    ) -> Result<ServerMessage, HandleClientMessageError> {
        let store_error = |action| {
            move |source| HandleClientMessageError::SessionStore {
                session: id,
                action,
                source,
            }
        };
        let Some(snapshot) = shared.load(id).await.map_err(store_error("read from"))? else {
            return Ok(ServerMessage::Rejected(Rejection::SessionNotFound(id)));
        };
        let mut session = Session::restore(snapshot);
        let holder = session.recording_start().connection;
        match session.resume(token, connection.id(), now, self.config.resume_grace) {
            Ok(()) => {}
            Err(ResumeError::WrongToken) => {
                tracing::warn!(session_id = %id, "resume refused: wrong token");
                return Ok(ServerMessage::Rejected(Rejection::WrongResumeToken(id)));
            }
            Err(ResumeError::Expired) => {
                return Ok(ServerMessage::Rejected(Rejection::SessionExpired(id)));
            }
        }
        let recording = session.recording();
        let cannot_continue = |source| HandleClientMessageError::Recording {
            recording,
            action: "continued",
            source,
        };
        if !self.sink.can_continue_recordings() {
            return Err(cannot_continue(SinkError::CannotContinue(recording)));
        }
        // The sink's answer is the truth about what was stored: the snapshot may predate
        // chunks the other replica acknowledged before it went away.
        let stored = match self
            .sink
            .continue_recording(session.recording_start())
            .await
        {
            Ok(stored) => stored,
            Err(SinkError::Finished(_)) => {
                return Ok(ServerMessage::Rejected(Rejection::SessionNotFound(id)));
            }
            Err(source) => return Err(cannot_continue(source)),
        };
        session.catch_up(stored);
        shared
            .save(session.snapshot(), SessionHolder::Attached)
            .await
            .map_err(store_error("saved in"))?;
        self.sessions.attach(&session, connection.id());
        tracing::info!(session_id = %id, %recording, previous_connection = %holder, last_seq = ?session.last_seq(), "session resumed from another replica");
        let info = self.info(&session);
        connection.adopt(session);
        Ok(ServerMessage::SessionResumed(info))
    }

    /// Drops the connection's session, which another replica continued: it is no longer
    /// this connection's, nor counted as held here.
    async fn let_go(&self, connection: &mut Connection) {
        if let Some(session) = connection.take_session() {
            self.sessions.forget(session.id());
            self.forget_shared(&session).await;
        }
    }

    /// Parks a detached session for a resume, finishing the oldest parked one when too many
    /// wait.
    async fn repark(&self, session: Session, now: Timestamp) {
        if let Some(evicted) = self.sessions.park(session, self.config.max_parked_sessions) {
            tracing::warn!(session_id = %evicted.id(), max = self.config.max_parked_sessions, "too many sessions waiting to be resumed: finishing the oldest");
            self.finish(evicted, SessionEnding::Evicted, now).await;
        }
    }

    async fn forget_shared(&self, session: &Session) {
        if let Some(shared) = &self.shared {
            let holder = session.recording_start().connection;
            if let Err(error) = shared.forget(session.id(), holder).await {
                tracing::warn!(session_id = %session.id(), error = %error, cause = ?std::error::Error::source(&error), "finished session could not be removed from the shared store; it expires there by itself");
            }
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
                if let Some(shared) = &self.shared
                    && let Err(error) = shared.save(session.snapshot(), SessionHolder::Parked).await
                {
                    // Still resumable here; another replica would resume it from the state
                    // saved at its start, caught up by the sink.
                    tracing::warn!(session_id = %session.id(), error = %error, cause = ?std::error::Error::source(&error), "parked session could not be saved in the shared store");
                }
                self.repark(session, now).await;
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
        let end = session.end_record(ending, now);
        let recording = end.recording;
        match self.sink.close(end).await {
            Ok(()) => {}
            Err(error) if lost_to_another_replica(&error) => {
                tracing::info!(%recording, "not finished here: another replica continued it");
            }
            Err(error) => {
                tracing::error!(%recording, error = %error, cause = ?std::error::Error::source(&error), "recording could not be finished");
            }
        }
        self.forget_shared(&session).await;
    }

    /// The health report: uptime, open connections, version.
    ///
    /// # Errors
    /// [`ReportError::Store`] when connections cannot be counted.
    pub async fn health(&self) -> Result<HealthReport, ReportError> {
        let connections = self.store.count().await?;
        let cluster = self.cluster().await;
        let uptime = self.clock.monotonic().saturating_sub(self.started);
        Ok(HealthReport {
            at: self.clock.now(),
            uptime,
            connections,
            version: self.config.version,
            cluster,
        })
    }

    /// Whether new clients should be sent here: the connection store (shared or not) and the
    /// audio sink both answer.
    ///
    /// # Errors
    /// [`ReadinessError`] naming the first that does not.
    pub async fn readiness(&self) -> Result<(), ReadinessError> {
        self.store.count().await?;
        self.store.cluster().await?;
        self.sink.check().await?;
        Ok(())
    }

    /// Every replica's counts; a shared store that does not answer is reported, not an
    /// error: this replica's own counts are still true.
    async fn cluster(&self) -> Option<ClusterReport> {
        match self.store.cluster().await {
            Ok(view) => view.map(ClusterReport::Seen),
            Err(error) => {
                tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "cluster counts unavailable");
                Some(ClusterReport::Unreachable)
            }
        }
    }

    /// The status report: open connections and parked sessions.
    ///
    /// # Errors
    /// [`ReportError::Store`] when connections cannot be counted.
    pub async fn status(&self) -> Result<StatusReport, ReportError> {
        let active_connections = self.store.count().await?;
        let cluster = self.cluster().await;
        Ok(StatusReport {
            at: self.clock.now(),
            active_connections,
            parked_sessions: self.sessions.parked(),
            cluster,
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

/// Whether the sink refused because another replica continued the recording (and perhaps
/// finished it): the session is no longer this process's.
fn lost_to_another_replica(error: &SinkError) -> bool {
    matches!(error, SinkError::Superseded(_) | SinkError::Finished(_))
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
