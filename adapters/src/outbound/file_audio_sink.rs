//! Recordings on disk: one audio file and one JSON manifest per session, in one directory.
//!
//! - Raw samples (PCM, µ-law, A-law) go into a `.wav` with a correct header; Opus goes into
//!   the client's own `.webm` or `.ogg` stream, byte for byte. Audio whose format was never
//!   declared (the original front end's WebM fragments) is recognised from its first bytes.
//! - **Acknowledged means written**: `write` returns only after the chunk has been handed to
//!   the operating system, so a crash of this process loses nothing acknowledged. Power loss
//!   is a matter of `fsync`, set by [`FsyncPolicy`].
//! - A recording a crash left unfinished is repaired at the next start: its WAV header gets
//!   the real length, its manifest says `interrupted`.
//! - Retention removes the oldest finished recordings beyond an age or a total size, never
//!   one that is still being written.
//!
//! Chunks are written by one thread of the sink's own ([`writer`]); the rest of the file
//! operations (and every chunk, when each must be forced to disk) run on tokio's blocking
//! pool. Each recording has its own lock.

pub(crate) mod manifest;
mod wav;
mod writer;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use aimcs_domain::ports::{AudioSink, SinkError};
use aimcs_domain::{
    AudioChunk, AudioFormat, RecordingEnd, RecordingId, RecordingStart, SampleEncoding,
};
use async_trait::async_trait;

use self::manifest::{Manifest, State};

/// When recordings are forced from the operating system's cache to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Never: the operating system decides. A crash of the process loses nothing; power loss
    /// may lose the last seconds.
    Never,
    /// On `audio_commit` and when a recording ends: a client that commits knows its audio is
    /// on disk.
    Commit,
    /// After every chunk: nothing acknowledged is lost even to power loss, at the cost of a
    /// disk flush per chunk.
    Always,
}

/// Where and how recordings are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSinkSettings {
    /// The directory of recordings; created if missing.
    pub dir: PathBuf,
    /// When to force writes to disk.
    pub fsync: FsyncPolicy,
    /// Remove the oldest finished recordings while all of them together take more than this.
    pub max_total_bytes: Option<u64>,
    /// Remove finished recordings older than this.
    pub max_age: Option<Duration>,
}

/// What start-up found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartupReport {
    /// Recordings a crash left unfinished, now repaired.
    pub repaired: usize,
    /// What retention removed.
    pub retention: RetentionReport,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Recordings removed.
    pub removed: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
}

/// The file sink could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct FileSinkError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl FileSinkError {
    fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Writes recordings to files; see the module docs.
#[derive(Debug)]
pub struct FileAudioSink {
    settings: FileSinkSettings,
    // std Mutex: held only to look up or change the map, never across an `.await`.
    open: Mutex<HashMap<RecordingId, Arc<Mutex<Recording>>>>,
    writer: writer::Writer,
    /// An exclusive lock on the directory, held for the sink's life: start-up repairs every
    /// unfinished recording it finds, which would corrupt those of another live process.
    _lock: File,
}

impl FileAudioSink {
    /// Prepares the directory: creates it, repairs what a crash left unfinished, applies
    /// retention.
    ///
    /// # Errors
    /// [`FileSinkError`] when the directory cannot be created or read.
    pub fn open(settings: FileSinkSettings) -> Result<(Self, StartupReport), FileSinkError> {
        fs::create_dir_all(&settings.dir).map_err(|e| {
            FileSinkError::new("cannot create recordings directory", &settings.dir, e)
        })?;
        let lock = lock_directory(&settings.dir)?;
        let writer = writer::Writer::start().map_err(|e| {
            FileSinkError::new("cannot start the recording writer for", &settings.dir, e)
        })?;
        let sink = Self {
            settings,
            open: Mutex::default(),
            writer,
            _lock: lock,
        };
        let repaired = sink.repair_interrupted()?;
        let retention = sink.enforce_retention()?;
        Ok((
            sink,
            StartupReport {
                repaired,
                retention,
            },
        ))
    }

    /// The settings.
    pub fn settings(&self) -> &FileSinkSettings {
        &self.settings
    }

    fn open_recordings(&self) -> MutexGuard<'_, HashMap<RecordingId, Arc<Mutex<Recording>>>> {
        // Each operation on the map is a single insert, get or remove: a poisoned lock still
        // guards a whole map.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn recording(&self, id: RecordingId) -> Result<Arc<Mutex<Recording>>, SinkError> {
        self.open_recordings()
            .get(&id)
            .cloned()
            .ok_or(SinkError::UnknownRecording(id))
    }

    /// Removes finished recordings older than the maximum age, then the oldest ones while the
    /// directory holds more than the maximum size. Recordings being written are never removed
    /// (but their size counts).
    ///
    /// # Errors
    /// [`FileSinkError`] when the directory cannot be read.
    pub fn enforce_retention(&self) -> Result<RetentionReport, FileSinkError> {
        let (max_age, max_total) = (self.settings.max_age, self.settings.max_total_bytes);
        if max_age.is_none() && max_total.is_none() {
            return Ok(RetentionReport::default());
        }
        let open: Vec<String> = self
            .open_recordings()
            .keys()
            .map(ToString::to_string)
            .collect();
        let mut finished = Vec::new();
        let mut total = 0_u64;
        for entry in self.manifests()? {
            let Entry {
                manifest_path,
                manifest,
                modified,
            } = entry;
            let audio_path = manifest.file.as_ref().map(|f| self.settings.dir.join(f));
            let size = file_len(&manifest_path) + audio_path.as_deref().map_or(0, file_len);
            total += size;
            if manifest.state != State::Recording && !open.contains(&manifest.recording_id) {
                finished.push((modified, size, manifest_path, audio_path));
            }
        }
        finished.sort_by_key(|(modified, ..)| *modified);
        let now = SystemTime::now();
        let mut report = RetentionReport::default();
        for (modified, size, manifest_path, audio_path) in finished {
            let too_old =
                max_age.is_some_and(|age| now.duration_since(modified).unwrap_or_default() > age);
            let too_big = max_total.is_some_and(|max| total > max);
            if !too_old && !too_big {
                continue;
            }
            // The audio first: a manifest without its audio would describe nothing.
            if let Some(audio) = &audio_path {
                remove_if_present(audio)
                    .map_err(|e| FileSinkError::new("cannot remove recording", audio, e))?;
            }
            remove_if_present(&manifest_path)
                .map_err(|e| FileSinkError::new("cannot remove manifest", &manifest_path, e))?;
            total = total.saturating_sub(size);
            report.removed += 1;
            report.freed_bytes += size;
        }
        if report.removed > 0 {
            tracing::info!(
                removed = report.removed,
                freed_bytes = report.freed_bytes,
                "retention removed old recordings"
            );
        }
        Ok(report)
    }

    /// Finishes the recordings a crash left in state `recording`.
    fn repair_interrupted(&self) -> Result<usize, FileSinkError> {
        let mut repaired = 0;
        for Entry {
            manifest_path,
            mut manifest,
            modified,
        } in self.manifests()?
        {
            if manifest.state != State::Recording {
                continue;
            }
            let audio = manifest.file.as_ref().map(|f| self.settings.dir.join(f));
            let data_len = match &audio {
                Some(path) => repair_audio(path, &manifest)
                    .map_err(|e| FileSinkError::new("cannot repair recording", path, e))?,
                None => 0,
            };
            // The audio file was written last, so its modification time is when recording
            // stopped; what only the session knew (chunks, gaps, duplicates, last seq) is unknown.
            let stopped = audio
                .as_deref()
                .and_then(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
                .unwrap_or(modified);
            manifest.state = State::Interrupted;
            manifest.ending = Some("interrupted".to_owned());
            manifest.bytes = data_len;
            manifest.chunks = None;
            manifest.last_seq = None;
            manifest.gaps = None;
            manifest.duplicates = None;
            manifest.ended_at = Some(crate::wire::timestamp::to_iso(system_time_to_timestamp(
                stopped,
            )));
            manifest
                .write(&manifest_path, true)
                .map_err(|e| FileSinkError::new("cannot write manifest", &manifest_path, e))?;
            tracing::warn!(
                recording_id = manifest.recording_id,
                bytes = data_len,
                "repaired a recording a crash left unfinished"
            );
            repaired += 1;
        }
        // Manifests half-replaced by a crash: the complete one is still in place.
        if let Ok(entries) = fs::read_dir(&self.settings.dir) {
            for path in entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".json.tmp"))
            {
                let _ = fs::remove_file(path);
            }
        }
        Ok(repaired)
    }

    fn manifests(&self) -> Result<Vec<Entry>, FileSinkError> {
        let dir = &self.settings.dir;
        let entries = fs::read_dir(dir)
            .map_err(|e| FileSinkError::new("cannot read recordings directory", dir, e))?;
        let mut manifests = Vec::new();
        for path in entries.flatten().map(|entry| entry.path()) {
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            match (
                Manifest::read(&path),
                fs::metadata(&path).and_then(|m| m.modified()),
            ) {
                (Ok(manifest), Ok(modified)) => manifests.push(Entry {
                    manifest_path: path,
                    manifest,
                    modified,
                }),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(path = %path.display(), error = %error, "skipping unreadable manifest");
                }
            }
        }
        Ok(manifests)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        id: RecordingId,
        work: impl FnOnce(&mut Recording) -> io::Result<T> + Send + 'static,
    ) -> Result<T, SinkError> {
        let recording = self.recording(id)?;
        let outcome = tokio::task::spawn_blocking(move || {
            let mut recording = recording.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut recording).map_err(|source| {
                FileSinkError::new("cannot write recording", &recording.audio_path(), source)
            })
        })
        .await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(SinkError::Unavailable(Box::new(error))),
            Err(join) => Err(SinkError::Unavailable(Box::new(join))),
        }
    }
}

#[async_trait]
impl AudioSink for FileAudioSink {
    async fn open(&self, start: RecordingStart) -> Result<(), SinkError> {
        let (dir, fsync) = (self.settings.dir.clone(), self.settings.fsync);
        let id = start.recording;
        // Opening a recording that is open already is not an error: a caller retrying after a
        // partial failure (a fanout) must not be refused by the part that succeeded.
        if self.open_recordings().contains_key(&id) {
            return Ok(());
        }
        let created =
            tokio::task::spawn_blocking(move || Recording::create(&start, dir, fsync)).await;
        let recording = match created {
            Ok(Ok(recording)) => recording,
            Ok(Err(error)) => return Err(SinkError::Unavailable(Box::new(error))),
            Err(join) => return Err(SinkError::Unavailable(Box::new(join))),
        };
        self.open_recordings()
            .insert(id, Arc::new(Mutex::new(recording)));
        Ok(())
    }

    async fn write(
        &self,
        recording: RecordingId,
        _seq: u64,
        chunk: AudioChunk,
    ) -> Result<(), SinkError> {
        if self.settings.fsync == FsyncPolicy::Always {
            return self
                .blocking(recording, move |r| r.write(chunk.as_bytes()))
                .await;
        }
        let recording = self.recording(recording)?;
        self.writer
            .write(recording, chunk)
            .await
            .map_err(|error| SinkError::Unavailable(Box::new(error)))
    }

    async fn commit(&self, recording: RecordingId) -> Result<(), SinkError> {
        self.blocking(recording, Recording::commit).await
    }

    async fn close(&self, end: RecordingEnd) -> Result<(), SinkError> {
        let id = end.recording;
        let result = self.blocking(id, move |r| r.finish(&end)).await;
        // Whatever happened, the recording is no longer open: retention may take it later.
        self.open_recordings().remove(&id);
        result
    }
}

/// Takes the directory's lock file, or says which process-wide conflict stops us.
fn lock_directory(dir: &Path) -> Result<File, FileSinkError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| FileSinkError::new("cannot open the lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(FileSinkError::new(
            "another process is using the recordings directory (give each replica its own)",
            dir,
            io::ErrorKind::WouldBlock.into(),
        )),
        Err(fs::TryLockError::Error(e)) => Err(FileSinkError::new("cannot lock", &path, e)),
    }
}

/// A manifest found in the directory.
struct Entry {
    manifest_path: PathBuf,
    manifest: Manifest,
    modified: SystemTime,
}

/// How a recording's bytes are laid out in its file.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// A WAV header, then samples.
    Wav {
        encoding: SampleEncoding,
        sample_rate: u32,
        channels: u16,
    },
    /// The client's own stream, byte for byte.
    Stream,
    /// Undeclared: decided from the first bytes.
    Pending,
}

/// One open recording.
#[derive(Debug)]
struct Recording {
    dir: PathBuf,
    id: RecordingId,
    layout: Layout,
    file: Option<File>,
    data_len: u64,
    manifest: Manifest,
    fsync: FsyncPolicy,
}

impl Recording {
    fn create(
        start: &RecordingStart,
        dir: PathBuf,
        fsync: FsyncPolicy,
    ) -> Result<Self, FileSinkError> {
        let manifest = Manifest::opened(start);
        let mut recording = Self {
            dir,
            id: start.recording,
            layout: Layout::Pending,
            file: None,
            data_len: 0,
            manifest,
            fsync,
        };
        let path = recording.manifest_path();
        match start.format {
            AudioFormat::Samples {
                encoding,
                sample_rate,
                channels,
            } => {
                recording.layout = Layout::Wav {
                    encoding,
                    sample_rate,
                    channels,
                };
                recording
                    .create_file("wav")
                    .map_err(|e| FileSinkError::new("cannot create recording", &path, e))?;
            }
            AudioFormat::Opus { container, .. } => {
                recording.layout = Layout::Stream;
                let ext = container.name();
                recording
                    .create_file(ext)
                    .map_err(|e| FileSinkError::new("cannot create recording", &path, e))?;
            }
            // Nothing to create until the first bytes say what they are; the manifest says the
            // recording exists.
            AudioFormat::Undeclared => {
                recording
                    .write_manifest()
                    .map_err(|e| FileSinkError::new("cannot write manifest", &path, e))?;
            }
        }
        Ok(recording)
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.id))
    }

    fn audio_path(&self) -> PathBuf {
        match &self.manifest.file {
            Some(file) => self.dir.join(file),
            None => self.manifest_path(),
        }
    }

    fn create_file(&mut self, ext: &str) -> io::Result<()> {
        let name = format!("{}.{ext}", self.id);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.dir.join(&name))?;
        if let Layout::Wav {
            encoding,
            sample_rate,
            channels,
        } = self.layout
        {
            file.write_all_at(&wav::header(encoding, sample_rate, channels, 0), 0)?;
        }
        self.file = Some(file);
        self.manifest.file = Some(name);
        self.write_manifest()?;
        if self.fsync != FsyncPolicy::Never {
            // The new directory entries must survive power loss too.
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    fn write_manifest(&self) -> io::Result<()> {
        self.manifest
            .write(&self.manifest_path(), self.fsync != FsyncPolicy::Never)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if matches!(self.layout, Layout::Pending) {
            let (layout, ext) = sniff(bytes);
            self.layout = layout;
            self.manifest.format.container = Some(ext.to_owned());
            self.create_file(ext)?;
        }
        let offset = self.header_len() + self.data_len;
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("recording file missing"))?;
        // Positioned writes: the header is rewritten in place at offset 0 later, so the file
        // is never opened for appending (O_APPEND would send those writes to the end).
        file.write_all_at(bytes, offset)?;
        self.data_len += bytes.len() as u64;
        if self.fsync == FsyncPolicy::Always {
            file.sync_data()?;
        }
        Ok(())
    }

    fn header_len(&self) -> u64 {
        if matches!(self.layout, Layout::Wav { .. }) {
            wav::HEADER_LEN
        } else {
            0
        }
    }

    /// Brings the header up to date and, unless the policy says never, forces everything to
    /// disk.
    fn commit(&mut self) -> io::Result<()> {
        self.update_header()?;
        if let (Some(file), true) = (&self.file, self.fsync != FsyncPolicy::Never) {
            file.sync_data()?;
        }
        Ok(())
    }

    fn update_header(&self) -> io::Result<()> {
        if let (
            Layout::Wav {
                encoding,
                sample_rate,
                channels,
            },
            Some(file),
        ) = (self.layout, &self.file)
        {
            file.write_all_at(
                &wav::header(encoding, sample_rate, channels, self.data_len),
                0,
            )?;
        }
        Ok(())
    }

    fn finish(&mut self, end: &RecordingEnd) -> io::Result<()> {
        // RIFF chunks are word-aligned: an odd number of sample bytes takes a pad byte, which
        // the data length does not count.
        if let (Layout::Wav { .. }, Some(file), 1) = (self.layout, &self.file, self.data_len % 2) {
            file.write_all_at(&[0], wav::HEADER_LEN + self.data_len)?;
        }
        self.commit()?;
        self.manifest.finish(end);
        self.write_manifest()
    }
}

/// Recognises a container from the first bytes of undeclared audio.
fn sniff(bytes: &[u8]) -> (Layout, &'static str) {
    if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        (Layout::Stream, "webm")
    } else if bytes.starts_with(b"OggS") {
        (Layout::Stream, "ogg")
    } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WAVE") {
        (Layout::Stream, "wav")
    } else {
        (Layout::Stream, "raw")
    }
}

/// Fixes the header of a WAV a crash left with placeholder sizes; returns the audio length.
fn repair_audio(path: &Path, manifest: &Manifest) -> io::Result<u64> {
    let len = match fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let format = &manifest.format;
    let Some(encoding) = format
        .encoding
        .as_deref()
        .and_then(SampleEncoding::from_name)
    else {
        return Ok(len);
    };
    let (Some(sample_rate), Some(channels)) = (format.sample_rate, format.channels) else {
        return Ok(len);
    };
    let data_len = len.saturating_sub(wav::HEADER_LEN);
    let file = OpenOptions::new().write(true).open(path)?;
    file.write_all_at(&wav::header(encoding, sample_rate, channels, data_len), 0)?;
    file.sync_all()?;
    Ok(data_len)
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn system_time_to_timestamp(time: SystemTime) -> aimcs_domain::Timestamp {
    let millis = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    aimcs_domain::Timestamp::from_unix_millis(i64::try_from(millis).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
