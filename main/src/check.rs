//! `aimcs-backend check URL`: a smoke test of a running deployment, local or remote, over the
//! same HTTP and WebSocket a front end uses. Each check prints one line with its timing; the
//! command fails if any check fails, naming it.

use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// How long any single step may take before it counts as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// One 100 ms chunk of 16 kHz 16-bit mono PCM, as a recording front end would send.
const CHUNK_BYTES: usize = 3_200;

type Outcome = Result<String, String>;

/// The origin CORS is checked for unless told otherwise: the front end's.
pub const DEFAULT_ORIGIN: &str = "https://aimcs.net";

/// Runs every check against `base_url` and prints the report; CORS is checked for `origin`.
pub async fn run(base_url: &str, origin: &str) -> ExitCode {
    let base = base_url.trim_end_matches('/');
    let mut report = Report::new(base);
    let client = match reqwest::Client::builder().timeout(STEP_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            report.record("HTTP client", Duration::ZERO, Err(error.to_string()));
            return report.finish();
        }
    };

    report.time("GET /health", health(&client, base)).await;
    report
        .time("GET /livez", probe(&client, base, "/livez", "alive"))
        .await;
    report
        .time("GET /readyz", probe(&client, base, "/readyz", "ready"))
        .await;
    report.time("GET /api/status", status(&client, base)).await;
    report.time("POST /api/chat", chat(&client, base)).await;
    report
        .time(
            "POST /api/chat without message",
            chat_without_message(&client, base),
        )
        .await;
    report
        .time("CORS preflight", cors(&client, base, origin))
        .await;
    report.time("WS /ws/audio session", websocket(base)).await;
    report.finish()
}

async fn probe(client: &reqwest::Client, base: &str, path: &str, expected: &str) -> Outcome {
    let (status, body) = get_json(client, format!("{base}{path}")).await?;
    expect(status == 200 && body["status"] == expected, || {
        format!("expected 200 {{\"status\":\"{expected}\"}}, got {status}: {body}")
    })?;
    Ok(expected.to_owned())
}

/// A browser on `origin` may call the API: the preflight allows it, and a request from it is
/// answered with its origin.
async fn cors(client: &reqwest::Client, base: &str, origin: &str) -> Outcome {
    let url = format!("{base}/api/chat");
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let allowed = |response: &reqwest::Response| {
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let preflight_status = preflight.status().as_u16();
    expect(
        (200..300).contains(&preflight_status) && allowed(&preflight).as_deref() == Some(origin),
        || {
            format!(
                "preflight from {origin} answered {preflight_status} with Access-Control-Allow-Origin {:?}",
                allowed(&preflight)
            )
        },
    )?;
    let simple = client
        .get(format!("{base}/health"))
        .header("origin", origin)
        .send()
        .await
        .map_err(|e| format!("{base}/health: {e}"))?;
    expect(allowed(&simple).as_deref() == Some(origin), || {
        format!(
            "GET /health from {origin} got Access-Control-Allow-Origin {:?}",
            allowed(&simple)
        )
    })?;
    Ok(format!("{origin} allowed"))
}

async fn get_json(client: &reqwest::Client, url: String) -> Result<(u16, Value), String> {
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| format!("{url}: body unreadable: {e}"))?;
    let json = serde_json::from_str(&body)
        .map_err(|_| format!("{url} answered {status} with non-JSON: {}", preview(&body)))?;
    Ok((status, json))
}

async fn health(client: &reqwest::Client, base: &str) -> Outcome {
    let (status, body) = get_json(client, format!("{base}/health")).await?;
    expect(status == 200, || {
        format!("status {status}, expected 200: {body}")
    })?;
    expect(body["status"] == "healthy", || {
        format!("status field is {}, expected \"healthy\"", body["status"])
    })?;
    expect(
        body["uptime"].is_number() && body["connections"].is_u64() && body["version"].is_string(),
        || format!("uptime, connections or version missing or of the wrong type: {body}"),
    )?;
    Ok(format!(
        "healthy, {} connections, version {}",
        body["connections"], body["version"]
    ))
}

async fn status(client: &reqwest::Client, base: &str) -> Outcome {
    let (status, body) = get_json(client, format!("{base}/api/status")).await?;
    expect(status == 200, || {
        format!("status {status}, expected 200: {body}")
    })?;
    let endpoints = body["endpoints"].as_array().map_or(0, Vec::len);
    expect(body["activeConnections"].is_u64() && endpoints == 4, || {
        format!("activeConnections or endpoints missing: {body}")
    })?;
    Ok(format!("{} active connections", body["activeConnections"]))
}

async fn post_json(
    client: &reqwest::Client,
    url: String,
    body: &Value,
) -> Result<(u16, Value), String> {
    let response = client
        .post(&url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .json()
        .await
        .map_err(|e| format!("{url}: body is not JSON: {e}"))?;
    Ok((status, body))
}

async fn chat(client: &reqwest::Client, base: &str) -> Outcome {
    let request = json!({"message": "Hello from aimcs-backend check!", "context": {"test": true}});
    let (status, body) = post_json(client, format!("{base}/api/chat"), &request).await?;
    expect(status == 200, || {
        format!("status {status}, expected 200: {body}")
    })?;
    expect(
        body["message"] == "Echo: Hello from aimcs-backend check!",
        || format!("unexpected echo: {body}"),
    )?;
    expect(
        body["context"] == json!({"test": true}) && body["id"].is_string(),
        || format!("context or id wrong: {body}"),
    )?;
    Ok("echoed".into())
}

async fn chat_without_message(client: &reqwest::Client, base: &str) -> Outcome {
    let (status, body) = post_json(client, format!("{base}/api/chat"), &json!({})).await?;
    expect(
        status == 400 && body["error"] == "Message is required",
        || format!("expected 400 \"Message is required\", got {status}: {body}"),
    )?;
    Ok("refused with 400".into())
}

async fn websocket(base: &str) -> Outcome {
    let url = websocket_url(base)?;
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let greeting = next_json(&mut socket).await?;
    expect(
        greeting["type"] == "connection" && greeting["connectionId"].is_string(),
        || format!("expected a connection message first, got {greeting}"),
    )?;

    let chunk = base64::engine::general_purpose::STANDARD.encode(vec![0x55; CHUNK_BYTES]);
    let audio = json!({"type": "audio", "data": chunk, "timestamp": "check"});
    let exchanges = [
        (json!({"type": "test", "message": "check"}), "test_response"),
        (json!({"type": "ping"}), "pong"),
        (audio.clone(), "audio_received"),
        (audio.clone(), "audio_received"),
        (audio, "audio_received"),
    ];
    let mut slowest = Duration::ZERO;
    for (request, expected) in &exchanges {
        let sent = Instant::now();
        socket
            .send(Message::text(request.to_string()))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        let reply = next_json(&mut socket).await?;
        slowest = slowest.max(sent.elapsed());
        expect(
            reply["type"] == *expected && reply["timestamp"].is_string(),
            || format!("sent {}, expected {expected}, got {reply}", request["type"]),
        )?;
        if *expected == "audio_received" {
            let size = chunk.len();
            expect(reply["dataSize"] == size, || {
                format!(
                    "audio ack has dataSize {}, expected {size}",
                    reply["dataSize"]
                )
            })?;
        }
    }
    let _ = socket.close(None).await;
    Ok(format!(
        "{} messages acknowledged, slowest round trip {}",
        exchanges.len(),
        millis(slowest)
    ))
}

/// The next text message, as JSON.
async fn next_json<S>(socket: &mut S) -> Result<Value, String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text)
                    .map_err(|_| format!("not JSON: {}", preview(&text)));
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("server closed the socket: {frame:?}"));
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("socket ended".into()),
        }
    }
}

/// `http(s)://host/...` becomes `ws(s)://host/ws/audio`, as the front end builds it.
fn websocket_url(base: &str) -> Result<String, String> {
    if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/ws/audio"))
    } else if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/ws/audio"))
    } else {
        Err(format!("{base} is not an http:// or https:// URL"))
    }
}

fn expect(condition: bool, failure: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(failure()) }
}

fn preview(text: &str) -> String {
    let mut shown: String = text.chars().take(120).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1_000.0)
}

/// The lines of the report, printed as checks complete.
struct Report {
    passed: usize,
    failed: Vec<String>,
}

impl Report {
    fn new(base: &str) -> Self {
        let _ = writeln!(std::io::stdout(), "aimcs-backend check {base}");
        Self {
            passed: 0,
            failed: Vec::new(),
        }
    }

    async fn time(&mut self, name: &str, check: impl Future<Output = Outcome>) {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(STEP_TIMEOUT * 2, check).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "no answer within {} s",
                (STEP_TIMEOUT * 2).as_secs()
            )),
        };
        self.record(name, started.elapsed(), outcome);
    }

    fn record(&mut self, name: &str, elapsed: Duration, outcome: Outcome) {
        let mut line = String::new();
        let (mark, detail) = match outcome {
            Ok(detail) => {
                self.passed += 1;
                ("ok  ", detail)
            }
            Err(detail) => {
                self.failed.push(name.to_owned());
                ("FAIL", detail)
            }
        };
        let _ = write!(
            line,
            "  {mark}  {name:<32} {:>9}  {detail}",
            millis(elapsed)
        );
        let _ = writeln!(std::io::stdout(), "{line}");
    }

    fn finish(self) -> ExitCode {
        let mut out = std::io::stdout();
        if self.failed.is_empty() {
            let _ = writeln!(out, "{} passed, 0 failed", self.passed);
            ExitCode::SUCCESS
        } else {
            let _ = writeln!(
                out,
                "{} passed, {} failed: {}",
                self.passed,
                self.failed.len(),
                self.failed.join(", ")
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_are_built_as_the_front_end_builds_them() {
        assert_eq!(
            websocket_url("https://a.example").unwrap(),
            "wss://a.example/ws/audio"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:3000").unwrap(),
            "ws://127.0.0.1:3000/ws/audio"
        );
        assert!(websocket_url("ftp://x").is_err());
    }
}
