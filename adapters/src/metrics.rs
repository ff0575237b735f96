//! What the service measures, for Prometheus: one function per event, so that names, labels
//! and units are decided here once. Recorded through the `metrics` facade: without an
//! installed recorder (metrics disabled) every call is a no-op.
//!
//! Every label value comes from a closed set (routes, message types, close codes, sink names,
//! status codes): no connection id or client input ever becomes a label, so the number of
//! series is bounded whatever clients send.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, counter, gauge, histogram};

use crate::inbound::ws::{CLIENT_KINDS, SERVER_KINDS};

/// Open WebSocket connections.
pub const CONNECTIONS_OPEN: &str = "aimcs_ws_connections_open";
/// WebSocket connections opened.
pub const CONNECTIONS_TOTAL: &str = "aimcs_ws_connections_total";
/// WebSocket connections closed, by close code (`client` when the client closed or vanished).
pub const CONNECTIONS_CLOSED: &str = "aimcs_ws_connections_closed_total";
/// Client messages, by type.
pub const MESSAGES_RECEIVED: &str = "aimcs_ws_messages_received_total";
/// Server messages, by type.
pub const MESSAGES_SENT: &str = "aimcs_ws_messages_sent_total";
/// Audio bytes received (decoded).
pub const AUDIO_BYTES: &str = "aimcs_audio_bytes_received_total";
/// Audio chunks received.
pub const AUDIO_CHUNKS: &str = "aimcs_audio_chunks_received_total";
/// Seconds from an audio message's arrival to its acknowledgement being sent.
pub const ACK_LATENCY: &str = "aimcs_ack_latency_seconds";
/// Seconds an audio sink took to accept a chunk, by sink.
pub const SINK_WRITE_LATENCY: &str = "aimcs_sink_write_seconds";
/// Audio sink operations that failed, by sink and operation.
pub const SINK_ERRORS: &str = "aimcs_sink_errors_total";
/// HTTP requests, by route, method and status.
pub const HTTP_REQUESTS: &str = "aimcs_http_requests_total";
/// Seconds to answer an HTTP request, by route.
pub const HTTP_DURATION: &str = "aimcs_http_request_duration_seconds";
/// Always 1, labelled with the version and the git commit.
pub const BUILD_INFO: &str = "aimcs_build_info";

/// Histogram buckets, in seconds, for every latency here: 50 µs to 5 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// Describes every metric (help texts and units) and records the build's identity.
pub fn describe(version: &'static str, commit: &'static str) {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS_OPEN, "Open WebSocket connections");
    describe_counter!(CONNECTIONS_TOTAL, "WebSocket connections opened");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "WebSocket connections closed, by close code (client: closed or dropped by the client)"
    );
    describe_counter!(MESSAGES_RECEIVED, "WebSocket messages received, by type");
    describe_counter!(MESSAGES_SENT, "WebSocket messages sent, by type");
    describe_counter!(AUDIO_BYTES, Unit::Bytes, "Audio bytes received");
    describe_counter!(AUDIO_CHUNKS, "Audio chunks received");
    describe_histogram!(
        ACK_LATENCY,
        Unit::Seconds,
        "Time from an audio message's arrival to its acknowledgement"
    );
    describe_histogram!(
        SINK_WRITE_LATENCY,
        Unit::Seconds,
        "Time an audio sink took to accept a chunk"
    );
    describe_counter!(SINK_ERRORS, "Audio sink operations that failed");
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by route, method and status");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request"
    );
    describe_gauge!(BUILD_INFO, "Version and git commit of the running build");
    gauge!(BUILD_INFO, "version" => version, "commit" => commit).set(1.0);
}

/// A WebSocket connection opened.
pub(crate) fn connection_opened() {
    counter!(CONNECTIONS_TOTAL).increment(1);
    gauge!(CONNECTIONS_OPEN).increment(1.0);
}

/// A WebSocket connection closed with `code` (`None`: by the client, or it vanished).
pub(crate) fn connection_closed(code: Option<u16>) {
    gauge!(CONNECTIONS_OPEN).decrement(1.0);
    counter!(CONNECTIONS_CLOSED, "code" => close_code_label(code)).increment(1);
}

/// Handles of the metrics recorded for every message, looked up once: a lookup by name and
/// labels costs more than the increment itself. Taken at the first message, when the service
/// has installed its recorder (before it accepts anything); without one they are no-ops.
struct MessageHandles {
    received: Vec<(&'static str, Counter)>,
    sent: Vec<(&'static str, Counter)>,
    audio_chunks: Counter,
    audio_bytes: Counter,
    ack_latency: Histogram,
}

fn message_handles() -> &'static MessageHandles {
    static HANDLES: OnceLock<MessageHandles> = OnceLock::new();
    HANDLES.get_or_init(|| MessageHandles {
        received: CLIENT_KINDS
            .iter()
            .map(|kind| (*kind, counter!(MESSAGES_RECEIVED, "type" => *kind)))
            .collect(),
        sent: SERVER_KINDS
            .iter()
            .map(|kind| (*kind, counter!(MESSAGES_SENT, "type" => *kind)))
            .collect(),
        audio_chunks: counter!(AUDIO_CHUNKS),
        audio_bytes: counter!(AUDIO_BYTES),
        ack_latency: histogram!(ACK_LATENCY),
    })
}

fn find<'a, T>(handles: &'a [(&'static str, T)], kind: &str) -> Option<&'a T> {
    handles
        .iter()
        .find(|(known, _)| *known == kind)
        .map(|(_, handle)| handle)
}

/// A client message of `kind` arrived.
pub(crate) fn message_received(kind: &'static str) {
    match find(&message_handles().received, kind) {
        Some(counter) => counter.increment(1),
        None => counter!(MESSAGES_RECEIVED, "type" => kind).increment(1),
    }
}

/// A server message of `kind` was sent.
pub(crate) fn message_sent(kind: &'static str) {
    match find(&message_handles().sent, kind) {
        Some(counter) => counter.increment(1),
        None => counter!(MESSAGES_SENT, "type" => kind).increment(1),
    }
}

/// An audio chunk of `bytes` arrived.
pub(crate) fn audio_received(bytes: usize) {
    let handles = message_handles();
    handles.audio_chunks.increment(1);
    handles.audio_bytes.increment(bytes as u64);
}

/// An audio message was acknowledged `elapsed` after it arrived.
pub(crate) fn acknowledged(elapsed: Duration) {
    message_handles().ack_latency.record(elapsed.as_secs_f64());
}

/// The metrics of one audio sink, looked up once when the sink is wrapped.
#[derive(Clone)]
pub(crate) struct SinkHandles {
    name: &'static str,
    write_latency: Histogram,
}

impl SinkHandles {
    /// The handles of sink `name`.
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            write_latency: histogram!(SINK_WRITE_LATENCY, "sink" => name),
        }
    }

    /// The sink accepted a chunk in `elapsed`.
    pub(crate) fn written(&self, elapsed: Duration) {
        self.write_latency.record(elapsed.as_secs_f64());
    }

    /// The sink failed an `operation` (`open`, `write`, `commit`, `close`): rare, looked up
    /// when it happens.
    pub(crate) fn failed(&self, operation: &'static str) {
        counter!(SINK_ERRORS, "sink" => self.name, "operation" => operation).increment(1);
    }
}

/// An HTTP request to `route` was answered with `status` in `elapsed`.
pub(crate) fn http_request(
    route: &'static str,
    method: &http::Method,
    status: u16,
    elapsed: Duration,
) {
    counter!(
        HTTP_REQUESTS,
        "route" => route,
        "method" => method_label(method),
        "status" => status_label(status),
    )
    .increment(1);
    histogram!(HTTP_DURATION, "route" => route).record(elapsed.as_secs_f64());
}

/// Close codes the server sends get their own label; anything else is bounded to `other`.
fn close_code_label(code: Option<u16>) -> &'static str {
    match code {
        None => "client",
        Some(1000) => "1000",
        Some(1001) => "1001",
        Some(1002) => "1002",
        Some(1007) => "1007",
        Some(1008) => "1008",
        Some(1009) => "1009",
        Some(1011) => "1011",
        Some(4103) => "4103",
        Some(4408) => "4408",
        Some(_) => "other",
    }
}

fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The statuses the service answers with; anything else would be a bug, labelled `other`.
fn status_label(status: u16) -> &'static str {
    match status {
        101 => "101",
        200 => "200",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        415 => "415",
        426 => "426",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_closed_sets() {
        assert_eq!(close_code_label(Some(3999)), "other");
        assert_eq!(close_code_label(None), "client");
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "other"
        );
        assert_eq!(status_label(404), "404");
    }
}
