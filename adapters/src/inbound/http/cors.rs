//! CORS as the original's `cors` middleware applied it: an allowed origin is echoed back with
//! credentials allowed, any other origin is served without CORS headers (the browser then
//! withholds the response), and every `OPTIONS` request is a preflight answered with `204`.
//! Applied by the server around every route, so error responses carry it too.

use std::fmt;

use http::StatusCode;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, HeaderValue, VARY,
};
use warp::reply::Response;

use super::response;

/// Methods a preflight allows: the ones the API serves.
const ALLOWED_METHODS: HeaderValue = HeaderValue::from_static("GET,HEAD,POST");
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// A configured origin is not of the form `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{origin:?} is not an origin: expected scheme://host[:port] with no path, like https://aimcs.net"
)]
pub struct InvalidOrigin {
    origin: String,
}

/// The origins allowed to call the API from a browser.
#[derive(Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    allowed: Vec<HeaderValue>,
}

impl fmt::Debug for CorsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.allowed.iter().map(|o| o.to_str().unwrap_or("?")))
            .finish()
    }
}

impl CorsPolicy {
    /// A policy allowing exactly `origins`, compared as exact strings as browsers send them.
    ///
    /// # Errors
    /// [`InvalidOrigin`] for an entry that is not a bare origin.
    pub fn new<I, S>(origins: I) -> Result<Self, InvalidOrigin>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let allowed = origins
            .into_iter()
            .map(|origin| {
                let origin = origin.as_ref();
                if is_origin(origin) {
                    HeaderValue::from_str(origin).map_err(|_| InvalidOrigin {
                        origin: origin.to_owned(),
                    })
                } else {
                    Err(InvalidOrigin {
                        origin: origin.to_owned(),
                    })
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed })
    }

    /// Whether a request from `origin` may read responses.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        self.allowed.iter().any(|allowed| allowed == origin)
    }

    /// Adds the CORS headers of a simple request from `origin` to `response`.
    pub(crate) fn decorate(&self, origin: Option<&HeaderValue>, response: &mut Response) {
        let headers = response.headers_mut();
        headers.append(VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin.filter(|origin| self.allows(origin)) {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The answer to a preflight (`OPTIONS`) request from `origin`, reflecting the headers it
    /// asked for.
    pub(crate) fn preflight(
        &self,
        origin: Option<&HeaderValue>,
        requested_headers: Option<&HeaderValue>,
    ) -> Response {
        let mut answer = response::empty(StatusCode::NO_CONTENT);
        let headers = answer.headers_mut();
        headers.insert(
            VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Headers"),
        );
        if let Some(origin) = origin.filter(|origin| self.allows(origin)) {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS);
            headers.insert(ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE);
            if let Some(requested) = requested_headers {
                headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
            }
        }
        answer
    }
}

/// `scheme://host[:port]` and nothing else, as the `Origin` header carries it.
fn is_origin(text: &str) -> bool {
    let Some((scheme, authority)) = text.split_once("://") else {
        return false;
    };
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    // An IPv6 host is bracketed and holds colons of its own.
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => (host, Some(after.strip_prefix(':').unwrap_or("x"))),
            None => return false,
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ', '[', ']']);
    let port_ok =
        port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    scheme_ok && host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CorsPolicy {
        CorsPolicy::new(["https://aimcs.net", "http://localhost:5173"]).unwrap()
    }

    fn origin(text: &'static str) -> HeaderValue {
        HeaderValue::from_static(text)
    }

    #[test]
    fn an_allowed_origin_is_echoed_with_credentials() {
        let mut response = response::empty(StatusCode::OK);
        policy().decorate(Some(&origin("https://aimcs.net")), &mut response);
        let headers = response.headers();
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://aimcs.net");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[VARY], "Origin");
    }

    #[test]
    fn another_origin_or_none_gets_no_cors_headers_but_still_varies_by_origin() {
        for request_origin in [
            Some(origin("https://evil.example")),
            Some(origin("https://aimcs.net.evil")),
            None,
        ] {
            let mut response = response::empty(StatusCode::OK);
            policy().decorate(request_origin.as_ref(), &mut response);
            assert!(
                response
                    .headers()
                    .get(ACCESS_CONTROL_ALLOW_ORIGIN)
                    .is_none(),
                "{request_origin:?}"
            );
            assert_eq!(response.headers()[VARY], "Origin");
        }
    }

    #[test]
    fn a_preflight_reflects_the_requested_headers_for_an_allowed_origin() {
        let answer = policy().preflight(
            Some(&origin("http://localhost:5173")),
            Some(&origin("content-type, x-trace")),
        );
        let headers = answer.headers();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:5173"
        );
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, x-trace"
        );
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_METHODS], "GET,HEAD,POST");
        assert_eq!(headers[VARY], "Origin, Access-Control-Request-Headers");
    }

    #[test]
    fn a_preflight_from_another_origin_allows_nothing() {
        let answer = policy().preflight(
            Some(&origin("https://evil.example")),
            Some(&origin("content-type")),
        );
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        assert!(answer.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(answer.headers().get(ACCESS_CONTROL_ALLOW_METHODS).is_none());
    }

    #[test]
    fn configured_origins_must_be_bare_origins() {
        for good in [
            "https://aimcs.net",
            "http://localhost:3000",
            "https://[::1]:8443",
        ] {
            assert!(CorsPolicy::new([good]).is_ok(), "{good}");
        }
        for bad in [
            "aimcs.net",
            "https://aimcs.net/",
            "https://aimcs.net/app",
            "*",
            "https://",
            "http://host:",
            "http://host:x",
        ] {
            let error = CorsPolicy::new([bad]).unwrap_err();
            assert!(error.to_string().contains("is not an origin"), "{bad}");
        }
    }
}
