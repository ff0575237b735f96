//! The AIMCS domain: what a connection, a session and an audio chunk are, what each client
//! message means and which reply it earns. Nothing here performs I/O or knows a wire format:
//! JSON, base64, WebSocket frames and HTTP live in the adapters, time and storage behind the
//! [`ports`].
//!
//! # Layout
//! - [`ids`]: `ConnectionId` and `SessionId`, unique UUID v4 newtypes.
//! - [`time`]: `Timestamp`, wall-clock milliseconds as the `Clock` port reports them, and
//!   `Stamped`, a value with the time it was produced.
//! - [`audio`]: `AudioChunk`, a non-empty run of audio bytes.
//! - [`message`]: the meanings of client and server messages (`ClientMessage`, `ServerMessage`).
//! - [`connection`]: one connection's state and the rule that maps each message to a decision.
//! - [`chat`]: the echo rule of the chat endpoint.
//! - [`ports`]: `ConnectionStore`, `Clock`, `AudioSink`.

pub mod audio;
pub mod chat;
pub mod connection;
pub mod ids;
pub mod message;
pub mod ports;
pub mod time;

pub use audio::{AudioChunk, EmptyAudioChunk};
pub use chat::{ChatReply, ChatRequest, EmptyChatMessage};
pub use connection::{Connection, ConnectionInfo, ConnectionStats, Decision};
pub use ids::{ChatReplyId, ConnectionId, ParseIdError, SessionId};
pub use message::{
    AudioMessage, AudioPayload, ClientMessage, ClientValue, Rejection, ServerMessage,
};
pub use time::{Stamped, Timestamp};
