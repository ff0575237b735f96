//! `aimcs-loadgen`: drives an AIMCS backend (or the original, or anything speaking its
//! protocol) over `/ws/audio`, and reports throughput, acknowledgement latency, errors and
//! failed connections, or, in idle mode, the server's resident memory per connection.
//!
//! Modes:
//! - `closed`: each connection sends a chunk, waits for its acknowledgement, sends the next;
//!   throughput is then what the server can take.
//! - `paced`: each connection sends one chunk every `--interval-ms`, like a live microphone;
//!   latency is then what a caller experiences.
//! - `idle`: opens the connections, reads their greeting, and holds them; with
//!   `--server-pid` it reports the server's memory per connection.
//!
//! It speaks WebSocket itself, on one thread, so that one core of it can load one core of
//! the server: every message is a frame built (and masked) once before the run and written
//! as it is, and a reply is recognised by its `type` without parsing the JSON. Connections
//! come from several loopback source addresses (`--sources`), so that many of them are not
//! capped by one address's ephemeral ports.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aimcs_tests::raw_ws::{head, masked};
use base64::Engine as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const USAGE: &str = "\
aimcs-loadgen: load an AIMCS backend over /ws/audio and report throughput and ack latency.

Usage: aimcs-loadgen [options]
  --url URL              ws://host:port/path (default ws://127.0.0.1:3000/ws/audio)
  --connections N        concurrent connections (default 16)
  --duration SECS        how long to send, or to hold idle connections, after ramp-up (default 10)
  --ramp-up SECS         spread connection starts over this long (default 0)
  --mode closed|paced|idle
                         send after each ack, one chunk per interval, or nothing (default closed)
  --interval-ms MS       paced mode: time between chunks (default 100)
  --chunk-bytes N        audio bytes per chunk (default 3200: 100 ms of 16 kHz PCM)
  --frames base64|binary base64 audio messages (the original protocol) or binary frames
                         after session_start (default base64)
  --session              send session_start first (implied by --frames binary)
  --sources N            loopback source addresses to connect from, 127.0.0.1 and up (default 1)
  --server-pid PID       idle mode: report this process's resident memory per connection
  --json                 print one JSON object instead of the table";

#[derive(Debug, Clone)]
struct Options {
    target: SocketAddr,
    host: String,
    path: String,
    connections: usize,
    duration: Duration,
    ramp_up: Duration,
    mode: Mode,
    chunk_bytes: usize,
    binary: bool,
    session: bool,
    sources: u8,
    server_pid: Option<u32>,
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Paced(Duration),
    Idle,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut url = "ws://127.0.0.1:3000/ws/audio".to_owned();
    let mut options = Options {
        target: SocketAddr::from(([127, 0, 0, 1], 3000)),
        host: String::new(),
        path: String::new(),
        connections: 16,
        duration: Duration::from_secs(10),
        ramp_up: Duration::ZERO,
        mode: Mode::Closed,
        chunk_bytes: 3_200,
        binary: false,
        session: false,
        sources: 1,
        server_pid: None,
        json: false,
    };
    let mut interval = Duration::from_millis(100);
    let mut mode = "closed".to_owned();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |text: &String| {
            text.parse::<u64>()
                .map_err(|_| format!("{arg} takes a whole number, not {text:?}"))
        };
        match arg.as_str() {
            "--url" => url = value()?.clone(),
            "--connections" => options.connections = number(value()?)? as usize,
            "--duration" => options.duration = Duration::from_secs(number(value()?)?),
            "--ramp-up" => options.ramp_up = Duration::from_secs(number(value()?)?),
            "--interval-ms" => interval = Duration::from_millis(number(value()?)?),
            "--chunk-bytes" => options.chunk_bytes = number(value()?)? as usize,
            "--mode" => mode = value()?.clone(),
            "--frames" => match value()?.as_str() {
                "base64" => options.binary = false,
                "binary" => options.binary = true,
                other => return Err(format!("unknown frames {other:?}: use base64 or binary")),
            },
            "--session" => options.session = true,
            "--sources" => {
                options.sources = u8::try_from(number(value()?)?)
                    .ok()
                    .filter(|n| (1..=254).contains(n))
                    .ok_or("--sources takes 1 to 254")?;
            }
            "--server-pid" => options.server_pid = Some(number(value()?)? as u32),
            "--json" => options.json = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n\n{USAGE}")),
        }
    }
    options.mode = match mode.as_str() {
        "closed" => Mode::Closed,
        "paced" => Mode::Paced(interval),
        "idle" => Mode::Idle,
        other => return Err(format!("unknown mode {other:?}: use closed, paced or idle")),
    };
    options.session |= options.binary;
    if options.connections == 0 || options.chunk_bytes == 0 || interval.is_zero() {
        return Err("--connections, --chunk-bytes and --interval-ms must be at least 1".into());
    }
    let rest = url
        .strip_prefix("ws://")
        .ok_or("--url must be ws://host:port/path (this generator does not speak TLS)")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    options.target = authority
        .parse()
        .map_err(|_| format!("--url needs a numeric address and port, not {authority:?}"))?;
    options.host = authority.to_owned();
    options.path = format!("/{path}");
    Ok(options)
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    acks: u64,
    bytes: u64,
    errors: u64,
    /// Why the connection failed, if it did.
    failed: Option<String>,
    latencies_us: Vec<u32>,
}

/// The frames every connection sends, built once.
struct Script {
    start: Option<Vec<u8>>,
    chunk: Vec<u8>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) if message == USAGE => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "{message}");
            return ExitCode::from(64);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(options))
}

async fn run(options: Options) -> ExitCode {
    let audio: Vec<u8> = (0..options.chunk_bytes).map(|i| (i % 251) as u8).collect();
    let script = Rc::new(Script {
        start: options.session.then(|| {
            let start = json!({"type": "session_start", "format": {"encoding": "pcm_s16le", "sampleRate": 16000}});
            masked(1, start.to_string().as_bytes())
        }),
        chunk: if options.binary {
            masked(2, &audio)
        } else {
            let data = base64::engine::general_purpose::STANDARD.encode(&audio);
            // As the original front end sent it: type, data, timestamp.
            let message = json!({"type": "audio", "data": data, "timestamp": "2026-01-01T00:00:00.000Z"});
            masked(1, message.to_string().as_bytes())
        },
    });
    let rss_before = options.server_pid.map(rss_kib);
    let started = Instant::now();
    let sending_from = started + options.ramp_up;
    let end = sending_from + options.duration;
    let options = Rc::new(options);
    let local = tokio::task::LocalSet::new();
    let (tallies, rss_held) = local
        .run_until(async {
            let tasks: Vec<_> = (0..options.connections)
                .map(|i| {
                    let delay = options
                        .ramp_up
                        .mul_f64(i as f64 / options.connections as f64);
                    let (options, script) = (Rc::clone(&options), Rc::clone(&script));
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(delay).await;
                        connection(&options, &script, i, sending_from..end).await
                    })
                })
                .collect();
            // In idle mode, the server's memory is read once every connection is open and
            // has had a moment to settle, halfway through the hold.
            let rss_held = match (options.mode, options.server_pid) {
                (Mode::Idle, Some(pid)) => {
                    tokio::time::sleep_until((sending_from + options.duration / 2).into()).await;
                    Some(rss_kib(pid))
                }
                _ => None,
            };
            let mut tallies = Vec::new();
            for task in tasks {
                tallies.push(task.await.unwrap_or_else(|_| Tally {
                    failed: Some("the connection task panicked".into()),
                    ..Tally::default()
                }));
            }
            (tallies, rss_held)
        })
        .await;
    let memory = rss_before.zip(rss_held);
    report(&options, tallies, memory)
}

/// One connection, from its handshake to the end of the run. Only what is sent within
/// `window` is counted: before it, during the ramp-up, the server is still filling up.
async fn connection(
    options: &Options,
    script: &Script,
    index: usize,
    window: std::ops::Range<Instant>,
) -> Tally {
    let end = window.end;
    let mut tally = Tally::default();
    let mut socket = match open(options, index).await {
        Ok(socket) => socket,
        Err(why) => {
            tally.failed = Some(why);
            return tally;
        }
    };
    if let Err(why) = socket.expect_reply("connection").await {
        tally.failed = Some(format!("no greeting: {why}"));
        return tally;
    }
    if let Some(start) = &script.start
        && let Err(why) = socket.ask(start, "session_started").await
    {
        tally.failed = Some(format!("session not started: {why}"));
        return tally;
    }
    let mut next_send = Instant::now();
    loop {
        match options.mode {
            Mode::Idle => {
                // Held until the end, answering the server's pings meanwhile.
                match tokio::time::timeout_at(end.into(), socket.read_reply()).await {
                    Err(_) => break,
                    Ok(Ok(_)) => continue,
                    Ok(Err(why)) => {
                        tally.failed = Some(format!("closed while idle: {why}"));
                        return tally;
                    }
                }
            }
            Mode::Paced(interval) => {
                // Idle until the next send or the end of the run, whichever is first: a long
                // interval must not outlast the run.
                tokio::time::sleep_until(next_send.min(end).into()).await;
                if next_send >= end {
                    break;
                }
                next_send += interval;
            }
            Mode::Closed if Instant::now() >= end => break,
            Mode::Closed => {}
        }
        let sent = Instant::now();
        match socket.ask(&script.chunk, "audio_received").await {
            Ok(true) if sent < window.start => {}
            Ok(true) => {
                tally.acks += 1;
                tally.bytes += options.chunk_bytes as u64;
                let micros = sent.elapsed().as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Ok(false) => tally.errors += 1,
            Err(why) => {
                tally.failed = Some(why);
                return tally;
            }
        }
    }
    socket.close().await;
    tally
}

/// Connects from source address `127.0.0.(1 + index % sources)` and completes the handshake.
async fn open(options: &Options, index: usize) -> Result<Socket, String> {
    let tcp = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if options.target.ip().is_loopback() && options.sources > 1 {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (index % usize::from(options.sources)) as u8);
        tcp.bind(SocketAddrV4::new(source, 0).into())
            .map_err(|e| format!("bind {source}: {e}"))?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(10), tcp.connect(options.target))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut socket = Socket {
        stream,
        input: Vec::with_capacity(512),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        options.path, options.host
    );
    socket
        .stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let end = loop {
        if let Some(end) = socket.input.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        socket.fill().await?;
    };
    if !socket.input.starts_with(b"HTTP/1.1 101") {
        let line = socket
            .input
            .split(|b| *b == b'\r')
            .next()
            .unwrap_or_default();
        return Err(format!(
            "upgrade refused: {}",
            String::from_utf8_lossy(line)
        ));
    }
    socket.input.drain(..end);
    Ok(socket)
}

/// A client WebSocket, just enough of one.
struct Socket {
    stream: TcpStream,
    input: Vec<u8>,
}

impl Socket {
    /// Sends `frame` and reads until a reply; whether the reply's type is `expected`.
    async fn ask(&mut self, frame: &[u8], expected: &str) -> Result<bool, String> {
        self.stream
            .write_all(frame)
            .await
            .map_err(|e| format!("send: {e}"))?;
        Ok(self.read_reply().await? == expected)
    }

    /// Reads until the reply of type `expected`.
    async fn expect_reply(&mut self, expected: &str) -> Result<(), String> {
        match self.read_reply().await? {
            kind if kind == expected => Ok(()),
            kind => Err(format!("expected {expected}, got {kind}")),
        }
    }

    /// Reads frames until a text message; returns its `type`. Pings are answered.
    async fn read_reply(&mut self) -> Result<String, String> {
        loop {
            let (opcode, header, len) = loop {
                if let Some(parsed) = head(&self.input) {
                    break parsed;
                }
                self.fill().await?;
            };
            while self.input.len() < header + len {
                self.fill().await?;
            }
            let payload = &self.input[header..header + len];
            let reply = match opcode {
                1 => Some(message_type(payload)),
                8 => {
                    let code = payload
                        .get(..2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .unwrap_or(1005);
                    return Err(format!("the server closed with {code}"));
                }
                9 => {
                    let pong = masked(10, payload);
                    self.stream
                        .write_all(&pong)
                        .await
                        .map_err(|e| format!("pong: {e}"))?;
                    None
                }
                _ => None,
            };
            self.input.drain(..header + len);
            if let Some(reply) = reply {
                return Ok(reply);
            }
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        self.input.reserve(4096);
        match self.stream.read_buf(&mut self.input).await {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    async fn close(&mut self) {
        let _ = self
            .stream
            .write_all(&masked(8, &1000_u16.to_be_bytes()))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.read_reply().await.is_ok() {}
        })
        .await;
    }
}

/// The `type` of a server message, found without parsing the JSON: every server message
/// starts with it.
fn message_type(payload: &[u8]) -> String {
    let kind = payload
        .strip_prefix(br#"{"type":""#)
        .and_then(|rest| rest.split(|b| *b == b'"').next())
        .unwrap_or(b"?");
    String::from_utf8_lossy(kind).into_owned()
}

/// A process's resident memory, in KiB (0 if it cannot be read).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn report(options: &Options, tallies: Vec<Tally>, memory: Option<(u64, u64)>) -> ExitCode {
    let mut latencies: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[index]) / 1_000.0
    };
    let acks: u64 = tallies.iter().map(|t| t.acks).sum();
    let bytes: u64 = tallies.iter().map(|t| t.bytes).sum();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    let failures: Vec<&str> = tallies.iter().filter_map(|t| t.failed.as_deref()).collect();
    let secs = options.duration.as_secs_f64();
    let per_connection = memory
        .map(|(before, held)| (held.saturating_sub(before)) as f64 / options.connections as f64);
    let mode = match options.mode {
        Mode::Closed => "closed",
        Mode::Paced(_) => "paced",
        Mode::Idle => "idle",
    };
    let summary = json!({
        "mode": mode,
        "frames": if options.binary { "binary" } else { "base64" },
        "connections": options.connections,
        "chunkBytes": options.chunk_bytes,
        "seconds": secs,
        "messages": acks,
        "messagesPerSecond": acks as f64 / secs,
        "audioMegabytesPerSecond": bytes as f64 / secs / 1e6,
        "latencyMs": {"p50": percentile(0.50), "p99": percentile(0.99), "p999": percentile(0.999), "max": percentile(1.0)},
        "errors": errors,
        "failedConnections": failures.len(),
        "firstFailure": failures.first(),
        "serverRssKiB": memory.map(|(before, held)| json!({"before": before, "held": held})),
        "serverRssKiBPerConnection": per_connection,
    });
    let mut out = std::io::stdout();
    if options.json {
        let _ = writeln!(out, "{summary}");
    } else {
        let _ = writeln!(
            out,
            "{} connections, {mode} mode, {} frames of {} bytes, {:.0} s\n  messages/s      {:.0}\n  audio MB/s      {:.2}\n  ack latency ms  p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n  errors {}  failed connections {}",
            options.connections,
            summary["frames"].as_str().unwrap_or_default(),
            options.chunk_bytes,
            secs,
            acks as f64 / secs,
            bytes as f64 / secs / 1e6,
            percentile(0.50),
            percentile(0.99),
            percentile(0.999),
            percentile(1.0),
            errors,
            failures.len(),
        );
        if let Some(first) = failures.first() {
            let _ = writeln!(out, "  first failure: {first}");
        }
        if let Some(kib) = per_connection {
            let _ = writeln!(out, "  server memory   {kib:.2} KiB per connection");
        }
    }
    if !failures.is_empty() || errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
