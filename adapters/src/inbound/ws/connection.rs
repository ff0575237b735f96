//! The task that drives one WebSocket connection: greet, then read a frame, carry it out,
//! reply, until the client leaves or the service shuts down; then close the connection in the
//! application, which flushes its audio.
//!
//! One task per connection with the stream not split: a writer task and channel would cost
//! memory on every idle connection, and each reply is written before the next frame is read,
//! which keeps replies in order and lets a slow client slow only itself.

use aimcs_domain::{Connection, ServerMessage, Stamped};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::reply::{encode, encode_error};
use super::{AudioBuffer, WsContext, decode};
use crate::inbound::errors::{ErrorCode, handle_error_code, rejection_code};

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Close code and reason sent to every client when the service shuts down; the original sent
/// the same, so clients that reconnect on it keep doing so.
const SHUTDOWN_CLOSE: (u16, &str) = (1000, "Server shutting down");

/// Why the read loop ended.
enum Ending {
    /// The client closed or the socket failed; nothing more to send.
    ClientGone,
    /// We must send a close frame with this code and reason.
    Close(u16, String),
}

/// Runs the connection until it ends, then closes it in the application.
pub(super) async fn run(
    mut socket: Socket,
    mut connection: Connection,
    greeting: Stamped<ServerMessage>,
    context: WsContext,
) {
    tracing::info!(
        peer = connection.info().peer.as_deref().unwrap_or("unknown"),
        "websocket connected"
    );
    let mut out = String::with_capacity(256);
    let mut audio = AudioBuffer::default();

    let ending = if send(&mut socket, &greeting, &mut out).await.is_err() {
        Ending::ClientGone
    } else {
        serve(&mut socket, &mut connection, &mut audio, &mut out, &context).await
    };

    if let Ending::Close(code, reason) = ending {
        close(&mut socket, code, reason, &context).await;
    }
    let stats = connection.stats();
    if let Err(error) = context.service.close_connection(connection).await {
        tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "connection did not close cleanly");
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
    if let Err(error) = context.service.close_connection(connection).await {
        tracing::error!(error = %error, "abandoned connection did not close cleanly");
    }
}

async fn serve(
    socket: &mut Socket,
    connection: &mut Connection,
    audio: &mut AudioBuffer,
    out: &mut String,
    context: &WsContext,
) -> Ending {
    loop {
        let frame = tokio::select! {
            // Checked first so that a flood of frames cannot delay shutdown.
            biased;
            () = context.shutdown.cancelled() => {
                return Ending::Close(SHUTDOWN_CLOSE.0, SHUTDOWN_CLOSE.1.to_owned());
            }
            frame = socket.next() => frame,
        };
        let message = match frame {
            None => return Ending::ClientGone,
            Some(Ok(Message::Text(text))) => decode(text.as_bytes(), audio),
            // The original parsed binary frames as JSON too, reading invalid UTF-8 as U+FFFD,
            // as Node's Buffer-to-string conversion does.
            Some(Ok(Message::Binary(bytes))) => {
                decode(String::from_utf8_lossy(&bytes).as_bytes(), audio)
            }
            // tungstenite answers pings and close frames itself; keep reading until the
            // stream ends so that the close handshake completes.
            Some(Ok(
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_),
            )) => continue,
            Some(Err(error)) => return ending_for(error, context, socket, out).await,
        };
        let sent = match context
            .service
            .handle_client_message(connection, message)
            .await
        {
            Ok(reply) => {
                if let ServerMessage::Rejected(rejection) = &reply.value {
                    tracing::debug!(code = rejection_code(rejection).as_str(), error = %rejection, "client message rejected");
                }
                send(socket, &reply, out).await
            }
            Err(error) => {
                let code = handle_error_code(&error);
                tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), code = code.as_str(), "client message failed");
                send_error(socket, code, &error.to_string(), context, out).await
            }
        };
        if sent.is_err() {
            return Ending::ClientGone;
        }
    }
}

/// What a read error means for the connection.
async fn ending_for(
    error: WsError,
    context: &WsContext,
    socket: &mut Socket,
    out: &mut String,
) -> Ending {
    let (code, detail) = match error {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => (
            ErrorCode::MessageTooBig,
            format!("message of {size} bytes is larger than the limit of {max_size} bytes"),
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
            return Ending::ClientGone;
        }
        WsError::Protocol(violation) => (ErrorCode::ProtocolViolation, violation.to_string()),
        error => (ErrorCode::Internal, error.to_string()),
    };
    tracing::warn!(code = code.as_str(), error = detail, "closing websocket");
    // A client that can still parse messages learns why before the close frame says how; a
    // protocol violation means the stream can no longer carry one.
    if code != ErrorCode::ProtocolViolation {
        let _ = send_error(socket, code, &detail, context, out).await;
    }
    let close_code = code.close_code().unwrap_or(1011);
    // A close reason is limited to 123 bytes by RFC 6455.
    let mut reason = detail;
    reason.truncate(reason.floor_char_boundary(123));
    Ending::Close(close_code, reason)
}

async fn send(
    socket: &mut Socket,
    message: &Stamped<ServerMessage>,
    out: &mut String,
) -> Result<(), WsError> {
    out.clear();
    encode(message, out);
    socket.send(Message::text(out.as_str())).await
}

async fn send_error(
    socket: &mut Socket,
    code: ErrorCode,
    detail: &str,
    context: &WsContext,
    out: &mut String,
) -> Result<(), WsError> {
    out.clear();
    encode_error(code, detail, context.service.now(), out);
    socket.send(Message::text(out.as_str())).await
}

/// Sends a close frame and waits (bounded) for the client's, so that the close handshake
/// completes and the client sees our code rather than a dropped connection.
async fn close(socket: &mut Socket, code: u16, reason: String, context: &WsContext) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    if socket.close(Some(frame)).await.is_err() {
        return;
    }
    let drained = tokio::time::timeout(context.settings.close_timeout, async {
        while let Some(Ok(_)) = socket.next().await {}
    });
    if drained.await.is_err() {
        tracing::debug!("client did not answer the close frame in time");
    }
}
