//! What client and server messages mean. Their wire shape (JSON field names, base64, frame
//! types) belongs to the WebSocket adapter, which converts to and from these types.

use crate::audio::AudioChunk;
use crate::ids::ConnectionId;

/// A value the client sent that the server hands back without interpreting it.
///
/// It is kept in the adapter's wire notation (compact JSON text) so that the domain can carry
/// it through unchanged without knowing that notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientValue(String);

impl ClientValue {
    /// Wraps a value already written in the wire notation.
    pub fn from_wire(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The value in the wire notation, exactly as it will be sent back.
    pub fn as_wire(&self) -> &str {
        &self.0
    }
}

/// The meaning of one message a client sent on its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `test`: a connectivity check; its `message` comes back unchanged.
    Test {
        /// The client's `message`, if it sent one.
        message: Option<ClientValue>,
    },
    /// `audio`: a chunk of the client's audio stream.
    Audio(AudioMessage),
    /// `ping`: an application-level keep-alive.
    Ping,
    /// A message whose `type` is not one we know, is missing, or that is not an object at all.
    Unknown {
        /// The client's `type`, if it sent one.
        original_type: Option<ClientValue>,
    },
    /// A frame that could not be read as a message at all (not JSON, empty, `null`).
    Undecodable {
        /// Why it could not be read, for the client and the logs.
        reason: String,
    },
}

/// An `audio` message: what the client announced and what it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioMessage {
    /// Size of the audio as the client encoded it (for base64 text, its length); the original
    /// service acknowledged this figure as `dataSize`, and clients rely on it.
    pub encoded_size: usize,
    /// The audio itself, or why there is none.
    pub payload: AudioPayload,
}

/// The audio an `audio` message carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPayload {
    /// No audio at all (missing or empty data): acknowledged, nothing stored.
    Empty,
    /// Decoded audio bytes.
    Chunk(AudioChunk),
    /// Data that is not valid audio encoding; the reason says what was wrong with it.
    Invalid(String),
}

/// Why a client message was refused. The socket stays open: each is recoverable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The frame could not be read as a message.
    #[error("{0}")]
    MalformedMessage(String),
    /// An `audio` message whose data could not be decoded; nothing of it was stored.
    #[error("{0}")]
    InvalidAudio(String),
}

/// The meaning of one message the server sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// The connection is open; tells the client its id.
    Connected {
        /// The new connection's id.
        connection_id: ConnectionId,
    },
    /// Reply to `test`.
    TestResponse {
        /// The client's `message`, unchanged.
        original_message: Option<ClientValue>,
    },
    /// The audio of an `audio` message was accepted (stored, when there was any).
    AudioReceived {
        /// Size as the client encoded it (base64 length): the original's `dataSize`.
        encoded_size: usize,
        /// Number of audio bytes after decoding.
        decoded_size: usize,
    },
    /// Reply to `ping`.
    Pong,
    /// Reply to a message of unknown type.
    Echo {
        /// The client's `type`, unchanged.
        original_type: Option<ClientValue>,
    },
    /// The client's message was refused; the connection stays open.
    Rejected(Rejection),
}
