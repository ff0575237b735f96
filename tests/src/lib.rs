//! Helpers for the black-box tests: start the real service on a free port and talk to it the
//! way clients do, over real sockets.
//!
//! # Layout
//! - [`spawn_app`] / [`TestApp`]: the service, in this process, with its own settings.
//! - [`WsClient`]: a WebSocket client that reads server messages as JSON.

use std::net::SocketAddr;
use std::time::Duration;

use aimcs_backend::app::{App, Overrides};
use aimcs_backend::settings::Settings;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use aimcs_backend::settings;

/// The field names of a JSON object, in order: the original's field order is part of its
/// wire format.
pub fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// How long a test waits for anything the server should do promptly.
pub const PROMPTLY: Duration = Duration::from_secs(5);

/// A running service and the means to stop it.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// An HTTP client for it.
    pub http: reqwest::Client,
    /// Its recordings directory (a fresh temporary one), removed with the app.
    pub recordings: tempfile::TempDir,
    /// Where `/metrics` is served when it has a port of its own.
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    running: Option<JoinHandle<aimcs_backend::ShutdownReport>>,
}

/// Starts the service on `127.0.0.1`, a free port, default settings (recordings in a
/// temporary directory).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the service with settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_overrides(configure, Overrides::default()).await
}

/// Starts the service with settings changed by `configure` and adapters replaced.
pub async fn spawn_app_with_overrides(
    configure: impl FnOnce(&mut Settings),
    overrides: Overrides,
) -> TestApp {
    let recordings = tempfile::tempdir().expect("a temporary recordings directory");
    let mut settings = Settings::default();
    settings.server.host = [127, 0, 0, 1].into();
    settings.server.port = 0;
    settings.audio.file.dir = recordings.path().to_owned();
    configure(&mut settings);
    let app = App::build_with(&settings, overrides)
        .await
        .expect("the service builds on a free port");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .timeout(PROMPTLY)
        .build()
        .expect("an HTTP client");
    TestApp {
        addr,
        http,
        recordings,
        metrics_addr,
        stop: Some(stop),
        running: Some(running),
    }
}

impl TestApp {
    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET is answered")
    }

    /// `GET /health`, as JSON.
    pub async fn health(&self) -> Value {
        self.get("/health")
            .await
            .json()
            .await
            .expect("/health answers JSON")
    }

    /// `/health.connections`.
    pub async fn connections(&self) -> u64 {
        self.health().await["connections"]
            .as_u64()
            .expect("connections is a count")
    }

    /// Waits until `/health` reports `expected` connections; the server removes a closed
    /// connection a moment after the client sees the close.
    pub async fn wait_for_connections(&self, expected: u64) {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let now = self.connections().await;
            if now == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "connections stayed at {now}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `POST /api/chat` with a JSON body.
    pub async fn post_chat(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/chat"))
            .json(body)
            .send()
            .await
            .expect("POST is answered")
    }

    /// `POST /api/chat` with `body` sent as `content_type`.
    pub async fn post_chat_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(self.url("/api/chat"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST is answered")
    }

    /// The path of a file in the recordings directory.
    pub fn recording(&self, name: &str) -> std::path::PathBuf {
        self.recordings.path().join(name)
    }

    /// The recordings directory's files with extension `ext`.
    pub fn recordings_with_extension(&self, ext: &str) -> Vec<std::path::PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir(self.recordings.path())
            .expect("the recordings directory exists")
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == ext))
            .collect();
        found.sort();
        found
    }

    /// Opens a WebSocket on `/ws/audio`.
    pub async fn connect(&self) -> WsClient {
        self.connect_to("/ws/audio")
            .await
            .expect("the upgrade succeeds")
    }

    /// Opens a WebSocket on `path`, or returns the handshake error.
    pub async fn connect_to(
        &self,
        path: &str,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://{}{path}", self.addr);
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(WsClient { socket })
    }

    /// Opens a WebSocket on `path` (which may carry a query) with extra request `headers`.
    ///
    /// # Errors
    /// A refused upgrade, as its status and JSON body.
    pub async fn connect_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(WsClient, HandshakeResponse), (u16, Value)> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = format!("ws://{}{path}", self.addr)
            .into_client_request()
            .expect("a valid URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                http::HeaderValue::from_str(value).expect("a header value"),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, response)) => Ok((WsClient { socket }, response)),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(|body| serde_json::from_slice(body).expect("a JSON refusal"))
                    .unwrap_or(Value::Null);
                Err((response.status().as_u16(), body))
            }
            Err(error) => panic!("the handshake failed without an answer: {error}"),
        }
    }

    /// Asks the service to shut down and waits until it has.
    pub async fn shut_down(mut self) -> aimcs_backend::ShutdownReport {
        self.trigger_shutdown();
        let running = self.running.take().expect("not yet shut down");
        tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("shutdown completes")
            .expect("the server task does not panic")
    }

    /// Shuts down and hands over the recordings directory, for tests that inspect what
    /// shutdown left in it.
    pub async fn shut_down_keeping_recordings(
        mut self,
    ) -> (aimcs_backend::ShutdownReport, tempfile::TempDir) {
        self.trigger_shutdown();
        let running = self.running.take().expect("not yet shut down");
        let report = tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("shutdown completes")
            .expect("the server task does not panic");
        let recordings = std::mem::replace(
            &mut self.recordings,
            tempfile::tempdir().expect("a placeholder"),
        );
        (report, recordings)
    }

    /// Asks the service to shut down without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// The server's answer to a WebSocket handshake.
pub type HandshakeResponse = tokio_tungstenite::tungstenite::handshake::client::Response;

/// A WebSocket client of `/ws/audio`.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a WebSocket ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code and reason.
    Closed(u16, String),
    /// The connection ended without a close frame.
    Dropped,
}

impl WsClient {
    /// Opens a WebSocket on a full `ws://` URL (for servers other than a [`TestApp`]).
    pub async fn connect_url(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the upgrade succeeds");
        Self { socket }
    }

    /// Sends a raw text frame and returns the server's reply.
    pub async fn ask_raw(&mut self, frame: &str) -> Value {
        self.send_text(frame).await;
        self.next_json().await
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.socket
            .send(Message::text(text.into()))
            .await
            .expect("the frame is sent");
    }

    /// Sends `value` as a JSON text frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: impl Into<Vec<u8>>) {
        self.socket
            .send(Message::binary(bytes.into()))
            .await
            .expect("the frame is sent");
    }

    /// Sends an `audio` message carrying `bytes` in base64, as the front end does.
    pub async fn send_audio(&mut self, bytes: &[u8]) {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.send_json(&serde_json::json!({"type": "audio", "data": data, "timestamp": "2025-06-27T04:20:11.123Z"}))
            .await;
    }

    /// Starts a session with `format` (the `format` object of `session_start`) and returns
    /// `session_started`.
    pub async fn start_session(&mut self, format: Value) -> Value {
        let started = self
            .ask(&serde_json::json!({"type": "session_start", "format": format}))
            .await;
        assert_eq!(started["type"], "session_started", "{started}");
        started
    }

    /// Sends `bytes` as a base64 `audio` message numbered `seq`.
    pub async fn send_audio_seq(&mut self, bytes: &[u8], seq: u64) {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.send_json(&serde_json::json!({"type": "audio", "data": data, "seq": seq}))
            .await;
    }

    /// Sends a protocol-level ping.
    pub async fn send_ping(&mut self, payload: &'static [u8]) {
        self.socket
            .send(Message::Ping(payload.into()))
            .await
            .expect("the ping is sent");
    }

    /// The next frame the server sends, whatever it is.
    pub async fn next_frame(&mut self) -> Option<Message> {
        match tokio::time::timeout(PROMPTLY, self.socket.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            Ok(Some(Err(_)) | None) => None,
            Err(_) => panic!("the server sent nothing within {PROMPTLY:?}"),
        }
    }

    /// The next text frame, unparsed.
    pub async fn next_text(&mut self) -> String {
        loop {
            match self.next_frame().await {
                Some(Message::Text(text)) => return text.to_string(),
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next server message, as JSON; fails the test on anything else.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.next_frame().await {
                Some(Message::Text(text)) => {
                    return serde_json::from_str(&text)
                        .unwrap_or_else(|_| panic!("server sent non-JSON text: {text}"));
                }
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("expected a JSON message, got {other:?}"),
            }
        }
    }

    /// Sends `value` and returns the server's reply.
    pub async fn ask(&mut self, value: &Value) -> Value {
        self.send_json(value).await;
        self.next_json().await
    }

    /// Reads until the connection ends and says how.
    pub async fn ending(&mut self) -> Ending {
        loop {
            match self.next_frame().await {
                Some(Message::Close(Some(CloseFrame { code, reason }))) => {
                    return Ending::Closed(code.into(), reason.to_string());
                }
                Some(Message::Close(None)) => return Ending::Closed(1005, String::new()),
                Some(_) => {}
                None => return Ending::Dropped,
            }
        }
    }

    /// Closes the connection from the client side, with a normal close.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PROMPTLY, self.socket.next()).await {}
    }
}

/// Raw TCP exchanges, for requests no HTTP client will send (chunked bodies, slow headers).
pub mod raw {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    /// Sends `request` and returns what the server answered, read until it closes the
    /// connection or stays quiet for half a second.
    pub async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("the server accepts");
        stream
            .write_all(request)
            .await
            .expect("the request is sent");
        let mut answer = Vec::new();
        let mut buffer = [0; 4096];
        loop {
            let quiet = if answer.is_empty() {
                super::PROMPTLY
            } else {
                Duration::from_millis(500)
            };
            match tokio::time::timeout(quiet, stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }
}

/// A WebSocket client written on a bare TCP socket, for frames no library client will send
/// (invalid UTF-8, unmasked frames) and for clients that misbehave on purpose.
pub mod raw_ws {
    /// One masked binary frame of `payload`, as a client sends it.
    pub fn masked_binary(payload: &[u8]) -> Vec<u8> {
        masked(2, payload)
    }

    /// One masked final frame with `opcode` and `payload`.
    pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        masked_fragment(true, opcode, payload)
    }

    /// One masked frame with `opcode` and `payload`, the last of its message if `fin`.
    pub fn masked_fragment(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        encode(fin, opcode, payload, Some([0x12, 0x34, 0x56, 0x78]))
    }

    /// A frame with `payload` masked with `key`, or unmasked (which only a server may send).
    fn encode(fin: bool, opcode: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
        let mut frame = vec![u8::from(fin) << 7 | opcode];
        let mask_bit = if key.is_some() { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => frame.push(mask_bit | len as u8),
            len @ 126..=65535 => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        match key {
            Some(key) => {
                frame.extend_from_slice(&key);
                frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => frame.extend_from_slice(payload),
        }
        frame
    }

    /// The opcode, header length and payload length of the unmasked frame starting `bytes`,
    /// once its header is complete.
    pub fn head(bytes: &[u8]) -> Option<(u8, usize, usize)> {
        let (&first, &second) = (bytes.first()?, bytes.get(1)?);
        let (len, header) = match second & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
                4,
            ),
            127 => (
                usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?,
                10,
            ),
            len => (usize::from(len), 2),
        };
        Some((first & 0x0f, header, len))
    }

    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    /// A frame the server sent.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Frame {
        /// The opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong).
        pub opcode: u8,
        /// The payload.
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The close code of a close frame.
        pub fn close_code(&self) -> Option<u16> {
            (self.opcode == 8 && self.payload.len() >= 2)
                .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
        }
    }

    /// A connection that has completed the opening handshake.
    pub struct RawSocket {
        stream: TcpStream,
        pending: Vec<u8>,
    }

    impl RawSocket {
        /// Connects to `/ws/audio` and completes the handshake.
        pub async fn connect(addr: SocketAddr) -> Self {
            Self::handshake(
                TcpStream::connect(addr).await.expect("the server accepts"),
                &[],
            )
            .await
        }

        /// Connects to `/ws/audio`, sending `early` (frames) in the same write as the
        /// handshake, as a client that does not wait for the `101` may.
        pub async fn connect_sending(addr: SocketAddr, early: &[u8]) -> Self {
            let stream = TcpStream::connect(addr).await.expect("the server accepts");
            Self::handshake(stream, early).await
        }

        /// Connects with a small receive buffer, for a client that stops reading and must make
        /// the server's sends block soon.
        pub async fn connect_with_small_receive_buffer(addr: SocketAddr) -> Self {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            socket
                .set_recv_buffer_size(4_096)
                .expect("a receive buffer size");
            Self::handshake(socket.connect(addr).await.expect("the server accepts"), &[]).await
        }

        /// Connects to `path` (another WebSocket endpoint, such as `/ws/echo`) and completes
        /// the handshake.
        pub async fn connect_path(addr: SocketAddr, path: &str) -> Self {
            let stream = TcpStream::connect(addr).await.expect("the server accepts");
            Self::handshake_on(stream, path, &[]).await
        }

        async fn handshake(stream: TcpStream, early: &[u8]) -> Self {
            Self::handshake_on(stream, "/ws/audio", early).await
        }

        async fn handshake_on(mut stream: TcpStream, path: &str, early: &[u8]) -> Self {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                           Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            let mut bytes = request.as_bytes().to_vec();
            bytes.extend_from_slice(early);
            stream
                .write_all(&bytes)
                .await
                .expect("the handshake is sent");
            let mut pending = Vec::new();
            let mut buffer = [0; 4096];
            let end = loop {
                if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                let n = stream
                    .read(&mut buffer)
                    .await
                    .expect("the handshake is answered");
                assert!(n > 0, "the server closed during the handshake");
                pending.extend_from_slice(&buffer[..n]);
            };
            assert!(
                pending.starts_with(b"HTTP/1.1 101"),
                "{}",
                String::from_utf8_lossy(&pending)
            );
            pending.drain(..end);
            Self { stream, pending }
        }

        /// Sends one final frame with `opcode` and `payload`, masked as a client must unless
        /// `masked` is false.
        pub async fn send_frame(&mut self, opcode: u8, payload: &[u8], masked: bool) {
            let frame = if masked {
                masked_fragment(true, opcode, payload)
            } else {
                encode(true, opcode, payload, None)
            };
            self.stream
                .write_all(&frame)
                .await
                .expect("the frame is sent");
        }

        /// Starts a binary frame announcing `len` bytes and sends only `first` of them: what
        /// the server sees of a huge message before it must decide whether to take it.
        pub async fn start_frame(&mut self, len: u64, first: &[u8]) {
            let mut frame = vec![0x82, 0x80 | 127];
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&[0, 0, 0, 0]);
            frame.extend_from_slice(first);
            self.stream
                .write_all(&frame)
                .await
                .expect("the frame start is sent");
        }

        /// Sends `text` as a text frame and reads frames until a text reply, which it returns
        /// as JSON.
        pub async fn ask(&mut self, text: &str) -> serde_json::Value {
            self.send_frame(1, text.as_bytes(), true).await;
            loop {
                let frame = self.read_frame().await.expect("a reply");
                if frame.opcode == 1 {
                    return serde_json::from_slice(&frame.payload).expect("a JSON reply");
                }
            }
        }

        /// Sends `bytes` as they are: frames built by the caller.
        pub async fn send_raw(&mut self, bytes: &[u8]) {
            self.stream
                .write_all(bytes)
                .await
                .expect("the bytes are sent");
        }

        /// Splits off the writing half, for a client that writes without reading.
        pub fn into_writer(self) -> tokio::net::tcp::OwnedWriteHalf {
            self.stream.into_split().1
        }

        /// The next frame from the server, or `None` once it has closed the connection.
        pub async fn read_frame(&mut self) -> Option<Frame> {
            loop {
                if let Some((frame, used)) = parse(&self.pending) {
                    self.pending.drain(..used);
                    return Some(frame);
                }
                let mut buffer = [0; 8192];
                let n = tokio::time::timeout(super::PROMPTLY, self.stream.read(&mut buffer))
                    .await
                    .expect("the server answers in time")
                    .unwrap_or(0);
                if n == 0 {
                    return None;
                }
                self.pending.extend_from_slice(&buffer[..n]);
            }
        }

        /// Reads frames until a close frame, and returns it; `None` if the connection ended
        /// without one.
        pub async fn close_frame(&mut self) -> Option<Frame> {
            while let Some(frame) = self.read_frame().await {
                if frame.opcode == 8 {
                    return Some(frame);
                }
            }
            None
        }
    }

    /// An unmasked server frame at the start of `bytes`, and how many bytes it took.
    fn parse(bytes: &[u8]) -> Option<(Frame, usize)> {
        let (opcode, header, len) = head(bytes)?;
        let payload = bytes.get(header..header + len)?.to_vec();
        Some((Frame { opcode, payload }, header + len))
    }
}

/// Command-line tools the tests check recordings with (sox, ffprobe, ffmpeg).
pub mod tools {
    use std::path::Path;
    use std::process::Command;

    /// Fails the test with an install hint when `tool` is missing; `scripts/test` installs it.
    pub fn require(tool: &str) {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is required by this test: apt-get install sox ffmpeg (scripts/test installs them)"
        );
    }

    /// Runs `tool` with `args` and returns its standard output; fails the test if it fails.
    pub fn run(tool: &str, args: &[&str]) -> String {
        require(tool);
        let output = Command::new(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool} cannot run: {e}"));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// What `soxi` says about a WAV: (sample rate, channels, samples). Fails if sox cannot read it.
    pub fn soxi(path: &Path) -> (u32, u16, u64) {
        let path = path.to_str().expect("a UTF-8 path");
        let number = |flag: &str| {
            run("soxi", &[flag, path])
                .trim()
                .parse::<u64>()
                .expect("soxi prints a number")
        };
        (number("-r") as u32, number("-c") as u16, number("-s"))
    }

    /// The duration ffprobe reads from a media file, in seconds.
    pub fn ffprobe_duration(path: &Path) -> f64 {
        let path = path.to_str().expect("a UTF-8 path");
        let out = run(
            "ffprobe",
            &[
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
                path,
            ],
        );
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("ffprobe printed no duration: {out:?}"))
    }
}
