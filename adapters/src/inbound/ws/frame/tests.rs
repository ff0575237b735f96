//! Every kind of client frame the original service was measured with, and the message each
//! must become.

use aimcs_domain::{
    AudioMessage, AudioPayload, ClientMessage, ClientValue, Container, Encoding, FormatRequest,
    Rejection, SampleEncoding,
};

use super::{AudioBuffer, decode as decode_frame};

/// The default limit on JSON nesting.
const DEPTH: usize = 32;

fn decode(frame: &str) -> ClientMessage {
    decode_frame(frame, &mut AudioBuffer::default(), DEPTH)
}

fn value(text: &str) -> Option<ClientValue> {
    Some(ClientValue::from_wire(text))
}

fn undecodable_reason(frame: &[u8]) -> String {
    match decode_frame(
        &String::from_utf8_lossy(frame),
        &mut AudioBuffer::default(),
        DEPTH,
    ) {
        ClientMessage::Undecodable { reason } => reason,
        other => panic!(
            "expected undecodable for {:?}, got {other:?}",
            String::from_utf8_lossy(&frame[..frame.len().min(80)])
        ),
    }
}

fn audio(frame: &str) -> AudioMessage {
    match decode(frame) {
        ClientMessage::Audio(audio) => audio,
        other => panic!("expected audio for {frame}, got {other:?}"),
    }
}

#[test]
fn the_front_ends_test_message_keeps_its_message() {
    let frame = r#"{"type":"test","message":"Hello from frontend!","timestamp":"2025-06-27T04:20:11.123Z"}"#;
    assert_eq!(
        decode(frame),
        ClientMessage::Test {
            message: value(r#""Hello from frontend!""#)
        }
    );
}

#[test]
fn a_test_message_keeps_a_message_of_any_json_type_as_javascript_rewrites_it() {
    assert_eq!(
        decode(r#"{"type":"test","message": {"b": [1, 2.50, 1e2], "a": null}}"#),
        ClientMessage::Test {
            message: value(r#"{"b":[1,2.5,100],"a":null}"#)
        }
    );
}

#[test]
fn a_test_message_without_a_message_has_none() {
    assert_eq!(
        decode(r#"{"type":"test"}"#),
        ClientMessage::Test { message: None }
    );
}

#[test]
fn a_ping_is_a_ping_whatever_else_it_carries() {
    assert_eq!(decode(r#"{"type":"ping","id":7}"#), ClientMessage::Ping);
}

#[test]
fn audio_data_is_decoded_and_its_base64_length_kept() {
    let audio = audio(r#"{"type":"audio","data":"AQIDBA==","timestamp":"t"}"#);
    assert_eq!(audio.encoded_size, 8);
    match audio.payload {
        AudioPayload::Chunk(chunk) => assert_eq!(chunk.as_bytes(), &[1, 2, 3, 4]),
        other => panic!("expected a chunk, got {other:?}"),
    }
}

#[test]
fn audio_data_without_padding_is_accepted() {
    match audio(r#"{"type":"audio","data":"AQIDBA"}"#).payload {
        AudioPayload::Chunk(chunk) => assert_eq!(chunk.as_bytes(), &[1, 2, 3, 4]),
        other => panic!("expected a chunk, got {other:?}"),
    }
}

#[test]
fn fields_may_come_in_any_order() {
    match audio(r#"{"data":"AQID","type":"audio"}"#).payload {
        AudioPayload::Chunk(chunk) => assert_eq!(chunk.as_bytes(), &[1, 2, 3]),
        other => panic!("expected a chunk, got {other:?}"),
    }
}

#[test]
fn escaped_audio_data_is_unescaped_before_decoding() {
    match audio(r#"{"type":"audio","data":"AQ\u0049D"}"#).payload {
        AudioPayload::Chunk(chunk) => assert_eq!(chunk.as_bytes(), &[1, 2, 3]),
        other => panic!("expected a chunk, got {other:?}"),
    }
}

#[test]
fn audio_without_data_is_empty_like_every_falsy_data() {
    for frame in [
        r#"{"type":"audio"}"#,
        r#"{"type":"audio","data":""}"#,
        r#"{"type":"audio","data":null}"#,
        r#"{"type":"audio","data":false}"#,
        r#"{"type":"audio","data":0}"#,
        r#"{"type":"audio","data":0.0}"#,
    ] {
        assert_eq!(
            audio(frame),
            AudioMessage {
                encoded_size: 0,
                payload: AudioPayload::Empty,
                seq: None
            },
            "{frame}"
        );
    }
}

#[test]
fn invalid_base64_is_invalid_audio_that_names_the_bad_character() {
    let AudioPayload::Invalid(reason) = audio(r#"{"type":"audio","data":"AQ!DBA=="}"#).payload
    else {
        panic!("expected invalid audio");
    };
    assert_eq!(
        reason,
        "audio data is not valid base64: unexpected character '!' at offset 2"
    );
}

#[test]
fn base64_with_whitespace_or_a_truncated_group_is_invalid() {
    for data in ["AQID BA==", "AQIDB", "AQ==AQ==", "ü"] {
        let frame = format!(r#"{{"type":"audio","data":"{data}"}}"#);
        assert!(
            matches!(audio(&frame).payload, AudioPayload::Invalid(_)),
            "{data:?} must be rejected"
        );
    }
}

#[test]
fn audio_data_that_is_not_a_string_is_invalid_and_says_what_it_was() {
    for (data, kind) in [
        ("12", "a number"),
        ("true", "a boolean"),
        ("[1,2]", "an array"),
        (r#"{"a":1}"#, "an object"),
    ] {
        let frame = format!(r#"{{"type":"audio","data":{data}}}"#);
        assert_eq!(
            audio(&frame).payload,
            AudioPayload::Invalid(format!("audio data must be a base64 string, not {kind}")),
            "{frame}"
        );
    }
}

#[test]
fn an_unknown_type_is_kept_as_the_client_wrote_it() {
    for (frame, original) in [
        (r#"{"type":"chat"}"#, r#""chat""#),
        (r#"{"type":"TEST"}"#, r#""TEST""#),
        (r#"{"type":5}"#, "5"),
        (r#"{"type":["test"]}"#, r#"["test"]"#),
        (r#"{"type":null}"#, "null"),
        (r#"{"type":"t\u00e9st"}"#, "\"tést\""),
    ] {
        assert_eq!(
            decode(frame),
            ClientMessage::Unknown {
                original_type: value(original)
            },
            "{frame}"
        );
    }
}

#[test]
fn a_message_without_type_or_that_is_not_an_object_is_of_unknown_type() {
    for frame in [
        r#"{"message":"hi"}"#,
        "{}",
        "123",
        r#""abc""#,
        "[]",
        "[1,[2]]",
        "true",
    ] {
        assert_eq!(
            decode(frame),
            ClientMessage::Unknown {
                original_type: None
            },
            "{frame}"
        );
    }
}

#[test]
fn a_repeated_key_keeps_its_last_value_as_json_parse_does() {
    assert_eq!(
        decode(r#"{"type":"audio","type":"ping"}"#),
        ClientMessage::Ping
    );
}

#[test]
fn a_type_written_with_escapes_is_still_recognised() {
    assert_eq!(decode(r#"{"\u0074ype":"p\u0069ng"}"#), ClientMessage::Ping);
}

#[test]
fn frames_that_are_not_json_are_undecodable_with_a_reason() {
    assert_eq!(
        undecodable_reason(b"hello"),
        "invalid JSON: expected value at line 1 column 1"
    );
    assert!(
        undecodable_reason(br#"{"type":"test""#).starts_with("invalid JSON: EOF while parsing")
    );
    assert!(undecodable_reason(b"{} {}").starts_with("invalid JSON: trailing characters"));
}

#[test]
fn empty_and_null_frames_are_undecodable() {
    assert_eq!(
        undecodable_reason(b""),
        "empty message: expected a JSON object"
    );
    assert_eq!(
        undecodable_reason(b"  \n"),
        "empty message: expected a JSON object"
    );
    assert_eq!(
        undecodable_reason(b"null"),
        "message is null: expected a JSON object"
    );
}

#[test]
fn invalid_utf8_of_a_binary_frame_reads_as_replacement_characters_as_in_the_original() {
    // Text frames are valid UTF-8 by the time they are decoded; binary frames are read the
    // way Node's Buffer-to-string conversion read them.
    let frame = String::from_utf8_lossy(b"{\"type\":\"te\xffst\"}");
    assert_eq!(
        decode(&frame),
        ClientMessage::Unknown {
            original_type: value("\"te\u{fffd}st\"")
        }
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_refused_before_parsing() {
    let (open, close) = ("[".repeat(10_000), "]".repeat(10_000));
    for frame in [
        format!("{open}{close}"),
        format!(r#"{{"type":"x","deep":{open}1{close}}}"#),
        format!(r#"{{"type":"test","message":{open}1{close}}}"#),
    ] {
        assert_eq!(
            decode(&frame),
            ClientMessage::Invalid(Rejection::JsonTooDeep(DEPTH))
        );
    }
}

#[test]
fn nesting_up_to_the_limit_is_fine() {
    let nested = format!("{}1{}", "[".repeat(31), "]".repeat(31));
    assert_eq!(
        decode(&format!(r#"{{"type":"test","message":{nested}}}"#)),
        ClientMessage::Test {
            message: value(&nested)
        }
    );
}

#[test]
fn the_lenient_decoders_buffer_is_reused_once_a_chunk_has_been_dropped() {
    // Unpadded, so not for the SIMD decoder, which decodes into fresh memory.
    let mut buffer = AudioBuffer::default();
    let frame = format!(r#"{{"type":"audio","data":"{}AA"}}"#, "AAAA".repeat(1_000));
    let mut chunk_address = || match decode_frame(&frame, &mut buffer, DEPTH) {
        ClientMessage::Audio(AudioMessage {
            payload: AudioPayload::Chunk(chunk),
            ..
        }) => chunk.as_bytes().as_ptr() as usize,
        other => panic!("expected a chunk, got {other:?}"),
    };
    let first = chunk_address();
    assert_eq!(
        chunk_address(),
        first,
        "the second chunk must reuse the first one's memory"
    );
}

// === session messages ===

#[test]
fn audio_carries_its_sequence_number_when_it_has_one() {
    assert_eq!(
        audio(r#"{"type":"audio","data":"AQID","seq":42}"#).seq,
        Some(42)
    );
    assert_eq!(
        audio(r#"{"type":"audio","data":"AQID","seq":0}"#).seq,
        Some(0)
    );
}

#[test]
fn a_sequence_number_that_is_not_a_whole_number_is_refused_with_its_own_code() {
    for seq in [
        "-1",
        "1.5",
        r#""3""#,
        "null",
        "18446744073709551616",
        "9007199254740992",
    ] {
        let frame = format!(r#"{{"type":"audio","data":"AQID","seq":{seq}}}"#);
        assert!(
            matches!(
                decode(&frame),
                ClientMessage::Invalid(Rejection::InvalidSeq(_))
            ),
            "{seq} must be refused"
        );
    }
}

#[test]
fn session_start_reads_the_declared_format_and_metadata() {
    let decoded = decode(
        r#"{"type":"session_start","format":{"encoding":"pcm_s16le","sampleRate":16000,"channels":1},"metadata":{"callId": "c-1"}}"#,
    );
    assert_eq!(
        decoded,
        ClientMessage::SessionStart {
            format: FormatRequest {
                encoding: Encoding::Samples(SampleEncoding::PcmS16le),
                container: None,
                sample_rate: Some(16_000),
                channels: Some(1),
            },
            metadata: value(r#"{"callId":"c-1"}"#),
        }
    );
    let opus =
        decode(r#"{"type":"session_start","format":{"encoding":"opus","container":"webm"}}"#);
    assert!(matches!(
        opus,
        ClientMessage::SessionStart {
            format: FormatRequest {
                encoding: Encoding::Opus,
                container: Some(Container::Webm),
                ..
            },
            ..
        }
    ));
}

#[test]
fn session_start_with_a_bad_format_is_refused_saying_what_to_send() {
    let cases = [
        (r#"{"type":"session_start"}"#, "invalid_format"),
        (
            r#"{"type":"session_start","format":"pcm"}"#,
            "invalid_format",
        ),
        (
            r#"{"type":"session_start","format":{"encoding":"mp3"}}"#,
            "unsupported_encoding",
        ),
        (
            r#"{"type":"session_start","format":{"encoding":"opus","container":"mp4"}}"#,
            "invalid_format",
        ),
        (
            r#"{"type":"session_start","format":{"encoding":"pcm_s16le","sampleRate":-1}}"#,
            "invalid_format",
        ),
        (
            r#"{"type":"session_start","format":{"encoding":"pcm_s16le","rate":16000}}"#,
            "invalid_format",
        ),
    ];
    for (frame, code) in cases {
        let ClientMessage::Invalid(rejection) = decode(frame) else {
            panic!("{frame} must be refused");
        };
        assert_eq!(
            crate::inbound::errors::rejection_code(&rejection).as_str(),
            code,
            "{frame}: {rejection}"
        );
    }
}

#[test]
fn session_resume_reads_the_id_token_and_last_sequence_number() {
    let decoded = decode(
        r#"{"type":"session_resume","sessionId":"6f1c2d3e-4b5a-4c6d-8e7f-001122334455","resumeToken":"abc","lastSeq":7}"#,
    );
    assert_eq!(
        decoded,
        ClientMessage::SessionResume {
            session: "6f1c2d3e-4b5a-4c6d-8e7f-001122334455".parse().unwrap(),
            token: "abc".into(),
            last_acked_seq: Some(7),
        }
    );
}

#[test]
fn session_resume_without_a_usable_id_or_token_is_refused() {
    for frame in [
        r#"{"type":"session_resume","resumeToken":"abc"}"#,
        r#"{"type":"session_resume","sessionId":"nope","resumeToken":"abc"}"#,
        r#"{"type":"session_resume","sessionId":"6f1c2d3e-4b5a-4c6d-8e7f-001122334455"}"#,
        r#"{"type":"session_resume","sessionId":"6f1c2d3e-4b5a-4c6d-8e7f-001122334455","resumeToken":""}"#,
        r#"{"type":"session_resume","sessionId":"6f1c2d3e-4b5a-4c6d-8e7f-001122334455","resumeToken":"a","lastSeq":-2}"#,
    ] {
        assert!(
            matches!(decode(frame), ClientMessage::Invalid(_)),
            "{frame} must be refused"
        );
    }
}

#[test]
fn the_other_session_messages_are_recognised() {
    assert_eq!(
        decode(r#"{"type":"session_end"}"#),
        ClientMessage::SessionEnd
    );
    assert_eq!(
        decode(r#"{"type":"audio_commit"}"#),
        ClientMessage::AudioCommit
    );
    assert_eq!(
        decode(r#"{"type":"audio_clear"}"#),
        ClientMessage::AudioClear
    );
}

#[test]
fn invalid_base64_whose_offset_falls_inside_a_character_names_the_byte() {
    // Found by the fuzzer: the decoder's offset 4 fell inside U+031C (bytes 3..5).
    let audio = audio("{\"type\":\"audio\",\"data\":\"71I\u{31c}\"}");
    assert_eq!(
        audio.payload,
        AudioPayload::Invalid(
            "audio data is not valid base64: unexpected character 0x9c at offset 4".into()
        )
    );
}

#[test]
fn the_simd_decoder_gives_the_lenient_decoders_bytes_for_everything_it_accepts() {
    // Deterministic pseudo-random texts over the alphabet, padding and a few strangers,
    // including every trailing-bit pattern: whatever the fast path takes, the lenient
    // decoder (the contract) must read the same way.
    const SYMBOLS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ *";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0;
    for _ in 0..20_000 {
        let len = (next() % 24) as usize;
        let text: String = (0..len)
            .map(|_| {
                // Mostly alphabet, so that many texts are valid.
                let pick = next() % 100;
                let index = if pick < 90 {
                    next() % 64
                } else {
                    next() % SYMBOLS.len() as u64
                };
                SYMBOLS[index as usize] as char
            })
            .collect();
        let Some(fast_bytes) = super::decode_canonical(&text) else {
            continue;
        };
        accepted += 1;
        let mut lenient = AudioBuffer::default();
        let len = lenient
            .decode_with(&super::BASE64, &text)
            .unwrap_or_else(|e| panic!("{text:?}: accepted by SIMD, refused by lenient: {e}"));
        assert_eq!(fast_bytes, &lenient.bytes[..len], "{text:?}");
    }
    assert!(accepted > 1_000, "only {accepted} texts were valid");
}

#[test]
fn padded_standard_base64_of_every_length_decodes_through_either_path_alike() {
    use base64::Engine as _;
    for len in 0..100 {
        let audio: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let text = base64::engine::general_purpose::STANDARD.encode(&audio);
        let decoded = super::decode_canonical(&text).expect("canonical base64");
        assert_eq!(&decoded[..], &audio[..], "length {len}");
    }
}

#[test]
fn audio_as_browsers_send_it_takes_the_fast_path_and_reads_as_the_parser_reads_it() {
    let datas = [
        "AQID",
        "",
        "AQIDBA==",
        "A*ID",
        "AQI",
        "AQ\\u0049D",
        "AQ\u{1}D",
        "-_-_",
    ];
    let tails = [
        r#"}"#,
        r#"} "#,
        r#"}x"#,
        r#","timestamp":"2026-12-07T16:20:47.755Z"}"#,
        r#","seq":5}"#,
        r#","seq":-1}"#,
        r#","seq":"5"}"#,
        r#","seq":1.5}"#,
        r#","seq":9007199254740992}"#,
        r#","type":"test"}"#,
        r#","data":"AAAA"}"#,
        r#","}"#,
        r#",,"seq":1}"#,
        r#","meta":{"a":[1,2,{"b":null}]}}"#,
        r#","timestamp":"2026-12-07T16:20:47.755Z","seq":3 }"#,
        r#", "seq" : 3}"#,
        r#""#,
        r#","seq":3"#,
    ];
    let deep = format!(r#","x":{}{}}}"#, "[".repeat(40), "]".repeat(40));
    let mut fast = 0;
    for data in datas {
        for tail in tails.iter().copied().chain([deep.as_str()]) {
            let frame = format!(r#"{{"type":"audio","data":"{data}"{tail}"#);
            let general = super::decode_any(&frame, &mut AudioBuffer::default(), DEPTH);
            if let Some(message) = super::decode_audio_as_sent(&frame, DEPTH) {
                fast += 1;
                assert_eq!(message, general, "{frame}");
            }
            assert_eq!(decode(&frame), general, "{frame}");
        }
    }
    // The common shapes do take it: valid data with the timestamp, a seq, or nothing else.
    assert!(fast >= 3 * 8, "only {fast} frames took the fast path");
    for frame in [
        r#"{"type":"audio","data":"AQID","timestamp":"2026-12-07T16:20:47.755Z"}"#,
        r#"{"type":"audio","data":"AQIDBA==","seq":7}"#,
        r#"{"type":"audio","data":""}"#,
    ] {
        assert!(
            super::decode_audio_as_sent(frame, DEPTH).is_some(),
            "{frame}"
        );
    }
}
