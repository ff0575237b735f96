//! Redis adapters, for more than one replica: a connection store every replica registers
//! with, a shared session store for resuming on any replica, and an audio sink that appends
//! every chunk to a Redis stream that downstream workers consume.
//!
//! Keys, all under the configured prefix (`aimcs` by default):
//! - `{p}:replicas`: sorted set of replica ids, scored by their last heartbeat;
//! - `{p}:replica:{id}`: hash of a replica's counts, expiring unless renewed;
//! - `{p}:session:{id}`: hash of a declared session's resume state;
//! - `{p}:audio:{session}`: stream of one session's chunks, between a start and an end marker;
//! - `{p}:audio:{session}:meta`: hash of what that stream holds, and who may append to it;
//! - `{p}:sessions`: the index stream announcing each session's start and end.
//!
//! The scripts touch several keys at once, so the keys of one deployment must live on one
//! Redis node: a single instance or a primary with replicas (Azure Cache Basic, Standard or
//! Premium without clustering), not Redis Cluster.

mod cluster;
mod consumer;
mod snapshot;
mod stream_sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::IntoConnectionInfo as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use cluster::{ClusterSettings, RedisConnectionStore};
pub use consumer::{ConsumeError, GroupConsumer, Reassembled, SessionReader};
pub use stream_sink::{RedisStreamAudioSink, StreamSettings};

/// How to reach Redis and how to lay out what is kept there.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db`, or `rediss://` for TLS (Azure Cache for Redis: port 6380).
    pub url: String,
    /// User name, when not in the URL (Redis 6 ACLs).
    pub username: Option<String>,
    /// Password, when not in the URL; takes precedence over the URL's.
    pub password: Option<String>,
    /// PEM file of the certificate authority to trust for `rediss://` instead of the public
    /// ones (a self-hosted Redis with a private CA).
    pub ca_cert_path: Option<std::path::PathBuf>,
    /// Multiplexed connections to open; each carries many requests at once.
    pub pool_size: usize,
    /// How long to wait for a connection to be established.
    pub connect_timeout: Duration,
    /// How long to wait for any answer before the request fails.
    pub response_timeout: Duration,
    /// Prefix of every key, so that several deployments can share one Redis.
    pub key_prefix: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never in logs.
        f.debug_struct("RedisSettings")
            .field("url", &redact(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_cert_path", &self.ca_cert_path)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL cannot be read.
    #[error("the Redis URL {url} is not usable: {reason}")]
    InvalidUrl {
        /// The URL, without its password.
        url: String,
        /// Why.
        reason: String,
    },
    /// The certificate authority file cannot be read.
    #[error("cannot read the Redis CA certificate {path}")]
    CaCert {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Redis did not answer, or refused the credentials.
    #[error("Redis at {target} does not answer")]
    Unreachable {
        /// The URL, without its password.
        target: String,
        /// What the client reported.
        #[source]
        source: redis::RedisError,
    },
}

/// A few multiplexed connections, handed out in turn. Each reconnects by itself after a
/// failure; requests meanwhile fail at once instead of queueing.
#[derive(Clone)]
pub struct RedisPool {
    connections: Arc<[ConnectionManager]>,
    next: Arc<AtomicUsize>,
    target: Arc<str>,
    prefix: Arc<str>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("target", &self.target)
            .field("size", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl RedisPool {
    /// Connects every connection of the pool and checks that Redis answers.
    ///
    /// # Errors
    /// [`RedisError`] when the URL is unusable or Redis does not answer in time.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, RedisError> {
        let target = redact(&settings.url);
        let invalid = |reason: String| RedisError::InvalidUrl {
            url: target.clone(),
            reason,
        };
        if settings.url.starts_with("rediss://") {
            // rustls needs a process-wide provider; the service is built with ring only.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|error| invalid(error.to_string()))?;
        let mut redis_settings = info.redis_settings().clone();
        if let Some(username) = &settings.username {
            redis_settings = redis_settings.set_username(username);
        }
        if let Some(password) = &settings.password {
            redis_settings = redis_settings.set_password(password);
        }
        // Without TCP_NODELAY, Nagle's algorithm holds a request back until the previous one
        // is acknowledged: tens of milliseconds on every chunk acknowledgement.
        info = info
            .set_redis_settings(redis_settings)
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = match &settings.ca_cert_path {
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|source| RedisError::CaCert {
                    path: path.clone(),
                    source,
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(info, certificates)
            }
            None => redis::Client::open(info),
        }
        .map_err(|error| invalid(error.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            // Reconnecting is the manager's job in the background; a request must not wait
            // through a long back-off while a client waits for its acknowledgement.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let mut connections = Vec::with_capacity(settings.pool_size.max(1));
        for _ in 0..settings.pool_size.max(1) {
            let unreachable = |source| RedisError::Unreachable {
                target: target.clone(),
                source,
            };
            let connect = client.get_connection_manager_with_config(config.clone());
            let mut connection = tokio::time::timeout(settings.connect_timeout * 2, connect)
                .await
                .map_err(|_| {
                    unreachable(redis::RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                })?
                .map_err(unreachable)?;
            redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await
                .map_err(unreachable)?;
            connections.push(connection);
        }
        Ok(Self {
            connections: connections.into(),
            next: Arc::new(AtomicUsize::new(0)),
            target: target.into(),
            prefix: settings.key_prefix.clone().into(),
        })
    }

    /// A connection, the next in turn.
    pub(crate) fn get(&self) -> ConnectionManager {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[index].clone()
    }

    /// Where the pool connects, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A key under the deployment's prefix.
    pub(crate) fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}:{}", self.prefix, parts)
    }

    /// Whether Redis answers now.
    ///
    /// # Errors
    /// What the client reported.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        redis::cmd("PING").query_async::<()>(&mut self.get()).await
    }
}

/// `url` with any password replaced, for logs and error messages. Everything between the
/// scheme and the last `@` is credentials: a password (an Azure access key is base64) may
/// hold `/`, which would end the authority for a URL parser.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_the_url_in_messages() {
        assert_eq!(
            redact("rediss://:s3cret@cache.redis.cache.windows.net:6380/0"),
            "rediss://:***@cache.redis.cache.windows.net:6380/0"
        );
        assert_eq!(
            redact("redis://user:pw@127.0.0.1:6379"),
            "redis://user:***@127.0.0.1:6379"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/2"),
            "redis://127.0.0.1:6379/2"
        );
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(
            redact("rediss://:ab/cd+ef=@cache.example:6380/0"),
            "rediss://:***@cache.example:6380/0",
            "a base64 key with a slash"
        );
    }

    #[test]
    fn settings_print_without_secrets() {
        let settings = RedisSettings {
            url: "redis://:hunter2@localhost".into(),
            username: None,
            password: Some("hunter3".into()),
            ca_cert_path: None,
            pool_size: 2,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            key_prefix: "aimcs".into(),
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter"), "{printed}");
    }

    #[tokio::test]
    async fn an_unusable_url_is_refused_with_its_reason() {
        let settings = RedisSettings {
            url: "http://localhost".into(),
            username: None,
            password: None,
            ca_cert_path: None,
            pool_size: 1,
            connect_timeout: Duration::from_millis(200),
            response_timeout: Duration::from_millis(200),
            key_prefix: "aimcs".into(),
        };
        let error = RedisPool::connect(&settings).await.unwrap_err();
        assert!(matches!(error, RedisError::InvalidUrl { .. }), "{error:?}");
    }
}
