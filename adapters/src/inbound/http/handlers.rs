//! Handlers: each takes what its route extracted and always answers; failures become error
//! responses through the table in `inbound::errors`.

use std::sync::Arc;

use aimcs_application::{HealthReport, IngestService, StatusReport};
use aimcs_domain::{ChatReply, Stamped};
use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt as _};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;
use warp::reply::Response;

use super::HttpSettings;
use super::chat::{BodyKind, ChatBodyError, ChatRequestBody};
use super::response;
use crate::inbound::errors::{ErrorCode, chat_error_code, report_error_code};
use crate::wire::timestamp::to_iso;

/// The endpoints `/api/status` lists, as the original listed them.
const ENDPOINTS: [&str; 4] = [
    "GET /health",
    "GET /api/status",
    "POST /api/chat",
    "WS /ws/audio",
];

/// `/health`, in the original's field order.
#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
    timestamp: String,
    uptime: f64,
    connections: usize,
    version: &'static str,
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
        }
    }
}

/// `/api/status`, in the original's field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    message: &'static str,
    timestamp: String,
    active_connections: usize,
    endpoints: [&'static str; 4],
}

impl From<StatusReport> for StatusBody {
    fn from(report: StatusReport) -> Self {
        Self {
            message: "AIMCS Backend API is running",
            timestamp: to_iso(report.at),
            active_connections: report.active_connections,
            endpoints: ENDPOINTS,
        }
    }
}

/// The chat reply, in the original's field order.
#[derive(Serialize)]
struct ChatReplyBody {
    id: String,
    message: String,
    timestamp: String,
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

/// `/api/chat`: POST with a JSON or form body.
pub(super) async fn chat<S, B>(
    method: Method,
    headers: HeaderMap,
    body: S,
    service: Arc<IngestService>,
    settings: HttpSettings,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    if method != Method::POST {
        return response::method_not_allowed(&method, "/api/chat", "POST");
    }
    let kind = BodyKind::from_content_type(headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()));
    let parsed = async {
        check_content_encoding(&headers)?;
        let bytes = read_body(&headers, body, settings.max_body_bytes).await?;
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
