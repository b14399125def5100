//! An object record's metadata (the manifest): size, MD5, headers, checksums and where the body
//! lives (inline, or in chunk runs), with the `Summary` tag that lets listings and ETags skip
//! the record read. The object record is written last: it is the commit point of a PUT, a copy
//! or a multipart completion.

use std::ops::Range;

use bytes::{BufMut, Bytes};

use super::codec::{Extras, Reader, Writer};
use super::{EncodeError, LayoutError, VERSION_ID_BYTES, VersionChunks, VersionId};
use crate::Summary;

/// Smallest size of every multipart part but the last (S3's limit).
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// Highest multipart part number (S3's limit).
pub const MAX_PART_NUMBER: i32 = 10_000;

/// `Summary::tag` kind of an object record holding its body inline.
pub const TAG_INLINE: u32 = 1;
/// `Summary::tag` kind of an object record whose body is in chunks.
pub const TAG_CHUNKED: u32 = 2;
/// `Summary::tag` kind of a completed multipart object (part count in the upper 24 bits).
pub const TAG_MULTIPART: u32 = 3;
/// `Summary::tag` kind of a chunk record.
pub const TAG_CHUNK: u32 = 4;
/// `Summary::tag` kind of an upload record.
pub const TAG_UPLOAD: u32 = 5;
/// `Summary::tag` kind of a part record.
pub const TAG_PART: u32 = 6;
/// `Summary::tag` kind of a garbage-queue entry.
pub const TAG_GARBAGE: u32 = 7;

/// Builds the `Summary::tag` of an object record: kind in the low byte, part count above it.
pub fn object_tag(parts_count: u32) -> u32 {
    if parts_count == 0 {
        TAG_CHUNKED
    } else {
        TAG_MULTIPART | (parts_count << 8)
    }
}

/// Part count of an object record's `Summary::tag` (0 for non-multipart objects).
pub fn parts_count_of_tag(tag: u32) -> u32 {
    if tag & 0xff == TAG_MULTIPART {
        tag >> 8
    } else {
        0
    }
}

/// The S3 ETag (without quotes) of an object: hex MD5, plus `-N` for multipart objects.
pub fn etag_string(md5: &[u8; 16], parts_count: u32) -> String {
    if parts_count == 0 {
        hex::encode(md5)
    } else {
        format!("{}-{parts_count}", hex::encode(md5))
    }
}

/// The standard base64 alphabet (RFC 4648 §4).
const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (with padding) of `input`: how S3 writes checksums and Content-MD5.
pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for group in input.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(
                    BASE64_ALPHABET[((n >> (18 - 6 * i)) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of standard, padded base64 `text`; None if it is not that.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, group) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = group.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &group[..4 - pad] {
            let v = BASE64_ALPHABET.iter().position(|&a| a == c)?;
            n = (n << 6) | v as u32;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    (base64_encode(&out) == text).then_some(out)
}

/// Number of chunks a body of `size_bytes` is cut into.
pub fn chunk_count(size_bytes: u64, chunk_size_bytes: u64) -> u64 {
    size_bytes.div_ceil(chunk_size_bytes)
}

/// The checksum algorithms S3 defines (`x-amz-checksum-*`), in their stored numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumKind {
    /// CRC32 (ISO-HDLC).
    Crc32 = 1,
    /// CRC32C (Castagnoli).
    Crc32c = 2,
    /// CRC64/NVME.
    Crc64Nvme = 3,
    /// SHA-1.
    Sha1 = 4,
    /// SHA-256.
    Sha256 = 5,
}

impl ChecksumKind {
    /// Every kind, in stored order.
    pub const ALL: [ChecksumKind; 5] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64Nvme,
        Self::Sha1,
        Self::Sha256,
    ];

    /// The S3 algorithm name (`x-amz-checksum-algorithm` value).
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// Parses an algorithm name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// The header carrying this checksum (`x-amz-checksum-crc32`, …).
    pub fn header(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    pub(super) fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == v)
    }

    /// Length of this algorithm's digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// Whether a multipart object's checksum can be made with this algorithm by `how`: S3
    /// makes full-object checksums only with the CRCs, and composite ones with all but
    /// CRC64NVME.
    pub fn supports(self, how: ChecksumType) -> bool {
        match how {
            ChecksumType::FullObject => {
                matches!(self, Self::Crc32 | Self::Crc32c | Self::Crc64Nvme)
            }
            ChecksumType::Composite => self != Self::Crc64Nvme,
        }
    }

    /// S3's checksum type when CreateMultipartUpload names this algorithm and no type.
    pub fn default_multipart_type(self) -> ChecksumType {
        if self == Self::Crc64Nvme {
            ChecksumType::FullObject
        } else {
            ChecksumType::Composite
        }
    }
}

/// How a multipart object's checksum is made (S3's `x-amz-checksum-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumType {
    /// The checksum of the concatenated part checksums, written with a `-N` part count suffix.
    Composite = 1,
    /// The checksum of the whole object's bytes (a single PUT's checksum is one too).
    FullObject = 2,
}

impl ChecksumType {
    /// The S3 name (`COMPOSITE`, `FULL_OBJECT`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Composite => "COMPOSITE",
            Self::FullObject => "FULL_OBJECT",
        }
    }

    /// Parses an S3 name (exact, as S3 does).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Composite, Self::FullObject]
            .into_iter()
            .find(|t| t.name() == name)
    }

    pub(super) fn from_u8(v: u8) -> Option<Self> {
        [Self::Composite, Self::FullObject]
            .into_iter()
            .find(|t| *t as u8 == v)
    }
}

/// A checksum value (base64, as S3 transmits it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChecksum {
    /// The algorithm.
    pub kind: ChecksumKind,
    /// Base64 of the digest; a composite checksum of a multipart object is followed by `-N`,
    /// its part count, as S3 writes it (base64 never holds a `-`).
    pub value: String,
}

impl StoredChecksum {
    /// Whether this is a multipart object's composite checksum.
    pub fn is_composite(&self) -> bool {
        self.value.contains('-')
    }

    /// The base64 digest without a composite checksum's `-N` suffix.
    pub fn digest(&self) -> &str {
        self.value.split('-').next().unwrap_or_default()
    }
}

/// The standard headers and user metadata stored with an object or an upload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Expires`, as the HTTP date string received.
    pub expires: Option<String>,
    /// `x-amz-meta-*` pairs (name without the prefix), sorted by name.
    pub user_meta: Vec<(String, String)>,
    /// The object's tags (S3 object tagging), in the order they were given; at most
    /// [`MAX_OBJECT_TAGS`].
    pub tags: Vec<(String, String)>,
    /// The object's ACL (S3 object ACLs). None for an object written before object ACLs
    /// existed, or through the REST API: it has its bucket's canned ACL (LeoFS's meaning).
    pub acl: Option<ObjectAcl>,
    /// How the body is encrypted with a customer's key (S3 SSE-C); None: stored as sent.
    pub sse_c: Option<SseC>,
}

/// What an object encrypted with a customer-provided key keeps of the key (S3 SSE-C): a random
/// salt and a keyed hash of the salt, which tells the right key from a wrong one; never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseC {
    /// Random, drawn when the object (or upload) is written; it also seeds the body's IVs.
    pub salt: [u8; 16],
    /// HMAC-SHA256 of the salt under the customer's key.
    pub key_hmac: [u8; 32],
}

/// Most grants one ACL holds besides its owner's (S3's limit).
pub const MAX_ACL_GRANTS: usize = 100;

/// Whom an ACL grant is to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Grantee {
    /// A user, by id (S3's canonical user id).
    User(String),
    /// Everyone, anonymous requests included (S3's AllUsers group).
    AllUsers,
    /// Every signed request of a known user (S3's AuthenticatedUsers group).
    AuthenticatedUsers,
}

/// What an ACL grant permits (S3's permissions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read the object (a bucket: list it).
    Read = 0,
    /// Write (a bucket: write and delete its objects; on an object it means nothing).
    Write = 1,
    /// Read the ACL.
    ReadAcp = 2,
    /// Write the ACL.
    WriteAcp = 3,
    /// All of the above.
    FullControl = 4,
}

impl Permission {
    /// The stored numbering.
    pub fn from_u8(v: u8) -> Option<Permission> {
        Some(match v {
            0 => Permission::Read,
            1 => Permission::Write,
            2 => Permission::ReadAcp,
            3 => Permission::WriteAcp,
            4 => Permission::FullControl,
            _ => return None,
        })
    }

    /// Whether holding `self` permits `wanted`.
    pub fn covers(self, wanted: Permission) -> bool {
        self == wanted || self == Permission::FullControl
    }
}

/// One grant of an ACL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    /// To whom.
    pub grantee: Grantee,
    /// What.
    pub permission: Permission,
}

/// An object's ACL: its owner (who has full control) and the grants to others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectAcl {
    /// The owner's user id (who wrote the object).
    pub owner: String,
    /// The grants besides the owner's full control, in the order given; at most
    /// [`MAX_ACL_GRANTS`].
    pub grants: Vec<Grant>,
}

/// Most tags one object carries (S3's limit).
pub const MAX_OBJECT_TAGS: usize = 10;

/// A chunk run: the bytes of the whole body, or of one multipart part, cut into chunk records
/// under one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRun {
    /// Version id embedded in the run's chunk keys.
    pub version: VersionId,
    /// Length of the run in bytes.
    pub size_bytes: u64,
    /// Chunk size the run was cut with.
    pub chunk_size_bytes: u64,
    /// MD5 of the run (a part's ETag; zero for single-run objects).
    pub md5: [u8; 16],
}

impl ChunkRun {
    /// Length of chunk `index` of this run.
    pub fn chunk_len(&self, index: u64) -> u64 {
        let start = index * self.chunk_size_bytes;
        self.size_bytes
            .saturating_sub(start)
            .min(self.chunk_size_bytes)
    }
}

/// Where an object's body lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyLayout {
    /// In the object record's own body.
    Inline,
    /// In chunk records, run after run (one run, or one per multipart part).
    Chunked(Vec<ChunkRun>),
}

/// The object record's metadata blob: everything S3 returns about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Object length in bytes.
    pub size_bytes: u64,
    /// MD5 of the body, or of the part MD5s for multipart objects.
    pub md5: [u8; 16],
    /// Number of multipart parts (0: not multipart).
    pub parts_count: u32,
    /// Standard headers and user metadata.
    pub headers: Headers,
    /// Checksums computed at upload.
    pub checksums: Vec<StoredChecksum>,
    /// Where the body is.
    pub layout: BodyLayout,
    /// The multipart upload whose completion wrote this manifest (a repeated completion of it
    /// is answered as the first was).
    pub completed_upload: Option<String>,
    /// A multipart object's part checksums of its upload's algorithm, one per run in part
    /// order (empty: the upload named no algorithm).
    pub part_checksums: Vec<StoredChecksum>,
}

impl ObjectMeta {
    /// The S3 ETag without quotes.
    pub fn etag(&self) -> String {
        etag_string(&self.md5, self.parts_count)
    }

    /// How the object's checksums were made (None: it has none).
    pub fn checksum_type(&self) -> Option<ChecksumType> {
        let first = self.checksums.first()?;
        Some(if first.is_composite() {
            ChecksumType::Composite
        } else {
            ChecksumType::FullObject
        })
    }

    /// The engine summary for this object record.
    pub fn summary(&self) -> Summary {
        let tag = match self.layout {
            BodyLayout::Inline => TAG_INLINE,
            BodyLayout::Chunked(_) => object_tag(self.parts_count),
        };
        Summary {
            size: self.size_bytes,
            digest: self.md5,
            tag,
        }
    }

    /// Byte range `[start, end)` of multipart part `part_number` (1-based), if it exists.
    pub fn part_range(&self, part_number: u32) -> Option<Range<u64>> {
        let BodyLayout::Chunked(runs) = &self.layout else {
            return None;
        };
        if self.parts_count == 0 || part_number == 0 {
            return None;
        }
        let index = usize::try_from(part_number - 1).ok()?;
        let start: u64 = runs.iter().take(index).map(|s| s.size_bytes).sum();
        let seg = runs.get(index)?;
        Some(start..start + seg.size_bytes)
    }
}

impl ChunkRun {
    /// The version and chunk count of this run.
    pub fn version_chunks(&self) -> VersionChunks {
        VersionChunks {
            version: self.version,
            chunks: u32::try_from(chunk_count(self.size_bytes, self.chunk_size_bytes.max(1)))
                .unwrap_or(u32::MAX),
        }
    }
}

impl ObjectMeta {
    /// Every chunked version this manifest references (none for an inline body).
    pub fn versions(&self) -> Vec<VersionChunks> {
        match &self.layout {
            BodyLayout::Inline => Vec::new(),
            BodyLayout::Chunked(runs) => runs.iter().map(ChunkRun::version_chunks).collect(),
        }
    }
}

/// Layout byte of an inline body in the manifest encoding.
const LAYOUT_INLINE: u8 = 0;
/// Layout byte of a chunked body in the manifest encoding.
const LAYOUT_CHUNKED: u8 = 1;

impl ObjectMeta {
    /// Serializes the manifest (format version, size, md5, parts, headers, checksums, layout,
    /// then its optional fields: tags, the upload it completed, part checksums).
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut w = Writer::for_headers(&self.headers);
        w.0.put_u64_le(self.size_bytes);
        w.0.put_slice(&self.md5);
        w.0.put_u32_le(self.parts_count);
        w.headers(&self.headers)?;
        w.checksums(&self.checksums)?;
        match &self.layout {
            BodyLayout::Inline => w.0.put_u8(LAYOUT_INLINE),
            BodyLayout::Chunked(runs) => {
                w.0.put_u8(LAYOUT_CHUNKED);
                let count: u32 = Writer::count(runs.len(), "chunk runs", u32::MAX as usize)?;
                w.0.put_u32_le(count);
                for s in runs {
                    w.run(s);
                }
            }
        }
        w.extras(&Extras {
            tags: self.headers.tags.clone(),
            acl: self.headers.acl.clone(),
            sse_c: self.headers.sse_c.clone(),
            completed_upload: self.completed_upload.clone(),
            checksum_type: None,
            part_checksums: self.part_checksums.clone(),
        })?;
        Ok(w.0.freeze())
    }

    /// Parses a manifest written by [`ObjectMeta::encode`].
    pub fn decode(buf: &[u8]) -> Result<Self, LayoutError> {
        let mut r = Reader::new(buf, "object manifest")?;
        let size_bytes = r.u64()?;
        let md5 = r.md5()?;
        let parts_count = r.u32()?;
        let mut headers = r.headers()?;
        let checksums = r.checksums()?;
        let layout = match r.u8()? {
            LAYOUT_INLINE => BodyLayout::Inline,
            LAYOUT_CHUNKED => {
                let n = r.u32()?;
                let n = usize::try_from(n).map_err(|_| r.corrupt("run count"))?;
                if n > r.buf.len() / (VERSION_ID_BYTES + 32) {
                    return Err(r.corrupt("run count exceeds record"));
                }
                let mut runs = Vec::with_capacity(n);
                for _ in 0..n {
                    runs.push(r.run()?);
                }
                let total: u64 = runs.iter().map(|s| s.size_bytes).sum();
                if total != size_bytes {
                    return Err(r.corrupt("run sizes do not add up to the object size"));
                }
                BodyLayout::Chunked(runs)
            }
            _ => return Err(r.corrupt("unknown layout")),
        };
        let extras = r.extras()?;
        headers.tags = extras.tags;
        headers.acl = extras.acl;
        headers.sse_c = extras.sse_c;
        if !extras.part_checksums.is_empty()
            && !matches!(&layout, BodyLayout::Chunked(runs) if runs.len() == extras.part_checksums.len())
        {
            return Err(r.corrupt("part checksums do not match the parts"));
        }
        Ok(Self {
            size_bytes,
            md5,
            parts_count,
            headers,
            checksums,
            layout,
            completed_upload: extras.completed_upload,
            part_checksums: extras.part_checksums,
        })
    }
}
