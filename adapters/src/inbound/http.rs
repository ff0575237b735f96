//! The HTTP API: `GET /health`, `GET /api/status`, `POST /api/chat`, `POST /api/session`,
//! the probes `GET /livez` and `GET /readyz`, the upgrades on `/ws/audio` (and `/ws/echo`
//! when enabled), and JSON answers for everything else. Routes are small warp filters composed
//! once in [`routes`]; handlers are plain async functions that always produce a response, so
//! that no business error travels as a warp rejection.

mod chat;
mod cors;
mod handlers;
mod openapi;
mod page;
pub(crate) mod response;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use aimcs_application::IngestService;
use warp::filters::BoxedFilter;
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection};

pub(crate) use chat::ChatBodyError;
pub use cors::{CorsPolicy, InvalidOrigin};
pub(crate) use handlers::metrics as handlers_metrics;

use crate::inbound::auth::Authenticator;
use crate::inbound::ws::{self, WsContext};

/// Limits of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Largest request body accepted, in bytes; a larger one gets `413`.
    pub max_body_bytes: usize,
    /// How deeply a JSON body may nest.
    pub max_json_depth: usize,
    /// How long a request body may take to arrive, once the headers have: a client that
    /// trickles its body holds a connection and a buffer.
    pub body_timeout: std::time::Duration,
    /// Whether the client page is served at `/`.
    pub page: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_json_depth: 32,
            body_timeout: std::time::Duration::from_secs(30),
            page: true,
        }
    }
}

/// Renders the current metrics in the Prometheus text format.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What `/readyz` looks at.
#[derive(Clone)]
pub(crate) struct Readiness {
    /// Cancelled once shutdown begins.
    pub(crate) draining: tokio_util::sync::CancellationToken,
    /// The WebSocket slots: none free means no new client can be taken.
    pub(crate) ws_slots: Arc<tokio::sync::Semaphore>,
    /// The service, whose connection store must answer.
    pub(crate) service: Arc<IngestService>,
}

/// The peer address of a request's connection, put in the request's extensions by the server
/// (warp's own is private to `warp::serve`, which we do not use).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// The connection's place under `server.max_connections`, put in the request's extensions by
/// the server, so that a WebSocket keeps holding it after the upgrade.
#[derive(Debug, Clone)]
pub(crate) struct TcpSlot(
    #[expect(
        dead_code,
        reason = "held, never read: dropping the last clone frees the slot"
    )]
    pub(crate) Arc<tokio::sync::OwnedSemaphorePermit>,
);

/// Every route of the service, CORS excepted (the server applies it around all of them).
pub(crate) fn routes(
    service: Arc<IngestService>,
    settings: HttpSettings,
    ws: WsContext,
    readiness: Readiness,
    metrics: Option<RenderMetrics>,
) -> BoxedFilter<(Response,)> {
    let auth = ws.auth.clone();
    let echo = ws
        .settings
        .echo_endpoint
        .then(|| ws_upgrade(ws::Endpoint::Echo, ws.clone()));
    let routes = health(Arc::clone(&service))
        .or(status(Arc::clone(&service)))
        .unify()
        .or(probes(readiness))
        .unify()
        .or(openapi_route())
        .unify()
        .or(chat(service, settings, auth.clone()))
        .unify()
        .or(session(auth))
        .unify()
        .or(ws_upgrade(ws::Endpoint::Audio, ws))
        .unify()
        .boxed();
    let routes = match echo {
        Some(echo) => routes.or(echo).unify().boxed(),
        None => routes,
    };
    let routes = match settings.page {
        true => routes.or(page::routes()).unify().boxed(),
        false => routes,
    };
    match metrics {
        Some(render) => routes
            .or(metrics_route(render))
            .unify()
            .or(not_found())
            .unify()
            .boxed(),
        None => routes.or(not_found()).unify().boxed(),
    }
}

/// `GET /metrics`: the Prometheus text exposition.
pub(crate) fn metrics_route(
    render: RenderMetrics,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    route("/metrics")
        .and(warp::method())
        .map(move |method| handlers::metrics(&method, &render))
}

/// The route a path belongs to, as a metric label: one of the served paths, or `other`.
pub(crate) fn route_label(path: &str) -> &'static str {
    if let Some(page) = page::PATHS.iter().find(|served| **served == path) {
        return page;
    }
    const ROUTES: [&str; 10] = [
        "/health",
        "/api/status",
        "/api/chat",
        "/api/session",
        "/livez",
        "/readyz",
        "/metrics",
        "/ws/audio",
        "/ws/echo",
        "/api/openapi.json",
    ];
    ROUTES
        .into_iter()
        .find(|route| path_matches(path, route))
        .unwrap_or("other")
}

/// `GET /api/openapi.json`
fn openapi_route() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let document = Arc::new(openapi::document());
    route("/api/openapi.json")
        .and(warp::method())
        .map(move |method: http::Method| {
            if method != http::Method::GET && method != http::Method::HEAD {
                return response::method_not_allowed(&method, "/api/openapi.json", "GET, HEAD");
            }
            response::json_text(http::StatusCode::OK, String::clone(&document))
        })
}

/// `GET /livez` and `GET /readyz`
fn probes(readiness: Readiness) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let livez = route("/livez").and(warp::method()).then(handlers::livez);
    let readyz = route("/readyz")
        .and(warp::method())
        .and(warp::any().map(move || readiness.clone()))
        .then(handlers::readyz);
    livez.or(readyz).unify()
}

/// `POST /api/session`
fn session(
    auth: Option<Arc<Authenticator>>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    route("/api/session")
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::any().map(move || auth.clone()))
        .then(handlers::mint_session)
}

/// `GET /health`
fn health(
    service: Arc<IngestService>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    route("/health")
        .and(warp::method())
        .and(with_service(service))
        .then(handlers::health)
}

/// `GET /api/status`
fn status(
    service: Arc<IngestService>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    route("/api/status")
        .and(warp::method())
        .and(with_service(service))
        .then(handlers::status)
}

/// `POST /api/chat`
fn chat(
    service: Arc<IngestService>,
    settings: HttpSettings,
    auth: Option<Arc<Authenticator>>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    route("/api/chat")
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with_service(service))
        .and(warp::any().map(move || settings))
        .and(warp::any().map(move || auth.clone()))
        .then(handlers::chat)
}

/// `GET` with an upgrade to WebSocket on `endpoint`'s path.
fn ws_upgrade(
    endpoint: ws::Endpoint,
    context: WsContext,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    // Shared, not cloned, by the connections: each of them holds it for as long as it lives.
    let context = Arc::new(context);
    route(endpoint.path())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<hyper::upgrade::OnUpgrade>())
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::ext::optional::<TcpSlot>())
        .and(optional_query())
        .and(warp::any().map(move || Arc::clone(&context)))
        .then(
            move |method, headers, on_upgrade, peer: Option<PeerAddr>, tcp_slot, query, context| {
                let request = ws::UpgradeRequest {
                    endpoint,
                    method,
                    headers,
                    on_upgrade,
                    peer: peer.map(|PeerAddr(addr)| addr),
                    tcp_slot,
                    query,
                };
                ws::upgrade(request, context)
            },
        )
}

/// Any other path: a JSON `404`, where Express answered with an HTML page.
fn not_found() -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::method()
        .and(warp::path::full())
        .map(|method, path: FullPath| response::not_found(&method, path.as_str()))
}

/// Matches one path exactly, ignoring ASCII case and one trailing slash, as Express's default
/// routing did (`/Health/` reached `/health`).
fn route(expected: &'static str) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path::full()
        .and_then(move |full: FullPath| async move {
            if path_matches(full.as_str(), expected) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

fn path_matches(path: &str, expected: &str) -> bool {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    path.eq_ignore_ascii_case(expected)
}

/// The raw query string, if the request has one.
fn optional_query() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

fn with_service(
    service: Arc<IngestService>,
) -> impl Filter<Extract = (Arc<IngestService>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&service))
}

#[cfg(test)]
mod tests {
    use super::path_matches;

    #[test]
    fn paths_match_like_express_default_routing() {
        for path in ["/health", "/health/", "/HEALTH", "/Health/"] {
            assert!(path_matches(path, "/health"), "{path}");
        }
        for path in ["/health//", "/healthz", "/health/x", "/", "//health"] {
            assert!(!path_matches(path, "/health"), "{path}");
        }
    }
}
