//! The WebSocket endpoint `/ws/audio`: the upgrade, the wire format of client frames and
//! server messages, and the task that drives one connection.
//!
//! warp does the routing; the upgrade and the socket are ours, because warp's own WebSocket
//! filter allocates a 128 KiB read buffer per connection that it does not let us size.

mod connection;
mod frame;
mod hub;
mod reply;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use aimcs_application::IngestService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use frame::{AudioBuffer, decode};
pub(crate) use upgrade::{UpgradeRequest, upgrade};

/// Limits and buffer sizes of WebSocket connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsSettings {
    /// Largest message a client may send, in bytes; a larger one closes the socket with 1009.
    pub max_message_bytes: usize,
    /// Initial read buffer per connection, in bytes: the main cost of an idle connection.
    pub read_buffer_bytes: usize,
    /// How long a closing connection waits for the peer's close frame before dropping it; on
    /// shutdown, HTTP connections get as long to finish their request.
    pub close_timeout: Duration,
    /// How long a reply may wait for a client that is not reading before the client is
    /// dropped.
    pub send_timeout: Duration,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            read_buffer_bytes: 4 * 1024,
            close_timeout: Duration::from_secs(2),
            send_timeout: Duration::from_secs(30),
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
}
