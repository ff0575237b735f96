//! docs/asyncapi.json against the live service: every message the server sends in a scripted
//! run of the whole protocol matches the document's schema for its `type`, every server
//! message the document lists is seen, and every client example the document gives is
//! accepted.

use std::collections::BTreeSet;

use aimcs_tests::{WsClient, spawn_app};
use serde_json::{Map, Value, json};

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/asyncapi.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The message names an operation lists.
fn operation_messages(document: &Value, operation: &str) -> Vec<String> {
    document["operations"][operation]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["$ref"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The subset of JSON Schema the document uses: type, const, enum, required, properties,
/// additionalProperties false, items. Returns what does not match.
fn violations(value: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    if let Some(kind) = schema.get("type") {
        let kinds: Vec<&str> = match kind {
            Value::String(kind) => vec![kind.as_str()],
            Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let matches = kinds.iter().any(|kind| match *kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !matches {
            out.push(format!("{at}: {value} is not {kinds:?}"));
            return;
        }
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        out.push(format!("{at}: {value} is not {constant}"));
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        check_object(object, schema, at, out);
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            violations(item, items, &format!("{at}[{i}]"), out);
        }
    }
}

fn check_object(
    object: &Map<String, Value>,
    schema: &Map<String, Value>,
    at: &str,
    out: &mut Vec<String>,
) {
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = required.as_str().unwrap();
        if !object.contains_key(name) {
            out.push(format!("{at}: missing {name}"));
        }
    }
    for (name, value) in object {
        match properties.get(name) {
            Some(property) => violations(value, property, &format!("{at}.{name}"), out),
            None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                out.push(format!("{at}: undocumented field {name}"));
            }
            None => {}
        }
    }
}

/// Checks one server message against the document, and notes its type.
fn check(document: &Value, message: &Value, seen: &mut BTreeSet<String>) {
    let kind = message["type"].as_str().expect("a type").to_owned();
    let schema = &document["components"]["messages"][&kind]["payload"];
    assert!(
        schema.is_object(),
        "the document has no message {kind}: {message}"
    );
    let mut wrong = Vec::new();
    violations(message, schema, &kind, &mut wrong);
    assert!(wrong.is_empty(), "{message}\n{wrong:#?}");
    seen.insert(kind);
}

async fn ask(
    client: &mut WsClient,
    document: &Value,
    seen: &mut BTreeSet<String>,
    message: &Value,
) -> Value {
    let reply = client.ask(message).await;
    check(document, &reply, seen);
    reply
}

#[tokio::test]
async fn every_server_message_matches_the_asyncapi_document_and_every_one_is_seen() {
    let document = document();
    let mut seen = BTreeSet::new();
    let mut app = spawn_app().await;

    // The original protocol, and messages that cannot be handled.
    let mut client = app.connect().await;
    let greeting = client.next_json().await;
    check(&document, &greeting, &mut seen);
    ask(
        &mut client,
        &document,
        &mut seen,
        &json!({"type": "test", "message": {"a": 1}}),
    )
    .await;
    ask(&mut client, &document, &mut seen, &json!({"type": "test"})).await;
    ask(&mut client, &document, &mut seen, &json!({"type": "ping"})).await;
    ask(
        &mut client,
        &document,
        &mut seen,
        &json!({"type": "audio", "data": "AAECAwQFBgc="}),
    )
    .await;
    ask(&mut client, &document, &mut seen, &json!({"type": "chat"})).await;
    ask(
        &mut client,
        &document,
        &mut seen,
        &json!({"type": "audio", "data": "A*"}),
    )
    .await;
    client.close().await;

    // A session, through every step, with a gap and a duplicate.
    let mut client = app.connect().await;
    client.next_json().await;
    let start = json!({"type": "session_start", "format": {"encoding": "pcm_s16le", "sampleRate": 16000, "channels": 1}});
    let started = ask(&mut client, &document, &mut seen, &start).await;
    for seq in [0, 2, 2] {
        ask(
            &mut client,
            &document,
            &mut seen,
            &json!({"type": "audio", "data": "AAECAwQFBgc=", "seq": seq}),
        )
        .await;
    }
    client.send_binary(vec![0_u8; 320]).await;
    check(&document, &client.next_json().await, &mut seen);
    ask(
        &mut client,
        &document,
        &mut seen,
        &json!({"type": "audio_commit"}),
    )
    .await;
    ask(
        &mut client,
        &document,
        &mut seen,
        &json!({"type": "audio_clear"}),
    )
    .await;
    ask(
        &mut client,
        &document,
        &mut seen,
        &json!({"type": "session_end"}),
    )
    .await;
    assert!(started["sessionId"].is_string());

    // A resume, then the shutdown notice.
    let started = ask(&mut client, &document, &mut seen, &start).await;
    drop(client);
    app.wait_for_connections(0).await;
    let mut client = app.connect().await;
    client.next_json().await;
    let resume = json!({"type": "session_resume", "sessionId": started["sessionId"], "resumeToken": started["resumeToken"]});
    let resumed = ask(&mut client, &document, &mut seen, &resume).await;
    assert_eq!(resumed["type"], "session_resumed", "{resumed}");
    app.trigger_shutdown();
    check(&document, &client.next_json().await, &mut seen);

    let documented: BTreeSet<String> = operation_messages(&document, "sendServerMessages")
        .into_iter()
        .collect();
    assert_eq!(
        seen, documented,
        "server messages seen in the run against those documented"
    );
}

#[tokio::test]
async fn every_client_example_in_the_document_is_accepted() {
    let document = document();
    let app = spawn_app().await;
    let mut seen = BTreeSet::new();

    for name in operation_messages(&document, "receiveClientMessages") {
        // A connection each: the original `audio` opens a session that a `session_start`
        // would find in its way.
        let mut client = app.connect().await;
        client.next_json().await;
        let message = &document["components"]["messages"][&name];
        let Some(example) = message["examples"][0]["payload"].as_object() else {
            // Binary audio has no JSON example.
            assert_eq!(message["contentType"], "application/octet-stream", "{name}");
            continue;
        };
        let example = Value::Object(example.clone());
        let mut wrong = Vec::new();
        violations(&example, &message["payload"], &name, &mut wrong);
        assert!(
            wrong.is_empty(),
            "the example of {name} breaks its own schema: {wrong:?}"
        );
        if name == "session_resume" {
            // Its example names a session this service never had.
            let reply = ask(&mut client, &document, &mut seen, &example).await;
            assert_eq!(reply["code"], "session_not_found");
            continue;
        }
        if ["audio_commit", "audio_clear", "session_end"].contains(&name.as_str()) {
            let start =
                &document["components"]["messages"]["session_start"]["examples"][0]["payload"];
            ask(&mut client, &document, &mut seen, start).await;
        }
        let reply = ask(&mut client, &document, &mut seen, &example).await;
        let refused_on_purpose = name == "audio_clear";
        assert_eq!(
            reply["type"] == "error",
            refused_on_purpose,
            "{name}: {example} got {reply}"
        );
    }
}
