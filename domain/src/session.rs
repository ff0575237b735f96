//! Audio sessions: the audio a client streams from its start to its end, possibly across
//! several connections when a dropped socket is resumed.
//!
//! A session numbers its chunks (`seq`); the rules here decide which chunk is stored, which
//! is a duplicate to acknowledge without storing again, and which skipped numbers are a gap.
//! A session is owned by one connection at a time, so these rules need no locks.

use std::fmt;
use std::time::Duration;

use crate::format::AudioFormat;
use crate::ids::{ConnectionId, RecordingId, SessionId};
use crate::message::ClientValue;
use crate::recording::{RecordingEnd, RecordingStart, SessionEnding};
use crate::time::Timestamp;

/// The secret that lets a client take its session back on a new connection.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumeToken(String);

impl ResumeToken {
    /// A fresh token: 122 random bits, as 32 hexadecimal digits.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// A token as a session store kept it.
    pub fn from_stored(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The token's text, to hand to the client.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this token, compared in constant time so that the comparison
    /// does not leak how many leading characters were right.
    pub fn matches(&self, candidate: &str) -> bool {
        let (ours, theirs) = (self.0.as_bytes(), candidate.as_bytes());
        let differences = ours
            .iter()
            .zip(theirs)
            .fold(0_u8, |acc, (a, b)| acc | (a ^ b));
        ours.len() == theirs.len() && differences == 0
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are secrets: never in logs, not even through Debug.
        f.write_str("ResumeToken(<redacted>)")
    }
}

/// Sequence numbers that were skipped: `from` to `to`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqGap {
    /// The first missing number.
    pub from: u64,
    /// The last missing number.
    pub to: u64,
}

/// Running totals of what a session stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioTotals {
    /// Bytes stored.
    pub bytes: u64,
    /// Chunks stored.
    pub chunks: u64,
}

/// The largest sequence number: the largest integer a JavaScript client can hold exactly.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// How many gaps a session remembers; a client skipping more is broken or abusive, and the
/// list must not grow without bound (it is reported and stored with the recording).
pub const MAX_GAPS: usize = 1_000;

/// What to do with a chunk, by its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Store it as `seq`; `gap` names the numbers skipped just before it, if any.
    Store {
        /// The chunk's sequence number.
        seq: u64,
        /// Numbers skipped since the last stored chunk.
        gap: Option<SeqGap>,
    },
    /// Already stored: acknowledge it again, write nothing.
    Duplicate {
        /// The chunk's sequence number.
        seq: u64,
    },
    /// A number that was skipped (or comes before the first one): the recording has moved on
    /// and cannot take it in its place, so it is refused, never acknowledged.
    Late {
        /// The chunk's sequence number.
        seq: u64,
    },
    /// Storing it would open one gap more than [`MAX_GAPS`]; refused.
    TooManyGaps {
        /// The chunk's sequence number.
        seq: u64,
    },
}

/// Why a session cannot be resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The token is not this session's.
    #[error("the resume token does not match the session")]
    WrongToken,
    /// The socket dropped longer ago than the grace period; the recording has been finished.
    #[error("the session can no longer be resumed: its grace period has passed")]
    Expired,
}

/// Everything needed to take a declared session over on another replica: what
/// [`Session::snapshot`] exports and [`Session::restore`] rebuilds, for a shared session store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// The session.
    pub id: SessionId,
    /// Its recording.
    pub recording: RecordingId,
    /// The resume token.
    pub token: ResumeToken,
    /// The declared format.
    pub format: AudioFormat,
    /// What the client attached to the session.
    pub metadata: Option<ClientValue>,
    /// The connection holding it, or that held it last.
    pub connection: ConnectionId,
    /// When it started.
    pub started_at: Timestamp,
    /// The first sequence number stored.
    pub first_seq: Option<u64>,
    /// The highest sequence number stored.
    pub last_seq: Option<u64>,
    /// What was stored.
    pub totals: AudioTotals,
    /// Numbers skipped so far.
    pub gaps: Vec<SeqGap>,
    /// Duplicates acknowledged so far.
    pub duplicates: u64,
    /// When its connection went away, if it is waiting for a resume.
    pub detached_at: Option<Timestamp>,
}

/// What a sink already holds of a recording it continues: the truth about what was stored,
/// which a snapshot taken earlier may lag behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredProgress {
    /// The first sequence number stored.
    pub first_seq: Option<u64>,
    /// The highest sequence number stored.
    pub last_seq: Option<u64>,
    /// What was stored.
    pub totals: AudioTotals,
    /// Every gap since the first chunk, so that a skipped number is still refused as late.
    pub gaps: Vec<SeqGap>,
}

/// One audio session.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    recording: RecordingId,
    token: ResumeToken,
    format: AudioFormat,
    declared: bool,
    metadata: Option<ClientValue>,
    connection: ConnectionId,
    started_at: Timestamp,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    totals: AudioTotals,
    gaps: Vec<SeqGap>,
    duplicates: u64,
    detached_at: Option<Timestamp>,
}

impl Session {
    /// A session a client started with a format declaration.
    pub fn declared(
        format: AudioFormat,
        metadata: Option<ClientValue>,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Self {
        Self::new(format, true, metadata, connection, now)
    }

    /// The session a client of the original protocol opens by sending audio: nothing is
    /// declared, and since the client never learns its id it cannot be resumed.
    pub fn implicit(connection: ConnectionId, now: Timestamp) -> Self {
        Self::new(AudioFormat::Undeclared, false, None, connection, now)
    }

    fn new(
        format: AudioFormat,
        declared: bool,
        metadata: Option<ClientValue>,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Self {
        Self {
            id: SessionId::random(),
            recording: RecordingId::random(),
            token: ResumeToken::random(),
            format,
            declared,
            metadata,
            connection,
            started_at: now,
            first_seq: None,
            last_seq: None,
            totals: AudioTotals::default(),
            gaps: Vec::new(),
            duplicates: 0,
            detached_at: None,
        }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The id of the session's recording.
    pub fn recording(&self) -> RecordingId {
        self.recording
    }

    /// The resume token.
    pub fn token(&self) -> &ResumeToken {
        &self.token
    }

    /// The audio format.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Whether the client declared the session (and so may resume it).
    pub fn is_declared(&self) -> bool {
        self.declared
    }

    /// The highest sequence number stored so far.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// What has been stored so far.
    pub fn totals(&self) -> AudioTotals {
        self.totals
    }

    /// Media duration stored so far, where the format says.
    pub fn duration(&self) -> Option<Duration> {
        self.format.duration_of(self.totals.bytes)
    }

    /// What a sink needs to open the recording.
    pub fn recording_start(&self) -> RecordingStart {
        RecordingStart {
            recording: self.recording,
            session: self.id,
            connection: self.connection,
            format: self.format,
            started_at: self.started_at,
            metadata: self.metadata.clone(),
        }
    }

    /// Decides what to do with a chunk numbered `seq`, or with the next chunk when the client
    /// sends no numbers. The first number may be anything; after it, numbers must rise by one.
    pub fn admit(&self, seq: Option<u64>) -> Admission {
        let (Some(first), Some(last)) = (self.first_seq, self.last_seq) else {
            return Admission::Store {
                seq: seq.unwrap_or(1),
                gap: None,
            };
        };
        let expected = last.saturating_add(1);
        let seq = seq.unwrap_or(expected);
        if seq > expected {
            return if self.gaps.len() >= MAX_GAPS {
                Admission::TooManyGaps { seq }
            } else {
                Admission::Store {
                    seq,
                    gap: Some(SeqGap {
                        from: expected,
                        to: seq - 1,
                    }),
                }
            };
        }
        if seq == expected && expected != last {
            return Admission::Store { seq, gap: None };
        }
        let skipped = seq < first
            || self
                .gaps
                .iter()
                .any(|gap| (gap.from..=gap.to).contains(&seq));
        if skipped {
            Admission::Late { seq }
        } else {
            Admission::Duplicate { seq }
        }
    }

    /// Records that a chunk admitted as `seq` with `gap` was stored, `len` bytes long.
    pub fn record(&mut self, seq: u64, gap: Option<SeqGap>, len: usize) {
        self.first_seq.get_or_insert(seq);
        self.last_seq = Some(seq);
        self.totals.bytes += len as u64;
        self.totals.chunks += 1;
        self.gaps.extend(gap);
    }

    /// Records that a duplicate was acknowledged without being stored.
    pub fn record_duplicate(&mut self) {
        self.duplicates += 1;
    }

    /// Notes that the session's connection went away at `now`, leaving it to be resumed.
    pub fn detach(&mut self, now: Timestamp) {
        self.detached_at = Some(now);
    }

    /// When the session's connection went away, if it is detached.
    pub fn detached_at(&self) -> Option<Timestamp> {
        self.detached_at
    }

    /// Whether a detached session has outlived the grace period at `now`.
    pub fn is_expired(&self, now: Timestamp, grace: Duration) -> bool {
        self.detached_at.is_some_and(|at| now.since(at) > grace)
    }

    /// Hands the session to `connection`, if `token` is its token and the grace period has
    /// not passed.
    ///
    /// # Errors
    /// [`ResumeError::WrongToken`] or [`ResumeError::Expired`].
    pub fn resume(
        &mut self,
        token: &str,
        connection: ConnectionId,
        now: Timestamp,
        grace: Duration,
    ) -> Result<(), ResumeError> {
        if !self.token.matches(token) {
            return Err(ResumeError::WrongToken);
        }
        if self.is_expired(now, grace) {
            return Err(ResumeError::Expired);
        }
        self.detached_at = None;
        self.connection = connection;
        Ok(())
    }

    /// The state another replica needs to take the session over.
    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            id: self.id,
            recording: self.recording,
            token: self.token.clone(),
            format: self.format,
            metadata: self.metadata.clone(),
            connection: self.connection,
            started_at: self.started_at,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            totals: self.totals,
            gaps: self.gaps.clone(),
            duplicates: self.duplicates,
            detached_at: self.detached_at,
        }
    }

    /// Rebuilds a declared session from a snapshot (only declared sessions can be resumed,
    /// so only they are ever shared).
    pub fn restore(snapshot: SessionSnapshot) -> Self {
        let SessionSnapshot {
            id,
            recording,
            token,
            format,
            metadata,
            connection,
            started_at,
            first_seq,
            last_seq,
            totals,
            mut gaps,
            duplicates,
            detached_at,
        } = snapshot;
        gaps.truncate(MAX_GAPS);
        Self {
            id,
            recording,
            token,
            format,
            declared: true,
            metadata,
            connection,
            started_at,
            first_seq,
            last_seq,
            totals,
            gaps,
            duplicates,
            detached_at,
        }
    }

    /// Brings the session up to what the sink holds: chunks acknowledged after the snapshot
    /// was taken are counted, so that they are recognised as duplicates when resent. What
    /// the sink holds wins over an older snapshot, never the other way round.
    pub fn catch_up(&mut self, stored: StoredProgress) {
        if stored.last_seq > self.last_seq {
            self.first_seq = self.first_seq.or(stored.first_seq);
            self.last_seq = stored.last_seq;
            self.totals = stored.totals;
            self.gaps = stored.gaps;
            self.gaps.truncate(MAX_GAPS);
        }
    }

    /// What a sink needs to finish the recording, were the session to end now; the session
    /// stays as it is, so that it can go on if finishing fails.
    pub fn end_record(&self, ending: SessionEnding, now: Timestamp) -> RecordingEnd {
        RecordingEnd {
            recording: self.recording,
            session: self.id,
            ended_at: now,
            ending,
            totals: self.totals,
            duration: self.format.duration_of(self.totals.bytes),
            last_seq: self.last_seq,
            gaps: self.gaps.clone(),
            duplicates: self.duplicates,
        }
    }

    /// Ends the session: what a sink needs to finish the recording.
    pub fn finish(self, ending: SessionEnding, now: Timestamp) -> RecordingEnd {
        self.end_record(ending, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleEncoding;

    const T0: Timestamp = Timestamp::from_unix_millis(1_000_000);
    const PCM: AudioFormat = AudioFormat::Samples {
        encoding: SampleEncoding::PcmS16le,
        sample_rate: 16_000,
        channels: 1,
    };

    fn session() -> Session {
        Session::declared(PCM, None, ConnectionId::random(), T0)
    }

    fn store(session: &mut Session, seq: Option<u64>) -> Admission {
        let admission = session.admit(seq);
        match admission {
            Admission::Store { seq, gap } => session.record(seq, gap, 3_200),
            Admission::Duplicate { .. } => session.record_duplicate(),
            Admission::Late { .. } | Admission::TooManyGaps { .. } => {}
        }
        admission
    }

    #[test]
    fn chunks_without_numbers_are_numbered_from_one() {
        let mut session = session();
        assert_eq!(
            store(&mut session, None),
            Admission::Store { seq: 1, gap: None }
        );
        assert_eq!(
            store(&mut session, None),
            Admission::Store { seq: 2, gap: None }
        );
    }

    #[test]
    fn the_first_number_may_be_anything_then_numbers_rise_by_one() {
        let mut session = session();
        assert_eq!(
            store(&mut session, Some(0)),
            Admission::Store { seq: 0, gap: None }
        );
        assert_eq!(
            store(&mut session, Some(1)),
            Admission::Store { seq: 1, gap: None }
        );
        assert_eq!(
            store(&mut session, None),
            Admission::Store { seq: 2, gap: None }
        );
    }

    #[test]
    fn a_number_already_stored_is_a_duplicate_and_not_stored_again() {
        let mut session = session();
        store(&mut session, Some(5));
        store(&mut session, Some(6));
        assert_eq!(
            store(&mut session, Some(6)),
            Admission::Duplicate { seq: 6 }
        );
        assert_eq!(
            store(&mut session, Some(5)),
            Admission::Duplicate { seq: 5 }
        );
        let end = session.finish(SessionEnding::Ended, T0);
        assert_eq!(
            (end.totals.chunks, end.duplicates, end.last_seq),
            (2, 2, Some(6))
        );
    }

    #[test]
    fn skipped_numbers_are_a_gap_reported_and_remembered() {
        let mut session = session();
        store(&mut session, Some(1));
        assert_eq!(
            store(&mut session, Some(4)),
            Admission::Store {
                seq: 4,
                gap: Some(SeqGap { from: 2, to: 3 })
            }
        );
        assert_eq!(
            session.finish(SessionEnding::Ended, T0).gaps,
            [SeqGap { from: 2, to: 3 }]
        );
    }

    #[test]
    fn a_number_inside_a_gap_or_before_the_first_is_late_not_a_duplicate() {
        let mut session = session();
        store(&mut session, Some(5));
        store(&mut session, Some(8));
        assert_eq!(store(&mut session, Some(6)), Admission::Late { seq: 6 });
        assert_eq!(store(&mut session, Some(7)), Admission::Late { seq: 7 });
        assert_eq!(store(&mut session, Some(4)), Admission::Late { seq: 4 });
        assert_eq!(
            store(&mut session, Some(5)),
            Admission::Duplicate { seq: 5 }
        );
        assert_eq!(
            store(&mut session, Some(8)),
            Admission::Duplicate { seq: 8 }
        );
        assert_eq!(session.totals().chunks, 2);
    }

    #[test]
    fn the_largest_number_is_stored_once() {
        let mut session = session();
        assert_eq!(
            store(&mut session, Some(MAX_SEQ)),
            Admission::Store {
                seq: MAX_SEQ,
                gap: None
            }
        );
        assert_eq!(
            store(&mut session, Some(MAX_SEQ)),
            Admission::Duplicate { seq: MAX_SEQ }
        );
        assert_eq!(
            store(&mut session, Some(u64::MAX)),
            Admission::Store {
                seq: u64::MAX,
                gap: Some(SeqGap {
                    from: MAX_SEQ + 1,
                    to: u64::MAX - 1
                })
            }
        );
        assert_eq!(
            store(&mut session, Some(u64::MAX)),
            Admission::Duplicate { seq: u64::MAX }
        );
        assert_eq!(
            store(&mut session, None),
            Admission::Duplicate { seq: u64::MAX },
            "no number after the largest"
        );
    }

    #[test]
    fn the_gaps_a_session_remembers_are_bounded() {
        let mut session = session();
        for i in 0..=MAX_GAPS as u64 {
            store(&mut session, Some(i * 2));
        }
        assert_eq!(
            store(&mut session, Some(10_000_000)),
            Admission::TooManyGaps { seq: 10_000_000 }
        );
        assert_eq!(
            store(&mut session, None),
            Admission::Store {
                seq: MAX_GAPS as u64 * 2 + 1,
                gap: None
            },
            "in order is still fine"
        );
        assert_eq!(
            session.end_record(SessionEnding::Ended, T0).gaps.len(),
            MAX_GAPS
        );
    }

    #[test]
    fn totals_and_duration_follow_what_was_stored() {
        let mut session = session();
        store(&mut session, None);
        store(&mut session, None);
        assert_eq!(
            session.totals(),
            AudioTotals {
                bytes: 6_400,
                chunks: 2
            }
        );
        assert_eq!(session.duration(), Some(Duration::from_millis(200)));
    }

    #[test]
    fn a_session_resumes_with_its_token_within_the_grace_period() {
        let mut session = session();
        session.detach(T0);
        let token = session.token().reveal().to_owned();
        let later = Timestamp::from_unix_millis(T0.unix_millis() + 29_000);
        let new_connection = ConnectionId::random();

        assert_eq!(
            session.resume(&token, new_connection, later, Duration::from_secs(30)),
            Ok(())
        );
        assert_eq!(session.recording_start().connection, new_connection);
    }

    #[test]
    fn a_wrong_token_does_not_resume_a_session() {
        let mut session = session();
        session.detach(T0);
        let mut wrong = session.token().reveal().to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert_eq!(
            session.resume(&wrong, ConnectionId::random(), T0, Duration::from_secs(30)),
            Err(ResumeError::WrongToken)
        );
        assert_eq!(
            session.resume("", ConnectionId::random(), T0, Duration::from_secs(30)),
            Err(ResumeError::WrongToken)
        );
    }

    #[test]
    fn a_session_detached_longer_than_the_grace_period_has_expired() {
        let mut session = session();
        session.detach(T0);
        let token = session.token().reveal().to_owned();
        let late = Timestamp::from_unix_millis(T0.unix_millis() + 30_001);
        assert!(session.is_expired(late, Duration::from_secs(30)));
        assert_eq!(
            session.resume(
                &token,
                ConnectionId::random(),
                late,
                Duration::from_secs(30)
            ),
            Err(ResumeError::Expired)
        );
    }

    #[test]
    fn a_restored_snapshot_is_the_same_session() {
        let mut session = session();
        store(&mut session, Some(3));
        store(&mut session, Some(6));
        store(&mut session, Some(6));
        session.detach(T0);
        let snapshot = session.snapshot();

        let restored = Session::restore(snapshot.clone());

        assert_eq!(restored.snapshot(), snapshot);
        assert!(restored.is_declared());
        assert_eq!(restored.admit(Some(6)), Admission::Duplicate { seq: 6 });
        assert_eq!(restored.admit(Some(4)), Admission::Late { seq: 4 });
    }

    #[test]
    fn catching_up_counts_what_the_sink_stored_after_the_snapshot() {
        let mut session = session();
        let stored = StoredProgress {
            first_seq: Some(1),
            last_seq: Some(9),
            totals: AudioTotals {
                bytes: 28_800,
                chunks: 8,
            },
            gaps: vec![SeqGap { from: 4, to: 4 }],
        };

        session.catch_up(stored);

        assert_eq!(session.last_seq(), Some(9));
        assert_eq!(session.totals().chunks, 8);
        assert_eq!(session.admit(Some(9)), Admission::Duplicate { seq: 9 });
        assert_eq!(
            session.admit(Some(4)),
            Admission::Late { seq: 4 },
            "skipped elsewhere"
        );
        assert_eq!(
            session.admit(Some(10)),
            Admission::Store { seq: 10, gap: None }
        );
    }

    #[test]
    fn catching_up_never_moves_a_session_back() {
        let mut session = session();
        store(&mut session, Some(1));
        store(&mut session, Some(2));

        session.catch_up(StoredProgress {
            first_seq: Some(1),
            last_seq: Some(1),
            totals: AudioTotals::default(),
            gaps: Vec::new(),
        });
        session.catch_up(StoredProgress::default());

        assert_eq!(session.last_seq(), Some(2));
        assert_eq!(session.totals().chunks, 2);
    }

    #[test]
    fn tokens_are_random_and_never_printed() {
        let (a, b) = (ResumeToken::random(), ResumeToken::random());
        assert_ne!(a, b);
        assert_eq!(a.reveal().len(), 32);
        assert!(!format!("{a:?}").contains(a.reveal()));
    }
}
