//! `/health`, `/api/status`, and what every other request gets.

use aimcs_tests::{keys, spawn_app};
use serde_json::Value;

fn is_iso_timestamp(value: &Value) -> bool {
    let Some(text) = value.as_str() else {
        return false;
    };
    let bytes = text.as_bytes();
    text.len() == 24 && bytes[10] == b'T' && bytes[19] == b'.' && text.ends_with('Z')
}

#[tokio::test]
async fn health_answers_in_the_original_shape() {
    let app = spawn_app().await;

    let response = app.get("/health").await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        keys(&body),
        ["status", "timestamp", "uptime", "connections", "version"]
    );
    assert_eq!(body["status"], "healthy");
    assert!(is_iso_timestamp(&body["timestamp"]), "{body}");
    assert!(body["uptime"].as_f64().is_some_and(|u| u >= 0.0), "{body}");
    assert_eq!(body["connections"], 0);
    assert_eq!(body["version"], "1.0.0");
}

#[tokio::test]
async fn status_lists_the_endpoints_and_active_connections() {
    let app = spawn_app().await;

    let body: Value = app.get("/api/status").await.json().await.unwrap();

    assert_eq!(
        keys(&body),
        ["message", "timestamp", "activeConnections", "endpoints"]
    );
    assert_eq!(body["message"], "AIMCS Backend API is running");
    assert!(is_iso_timestamp(&body["timestamp"]));
    assert_eq!(body["activeConnections"], 0);
    assert_eq!(
        body["endpoints"],
        serde_json::json!([
            "GET /health",
            "GET /api/status",
            "POST /api/chat",
            "WS /ws/audio"
        ])
    );
}

#[tokio::test]
async fn uptime_grows() {
    let app = spawn_app().await;
    let first = app.health().await["uptime"].as_f64().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = app.health().await["uptime"].as_f64().unwrap();
    assert!(second > first, "{first} then {second}");
}

#[tokio::test]
async fn head_requests_get_the_headers_without_a_body() {
    let app = spawn_app().await;

    let response = app.http.head(app.url("/health")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn paths_match_with_a_trailing_slash_and_in_any_case_as_express_routed_them() {
    let app = spawn_app().await;
    for path in ["/health/", "/HEALTH", "/Api/Status/", "/health?probe=1"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn an_unknown_path_gets_a_json_404_naming_it() {
    let app = spawn_app().await;

    let response = app.get("/x").await;

    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "Cannot GET /x", "code": "not_found"})
    );
}

#[tokio::test]
async fn a_wrong_method_gets_a_json_405_with_the_allowed_methods() {
    let app = spawn_app().await;
    for (method, path, allowed) in [
        (reqwest::Method::POST, "/health", "GET, HEAD"),
        (reqwest::Method::DELETE, "/api/status", "GET, HEAD"),
        (reqwest::Method::GET, "/api/chat", "POST"),
        (reqwest::Method::POST, "/ws/audio", "GET"),
    ] {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allowed, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed", "{method} {path}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Cannot {method} {path}")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_endpoint_is_told_to_upgrade() {
    let app = spawn_app().await;

    let response = app.get("/ws/audio").await;

    assert_eq!(response.status(), 426);
    assert_eq!(response.headers()["upgrade"], "websocket");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upgrade_required");
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one_and_names_every_route() {
    let app = spawn_app().await;
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json"))
            .unwrap();

    let served = app.get("/api/openapi.json").await;

    assert_eq!(served.status(), 200);
    let served = served.text().await.unwrap();
    assert_eq!(served, committed);
    let document: Value = serde_json::from_str(&served).unwrap();
    let paths = document["paths"].as_object().unwrap();
    // Every route that answers something other than 404 is described.
    for route in [
        "/health",
        "/api/status",
        "/api/chat",
        "/api/session",
        "/livez",
        "/readyz",
        "/metrics",
        "/ws/audio",
        "/api/openapi.json",
    ] {
        assert!(paths.contains_key(route), "{route} is not in the document");
        assert_ne!(app.get(route).await.status(), 404, "{route}");
    }
    assert_eq!(paths.len(), 9, "{:?}", paths.keys().collect::<Vec<_>>());
}

#[tokio::test]
async fn the_client_page_is_served_at_the_root_unless_turned_off() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/pcm-worklet.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-cache", "{path}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert!(
            response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
    }

    let api_only = aimcs_tests::spawn_app_with(|settings| settings.http.page = false).await;
    assert_eq!(api_only.get("/").await.status(), 404);
    assert_eq!(api_only.get("/app.js").await.status(), 404);
}
