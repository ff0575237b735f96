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
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::reply::{encode, encode_error};
use super::{FrameDecoder, WsContext};
use crate::inbound::errors::{ErrorCode, handle_error_code};

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
    let mut decoder = FrameDecoder::default();

    let ending = if send(&mut socket, &greeting, &mut out).await.is_err() {
        Ending::ClientGone
    } else {
        serve(
            &mut socket,
            &mut connection,
            &mut decoder,
            &mut out,
            &context,
        )
        .await
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
    decoder: &mut FrameDecoder,
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
        let payload = match frame {
            None => return Ending::ClientGone,
            Some(Ok(Message::Text(text))) => text.into(),
            // The original parsed binary frames as JSON text too; keep accepting them.
            Some(Ok(Message::Binary(bytes))) => bytes,
            // tungstenite answers pings and close frames itself; keep reading until the
            // stream ends so that the close handshake completes.
            Some(Ok(
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_),
            )) => continue,
            Some(Err(error)) => return ending_for(error, context, socket, out).await,
        };
        let message = decoder.decode(&payload);
        drop(payload);
        let sent = match context
            .service
            .handle_client_message(connection, message)
            .await
        {
            Ok(reply) => send(socket, &reply, out).await,
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
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            tracing::warn!(size, max_size, "message too big, closing");
            let detail =
                format!("message of {size} bytes is larger than the limit of {max_size} bytes");
            // The error message tells the client why before the close frame does.
            let _ = send_error(socket, ErrorCode::MessageTooBig, &detail, context, out).await;
            Ending::Close(1009, format!("message too big: limit is {max_size} bytes"))
        }
        // tungstenite has already sent the close frame for protocol and UTF-8 errors (1002,
        // 1007); for I/O errors the peer is gone. Either way nothing more can be sent.
        error => {
            tracing::info!(error = %error, "websocket ended by error");
            Ending::ClientGone
        }
    }
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
