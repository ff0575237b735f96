//! RFC 6455 framing, server side, without I/O: reading client frames out of a buffer and
//! writing server frames into one.
//!
//! Ours rather than a library's because of what the service needs from it: a connection that
//! has nothing to read holds no buffer at all (see `socket`), a frame is unmasked and read in
//! place where it arrived (no copy into a message object), and replies are appended to one
//! output buffer so that several go out in one write.
//!
//! The reader checks every rule a server must enforce: client frames are masked, reserved
//! bits and opcodes are unused, control frames are short and unfragmented, continuations
//! continue something, messages stay within the size limit, text is UTF-8 (checked as each
//! fragment arrives, so a bad one fails at once), and close frames carry a valid code and a
//! UTF-8 reason.

use std::ops::Range;

/// The largest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
pub(crate) const MAX_HEADER: usize = 14;

/// Why the client's bytes cannot be read as WebSocket frames. Each ends the connection with
/// the close code RFC 6455 gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// The frame breaks the framing rules (close 1002).
    #[error("{0}")]
    Violation(&'static str),
    /// A text message, or a close reason, that is not UTF-8 (close 1007).
    #[error("{0}")]
    InvalidUtf8(&'static str),
    /// A message larger than the limit (close 1009).
    #[error("message of at least {size} bytes is larger than the limit of {max} bytes")]
    TooBig {
        /// The size the message has reached, or declared.
        size: u64,
        /// The limit.
        max: usize,
    },
}

/// A whole message or a control frame, read out of the buffer; the ranges index the buffer
/// the message is in (the input buffer, or the codec's own for a fragmented message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A text message. A reassembled one has been checked for UTF-8 as it arrived; one in a
    /// single frame is checked by [`text`] as it is taken, so that its bytes are read once.
    Text(Place),
    /// A binary message.
    Binary(Place),
    /// A ping, whose payload the pong must carry.
    Ping(Range<usize>),
    /// A pong.
    Pong,
    /// A close frame: its code and reason (valid UTF-8), if it has a code.
    Close(Option<(u16, Range<usize>)>),
}

/// Where a message's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// In the input buffer, unmasked in place.
    Input(Range<usize>),
    /// Reassembled from fragments, in [`Reader::message`].
    Assembled,
}

/// What reading the buffer gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A frame, and the bytes of the input it used (a prefix).
    Frame(Frame, usize),
    /// A fragment was taken into the codec's message; `usize` bytes of input were used.
    Consumed(usize),
    /// The buffer holds no whole frame: at least this many bytes in all are needed.
    Incomplete(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// Reads client frames, and keeps a fragmented message until its last fragment.
#[derive(Debug)]
pub(crate) struct Reader {
    max_message: usize,
    /// The message being reassembled from fragments, if any.
    fragmented: Option<Kind>,
    message: Vec<u8>,
    /// How much of a fragmented text message is known to be UTF-8 so far.
    checked: usize,
}

impl Reader {
    /// A reader taking messages of up to `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            fragmented: None,
            message: Vec::new(),
            checked: 0,
        }
    }

    /// A reassembled message, after [`Place::Assembled`]; valid until the next read.
    pub(crate) fn message(&self) -> &[u8] {
        &self.message
    }

    /// Whether nothing is held (no fragmented message in progress).
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.fragmented.is_none()
    }

    /// Gives back the memory of the last reassembled message, which may have been large.
    pub(crate) fn release(&mut self) {
        if self.fragmented.is_none() {
            self.message = Vec::new();
        }
    }

    /// Reads the first frame of `input`, unmasking it in place.
    ///
    /// # Errors
    /// [`ProtocolError`] when the client broke the protocol; the connection must then close.
    pub(crate) fn read(&mut self, input: &mut [u8]) -> Result<Parsed, ProtocolError> {
        let Some(header) = Header::parse(input)? else {
            return Ok(Parsed::Incomplete(header_len(input)));
        };
        let total = header.len + header.payload;
        let payload_len = usize::try_from(header.payload).unwrap_or(usize::MAX);
        self.check_size(&header)?;
        let Some(end) = usize::try_from(total)
            .ok()
            .filter(|end| *end <= input.len())
        else {
            return Ok(Parsed::Incomplete(
                usize::try_from(total).unwrap_or(usize::MAX),
            ));
        };
        let range = header.len as usize..end;
        unmask(&mut input[range.clone()], header.mask);
        let payload = &input[range.clone()];
        let frame = match header.opcode {
            OP_CONTINUATION => return self.continue_message(&header, payload, end),
            OP_TEXT | OP_BINARY if self.fragmented.is_some() => {
                return Err(ProtocolError::Violation(
                    "a new message began before the fragmented one ended",
                ));
            }
            OP_TEXT | OP_BINARY if !header.fin => {
                let kind = if header.opcode == OP_TEXT {
                    Kind::Text
                } else {
                    Kind::Binary
                };
                self.fragmented = Some(kind);
                self.message.clear();
                self.message.reserve(payload_len);
                self.message.extend_from_slice(payload);
                self.checked = 0;
                self.check_fragment_utf8(false)?;
                return Ok(Parsed::Consumed(end));
            }
            OP_TEXT => Frame::Text(Place::Input(range)),
            OP_BINARY => Frame::Binary(Place::Input(range)),
            OP_PING => Frame::Ping(range),
            OP_PONG => Frame::Pong,
            OP_CLOSE => Frame::Close(close_payload(payload)?.map(|(code, reason)| {
                (code, range.start + reason.start..range.start + reason.end)
            })),
            _ => unreachable!("Header::parse refuses other opcodes"),
        };
        Ok(Parsed::Frame(frame, end))
    }

    fn check_size(&self, header: &Header) -> Result<(), ProtocolError> {
        if header.opcode >= OP_CLOSE {
            return Ok(());
        }
        let held = if header.opcode == OP_CONTINUATION {
            self.message.len() as u64
        } else {
            0
        };
        let size = held.saturating_add(header.payload);
        if size > self.max_message as u64 {
            return Err(ProtocolError::TooBig {
                size,
                max: self.max_message,
            });
        }
        Ok(())
    }

    fn continue_message(
        &mut self,
        header: &Header,
        payload: &[u8],
        end: usize,
    ) -> Result<Parsed, ProtocolError> {
        let Some(kind) = self.fragmented else {
            return Err(ProtocolError::Violation(
                "a continuation frame without a message to continue",
            ));
        };
        self.message.extend_from_slice(payload);
        if kind == Kind::Text {
            self.check_fragment_utf8(header.fin)?;
        }
        if !header.fin {
            return Ok(Parsed::Consumed(end));
        }
        self.fragmented = None;
        let frame = match kind {
            Kind::Text => Frame::Text(Place::Assembled),
            Kind::Binary => Frame::Binary(Place::Assembled),
        };
        Ok(Parsed::Frame(frame, end))
    }

    /// Checks the text received so far; a character cut by a fragment's end is only an error
    /// if the message ends there.
    fn check_fragment_utf8(&mut self, last: bool) -> Result<(), ProtocolError> {
        if self.fragmented != Some(Kind::Text) {
            return Ok(());
        }
        // From where the last check stopped: before a character cut at the previous end.
        let from = self.checked;
        match std::str::from_utf8(&self.message[from..]) {
            Ok(_) => {
                self.checked = self.message.len();
                Ok(())
            }
            Err(error) if error.error_len().is_none() && !last => {
                self.checked = from + error.valid_up_to();
                Ok(())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8(
                "text message is not valid UTF-8",
            )),
        }
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A frame header, read.
#[derive(Debug)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Bytes of the header.
    len: u64,
    /// Bytes of the payload.
    payload: u64,
}

impl Header {
    /// The header at the start of `input`, `None` if it is not all there yet.
    fn parse(input: &[u8]) -> Result<Option<Self>, ProtocolError> {
        let [first, second, ..] = *input else {
            return Ok(None);
        };
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
        if first & 0x70 != 0 {
            return Err(ProtocolError::Violation(
                "reserved bits set without an extension",
            ));
        }
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(ProtocolError::Violation("reserved opcode"));
        }
        if second & 0x80 == 0 {
            return Err(ProtocolError::Violation("client frame is not masked"));
        }
        let short = u64::from(second & 0x7F);
        if opcode >= OP_CLOSE && (!fin || short > 125) {
            return Err(ProtocolError::Violation(
                "control frame fragmented or longer than 125 bytes",
            ));
        }
        let (payload, at) = match short {
            126 => match input.get(2..4) {
                Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
                None => return Ok(None),
            },
            127 => match input.get(2..10) {
                Some(bytes) => {
                    let len = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
                    if len >> 63 != 0 {
                        return Err(ProtocolError::Violation(
                            "frame length has its most significant bit set",
                        ));
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            len => (len, 2),
        };
        let Some(mask) = input.get(at..at + 4) else {
            return Ok(None);
        };
        Ok(Some(Self {
            fin,
            opcode,
            mask: mask.try_into().expect("4 bytes"),
            len: at as u64 + 4,
            payload,
        }))
    }
}

/// How many bytes a header that starts `input` needs, at least.
fn header_len(input: &[u8]) -> usize {
    match input.get(1).map(|second| second & 0x7F) {
        None => 2,
        Some(126) => 8,
        Some(127) => MAX_HEADER,
        Some(_) => 6,
    }
}

/// The code and the reason's range within `payload`, after checking both.
fn close_payload(payload: &[u8]) -> Result<Option<(u16, Range<usize>)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::Violation(
            "close frame with a one-byte payload",
        )),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_valid_close_code(code) {
                return Err(ProtocolError::Violation("close frame with an invalid code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(ProtocolError::InvalidUtf8(
                    "close reason is not valid UTF-8",
                ));
            }
            Ok(Some((code, 2..payload.len())))
        }
    }
}

/// Codes a peer may send (RFC 6455 section 7.4 and the IANA registry): the defined ones, and
/// 3000-4999 for libraries and applications; 1004-1006 and 1015 must never be sent.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The text of a text message.
///
/// # Errors
/// [`ProtocolError::InvalidUtf8`] when it is not UTF-8.
pub(crate) fn text(payload: &[u8]) -> Result<&str, ProtocolError> {
    simdutf8::basic::from_utf8(payload)
        .map_err(|_| ProtocolError::InvalidUtf8("text frame is not valid UTF-8"))
}

/// XORs `payload` with the repeating 4-byte `mask`, eight bytes at a time.
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// Appends a server frame (unmasked, unfragmented) to `out`.
pub(crate) fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A text message.
pub(crate) fn write_text(out: &mut Vec<u8>, text: &str) {
    write_frame(out, OP_TEXT, text.as_bytes());
}

/// A binary message.
pub(crate) fn write_binary(out: &mut Vec<u8>, payload: &[u8]) {
    write_frame(out, OP_BINARY, payload);
}

/// The answer to a ping.
pub(crate) fn write_pong(out: &mut Vec<u8>, payload: &[u8]) {
    write_frame(out, OP_PONG, payload);
}

/// A ping, with no payload.
pub(crate) fn write_ping(out: &mut Vec<u8>) {
    write_frame(out, OP_PING, &[]);
}

/// A close frame with `code` and `reason`, cut to the 123 bytes a reason may have.
pub(crate) fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let reason = &reason[..reason.floor_char_boundary(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    write_frame(out, OP_CLOSE, &payload);
}

#[cfg(test)]
mod tests;
