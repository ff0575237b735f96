//! Audio sessions end to end: what the client sends is what the recording holds, byte for
//! byte, whatever the framing, across dropped sockets, under a slow sink.

use std::time::Duration;

use aimcs_tests::{Ending, WsClient, spawn_app, tools};
use serde_json::{Value, json};

const PCM_16K: fn() -> Value =
    || json!({"encoding": "pcm_s16le", "sampleRate": 16000, "channels": 1});

/// 100 ms of 16 kHz mono PCM per chunk, with a pattern that makes misplaced bytes visible.
fn pcm_chunks(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|c| (0..3_200).map(|i| ((c * 7 + i) % 251) as u8).collect())
        .collect()
}

fn wav_payload(path: &std::path::Path) -> Vec<u8> {
    let wav = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&wav[0..4], b"RIFF");
    let data_len = u32::from_le_bytes(wav[40..44].try_into().unwrap()) as usize;
    assert_eq!(
        data_len,
        wav.len() - 44,
        "the header's length must match the file"
    );
    wav[44..].to_vec()
}

fn manifest(app: &aimcs_tests::TestApp, recording: &Value) -> Value {
    let path = app.recording(&format!("{}.json", recording.as_str().unwrap()));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

async fn end(client: &mut WsClient) -> Value {
    let ended = client.ask(&json!({"type": "session_end"})).await;
    assert_eq!(ended["type"], "session_ended", "{ended}");
    ended
}

#[tokio::test]
async fn pcm_sent_as_base64_and_as_binary_frames_makes_identical_wavs_of_exactly_the_bytes_sent() {
    let app = spawn_app().await;
    let chunks = pcm_chunks(20);
    let sent: Vec<u8> = chunks.concat();

    // Base64 in JSON.
    let mut json_client = app.connect().await;
    json_client.next_json().await;
    let json_session = json_client.start_session(PCM_16K()).await;
    for (seq, chunk) in chunks.iter().enumerate() {
        json_client.send_audio_seq(chunk, seq as u64).await;
        let ack = json_client.next_json().await;
        assert_eq!(
            (&ack["type"], &ack["seq"]),
            (&json!("audio_received"), &json!(seq)),
            "{ack}"
        );
    }
    let json_end = end(&mut json_client).await;

    // Raw binary frames.
    let mut binary_client = app.connect().await;
    binary_client.next_json().await;
    let binary_session = binary_client.start_session(PCM_16K()).await;
    for chunk in &chunks {
        binary_client.send_binary(chunk.clone()).await;
        let ack = binary_client.next_json().await;
        assert_eq!(
            (&ack["type"], &ack["dataSize"]),
            (&json!("audio_received"), &json!(3_200)),
            "{ack}"
        );
    }
    let binary_end = end(&mut binary_client).await;

    for (session, ended) in [(&json_session, &json_end), (&binary_session, &binary_end)] {
        let path = app.recording(&format!("{}.wav", session["recordingId"].as_str().unwrap()));
        assert_eq!(wav_payload(&path), sent, "{}", path.display());
        assert_eq!(
            tools::soxi(&path),
            (16_000, 1, 32_000),
            "sox reads 2 s of 16 kHz mono"
        );
        assert_eq!(
            (
                ended["totalBytes"].as_u64(),
                ended["totalChunks"].as_u64(),
                ended["durationMs"].as_u64()
            ),
            (Some(64_000), Some(20), Some(2_000))
        );
        assert_eq!(manifest(&app, &session["recordingId"])["state"], "complete");
    }
}

#[tokio::test]
async fn mu_law_is_recorded_as_a_wav_sox_reads() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    let session = client.start_session(json!({"encoding": "mulaw"})).await;
    assert_eq!(
        session["format"],
        json!({"encoding": "mulaw", "sampleRate": 8000, "channels": 1})
    );

    client.send_binary(vec![0xFF; 8_000]).await;
    client.next_json().await;
    end(&mut client).await;

    let path = app.recording(&format!("{}.wav", session["recordingId"].as_str().unwrap()));
    assert_eq!(tools::soxi(&path), (8_000, 1, 8_000));
    assert!(tools::run("soxi", &["-e", path.to_str().unwrap()]).contains("u-law"));
}

#[tokio::test]
async fn an_original_front_ends_webm_fragments_concatenate_into_the_exact_stream_sent() {
    // Arrange: a real WebM/Opus stream, cut into fragments as MediaRecorder delivers them.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("speech.webm");
    tools::run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2",
            "-c:a",
            "libopus",
            "-f",
            "webm",
            source.to_str().unwrap(),
        ],
    );
    let stream = std::fs::read(&source).unwrap();
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;

    // Act: the original protocol: base64 audio messages, no session_start, no seq.
    for fragment in stream.chunks(900) {
        client.send_audio(fragment).await;
        let ack = client.next_json().await;
        assert_eq!(ack["type"], "audio_received");
        assert!(
            ack.get("seq").is_none(),
            "an original client's ack is the original's: {ack}"
        );
    }
    client.close().await;
    app.wait_for_connections(0).await;

    // Assert
    let recordings = app.recordings_with_extension("webm");
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    assert_eq!(std::fs::read(&recordings[0]).unwrap(), stream);
    let duration = tools::ffprobe_duration(&recordings[0]);
    assert!((duration - 2.0).abs() < 0.1, "ffprobe reads {duration} s");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(recordings[0].with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            manifest["ending"].as_str(),
            manifest["format"]["declared"].as_bool()
        ),
        (Some("connection_closed"), Some(false))
    );
}

#[tokio::test]
async fn a_dropped_socket_resumed_yields_one_recording_with_every_acknowledged_byte_exactly_once() {
    // Arrange
    let app = spawn_app().await;
    let chunks = pcm_chunks(30);
    let mut first = app.connect().await;
    first.next_json().await;
    let session = first.start_session(PCM_16K()).await;
    for (seq, chunk) in chunks.iter().enumerate().take(15) {
        first.send_audio_seq(chunk, seq as u64).await;
    }
    let mut last_acked = None;
    for _ in 0..10 {
        last_acked = first.next_json().await["seq"].as_u64();
    }

    // Act: the socket dies with chunks still in flight; the client reconnects and resumes.
    drop(first);
    let mut second = app.connect().await;
    second.next_json().await;
    let resumed = second
        .ask(&json!({"type": "session_resume", "sessionId": session["sessionId"], "resumeToken": session["resumeToken"], "lastSeq": last_acked}))
        .await;
    assert_eq!(resumed["type"], "session_resumed", "{resumed}");
    assert_eq!(resumed["recordingId"], session["recordingId"]);
    // The client resends everything it never saw acknowledged, then goes on.
    let resend_from = last_acked.map_or(0, |seq| seq + 1) as usize;
    let mut duplicates = 0;
    for (seq, chunk) in chunks.iter().enumerate().skip(resend_from) {
        second.send_audio_seq(chunk, seq as u64).await;
        let ack = second.next_json().await;
        assert_eq!(ack["seq"], seq, "{ack}");
        duplicates += usize::from(ack["duplicate"] == true);
    }
    let ended = end(&mut second).await;

    // Assert
    let path = app.recording(&format!("{}.wav", session["recordingId"].as_str().unwrap()));
    assert_eq!(
        wav_payload(&path),
        chunks.concat(),
        "every chunk exactly once, in order"
    );
    assert_eq!(
        (
            ended["totalChunks"].as_u64(),
            ended["gaps"].as_array().map(Vec::len)
        ),
        (Some(30), Some(0))
    );
    assert_eq!(ended["duplicates"], duplicates);
    assert_eq!(tools::soxi(&path).2, 30 * 1_600);
}

#[tokio::test]
async fn resuming_while_the_old_socket_is_still_open_closes_it_as_superseded() {
    let app = spawn_app().await;
    let mut old = app.connect().await;
    old.next_json().await;
    let session = old.start_session(PCM_16K()).await;
    old.send_audio_seq(&[1; 320], 1).await;
    old.next_json().await;

    let mut new = app.connect().await;
    new.next_json().await;
    let resumed = new.ask(&json!({"type": "session_resume", "sessionId": session["sessionId"], "resumeToken": session["resumeToken"]})).await;

    assert_eq!(
        (resumed["type"].as_str(), resumed["lastSeq"].as_u64()),
        (Some("session_resumed"), Some(1)),
        "{resumed}"
    );
    let notice = old.next_json().await;
    assert_eq!(notice["code"], "superseded");
    assert!(matches!(old.ending().await, Ending::Closed(4103, _)));
    new.send_audio_seq(&[2; 320], 2).await;
    assert_eq!(new.next_json().await["totalChunks"], 2);
}

#[tokio::test]
async fn a_resume_with_a_wrong_token_or_for_an_unknown_session_is_refused_with_its_code() {
    let app = spawn_app().await;
    let mut owner = app.connect().await;
    owner.next_json().await;
    let session = owner.start_session(PCM_16K()).await;
    let mut intruder = app.connect().await;
    intruder.next_json().await;

    let wrong = intruder.ask(&json!({"type": "session_resume", "sessionId": session["sessionId"], "resumeToken": "0".repeat(32)})).await;
    let unknown = intruder
        .ask(&json!({"type": "session_resume", "sessionId": "6f1c2d3e-4b5a-4c6d-8e7f-001122334455", "resumeToken": "x"}))
        .await;

    assert_eq!(
        (wrong["type"].as_str(), wrong["code"].as_str()),
        (Some("error"), Some("invalid_resume_token"))
    );
    assert_eq!(unknown["code"], "session_not_found");
    assert_eq!(
        owner.ask(&json!({"type": "ping"})).await["type"],
        "pong",
        "the owner is untouched"
    );
}

#[tokio::test]
async fn a_session_nobody_resumes_is_finished_after_the_grace_period() {
    let app = aimcs_tests::spawn_app_with(|settings| {
        settings.sessions.resume_grace_secs = 1_u64.try_into().unwrap()
    })
    .await;
    let mut client = app.connect().await;
    client.next_json().await;
    let session = client.start_session(PCM_16K()).await;
    client.send_binary(vec![0; 3_200]).await;
    client.next_json().await;

    drop(client);
    tokio::time::sleep(Duration::from_millis(1_600)).await;

    let manifest = manifest(&app, &session["recordingId"]);
    assert_eq!(
        (manifest["state"].as_str(), manifest["ending"].as_str()),
        (Some("complete"), Some("expired"))
    );
    let mut late = app.connect().await;
    late.next_json().await;
    let refused = late.ask(&json!({"type": "session_resume", "sessionId": session["sessionId"], "resumeToken": session["resumeToken"]})).await;
    assert_eq!(refused["code"], "session_not_found");
}

#[tokio::test]
async fn session_end_after_a_burst_reports_totals_equal_to_what_was_sent() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    client
        .start_session(json!({"encoding": "pcm_s16le", "sampleRate": 48000, "channels": 2}))
        .await;
    let sizes: Vec<usize> = (1..=100).map(|i| i * 37 % 4_000 + 4).collect();

    for &size in &sizes {
        client.send_binary(vec![0x11; size]).await;
    }
    client.send_json(&json!({"type": "session_end"})).await;
    let mut replies = Vec::new();
    for _ in 0..=sizes.len() {
        replies.push(client.next_json().await);
    }

    let ended = replies.last().unwrap();
    let total: usize = sizes.iter().sum();
    let path = app.recording(&format!("{}.wav", ended["recordingId"].as_str().unwrap()));
    assert_eq!(wav_payload(&path).len(), total);
    let (rate, channels, _) = tools::soxi(&path);
    assert_eq!(
        (rate, channels),
        (48_000, 2),
        "sox reads the 48 kHz stereo WAV"
    );
    assert_eq!(ended["type"], "session_ended");
    assert_eq!(
        (ended["totalBytes"].as_u64(), ended["totalChunks"].as_u64()),
        (Some(total as u64), Some(100))
    );
    assert_eq!(
        ended["durationMs"].as_u64(),
        Some((total as u64 * 1000) / (48_000 * 2 * 2))
    );
}

#[tokio::test]
async fn a_commit_reports_what_is_durable_and_updates_the_wav_header() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    let session = client.start_session(PCM_16K()).await;
    client.send_binary(vec![3; 640]).await;
    client.next_json().await;

    let committed = client.ask(&json!({"type": "audio_commit"})).await;

    assert_eq!(
        (
            committed["type"].as_str(),
            committed["totalBytes"].as_u64(),
            committed["lastSeq"].as_u64()
        ),
        (Some("audio_committed"), Some(640), Some(1))
    );
    let path = app.recording(&format!("{}.wav", session["recordingId"].as_str().unwrap()));
    assert_eq!(
        wav_payload(&path).len(),
        640,
        "the header already says 640 bytes while recording"
    );
}

#[tokio::test]
async fn every_malformed_session_message_gets_an_error_with_a_stable_code_and_the_socket_stays_open()
 {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.next_json().await;
    let session_id = "6f1c2d3e-4b5a-4c6d-8e7f-001122334455";
    let cases = [
        (json!({"type": "session_start"}), "invalid_format"),
        (
            json!({"type": "session_start", "format": "pcm_s16le"}),
            "invalid_format",
        ),
        (
            json!({"type": "session_start", "format": {"encoding": "mp3"}}),
            "unsupported_encoding",
        ),
        (
            json!({"type": "session_start", "format": {"encoding": "pcm_s16le"}}),
            "invalid_format",
        ),
        (
            json!({"type": "session_start", "format": {"encoding": "pcm_s16le", "sampleRate": "16000"}}),
            "invalid_format",
        ),
        (
            json!({"type": "session_start", "format": {"encoding": "opus"}}),
            "invalid_format",
        ),
        (
            json!({"type": "session_start", "format": {"encoding": "pcm_s16le", "sampleRate": 16000, "container": "webm"}}),
            "invalid_format",
        ),
        (
            json!({"type": "session_start", "format": {"encoding": "pcm_s16le", "sampleRate": 16000, "channels": 9}}),
            "invalid_format",
        ),
        (json!({"type": "session_resume"}), "invalid_resume"),
        (
            json!({"type": "session_resume", "sessionId": "x", "resumeToken": "y"}),
            "invalid_resume",
        ),
        (
            json!({"type": "session_resume", "sessionId": session_id, "resumeToken": 12}),
            "invalid_resume",
        ),
        (
            json!({"type": "session_resume", "sessionId": session_id, "resumeToken": "t", "lastSeq": "3"}),
            "invalid_seq",
        ),
        (json!({"type": "session_end"}), "no_active_session"),
        (json!({"type": "audio_commit"}), "no_active_session"),
        (json!({"type": "audio_clear"}), "not_supported"),
        (
            json!({"type": "audio", "data": "AQID", "seq": -1}),
            "invalid_seq",
        ),
        (
            json!({"type": "audio", "data": "AQID", "seq": "7"}),
            "invalid_seq",
        ),
        (
            json!({"type": "audio", "data": "AQID", "seq": 1.5}),
            "invalid_seq",
        ),
        (
            json!({"type": "audio", "data": "AQID", "seq": 9_007_199_254_740_992_u64}),
            "invalid_seq",
        ),
    ];
    for (message, code) in cases {
        let reply = client.ask(&message).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some(code)),
            "{message} -> {reply}"
        );
        assert!(
            reply["error"].as_str().is_some_and(|e| e.len() > 10),
            "a readable reason: {reply}"
        );
    }
    // Refused declarations leave the original protocol in place: binary JSON still works.
    client.send_binary(br#"{"type":"ping"}"#.to_vec()).await;
    assert_eq!(client.next_json().await["type"], "pong");
    client.start_session(PCM_16K()).await;
    let again = client
        .ask(&json!({"type": "session_start", "format": PCM_16K()}))
        .await;
    assert_eq!(again["code"], "session_already_active");
    client.send_binary(Vec::new()).await;
    assert_eq!(client.next_json().await["code"], "invalid_audio");
    client.send_audio_seq(&[1; 2], 1).await;
    client.next_json().await;
    client.send_audio_seq(&[3; 2], 3).await;
    client.next_json().await;
    client.send_audio_seq(&[2; 2], 2).await;
    let late = client.next_json().await;
    assert_eq!(
        (late["type"].as_str(), late["code"].as_str()),
        (Some("error"), Some("late_chunk")),
        "a skipped chunk is never acknowledged"
    );
    client.send_binary(Vec::new()).await;
    assert_eq!(client.next_json().await["code"], "invalid_audio");
}

#[tokio::test]
async fn a_resume_takes_over_at_once_even_when_the_old_socket_is_stuck_sending() {
    // Arrange: the old client starts a session, then floods frames and never reads, so the
    // server's acknowledgements back up until its sends block.
    let app = spawn_app().await;
    let mut old = aimcs_tests::raw_ws::RawSocket::connect_with_small_receive_buffer(app.addr).await;
    old.read_frame().await.expect("the greeting");
    let session = old
        .ask(&json!({"type": "session_start", "format": PCM_16K()}).to_string())
        .await;
    let mut writer = old.into_writer();
    let flood = tokio::spawn(async move {
        let frame = aimcs_tests::raw_ws::masked_binary(&[0, 0]);
        for _ in 0..200_000 {
            if tokio::io::AsyncWriteExt::write_all(&mut writer, &frame)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act
    let mut new = app.connect().await;
    new.next_json().await;
    let started = std::time::Instant::now();
    let resumed = new.ask(&json!({"type": "session_resume", "sessionId": session["sessionId"], "resumeToken": session["resumeToken"]})).await;

    // Assert
    assert_eq!(resumed["type"], "session_resumed", "{resumed}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the resume took {:?}",
        started.elapsed()
    );
    flood.abort();
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_keep_its_recording_from_being_finished_at_shutdown() {
    let mut app = spawn_app().await;
    let mut stuck =
        aimcs_tests::raw_ws::RawSocket::connect_with_small_receive_buffer(app.addr).await;
    stuck.read_frame().await.expect("the greeting");
    let session = stuck
        .ask(&json!({"type": "session_start", "format": PCM_16K()}).to_string())
        .await;
    let mut writer = stuck.into_writer();
    let flood = tokio::spawn(async move {
        let frame = aimcs_tests::raw_ws::masked_binary(&[0, 0]);
        for _ in 0..200_000 {
            if tokio::io::AsyncWriteExt::write_all(&mut writer, &frame)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    app.trigger_shutdown();
    let started = std::time::Instant::now();
    let report = app.shut_down_keeping_recordings().await;

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(report.0.drained, "{:?}", report.0);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            report
                .1
                .path()
                .join(format!("{}.json", session["recordingId"].as_str().unwrap())),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (manifest["state"].as_str(), manifest["ending"].as_str()),
        (Some("complete"), Some("shutdown"))
    );
    flood.abort();
}
