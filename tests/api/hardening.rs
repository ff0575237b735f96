//! Hostile and careless clients: foreign origins, missing or stolen credentials, oversized and
//! deeply nested input, floods, slow and silent peers. Each test ends by checking that the
//! service still answers `/health`: refusing one client must never hurt the others.

use std::time::{Duration, Instant};

use aimcs_tests::raw_ws::RawSocket;
use aimcs_tests::settings::Settings;
use aimcs_tests::{Ending, TestApp, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const API_KEY: &str = "test-api-key-0123456789";

async fn assert_healthy(app: &TestApp) {
    assert_eq!(app.get("/health").await.status(), 200);
}

// --- Origin ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_websocket_from_a_foreign_origin_is_refused_with_403_before_the_upgrade() {
    let app = spawn_app().await;

    let refusal = app
        .connect_with("/ws/audio", &[("origin", "https://evil.example")])
        .await
        .err()
        .expect("a refusal");

    assert_eq!(
        (refusal.0, &refusal.1["code"]),
        (403, &json!("forbidden_origin"))
    );
    assert_eq!(app.connections().await, 0);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_literal_null_origin_is_foreign_too() {
    // Sandboxed iframes and file:// pages send `Origin: null`.
    let app = spawn_app().await;
    let refusal = app
        .connect_with("/ws/audio", &[("origin", "null")])
        .await
        .err()
        .expect("a refusal");
    assert_eq!(refusal.0, 403);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_plain_http_page_whose_origin_matches_a_public_host_is_still_foreign() {
    // DNS rebinding: the attacker's name points at this service, so Origin and Host agree.
    let app = spawn_app().await;
    let host = format!("evil.example:{}", app.addr.port());
    let origin = format!("http://{host}");

    let refusal = app
        .connect_with("/ws/audio", &[("origin", &origin), ("host", &host)])
        .await
        .err()
        .expect("a refusal");

    assert_eq!(refusal.0, 403);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn allowed_origins_and_clients_without_origin_are_accepted() {
    let app = spawn_app().await;

    for headers in [vec![("origin", "https://aimcs.net")], vec![]] {
        let (mut client, _) = app
            .connect_with("/ws/audio", &headers)
            .await
            .unwrap_or_else(|refusal| panic!("{headers:?} refused: {refusal:?}"));
        assert_eq!(client.next_json().await["type"], "connection");
    }
    assert_healthy(&app).await;
}

#[tokio::test]
async fn clients_without_origin_can_be_refused_by_setting() {
    let app = spawn_app_with(|settings| settings.ws.allow_missing_origin = false).await;

    let refusal = app
        .connect_with("/ws/audio", &[])
        .await
        .err()
        .expect("a refusal");

    assert_eq!(
        (refusal.0, &refusal.1["code"]),
        (403, &json!("forbidden_origin"))
    );
    assert!(
        app.connect_with("/ws/audio", &[("origin", "https://aimcs.net")])
            .await
            .is_ok()
    );
    assert_healthy(&app).await;
}

// --- Authentication -------------------------------------------------------------------------

fn with_auth(settings: &mut Settings) {
    settings.auth.enabled = true;
    settings.auth.api_keys = serde_json::from_value(json!([API_KEY])).unwrap();
    settings.auth.token_secret =
        Some(serde_json::from_value(json!("a-token-secret-of-at-least-32-bytes!!")).unwrap());
}

async fn mint(app: &TestApp) -> Value {
    let response = app
        .http
        .post(app.url("/api/session"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn refusal(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    app.connect_with(path, headers)
        .await
        .err()
        .expect("the upgrade is refused")
}

#[tokio::test]
async fn with_authentication_on_an_upgrade_without_credentials_gets_401_saying_how() {
    let app = spawn_app_with(with_auth).await;

    let (status, body) = refusal(&app, "/ws/audio", &[]).await;

    assert_eq!((status, &body["code"]), (401, &json!("unauthorized")));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("POST /api/session"),
        "{body}"
    );
    assert_healthy(&app).await;
}

#[tokio::test]
async fn an_api_key_opens_a_websocket_and_a_wrong_one_gets_401() {
    let app = spawn_app_with(with_auth).await;
    let bearer = format!("Bearer {API_KEY}");

    let (mut client, _) = app
        .connect_with("/ws/audio", &[("authorization", &bearer)])
        .await
        .expect("a valid key opens a socket");
    assert_eq!(client.next_json().await["type"], "connection");

    let (status, body) = refusal(
        &app,
        "/ws/audio",
        &[("authorization", "Bearer test-api-key-0123456780")],
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("the API key is not valid"))
    );
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_browser_token_opens_one_websocket_once() {
    let app = spawn_app_with(with_auth).await;
    let issued = mint(&app).await;
    let token = issued["token"].as_str().unwrap();
    assert_eq!(issued["protocol"], "aimcs.v1");
    assert_eq!(issued["expiresIn"], 60);

    let path = format!("/ws/audio?token={token}");
    let (mut client, _) = app
        .connect_with(&path, &[("origin", "https://aimcs.net")])
        .await
        .expect("a fresh token opens a socket");
    assert_eq!(client.next_json().await["type"], "connection");

    let (status, body) = refusal(&app, &path, &[]).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already been used"),
        "{body}"
    );
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_token_in_the_subprotocol_header_is_accepted_and_the_protocol_echoed() {
    // Browsers cannot set headers on a WebSocket; the protocol list is the one they can.
    let app = spawn_app_with(with_auth).await;
    let issued = mint(&app).await;
    let offered = format!("aimcs.v1, token.{}", issued["token"].as_str().unwrap());

    let (mut client, response) = app
        .connect_with("/ws/audio", &[("sec-websocket-protocol", &offered)])
        .await
        .expect("the token opens a socket");

    assert_eq!(response.headers()["sec-websocket-protocol"], "aimcs.v1");
    assert_eq!(client.next_json().await["type"], "connection");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_tampered_token_is_refused() {
    let app = spawn_app_with(with_auth).await;
    let token = mint(&app).await["token"].as_str().unwrap().to_owned();
    // Flip one character of the payload: the signature no longer matches.
    let mut tampered = token.into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    let (status, body) = refusal(&app, &format!("/ws/audio?token={tampered}"), &[]).await;

    assert_eq!(
        (status, &body["error"]),
        (401, &json!("the token is not valid"))
    );
    let (status, _) = refusal(&app, "/ws/audio?token=not-a-token", &[]).await;
    assert_eq!(status, 401);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = spawn_app_with(|settings| {
        with_auth(settings);
        settings.auth.token_ttl_secs = 1_u64.try_into().unwrap();
    })
    .await;
    let token = mint(&app).await["token"].as_str().unwrap().to_owned();

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, body) = refusal(&app, &format!("/ws/audio?token={token}"), &[]).await;

    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert_healthy(&app).await;
}

#[tokio::test]
async fn minting_a_token_needs_an_api_key_and_chat_needs_one_when_authentication_is_on() {
    let app = spawn_app_with(with_auth).await;

    let mint_without = app.http.post(app.url("/api/session")).send().await.unwrap();
    let chat_without = app.post_chat(&json!({"message": "hi"})).await;
    let chat_with = app
        .http
        .post(app.url("/api/chat"))
        .bearer_auth(API_KEY)
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();

    assert_eq!(mint_without.status(), 401);
    assert_eq!(
        mint_without.headers()["www-authenticate"],
        r#"Bearer realm="aimcs""#
    );
    assert_eq!(chat_without.status(), 401);
    assert_eq!(chat_with.status(), 200);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn with_authentication_off_tokens_are_not_issued_and_clients_need_none() {
    let app = spawn_app().await;

    let response = app.http.post(app.url("/api/session")).send().await.unwrap();

    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "auth_disabled");
    let (mut client, response) = app
        .connect_with("/ws/audio", &[("sec-websocket-protocol", "aimcs.v1")])
        .await
        .expect("no credentials needed");
    assert_eq!(response.headers()["sec-websocket-protocol"], "aimcs.v1");
    assert_eq!(client.next_json().await["type"], "connection");
}

// --- Limits ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_16_mib_message_gets_an_error_then_close_1009_without_being_read() {
    let app = spawn_app().await;
    let mut socket = RawSocket::connect(app.addr).await;
    socket.read_frame().await.expect("the greeting");

    socket.start_frame(16 * 1024 * 1024, &[0; 65_536]).await;

    let error = socket.read_frame().await.expect("an error message first");
    let error: Value = serde_json::from_slice(&error.payload).unwrap();
    assert_eq!(error["code"], "message_too_big", "{error}");
    assert_eq!(
        socket.close_frame().await.and_then(|f| f.close_code()),
        Some(1009)
    );
    assert_healthy(&app).await;
    app.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_60_mb_body_gets_a_json_413_before_it_is_read() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 65_536]).await.unwrap();

    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer before the body is sent")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn json_nested_ten_thousand_deep_in_a_chat_body_is_a_400() {
    let app = spawn_app().await;
    let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));

    let response = app
        .post_chat_raw("application/json", format!(r#"{{"message":{nested}}}"#))
        .await;

    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "json_too_deep");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn beyond_the_connection_limit_upgrades_get_503_while_http_answers() {
    let app = spawn_app_with(|settings| {
        settings.ws.max_connections = 3_u64.try_into().unwrap();
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut client = app.connect().await;
        client.next_json().await;
        open.push(client);
    }

    let (status, body) = refusal(&app, "/ws/audio", &[]).await;

    assert_eq!(
        (status, &body["code"]),
        (503, &json!("too_many_connections"))
    );
    assert_healthy(&app).await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "full");
    // A slot freed is a slot taken again.
    open.pop().unwrap().close().await;
    app.wait_for_connections(2).await;
    let mut client = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok((client, _)) = app.connect_with("/ws/audio", &[]).await {
                break client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a slot frees up");
    assert_eq!(client.next_json().await["type"], "connection");
}

#[tokio::test]
async fn a_flood_is_refused_with_rate_limited_and_persistent_abuse_is_closed_with_1008() {
    let app = spawn_app_with(|settings| {
        // One a second: a stall of the test machine cannot refill the bucket noticeably.
        settings.ws.max_messages_per_second = 1;
        settings.ws.burst = 10;
    })
    .await;
    let mut client = app.connect().await;
    client.next_json().await;

    for _ in 0..15 {
        client.send_json(&json!({"type": "ping"})).await;
    }
    let mut codes = Vec::new();
    for _ in 0..15 {
        let reply = client.next_json().await;
        codes.push(
            reply["code"]
                .as_str()
                .unwrap_or(reply["type"].as_str().unwrap())
                .to_owned(),
        );
    }
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    assert!((4..=5).contains(&limited), "{codes:?}");
    assert_eq!(codes[..10], vec!["pong"; 10]);

    // Keep going over the limit: the burst's worth again of refusals ends the connection.
    for _ in 0..30 {
        client.send_json(&json!({"type": "ping"})).await;
    }
    let ending = client.ending().await;
    assert!(matches!(ending, Ending::Closed(1008, _)), "{ending:?}");
    assert_healthy(&app).await;
}

// --- Slow and silent peers ------------------------------------------------------------------

#[tokio::test]
async fn three_hundred_slowloris_sockets_do_not_slow_health_down() {
    let app = spawn_app_with(|settings| {
        settings.server.header_read_timeout_secs = 2_u64.try_into().unwrap();
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHo")
            .await
            .unwrap();
        slow.push(stream);
    }

    // Trickle one more byte on each, and ask for /health while they hang.
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        for stream in &mut slow {
            let _ = stream.write_all(b"s").await;
        }
        let started = Instant::now();
        assert_eq!(app.get("/health").await.status(), 200, "round {round}");
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        worst < Duration::from_secs(1),
        "slowest /health took {worst:?}"
    );

    // And the slow sockets are let go at the header timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut closed = 0;
    for stream in &mut slow {
        let mut buffer = [0; 64];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 300);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_peer_that_answers_no_ping_is_closed_after_two_intervals() {
    let app = spawn_app_with(|settings| {
        settings.ws.ping_interval_secs = 1_u64.try_into().unwrap();
    })
    .await;
    // A raw socket answers nothing, pings included: a peer whose network went away.
    let mut socket = RawSocket::connect(app.addr).await;
    socket.read_frame().await.expect("the greeting");
    let started = Instant::now();

    let ping = socket.read_frame().await.expect("a ping");
    assert_eq!(ping.opcode, 9);
    let close = socket.close_frame().await.expect("a close frame");

    assert_eq!(close.close_code(), Some(1011));
    let elapsed = started.elapsed();
    assert!(
        (Duration::from_millis(1_500)..Duration::from_secs(4)).contains(&elapsed),
        "closed after {elapsed:?}"
    );
    assert_healthy(&app).await;
    app.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_open() {
    let app = spawn_app_with(|settings| {
        settings.ws.ping_interval_secs = 1_u64.try_into().unwrap();
    })
    .await;
    let mut client = app.connect().await;
    client.next_json().await;

    // tungstenite answers pings while it reads; past two intervals, only pings arrive.
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_millis(3_500);
    while Instant::now() < deadline {
        match client.next_frame().await {
            Some(tokio_tungstenite::tungstenite::Message::Ping(_)) => pings += 1,
            other => panic!("expected only pings, got {other:?}"),
        }
    }

    assert!(pings >= 2, "{pings} pings");
    assert_eq!(client.ask(&json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_connection_idle_past_the_idle_timeout_is_told_and_closed_with_4408() {
    let app = spawn_app_with(|settings| {
        settings.ws.idle_timeout_secs = 1_u64.try_into().unwrap();
    })
    .await;
    let mut client = app.connect().await;
    client.next_json().await;

    let error = client.next_json().await;
    let ending = client.ending().await;

    assert_eq!(error["code"], "idle_timeout", "{error}");
    assert_eq!(ending, Ending::Closed(4408, "idle timeout".into()));
    assert_healthy(&app).await;
}

#[tokio::test]
async fn beyond_the_tcp_connection_limit_new_clients_wait_for_a_free_slot() {
    let app = spawn_app_with(|settings| {
        settings.server.max_connections = 4_u64.try_into().unwrap();
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let waiting = tokio::time::timeout(Duration::from_millis(500), app.get("/health")).await;
    assert!(
        waiting.is_err(),
        "a fifth connection is not served while four are held"
    );

    held.pop();
    let served = tokio::time::timeout(Duration::from_secs(5), app.get("/health")).await;
    assert_eq!(served.expect("served once a slot is free").status(), 200);
}

#[tokio::test]
async fn websockets_count_against_the_tcp_connection_limit() {
    let app = spawn_app_with(|settings| {
        settings.server.max_connections = 3_u64.try_into().unwrap();
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut client = app.connect().await;
        client.next_json().await;
        open.push(client);
    }

    let waiting = tokio::time::timeout(Duration::from_millis(500), app.get("/health")).await;
    assert!(waiting.is_err(), "three WebSockets hold all three slots");

    open.pop().unwrap().close().await;
    let served = tokio::time::timeout(Duration::from_secs(5), app.get("/health")).await;
    assert_eq!(
        served.expect("served once a WebSocket closed").status(),
        200
    );
}

#[tokio::test]
async fn a_token_refused_for_the_connection_limit_is_not_spent() {
    let app = spawn_app_with(|settings| {
        with_auth(settings);
        settings.ws.max_connections = 1_u64.try_into().unwrap();
    })
    .await;
    let bearer = format!("Bearer {API_KEY}");
    let (first, _) = app
        .connect_with("/ws/audio", &[("authorization", &bearer)])
        .await
        .unwrap();
    let token = mint(&app).await["token"].as_str().unwrap().to_owned();
    let path = format!("/ws/audio?token={token}");

    assert_eq!(refusal(&app, &path, &[]).await.0, 503);
    first.close().await;
    app.wait_for_connections(0).await;

    let opened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match app.connect_with(&path, &[]).await {
                Ok((client, _)) => break client,
                Err((503, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(other) => panic!("the token was spent: {other:?}"),
            }
        }
    })
    .await;
    assert!(opened.is_ok(), "the token still opens a socket");
}

#[tokio::test]
async fn a_message_ending_inside_a_string_escape_is_malformed_and_nothing_leaks() {
    // Found by the fuzzer: the depth scan stepped past the end of such a text.
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    let reply = client.ask_raw(r#"{"type":"x","a":"\"#).await;

    assert_eq!(reply["code"], "malformed_message", "{reply}");
    assert_eq!(client.ask(&json!({"type": "ping"})).await["type"], "pong");
    client.close().await;
    app.wait_for_connections(0).await;
    let chat = app
        .post_chat_raw("application/json", r#"{"message":"\"#.to_owned())
        .await;
    assert_eq!(chat.status(), 400);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn the_served_page_may_open_a_websocket_on_a_loopback_host_or_over_https_unconfigured() {
    let app = spawn_app().await;
    let port = app.addr.port();
    // Tried locally, and behind a TLS-terminating ingress (which passes the public Host).
    for (origin, host) in [
        (
            format!("http://127.0.0.1:{port}"),
            format!("127.0.0.1:{port}"),
        ),
        (
            format!("http://localhost:{port}"),
            format!("localhost:{port}"),
        ),
        (
            "https://aimcs-backend.example".to_owned(),
            "aimcs-backend.example".to_owned(),
        ),
    ] {
        let (mut client, _) = app
            .connect_with("/ws/audio", &[("origin", &origin), ("host", &host)])
            .await
            .unwrap_or_else(|error| panic!("{origin} is the page's own origin: {error:?}"));

        assert_eq!(client.next_json().await["type"], "connection");
    }
}
