//! The chat request body on the wire. The original took JSON or an HTML form and applied
//! JavaScript's rules to it (`!message` for "missing", `String(message)` for the text,
//! `context || {}`); clients depend on those rules, so they are kept here, at the edge, and the
//! domain only sees a message that is present or not.

use aimcs_domain::{ChatRequest, ClientValue, EmptyChatMessage};
use serde_json::{Map, Value};

use crate::wire::form::{FormError, parse_urlencoded};
use crate::wire::js::{self, NotConvertible};

/// What kind of body a `Content-Type` announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `application/json`
    Json,
    /// `application/x-www-form-urlencoded`
    Form,
    /// Anything else: the original ignored such bodies (and then found no message).
    Other,
}

impl BodyKind {
    /// The kind announced by a `Content-Type` value, parameters ignored.
    pub(crate) fn from_content_type(content_type: Option<&str>) -> Self {
        let essence = content_type
            .and_then(|value| value.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        if essence.eq_ignore_ascii_case("application/json") {
            Self::Json
        } else if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Self::Form
        } else {
            Self::Other
        }
    }
}

/// Why a chat request body was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChatBodyError {
    /// The body is larger than the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A compressed body (`Content-Encoding` other than `identity`).
    #[error(
        "request bodies with Content-Encoding {0:?} are not accepted: send the body uncompressed"
    )]
    UnsupportedContentEncoding(String),
    /// The body could not be read from the connection.
    #[error("request body could not be read: {0}")]
    Unreadable(String),
    /// The body did not arrive in time.
    #[error("request body did not arrive within {secs} seconds")]
    TooSlow {
        /// The body timeout, in seconds.
        secs: u64,
    },
    /// A JSON body nested deeper than the configured limit.
    #[error("JSON body nests deeper than the limit of {limit} levels")]
    TooDeep {
        /// The limit, in levels.
        limit: usize,
    },
    /// A JSON body that is not valid JSON.
    #[error("invalid JSON body: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// A JSON body whose top level is not an object or array (the original parsed strictly).
    #[error("invalid JSON body: expected an object, like {{\"message\": \"Hello!\"}}")]
    NotAnObject,
    /// A form body the form parser refused.
    #[error("invalid form body: {0}")]
    InvalidForm(#[source] FormError),
    /// No message, or a falsy one (`""`, `0`, `false`, `null`).
    #[error("{0}")]
    MessageRequired(#[from] EmptyChatMessage),
    /// A message with no text form.
    #[error("{0}")]
    NotText(#[from] NotConvertible),
}

/// A parsed chat request body: the fields that matter, as JSON values.
#[derive(Debug, Default)]
pub(crate) struct ChatRequestBody {
    message: Option<Value>,
    context: Option<Value>,
}

impl ChatRequestBody {
    /// Parses `body` as `kind` announces it.
    ///
    /// # Errors
    /// A [`ChatBodyError`] naming what is wrong with the body.
    pub(crate) fn parse(kind: BodyKind, body: &[u8]) -> Result<Self, ChatBodyError> {
        match kind {
            BodyKind::Json => Self::from_json(body),
            BodyKind::Form => {
                let text = String::from_utf8_lossy(body);
                match parse_urlencoded(&text).map_err(ChatBodyError::InvalidForm)? {
                    Value::Object(fields) => Ok(Self::from_fields(fields)),
                    _ => Ok(Self::default()),
                }
            }
            BodyKind::Other => Ok(Self::default()),
        }
    }

    fn from_json(body: &[u8]) -> Result<Self, ChatBodyError> {
        // body-parser reads an empty body as `{}`, but rejects a top level that is neither an
        // object nor an array before parsing (its "strict" mode).
        if body.is_empty() {
            return Ok(Self::default());
        }
        // Its decoder also drops a byte-order mark and replaces invalid UTF-8 before parsing.
        let text = String::from_utf8_lossy(body);
        let body = text.strip_prefix('\u{feff}').unwrap_or(&text).as_bytes();
        match body.iter().find(|b| !b" \t\n\r".contains(b)) {
            Some(b'{' | b'[') => {}
            _ => return Err(ChatBodyError::NotAnObject),
        }
        match serde_json::from_slice::<Value>(body).map_err(ChatBodyError::InvalidJson)? {
            Value::Object(fields) => Ok(Self::from_fields(fields)),
            // An array has no `message` field, so the request has no message.
            _ => Ok(Self::default()),
        }
    }

    fn from_fields(mut fields: Map<String, Value>) -> Self {
        Self {
            message: fields.remove("message"),
            context: fields.remove("context"),
        }
    }

    /// The domain request, by JavaScript's rules of the original.
    ///
    /// # Errors
    /// [`ChatBodyError::MessageRequired`] for a missing or falsy message,
    /// [`ChatBodyError::NotText`] for a message with no text form.
    pub(crate) fn try_into_domain(self) -> Result<ChatRequest, ChatBodyError> {
        let message = match self.message {
            Some(message) if js::is_truthy(&message) => Some(js::to_js_string(&message)?),
            _ => None,
        };
        let context = self.context.filter(js::is_truthy).map(|context| {
            let mut text = String::new();
            js::write_js_json(&context, &mut text);
            ClientValue::from_wire(text)
        });
        Ok(ChatRequest::new(message, context)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: BodyKind, body: &str) -> Result<ChatRequest, ChatBodyError> {
        ChatRequestBody::parse(kind, body.as_bytes())?.try_into_domain()
    }

    fn json(body: &str) -> Result<ChatRequest, ChatBodyError> {
        request(BodyKind::Json, body)
    }

    #[test]
    fn content_types_are_recognised_with_parameters_and_in_any_case() {
        assert_eq!(
            BodyKind::from_content_type(Some("application/json; charset=utf-8")),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("Application/JSON")),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("application/x-www-form-urlencoded")),
            BodyKind::Form
        );
        assert_eq!(
            BodyKind::from_content_type(Some("text/plain")),
            BodyKind::Other
        );
        assert_eq!(
            BodyKind::from_content_type(Some("application/vnd.api+json")),
            BodyKind::Other
        );
        assert_eq!(BodyKind::from_content_type(None), BodyKind::Other);
    }

    #[test]
    fn a_json_message_and_context_are_taken_as_the_original_did() {
        let request = json(r#"{"message": "Hello!", "context": {"test": true}}"#).unwrap();
        assert_eq!(request.message(), "Hello!");
        assert_eq!(
            request.context().map(ClientValue::as_wire),
            Some(r#"{"test":true}"#)
        );
    }

    #[test]
    fn non_string_messages_get_their_javascript_text() {
        for (body, text) in [
            (r#"{"message":5}"#, "5"),
            (r#"{"message":[1,2]}"#, "1,2"),
            (r#"{"message":{}}"#, "[object Object]"),
            (r#"{"message":true}"#, "true"),
            (r#"{"message":[]}"#, ""),
            (r#"{"message":1e21}"#, "1e+21"),
        ] {
            assert_eq!(json(body).unwrap().message(), text, "{body}");
        }
    }

    #[test]
    fn a_missing_or_falsy_message_is_required() {
        for body in [
            "{}",
            r#"{"message":""}"#,
            r#"{"message":0}"#,
            r#"{"message":false}"#,
            r#"{"message":null}"#,
            "[1]",
            "",
        ] {
            let error = json(body).unwrap_err();
            assert!(
                matches!(error, ChatBodyError::MessageRequired(_)),
                "{body}: {error:?}"
            );
            assert_eq!(error.to_string(), "Message is required");
        }
    }

    #[test]
    fn a_byte_order_mark_and_invalid_utf8_are_tolerated_as_body_parser_did() {
        let request =
            ChatRequestBody::parse(BodyKind::Json, b"\xef\xbb\xbf{\"message\":\"h\xffi\"}")
                .unwrap();
        assert_eq!(request.try_into_domain().unwrap().message(), "h\u{fffd}i");
    }

    #[test]
    fn a_message_with_no_text_form_is_refused_not_a_server_error() {
        assert!(matches!(
            json(r#"{"message":{"toString":1}}"#),
            Err(ChatBodyError::NotText(_))
        ));
    }

    #[test]
    fn a_falsy_context_is_no_context() {
        for body in [
            r#"{"message":"hi"}"#,
            r#"{"message":"hi","context":0}"#,
            r#"{"message":"hi","context":""}"#,
        ] {
            assert_eq!(json(body).unwrap().context(), None, "{body}");
        }
        let request = json(r#"{"message":"hi","context":"x"}"#).unwrap();
        assert_eq!(request.context().map(ClientValue::as_wire), Some(r#""x""#));
    }

    #[test]
    fn malformed_json_and_top_level_primitives_are_invalid_bodies() {
        assert!(matches!(
            json(r#"{"message":"#),
            Err(ChatBodyError::InvalidJson(_))
        ));
        for body in [r#""x""#, "null", "5", "   "] {
            assert!(
                matches!(json(body), Err(ChatBodyError::NotAnObject)),
                "{body}"
            );
        }
    }

    #[test]
    fn a_form_body_is_parsed_with_nested_context() {
        let request = request(BodyKind::Form, "message=hi&context[a]=1").unwrap();
        assert_eq!(request.message(), "hi");
        assert_eq!(
            request.context().map(ClientValue::as_wire),
            Some(r#"{"a":"1"}"#)
        );
    }

    #[test]
    fn a_body_of_another_type_is_ignored_so_the_message_is_missing() {
        assert!(matches!(
            request(BodyKind::Other, r#"{"message":"hi"}"#),
            Err(ChatBodyError::MessageRequired(_))
        ));
    }
}
