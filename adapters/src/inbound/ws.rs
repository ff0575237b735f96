//! The WebSocket endpoint `/ws/audio`: the upgrade, the wire format of client frames and
//! server messages, and the task that drives one connection.
//!
//! warp does the routing; the upgrade and the protocol are ours: warp's own WebSocket filter
//! keeps a 128 KiB read buffer per connection, where an idle connection here holds none
//! (`socket`), and reads frames where they arrived (`codec`).

mod codec;
mod connection;
mod echo;
mod frame;
mod hub;
mod reply;
mod socket;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use aimcs_application::IngestService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use frame::{AudioBuffer, CLIENT_KINDS, client_kind, decode};
pub(crate) use reply::SERVER_KINDS;
pub(crate) use upgrade::{Endpoint, UpgradeRequest, unauthorized, upgrade};

/// Limits and buffer sizes of WebSocket connections. Every limit is announced to clients in
/// the `connection` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsSettings {
    /// Largest message (and frame) a client may send, in bytes; a larger one closes the
    /// socket with 1009.
    pub max_message_bytes: usize,
    /// Bytes one read of a connection asks for (more when a frame needs more). Only a
    /// connection with bytes to read holds a read buffer: an idle one holds none.
    pub read_buffer_bytes: usize,
    /// How long a closing connection waits for the peer's close frame before dropping it; on
    /// shutdown, HTTP connections get as long to finish their request.
    pub close_timeout: Duration,
    /// How long a reply may wait for a client that is not reading before the client is
    /// dropped.
    pub send_timeout: Duration,
    /// WebSockets open at once; beyond it an upgrade gets 503 (the HTTP API still answers).
    pub max_connections: usize,
    /// Messages per second a connection may send on average (0: no limit), and in a burst.
    pub rate: Option<aimcs_domain::RateLimit>,
    /// How deeply a message's JSON may nest.
    pub max_json_depth: usize,
    /// How often the server pings; a client that has sent nothing, not even a pong, for two
    /// intervals is closed.
    pub ping_interval: Duration,
    /// A connection that sends no message for this long is closed (4408).
    pub idle_timeout: Duration,
    /// Whether an upgrade without an `Origin` header (a non-browser client) is accepted.
    pub allow_missing_origin: bool,
    /// Whether `/ws/echo` exists: an echo endpoint for protocol conformance tests.
    pub echo_endpoint: bool,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            read_buffer_bytes: socket::DEFAULT_READ_SIZE,
            close_timeout: Duration::from_secs(2),
            send_timeout: Duration::from_secs(30),
            max_connections: 4_096,
            rate: Some(aimcs_domain::RateLimit {
                per_second: 100,
                burst: 200,
            }),
            max_json_depth: 32,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(600),
            allow_missing_origin: true,
            echo_endpoint: false,
        }
    }
}

/// What every WebSocket connection task shares.
#[derive(Clone)]
pub(crate) struct WsContext {
    pub(crate) service: Arc<IngestService>,
    pub(crate) settings: WsSettings,
    /// Cancelled when the service shuts down: every connection then says goodbye.
    pub(crate) shutdown: CancellationToken,
    /// Tracks connection tasks, so that shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Connections holding sessions, for resumes to supersede them.
    pub(crate) hub: Arc<hub::ConnectionHub>,
    /// Origins allowed to open a WebSocket from a browser: the CORS allow-list.
    pub(crate) origins: Arc<crate::inbound::http::CorsPolicy>,
    /// Present when authentication is on.
    pub(crate) auth: Option<Arc<crate::inbound::auth::Authenticator>>,
    /// One permit per open WebSocket, [`WsSettings::max_connections`] in all.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
}
