//! What an audio sink is told about a recording: when it opens and how it ends.

use std::time::Duration;

use crate::format::AudioFormat;
use crate::ids::{ConnectionId, RecordingId, SessionId};
use crate::message::ClientValue;
use crate::session::{AudioTotals, SeqGap};
use crate::time::Timestamp;

/// A recording about to receive its first chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingStart {
    /// The recording.
    pub recording: RecordingId,
    /// The session it records.
    pub session: SessionId,
    /// The connection that started it.
    pub connection: ConnectionId,
    /// The declared format, or `Undeclared` for the sink to work out from the bytes.
    pub format: AudioFormat,
    /// When the session started.
    pub started_at: Timestamp,
    /// What the client attached to the session, if anything.
    pub metadata: Option<ClientValue>,
}

/// How a session came to an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnding {
    /// The client ended it (`session_end`).
    Ended,
    /// The connection of a session that cannot be resumed closed.
    ConnectionClosed,
    /// The connection dropped and nobody resumed within the grace period.
    Expired,
    /// The service shut down.
    Shutdown,
    /// The recording could not be opened everywhere it had to go, and was abandoned.
    Failed,
    /// Too many sessions were waiting to be resumed; the oldest was finished to make room.
    Evicted,
}

impl RecordingStart {
    /// The end of a recording abandoned before its first chunk, because it could not be
    /// opened everywhere it had to go.
    pub fn abandoned(&self) -> RecordingEnd {
        RecordingEnd {
            recording: self.recording,
            session: self.session,
            ended_at: self.started_at,
            ending: SessionEnding::Failed,
            totals: AudioTotals::default(),
            duration: None,
            last_seq: None,
            gaps: Vec::new(),
            duplicates: 0,
        }
    }
}

/// A recording being finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingEnd {
    /// The recording.
    pub recording: RecordingId,
    /// The session it recorded.
    pub session: SessionId,
    /// When it ended.
    pub ended_at: Timestamp,
    /// How.
    pub ending: SessionEnding,
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
