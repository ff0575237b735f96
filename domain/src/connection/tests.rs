//! The rules of one connection, message by message.

use super::*;
use crate::format::{Container, Encoding, FormatRequest, SampleEncoding};
use crate::message::ClientValue;
use crate::session::AudioTotals;

const T0: Timestamp = Timestamp::from_unix_millis(1_000_000);

fn connection() -> Connection {
    Connection::new(ConnectionInfo {
        id: ConnectionId::random(),
        opened_at: T0,
        peer: None,
        user_agent: None,
    })
}

fn audio(bytes: &[u8], seq: Option<u64>) -> ClientMessage {
    ClientMessage::Audio(AudioMessage {
        encoded_size: bytes.len().div_ceil(3) * 4,
        payload: AudioPayload::Chunk(AudioChunk::new(bytes.to_vec()).unwrap()),
        seq,
    })
}

fn pcm_start() -> ClientMessage {
    ClientMessage::SessionStart {
        format: FormatRequest {
            encoding: Encoding::Samples(SampleEncoding::PcmS16le),
            container: None,
            sample_rate: Some(16_000),
            channels: None,
        },
        metadata: None,
    }
}

fn rejected(rejection: Rejection) -> String {
    format!("{:?}", Decision::Reply(ServerMessage::Rejected(rejection)))
}

/// Starts a declared session and stores nothing yet.
fn started() -> Connection {
    let mut connection = connection();
    let Decision::Start(session) = connection.decide(pcm_start(), T0) else {
        panic!("session_start must start a session");
    };
    connection.adopt(session);
    connection
}

/// Carries out a store decision as the application would, returning the ack.
fn store(connection: &mut Connection, message: ClientMessage) -> ServerMessage {
    match connection.decide(message, T0) {
        Decision::Store(store) => {
            if store.open.is_some() {
                connection.recording_opened();
            }
            connection.stored(
                store.seq,
                store.gap,
                store.chunk.len(),
                store.encoded_size,
                store.report_progress,
            )
        }
        Decision::Reply(reply) => reply,
        other => panic!("expected a store or a reply, got {other:?}"),
    }
}

#[test]
fn a_test_message_gets_its_message_back() {
    let original = Some(ClientValue::from_wire("\"Hello from frontend!\""));
    let decision = connection().decide(
        ClientMessage::Test {
            message: original.clone(),
        },
        T0,
    );
    assert_eq!(
        format!("{decision:?}"),
        format!(
            "{:?}",
            Decision::Reply(ServerMessage::TestResponse {
                original_message: original
            })
        )
    );
}

#[test]
fn a_ping_gets_a_pong_and_an_unknown_type_an_echo() {
    assert!(matches!(
        connection().decide(ClientMessage::Ping, T0),
        Decision::Reply(ServerMessage::Pong)
    ));
    let original_type = Some(ClientValue::from_wire("\"TEST\""));
    assert!(matches!(
        connection().decide(ClientMessage::Unknown { original_type }, T0),
        Decision::Reply(ServerMessage::Echo {
            original_type: Some(_)
        })
    ));
}

#[test]
fn an_undecodable_frame_is_rejected_as_malformed() {
    let decision = connection().decide(
        ClientMessage::Undecodable {
            reason: "bad".into(),
        },
        T0,
    );
    assert_eq!(
        format!("{decision:?}"),
        rejected(Rejection::MalformedMessage("bad".into()))
    );
}

#[test]
fn the_first_audio_of_an_original_client_opens_an_implicit_session() {
    let mut connection = connection();
    let Decision::Store(store) = connection.decide(audio(&[1, 2, 3, 4], None), T0) else {
        panic!("audio with data must be stored");
    };
    let start = store.open.expect("the first chunk opens the recording");
    assert_eq!(
        (start.format, store.seq, store.report_progress),
        (AudioFormat::Undeclared, 1, false)
    );
    assert_eq!(store.chunk.as_bytes(), &[1, 2, 3, 4]);
}

#[test]
fn an_original_clients_ack_is_the_originals() {
    let mut connection = connection();
    let ack = store(&mut connection, audio(&[1, 2, 3, 4], None));
    assert_eq!(
        ack,
        ServerMessage::AudioReceived {
            encoded_size: 8,
            decoded_size: 4,
            progress: None
        }
    );
    let Decision::Store(second) = connection.decide(audio(&[5], None), T0) else {
        panic!("stored")
    };
    assert!(second.open.is_none(), "the recording is opened once");
}

#[test]
fn audio_without_data_is_acknowledged_with_nothing_stored() {
    let mut connection = connection();
    let empty = ClientMessage::Audio(AudioMessage {
        encoded_size: 0,
        payload: AudioPayload::Empty,
        seq: None,
    });
    assert_eq!(
        format!("{:?}", connection.decide(empty, T0)),
        format!(
            "{:?}",
            Decision::Reply(ServerMessage::AudioReceived {
                encoded_size: 0,
                decoded_size: 0,
                progress: None
            })
        )
    );
    assert!(connection.session().is_none(), "no audio, so no session");
}

#[test]
fn invalid_audio_is_rejected_and_not_stored() {
    let invalid = ClientMessage::Audio(AudioMessage {
        encoded_size: 5,
        payload: AudioPayload::Invalid("invalid base64".into()),
        seq: None,
    });
    assert_eq!(
        format!("{:?}", connection().decide(invalid, T0)),
        rejected(Rejection::InvalidAudio("invalid base64".into()))
    );
}

#[test]
fn a_declared_session_acknowledges_with_progress() {
    let mut connection = started();
    let ack = store(&mut connection, audio(&[0; 3_200], Some(7)));
    let ServerMessage::AudioReceived {
        progress: Some(progress),
        ..
    } = ack
    else {
        panic!("progress expected: {ack:?}")
    };
    assert_eq!(progress.seq, 7);
    assert_eq!(
        progress.totals,
        AudioTotals {
            bytes: 3_200,
            chunks: 1
        }
    );
    assert_eq!(
        progress.duration,
        Some(std::time::Duration::from_millis(100))
    );
}

#[test]
fn a_duplicate_is_acknowledged_but_not_stored_again() {
    let mut connection = started();
    store(&mut connection, audio(&[1; 10], Some(1)));
    let decision = connection.decide(audio(&[1; 10], Some(1)), T0);
    let Decision::Reply(ServerMessage::AudioReceived {
        progress: Some(progress),
        ..
    }) = decision
    else {
        panic!("a duplicate is answered directly: {decision:?}");
    };
    assert!(progress.duplicate);
    assert_eq!(progress.totals.chunks, 1);
}

#[test]
fn a_gap_in_the_numbers_is_reported_in_the_ack() {
    let mut connection = started();
    store(&mut connection, audio(&[1], Some(1)));
    let ack = store(&mut connection, audio(&[1], Some(5)));
    let ServerMessage::AudioReceived {
        progress: Some(progress),
        ..
    } = ack
    else {
        panic!("{ack:?}")
    };
    assert_eq!(progress.gap, Some(SeqGap { from: 2, to: 4 }));
}

#[test]
fn binary_frames_are_audio_once_the_connection_speaks_sessions() {
    let mut connection = connection();
    assert!(!connection.binary_frames_are_audio());
    let Decision::Start(session) = connection.decide(pcm_start(), T0) else {
        panic!("started")
    };
    connection.adopt(session);
    assert!(connection.binary_frames_are_audio());
    let ack = store(
        &mut connection,
        ClientMessage::BinaryAudio(AudioChunk::new(vec![0; 320]).unwrap()),
    );
    assert!(matches!(
        ack,
        ServerMessage::AudioReceived {
            encoded_size: 320,
            decoded_size: 320,
            progress: Some(_)
        }
    ));
}

#[test]
fn a_second_session_start_is_refused_while_one_is_active() {
    let mut connection = started();
    assert_eq!(
        format!("{:?}", connection.decide(pcm_start(), T0)),
        rejected(Rejection::SessionAlreadyActive)
    );
}

#[test]
fn an_invalid_format_is_refused_with_the_reason() {
    let opus_without_container = ClientMessage::SessionStart {
        format: FormatRequest {
            encoding: Encoding::Opus,
            container: None,
            sample_rate: None,
            channels: None,
        },
        metadata: None,
    };
    assert_eq!(
        format!("{:?}", connection().decide(opus_without_container, T0)),
        rejected(Rejection::InvalidFormat(
            "opus needs a container: \"webm\" or \"ogg\"".into()
        ))
    );
}

#[test]
fn ending_keeps_the_session_until_it_is_taken_then_a_second_end_finds_none() {
    let mut connection = started();
    assert!(matches!(
        connection.decide(ClientMessage::SessionEnd, T0),
        Decision::End
    ));
    assert!(
        connection.session().is_some(),
        "still active until the recording is finished"
    );
    connection.take_session();
    assert_eq!(
        format!("{:?}", connection.decide(ClientMessage::SessionEnd, T0)),
        rejected(Rejection::NoActiveSession)
    );
}

#[test]
fn a_refused_session_start_leaves_the_original_dialect() {
    let mut connection = connection();
    let bad = ClientMessage::SessionStart {
        format: FormatRequest {
            encoding: Encoding::Opus,
            container: None,
            sample_rate: None,
            channels: None,
        },
        metadata: None,
    };
    connection.decide(bad, T0);
    assert!(!connection.binary_frames_are_audio());
}

#[test]
fn a_late_chunk_is_refused_and_never_acknowledged() {
    let mut connection = started();
    store(&mut connection, audio(&[1], Some(1)));
    store(&mut connection, audio(&[3], Some(3)));
    assert_eq!(
        format!("{:?}", connection.decide(audio(&[2], Some(2)), T0)),
        rejected(Rejection::LateChunk(2))
    );
}

#[test]
fn a_numbered_empty_audio_message_gets_its_number_back() {
    let mut connection = started();
    let empty = ClientMessage::Audio(AudioMessage {
        encoded_size: 0,
        payload: AudioPayload::Empty,
        seq: Some(4),
    });
    let Decision::Reply(ServerMessage::AudioReceived {
        progress: Some(progress),
        ..
    }) = connection.decide(empty, T0)
    else {
        panic!("an ack with progress")
    };
    assert_eq!((progress.seq, progress.totals.chunks), (4, 0));
}

#[test]
fn audio_after_the_end_of_a_declared_session_needs_a_new_session() {
    let mut connection = started();
    connection.decide(ClientMessage::SessionEnd, T0);
    connection.take_session();
    assert_eq!(
        format!("{:?}", connection.decide(audio(&[1], Some(2)), T0)),
        rejected(Rejection::NoActiveSession)
    );
    let binary = ClientMessage::BinaryAudio(AudioChunk::new(vec![1]).unwrap());
    assert_eq!(
        format!("{:?}", connection.decide(binary, T0)),
        rejected(Rejection::NoActiveSession)
    );
}

#[test]
fn a_commit_needs_a_session_and_reports_what_is_stored() {
    assert_eq!(
        format!("{:?}", connection().decide(ClientMessage::AudioCommit, T0)),
        rejected(Rejection::NoActiveSession)
    );
    let mut connection = started();
    store(&mut connection, audio(&[1; 4], Some(3)));
    assert!(matches!(
        connection.decide(ClientMessage::AudioCommit, T0),
        Decision::Commit { .. }
    ));
    assert_eq!(
        connection.committed(),
        ServerMessage::AudioCommitted {
            last_seq: Some(3),
            totals: AudioTotals {
                bytes: 4,
                chunks: 1
            }
        }
    );
}

#[test]
fn audio_clear_is_refused_because_a_recording_keeps_what_it_acknowledged() {
    assert!(matches!(
        connection().decide(ClientMessage::AudioClear, T0),
        Decision::Reply(ServerMessage::Rejected(Rejection::NotSupported(_)))
    ));
}

#[test]
fn a_resume_is_refused_while_a_session_is_active_and_asked_for_otherwise() {
    let resume = || ClientMessage::SessionResume {
        session: SessionId::random(),
        token: "t".into(),
        last_acked_seq: None,
    };
    assert_eq!(
        format!("{:?}", started().decide(resume(), T0)),
        rejected(Rejection::SessionAlreadyActive)
    );
    assert!(matches!(
        connection().decide(resume(), T0),
        Decision::Resume { .. }
    ));
}

#[test]
fn totals_count_messages_and_stored_audio() {
    let mut connection = connection();
    connection.decide(ClientMessage::Ping, T0);
    store(&mut connection, audio(&[1, 2], None));
    assert_eq!(
        connection.stats(),
        ConnectionStats {
            messages: 2,
            audio_chunks: 1,
            audio_bytes: 2
        }
    );
}

#[test]
fn an_opus_session_has_no_duration() {
    let mut connection = connection();
    let start = ClientMessage::SessionStart {
        format: FormatRequest {
            encoding: Encoding::Opus,
            container: Some(Container::Webm),
            sample_rate: None,
            channels: None,
        },
        metadata: None,
    };
    let Decision::Start(session) = connection.decide(start, T0) else {
        panic!("started")
    };
    connection.adopt(session);
    let ack = store(&mut connection, audio(&[1; 100], None));
    let ServerMessage::AudioReceived {
        progress: Some(progress),
        ..
    } = ack
    else {
        panic!("{ack:?}")
    };
    assert_eq!(progress.duration, None);
}
