//! How a session's resume state and an audio format are written in Redis: JSON for the
//! snapshot (one field, read whole), a short text for the format (on every stream entry, for
//! consumers).

use aimcs_domain::{
    AudioFormat, AudioTotals, ClientValue, Container, Encoding, FormatRequest, ResumeToken,
    SampleEncoding, SeqGap, SessionSnapshot, Timestamp,
};
use serde::{Deserialize, Serialize};

/// The snapshot as stored. Field names are short and stable: other versions of the service
/// read what this one wrote during a rolling upgrade.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    recording: String,
    token: String,
    format: String,
    metadata: Option<String>,
    connection: String,
    started_at: i64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    bytes: u64,
    chunks: u64,
    gaps: Vec<(u64, u64)>,
    duplicates: u64,
    detached_at: Option<i64>,
}

/// The snapshot as JSON.
pub(super) fn encode(snapshot: &SessionSnapshot) -> String {
    let stored = Stored {
        id: snapshot.id.to_string(),
        recording: snapshot.recording.to_string(),
        token: snapshot.token.reveal().to_owned(),
        format: format_name(snapshot.format),
        metadata: snapshot.metadata.as_ref().map(|m| m.as_wire().to_owned()),
        connection: snapshot.connection.to_string(),
        started_at: snapshot.started_at.unix_millis(),
        first_seq: snapshot.first_seq,
        last_seq: snapshot.last_seq,
        bytes: snapshot.totals.bytes,
        chunks: snapshot.totals.chunks,
        gaps: snapshot.gaps.iter().map(|gap| (gap.from, gap.to)).collect(),
        duplicates: snapshot.duplicates,
        detached_at: snapshot.detached_at.map(Timestamp::unix_millis),
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

/// A snapshot read back; `Err` names what is wrong with it.
pub(super) fn decode(text: &str) -> Result<SessionSnapshot, String> {
    let stored: Stored = serde_json::from_str(text).map_err(|error| error.to_string())?;
    let id = |what: &str, text: &str| format!("{what} {text:?} is not an id");
    Ok(SessionSnapshot {
        id: stored.id.parse().map_err(|_| id("session", &stored.id))?,
        recording: stored
            .recording
            .parse()
            .map_err(|_| id("recording", &stored.recording))?,
        token: ResumeToken::from_stored(stored.token),
        format: parse_format(&stored.format)
            .ok_or_else(|| format!("format {:?} is unknown", stored.format))?,
        metadata: stored.metadata.map(ClientValue::from_wire),
        connection: stored
            .connection
            .parse()
            .map_err(|_| id("connection", &stored.connection))?,
        started_at: Timestamp::from_unix_millis(stored.started_at),
        first_seq: stored.first_seq,
        last_seq: stored.last_seq,
        totals: AudioTotals {
            bytes: stored.bytes,
            chunks: stored.chunks,
        },
        gaps: stored
            .gaps
            .into_iter()
            .map(|(from, to)| SeqGap { from, to })
            .collect(),
        duplicates: stored.duplicates,
        detached_at: stored.detached_at.map(Timestamp::from_unix_millis),
    })
}

/// `pcm_s16le/16000/1`, `opus/webm/48000/2`, or `undeclared`: what consumers read on every
/// stream entry.
pub(super) fn format_name(format: AudioFormat) -> String {
    match format {
        AudioFormat::Samples {
            encoding,
            sample_rate,
            channels,
        } => {
            format!("{}/{sample_rate}/{channels}", encoding.name())
        }
        AudioFormat::Opus {
            container,
            sample_rate,
            channels,
        } => {
            format!("opus/{}/{sample_rate}/{channels}", container.name())
        }
        AudioFormat::Undeclared => "undeclared".to_owned(),
    }
}

/// The format [`format_name`] wrote, checked by the same rules as a client's declaration.
pub(super) fn parse_format(text: &str) -> Option<AudioFormat> {
    if text == "undeclared" {
        return Some(AudioFormat::Undeclared);
    }
    let parts: Vec<&str> = text.split('/').collect();
    let request = match parts.as_slice() {
        [encoding, rate, channels] => FormatRequest {
            encoding: Encoding::Samples(SampleEncoding::from_name(encoding)?),
            container: None,
            sample_rate: Some(rate.parse().ok()?),
            channels: Some(channels.parse().ok()?),
        },
        ["opus", container, rate, channels] => FormatRequest {
            encoding: Encoding::Opus,
            container: Some(Container::from_name(container)?),
            sample_rate: Some(rate.parse().ok()?),
            channels: Some(channels.parse().ok()?),
        },
        _ => return None,
    };
    AudioFormat::negotiate(request).ok()
}

#[cfg(test)]
mod tests {
    use aimcs_domain::{ConnectionId, Session};

    use super::*;

    #[test]
    fn a_snapshot_reads_back_as_it_was_written() {
        let format = AudioFormat::Opus {
            container: Container::Webm,
            sample_rate: 48_000,
            channels: 2,
        };
        let mut session = Session::declared(
            format,
            Some(ClientValue::from_wire(r#"{"caller":"+4930"}"#)),
            ConnectionId::random(),
            Timestamp::from_unix_millis(1_700_000_000_000),
        );
        session.record(3, None, 100);
        session.record(7, Some(SeqGap { from: 4, to: 6 }), 50);
        session.detach(Timestamp::from_unix_millis(1_700_000_001_000));
        let snapshot = session.snapshot();

        assert_eq!(decode(&encode(&snapshot)), Ok(snapshot));
    }

    #[test]
    fn every_format_has_a_name_that_parses_back() {
        let formats = [
            AudioFormat::Samples {
                encoding: SampleEncoding::PcmS16le,
                sample_rate: 16_000,
                channels: 1,
            },
            AudioFormat::Samples {
                encoding: SampleEncoding::Mulaw,
                sample_rate: 8_000,
                channels: 1,
            },
            AudioFormat::Samples {
                encoding: SampleEncoding::Alaw,
                sample_rate: 8_000,
                channels: 2,
            },
            AudioFormat::Opus {
                container: Container::Ogg,
                sample_rate: 24_000,
                channels: 1,
            },
            AudioFormat::Undeclared,
        ];
        for format in formats {
            assert_eq!(parse_format(&format_name(format)), Some(format));
        }
        assert_eq!(format_name(formats[0]), "pcm_s16le/16000/1");
    }

    #[test]
    fn a_damaged_snapshot_is_refused_with_a_reason() {
        assert!(decode("{").is_err());
        let error = decode(
            r#"{"id":"x","recording":"x","token":"t","format":"undeclared","metadata":null,"connection":"x","started_at":0,"first_seq":null,"last_seq":null,"bytes":0,"chunks":0,"gaps":[],"duplicates":0,"detached_at":null}"#,
        )
        .unwrap_err();
        assert!(error.contains("not an id"), "{error}");
        assert_eq!(parse_format("pcm_s16le/1/1"), None, "rules still apply");
        assert_eq!(parse_format("flac/16000/1"), None);
    }
}
