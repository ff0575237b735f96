//! The fields of the session messages on the wire (`session_start`, `session_resume`, an
//! audio `seq`), each checked with an error that says what to send instead.

use aimcs_domain::{
    ClientMessage, ClientValue, Container, Encoding, FormatRequest, MAX_SEQ, Rejection,
    SampleEncoding,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::json_str;

/// A `seq`: absent, or a whole number from 0 up.
pub(super) fn seq(raw: Option<&RawValue>) -> Result<Option<u64>, Rejection> {
    raw.map(|raw| whole_number(raw, "seq")).transpose()
}

fn whole_number(raw: &RawValue, field: &str) -> Result<u64, Rejection> {
    // Beyond 2^53 - 1 a JavaScript client cannot hold the number exactly.
    serde_json::from_str::<u64>(raw.get())
        .ok()
        .filter(|n| *n <= MAX_SEQ)
        .ok_or_else(|| {
            Rejection::InvalidSeq(format!(
                "{field} must be a whole number from 0 to {MAX_SEQ}, not {}",
                shown(raw)
            ))
        })
}

/// `format` of a `session_start`, as it travels.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FormatBody {
    encoding: String,
    container: Option<String>,
    sample_rate: Option<u32>,
    channels: Option<u16>,
}

const FORMAT_EXAMPLE: &str = r#"{"encoding":"pcm_s16le","sampleRate":16000,"channels":1}"#;

/// A `session_start`, or the reason its format cannot be read.
pub(super) fn start(format: Option<&RawValue>, metadata: Option<ClientValue>) -> ClientMessage {
    let Some(format) = format else {
        return invalid_format(format!(
            "session_start needs a format, e.g. \"format\":{FORMAT_EXAMPLE}"
        ));
    };
    let body: FormatBody = match serde_json::from_str(format.get()) {
        Ok(body) => body,
        Err(error) => {
            return invalid_format(format!(
                "format is not valid: {error}; e.g. {FORMAT_EXAMPLE}"
            ));
        }
    };
    let encoding = match body.encoding.as_str() {
        "opus" => Encoding::Opus,
        other => match SampleEncoding::from_name(other) {
            Some(encoding) => Encoding::Samples(encoding),
            None => {
                return ClientMessage::Invalid(Rejection::UnsupportedEncoding(other.to_owned()));
            }
        },
    };
    let container = match body
        .container
        .as_deref()
        .map(|name| (name, Container::from_name(name)))
    {
        None => None,
        Some((_, Some(container))) => Some(container),
        Some((other, None)) => {
            return invalid_format(format!(
                "unsupported container {other:?}: use \"webm\" or \"ogg\""
            ));
        }
    };
    let request = FormatRequest {
        encoding,
        container,
        sample_rate: body.sample_rate,
        channels: body.channels,
    };
    ClientMessage::SessionStart {
        format: request,
        metadata,
    }
}

fn invalid_format(reason: String) -> ClientMessage {
    ClientMessage::Invalid(Rejection::InvalidFormat(reason))
}

/// A `session_resume`, or the reason it cannot be read.
pub(super) fn resume(
    session: Option<&RawValue>,
    token: Option<&RawValue>,
    last_seq: Option<&RawValue>,
) -> ClientMessage {
    let invalid = |reason: String| ClientMessage::Invalid(Rejection::InvalidResume(reason));
    let Some(session) = session
        .and_then(json_str)
        .and_then(|text| text.parse().ok())
    else {
        return invalid("session_resume needs the sessionId that session_started gave".into());
    };
    let Some(token) = token.and_then(json_str).filter(|token| !token.is_empty()) else {
        return invalid("session_resume needs the resumeToken that session_started gave".into());
    };
    let last_acked_seq = match last_seq.map(|raw| whole_number(raw, "lastSeq")).transpose() {
        Ok(seq) => seq,
        Err(rejection) => return ClientMessage::Invalid(rejection),
    };
    ClientMessage::SessionResume {
        session,
        token: token.into_owned(),
        last_acked_seq,
    }
}

/// A client value, shortened for an error message.
fn shown(raw: &RawValue) -> String {
    let text = raw.get();
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
