//! Settings, in layers: embedded defaults that run locally with nothing else installed, then
//! an optional TOML file (`--config PATH` or `APP_CONFIG`), then the original's `PORT` and
//! `NODE_ENV`, then `APP_*` environment variables with `__` between levels
//! (`APP_SERVER__PORT=8080`). Every value is checked once, here; a bad one stops start-up with
//! figment's message, which names the setting and where its value came from.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aimcs_adapters::outbound::{FileSinkSettings, FsyncPolicy, RedisSettings};
use std::sync::Arc;

use aimcs_adapters::inbound::auth::{AuthConfigError, AuthSettings, Authenticator};
use aimcs_adapters::inbound::tls::TlsSettings;
use aimcs_adapters::{CorsPolicy, HttpSettings, ServerSettings, WsSettings};
use aimcs_domain::RateLimit;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Environment variable naming the configuration file, when `--config` is not given.
pub const CONFIG_ENV: &str = "APP_CONFIG";

/// Prefix of the environment variables that hold settings.
const ENV_PREFIX: &str = "APP_";

/// Top-level settings, which are the only `APP_*` names without `__` read as settings.
const TOP_LEVEL: [&str; 12] = [
    "environment",
    "store",
    "redis",
    "auth",
    "metrics",
    "server",
    "cors",
    "http",
    "ws",
    "log",
    "audio",
    "sessions",
];

/// Whether `APP_<key>` is meant for us: a nested setting (`SERVER__PORT`) or a top-level
/// one. Platforms inject other `APP_*` variables (a Kubernetes Service named `app` adds
/// `APP_PORT` and `APP_SERVICE_HOST`), which must not stop start-up; nested names are ours,
/// so a misspelt one is still refused.
fn is_setting_variable(key: &str) -> bool {
    key.contains("__") || TOP_LEVEL.iter().any(|name| key.eq_ignore_ascii_case(name))
}

/// Default TCP connection limit: the WebSocket limit plus room for HTTP clients, and with a
/// recording file per WebSocket, within a process's usual limit of 20,000 open files.
const DEFAULT_MAX_TCP_CONNECTIONS: usize = 6_000;

/// The longest a browser token may live: a token is a bearer credential in a URL or header.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The origins the original allowed; the default allow-list.
pub const SEED_ORIGINS: [&str; 4] = [
    "https://aimcs-frontend-eastus2.azurewebsites.net",
    "https://aimcs.net",
    "http://localhost:5173",
    "http://localhost:3000",
];

/// All settings of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Name of the deployment environment (`development`, `production`, ...), for the logs.
    pub environment: String,
    /// Listening socket and shutdown.
    pub server: ServerConfig,
    /// Browser origins allowed to call the API.
    pub cors: CorsConfig,
    /// HTTP API limits.
    pub http: HttpConfig,
    /// WebSocket limits.
    pub ws: WsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Where audio goes.
    pub audio: AudioConfig,
    /// Audio sessions.
    pub sessions: SessionsConfig,
    /// Who may connect.
    pub auth: AuthConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Where connections and declared sessions are kept: `memory` (this process; one
    /// replica) or `redis` (shared by every replica using the same Redis).
    pub store: StoreKind,
    /// Redis, for `store = "redis"` and the `redis` audio sink.
    pub redis: RedisConfig,
}

/// Where connections and sessions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process: counts and resumes cover this replica only.
    Memory,
    /// In Redis: counts cover every replica, and sessions resume on any of them.
    Redis,
}

/// How to reach Redis, and what to keep there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:6379/0`, or `rediss://` for TLS (Azure Cache for Redis: port 6380). A
    /// password may be in the URL (`rediss://:password@host:6380`) or in `password`.
    pub url: Secret,
    /// User name for Redis 6 ACLs, when not in the URL.
    pub username: Option<String>,
    /// Password, when not in the URL (e.g. `APP_REDIS__PASSWORD` from a secret store).
    pub password: Option<Secret>,
    /// PEM file of a certificate authority to trust for `rediss://` instead of the public
    /// ones (Azure Cache for Redis needs none: its certificates are public).
    pub ca_cert_path: Option<PathBuf>,
    /// Multiplexed connections to Redis; each carries many requests at once.
    pub pool_size: u32,
    /// Milliseconds to wait for a connection to Redis.
    pub connect_timeout_ms: u64,
    /// Milliseconds to wait for any answer; a chunk Redis does not confirm in time is not
    /// acknowledged, and the client resends it.
    pub response_timeout_ms: u64,
    /// Prefix of every key, so that several deployments can share one Redis.
    pub key_prefix: String,
    /// Seconds a replica stays in the cluster's counts after its last heartbeat (it beats
    /// three times as often): how long a killed replica's connections are still counted.
    pub replica_ttl_secs: PositiveSeconds,
    /// Entries each session's audio stream keeps (`MAXLEN ~`); 0 keeps them all. Trimming
    /// drops the oldest audio: set it only when consumers keep up.
    pub stream_max_len: u64,
    /// Seconds an audio stream is kept after its last entry; 0 keeps it until deleted.
    pub stream_retention_secs: u64,
    /// Entries the index stream of sessions keeps (`MAXLEN ~`); 0 keeps them all.
    pub index_max_len: u64,
}

/// Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether metrics are recorded and served at all.
    pub enabled: bool,
    /// Serve `/metrics` on this address instead of the main port (e.g. `0.0.0.0:9100`, to keep
    /// it off a public ingress); unset, it is served on the main port.
    pub listen: Option<SocketAddr>,
}

/// Who may connect. Off by default, as in the original, so that its clients keep working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether API keys and browser tokens are required.
    pub enabled: bool,
    /// API keys of server-side clients, at least 16 characters each: a list, or one string
    /// with keys separated by commas (for an environment variable).
    pub api_keys: KeyList,
    /// The key browser tokens are signed with, at least 32 bytes. Replicas behind one load
    /// balancer must share it; unset, a random one is made at start-up and tokens only work
    /// on the instance that issued them.
    pub token_secret: Option<Secret>,
    /// Seconds a browser token stays valid.
    pub token_ttl_secs: PositiveSeconds,
}

/// A secret: kept out of debug output and logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// API keys, from a list or from one comma-separated string.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "OneOrMany", into = "Vec<Secret>")]
pub struct KeyList(Vec<Secret>);

impl KeyList {
    /// The keys.
    pub fn keys(&self) -> &[Secret] {
        &self.0
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for KeyList {
    fn from(keys: OneOrMany) -> Self {
        let keys = match keys {
            OneOrMany::One(text) => text.split(',').map(str::to_owned).collect(),
            OneOrMany::Many(keys) => keys,
        };
        Self(
            keys.into_iter()
                .map(|key| key.trim().to_owned())
                .filter(|key| !key.is_empty())
                .map(Secret)
                .collect(),
        )
    }
}

impl From<KeyList> for Vec<Secret> {
    fn from(keys: KeyList) -> Self {
        keys.0
    }
}

/// Where audio goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    /// The audio sink adapter, or a list of them to write to each (`["file", "null"]`).
    pub sink: SinkChoice,
    /// The file sink's settings.
    pub file: FileConfig,
}

/// One sink, or several written to in turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SinkChoice {
    /// One sink.
    One(SinkKind),
    /// Several sinks; a chunk is acknowledged once every one has it.
    Many(Vec<SinkKind>),
}

impl SinkChoice {
    /// The sinks chosen, in order.
    pub fn kinds(&self) -> &[SinkKind] {
        match self {
            Self::One(kind) => std::slice::from_ref(kind),
            Self::Many(kinds) => kinds,
        }
    }
}

/// The audio sink adapters to choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Count and discard, as the original did.
    Null,
    /// One WAV (or WebM/Ogg) file and one JSON manifest per session.
    File,
    /// One Redis stream per session, announced on an index stream, for downstream workers.
    Redis,
}

impl SinkKind {
    /// The sink's name, as configured and as its metrics are labelled.
    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::File => "file",
            Self::Redis => "redis",
        }
    }
}

/// The file sink's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory of recordings, created if missing; relative to the working directory.
    pub dir: PathBuf,
    /// When recordings are forced to disk: `never`, `commit` (on `audio_commit` and at the end)
    /// or `always` (every chunk).
    pub fsync: FsyncSetting,
    /// Remove the oldest finished recordings while the directory holds more bytes than this;
    /// 0 for no limit.
    pub max_total_bytes: u64,
    /// Remove finished recordings older than this many seconds; 0 for no limit.
    pub max_age_secs: u64,
}

/// When recordings are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncSetting {
    /// The operating system decides.
    Never,
    /// On `audio_commit` and when a recording ends.
    Commit,
    /// After every chunk.
    Always,
}

/// Audio sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Seconds a declared session whose connection dropped waits to be resumed before its
    /// recording is finished.
    pub resume_grace_secs: PositiveSeconds,
    /// How many dropped sessions may wait to be resumed at once; beyond it the oldest is
    /// finished. Each keeps its recording open, so this bounds what dropped connections pin.
    pub max_parked: u32,
}

/// Listening socket and shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; `0.0.0.0` listens on every IPv4 interface, as the original did.
    pub host: IpAddr,
    /// Port to listen on; `0` picks a free one.
    pub port: u16,
    /// Seconds a client may take to send its request headers.
    pub header_read_timeout_secs: PositiveSeconds,
    /// Seconds shutdown waits for open connections before exiting anyway.
    pub shutdown_grace_secs: PositiveSeconds,
    /// Seconds shutdown keeps serving after `/readyz` turns 503, so that a load balancer
    /// stops sending new clients first (5 suits Kubernetes); 0 stops at once.
    pub drain_delay_secs: u64,
    /// TCP connections open at once (HTTP and WebSocket); beyond it new ones wait in the
    /// listen backlog. Each WebSocket that records holds two file descriptors.
    pub max_connections: Count,
    /// Serve HTTPS and WSS directly with this certificate.
    pub tls: Option<TlsConfig>,
}

/// A certificate and key to serve HTTPS and WSS with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key.
    pub key_path: PathBuf,
    /// Seconds between checks for a renewed certificate.
    #[serde(default = "default_tls_reload")]
    pub reload_interval_secs: PositiveSeconds,
}

fn default_tls_reload() -> PositiveSeconds {
    PositiveSeconds(60)
}

/// Browser origins allowed to call the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`scheme://host[:port]`), as browsers send them.
    pub allowed_origins: Vec<Origin>,
}

/// HTTP API limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: Bytes,
    /// How deeply a JSON body may nest.
    pub max_json_depth: Depth,
    /// Seconds a request body may take to arrive once its headers have.
    pub body_timeout_secs: PositiveSeconds,
    /// Whether the client page is served at `/`.
    pub page: bool,
}

/// WebSocket limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsConfig {
    /// Largest message a client may send, in bytes.
    pub max_message_bytes: Bytes,
    /// Bytes one read asks for; an idle connection holds no read buffer.
    pub read_buffer_bytes: Bytes,
    /// Seconds a reply may wait for a client that is not reading before it is dropped.
    pub send_timeout_secs: PositiveSeconds,
    /// WebSockets open at once; beyond it an upgrade gets 503.
    pub max_connections: Count,
    /// Messages a connection may send per second on average; 0 for no limit.
    pub max_messages_per_second: u32,
    /// Messages a connection may send at once above the average.
    pub burst: u32,
    /// How deeply a message's JSON may nest.
    pub max_json_depth: Depth,
    /// Seconds between pings; a client that answers none is closed after two intervals.
    pub ping_interval_secs: PositiveSeconds,
    /// Seconds without a message after which a connection is closed (4408).
    pub idle_timeout_secs: PositiveSeconds,
    /// Whether upgrades without an `Origin` header (clients that are not browsers) are
    /// accepted.
    pub allow_missing_origin: bool,
    /// Whether `/ws/echo` exists, for conformance tests; refused in production.
    pub echo_endpoint: bool,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` (readable lines for a terminal) or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or directives (`info,aimcs_adapters=debug`).
    /// `RUST_LOG`, when set, takes precedence.
    pub level: LogLevel,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines, for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A validated `tracing` filter directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogLevel(String);

impl LogLevel {
    /// The directive text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    fn try_from(directive: String) -> Result<Self, Self::Error> {
        use tracing_subscriber::filter::LevelFilter;
        // `EnvFilter` reads an unknown word as a target name, so a typo such as `inf` would
        // silently turn logging off; insist on a level in every directive.
        let is_level =
            |text: &str| !text.trim().is_empty() && text.trim().parse::<LevelFilter>().is_ok();
        let well_formed = directive
            .split(',')
            .all(|part| match part.rsplit_once('=') {
                Some((target, level)) => !target.trim().is_empty() && is_level(level),
                None => is_level(part),
            });
        if well_formed && tracing_subscriber::EnvFilter::try_new(&directive).is_ok() {
            Ok(Self(directive))
        } else {
            Err(format!(
                "{directive:?} is not a log level or filter: use trace, debug, info, warn, error or off, \
                 optionally with target=level directives such as info,aimcs_adapters=debug"
            ))
        }
    }
}

impl From<LogLevel> for String {
    fn from(level: LogLevel) -> Self {
        level.0
    }
}

/// A validated browser origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Origin(String);

impl TryFrom<String> for Origin {
    type Error = String;

    fn try_from(origin: String) -> Result<Self, Self::Error> {
        CorsPolicy::new([&origin])
            .map(|_| Self(origin))
            .map_err(|e| e.to_string())
    }
}

impl From<Origin> for String {
    fn from(origin: Origin) -> Self {
        origin.0
    }
}

/// A whole number of seconds, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct PositiveSeconds(u64);

impl PositiveSeconds {
    /// As a duration.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl TryFrom<u64> for PositiveSeconds {
    type Error = String;

    fn try_from(secs: u64) -> Result<Self, Self::Error> {
        if secs == 0 {
            Err("must be at least 1 second".into())
        } else {
            Ok(Self(secs))
        }
    }
}

impl From<PositiveSeconds> for u64 {
    fn from(secs: PositiveSeconds) -> Self {
        secs.0
    }
}

/// A count of connections, from 1 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Count(usize);

impl Count {
    /// The count.
    pub fn get(self) -> usize {
        self.0
    }
}

impl TryFrom<u64> for Count {
    type Error = String;

    fn try_from(count: u64) -> Result<Self, Self::Error> {
        match usize::try_from(count) {
            Ok(count @ 1..=1_000_000) => Ok(Self(count)),
            _ => Err(format!("{count} is out of range: use 1 to 1000000")),
        }
    }
}

impl From<Count> for u64 {
    fn from(count: Count) -> Self {
        count.0 as u64
    }
}

/// A JSON nesting depth, from 2 (an object holding an object) to 128 (`serde_json`'s own
/// recursion limit, beyond which nothing parses anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Depth(usize);

impl Depth {
    /// The depth.
    pub fn get(self) -> usize {
        self.0
    }
}

impl TryFrom<u64> for Depth {
    type Error = String;

    fn try_from(depth: u64) -> Result<Self, Self::Error> {
        match usize::try_from(depth) {
            Ok(depth @ 2..=128) => Ok(Self(depth)),
            _ => Err(format!("{depth} is out of range: use 2 to 128")),
        }
    }
}

impl From<Depth> for u64 {
    fn from(depth: Depth) -> Self {
        depth.0 as u64
    }
}

/// A byte size between 1 KiB and 64 MiB: smaller breaks clients, larger invites abuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Bytes(usize);

impl Bytes {
    /// The size in bytes.
    pub fn get(self) -> usize {
        self.0
    }
}

impl TryFrom<u64> for Bytes {
    type Error = String;

    fn try_from(bytes: u64) -> Result<Self, Self::Error> {
        const RANGE: std::ops::RangeInclusive<u64> = 1024..=64 * 1024 * 1024;
        match usize::try_from(bytes) {
            Ok(size) if RANGE.contains(&bytes) => Ok(Self(size)),
            _ => Err(format!(
                "{bytes} bytes is out of range: use 1024 to 67108864"
            )),
        }
    }
}

impl From<Bytes> for u64 {
    fn from(bytes: Bytes) -> Self {
        bytes.0 as u64
    }
}

impl Default for Settings {
    fn default() -> Self {
        let http = HttpSettings::default();
        let ws = WsSettings::default();
        Self {
            environment: "development".into(),
            server: ServerConfig {
                host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port: 3000,
                header_read_timeout_secs: PositiveSeconds(10),
                shutdown_grace_secs: PositiveSeconds(10),
                drain_delay_secs: 0,
                max_connections: Count(DEFAULT_MAX_TCP_CONNECTIONS),
                tls: None,
            },
            cors: CorsConfig {
                allowed_origins: SEED_ORIGINS.iter().map(|o| Origin((*o).into())).collect(),
            },
            http: HttpConfig {
                max_body_bytes: Bytes(http.max_body_bytes),
                max_json_depth: Depth(http.max_json_depth),
                body_timeout_secs: PositiveSeconds(http.body_timeout.as_secs()),
                page: http.page,
            },
            ws: WsConfig {
                max_message_bytes: Bytes(ws.max_message_bytes),
                read_buffer_bytes: Bytes(ws.read_buffer_bytes),
                send_timeout_secs: PositiveSeconds(ws.send_timeout.as_secs()),
                max_connections: Count(ws.max_connections),
                max_messages_per_second: ws.rate.map_or(0, |rate| rate.per_second),
                burst: ws.rate.map_or(0, |rate| rate.burst),
                max_json_depth: Depth(ws.max_json_depth),
                ping_interval_secs: PositiveSeconds(ws.ping_interval.as_secs()),
                idle_timeout_secs: PositiveSeconds(ws.idle_timeout.as_secs()),
                allow_missing_origin: ws.allow_missing_origin,
                echo_endpoint: ws.echo_endpoint,
            },
            log: LogConfig {
                format: LogFormat::Pretty,
                level: LogLevel("info".into()),
            },
            audio: AudioConfig {
                sink: SinkChoice::One(SinkKind::File),
                file: FileConfig {
                    dir: PathBuf::from("recordings"),
                    fsync: FsyncSetting::Commit,
                    max_total_bytes: 0,
                    max_age_secs: 0,
                },
            },
            sessions: SessionsConfig {
                resume_grace_secs: PositiveSeconds(60),
                max_parked: 1_000,
            },
            metrics: MetricsConfig {
                enabled: true,
                listen: None,
            },
            auth: AuthConfig {
                enabled: false,
                api_keys: KeyList::default(),
                token_secret: None,
                token_ttl_secs: PositiveSeconds(60),
            },
            store: StoreKind::Memory,
            redis: RedisConfig {
                url: Secret("redis://127.0.0.1:6379".into()),
                username: None,
                password: None,
                ca_cert_path: None,
                pool_size: 4,
                connect_timeout_ms: 2_000,
                response_timeout_ms: 2_000,
                key_prefix: "aimcs".into(),
                replica_ttl_secs: PositiveSeconds(10),
                stream_max_len: 0,
                stream_retention_secs: 86_400,
                index_max_len: 100_000,
            },
        }
    }
}

/// Settings could not be loaded; says which setting, what is wrong, and where the value came
/// from (file, environment variable or defaults), one line per problem.
#[derive(Debug)]
pub struct SettingsError(Box<figment::Error>);

impl std::error::Error for SettingsError {}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in (*self.0).clone().into_iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            let problem = error.kind.to_string();
            if error.path.is_empty() {
                // No setting to name: the source as a whole is unusable (e.g. a missing file).
                write!(f, "cannot read configuration: {}", problem.trim())?;
            } else {
                write!(
                    f,
                    "invalid setting `{}`: {}",
                    error.path.join("."),
                    problem.trim()
                )?;
            }
            if let Some(source) = describe_source(&error, &error.path) {
                write!(f, " (from {source})")?;
            }
        }
        Ok(())
    }
}

/// Where a bad value came from, in the words an operator would search for.
fn describe_source(error: &figment::Error, path: &[String]) -> Option<String> {
    let metadata = error.metadata.as_ref()?;
    if let Some(figment::Source::File(file)) = &metadata.source {
        return Some(format!("file {}", file.display()));
    }
    // Array elements live in one variable, so an index is not part of its name.
    let named: Vec<&str> = path
        .iter()
        .map(String::as_str)
        .filter(|p| !p.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    if metadata.name.contains("APP_") {
        return Some(format!(
            "environment variable APP_{}",
            named.join("__").to_uppercase()
        ));
    }
    if metadata.name.contains("environment") {
        let variable = match named.as_slice() {
            ["server", "port"] => "PORT",
            ["environment"] => "NODE_ENV",
            _ => return Some(metadata.name.to_string()),
        };
        return Some(format!("environment variable {variable}"));
    }
    Some(metadata.name.to_string())
}

impl Settings {
    /// Loads the layers described in the module docs. `config` is the `--config` argument,
    /// which wins over `APP_CONFIG`.
    ///
    /// # Errors
    /// [`SettingsError`] naming the first bad value, its setting and its source.
    pub fn load(config: Option<&Path>) -> Result<Self, SettingsError> {
        let settings: Self = Self::figment(config)
            .extract()
            .map_err(|e| SettingsError(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what no single value can: combinations, and secrets strong enough to use.
    fn validate(&self) -> Result<(), SettingsError> {
        let refuse = |path: &[&str], problem: &str| {
            let mut error = figment::Error::from(problem.to_owned());
            error.path = path.iter().map(|p| (*p).to_owned()).collect();
            Err(SettingsError(Box::new(error)))
        };
        if self.ws.echo_endpoint && self.environment.eq_ignore_ascii_case("production") {
            return refuse(
                &["ws", "echo_endpoint"],
                "the echo endpoint is for conformance tests and is refused in production",
            );
        }
        if self.auth.token_ttl_secs.duration() > MAX_TOKEN_TTL {
            return refuse(
                &["auth", "token_ttl_secs"],
                "browser tokens must be short-lived: at most 3600 seconds",
            );
        }
        if self.ws.max_messages_per_second > 0 && self.ws.burst == 0 {
            return refuse(
                &["ws", "burst"],
                "must be at least 1 when max_messages_per_second is set",
            );
        }
        if self.uses_redis() {
            let url = self.redis.url.expose();
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return refuse(
                    &["redis", "url"],
                    "must start with redis:// or rediss:// (TLS)",
                );
            }
            if !(1..=64).contains(&self.redis.pool_size) {
                return refuse(&["redis", "pool_size"], "use 1 to 64 connections");
            }
            for (name, ms) in [
                ("connect_timeout_ms", self.redis.connect_timeout_ms),
                ("response_timeout_ms", self.redis.response_timeout_ms),
            ] {
                if !(10..=60_000).contains(&ms) {
                    return refuse(&["redis", name], "use 10 to 60000 milliseconds");
                }
            }
            let retention = self.redis.stream_retention_secs;
            let grace = self.sessions.resume_grace_secs.duration().as_secs();
            if retention != 0 && retention < grace + 60 {
                return refuse(
                    &["redis", "stream_retention_secs"],
                    "must be 0 (keep) or at least sessions.resume_grace_secs + 60, so that a resumable session's audio is still there",
                );
            }
            if self.redis.key_prefix.is_empty()
                || self.redis.key_prefix.contains(char::is_whitespace)
            {
                return refuse(
                    &["redis", "key_prefix"],
                    "must be a non-empty word without spaces",
                );
            }
        }
        if self.auth.enabled
            && let Err(error) = Authenticator::new(&self.auth_settings())
        {
            let path: &[&str] = match error {
                AuthConfigError::ShortSecret => &["auth", "token_secret"],
                AuthConfigError::NoApiKeys | AuthConfigError::ShortApiKey => &["auth", "api_keys"],
            };
            return refuse(path, &error.to_string());
        }
        Ok(())
    }

    /// Whether anything is configured to use Redis.
    pub fn uses_redis(&self) -> bool {
        self.store == StoreKind::Redis || self.audio.sink.kinds().contains(&SinkKind::Redis)
    }

    /// How to reach Redis.
    pub fn redis_settings(&self) -> RedisSettings {
        RedisSettings {
            url: self.redis.url.expose().to_owned(),
            username: self.redis.username.clone(),
            password: self.redis.password.as_ref().map(|p| p.expose().to_owned()),
            ca_cert_path: self.redis.ca_cert_path.clone(),
            pool_size: self.redis.pool_size as usize,
            connect_timeout: Duration::from_millis(self.redis.connect_timeout_ms),
            response_timeout: Duration::from_millis(self.redis.response_timeout_ms),
            key_prefix: self.redis.key_prefix.clone(),
        }
    }

    /// The authentication settings; a missing token secret is made up, random, for this
    /// process.
    pub fn auth_settings(&self) -> AuthSettings {
        let token_secret = match &self.auth.token_secret {
            Some(secret) => secret.expose().as_bytes().to_vec(),
            None => {
                let mut secret = uuid::Uuid::new_v4().as_bytes().to_vec();
                secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
                secret
            }
        };
        AuthSettings {
            api_keys: self
                .auth
                .api_keys
                .keys()
                .iter()
                .map(|key| key.expose().to_owned())
                .collect(),
            token_secret,
            token_ttl: self.auth.token_ttl_secs.duration(),
        }
    }

    /// The layered sources, before extraction.
    pub fn figment(config: Option<&Path>) -> Figment {
        let file = config
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            // An explicit file must exist: a typo in its path must not silently run defaults.
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::raw().only(&["PORT"]).map(|_| "server.port".into()))
            .merge(Env::raw().only(&["NODE_ENV"]).map(|_| "environment".into()))
            .merge(
                Env::prefixed(ENV_PREFIX)
                    .filter(|key| is_setting_variable(key.as_str()))
                    .split("__"),
            )
    }

    /// `APP_*` variables that are not read as settings (see [`is_setting_variable`]), for a
    /// warning at start-up.
    pub fn ignored_variables() -> Vec<String> {
        let mut ignored: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| {
                name.strip_prefix(ENV_PREFIX)
                    .is_some_and(|key| !is_setting_variable(key))
            })
            .collect();
        ignored.sort();
        ignored
    }

    /// The address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server.host, self.server.port)
    }

    /// The file sink's settings.
    pub fn file_sink_settings(&self) -> FileSinkSettings {
        let file = &self.audio.file;
        FileSinkSettings {
            dir: file.dir.clone(),
            fsync: match file.fsync {
                FsyncSetting::Never => FsyncPolicy::Never,
                FsyncSetting::Commit => FsyncPolicy::Commit,
                FsyncSetting::Always => FsyncPolicy::Always,
            },
            max_total_bytes: (file.max_total_bytes > 0).then_some(file.max_total_bytes),
            max_age: (file.max_age_secs > 0).then(|| Duration::from_secs(file.max_age_secs)),
        }
    }

    /// The transport's settings; `auth` is the authenticator when authentication is on.
    pub fn server_settings(&self, auth: Option<Arc<Authenticator>>) -> ServerSettings {
        let cors = CorsPolicy::new(self.cors.allowed_origins.iter().map(|o| o.0.as_str()))
            .expect("origins are validated when settings are loaded");
        let ws = &self.ws;
        ServerSettings {
            cors,
            http: HttpSettings {
                max_body_bytes: self.http.max_body_bytes.get(),
                max_json_depth: self.http.max_json_depth.get(),
                body_timeout: self.http.body_timeout_secs.duration(),
                page: self.http.page,
            },
            ws: WsSettings {
                max_message_bytes: ws.max_message_bytes.get(),
                read_buffer_bytes: ws.read_buffer_bytes.get(),
                // Half the grace period at most, so that closing handshakes fit in it.
                close_timeout: WsSettings::default()
                    .close_timeout
                    .min(self.server.shutdown_grace_secs.duration() / 2),
                send_timeout: ws.send_timeout_secs.duration(),
                max_connections: ws.max_connections.get(),
                rate: (ws.max_messages_per_second > 0).then_some(RateLimit {
                    per_second: ws.max_messages_per_second,
                    burst: ws.burst,
                }),
                max_json_depth: ws.max_json_depth.get(),
                ping_interval: ws.ping_interval_secs.duration(),
                idle_timeout: ws.idle_timeout_secs.duration(),
                allow_missing_origin: ws.allow_missing_origin,
                echo_endpoint: ws.echo_endpoint,
            },
            header_read_timeout: self.server.header_read_timeout_secs.duration(),
            shutdown_grace: self.server.shutdown_grace_secs.duration(),
            drain_delay: Duration::from_secs(self.server.drain_delay_secs),
            max_connections: self.server.max_connections.get(),
            tls: self.server.tls.as_ref().map(|tls| TlsSettings {
                cert_path: tls.cert_path.clone(),
                key_path: tls.key_path.clone(),
                reload_interval: tls.reload_interval_secs.duration(),
            }),
            auth,
            metrics: None,
        }
    }
}

#[cfg(test)]
mod tests;
