//! Server messages on the wire: one JSON object per text frame, with the original service's
//! `type` names, field names and field order, and a `timestamp` on every message. Written by
//! hand into a reusable buffer: these are on every message's path and their shape is fixed.

use std::fmt::Write as _;

use aimcs_domain::{ClientValue, ServerMessage, Stamped, Timestamp};

use crate::inbound::errors::{ErrorCode, rejection_code};
use crate::wire::js::write_json_string;
use crate::wire::timestamp::write_iso;

/// The `message` of every `error`, kept from the original so clients matching on it still do.
const FAILED_TO_PROCESS: &str = "Failed to process message";

/// Appends `message` as one JSON object to `out`.
pub(crate) fn encode(message: &Stamped<ServerMessage>, out: &mut String) {
    match &message.value {
        ServerMessage::Connected { connection_id } => {
            out.push_str(r#"{"type":"connection","message":"WebSocket connected successfully","connectionId":""#);
            // Hyphenated UUIDs need no escaping.
            let _ = write!(out, "{connection_id}");
            out.push('"');
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
        } => {
            out.push_str(r#"{"type":"audio_received","message":"Audio data received","dataSize":"#);
            let _ = write!(out, "{encoded_size}");
            push_timestamp(out, message.at);
            let _ = write!(out, r#","decodedSize":{decoded_size}}}"#);
            return;
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

/// A field the original left out entirely when the client had not sent it.
fn push_value(out: &mut String, key: &str, value: Option<&ClientValue>) {
    if let Some(value) = value {
        let _ = write!(out, r#","{key}":{}"#, value.as_wire());
    }
}

fn push_timestamp(out: &mut String, at: Timestamp) {
    out.push_str(r#","timestamp":""#);
    write_iso(at, out);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use aimcs_domain::{ConnectionId, Rejection};

    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_750_998_011_123);

    fn encoded(value: ServerMessage) -> String {
        let mut out = String::new();
        encode(&Stamped { at: T0, value }, &mut out);
        // Every message must be valid JSON, whatever it holds.
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        out
    }

    #[test]
    fn the_greeting_carries_the_connection_id() {
        let id: ConnectionId = "6f1c2d3e-4b5a-4c6d-8e7f-001122334455".parse().unwrap();
        assert_eq!(
            encoded(ServerMessage::Connected { connection_id: id }),
            r#"{"type":"connection","message":"WebSocket connected successfully","connectionId":"6f1c2d3e-4b5a-4c6d-8e7f-001122334455","timestamp":"2025-06-27T04:20:11.123Z"}"#
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
                decoded_size: 1000
            }),
            r#"{"type":"audio_received","message":"Audio data received","dataSize":1336,"timestamp":"2025-06-27T04:20:11.123Z","decodedSize":1000}"#
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
