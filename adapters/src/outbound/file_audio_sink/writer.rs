//! The thread that writes chunks into recordings.
//!
//! A chunk handed to tokio's blocking pool costs a thread hand-off there and back, and on a
//! busy core that was most of what storing it cost: 38 µs of server CPU per chunk against
//! 9 µs with the null sink (`scripts/bench sinks`). This thread takes the chunks in the order
//! they were queued and writes them one after another, so a wake-up is paid once per batch
//! rather than once per chunk, and the runtime still never waits on the disk.
//!
//! One thread for all recordings is enough for writes into the operating system's cache.
//! Forcing each chunk to disk (`fsync = "always"`) is not: those writes stay on the blocking
//! pool, where recordings flush side by side.

use std::sync::{Arc, Mutex, PoisonError, mpsc};

use aimcs_domain::AudioChunk;
use tokio::sync::oneshot;

use super::{FileSinkError, Recording};

/// Queues chunks for the writer thread; the thread ends once its queue is dropped.
#[derive(Debug)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// A chunk to append to a recording, and where to say how it went.
struct Job {
    recording: Arc<Mutex<Recording>>,
    chunk: AudioChunk,
    done: oneshot::Sender<Result<(), FileSinkError>>,
}

impl Writer {
    /// Starts the writer thread.
    ///
    /// # Errors
    /// The operating system's, when it cannot start a thread.
    pub(super) fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("aimcs-recorder".into())
            .spawn(move || {
                // `recv` waits only when the queue is empty: a batch queued while the thread
                // was writing is taken without waking anyone.
                while let Ok(job) = queue.recv() {
                    let written = {
                        let mut recording =
                            job.recording.lock().unwrap_or_else(PoisonError::into_inner);
                        recording.write(job.chunk.as_bytes()).map_err(|source| {
                            FileSinkError::new(
                                "cannot write recording",
                                &recording.audio_path(),
                                source,
                            )
                        })
                    };
                    // The writer of the chunk may have given up (its connection is gone).
                    let _ = job.done.send(written);
                }
            })?;
        Ok(Self { jobs })
    }

    /// Appends `chunk` to `recording`; returns once it is written.
    ///
    /// # Errors
    /// [`FileSinkError`] when the write failed, or when the writer thread is gone.
    pub(super) async fn write(
        &self,
        recording: Arc<Mutex<Recording>>,
        chunk: AudioChunk,
    ) -> Result<(), FileSinkError> {
        let (done, written) = oneshot::channel();
        let path = || {
            recording
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .audio_path()
        };
        let stopped = |path: &std::path::Path| {
            FileSinkError::new(
                "the recording writer has stopped; cannot write",
                path,
                std::io::Error::other("writer thread ended"),
            )
        };
        let job = Job {
            recording: Arc::clone(&recording),
            chunk,
            done,
        };
        if self.jobs.send(job).is_err() {
            return Err(stopped(&path()));
        }
        written.await.unwrap_or_else(|_| Err(stopped(&path())))
    }

    /// A writer whose thread is gone, for tests of what callers then see.
    #[cfg(test)]
    pub(super) fn stopped() -> Self {
        let (jobs, _) = mpsc::channel();
        Self { jobs }
    }
}
