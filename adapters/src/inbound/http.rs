//! The HTTP API: `GET /health`, `GET /api/status`, `POST /api/chat`, the upgrade on
//! `/ws/audio`, and JSON answers for everything else. Routes are small warp filters composed
//! once in [`routes`]; handlers are plain async functions that always produce a response, so
//! that no business error travels as a warp rejection.

mod chat;
mod cors;
mod handlers;
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

use crate::inbound::ws::{self, WsContext};

/// Limits of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Largest request body accepted, in bytes; a larger one gets `413`.
    pub max_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// The peer address of a request's connection, put in the request's extensions by the server
/// (warp's own is private to `warp::serve`, which we do not use).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// Every route of the service, CORS excepted (the server applies it around all of them).
pub(crate) fn routes(
    service: Arc<IngestService>,
    settings: HttpSettings,
    ws: WsContext,
) -> BoxedFilter<(Response,)> {
    health(Arc::clone(&service))
        .or(status(Arc::clone(&service)))
        .unify()
        .or(chat(service, settings))
        .unify()
        .or(ws_audio(ws))
        .unify()
        .or(not_found())
        .unify()
        .boxed()
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
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    route("/api/chat")
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with_service(service))
        .and(warp::any().map(move || settings))
        .then(handlers::chat)
}

/// `GET /ws/audio` with an upgrade to WebSocket.
fn ws_audio(context: WsContext) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    route("/ws/audio")
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<hyper::upgrade::OnUpgrade>())
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::any().map(move || context.clone()))
        .then(
            |method, headers, on_upgrade, peer: Option<PeerAddr>, context| {
                let request = ws::UpgradeRequest {
                    method,
                    headers,
                    on_upgrade,
                    peer: peer.map(|PeerAddr(addr)| addr),
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
