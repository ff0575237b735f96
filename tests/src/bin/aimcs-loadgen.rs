//! `aimcs-loadgen`: drives an AIMCS backend (or the original) over its WebSocket protocol and
//! reports throughput and acknowledgement latency.
//!
//! Modes:
//! - `closed`: each connection sends a chunk, waits for its acknowledgement, sends the next;
//!   throughput is then what the server can take.
//! - `paced`: each connection sends one chunk every `--interval-ms`, like a live microphone;
//!   latency is then what a caller experiences.
//!
//! Runs on one thread so that it can be pinned to one core beside the server.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const USAGE: &str = "\
aimcs-loadgen: load an AIMCS backend over /ws/audio and report throughput and ack latency.

Usage: aimcs-loadgen [options]
  --url URL             WebSocket URL (default ws://127.0.0.1:3000/ws/audio)
  --connections N       concurrent connections (default 16)
  --duration SECS       how long to send, after ramp-up (default 10)
  --ramp-up SECS        spread connection starts over this long (default 0)
  --mode closed|paced   send after each ack, or one chunk per interval (default closed)
  --interval-ms MS      paced mode: time between chunks (default 100)
  --chunk-bytes N       audio bytes per chunk (default 3200: 100 ms of 16 kHz PCM)
  --frames base64|binary  base64 audio messages (the original protocol) or binary frames
                        after session_start (default base64)
  --session             send session_start first (implied by --frames binary)
  --json                print one JSON object instead of the table";

#[derive(Debug, Clone)]
struct Options {
    url: String,
    connections: usize,
    duration: Duration,
    ramp_up: Duration,
    paced: Option<Duration>,
    chunk_bytes: usize,
    binary: bool,
    session: bool,
    json: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        url: "ws://127.0.0.1:3000/ws/audio".into(),
        connections: 16,
        duration: Duration::from_secs(10),
        ramp_up: Duration::ZERO,
        paced: None,
        chunk_bytes: 3_200,
        binary: false,
        session: false,
        json: false,
    };
    let mut interval = Duration::from_millis(100);
    let mut paced = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |text: &String| {
            text.parse::<u64>()
                .map_err(|_| format!("{arg} takes a whole number, not {text:?}"))
        };
        match arg.as_str() {
            "--url" => options.url = value()?.clone(),
            "--connections" => options.connections = number(value()?)? as usize,
            "--duration" => options.duration = Duration::from_secs(number(value()?)?),
            "--ramp-up" => options.ramp_up = Duration::from_secs(number(value()?)?),
            "--interval-ms" => interval = Duration::from_millis(number(value()?)?),
            "--chunk-bytes" => options.chunk_bytes = number(value()?)? as usize,
            "--mode" => match value()?.as_str() {
                "closed" => paced = false,
                "paced" => paced = true,
                other => return Err(format!("unknown mode {other:?}: use closed or paced")),
            },
            "--frames" => match value()?.as_str() {
                "base64" => options.binary = false,
                "binary" => options.binary = true,
                other => return Err(format!("unknown frames {other:?}: use base64 or binary")),
            },
            "--session" => options.session = true,
            "--json" => options.json = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n\n{USAGE}")),
        }
    }
    options.paced = paced.then_some(interval);
    options.session |= options.binary;
    if options.connections == 0 || options.chunk_bytes == 0 {
        return Err("--connections and --chunk-bytes must be at least 1".into());
    }
    Ok(options)
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    acks: u64,
    bytes: u64,
    errors: u64,
    failed: bool,
    latencies_us: Vec<u32>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
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
    let chunk: Vec<u8> = (0..options.chunk_bytes).map(|i| (i % 251) as u8).collect();
    let payload = if options.binary {
        Message::binary(chunk)
    } else {
        let data = base64::engine::general_purpose::STANDARD.encode(&chunk);
        Message::text(json!({"type": "audio", "data": data, "timestamp": "loadgen"}).to_string())
    };
    let started = Instant::now();
    let end = started + options.ramp_up + options.duration;
    // Connections are tasks on this one thread: spawned within the LocalSet that runs them.
    let local = tokio::task::LocalSet::new();
    let tallies = local
        .run_until(async {
            let tasks: Vec<_> = (0..options.connections)
                .map(|i| {
                    let delay = options
                        .ramp_up
                        .mul_f64(i as f64 / options.connections as f64);
                    let (options, payload) = (options.clone(), payload.clone());
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(delay).await;
                        connection(&options, payload, end).await
                    })
                })
                .collect();
            let mut tallies = Vec::new();
            for task in tasks {
                tallies.push(task.await.unwrap_or_else(|_| Tally {
                    failed: true,
                    ..Tally::default()
                }));
            }
            tallies
        })
        .await;
    report(&options, tallies, options.duration)
}

async fn connection(options: &Options, payload: Message, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(options.url.as_str()).await else {
        tally.failed = true;
        return tally;
    };
    if next_json(&mut socket).await.is_none() {
        tally.failed = true;
        return tally;
    }
    if options.session {
        let start = json!({"type": "session_start", "format": {"encoding": "pcm_s16le", "sampleRate": 16000}});
        if socket.send(Message::text(start.to_string())).await.is_err()
            || next_json(&mut socket).await.is_none()
        {
            tally.failed = true;
            return tally;
        }
    }
    let mut next_send = Instant::now();
    while Instant::now() < end {
        if let Some(interval) = options.paced {
            // The connection stays open, idle, until its next send or the end of the run,
            // whichever is first: a long interval must not outlast the run.
            tokio::time::sleep_until(next_send.min(end).into()).await;
            if next_send >= end {
                break;
            }
            next_send += interval;
        }
        let sent = Instant::now();
        if socket.send(payload.clone()).await.is_err() {
            tally.failed = true;
            break;
        }
        match next_json(&mut socket).await {
            Some(reply) if reply["type"] == "audio_received" => {
                tally.acks += 1;
                tally.bytes += options.chunk_bytes as u64;
                let micros = sent.elapsed().as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Some(_) => tally.errors += 1,
            None => {
                tally.failed = true;
                break;
            }
        }
    }
    let _ = socket.close(None).await;
    tally
}

async fn next_json<S>(socket: &mut S) -> Option<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match socket.next().await? {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn report(options: &Options, tallies: Vec<Tally>, duration: Duration) -> ExitCode {
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
    let failed = tallies.iter().filter(|t| t.failed).count();
    let secs = duration.as_secs_f64();
    let summary = json!({
        "mode": if options.paced.is_some() { "paced" } else { "closed" },
        "frames": if options.binary { "binary" } else { "base64" },
        "connections": options.connections,
        "chunkBytes": options.chunk_bytes,
        "seconds": secs,
        "messages": acks,
        "messagesPerSecond": acks as f64 / secs,
        "audioMegabytesPerSecond": bytes as f64 / secs / 1e6,
        "latencyMs": {"p50": percentile(0.50), "p99": percentile(0.99), "p999": percentile(0.999), "max": percentile(1.0)},
        "errors": errors,
        "failedConnections": failed,
    });
    let mut out = std::io::stdout();
    if options.json {
        let _ = writeln!(out, "{summary}");
    } else {
        let _ = writeln!(
            out,
            "{} connections, {} mode, {} frames of {} bytes, {:.0} s\n  messages/s      {:.0}\n  audio MB/s      {:.2}\n  ack latency ms  p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n  errors {}  failed connections {}",
            options.connections,
            summary["mode"].as_str().unwrap_or_default(),
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
            failed
        );
    }
    if failed > 0 || errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
