//! The audio sink that appends every chunk to a Redis stream per session, for downstream
//! workers (speech-to-text, analytics) to consume while the caller still speaks.
//!
//! Each session's stream holds a `start` entry, its `chunk` entries in `seq` order (each
//! exactly once), `resumed` entries where another replica took over, and an `end` entry. The
//! index stream announces every `start` and `end`, so that a consumer group can hand each
//! session to one worker. A chunk is acknowledged to the client only after Redis has run the
//! script that appended it; a chunk resent after a lost answer is recognised by its `seq` and
//! not appended twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aimcs_domain::ports::{AudioSink, SinkError};
use aimcs_domain::{
    AudioChunk, AudioTotals, RecordingEnd, RecordingId, RecordingStart, SeqGap, SessionId,
    StoredProgress,
};
use async_trait::async_trait;
use redis::Script;

use super::RedisPool;
use super::snapshot::format_name;
use crate::outbound::file_audio_sink::manifest::ending_name;

/// Helpers every script starts with. Sequence numbers are compared as decimal text: Lua's
/// numbers are doubles, exact only up to 2^53, and a `seq` may be any u64. `xadd` caps the
/// stream at `maxlen` entries (approximately) unless it is 0.
const PRELUDE: &str = r"
local function seq_le(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end
local function renew(retention, ...)
  if tonumber(retention) > 0 then
    for _, key in ipairs({...}) do redis.call('PEXPIRE', key, retention) end
  end
end
local function xadd(key, maxlen, ...)
  if tonumber(maxlen) > 0 then
    return redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', ...)
  end
  return redis.call('XADD', key, '*', ...)
end
";

/// Opens a recording once: a retried open finds it, as long as nobody has continued it.
const OPEN: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if epoch == '1' then return 1 end
if epoch then return redis.error_reply('SUPERSEDED another replica continued the recording') end
redis.call('HSET', KEYS[2], 'epoch', 1, 'chunks', 0, 'bytes', 0, 'session', ARGV[1])
xadd(KEYS[1], 0, 'type', 'start', 'session', ARGV[1], 'recording', ARGV[2],
  'connection', ARGV[3], 'format', ARGV[4], 'started_at', ARGV[5], 'metadata', ARGV[6])
xadd(KEYS[3], ARGV[7], 'type', 'start', 'session', ARGV[1], 'recording', ARGV[2],
  'stream', KEYS[1], 'format', ARGV[4], 'started_at', ARGV[5])
renew(ARGV[8], KEYS[1], KEYS[2])
return 1
";

/// Appends one chunk, if this writer still holds the recording, the recording has not ended,
/// Redis still holds everything this writer saw stored (`ARGV[8]`, its last `seq`), and the
/// chunk is new. Skipped numbers are kept as gaps (exactly while below 10^15), so that a
/// replica that continues the recording refuses them as late. Three commands per chunk
/// (read, append, update); the expiry is renewed every 64th chunk.
const WRITE: &str = r"
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'last_seq', 'chunks', 'bytes', 'first_seq',
  'ended', 'gaps')
if not meta[1] then return redis.error_reply('NOSTREAM the recording is not in Redis') end
if meta[6] then return redis.error_reply('ENDED the recording was finished') end
if meta[1] ~= ARGV[1] then return redis.error_reply('SUPERSEDED another replica continued the recording') end
if ARGV[8] ~= '' and not (meta[2] and seq_le(ARGV[8], meta[2])) then
  return redis.error_reply('ROLLBACK Redis holds less of the recording than it acknowledged')
end
if meta[2] and seq_le(ARGV[2], meta[2]) then return 0 end
xadd(KEYS[1], ARGV[6], 'type', 'chunk', 'seq', ARGV[2], 'format', ARGV[3],
  'received_at', ARGV[4], 'data', ARGV[5])
local chunks = tonumber(meta[3] or '0') + 1
redis.call('HSET', KEYS[2], 'last_seq', ARGV[2], 'chunks', chunks,
  'bytes', tonumber(meta[4] or '0') + string.len(ARGV[5]), 'first_seq', meta[5] or ARGV[2])
if meta[2] and #ARGV[2] <= 15 then
  local last, seq = tonumber(meta[2]), tonumber(ARGV[2])
  if seq > last + 1 then
    local gap = string.format('%.0f-%.0f', last + 1, seq - 1)
    redis.call('HSET', KEYS[2], 'gaps', meta[7] and (meta[7] .. ',' .. gap) or gap)
  end
end
if chunks % 64 == 1 then renew(ARGV[7], KEYS[1], KEYS[2]) end
return 1
";

/// Takes a recording over, unless it has ended: the epoch moves on, so the previous writer's
/// appends fail.
const CONTINUE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('NOSTREAM the recording is not in Redis') end
if redis.call('HEXISTS', KEYS[2], 'ended') == 1 then return redis.error_reply('ENDED the recording was finished') end
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
xadd(KEYS[1], 0, 'type', 'resumed', 'connection', ARGV[1], 'received_at', ARGV[2])
renew(ARGV[3], KEYS[1], KEYS[2])
local m = redis.call('HMGET', KEYS[2], 'first_seq', 'last_seq', 'chunks', 'bytes', 'gaps')
return {epoch, m[1] or '', m[2] or '', m[3] or '0', m[4] or '0', m[5] or ''}
";

/// Writes the end marker, once, if this writer still holds the recording.
const CLOSE: &str = r"
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'ended')
if not meta[1] then return redis.error_reply('NOSTREAM the recording is not in Redis') end
if meta[1] ~= ARGV[1] then return redis.error_reply('SUPERSEDED another replica continued the recording') end
if meta[2] then return 0 end
redis.call('HSET', KEYS[2], 'ended', ARGV[2])
xadd(KEYS[1], 0, 'type', 'end', 'ending', ARGV[2], 'chunks', ARGV[3],
  'bytes', ARGV[4], 'last_seq', ARGV[5], 'duplicates', ARGV[6], 'gaps', ARGV[7],
  'ended_at', ARGV[8])
xadd(KEYS[3], ARGV[10], 'type', 'end', 'session', ARGV[9], 'stream', KEYS[1],
  'ending', ARGV[2])
renew(ARGV[11], KEYS[1], KEYS[2])
return 1
";

/// How much the streams keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Entries a session's stream keeps (approximately, `MAXLEN ~`); 0 keeps them all.
    /// Trimming drops the oldest audio, so set it only when consumers keep up.
    pub max_len: u64,
    /// How long a stream is kept after its last entry; zero keeps it until deleted.
    pub retention: Duration,
    /// Entries the index stream keeps (approximately); 0 keeps them all.
    pub index_max_len: u64,
}

/// A recording this process writes to.
#[derive(Clone)]
struct Open {
    session: SessionId,
    stream: Arc<str>,
    meta: Arc<str>,
    format: Arc<str>,
    /// The recording's epoch when this process opened or continued it.
    epoch: u64,
    /// The last chunk Redis confirmed to this process: Redis holding less means it lost
    /// acknowledged audio.
    last_seq: Option<u64>,
}

/// Appends each session's audio to its own Redis stream.
pub struct RedisStreamAudioSink {
    pool: RedisPool,
    settings: StreamSettings,
    open: Mutex<HashMap<RecordingId, Open>>,
    scripts: Scripts,
}

struct Scripts {
    open: Script,
    write: Script,
    resume: Script,
    close: Script,
}

impl std::fmt::Debug for RedisStreamAudioSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamAudioSink")
            .field("redis", &self.pool.target())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisStreamAudioSink {
    /// A sink writing through `pool`.
    pub fn new(pool: RedisPool, settings: StreamSettings) -> Self {
        Self {
            pool,
            settings,
            open: Mutex::default(),
            scripts: Scripts {
                open: Script::new(&format!("{PRELUDE}{OPEN}")),
                write: Script::new(&format!("{PRELUDE}{WRITE}")),
                resume: Script::new(&format!("{PRELUDE}{CONTINUE}")),
                close: Script::new(&format!("{PRELUDE}{CLOSE}")),
            },
        }
    }

    /// The key of a session's stream, for consumers.
    pub fn stream_key(&self, session: SessionId) -> String {
        self.pool.key(format_args!("audio:{session}"))
    }

    /// The key of the index stream.
    pub fn index_key(&self) -> String {
        self.pool.key(format_args!("sessions"))
    }

    fn open_recordings(&self) -> MutexGuard<'_, HashMap<RecordingId, Open>> {
        // Each operation is one map access: a poisoned lock is still whole.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lookup(&self, recording: RecordingId) -> Result<Open, SinkError> {
        self.open_recordings()
            .get(&recording)
            .cloned()
            .ok_or(SinkError::UnknownRecording(recording))
    }

    fn entry(&self, start: &RecordingStart, epoch: u64) -> Open {
        let stream = self.stream_key(start.session);
        Open {
            session: start.session,
            meta: format!("{stream}:meta").into(),
            stream: stream.into(),
            format: format_name(start.format).into(),
            epoch,
            last_seq: None,
        }
    }

    fn retention_ms(&self) -> u64 {
        self.settings.retention.as_millis() as u64
    }
}

/// `from-to,from-to` as the scripts keep gaps; anything unreadable is left out.
fn parse_gaps(text: &str) -> Vec<SeqGap> {
    text.split(',')
        .filter_map(|gap| {
            let (from, to) = gap.split_once('-')?;
            Some(SeqGap {
                from: from.parse().ok()?,
                to: to.parse().ok()?,
            })
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// A script's failure as the sink's error: the codes the scripts raise on purpose say what
/// happened; anything else is Redis being unavailable.
fn sink_error(recording: RecordingId, error: redis::RedisError) -> SinkError {
    match error.code() {
        Some("SUPERSEDED") => SinkError::Superseded(recording),
        Some("ENDED") => SinkError::Finished(recording),
        Some("NOSTREAM") => SinkError::Unavailable(
            format!(
                "the stream of recording {recording} is no longer in Redis (expired, evicted, or Redis restarted without persistence)"
            )
            .into(),
        ),
        Some("ROLLBACK") => SinkError::Unavailable(
            format!(
                "Redis holds less of recording {recording} than it acknowledged: it lost data (a restart without persistence, a failover to a replica behind, or eviction; use appendonly and maxmemory-policy noeviction)"
            )
            .into(),
        ),
        _ => SinkError::Unavailable(Box::new(error)),
    }
}

#[async_trait]
impl AudioSink for RedisStreamAudioSink {
    async fn open(&self, start: RecordingStart) -> Result<(), SinkError> {
        let open = self.entry(&start, 1);
        let metadata = start
            .metadata
            .as_ref()
            .map_or("", |metadata| metadata.as_wire());
        let epoch: Result<u64, _> = self
            .scripts
            .open
            .key(&*open.stream)
            .key(&*open.meta)
            .key(self.index_key())
            .arg(start.session.to_string())
            .arg(start.recording.to_string())
            .arg(start.connection.to_string())
            .arg(&*open.format)
            .arg(start.started_at.unix_millis())
            .arg(metadata)
            .arg(self.settings.index_max_len)
            .arg(self.retention_ms())
            .invoke_async(&mut self.pool.get())
            .await
            .map_err(|error| sink_error(start.recording, error));
        let epoch = match epoch {
            Ok(epoch) => epoch,
            Err(error) => {
                // The script may have run with only its answer lost: a start announced on
                // the index with no end would keep a worker waiting, so end it, if it is there.
                self.open_recordings().insert(start.recording, open);
                let _ = self.close(start.abandoned()).await;
                self.open_recordings().remove(&start.recording);
                return Err(error);
            }
        };
        self.open_recordings()
            .insert(start.recording, Open { epoch, ..open });
        Ok(())
    }

    async fn write(
        &self,
        recording: RecordingId,
        seq: u64,
        chunk: AudioChunk,
    ) -> Result<(), SinkError> {
        let open = self.lookup(recording)?;
        let result: Result<i64, _> = self
            .scripts
            .write
            .key(&*open.stream)
            .key(&*open.meta)
            .arg(open.epoch)
            .arg(seq.to_string())
            .arg(&*open.format)
            .arg(now_ms())
            .arg(chunk.as_bytes())
            .arg(self.settings.max_len)
            .arg(self.retention_ms())
            .arg(
                open.last_seq
                    .map_or_else(String::new, |seq| seq.to_string()),
            )
            .invoke_async(&mut self.pool.get())
            .await;
        match result {
            Ok(_) => {
                if let Some(open) = self.open_recordings().get_mut(&recording) {
                    open.last_seq = open.last_seq.max(Some(seq));
                }
                Ok(())
            }
            Err(error) => {
                let error = sink_error(recording, error);
                if matches!(error, SinkError::Superseded(_) | SinkError::Finished(_)) {
                    self.open_recordings().remove(&recording);
                }
                Err(error)
            }
        }
    }

    async fn commit(&self, recording: RecordingId) -> Result<(), SinkError> {
        // Every acknowledged chunk is already in Redis; how durable that is, is Redis's
        // persistence setting (appendonly, appendfsync).
        self.lookup(recording).map(drop)
    }

    async fn close(&self, end: RecordingEnd) -> Result<(), SinkError> {
        let open = self.lookup(end.recording)?;
        let gaps = end
            .gaps
            .iter()
            .map(|gap| format!("{}-{}", gap.from, gap.to))
            .collect::<Vec<_>>()
            .join(",");
        let AudioTotals { bytes, chunks } = end.totals;
        let result: Result<i64, _> = self
            .scripts
            .close
            .key(&*open.stream)
            .key(&*open.meta)
            .key(self.index_key())
            .arg(open.epoch)
            .arg(ending_name(end.ending))
            .arg(chunks)
            .arg(bytes)
            .arg(end.last_seq.map_or_else(String::new, |seq| seq.to_string()))
            .arg(end.duplicates)
            .arg(gaps)
            .arg(end.ended_at.unix_millis())
            .arg(open.session.to_string())
            .arg(self.settings.index_max_len)
            .arg(self.retention_ms())
            .invoke_async(&mut self.pool.get())
            .await;
        match result.map_err(|error| sink_error(end.recording, error)) {
            // Kept open while Redis is away, so that a second session_end can finish it.
            Err(error @ SinkError::Unavailable(_)) => Err(error),
            other => {
                self.open_recordings().remove(&end.recording);
                other.map(drop)
            }
        }
    }

    async fn continue_recording(&self, start: RecordingStart) -> Result<StoredProgress, SinkError> {
        let open = self.entry(&start, 0);
        let (epoch, first, last, chunks, bytes, gaps): (u64, String, String, u64, u64, String) =
            self.scripts
                .resume
                .key(&*open.stream)
                .key(&*open.meta)
                .arg(start.connection.to_string())
                .arg(now_ms())
                .arg(self.retention_ms())
                .invoke_async(&mut self.pool.get())
                .await
                .map_err(|error| sink_error(start.recording, error))?;
        let last_seq = last.parse().ok();
        self.open_recordings().insert(
            start.recording,
            Open {
                epoch,
                last_seq,
                ..open
            },
        );
        Ok(StoredProgress {
            first_seq: first.parse().ok(),
            last_seq,
            totals: AudioTotals { bytes, chunks },
            gaps: parse_gaps(&gaps),
        })
    }

    fn can_continue_recordings(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.pool
            .ping()
            .await
            .map_err(|error| SinkError::Unavailable(Box::new(error)))
    }
}
