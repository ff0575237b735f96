//! The HTTP/1 transport itself: slow clients, handshakes no library client would send.

use std::time::{Duration, Instant};

use aimcs_tests::{raw, spawn_app, spawn_app_with};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected_and_others_are_served() {
    let app = spawn_app_with(|settings| {
        settings.server.header_read_timeout_secs = 1_u64.try_into().unwrap()
    })
    .await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();

    assert_eq!(
        app.get("/health").await.status(),
        200,
        "others are served meanwhile"
    );
    let mut buffer = [0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer)).await;

    let elapsed = started.elapsed();
    assert!(read.is_ok(), "the server must not wait forever for headers");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
}

#[tokio::test]
async fn a_websocket_handshake_with_an_unsupported_version_is_told_the_supported_one() {
    let app = spawn_app().await;
    let request = "GET /ws/audio HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\nConnection: close\r\n\r\n";

    let response = raw::exchange(app.addr, request.as_bytes()).await;

    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{response}"
    );
}

#[tokio::test]
async fn a_websocket_handshake_without_a_key_is_a_json_400() {
    let app = spawn_app().await;
    let request = "GET /ws/audio HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";

    let response = raw::exchange(app.addr, request.as_bytes()).await;

    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains(r#""code":"bad_handshake""#), "{response}");
}

#[tokio::test]
async fn a_valid_handshake_gets_the_rfc_accept_key() {
    let app = spawn_app().await;
    let request = "GET /ws/audio HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    let response = raw::exchange(app.addr, request.as_bytes()).await;

    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert!(
        response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{response}"
    );
    assert!(
        response.contains(r#""type":"connection""#),
        "the greeting follows the handshake: {response}"
    );
}

#[tokio::test]
async fn many_requests_share_one_keep_alive_connection() {
    let app = spawn_app().await;
    let request = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);

    let response = raw::exchange(app.addr, request.as_bytes()).await;

    assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 3, "{response}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let app = spawn_app_with(|settings| {
        settings.server.header_read_timeout_secs = 1_u64.try_into().unwrap()
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0; 4096];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200 OK"));
    let served = Instant::now();

    // The connection now waits for a next request that never comes.
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;

    assert!(matches!(read, Ok(Ok(0))), "closed by the server: {read:?}");
    let elapsed = served.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
}

#[tokio::test]
async fn frames_sent_with_the_handshake_in_one_write_are_all_answered_in_order() {
    use aimcs_tests::raw_ws::{RawSocket, masked};
    let app = spawn_app().await;
    let mut early = masked(1, br#"{"type":"ping"}"#);
    early.extend(masked(9, b"are you there"));
    early.extend(masked(1, br#"{"type":"test","message":1}"#));

    let mut socket = RawSocket::connect_sending(app.addr, &early).await;

    let mut seen = Vec::new();
    for _ in 0..4 {
        let frame = socket.read_frame().await.expect("a frame");
        seen.push(match frame.opcode {
            1 => serde_json::from_slice::<serde_json::Value>(&frame.payload).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned(),
            10 => format!("pong frame {}", String::from_utf8_lossy(&frame.payload)),
            other => format!("opcode {other}"),
        });
    }
    assert_eq!(
        seen,
        [
            "connection",
            "pong",
            "pong frame are you there",
            "test_response"
        ]
    );
}

/// Large messages in small fragments, several connections at once, keep a reading task busy
/// for many reads in a row; it must still yield to the scheduler (tokio's cooperative budget),
/// or it spins on a worker thread forever and takes the service down with it (Autobahn 9.3 and
/// 9.4 found this). Driven from its own thread and runtime, so that a spinning service fails
/// the test instead of hanging it.
#[test]
fn large_fragmented_messages_on_several_connections_are_echoed_and_the_service_stays_up() {
    use aimcs_tests::raw_ws::{RawSocket, masked_fragment};
    const CLIENTS: usize = 4;
    const MESSAGE_BYTES: usize = 4 << 20;
    const FRAGMENT_BYTES: usize = 100;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let app = spawn_app_with(|settings| {
                settings.ws.echo_endpoint = true;
                settings.ws.max_message_bytes = (16_u64 << 20).try_into().unwrap();
            })
            .await;
            let echoes = (0..CLIENTS).map(|client| {
                let app = &app;
                async move {
                    let message: Vec<u8> =
                        (0..MESSAGE_BYTES).map(|i| (i * 7 + client) as u8).collect();
                    let fragments = message.chunks(FRAGMENT_BYTES).count();
                    let mut frames = Vec::with_capacity(message.len() * 11 / 10);
                    for (i, fragment) in message.chunks(FRAGMENT_BYTES).enumerate() {
                        let opcode = if i == 0 { 2 } else { 0 };
                        frames.extend(masked_fragment(i + 1 == fragments, opcode, fragment));
                    }
                    let mut socket = RawSocket::connect_path(app.addr, "/ws/echo").await;
                    socket.send_raw(&frames).await;
                    let echo = socket.read_frame().await.expect("an echo");
                    assert_eq!(echo.opcode, 2, "client {client}: a binary echo");
                    assert!(echo.payload == message, "client {client}: echo differs");
                }
            });
            futures_util::future::join_all(echoes).await;
            assert_eq!(app.get("/health").await.status(), 200);
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the echoes came back within 60 s, and without a panic");
}
