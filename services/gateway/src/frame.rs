//! gRPC's length-prefixed messages: one flag byte (compressed or not), a 4-byte big-endian
//! length, the message. The door never asks for compression, so a compressed frame is an error.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The peer compressed a message although the door did not offer an encoding.
    #[error("the response message is compressed, which the front door did not ask for")]
    Compressed,
    /// A frame announced more than the limit.
    #[error("a response message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The stream ended inside a frame.
    #[error("the response ended inside a message")]
    Truncated,
}

/// One uncompressed frame holding `message`.
pub fn encode(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(message.len() + 5);
    frame.put_u8(0);
    // Messages are bounded by the server's limit, far below 4 GiB.
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(message);
    frame.freeze()
}

/// Splits a byte stream into messages.
#[derive(Debug)]
pub struct FrameReader {
    buffer: BytesMut,
    limit: usize,
}

impl FrameReader {
    /// A reader refusing messages over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            limit,
        }
    }

    /// Adds bytes from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next complete message, if one is buffered.
    ///
    /// # Errors
    ///
    /// A compressed or oversized frame.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        if self.buffer[0] != 0 {
            return Err(FrameError::Compressed);
        }
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if length > self.limit {
            return Err(FrameError::TooLarge(length));
        }
        if self.buffer.len() < 5 + length {
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some(self.buffer.split_to(length).freeze()))
    }

    /// Checks nothing is left over at the end of the stream.
    ///
    /// # Errors
    ///
    /// [`FrameError::Truncated`] when a partial frame remains.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks_are_reassembled() {
        let mut stream = encode(b"hello").to_vec();
        stream.extend_from_slice(&encode(b""));
        stream.extend_from_slice(&encode(b"world"));
        let mut reader = FrameReader::new(64);
        let mut out = Vec::new();
        for chunk in stream.chunks(3) {
            reader.push(chunk);
            while let Some(message) = reader.next_message().unwrap_or_else(|e| panic!("{e}")) {
                out.push(message);
            }
        }
        assert_eq!(
            out,
            vec![Bytes::from("hello"), Bytes::new(), Bytes::from("world")]
        );
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn compressed_oversized_and_truncated_frames_are_errors() {
        let mut reader = FrameReader::new(4);
        reader.push(&[1, 0, 0, 0, 1, 9]);
        assert_eq!(reader.next_message(), Err(FrameError::Compressed));
        let mut reader = FrameReader::new(4);
        reader.push(&encode(b"hello"));
        assert_eq!(reader.next_message(), Err(FrameError::TooLarge(5)));
        let mut reader = FrameReader::new(64);
        reader.push(&encode(b"hello")[..4]);
        assert_eq!(reader.next_message(), Ok(None));
        assert_eq!(reader.finish(), Err(FrameError::Truncated));
    }
}
