//! `/metrics` counts exactly what happened: a scripted session and a few HTTP requests move
//! each counter by exactly the expected amount. Its own test binary: the Prometheus recorder
//! is global to a process, and other tests running beside this one would move the counters.

use std::collections::HashMap;

use aimcs_tests::spawn_app;
use serde_json::json;

/// `series -> value` of a text exposition; the series is the name with its labels as written.
fn scrape(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

async fn metrics(app: &aimcs_tests::TestApp) -> HashMap<String, f64> {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    scrape(&response.text().await.unwrap())
}

#[tokio::test]
async fn a_scripted_session_moves_every_counter_by_exactly_what_happened() {
    let app = spawn_app().await;
    let before = metrics(&app).await;

    let mut client = app.connect().await;
    client.next_json().await;
    client.ask(&json!({"type": "test", "message": "hi"})).await;
    client.ask(&json!({"type": "ping"})).await;
    for _ in 0..3 {
        client.send_audio(&[7; 1_000]).await;
        assert_eq!(client.next_json().await["type"], "audio_received");
    }
    client.ask(&json!({"type": "chat"})).await;
    client.close().await;
    app.wait_for_connections(0).await;
    assert_eq!(app.post_chat(&json!({"message": "hi"})).await.status(), 200);
    assert_eq!(app.get("/nowhere").await.status(), 404);
    let after = metrics(&app).await;

    let delta = |series: &str| {
        after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
    };
    let expected = [
        ("aimcs_ws_connections_total", 1.0),
        ("aimcs_ws_connections_open", 0.0),
        ("aimcs_ws_connections_closed_total{code=\"client\"}", 1.0),
        ("aimcs_ws_messages_received_total{type=\"test\"}", 1.0),
        ("aimcs_ws_messages_received_total{type=\"ping\"}", 1.0),
        ("aimcs_ws_messages_received_total{type=\"audio\"}", 3.0),
        ("aimcs_ws_messages_received_total{type=\"unknown\"}", 1.0),
        ("aimcs_ws_messages_sent_total{type=\"connection\"}", 1.0),
        ("aimcs_ws_messages_sent_total{type=\"test_response\"}", 1.0),
        ("aimcs_ws_messages_sent_total{type=\"pong\"}", 1.0),
        ("aimcs_ws_messages_sent_total{type=\"audio_received\"}", 3.0),
        ("aimcs_ws_messages_sent_total{type=\"echo\"}", 1.0),
        ("aimcs_audio_bytes_received_total", 3_000.0),
        ("aimcs_audio_chunks_received_total", 3.0),
        ("aimcs_ack_latency_seconds_count", 3.0),
        ("aimcs_sink_write_seconds_count{sink=\"file\"}", 3.0),
        (
            "aimcs_http_requests_total{route=\"/ws/audio\",method=\"GET\",status=\"101\"}",
            1.0,
        ),
        (
            "aimcs_http_requests_total{route=\"/api/chat\",method=\"POST\",status=\"200\"}",
            1.0,
        ),
        (
            "aimcs_http_requests_total{route=\"other\",method=\"GET\",status=\"404\"}",
            1.0,
        ),
        // The first scrape, counted once it was answered.
        (
            "aimcs_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"200\"}",
            1.0,
        ),
        (
            "aimcs_http_request_duration_seconds_count{route=\"/api/chat\"}",
            1.0,
        ),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(series, want)| (delta(series) - want).abs() > f64::EPSILON)
        .map(|(series, want)| format!("{series}: moved {} (expected {want})", delta(series)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");

    let build = after
        .keys()
        .find(|series| series.starts_with("aimcs_build_info{"))
        .expect("build info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.contains("commit=\""), "{build}");
    // No series carries a connection id or other client-chosen text.
    assert!(
        after.keys().all(|series| !series.contains("connection_id")),
        "{:?}",
        after.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn metrics_can_move_to_their_own_port_or_be_turned_off() {
    use aimcs_tests::spawn_app_with;
    let own_port = spawn_app_with(|settings| {
        settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    assert_eq!(own_port.get("/metrics").await.status(), 404);
    let addr = own_port.metrics_addr.expect("a metrics port");
    let scraped = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("aimcs_build_info"));

    let off = spawn_app_with(|settings| settings.metrics.enabled = false).await;
    assert_eq!(off.get("/metrics").await.status(), 404);
}
