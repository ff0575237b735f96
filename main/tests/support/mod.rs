//! Running the `aimcs-backend` binary as an operator would, for the test files that need a
//! real process (signals, exit codes, several replicas).

// Each test file uses some of these helpers, not all.
#![allow(dead_code, unreachable_pub)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

pub const BINARY: &str = env!("CARGO_BIN_EXE_aimcs-backend");

/// The binary with an empty environment, run in a directory of its own so that its default
/// `recordings/` lands there (the file sink refuses a directory another process is using).
pub fn binary() -> Command {
    binary_in_own_directory().0
}

/// [`binary`], and the directory it runs in.
pub fn binary_in_own_directory() -> (Command, std::path::PathBuf) {
    static SCRATCH: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let scratch = SCRATCH.get_or_init(|| tempfile::tempdir().expect("a scratch directory"));
    let own = scratch.path().join(uuid_like());
    std::fs::create_dir(&own).expect("a directory for this run");
    let mut command = Command::new(BINARY);
    command.env_clear().current_dir(&own);
    (command, own)
}

/// A name no other run in this process uses.
pub fn uuid_like() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "run-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The binary, started on a free loopback port with JSON logs, and the address it reported.
pub struct Running {
    /// The process.
    pub child: Child,
    /// The address it listens on.
    pub addr: String,
    /// Its log lines, parsed.
    pub logs: tokio::sync::mpsc::UnboundedReceiver<Value>,
    /// The working directory, which holds `recordings/`.
    pub dir: std::path::PathBuf,
}

pub async fn start(extra_env: &[(&str, &str)]) -> Running {
    let (mut command, dir) = binary_in_own_directory();
    command
        .env("APP_SERVER__HOST", "127.0.0.1")
        .env("APP_SERVER__PORT", "0")
        .env("APP_LOG__FORMAT", "json")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, mut logs) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let parsed = serde_json::from_str::<Value>(&line)
                .unwrap_or_else(|_| panic!("a log line that is not JSON: {line}"));
            if tx.send(parsed).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), logs.recv())
            .await
            .expect("a log line in time")
            .expect("the binary logs");
        if line["message"] == "listening" {
            break line["addr"]
                .as_str()
                .expect("the address is logged")
                .to_owned();
        }
    };
    Running {
        child,
        addr,
        logs,
        dir,
    }
}

pub fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

pub async fn exit_code(child: &mut Child) -> i32 {
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the process exits in time")
        .unwrap()
        .code()
        .expect("an exit code")
}
