//! The on-disk record: encoding, decoding and verification (byte layout in FORMAT.md).
//!
//! A record is a 112-byte little-endian header, the key, the metadata and the body, padded with
//! zeros to a multiple of 8 bytes. Two xxh3-64 checksums, both keyed by the segment's salt:
//! the *record checksum* covers header bytes 0..96, key, meta and body; the *header checksum*
//! covers header bytes 0..104 (so also the record checksum), key and meta. Each is computed as
//! `xxh3(payload, seed = xxh3(header part, seed = salt))`, so contiguous bytes hash in one call. The header checksum
//! alone makes the lengths trustworthy (a corrupt body is skipped by length) and lets `head`
//! verify metadata with a small read. This module never does I/O.

use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

use crate::{Hlc, MAX_BODY_BYTES, MAX_KEY_BYTES, MAX_META_BYTES, PartitionId, Summary};

/// "LEOR" in little-endian: first 4 bytes of every record.
pub(crate) const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"LEOR");
/// Record format version written by this build.
pub(crate) const RECORD_VERSION: u16 = 1;
/// Bytes of the fixed record header.
pub(crate) const HEADER_BYTES: usize = 112;
/// Records are packed on this alignment inside a batch.
pub(crate) const RECORD_ALIGN_BYTES: u64 = 8;
/// Offset of the record checksum inside the header (bytes before it are what it covers).
const RECORD_CHECKSUM_AT: usize = 96;
/// Offset of the header checksum inside the header.
const HEADER_CHECKSUM_AT: usize = 104;

/// What a record stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A value (key, meta, body).
    Put = 1,
    /// A deletion marker.
    Tombstone = 2,
    /// Forgets every entry of its partition with a lower LSN (no key, meta or body; see
    /// FORMAT.md §4.1).
    PartitionDrop = 3,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Put),
            2 => Some(Kind::Tombstone),
            3 => Some(Kind::PartitionDrop),
            _ => None,
        }
    }
}

/// The decoded fixed header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub kind: Kind,
    pub flags: u8,
    pub partition: PartitionId,
    pub key_len: u32,
    pub meta_len: u32,
    pub body_len: u64,
    pub hlc: Hlc,
    pub lsn: u64,
    pub life_seq: u64,
    pub summary: Summary,
    pub record_checksum: u64,
}

/// Length of a record on disk (header + key + meta + body, padded to 8 bytes).
pub(crate) fn record_len(key_len: usize, meta_len: usize, body_len: u64) -> u64 {
    (HEADER_BYTES as u64 + key_len as u64 + meta_len as u64 + body_len).div_ceil(RECORD_ALIGN_BYTES)
        * RECORD_ALIGN_BYTES
}

impl RecordHeader {
    /// Bytes of the whole record on disk, padding included.
    pub(crate) fn len(&self) -> u64 {
        record_len(self.key_len as usize, self.meta_len as usize, self.body_len)
    }

    /// Bytes covered by the header checksum after the header (key and meta).
    pub(crate) fn key_meta_len(&self) -> usize {
        self.key_len as usize + self.meta_len as usize
    }

    /// Writes the header fields (both checksums left zero) into `out[..HEADER_BYTES]`.
    pub(crate) fn write_fields(&self, out: &mut [u8]) {
        let h = &mut out[..HEADER_BYTES];
        h[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        h[4..6].copy_from_slice(&RECORD_VERSION.to_le_bytes());
        h[6] = self.kind as u8;
        h[7] = self.flags;
        h[8..12].copy_from_slice(&self.partition.to_le_bytes());
        h[12..16].copy_from_slice(&self.key_len.to_le_bytes());
        h[16..20].copy_from_slice(&self.meta_len.to_le_bytes());
        h[20..24].fill(0);
        h[24..32].copy_from_slice(&self.body_len.to_le_bytes());
        h[32..40].copy_from_slice(&self.hlc.physical_us.to_le_bytes());
        h[40..44].copy_from_slice(&self.hlc.logical.to_le_bytes());
        h[44..48].copy_from_slice(&self.hlc.node_id.to_le_bytes());
        h[48..56].copy_from_slice(&self.lsn.to_le_bytes());
        h[56..64].copy_from_slice(&self.life_seq.to_le_bytes());
        h[64..72].copy_from_slice(&self.summary.size.to_le_bytes());
        h[72..88].copy_from_slice(&self.summary.digest);
        h[88..92].copy_from_slice(&self.summary.tag.to_le_bytes());
        h[92..112].fill(0);
    }

    /// Parses the fixed header without verifying any checksum; None if it is not a record
    /// header of this format (wrong magic/version/kind, lengths beyond the limits).
    pub(crate) fn parse(h: &[u8]) -> Option<RecordHeader> {
        if h.len() < HEADER_BYTES || le_u32(h, 0) != RECORD_MAGIC || le_u16(h, 4) != RECORD_VERSION
        {
            return None;
        }
        let header = RecordHeader {
            kind: Kind::from_u8(h[6])?,
            flags: h[7],
            partition: le_u32(h, 8),
            key_len: le_u32(h, 12),
            meta_len: le_u32(h, 16),
            body_len: le_u64(h, 24),
            hlc: Hlc {
                physical_us: le_u64(h, 32),
                logical: le_u32(h, 40),
                node_id: le_u32(h, 44),
            },
            lsn: le_u64(h, 48),
            life_seq: le_u64(h, 56),
            summary: Summary {
                size: le_u64(h, 64),
                digest: h[72..88].try_into().ok()?,
                tag: le_u32(h, 88),
            },
            record_checksum: le_u64(h, RECORD_CHECKSUM_AT),
        };
        let sane = header.key_len as usize <= MAX_KEY_BYTES
            && header.meta_len as usize <= MAX_META_BYTES
            && header.body_len <= MAX_BODY_BYTES;
        // A partition drop names only its partition: lengths there are damage, not a record.
        let drop_is_empty = header.kind != Kind::PartitionDrop
            || (header.key_len, header.meta_len, header.body_len) == (0, 0, 0);
        (sane && drop_is_empty).then_some(header)
    }
}

/// Seed of the record checksum: the header fields (bytes 0..96) hashed with the salt.
fn record_seed(salt: u64, header: &[u8]) -> u64 {
    xxh3_64_with_seed(&header[..RECORD_CHECKSUM_AT], salt)
}

/// Header checksum: key ‖ meta hashed with a seed derived from header bytes 0..104.
fn header_checksum(salt: u64, header: &[u8], key_meta: &[u8]) -> u64 {
    xxh3_64_with_seed(
        key_meta,
        xxh3_64_with_seed(&header[..HEADER_CHECKSUM_AT], salt),
    )
}

/// Incremental computation of a record's checksums, for records written in pieces.
pub(crate) struct RecordHasher {
    payload: Xxh3,
    salt: u64,
}

impl RecordHasher {
    /// Starts with the header fields (`header[..96]`), key and meta.
    pub(crate) fn new(salt: u64, header: &[u8], key: &[u8], meta: &[u8]) -> Self {
        let mut payload = Xxh3::with_seed(record_seed(salt, header));
        payload.update(key);
        payload.update(meta);
        Self { payload, salt }
    }

    /// Adds a piece of the body.
    pub(crate) fn update_body(&mut self, piece: &[u8]) {
        self.payload.update(piece);
    }

    /// Stores both checksums into `header` (the key and meta are passed again for the header checksum).
    pub(crate) fn finish(self, header: &mut [u8], key: &[u8], meta: &[u8]) {
        header[RECORD_CHECKSUM_AT..HEADER_CHECKSUM_AT]
            .copy_from_slice(&self.payload.digest().to_le_bytes());
        let mut km = Vec::with_capacity(key.len() + meta.len());
        km.extend_from_slice(key);
        km.extend_from_slice(meta);
        let sum = header_checksum(self.salt, header, &km);
        header[HEADER_CHECKSUM_AT..HEADER_BYTES].copy_from_slice(&sum.to_le_bytes());
    }
}

/// Fills both checksums of a complete record laid out contiguously in `rec`
/// (header, key, meta, body; the padding is not covered).
pub(crate) fn seal_record(
    salt: u64,
    rec: &mut [u8],
    key_len: usize,
    meta_len: usize,
    body_len: usize,
) {
    let km_end = HEADER_BYTES + key_len + meta_len;
    let (header, rest) = rec.split_at_mut(HEADER_BYTES);
    let record = xxh3_64_with_seed(
        &rest[..km_end - HEADER_BYTES + body_len],
        record_seed(salt, header),
    );
    header[RECORD_CHECKSUM_AT..HEADER_CHECKSUM_AT].copy_from_slice(&record.to_le_bytes());
    let sum = header_checksum(salt, header, &rest[..km_end - HEADER_BYTES]);
    header[HEADER_CHECKSUM_AT..HEADER_BYTES].copy_from_slice(&sum.to_le_bytes());
}

/// Checks the header checksum of a record whose header, key and meta are in `bytes`.
pub(crate) fn verify_header(salt: u64, bytes: &[u8], header: &RecordHeader) -> bool {
    let km_end = HEADER_BYTES + header.key_meta_len();
    bytes.len() >= km_end
        && header_checksum(salt, bytes, &bytes[HEADER_BYTES..km_end])
            == le_u64(bytes, HEADER_CHECKSUM_AT)
}

/// Checks the record checksum of a whole record in `bytes` (at least header + payload).
pub(crate) fn verify_record(salt: u64, bytes: &[u8], header: &RecordHeader) -> bool {
    let end = HEADER_BYTES as u64 + header.key_meta_len() as u64 + header.body_len;
    (bytes.len() as u64) >= end
        && xxh3_64_with_seed(&bytes[HEADER_BYTES..end as usize], record_seed(salt, bytes))
            == header.record_checksum
}

/// A streaming verifier of the record checksum, for records read in pieces.
pub(crate) fn payload_hasher(salt: u64, header: &[u8]) -> Xxh3 {
    Xxh3::with_seed(record_seed(salt, header))
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body_len: u64) -> RecordHeader {
        RecordHeader {
            kind: Kind::Put,
            flags: 0,
            partition: 7,
            key_len: 3,
            meta_len: 2,
            body_len,
            hlc: Hlc {
                physical_us: 123,
                logical: 4,
                node_id: 9,
            },
            lsn: 42,
            life_seq: 5,
            summary: Summary {
                size: 99,
                digest: [3; 16],
                tag: 11,
            },
            record_checksum: 0,
        }
    }

    fn encode(salt: u64, h: &RecordHeader, key: &[u8], meta: &[u8], body: &[u8]) -> Vec<u8> {
        let mut rec = vec![0u8; h.len() as usize];
        h.write_fields(&mut rec);
        let mut at = HEADER_BYTES;
        for part in [key, meta, body] {
            rec[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        seal_record(salt, &mut rec, key.len(), meta.len(), body.len());
        rec
    }

    #[test]
    fn encode_decode_round_trip() {
        let h = sample(5);
        let rec = encode(77, &h, b"key", b"mm", b"hello");
        assert_eq!(rec.len() % 8, 0);
        assert_eq!(rec.len() as u64, record_len(3, 2, 5));
        let parsed = RecordHeader::parse(&rec).unwrap();
        assert_eq!(
            RecordHeader {
                record_checksum: 0,
                ..parsed
            },
            h
        );
        assert!(verify_header(77, &rec, &parsed));
        assert!(verify_record(77, &rec, &parsed));
        assert_eq!(&rec[HEADER_BYTES..HEADER_BYTES + 3], b"key");
    }

    #[test]
    fn checksums_detect_corruption_and_wrong_salt() {
        let h = sample(5);
        let rec = encode(77, &h, b"key", b"mm", b"hello");
        let parsed = RecordHeader::parse(&rec).unwrap();
        assert!(
            !verify_header(78, &rec, &parsed),
            "salt is part of the checksum"
        );
        let mut body_flip = rec.clone();
        body_flip[HEADER_BYTES + 6] ^= 1;
        assert!(
            verify_header(77, &body_flip, &parsed),
            "header checksum does not cover the body"
        );
        assert!(!verify_record(77, &body_flip, &parsed));
        let mut meta_flip = rec.clone();
        meta_flip[HEADER_BYTES + 3] ^= 1;
        assert!(!verify_header(77, &meta_flip, &parsed));
        let mut lsn_flip = rec;
        lsn_flip[48] ^= 1;
        let p2 = RecordHeader::parse(&lsn_flip).unwrap();
        assert!(!verify_header(77, &lsn_flip, &p2));
        assert!(!verify_record(77, &lsn_flip, &p2));
    }

    #[test]
    fn streamed_checksum_matches_one_shot() {
        let h = sample(10_000);
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let one_shot = encode(5, &h, b"key", b"mm", &body);
        let mut header = vec![0u8; HEADER_BYTES];
        h.write_fields(&mut header);
        let mut hasher = RecordHasher::new(5, &header, b"key", b"mm");
        for piece in body.chunks(777) {
            hasher.update_body(piece);
        }
        hasher.finish(&mut header, b"key", b"mm");
        assert_eq!(&header[..], &one_shot[..HEADER_BYTES]);
    }

    #[test]
    fn partition_drop_round_trip_and_only_empty() {
        let h = RecordHeader {
            kind: Kind::PartitionDrop,
            key_len: 0,
            meta_len: 0,
            body_len: 0,
            summary: Summary::default(),
            ..sample(0)
        };
        let rec = encode(3, &h, b"", b"", b"");
        assert_eq!(rec.len(), HEADER_BYTES);
        assert_eq!(rec[6], 3);
        let parsed = RecordHeader::parse(&rec).unwrap();
        assert_eq!(parsed.kind, Kind::PartitionDrop);
        assert_eq!(parsed.partition, 7);
        assert!(verify_header(3, &rec, &parsed) && verify_record(3, &rec, &parsed));
        let with_key = RecordHeader { key_len: 1, ..h };
        let mut buf = vec![0u8; HEADER_BYTES];
        with_key.write_fields(&mut buf);
        assert!(RecordHeader::parse(&buf).is_none(), "a drop names no key");
        let mut unknown = rec.clone();
        unknown[6] = 4;
        assert!(
            RecordHeader::parse(&unknown).is_none(),
            "unknown kinds stay unparseable"
        );
    }

    #[test]
    fn parse_rejects_garbage_and_oversized() {
        assert!(RecordHeader::parse(&[0u8; HEADER_BYTES]).is_none());
        let h = RecordHeader {
            key_len: MAX_KEY_BYTES as u32 + 1,
            ..sample(1)
        };
        let mut buf = vec![0u8; HEADER_BYTES];
        h.write_fields(&mut buf);
        assert!(RecordHeader::parse(&buf).is_none());
    }
}
