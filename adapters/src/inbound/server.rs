//! The listener: accepts TCP connections and serves each with hyper's HTTP/1 server, warp's
//! routes inside, CORS around them. Served by hand rather than by `warp::serve` for two
//! reasons: a header-read timeout (warp has none, so a client that never finishes its headers
//! would hold a connection forever), and a shutdown that also reaches upgraded WebSockets
//! (warp's graceful mode no longer sees a connection once it is upgraded).
//!
//! With TLS settings, every connection is TLS (rustls); a plain HTTP request to that port gets
//! a `400` saying to use HTTPS, in plain HTTP, rather than a handshake error it cannot read.
//!
//! Shutdown, in order: report not ready (`/readyz` answers 503) and keep serving for the drain
//! delay, so that load balancers stop sending new clients; stop accepting; let HTTP
//! connections finish the request in progress; tell every WebSocket to close; wait for all of
//! them, bounded by a grace period.

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

use super::auth::Authenticator;
use super::errors::ErrorCode;
use super::http::{self, CorsPolicy, HttpSettings, PeerAddr, Readiness, TcpSlot};
use super::tls::{Tls, TlsError, TlsSettings};
use super::ws::{WsContext, WsSettings};

/// Everything the transport needs to know.
#[derive(Clone)]
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
    /// How long shutdown keeps serving after reporting not ready, before it stops accepting.
    pub drain_delay: Duration,
    /// TCP connections open at once, HTTP and WebSocket together; beyond it new connections
    /// wait in the listen backlog.
    pub max_connections: usize,
    /// Serve HTTPS and WSS with this certificate instead of plain HTTP.
    pub tls: Option<TlsSettings>,
    /// Present when authentication is on.
    pub auth: Option<Arc<Authenticator>>,
    /// Serves `GET /metrics` on this port when present.
    pub metrics: Option<http::RenderMetrics>,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("cors", &self.cors)
            .field("http", &self.http)
            .field("ws", &self.ws)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("drain_delay", &self.drain_delay)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls)
            .field("auth", &self.auth.is_some())
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address could not be bound.
    #[error("cannot listen: {0}")]
    Listen(#[from] io::Error),
    /// The certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
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
    tls: Option<Tls>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and reads the TLS certificate, if any.
    ///
    /// # Errors
    /// [`BindError`]: the address is in use, or the certificate cannot be used.
    pub async fn bind(addr: SocketAddr, settings: ServerSettings) -> Result<Self, BindError> {
        let tls = settings.tls.as_ref().map(Tls::new).transpose()?;
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            settings,
            tls,
        })
    }

    /// Whether connections are served over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
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
        let Self {
            listener,
            settings,
            tls,
        } = self;
        let stopping = CancellationToken::new();

        let tracker = TaskTracker::new();
        let cors = Arc::new(settings.cors.clone());
        let ws = WsContext {
            service: Arc::clone(&service),
            settings: settings.ws,
            shutdown: stopping.clone(),
            tracker: tracker.clone(),
            hub: Arc::default(),
            origins: Arc::clone(&cors),
            auth: settings.auth.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(settings.ws.max_connections)),
        };
        let readiness = Readiness {
            draining: CancellationToken::new(),
            ws_slots: Arc::clone(&ws.slots),
            service: Arc::clone(&service),
        };
        let expiry = tokio::spawn(expire_sessions(Arc::clone(&service), stopping.clone()));
        let watcher = tls.as_ref().map(|tls| tls.watch(stopping.clone()));
        let acceptor = tls.as_ref().map(Tls::acceptor);
        let routes = TowerToHyperService::new(warp::service(http::routes(
            Arc::clone(&service),
            settings.http,
            ws,
            readiness.clone(),
            settings.metrics.clone(),
        )));
        let limits = ConnectionLimits {
            header_read_timeout: settings.header_read_timeout,
            drain_timeout: settings.ws.close_timeout,
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));

        let mut shutdown = std::pin::pin!(shutdown);
        let mut stop_accepting_at: Option<tokio::time::Instant> = None;
        loop {
            let next = async {
                let permit = match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        tracing::warn!(
                            limit = settings.max_connections,
                            "connection limit reached; new connections wait until one closes"
                        );
                        Arc::clone(&slots)
                            .acquire_owned()
                            .await
                            .expect("the semaphore is never closed")
                    }
                };
                (permit, listener.accept().await)
            };
            let drain_over = async {
                match stop_accepting_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let (permit, stream, peer) = tokio::select! {
                () = &mut shutdown, if stop_accepting_at.is_none() => {
                    readiness.draining.cancel();
                    tracing::info!(
                        drain_delay_secs = settings.drain_delay.as_secs_f64(),
                        "shutdown requested: reporting not ready"
                    );
                    if settings.drain_delay.is_zero() {
                        break;
                    }
                    stop_accepting_at = Some(tokio::time::Instant::now() + settings.drain_delay);
                    continue;
                }
                () = drain_over => break,
                (permit, accepted) = next => match accepted {
                    Ok((stream, peer)) => (permit, stream, peer),
                    Err(error) => {
                        back_off(&error).await;
                        continue;
                    }
                },
            };
            // Small replies must not wait for Nagle's algorithm; acks are latency-critical.
            let _ = stream.set_nodelay(true);
            let routes = routes.clone();
            let cors = Arc::clone(&cors);
            let stopping = stopping.clone();
            let acceptor = acceptor.clone();
            tracker.spawn(async move {
                // Shared with a WebSocket the connection upgrades to, which outlives this task.
                let slot = TcpSlot(Arc::new(permit));
                match acceptor {
                    None => {
                        serve_connection(stream, peer, slot, routes, cors, limits, stopping).await
                    }
                    Some(acceptor) => {
                        if let Some(stream) =
                            tls_handshake(stream, peer, &acceptor, limits, &stopping).await
                        {
                            serve_connection(stream, peer, slot, routes, cors, limits, stopping)
                                .await;
                        }
                    }
                }
            });
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
        if let Some(watcher) = watcher {
            let _ = watcher.await;
        }
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

/// Timeouts of every connection.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    /// For the request headers, and for the TLS handshake.
    header_read_timeout: Duration,
    /// For a request in progress when shutdown begins.
    drain_timeout: Duration,
}

/// The TLS handshake, bounded by the header-read timeout so that a client that opens a socket
/// and says nothing holds it no longer than a slow HTTP client could. A client speaking plain
/// HTTP is told so in plain HTTP.
async fn tls_handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
    limits: ConnectionLimits,
    stopping: &CancellationToken,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    /// The first byte of every TLS connection: a handshake record.
    const TLS_HANDSHAKE: u8 = 0x16;
    let handshake = async {
        let mut first = [0_u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if first[0] != TLS_HANDSHAKE => {
                refuse_plain_http(stream).await;
                return None;
            }
            Ok(1) => {}
            _ => return None,
        }
        match acceptor.accept(stream).await {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::debug!(%peer, error = %error, "TLS handshake failed");
                None
            }
        }
    };
    tokio::select! {
        stream = tokio::time::timeout(limits.header_read_timeout, handshake) => stream.ok().flatten(),
        () = stopping.cancelled() => None,
    }
}

/// Answers a plain HTTP request on the TLS port with a `400` it can read, then closes.
async fn refuse_plain_http(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let code = ErrorCode::TlsRequired;
    let body = format!(
        r#"{{"error":"this port speaks HTTPS: use https:// or wss://","code":"{}"}}"#,
        code.as_str()
    );
    let answer = format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        code.status(),
        body.len()
    );
    // Then read what the client sent, briefly: closing with unread bytes makes the kernel
    // answer with a reset, which can destroy the answer before the client reads it.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0_u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// Serves one connection until it closes, upgrades, or shutdown asks it to finish.
async fn serve_connection<S, R>(
    stream: S,
    peer: SocketAddr,
    slot: TcpSlot,
    routes: R,
    cors: Arc<CorsPolicy>,
    limits: ConnectionLimits,
    stopping: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    R: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Send
        + 'static,
    R::Future: Send + 'static,
{
    let service = service_fn(move |mut request: Request<Incoming>| {
        let origin = request.headers().get(ORIGIN).cloned();
        let cors = Arc::clone(&cors);
        let started = Instant::now();
        let method = request.method().clone();
        let route = http::route_label(request.uri().path());
        let preflight = (request.method() == Method::OPTIONS).then(|| {
            cors.preflight(
                origin.as_ref(),
                request.headers().get(ACCESS_CONTROL_REQUEST_HEADERS),
            )
        });
        request.extensions_mut().insert(PeerAddr(peer));
        request.extensions_mut().insert(slot.clone());
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
            let (status, elapsed) = (response.status().as_u16(), started.elapsed());
            crate::metrics::http_request(route, &method, status, elapsed);
            let elapsed_ms = elapsed.as_secs_f64() * 1e3;
            // Probes and scrapes come every few seconds: an operator does not want them at info.
            if matches!(route, "/health" | "/livez" | "/readyz" | "/metrics") {
                tracing::debug!(%method, route, status, elapsed_ms, "request served");
            } else {
                tracing::info!(%method, route, status, elapsed_ms, "request served");
            }
            Ok::<_, Infallible>(response)
        }
    });

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
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
            match tokio::time::timeout(limits.drain_timeout, connection).await {
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
