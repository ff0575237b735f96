use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const LIMIT: usize = 1024 * 1024;

/// A frame as a client sends it: masked.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![u8::from(fin) << 7 | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    let start = frame.len();
    frame.extend_from_slice(payload);
    unmask(&mut frame[start..], MASK);
    frame
}

fn read_one(reader: &mut Reader, input: &mut [u8]) -> Result<Parsed, ProtocolError> {
    reader.read(input)
}

/// The messages a run of frames makes, as (kind, payload) pairs.
fn messages(
    reader: &mut Reader,
    mut input: Vec<u8>,
) -> Result<Vec<(String, Vec<u8>)>, ProtocolError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < input.len() {
        match reader.read(&mut input[at..])? {
            Parsed::Frame(frame, used) => {
                let part = &input[at..at + used];
                let (kind, bytes) = match frame {
                    Frame::Text(Place::Input(r)) => ("text", text(&part[r])?.as_bytes().to_vec()),
                    Frame::Binary(Place::Input(r)) => ("binary", part[r].to_vec()),
                    Frame::Text(Place::Assembled) => ("text", reader.message().to_vec()),
                    Frame::Binary(Place::Assembled) => ("binary", reader.message().to_vec()),
                    Frame::Ping(r) => ("ping", part[r].to_vec()),
                    Frame::Pong => ("pong", Vec::new()),
                    Frame::Close(None) => ("close", Vec::new()),
                    Frame::Close(Some((code, r))) => {
                        let mut bytes = code.to_be_bytes().to_vec();
                        bytes.extend_from_slice(&part[r]);
                        ("close", bytes)
                    }
                };
                out.push((kind.to_owned(), bytes));
                at += used;
            }
            Parsed::Consumed(used) => at += used,
            Parsed::Incomplete(_) => panic!("incomplete input"),
        }
    }
    Ok(out)
}

#[test]
fn a_masked_text_frame_is_unmasked_in_place_and_read_whole() {
    let mut input = client_frame(true, 0x1, br#"{"type":"ping"}"#);
    let parsed = read_one(&mut Reader::new(LIMIT), &mut input).unwrap();
    let Parsed::Frame(Frame::Text(Place::Input(range)), used) = parsed else {
        panic!("a text frame, got {parsed:?}");
    };
    assert_eq!(used, input.len());
    assert_eq!(&input[range], br#"{"type":"ping"}"#);
}

#[test]
fn all_three_length_encodings_are_read() {
    for len in [0, 125, 126, 65_535, 65_536, 200_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let got = messages(&mut Reader::new(LIMIT), client_frame(true, 0x2, &payload)).unwrap();
        assert_eq!(got, [("binary".to_owned(), payload)], "length {len}");
    }
}

#[test]
fn a_partial_frame_says_how_many_bytes_it_needs() {
    let frame = client_frame(true, 0x2, &[7; 300]);
    let mut reader = Reader::new(LIMIT);
    assert_eq!(
        reader.read(&mut frame[..1].to_vec()),
        Ok(Parsed::Incomplete(2))
    );
    assert_eq!(
        reader.read(&mut frame[..3].to_vec()),
        Ok(Parsed::Incomplete(8))
    );
    assert_eq!(
        reader.read(&mut frame[..100].to_vec()),
        Ok(Parsed::Incomplete(frame.len()))
    );
}

#[test]
fn frames_breaking_the_framing_rules_are_violations() {
    let mut unmasked = client_frame(true, 0x1, b"hi");
    unmasked[1] &= 0x7F;
    let mut reserved_bit = client_frame(true, 0x1, b"hi");
    reserved_bit[0] |= 0x40;
    let cases = [
        ("unmasked", unmasked),
        ("reserved bit", reserved_bit),
        ("reserved opcode", client_frame(true, 0x3, b"")),
        ("reserved control opcode", client_frame(true, 0xB, b"")),
        ("long ping", client_frame(true, 0x9, &[0; 126])),
        ("fragmented ping", client_frame(false, 0x9, b"")),
        ("continuation of nothing", client_frame(true, 0x0, b"x")),
        ("one-byte close", client_frame(true, 0x8, &[3])),
        (
            "close code 1005",
            client_frame(true, 0x8, &1005_u16.to_be_bytes()),
        ),
        (
            "close code 999",
            client_frame(true, 0x8, &999_u16.to_be_bytes()),
        ),
        (
            "close code 5000",
            client_frame(true, 0x8, &5000_u16.to_be_bytes()),
        ),
    ];
    for (name, input) in cases {
        assert!(
            matches!(
                messages(&mut Reader::new(LIMIT), input),
                Err(ProtocolError::Violation(_))
            ),
            "{name}"
        );
    }
}

#[test]
fn a_64_bit_length_with_the_top_bit_set_is_a_violation() {
    let mut input = vec![0x82, 0xFF];
    input.extend_from_slice(&(1_u64 << 63).to_be_bytes());
    input.extend_from_slice(&MASK);
    assert!(matches!(
        Reader::new(LIMIT).read(&mut input),
        Err(ProtocolError::Violation(_))
    ));
}

#[test]
fn fragments_are_reassembled_with_control_frames_between_them() {
    let mut input = client_frame(false, 0x1, "héllo, ".as_bytes());
    input.extend(client_frame(true, 0x9, b"are you there"));
    input.extend(client_frame(false, 0x0, "wör".as_bytes()));
    input.extend(client_frame(true, 0x0, b"ld"));
    let mut reader = Reader::new(LIMIT);
    assert_eq!(
        messages(&mut reader, input).unwrap(),
        [
            ("ping".to_owned(), b"are you there".to_vec()),
            ("text".to_owned(), "héllo, wörld".as_bytes().to_vec()),
        ]
    );
    assert!(reader.is_idle());
}

#[test]
fn a_new_message_inside_a_fragmented_one_is_a_violation() {
    let mut input = client_frame(false, 0x2, b"a");
    input.extend(client_frame(true, 0x2, b"b"));
    assert!(matches!(
        messages(&mut Reader::new(LIMIT), input),
        Err(ProtocolError::Violation(_))
    ));
}

#[test]
fn messages_over_the_limit_are_refused_from_their_header_or_as_fragments_add_up() {
    let mut header_only = client_frame(true, 0x2, &[0; 2_000]);
    header_only.truncate(20);
    assert_eq!(
        Reader::new(1_000).read(&mut header_only),
        Err(ProtocolError::TooBig {
            size: 2_000,
            max: 1_000
        })
    );
    let mut fragments = client_frame(false, 0x1, &[b'a'; 600]);
    fragments.extend(client_frame(true, 0x0, &[b'a'; 600]));
    assert_eq!(
        messages(&mut Reader::new(1_000), fragments),
        Err(ProtocolError::TooBig {
            size: 1_200,
            max: 1_000
        })
    );
    // Control frames do not count toward a message.
    assert!(messages(&mut Reader::new(1), client_frame(true, 0x9, &[1; 100])).is_ok());
}

#[test]
fn text_that_is_not_utf8_fails_at_the_first_bad_fragment() {
    assert!(matches!(
        messages(&mut Reader::new(LIMIT), client_frame(true, 0x1, b"a\xffb")),
        Err(ProtocolError::InvalidUtf8(_))
    ));
    // A bad byte in the first fragment fails before the message could ever end.
    let mut reader = Reader::new(LIMIT);
    let mut first = client_frame(false, 0x1, b"ok \xff");
    assert!(matches!(
        reader.read(&mut first),
        Err(ProtocolError::InvalidUtf8(_))
    ));
    // A character cut by a fragment's end is fine if the next fragment completes it...
    let euro = "€".as_bytes();
    let mut split = client_frame(false, 0x1, &euro[..1]);
    split.extend(client_frame(true, 0x0, &euro[1..]));
    assert_eq!(
        messages(&mut Reader::new(LIMIT), split).unwrap(),
        [("text".to_owned(), euro.to_vec())]
    );
    // ...and invalid if the message ends with it cut.
    let mut cut = client_frame(false, 0x1, b"a");
    cut.extend(client_frame(true, 0x0, &euro[..2]));
    assert!(matches!(
        messages(&mut Reader::new(LIMIT), cut),
        Err(ProtocolError::InvalidUtf8(_))
    ));
}

#[test]
fn binary_messages_are_not_checked_for_utf8() {
    let got = messages(
        &mut Reader::new(LIMIT),
        client_frame(true, 0x2, b"\xff\xfe"),
    )
    .unwrap();
    assert_eq!(got, [("binary".to_owned(), b"\xff\xfe".to_vec())]);
}

#[test]
fn close_frames_give_their_code_and_reason() {
    let mut with_reason = 1000_u16.to_be_bytes().to_vec();
    with_reason.extend_from_slice(b"bye");
    let mut input = client_frame(true, 0x8, &with_reason);
    input.extend(client_frame(true, 0x8, b""));
    input.extend(client_frame(true, 0x8, &4999_u16.to_be_bytes()));
    assert_eq!(
        messages(&mut Reader::new(LIMIT), input).unwrap(),
        [
            ("close".to_owned(), with_reason),
            ("close".to_owned(), Vec::new()),
            ("close".to_owned(), 4999_u16.to_be_bytes().to_vec()),
        ]
    );
    let mut bad_reason = 1000_u16.to_be_bytes().to_vec();
    bad_reason.push(0xff);
    assert!(matches!(
        messages(
            &mut Reader::new(LIMIT),
            client_frame(true, 0x8, &bad_reason)
        ),
        Err(ProtocolError::InvalidUtf8(_))
    ));
}

#[test]
fn unmasking_matches_the_bytewise_rule_for_every_length() {
    for len in 0..40 {
        let original: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let mut fast = original.clone();
        unmask(&mut fast, MASK);
        let slow: Vec<u8> = original
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4])
            .collect();
        assert_eq!(fast, slow, "length {len}");
    }
}

#[test]
fn server_frames_are_unmasked_with_the_shortest_length_encoding() {
    let mut out = Vec::new();
    write_text(&mut out, "hi");
    assert_eq!(out, [0x81, 2, b'h', b'i']);
    for (len, header) in [(125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
        let mut out = Vec::new();
        write_binary(&mut out, &vec![0; len]);
        assert_eq!(out.len(), len + header, "length {len}");
        assert_eq!(out[0], 0x82);
    }
    let mut close = Vec::new();
    write_close(&mut close, 1001, &"x".repeat(200));
    assert_eq!(close.len(), 2 + 2 + 123, "the reason is cut to 123 bytes");
    assert_eq!(&close[2..4], &1001_u16.to_be_bytes());
}
