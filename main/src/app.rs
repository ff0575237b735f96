//! The composition root: the only place that names concrete adapters and wires them to the
//! application and the transport.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use aimcs_adapters::outbound::{InMemoryConnectionStore, NullAudioSink, SystemClock};
use aimcs_adapters::{Server, ShutdownReport};
use aimcs_application::IngestService;
use aimcs_domain::ports::AudioSink;

use crate::settings::{Settings, SinkKind};

/// The service's version, reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listening address could not be bound.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A built service, listening, not yet serving.
pub struct App {
    server: Server,
    service: Arc<IngestService>,
    local_addr: SocketAddr,
}

impl App {
    /// Builds the adapters `settings` name, the service over them, and binds the listener.
    ///
    /// # Errors
    /// [`StartupError::Bind`] when the address cannot be bound.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let sink: Arc<dyn AudioSink> = match settings.audio.sink {
            SinkKind::Null => Arc::new(NullAudioSink::new()),
        };
        let service = Arc::new(IngestService::new(
            Arc::new(InMemoryConnectionStore::new()),
            Arc::new(SystemClock::new()),
            sink,
            VERSION,
        ));
        let addr = settings.listen_addr();
        let bind_error = |source| StartupError::Bind { addr, source };
        let server = Server::bind(addr, settings.server_settings())
            .await
            .map_err(bind_error)?;
        let local_addr = server.local_addr().map_err(bind_error)?;
        Ok(Self {
            server,
            service,
            local_addr,
        })
    }

    /// The address the service listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then drains connections.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        self.server.run(self.service, shutdown).await
    }
}

/// Completes on SIGTERM (what orchestrators send) or SIGINT (Ctrl-C, so that a terminal can
/// rehearse a shutdown).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::info!(signal = name, "shutdown requested");
                return;
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM; falling back to Ctrl-C only");
            }
        }
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::info!(signal = "ctrl-c", "shutdown requested");
    } else {
        // Without any signal handling the only way to stop is a kill; never resolve.
        std::future::pending::<()>().await;
    }
}
