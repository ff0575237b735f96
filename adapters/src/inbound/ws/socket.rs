//! A server WebSocket over the upgraded connection: bytes in, messages out, through the
//! [`codec`](super::codec).
//!
//! Memory is what decides how many connections one process holds, and most connections are
//! idle most of the time, so an idle one holds no buffer: on a plain TCP connection the
//! socket waits for readability first and only then takes a buffer to read into, and gives
//! it back once every byte in it has been used. While streaming, a message is read whole
//! into one buffer (one `read` call for a typical audio message) and handed out in place.
//!
//! Replies are queued, not written one by one: the connection task flushes them once no
//! other whole message is waiting to be read, so the replies to a burst of messages leave in
//! one write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::codec::{self, Frame, Parsed, Place, ProtocolError, Reader};

/// Bytes asked for at once when the frame being read does not need more: one `read` takes a
/// typical audio message (3,200 bytes of PCM as base64 is about 4.3 KB) and several small ones.
pub(crate) const DEFAULT_READ_SIZE: usize = 16 * 1024;

/// Output queued beyond this is written at once rather than coalesced further.
const FLUSH_AT: usize = 64 * 1024;

/// Any stream a WebSocket can run over besides plain TCP (TLS, or a connection hyper did not
/// hand back as it came).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// The connection under the WebSocket.
pub(crate) enum Io {
    /// Plain TCP: waits for readability without holding a buffer.
    Tcp(TcpStream),
    /// Anything else; holds its read buffer while it waits.
    Other(Box<dyn Stream>),
}

impl Io {
    /// The connection hyper upgraded, unwrapped to the stream our server gave it where it can
    /// be, with the bytes hyper had read past the handshake.
    pub(crate) fn from_upgraded(upgraded: Upgraded) -> (Self, Bytes) {
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => return (Self::Tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => upgraded,
        };
        type Tls = tokio_rustls::server::TlsStream<TcpStream>;
        match upgraded.downcast::<TokioIo<Tls>>() {
            Ok(parts) => (Self::Other(Box::new(parts.io.into_inner())), parts.read_buf),
            Err(upgraded) => (Self::Other(Box::new(TokioIo::new(upgraded))), Bytes::new()),
        }
    }
}

/// A message read, valid until the next read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping (its pong is queued) or a pong: the peer is alive.
    Control,
}

/// Why no message could be read. After any of them, the socket is done reading.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The client broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The client sent a close frame (with this code, if any); the answer is queued.
    #[error("the client closed the connection")]
    Closed(Option<u16>),
    /// The connection failed, or ended without a close frame.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
}

/// A server WebSocket.
pub(crate) struct WsSocket {
    io: Io,
    reader: Reader,
    /// Bytes read; those before `start` have been used.
    input: Vec<u8>,
    start: usize,
    /// Bytes of the message last handed out, used up at the next read.
    handed_out: usize,
    /// Frames queued to send; those before `sent` are written.
    out: Vec<u8>,
    sent: usize,
    read_size: usize,
    close_sent: bool,
}

impl WsSocket {
    /// A WebSocket over `io`, whose first bytes `early` the HTTP layer had already read.
    pub(crate) fn new(io: Io, early: &[u8], max_message: usize, read_size: usize) -> Self {
        Self {
            io,
            reader: Reader::new(max_message),
            input: early.to_vec(),
            start: 0,
            handed_out: 0,
            out: Vec::new(),
            sent: 0,
            read_size: read_size.max(codec::MAX_HEADER),
            close_sent: false,
        }
    }

    /// Reads the next message. Cancel-safe: a read interrupted in a `select!` loses nothing.
    ///
    /// # Errors
    /// [`ReadError`]: a protocol violation, the client's close, or a failed connection.
    pub(crate) async fn next(&mut self) -> Result<Incoming<'_>, ReadError> {
        self.start += std::mem::take(&mut self.handed_out);
        self.reader.release();
        let (place, text) = loop {
            let need = match self.reader.read(&mut self.input[self.start..])? {
                Parsed::Frame(frame, used) => {
                    let at = self.start;
                    match frame {
                        Frame::Text(place) => {
                            self.handed_out = used;
                            break (shift(place, at), true);
                        }
                        Frame::Binary(place) => {
                            self.handed_out = used;
                            break (shift(place, at), false);
                        }
                        Frame::Ping(range) => {
                            let payload = &self.input[at + range.start..at + range.end];
                            if !self.close_sent {
                                codec::write_pong(&mut self.out, payload);
                            }
                            self.start += used;
                            return Ok(Incoming::Control);
                        }
                        Frame::Pong => {
                            self.start += used;
                            return Ok(Incoming::Control);
                        }
                        Frame::Close(code) => {
                            self.start += used;
                            let code = code.map(|(code, _)| code);
                            if !self.close_sent {
                                // Echo the code, as RFC 6455 section 5.5.1 suggests.
                                codec::write_close(&mut self.out, code.unwrap_or(1000), "");
                                self.close_sent = true;
                            }
                            return Err(ReadError::Closed(code));
                        }
                    }
                }
                Parsed::Consumed(used) => {
                    self.start += used;
                    continue;
                }
                Parsed::Incomplete(need) => need,
            };
            self.fill(need).await?;
        };
        let bytes = match place {
            Place::Input(range) => &self.input[range],
            Place::Assembled => self.reader.message(),
        };
        Ok(match text {
            true => Incoming::Text(codec::text(bytes)?),
            false => Incoming::Binary(bytes),
        })
    }

    /// Reads until the unused input holds `need` bytes.
    async fn fill(&mut self, need: usize) -> Result<(), ReadError> {
        // Used bytes go; an empty buffer goes altogether, so that waiting holds no memory.
        if self.start == self.input.len() {
            self.input = Vec::new();
        } else if self.start > 0 {
            self.input.copy_within(self.start.., 0);
            self.input.truncate(self.input.len() - self.start);
        }
        self.start = 0;
        while self.input.len() < need {
            let want = (need - self.input.len()).max(self.read_size);
            let read = match &mut self.io {
                Io::Tcp(tcp) => {
                    let input = &mut self.input;
                    std::future::poll_fn(|context| read_ready(tcp, context, input, want)).await?
                }
                Io::Other(stream) => {
                    self.input.reserve(want);
                    stream.read_buf(&mut self.input).await?
                }
            };
            if read == 0 {
                return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        Ok(())
    }

    /// Queues a text message.
    pub(crate) fn send_text(&mut self, text: &str) {
        if !self.close_sent {
            codec::write_text(&mut self.out, text);
        }
    }

    /// Queues a binary message.
    pub(crate) fn send_binary(&mut self, payload: &[u8]) {
        if !self.close_sent {
            codec::write_binary(&mut self.out, payload);
        }
    }

    /// Queues a ping.
    pub(crate) fn send_ping(&mut self) {
        if !self.close_sent {
            codec::write_ping(&mut self.out);
        }
    }

    /// Whether queued output should be written now: when no whole message waits to be read
    /// (its reply could join the others), or when much is queued.
    pub(crate) fn wants_flush(&self) -> bool {
        let queued = self.out.len() - self.sent;
        queued > 0 && (queued >= FLUSH_AT || !self.holds_whole_frame())
    }

    fn holds_whole_frame(&self) -> bool {
        let unused = &self.input[self.start + self.handed_out..];
        frame_len(unused).is_some_and(|len| len <= unused.len())
    }

    /// Writes what it can of the queue without waiting; whether all of it went. Most writes
    /// do, and then no timer or wait is set up for them.
    ///
    /// # Errors
    /// The I/O error of a failed write.
    pub(crate) fn try_flush(&mut self) -> io::Result<bool> {
        let Io::Tcp(tcp) = &mut self.io else {
            return Ok(self.sent == self.out.len());
        };
        while self.sent < self.out.len() {
            match tcp.try_write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.sent += written,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        self.out = Vec::new();
        self.sent = 0;
        Ok(true)
    }

    /// Writes everything queued. Cancel-safe: what was written is not written again.
    ///
    /// # Errors
    /// The I/O error of a failed write.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.out.len() {
            let pending = &self.out[self.sent..];
            let written = match &mut self.io {
                Io::Tcp(tcp) => match tcp.try_write(pending) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        tcp.writable().await?;
                        continue;
                    }
                    written => written?,
                },
                Io::Other(stream) => stream.write(pending).await?,
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.sent += written;
        }
        if let Io::Other(stream) = &mut self.io {
            stream.flush().await?;
        }
        // Written: the buffer goes, so that an idle connection holds none.
        self.out = Vec::new();
        self.sent = 0;
        Ok(())
    }

    /// Closes with `code` and `reason`: sends the close frame, waits (at most `timeout` for
    /// each step) for the client's, then ends the TCP connection.
    pub(crate) async fn close(&mut self, code: u16, reason: &str, timeout: Duration) {
        if !self.close_sent {
            codec::write_close(&mut self.out, code, reason);
            self.close_sent = true;
        }
        if !matches!(
            tokio::time::timeout(timeout, self.flush()).await,
            Ok(Ok(()))
        ) {
            return;
        }
        let answered = tokio::time::timeout(timeout, async {
            loop {
                match self.next().await {
                    Ok(_) => {}
                    Err(ReadError::Closed(_)) => return true,
                    Err(_) => return false,
                }
            }
        })
        .await;
        if answered.is_err() {
            tracing::debug!("client did not answer the close frame in time");
        }
        self.shutdown(timeout).await;
    }

    /// After the client's close frame: sends the queued answer and ends the connection.
    pub(crate) async fn finish(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.flush()).await;
        self.shutdown(timeout).await;
    }

    async fn shutdown(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            match &mut self.io {
                Io::Tcp(tcp) => tcp.shutdown().await,
                Io::Other(stream) => stream.shutdown().await,
            }
        })
        .await;
    }
}

/// Waits until `tcp` is readable, then reads what it has into `input`, with room for at least
/// `want` bytes. The room is made only once there is something to read, and given back when
/// the readiness was stale, so that a connection waiting for its client holds no buffer.
///
/// Through the task's own context rather than `readable()` then `try_read`: the readiness
/// poll counts against tokio's cooperative budget, so a long run of reads (a 16 MiB message)
/// yields to other tasks instead of spinning once the budget is spent; and after a short
/// read `poll_read` forgets the readiness, which saves the next wait a `read` that would
/// only find nothing.
fn read_ready(
    tcp: &mut TcpStream,
    context: &mut Context<'_>,
    input: &mut Vec<u8>,
    want: usize,
) -> Poll<io::Result<usize>> {
    ready!(tcp.poll_read_ready(context))?;
    input.reserve(want);
    let read = tokio_util::io::poll_read_buf(Pin::new(tcp), context, input);
    if read.is_pending() && input.is_empty() {
        *input = Vec::new();
    }
    read
}

/// A place in a frame at offset `at` of the input, as a place in the whole input.
fn shift(place: Place, at: usize) -> Place {
    match place {
        Place::Input(range) => Place::Input(at + range.start..at + range.end),
        Place::Assembled => Place::Assembled,
    }
}

/// The length of the frame starting `input`, once its header is there.
fn frame_len(input: &[u8]) -> Option<usize> {
    let second = *input.get(1)?;
    let (payload, header) = match second & 0x7F {
        126 => (
            u64::from(u16::from_be_bytes(input.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(input.get(2..10)?.try_into().ok()?), 10),
        len => (u64::from(len), 2),
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    usize::try_from(payload + header + mask).ok()
}
