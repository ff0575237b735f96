//! Audio chunks: the bytes a client streams, after any transport encoding has been removed.

use bytes::Bytes;

/// An audio chunk must hold at least one byte; an empty one carries nothing to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an audio chunk must not be empty")]
pub struct EmptyAudioChunk;

/// A non-empty run of audio bytes, in whatever format the client streams.
///
/// Cloning is cheap: the bytes are reference counted, so a sink can keep a chunk without
/// copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChunk(Bytes);

impl AudioChunk {
    /// Wraps decoded audio bytes.
    ///
    /// # Errors
    /// [`EmptyAudioChunk`] when `bytes` is empty.
    pub fn new(bytes: impl Into<Bytes>) -> Result<Self, EmptyAudioChunk> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(EmptyAudioChunk);
        }
        Ok(Self(bytes))
    }

    /// Number of audio bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a chunk is never empty. Present so `len` has its usual companion.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The audio bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The audio bytes, without copying.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_chunk_is_rejected() {
        assert_eq!(AudioChunk::new(Vec::new()), Err(EmptyAudioChunk));
    }

    #[test]
    fn a_chunk_keeps_its_bytes() {
        let chunk = AudioChunk::new(vec![1, 2, 3]).unwrap();
        assert_eq!((chunk.len(), chunk.as_bytes()), (3, &[1u8, 2, 3][..]));
    }
}
