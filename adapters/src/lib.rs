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
pub mod outbound;
mod wire;

pub use inbound::http::{CorsPolicy, HttpSettings, InvalidOrigin};
pub use inbound::server::{BindError, Server, ServerSettings, ShutdownReport};
pub use inbound::ws::WsSettings;
