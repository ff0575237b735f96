//! Use-case tests: every port is a mockall mock, no socket is opened, time is pinned (and
//! moved by hand where a rule depends on it).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aimcs_domain::ports::{
    MockAudioSink, MockClock, MockConnectionStore, MockSessionStore, SinkError, StoreError,
};
use aimcs_domain::{
    AudioChunk, AudioFormat, AudioMessage, AudioPayload, AudioTotals, ChatRequest, ClientMessage,
    ClientValue, ConnectionId, Encoding, FormatRequest, RecordingEnd, Rejection, SampleEncoding,
    SeqGap, ServerMessage, SessionEnding, SessionInfo, SessionSnapshot, Stamped, StoredProgress,
    Timestamp,
};
use mockall::predicate::{always, eq};

use super::*;

const T0: Timestamp = Timestamp::from_unix_millis(1_750_998_011_123);
const GRACE: Duration = Duration::from_secs(30);
const CONFIG: ServiceConfig = ServiceConfig {
    version: "1.0.0",
    resume_grace: GRACE,
    max_parked_sessions: 100,
};

/// A clock that reads `now` (milliseconds), which a test can move forward.
fn clock(now: Arc<AtomicI64>) -> MockClock {
    let mut clock = MockClock::new();
    clock
        .expect_now()
        .returning(move || Timestamp::from_unix_millis(now.load(Ordering::SeqCst)));
    clock
        .expect_monotonic()
        .return_const(Duration::from_secs(100));
    clock
}

fn service(store: MockConnectionStore, sink: MockAudioSink) -> IngestService {
    IngestService::new(
        Arc::new(store),
        Arc::new(clock(Arc::new(AtomicI64::new(T0.unix_millis())))),
        Arc::new(sink),
        CONFIG,
    )
}

/// A service and a handle on its clock.
fn service_with_clock(
    store: MockConnectionStore,
    sink: MockAudioSink,
) -> (IngestService, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(T0.unix_millis()));
    let service = IngestService::new(
        Arc::new(store),
        Arc::new(clock(Arc::clone(&now))),
        Arc::new(sink),
        CONFIG,
    );
    (service, now)
}

fn accepting_store() -> MockConnectionStore {
    let mut store = MockConnectionStore::new();
    store.expect_register().returning(|_| Ok(()));
    store.expect_remove().returning(|_| Ok(()));
    store
}

/// A sink that accepts everything.
fn accepting_sink() -> MockAudioSink {
    let mut sink = accepting_sink_of_this_process();
    sink.expect_can_continue_recordings().return_const(true);
    sink
}

/// Accepts everything; its recordings only this process can continue.
fn accepting_sink_of_this_process() -> MockAudioSink {
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write().returning(|_, _, _| Ok(()));
    sink.expect_commit().returning(|_| Ok(()));
    sink.expect_close().returning(|_| Ok(()));
    sink
}

/// A sink that accepts everything and keeps recordings only this process can continue,
/// as the file sink does.
fn local_only_sink() -> MockAudioSink {
    let mut sink = accepting_sink_of_this_process();
    sink.expect_can_continue_recordings().return_const(false);
    sink.expect_continue_recording().never();
    sink
}

fn unavailable() -> SinkError {
    SinkError::Unavailable("disk full".into())
}

fn audio(bytes: &'static [u8], seq: Option<u64>) -> ClientMessage {
    ClientMessage::Audio(AudioMessage {
        encoded_size: bytes.len().div_ceil(3) * 4,
        payload: AudioPayload::Chunk(AudioChunk::new(bytes).unwrap()),
        seq,
    })
}

fn pcm_start() -> ClientMessage {
    ClientMessage::SessionStart {
        format: FormatRequest {
            encoding: Encoding::Samples(SampleEncoding::PcmS16le),
            container: None,
            sample_rate: Some(16_000),
            channels: Some(1),
        },
        metadata: Some(ClientValue::from_wire(r#"{"callId":"c-1"}"#)),
    }
}

async fn opened(service: &IngestService) -> Connection {
    service
        .open_connection(NewConnection::default())
        .await
        .unwrap()
        .0
}

async fn ask(
    service: &IngestService,
    connection: &mut Connection,
    message: ClientMessage,
) -> ServerMessage {
    service
        .handle_client_message(connection, message)
        .await
        .unwrap()
        .value
}

/// A connection with a declared session, and what `session_started` said.
async fn started(service: &IngestService) -> (Connection, SessionInfo) {
    let mut connection = opened(service).await;
    match ask(service, &mut connection, pcm_start()).await {
        ServerMessage::SessionStarted(info) => (connection, info),
        other => panic!("expected session_started, got {other:?}"),
    }
}

/// A resume of `id` with a token that cannot be its own.
fn resume_with_any_token(id: aimcs_domain::SessionId) -> ClientMessage {
    ClientMessage::SessionResume {
        session: id,
        token: "x".into(),
        last_acked_seq: None,
    }
}

/// The answer to [`resume_with_any_token`] on a new connection.
async fn ask_to_resume(service: &IngestService, id: aimcs_domain::SessionId) -> ServerMessage {
    let mut connection = opened(service).await;
    ask(service, &mut connection, resume_with_any_token(id)).await
}

fn resume(info: &SessionInfo, token: &str) -> ClientMessage {
    ClientMessage::SessionResume {
        session: info.session,
        token: token.into(),
        last_acked_seq: info.last_seq,
    }
}

// === connections and the original protocol ===

#[tokio::test]
async fn opening_a_connection_registers_it_and_greets_it_with_its_id() {
    // Arrange
    let mut store = MockConnectionStore::new();
    store
        .expect_register()
        .withf(|info| info.opened_at == T0 && info.peer.as_deref() == Some("127.0.0.1:5000"))
        .times(1)
        .returning(|_| Ok(()));
    let service = service(store, MockAudioSink::new());

    // Act
    let (connection, greeting) = service
        .open_connection(NewConnection {
            peer: Some("127.0.0.1:5000".into()),
            user_agent: None,
        })
        .await
        .unwrap();

    // Assert
    assert_eq!(
        greeting,
        Stamped {
            at: T0,
            value: ServerMessage::Connected {
                connection_id: connection.id()
            }
        }
    );
}

#[tokio::test]
async fn a_connection_the_store_cannot_register_is_refused() {
    let mut store = MockConnectionStore::new();
    store
        .expect_register()
        .returning(|_| Err(StoreError::Unavailable("down".into())));
    let service = service(store, MockAudioSink::new());

    let result = service.open_connection(NewConnection::default()).await;

    assert!(
        matches!(
            result,
            Err(OpenConnectionError::Store {
                source: StoreError::Unavailable(_),
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn test_ping_and_unknown_messages_are_answered_without_touching_the_sink() {
    let service = service(accepting_store(), MockAudioSink::new());
    let mut connection = opened(&service).await;
    let original = Some(ClientValue::from_wire("\"hi\""));

    assert_eq!(
        ask(
            &service,
            &mut connection,
            ClientMessage::Test {
                message: original.clone()
            }
        )
        .await,
        ServerMessage::TestResponse {
            original_message: original
        }
    );
    assert_eq!(
        ask(&service, &mut connection, ClientMessage::Ping).await,
        ServerMessage::Pong
    );
    assert_eq!(
        ask(
            &service,
            &mut connection,
            ClientMessage::Unknown {
                original_type: None
            }
        )
        .await,
        ServerMessage::Echo {
            original_type: None
        }
    );
    assert_eq!(
        ask(
            &service,
            &mut connection,
            ClientMessage::Undecodable {
                reason: "not JSON".into()
            }
        )
        .await,
        ServerMessage::Rejected(Rejection::MalformedMessage("not JSON".into()))
    );
}

#[tokio::test]
async fn the_first_audio_of_an_original_client_opens_its_recording_then_stores_the_chunk() {
    // Arrange
    let mut sink = MockAudioSink::new();
    let mut order = mockall::Sequence::new();
    sink.expect_open()
        .withf(|start| start.format == AudioFormat::Undeclared && start.metadata.is_none())
        .times(1)
        .in_sequence(&mut order)
        .returning(|_| Ok(()));
    sink.expect_write()
        .with(
            always(),
            eq(1),
            eq(AudioChunk::new(&b"\x01\x02\x03"[..]).unwrap()),
        )
        .times(1)
        .in_sequence(&mut order)
        .returning(|_, _, _| Ok(()));
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;

    // Act
    let reply = ask(&service, &mut connection, audio(b"\x01\x02\x03", None)).await;

    // Assert
    assert_eq!(
        reply,
        ServerMessage::AudioReceived {
            encoded_size: 4,
            decoded_size: 3,
            progress: None
        }
    );
}

#[tokio::test]
async fn audio_the_sink_refuses_is_not_acknowledged() {
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write().returning(|_, _, _| Err(unavailable()));
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;

    let result = service
        .handle_client_message(&mut connection, audio(b"abc", None))
        .await;

    assert!(
        matches!(result, Err(HandleClientMessageError::Sink { seq: 1, .. })),
        "{result:?}"
    );
    assert_eq!(
        connection.stats().audio_chunks,
        0,
        "a refused chunk is not counted as stored"
    );
}

#[tokio::test]
async fn a_recording_the_sink_cannot_open_is_reported_and_nothing_is_written() {
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Err(unavailable()));
    sink.expect_write().never();
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;

    let result = service
        .handle_client_message(&mut connection, audio(b"abc", None))
        .await;

    assert!(
        matches!(
            result,
            Err(HandleClientMessageError::Recording {
                action: "opened",
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn invalid_and_empty_audio_never_reach_the_sink() {
    let mut sink = MockAudioSink::new();
    sink.expect_open().never();
    sink.expect_write().never();
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;
    let invalid = ClientMessage::Audio(AudioMessage {
        encoded_size: 4,
        payload: AudioPayload::Invalid("bad".into()),
        seq: None,
    });
    let empty = ClientMessage::Audio(AudioMessage {
        encoded_size: 0,
        payload: AudioPayload::Empty,
        seq: None,
    });

    assert_eq!(
        ask(&service, &mut connection, invalid).await,
        ServerMessage::Rejected(Rejection::InvalidAudio("bad".into()))
    );
    assert_eq!(
        ask(&service, &mut connection, empty).await,
        ServerMessage::AudioReceived {
            encoded_size: 0,
            decoded_size: 0,
            progress: None
        }
    );
}

#[tokio::test]
async fn closing_an_original_connection_finishes_its_recording_and_forgets_it() {
    // Arrange
    let mut store = MockConnectionStore::new();
    store.expect_register().returning(|_| Ok(()));
    let removed = Arc::new(Mutex::new(None::<ConnectionId>));
    let seen = Arc::clone(&removed);
    store.expect_remove().times(1).returning(move |id| {
        *seen.lock().unwrap() = Some(id);
        Ok(())
    });
    let mut sink = accepting_sink();
    sink.checkpoint();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write().returning(|_, _, _| Ok(()));
    sink.expect_close()
        .withf(|end: &RecordingEnd| {
            end.ending == SessionEnding::ConnectionClosed
                && end.totals
                    == AudioTotals {
                        bytes: 3,
                        chunks: 1,
                    }
        })
        .times(1)
        .returning(|_| Ok(()));
    let service = service(store, sink);
    let mut connection = opened(&service).await;
    ask(&service, &mut connection, audio(b"abc", None)).await;
    let id = connection.id();

    // Act
    service
        .close_connection(connection, SessionEnding::ConnectionClosed)
        .await
        .unwrap();

    // Assert
    assert_eq!(*removed.lock().unwrap(), Some(id));
}

#[tokio::test]
async fn closing_a_connection_without_audio_does_not_touch_the_sink() {
    let mut sink = MockAudioSink::new();
    sink.expect_close().never();
    let service = service(accepting_store(), sink);
    let connection = opened(&service).await;

    service
        .close_connection(connection, SessionEnding::ConnectionClosed)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_recording_that_cannot_be_finished_still_lets_the_connection_be_forgotten() {
    let mut store = MockConnectionStore::new();
    store.expect_register().returning(|_| Ok(()));
    store.expect_remove().times(1).returning(|_| Ok(()));
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write().returning(|_, _, _| Ok(()));
    sink.expect_close().returning(|_| Err(unavailable()));
    let service = service(store, sink);
    let mut connection = opened(&service).await;
    ask(&service, &mut connection, audio(b"abc", None)).await;

    let result = service
        .close_connection(connection, SessionEnding::ConnectionClosed)
        .await;

    assert!(
        matches!(result, Err(CloseConnectionError::Sink { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_store_that_cannot_forget_a_connection_is_reported() {
    let mut store = MockConnectionStore::new();
    store.expect_register().returning(|_| Ok(()));
    store
        .expect_remove()
        .returning(|id| Err(StoreError::UnknownConnection(id)));
    let service = service(store, MockAudioSink::new());
    let connection = opened(&service).await;

    let result = service
        .close_connection(connection, SessionEnding::ConnectionClosed)
        .await;

    assert!(
        matches!(
            result,
            Err(CloseConnectionError::Store(StoreError::UnknownConnection(
                _
            )))
        ),
        "{result:?}"
    );
}

// === declared sessions ===

#[tokio::test]
async fn session_start_opens_the_recording_with_the_declared_format_and_metadata() {
    // Arrange
    let mut sink = MockAudioSink::new();
    sink.expect_open()
        .withf(|start| {
            start.format
                == AudioFormat::Samples {
                    encoding: SampleEncoding::PcmS16le,
                    sample_rate: 16_000,
                    channels: 1,
                }
                && start.metadata.as_ref().map(ClientValue::as_wire) == Some(r#"{"callId":"c-1"}"#)
        })
        .times(1)
        .returning(|_| Ok(()));
    let service = service(accepting_store(), sink);

    // Act
    let (connection, info) = started(&service).await;

    // Assert
    assert_eq!(info.resume_grace, GRACE);
    assert_eq!(info.resume_token.len(), 32);
    assert_eq!((info.last_seq, info.totals), (None, AudioTotals::default()));
    assert!(connection.binary_frames_are_audio());
}

#[tokio::test]
async fn a_session_the_sink_cannot_open_is_not_started() {
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Err(unavailable()));
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;

    let result = service
        .handle_client_message(&mut connection, pcm_start())
        .await;

    assert!(
        matches!(
            result,
            Err(HandleClientMessageError::Recording {
                action: "opened",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(connection.session().is_none());
}

#[tokio::test]
async fn sequence_gaps_are_reported_and_duplicates_are_not_written_twice() {
    // Arrange: the sink must see 1, 2 and 5, each once.
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    let written = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&written);
    sink.expect_write().returning(move |_, seq, _| {
        log.lock().unwrap().push(seq);
        Ok(())
    });
    let service = service(accepting_store(), sink);
    let (mut connection, _) = started(&service).await;

    // Act
    ask(&service, &mut connection, audio(b"aa", Some(1))).await;
    ask(&service, &mut connection, audio(b"bb", Some(2))).await;
    let duplicate = ask(&service, &mut connection, audio(b"bb", Some(2))).await;
    let gap = ask(&service, &mut connection, audio(b"cc", Some(5))).await;

    // Assert
    assert_eq!(*written.lock().unwrap(), [1, 2, 5]);
    let ServerMessage::AudioReceived {
        progress: Some(duplicate),
        ..
    } = duplicate
    else {
        panic!("{duplicate:?}")
    };
    assert!(duplicate.duplicate && duplicate.totals.chunks == 2);
    let ServerMessage::AudioReceived {
        progress: Some(gap),
        ..
    } = gap
    else {
        panic!("{gap:?}")
    };
    assert_eq!(
        (gap.gap, gap.totals),
        (
            Some(SeqGap { from: 3, to: 4 }),
            AudioTotals {
                bytes: 6,
                chunks: 3
            }
        )
    );
}

#[tokio::test]
async fn a_commit_makes_the_recording_durable_before_answering() {
    let mut sink = accepting_sink();
    sink.checkpoint();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write().returning(|_, _, _| Ok(()));
    sink.expect_commit().times(1).returning(|_| Ok(()));
    let service = service(accepting_store(), sink);
    let (mut connection, _) = started(&service).await;
    ask(&service, &mut connection, audio(b"abcd", Some(4))).await;

    let reply = ask(&service, &mut connection, ClientMessage::AudioCommit).await;

    assert_eq!(
        reply,
        ServerMessage::AudioCommitted {
            last_seq: Some(4),
            totals: AudioTotals {
                bytes: 4,
                chunks: 1
            }
        }
    );
}

#[tokio::test]
async fn a_commit_the_sink_cannot_make_is_reported() {
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_commit().returning(|_| Err(unavailable()));
    let service = service(accepting_store(), sink);
    let (mut connection, _) = started(&service).await;

    let result = service
        .handle_client_message(&mut connection, ClientMessage::AudioCommit)
        .await;

    assert!(
        matches!(
            result,
            Err(HandleClientMessageError::Recording {
                action: "committed",
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn session_end_finishes_the_recording_and_reports_the_totals() {
    // Arrange
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write().returning(|_, _, _| Ok(()));
    sink.expect_close()
        .withf(|end| {
            end.ending == SessionEnding::Ended
                && end.totals
                    == AudioTotals {
                        bytes: 6_400,
                        chunks: 2,
                    }
        })
        .times(1)
        .returning(|_| Ok(()));
    let service = service(accepting_store(), sink);
    let (mut connection, info) = started(&service).await;
    ask(&service, &mut connection, audio(&[0; 3_200], None)).await;
    ask(&service, &mut connection, audio(&[0; 3_200], None)).await;

    // Act
    let reply = ask(&service, &mut connection, ClientMessage::SessionEnd).await;

    // Assert
    let ServerMessage::SessionEnded(summary) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        (summary.session, summary.recording),
        (info.session, info.recording)
    );
    assert_eq!((summary.totals.chunks, summary.last_seq), (2, Some(2)));
    assert_eq!(summary.duration, Some(Duration::from_millis(200)));
}

#[tokio::test]
async fn ending_twice_and_audio_after_the_end_need_a_new_session() {
    let service = service(accepting_store(), accepting_sink());
    let (mut connection, _) = started(&service).await;
    ask(&service, &mut connection, ClientMessage::SessionEnd).await;

    assert_eq!(
        ask(&service, &mut connection, ClientMessage::SessionEnd).await,
        ServerMessage::Rejected(Rejection::NoActiveSession)
    );
    assert_eq!(
        ask(&service, &mut connection, audio(b"abc", Some(9))).await,
        ServerMessage::Rejected(Rejection::NoActiveSession)
    );
}

#[tokio::test]
async fn a_dropped_session_is_parked_and_resumed_on_a_new_connection_where_it_left_off() {
    // Arrange: the recording must not be finished when the first connection drops.
    let mut sink = MockAudioSink::new();
    sink.expect_open().times(1).returning(|_| Ok(()));
    sink.expect_write().returning(|_, _, _| Ok(()));
    sink.expect_close().never();
    let service = service(accepting_store(), sink);
    let (mut first, info) = started(&service).await;
    ask(&service, &mut first, audio(b"aa", Some(1))).await;
    ask(&service, &mut first, audio(b"bb", Some(2))).await;
    service
        .close_connection(first, SessionEnding::ConnectionClosed)
        .await
        .unwrap();

    // Act
    let mut second = opened(&service).await;
    let reply = ask(&service, &mut second, resume(&info, &info.resume_token)).await;

    // Assert
    let ServerMessage::SessionResumed(resumed) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        (resumed.session, resumed.recording, resumed.last_seq),
        (info.session, info.recording, Some(2))
    );
    assert_eq!(
        resumed.totals,
        AudioTotals {
            bytes: 4,
            chunks: 2
        }
    );
    let ServerMessage::AudioReceived {
        progress: Some(progress),
        ..
    } = ask(&service, &mut second, audio(b"bb", Some(2))).await
    else {
        panic!("an ack")
    };
    assert!(
        progress.duplicate,
        "a chunk resent after the resume is not written again"
    );
}

#[tokio::test]
async fn a_resume_with_the_wrong_token_is_refused_and_the_session_stays_parked() {
    let mut store = MockConnectionStore::new();
    store.expect_register().returning(|_| Ok(()));
    store.expect_remove().returning(|_| Ok(()));
    store.expect_count().returning(|| Ok(0));
    store.expect_cluster().returning(|| Ok(None));
    let service = service(store, accepting_sink());
    let (first, info) = started(&service).await;
    service
        .close_connection(first, SessionEnding::ConnectionClosed)
        .await
        .unwrap();
    let mut second = opened(&service).await;

    let reply = ask(
        &service,
        &mut second,
        resume(&info, "0123456789abcdef0123456789abcdef"),
    )
    .await;

    assert_eq!(
        reply,
        ServerMessage::Rejected(Rejection::WrongResumeToken(info.session))
    );
    assert_eq!(service.status().await.unwrap().parked_sessions, 1);
}

#[tokio::test]
async fn a_resume_after_the_grace_period_finishes_the_recording_and_is_refused() {
    // Arrange
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_close()
        .withf(|end| end.ending == SessionEnding::Expired)
        .times(1)
        .returning(|_| Ok(()));
    let (service, now) = service_with_clock(accepting_store(), sink);
    let (first, info) = started(&service).await;
    service
        .close_connection(first, SessionEnding::ConnectionClosed)
        .await
        .unwrap();
    now.fetch_add(GRACE.as_millis() as i64 + 1, Ordering::SeqCst);

    // Act
    let mut second = opened(&service).await;
    let reply = ask(&service, &mut second, resume(&info, &info.resume_token)).await;

    // Assert
    assert_eq!(
        reply,
        ServerMessage::Rejected(Rejection::SessionExpired(info.session))
    );
    let again = ask(&service, &mut second, resume(&info, &info.resume_token)).await;
    assert_eq!(
        again,
        ServerMessage::Rejected(Rejection::SessionNotFound(info.session))
    );
}

#[tokio::test]
async fn a_resume_of_a_session_another_connection_holds_asks_for_it_to_let_go() {
    let service = service(accepting_store(), accepting_sink());
    let (holder, info) = started(&service).await;
    let mut second = opened(&service).await;

    let result = service
        .handle_client_message(&mut second, resume(&info, &info.resume_token))
        .await;

    assert!(
        matches!(result, Err(HandleClientMessageError::SessionHeld { session, holder: h }) if session == info.session && h == holder.id()),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_resume_of_an_unknown_session_is_refused() {
    let service = service(accepting_store(), MockAudioSink::new());
    let id = aimcs_domain::SessionId::random();

    let reply = ask_to_resume(&service, id).await;

    assert_eq!(
        reply,
        ServerMessage::Rejected(Rejection::SessionNotFound(id))
    );
}

#[tokio::test]
async fn parked_sessions_past_the_grace_period_are_finished_by_expiry() {
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_close()
        .withf(|end| end.ending == SessionEnding::Expired)
        .times(1)
        .returning(|_| Ok(()));
    let (service, now) = service_with_clock(accepting_store(), sink);
    let (first, _) = started(&service).await;
    service
        .close_connection(first, SessionEnding::ConnectionClosed)
        .await
        .unwrap();

    assert_eq!(
        service.expire_sessions().await,
        0,
        "within the grace period nothing expires"
    );
    now.fetch_add(GRACE.as_millis() as i64 + 1, Ordering::SeqCst);
    assert_eq!(service.expire_sessions().await, 1);
    assert_eq!(service.expire_sessions().await, 0, "finished once");
}

#[tokio::test]
async fn at_shutdown_parked_sessions_are_finished() {
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_close()
        .withf(|end| end.ending == SessionEnding::Shutdown)
        .times(2)
        .returning(|_| Ok(()));
    let service = service(accepting_store(), sink);
    for _ in 0..2 {
        let (connection, _) = started(&service).await;
        service
            .close_connection(connection, SessionEnding::ConnectionClosed)
            .await
            .unwrap();
    }

    assert_eq!(service.finish_parked_sessions().await, 2);
}

#[tokio::test]
async fn a_session_end_the_sink_cannot_finish_leaves_the_session_active_to_try_again() {
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    let mut attempts = 0;
    sink.expect_close().times(2).returning(move |_| {
        attempts += 1;
        if attempts == 1 {
            Err(unavailable())
        } else {
            Ok(())
        }
    });
    let service = service(accepting_store(), sink);
    let (mut connection, _) = started(&service).await;

    let first = service
        .handle_client_message(&mut connection, ClientMessage::SessionEnd)
        .await;
    let second = ask(&service, &mut connection, ClientMessage::SessionEnd).await;

    assert!(
        matches!(
            first,
            Err(HandleClientMessageError::Recording {
                action: "finished",
                ..
            })
        ),
        "{first:?}"
    );
    assert!(
        matches!(second, ServerMessage::SessionEnded(_)),
        "{second:?}"
    );
    assert!(connection.session().is_none());
}

#[tokio::test]
async fn a_late_chunk_is_refused_without_reaching_the_sink() {
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write().times(2).returning(|_, _, _| Ok(()));
    let service = service(accepting_store(), sink);
    let (mut connection, _) = started(&service).await;
    ask(&service, &mut connection, audio(b"a", Some(1))).await;
    ask(&service, &mut connection, audio(b"c", Some(3))).await;

    let reply = ask(&service, &mut connection, audio(b"b", Some(2))).await;

    assert_eq!(reply, ServerMessage::Rejected(Rejection::LateChunk(2)));
}

#[tokio::test]
async fn beyond_the_limit_of_parked_sessions_the_oldest_is_finished() {
    // Arrange: room for two parked sessions.
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    let finished = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&finished);
    sink.expect_close().returning(move |end| {
        log.lock().unwrap().push((end.session, end.ending));
        Ok(())
    });
    let now = Arc::new(AtomicI64::new(T0.unix_millis()));
    let config = ServiceConfig {
        max_parked_sessions: 2,
        ..CONFIG
    };
    let service = IngestService::new(
        Arc::new(accepting_store()),
        Arc::new(clock(Arc::clone(&now))),
        Arc::new(sink),
        config,
    );
    let mut ids = Vec::new();

    // Act: three sessions drop, one after the other.
    for _ in 0..3 {
        let (connection, info) = started(&service).await;
        ids.push(info.session);
        service
            .close_connection(connection, SessionEnding::ConnectionClosed)
            .await
            .unwrap();
        now.fetch_add(1, Ordering::SeqCst);
    }

    // Assert
    assert_eq!(
        *finished.lock().unwrap(),
        [(ids[0], SessionEnding::Evicted)]
    );
}

#[tokio::test]
async fn at_shutdown_an_original_clients_recording_ends_as_shutdown() {
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write().returning(|_, _, _| Ok(()));
    sink.expect_close()
        .withf(|end| end.ending == SessionEnding::Shutdown)
        .times(1)
        .returning(|_| Ok(()));
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;
    ask(&service, &mut connection, audio(b"abc", None)).await;

    service
        .close_connection(connection, SessionEnding::Shutdown)
        .await
        .unwrap();
}

// === reports and chat ===

#[tokio::test]
async fn health_reports_uptime_connections_and_version() {
    // Arrange: the service starts at monotonic 100 s and is asked at 112.5 s.
    let mut store = MockConnectionStore::new();
    store.expect_count().times(1).returning(|| Ok(7));
    store.expect_cluster().returning(|| Ok(None));
    let mut clock = MockClock::new();
    clock.expect_now().return_const(T0);
    let mut readings = vec![Duration::from_millis(112_500), Duration::from_secs(100)];
    clock
        .expect_monotonic()
        .times(2)
        .returning(move || readings.pop().unwrap());
    let service = IngestService::new(
        Arc::new(store),
        Arc::new(clock),
        Arc::new(MockAudioSink::new()),
        CONFIG,
    );

    // Act
    let health = service.health().await.unwrap();

    // Assert
    assert_eq!(
        health,
        HealthReport {
            at: T0,
            uptime: Duration::from_millis(12_500),
            connections: 7,
            version: "1.0.0",
            cluster: None
        }
    );
}

#[tokio::test]
async fn reports_fail_when_connections_cannot_be_counted() {
    let mut store = MockConnectionStore::new();
    store
        .expect_count()
        .returning(|| Err(StoreError::Unavailable("down".into())));
    let service = service(store, MockAudioSink::new());

    assert!(matches!(service.health().await, Err(ReportError::Store(_))));
    assert!(matches!(service.status().await, Err(ReportError::Store(_))));
}

#[tokio::test]
async fn status_reports_active_connections() {
    let mut store = MockConnectionStore::new();
    store.expect_count().times(1).returning(|| Ok(3));
    store.expect_cluster().returning(|| Ok(None));
    let service = service(store, MockAudioSink::new());

    let status = service.status().await.unwrap();

    assert_eq!(
        status,
        StatusReport {
            at: T0,
            active_connections: 3,
            parked_sessions: 0,
            cluster: None
        }
    );
}

#[tokio::test]
async fn chat_echoes_the_message_with_its_context_and_distinct_ids() {
    let service = service(MockConnectionStore::new(), MockAudioSink::new());
    let context = Some(ClientValue::from_wire(r#"{"test":true}"#));
    let ask = || ChatRequest::new(Some("Hello!".into()), context.clone()).unwrap();

    let (first, second) = (service.chat(ask()), service.chat(ask()));

    assert_eq!(
        (first.at, first.value.message.as_str(), first.value.context),
        (T0, "Echo: Hello!", context)
    );
    assert_ne!(first.value.id, second.value.id);
}

// === sessions shared between replicas ===

const PCM: AudioFormat = AudioFormat::Samples {
    encoding: SampleEncoding::PcmS16le,
    sample_rate: 16_000,
    channels: 1,
};

fn down() -> StoreError {
    StoreError::Unavailable("down".into())
}

fn millis_before_t0(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0.unix_millis() - millis)
}

/// Every save a session store is asked for, in order; each is accepted.
fn saves(shared: &mut MockSessionStore) -> Arc<Mutex<Vec<(SessionSnapshot, SessionHolder)>>> {
    let saved = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&saved);
    shared.expect_save().returning(move |snapshot, holder| {
        log.lock().unwrap().push((snapshot, holder));
        Ok(())
    });
    saved
}

/// A session store that takes every save and forget.
fn accepting_shared() -> MockSessionStore {
    let mut shared = MockSessionStore::new();
    shared.expect_save().returning(|_, _| Ok(()));
    shared.expect_forget().returning(|_, _| Ok(()));
    shared
}

/// A session store holding `snapshot` and no other session.
fn sharing(snapshot: SessionSnapshot) -> MockSessionStore {
    let mut shared = MockSessionStore::new();
    shared
        .expect_load()
        .with(eq(snapshot.id))
        .returning(move |_| Ok(Some(snapshot.clone())));
    shared
}

fn shared_service(
    store: MockConnectionStore,
    sink: MockAudioSink,
    shared: MockSessionStore,
) -> IngestService {
    service(store, sink).with_session_store(Arc::new(shared))
}

/// A session another replica started, stored chunks 1 and 2 of, and parked at `detached_at`.
fn parked_elsewhere(detached_at: Timestamp) -> SessionSnapshot {
    let mut session =
        Session::declared(PCM, None, ConnectionId::random(), millis_before_t0(60_000));
    session.record(1, None, 3_200);
    session.record(2, None, 3_200);
    session.detach(detached_at);
    session.snapshot()
}

fn resume_of(snapshot: &SessionSnapshot, token: &str) -> ClientMessage {
    ClientMessage::SessionResume {
        session: snapshot.id,
        token: token.into(),
        last_acked_seq: snapshot.last_seq,
    }
}

/// Resumes `snapshot` from a shared store that must not be written to, on a new connection.
async fn resumed_without_saving(
    sink: MockAudioSink,
    snapshot: &SessionSnapshot,
) -> (ServerMessage, Connection) {
    let mut shared = sharing(snapshot.clone());
    shared.expect_save().never();
    let service = shared_service(accepting_store(), sink, shared);
    let mut connection = opened(&service).await;
    let reply = ask(
        &service,
        &mut connection,
        resume_of(snapshot, snapshot.token.reveal()),
    )
    .await;
    (reply, connection)
}

fn reporting_store(
    cluster: fn() -> Result<Option<ClusterView>, StoreError>,
) -> MockConnectionStore {
    let mut store = MockConnectionStore::new();
    store.expect_count().returning(|| Ok(2));
    store.expect_cluster().returning(cluster);
    store
}

fn three_replicas() -> ClusterView {
    ClusterView {
        replica: "replica-a".into(),
        replicas: 3,
        connections: 12,
        sessions: 5,
    }
}

#[tokio::test]
async fn a_declared_session_is_saved_in_the_shared_store_as_attached_when_it_starts() {
    let mut shared = MockSessionStore::new();
    let saved = saves(&mut shared);
    let service = shared_service(accepting_store(), accepting_sink(), shared);

    let (connection, info) = started(&service).await;

    let saved = saved.lock().unwrap();
    let [(snapshot, holder)] = saved.as_slice() else {
        panic!("{saved:?}")
    };
    assert_eq!(
        (snapshot.id, snapshot.recording, snapshot.connection),
        (info.session, info.recording, connection.id())
    );
    assert_eq!(
        (*holder, snapshot.detached_at, snapshot.token.reveal()),
        (SessionHolder::Attached, None, info.resume_token.as_str())
    );
}

#[tokio::test]
async fn a_session_the_shared_store_cannot_save_is_refused_and_its_recording_finished_as_failed() {
    // Arrange
    let mut sink = MockAudioSink::new();
    let opened_recordings = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&opened_recordings);
    sink.expect_open().times(1).returning(move |start| {
        log.lock().unwrap().push(start.recording);
        Ok(())
    });
    let closed = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&closed);
    sink.expect_close().times(1).returning(move |end| {
        log.lock()
            .unwrap()
            .push((end.session, end.recording, end.ending));
        Ok(())
    });
    let mut shared = MockSessionStore::new();
    shared.expect_save().returning(|_, _| Err(down()));
    let service = shared_service(accepting_store(), sink, shared);
    let mut connection = opened(&service).await;

    // Act
    let result = service
        .handle_client_message(&mut connection, pcm_start())
        .await;

    // Assert
    let Err(HandleClientMessageError::SessionStore {
        session,
        action: "saved in",
        source: StoreError::Unavailable(_),
    }) = result
    else {
        panic!("{result:?}")
    };
    assert_eq!(
        *closed.lock().unwrap(),
        [(
            session,
            opened_recordings.lock().unwrap()[0],
            SessionEnding::Failed
        )]
    );
    assert!(connection.session().is_none());
}

#[tokio::test]
async fn a_session_this_replica_does_not_have_is_resumed_from_the_shared_store_where_the_sink_left_it()
 {
    // Arrange: the other replica acknowledged chunks 3 and 4 after its last save.
    let snapshot = parked_elsewhere(millis_before_t0(1_000));
    let recording = snapshot.recording;
    let stored = StoredProgress {
        first_seq: Some(1),
        last_seq: Some(4),
        totals: AudioTotals {
            bytes: 12_800,
            chunks: 4,
        },
        gaps: Vec::new(),
    };
    let mut sink = MockAudioSink::new();
    sink.expect_can_continue_recordings().return_const(true);
    let continued = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&continued);
    let returned = stored.clone();
    sink.expect_continue_recording()
        .times(1)
        .returning(move |start| {
            log.lock()
                .unwrap()
                .push((start.recording, start.connection));
            Ok(returned.clone())
        });
    sink.expect_write().never();
    let mut shared = sharing(snapshot.clone());
    let saved = saves(&mut shared);
    let service = shared_service(accepting_store(), sink, shared);
    let mut connection = opened(&service).await;

    // Act
    let reply = ask(
        &service,
        &mut connection,
        resume_of(&snapshot, snapshot.token.reveal()),
    )
    .await;

    // Assert
    let ServerMessage::SessionResumed(info) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        (info.session, info.recording, info.last_seq, info.totals),
        (snapshot.id, recording, Some(4), stored.totals)
    );
    assert_eq!(*continued.lock().unwrap(), [(recording, connection.id())]);
    let saved = saved.lock().unwrap().clone();
    let [(resumed, holder)] = saved.as_slice() else {
        panic!("{saved:?}")
    };
    assert_eq!(
        (
            resumed.connection,
            resumed.last_seq,
            resumed.detached_at,
            *holder
        ),
        (connection.id(), Some(4), None, SessionHolder::Attached)
    );
    let ServerMessage::AudioReceived {
        progress: Some(progress),
        ..
    } = ask(&service, &mut connection, audio(b"dd", Some(4))).await
    else {
        panic!("an ack")
    };
    assert!(
        progress.duplicate,
        "a chunk the other replica stored is not written again"
    );
}

#[tokio::test]
async fn a_shared_resume_with_the_wrong_token_is_refused_before_the_sink_or_the_store_is_changed() {
    let snapshot = parked_elsewhere(millis_before_t0(1_000));
    let mut sink = MockAudioSink::new();
    sink.expect_continue_recording().never();
    let mut shared = sharing(snapshot.clone());
    shared.expect_save().never();
    let service = shared_service(accepting_store(), sink, shared);
    let mut connection = opened(&service).await;

    let reply = ask(
        &service,
        &mut connection,
        resume_of(&snapshot, "0123456789abcdef0123456789abcdef"),
    )
    .await;

    assert_eq!(
        reply,
        ServerMessage::Rejected(Rejection::WrongResumeToken(snapshot.id))
    );
    assert!(connection.session().is_none());
}

#[tokio::test]
async fn a_shared_resume_after_the_grace_period_is_refused_without_touching_the_sink() {
    let snapshot = parked_elsewhere(millis_before_t0(GRACE.as_millis() as i64 + 1));
    let mut sink = MockAudioSink::new();
    sink.expect_continue_recording().never();
    sink.expect_close().never();

    let (reply, _) = resumed_without_saving(sink, &snapshot).await;

    assert_eq!(
        reply,
        ServerMessage::Rejected(Rejection::SessionExpired(snapshot.id))
    );
}

#[tokio::test]
async fn a_shared_session_the_sink_cannot_continue_is_reported_and_not_saved() {
    let snapshot = parked_elsewhere(millis_before_t0(1_000));
    let mut sink = MockAudioSink::new();
    sink.expect_can_continue_recordings().return_const(false);
    sink.expect_continue_recording().never();
    let mut shared = sharing(snapshot.clone());
    shared.expect_save().never();
    let service = shared_service(accepting_store(), sink, shared);
    let mut connection = opened(&service).await;

    let result = service
        .handle_client_message(
            &mut connection,
            resume_of(&snapshot, snapshot.token.reveal()),
        )
        .await;

    assert!(
        matches!(
            result,
            Err(HandleClientMessageError::Recording {
                recording,
                action: "continued",
                source: SinkError::CannotContinue(_),
            }) if recording == snapshot.recording
        ),
        "{result:?}"
    );
    assert!(connection.session().is_none());
}

#[tokio::test]
async fn a_resume_of_a_session_neither_this_replica_nor_the_shared_store_has_is_refused() {
    let id = aimcs_domain::SessionId::random();
    let mut shared = MockSessionStore::new();
    shared
        .expect_load()
        .with(eq(id))
        .times(1)
        .returning(|_| Ok(None));
    let service = shared_service(accepting_store(), MockAudioSink::new(), shared);

    let reply = ask_to_resume(&service, id).await;

    assert_eq!(
        reply,
        ServerMessage::Rejected(Rejection::SessionNotFound(id))
    );
}

#[tokio::test]
async fn a_resume_the_shared_store_cannot_answer_is_reported() {
    let id = aimcs_domain::SessionId::random();
    let mut shared = MockSessionStore::new();
    shared.expect_load().returning(|_| Err(down()));
    let service = shared_service(accepting_store(), MockAudioSink::new(), shared);
    let mut connection = opened(&service).await;

    let result = service
        .handle_client_message(&mut connection, resume_with_any_token(id))
        .await;

    assert!(
        matches!(
            result,
            Err(HandleClientMessageError::SessionStore {
                session,
                action: "read from",
                ..
            }) if session == id
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_declared_session_whose_connection_closes_is_saved_in_the_shared_store_as_parked() {
    // Arrange: parking must not finish the recording.
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_close().never();
    let mut shared = MockSessionStore::new();
    let saved = saves(&mut shared);
    let (service, now) = service_with_clock(accepting_store(), sink);
    let service = service.with_session_store(Arc::new(shared));
    let (connection, info) = started(&service).await;
    let holder = connection.id();
    now.fetch_add(1_000, Ordering::SeqCst);

    // Act
    service
        .close_connection(connection, SessionEnding::ConnectionClosed)
        .await
        .unwrap();

    // Assert
    let saved = saved.lock().unwrap();
    let [_, (parked, SessionHolder::Parked)] = saved.as_slice() else {
        panic!("{saved:?}")
    };
    assert_eq!(
        (parked.id, parked.connection, parked.detached_at),
        (
            info.session,
            holder,
            Some(Timestamp::from_unix_millis(T0.unix_millis() + 1_000))
        )
    );
}

#[tokio::test]
async fn a_parked_session_the_shared_store_cannot_save_still_closes_and_stays_resumable_here() {
    let mut shared = MockSessionStore::new();
    shared.expect_save().returning(|_, holder| match holder {
        SessionHolder::Attached => Ok(()),
        SessionHolder::Parked => Err(down()),
    });
    shared.expect_load().never();
    let service = shared_service(accepting_store(), local_only_sink(), shared);
    let (first, info) = started(&service).await;

    let closed = service
        .close_connection(first, SessionEnding::ConnectionClosed)
        .await;
    let mut second = opened(&service).await;
    let reply = ask(&service, &mut second, resume(&info, &info.resume_token)).await;

    assert!(closed.is_ok(), "{closed:?}");
    assert!(
        matches!(reply, ServerMessage::SessionResumed(ref resumed) if resumed.session == info.session),
        "{reply:?}"
    );
}

#[tokio::test]
async fn ending_a_session_forgets_it_in_the_shared_store_for_the_connection_that_holds_it() {
    // Arrange: the session moved to a second connection, which is the holder the store knows.
    let mut shared = MockSessionStore::new();
    shared.expect_save().returning(|_, _| Ok(()));
    let forgotten = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&forgotten);
    shared
        .expect_forget()
        .times(1)
        .returning(move |id, holder| {
            log.lock().unwrap().push((id, holder));
            Ok(())
        });
    let service = shared_service(accepting_store(), local_only_sink(), shared);
    let (first, info) = started(&service).await;
    service
        .close_connection(first, SessionEnding::ConnectionClosed)
        .await
        .unwrap();
    let mut second = opened(&service).await;
    ask(&service, &mut second, resume(&info, &info.resume_token)).await;

    // Act
    let reply = ask(&service, &mut second, ClientMessage::SessionEnd).await;

    // Assert
    assert!(matches!(reply, ServerMessage::SessionEnded(_)), "{reply:?}");
    assert_eq!(*forgotten.lock().unwrap(), [(info.session, second.id())]);
}

#[tokio::test]
async fn a_write_superseded_by_another_replica_takes_the_session_off_the_connection() {
    // Arrange
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write()
        .times(1)
        .returning(|recording, _, _| Err(SinkError::Superseded(recording)));
    let service = shared_service(accepting_store(), sink, accepting_shared());
    let (mut connection, info) = started(&service).await;

    // Act
    let result = service
        .handle_client_message(&mut connection, audio(b"aa", Some(1)))
        .await;

    // Assert
    assert!(
        matches!(
            result,
            Err(HandleClientMessageError::Sink {
                recording,
                seq: 1,
                source: SinkError::Superseded(_),
            }) if recording == info.recording
        ),
        "{result:?}"
    );
    assert!(connection.session().is_none());
    assert_eq!(
        ask(&service, &mut connection, audio(b"bb", Some(2))).await,
        ServerMessage::Rejected(Rejection::NoActiveSession)
    );
}

#[tokio::test]
async fn a_session_superseded_by_another_replica_is_no_longer_held_here() {
    // Arrange: a resume must be looked up in the shared store, not refused as held here.
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write()
        .returning(|recording, _, _| Err(SinkError::Superseded(recording)));
    let mut shared = accepting_shared();
    shared.expect_load().times(1).returning(|_| Ok(None));
    let service = shared_service(accepting_store(), sink, shared);
    let (mut first, info) = started(&service).await;
    let superseded = service
        .handle_client_message(&mut first, audio(b"aa", Some(1)))
        .await;
    let mut second = opened(&service).await;

    // Act
    let result = service
        .handle_client_message(&mut second, resume(&info, &info.resume_token))
        .await;

    // Assert
    assert!(superseded.is_err());
    assert!(
        matches!(
            result,
            Ok(Stamped {
                value: ServerMessage::Rejected(Rejection::SessionNotFound(_)),
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn health_and_status_report_the_cluster_the_shared_store_sees() {
    let service = service(
        reporting_store(|| Ok(Some(three_replicas()))),
        MockAudioSink::new(),
    );

    let health = service.health().await.unwrap();
    let status = service.status().await.unwrap();

    assert_eq!(health.cluster, Some(ClusterReport::Seen(three_replicas())));
    assert_eq!(status.cluster, Some(ClusterReport::Seen(three_replicas())));
}

#[tokio::test]
async fn a_cluster_the_shared_store_cannot_reach_is_reported_while_this_replicas_counts_still_are()
{
    let service = service(reporting_store(|| Err(down())), MockAudioSink::new());

    let health = service.health().await;
    let status = service.status().await;

    let (Ok(health), Ok(status)) = (health, status) else {
        panic!("reports must not fail for an unreachable cluster")
    };
    assert_eq!(
        (health.connections, health.cluster),
        (2, Some(ClusterReport::Unreachable))
    );
    assert_eq!(
        (status.active_connections, status.cluster),
        (2, Some(ClusterReport::Unreachable))
    );
}

#[tokio::test]
async fn a_store_of_this_process_alone_reports_no_cluster() {
    let service = service(reporting_store(|| Ok(None)), MockAudioSink::new());

    let health = service.health().await.unwrap();
    let status = service.status().await.unwrap();

    assert_eq!((health.cluster, status.cluster), (None, None));
}

#[tokio::test]
async fn the_service_is_ready_when_the_store_and_the_sink_answer() {
    let mut sink = MockAudioSink::new();
    sink.expect_check().times(1).returning(|| Ok(()));
    let service = service(reporting_store(|| Ok(Some(three_replicas()))), sink);

    let ready = service.readiness().await;

    assert!(ready.is_ok(), "{ready:?}");
}

#[tokio::test]
async fn the_service_is_not_ready_when_the_sink_cannot_take_audio() {
    let mut sink = MockAudioSink::new();
    sink.expect_check().returning(|| Err(unavailable()));
    let service = service(reporting_store(|| Ok(None)), sink);

    let ready = service.readiness().await;

    assert!(
        matches!(ready, Err(ReadinessError::Sink(SinkError::Unavailable(_)))),
        "{ready:?}"
    );
}

#[tokio::test]
async fn the_service_is_not_ready_when_the_shared_store_does_not_answer() {
    let mut sink = MockAudioSink::new();
    sink.expect_check().returning(|| Ok(()));
    let service = service(reporting_store(|| Err(down())), sink);

    let ready = service.readiness().await;

    assert!(
        matches!(
            ready,
            Err(ReadinessError::Store(StoreError::Unavailable(_)))
        ),
        "{ready:?}"
    );
}

#[tokio::test]
async fn a_session_resumed_where_it_was_parked_takes_its_recording_back_from_any_other_replica() {
    let mut shared = MockSessionStore::new();
    shared.expect_save().returning(|_, _| Ok(()));
    let mut sink = accepting_sink();
    sink.expect_continue_recording().times(1).returning(|_| {
        Ok(StoredProgress {
            first_seq: Some(1),
            last_seq: Some(7),
            totals: AudioTotals {
                bytes: 70,
                chunks: 7,
            },
            gaps: Vec::new(),
        })
    });
    let service = shared_service(accepting_store(), sink, shared);
    let (first, info) = started(&service).await;
    service
        .close_connection(first, SessionEnding::ConnectionClosed)
        .await
        .unwrap();
    let mut second = opened(&service).await;

    let reply = ask(&service, &mut second, resume(&info, &info.resume_token)).await;

    assert!(
        matches!(reply, ServerMessage::SessionResumed(ref resumed) if resumed.last_seq == Some(7)),
        "another replica stored up to 7 meanwhile: {reply:?}"
    );
}

#[tokio::test]
async fn a_parked_session_whose_recording_cannot_be_taken_back_stays_parked_for_a_retry() {
    let mut shared = MockSessionStore::new();
    shared.expect_save().returning(|_, _| Ok(()));
    let mut sink = accepting_sink();
    let mut calls = 0;
    sink.expect_continue_recording()
        .times(2)
        .returning(move |_| {
            calls += 1;
            match calls {
                1 => Err(unavailable()),
                _ => Ok(StoredProgress::default()),
            }
        });
    let service = shared_service(accepting_store(), sink, shared);
    let (first, info) = started(&service).await;
    service
        .close_connection(first, SessionEnding::ConnectionClosed)
        .await
        .unwrap();
    let mut second = opened(&service).await;

    let failed = service
        .handle_client_message(&mut second, resume(&info, &info.resume_token))
        .await;
    let retried = ask(&service, &mut second, resume(&info, &info.resume_token)).await;

    assert!(
        matches!(
            failed,
            Err(HandleClientMessageError::Recording {
                action: "continued",
                ..
            })
        ),
        "{failed:?}"
    );
    assert!(
        matches!(retried, ServerMessage::SessionResumed(_)),
        "{retried:?}"
    );
}

#[tokio::test]
async fn a_session_another_replica_finished_is_not_found_when_resumed() {
    let snapshot = parked_elsewhere(millis_before_t0(1_000));
    let mut sink = MockAudioSink::new();
    sink.expect_can_continue_recordings().return_const(true);
    sink.expect_continue_recording()
        .times(1)
        .returning(|start| Err(SinkError::Finished(start.recording)));

    let (reply, connection) = resumed_without_saving(sink, &snapshot).await;

    assert_eq!(
        reply,
        ServerMessage::Rejected(Rejection::SessionNotFound(snapshot.id))
    );
    assert!(connection.session().is_none());
}

#[tokio::test]
async fn a_session_lost_to_another_replica_is_no_longer_counted_as_held_here() {
    let mut shared = MockSessionStore::new();
    shared.expect_save().returning(|_, _| Ok(()));
    let released = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&released);
    shared
        .expect_forget()
        .times(1)
        .returning(move |id, holder| {
            log.lock().unwrap().push((id, holder));
            Ok(())
        });
    let mut sink = MockAudioSink::new();
    sink.expect_open().returning(|_| Ok(()));
    sink.expect_write()
        .returning(|recording, _, _| Err(SinkError::Superseded(recording)));
    let service = shared_service(accepting_store(), sink, shared);
    let (mut connection, info) = started(&service).await;

    let failed = service
        .handle_client_message(&mut connection, audio(b"late", Some(1)))
        .await;

    assert!(
        matches!(
            failed,
            Err(HandleClientMessageError::Sink {
                source: SinkError::Superseded(_),
                ..
            })
        ),
        "{failed:?}"
    );
    assert_eq!(
        *released.lock().unwrap(),
        [(info.session, connection.id())],
        "released for the connection that lost it; the store keeps the new holder's state"
    );
}
