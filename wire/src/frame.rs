//! Frames: the unit every byte between nodes travels in.
//!
//! ```text
//! u32 frame length   bytes after this field (8 + envelope + payload), ≤ FRAME_BYTES_MAX
//! u32 crc32c         CRC-32C (Castagnoli) of everything after this field
//! u32 envelope len   ≤ ENVELOPE_BYTES_MAX and ≤ frame length − 8
//! envelope           the typed message (request id, kind, ring epoch, body)
//! payload            raw object bytes, if any
//! ```
//! All integers little-endian. [`FrameDecoder`] reads frames from a byte stream incrementally
//! and refuses a frame before buffering it when its length is over the bound, and verifies the
//! checksum before handing out any byte of it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use crc_fast::{CrcAlgorithm, Digest};

/// Bytes of a frame's fixed header (length, checksum, envelope length).
pub const FRAME_HEADER_BYTES: usize = 12;
/// Largest envelope in bytes: room for a record's metadata (at most 64 KiB) and its keys.
pub const ENVELOPE_BYTES_MAX: usize = 128 * 1024;
/// Largest payload in bytes: a 4 MiB chunk with room to spare.
pub const PAYLOAD_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest frame in bytes after its length field (checksum, envelope length, envelope,
/// payload).
pub const FRAME_BYTES_MAX: usize = 8 + ENVELOPE_BYTES_MAX + PAYLOAD_BYTES_MAX;

/// One frame: a typed envelope and its raw payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The encoded message.
    pub envelope: Bytes,
    /// Raw bytes that go with it (object data), possibly empty.
    pub payload: Bytes,
}

/// Why a frame was refused; the connection that sent it is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field announces more than the decoder accepts (at most [`FRAME_BYTES_MAX`]),
    /// or less than the fixed header.
    #[error(
        "frame length {length} outside the accepted range (8..={FRAME_BYTES_MAX} bytes, less during the handshake)"
    )]
    BadLength {
        /// The announced length.
        length: u64,
    },
    /// The envelope length is over [`ENVELOPE_BYTES_MAX`] or past the frame's end.
    #[error("envelope length {envelope} does not fit a frame of {length} bytes")]
    BadEnvelopeLength {
        /// The announced envelope length.
        envelope: u64,
        /// The frame length.
        length: u64,
    },
    /// The checksum does not match the bytes.
    #[error("frame checksum mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    Checksum {
        /// The checksum in the header.
        expected: u32,
        /// The checksum of the bytes received.
        actual: u32,
    },
    /// The frame to send is larger than the bounds allow.
    #[error("frame too large to send: envelope {envelope} bytes, payload {payload} bytes")]
    TooLarge {
        /// Envelope bytes.
        envelope: usize,
        /// Payload bytes.
        payload: usize,
    },
}

fn crc32c(parts: &[&[u8]]) -> u32 {
    let mut digest = Digest::new(CrcAlgorithm::Crc32Iscsi);
    for part in parts {
        digest.update(part);
    }
    // CRC-32C is 32 bits wide; the digest returns it in a u64.
    digest.finalize() as u32
}

impl Frame {
    /// Appends the encoded frame to `out`; refuses an envelope or payload over the bounds.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        out.reserve(FRAME_HEADER_BYTES + self.envelope.len() + self.payload.len());
        self.encode_head(out)?;
        out.put_slice(&self.payload);
        Ok(())
    }

    /// Refuses an envelope over [`ENVELOPE_BYTES_MAX`] or a payload over [`PAYLOAD_BYTES_MAX`]:
    /// such a frame cannot be sent.
    pub fn check_bounds(&self) -> Result<(), FrameError> {
        let (envelope, payload) = (self.envelope.len(), self.payload.len());
        if envelope > ENVELOPE_BYTES_MAX || payload > PAYLOAD_BYTES_MAX {
            return Err(FrameError::TooLarge { envelope, payload });
        }
        Ok(())
    }

    /// Appends everything but the payload (header, envelope) to `out`: the payload is then sent
    /// as it is, without copying it. Refuses an envelope or payload over the bounds.
    pub fn encode_head(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        self.check_bounds()?;
        let (envelope, payload) = (self.envelope.len(), self.payload.len());
        // Both bounds keep every length below u32::MAX.
        let envelope_len = (envelope as u32).to_le_bytes();
        let length = (8 + envelope + payload) as u32;
        let crc = crc32c(&[&envelope_len, &self.envelope, &self.payload]);
        out.reserve(FRAME_HEADER_BYTES + envelope);
        out.put_u32_le(length);
        out.put_u32_le(crc);
        out.put_slice(&envelope_len);
        out.put_slice(&self.envelope);
        Ok(())
    }
}

/// Reads frames out of a byte stream as its bytes arrive.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Largest frame length accepted (≤ [`FRAME_BYTES_MAX`]).
    max_length: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self {
            max_length: FRAME_BYTES_MAX,
        }
    }
}

impl FrameDecoder {
    /// A decoder for a fresh stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts frames of at most `bytes` after the length field (at most [`FRAME_BYTES_MAX`]):
    /// a handshake, whose messages are small, reserves no more than that for a stranger.
    pub fn limit_frames_to(&mut self, bytes: usize) {
        self.max_length = bytes.clamp(8, FRAME_BYTES_MAX);
    }

    /// The next whole, verified frame at the front of `buf` (consumed), None if more bytes are
    /// needed, or the error that must close the connection. A bad length is refused from the
    /// first 4 bytes, before the frame is buffered.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if !(8..=self.max_length).contains(&length) {
            return Err(FrameError::BadLength {
                length: length as u64,
            });
        }
        if buf.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let envelope = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
        if envelope > ENVELOPE_BYTES_MAX || envelope > length - 8 {
            return Err(FrameError::BadEnvelopeLength {
                envelope: envelope as u64,
                length: length as u64,
            });
        }
        if buf.len() < 4 + length {
            buf.reserve(4 + length - buf.len());
            return Ok(None);
        }
        let expected = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let actual = crc32c(&[&buf[8..4 + length]]);
        if expected != actual {
            return Err(FrameError::Checksum { expected, actual });
        }
        buf.advance(FRAME_HEADER_BYTES);
        let mut body = buf.split_to(length - 8).freeze();
        let envelope = body.split_to(envelope);
        Ok(Some(Frame {
            envelope,
            payload: body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(envelope: &[u8], payload: &[u8]) -> Frame {
        Frame {
            envelope: Bytes::copy_from_slice(envelope),
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut out = BytesMut::new();
        for f in frames {
            f.encode(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn frames_round_trip_whole_and_byte_by_byte() {
        let frames = [
            frame(b"hello", b""),
            frame(b"", b"payload only"),
            frame(b"env", &[7u8; 100_000]),
        ];
        let all = encoded(&frames);
        let mut decoder = FrameDecoder::new();
        let mut buf = all.clone();
        for want in &frames {
            assert_eq!(decoder.decode(&mut buf).unwrap().as_ref(), Some(want));
        }
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        // The same bytes arriving one at a time give the same frames.
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for byte in all.iter() {
            buf.put_u8(*byte);
            while let Some(f) = decoder.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let good = encoded(&[frame(b"envelope", b"payload bytes")]);
        for byte in 4..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                let result = FrameDecoder::new().decode(&mut bad);
                assert!(
                    matches!(
                        result,
                        Err(FrameError::Checksum { .. } | FrameError::BadEnvelopeLength { .. })
                    ),
                    "byte {byte} bit {bit}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn oversized_and_undersized_lengths_are_refused_from_four_bytes() {
        for length in [0u32, 7, (FRAME_BYTES_MAX + 1) as u32, u32::MAX] {
            let mut buf = BytesMut::from(&length.to_le_bytes()[..]);
            assert_eq!(
                FrameDecoder::new().decode(&mut buf),
                Err(FrameError::BadLength {
                    length: u64::from(length)
                })
            );
        }
        let mut buf = BytesMut::new();
        buf.put_u32_le(20);
        buf.put_u32_le(0);
        buf.put_u32_le(13);
        assert!(matches!(
            FrameDecoder::new().decode(&mut buf),
            Err(FrameError::BadEnvelopeLength { .. })
        ));
        let too_big = Frame {
            envelope: Bytes::from(vec![0; ENVELOPE_BYTES_MAX + 1]),
            payload: Bytes::new(),
        };
        assert!(too_big.encode(&mut BytesMut::new()).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut buf = BytesMut::new();
            for _ in 0..64 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.put_u8(state as u8);
            }
            let mut decoder = FrameDecoder::new();
            while let Ok(Some(_)) = decoder.decode(&mut buf) {}
        }
    }
}
