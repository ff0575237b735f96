//! The OpenAPI 3.1 description of the HTTP API, served at `/api/openapi.json` and kept in
//! `docs/openapi.json`. Response bodies are described by the very structs the handlers
//! serialise (their `ToSchema` derives follow their serde attributes), so renaming a field
//! changes the document; a test compares it with the committed copy, and schemathesis checks
//! live responses against it.
//!
//! The functions below only carry the `#[utoipa::path]` descriptions of the routes, which
//! warp composes elsewhere.
#![allow(
    dead_code,
    clippy::unused_async,
    reason = "the functions exist for their path descriptions"
)]

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::handlers::{
    ChatReplyBody, ClusterBody, HealthBody, ProbeBody, SessionTokenBody, StatusBody,
};
use super::response::ErrorBody;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "AIMCS backend",
        description = "Real-time audio ingest: a small HTTP API beside the /ws/audio WebSocket \
                       (described in docs/asyncapi.yaml).",
        license(name = "MIT")
    ),
    paths(health, status, chat, session, livez, readyz, metrics, ws_audio, openapi_json),
    modifiers(&ApiKeyScheme),
    components(schemas(
        HealthBody,
        StatusBody,
        ClusterBody,
        ChatRequest,
        ChatForm,
        ChatReplyBody,
        SessionTokenBody,
        ProbeBody,
        ErrorBody
    ))
)]
pub(crate) struct ApiDoc;

/// Declares the `api_key` scheme the authenticated operations name.
struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from auth.api_keys; required only when auth.enabled is on",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as served: pretty JSON, ending with a newline.
pub(crate) fn document() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"));
    json.push('\n');
    json
}

/// A chat request as JSON.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatRequest {
    /// The message: any truthy JSON value (a missing, empty, zero, `false` or `null` message
    /// is refused with `message_required`), echoed as JavaScript's `String()` writes it.
    #[schema(schema_with = truthy_json)]
    message: (),
    /// Echoed back when truthy, `{}` otherwise.
    #[schema(value_type = serde_json::Value, required = false, example = json!({"test": true}))]
    context: Option<()>,
}

/// A chat request as an HTML form, nested keys as Express's `qs` read them
/// (`message=hi&context[a]=1`).
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatForm {
    /// The message; an empty one is refused with `message_required`.
    #[schema(min_length = 1, example = "Hello!")]
    message: String,
    /// Echoed back.
    #[schema(value_type = Object, required = false)]
    context: Option<()>,
}

/// What JavaScript calls truthy, as JSON can say it: a non-empty string, a non-zero number,
/// `true`, an object or an array.
fn truthy_json() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .exclusive_minimum(Some(0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .exclusive_maximum(Some(0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([true])),
        )
        .item(ObjectBuilder::new().schema_type(Type::Object))
        .item(ObjectBuilder::new().schema_type(Type::Array))
        .examples([serde_json::json!("Hello!")])
        .build()
        .into()
}

/// The service is up.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "The service answers", body = HealthBody)))]
async fn health() {}

/// What the service serves.
#[utoipa::path(get, path = "/api/status", tag = "service",
    responses((status = 200, description = "Running", body = StatusBody)))]
async fn status() {}

/// Echoes a message (a stand-in until a model answers).
#[utoipa::path(post, path = "/api/chat", tag = "chat",
    request_body(content(
        (ChatRequest = "application/json"),
        (ChatForm = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "The echo", body = ChatReplyBody),
        (status = 400, description = "No message (`message_required`), a message with no text form \
            (`invalid_message`), an unreadable body (`invalid_body`) or JSON nested too deep \
            (`json_too_deep`)", body = ErrorBody),
        (status = 401, description = "Authentication is on and no valid API key was sent", body = ErrorBody),
        (status = 408, description = "The body took longer than the body timeout", body = ErrorBody),
        (status = 413, description = "The body is larger than the limit", body = ErrorBody),
        (status = 415, description = "A compressed body", body = ErrorBody),
    ),
    security((), ("api_key" = [])))]
async fn chat() {}

/// A browser token for one WebSocket, for a server holding an API key.
#[utoipa::path(post, path = "/api/session", tag = "auth",
    responses(
        (status = 200, description = "A token", body = SessionTokenBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 409, description = "Authentication is off (`auth_disabled`)", body = ErrorBody),
    ),
    security(("api_key" = [])))]
async fn session() {}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/livez", tag = "probes",
    responses((status = 200, description = "Alive", body = ProbeBody)))]
async fn livez() {}

/// Readiness: whether new clients should be sent here.
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "Ready", body = ProbeBody),
        (status = 503, description = "Draining, full, or the connection store or audio sink does not answer", body = ProbeBody),
    ))]
async fn readyz() {}

/// Prometheus metrics, in the text exposition format (unless moved to their own port).
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, description = "The exposition", content_type = "text/plain", body = String)))]
async fn metrics() {}

/// The WebSocket endpoint; a plain request is told to upgrade. The protocol is in
/// docs/asyncapi.yaml.
#[utoipa::path(get, path = "/ws/audio", tag = "websocket",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "A malformed handshake", body = ErrorBody),
        (status = 401, description = "Authentication is on and no valid credential was sent", body = ErrorBody),
        (status = 403, description = "A browser origin that is not allowed", body = ErrorBody),
        (status = 426, description = "Not an upgrade request", body = ErrorBody),
        (status = 503, description = "The connection limit is reached, or the service is shutting down", body = ErrorBody),
    ))]
async fn ws_audio() {}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi_json() {}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::document;

    /// The committed copy; `AIMCS_UPDATE_OPENAPI=1 cargo test -p aimcs-adapters openapi`
    /// rewrites it after an intended change.
    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");

    #[test]
    fn the_committed_openapi_document_matches_the_code() {
        let generated = document();
        if std::env::var_os("AIMCS_UPDATE_OPENAPI").is_some() {
            std::fs::write(COMMITTED, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(Path::new(COMMITTED)).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the API the code describes; if the change is \
             intended, run AIMCS_UPDATE_OPENAPI=1 cargo test -p aimcs-adapters openapi and \
             review the diff"
        );
    }
}
