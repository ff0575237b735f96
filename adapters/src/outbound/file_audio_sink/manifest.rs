//! The JSON manifest beside each recording: who, what format, when, how much, what was
//! missing, and how it ended. Written when the recording opens (state `recording`) and
//! replaced atomically when it ends, so that a crash leaves a manifest saying the recording was
//! never finished, which start-up then repairs.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use aimcs_domain::{AudioFormat, RecordingEnd, RecordingStart, SessionEnding};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::wire::timestamp::to_iso;

/// Where a recording stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum State {
    /// Being written.
    Recording,
    /// Finished normally.
    Complete,
    /// Left unfinished by a crash and repaired at the next start.
    Interrupted,
}

/// The format, as declared or as detected from the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FormatRecord {
    /// Whether the client declared it with `session_start`.
    pub(super) declared: bool,
    /// `pcm_s16le`, `mulaw`, `alaw`, `opus`, or absent when undeclared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) encoding: Option<String>,
    /// The container (`wav`, `webm`, `ogg`), declared or detected; `raw` when unrecognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) container: Option<String>,
    /// Samples per second, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sample_rate: Option<u32>,
    /// Channels, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) channels: Option<u16>,
}

/// A sequence gap, in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct GapRecord {
    pub(super) from: u64,
    pub(super) to: u64,
}

/// The manifest of one recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Manifest {
    pub(super) recording_id: String,
    pub(super) session_id: String,
    pub(super) connection_id: String,
    pub(super) state: State,
    /// The audio file's name in the same directory, once it exists.
    pub(super) file: Option<String>,
    pub(super) format: FormatRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<Box<RawValue>>,
    pub(super) started_at: String,
    pub(super) ended_at: Option<String>,
    /// `ended`, `connection_closed`, `expired`, `shutdown` or `interrupted`.
    pub(super) ending: Option<String>,
    pub(super) bytes: u64,
    /// Unknown after a crash.
    pub(super) chunks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) duration_ms: Option<u64>,
    pub(super) last_seq: Option<u64>,
    /// Unknown (`null`) after a crash.
    pub(super) gaps: Option<Vec<GapRecord>>,
    /// Unknown (`null`) after a crash.
    pub(super) duplicates: Option<u64>,
}

impl Manifest {
    /// The manifest of a recording that has just opened.
    pub(super) fn opened(start: &RecordingStart) -> Self {
        Self {
            recording_id: start.recording.to_string(),
            session_id: start.session.to_string(),
            connection_id: start.connection.to_string(),
            state: State::Recording,
            file: None,
            format: format_record(&start.format),
            metadata: start
                .metadata
                .as_ref()
                .and_then(|m| RawValue::from_string(m.as_wire().to_owned()).ok()),
            started_at: to_iso(start.started_at),
            ended_at: None,
            ending: None,
            bytes: 0,
            chunks: Some(0),
            duration_ms: None,
            last_seq: None,
            gaps: Some(Vec::new()),
            duplicates: Some(0),
        }
    }

    /// Records how the recording ended.
    pub(super) fn finish(&mut self, end: &RecordingEnd) {
        self.state = State::Complete;
        self.ended_at = Some(to_iso(end.ended_at));
        self.ending = Some(ending_name(end.ending).to_owned());
        self.bytes = end.totals.bytes;
        self.chunks = Some(end.totals.chunks);
        self.duration_ms = end
            .duration
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_seq = end.last_seq;
        self.gaps = Some(
            end.gaps
                .iter()
                .map(|g| GapRecord {
                    from: g.from,
                    to: g.to,
                })
                .collect(),
        );
        self.duplicates = Some(end.duplicates);
    }

    /// Reads a manifest.
    pub(super) fn read(path: &Path) -> io::Result<Self> {
        serde_json::from_slice(&fs::read(path)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Replaces the manifest at `path` atomically: a reader sees the old or the new one,
    /// never half of either.
    pub(super) fn write(&self, path: &Path, sync: bool) -> io::Result<()> {
        let tmp = tmp_path(path);
        let mut file = File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut file, self).map_err(io::Error::other)?;
        file.write_all(b"\n")?;
        if sync {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)
    }
}

/// Where a manifest is written before it replaces the old one.
pub(super) fn tmp_path(path: &Path) -> PathBuf {
    path.with_extension("json.tmp")
}

/// How an ending is named in manifests and streams.
pub(crate) fn ending_name(ending: SessionEnding) -> &'static str {
    match ending {
        SessionEnding::Ended => "ended",
        SessionEnding::ConnectionClosed => "connection_closed",
        SessionEnding::Expired => "expired",
        SessionEnding::Shutdown => "shutdown",
        SessionEnding::Failed => "failed",
        SessionEnding::Evicted => "evicted",
    }
}

fn format_record(format: &AudioFormat) -> FormatRecord {
    match *format {
        AudioFormat::Samples {
            encoding,
            sample_rate,
            channels,
        } => FormatRecord {
            declared: true,
            encoding: Some(encoding.name().to_owned()),
            container: Some("wav".to_owned()),
            sample_rate: Some(sample_rate),
            channels: Some(channels),
        },
        AudioFormat::Opus {
            container,
            sample_rate,
            channels,
        } => FormatRecord {
            declared: true,
            encoding: Some("opus".to_owned()),
            container: Some(container.name().to_owned()),
            sample_rate: Some(sample_rate),
            channels: Some(channels),
        },
        AudioFormat::Undeclared => FormatRecord {
            declared: false,
            encoding: None,
            container: None,
            sample_rate: None,
            channels: None,
        },
    }
}
