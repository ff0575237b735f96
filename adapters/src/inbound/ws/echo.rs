//! `/ws/echo`: every text and binary message sent back as it came. It exists so that the
//! Autobahn conformance cases exercise the transport (handshake, origin and credential checks,
//! framing, UTF-8 checks, size limits, close handling) with the production transport settings.
//! The message-level limits of `/ws/audio` (rate, JSON depth, pings) are not applied: echoed
//! messages are not JSON, and the cases send bursts on purpose. Off by default, and refused by
//! the settings in production.

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use super::WsContext;
use super::connection::{SHUTDOWN_CLOSE, Socket, classify, close, close_reason};
use crate::inbound::errors::ErrorCode;

/// Echoes until the client closes, the connection fails, idles out, or the service stops.
pub(super) async fn run(mut socket: Socket, context: WsContext) {
    let settings = context.settings;
    loop {
        let frame = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => {
                close(&mut socket, SHUTDOWN_CLOSE.0, SHUTDOWN_CLOSE.1.into(), &context).await;
                return;
            }
            frame = tokio::time::timeout(settings.idle_timeout, socket.next()) => frame,
        };
        let message = match frame {
            Err(_) => {
                let code = ErrorCode::IdleTimeout.close_code().unwrap_or(1000);
                close(&mut socket, code, "idle timeout".into(), &context).await;
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(error))) => {
                if let Some((code, detail)) = classify(error) {
                    let code = code.close_code().unwrap_or(1011);
                    close(&mut socket, code, close_reason(detail), &context).await;
                }
                return;
            }
            Ok(Some(Ok(message @ (Message::Text(_) | Message::Binary(_))))) => message,
            // tungstenite answers pings and close frames itself.
            Ok(Some(Ok(_))) => continue,
        };
        match tokio::time::timeout(settings.send_timeout, socket.send(message)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
