//! The listener: accepts TCP connections and serves each with hyper's HTTP/1 server, warp's
//! routes inside, CORS around them. Served by hand rather than by `warp::serve` for two
//! reasons: a header-read timeout (warp has none, so a client that never finishes its headers
//! would hold a connection forever), and a shutdown that also reaches upgraded WebSockets
//! (warp's graceful mode no longer sees a connection once it is upgraded).
//!
//! Shutdown, in order: stop accepting; let HTTP connections finish the request in progress;
//! tell every WebSocket to close; wait for all of them, bounded by a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::header::{ACCESS_CONTROL_REQUEST_HEADERS, ORIGIN};
use ::http::{Method, Request};
use aimcs_application::IngestService;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use warp::reply::Response;

use super::http::{self, CorsPolicy, HttpSettings, PeerAddr};
use super::ws::{WsContext, WsSettings};

/// Everything the transport needs to know.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Origins allowed by CORS.
    pub cors: CorsPolicy,
    /// HTTP API limits.
    pub http: HttpSettings,
    /// WebSocket limits.
    pub ws: WsSettings,
    /// How long a client may take to send its request headers before it is disconnected.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for connections to finish before giving up on them.
    pub shutdown_grace: Duration,
}

/// How shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every connection finished within the grace period.
    pub drained: bool,
    /// Connections still running when the grace period ran out.
    pub abandoned: usize,
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    settings: ServerSettings,
}

impl Server {
    /// Binds `addr`; port 0 picks a free port.
    ///
    /// # Errors
    /// The I/O error of the bind, e.g. the address is in use.
    pub async fn bind(addr: SocketAddr, settings: ServerSettings) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, settings })
    }

    /// The address actually bound.
    ///
    /// # Errors
    /// The I/O error of reading it back from the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then drains as described in the module docs.
    pub async fn run(
        self,
        service: Arc<IngestService>,
        shutdown: impl Future<Output = ()>,
    ) -> ShutdownReport {
        let Self { listener, settings } = self;
        let stopping = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ws = WsContext {
            service: Arc::clone(&service),
            settings: settings.ws,
            shutdown: stopping.clone(),
            tracker: tracker.clone(),
            hub: Arc::default(),
        };
        let expiry = tokio::spawn(expire_sessions(Arc::clone(&service), stopping.clone()));
        let routes = TowerToHyperService::new(warp::service(http::routes(
            Arc::clone(&service),
            settings.http,
            ws,
        )));
        let cors = Arc::new(settings.cors.clone());

        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        back_off(&error).await;
                        continue;
                    }
                },
            };
            let connection = serve_connection(
                stream,
                peer,
                routes.clone(),
                Arc::clone(&cors),
                settings.header_read_timeout,
                settings.ws.close_timeout,
                stopping.clone(),
            );
            tracker.spawn(connection);
        }

        drop(listener);
        tracing::info!(
            connections = tracker.len(),
            grace_secs = settings.shutdown_grace.as_secs_f64(),
            "shutting down: closing connections"
        );
        stopping.cancel();
        tracker.close();
        let drained = tokio::time::timeout(settings.shutdown_grace, tracker.wait())
            .await
            .is_ok();
        // Connections have parked their sessions; nobody can resume them once this process is
        // gone, so their recordings are finished now rather than left open.
        let _ = expiry.await;
        let finished = service.finish_parked_sessions().await;
        if finished > 0 {
            tracing::info!(sessions = finished, "finished parked sessions");
        }
        let report = ShutdownReport {
            drained,
            abandoned: tracker.len(),
        };
        if drained {
            tracing::info!("all connections closed");
        } else {
            tracing::warn!(
                abandoned = report.abandoned,
                "grace period over: abandoning connections still open"
            );
        }
        report
    }
}

/// Serves one TCP connection until it closes, upgrades, or shutdown asks it to finish.
async fn serve_connection<R>(
    stream: TcpStream,
    peer: SocketAddr,
    routes: R,
    cors: Arc<CorsPolicy>,
    header_read_timeout: Duration,
    drain_timeout: Duration,
    stopping: CancellationToken,
) where
    R: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Send
        + 'static,
    R::Future: Send + 'static,
{
    // Small replies must not wait for Nagle's algorithm; acks are latency-critical.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |mut request: Request<Incoming>| {
        let origin = request.headers().get(ORIGIN).cloned();
        let cors = Arc::clone(&cors);
        let started = Instant::now();
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let preflight = (request.method() == Method::OPTIONS).then(|| {
            cors.preflight(
                origin.as_ref(),
                request.headers().get(ACCESS_CONTROL_REQUEST_HEADERS),
            )
        });
        request.extensions_mut().insert(PeerAddr(peer));
        let response = preflight
            .is_none()
            .then(|| hyper::service::Service::call(&routes, request));
        async move {
            let response = match (preflight, response) {
                (Some(preflight), _) => preflight,
                (None, Some(routed)) => {
                    let Ok(mut response) = routed.await;
                    cors.decorate(origin.as_ref(), &mut response);
                    response
                }
                (None, None) => unreachable!("either a preflight or a routed request"),
            };
            tracing::debug!(%method, path, status = response.status().as_u16(), elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), "request served");
            Ok::<_, Infallible>(response)
        }
    });

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping.cancelled() => {
            connection.as_mut().graceful_shutdown();
            // An idle connection closes at once and a request in progress finishes; a client
            // still trickling its headers would hold shutdown until the header timeout, so
            // it gets no longer than a closing WebSocket does.
            match tokio::time::timeout(drain_timeout, connection).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        // Timeouts and resets are the client's doing; they are worth a debug line, no more.
        tracing::debug!(%peer, error = %error, "http connection ended with an error");
    }
}

/// Finishes parked sessions whose resume grace period has passed, until shutdown.
async fn expire_sessions(service: Arc<IngestService>, stopping: CancellationToken) {
    // A quarter of the grace period (at most a second) keeps expiry within 25% of it.
    let period = (service.config().resume_grace / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = tick.tick() => {
                service.expire_sessions().await;
            }
        }
    }
}

/// Waits before accepting again after an accept error. Running out of file descriptors is the
/// common case: spinning on it would only burn the CPU that closing connections need.
async fn back_off(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %error, "accept failed; pausing for 100 ms");
    tokio::time::sleep(Duration::from_millis(100))
        .instrument(tracing::Span::current())
        .await;
}
