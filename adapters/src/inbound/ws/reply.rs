//! Server messages on the wire: one JSON object per text frame, with the original service's
//! `type` names, field names and field order, and a `timestamp` on every message. Written by
//! hand into a reusable buffer: these are on every message's path and their shape is fixed.

use std::fmt::Write as _;

use aimcs_domain::{
    AudioFormat, AudioProgress, AudioTotals, ClientValue, ServerMessage, SessionId, SessionInfo,
    SessionSummary, Stamped, Timestamp,
};

use super::WsSettings;
use crate::inbound::errors::{ErrorCode, rejection_code};
use crate::wire::js::write_json_string;
use crate::wire::timestamp::write_iso;

/// The `message` of every `error`, kept from the original so clients matching on it still do.
const FAILED_TO_PROCESS: &str = "Failed to process message";

/// Appends `message` as one JSON object to `out`; the connection's `limits` are announced in
/// the greeting, and the message size in a session's start.
pub(crate) fn encode(message: &Stamped<ServerMessage>, limits: &WsSettings, out: &mut String) {
    let max_message_bytes = limits.max_message_bytes;
    match &message.value {
        ServerMessage::Connected { connection_id } => {
            out.push_str(r#"{"type":"connection","message":"WebSocket connected successfully","connectionId":""#);
            // Hyphenated UUIDs need no escaping.
            let _ = write!(out, "{connection_id}");
            out.push('"');
            push_limits(out, limits);
        }
        ServerMessage::TestResponse { original_message } => {
            out.push_str(
                r#"{"type":"test_response","message":"Test message received successfully""#,
            );
            push_value(out, "originalMessage", original_message.as_ref());
        }
        ServerMessage::AudioReceived {
            encoded_size,
            decoded_size,
            progress,
        } => {
            out.push_str(r#"{"type":"audio_received","message":"Audio data received","dataSize":"#);
            let _ = write!(out, "{encoded_size}");
            push_timestamp(out, message.at);
            let _ = write!(out, r#","decodedSize":{decoded_size}"#);
            if let Some(progress) = progress {
                push_progress(out, progress);
            }
            out.push('}');
            return;
        }
        ServerMessage::SessionStarted(info) => {
            out.push_str(r#"{"type":"session_started","message":"Session started""#);
            push_session(out, info, max_message_bytes);
        }
        ServerMessage::SessionResumed(info) => {
            out.push_str(r#"{"type":"session_resumed","message":"Session resumed""#);
            push_session(out, info, max_message_bytes);
        }
        ServerMessage::AudioCommitted { last_seq, totals } => {
            out.push_str(r#"{"type":"audio_committed","message":"Audio committed""#);
            push_last_seq(out, *last_seq);
            push_totals(out, *totals);
        }
        ServerMessage::SessionEnded(summary) => {
            out.push_str(r#"{"type":"session_ended","message":"Session ended""#);
            push_summary(out, summary);
        }
        ServerMessage::Pong => out.push_str(r#"{"type":"pong""#),
        ServerMessage::Echo { original_type } => {
            out.push_str(r#"{"type":"echo""#);
            push_value(out, "originalType", original_type.as_ref());
            out.push_str(r#","message":"Unknown message type received""#);
        }
        ServerMessage::Rejected(rejection) => {
            encode_error(
                rejection_code(rejection),
                &rejection.to_string(),
                message.at,
                out,
            );
            return;
        }
    }
    push_timestamp(out, message.at);
    out.push('}');
}

/// Every `type` the server sends, as metric labels.
pub(crate) const SERVER_KINDS: [&str; 11] = [
    "connection",
    "test_response",
    "audio_received",
    "session_started",
    "session_resumed",
    "audio_committed",
    "session_ended",
    "pong",
    "echo",
    "error",
    "going_away",
];

/// The `type` of a server message, as a metric label.
pub(crate) fn server_kind(message: &ServerMessage) -> &'static str {
    match message {
        ServerMessage::Connected { .. } => "connection",
        ServerMessage::TestResponse { .. } => "test_response",
        ServerMessage::AudioReceived { .. } => "audio_received",
        ServerMessage::SessionStarted(_) => "session_started",
        ServerMessage::SessionResumed(_) => "session_resumed",
        ServerMessage::AudioCommitted { .. } => "audio_committed",
        ServerMessage::SessionEnded(_) => "session_ended",
        ServerMessage::Pong => "pong",
        ServerMessage::Echo { .. } => "echo",
        ServerMessage::Rejected(_) => "error",
    }
}

/// Appends an `error` message with `code` and the human-readable `detail` to `out`.
pub(crate) fn encode_error(code: ErrorCode, detail: &str, at: Timestamp, out: &mut String) {
    out.push_str(r#"{"type":"error","message":""#);
    out.push_str(FAILED_TO_PROCESS);
    out.push_str(r#"","error":"#);
    write_json_string(detail, out);
    push_timestamp(out, at);
    out.push_str(r#","code":""#);
    out.push_str(code.as_str());
    out.push_str("\"}");
}

/// Appends the `going_away` notice sent before a shutdown closes the socket: it says what the
/// client's session had stored, so that it can start again elsewhere from there. Sessions do
/// not outlive this process, so `resumable` is false.
pub(crate) fn encode_going_away(
    session: Option<(SessionId, Option<u64>)>,
    at: Timestamp,
    out: &mut String,
) {
    out.push_str(r#"{"type":"going_away","message":"Server shutting down","reason":"shutdown","resumable":false"#);
    if let Some((session, last_seq)) = session {
        let _ = write!(out, r#","sessionId":"{session}""#);
        push_last_seq(out, last_seq);
    }
    push_timestamp(out, at);
    out.push('}');
}

/// Every limit of the connection, so that a client can keep within them rather than find
/// them by being refused.
fn push_limits(out: &mut String, limits: &WsSettings) {
    let _ = write!(
        out,
        r#","limits":{{"maxMessageBytes":{0},"maxFrameBytes":{0},"maxJsonDepth":{1}"#,
        limits.max_message_bytes, limits.max_json_depth
    );
    match limits.rate {
        Some(rate) => {
            let _ = write!(
                out,
                r#","maxMessagesPerSecond":{},"burst":{}"#,
                rate.per_second, rate.burst
            );
        }
        None => out.push_str(r#","maxMessagesPerSecond":null,"burst":null"#),
    }
    let _ = write!(
        out,
        r#","pingIntervalMs":{},"idleTimeoutMs":{}}}"#,
        limits.ping_interval.as_millis(),
        limits.idle_timeout.as_millis()
    );
}

/// A field the original left out entirely when the client had not sent it.
fn push_value(out: &mut String, key: &str, value: Option<&ClientValue>) {
    if let Some(value) = value {
        let _ = write!(out, r#","{key}":{}"#, value.as_wire());
    }
}

/// The fields an acknowledgement gains for clients that number chunks or declare sessions.
fn push_progress(out: &mut String, progress: &AudioProgress) {
    let _ = write!(out, r#","seq":{}"#, progress.seq);
    push_totals(out, progress.totals);
    if let Some(duration) = progress.duration {
        let _ = write!(out, r#","durationMs":{}"#, duration.as_millis());
    }
    if let Some(gap) = progress.gap {
        let _ = write!(out, r#","gap":{{"from":{},"to":{}}}"#, gap.from, gap.to);
    }
    if progress.duplicate {
        out.push_str(r#","duplicate":true"#);
    }
}

fn push_session(out: &mut String, info: &SessionInfo, max_message_bytes: usize) {
    let _ = write!(
        out,
        r#","sessionId":"{}","recordingId":"{}","resumeToken":"#,
        info.session, info.recording
    );
    write_json_string(&info.resume_token, out);
    out.push_str(r#","format":"#);
    push_format(out, &info.format);
    let _ = write!(
        out,
        r#","limits":{{"maxMessageBytes":{max_message_bytes},"resumeGraceMs":{}}}"#,
        info.resume_grace.as_millis()
    );
    push_last_seq(out, info.last_seq);
    push_totals(out, info.totals);
}

fn push_summary(out: &mut String, summary: &SessionSummary) {
    let _ = write!(
        out,
        r#","sessionId":"{}","recordingId":"{}""#,
        summary.session, summary.recording
    );
    push_last_seq(out, summary.last_seq);
    push_totals(out, summary.totals);
    if let Some(duration) = summary.duration {
        let _ = write!(out, r#","durationMs":{}"#, duration.as_millis());
    }
    out.push_str(r#","gaps":["#);
    for (i, gap) in summary.gaps.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(out, r#"{comma}{{"from":{},"to":{}}}"#, gap.from, gap.to);
    }
    let _ = write!(out, r#"],"duplicates":{}"#, summary.duplicates);
}

/// The effective format, in the words `session_start` uses.
pub(crate) fn push_format(out: &mut String, format: &AudioFormat) {
    match *format {
        AudioFormat::Samples {
            encoding,
            sample_rate,
            channels,
        } => {
            let encoding = encoding.name();
            let _ = write!(
                out,
                r#"{{"encoding":"{encoding}","sampleRate":{sample_rate},"channels":{channels}}}"#
            );
        }
        AudioFormat::Opus {
            container,
            sample_rate,
            channels,
        } => {
            let container = container.name();
            let _ = write!(
                out,
                r#"{{"encoding":"opus","container":"{container}","sampleRate":{sample_rate},"channels":{channels}}}"#
            );
        }
        AudioFormat::Undeclared => out.push_str(r#"{"encoding":"undeclared"}"#),
    }
}

fn push_last_seq(out: &mut String, last_seq: Option<u64>) {
    match last_seq {
        Some(seq) => {
            let _ = write!(out, r#","lastSeq":{seq}"#);
        }
        None => out.push_str(r#","lastSeq":null"#),
    }
}

fn push_totals(out: &mut String, totals: AudioTotals) {
    let _ = write!(
        out,
        r#","totalBytes":{},"totalChunks":{}"#,
        totals.bytes, totals.chunks
    );
}

fn push_timestamp(out: &mut String, at: Timestamp) {
    out.push_str(r#","timestamp":""#);
    write_iso(at, out);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use aimcs_domain::{ConnectionId, Container, Rejection, SeqGap};

    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_750_998_011_123);

    fn encoded(value: ServerMessage) -> String {
        let mut out = String::new();
        encode(&Stamped { at: T0, value }, &WsSettings::default(), &mut out);
        // Every message must be valid JSON, whatever it holds.
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        out
    }

    #[test]
    fn the_greeting_carries_the_connection_id() {
        let id: ConnectionId = "6f1c2d3e-4b5a-4c6d-8e7f-001122334455".parse().unwrap();
        assert_eq!(
            encoded(ServerMessage::Connected { connection_id: id }),
            r#"{"type":"connection","message":"WebSocket connected successfully","connectionId":"6f1c2d3e-4b5a-4c6d-8e7f-001122334455","limits":{"maxMessageBytes":1048576,"maxFrameBytes":1048576,"maxJsonDepth":32,"maxMessagesPerSecond":100,"burst":200,"pingIntervalMs":25000,"idleTimeoutMs":600000},"timestamp":"2025-06-27T04:20:11.123Z"}"#
        );
    }

    #[test]
    fn a_test_response_carries_the_original_message_when_there_was_one() {
        assert_eq!(
            encoded(ServerMessage::TestResponse {
                original_message: Some(ClientValue::from_wire(r#""Hello from frontend!""#))
            }),
            r#"{"type":"test_response","message":"Test message received successfully","originalMessage":"Hello from frontend!","timestamp":"2025-06-27T04:20:11.123Z"}"#
        );
        assert_eq!(
            encoded(ServerMessage::TestResponse {
                original_message: None
            }),
            r#"{"type":"test_response","message":"Test message received successfully","timestamp":"2025-06-27T04:20:11.123Z"}"#
        );
    }

    #[test]
    fn an_audio_ack_has_the_base64_size_then_the_decoded_size() {
        assert_eq!(
            encoded(ServerMessage::AudioReceived {
                encoded_size: 1336,
                decoded_size: 1000,
                progress: None,
            }),
            r#"{"type":"audio_received","message":"Audio data received","dataSize":1336,"timestamp":"2025-06-27T04:20:11.123Z","decodedSize":1000}"#
        );
    }

    #[test]
    fn an_ack_in_a_session_adds_the_sequence_number_totals_duration_and_any_gap() {
        let progress = AudioProgress {
            seq: 9,
            totals: AudioTotals {
                bytes: 6_400,
                chunks: 2,
            },
            duration: Some(std::time::Duration::from_millis(200)),
            gap: Some(SeqGap { from: 7, to: 8 }),
            duplicate: false,
        };
        assert_eq!(
            encoded(ServerMessage::AudioReceived {
                encoded_size: 3200,
                decoded_size: 3200,
                progress: Some(progress)
            }),
            r#"{"type":"audio_received","message":"Audio data received","dataSize":3200,"timestamp":"2025-06-27T04:20:11.123Z","decodedSize":3200,"seq":9,"totalBytes":6400,"totalChunks":2,"durationMs":200,"gap":{"from":7,"to":8}}"#
        );
        let duplicate = AudioProgress {
            gap: None,
            duplicate: true,
            duration: None,
            ..progress
        };
        assert!(
            encoded(ServerMessage::AudioReceived {
                encoded_size: 1,
                decoded_size: 1,
                progress: Some(duplicate)
            })
            .ends_with(r#""totalChunks":2,"duplicate":true}"#)
        );
    }

    #[test]
    fn session_started_gives_everything_needed_to_stream_and_to_resume() {
        let info = SessionInfo {
            session: "6f1c2d3e-4b5a-4c6d-8e7f-001122334455".parse().unwrap(),
            recording: "7f1c2d3e-4b5a-4c6d-8e7f-001122334455".parse().unwrap(),
            resume_token: "00112233445566778899aabbccddeeff".into(),
            format: AudioFormat::Opus {
                container: Container::Webm,
                sample_rate: 48_000,
                channels: 1,
            },
            resume_grace: std::time::Duration::from_secs(60),
            last_seq: None,
            totals: AudioTotals::default(),
        };
        assert_eq!(
            encoded(ServerMessage::SessionStarted(info)),
            r#"{"type":"session_started","message":"Session started","sessionId":"6f1c2d3e-4b5a-4c6d-8e7f-001122334455","recordingId":"7f1c2d3e-4b5a-4c6d-8e7f-001122334455","resumeToken":"00112233445566778899aabbccddeeff","format":{"encoding":"opus","container":"webm","sampleRate":48000,"channels":1},"limits":{"maxMessageBytes":1048576,"resumeGraceMs":60000},"lastSeq":null,"totalBytes":0,"totalChunks":0,"timestamp":"2025-06-27T04:20:11.123Z"}"#
        );
    }

    #[test]
    fn session_ended_reports_totals_gaps_and_duplicates() {
        let summary = SessionSummary {
            session: "6f1c2d3e-4b5a-4c6d-8e7f-001122334455".parse().unwrap(),
            recording: "7f1c2d3e-4b5a-4c6d-8e7f-001122334455".parse().unwrap(),
            totals: AudioTotals {
                bytes: 32_000,
                chunks: 10,
            },
            duration: Some(std::time::Duration::from_secs(1)),
            last_seq: Some(12),
            gaps: vec![SeqGap { from: 3, to: 4 }],
            duplicates: 1,
        };
        assert_eq!(
            encoded(ServerMessage::SessionEnded(summary)),
            r#"{"type":"session_ended","message":"Session ended","sessionId":"6f1c2d3e-4b5a-4c6d-8e7f-001122334455","recordingId":"7f1c2d3e-4b5a-4c6d-8e7f-001122334455","lastSeq":12,"totalBytes":32000,"totalChunks":10,"durationMs":1000,"gaps":[{"from":3,"to":4}],"duplicates":1,"timestamp":"2025-06-27T04:20:11.123Z"}"#
        );
    }

    #[test]
    fn audio_committed_says_what_is_now_durable() {
        assert_eq!(
            encoded(ServerMessage::AudioCommitted {
                last_seq: Some(4),
                totals: AudioTotals {
                    bytes: 4,
                    chunks: 1
                }
            }),
            r#"{"type":"audio_committed","message":"Audio committed","lastSeq":4,"totalBytes":4,"totalChunks":1,"timestamp":"2025-06-27T04:20:11.123Z"}"#
        );
    }

    #[test]
    fn a_pong_is_only_a_timestamp() {
        assert_eq!(
            encoded(ServerMessage::Pong),
            r#"{"type":"pong","timestamp":"2025-06-27T04:20:11.123Z"}"#
        );
    }

    #[test]
    fn an_echo_carries_the_original_type_when_there_was_one() {
        assert_eq!(
            encoded(ServerMessage::Echo {
                original_type: Some(ClientValue::from_wire("[1,2]"))
            }),
            r#"{"type":"echo","originalType":[1,2],"message":"Unknown message type received","timestamp":"2025-06-27T04:20:11.123Z"}"#
        );
        assert_eq!(
            encoded(ServerMessage::Echo {
                original_type: None
            }),
            r#"{"type":"echo","message":"Unknown message type received","timestamp":"2025-06-27T04:20:11.123Z"}"#
        );
    }

    #[test]
    fn a_rejection_is_an_error_with_its_reason_and_code() {
        assert_eq!(
            encoded(ServerMessage::Rejected(Rejection::InvalidAudio(
                "bad \"base64\"\n".into()
            ))),
            r#"{"type":"error","message":"Failed to process message","error":"bad \"base64\"\n","timestamp":"2025-06-27T04:20:11.123Z","code":"invalid_audio"}"#
        );
    }
}
