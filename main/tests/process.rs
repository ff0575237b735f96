//! The `aimcs-backend` binary as an operator runs it: start-up, signals, exit codes, the
//! container health check and the deployment smoke test.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{binary, exit_code, signal, start};

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_0() {
    let mut running = start(&[]).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/audio", running.addr))
            .await
            .unwrap();
    let greeting = socket.next().await.unwrap().unwrap();
    assert!(
        greeting
            .to_text()
            .unwrap()
            .contains("\"type\":\"connection\"")
    );

    signal(&running.child, "TERM");

    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1001, "Server shutting down")
    );
    assert_eq!(exit_code(&mut running.child).await, 0);
}

#[tokio::test]
async fn sigint_shuts_down_cleanly_too() {
    let mut running = start(&[]).await;
    signal(&running.child, "INT");
    assert_eq!(exit_code(&mut running.child).await, 0);
}

#[tokio::test]
async fn every_log_line_of_a_connection_carries_its_id() {
    let mut running = start(&[]).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/audio", running.addr))
            .await
            .unwrap();
    let greeting: Value =
        serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    let id = greeting["connectionId"].as_str().unwrap().to_owned();
    drop(socket);

    // Every line from "connected" to "closed" belongs to the connection and carries its id.
    let mut connection_lines = Vec::new();
    let mut inside = false;
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_secs(5), running.logs.recv()).await
    {
        inside |= line["message"] == "websocket connected";
        if inside {
            assert_eq!(line["span"]["connection_id"], id.as_str(), "{line}");
            connection_lines.push(line["message"].as_str().unwrap_or_default().to_owned());
        }
        if line["message"] == "websocket closed" {
            break;
        }
    }
    assert_eq!(
        connection_lines.first().map(String::as_str),
        Some("websocket connected")
    );
    assert_eq!(
        connection_lines.last().map(String::as_str),
        Some("websocket closed")
    );
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_with_exit_64_naming_it() {
    let output = binary().env("PORT", "abc").output().await.unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("invalid setting `server.port`")
            && stderr.contains("environment variable PORT"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_port_in_use_stops_start_up_with_exit_69() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();

    let output = binary()
        .env("APP_SERVER__HOST", "127.0.0.1")
        .env("PORT", &port)
        .output()
        .await
        .unwrap();

    assert_eq!(output.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&output.stdout).contains("could not listen on"));
}

#[tokio::test]
async fn healthcheck_passes_against_the_running_service_and_fails_without_one() {
    let running = start(&[]).await;
    let port = running.addr.rsplit(':').next().unwrap().to_owned();

    let healthy = binary()
        .arg("healthcheck")
        .env("PORT", &port)
        .status()
        .await
        .unwrap();
    drop(running);
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let unhealthy = binary()
        .arg("healthcheck")
        .env("PORT", &free)
        .output()
        .await
        .unwrap();

    assert!(healthy.success());
    assert_eq!(unhealthy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unhealthy.stderr).starts_with("unhealthy:"));
}

#[tokio::test]
async fn check_passes_against_the_running_service() {
    let running = start(&[]).await;

    let output = binary()
        .args(["check", &format!("http://{}", running.addr)])
        .output()
        .await
        .unwrap();

    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("8 passed, 0 failed"), "{report}");
    assert!(report.contains("WS /ws/audio session"), "{report}");
}

#[tokio::test]
async fn check_fails_and_names_what_failed_when_nothing_answers() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let output = binary()
        .args(["check", &format!("http://127.0.0.1:{free}")])
        .output()
        .await
        .unwrap();

    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(report.contains("FAIL  GET /health"), "{report}");
    assert!(report.contains("0 passed, 8 failed"), "{report}");
}

#[tokio::test]
async fn help_and_version_are_printed() {
    let help = binary().arg("--help").output().await.unwrap();
    let version = binary().arg("--version").output().await.unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("aimcs-backend check URL"));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("aimcs-backend {}", env!("CARGO_PKG_VERSION"))
    );
}

/// What one streaming client saw.
#[derive(Debug, Default)]
struct Streamed {
    recording: String,
    /// The audio it sent, in order.
    sent: Vec<u8>,
    /// Bytes the server acknowledged.
    acked: u64,
    going_away: bool,
    close: Option<u16>,
}

/// Starts a session and streams 20 ms chunks of distinct bytes until the server closes.
async fn stream_until_closed(addr: String, client: u8) -> Streamed {
    use base64::Engine as _;
    use futures_util::SinkExt as _;
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/audio"))
        .await
        .expect("the upgrade succeeds");
    let (mut tx, mut rx) = socket.split();
    rx.next().await.expect("a greeting").unwrap();
    let start = serde_json::json!({"type": "session_start", "format": {"encoding": "pcm_s16le", "sampleRate": 16000, "channels": 1}});
    tx.send(Message::text(start.to_string())).await.unwrap();
    let started: Value =
        serde_json::from_str(rx.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(started["type"], "session_started", "{started}");
    let mut streamed = Streamed {
        recording: started["recordingId"].as_str().unwrap().to_owned(),
        ..Streamed::default()
    };

    // Appended before each send: what the client meant to send, whatever became of it.
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writing = std::sync::Arc::clone(&sent);
    let writer = tokio::spawn(async move {
        for seq in 0_u64..5_000 {
            let chunk: Vec<u8> = (0..640_u32)
                .map(|i| (u64::from(i) + seq * 7 + u64::from(client) * 31) as u8)
                .collect();
            let message = serde_json::json!({
                "type": "audio",
                "seq": seq,
                "data": base64::engine::general_purpose::STANDARD.encode(&chunk),
            });
            writing.lock().unwrap().extend_from_slice(&chunk);
            if tx.send(Message::text(message.to_string())).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(15), rx.next()).await
    {
        match message {
            Message::Text(text) => {
                let reply: Value = serde_json::from_str(&text).unwrap();
                match reply["type"].as_str() {
                    Some("audio_received") => {
                        streamed.acked += reply["decodedSize"].as_u64().unwrap();
                    }
                    Some("going_away") => streamed.going_away = true,
                    _ => panic!("unexpected reply {reply}"),
                }
            }
            Message::Close(frame) => {
                streamed.close = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    writer.abort();
    let _ = writer.await;
    streamed.sent = std::mem::take(&mut *sent.lock().unwrap());
    streamed
}

/// The data of a WAV file's `data` chunk.
fn wav_data(path: &std::path::Path) -> Vec<u8> {
    let wav = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut at = 12;
    while at + 8 <= wav.len() {
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().unwrap()) as usize;
        if &wav[at..at + 4] == b"data" {
            return wav[at + 8..(at + 8 + size).min(wav.len())].to_vec();
        }
        at += 8 + size + size % 2;
    }
    panic!("{} has no data chunk", path.display());
}

#[tokio::test]
async fn sigterm_with_twenty_clients_streaming_loses_no_acknowledged_audio() {
    let mut running = start(&[("APP_SERVER__SHUTDOWN_GRACE_SECS", "10")]).await;
    let clients: Vec<_> = (0..20)
        .map(|client| tokio::spawn(stream_until_closed(running.addr.clone(), client)))
        .collect();
    // Let every client get well into its stream.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    signal(&running.child, "TERM");

    let mut results = Vec::new();
    for client in clients {
        results.push(client.await.unwrap());
    }
    assert_eq!(exit_code(&mut running.child).await, 0);
    for (i, streamed) in results.iter().enumerate() {
        assert!(
            streamed.acked >= 640 * 20,
            "client {i} barely streamed: {streamed:?}"
        );
        assert!(streamed.going_away, "client {i} was not told");
        assert_eq!(streamed.close, Some(1001), "client {i}");
        let data = wav_data(
            &running
                .dir
                .join("recordings")
                .join(format!("{}.wav", streamed.recording)),
        );
        let acked = usize::try_from(streamed.acked).unwrap();
        assert!(
            data.len() >= acked,
            "client {i}: {} bytes recorded, {acked} acknowledged",
            data.len()
        );
        assert!(
            streamed.sent.starts_with(&data),
            "client {i}: the recording is not what was sent"
        );
    }
}

#[tokio::test]
async fn api_keys_and_tokens_never_reach_the_logs() {
    const KEY: &str = "never-log-this-key-0123456789";
    let mut running = start(&[
        ("APP_LOG__LEVEL", "trace"),
        ("APP_AUTH__ENABLED", "true"),
        ("APP_AUTH__API_KEYS", KEY),
    ])
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", running.addr);
    let issued: Value = http
        .post(format!("{base}/api/session"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["token"].as_str().unwrap().to_owned();
    let url = format!("ws://{}/ws/audio?token={token}", running.addr);
    let (socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    drop(socket);
    // A reuse, a wrong key and a tampered token are refused, and logged as refused.
    assert!(tokio_tungstenite::connect_async(&url).await.is_err());
    let wrong = http
        .post(format!("{base}/api/session"))
        .bearer_auth(format!("{KEY}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    signal(&running.child, "TERM");
    assert_eq!(exit_code(&mut running.child).await, 0);
    let mut lines = Vec::new();
    while let Ok(line) = running.logs.try_recv() {
        lines.push(line.to_string());
    }
    assert!(
        lines.iter().any(|l| l.contains("not authenticated")),
        "refusals are logged: {lines:#?}"
    );
    let (signature, payload) = (
        token.rsplit('.').next().unwrap(),
        token.split('.').next().unwrap(),
    );
    for line in &lines {
        assert!(!line.contains(KEY), "a key was logged: {line}");
        assert!(
            !line.contains(signature) && !line.contains(payload),
            "a token was logged: {line}"
        );
    }
}

#[tokio::test]
async fn once_a_session_starts_every_line_of_the_connection_carries_its_session_id() {
    use futures_util::SinkExt as _;
    let mut running = start(&[("APP_LOG__LEVEL", "debug"), ("APP_AUDIO__SINK", "null")]).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/audio", running.addr))
            .await
            .unwrap();
    socket.next().await.unwrap().unwrap();
    let start = serde_json::json!({"type": "session_start", "format": {"encoding": "pcm_s16le", "sampleRate": 16000, "channels": 1}});
    socket.send(Message::text(start.to_string())).await.unwrap();
    let started: Value =
        serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    let session = started["sessionId"].as_str().unwrap().to_owned();
    socket.send(Message::binary(vec![0_u8; 640])).await.unwrap();
    socket.next().await.unwrap().unwrap();
    socket
        .send(Message::text(r#"{"type":"session_end"}"#))
        .await
        .unwrap();
    socket.next().await.unwrap().unwrap();
    drop(socket);

    let mut after_start = Vec::new();
    let mut started_seen = false;
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_secs(5), running.logs.recv()).await
    {
        if line["span"]["connection_id"].is_string() && line["span"]["session_id"].is_string() {
            started_seen = true;
        }
        if started_seen && line["span"]["connection_id"].is_string() {
            after_start.push(line.clone());
        }
        if line["message"] == "websocket closed" {
            break;
        }
    }
    assert!(after_start.len() >= 2, "{after_start:#?}");
    for line in &after_start {
        assert_eq!(line["span"]["session_id"], session.as_str(), "{line}");
    }
}

/// A stand-in for a deployment with one broken endpoint: `GET /health` answers that the
/// service is sick; every other connection is passed through to `upstream` untouched.
async fn broken_health_proxy(upstream: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut head = vec![0; 8192];
                let Ok(n) = client.read(&mut head).await else {
                    return;
                };
                head.truncate(n);
                if head.starts_with(b"GET /health ") {
                    let body = r#"{"status":"sick","uptime":1,"connections":0,"version":"x"}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(answer.as_bytes()).await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn check_names_the_one_broken_endpoint_and_fails() {
    let running = start(&[]).await;
    let broken = broken_health_proxy(running.addr.clone()).await;

    let output = binary()
        .args(["check", &format!("http://{broken}")])
        .output()
        .await
        .unwrap();

    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report.contains("FAIL  GET /health") && report.contains("\"sick\""),
        "{report}"
    );
    assert!(
        report.contains("7 passed, 1 failed: GET /health"),
        "{report}"
    );
}
