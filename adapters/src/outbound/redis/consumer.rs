//! Reading sessions back from their streams: what a downstream worker does. One session by
//! id ([`SessionReader`]), or every session as the index announces them, shared among the
//! workers of a consumer group ([`GroupConsumer`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::Value;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};

use super::RedisPool;

/// Entries read per round trip.
const BATCH: usize = 512;

/// Longest single blocking read: between two, a group worker renews its claim on the session.
const BLOCK: Duration = Duration::from_secs(5);

/// A session announced to a worker that has not renewed its claim for this long is taken
/// over by another worker of the group: the first one died.
const RECLAIM_AFTER: Duration = Duration::from_secs(60);

/// A group worker's claim on the index entry of the session it reads, renewed as it reads.
struct Lease<'a> {
    index: &'a str,
    group: &'a str,
    consumer: &'a str,
    id: &'a str,
}

/// A session could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// Redis failed or went away.
    #[error("Redis failed while reading {what}")]
    Redis {
        /// What was being read.
        what: String,
        /// What the client reported.
        #[source]
        source: redis::RedisError,
    },
    /// The output could not be written.
    #[error("could not write {path}")]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The session's stream does not exist (never started, or expired).
    #[error("session {0} has no stream in Redis")]
    NoSuchSession(String),
    /// An entry is not what the service writes.
    #[error("entry {id} of {stream} is malformed: {reason}")]
    Malformed {
        /// The stream.
        stream: String,
        /// The entry.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// What was read back of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reassembled {
    /// The session.
    pub session: String,
    /// The format its start marker declared (`pcm_s16le/16000/1`, ...).
    pub format: String,
    /// Chunks written out, in `seq` order.
    pub chunks: u64,
    /// Bytes written out.
    pub bytes: u64,
    /// The first and last `seq`.
    pub first_seq: Option<u64>,
    /// The last `seq`.
    pub last_seq: Option<u64>,
    /// Times another replica took the session over.
    pub resumptions: u64,
    /// How it ended (`ended`, `expired`, ...); `None` if no end marker came before the wait
    /// ran out (a replica died and nobody resumed).
    pub ending: Option<String>,
}

/// Reads one session's stream from its start to its end marker.
#[derive(Debug, Clone)]
pub struct SessionReader {
    pool: RedisPool,
}

impl SessionReader {
    /// A reader over `pool`.
    pub fn new(pool: RedisPool) -> Self {
        Self { pool }
    }

    /// Writes session `session`'s audio to `out`, waiting up to `idle` for more entries
    /// whenever the stream has no end marker yet.
    ///
    /// # Errors
    /// [`ConsumeError`] when Redis fails, the output cannot be written, or an entry is not
    /// the service's.
    pub async fn read(
        &self,
        session: &str,
        out: &mut dyn Write,
        out_name: &Path,
        idle: Duration,
    ) -> Result<Reassembled, ConsumeError> {
        self.read_leased(session, out, out_name, idle, None).await
    }

    async fn read_leased(
        &self,
        session: &str,
        out: &mut dyn Write,
        out_name: &Path,
        idle: Duration,
        lease: Option<Lease<'_>>,
    ) -> Result<Reassembled, ConsumeError> {
        let stream = self.pool.key(format_args!("audio:{session}"));
        let mut connection = self.pool.get();
        let redis_error = |source| ConsumeError::Redis {
            what: stream.clone(),
            source,
        };
        let exists: bool = redis::cmd("EXISTS")
            .arg(&stream)
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        if !exists {
            return Err(ConsumeError::NoSuchSession(session.to_owned()));
        }
        let mut result = Reassembled {
            session: session.to_owned(),
            ..Reassembled::default()
        };
        let mut last_id = "0".to_owned();
        let options = StreamReadOptions::default()
            .count(BATCH)
            .block(BLOCK.min(idle).as_millis() as usize);
        let mut silent_since = std::time::Instant::now();
        loop {
            if let Some(lease) = &lease {
                // Claiming it again for this worker resets its idle time in the group.
                redis::cmd("XCLAIM")
                    .arg(lease.index)
                    .arg(lease.group)
                    .arg(lease.consumer)
                    .arg(0)
                    .arg(lease.id)
                    .arg("JUSTID")
                    .query_async::<()>(&mut connection)
                    .await
                    .map_err(redis_error)?;
            }
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg(&options)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&last_id)
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            let entries: Vec<StreamId> = reply
                .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
                .unwrap_or_default();
            if entries.is_empty() {
                if silent_since.elapsed() >= idle {
                    return Ok(result);
                }
                continue;
            }
            silent_since = std::time::Instant::now();
            for entry in entries {
                last_id = entry.id.clone();
                let malformed = |reason: &str| ConsumeError::Malformed {
                    stream: stream.clone(),
                    id: entry.id.clone(),
                    reason: reason.to_owned(),
                };
                match text(&entry, "type").as_deref() {
                    Some("start") => result.format = text(&entry, "format").unwrap_or_default(),
                    Some("chunk") => {
                        let seq: u64 = text(&entry, "seq")
                            .and_then(|seq| seq.parse().ok())
                            .ok_or_else(|| malformed("no seq"))?;
                        // The sink appends each seq once and in order; a reader still refuses
                        // to write one twice, whatever wrote the stream.
                        if result.last_seq.is_some_and(|last| seq <= last) {
                            continue;
                        }
                        let data = bytes(&entry, "data").ok_or_else(|| malformed("no data"))?;
                        out.write_all(data).map_err(|source| ConsumeError::Output {
                            path: out_name.to_owned(),
                            source,
                        })?;
                        result.first_seq.get_or_insert(seq);
                        result.last_seq = Some(seq);
                        result.chunks += 1;
                        result.bytes += data.len() as u64;
                    }
                    Some("resumed") => result.resumptions += 1,
                    Some("end") => {
                        result.ending = text(&entry, "ending");
                        return Ok(result);
                    }
                    _ => return Err(malformed("unknown type")),
                }
            }
        }
    }
}

/// One worker of a consumer group on the index stream: each session the index announces is
/// handed to exactly one worker of the group, which writes it to a file.
#[derive(Debug, Clone)]
pub struct GroupConsumer {
    pool: RedisPool,
    group: String,
    consumer: String,
}

impl GroupConsumer {
    /// Worker `consumer` of `group`; the group is created (from the start of the index)
    /// if it does not exist.
    ///
    /// # Errors
    /// [`ConsumeError::Redis`] when the group cannot be created.
    pub async fn join(pool: RedisPool, group: &str, consumer: &str) -> Result<Self, ConsumeError> {
        let index = pool.key(format_args!("sessions"));
        let created: Result<(), _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&index)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut pool.get())
            .await;
        match created {
            Ok(()) => {}
            Err(error) if error.code() == Some("BUSYGROUP") => {}
            Err(source) => {
                return Err(ConsumeError::Redis {
                    what: index,
                    source,
                });
            }
        }
        Ok(Self {
            pool,
            group: group.to_owned(),
            consumer: consumer.to_owned(),
        })
    }

    /// Takes the next session the index announces (waiting up to `wait`), writes it to
    /// `dir/<session>.<ext>` and acknowledges it in the group; `None` if none came.
    ///
    /// # Errors
    /// [`ConsumeError`] as [`SessionReader::read`].
    pub async fn next_session(
        &self,
        dir: &Path,
        wait: Duration,
        idle: Duration,
    ) -> Result<Option<(PathBuf, Reassembled)>, ConsumeError> {
        let index = self.pool.key(format_args!("sessions"));
        let mut connection = self.pool.get();
        let options = StreamReadOptions::default()
            .group(&self.group, &self.consumer)
            .count(1)
            .block(wait.as_millis() as usize);
        let redis_error = |source| ConsumeError::Redis {
            what: index.clone(),
            source,
        };
        loop {
            // First a session a dead worker of the group left half read, then a new one.
            let orphan: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&index)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(RECLAIM_AFTER.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            let entry = match orphan.claimed.into_iter().next() {
                Some(entry) => Some(entry),
                None => {
                    let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                        .arg(&options)
                        .arg("STREAMS")
                        .arg(&index)
                        .arg(">")
                        .query_async(&mut connection)
                        .await
                        .map_err(redis_error)?;
                    reply.and_then(|reply| reply.keys.into_iter().flat_map(|key| key.ids).next())
                }
            };
            let Some(entry) = entry else {
                return Ok(None);
            };
            let found = match (text(&entry, "type").as_deref(), text(&entry, "session")) {
                (Some("start"), Some(session)) => {
                    let extension = extension(&text(&entry, "format").unwrap_or_default());
                    let path = dir.join(format!("{session}.{extension}"));
                    let output = |source| ConsumeError::Output {
                        path: path.clone(),
                        source,
                    };
                    let mut file = std::fs::File::create(&path).map_err(output)?;
                    let lease = Lease {
                        index: &index,
                        group: &self.group,
                        consumer: &self.consumer,
                        id: &entry.id,
                    };
                    let reassembled = SessionReader::new(self.pool.clone())
                        .read_leased(&session, &mut file, &path, idle, Some(lease))
                        .await?;
                    file.sync_all().map_err(output)?;
                    Some((path, reassembled))
                }
                // End markers and anything else: nothing to do but acknowledge.
                _ => None,
            };
            redis::cmd("XACK")
                .arg(&index)
                .arg(&self.group)
                .arg(&entry.id)
                .query_async::<()>(&mut connection)
                .await
                .map_err(|source| ConsumeError::Redis {
                    what: index.clone(),
                    source,
                })?;
            if let Some(found) = found {
                return Ok(Some(found));
            }
        }
    }
}

/// The file extension for a stream's format: the raw bytes as the client sent them.
fn extension(format: &str) -> &'static str {
    match format.split('/').next().unwrap_or_default() {
        "pcm_s16le" => "pcm",
        "mulaw" => "ulaw",
        "alaw" => "alaw",
        "opus" if format.starts_with("opus/ogg") => "ogg",
        "opus" => "webm",
        _ => "bin",
    }
}

fn bytes<'a>(entry: &'a StreamId, field: &str) -> Option<&'a [u8]> {
    match entry.map.get(field)? {
        Value::BulkString(bytes) => Some(bytes),
        _ => None,
    }
}

fn text(entry: &StreamId, field: &str) -> Option<String> {
    bytes(entry, field).map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_what_they_hold() {
        assert_eq!(extension("pcm_s16le/16000/1"), "pcm");
        assert_eq!(extension("opus/webm/48000/1"), "webm");
        assert_eq!(extension("opus/ogg/48000/1"), "ogg");
        assert_eq!(extension("mulaw/8000/1"), "ulaw");
        assert_eq!(extension("undeclared"), "bin");
    }
}
