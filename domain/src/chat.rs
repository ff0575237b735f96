//! The chat endpoint's rule: for now it echoes the message back, as the original did, so that
//! front ends can exercise the round trip before a model answers for real.

use crate::ids::ChatReplyId;
use crate::message::ClientValue;

/// A chat request without a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Message is required")]
pub struct EmptyChatMessage;

/// A chat request: the message as text, and an optional context carried back unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    message: String,
    context: Option<ClientValue>,
}

impl ChatRequest {
    /// A request with `message`, as text; the adapter decides what counts as present.
    ///
    /// # Errors
    /// [`EmptyChatMessage`] when there is no message.
    pub fn new(
        message: Option<String>,
        context: Option<ClientValue>,
    ) -> Result<Self, EmptyChatMessage> {
        let message = message.ok_or(EmptyChatMessage)?;
        Ok(Self { message, context })
    }

    /// The message text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The context the client attached, if any.
    pub fn context(&self) -> Option<&ClientValue> {
        self.context.as_ref()
    }
}

/// The reply to a chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReply {
    /// The reply's id.
    pub id: ChatReplyId,
    /// The reply text.
    pub message: String,
    /// The request's context, unchanged.
    pub context: Option<ClientValue>,
}

impl ChatReply {
    /// The echo of `request`: its message prefixed with `Echo: `, its context unchanged.
    pub fn echo(id: ChatReplyId, request: ChatRequest) -> Self {
        Self {
            id,
            message: format!("Echo: {}", request.message),
            context: request.context,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_a_message_is_refused() {
        assert_eq!(ChatRequest::new(None, None), Err(EmptyChatMessage));
    }

    #[test]
    fn the_reply_echoes_the_message_and_keeps_the_context() {
        let context = Some(ClientValue::from_wire(r#"{"test":true}"#));
        let request = ChatRequest::new(Some("Hello!".into()), context.clone()).unwrap();
        let id = ChatReplyId::random();
        assert_eq!(
            ChatReply::echo(id, request),
            ChatReply {
                id,
                message: "Echo: Hello!".into(),
                context
            }
        );
    }

    #[test]
    fn an_empty_text_is_still_a_message() {
        // `[]` is a present message whose text is empty; the original answered "Echo: ".
        let request = ChatRequest::new(Some(String::new()), None).unwrap();
        assert_eq!(
            ChatReply::echo(ChatReplyId::random(), request).message,
            "Echo: "
        );
    }
}
