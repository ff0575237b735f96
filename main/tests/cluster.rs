//! Replicas on one Redis, as operators run them: real `aimcs-backend` processes, a real
//! `redis-server` of each test's own on a free loopback port, real WebSocket clients, and the
//! `redis-consume` worker reading the audio back.

use std::io::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod support;
use support::{BINARY, Running, signal, start};

#[path = "../../tests/support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer as Redis;

/// How long a replica stays counted after its last heartbeat, in these tests.
const REPLICA_TTL_SECS: u64 = 2;

/// Bytes per chunk: 100 ms of 16 kHz mono PCM.
const CHUNK_BYTES: usize = 3_200;

/// A replica on `redis`.
async fn replica(redis: &Redis) -> Running {
    start(&[
        ("APP_STORE", "redis"),
        ("APP_AUDIO__SINK", "redis"),
        ("APP_REDIS__URL", &redis.url()),
        ("APP_REDIS__REPLICA_TTL_SECS", &REPLICA_TTL_SECS.to_string()),
        ("APP_REDIS__RESPONSE_TIMEOUT_MS", "500"),
        ("APP_REDIS__CONNECT_TIMEOUT_MS", "500"),
        ("APP_SESSIONS__RESUME_GRACE_SECS", "30"),
    ])
    .await
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client that reads one reply per message it sends.
struct Client {
    socket: Socket,
}

impl Client {
    async fn connect(addr: &str) -> Self {
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/audio"))
            .await
            .expect("the upgrade succeeds");
        let greeting = next_json(&mut socket).await;
        assert_eq!(greeting["type"], "connection", "{greeting}");
        Self { socket }
    }

    async fn request(&mut self, message: Value) -> Value {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("the message is sent");
        next_json(&mut self.socket).await
    }

    async fn send_chunk(&mut self, seq: u64) -> Value {
        let data = base64::engine::general_purpose::STANDARD.encode(chunk(seq));
        self.request(json!({"type": "audio", "data": data, "seq": seq}))
            .await
    }

    /// Sends chunks `seqs`, each acknowledged before the next.
    async fn stream(&mut self, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            let ack = self.send_chunk(seq).await;
            assert_eq!(ack["type"], "audio_received", "chunk {seq}: {ack}");
            assert_eq!(ack["seq"], seq, "{ack}");
        }
    }
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .expect("a readable message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

/// Chunk `seq`'s bytes: different for every chunk, so that a chunk out of place shows.
fn chunk(seq: u64) -> Vec<u8> {
    (0..CHUNK_BYTES)
        .map(|i| (seq as usize * 31 + i * 7) as u8)
        .collect()
}

fn pcm_start() -> Value {
    json!({"type": "session_start", "format": {"encoding": "pcm_s16le", "sampleRate": 16000}})
}

async fn get(addr: &str, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("the service answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Polls `/health` of `addr` until `wanted` holds of it.
async fn wait_for_health(addr: &str, within: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, health) = get(addr, "/health").await;
        if wanted(&health) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "not within {within:?}; last /health: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads session `session` back with the example worker, as a downstream consumer would.
async fn consume(redis: &Redis, session: &str) -> (Vec<u8>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("session.pcm");
    let output = Command::new(BINARY)
        .env_clear()
        .env("APP_REDIS__URL", redis.url())
        .arg("redis-consume")
        .args(["--session", session, "--out"])
        .arg(&out)
        .output()
        .await
        .expect("redis-consume runs");
    assert!(
        output.status.success(),
        "redis-consume failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = serde_json::from_slice(&output.stdout).expect("a JSON report");
    (std::fs::read(out).unwrap(), report)
}

fn expected(seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    seqs.flat_map(chunk).collect()
}

#[tokio::test]
async fn replicas_share_counts_and_a_session_survives_its_replica_being_killed() {
    let redis = Redis::start().await;
    let mut a = replica(&redis).await;
    let b = replica(&redis).await;
    let mut idle = Vec::new();
    for addr in [&a.addr, &a.addr, &b.addr] {
        idle.push(Client::connect(addr).await);
    }
    let mut caller = Client::connect(&a.addr).await;

    for addr in [&a.addr, &b.addr] {
        let health = wait_for_health(addr, Duration::from_secs(3), |h| {
            h["cluster"]["connections"] == 4 && h["cluster"]["replicas"] == 2
        })
        .await;
        let own = if *addr == a.addr { 3 } else { 1 };
        assert_eq!(
            health["connections"], own,
            "this replica's, as before: {health}"
        );
    }
    let (_, status) = get(&b.addr, "/api/status").await;
    assert_eq!(status["activeConnections"], 1, "{status}");
    assert_eq!(status["cluster"]["connections"], 4, "{status}");

    let started = caller.request(pcm_start()).await;
    assert_eq!(started["type"], "session_started", "{started}");
    let session = started["sessionId"].as_str().unwrap().to_owned();
    let token = started["resumeToken"].as_str().unwrap().to_owned();
    caller.stream(1..=20).await;
    // Three more on their way when the replica dies: each may or may not have been stored.
    for seq in 21..=23 {
        let data = base64::engine::general_purpose::STANDARD.encode(chunk(seq));
        caller
            .socket
            .send(Message::text(
                json!({"type": "audio", "data": data, "seq": seq}).to_string(),
            ))
            .await
            .unwrap();
    }
    signal(&a.child, "KILL");
    let killed = Instant::now();
    a.child.wait().await.unwrap();

    // The client reconnects at once, before the dead replica's heartbeat has expired.
    let mut resumed = Client::connect(&b.addr).await;
    let reply = resumed
        .request(json!({"type": "session_resume", "sessionId": session, "resumeToken": token, "lastSeq": 20}))
        .await;
    assert_eq!(reply["type"], "session_resumed", "{reply}");
    let last = reply["lastSeq"].as_u64().expect("lastSeq");
    assert!((20..=23).contains(&last), "{reply}");
    resumed.stream(last + 1..=40).await;
    let again = resumed.send_chunk(last).await;
    assert_eq!(
        again["duplicate"], true,
        "a resend is not stored twice: {again}"
    );
    let ended = resumed.request(json!({"type": "session_end"})).await;
    assert_eq!(ended["type"], "session_ended", "{ended}");
    assert_eq!(ended["totalChunks"], 40, "{ended}");

    let health = wait_for_health(&b.addr, Duration::from_secs(REPLICA_TTL_SECS + 2), |h| {
        // Left on the cluster: the idle client on b and the resumed caller.
        h["cluster"]["replicas"] == 1 && h["cluster"]["connections"] == 2
    })
    .await;
    let gone_after = killed.elapsed();
    assert!(
        gone_after <= Duration::from_millis(REPLICA_TTL_SECS * 1000 + 1_000),
        "the killed replica was counted for {gone_after:?}, more than its {REPLICA_TTL_SECS} s time to live: {health}"
    );

    let (audio, report) = consume(&redis, &session).await;
    assert_eq!(report["chunks"], 40, "{report}");
    assert_eq!(report["resumptions"], 1, "{report}");
    assert_eq!(report["ending"], "ended", "{report}");
    assert!(
        audio == expected(1..=40),
        "the reassembled stream is not chunks 1 to 40, each once, in order ({} bytes)",
        audio.len()
    );
    // The figure the issue asks for, in the test's output when run with --nocapture.
    let _ = writeln!(
        std::io::stderr(),
        "killed replica left the cluster counts after {gone_after:?}; resumed at lastSeq {last}"
    );
}

#[tokio::test]
async fn with_redis_stopped_mid_stream_the_service_stays_up_refuses_clearly_and_loses_nothing() {
    let mut redis = Redis::start().await;
    let service = replica(&redis).await;
    let mut caller = Client::connect(&service.addr).await;
    let started = caller.request(pcm_start()).await;
    let session = started["sessionId"].as_str().unwrap().to_owned();
    caller.stream(1..=10).await;

    redis.stop().await;

    let refused = caller.send_chunk(11).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "audio_not_stored", "{refused}");
    let (status, ready) = get(&service.addr, "/readyz").await;
    assert_eq!(
        (status, ready["status"].as_str()),
        (503, Some("unavailable"))
    );
    let (status, health) = get(&service.addr, "/health").await;
    assert_eq!(status, 200, "the service itself is up: {health}");
    assert_eq!(health["cluster"]["status"], "unreachable", "{health}");
    let mut newcomer = Client::connect(&service.addr).await;
    let refused = newcomer.request(pcm_start()).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "recording_unavailable", "{refused}");
    assert!(
        refused["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{refused}"
    );

    redis.spawn().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&service.addr, "/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client resends what was not acknowledged, as the protocol says.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = caller.send_chunk(11).await;
        if reply["type"] == "audio_received" {
            break;
        }
        assert!(Instant::now() < deadline, "chunk 11 never stored: {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    caller.stream(12..=20).await;
    let ended = caller.request(json!({"type": "session_end"})).await;
    assert_eq!(ended["type"], "session_ended", "{ended}");

    let (audio, report) = consume(&redis, &session).await;
    assert_eq!(report["chunks"], 20, "{report}");
    assert!(
        audio == expected(1..=20),
        "acknowledged audio is missing or doubled after the Redis restart ({} bytes)",
        audio.len()
    );
}

#[tokio::test]
async fn start_up_fails_clearly_when_redis_does_not_answer() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(BINARY)
        .env_clear()
        .env("APP_STORE", "redis")
        .env(
            "APP_REDIS__URL",
            format!("redis://:hunter2@127.0.0.1:{port}"),
        )
        .env("APP_REDIS__CONNECT_TIMEOUT_MS", "300")
        .env("APP_SERVER__PORT", "0")
        .env("APP_LOG__FORMAT", "json")
        .output()
        .await
        .unwrap();

    assert_eq!(output.status.code(), Some(69));
    let logs = String::from_utf8_lossy(&output.stdout);
    assert!(logs.contains("does not answer"), "{logs}");
    assert!(logs.contains(&format!("127.0.0.1:{port}")), "{logs}");
    assert!(
        !logs.contains("hunter2"),
        "the password is never logged: {logs}"
    );
}

#[tokio::test]
async fn a_session_resumed_on_another_replica_is_fenced_off_the_first() {
    let redis = Redis::start().await;
    let a = replica(&redis).await;
    let b = replica(&redis).await;
    let mut first = Client::connect(&a.addr).await;
    let started = first.request(pcm_start()).await;
    let (session, token) = (
        started["sessionId"].as_str().unwrap().to_owned(),
        started["resumeToken"].as_str().unwrap().to_owned(),
    );
    first.stream(1..=5).await;

    // The first socket looks dead to the client but is still open on its replica.
    let mut second = Client::connect(&b.addr).await;
    let reply = second
        .request(json!({"type": "session_resume", "sessionId": session, "resumeToken": token}))
        .await;
    assert_eq!(reply["type"], "session_resumed", "{reply}");
    assert_eq!(reply["lastSeq"], 5, "{reply}");
    let stale = first.send_chunk(6).await;
    second.stream(6..=8).await;

    assert_eq!(stale["type"], "error", "{stale}");
    assert_eq!(stale["code"], "superseded", "{stale}");
    let closed = tokio::time::timeout(Duration::from_secs(5), first.socket.next())
        .await
        .expect("the stale socket is closed");
    assert!(
        matches!(&closed, Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == 4103),
        "{closed:?}"
    );
    let ended = second.request(json!({"type": "session_end"})).await;
    assert_eq!(ended["totalChunks"], 8, "{ended}");
    let (audio, report) = consume(&redis, &session).await;
    assert_eq!(report["chunks"], 8, "{report}");
    assert!(audio == expected(1..=8), "{} bytes", audio.len());
}
