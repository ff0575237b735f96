//! The RFC 6455 opening handshake on `/ws/audio`, done by hand so that the socket that follows
//! is configured by us (see the module above). A connection is registered before `101` is
//! sent: if the store cannot take it, the client gets a clear `503` instead of a socket that
//! closes at once.

use std::net::SocketAddr;

use aimcs_application::NewConnection;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE, USER_AGENT,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Instrument as _;
use warp::reply::Response;

use super::WsContext;
use super::connection;
use crate::inbound::errors::{ErrorCode, open_error_code};
use crate::inbound::http::response;

/// What the upgrade needs from the request.
pub(crate) struct UpgradeRequest {
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    pub(crate) on_upgrade: Option<OnUpgrade>,
    pub(crate) peer: Option<SocketAddr>,
}

/// Answers an upgrade request: `101` and a connection task, or an error response saying what
/// was wrong with the request.
pub(crate) async fn upgrade(request: UpgradeRequest, context: WsContext) -> Response {
    let key = match check_handshake(&request) {
        Ok(key) => key,
        Err(refusal) => return refusal,
    };
    let Some(on_upgrade) = request.on_upgrade else {
        // hyper only offers an upgrade on HTTP/1.1 requests that ask for one.
        return response::error(
            ErrorCode::BadHandshake,
            "WebSocket upgrade needs an HTTP/1.1 request",
        );
    };
    if context.shutdown.is_cancelled() {
        return response::error(ErrorCode::Unavailable, "server is shutting down");
    }

    let new = NewConnection {
        peer: request.peer.map(|addr| addr.to_string()),
        user_agent: request
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let (connection, greeting) = match context.service.open_connection(new).await {
        Ok(opened) => opened,
        Err(error) => {
            tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "websocket connection refused");
            return response::error(
                open_error_code(&error),
                "connection could not be registered; try again",
            );
        }
    };

    let span = tracing::info_span!("ws", connection_id = %connection.id());
    let config = WebSocketConfig::default()
        .read_buffer_size(context.settings.read_buffer_bytes)
        // Replies are small and each is flushed at once; a large write buffer would only be
        // memory held per connection.
        .write_buffer_size(0)
        .max_message_size(Some(context.settings.max_message_bytes))
        .max_frame_size(Some(context.settings.max_message_bytes));
    let tracker = context.tracker.clone();
    tracker.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    connection::run(socket, connection, greeting, context).await;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "websocket upgrade did not complete");
                    connection::abandon(connection, &context).await;
                }
            }
        }
        .instrument(span),
    );

    let mut response = response::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, key);
    response
}

/// Checks the request against RFC 6455 section 4.2.1 and returns the `Sec-WebSocket-Accept`
/// value to answer with.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, built once"
)]
fn check_handshake(request: &UpgradeRequest) -> Result<HeaderValue, Response> {
    let headers = &request.headers;
    if request.method != Method::GET {
        return Err(response::method_not_allowed(
            &request.method,
            "/ws/audio",
            "GET",
        ));
    }
    if !header_has_token(headers, &UPGRADE, "websocket") {
        let mut refusal = response::error(
            ErrorCode::UpgradeRequired,
            "this endpoint only speaks WebSocket: send an Upgrade: websocket request",
        );
        refusal
            .headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        refusal
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        return Err(refusal);
    }
    if !header_has_token(headers, &CONNECTION, "upgrade") {
        return Err(response::error(
            ErrorCode::BadHandshake,
            "the Connection header must include Upgrade",
        ));
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        // RFC 6455 section 4.4: name the version we speak.
        let mut refusal = response::error(
            ErrorCode::UpgradeRequired,
            "unsupported WebSocket version: only 13 is spoken",
        );
        refusal
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(refusal);
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if !is_valid_key(key) {
        return Err(response::error(
            ErrorCode::BadHandshake,
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    HeaderValue::from_str(&derive_accept_key(key))
        .map_err(|_| response::error(ErrorCode::BadHandshake, "Sec-WebSocket-Key is not usable"))
}

/// Whether a comma-separated header holds `token`, ignoring case and spaces.
fn header_has_token(headers: &HeaderMap, name: &http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// A key is a nonce of 16 bytes in base64: 22 symbols and `==`.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&'static str, &'static str)]) -> UpgradeRequest {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        UpgradeRequest {
            method: Method::GET,
            headers,
            on_upgrade: None,
            peer: None,
        }
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        GOOD.iter().copied().filter(|(n, _)| *n != name).collect()
    }

    #[test]
    fn a_valid_handshake_is_answered_with_the_rfc_accept_key() {
        // The example of RFC 6455 section 1.3.
        let accept = check_handshake(&request(&GOOD)).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_request_without_upgrade_is_told_an_upgrade_is_required() {
        let refusal = check_handshake(&request(&without("upgrade"))).unwrap_err();
        assert_eq!(refusal.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(refusal.headers()[UPGRADE], "websocket");
    }

    #[test]
    fn a_wrong_version_is_refused_naming_the_version_we_speak() {
        let mut headers = without("sec-websocket-version");
        headers.push(("sec-websocket-version", "8"));
        let refusal = check_handshake(&request(&headers)).unwrap_err();
        assert_eq!(
            (refusal.status(), &refusal.headers()[SEC_WEBSOCKET_VERSION]),
            (
                StatusCode::UPGRADE_REQUIRED,
                &HeaderValue::from_static("13")
            )
        );
    }

    #[test]
    fn a_missing_or_malformed_key_is_a_bad_handshake() {
        let mut short = without("sec-websocket-key");
        short.push(("sec-websocket-key", "c2hvcnQ="));
        for headers in [without("sec-websocket-key"), short] {
            let refusal = check_handshake(&request(&headers)).unwrap_err();
            assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn a_connection_header_without_upgrade_is_a_bad_handshake() {
        let mut headers = without("connection");
        headers.push(("connection", "keep-alive"));
        assert_eq!(
            check_handshake(&request(&headers)).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn an_upgrade_by_post_is_a_wrong_method() {
        let mut post = request(&GOOD);
        post.method = Method::POST;
        let refusal = check_handshake(&post).unwrap_err();
        assert_eq!(
            (refusal.status(), &refusal.headers()[http::header::ALLOW]),
            (
                StatusCode::METHOD_NOT_ALLOWED,
                &HeaderValue::from_static("GET")
            )
        );
    }
}
