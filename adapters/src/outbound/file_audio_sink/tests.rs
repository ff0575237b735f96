//! The file sink against a real temporary directory.

use std::time::Duration;

use aimcs_domain::{
    AudioChunk, AudioFormat, ClientValue, ConnectionId, Container, RecordingEnd, SampleEncoding,
    Session, SessionEnding, Timestamp,
};

use super::*;

const T0: Timestamp = Timestamp::from_unix_millis(1_750_998_011_123);
const PCM: AudioFormat = AudioFormat::Samples {
    encoding: SampleEncoding::PcmS16le,
    sample_rate: 16_000,
    channels: 1,
};

fn settings(dir: &Path) -> FileSinkSettings {
    FileSinkSettings {
        dir: dir.to_owned(),
        fsync: FsyncPolicy::Commit,
        max_total_bytes: None,
        max_age: None,
    }
}

fn sink(dir: &Path) -> FileAudioSink {
    reopen(dir).0
}

/// Opens the sink on `dir`, which a sink dropped just before may have used. A `sox` that
/// another test forks at that moment holds a copy of the directory lock until it execs, so
/// the lock may stay taken for a few milliseconds after the drop.
fn reopen(dir: &Path) -> (FileAudioSink, super::StartupReport) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match FileAudioSink::open(settings(dir)) {
            Err(error)
                if error.source.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            opened => return opened.unwrap(),
        }
    }
}

fn session(format: AudioFormat) -> Session {
    Session::declared(
        format,
        Some(ClientValue::from_wire(r#"{"callId":"c-1"}"#)),
        ConnectionId::random(),
        T0,
    )
}

/// Streams `chunks` into a new recording of `session` and finishes it.
async fn record(sink: &FileAudioSink, mut session: Session, chunks: &[&[u8]]) -> RecordingEnd {
    sink.open(session.recording_start()).await.unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        let seq = i as u64 + 1;
        sink.write(
            session.recording(),
            seq,
            AudioChunk::new(chunk.to_vec()).unwrap(),
        )
        .await
        .unwrap();
        session.record(seq, None, chunk.len());
    }
    let end = session.finish(SessionEnding::Ended, T0);
    sink.close(end.clone()).await.unwrap();
    end
}

/// Samples sox reads from a WAV; fails the test if sox cannot read it. `scripts/test`
/// installs sox.
fn sox_samples(path: &Path) -> u64 {
    let output = std::process::Command::new("soxi")
        .args(["-s", path.to_str().unwrap()])
        .output()
        .expect("soxi is needed by this test: apt-get install sox (scripts/test installs it)");
    assert!(
        output.status.success(),
        "sox cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

fn manifest(dir: &Path, end: &RecordingEnd) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(format!("{}.json", end.recording))).unwrap()).unwrap()
}

#[tokio::test]
async fn pcm_is_recorded_as_a_wav_whose_samples_are_the_bytes_sent() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path());
    let samples: Vec<u8> = (0..6_400_u32).map(|i| (i % 251) as u8).collect();

    let end = record(&sink, session(PCM), &[&samples[..3_200], &samples[3_200..]]).await;

    let wav = fs::read(dir.path().join(format!("{}.wav", end.recording))).unwrap();
    assert_eq!(
        sox_samples(&dir.path().join(format!("{}.wav", end.recording))),
        3_200
    );
    assert_eq!(
        &wav[..44],
        &wav::header(SampleEncoding::PcmS16le, 16_000, 1, 6_400)
    );
    assert_eq!(&wav[44..], &samples[..]);
    let manifest = manifest(dir.path(), &end);
    assert_eq!(manifest["state"], "complete");
    assert_eq!(manifest["ending"], "ended");
    assert_eq!(
        (
            manifest["bytes"].as_u64(),
            manifest["chunks"].as_u64(),
            manifest["durationMs"].as_u64()
        ),
        (Some(6_400), Some(2), Some(200))
    );
    assert_eq!(manifest["metadata"]["callId"], "c-1");
    assert_eq!(manifest["format"]["encoding"], "pcm_s16le");
}

#[tokio::test]
async fn opus_is_recorded_in_the_clients_own_container() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path());
    let format = AudioFormat::Opus {
        container: Container::Ogg,
        sample_rate: 48_000,
        channels: 1,
    };

    let end = record(&sink, session(format), &[b"OggS\0first", b"second"]).await;

    assert_eq!(
        fs::read(dir.path().join(format!("{}.ogg", end.recording))).unwrap(),
        b"OggS\0firstsecond"
    );
}

#[tokio::test]
async fn undeclared_audio_is_recognised_from_its_first_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path());
    let webm_start: &[u8] = &[0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42];
    let session = Session::implicit(ConnectionId::random(), T0);

    let end = record(&sink, session, &[webm_start, b"cluster"]).await;

    let expected: Vec<u8> = [webm_start, b"cluster"].concat();
    assert_eq!(
        fs::read(dir.path().join(format!("{}.webm", end.recording))).unwrap(),
        expected
    );
    let manifest = manifest(dir.path(), &end);
    assert_eq!(
        (
            manifest["format"]["declared"].as_bool(),
            manifest["format"]["container"].as_str()
        ),
        (Some(false), Some("webm"))
    );
    assert_eq!(
        manifest["durationMs"],
        serde_json::Value::Null,
        "no duration for an undeclared format"
    );
}

#[tokio::test]
async fn a_commit_brings_the_wav_header_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path());
    let session = session(PCM);
    sink.open(session.recording_start()).await.unwrap();
    sink.write(
        session.recording(),
        1,
        AudioChunk::new(vec![7; 320]).unwrap(),
    )
    .await
    .unwrap();

    sink.commit(session.recording()).await.unwrap();

    let wav = fs::read(dir.path().join(format!("{}.wav", session.recording()))).unwrap();
    assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 320);
    assert_eq!(
        sox_samples(&dir.path().join(format!("{}.wav", session.recording()))),
        160
    );
}

#[tokio::test]
async fn writing_to_a_recording_that_is_not_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path());
    let id = RecordingId::random();

    let result = sink.write(id, 1, AudioChunk::new(vec![1]).unwrap()).await;

    assert!(
        matches!(result, Err(SinkError::UnknownRecording(unknown)) if unknown == id),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_recording_a_crash_left_unfinished_is_repaired_at_the_next_start() {
    // Arrange: a recording is opened and written, and the process "crashes" (the sink is
    // dropped without the recording being closed).
    let dir = tempfile::tempdir().unwrap();
    let session = session(PCM);
    {
        let sink = sink(dir.path());
        sink.open(session.recording_start()).await.unwrap();
        sink.write(
            session.recording(),
            1,
            AudioChunk::new(vec![9; 1_000]).unwrap(),
        )
        .await
        .unwrap();
    }

    // Act
    let (_sink, report) = reopen(dir.path());

    // Assert
    assert_eq!(report.repaired, 1);
    let wav = fs::read(dir.path().join(format!("{}.wav", session.recording()))).unwrap();
    assert_eq!(
        sox_samples(&dir.path().join(format!("{}.wav", session.recording()))),
        500
    );
    assert_eq!(
        &wav[..44],
        &wav::header(SampleEncoding::PcmS16le, 16_000, 1, 1_000)
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(dir.path().join(format!("{}.json", session.recording()))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            manifest["state"].as_str(),
            manifest["ending"].as_str(),
            manifest["bytes"].as_u64()
        ),
        (Some("interrupted"), Some("interrupted"), Some(1_000))
    );
}

#[tokio::test]
async fn retention_removes_the_oldest_finished_recordings_but_never_an_open_one() {
    // Arrange: two finished recordings of ~4 KB each and one still open.
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path());
    let old = record(&sink, session(PCM), &[&[1; 4_000]]).await;
    std::thread::sleep(Duration::from_millis(20));
    let newer = record(&sink, session(PCM), &[&[2; 4_000]]).await;
    let open = session(PCM);
    sink.open(open.recording_start()).await.unwrap();
    sink.write(
        open.recording(),
        1,
        AudioChunk::new(vec![3; 20_000]).unwrap(),
    )
    .await
    .unwrap();
    let limited = FileAudioSink {
        settings: FileSinkSettings {
            max_total_bytes: Some(1),
            ..settings(dir.path())
        },
        open: Mutex::new(std::mem::take(&mut *sink.open_recordings())),
        writer: writer::Writer::start().unwrap(),
        _lock: sink._lock.try_clone().unwrap(),
    };

    // Act
    let report = limited.enforce_retention().unwrap();

    // Assert: both finished ones go (the open one alone exceeds the limit), the open one stays.
    assert_eq!(report.removed, 2);
    for gone in [&old, &newer] {
        assert!(!dir.path().join(format!("{}.wav", gone.recording)).exists());
        assert!(!dir.path().join(format!("{}.json", gone.recording)).exists());
    }
    assert!(
        dir.path()
            .join(format!("{}.wav", open.recording()))
            .exists()
    );
}

#[tokio::test]
async fn retention_by_age_keeps_recent_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let sink = FileAudioSink::open(FileSinkSettings {
        max_age: Some(Duration::from_secs(3_600)),
        ..settings(dir.path())
    })
    .unwrap()
    .0;
    let recent = record(&sink, session(PCM), &[&[1; 100]]).await;

    assert_eq!(sink.enforce_retention().unwrap().removed, 0);
    assert!(
        dir.path()
            .join(format!("{}.wav", recent.recording))
            .exists()
    );
}

#[tokio::test]
async fn an_unwritable_directory_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    fs::write(&blocker, b"not a directory").unwrap();

    let error = FileAudioSink::open(settings(&blocker.join("recordings"))).unwrap_err();

    assert!(
        error
            .to_string()
            .starts_with("cannot create recordings directory"),
        "{error}"
    );
}

#[tokio::test]
async fn a_directory_another_sink_holds_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = sink(dir.path());

    let error = FileAudioSink::open(settings(dir.path())).unwrap_err();

    assert!(
        error
            .to_string()
            .starts_with("another process is using the recordings directory"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_written_side_by_side_each_get_their_own_chunks_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path());
    let recordings: Vec<Vec<u8>> = (0..8_u8)
        .map(|r| {
            (0..40 * 320_u32)
                .map(|i| (i as u8).wrapping_mul(r + 1))
                .collect()
        })
        .collect();

    let ends = futures_util::future::join_all(recordings.iter().map(|samples| {
        let chunks: Vec<&[u8]> = samples.chunks(320).collect();
        let sink = &sink;
        async move { record(sink, session(PCM), &chunks).await }
    }))
    .await;

    for (end, samples) in ends.iter().zip(&recordings) {
        let wav = fs::read(dir.path().join(format!("{}.wav", end.recording))).unwrap();
        assert!(
            wav[44..] == samples[..],
            "recording {} differs",
            end.recording
        );
    }
}

#[tokio::test]
async fn every_chunk_is_written_when_each_must_be_forced_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = FileAudioSink::open(FileSinkSettings {
        fsync: FsyncPolicy::Always,
        ..settings(dir.path())
    })
    .unwrap();
    let samples: Vec<u8> = (0..960_u32).map(|i| (i % 199) as u8).collect();

    let end = record(&sink, session(PCM), &[&samples[..320], &samples[320..]]).await;

    let wav = fs::read(dir.path().join(format!("{}.wav", end.recording))).unwrap();
    assert_eq!(&wav[44..], &samples[..]);
}

#[tokio::test]
async fn a_chunk_for_a_writer_that_stopped_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink(dir.path());
    sink.writer = writer::Writer::stopped();
    let session = session(PCM);
    sink.open(session.recording_start()).await.unwrap();

    let result = sink
        .write(session.recording(), 1, AudioChunk::new(vec![1, 2]).unwrap())
        .await;

    let Err(SinkError::Unavailable(error)) = result else {
        panic!("expected the sink to be unavailable, got {result:?}");
    };
    assert!(
        error
            .to_string()
            .starts_with("the recording writer has stopped; cannot write"),
        "{error}"
    );
}
