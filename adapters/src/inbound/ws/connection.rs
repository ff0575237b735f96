//! The task that drives one WebSocket connection: greet, then read a frame, carry it out,
//! reply, until the client leaves, the service shuts down, or a resume elsewhere takes the
//! connection's session; then close the connection in the application, which parks or
//! finishes its session.
//!
//! One task per connection with the socket not split: a writer task and channel would cost
//! memory on every idle connection. Replies are queued in order and written before the task
//! waits for more from the client (the replies to a burst of messages in one write), which
//! lets a slow client, or a slow sink, slow only its own connection: while a chunk is being
//! stored nothing more is read, so TCP pushes back on the client instead of audio piling up in
//! memory.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use aimcs_application::HandleClientMessageError;
use aimcs_domain::{
    AudioChunk, AudioMessage, AudioPayload, ClientMessage, Connection, Rejection, ServerMessage,
    SessionEnding, SessionId, Stamped, TokenBucket,
};
use bytes::Bytes;
use futures_util::FutureExt as _;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::codec::ProtocolError;
use super::hub::Membership;
use super::reply::{encode, encode_error, encode_going_away, server_kind};
use super::socket::{Incoming, ReadError, WsSocket};
use super::{AudioBuffer, WsContext, client_kind, decode};
use crate::inbound::errors::{ErrorCode, handle_error_code, rejection_code};
use crate::metrics;

thread_local! {
    /// Where server messages are written as JSON before they are framed: one per thread
    /// rather than one per connection, since an idle connection should hold nothing.
    static ENCODED: RefCell<String> = RefCell::new(String::with_capacity(1024));
}

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
pub(super) enum Ending {
    /// The socket failed; nothing more to send.
    ClientGone,
    /// The client sent a close frame; ours, its answer, is queued.
    ClientClosed,
    /// We must send a close frame with this code and reason.
    Close(u16, String),
}

impl Ending {
    /// The close code this side sends, for the metrics.
    fn code(&self) -> Option<u16> {
        match self {
            Self::Close(code, _) => Some(*code),
            Self::ClientGone | Self::ClientClosed => None,
        }
    }

    /// Ends the WebSocket as this ending says: close handshakes are bounded by `timeout`.
    pub(super) async fn carry_out(self, socket: &mut WsSocket, timeout: Duration) {
        match self {
            Self::ClientGone => {}
            Self::ClientClosed => socket.finish(timeout).await,
            Self::Close(code, reason) => socket.close(code, &reason, timeout).await,
        }
    }
}

/// What a wait on the connection brought.
enum Event {
    Shutdown,
    Superseded,
    /// A message, decoded, and when it arrived.
    Message(ClientMessage, Instant),
    /// A message over the rate limit, not decoded.
    OverLimit(Instant),
    /// A ping or a pong.
    Control(Instant),
    Failed(ReadError),
    /// A ping or the idle timeout may be due.
    Timer,
}

/// What one connection task keeps between frames.
struct Task {
    socket: WsSocket,
    connection: Connection,
    audio: AudioBuffer,
    context: Arc<WsContext>,
    /// Present while the connection holds a declared session.
    membership: Option<Membership>,
    /// The wait for [`Membership::superseded`], made once per membership.
    superseded: Option<std::pin::Pin<Box<WaitForCancellationFutureOwned>>>,
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
///
/// The task's state is made here, outside the future, and the future moves it in once: an
/// async fn would hold its arguments and the task made of them side by side, and every idle
/// connection pays for the largest state its future can be in.
pub(super) fn run(
    socket: WsSocket,
    connection: Connection,
    greeting: Stamped<ServerMessage>,
    context: Arc<WsContext>,
) -> impl Future<Output = ()> + Send + 'static {
    let now = Instant::now();
    let mut task = Task {
        socket,
        connection,
        audio: AudioBuffer::default(),
        membership: None,
        superseded: None,
        liveness: Liveness {
            started: now,
            last_heard: now,
            last_message: now,
            ping_sent: None,
            next_ping: now + context.settings.ping_interval,
        },
        bucket: context
            .settings
            .rate
            .map(|limit| TokenBucket::new(limit, Duration::ZERO)),
        refused: (0, now),
        acknowledged: false,
        logged_session: None,
        context,
    };
    // Queued now and written by the first turn of the loop.
    task.send(&greeting);
    async move {
        tracing::info!(
            peer = task.connection.info().peer.as_deref().unwrap_or("unknown"),
            "websocket connected"
        );
        metrics::connection_opened();
        // A panic while serving (a bug) must not skip closing the connection below: that
        // would leave it counted, its recording open and its file descriptor held.
        let served = std::panic::AssertUnwindSafe(task.serve())
            .catch_unwind()
            .await;
        let ending = served.unwrap_or_else(|_| {
            tracing::error!("connection task panicked; closing the connection");
            Ending::Close(
                ErrorCode::Internal.close_code().unwrap_or(1011),
                "internal error".into(),
            )
        });
        // Boxed, as every rare path of the task is.
        Box::pin(task.finish(ending)).await;
    }
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

impl Task {
    /// Closes the connection in the application, then ends the WebSocket as `ending` says.
    async fn finish(self, ending: Ending) {
        let Task {
            mut socket,
            connection,
            membership,
            context,
            ..
        } = self;
        let (id, stats) = (connection.id(), connection.stats());
        // The session is let go of before the close handshake, so that a client reconnecting
        // at once can resume it while this socket is still closing.
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
        metrics::connection_closed(ending.code());
        ending
            .carry_out(&mut socket, context.settings.close_timeout)
            .await;
        tracing::info!(
            messages = stats.messages,
            audio_chunks = stats.audio_chunks,
            audio_bytes = stats.audio_bytes,
            "websocket closed"
        );
    }

    async fn serve(&mut self) -> Ending {
        let max_depth = self.context.settings.max_json_depth;
        // Waited on by every turn of the loop, so made once: a fresh wait per message would
        // register with the shutdown token and the timer wheel each time.
        let shutdown = self.context.shutdown.clone().cancelled_owned();
        let timer = tokio::time::sleep_until(self.next_check());
        tokio::pin!(shutdown, timer);
        loop {
            if self.socket.wants_flush()
                && let Err(ending) = self.flush().await
            {
                return ending;
            }
            let event = tokio::select! {
                // Shutdown first, so that a flood of frames cannot delay it; frames before
                // the timer, so that a pong that arrived while a message was being handled is
                // read before the timer could take its absence for a dead peer.
                biased;
                () = &mut shutdown => Event::Shutdown,
                () = superseded(&mut self.superseded) => Event::Superseded,
                read = self.socket.next() => {
                    let now = Instant::now();
                    match read {
                        Ok(Incoming::Control) => Event::Control(now),
                        // Over the limit, a message is refused unread.
                        Ok(_) if !self.bucket.as_mut().is_none_or(|bucket| bucket.take(now - self.liveness.started)) => Event::OverLimit(now),
                        Ok(incoming) => Event::Message(to_message(
                            incoming,
                            self.connection.binary_frames_are_audio(),
                            &mut self.audio,
                            max_depth,
                        ), now),
                        Err(error) => Event::Failed(error),
                    }
                },
                () = &mut timer => Event::Timer,
            };
            let idle_deadline = self.liveness.last_message + self.context.settings.idle_timeout;
            let (message, now) = match event {
                Event::Shutdown => return self.going_away(),
                Event::Superseded => return self.superseded(),
                // The timer is moved only when it fires: it then checks whatever happened
                // since, and is set for the next ping or the idle deadline, whichever is first.
                Event::Timer => match self.check_liveness() {
                    Some(ending) => return ending,
                    None => {
                        timer.as_mut().reset(self.next_check());
                        continue;
                    }
                },
                Event::Failed(error) => return self.ending_for(error),
                // A stream of control frames alone keeps the timer from firing, so the idle
                // deadline is checked here too.
                Event::Control(now) => {
                    self.liveness.last_heard = now;
                    if self.liveness.last_heard >= idle_deadline
                        && let Some(ending) = self.check_liveness()
                    {
                        return ending;
                    }
                    continue;
                }
                Event::OverLimit(now) => {
                    self.liveness.last_heard = now;
                    self.liveness.last_message = now;
                    match self.refuse_over_limit() {
                        Ok(reply) => {
                            self.send(&reply);
                            continue;
                        }
                        Err(ending) => return ending,
                    }
                }
                Event::Message(message, now) => (message, now),
            };
            self.liveness.last_heard = now;
            self.liveness.last_message = now;
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
            // Boxed: handling a message is the largest state of the task, and an idle
            // connection, waiting for its next message, would hold its memory too.
            if let Err(ending) = Box::pin(self.handle(message)).await {
                return ending;
            }
            if self.acknowledged {
                metrics::acknowledged(self.liveness.last_message.elapsed());
            }
        }
    }

    /// The reply refusing a message over the rate limit or, for a client that keeps going
    /// over it, the end of the connection.
    fn refuse_over_limit(&mut self) -> Result<Stamped<ServerMessage>, Ending> {
        let limit = self
            .context
            .settings
            .rate
            .unwrap_or(aimcs_domain::RateLimit {
                per_second: 0,
                burst: 0,
            });
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
            return Err(Ending::Close(
                code.close_code().unwrap_or(1008),
                "rate limit exceeded".into(),
            ));
        }
        tracing::debug!(
            per_second = limit.per_second,
            "message over the rate limit refused"
        );
        let at = self.context.service.now();
        Ok(Stamped {
            at,
            value: ServerMessage::Rejected(Rejection::RateLimited(limit.per_second)),
        })
    }

    /// When the timer should next look at the connection: the next ping or the idle deadline.
    fn next_check(&self) -> Instant {
        let idle_deadline = self.liveness.last_message + self.context.settings.idle_timeout;
        self.liveness.next_ping.min(idle_deadline)
    }

    /// Closes a connection whose client sent nothing for the idle timeout or answered no ping;
    /// otherwise pings it when a ping is due.
    fn check_liveness(&mut self) -> Option<Ending> {
        let now = Instant::now();
        let settings = self.context.settings;
        // A connection that went quiet gives back the memory its audio took.
        if now.duration_since(self.liveness.last_message) >= settings.ping_interval {
            self.audio = AudioBuffer::default();
        }
        if now >= self.liveness.last_message + settings.idle_timeout {
            tracing::info!(
                idle_secs = settings.idle_timeout.as_secs(),
                "idle connection; closing"
            );
            self.send_error(
                ErrorCode::IdleTimeout,
                "no message for the idle timeout; closing",
            );
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
        self.socket.send_ping();
        None
    }

    /// The service is shutting down: tell the client, with what it needs to carry on
    /// elsewhere, then close with 1001.
    /// (The close that follows writes the notice, bounded by the close timeout.)
    fn going_away(&mut self) -> Ending {
        let session = self
            .connection
            .session()
            .filter(|s| s.is_declared())
            .map(|s| (s.id(), s.last_seq()));
        let at = self.context.service.now();
        queue(&mut self.socket, |out| encode_going_away(session, at, out));
        metrics::message_sent("going_away");
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
                self.send(&reply);
            }
            Err(error) => {
                let code = handle_error_code(&error);
                tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), code = code.as_str(), "client message failed");
                self.send_error(code, &error.to_string());
                if let Some(close) = code.close_code() {
                    // The session went to another replica: this socket has nothing left to
                    // stream to.
                    return Err(Ending::Close(close, code.as_str().into()));
                }
            }
        }
        Ok(())
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
            (None, true) => {
                let membership = self.context.hub.join(self.connection.id());
                self.superseded = Some(Box::pin(membership.superseded.clone().cancelled_owned()));
                self.membership = Some(membership);
            }
            (Some(_), false) => {
                self.context.hub.leave(self.connection.id());
                self.membership = None;
                self.superseded = None;
            }
            _ => {}
        }
    }

    /// A resume elsewhere took the session: say so, then close (bounded, like every close: a
    /// client that stopped reading gets the close code only).
    fn superseded(&mut self) -> Ending {
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
        self.send_error(ErrorCode::Superseded, &detail);
        superseded_ending()
    }

    /// What a read error means for the connection.
    fn ending_for(&mut self, error: ReadError) -> Ending {
        if matches!(error, ReadError::Closed(_)) {
            return Ending::ClientClosed;
        }
        let Some((code, detail)) = classify(error) else {
            return Ending::ClientGone;
        };
        tracing::warn!(code = code.as_str(), error = detail, "closing websocket");
        // A client that can still parse messages learns why before the close frame says how; a
        // protocol violation means the stream can no longer carry one.
        if code != ErrorCode::ProtocolViolation {
            self.send_error(code, &detail);
        }
        Ending::Close(code.close_code().unwrap_or(1011), close_reason(detail))
    }

    /// Queues a server message.
    fn send(&mut self, message: &Stamped<ServerMessage>) {
        let settings = &self.context.settings;
        queue(&mut self.socket, |out| encode(message, settings, out));
        metrics::message_sent(server_kind(&message.value));
        self.acknowledged = matches!(message.value, ServerMessage::AudioReceived { .. });
    }

    /// Queues an `error` message.
    fn send_error(&mut self, code: ErrorCode, detail: &str) {
        let at = self.context.service.now();
        queue(&mut self.socket, |out| encode_error(code, detail, at, out));
        metrics::message_sent("error");
    }

    /// Writes what is queued. A client that stops reading fills its socket's buffer and the
    /// write waits; it never waits past the send timeout, and shutdown or a resume elsewhere
    /// interrupt it, so a stuck client cannot hold its session or the service's exit.
    ///
    /// Not async itself: the wait, rare, is boxed so that its state is not part of every
    /// connection task's memory.
    fn flush(&mut self) -> impl Future<Output = Result<(), Ending>> + '_ {
        let written = match self.socket.try_flush() {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(_) => Some(Err(Ending::ClientGone)),
        };
        async move {
            match written {
                Some(written) => written,
                None => Box::pin(self.flush_stuck()).await,
            }
        }
    }

    /// Waits for the queued replies to be written, within the send timeout.
    async fn flush_stuck(&mut self) -> Result<(), Ending> {
        let superseded = self.membership.as_ref().map(|m| m.superseded.clone());
        let shutdown = self.context.shutdown.clone();
        let (timeout, close_timeout) = (
            self.context.settings.send_timeout,
            self.context.settings.close_timeout,
        );
        // Shutdown only interrupts a write that is stuck: a reply that can go (the ack of a
        // chunk stored as shutdown began) must reach its client.
        let stuck_at_shutdown = async {
            shutdown.cancelled().await;
            tokio::time::sleep(close_timeout).await;
        };
        tokio::select! {
            biased;
            sent = tokio::time::timeout(timeout, self.socket.flush()) => match sent {
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

/// Queues on `socket` the text `write` produces.
fn queue(socket: &mut WsSocket, write: impl FnOnce(&mut String)) {
    ENCODED.with_borrow_mut(|text| {
        text.clear();
        write(text);
        socket.send_text(text);
    });
}

/// The message a frame holds. A binary frame of a connection speaking sessions is raw audio;
/// otherwise a frame is JSON (binary ones too, as the original read them).
fn to_message(
    incoming: Incoming<'_>,
    binary_is_audio: bool,
    audio: &mut AudioBuffer,
    max_depth: usize,
) -> ClientMessage {
    match incoming {
        Incoming::Binary(bytes) if binary_is_audio => {
            match AudioChunk::new(Bytes::copy_from_slice(bytes)) {
                Ok(chunk) => ClientMessage::BinaryAudio(chunk),
                Err(_) => ClientMessage::Invalid(Rejection::InvalidAudio(
                    "an empty binary frame carries no audio".into(),
                )),
            }
        }
        // The original parsed binary frames as JSON too, reading invalid UTF-8 as U+FFFD, as
        // Node's Buffer-to-string conversion does.
        Incoming::Binary(bytes) => decode(&String::from_utf8_lossy(bytes), audio, max_depth),
        Incoming::Text(text) => decode(text, audio, max_depth),
        Incoming::Control => ClientMessage::Invalid(Rejection::MalformedMessage(
            "a control frame is not a message".into(),
        )),
    }
}

/// What a read error means: the error to report and close with, or `None` when the client
/// closed or is simply gone.
pub(super) fn classify(error: ReadError) -> Option<(ErrorCode, String)> {
    let classified = match error {
        ReadError::Closed(_) => return None,
        ReadError::Protocol(error @ ProtocolError::TooBig { .. }) => {
            (ErrorCode::MessageTooBig, error.to_string())
        }
        ReadError::Protocol(error @ ProtocolError::InvalidUtf8(_)) => {
            (ErrorCode::InvalidUtf8, error.to_string())
        }
        ReadError::Protocol(error @ ProtocolError::Violation(_)) => {
            (ErrorCode::ProtocolViolation, error.to_string())
        }
        ReadError::Io(error) => {
            tracing::debug!(error = %error, "websocket ended without a close handshake");
            return None;
        }
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

/// Completes when the connection is superseded; never, for one that holds no session.
async fn superseded(wait: &mut Option<std::pin::Pin<Box<WaitForCancellationFutureOwned>>>) {
    match wait {
        Some(wait) => wait.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Completes when `token` is cancelled; never, without one.
async fn cancelled(token: Option<tokio_util::sync::CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}
