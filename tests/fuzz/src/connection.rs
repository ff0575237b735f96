//! Conversations with the real `IngestService`, scripted by the fuzzer: frames decoded as the
//! WebSocket task decodes them, on up to two connections, with sink failures, reconnects,
//! resumes and time passing in between. Ports are scripted fakes that never wait, so each use
//! case runs to completion in one poll.
//!
//! After every step the replies are checked against what the sink was actually given, which
//! is what the documentation promises: audio is acknowledged only once the sink accepted it,
//! and always then; the sink gets each recording's chunks in order and once; a duplicate is
//! something stored; the totals a client is told are what was stored, so they never go down;
//! and every recording opened is finished (or at least tried) by the time the service stops.
//!
//! # Script
//! One step per line (at most [`MAX_STEPS`]); the first byte says what the line is:
//!
//! | line | step |
//! | --- | --- |
//! | `T<bytes>` | a text frame (invalid UTF-8 is replaced, as no text frame can hold it) |
//! | `B<bytes>` | a binary frame: raw audio once the connection speaks sessions, else JSON |
//! | `!<ops>` | the sink fails the next `o`pen, `w`rite, `c`ommit and/or `e`nd (close) |
//! | `C` | the current connection closes (a new one opens with the next frame) |
//! | `>` | frames go to the other connection from now on |
//! | `R<n>` / `X<n>` | resume the `n`th session started so far, with its token / a wrong one |
//! | `+` | a quarter of the resume grace period passes |
//! | `E` | parked sessions past their grace period are expired |
//! | `F` | parked sessions are finished, as at shutdown |
//! | anything else | the whole line is a text frame, so plain JSON lines work as seeds |

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use aimcs_adapters::fuzzing::decode_client_frame;
use aimcs_application::{HandleClientMessageError, IngestService, NewConnection, ServiceConfig};
use aimcs_domain::ports::{AudioSink, Clock, ConnectionStore, SinkError, StoreError};
use aimcs_domain::{
    AudioChunk, AudioProgress, AudioTotals, ClientMessage, Connection, ConnectionId,
    ConnectionInfo, RecordingEnd, RecordingId, RecordingStart, Rejection, SeqGap, ServerMessage,
    SessionEnding, SessionId, SessionInfo, Timestamp,
};
use async_trait::async_trait;

/// Lines of a script beyond this are ignored: long conversations add time, not coverage.
pub const MAX_STEPS: usize = 256;

/// How long a dropped session may be resumed; `+` lets a quarter of it pass.
const GRACE: Duration = Duration::from_millis(1_000);

/// Few parked sessions, so that evicting the oldest is reachable.
const MAX_PARKED: usize = 2;

/// Runs `script` against a fresh service and checks every step. Panics at the first property
/// that does not hold.
pub fn check(script: &[u8]) {
    let mut run = Run::new();
    for line in script
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .take(MAX_STEPS)
    {
        run.clock.tick(Duration::from_millis(1));
        run.step(line);
        run.check_connections();
    }
    run.stop();
}

/// Polls a use case once: every port here is ready at once, so a use case that is not has
/// started waiting for something that will never come.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a use case waited although no port ever does"),
    }
}

/// One open connection and what the script has done on it.
struct Live {
    connection: Connection,
    /// Messages handed to the service (a retried resume counts twice, as it is decided twice).
    handled: u64,
    /// Chunks the sink accepted from it.
    stored: u64,
}

struct Run {
    service: IngestService,
    clock: Arc<ScriptedClock>,
    sink: Arc<ScriptedSink>,
    slots: [Option<Live>; 2],
    current: usize,
    /// Every declared session started, with its resume token, for `R` and `X`.
    started: Vec<(SessionId, String)>,
    /// The highest sequence number acknowledged as stored, by recording.
    acked: HashMap<RecordingId, u64>,
    /// The totals last reported for each session.
    totals: HashMap<SessionId, AudioTotals>,
}

impl Run {
    fn new() -> Self {
        let clock = Arc::new(ScriptedClock::default());
        let sink = Arc::new(ScriptedSink::default());
        let config = ServiceConfig {
            version: "fuzz",
            resume_grace: GRACE,
            max_parked_sessions: MAX_PARKED,
        };
        let service = IngestService::new(
            Arc::new(ScriptedStore::default()),
            clock.clone(),
            sink.clone(),
            config,
        );
        Self {
            service,
            clock,
            sink,
            slots: [None, None],
            current: 0,
            started: Vec::new(),
            acked: HashMap::new(),
            totals: HashMap::new(),
        }
    }

    fn step(&mut self, line: &[u8]) {
        let (first, rest) = (line[0], &line[1..]);
        match first {
            b'T' => self.text(rest),
            b'B' => self.binary(rest),
            b'!' => self.sink.fail_next(rest),
            b'C' => self.close(self.current),
            b'>' => self.current = 1 - self.current,
            b'R' => self.resume(rest, true),
            b'X' => self.resume(rest, false),
            b'+' => self.clock.tick(GRACE / 4),
            b'E' => {
                let expired = ready(self.service.expire_sessions());
                self.check_finished(expired, SessionEnding::Expired);
            }
            b'F' => {
                let finished = ready(self.service.finish_parked_sessions());
                self.check_finished(finished, SessionEnding::Shutdown);
                self.check_parked(0);
            }
            _ => self.text(line),
        }
    }

    fn text(&mut self, frame: &[u8]) {
        let message = decode_client_frame(String::from_utf8_lossy(frame).as_bytes());
        self.handle(message);
    }

    /// As the WebSocket task reads a binary frame.
    fn binary(&mut self, frame: &[u8]) {
        let message = if self.live().connection.binary_frames_are_audio() {
            match AudioChunk::new(frame.to_vec()) {
                Ok(chunk) => ClientMessage::BinaryAudio(chunk),
                Err(_) => ClientMessage::Invalid(Rejection::InvalidAudio(
                    "an empty binary frame carries no audio".into(),
                )),
            }
        } else {
            decode_client_frame(String::from_utf8_lossy(frame).as_bytes())
        };
        self.handle(message);
    }

    /// A `session_resume` as a client that kept the session's id and token sends it.
    fn resume(&mut self, which: &[u8], right_token: bool) {
        let (session, token) = match (self.started.len(), which.first()) {
            (0, _) => (SessionId::random().to_string(), "0".repeat(32)),
            (count, choice) => {
                let choice = choice.map_or(0, |&c| usize::from(c.saturating_sub(b'0')));
                let (id, token) = &self.started[choice % count];
                (id.to_string(), token.clone())
            }
        };
        let token = if right_token {
            token
        } else {
            format!("{token}0")
        };
        let frame = format!(
            r#"{{"type":"session_resume","sessionId":"{session}","resumeToken":"{token}"}}"#
        );
        self.text(frame.as_bytes());
    }

    /// The current connection, opened if there is none.
    fn live(&mut self) -> &mut Live {
        if self.slots[self.current].is_none() {
            let opened = ready(self.service.open_connection(NewConnection::default()));
            let (connection, greeting) = opened.expect("the store takes every new connection");
            assert_eq!(
                greeting.value,
                ServerMessage::Connected {
                    connection_id: connection.id()
                }
            );
            self.slots[self.current] = Some(Live {
                connection,
                handled: 0,
                stored: 0,
            });
            self.check_open_connections();
        }
        self.slots[self.current]
            .as_mut()
            .expect("opened just above")
    }

    /// Hands `message` to the service as the WebSocket task does, including its answer to a
    /// resume of a session another connection holds: that connection is closed, then the
    /// resume is tried again.
    fn handle(&mut self, message: ClientMessage) {
        let before = self.current_session();
        let retry = matches!(message, ClientMessage::SessionResume { .. }).then(|| message.clone());
        let mut outcome = self.handle_once(message);
        if let (Some(message), Err(HandleClientMessageError::SessionHeld { holder, .. })) =
            (retry, &outcome)
        {
            let holder = *holder;
            let slot = (0..2)
                .find(|&slot| {
                    self.slots[slot]
                        .as_ref()
                        .is_some_and(|live| live.connection.id() == holder)
                })
                .expect("a session is held by a connection that is open");
            assert_ne!(
                slot, self.current,
                "a connection holds the session it resumes"
            );
            self.close(slot);
            outcome = self.handle_once(message);
            assert!(
                !matches!(outcome, Err(HandleClientMessageError::SessionHeld { .. })),
                "the session is still held once its holder has closed"
            );
        }
        self.check_outcome(&outcome, before);
    }

    /// The session on the current connection, if any.
    fn current_session(&self) -> Option<(SessionId, RecordingId)> {
        self.slots[self.current]
            .as_ref()
            .and_then(|live| live.connection.session())
            .map(|session| (session.id(), session.recording()))
    }

    fn handle_once(
        &mut self,
        message: ClientMessage,
    ) -> Result<ServerMessage, HandleClientMessageError> {
        self.live();
        let service = &self.service;
        let live = self.slots[self.current]
            .as_mut()
            .expect("opened just above");
        live.handled += 1;
        ready(service.handle_client_message(&mut live.connection, message))
            .map(|stamped| stamped.value)
    }

    /// Checks a reply against what the sink was given while it was worked out, `before` being
    /// the connection's session when the message arrived.
    fn check_outcome(
        &mut self,
        outcome: &Result<ServerMessage, HandleClientMessageError>,
        before: Option<(SessionId, RecordingId)>,
    ) {
        let events = self.sink.take_events();
        let writes: Vec<_> = events
            .iter()
            .filter_map(|event| match event {
                Event::Wrote(recording, seq, len) => Some((*recording, *seq, *len)),
                _ => None,
            })
            .collect();
        let session = self.current_session();
        let reply = match outcome {
            Ok(reply) => reply,
            Err(HandleClientMessageError::Sink { .. }) => {
                assert!(writes.is_empty(), "audio the sink refused was stored");
                assert!(events.contains(&Event::Failed(Op::Write)));
                // The client may send the chunk again, into the same session.
                assert!(session.is_some() && (before.is_none() || before == session));
                return;
            }
            Err(HandleClientMessageError::Recording { action, .. }) => {
                assert!(
                    writes.is_empty(),
                    "audio was stored although {action} failed"
                );
                let op = match *action {
                    "opened" => Op::Open,
                    "committed" => Op::Commit,
                    _ => Op::Close,
                };
                assert!(
                    events.contains(&Event::Failed(op)),
                    "{action} failed unasked"
                );
                if op == Op::Open {
                    // A recording that may be half-created is not written to again.
                    assert_eq!(
                        session, None,
                        "a session kept a recording that did not open"
                    );
                } else {
                    // A failed commit or end leaves the session for the client to try again.
                    assert_eq!(
                        session, before,
                        "the session changed although {action} failed"
                    );
                }
                return;
            }
            Err(error) => panic!("{error}"),
        };
        match reply {
            ServerMessage::AudioReceived {
                decoded_size,
                progress,
                ..
            } => self.check_ack(*decoded_size, progress.as_ref(), &writes, session),
            ServerMessage::Rejected(Rejection::LateChunk(seq)) => {
                assert!(writes.is_empty());
                let (_, recording) = session.expect("a late chunk is late for a session");
                let stored = self.sink.stored(recording);
                assert!(!stored.seqs.contains(seq), "seq {seq} was stored, not late");
                assert!(stored.seqs.last().is_some_and(|last| seq < last));
            }
            ServerMessage::AudioCommitted { last_seq, totals } => {
                assert!(writes.is_empty());
                let (_, recording) = session.expect("a commit needs a session");
                assert!(events.contains(&Event::Committed(recording)));
                let stored = self.sink.stored(recording);
                assert_eq!((*last_seq, *totals), (stored.last_seq(), stored.totals()));
            }
            ServerMessage::SessionEnded(summary) => {
                assert!(writes.is_empty());
                assert!(
                    session.is_none(),
                    "a session ended but stayed on its connection"
                );
                let closed = events.iter().find_map(|event| match event {
                    Event::Closed(end) if end.recording == summary.recording => Some(end),
                    _ => None,
                });
                let end = closed.expect("a session ended before its recording was finished");
                assert_eq!(end.ending, SessionEnding::Ended);
                assert_eq!(
                    (summary.totals, summary.last_seq, &summary.gaps),
                    (end.totals, end.last_seq, &end.gaps)
                );
                assert_eq!(summary.duplicates, end.duplicates);
            }
            ServerMessage::SessionStarted(info) => {
                assert!(writes.is_empty());
                assert_eq!(session, Some((info.session, info.recording)));
                assert!(events.contains(&Event::Opened(info.recording)));
                assert_eq!((info.last_seq, info.totals), (None, AudioTotals::default()));
                self.started.push((info.session, info.resume_token.clone()));
            }
            ServerMessage::SessionResumed(info) => {
                assert!(writes.is_empty());
                assert_eq!(session, Some((info.session, info.recording)));
                self.check_info(info);
            }
            ServerMessage::Rejected(rejection) => {
                assert!(writes.is_empty(), "audio stored although refused");
                assert_eq!(
                    session, before,
                    "refusing {rejection:?} changed the session"
                );
            }
            _ => {
                assert!(writes.is_empty(), "audio stored without an acknowledgement");
                assert_eq!(session, before, "{reply:?} changed the session");
            }
        }
    }

    fn check_ack(
        &mut self,
        decoded_size: usize,
        progress: Option<&AudioProgress>,
        writes: &[(RecordingId, u64, usize)],
        session: Option<(SessionId, RecordingId)>,
    ) {
        if let Some(progress) = progress.filter(|progress| progress.duplicate) {
            assert!(writes.is_empty(), "a duplicate was stored again");
            let (_, recording) = session.expect("a duplicate belongs to a session");
            let stored = self.sink.stored(recording);
            assert!(
                stored.seqs.contains(&progress.seq),
                "seq {} acknowledged as a duplicate was never stored",
                progress.seq
            );
            assert_eq!(progress.totals, stored.totals());
            self.sink.note_duplicate(recording);
            return;
        }
        if decoded_size == 0 {
            assert!(
                writes.is_empty(),
                "audio stored with an empty acknowledgement"
            );
            if let (Some(progress), Some((_, recording))) = (progress, session) {
                assert_eq!(progress.totals, self.sink.stored(recording).totals());
            }
            return;
        }
        let [(recording, seq, len)] = writes else {
            panic!("one chunk acknowledged, {} stored", writes.len());
        };
        assert_eq!(*len, decoded_size);
        let (_, current) = session.expect("stored audio belongs to a session");
        assert_eq!(
            *recording, current,
            "audio stored in another session's recording"
        );
        if let Some(previous) = self.acked.insert(*recording, *seq) {
            assert!(*seq > previous, "seq {seq} acknowledged after {previous}");
        }
        if let Some(live) = self.slots[self.current].as_mut() {
            live.stored += 1;
        }
        if let Some(progress) = progress {
            let stored = self.sink.stored(*recording);
            assert_eq!(progress.seq, *seq);
            assert_eq!(progress.totals, stored.totals());
            let before = stored.seqs.len().checked_sub(2).map(|i| stored.seqs[i]);
            let gap = before
                .filter(|before| before + 1 < *seq)
                .map(|before| SeqGap {
                    from: before + 1,
                    to: seq - 1,
                });
            assert_eq!(progress.gap, gap, "gap before seq {seq}");
        }
    }

    fn check_info(&self, info: &SessionInfo) {
        let stored = self.sink.stored(info.recording);
        assert!(stored.open, "a session resumed onto a finished recording");
        assert_eq!(
            (info.last_seq, info.totals),
            (stored.last_seq(), stored.totals())
        );
    }

    /// After a step, the state each connection holds must match what the sink was given.
    fn check_connections(&mut self) {
        for live in self.slots.iter().flatten() {
            let stats = live.connection.stats();
            assert_eq!(stats.messages, live.handled, "messages counted");
            assert_eq!(stats.audio_chunks, live.stored, "chunks counted");
            let Some(session) = live.connection.session() else {
                continue;
            };
            let stored = self.sink.stored(session.recording());
            if live.connection.is_recording_open() {
                assert!(stored.open, "the connection writes to a closed recording");
            }
            assert_eq!(session.totals(), stored.totals(), "session totals");
            assert_eq!(session.last_seq(), stored.last_seq(), "session last seq");
            if let Some(before) = self.totals.insert(session.id(), session.totals()) {
                let now = session.totals();
                assert!(
                    now.bytes >= before.bytes && now.chunks >= before.chunks,
                    "totals went down"
                );
            }
        }
    }

    /// Closes the connection in `slot` as the WebSocket task does when its socket ends.
    fn close(&mut self, slot: usize) {
        let Some(live) = self.slots[slot].take() else {
            return;
        };
        let session = live
            .connection
            .session()
            .map(|session| (session.recording(), session.is_declared()));
        let recording_open = live.connection.is_recording_open();
        let closed = ready(
            self.service
                .close_connection(live.connection, SessionEnding::ConnectionClosed),
        );
        let events = self.sink.take_events();
        let ends: Vec<&RecordingEnd> = events
            .iter()
            .filter_map(|event| match event {
                Event::Closed(end) => Some(end),
                _ => None,
            })
            .collect();
        match session {
            Some((recording, true)) => {
                assert!(closed.is_ok());
                assert!(
                    ends.iter().all(|end| end.recording != recording),
                    "a declared session was finished instead of parked"
                );
            }
            Some((recording, false)) if recording_open => match closed {
                Ok(()) => assert!(
                    ends.iter().any(|end| end.recording == recording
                        && end.ending == SessionEnding::ConnectionClosed),
                    "an implicit session was not finished with its connection"
                ),
                Err(error) => assert!(
                    events.contains(&Event::Failed(Op::Close)),
                    "closing failed unasked: {error}"
                ),
            },
            _ => assert!(closed.is_ok() && ends.is_empty()),
        }
        // Evicting a parked session to make room is the only other finishing.
        assert!(ends.iter().all(|end| end.ending == SessionEnding::Evicted
            || end.ending == SessionEnding::ConnectionClosed));
        self.check_open_connections();
    }

    /// `count` parked sessions were finished with `ending`.
    fn check_finished(&self, count: usize, ending: SessionEnding) {
        let events = self.sink.take_events();
        let attempts = events
            .iter()
            .filter(|event| matches!(event, Event::Closed(_) | Event::Failed(Op::Close)))
            .count();
        assert_eq!(
            attempts, count,
            "sessions said finished vs recordings closed"
        );
        for event in &events {
            if let Event::Closed(end) = event {
                assert_eq!(end.ending, ending);
            }
        }
    }

    fn check_parked(&self, expected: usize) {
        let status = ready(self.service.status()).expect("the store counts");
        assert_eq!(status.parked_sessions, expected, "parked sessions");
    }

    fn check_open_connections(&self) {
        let status = ready(self.service.status()).expect("the store counts");
        let open = self.slots.iter().flatten().count();
        assert_eq!(status.active_connections, open, "connections counted");
    }

    /// Closes everything as the service does when it stops, then checks that no recording
    /// was left unfinished without even a try.
    fn stop(mut self) {
        self.close(0);
        self.close(1);
        let finished = ready(self.service.finish_parked_sessions());
        self.check_finished(finished, SessionEnding::Shutdown);
        self.check_parked(0);
        let log = self.sink.log();
        for (recording, stored) in &log.recordings {
            assert!(
                stored.close_tried,
                "recording {recording} was opened and never finished"
            );
        }
    }
}

/// A clock that moves only when the script says.
#[derive(Default)]
struct ScriptedClock {
    millis: Mutex<u64>,
}

impl ScriptedClock {
    fn tick(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let mut millis = self.millis.lock().unwrap_or_else(PoisonError::into_inner);
        *millis = millis.saturating_add(by);
    }

    fn millis(&self) -> u64 {
        *self.millis.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ScriptedClock {
    fn now(&self) -> Timestamp {
        // Any fixed origin will do; this one reads well in a debugger.
        let origin = 1_750_000_000_000_i64;
        Timestamp::from_unix_millis(origin + i64::try_from(self.millis()).unwrap_or(0))
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.millis())
    }
}

/// A connection store that keeps its contract and nothing more.
#[derive(Default)]
struct ScriptedStore {
    open: Mutex<Vec<ConnectionId>>,
}

#[async_trait]
impl ConnectionStore for ScriptedStore {
    async fn register(&self, connection: ConnectionInfo) -> Result<(), StoreError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.contains(&connection.id) {
            return Err(StoreError::AlreadyRegistered(connection.id));
        }
        open.push(connection.id);
        Ok(())
    }

    async fn remove(&self, id: ConnectionId) -> Result<(), StoreError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let position = open
            .iter()
            .position(|open| *open == id)
            .ok_or(StoreError::UnknownConnection(id))?;
        open.swap_remove(position);
        Ok(())
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len())
    }
}

/// A sink operation, for failures and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Open,
    Write,
    Commit,
    Close,
}

/// What the sink did, in order, since the harness last looked.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Opened(RecordingId),
    Wrote(RecordingId, u64, usize),
    Committed(RecordingId),
    Closed(RecordingEnd),
    Failed(Op),
}

/// What a sink holds of one recording.
#[derive(Debug, Default, Clone)]
struct Stored {
    /// Opened and not finished.
    open: bool,
    /// A close was attempted, successful or not.
    close_tried: bool,
    /// Accepted sequence numbers, in the order written.
    seqs: Vec<u64>,
    bytes: u64,
    /// Duplicates the client was told about.
    duplicates: u64,
}

impl Stored {
    fn totals(&self) -> AudioTotals {
        AudioTotals {
            bytes: self.bytes,
            chunks: self.seqs.len() as u64,
        }
    }

    fn last_seq(&self) -> Option<u64> {
        self.seqs.last().copied()
    }

    /// The numbers skipped between chunks, as a session must report them.
    fn gaps(&self) -> Vec<SeqGap> {
        self.seqs
            .windows(2)
            .filter(|pair| pair[0] + 1 < pair[1])
            .map(|pair| SeqGap {
                from: pair[0] + 1,
                to: pair[1] - 1,
            })
            .collect()
    }
}

#[derive(Default)]
struct SinkLog {
    recordings: HashMap<RecordingId, Stored>,
    /// Recordings whose opening failed: never to be used again.
    refused: Vec<RecordingId>,
    failing: Vec<Op>,
    events: Vec<Event>,
}

impl SinkLog {
    /// Whether the next `op` was scripted to fail; the failure is then used up.
    fn fails(&mut self, op: Op) -> bool {
        let Some(position) = self.failing.iter().position(|failing| *failing == op) else {
            return false;
        };
        self.failing.swap_remove(position);
        self.events.push(Event::Failed(op));
        true
    }

    fn open_recording(&mut self, recording: RecordingId, doing: &str) -> &mut Stored {
        match self.recordings.get_mut(&recording) {
            Some(stored) if stored.open => stored,
            _ => panic!("{doing} recording {recording}, which is not open"),
        }
    }
}

/// An audio sink that checks how it is used and fails when the script says.
#[derive(Default)]
struct ScriptedSink {
    log: Mutex<SinkLog>,
}

impl ScriptedSink {
    fn log(&self) -> MutexGuard<'_, SinkLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail_next(&self, ops: &[u8]) {
        let mut log = self.log();
        for op in ops {
            let op = match op {
                b'o' => Op::Open,
                b'w' => Op::Write,
                b'c' => Op::Commit,
                b'e' => Op::Close,
                _ => continue,
            };
            if !log.failing.contains(&op) {
                log.failing.push(op);
            }
        }
    }

    fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut self.log().events)
    }

    fn stored(&self, recording: RecordingId) -> Stored {
        self.log()
            .recordings
            .get(&recording)
            .cloned()
            .unwrap_or_default()
    }

    fn note_duplicate(&self, recording: RecordingId) {
        self.log()
            .recordings
            .entry(recording)
            .or_default()
            .duplicates += 1;
    }
}

fn unavailable() -> SinkError {
    SinkError::Unavailable(Box::new(std::io::Error::other("scripted failure")))
}

#[async_trait]
impl AudioSink for ScriptedSink {
    async fn open(&self, start: RecordingStart) -> Result<(), SinkError> {
        let mut log = self.log();
        let recording = start.recording;
        assert!(
            !log.recordings.contains_key(&recording) && !log.refused.contains(&recording),
            "recording {recording} opened twice"
        );
        if log.fails(Op::Open) {
            log.refused.push(recording);
            return Err(unavailable());
        }
        let stored = Stored {
            open: true,
            ..Stored::default()
        };
        log.recordings.insert(recording, stored);
        log.events.push(Event::Opened(recording));
        Ok(())
    }

    async fn write(
        &self,
        recording: RecordingId,
        seq: u64,
        chunk: AudioChunk,
    ) -> Result<(), SinkError> {
        let mut log = self.log();
        log.open_recording(recording, "writing to");
        if log.fails(Op::Write) {
            return Err(unavailable());
        }
        let stored = log.open_recording(recording, "writing to");
        if let Some(last) = stored.last_seq() {
            assert!(seq > last, "chunk {seq} written after {last}: out of order");
        }
        stored.seqs.push(seq);
        stored.bytes += chunk.len() as u64;
        log.events.push(Event::Wrote(recording, seq, chunk.len()));
        Ok(())
    }

    async fn commit(&self, recording: RecordingId) -> Result<(), SinkError> {
        let mut log = self.log();
        log.open_recording(recording, "committing");
        if log.fails(Op::Commit) {
            return Err(unavailable());
        }
        log.events.push(Event::Committed(recording));
        Ok(())
    }

    async fn close(&self, end: RecordingEnd) -> Result<(), SinkError> {
        let mut log = self.log();
        let stored = log.open_recording(end.recording, "finishing");
        stored.close_tried = true;
        assert_eq!(
            end.totals,
            stored.totals(),
            "totals of the finished recording"
        );
        assert_eq!(
            end.last_seq,
            stored.last_seq(),
            "last seq of the finished recording"
        );
        assert_eq!(end.gaps, stored.gaps(), "gaps of the finished recording");
        assert_eq!(
            end.duplicates, stored.duplicates,
            "duplicates of the finished recording"
        );
        if log.fails(Op::Close) {
            return Err(unavailable());
        }
        log.open_recording(end.recording, "finishing").open = false;
        log.events.push(Event::Closed(end));
        Ok(())
    }
}
