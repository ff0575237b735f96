//! Shutdown: open WebSockets are told, HTTP stops, and the drain is bounded.

use std::time::Duration;

use aimcs_tests::{Ending, spawn_app, spawn_app_with};
use serde_json::json;

#[tokio::test]
async fn every_open_websocket_is_told_and_closed_with_going_away() {
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
            Ending::Closed(1001, "Server shutting down".into())
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
    for i in 0..50 {
        client
            .send_json(&json!({"type": "test", "message": i}))
            .await;
        client.send_audio(&[1; 3200]).await;
    }
    // The first reply proves the server is working through the burst when shutdown begins.
    assert_eq!(client.next_json().await["originalMessage"], 0);

    app.trigger_shutdown();

    // Every reply that arrives answers the next message in order, none is missing or torn,
    // and the socket then closes normally.
    let mut expected = (0, "audio_received");
    let ending = loop {
        match client.next_frame().await {
            Some(tokio_tungstenite::tungstenite::Message::Text(text)) => {
                let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
                if reply["type"] == "going_away" {
                    assert_eq!(reply["reason"], "shutdown", "{reply}");
                    continue;
                }
                assert_eq!(reply["type"], expected.1, "{reply}");
                if expected.1 == "audio_received" {
                    assert_eq!(reply["decodedSize"], 3200);
                    expected = (expected.0 + 1, "test_response");
                } else {
                    assert_eq!(reply["originalMessage"], expected.0);
                    expected.1 = "audio_received";
                }
            }
            Some(tokio_tungstenite::tungstenite::Message::Close(frame)) => break frame,
            Some(_) => {}
            None => panic!("the socket ended without a close frame"),
        }
    };
    let frame = ending.expect("a close code");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1001, "Server shutting down")
    );
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

    // It waits for the client's close frame for half the grace period, then lets go.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(1500),
        "shutdown took {elapsed:?}"
    );
    assert!(report.drained, "{report:?}");
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

#[tokio::test]
async fn a_client_trickling_its_headers_does_not_hold_shutdown_until_the_header_timeout() {
    let mut app = spawn_app_with(|settings| {
        settings.server.header_read_timeout_secs = 30_u64.try_into().unwrap();
        settings.server.shutdown_grace_secs = 30_u64.try_into().unwrap();
    })
    .await;
    let mut trickling = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut trickling, b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    app.trigger_shutdown();
    let started = std::time::Instant::now();
    app.shut_down().await;

    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn readiness_turns_503_for_the_drain_delay_while_everything_else_still_answers() {
    let mut app = spawn_app_with(|settings| settings.server.drain_delay_secs = 3).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let mut client = app.connect().await;
    client.next_json().await;

    app.trigger_shutdown();
    let ready = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let ready = app.get("/readyz").await;
            if ready.status() == 503 {
                break ready;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("/readyz turns 503 at once");

    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "draining"
    );
    assert_eq!(app.get("/livez").await.status(), 200);
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(client.ask(&json!({"type": "ping"})).await["type"], "pong");
    // Then the drain proper: the socket is told and closed.
    assert_eq!(
        client.ending().await,
        Ending::Closed(1001, "Server shutting down".into())
    );
    assert!(app.shut_down().await.drained);
}
