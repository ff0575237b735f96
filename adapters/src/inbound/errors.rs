//! The one table that turns every error a client can meet into a stable `code`, an HTTP status
//! and, for WebSocket errors that end the connection, a close code. HTTP bodies and WebSocket
//! `error` messages carry the same codes, so clients handle them once.

use aimcs_application::{HandleClientMessageError, OpenConnectionError, ReportError};
use aimcs_domain::Rejection;
use http::StatusCode;

use crate::inbound::http::ChatBodyError;

/// A stable, snake_case error code, the same on HTTP and WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A WebSocket frame that is not a readable message (not JSON, empty, `null`).
    MalformedMessage,
    /// An `audio` message whose data is not valid base64 or not a string.
    InvalidAudio,
    /// The audio sink did not accept a chunk; it was not acknowledged and may be resent.
    AudioNotStored,
    /// A WebSocket message above the configured maximum size.
    MessageTooBig,
    /// A chat request without a message.
    MessageRequired,
    /// A chat message that has no text form.
    InvalidMessage,
    /// A request body that could not be parsed.
    InvalidBody,
    /// A request body above the configured maximum size.
    PayloadTooLarge,
    /// No such route.
    NotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// A plain request to the WebSocket endpoint.
    UpgradeRequired,
    /// A WebSocket upgrade request that breaks RFC 6455.
    BadHandshake,
    /// The service cannot serve now (shutting down, a store unreachable).
    Unavailable,
}

impl ErrorCode {
    /// The code as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedMessage => "malformed_message",
            Self::InvalidAudio => "invalid_audio",
            Self::AudioNotStored => "audio_not_stored",
            Self::MessageTooBig => "message_too_big",
            Self::MessageRequired => "message_required",
            Self::InvalidMessage => "invalid_message",
            Self::InvalidBody => "invalid_body",
            Self::PayloadTooLarge => "payload_too_large",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UpgradeRequired => "upgrade_required",
            Self::BadHandshake => "bad_handshake",
            Self::Unavailable => "unavailable",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedMessage
            | Self::InvalidAudio
            | Self::MessageRequired
            | Self::InvalidMessage
            | Self::InvalidBody
            | Self::BadHandshake => StatusCode::BAD_REQUEST,
            Self::MessageTooBig | Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Self::AudioNotStored | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The RFC 6455 close code when this error ends a WebSocket connection; `None` when the
    /// connection stays open.
    pub fn close_code(self) -> Option<u16> {
        match self {
            Self::MessageTooBig => Some(1009),
            _ => None,
        }
    }
}

/// The code for a refused client message.
pub fn rejection_code(rejection: &Rejection) -> ErrorCode {
    match rejection {
        Rejection::MalformedMessage(_) => ErrorCode::MalformedMessage,
        Rejection::InvalidAudio(_) => ErrorCode::InvalidAudio,
    }
}

/// The code for a client message that could not be carried out.
pub fn handle_error_code(error: &HandleClientMessageError) -> ErrorCode {
    match error {
        HandleClientMessageError::Sink { .. } => ErrorCode::AudioNotStored,
    }
}

/// The code for a connection that could not be opened.
pub fn open_error_code(error: &OpenConnectionError) -> ErrorCode {
    match error {
        OpenConnectionError::Store { .. } => ErrorCode::Unavailable,
    }
}

/// The code for a report that could not be made.
pub fn report_error_code(error: &ReportError) -> ErrorCode {
    match error {
        ReportError::Store(_) => ErrorCode::Unavailable,
    }
}

/// The code for a chat request body that was refused.
pub(crate) fn chat_error_code(error: &ChatBodyError) -> ErrorCode {
    match error {
        ChatBodyError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
        ChatBodyError::InvalidForm(crate::wire::form::FormError::TooManyParameters) => {
            ErrorCode::PayloadTooLarge
        }
        ChatBodyError::Unreadable(_)
        | ChatBodyError::InvalidJson(_)
        | ChatBodyError::NotAnObject
        | ChatBodyError::InvalidForm(_) => ErrorCode::InvalidBody,
        ChatBodyError::MessageRequired(_) => ErrorCode::MessageRequired,
        ChatBodyError::NotText(_) => ErrorCode::InvalidMessage,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const ALL: [ErrorCode; 13] = [
        ErrorCode::MalformedMessage,
        ErrorCode::InvalidAudio,
        ErrorCode::AudioNotStored,
        ErrorCode::MessageTooBig,
        ErrorCode::MessageRequired,
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidBody,
        ErrorCode::PayloadTooLarge,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UpgradeRequired,
        ErrorCode::BadHandshake,
        ErrorCode::Unavailable,
    ];

    #[test]
    fn codes_are_distinct_snake_case_words() {
        let codes: HashSet<&str> = ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(codes.len(), ALL.len());
        for code in codes {
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
    }

    #[test]
    fn client_mistakes_are_4xx_and_service_trouble_is_5xx() {
        for code in ALL {
            let status = code.status();
            let server_side = matches!(code, ErrorCode::AudioNotStored | ErrorCode::Unavailable);
            assert_eq!(
                status.is_server_error(),
                server_side,
                "{code:?} -> {status}"
            );
        }
    }

    #[test]
    fn only_an_oversized_message_closes_the_socket() {
        let closing: Vec<_> = ALL
            .iter()
            .filter_map(|code| code.close_code().map(|c| (*code, c)))
            .collect();
        assert_eq!(closing, [(ErrorCode::MessageTooBig, 1009)]);
    }
}
