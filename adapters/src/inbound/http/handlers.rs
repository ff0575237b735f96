//! Handlers: each takes what its route extracted and always answers; failures become error
//! responses through the table in `inbound::errors`.

use std::sync::Arc;

use aimcs_application::{ClusterReport, HealthReport, IngestService, StatusReport};
use aimcs_domain::{ChatReply, Stamped, Timestamp};
use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt as _};
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use warp::reply::Response;

use super::chat::{BodyKind, ChatBodyError, ChatRequestBody};
use super::response;
use super::{HttpSettings, Readiness};
use crate::inbound::auth::{self, Authenticator};
use crate::inbound::errors::{ErrorCode, chat_error_code, report_error_code};
use crate::inbound::ws;
use crate::wire::json_depth::nests_deeper_than;
use crate::wire::timestamp::to_iso;

/// The endpoints `/api/status` lists, as the original listed them.
const ENDPOINTS: [&str; 4] = [
    "GET /health",
    "GET /api/status",
    "POST /api/chat",
    "WS /ws/audio",
];

/// `/health`, in the original's field order.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status":"healthy","timestamp":"2026-11-25T10:24:09.078Z","uptime":12.345678,"connections":0,"version":"1.0.0"}))]
pub(crate) struct HealthBody {
    /// Always `healthy` while the service answers.
    #[schema(value_type = String, example = "healthy")]
    status: &'static str,
    /// When the answer was made, ISO-8601 UTC with milliseconds.
    timestamp: String,
    /// Seconds since the service started.
    uptime: f64,
    /// Open WebSocket connections.
    #[schema(value_type = u64)]
    connections: usize,
    /// The service's version.
    #[schema(value_type = String)]
    version: &'static str,
    /// Every replica's counts; only with a shared (Redis) connection store.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterBody>,
}

/// The replicas sharing the connection store. `connections` and `activeConnections` beside
/// it keep the original's meaning: this replica's.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status":"ok","replica":"9f1c2a40e7b34c0d","replicas":2,"connections":7,"sessions":3}))]
pub(crate) struct ClusterBody {
    /// `ok`, or `unreachable` when the shared store does not answer (no counts then).
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
    /// This replica's id in the shared store.
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
    /// Replicas alive, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    replicas: Option<usize>,
    /// Open WebSocket connections on all replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    connections: Option<usize>,
    /// Declared sessions held by all replicas, streaming or waiting for a resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    sessions: Option<usize>,
}

impl From<ClusterReport> for ClusterBody {
    fn from(report: ClusterReport) -> Self {
        match report {
            ClusterReport::Seen(view) => Self {
                status: "ok",
                replica: Some(view.replica),
                replicas: Some(view.replicas),
                connections: Some(view.connections),
                sessions: Some(view.sessions),
            },
            ClusterReport::Unreachable => Self {
                status: "unreachable",
                replica: None,
                replicas: None,
                connections: None,
                sessions: None,
            },
        }
    }
}

impl From<HealthReport> for HealthBody {
    fn from(report: HealthReport) -> Self {
        Self {
            status: "healthy",
            timestamp: to_iso(report.at),
            // Microseconds: finer digits are float noise, not information.
            uptime: report.uptime.as_micros() as f64 / 1e6,
            connections: report.connections,
            version: report.version,
            cluster: report.cluster.map(ClusterBody::from),
        }
    }
}

/// `/api/status`, in the original's field order.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusBody {
    /// Always `AIMCS Backend API is running`.
    #[schema(value_type = String)]
    message: &'static str,
    /// When the answer was made.
    timestamp: String,
    /// Open WebSocket connections.
    #[schema(value_type = u64)]
    active_connections: usize,
    /// The original's four endpoints.
    #[schema(value_type = Vec<String>)]
    endpoints: [&'static str; 4],
    /// Every replica's counts; only with a shared (Redis) connection store.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterBody>,
}

impl From<StatusReport> for StatusBody {
    fn from(report: StatusReport) -> Self {
        Self {
            message: "AIMCS Backend API is running",
            timestamp: to_iso(report.at),
            active_connections: report.active_connections,
            endpoints: ENDPOINTS,
            cluster: report.cluster.map(ClusterBody::from),
        }
    }
}

/// The chat reply, in the original's field order.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatReplyBody {
    /// A UUID.
    id: String,
    /// `Echo: ` and the message as JavaScript's `String()` writes it.
    message: String,
    /// When the answer was made.
    timestamp: String,
    /// The request's `context` when truthy, `{}` otherwise: any JSON value.
    #[schema(value_type = serde_json::Value)]
    context: Box<RawValue>,
}

impl ChatReplyBody {
    fn new(reply: Stamped<ChatReply>) -> Result<Self, serde_json::Error> {
        let Stamped {
            at,
            value:
                ChatReply {
                    id,
                    message,
                    context,
                },
        } = reply;
        let context =
            context.map_or_else(|| "{}".to_owned(), |context| context.as_wire().to_owned());
        Ok(Self {
            id: id.to_string(),
            message,
            timestamp: to_iso(at),
            context: RawValue::from_string(context)?,
        })
    }
}

/// `/health`: GET or HEAD.
pub(super) async fn health(method: Method, service: Arc<IngestService>) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return response::method_not_allowed(&method, "/health", "GET, HEAD");
    }
    match service.health().await {
        Ok(report) => response::json(StatusCode::OK, &HealthBody::from(report)),
        Err(error) => {
            tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "health report failed");
            response::error(report_error_code(&error), "health could not be determined")
        }
    }
}

/// `/api/status`: GET or HEAD.
pub(super) async fn status(method: Method, service: Arc<IngestService>) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return response::method_not_allowed(&method, "/api/status", "GET, HEAD");
    }
    match service.status().await {
        Ok(report) => response::json(StatusCode::OK, &StatusBody::from(report)),
        Err(error) => {
            tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "status report failed");
            response::error(report_error_code(&error), "status could not be determined")
        }
    }
}

/// `/metrics`: GET or HEAD.
pub(crate) fn metrics(method: &Method, render: &super::RenderMetrics) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return response::method_not_allowed(method, "/metrics", "GET, HEAD");
    }
    let mut answer = Response::new(render().into());
    answer.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    answer
}

/// `/livez`: the process is up and serving requests.
pub(super) async fn livez(method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return response::method_not_allowed(&method, "/livez", "GET, HEAD");
    }
    response::json(StatusCode::OK, &ProbeBody { status: "alive" })
}

/// `/readyz`: whether new clients should be sent here: not while draining, not with every
/// WebSocket slot taken, not while the connection store or the audio sink does not answer.
pub(super) async fn readyz(method: Method, readiness: Readiness) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return response::method_not_allowed(&method, "/readyz", "GET, HEAD");
    }
    let status = if readiness.draining.is_cancelled() {
        "draining"
    } else if readiness.ws_slots.available_permits() == 0 {
        "full"
    } else if let Err(error) = readiness.service.readiness().await {
        tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "not ready");
        "unavailable"
    } else {
        "ready"
    };
    let code = if status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    response::json(code, &ProbeBody { status })
}

/// The body of `/livez` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ProbeBody {
    /// `alive`; `ready`, `draining`, `full` or `unavailable`.
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
}

/// A browser token, as `POST /api/session` returns it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionTokenBody {
    /// The token: opens one WebSocket, once, before it expires.
    token: String,
    /// When it expires.
    expires_at: String,
    /// Seconds until it expires.
    expires_in: u64,
    /// The subprotocol to offer beside it: `aimcs.v1`.
    #[schema(value_type = String, example = "aimcs.v1")]
    protocol: &'static str,
}

/// `POST /api/session`: a browser token, for a server holding an API key.
pub(super) async fn mint_session(
    method: Method,
    headers: HeaderMap,
    auth: Option<Arc<Authenticator>>,
) -> Response {
    if method != Method::POST {
        return response::method_not_allowed(&method, "/api/session", "POST");
    }
    let Some(auth) = auth else {
        return response::error(
            ErrorCode::AuthDisabled,
            "authentication is off on this server: open /ws/audio without a token",
        );
    };
    if let Err(refusal) = require_api_key(&auth, &headers) {
        return refusal;
    }
    let issued = auth.mint();
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX);
    let body = SessionTokenBody {
        expires_at: to_iso(Timestamp::from_unix_millis(
            i64::try_from(issued.expires_at_ms).unwrap_or(i64::MAX),
        )),
        expires_in: issued.expires_at_ms.saturating_sub(now_ms).div_ceil(1000),
        token: issued.token,
        protocol: auth::SUBPROTOCOL,
    };
    tracing::info!(expires_in_secs = body.expires_in, "browser token issued");
    let mut answer = response::json(StatusCode::OK, &body);
    // A token is a credential: no cache may keep it.
    answer
        .headers_mut()
        .insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    answer
}

/// Checks the request's API key; the refusal is the `401` to answer with.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, built once"
)]
pub(super) fn require_api_key(auth: &Authenticator, headers: &HeaderMap) -> Result<(), Response> {
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    auth.check_api_key(authorization).map_err(|error| {
        tracing::warn!(reason = %error, "request refused: not authenticated");
        ws::unauthorized(error)
    })
}

/// `/api/chat`: POST with a JSON or form body.
pub(super) async fn chat<S, B>(
    method: Method,
    headers: HeaderMap,
    body: S,
    service: Arc<IngestService>,
    settings: HttpSettings,
    auth: Option<Arc<Authenticator>>,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    if method != Method::POST {
        return response::method_not_allowed(&method, "/api/chat", "POST");
    }
    if let Some(auth) = auth
        && let Err(refusal) = require_api_key(&auth, &headers)
    {
        return refusal;
    }
    let kind = BodyKind::from_content_type(headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()));
    let parsed = async {
        check_content_encoding(&headers)?;
        let bytes = tokio::time::timeout(
            settings.body_timeout,
            read_body(&headers, body, settings.max_body_bytes),
        )
        .await
        .map_err(|_| ChatBodyError::TooSlow {
            secs: settings.body_timeout.as_secs(),
        })??;
        if kind == BodyKind::Json && nests_deeper_than(&bytes, settings.max_json_depth) {
            return Err(ChatBodyError::TooDeep {
                limit: settings.max_json_depth,
            });
        }
        ChatRequestBody::parse(kind, &bytes)?.try_into_domain()
    }
    .await;
    let request = match parsed {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(error = %error, "chat request refused");
            return response::error(chat_error_code(&error), &error.to_string());
        }
    };
    match ChatReplyBody::new(service.chat(request)) {
        Ok(body) => response::json(StatusCode::OK, &body),
        Err(error) => {
            // The context was written by our own JSON writer, so this means a bug there.
            tracing::error!(error = %error, "chat context is not valid JSON");
            response::error(ErrorCode::Internal, "Internal server error")
        }
    }
}

/// Refuses compressed bodies: the original's body-parser inflated gzip, but no client of this
/// API compresses requests, and decompressing is a way to turn a small body into a huge one.
fn check_content_encoding(headers: &HeaderMap) -> Result<(), ChatBodyError> {
    match headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim())
    {
        None => Ok(()),
        Some(encoding) if encoding.eq_ignore_ascii_case("identity") => Ok(()),
        Some(encoding) => Err(ChatBodyError::UnsupportedContentEncoding(
            encoding.to_owned(),
        )),
    }
}

/// Reads a whole body, refusing it as soon as it is known to exceed `limit`: at once from
/// `Content-Length`, or while streaming a chunked body.
async fn read_body<S, B>(
    headers: &HeaderMap,
    body: S,
    limit: usize,
) -> Result<BytesMut, ChatBodyError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ChatBodyError::TooLarge { limit });
    }
    let mut bytes =
        BytesMut::with_capacity(declared.map_or(0, |len| usize::try_from(len).unwrap_or(limit)));
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|error| ChatBodyError::Unreadable(error.to_string()))?;
        if bytes.len() + chunk.remaining() > limit {
            return Err(ChatBodyError::TooLarge { limit });
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let len = part.len();
            chunk.advance(len);
        }
    }
    Ok(bytes)
}
