//! Deterministic object content derived from (key, size), and its verification on read.
//!
//! Byte `p` of an object is byte `p % 8` (little endian) of word
//! `TABLE[(p / 8 + offset) % TABLE_WORDS] ^ mix64(seed ^ period * GOLDEN)` with
//! `period = (p / 8) / TABLE_WORDS` and `seed = xxh3_64_with_seed(key, size)`, `offset` from the
//! seed's high bits. Generation is a table lookup and an XOR per 8 bytes (memory speed, so the
//! client is not the bottleneck); two objects that differ in key or size differ almost everywhere,
//! and every 64 KiB period of one object differs from the others, so a server returning another
//! object, a stale version, a shifted range or a repeated chunk fails verification.

use std::sync::OnceLock;

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::rng::{Rng, mix64};

/// Words in the shared pattern table (64 KiB of random bytes).
const TABLE_WORDS: usize = 8192;
/// Bytes per pattern word.
const WORD_BYTES: u64 = 8;
/// Seed of the pattern table: fixed, so content is the same across runs and machines.
const TABLE_SEED: u64 = 0x6c65_6f66_732d_6265; // "leofs-be"
/// Odd constant that separates the XOR masks of consecutive periods.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn table() -> &'static [u64] {
    static TABLE: OnceLock<Vec<u64>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut rng = Rng::new(TABLE_SEED);
        (0..TABLE_WORDS).map(|_| rng.next_u64()).collect()
    })
}

/// The content of one object: a function of its key and size only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Content {
    seed: u64,
    offset_words: usize,
    size_bytes: u64,
}

impl Content {
    /// The content of object `key` of `size_bytes` bytes.
    pub fn new(key: &[u8], size_bytes: u64) -> Self {
        let seed = xxh3_64_with_seed(key, size_bytes);
        Self {
            seed,
            offset_words: (seed >> 40) as usize % TABLE_WORDS,
            size_bytes,
        }
    }

    /// Object size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Writes bytes `position .. position + out.len()` of the object into `out`.
    pub fn fill(&self, position: u64, out: &mut [u8]) {
        let head = ((WORD_BYTES - position % WORD_BYTES) % WORD_BYTES).min(out.len() as u64);
        let (head_bytes, rest) = out.split_at_mut(head as usize);
        for (i, byte) in head_bytes.iter_mut().enumerate() {
            let at = position + i as u64;
            *byte = self.word(at / WORD_BYTES).to_le_bytes()[(at % WORD_BYTES) as usize];
        }
        let mut word_index = (position + head) / WORD_BYTES;
        let mut words = rest.chunks_exact_mut(WORD_BYTES as usize);
        let table = table();
        while words.len() > 0 {
            // One period at a time: a fixed mask and consecutive table slots.
            let period = word_index / TABLE_WORDS as u64;
            let mask = self.period_mask(period);
            let in_period = TABLE_WORDS - (word_index % TABLE_WORDS as u64) as usize;
            let mut slot = (word_index as usize + self.offset_words) % TABLE_WORDS;
            for chunk in words.by_ref().take(in_period) {
                chunk.copy_from_slice(&(table[slot] ^ mask).to_le_bytes());
                slot = (slot + 1) % TABLE_WORDS;
                word_index += 1;
            }
        }
        let tail = words.into_remainder();
        let word = self.word(word_index).to_le_bytes();
        let tail_len = tail.len();
        tail.copy_from_slice(&word[..tail_len]);
    }

    /// The XOR mask of one `TABLE_WORDS`-word period.
    fn period_mask(&self, period: u64) -> u64 {
        mix64(self.seed ^ period.wrapping_mul(GOLDEN))
    }

    /// Word `word_index` of the object.
    fn word(&self, word_index: u64) -> u64 {
        let slot = (word_index as usize + self.offset_words) % TABLE_WORDS;
        table()[slot] ^ self.period_mask(word_index / TABLE_WORDS as u64)
    }

    /// The whole object as one buffer (PUT bodies).
    pub fn bytes(&self) -> Bytes {
        self.range(0, self.size_bytes)
    }

    /// Bytes `start .. start + len` of the object (multipart part bodies).
    pub fn range(&self, start: u64, len: u64) -> Bytes {
        let mut buffer = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.fill(start, &mut buffer);
        Bytes::from(buffer)
    }

    /// A streaming checker for a body that should equal this content.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            content: *self,
            position: 0,
            scratch: Vec::new(),
            first_mismatch: None,
        }
    }
}

/// Why a body did not match the expected content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A byte differs.
    #[error("content differs from the expected pattern at byte {0}")]
    Mismatch(u64),
    /// The body length is not the object size.
    #[error("body has {actual_bytes} bytes, expected {expected_bytes}")]
    Length {
        /// Bytes received.
        actual_bytes: u64,
        /// Bytes expected.
        expected_bytes: u64,
    },
}

/// Checks a body chunk by chunk against a [`Content`], without buffering the body.
#[derive(Debug)]
pub struct Verifier {
    content: Content,
    position: u64,
    scratch: Vec<u8>,
    first_mismatch: Option<u64>,
}

impl Verifier {
    /// Checks the next `chunk` of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        let end = self.position + chunk.len() as u64;
        if self.first_mismatch.is_none() && end <= self.content.size_bytes {
            self.scratch.resize(chunk.len(), 0);
            self.content.fill(self.position, &mut self.scratch);
            if self.scratch != chunk {
                let at = self
                    .scratch
                    .iter()
                    .zip(chunk)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                self.first_mismatch = Some(self.position + at as u64);
            }
        }
        self.position = end;
    }

    /// Bytes seen so far.
    pub fn bytes_seen(&self) -> u64 {
        self.position
    }

    /// The verdict once the body has ended.
    pub fn finish(self) -> Result<u64, VerifyError> {
        if self.position != self.content.size_bytes {
            return Err(VerifyError::Length {
                actual_bytes: self.position,
                expected_bytes: self.content.size_bytes,
            });
        }
        match self.first_mismatch {
            Some(at) => Err(VerifyError::Mismatch(at)),
            None => Ok(self.position),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_depends_on_key_and_size() {
        let a = Content::new(b"k1", 100_000).bytes();
        assert_eq!(a, Content::new(b"k1", 100_000).bytes());
        let other_key = Content::new(b"k2", 100_000).bytes();
        let other_size = Content::new(b"k1", 100_001).bytes();
        let same_prefix = a
            .iter()
            .zip(other_key.iter())
            .filter(|(x, y)| x == y)
            .count();
        assert!(
            same_prefix < 1_000,
            "unrelated contents agree on {same_prefix} bytes"
        );
        assert_ne!(a[..], other_size[..100_000]);
    }

    #[test]
    fn fill_at_any_offset_matches_the_whole() {
        let content = Content::new(b"object", 200_003);
        let whole = content.bytes();
        for (start, len) in [(0, 1), (3, 17), (8, 8), (65_530, 20), (131_071, 68_932)] {
            assert_eq!(
                content.range(start, len)[..],
                whole[start as usize..(start + len) as usize]
            );
        }
    }

    #[test]
    fn fill_matches_a_byte_by_byte_definition() {
        let content = Content::new(b"def", 3 * 65_536 + 5);
        let whole = content.bytes();
        for (position, byte) in whole.iter().enumerate() {
            let word = content.word(position as u64 / WORD_BYTES).to_le_bytes();
            assert_eq!(
                *byte,
                word[position % WORD_BYTES as usize],
                "byte {position}"
            );
        }
    }

    #[test]
    fn periods_differ_so_repeated_chunks_are_caught() {
        let content = Content::new(b"big", 4 << 20);
        let whole = content.bytes();
        let chunk = 64 * 1024;
        assert_ne!(whole[..chunk], whole[chunk..2 * chunk]);
        assert_ne!(whole[..1 << 20], whole[1 << 20..2 << 20]);
    }

    #[test]
    fn verifier_accepts_the_content_in_any_chunking() {
        let content = Content::new(b"v", 70_000);
        let body = content.bytes();
        let mut verifier = content.verifier();
        for piece in body.chunks(4_099) {
            verifier.update(piece);
        }
        assert_eq!(verifier.finish(), Ok(70_000));
        let mut empty = Content::new(b"e", 0).verifier();
        empty.update(&[]);
        assert_eq!(empty.finish(), Ok(0));
    }

    #[test]
    fn verifier_reports_corruption_truncation_and_extra_bytes() {
        let content = Content::new(b"v", 10_000);
        let mut body = content.bytes().to_vec();
        body[7_777] ^= 1;
        let mut verifier = content.verifier();
        verifier.update(&body[..5_000]);
        verifier.update(&body[5_000..]);
        assert_eq!(verifier.finish(), Err(VerifyError::Mismatch(7_777)));

        let mut short = content.verifier();
        short.update(&content.bytes()[..9_999]);
        assert!(matches!(
            short.finish(),
            Err(VerifyError::Length {
                actual_bytes: 9_999,
                ..
            })
        ));

        let mut long = content.verifier();
        long.update(&content.bytes());
        long.update(b"x");
        assert!(matches!(
            long.finish(),
            Err(VerifyError::Length {
                actual_bytes: 10_001,
                ..
            })
        ));

        let mut wrong_object = content.verifier();
        wrong_object.update(&Content::new(b"w", 10_000).bytes());
        assert!(matches!(
            wrong_object.finish(),
            Err(VerifyError::Mismatch(_))
        ));
    }
}
