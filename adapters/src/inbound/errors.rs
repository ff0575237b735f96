//! The one table that turns every error a client can meet into a stable `code`, an HTTP status
//! and, for WebSocket errors that end the connection, a close code. HTTP bodies and WebSocket
//! `error` messages carry the same codes, so clients handle them once.

use aimcs_application::{HandleClientMessageError, OpenConnectionError, ReportError};
use aimcs_domain::Rejection;
use aimcs_domain::ports::SinkError;
use http::StatusCode;

use crate::inbound::auth::AuthError;
use crate::inbound::http::ChatBodyError;

/// Close code of a connection whose session was resumed on another connection (a private-use
/// code, in the 4000 range that RFC 6455 leaves to applications).
pub const SUPERSEDED_CLOSE: u16 = 4103;

/// Close code of a connection idle for longer than the idle timeout (a private-use code,
/// echoing HTTP's 408).
pub const IDLE_CLOSE: u16 = 4408;

/// A stable, snake_case error code, the same on HTTP and WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A WebSocket frame that is not a readable message (not JSON, empty, `null`).
    MalformedMessage,
    /// An `audio` message whose data is not valid base64 or not a string.
    InvalidAudio,
    /// The audio sink did not accept a chunk; it was not acknowledged and may be resent.
    AudioNotStored,
    /// The audio sink could not open, commit or finish a recording.
    RecordingUnavailable,
    /// A `seq` that is not a whole number from 0 up.
    InvalidSeq,
    /// A chunk whose number was skipped; the recording has moved past it.
    LateChunk,
    /// A `session_start` with an encoding the service does not take.
    UnsupportedEncoding,
    /// A `session_start` whose format is missing, malformed or contradictory.
    InvalidFormat,
    /// A `session_resume` without a usable session id or token.
    InvalidResume,
    /// A session is already active on the connection.
    SessionAlreadyActive,
    /// A session message with no session active.
    NoActiveSession,
    /// A resume of a session the service does not know (or that has finished).
    SessionNotFound,
    /// A resume with a token that is not the session's.
    InvalidResumeToken,
    /// A resume after the grace period.
    SessionExpired,
    /// A resume of a session another connection would not let go of.
    SessionInUse,
    /// The connection's session was resumed on another connection.
    Superseded,
    /// A message that has no meaning here (`audio_clear` on a recording).
    NotSupported,
    /// JSON nested deeper than the limit.
    JsonTooDeep,
    /// A message over the connection's rate limit; not handled, may be resent.
    RateLimited,
    /// A connection that stayed over its rate limit; it is closed (1008).
    RateLimitExceeded,
    /// A connection that sent nothing for the idle timeout; it is closed (4408).
    IdleTimeout,
    /// A peer that answered no ping; it is closed (1011).
    PingTimeout,
    /// A WebSocket upgrade from a browser origin that is not allowed.
    ForbiddenOrigin,
    /// No valid API key or token where authentication is required.
    Unauthorized,
    /// `POST /api/session` while authentication is off.
    AuthDisabled,
    /// The WebSocket connection limit is reached.
    TooManyConnections,
    /// A WebSocket message above the configured maximum size.
    MessageTooBig,
    /// A WebSocket text frame that is not valid UTF-8.
    InvalidUtf8,
    /// A WebSocket frame that breaks RFC 6455 (bad framing, unmasked, reserved bits).
    ProtocolViolation,
    /// A chat request without a message.
    MessageRequired,
    /// A chat message that has no text form.
    InvalidMessage,
    /// A request body that could not be parsed.
    InvalidBody,
    /// A request body above the configured maximum size.
    PayloadTooLarge,
    /// A request body compressed with a `Content-Encoding` the service does not decode.
    UnsupportedContentEncoding,
    /// A request body that did not arrive within the body timeout.
    RequestTimeout,
    /// A plain HTTP request to a port that speaks TLS.
    TlsRequired,
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
    /// A fault of ours; the details are in the logs, not in the answer.
    Internal,
}

impl ErrorCode {
    /// The code as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedMessage => "malformed_message",
            Self::InvalidAudio => "invalid_audio",
            Self::AudioNotStored => "audio_not_stored",
            Self::RecordingUnavailable => "recording_unavailable",
            Self::InvalidSeq => "invalid_seq",
            Self::LateChunk => "late_chunk",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::InvalidFormat => "invalid_format",
            Self::InvalidResume => "invalid_resume",
            Self::SessionAlreadyActive => "session_already_active",
            Self::NoActiveSession => "no_active_session",
            Self::SessionNotFound => "session_not_found",
            Self::InvalidResumeToken => "invalid_resume_token",
            Self::SessionExpired => "session_expired",
            Self::SessionInUse => "session_in_use",
            Self::Superseded => "superseded",
            Self::NotSupported => "not_supported",
            Self::JsonTooDeep => "json_too_deep",
            Self::RateLimited => "rate_limited",
            Self::RateLimitExceeded => "rate_limit_exceeded",
            Self::IdleTimeout => "idle_timeout",
            Self::PingTimeout => "ping_timeout",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::Unauthorized => "unauthorized",
            Self::AuthDisabled => "auth_disabled",
            Self::TooManyConnections => "too_many_connections",
            Self::MessageTooBig => "message_too_big",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::ProtocolViolation => "protocol_violation",
            Self::MessageRequired => "message_required",
            Self::InvalidMessage => "invalid_message",
            Self::InvalidBody => "invalid_body",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedContentEncoding => "unsupported_content_encoding",
            Self::RequestTimeout => "request_timeout",
            Self::TlsRequired => "tls_required",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UpgradeRequired => "upgrade_required",
            Self::BadHandshake => "bad_handshake",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
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
            | Self::InvalidUtf8
            | Self::ProtocolViolation
            | Self::InvalidSeq
            | Self::UnsupportedEncoding
            | Self::InvalidFormat
            | Self::InvalidResume
            | Self::NotSupported
            | Self::JsonTooDeep
            | Self::TlsRequired
            | Self::BadHandshake => StatusCode::BAD_REQUEST,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited | Self::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::IdleTimeout | Self::PingTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::ForbiddenOrigin => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::AuthDisabled => StatusCode::CONFLICT,
            Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            Self::SessionAlreadyActive
            | Self::NoActiveSession
            | Self::SessionInUse
            | Self::Superseded
            | Self::LateChunk => StatusCode::CONFLICT,
            Self::SessionNotFound | Self::SessionExpired => StatusCode::NOT_FOUND,
            Self::InvalidResumeToken => StatusCode::FORBIDDEN,
            Self::MessageTooBig | Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedContentEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Self::AudioNotStored | Self::RecordingUnavailable | Self::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 6455 close code when this error ends a WebSocket connection; `None` when the
    /// connection stays open.
    pub fn close_code(self) -> Option<u16> {
        match self {
            Self::MessageTooBig => Some(1009),
            Self::InvalidUtf8 => Some(1007),
            Self::ProtocolViolation => Some(1002),
            Self::Internal => Some(1011),
            Self::Superseded => Some(SUPERSEDED_CLOSE),
            Self::RateLimitExceeded => Some(1008),
            Self::IdleTimeout => Some(IDLE_CLOSE),
            Self::PingTimeout => Some(1011),
            _ => None,
        }
    }
}

/// The code for a refused client message.
pub fn rejection_code(rejection: &Rejection) -> ErrorCode {
    match rejection {
        Rejection::MalformedMessage(_) => ErrorCode::MalformedMessage,
        Rejection::InvalidAudio(_) => ErrorCode::InvalidAudio,
        Rejection::InvalidSeq(_) => ErrorCode::InvalidSeq,
        Rejection::LateChunk(_) => ErrorCode::LateChunk,
        Rejection::UnsupportedEncoding(_) => ErrorCode::UnsupportedEncoding,
        Rejection::InvalidFormat(_) => ErrorCode::InvalidFormat,
        Rejection::InvalidResume(_) => ErrorCode::InvalidResume,
        Rejection::SessionAlreadyActive => ErrorCode::SessionAlreadyActive,
        Rejection::NoActiveSession => ErrorCode::NoActiveSession,
        Rejection::SessionNotFound(_) => ErrorCode::SessionNotFound,
        Rejection::WrongResumeToken(_) => ErrorCode::InvalidResumeToken,
        Rejection::SessionExpired(_) => ErrorCode::SessionExpired,
        Rejection::NotSupported(_) => ErrorCode::NotSupported,
        Rejection::JsonTooDeep(_) => ErrorCode::JsonTooDeep,
        Rejection::RateLimited(_) => ErrorCode::RateLimited,
    }
}

/// The code for a client message that could not be carried out.
pub fn handle_error_code(error: &HandleClientMessageError) -> ErrorCode {
    match error {
        HandleClientMessageError::Sink {
            source: SinkError::Superseded(_) | SinkError::Finished(_),
            ..
        }
        | HandleClientMessageError::Recording {
            source: SinkError::Superseded(_) | SinkError::Finished(_),
            ..
        } => ErrorCode::Superseded,
        HandleClientMessageError::Sink { .. } => ErrorCode::AudioNotStored,
        HandleClientMessageError::Recording { .. } => ErrorCode::RecordingUnavailable,
        HandleClientMessageError::SessionStore { .. } => ErrorCode::Unavailable,
        HandleClientMessageError::SessionHeld { .. } => ErrorCode::SessionInUse,
    }
}

/// The code for a connection that could not be opened.
pub fn open_error_code(error: &OpenConnectionError) -> ErrorCode {
    match error {
        OpenConnectionError::Store { .. } => ErrorCode::Unavailable,
    }
}

/// The code for credentials that were refused. One code for every reason, so that a prober
/// learns nothing from it; the message says which, for honest clients.
pub fn auth_error_code(error: AuthError) -> ErrorCode {
    match error {
        AuthError::Missing
        | AuthError::InvalidKey
        | AuthError::InvalidToken
        | AuthError::ExpiredToken
        | AuthError::ReusedToken => ErrorCode::Unauthorized,
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
        ChatBodyError::TooDeep { .. } => ErrorCode::JsonTooDeep,
        ChatBodyError::TooSlow { .. } => ErrorCode::RequestTimeout,
        ChatBodyError::InvalidForm(crate::wire::form::FormError::TooManyParameters) => {
            ErrorCode::PayloadTooLarge
        }
        ChatBodyError::Unreadable(_)
        | ChatBodyError::InvalidJson(_)
        | ChatBodyError::NotAnObject
        | ChatBodyError::InvalidForm(_) => ErrorCode::InvalidBody,
        ChatBodyError::UnsupportedContentEncoding(_) => ErrorCode::UnsupportedContentEncoding,
        ChatBodyError::MessageRequired(_) => ErrorCode::MessageRequired,
        ChatBodyError::NotText(_) => ErrorCode::InvalidMessage,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const ALL: [ErrorCode; 42] = [
        ErrorCode::MalformedMessage,
        ErrorCode::InvalidAudio,
        ErrorCode::AudioNotStored,
        ErrorCode::RecordingUnavailable,
        ErrorCode::InvalidSeq,
        ErrorCode::LateChunk,
        ErrorCode::UnsupportedEncoding,
        ErrorCode::InvalidFormat,
        ErrorCode::InvalidResume,
        ErrorCode::SessionAlreadyActive,
        ErrorCode::NoActiveSession,
        ErrorCode::SessionNotFound,
        ErrorCode::InvalidResumeToken,
        ErrorCode::SessionExpired,
        ErrorCode::SessionInUse,
        ErrorCode::Superseded,
        ErrorCode::NotSupported,
        ErrorCode::JsonTooDeep,
        ErrorCode::RateLimited,
        ErrorCode::RateLimitExceeded,
        ErrorCode::IdleTimeout,
        ErrorCode::PingTimeout,
        ErrorCode::ForbiddenOrigin,
        ErrorCode::Unauthorized,
        ErrorCode::AuthDisabled,
        ErrorCode::TooManyConnections,
        ErrorCode::MessageTooBig,
        ErrorCode::InvalidUtf8,
        ErrorCode::ProtocolViolation,
        ErrorCode::MessageRequired,
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidBody,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedContentEncoding,
        ErrorCode::RequestTimeout,
        ErrorCode::TlsRequired,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UpgradeRequired,
        ErrorCode::BadHandshake,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    #[test]
    fn codes_are_distinct_snake_case_words() {
        let codes: HashSet<&str> = ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(codes.len(), ALL.len());
        for code in codes {
            assert!(
                code.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{code}"
            );
        }
    }

    #[test]
    fn client_mistakes_are_4xx_and_service_trouble_is_5xx() {
        for code in ALL {
            let status = code.status();
            let server_side = matches!(
                code,
                ErrorCode::AudioNotStored
                    | ErrorCode::RecordingUnavailable
                    | ErrorCode::Unavailable
                    | ErrorCode::TooManyConnections
                    | ErrorCode::Internal
            );
            assert_eq!(
                status.is_server_error(),
                server_side,
                "{code:?} -> {status}"
            );
        }
    }

    #[test]
    fn only_errors_that_leave_no_usable_stream_close_the_socket_each_with_its_rfc_code() {
        let closing: Vec<_> = ALL
            .iter()
            .filter_map(|code| code.close_code().map(|c| (*code, c)))
            .collect();
        assert_eq!(
            closing,
            [
                (ErrorCode::Superseded, 4103),
                (ErrorCode::RateLimitExceeded, 1008),
                (ErrorCode::IdleTimeout, 4408),
                (ErrorCode::PingTimeout, 1011),
                (ErrorCode::MessageTooBig, 1009),
                (ErrorCode::InvalidUtf8, 1007),
                (ErrorCode::ProtocolViolation, 1002),
                (ErrorCode::Internal, 1011),
            ]
        );
    }
}
