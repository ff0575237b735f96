//! Building responses: JSON with the charset Express declared, and error bodies of one shape,
//! `{"error": "<what happened>", "code": "<stable code>"}`. The seed's only error body was
//! `{"error":"Message is required"}`; the `code` field is added, nothing renamed.

use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, StatusCode};
use serde::Serialize;
use warp::reply::Response;

use crate::inbound::errors::ErrorCode;

const JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");

/// A response with `status` and the JSON text `body`.
pub(crate) fn json_text(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

/// A response with `status` and `body` serialised as JSON.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => json_text(status, text),
        // Only a map with non-string keys or a failing `Serialize` impl can fail here, and
        // none of our bodies has either; still, answer rather than panic.
        Err(error) => {
            tracing::error!(error = %error, "response body could not be serialised");
            // Written by hand: serialising again could fail again.
            let code = ErrorCode::Internal;
            json_text(
                code.status(),
                format!(
                    r#"{{"error":"Internal server error","code":"{}"}}"#,
                    code.as_str()
                ),
            )
        }
    }
}

/// A response without a body.
pub(crate) fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Vec::new().into());
    *response.status_mut() = status;
    response
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What happened, for people.
    error: String,
    /// What happened, for programs: a stable snake_case code (see the README's table).
    #[schema(value_type = String, example = "message_required")]
    code: &'static str,
}

/// An error response for `code`, saying `message`.
pub(crate) fn error(code: ErrorCode, message: &str) -> Response {
    json(
        code.status(),
        &ErrorBody {
            error: message.to_owned(),
            code: code.as_str(),
        },
    )
}

/// `404` for a path no route serves.
pub(crate) fn not_found(method: &Method, path: &str) -> Response {
    error(ErrorCode::NotFound, &format!("Cannot {method} {path}"))
}

/// `405` for a method a route does not serve, naming the ones it does.
pub(crate) fn method_not_allowed(method: &Method, path: &str, allowed: &'static str) -> Response {
    let mut response = error(
        ErrorCode::MethodNotAllowed,
        &format!("Cannot {method} {path}: allowed methods are {allowed}"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    response
}
