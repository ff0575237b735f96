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
//! - [`format`]: the audio formats a client can declare and the rules of a declaration.
//! - [`session`]: audio sessions, their sequence numbers, totals and resumption.
//! - [`recording`]: what an audio sink is told when a recording opens and ends.
//! - [`message`]: the meanings of client and server messages (`ClientMessage`, `ServerMessage`).
//! - [`connection`]: one connection's state and the rule that maps each message to a decision.
//! - [`chat`]: the echo rule of the chat endpoint.
//! - [`rate`]: the token bucket that limits how fast a connection may send.
//! - [`ports`]: `ConnectionStore`, `Clock`, `AudioSink`.

pub mod audio;
pub mod chat;
pub mod connection;
pub mod format;
pub mod ids;
pub mod message;
pub mod ports;
pub mod rate;
pub mod recording;
pub mod session;
pub mod time;

pub use audio::{AudioChunk, EmptyAudioChunk};
pub use chat::{ChatReply, ChatRequest, EmptyChatMessage};
pub use connection::{Connection, ConnectionInfo, ConnectionStats, Decision, StoreChunk};
pub use format::{AudioFormat, Container, Encoding, FormatError, FormatRequest, SampleEncoding};
pub use ids::{ChatReplyId, ConnectionId, ParseIdError, RecordingId, SessionId};
pub use message::{
    AudioMessage, AudioPayload, AudioProgress, ClientMessage, ClientValue, Rejection,
    ServerMessage, SessionInfo, SessionSummary,
};
pub use rate::{RateLimit, TokenBucket};
pub use recording::{RecordingEnd, RecordingStart, SessionEnding};
pub use session::{
    Admission, AudioTotals, MAX_GAPS, MAX_SEQ, ResumeError, ResumeToken, SeqGap, Session,
    SessionSnapshot, StoredProgress,
};
pub use time::{Stamped, Timestamp};
