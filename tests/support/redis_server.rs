//! A private `redis-server` for one test: its own free loopback port and directory, every
//! write persisted (as a production Redis with AOF), stopped when dropped. Shared by the
//! integration tests of several crates through `#[path]`, so there is one copy.

// Each test file uses what it needs of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A running (or stopped, to be started again) Redis of the test's own.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one on a free loopback port.
    pub(crate) async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts one with extra `redis-server` arguments (e.g. `--requirepass`).
    pub(crate) async fn start_with(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let mut redis = Self {
            child: None,
            port,
            dir: tempfile::tempdir().expect("a directory for Redis"),
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        redis.spawn().await;
        redis
    }

    /// Starts it again after [`RedisServer::stop`], on the same port and data.
    pub(crate) async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "redis-server is required ({error}): apt-get install redis-server, or run scripts/test, which installs it"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.listening().await {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it accepts connections and answers (even if only to say it wants a password).
    async fn listening(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut reply = [0; 1];
        stream.write_all(b"PING\r\n").await.is_ok() && stream.read_exact(&mut reply).await.is_ok()
    }

    /// Stops it as an operator or a failover does: SIGTERM, which flushes the AOF.
    pub(crate) async fn stop(&mut self) {
        let mut child = self.child.take().expect("Redis is running");
        let pid = child.id().expect("still running").to_string();
        let killed = std::process::Command::new("kill")
            .args(["-s", "TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("redis-server stops")
            .expect("redis-server exits");
    }

    /// `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}
