//! Client frames on the wire: a JSON object with a `type`, in a text frame or (as the original
//! accepted) a binary frame holding the same JSON. [`WsClientFrame`] is that wire type: it
//! reads a frame in a single pass over the bytes, without building a JSON tree, and converts
//! to a [`ClientMessage`] in one method, where base64 decoding and its errors live.

use std::borrow::Cow;
use std::fmt;

use aimcs_domain::{AudioChunk, AudioMessage, AudioPayload, ClientMessage, ClientValue, Rejection};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::wire::js;
use crate::wire::json_depth::nests_deeper_than;

mod session;

/// Decoding options shared by both alphabets: padding may be left out and unused trailing
/// bits may be set, as Node's decoder allowed; anything outside the alphabet is an error rather
/// than silently skipped.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);

/// Standard base64, as browsers' `FileReader.readAsDataURL` writes it.
const BASE64: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);

/// RFC 4648 section 5 base64 (`-` and `_`), which the original's decoder also accepted.
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// Where decoded audio goes: one buffer per connection, reused from chunk to chunk.
#[derive(Debug, Default)]
pub(crate) struct AudioBuffer {
    bytes: BytesMut,
}

/// Why a frame could not be read as a message at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// An empty frame (or only whitespace).
    #[error("empty message: expected a JSON object")]
    Empty,
    /// The JSON literal `null`.
    #[error("message is null: expected a JSON object")]
    Null,
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// A client frame as read off the wire: the fields that mean something, borrowed from the
/// frame's bytes; others are skipped unread.
#[derive(Default)]
pub(crate) struct WsClientFrame<'a> {
    /// False for a frame that is JSON but not an object (a number, a string, an array).
    is_object: bool,
    kind: Option<&'a RawValue>,
    message: Option<&'a RawValue>,
    data: Option<Data<'a>>,
    seq: Option<&'a RawValue>,
    format: Option<&'a RawValue>,
    metadata: Option<&'a RawValue>,
    session_id: Option<&'a RawValue>,
    resume_token: Option<&'a RawValue>,
    last_seq: Option<&'a RawValue>,
}

/// Every value [`client_kind`] returns.
pub(crate) const CLIENT_KINDS: [&str; 11] = [
    "test",
    "audio",
    "binary_audio",
    "ping",
    "session_start",
    "audio_commit",
    "audio_clear",
    "session_end",
    "session_resume",
    "unknown",
    "invalid",
];

/// The `type` of a client message, as a metric label: a closed set, whatever the client sent
/// (an unknown `type` is `unknown`, never its text).
pub(crate) fn client_kind(message: &ClientMessage) -> &'static str {
    match message {
        ClientMessage::Test { .. } => "test",
        ClientMessage::Audio(_) => "audio",
        ClientMessage::BinaryAudio(_) => "binary_audio",
        ClientMessage::Ping => "ping",
        ClientMessage::SessionStart { .. } => "session_start",
        ClientMessage::AudioCommit => "audio_commit",
        ClientMessage::AudioClear => "audio_clear",
        ClientMessage::SessionEnd => "session_end",
        ClientMessage::SessionResume { .. } => "session_resume",
        ClientMessage::Unknown { .. } => "unknown",
        ClientMessage::Undecodable { .. } | ClientMessage::Invalid(_) => "invalid",
    }
}

/// The message a frame holds; a frame that cannot be read becomes
/// [`ClientMessage::Undecodable`], which has its own reply, and one that nests JSON deeper than
/// `max_depth` is refused before it is parsed.
pub(crate) fn decode(frame: &str, audio: &mut AudioBuffer, max_depth: usize) -> ClientMessage {
    match decode_audio_as_sent(frame, max_depth) {
        Some(message) => message,
        None => decode_any(frame, audio, max_depth),
    }
}

/// [`decode`] for any frame, through the JSON parser.
fn decode_any(frame: &str, audio: &mut AudioBuffer, max_depth: usize) -> ClientMessage {
    if nests_deeper_than(frame.as_bytes(), max_depth) {
        return ClientMessage::Invalid(Rejection::JsonTooDeep(max_depth));
    }
    match WsClientFrame::parse(frame) {
        Ok(frame) => frame.into_domain(audio),
        Err(error) => ClientMessage::Undecodable {
            reason: error.to_string(),
        },
    }
}

/// What every audio message of the original front end looks like: `JSON.stringify` of
/// `{type: "audio", data, ...}`.
const AUDIO_PREFIX: &str = r#"{"type":"audio","data":""#;

/// Reads an audio message that starts the way browsers write one, without the JSON parser
/// going over its base64: scanning that string took a third of the service's own time per
/// message. The base64 is found with a SIMD search for its closing quote and decoded with
/// SIMD, which also proves it a plain JSON string (every byte in the alphabet); the other
/// fields are parsed as the small object they make on their own. `None` whenever the frame is
/// anything else (a repeated `type` or `data`, an escape, data that is not canonical base64,
/// JSON that does not parse), which the general decoder then reads as it always has: this
/// gives the same message for every frame it takes.
fn decode_audio_as_sent(frame: &str, max_depth: usize) -> Option<ClientMessage> {
    let rest = frame.strip_prefix(AUDIO_PREFIX)?;
    let end = memchr::memchr2(b'"', b'\\', rest.as_bytes())?;
    if rest.as_bytes()[end] != b'"' {
        return None;
    }
    let (data, tail) = (&rest[..end], &rest[end + 1..]);
    let others = match tail.strip_prefix(',') {
        // A comma must be followed by a field, not by the end of the object.
        Some(fields) if fields.trim_start().starts_with('}') => return None,
        Some(fields) => fields,
        None if tail.starts_with('}') => tail,
        None => return None,
    };
    let mut object = String::with_capacity(others.len() + 1);
    object.push('{');
    object.push_str(others);
    if nests_deeper_than(object.as_bytes(), max_depth) {
        return None;
    }
    let fields = WsClientFrame::parse(&object).ok()?;
    if fields.kind.is_some() || fields.data.is_some() {
        return None;
    }
    let bytes = if data.is_empty() {
        None
    } else {
        Some(decode_canonical(data)?)
    };
    let seq = match session::seq(fields.seq) {
        Ok(seq) => seq,
        Err(rejection) => return Some(ClientMessage::Invalid(rejection)),
    };
    let payload = match bytes.map(AudioChunk::new) {
        Some(Ok(chunk)) => AudioPayload::Chunk(chunk),
        _ => AudioPayload::Empty,
    };
    Some(ClientMessage::Audio(AudioMessage {
        encoded_size: data.len(),
        payload,
        seq,
    }))
}

impl<'a> WsClientFrame<'a> {
    /// Reads the frame's JSON.
    ///
    /// # Errors
    /// [`FrameError`] for an empty frame, `null`, or bytes that are not JSON.
    pub(crate) fn parse(frame: &'a str) -> Result<Self, FrameError> {
        if frame.bytes().all(|b| b.is_ascii_whitespace()) {
            return Err(FrameError::Empty);
        }
        // From a `str`: the WebSocket layer validated its UTF-8 already, and serde_json's
        // slice reader would check every borrowed string (all of the audio's base64) again.
        serde_json::from_str::<Option<Self>>(frame)?.ok_or(FrameError::Null)
    }

    /// The meaning of the frame, decoding audio into `audio`.
    pub(crate) fn into_domain(self, audio: &mut AudioBuffer) -> ClientMessage {
        // The original answered any JSON that is not an object (a number, a string, an array)
        // as a message of unknown type, so clients that probe with one get the same reply.
        let Some(kind) = self.kind.filter(|_| self.is_object) else {
            return ClientMessage::Unknown {
                original_type: None,
            };
        };
        match json_str(kind).as_deref() {
            Some("test") => ClientMessage::Test {
                message: self.message.map(client_value),
            },
            Some("audio") => match session::seq(self.seq) {
                Ok(seq) => ClientMessage::Audio(AudioMessage {
                    seq,
                    ..audio.message(self.data)
                }),
                Err(rejection) => ClientMessage::Invalid(rejection),
            },
            Some("ping") => ClientMessage::Ping,
            Some("session_start") => session::start(self.format, self.metadata.map(client_value)),
            Some("session_resume") => {
                session::resume(self.session_id, self.resume_token, self.last_seq)
            }
            Some("session_end") => ClientMessage::SessionEnd,
            Some("audio_commit") => ClientMessage::AudioCommit,
            Some("audio_clear") => ClientMessage::AudioClear,
            _ => ClientMessage::Unknown {
                original_type: Some(client_value(kind)),
            },
        }
    }
}

impl AudioBuffer {
    fn message(&mut self, data: Option<Data<'_>>) -> AudioMessage {
        let text = match data {
            None | Some(Data::Falsy) => {
                return AudioMessage {
                    encoded_size: 0,
                    payload: AudioPayload::Empty,
                    seq: None,
                };
            }
            Some(Data::NotText(kind)) => {
                return AudioMessage {
                    encoded_size: 0,
                    payload: AudioPayload::Invalid(format!(
                        "audio data must be a base64 string, not {kind}"
                    )),
                    seq: None,
                };
            }
            Some(Data::Text(text)) => text,
        };
        if text.is_empty() {
            return AudioMessage {
                encoded_size: 0,
                payload: AudioPayload::Empty,
                seq: None,
            };
        }
        // The original's `dataSize` was JavaScript's `.length`, in UTF-16 units; valid base64
        // is ASCII, so that is the byte length (and invalid data is never acknowledged).
        AudioMessage {
            encoded_size: text.len(),
            payload: self.decode_base64(&text),
            seq: None,
        }
    }

    fn decode_base64(&mut self, text: &str) -> AudioPayload {
        if let Some(bytes) = decode_canonical(text) {
            return match AudioChunk::new(bytes) {
                Ok(chunk) => AudioPayload::Chunk(chunk),
                Err(_) => AudioPayload::Empty,
            };
        }
        let decoded = match self.decode_with(&BASE64, text) {
            // Only a text that uses the URL-safe alphabet is worth a second pass.
            Err(_) if text.contains(['-', '_']) => self.decode_with(&BASE64_URL, text),
            other => other,
        };
        match decoded {
            Ok(len) => {
                self.bytes.truncate(len);
                // `split` hands the bytes over without copying; once the sink drops them, the
                // next `resize` reclaims the same allocation.
                match AudioChunk::new(self.bytes.split().freeze()) {
                    Ok(chunk) => AudioPayload::Chunk(chunk),
                    Err(_) => AudioPayload::Empty,
                }
            }
            Err(error) => AudioPayload::Invalid(describe_base64_error(text, &error)),
        }
    }

    fn decode_with(
        &mut self,
        engine: &GeneralPurpose,
        text: &str,
    ) -> Result<usize, base64::DecodeSliceError> {
        self.bytes.clear();
        self.bytes
            .resize(base64::decoded_len_estimate(text.len()), 0);
        engine.decode_slice(text.as_bytes(), &mut self.bytes[..])
    }
}

/// Decodes padded standard base64, what browsers send, with SIMD and into fresh memory (no
/// buffer to zero first): the base64 crate's decoder took half the service's own time per
/// audio message. `None` for anything else (no padding, the URL-safe alphabet, an error),
/// which the lenient decoder then reads, and explains when it cannot: both give the same
/// bytes for what both accept.
fn decode_canonical(text: &str) -> Option<Bytes> {
    base64_simd::STANDARD
        .decode_to_vec(text.as_bytes())
        .ok()
        .map(Bytes::from)
}

fn describe_base64_error(text: &str, error: &base64::DecodeSliceError) -> String {
    use base64::DecodeError;
    let decode_error = match error {
        base64::DecodeSliceError::DecodeError(e) => e,
        base64::DecodeSliceError::OutputSliceTooSmall => {
            return "audio data is not valid base64".into();
        }
    };
    match *decode_error {
        DecodeError::InvalidByte(offset, byte) | DecodeError::InvalidLastSymbol(offset, byte) => {
            // The offset may fall inside a multi-byte character (found by the fuzzer): the
            // byte is named then.
            let shown = text
                .get(offset..)
                .and_then(|rest| rest.chars().next())
                .map_or_else(|| format!("0x{byte:02x}"), |c| format!("{c:?}"));
            format!(
                "audio data is not valid base64: unexpected character {shown} at offset {offset}"
            )
        }
        DecodeError::InvalidLength(len) => {
            format!("audio data is not valid base64: {len} symbols cannot encode whole bytes")
        }
        DecodeError::InvalidPadding => "audio data is not valid base64: bad padding".into(),
    }
}

/// The text of a JSON string, without allocating when it has no escapes; `None` for any
/// other JSON value.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    serde_json::from_str::<&str>(text)
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(text).map(Cow::Owned))
        .ok()
}

/// A client value as the original wrote it back: `JSON.stringify` of what it parsed.
fn client_value(raw: &RawValue) -> ClientValue {
    // Normalising fails only where serde_json is stricter than `JSON.parse` (a number beyond
    // a double's range, a lone surrogate, nesting past 128 levels); the client's own text,
    // which is valid JSON, is then the most faithful answer.
    ClientValue::from_wire(
        js::normalize_json_text(raw.get()).unwrap_or_else(|_| raw.get().to_owned()),
    )
}

/// An `audio` message's `data`, classified the way the original treated it.
enum Data<'a> {
    /// A string: base64 text, borrowed from the frame unless it had escapes.
    Text(Cow<'a, str>),
    /// `null`, `false` or `0`: JavaScript's falsy values, which the original took as no data.
    Falsy,
    /// Anything else, named for the error message.
    NotText(&'static str),
}

impl<'de> Deserialize<'de> for WsClientFrame<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FrameVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = WsClientFrame<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut frame = WsClientFrame {
            is_object: true,
            ..WsClientFrame::default()
        };
        // A repeated key keeps its last value, as `JSON.parse` does.
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => frame.kind = Some(map.next_value()?),
                Key::Message => frame.message = Some(map.next_value()?),
                Key::Data => frame.data = Some(map.next_value()?),
                Key::Seq => frame.seq = Some(map.next_value()?),
                Key::Format => frame.format = Some(map.next_value()?),
                Key::Metadata => frame.metadata = Some(map.next_value()?),
                Key::SessionId => frame.session_id = Some(map.next_value()?),
                Key::ResumeToken => frame.resume_token = Some(map.next_value()?),
                Key::LastSeq => frame.last_seq = Some(map.next_value()?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(frame)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(WsClientFrame::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(WsClientFrame::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(WsClientFrame::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(WsClientFrame::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(WsClientFrame::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(WsClientFrame::default())
    }
}

/// The keys the decoder looks at.
enum Key {
    Type,
    Message,
    Data,
    Seq,
    Format,
    Metadata,
    SessionId,
    ResumeToken,
    LastSeq,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "type" => Key::Type,
            "message" => Key::Message,
            "data" => Key::Data,
            "seq" => Key::Seq,
            "format" => Key::Format,
            "metadata" => Key::Metadata,
            "sessionId" => Key::SessionId,
            "resumeToken" => Key::ResumeToken,
            "lastSeq" => Key::LastSeq,
            _ => Key::Other,
        })
    }
}

impl<'de> Deserialize<'de> for Data<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DataVisitor)
    }
}

struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = Data<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("base64 text")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Data::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Data::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Data::Falsy)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(if value {
            Data::NotText("a boolean")
        } else {
            Data::Falsy
        })
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(if value == 0 {
            Data::Falsy
        } else {
            Data::NotText("a number")
        })
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(if value == 0 {
            Data::Falsy
        } else {
            Data::NotText("a number")
        })
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(if value == 0.0 {
            Data::Falsy
        } else {
            Data::NotText("a number")
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Data::NotText("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Data::NotText("an object"))
    }
}

#[cfg(test)]
mod tests;
