//! Use-case tests: every port is a mockall mock, no socket is opened, time is pinned.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aimcs_domain::ports::{MockAudioSink, MockClock, MockConnectionStore, SinkError, StoreError};
use aimcs_domain::{
    AudioChunk, AudioMessage, AudioPayload, ChatRequest, ClientMessage, ClientValue, ConnectionId,
    Rejection, ServerMessage, Stamped, Timestamp,
};
use mockall::predicate::{always, eq};

use super::*;

const T0: Timestamp = Timestamp::from_unix_millis(1_750_998_011_123);

fn clock_at(now: Timestamp) -> MockClock {
    let mut clock = MockClock::new();
    clock.expect_now().return_const(now);
    clock
        .expect_monotonic()
        .return_const(Duration::from_secs(100));
    clock
}

fn service(store: MockConnectionStore, sink: MockAudioSink) -> IngestService {
    IngestService::new(
        Arc::new(store),
        Arc::new(clock_at(T0)),
        Arc::new(sink),
        "1.0.0",
    )
}

fn accepting_store() -> MockConnectionStore {
    let mut store = MockConnectionStore::new();
    store.expect_register().returning(|_| Ok(()));
    store
}

fn unavailable() -> Box<dyn std::error::Error + Send + Sync> {
    "connection refused".into()
}

fn audio(bytes: &'static [u8]) -> ClientMessage {
    ClientMessage::Audio(AudioMessage {
        encoded_size: bytes.len().div_ceil(3) * 4,
        payload: AudioPayload::Chunk(AudioChunk::new(bytes).unwrap()),
    })
}

async fn opened(service: &IngestService) -> Connection {
    service
        .open_connection(NewConnection::default())
        .await
        .unwrap()
        .0
}

/// A connection whose implicit audio session has received one chunk.
async fn opened_with_audio(service: &IngestService) -> Connection {
    let mut connection = opened(service).await;
    service
        .handle_client_message(&mut connection, audio(b"abc"))
        .await
        .unwrap();
    connection
}

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
async fn every_connection_gets_a_distinct_id() {
    let mut store = MockConnectionStore::new();
    store.expect_register().times(50).returning(|_| Ok(()));
    let service = service(store, MockAudioSink::new());

    let mut ids = std::collections::HashSet::new();
    for _ in 0..50 {
        ids.insert(opened(&service).await.id());
    }

    assert_eq!(ids.len(), 50);
}

#[tokio::test]
async fn a_connection_the_store_cannot_register_is_refused() {
    let mut store = MockConnectionStore::new();
    store
        .expect_register()
        .returning(|_| Err(StoreError::Unavailable(unavailable())));
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
        "expected a store error, got {result:?}"
    );
}

#[tokio::test]
async fn a_test_message_is_answered_with_its_original_message() {
    let service = service(accepting_store(), MockAudioSink::new());
    let mut connection = opened(&service).await;
    let original = Some(ClientValue::from_wire("\"Hello from frontend!\""));

    let reply = service
        .handle_client_message(
            &mut connection,
            ClientMessage::Test {
                message: original.clone(),
            },
        )
        .await
        .unwrap();

    assert_eq!(
        reply,
        Stamped {
            at: T0,
            value: ServerMessage::TestResponse {
                original_message: original
            }
        }
    );
}

#[tokio::test]
async fn a_ping_is_answered_with_a_pong() {
    let service = service(accepting_store(), MockAudioSink::new());
    let mut connection = opened(&service).await;

    let reply = service
        .handle_client_message(&mut connection, ClientMessage::Ping)
        .await
        .unwrap();

    assert_eq!(
        reply,
        Stamped {
            at: T0,
            value: ServerMessage::Pong
        }
    );
}

#[tokio::test]
async fn an_unknown_type_is_echoed() {
    let service = service(accepting_store(), MockAudioSink::new());
    let mut connection = opened(&service).await;
    let original_type = Some(ClientValue::from_wire("\"chat\""));
    let message = ClientMessage::Unknown {
        original_type: original_type.clone(),
    };

    let reply = service
        .handle_client_message(&mut connection, message)
        .await
        .unwrap();

    assert_eq!(reply.value, ServerMessage::Echo { original_type });
}

#[tokio::test]
async fn an_undecodable_frame_is_rejected_and_nothing_reaches_the_sink() {
    let mut sink = MockAudioSink::new();
    sink.expect_write().never();
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;
    let message = ClientMessage::Undecodable {
        reason: "not JSON".into(),
    };

    let reply = service
        .handle_client_message(&mut connection, message)
        .await
        .unwrap();

    assert_eq!(
        reply.value,
        ServerMessage::Rejected(Rejection::MalformedMessage("not JSON".into()))
    );
}

#[tokio::test]
async fn audio_goes_to_the_sink_before_it_is_acknowledged() {
    // Arrange
    let mut sink = MockAudioSink::new();
    sink.expect_write()
        .with(always(), eq(AudioChunk::new(&b"\x01\x02\x03"[..]).unwrap()))
        .times(1)
        .returning(|_, _| Ok(()));
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;

    // Act
    let reply = service
        .handle_client_message(&mut connection, audio(b"\x01\x02\x03"))
        .await
        .unwrap();

    // Assert
    assert_eq!(
        reply.value,
        ServerMessage::AudioReceived {
            encoded_size: 4,
            decoded_size: 3
        }
    );
    assert_eq!(
        (
            connection.stats().audio_chunks,
            connection.stats().audio_bytes
        ),
        (1, 3)
    );
}

#[tokio::test]
async fn audio_of_one_connection_is_written_under_one_session() {
    let mut sink = MockAudioSink::new();
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&sessions);
    sink.expect_write().times(3).returning(move |session, _| {
        seen.lock().unwrap().push(session);
        Ok(())
    });
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;

    for _ in 0..3 {
        service
            .handle_client_message(&mut connection, audio(b"ab"))
            .await
            .unwrap();
    }

    let sessions = sessions.lock().unwrap();
    assert!(
        sessions.iter().all(|s| Some(*s) == connection.session()),
        "{sessions:?}"
    );
}

#[tokio::test]
async fn audio_the_sink_refuses_is_not_acknowledged() {
    let mut sink = MockAudioSink::new();
    sink.expect_write()
        .returning(|_, _| Err(SinkError::Unavailable(unavailable())));
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;

    let result = service
        .handle_client_message(&mut connection, audio(b"abc"))
        .await;

    assert!(
        matches!(
            result,
            Err(HandleClientMessageError::Sink {
                source: SinkError::Unavailable(_),
                ..
            })
        ),
        "expected a sink error, got {result:?}"
    );
    assert_eq!(
        connection.stats().audio_chunks,
        0,
        "a refused chunk is not counted as stored"
    );
}

#[tokio::test]
async fn audio_without_data_is_acknowledged_without_touching_the_sink() {
    let mut sink = MockAudioSink::new();
    sink.expect_write().never();
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;
    let empty = ClientMessage::Audio(AudioMessage {
        encoded_size: 0,
        payload: AudioPayload::Empty,
    });

    let reply = service
        .handle_client_message(&mut connection, empty)
        .await
        .unwrap();

    assert_eq!(
        reply.value,
        ServerMessage::AudioReceived {
            encoded_size: 0,
            decoded_size: 0
        }
    );
}

#[tokio::test]
async fn invalid_audio_is_rejected_without_touching_the_sink() {
    let mut sink = MockAudioSink::new();
    sink.expect_write().never();
    let service = service(accepting_store(), sink);
    let mut connection = opened(&service).await;
    let invalid = ClientMessage::Audio(AudioMessage {
        encoded_size: 4,
        payload: AudioPayload::Invalid("invalid base64".into()),
    });

    let reply = service
        .handle_client_message(&mut connection, invalid)
        .await
        .unwrap();

    assert_eq!(
        reply.value,
        ServerMessage::Rejected(Rejection::InvalidAudio("invalid base64".into()))
    );
}

#[tokio::test]
async fn closing_a_connection_flushes_its_audio_session_and_forgets_it() {
    // Arrange
    let mut store = accepting_store();
    let removed = Arc::new(Mutex::new(None::<ConnectionId>));
    let seen = Arc::clone(&removed);
    store.expect_remove().times(1).returning(move |id| {
        *seen.lock().unwrap() = Some(id);
        Ok(())
    });
    let mut sink = MockAudioSink::new();
    sink.expect_write().returning(|_, _| Ok(()));
    let service_sink_close = Arc::new(Mutex::new(None));
    let closed = Arc::clone(&service_sink_close);
    sink.expect_close().times(1).returning(move |session| {
        *closed.lock().unwrap() = Some(session);
        Ok(())
    });
    let service = service(store, sink);
    let connection = opened_with_audio(&service).await;
    let (id, session) = (connection.id(), connection.session());

    // Act
    service.close_connection(connection).await.unwrap();

    // Assert
    assert_eq!(
        (
            *removed.lock().unwrap(),
            *service_sink_close.lock().unwrap()
        ),
        (Some(id), session)
    );
}

#[tokio::test]
async fn closing_a_connection_without_audio_does_not_touch_the_sink() {
    let mut store = accepting_store();
    store.expect_remove().times(1).returning(|_| Ok(()));
    let mut sink = MockAudioSink::new();
    sink.expect_close().never();
    let service = service(store, sink);
    let connection = opened(&service).await;

    service.close_connection(connection).await.unwrap();
}

#[tokio::test]
async fn a_sink_that_cannot_flush_still_lets_the_connection_be_forgotten() {
    let mut store = accepting_store();
    store.expect_remove().times(1).returning(|_| Ok(()));
    let mut sink = MockAudioSink::new();
    sink.expect_write().returning(|_, _| Ok(()));
    sink.expect_close()
        .returning(|_| Err(SinkError::Unavailable(unavailable())));
    let service = service(store, sink);
    let connection = opened_with_audio(&service).await;

    let result = service.close_connection(connection).await;

    assert!(
        matches!(result, Err(CloseConnectionError::Sink { .. })),
        "got {result:?}"
    );
}

#[tokio::test]
async fn a_store_that_cannot_forget_a_connection_is_reported() {
    let mut store = accepting_store();
    store
        .expect_remove()
        .returning(|id| Err(StoreError::UnknownConnection(id)));
    let service = service(store, MockAudioSink::new());
    let connection = opened(&service).await;

    let result = service.close_connection(connection).await;

    assert!(
        matches!(
            result,
            Err(CloseConnectionError::Store(StoreError::UnknownConnection(
                _
            )))
        ),
        "got {result:?}"
    );
}

#[tokio::test]
async fn when_both_close_steps_fail_the_sink_failure_is_reported() {
    let mut store = accepting_store();
    store
        .expect_remove()
        .times(1)
        .returning(|_| Err(StoreError::Unavailable(unavailable())));
    let mut sink = MockAudioSink::new();
    sink.expect_write().returning(|_, _| Ok(()));
    sink.expect_close()
        .times(1)
        .returning(|_| Err(SinkError::Unavailable(unavailable())));
    let service = service(store, sink);
    let connection = opened_with_audio(&service).await;

    let result = service.close_connection(connection).await;

    assert!(
        matches!(result, Err(CloseConnectionError::Sink { .. })),
        "got {result:?}"
    );
}

#[tokio::test]
async fn health_reports_uptime_connections_and_version() {
    // Arrange: the service starts at monotonic 100 s and is asked at 112.5 s.
    let mut store = MockConnectionStore::new();
    store.expect_count().times(1).returning(|| Ok(7));
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
        "1.0.0",
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
            version: "1.0.0"
        }
    );
}

#[tokio::test]
async fn health_fails_when_connections_cannot_be_counted() {
    let mut store = MockConnectionStore::new();
    store
        .expect_count()
        .returning(|| Err(StoreError::Unavailable(unavailable())));
    let service = service(store, MockAudioSink::new());

    let result = service.health().await;

    assert!(
        matches!(result, Err(ReportError::Store(StoreError::Unavailable(_)))),
        "got {result:?}"
    );
}

#[tokio::test]
async fn status_reports_active_connections() {
    let mut store = MockConnectionStore::new();
    store.expect_count().times(1).returning(|| Ok(3));
    let service = service(store, MockAudioSink::new());

    let status = service.status().await.unwrap();

    assert_eq!(
        status,
        StatusReport {
            at: T0,
            active_connections: 3
        }
    );
}

#[tokio::test]
async fn status_fails_when_connections_cannot_be_counted() {
    let mut store = MockConnectionStore::new();
    store
        .expect_count()
        .returning(|| Err(StoreError::Unavailable(unavailable())));
    let service = service(store, MockAudioSink::new());

    let result = service.status().await;

    assert!(
        matches!(result, Err(ReportError::Store(_))),
        "got {result:?}"
    );
}

#[tokio::test]
async fn chat_echoes_the_message_with_its_context() {
    let service = service(MockConnectionStore::new(), MockAudioSink::new());
    let context = Some(ClientValue::from_wire(r#"{"test":true}"#));
    let request = ChatRequest::new(Some("Hello!".into()), context.clone()).unwrap();

    let reply = service.chat(request);

    assert_eq!(
        (reply.at, reply.value.message.as_str(), reply.value.context),
        (T0, "Echo: Hello!", context)
    );
}

#[tokio::test]
async fn chat_replies_get_distinct_ids() {
    let service = service(MockConnectionStore::new(), MockAudioSink::new());
    let ask = || ChatRequest::new(Some("hi".into()), None).unwrap();

    assert_ne!(service.chat(ask()).value.id, service.chat(ask()).value.id);
}
