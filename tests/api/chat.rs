//! `POST /api/chat`: the echo, and every malformed body the original was measured with.

use aimcs_tests::{spawn_app, spawn_app_with};
use serde_json::{Value, json};

async fn body_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn a_message_is_echoed_with_its_context() {
    let app = spawn_app().await;

    let (status, body) = body_of(
        app.post_chat(&json!({"message": "Hello!", "context": {"test": true}}))
            .await,
    )
    .await;

    assert_eq!(status, 200);
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["id", "message", "timestamp", "context"]);
    assert_eq!(body["message"], "Echo: Hello!");
    assert_eq!(body["context"], json!({"test": true}));
    assert!(body["id"].is_string());
}

#[tokio::test]
async fn two_replies_have_distinct_ids() {
    let app = spawn_app().await;
    let (_, first) = body_of(app.post_chat(&json!({"message": "a"})).await).await;
    let (_, second) = body_of(app.post_chat(&json!({"message": "a"})).await).await;
    assert_ne!(first["id"], second["id"]);
}

#[tokio::test]
async fn messages_of_other_types_are_echoed_as_javascript_writes_them() {
    let app = spawn_app().await;
    for (message, echo) in [
        (json!(5), "Echo: 5"),
        (json!([1, 2]), "Echo: 1,2"),
        (json!({}), "Echo: [object Object]"),
        (json!(true), "Echo: true"),
        (json!(0.1), "Echo: 0.1"),
    ] {
        let (status, body) = body_of(app.post_chat(&json!({ "message": message })).await).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (200, Some(echo)),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_missing_context_is_an_empty_object() {
    let app = spawn_app().await;
    let (_, body) = body_of(app.post_chat(&json!({"message": "hi"})).await).await;
    assert_eq!(body["context"], json!({}));
}

#[tokio::test]
async fn a_missing_or_falsy_message_is_required() {
    let app = spawn_app().await;
    for request in [
        json!({}),
        json!({"message": ""}),
        json!({"message": 0}),
        json!({"message": false}),
        json!({"message": null}),
        json!([1]),
    ] {
        let (status, body) = body_of(app.post_chat(&request).await).await;
        assert_eq!(
            (status, &body),
            (
                400,
                &json!({"error": "Message is required", "code": "message_required"})
            ),
            "{request}"
        );
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_or_a_form_has_no_message() {
    let app = spawn_app().await;
    let (status, body) =
        body_of(app.post_chat_raw("text/plain", r#"{"message":"hi"}"#).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("Message is required"))
    );
}

#[tokio::test]
async fn a_form_body_is_echoed_with_its_nested_context() {
    let app = spawn_app().await;
    let (status, body) = body_of(
        app.post_chat_raw(
            "application/x-www-form-urlencoded",
            "message=hi+there&context[a]=1",
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, &body["message"], &body["context"]),
        (200, &json!("Echo: hi there"), &json!({"a": "1"}))
    );
}

#[tokio::test]
async fn malformed_json_is_a_json_400_saying_what_is_wrong() {
    let app = spawn_app().await;
    for raw in [r#"{"message":"#, r#""x""#, "null", "{'message':'hi'}"] {
        let (status, body) = body_of(app.post_chat_raw("application/json", raw).await).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_body")),
            "{raw}"
        );
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON body"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_message_with_no_text_form_is_a_client_error_not_a_server_error() {
    let app = spawn_app().await;
    let (status, body) = body_of(app.post_chat(&json!({"message": {"toString": 1}})).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_message"))
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413_and_the_service_still_answers() {
    let app =
        spawn_app_with(|settings| settings.http.max_body_bytes = 2048_u64.try_into().unwrap())
            .await;
    let big = format!(r#"{{"message":"{}"}}"#, "a".repeat(4096));

    let (status, body) = body_of(app.post_chat_raw("application/json", big).await).await;

    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(
        body["error"],
        "request body is larger than the limit of 2048 bytes"
    );
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_too() {
    let app =
        spawn_app_with(|settings| settings.http.max_body_bytes = 2048_u64.try_into().unwrap())
            .await;
    let chunk = format!("{:x}\r\n{}\r\n", 1500, "a".repeat(1500));
    let request = format!(
        "POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );

    let response = aimcs_tests::raw::exchange(app.addr, request.as_bytes()).await;

    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"), "{response}");
}

#[tokio::test]
async fn a_compressed_body_is_refused_with_415_saying_why() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/api/chat"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0x00])
        .send()
        .await
        .unwrap();
    let (status, body) = body_of(response).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("unsupported_content_encoding"))
    );
}
