//! The composition root: the only place that names concrete adapters and wires them to the
//! application and the transport.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aimcs_adapters::inbound::auth::{AuthConfigError, Authenticator};
use aimcs_adapters::outbound::file_audio_sink::FileSinkError;
use aimcs_adapters::outbound::redis::{ClusterSettings, RedisError, StreamSettings};
use aimcs_adapters::outbound::{
    FanoutAudioSink, FileAudioSink, InMemoryConnectionStore, InstrumentedAudioSink, NullAudioSink,
    RedisConnectionStore, RedisPool, RedisStreamAudioSink, SystemClock,
};
use aimcs_adapters::{BindError, MetricsListener, RenderMetrics, Server, ShutdownReport};
use aimcs_application::{IngestService, ServiceConfig};
use aimcs_domain::ports::{AudioSink, ConnectionStore};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::settings::{Settings, SinkKind, StoreKind};

/// The service's version, reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from, or `unknown` (a build outside a checkout).
pub const GIT_COMMIT: &str = env!("AIMCS_GIT_COMMIT");

/// How often retention runs over the recordings directory.
const RETENTION_PERIOD: Duration = Duration::from_secs(60);

/// The service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listening address could not be bound, or the TLS certificate cannot be used.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: BindError,
    },
    /// The authentication settings cannot be used.
    #[error("authentication cannot start")]
    Auth(#[from] AuthConfigError),
    /// The recordings directory cannot be used.
    #[error("the file audio sink cannot start")]
    Recordings(#[from] FileSinkError),
    /// Redis is configured and cannot be used.
    #[error("Redis is configured (store or audio sink) and cannot be used")]
    Redis(#[from] RedisError),
}

/// Adapters to use instead of the ones the settings name: for tests that need a sink with
/// particular behaviour.
#[derive(Default)]
pub struct Overrides {
    /// The audio sink.
    pub audio_sink: Option<Arc<dyn AudioSink>>,
}

/// A built service, listening, not yet serving.
pub struct App {
    server: Server,
    service: Arc<IngestService>,
    local_addr: SocketAddr,
    file_sink: Option<Arc<FileAudioSink>>,
    cluster: Option<Arc<RedisConnectionStore>>,
    metrics: Option<MetricsSetup>,
}

/// Metrics as wired: the recorder's handle, and the listener of their own port if any.
struct MetricsSetup {
    handle: PrometheusHandle,
    listener: Option<MetricsListener>,
}

impl App {
    /// Builds the adapters `settings` name, the service over them, and binds the listener.
    ///
    /// # Errors
    /// [`StartupError`] when the address cannot be bound or a sink cannot start.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, Overrides::default()).await
    }

    /// Like [`App::build`], with some adapters replaced.
    ///
    /// # Errors
    /// As [`App::build`].
    pub async fn build_with(
        settings: &Settings,
        overrides: Overrides,
    ) -> Result<Self, StartupError> {
        // First: the instrumented sinks and connections take their metric handles from it.
        let metrics = match settings.metrics.enabled {
            true => Some(MetricsSetup {
                handle: metrics_recorder(),
                listener: match settings.metrics.listen {
                    Some(addr) => Some(MetricsListener::bind(addr).await.map_err(|source| {
                        StartupError::Bind {
                            addr,
                            source: BindError::Listen(source),
                        }
                    })?),
                    None => None,
                },
            }),
            false => None,
        };
        let redis = match settings.uses_redis() {
            true => {
                let pool = RedisPool::connect(&settings.redis_settings()).await?;
                tracing::info!(redis = %pool.target(), pool_size = settings.redis.pool_size, "connected to Redis");
                Some(pool)
            }
            false => None,
        };
        let cluster = match (settings.store, &redis) {
            (StoreKind::Redis, Some(pool)) => Some(
                RedisConnectionStore::start(
                    pool.clone(),
                    ClusterSettings {
                        replica_ttl: settings.redis.replica_ttl_secs.duration(),
                        resume_grace: settings.sessions.resume_grace_secs.duration(),
                    },
                )
                .await?,
            ),
            _ => None,
        };
        let mut file_sink = None;
        let sink = match overrides.audio_sink {
            Some(sink) => sink,
            None => {
                let mut sinks: Vec<Arc<dyn AudioSink>> = Vec::new();
                for kind in settings.audio.sink.kinds() {
                    let sink: Arc<dyn AudioSink> = match kind {
                        SinkKind::Null => Arc::new(NullAudioSink::new()),
                        SinkKind::File => {
                            let sink = Arc::new(open_file_sink(settings)?);
                            file_sink = Some(Arc::clone(&sink));
                            sink
                        }
                        SinkKind::Redis => {
                            let pool = redis.clone().expect("connected above: the sink uses Redis");
                            Arc::new(RedisStreamAudioSink::new(
                                pool,
                                StreamSettings {
                                    max_len: settings.redis.stream_max_len,
                                    retention: Duration::from_secs(
                                        settings.redis.stream_retention_secs,
                                    ),
                                    index_max_len: settings.redis.index_max_len,
                                },
                            ))
                        }
                    };
                    sinks.push(match settings.metrics.enabled {
                        true => Arc::new(InstrumentedAudioSink::new(kind.name(), sink)),
                        false => sink,
                    });
                }
                match sinks.len() {
                    1 => sinks.remove(0),
                    _ => Arc::new(FanoutAudioSink::new(sinks)),
                }
            }
        };
        let config = ServiceConfig {
            version: VERSION,
            resume_grace: settings.sessions.resume_grace_secs.duration(),
            max_parked_sessions: settings.sessions.max_parked as usize,
        };
        let store: Arc<dyn ConnectionStore> = match &cluster {
            Some(cluster) => Arc::clone(cluster) as Arc<dyn ConnectionStore>,
            None => Arc::new(InMemoryConnectionStore::new()),
        };
        let mut service = IngestService::new(store, Arc::new(SystemClock::new()), sink, config);
        if let Some(cluster) = &cluster {
            service = service.with_session_store(Arc::clone(cluster) as _);
        }
        let service = Arc::new(service);
        let auth = if settings.auth.enabled {
            if settings.auth.token_secret.is_none() {
                tracing::warn!(
                    "auth.token_secret is not set: browser tokens only work on this instance, until it restarts"
                );
            }
            Some(Arc::new(Authenticator::new(&settings.auth_settings())?))
        } else {
            None
        };
        let mut server_settings = settings.server_settings(auth);
        if let Some(setup) = metrics.as_ref().filter(|m| m.listener.is_none()) {
            server_settings.metrics = Some(render(&setup.handle));
        }
        let addr = settings.listen_addr();
        let bind_error = |source| StartupError::Bind { addr, source };
        let server = Server::bind(addr, server_settings)
            .await
            .map_err(bind_error)?;
        let local_addr = server
            .local_addr()
            .map_err(|e| bind_error(BindError::Listen(e)))?;
        Ok(Self {
            server,
            service,
            local_addr,
            file_sink,
            cluster,
            metrics,
        })
    }

    /// Where `/metrics` is served when it has a port of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref()?.listener.as_ref()?.local_addr().ok()
    }

    /// The address the service listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then drains connections.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let maintenance = self
            .file_sink
            .map(|sink| tokio::spawn(enforce_retention(sink)));
        let stopped = stop_signal();
        let metrics_tasks = self.metrics.map(|setup| {
            let upkeep = tokio::spawn(metrics_upkeep(setup.handle.clone()));
            let listener = setup.listener.map(|listener| {
                let stopped = stopped.clone();
                tokio::spawn(listener.run(render(&setup.handle), async move {
                    stopped.notified().await;
                }))
            });
            (upkeep, listener)
        });
        let report = self.server.run(self.service, shutdown).await;
        if let Some(cluster) = self.cluster {
            cluster.deregister().await;
        }
        if let Some(task) = maintenance {
            task.abort();
        }
        if let Some((upkeep, listener)) = metrics_tasks {
            upkeep.abort();
            stopped.notify_waiters();
            if let Some(listener) = listener {
                let _ = listener.await;
            }
        }
        report
    }
}

/// The process's Prometheus recorder, installed by the first app built in it (tests build
/// several apps in one process; they share it).
fn metrics_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&aimcs_adapters::metrics::LATENCY_BUCKETS)
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            aimcs_adapters::metrics::describe(VERSION, GIT_COMMIT);
            handle
        })
        .clone()
}

fn render(handle: &PrometheusHandle) -> RenderMetrics {
    let handle = handle.clone();
    Arc::new(move || handle.render())
}

/// Drains the recorder's histogram buffers now and then, so that they do not grow between
/// scrapes.
async fn metrics_upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// Tells the metrics listener to stop once the server has.
fn stop_signal() -> Arc<tokio::sync::Notify> {
    Arc::new(tokio::sync::Notify::new())
}

fn open_file_sink(settings: &Settings) -> Result<FileAudioSink, FileSinkError> {
    let file_settings = settings.file_sink_settings();
    let (sink, report) = FileAudioSink::open(file_settings)?;
    tracing::info!(
        dir = %sink.settings().dir.display(),
        repaired = report.repaired,
        removed_by_retention = report.retention.removed,
        "recordings directory ready"
    );
    Ok(sink)
}

/// Applies retention to the recordings directory periodically.
async fn enforce_retention(sink: Arc<FileAudioSink>) {
    let mut tick = tokio::time::interval(RETENTION_PERIOD);
    tick.tick().await;
    loop {
        tick.tick().await;
        let sink = Arc::clone(&sink);
        match tokio::task::spawn_blocking(move || sink.enforce_retention()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "retention failed")
            }
            Err(error) => tracing::error!(error = %error, "retention task failed"),
        }
    }
}

/// A future that completes on SIGTERM (what orchestrators send) or SIGINT (Ctrl-C, so that a
/// terminal can rehearse a shutdown). The handlers are installed when this is called, not
/// when the future is first polled: a signal that arrives in between must not find the
/// default action, which kills the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let listeners = {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM; falling back to Ctrl-C only");
                None
            }
        }
    };
    async move {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = listeners {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutdown requested");
            return;
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!(signal = "ctrl-c", "shutdown requested");
        } else {
            // Without any signal handling the only way to stop is a kill; never resolve.
            std::future::pending::<()>().await;
        }
    }
}
