//! The client page: `web/` embedded in the binary at build time, so that running the service
//! needs no files beside it and no build step for the page. Served at `/` on the service's own
//! origin unless `http.page` turns it off (API-only deployments).

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS,
};
use http::{Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::response;

/// A file: its path, its content type, its text.
type File = (&'static str, &'static str, &'static str);

const FILES: [File; 4] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/app.js"),
    ),
    (
        "/pcm-worklet.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/pcm-worklet.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../../../web/style.css"),
    ),
];

/// The Content-Security-Policy of the page's files.
const PAGE_POLICY: &str = "default-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The paths the page is served at, for metric labels.
pub(crate) const PATHS: [&str; 4] = [FILES[0].0, FILES[1].0, FILES[2].0, FILES[3].0];

/// `GET` (or `HEAD`) of one of the page's files.
pub(crate) fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path::full()
        .and_then(|path: FullPath| async move {
            FILES
                .iter()
                .find(|(served, _, _)| *served == path.as_str())
                .copied()
                .ok_or_else(warp::reject::not_found)
        })
        .and(warp::method())
        .map(|(path, content_type, text): File, method: Method| {
            if method != Method::GET && method != Method::HEAD {
                return response::method_not_allowed(&method, path, "GET, HEAD");
            }
            let mut answer = Response::new(text.into());
            *answer.status_mut() = StatusCode::OK;
            let headers = answer.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            // Small files, and a new binary may change them: always revalidate.
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            // The page runs only its own scripts and talks only to its own origin (`'self'`
            // covers its ws:/wss: socket), and no other site may frame it.
            headers.insert(
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_POLICY),
            );
            headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            answer
        })
}
