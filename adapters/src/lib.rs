//! AIMCS adapters: the technology on both sides of the application.
//!
//! # Layout
//! - [`inbound`]: what drives the application: the HTTP API, the WebSocket endpoint, and the
//!   [`inbound::server::Server`] that serves both on one listener; `inbound::errors` maps every
//!   error to its code and status.
//! - [`outbound`]: what the application drives: `InMemoryConnectionStore`, `SystemClock`,
//!   `NullAudioSink`.
//! - `wire`: notation shared by both directions (timestamps, the original's JSON and form
//!   rules).

pub mod inbound;
pub mod metrics;
pub mod outbound;
mod wire;

/// Entry points for the fuzz targets in `tests/fuzz`: the parsing of untrusted input, which
/// is otherwise private. Not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use aimcs_domain::ClientMessage;

    use crate::inbound::ws::{AudioBuffer, decode};

    /// Reads one client frame as the connection task reads a binary frame (invalid UTF-8 as
    /// U+FFFD; text frames arrive as valid UTF-8), with the default depth limit.
    pub fn decode_client_frame(frame: &[u8]) -> ClientMessage {
        decode(
            &String::from_utf8_lossy(frame),
            &mut AudioBuffer::default(),
            32,
        )
    }

    /// The JSON nesting check run before every parse.
    pub fn nests_deeper_than(json: &[u8], max: usize) -> bool {
        crate::wire::json_depth::nests_deeper_than(json, max)
    }
}

pub use inbound::http::{CorsPolicy, HttpSettings, InvalidOrigin, RenderMetrics};
pub use inbound::metrics_listener::MetricsListener;
pub use inbound::server::{BindError, Server, ServerSettings, ShutdownReport};
pub use inbound::ws::WsSettings;
