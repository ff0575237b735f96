//! `/ws/audio`: the greeting, every documented message, every malformed frame the original was
//! measured with, limits and connection counting.

use std::collections::HashSet;

use aimcs_tests::{Ending, keys, spawn_app, spawn_app_with};
use serde_json::{Value, json};

#[tokio::test]
async fn a_new_connection_is_greeted_with_its_id() {
    let app = spawn_app().await;
    let mut client = app.connect().await;

    let greeting = client.next_json().await;

    assert_eq!(
        keys(&greeting),
        ["type", "message", "connectionId", "limits", "timestamp"]
    );
    assert_eq!(
        greeting["limits"],
        json!({
            "maxMessageBytes": 1_048_576,
            "maxFrameBytes": 1_048_576,
            "maxJsonDepth": 32,
            "maxMessagesPerSecond": 100,
            "burst": 200,
            "pingIntervalMs": 25_000,
            "idleTimeoutMs": 600_000,
        })
    );
    assert_eq!(greeting["type"], "connection");
    assert_eq!(greeting["message"], "WebSocket connected successfully");
    let id = greeting["connectionId"].as_str().unwrap();
    assert_eq!(
        (id.len(), id.matches('-').count()),
        (36, 4),
        "a hyphenated UUID: {id}"
    );
}

#[tokio::test]
async fn the_front_ends_test_message_is_answered_with_its_message() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    let reply = client.ask(&json!({"type": "test", "message": "Hello from frontend!", "timestamp": "2025-06-27T04:20:11.123Z"})).await;

    assert_eq!(
        keys(&reply),
        ["type", "message", "originalMessage", "timestamp"]
    );
    assert_eq!(reply["type"], "test_response");
    assert_eq!(reply["message"], "Test message received successfully");
    assert_eq!(reply["originalMessage"], "Hello from frontend!");
}

#[tokio::test]
async fn a_test_message_keeps_a_message_of_any_type_and_omits_a_missing_one() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    let structured = client
        .ask(&json!({"type": "test", "message": {"a": [1, null]}}))
        .await;
    let missing = client.ask(&json!({"type": "test"})).await;

    assert_eq!(structured["originalMessage"], json!({"a": [1, null]}));
    assert_eq!(keys(&missing), ["type", "message", "timestamp"]);
}

#[tokio::test]
async fn audio_is_acknowledged_with_the_length_of_its_base64() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    client.send_audio(&[7; 1000]).await;
    let ack = client.next_json().await;

    assert_eq!(
        keys(&ack),
        ["type", "message", "dataSize", "timestamp", "decodedSize"]
    );
    assert_eq!(ack["type"], "audio_received");
    assert_eq!(ack["message"], "Audio data received");
    assert_eq!(
        ack["dataSize"], 1336,
        "the original reported the base64 length"
    );
    assert_eq!(ack["decodedSize"], 1000);
}

#[tokio::test]
async fn audio_without_data_is_acknowledged_as_size_zero() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    for message in [
        json!({"type": "audio"}),
        json!({"type": "audio", "data": ""}),
        json!({"type": "audio", "data": null}),
    ] {
        let ack = client.ask(&message).await;
        assert_eq!(
            (&ack["type"], &ack["dataSize"]),
            (&json!("audio_received"), &json!(0)),
            "{message}"
        );
    }
}

#[tokio::test]
async fn invalid_base64_gets_a_clear_error_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    let error = client
        .ask(&json!({"type": "audio", "data": "AQID*A=="}))
        .await;

    assert_eq!(
        keys(&error),
        ["type", "message", "error", "timestamp", "code"]
    );
    assert_eq!(error["type"], "error");
    assert_eq!(error["message"], "Failed to process message");
    assert_eq!(error["code"], "invalid_audio");
    assert_eq!(
        error["error"],
        "audio data is not valid base64: unexpected character '*' at offset 4"
    );
    assert_eq!(
        client.ask(&json!({"type": "ping"})).await["type"],
        "pong",
        "the socket is still usable"
    );
}

#[tokio::test]
async fn audio_data_that_is_not_a_string_gets_an_error_and_no_ack() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    for data in [json!(12), json!(true), json!({}), json!([1, 2])] {
        let reply = client.ask(&json!({"type": "audio", "data": data})).await;
        assert_eq!(
            (&reply["type"], &reply["code"]),
            (&json!("error"), &json!("invalid_audio")),
            "{data}"
        );
    }
}

#[tokio::test]
async fn a_ping_gets_a_pong_with_a_timestamp() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    let pong = client.ask(&json!({"type": "ping"})).await;

    assert_eq!(keys(&pong), ["type", "timestamp"]);
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn an_unknown_type_is_echoed_with_the_original_type() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    for original in [json!("chat"), json!("TEST"), json!(5), json!(["test"])] {
        let echo = client.ask(&json!({"type": original})).await;
        assert_eq!(
            keys(&echo),
            ["type", "originalType", "message", "timestamp"],
            "{original}"
        );
        assert_eq!(echo["type"], "echo");
        assert_eq!(echo["originalType"], original);
        assert_eq!(echo["message"], "Unknown message type received");
    }
}

#[tokio::test]
async fn a_message_without_type_or_that_is_not_an_object_is_echoed_without_original_type() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    for frame in [r#"{"message":"hi"}"#, "123", r#""abc""#, "[]", "true"] {
        client.send_text(frame).await;
        let echo = client.next_json().await;
        assert_eq!(keys(&echo), ["type", "message", "timestamp"], "{frame}");
        assert_eq!(echo["type"], "echo", "{frame}");
    }
}

#[tokio::test]
async fn unreadable_frames_get_an_error_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    for frame in ["hello", "", "null", r#"{"type":"test""#] {
        client.send_text(frame).await;
        let error = client.next_json().await;
        assert_eq!(error["type"], "error", "{frame:?}");
        assert_eq!(error["message"], "Failed to process message");
        assert_eq!(error["code"], "malformed_message");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{error}"
        );
    }
    assert_eq!(client.ask(&json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_binary_frame_holding_json_is_handled_like_text() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    client.send_binary(br#"{"type":"ping"}"#.to_vec()).await;
    let pong = client.next_json().await;
    client.send_binary(vec![0xff, 0x00, 0x13]).await;
    let error = client.next_json().await;

    assert_eq!(pong["type"], "pong");
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("error"), &json!("malformed_message"))
    );
}

#[tokio::test]
async fn json_nested_ten_thousand_deep_is_refused_without_a_crash() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));

    client
        .send_text(format!(r#"{{"type":"test","message":{nested}}}"#))
        .await;
    let reply = client.next_json().await;

    assert_eq!(
        (&reply["type"], &reply["code"]),
        (&json!("error"), &json!("json_too_deep")),
        "{reply}"
    );
    assert_eq!(client.ask(&json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn replies_come_back_in_the_order_messages_were_sent() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    for i in 0..20 {
        client
            .send_json(&json!({"type": "test", "message": i}))
            .await;
    }

    for i in 0..20 {
        assert_eq!(client.next_json().await["originalMessage"], i);
    }
}

#[tokio::test]
async fn a_protocol_ping_is_answered_with_a_pong() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    client.send_ping(b"are you there").await;

    match client.next_frame().await {
        Some(tokio_tungstenite::tungstenite::Message::Pong(payload)) => {
            assert_eq!(&payload[..], b"are you there")
        }
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_over_the_limit_gets_an_error_then_close_1009() {
    let app =
        spawn_app_with(|settings| settings.ws.max_message_bytes = 65_536_u64.try_into().unwrap())
            .await;
    let mut client = app.connect().await;
    client.next_json().await;

    client.send_audio(&vec![0; 100_000]).await;
    let error = client.next_json().await;
    let ending = client.ending().await;

    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("error"), &json!("message_too_big"))
    );
    assert!(matches!(ending, Ending::Closed(1009, _)), "{ending:?}");
    assert_eq!(app.get("/health").await.status(), 200);
    app.wait_for_connections(0).await;
}

#[tokio::test]
async fn fifty_concurrent_connections_get_fifty_distinct_ids_and_are_counted_exactly() {
    let app = spawn_app().await;

    let connecting = (0..50).map(|_| async {
        let mut client = app.connect().await;
        let id = client.next_json().await["connectionId"]
            .as_str()
            .unwrap()
            .to_owned();
        (client, id)
    });
    let opened = futures_util::future::join_all(connecting).await;

    let ids: HashSet<&str> = opened.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 50);
    assert_eq!(app.connections().await, 50);
    let status: Value = app.get("/api/status").await.json().await.unwrap();
    assert_eq!(status["activeConnections"], 50);

    futures_util::future::join_all(opened.into_iter().map(|(client, _)| client.close())).await;
    app.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_client_that_vanishes_without_closing_is_no_longer_counted() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    assert_eq!(app.connections().await, 1);

    drop(client);

    app.wait_for_connections(0).await;
}

#[tokio::test]
async fn upgrades_are_only_served_on_the_documented_path() {
    let app = spawn_app().await;
    let refused = app.connect_to("/ws/other").await;
    assert!(matches!(
        refused,
        Err(tokio_tungstenite::tungstenite::Error::Http(ref response)) if response.status() == 404
    ));
    assert!(
        app.connect_to("/ws/audio/").await.is_ok(),
        "a trailing slash is the same path"
    );
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_gets_an_error_then_close_1007() {
    let app = spawn_app().await;
    let mut socket = aimcs_tests::raw_ws::RawSocket::connect(app.addr).await;
    socket.read_frame().await.expect("the greeting");

    socket.send_frame(1, b"{\"type\":\"te\xffst\"}", true).await;

    let error = socket.read_frame().await.expect("an error message first");
    let error: Value = serde_json::from_slice(&error.payload).unwrap();
    assert_eq!(error["code"], "invalid_utf8");
    assert_eq!(
        socket.close_frame().await.and_then(|f| f.close_code()),
        Some(1007)
    );
    assert_eq!(app.get("/health").await.status(), 200);
    app.wait_for_connections(0).await;
}

#[tokio::test]
async fn an_unmasked_frame_is_a_protocol_violation_closed_with_1002() {
    let app = spawn_app().await;
    let mut socket = aimcs_tests::raw_ws::RawSocket::connect(app.addr).await;
    socket.read_frame().await.expect("the greeting");

    socket.send_frame(1, br#"{"type":"ping"}"#, false).await;

    assert_eq!(
        socket.close_frame().await.and_then(|f| f.close_code()),
        Some(1002)
    );
    app.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_binary_frame_with_invalid_utf8_is_read_as_the_original_read_it() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    client
        .send_binary(b"{\"type\":\"test\",\"message\":\"h\xffi\"}".to_vec())
        .await;

    assert_eq!(client.next_json().await["originalMessage"], "h\u{fffd}i");
}

#[tokio::test]
async fn url_safe_base64_is_accepted_as_the_original_accepted_it() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    let ack = client
        .ask(&json!({"type": "audio", "data": "AQID-_8="}))
        .await;

    assert_eq!(
        (&ack["type"], &ack["decodedSize"]),
        (&json!("audio_received"), &json!(5))
    );
}
