//! One connection's state and the rule that decides what each client message gets.
//!
//! The state is owned by whoever drives the connection (the WebSocket adapter's task), so the
//! rules need no locks: they take `&mut self` and return a [`Decision`] for the application to
//! carry out.
//!
//! A connection speaks one of two dialects. A client of the original service never declares
//! a session: its first audio opens an implicit one that ends with the connection. A client
//! that sends `session_start` (or `session_resume`) switches the connection to sessions: its
//! audio then needs an active session, and binary frames carry raw audio.

use crate::audio::AudioChunk;
use crate::format::AudioFormat;
use crate::ids::{ConnectionId, RecordingId, SessionId};
use crate::message::{
    AudioMessage, AudioPayload, AudioProgress, ClientMessage, Rejection, ServerMessage,
};
use crate::recording::RecordingStart;
use crate::session::{Admission, MAX_GAPS, SeqGap, Session};
use crate::time::Timestamp;

/// What the connection store records about an open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// The peer's address as the transport saw it, if known.
    pub peer: Option<String>,
    /// The client's `User-Agent`, if it sent one.
    pub user_agent: Option<String>,
}

/// Running totals of one connection, for the logs when it closes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Client messages handled, whatever their type.
    pub messages: u64,
    /// Audio chunks the sink accepted.
    pub audio_chunks: u64,
    /// Audio bytes the sink accepted.
    pub audio_bytes: u64,
}

/// What to do about one client message.
#[derive(Debug)]
pub enum Decision {
    /// Send this reply; nothing else to do.
    Reply(ServerMessage),
    /// Open the recording of this newly declared session, then [`Connection::adopt`] it and
    /// confirm it to the client.
    Start(Session),
    /// Store `chunk`, opening the recording first when `open` says so; once the sink has
    /// accepted it, [`Connection::stored`] gives the acknowledgement. If the sink fails, the
    /// client must not be told the audio was received.
    Store(StoreChunk),
    /// Make everything stored in `recording` durable, then answer with
    /// [`Connection::committed`].
    Commit {
        /// The recording.
        recording: RecordingId,
    },
    /// Finish the active session and its recording; only once the recording is finished does
    /// the session leave the connection ([`Connection::take_session`]), so that a failure
    /// leaves it active for the client to try again.
    End,
    /// Find this session and hand it to this connection.
    Resume {
        /// The session.
        session: SessionId,
        /// The token the client presented.
        token: String,
        /// The last number the client saw acknowledged, for the logs.
        last_acked_seq: Option<u64>,
    },
}

/// A chunk to store.
#[derive(Debug)]
pub struct StoreChunk {
    /// The recording it goes to.
    pub recording: RecordingId,
    /// Open the recording first: the first chunk of an implicit session.
    pub open: Option<RecordingStart>,
    /// Its sequence number.
    pub seq: u64,
    /// Numbers skipped just before it.
    pub gap: Option<SeqGap>,
    /// The audio.
    pub chunk: AudioChunk,
    /// Its size as the client encoded it, for the acknowledgement.
    pub encoded_size: usize,
    /// Whether the acknowledgement reports progress (see [`AudioProgress`]).
    pub report_progress: bool,
}

/// The dialect a connection speaks (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Original,
    Sessions,
}

/// An open connection: its identity, its dialect, its session and its totals.
#[derive(Debug)]
pub struct Connection {
    info: ConnectionInfo,
    dialect: Dialect,
    session: Option<Session>,
    /// Whether the active session's recording has been opened in the sink.
    recording_open: bool,
    stats: ConnectionStats,
}

impl Connection {
    /// A connection that has just been opened and has received nothing yet.
    pub fn new(info: ConnectionInfo) -> Self {
        Self {
            info,
            dialect: Dialect::Original,
            session: None,
            recording_open: false,
            stats: ConnectionStats::default(),
        }
    }

    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.info.id
    }

    /// What the store records about this connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The active session, if any.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Running totals.
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }

    /// Whether a binary frame carries raw audio (sessions) or JSON (the original dialect).
    pub fn binary_frames_are_audio(&self) -> bool {
        self.dialect == Dialect::Sessions
    }

    /// Decides what `message`, received at `now`, gets.
    pub fn decide(&mut self, message: ClientMessage, now: Timestamp) -> Decision {
        self.stats.messages += 1;
        let rejected = |rejection| Decision::Reply(ServerMessage::Rejected(rejection));
        match message {
            ClientMessage::Test { message } => Decision::Reply(ServerMessage::TestResponse {
                original_message: message,
            }),
            ClientMessage::Ping => Decision::Reply(ServerMessage::Pong),
            ClientMessage::Unknown { original_type } => {
                Decision::Reply(ServerMessage::Echo { original_type })
            }
            ClientMessage::Undecodable { reason } => rejected(Rejection::MalformedMessage(reason)),
            ClientMessage::Invalid(rejection) => rejected(rejection),
            ClientMessage::Audio(audio) => self.decide_audio(audio, now),
            ClientMessage::BinaryAudio(chunk) => {
                let encoded_size = chunk.len();
                self.decide_chunk(chunk, encoded_size, None, now)
            }
            ClientMessage::SessionStart { format, metadata } => {
                if self.session.is_some() {
                    return rejected(Rejection::SessionAlreadyActive);
                }
                // The connection switches to sessions only once one is started (`adopt`): a
                // refused declaration leaves it as it was.
                match AudioFormat::negotiate(format) {
                    Ok(format) => {
                        Decision::Start(Session::declared(format, metadata, self.id(), now))
                    }
                    Err(error) => rejected(error.into()),
                }
            }
            ClientMessage::SessionResume {
                session,
                token,
                last_acked_seq,
            } => {
                if self.session.is_some() {
                    return rejected(Rejection::SessionAlreadyActive);
                }
                Decision::Resume {
                    session,
                    token,
                    last_acked_seq,
                }
            }
            ClientMessage::AudioCommit => match &self.session {
                Some(session) => Decision::Commit {
                    recording: session.recording(),
                },
                None => rejected(Rejection::NoActiveSession),
            },
            ClientMessage::AudioClear => rejected(Rejection::NotSupported(
                "audio_clear has no meaning for a recording: every acknowledged chunk is kept; \
                 finish the session with session_end",
            )),
            ClientMessage::SessionEnd => match &self.session {
                Some(_) => Decision::End,
                None => rejected(Rejection::NoActiveSession),
            },
        }
    }

    fn decide_audio(&mut self, audio: AudioMessage, now: Timestamp) -> Decision {
        let AudioMessage {
            encoded_size,
            payload,
            seq,
        } = audio;
        match payload {
            AudioPayload::Invalid(reason) => {
                Decision::Reply(ServerMessage::Rejected(Rejection::InvalidAudio(reason)))
            }
            // The original acknowledged an `audio` message without data (as `dataSize: 0`);
            // clients may count acks, so an empty message is still acknowledged.
            AudioPayload::Empty if self.dialect == Dialect::Original || self.session.is_some() => {
                // A numbered empty message gets its number back, so the client can match the
                // ack; the number is not used up, since nothing was stored under it.
                let progress = seq
                    .zip(self.session.as_ref())
                    .map(|(seq, session)| AudioProgress {
                        seq,
                        totals: session.totals(),
                        duration: session.duration(),
                        gap: None,
                        duplicate: false,
                    });
                Decision::Reply(ServerMessage::AudioReceived {
                    encoded_size,
                    decoded_size: 0,
                    progress,
                })
            }
            AudioPayload::Empty => {
                Decision::Reply(ServerMessage::Rejected(Rejection::NoActiveSession))
            }
            AudioPayload::Chunk(chunk) => self.decide_chunk(chunk, encoded_size, seq, now),
        }
    }

    fn decide_chunk(
        &mut self,
        chunk: AudioChunk,
        encoded_size: usize,
        seq: Option<u64>,
        now: Timestamp,
    ) -> Decision {
        if self.session.is_none() {
            if self.dialect == Dialect::Sessions {
                return Decision::Reply(ServerMessage::Rejected(Rejection::NoActiveSession));
            }
            self.session = Some(Session::implicit(self.id(), now));
            self.recording_open = false;
        }
        let Some(session) = self.session.as_mut() else {
            return Decision::Reply(ServerMessage::Rejected(Rejection::NoActiveSession));
        };
        let report_progress = session.is_declared() || seq.is_some();
        match session.admit(seq) {
            Admission::Duplicate { seq } => {
                session.record_duplicate();
                let progress = AudioProgress {
                    seq,
                    totals: session.totals(),
                    duration: session.duration(),
                    gap: None,
                    duplicate: true,
                };
                Decision::Reply(ServerMessage::AudioReceived {
                    encoded_size,
                    decoded_size: chunk.len(),
                    progress: Some(progress),
                })
            }
            Admission::Late { seq } => {
                Decision::Reply(ServerMessage::Rejected(Rejection::LateChunk(seq)))
            }
            Admission::TooManyGaps { seq } => {
                Decision::Reply(ServerMessage::Rejected(Rejection::InvalidSeq(format!(
                    "seq {seq} would open more than {MAX_GAPS} gaps in this session; send chunks in order"
                ))))
            }
            Admission::Store { seq, gap } => Decision::Store(StoreChunk {
                recording: session.recording(),
                open: (!self.recording_open).then(|| session.recording_start()),
                seq,
                gap,
                chunk,
                encoded_size,
                report_progress,
            }),
        }
    }

    /// Takes on `session`, whose recording is open: after a start or a resume.
    pub fn adopt(&mut self, session: Session) {
        self.dialect = Dialect::Sessions;
        self.session = Some(session);
        self.recording_open = true;
    }

    /// Records that the active session's recording was opened.
    pub fn recording_opened(&mut self) {
        self.recording_open = true;
    }

    /// Records that the sink accepted a chunk, and returns its acknowledgement.
    pub fn stored(
        &mut self,
        seq: u64,
        gap: Option<SeqGap>,
        decoded_size: usize,
        encoded_size: usize,
        report_progress: bool,
    ) -> ServerMessage {
        self.stats.audio_chunks += 1;
        self.stats.audio_bytes += decoded_size as u64;
        let progress = self.session.as_mut().map(|session| {
            session.record(seq, gap, decoded_size);
            AudioProgress {
                seq,
                totals: session.totals(),
                duration: session.duration(),
                gap,
                duplicate: false,
            }
        });
        ServerMessage::AudioReceived {
            encoded_size,
            decoded_size,
            progress: progress.filter(|_| report_progress),
        }
    }

    /// The answer to a commit that succeeded.
    pub fn committed(&self) -> ServerMessage {
        let (last_seq, totals) = self
            .session
            .as_ref()
            .map(|s| (s.last_seq(), s.totals()))
            .unwrap_or_default();
        ServerMessage::AudioCommitted { last_seq, totals }
    }

    /// Takes the active session off the connection: when it ends, or when the connection
    /// closes.
    pub fn take_session(&mut self) -> Option<Session> {
        self.recording_open = false;
        self.session.take()
    }

    /// Whether the active session's recording has been opened (an implicit session's is
    /// opened by its first chunk).
    pub fn is_recording_open(&self) -> bool {
        self.session.is_some() && self.recording_open
    }
}

#[cfg(test)]
mod tests;
