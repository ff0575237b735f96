//! `redis-consume`: the example downstream worker. It reads sessions back from the Redis
//! streams the `redis` audio sink writes and puts each session's audio in a file, byte for
//! byte as the client sent it; one JSON line per session says what was read.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use aimcs_adapters::outbound::RedisPool;
use aimcs_adapters::outbound::redis::{GroupConsumer, Reassembled, SessionReader};

use crate::cli::ConsumeTarget;
use crate::settings::Settings;

/// How long a session's stream may stay silent before the worker gives up on its end
/// marker (its replica died and nobody resumed it): longer than any resume grace.
const IDLE: Duration = Duration::from_secs(120);

/// How long a group worker waits for the next session before asking again.
const POLL: Duration = Duration::from_secs(5);

/// Runs `redis-consume`.
pub async fn run(settings: &Settings, target: ConsumeTarget) -> ExitCode {
    let idle = IDLE.max(settings.sessions.resume_grace_secs.duration() * 2);
    let mut redis = settings.redis_settings();
    // A worker's reads block up to `idle` (or POLL) by design; only longer is a failure.
    redis.response_timeout = idle.max(POLL) + Duration::from_secs(10);
    let pool = match RedisPool::connect(&redis).await {
        Ok(pool) => pool,
        Err(error) => return fail(&error),
    };
    match target {
        ConsumeTarget::Session { session, out } => {
            let mut file = match std::fs::File::create(&out) {
                Ok(file) => file,
                Err(error) => {
                    return fail_with(&format!("cannot create {}: {error}", out.display()));
                }
            };
            let read = SessionReader::new(pool)
                .read(&session, &mut file, &out, idle)
                .await;
            match read.and_then(|read| {
                file.sync_all().map(|()| read).map_err(|source| {
                    aimcs_adapters::outbound::redis::ConsumeError::Output {
                        path: out.clone(),
                        source,
                    }
                })
            }) {
                Ok(read) => report(&out.display().to_string(), &read),
                Err(error) => fail(&error),
            }
        }
        ConsumeTarget::Group {
            group,
            consumer,
            dir,
            max_sessions,
        } => {
            if let Err(error) = std::fs::create_dir_all(&dir) {
                return fail_with(&format!("cannot create {}: {error}", dir.display()));
            }
            let worker = match GroupConsumer::join(pool, &group, &consumer).await {
                Ok(worker) => worker,
                Err(error) => return fail(&error),
            };
            let mut done = 0;
            while max_sessions.is_none_or(|max| done < max) {
                match worker.next_session(&dir, POLL, idle).await {
                    Ok(Some((path, read))) => {
                        report(&path.display().to_string(), &read);
                        done += 1;
                    }
                    Ok(None) => {}
                    Err(error) => return fail(&error),
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn report(file: &str, read: &Reassembled) -> ExitCode {
    let line = serde_json::json!({
        "session": read.session,
        "file": file,
        "format": read.format,
        "chunks": read.chunks,
        "bytes": read.bytes,
        "firstSeq": read.first_seq,
        "lastSeq": read.last_seq,
        "resumptions": read.resumptions,
        "ending": read.ending,
    });
    let _ = writeln!(std::io::stdout(), "{line}");
    ExitCode::SUCCESS
}

/// Prints the error with its causes, `error: cause: cause`, and fails.
fn fail(error: &dyn std::error::Error) -> ExitCode {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let next_message = next.to_string();
        // Some errors print their cause themselves; it is said once.
        if !message.ends_with(&next_message) {
            message.push_str(": ");
            message.push_str(&next_message);
        }
        cause = next.source();
    }
    fail_with(&message)
}

fn fail_with(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "aimcs-backend redis-consume: {message}");
    ExitCode::FAILURE
}
