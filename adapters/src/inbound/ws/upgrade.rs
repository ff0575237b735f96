//! The RFC 6455 opening handshake on `/ws/audio`, done by hand so that the socket that follows
//! is configured by us (see the module above). Everything that can refuse a client does so
//! before `101`, with a status and a JSON body saying why: a malformed handshake, a foreign
//! browser origin (403), missing or bad credentials (401), the connection limit (503), and a
//! connection store that cannot take one more (503).

use std::net::SocketAddr;
use std::sync::Arc;

use aimcs_application::NewConnection;
use http::header::{
    AUTHORIZATION, CONNECTION, HOST, ORIGIN, RETRY_AFTER, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE, USER_AGENT, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper::upgrade::OnUpgrade;
use tracing::Instrument as _;
use warp::reply::Response;

use super::WsContext;
use super::socket::{Io, WsSocket};
use super::{connection, echo};
use crate::inbound::auth::{self, AuthError, Authenticator};
use crate::inbound::errors::{ErrorCode, auth_error_code, open_error_code};
use crate::inbound::http::response;

/// The WebSocket endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/ws/audio`: the service.
    Audio,
    /// `/ws/echo`: every message sent back, for conformance tests.
    Echo,
}

impl Endpoint {
    /// The endpoint's path.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Audio => "/ws/audio",
            Self::Echo => "/ws/echo",
        }
    }
}

/// What the upgrade needs from the request.
pub(crate) struct UpgradeRequest {
    pub(crate) endpoint: Endpoint,
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    pub(crate) on_upgrade: Option<OnUpgrade>,
    pub(crate) peer: Option<SocketAddr>,
    /// The raw query string, which may carry `token=`.
    pub(crate) query: Option<String>,
    /// The TCP connection's slot, held by the WebSocket for as long as it lives.
    pub(crate) tcp_slot: Option<crate::inbound::http::TcpSlot>,
}

/// Answers an upgrade request: `101` and a connection task, or an error response saying what
/// was wrong with the request.
pub(crate) async fn upgrade(mut request: UpgradeRequest, context: Arc<WsContext>) -> Response {
    let key = match check_handshake(&request) {
        Ok(key) => key,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = check_origin(&request.headers, &context) {
        return refusal;
    }
    let Some(on_upgrade) = request.on_upgrade.take() else {
        // hyper only offers an upgrade on HTTP/1.1 requests that ask for one.
        return response::error(
            ErrorCode::BadHandshake,
            "WebSocket upgrade needs an HTTP/1.1 request",
        );
    };
    if context.shutdown.is_cancelled() {
        return response::error(ErrorCode::Unavailable, "server is shutting down");
    }
    let Ok(ws_slot) = std::sync::Arc::clone(&context.slots).try_acquire_owned() else {
        tracing::warn!(
            limit = context.settings.max_connections,
            "websocket refused: connection limit reached"
        );
        let mut refusal = response::error(
            ErrorCode::TooManyConnections,
            "too many WebSocket connections; try again shortly",
        );
        refusal
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("5"));
        return refusal;
    };

    // After the limit, so that a refused client does not spend its single-use token.
    let Authenticated {
        subprotocol,
        redeemed,
    } = match authenticate(&request, context.auth.as_deref()) {
        Ok(authenticated) => authenticated,
        Err(refusal) => return refusal,
    };

    let (max_message, read_size) = (
        context.settings.max_message_bytes,
        context.settings.read_buffer_bytes,
    );
    let socket = async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (io, early) = Io::from_upgraded(upgraded);
                Some(WsSocket::new(io, &early, max_message, read_size))
            }
            Err(error) => {
                tracing::warn!(error = %error, "websocket upgrade did not complete");
                None
            }
        }
    };
    let tracker = context.tracker.clone();
    let slot = (ws_slot, request.tcp_slot.take());
    match request.endpoint {
        Endpoint::Echo => {
            let span = tracing::info_span!("ws_echo", connection_id = %uuid::Uuid::new_v4());
            tracker.spawn(
                async move {
                    let _slot = slot;
                    if let Some(socket) = socket.await {
                        echo::run(socket, context).await;
                    }
                }
                .instrument(span),
            );
        }
        Endpoint::Audio => {
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
                    // Refused through no fault of the client's: its token stays usable.
                    if let (Some(auth), Some(token)) = (context.auth.as_deref(), &redeemed) {
                        auth.unredeem(token);
                    }
                    return response::error(
                        open_error_code(&error),
                        "connection could not be registered; try again",
                    );
                }
            };
            // The session id is filled in once the connection has a session.
            let span = tracing::info_span!(
                "ws",
                connection_id = %connection.id(),
                session_id = tracing::field::Empty
            );
            // Boxed until the upgrade completes: what the task captures stays in its memory
            // for as long as it lives, beside the connection's own state that moves them in.
            let opened = Box::new((connection, greeting));
            tracker.spawn(
                async move {
                    // Held for as long as the connection lives.
                    let _slot = slot;
                    let socket = socket.await;
                    let (connection, greeting) = *opened;
                    match socket {
                        Some(socket) => {
                            connection::run(socket, connection, greeting, context).await
                        }
                        // Boxed, as every rare path of a connection task is: the task's
                        // memory is the largest of its paths, and idle connections pay it.
                        None => Box::pin(connection::abandon(connection, &context)).await,
                    }
                }
                .instrument(span),
            );
        }
    }

    let mut response = response::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, key);
    if subprotocol {
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(auth::SUBPROTOCOL),
        );
    }
    response
}

/// Refuses a browser whose page is not on the allow-list: without this, any web page a user
/// visits could open a socket here with the user's cookies and network position (cross-site
/// WebSocket hijacking). Besides the list, a page's own origin (the page this service
/// serves) is allowed where DNS rebinding cannot forge it: a general "same origin as `Host`"
/// rule would let rebinding through, since an attacker's page under a name that resolves here
/// has a matching `Host`. It cannot forge a loopback `Host` (its page would have to be on
/// localhost), nor an `https` origin (the browser would need this service's certificate for the
/// attacker's name). So own origins count over HTTPS and on loopback hosts. Clients that are
/// not browsers send no `Origin`.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, built once"
)]
fn check_origin(headers: &HeaderMap, context: &super::WsContext) -> Result<(), Response> {
    let Some(origin) = headers.get(ORIGIN) else {
        if context.settings.allow_missing_origin {
            return Ok(());
        }
        tracing::info!(
            "websocket refused: no Origin header and non-browser clients are not allowed"
        );
        return Err(response::error(
            ErrorCode::ForbiddenOrigin,
            "an Origin header is required on this server",
        ));
    };
    if context.origins.allows(origin) || is_unforgeable_own_origin(origin, headers.get(HOST)) {
        return Ok(());
    }
    tracing::warn!(origin = ?origin, "websocket refused: origin not allowed");
    Err(response::error(
        ErrorCode::ForbiddenOrigin,
        "this origin may not open a WebSocket here; add it to cors.allowed_origins",
    ))
}

/// Whether `origin` is `https://` + `host`, or `http://` + `host` with `host` a loopback name
/// or address.
fn is_unforgeable_own_origin(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), host.map(HeaderValue::to_str)) else {
        return false;
    };
    let same = |authority: &str| authority.eq_ignore_ascii_case(host);
    origin.strip_prefix("https://").is_some_and(same)
        || (origin.strip_prefix("http://").is_some_and(same) && is_loopback_host(host))
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map_or(bracketed, |(ip, _)| ip),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks credentials when authentication is on, and says whether to answer with the
/// `aimcs.v1` subprotocol (whenever the client offered it: a browser that offered
/// subprotocols drops a connection whose answer names none).
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, built once"
)]
fn authenticate(
    request: &UpgradeRequest,
    authenticator: Option<&Authenticator>,
) -> Result<Authenticated, Response> {
    let offered = request
        .headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let (subprotocol_token, offers_ours) = auth::token_from_subprotocols(&offered);
    if subprotocol_token.is_some() && !offers_ours {
        return Err(response::error(
            ErrorCode::BadHandshake,
            "a token in Sec-WebSocket-Protocol must be offered beside aimcs.v1",
        ));
    }
    let mut authenticated = Authenticated {
        subprotocol: offers_ours,
        redeemed: None,
    };
    let Some(authenticator) = authenticator else {
        return Ok(authenticated);
    };
    let query_token = request.query.as_deref().and_then(token_from_query);
    let outcome = match (
        subprotocol_token.or(query_token),
        request.headers.get(AUTHORIZATION),
    ) {
        (Some(token), _) => authenticator.redeem(token).map(|()| {
            authenticated.redeemed = Some(token.to_owned());
        }),
        (None, Some(authorization)) => authenticator.check_api_key(authorization.to_str().ok()),
        (None, None) => Err(AuthError::Missing),
    };
    match outcome {
        Ok(()) => Ok(authenticated),
        Err(error) => {
            // The outcome only: the credential itself never reaches the logs.
            tracing::warn!(reason = %error, "websocket refused: not authenticated");
            Err(unauthorized(error))
        }
    }
}

/// A client that may connect.
struct Authenticated {
    /// Whether to answer with the `aimcs.v1` subprotocol.
    subprotocol: bool,
    /// The token it spent, if it came with one.
    redeemed: Option<String>,
}

/// `401` saying what was wrong with the credentials.
pub(crate) fn unauthorized(error: AuthError) -> Response {
    let mut refusal = response::error(auth_error_code(error), &error.to_string());
    refusal.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="aimcs""#),
    );
    refusal
}

/// The `token` parameter of a query string. Tokens are base64url and `.`, which need no
/// percent-encoding; an encoded one simply fails to verify.
fn token_from_query(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|token| !token.is_empty())
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
            request.endpoint.path(),
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

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 section 4.2.2): the base64 of the SHA-1 of the
/// key and the protocol's GUID.
fn derive_accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha1 = sha1::Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
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
            endpoint: Endpoint::Audio,
            method: Method::GET,
            headers,
            on_upgrade: None,
            peer: None,
            query: None,
            tcp_slot: None,
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
    fn a_pages_own_origin_counts_over_https_and_on_a_loopback_host() {
        let own = |origin: &'static str, host: &'static str| {
            is_unforgeable_own_origin(
                &HeaderValue::from_static(origin),
                Some(&HeaderValue::from_static(host)),
            )
        };
        assert!(own("http://localhost:3000", "localhost:3000"));
        assert!(own("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(own("https://[::1]:443", "[::1]:443"));
        assert!(own("http://LOCALHOST", "localhost"));
        assert!(own("https://aimcs.example", "aimcs.example"));
        // DNS rebinding: a public name pointing at us, over plain HTTP.
        assert!(!own("http://evil.example:3000", "evil.example:3000"));
        assert!(!own("https://evil.example", "aimcs.example"));
        // Another loopback port is another origin.
        assert!(!own("http://localhost:3001", "localhost:3000"));
        assert!(!own("null", "localhost"));
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
