//! `/ws/echo`: every text and binary message sent back as it came. It exists so that the
//! Autobahn conformance cases exercise the transport (handshake, origin and credential checks,
//! framing, UTF-8 checks, size limits, close handling) with the production transport settings.
//! The message-level limits of `/ws/audio` (rate, JSON depth, pings) are not applied: echoed
//! messages are not JSON, and the cases send bursts on purpose. Off by default, and refused by
//! the settings in production.

use std::sync::Arc;

use super::WsContext;
use super::connection::{Ending, SHUTDOWN_CLOSE, classify, close_reason};
use super::socket::{Incoming, ReadError, WsSocket};
use crate::inbound::errors::ErrorCode;

/// Echoes until the client closes, the connection fails, idles out, or the service stops.
pub(super) async fn run(mut socket: WsSocket, context: Arc<WsContext>) {
    let ending = echo(&mut socket, &context).await;
    ending
        .carry_out(&mut socket, context.settings.close_timeout)
        .await;
}

async fn echo(socket: &mut WsSocket, context: &WsContext) -> Ending {
    let settings = context.settings;
    loop {
        if socket.wants_flush() {
            match tokio::time::timeout(settings.send_timeout, socket.flush()).await {
                Ok(Ok(())) => {}
                _ => return Ending::ClientGone,
            }
        }
        let read = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => {
                return Ending::Close(SHUTDOWN_CLOSE.0, SHUTDOWN_CLOSE.1.into());
            }
            read = tokio::time::timeout(settings.idle_timeout, socket.next()) => read,
        };
        let echoed = match read {
            Err(_) => {
                let code = ErrorCode::IdleTimeout.close_code().unwrap_or(1000);
                return Ending::Close(code, "idle timeout".into());
            }
            Ok(Err(ReadError::Closed(_))) => return Ending::ClientClosed,
            Ok(Err(error)) => {
                return match classify(error) {
                    Some((code, detail)) => {
                        Ending::Close(code.close_code().unwrap_or(1011), close_reason(detail))
                    }
                    None => Ending::ClientGone,
                };
            }
            Ok(Ok(Incoming::Control)) => continue,
            Ok(Ok(Incoming::Text(text))) => Echo::Text(text.to_owned()),
            Ok(Ok(Incoming::Binary(bytes))) => Echo::Binary(bytes.to_vec()),
        };
        match echoed {
            Echo::Text(text) => socket.send_text(&text),
            Echo::Binary(bytes) => socket.send_binary(&bytes),
        }
    }
}

/// A message to send back, copied out of the read buffer it arrived in.
enum Echo {
    Text(String),
    Binary(Vec<u8>),
}
