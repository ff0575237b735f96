//! Shutdown: open WebSockets are told, HTTP stops, and the drain is bounded.

use std::time::Duration;

use aimcs_tests::{Ending, spawn_app, spawn_app_with};
use serde_json::json;

#[tokio::test]
async fn every_open_websocket_is_closed_with_the_originals_code_and_reason() {
    let mut app = spawn_app().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = app.connect().await;
        client.next_json().await;
        clients.push(client);
    }

    app.trigger_shutdown();

    for client in &mut clients {
        assert_eq!(
            client.ending().await,
            Ending::Closed(1000, "Server shutting down".into())
        );
    }
    let report = app.shut_down().await;
    assert!(report.drained, "{report:?}");
}

#[tokio::test]
async fn audio_in_flight_is_acknowledged_before_the_socket_closes() {
    let mut app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    for _ in 0..50 {
        client.send_audio(&[1; 3200]).await;
    }

    app.trigger_shutdown();

    let mut acks = 0;
    loop {
        match client.next_frame().await {
            Some(tokio_tungstenite::tungstenite::Message::Text(text)) => {
                let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(reply["type"], "audio_received");
                acks += 1;
            }
            Some(tokio_tungstenite::tungstenite::Message::Close(_)) | None => break,
            Some(_) => {}
        }
    }
    // Frames read before the shutdown are answered; none is half-handled.
    assert!(acks <= 50, "{acks} acks");
    assert!(app.shut_down().await.drained);
}

#[tokio::test]
async fn new_connections_are_refused_once_shutdown_has_begun() {
    let app = spawn_app().await;
    let addr = app.addr;
    assert!(app.shut_down().await.drained);

    let refused = tokio::net::TcpStream::connect(addr).await;

    assert!(refused.is_err(), "the listener is closed");
}

#[tokio::test]
async fn a_client_that_ignores_the_close_does_not_hold_shutdown_past_the_grace_period() {
    let mut app =
        spawn_app_with(|settings| settings.server.shutdown_grace_secs = 1_u64.try_into().unwrap())
            .await;
    // A raw TCP client that completes the handshake, then never reads or answers again.
    let request = "GET /ws/audio HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut stubborn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stubborn, request.as_bytes())
        .await
        .unwrap();
    app.wait_for_connections(1).await;

    app.trigger_shutdown();
    let started = std::time::Instant::now();
    let report = app.shut_down().await;

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(report.drained || report.abandoned <= 1, "{report:?}");
    drop(stubborn);
}

#[tokio::test]
async fn the_service_answers_normally_until_shutdown() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    assert_eq!(client.ask(&json!({"type": "ping"})).await["type"], "pong");
    client.close().await;
    assert!(app.shut_down().await.drained);
}
