//! What every client frame must get from the decoder, whatever its bytes. The decoder reads a
//! frame in one pass without building a JSON tree; serde_json's `Value` reads the same bytes
//! the slow, obvious way, and the two must agree on what the frame means.
//!
//! Shared by the `client_frame` fuzz target and by `adapters/tests/fuzz_regressions.rs`, so a
//! crash the fuzzer finds is replayed by the very code that found it.

use aimcs_adapters::fuzzing::{decode_client_frame, nests_deeper_than};
use std::fmt;

use aimcs_domain::{AudioPayload, ClientMessage, ClientValue, MAX_SEQ, Rejection};
use serde::de::{Deserialize, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The nesting limit `decode_client_frame` applies: the service's default.
pub const MAX_DEPTH: usize = 32;

/// Decodes `frame` as the connection task does and checks the message against serde_json's
/// reading of the same bytes. Panics at the first property that does not hold.
pub fn check(frame: &[u8]) {
    check_depth_is_monotonic(frame);
    let message = decode_client_frame(frame);
    // Rejections are written into replies; writing them must not fail either.
    if let ClientMessage::Invalid(rejection) = &message {
        let _ = rejection.to_string();
    }
    // Where serde_json cannot read the frame there is nothing to compare with: it refuses
    // some texts the decoder takes on purpose (numbers beyond a double, lone surrogates).
    let Ok(Depth(depth)) = serde_json::from_slice::<Depth>(frame) else {
        return;
    };
    assert!(
        !nests_deeper_than(frame, depth),
        "JSON {depth} levels deep was said to nest deeper"
    );
    if depth > 0 {
        assert!(
            nests_deeper_than(frame, depth - 1),
            "JSON {depth} levels deep was said to nest no deeper than {}",
            depth - 1
        );
    }
    if depth > MAX_DEPTH {
        assert_eq!(
            message,
            ClientMessage::Invalid(Rejection::JsonTooDeep(MAX_DEPTH))
        );
        return;
    }
    if let Ok(value) = serde_json::from_slice::<Value>(frame) {
        check_meaning(&value, &message);
    }
}

/// A frame that nests deeper than a limit nests deeper than every smaller one, and no frame
/// nests deeper than it has bytes.
fn check_depth_is_monotonic(frame: &[u8]) {
    let mut limits = [0, 1, 2, MAX_DEPTH, frame.len()];
    limits.sort_unstable();
    let mut deeper = true;
    for max in limits {
        let now = nests_deeper_than(frame, max);
        assert!(
            deeper || !now,
            "deeper than {max} but not than a smaller limit"
        );
        deeper = now;
    }
    assert!(
        !deeper,
        "{} bytes cannot nest deeper than that",
        frame.len()
    );
}

/// How many arrays and objects a JSON text opens inside one another, read by serde_json. Not
/// from a `Value`: a repeated key keeps only its last value, but every one of them nests.
struct Depth(usize);

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DepthVisitor)
    }
}

struct DepthVisitor;

impl<'de> Visitor<'de> for DepthVisitor {
    type Value = Depth;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_i64<E: Error>(self, _: i64) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_u64<E: Error>(self, _: u64) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_f64<E: Error>(self, _: f64) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_str<E: Error>(self, _: &str) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_unit<E: Error>(self) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some(Depth(depth)) = items.next_element()? {
            deepest = deepest.max(depth);
        }
        Ok(Depth(deepest + 1))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some((IgnoredAny, Depth(depth))) = entries.next_entry()? {
            deepest = deepest.max(depth);
        }
        Ok(Depth(deepest + 1))
    }
}

fn check_meaning(value: &Value, message: &ClientMessage) {
    let object = match value {
        Value::Null => {
            assert!(
                matches!(message, ClientMessage::Undecodable { .. }),
                "null must be undecodable, got {message:?}"
            );
            return;
        }
        Value::Object(object) => object,
        _ => {
            assert_eq!(
                *message,
                ClientMessage::Unknown {
                    original_type: None
                },
                "JSON that is not an object has no type"
            );
            return;
        }
    };
    let Some(kind) = object.get("type") else {
        assert_eq!(
            *message,
            ClientMessage::Unknown {
                original_type: None
            }
        );
        return;
    };
    match kind.as_str() {
        Some("test") => match message {
            ClientMessage::Test { message } => {
                check_value_kept(object.get("message"), message.as_ref());
            }
            other => panic!("expected a test message, got {other:?}"),
        },
        Some("ping") => assert_eq!(*message, ClientMessage::Ping),
        Some("session_end") => assert_eq!(*message, ClientMessage::SessionEnd),
        Some("audio_commit") => assert_eq!(*message, ClientMessage::AudioCommit),
        Some("audio_clear") => assert_eq!(*message, ClientMessage::AudioClear),
        Some("audio") => check_audio(object, message),
        Some("session_start") => match message {
            ClientMessage::SessionStart { metadata, .. } => {
                check_value_kept(object.get("metadata"), metadata.as_ref());
            }
            ClientMessage::Invalid(
                Rejection::InvalidFormat(_) | Rejection::UnsupportedEncoding(_),
            ) => {}
            other => panic!("expected a session start or its refusal, got {other:?}"),
        },
        Some("session_resume") => assert!(
            matches!(
                message,
                ClientMessage::SessionResume { .. }
                    | ClientMessage::Invalid(
                        Rejection::InvalidResume(_) | Rejection::InvalidSeq(_)
                    )
            ),
            "expected a session resume or its refusal, got {message:?}"
        ),
        _ => match message {
            ClientMessage::Unknown {
                original_type: Some(original),
            } => check_value_kept(Some(kind), Some(original)),
            other => panic!("expected a message of unknown type {kind}, got {other:?}"),
        },
    }
}

fn check_audio(object: &Map<String, Value>, message: &ClientMessage) {
    let seq = object.get("seq");
    let audio = match message {
        ClientMessage::Audio(audio) => audio,
        ClientMessage::Invalid(Rejection::InvalidSeq(_)) => {
            assert!(
                seq.is_some_and(|seq| whole_number(seq).is_none()),
                "seq {seq:?} was refused"
            );
            return;
        }
        other => panic!("expected audio, got {other:?}"),
    };
    // A present `seq` that is not a whole number must have been refused above.
    assert_eq!(audio.seq.map(Some), seq.map(whole_number), "seq {seq:?}");
    match object.get("data") {
        None | Some(Value::Null | Value::Bool(false)) => {
            assert_eq!(
                (audio.encoded_size, &audio.payload),
                (0, &AudioPayload::Empty)
            );
        }
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => {
            assert_eq!(
                (audio.encoded_size, &audio.payload),
                (0, &AudioPayload::Empty)
            );
        }
        Some(Value::String(text)) => {
            assert_eq!(audio.encoded_size, text.len(), "the size is the text's");
            if let AudioPayload::Chunk(chunk) = &audio.payload {
                assert_eq!(
                    Some(chunk.as_bytes()),
                    base64_bits(text).as_deref(),
                    "decoded audio of {text:?}"
                );
            }
        }
        Some(_) => assert!(
            matches!(audio.payload, AudioPayload::Invalid(_)),
            "data that is not text must be invalid, got {:?}",
            audio.payload
        ),
    }
}

/// A `seq` as the decoder must read it: a whole number up to [`MAX_SEQ`].
fn whole_number(value: &Value) -> Option<u64> {
    value.as_u64().filter(|n| *n <= MAX_SEQ)
}

/// The bytes base64 `text` spells, read naively: the symbols before any padding, six bits
/// each, in the one alphabet the text's symbols belong to. `None` if they belong to neither.
fn base64_bits(text: &str) -> Option<Vec<u8>> {
    const STANDARD: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let symbols = text.trim_end_matches('=').as_bytes();
    [STANDARD, URL_SAFE].into_iter().find_map(|alphabet| {
        let mut bytes = Vec::with_capacity(symbols.len() * 3 / 4);
        let (mut bits, mut count) = (0_u32, 0);
        for symbol in symbols {
            let sextet = alphabet.iter().position(|a| a == symbol)?;
            bits = (bits << 6) | u32::try_from(sextet).ok()?;
            count += 6;
            if count >= 8 {
                count -= 8;
                bytes.push(u8::try_from((bits >> count) & 0xff).ok()?);
            }
        }
        Some(bytes)
    })
}

/// A value the client sent comes back as the JSON it was, as `JSON.stringify` writes it.
fn check_value_kept(sent: Option<&Value>, kept: Option<&ClientValue>) {
    let (Some(sent), Some(kept)) = (sent, kept) else {
        assert_eq!(
            sent.is_some(),
            kept.is_some(),
            "{sent:?} came back as {kept:?}"
        );
        return;
    };
    let Ok(back) = serde_json::from_str::<Value>(kept.as_wire()) else {
        panic!(
            "{sent} came back as {:?}, which is not JSON",
            kept.as_wire()
        );
    };
    assert!(
        same_to_javascript(sent, &back),
        "{sent} came back as {}",
        kept.as_wire()
    );
}

/// Equality as JavaScript sees parsed JSON: every number is a double, and an object's keys
/// have no order that JSON text can set.
fn same_to_javascript(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same_to_javascript(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(key, x)| ys.get(key).is_some_and(|y| same_to_javascript(x, y)))
        }
        _ => a == b,
    }
}
