//! The task that drives one WebSocket connection: greet, then read a frame, carry it out,
//! reply, until the client leaves, the service shuts down, or a resume elsewhere takes the
//! connection's session; then close the connection in the application, which parks or
//! finishes its session.
//!
//! One task per connection with the stream not split: a writer task and channel would cost
//! memory on every idle connection, and each reply is written before the next frame is read,
//! which keeps replies in order and lets a slow client, or a slow sink, slow only its own
//! connection: while a chunk is being stored nothing more is read, so TCP pushes back on the
//! client instead of audio piling up in memory.

use std::time::Duration;

use tokio::time::Instant;

use aimcs_application::HandleClientMessageError;
use aimcs_domain::{
    AudioChunk, AudioMessage, AudioPayload, ClientMessage, Connection, Rejection, ServerMessage,
    SessionEnding, SessionId, Stamped, TokenBucket,
};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::hub::Membership;
use super::reply::{encode, encode_error, encode_going_away, server_kind};
use super::{AudioBuffer, WsContext, client_kind, decode};
use crate::inbound::errors::{ErrorCode, handle_error_code, rejection_code};
use crate::metrics;

pub(super) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Close code and reason sent to every client when the service shuts down: 1001, "going away"
/// (the original sent 1000 with the same reason; clients that reconnect on a close still do).
pub(super) const SHUTDOWN_CLOSE: (u16, &str) = (1001, "Server shutting down");

/// The window over which rate-limited messages are counted: more than a burst's worth refused
/// within it is persistent abuse, and the connection is closed.
const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// How long a resume waits before asking again for a session whose holder is between letting
/// go and having let go.
const RESUME_RETRY: Duration = Duration::from_millis(50);

/// Why the read loop ended.
enum Ending {
    /// The client closed or the socket failed; nothing more to send.
    ClientGone,
    /// We must send a close frame with this code and reason.
    Close(u16, String),
}

/// What one connection task keeps between frames.
struct Task<'a> {
    socket: Socket,
    connection: Connection,
    audio: AudioBuffer,
    out: String,
    context: &'a WsContext,
    /// Present while the connection holds a declared session.
    membership: Option<Membership>,
    liveness: Liveness,
    /// The connection's rate limit, if there is one.
    bucket: Option<TokenBucket>,
    /// Messages refused for the rate limit in the current window, and when it began.
    refused: (u32, Instant),
    /// Whether the last message handled was acknowledged as stored audio.
    acknowledged: bool,
    /// The session whose id the span carries.
    logged_session: Option<SessionId>,
}

/// What the connection knows about whether its client is still there.
struct Liveness {
    started: Instant,
    /// Any frame at all, pongs included.
    last_heard: Instant,
    /// A message (text or binary frame).
    last_message: Instant,
    /// When the last ping went out, if one is unanswered so far.
    ping_sent: Option<Instant>,
    next_ping: Instant,
}

/// Runs the connection until it ends, then closes it in the application.
pub(super) async fn run(
    socket: Socket,
    connection: Connection,
    greeting: Stamped<ServerMessage>,
    context: WsContext,
) {
    tracing::info!(
        peer = connection.info().peer.as_deref().unwrap_or("unknown"),
        "websocket connected"
    );
    let mut task = Task {
        socket,
        connection,
        audio: AudioBuffer::default(),
        out: String::with_capacity(256),
        context: &context,
        membership: None,
        liveness: Liveness {
            started: Instant::now(),
            last_heard: Instant::now(),
            last_message: Instant::now(),
            ping_sent: None,
            next_ping: Instant::now() + context.settings.ping_interval,
        },
        bucket: context
            .settings
            .rate
            .map(|limit| TokenBucket::new(limit, Duration::ZERO)),
        refused: (0, Instant::now()),
        acknowledged: false,
        logged_session: None,
    };
    metrics::connection_opened();
    // A panic while serving (a bug) must not skip closing the connection below: that would
    // leave it counted, its recording open and its file descriptor held.
    let served = std::panic::AssertUnwindSafe(async {
        match task.send(&greeting).await {
            Err(ending) => ending,
            Ok(()) => task.serve().await,
        }
    })
    .catch_unwind()
    .await;
    let ending = served.unwrap_or_else(|_| {
        tracing::error!("connection task panicked; closing the connection");
        Ending::Close(
            ErrorCode::Internal.close_code().unwrap_or(1011),
            "internal error".into(),
        )
    });

    let Task {
        mut socket,
        connection,
        membership,
        ..
    } = task;
    let (id, stats) = (connection.id(), connection.stats());
    // The session is let go of before the close handshake, so that a client reconnecting at
    // once can resume it while this socket is still closing.
    let ending_of_implicit = if context.shutdown.is_cancelled() {
        SessionEnding::Shutdown
    } else {
        SessionEnding::ConnectionClosed
    };
    if let Err(error) = context
        .service
        .close_connection(connection, ending_of_implicit)
        .await
    {
        tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "connection did not close cleanly");
    }
    if membership.is_some() {
        context.hub.leave(id);
    }
    metrics::connection_closed(match &ending {
        Ending::Close(code, _) => Some(*code),
        Ending::ClientGone => None,
    });
    if let Ending::Close(code, reason) = ending {
        close(&mut socket, code, reason, &context).await;
    }
    tracing::info!(
        messages = stats.messages,
        audio_chunks = stats.audio_chunks,
        audio_bytes = stats.audio_bytes,
        "websocket closed"
    );
}

/// Closes a connection whose upgrade never completed.
pub(super) async fn abandon(connection: Connection, context: &WsContext) {
    if let Err(error) = context
        .service
        .close_connection(connection, SessionEnding::ConnectionClosed)
        .await
    {
        tracing::error!(error = %error, "abandoned connection did not close cleanly");
    }
}

impl Task<'_> {
    async fn serve(&mut self) -> Ending {
        let max_depth = self.context.settings.max_json_depth;
        loop {
            let superseded = self.membership.as_ref().map(|m| m.superseded.clone());
            let idle_deadline = self.liveness.last_message + self.context.settings.idle_timeout;
            let check_at = self.liveness.next_ping.min(idle_deadline);
            let frame = tokio::select! {
                // Shutdown first, so that a flood of frames cannot delay it; frames before
                // the timer, so that a pong that arrived while a message was being handled is
                // read before the timer could take its absence for a dead peer.
                biased;
                () = self.context.shutdown.cancelled() => return self.going_away().await,
                () = cancelled(superseded) => return self.superseded().await,
                frame = self.socket.next() => frame,
                () = tokio::time::sleep_until(check_at) => match self.check_liveness().await {
                    Some(ending) => return ending,
                    None => continue,
                },
            };
            self.liveness.last_heard = Instant::now();
            let message = match frame {
                None => return Ending::ClientGone,
                // tungstenite answers pings and close frames itself; keep reading until the
                // stream ends so that the close handshake completes. A stream of control
                // frames alone keeps the timer from firing, so the idle deadline is checked
                // here too.
                Some(Ok(
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_),
                )) => {
                    if self.liveness.last_heard >= idle_deadline
                        && let Some(ending) = self.check_liveness().await
                    {
                        return ending;
                    }
                    continue;
                }
                Some(Err(error)) => return self.ending_for(error).await,
                Some(Ok(message)) => message,
            };
            self.liveness.last_message = self.liveness.last_heard;
            if let Some(refusal) = self.over_rate_limit() {
                match refusal {
                    Ok(reply) => match self.send(&reply).await {
                        Ok(()) => continue,
                        Err(ending) => return ending,
                    },
                    Err(ending) => return ending,
                }
            }
            let message = match message {
                Message::Binary(bytes) if self.connection.binary_frames_are_audio() => {
                    match AudioChunk::new(bytes) {
                        Ok(chunk) => ClientMessage::BinaryAudio(chunk),
                        Err(_) => ClientMessage::Invalid(Rejection::InvalidAudio(
                            "an empty binary frame carries no audio".into(),
                        )),
                    }
                }
                // The original parsed binary frames as JSON too, reading invalid UTF-8 as
                // U+FFFD, as Node's Buffer-to-string conversion does.
                Message::Binary(bytes) => {
                    decode(&String::from_utf8_lossy(&bytes), &mut self.audio, max_depth)
                }
                Message::Text(text) => decode(text.as_str(), &mut self.audio, max_depth),
                _ => continue,
            };
            metrics::message_received(client_kind(&message));
            let audio_bytes = match &message {
                ClientMessage::Audio(AudioMessage {
                    payload: AudioPayload::Chunk(chunk),
                    ..
                })
                | ClientMessage::BinaryAudio(chunk) => Some(chunk.len()),
                _ => None,
            };
            if let Some(bytes) = audio_bytes {
                metrics::audio_received(bytes);
            }
            self.acknowledged = false;
            if let Err(ending) = self.handle(message).await {
                return ending;
            }
            if self.acknowledged {
                metrics::acknowledged(self.liveness.last_message.elapsed());
            }
        }
    }

    /// Takes a token for a message; `None` when it may be handled, else the reply refusing it
    /// or, for a client that keeps going over the limit, the end of the connection.
    fn over_rate_limit(&mut self) -> Option<Result<Stamped<ServerMessage>, Ending>> {
        let bucket = self.bucket.as_mut()?;
        let limit = self.context.settings.rate?;
        if bucket.take(self.liveness.started.elapsed()) {
            return None;
        }
        let now = Instant::now();
        if now.duration_since(self.refused.1) > ABUSE_WINDOW {
            self.refused = (0, now);
        }
        self.refused.0 += 1;
        if self.refused.0 > limit.burst {
            tracing::warn!(
                per_second = limit.per_second,
                refused = self.refused.0,
                "client stays over its rate limit; closing"
            );
            let code = ErrorCode::RateLimitExceeded;
            return Some(Err(Ending::Close(
                code.close_code().unwrap_or(1008),
                "rate limit exceeded".into(),
            )));
        }
        tracing::debug!(
            per_second = limit.per_second,
            "message over the rate limit refused"
        );
        let at = self.context.service.now();
        Some(Ok(Stamped {
            at,
            value: ServerMessage::Rejected(Rejection::RateLimited(limit.per_second)),
        }))
    }

    /// Closes a connection whose client sent nothing for the idle timeout or answered no ping;
    /// otherwise pings it when a ping is due.
    async fn check_liveness(&mut self) -> Option<Ending> {
        let now = Instant::now();
        let settings = self.context.settings;
        if now >= self.liveness.last_message + settings.idle_timeout {
            tracing::info!(
                idle_secs = settings.idle_timeout.as_secs(),
                "idle connection; closing"
            );
            let _ = self
                .send_error(
                    ErrorCode::IdleTimeout,
                    "no message for the idle timeout; closing",
                )
                .await;
            return Some(Ending::Close(
                ErrorCode::IdleTimeout.close_code().unwrap_or(1000),
                "idle timeout".into(),
            ));
        }
        if now < self.liveness.next_ping {
            return None;
        }
        if let Some(sent) = self.liveness.ping_sent
            && self.liveness.last_heard < sent
        {
            tracing::info!(
                interval_secs = settings.ping_interval.as_secs(),
                "client answered no ping; closing"
            );
            return Some(Ending::Close(
                ErrorCode::PingTimeout.close_code().unwrap_or(1011),
                "ping timeout".into(),
            ));
        }
        self.liveness.ping_sent = Some(now);
        self.liveness.next_ping = now + settings.ping_interval;
        // Bounded by the close timeout, not the send timeout: a ping does not wait, unlike a
        // reply, and a client that cannot take one must not hold shutdown or a resume.
        match tokio::time::timeout(
            settings.close_timeout,
            self.socket.send(Message::Ping(Default::default())),
        )
        .await
        {
            Ok(Ok(())) => None,
            _ => Some(Ending::ClientGone),
        }
    }

    /// The service is shutting down: tell the client, with what it needs to carry on
    /// elsewhere, then close with 1001.
    async fn going_away(&mut self) -> Ending {
        self.out.clear();
        let session = self
            .connection
            .session()
            .filter(|s| s.is_declared())
            .map(|s| (s.id(), s.last_seq()));
        encode_going_away(session, self.context.service.now(), &mut self.out);
        let notice = self.socket.send(Message::text(self.out.as_str()));
        let _ = tokio::time::timeout(self.context.settings.close_timeout, notice).await;
        Ending::Close(SHUTDOWN_CLOSE.0, SHUTDOWN_CLOSE.1.to_owned())
    }

    /// Carries out one message and sends its reply; an `Err` ends the connection.
    async fn handle(&mut self, message: ClientMessage) -> Result<(), Ending> {
        // A resume may have to wait for another connection to let go; it is retried as sent,
        // for at most twice the close timeout.
        let retry = matches!(message, ClientMessage::SessionResume { .. }).then(|| message.clone());
        let mut outcome = self
            .context
            .service
            .handle_client_message(&mut self.connection, message)
            .await;
        if let Some(message) = retry {
            let deadline = tokio::time::Instant::now() + self.context.settings.close_timeout * 2;
            while let Err(HandleClientMessageError::SessionHeld { holder, .. }) = &outcome {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                if remaining.is_zero() {
                    break;
                }
                match self.context.hub.supersede(*holder) {
                    Some(released) => {
                        let _ = tokio::time::timeout(remaining, released.cancelled()).await;
                    }
                    // The holder is between letting go and having let go.
                    None => tokio::time::sleep(RESUME_RETRY.min(remaining)).await,
                }
                outcome = self
                    .context
                    .service
                    .handle_client_message(&mut self.connection, message.clone())
                    .await;
            }
        }
        match outcome {
            Ok(reply) => {
                if let ServerMessage::Rejected(rejection) = &reply.value {
                    tracing::debug!(code = rejection_code(rejection).as_str(), error = %rejection, "client message rejected");
                }
                self.join_hub_if_holding();
                self.log_session();
                self.send(&reply).await
            }
            Err(error) => {
                let code = handle_error_code(&error);
                tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), code = code.as_str(), "client message failed");
                self.send_error(code, &error.to_string()).await
            }
        }
    }

    /// Puts the session's id on the connection's span (and so on every later log line) when
    /// the connection gets a session or changes to another.
    fn log_session(&mut self) {
        let current = self.connection.session().map(|session| session.id());
        if current.is_some() && current != self.logged_session {
            if let Some(id) = current {
                tracing::Span::current().record("session_id", tracing::field::display(id));
            }
            self.logged_session = current;
        }
    }

    /// Joins the hub once the connection holds a declared session, leaves it when not.
    fn join_hub_if_holding(&mut self) {
        let holding = self
            .connection
            .session()
            .is_some_and(|session| session.is_declared());
        match (&self.membership, holding) {
            (None, true) => self.membership = Some(self.context.hub.join(self.connection.id())),
            (Some(_), false) => {
                self.context.hub.leave(self.connection.id());
                self.membership = None;
            }
            _ => {}
        }
    }

    /// A resume elsewhere took the session: say so, then close.
    async fn superseded(&mut self) -> Ending {
        let session = self
            .connection
            .session()
            .map(|s| s.id().to_string())
            .unwrap_or_default();
        tracing::info!(
            session_id = session,
            "session resumed on another connection; closing"
        );
        let detail = format!("session {session} was resumed on another connection");
        // Best effort and bounded: a client that stopped reading gets the close code only.
        self.out.clear();
        encode_error(
            ErrorCode::Superseded,
            &detail,
            self.context.service.now(),
            &mut self.out,
        );
        let notice = self.socket.send(Message::text(self.out.as_str()));
        let _ = tokio::time::timeout(self.context.settings.close_timeout, notice).await;
        superseded_ending()
    }

    /// What a read error means for the connection.
    async fn ending_for(&mut self, error: WsError) -> Ending {
        let Some((code, detail)) = classify(error) else {
            return Ending::ClientGone;
        };
        tracing::warn!(code = code.as_str(), error = detail, "closing websocket");
        // A client that can still parse messages learns why before the close frame says how; a
        // protocol violation means the stream can no longer carry one.
        if code != ErrorCode::ProtocolViolation {
            let _ = self.send_error(code, &detail).await;
        }
        Ending::Close(code.close_code().unwrap_or(1011), close_reason(detail))
    }

    async fn send(&mut self, message: &Stamped<ServerMessage>) -> Result<(), Ending> {
        self.out.clear();
        encode(message, &self.context.settings, &mut self.out);
        self.send_out().await?;
        metrics::message_sent(server_kind(&message.value));
        self.acknowledged = matches!(message.value, ServerMessage::AudioReceived { .. });
        Ok(())
    }

    async fn send_error(&mut self, code: ErrorCode, detail: &str) -> Result<(), Ending> {
        self.out.clear();
        encode_error(code, detail, self.context.service.now(), &mut self.out);
        self.send_out().await?;
        metrics::message_sent("error");
        Ok(())
    }

    /// Sends what is in `out`. A client that stops reading fills its socket's buffer and the
    /// send waits; it never waits past the send timeout, and shutdown or a resume elsewhere
    /// interrupt it, so a stuck client cannot hold its session or the service's exit.
    async fn send_out(&mut self) -> Result<(), Ending> {
        let superseded = self.membership.as_ref().map(|m| m.superseded.clone());
        let shutdown = self.context.shutdown.clone();
        let (timeout, close_timeout) = (
            self.context.settings.send_timeout,
            self.context.settings.close_timeout,
        );
        // Shutdown only interrupts a send that is stuck: a reply that can go (the ack of a
        // chunk stored as shutdown began) must reach its client.
        let stuck_at_shutdown = async {
            shutdown.cancelled().await;
            tokio::time::sleep(close_timeout).await;
        };
        tokio::select! {
            biased;
            sent = tokio::time::timeout(timeout, self.socket.send(Message::text(self.out.as_str()))) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Ending::ClientGone),
                Err(_) => {
                    tracing::warn!(timeout_secs = timeout.as_secs(), "client stopped reading; dropping it");
                    Err(Ending::ClientGone)
                }
            },
            () = cancelled(superseded) => {
                tracing::info!("session resumed on another connection while a reply was stuck; closing");
                Err(superseded_ending())
            }
            () = stuck_at_shutdown => Err(Ending::Close(SHUTDOWN_CLOSE.0, SHUTDOWN_CLOSE.1.to_owned())),
        }
    }
}

/// What a read error means: the error to report and close with, or `None` when the client is
/// simply gone.
pub(super) fn classify(error: WsError) -> Option<(ErrorCode, String)> {
    let classified = match error {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => (
            ErrorCode::MessageTooBig,
            format!(
                "message of at least {size} bytes is larger than the limit of {max_size} bytes"
            ),
        ),
        WsError::Utf8(_) => (
            ErrorCode::InvalidUtf8,
            "text frame is not valid UTF-8".to_owned(),
        ),
        WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::SendAfterClosing
            | ProtocolError::ReceivedAfterClosing,
        )
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Io(_) => {
            tracing::debug!(error = %error, "websocket ended without a close handshake");
            return None;
        }
        WsError::Protocol(violation) => (ErrorCode::ProtocolViolation, violation.to_string()),
        error => (ErrorCode::Internal, error.to_string()),
    };
    Some(classified)
}

/// `detail` cut to the 123 bytes RFC 6455 allows a close reason.
pub(super) fn close_reason(mut detail: String) -> String {
    detail.truncate(detail.floor_char_boundary(123));
    detail
}

/// How a connection whose session was taken by a resume ends.
fn superseded_ending() -> Ending {
    Ending::Close(
        ErrorCode::Superseded.close_code().unwrap_or(1000),
        "session resumed on another connection".into(),
    )
}

/// Completes when `token` is cancelled; never, without one.
async fn cancelled(token: Option<tokio_util::sync::CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Sends a close frame and waits (bounded) for the client's, so that the close handshake
/// completes and the client sees our code rather than a dropped connection.
pub(super) async fn close(socket: &mut Socket, code: u16, reason: String, context: &WsContext) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    // Bounded: a client that stopped reading cannot take even the close frame.
    match tokio::time::timeout(context.settings.close_timeout, socket.close(Some(frame))).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    let drained = tokio::time::timeout(context.settings.close_timeout, async {
        while let Some(Ok(_)) = socket.next().await {}
    });
    if drained.await.is_err() {
        tracing::debug!("client did not answer the close frame in time");
    }
}
