//! CORS as the original applied it: allowed origins echoed with credentials, others served
//! without CORS headers, every OPTIONS a preflight.

use aimcs_tests::spawn_app;

const ALLOWED: [&str; 4] = [
    "https://aimcs-frontend-eastus2.azurewebsites.net",
    "https://aimcs.net",
    "http://localhost:5173",
    "http://localhost:3000",
];

#[tokio::test]
async fn each_allowed_origin_is_echoed_back_with_credentials() {
    let app = spawn_app().await;
    for origin in ALLOWED {
        let response = app
            .http
            .get(app.url("/health"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], origin);
        assert_eq!(headers["access-control-allow-credentials"], "true");
        assert_eq!(headers["vary"], "Origin");
    }
}

#[tokio::test]
async fn another_origin_is_served_without_cors_headers() {
    let app = spawn_app().await;
    for origin in [
        Some("https://evil.example"),
        Some("https://aimcs.net.evil.example"),
        Some("null"),
        None,
    ] {
        let mut request = app.http.get(app.url("/api/status"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{origin:?}");
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{origin:?}"
        );
        assert_eq!(response.headers()["vary"], "Origin");
    }
}

#[tokio::test]
async fn error_responses_carry_cors_headers_too() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/api/chat"))
        .header("origin", "https://aimcs.net")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://aimcs.net"
    );
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_allows_the_requested_headers() {
    let app = spawn_app().await;

    let response = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/chat"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-request-id",
        )
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 204);
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-allow-methods"], "GET,HEAD,POST");
    assert_eq!(
        headers["access-control-allow-headers"],
        "content-type,x-request-id"
    );
    assert_eq!(headers["vary"], "Origin, Access-Control-Request-Headers");
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_preflight_from_another_origin_allows_nothing() {
    let app = spawn_app().await;

    let response = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/chat"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 204);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert!(
        response
            .headers()
            .get("access-control-allow-methods")
            .is_none()
    );
}

#[tokio::test]
async fn configured_origins_replace_the_defaults() {
    let app = aimcs_tests::spawn_app_with(|settings| {
        settings.cors.allowed_origins = vec!["https://app.example".to_owned().try_into().unwrap()];
    })
    .await;
    let allowed = app
        .http
        .get(app.url("/health"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    let former = app
        .http
        .get(app.url("/health"))
        .header("origin", "https://aimcs.net")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        former
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
