//! What client and server messages mean. Their wire shape (JSON field names, base64, frame
//! types) belongs to the WebSocket adapter, which converts to and from these types.

use std::time::Duration;

use crate::audio::AudioChunk;
use crate::format::{AudioFormat, FormatError, FormatRequest};
use crate::ids::{ConnectionId, RecordingId, SessionId};
use crate::session::{AudioTotals, SeqGap};

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
    /// A message of a known type whose fields are wrong; refused with a specific reason.
    Invalid(Rejection),
    /// `session_start`: a declared session begins.
    SessionStart {
        /// The declared format.
        format: FormatRequest,
        /// What the client attaches to the session (call ids and the like).
        metadata: Option<ClientValue>,
    },
    /// Raw audio in a binary frame, in the active session's declared format.
    BinaryAudio(AudioChunk),
    /// `audio_commit`: make everything acknowledged so far durable before answering.
    AudioCommit,
    /// `audio_clear`: drop buffered audio, which a recording does not do.
    AudioClear,
    /// `session_end`: finish the session and its recording.
    SessionEnd,
    /// `session_resume`: continue a session on this connection after the old one dropped.
    SessionResume {
        /// The session.
        session: SessionId,
        /// Its resume token, as the client sent it.
        token: String,
        /// The last sequence number the client saw acknowledged, for the logs.
        last_acked_seq: Option<u64>,
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
    /// The chunk's sequence number, if the client numbers its chunks.
    pub seq: Option<u64>,
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
    /// A `seq` that is not a whole number of zero or more.
    #[error("{0}")]
    InvalidSeq(String),
    /// A `session_start` naming an encoding the service does not take.
    #[error("unsupported encoding {0:?}: use pcm_s16le, mulaw, alaw or opus")]
    UnsupportedEncoding(String),
    /// A `session_start` whose format is missing, malformed or contradictory.
    #[error("{0}")]
    InvalidFormat(String),
    /// A `session_resume` without a usable session id or token.
    #[error("{0}")]
    InvalidResume(String),
    /// A session is already running on this connection.
    #[error("a session is already active on this connection; end it first")]
    SessionAlreadyActive,
    /// Session audio, a commit or an end with no session running.
    #[error("no session is active on this connection; send session_start or session_resume first")]
    NoActiveSession,
    /// `session_resume` of a session the service does not know (or that has finished).
    #[error("no session {0} to resume")]
    SessionNotFound(SessionId),
    /// `session_resume` with a token that is not the session's.
    #[error("the resume token does not match session {0}")]
    WrongResumeToken(SessionId),
    /// `session_resume` after the grace period; the recording has been finished.
    #[error("session {0} can no longer be resumed: its grace period has passed")]
    SessionExpired(SessionId),
    /// A message nesting JSON deeper than allowed.
    #[error("message nests JSON more than {0} levels deep")]
    JsonTooDeep(usize),
    /// A message over the connection's rate limit; it was not handled.
    #[error(
        "more than {0} messages per second: this message was not handled; slow down and resend it"
    )]
    RateLimited(u32),
    /// A chunk whose number was skipped: the recording has moved past it.
    #[error(
        "seq {0} was skipped (or comes before the first chunk) and the recording has moved on; it was not stored"
    )]
    LateChunk(u64),
    /// A message that has no meaning for a recording.
    #[error("{0}")]
    NotSupported(&'static str),
}

impl From<FormatError> for Rejection {
    fn from(error: FormatError) -> Self {
        Self::InvalidFormat(error.to_string())
    }
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
        /// Where the session stands, for clients that declare sessions or number chunks;
        /// `None` keeps the original's acknowledgement for the original's clients.
        progress: Option<AudioProgress>,
    },
    /// A declared session has begun.
    SessionStarted(SessionInfo),
    /// A session continues on this connection.
    SessionResumed(SessionInfo),
    /// Everything acknowledged so far is durable.
    AudioCommitted {
        /// The last sequence number stored.
        last_seq: Option<u64>,
        /// What the session has stored.
        totals: AudioTotals,
    },
    /// A session has ended and its recording is finished.
    SessionEnded(SessionSummary),
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

/// Where a session stands after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioProgress {
    /// The chunk's sequence number.
    pub seq: u64,
    /// What the session has stored, this chunk included.
    pub totals: AudioTotals,
    /// Media duration stored, where the format says.
    pub duration: Option<Duration>,
    /// Numbers skipped just before this chunk.
    pub gap: Option<SeqGap>,
    /// The chunk had been stored already and was not stored again.
    pub duplicate: bool,
}

/// A session as its client needs to know it, to stream and to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session.
    pub session: SessionId,
    /// Its recording.
    pub recording: RecordingId,
    /// The token to resume it with.
    pub resume_token: String,
    /// The effective format.
    pub format: AudioFormat,
    /// How long a dropped session waits to be resumed.
    pub resume_grace: Duration,
    /// The last sequence number stored.
    pub last_seq: Option<u64>,
    /// What has been stored.
    pub totals: AudioTotals,
}

/// The totals of a finished session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// The session.
    pub session: SessionId,
    /// Its recording.
    pub recording: RecordingId,
    /// What was stored.
    pub totals: AudioTotals,
    /// Media duration, where the format says.
    pub duration: Option<Duration>,
    /// The last sequence number stored.
    pub last_seq: Option<u64>,
    /// Sequence numbers that never arrived.
    pub gaps: Vec<SeqGap>,
    /// Chunks received twice and stored once.
    pub duplicates: u64,
}
