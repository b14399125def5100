//! Object layout: the engine key namespaces of objects, chunk arithmetic, ETags and the compact
//! binary codec of object manifests, upload records and part records.
//!
//! Storage owns this (DESIGN §4a): it must know which chunks a manifest or a part references to
//! collect the garbage an overwrite, a delete or an abort leaves (`collector`), and the gateway
//! builds its records with it. It does no I/O. `bucket` in keys is a [`BucketId`]'s storage
//! name (`name~incarnation` in hex, or the bare name for buckets older than incarnations).
//! Every engine key starts with one namespace byte:
//! - `o` bucket 0x00 key: the object record (manifest; inline body for small objects). Placed by
//!   `object_hash(bucket, key)`; `scan_all("o" bucket 0x00 prefix)` lists a bucket in key order.
//! - `c` bucket 0x00 key 0x00 version(16) index(u32 BE): one chunk of an object or part.
//! - `u` bucket 0x00 key 0x00 upload-id: a multipart upload in progress.
//! - `p` upload-id 0x00 part-number(u32 BE): one uploaded part.
//! - `g` bucket 0x00 key 0x00 entry-id(16): a garbage-queue entry (`collector`), placed in the
//!   object record's partition.
//!
//! Records other than object records are placed by `hash_bytes(engine key)`.
//!
//! Encodings (little-endian; strings are u16 length + UTF-8; `opt` is a 0/1 byte then the value):
//! - manifest (object record meta): u8 format version (1), u64 size, 16 B MD5, u32 part count,
//!   headers, checksums, u8 layout (0 inline: the body is the record body; 1 chunked: u32 segment
//!   count, then per segment 16 B version id, u64 size, u64 chunk size, 16 B MD5);
//! - headers: opt content-type, cache-control, content-disposition, content-encoding,
//!   content-language, expires; u16 count of (name, value) user metadata pairs;
//! - checksums: u8 count of (u8 kind, base64 string);
//! - upload record meta: version, headers, u8 checksum kind (0: none), initiator string;
//! - part record meta: version, one segment, checksums.
//!
//! The engine `Summary` of an object record carries size, MD5 and `tag` (kind | parts << 8), so
//! listings and ETags need no record read. The object record is written last: it is the commit
//! point of a PUT, a copy or a multipart completion.

use std::ops::Range;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::Summary;

/// A stored record of the object layout that does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {what}: {detail}")]
pub struct LayoutError {
    /// Which kind of record.
    pub what: &'static str,
    /// What is wrong.
    pub detail: &'static str,
}

/// Namespace byte of object records.
pub const NS_OBJECT: u8 = b'o';
/// Namespace byte of chunk records.
pub const NS_CHUNK: u8 = b'c';
/// Namespace byte of multipart upload records.
pub const NS_UPLOAD: u8 = b'u';
/// Namespace byte of multipart part records.
pub const NS_PART: u8 = b'p';
/// Namespace byte of garbage-queue entries (`collector`).
pub const NS_GARBAGE: u8 = b'g';
/// Separator between bucket, key and the rest of an engine key.
pub const KEY_SEP: u8 = 0;

/// Longest S3 object key in bytes (S3's limit; 1025 is `KeyTooLongError`).
pub const MAX_OBJECT_KEY_BYTES: usize = 1024;
/// Smallest size of every multipart part but the last (S3's limit).
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// Highest multipart part number (S3's limit).
pub const MAX_PART_NUMBER: i32 = 10_000;
/// Bytes of a version id (also of an upload id before hex encoding).
pub const VERSION_ID_BYTES: usize = 16;
/// Current version of the manifest/upload/part encodings.
pub const FORMAT_VERSION: u8 = 1;
/// Longest string field the codec accepts (bytes).
const MAX_FIELD_BYTES: usize = 8 * 1024;

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

/// A unique id for one written version of an object's (or part's) bytes; chunk keys embed it so
/// that an overwrite never touches the chunks of the version it replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionId(pub [u8; VERSION_ID_BYTES]);

impl VersionId {
    /// A fresh random version id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// The chunks of one written version: its id and how many chunks it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionChunks {
    /// The version id in the chunk keys.
    pub version: VersionId,
    /// Chunks `0..chunks` exist (or may exist, for an unfinished write).
    pub chunks: u32,
}

impl Segment {
    /// The version and chunk count of this segment.
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
            BodyLayout::Chunked(segments) => segments.iter().map(Segment::version_chunks).collect(),
        }
    }
}

fn with_bucket_key(ns: u8, bucket: &str, key: &str, extra: usize) -> BytesMut {
    let mut out = BytesMut::with_capacity(2 + bucket.len() + key.len() + extra);
    out.put_u8(ns);
    out.put_slice(bucket.as_bytes());
    out.put_u8(KEY_SEP);
    out.put_slice(key.as_bytes());
    out
}

/// Separates a bucket's name from its incarnation in storage keys (S3 bucket names never
/// contain it).
pub const INCARNATION_SEP: char = '~';

/// A bucket as storage names it in keys: its name and its incarnation (random and nonzero, set
/// when the bucket is created), so that a bucket deleted and created again under the same name
/// never shares a key with the old one, even through a gateway whose catalog is late. Buckets
/// created before incarnations existed have incarnation 0 and are named by their name alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BucketId(String);

impl BucketId {
    /// The storage name of bucket `name` at `incarnation`.
    pub fn new(name: &str, incarnation: u64) -> Self {
        if incarnation == 0 {
            Self(name.to_owned())
        } else {
            Self(format!("{name}{INCARNATION_SEP}{incarnation:016x}"))
        }
    }

    /// The name in keys (the `bucket` argument of this module's key functions).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Engine key of an object record.
pub fn object_key(bucket: &str, key: &str) -> Bytes {
    with_bucket_key(NS_OBJECT, bucket, key, 0).freeze()
}

/// Engine key prefix under which every object record of `bucket` lives.
pub fn object_prefix(bucket: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bucket.len() + 2);
    out.push(NS_OBJECT);
    out.extend_from_slice(bucket.as_bytes());
    out.push(KEY_SEP);
    out
}

/// Engine key of chunk `index` of version `version` of (bucket, key).
pub fn chunk_key(bucket: &str, key: &str, version: &VersionId, index: u32) -> Bytes {
    let mut out = with_bucket_key(NS_CHUNK, bucket, key, 1 + VERSION_ID_BYTES + 4);
    out.put_u8(KEY_SEP);
    out.put_slice(&version.0);
    out.put_u32(index);
    out.freeze()
}

/// The (bucket, key, version, index) a chunk key names; None if `chunk_key` is not one.
pub fn parse_chunk_key(chunk_key: &[u8]) -> Option<(&str, &str, VersionId, u32)> {
    let tail = VERSION_ID_BYTES + 4;
    if chunk_key.first() != Some(&NS_CHUNK) || chunk_key.len() < 1 + 2 + tail {
        return None;
    }
    let (names, fixed) = chunk_key[1..].split_at(chunk_key.len() - 1 - tail);
    let (names, last) = names.split_at(names.len() - 1);
    if last != [KEY_SEP] {
        return None;
    }
    let sep = names.iter().position(|&b| b == KEY_SEP)?;
    let bucket = std::str::from_utf8(&names[..sep]).ok()?;
    let key = std::str::from_utf8(&names[sep + 1..]).ok()?;
    let mut version = [0u8; VERSION_ID_BYTES];
    version.copy_from_slice(&fixed[..VERSION_ID_BYTES]);
    let index = u32::from_be_bytes(fixed[VERSION_ID_BYTES..].try_into().ok()?);
    Some((bucket, key, VersionId(version), index))
}

/// Engine key of a garbage-queue entry of (bucket, key) with a unique `id`.
pub fn garbage_key(bucket: &str, key: &str, id: &[u8; VERSION_ID_BYTES]) -> Bytes {
    let mut out = with_bucket_key(NS_GARBAGE, bucket, key, 1 + VERSION_ID_BYTES);
    out.put_u8(KEY_SEP);
    out.put_slice(id);
    out.freeze()
}

/// The (bucket, key) a garbage-queue key names.
pub fn parse_garbage_key(garbage_key: &[u8]) -> Option<(&str, &str)> {
    if garbage_key.first() != Some(&NS_GARBAGE)
        || garbage_key.len() < 3 + VERSION_ID_BYTES
        || garbage_key[garbage_key.len() - 1 - VERSION_ID_BYTES] != KEY_SEP
    {
        return None;
    }
    let names = &garbage_key[1..garbage_key.len() - 1 - VERSION_ID_BYTES];
    let sep = names.iter().position(|&b| b == KEY_SEP)?;
    Some((
        std::str::from_utf8(&names[..sep]).ok()?,
        std::str::from_utf8(&names[sep + 1..]).ok()?,
    ))
}

/// Engine key of an upload record.
pub fn upload_key(bucket: &str, key: &str, upload_id: &str) -> Bytes {
    let mut out = with_bucket_key(NS_UPLOAD, bucket, key, 1 + upload_id.len());
    out.put_u8(KEY_SEP);
    out.put_slice(upload_id.as_bytes());
    out.freeze()
}

/// Engine key prefix of every upload record of `bucket`.
pub fn upload_prefix(bucket: &str) -> Vec<u8> {
    let mut out = object_prefix(bucket);
    out[0] = NS_UPLOAD;
    out
}

/// Splits the part of an upload key after [`upload_prefix`] into (object key, upload id).
pub fn split_upload_suffix(suffix: &[u8]) -> Option<(&str, &str)> {
    let sep = suffix.iter().rposition(|&b| b == KEY_SEP)?;
    let key = std::str::from_utf8(&suffix[..sep]).ok()?;
    let upload_id = std::str::from_utf8(&suffix[sep + 1..]).ok()?;
    Some((key, upload_id))
}

/// Engine key prefix of every part record of an upload.
pub fn part_prefix(upload_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(upload_id.len() + 2);
    out.push(NS_PART);
    out.extend_from_slice(upload_id.as_bytes());
    out.push(KEY_SEP);
    out
}

/// Engine key of part `part_number` of an upload.
pub fn part_key(upload_id: &str, part_number: u32) -> Bytes {
    let mut out = BytesMut::from(&part_prefix(upload_id)[..]);
    out.put_u32(part_number);
    out.freeze()
}

/// A fresh multipart upload id (32 lowercase hex characters).
pub fn new_upload_id() -> String {
    hex::encode(VersionId::random().0)
}

/// True when `upload_id` has the shape [`new_upload_id`] produces (guards key construction).
pub fn is_valid_upload_id(upload_id: &str) -> bool {
    upload_id.len() == VERSION_ID_BYTES * 2 && upload_id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The S3 ETag (without quotes) of an object: hex MD5, plus `-N` for multipart objects.
pub fn etag_string(md5: &[u8; 16], parts_count: u32) -> String {
    if parts_count == 0 {
        hex::encode(md5)
    } else {
        format!("{}-{parts_count}", hex::encode(md5))
    }
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

    fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == v)
    }
}

/// A checksum value (base64, as S3 transmits it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChecksum {
    /// The algorithm.
    pub kind: ChecksumKind,
    /// Base64 of the digest.
    pub value: String,
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
}

/// Where the bytes of one segment (the whole body, or one multipart part) live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Version id embedded in the segment's chunk keys.
    pub version: VersionId,
    /// Segment length in bytes.
    pub size_bytes: u64,
    /// Chunk size the segment was cut with.
    pub chunk_size_bytes: u64,
    /// MD5 of the segment (a part's ETag; zero for single-segment objects).
    pub md5: [u8; 16],
}

impl Segment {
    /// Length of chunk `index` of this segment.
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
    /// In chunk records, segment after segment (one segment, or one per multipart part).
    Chunked(Vec<Segment>),
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
}

impl ObjectMeta {
    /// The S3 ETag without quotes.
    pub fn etag(&self) -> String {
        etag_string(&self.md5, self.parts_count)
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
        let BodyLayout::Chunked(segments) = &self.layout else {
            return None;
        };
        if self.parts_count == 0 || part_number == 0 {
            return None;
        }
        let index = usize::try_from(part_number - 1).ok()?;
        let start: u64 = segments.iter().take(index).map(|s| s.size_bytes).sum();
        let seg = segments.get(index)?;
        Some(start..start + seg.size_bytes)
    }
}

/// An upload record's metadata: what CreateMultipartUpload was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadMeta {
    /// Headers and user metadata for the final object.
    pub headers: Headers,
    /// Checksum algorithm requested at creation, if any.
    pub checksum_algorithm: Option<ChecksumKind>,
    /// User id of the initiator.
    pub initiator: String,
}

/// A part record's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartMeta {
    /// Where the part's bytes are (its `md5` is the part ETag).
    pub segment: Segment,
    /// Checksums computed for the part.
    pub checksums: Vec<StoredChecksum>,
}

/// One piece of a read plan: a (sub-)range of one chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRead {
    /// Index of the segment in the layout.
    pub segment: usize,
    /// Chunk index within the segment.
    pub chunk: u32,
    /// Byte range within the chunk.
    pub range: Range<u64>,
    /// Full length of the chunk.
    pub chunk_len: u64,
}

/// Lists the chunk pieces that cover `range` of a chunked body, in order, lazily (a huge object
/// never materializes its whole plan).
pub fn plan_reads(
    segments: Rc<[Segment]>,
    range: Range<u64>,
) -> impl Iterator<Item = ChunkRead> + 'static {
    let mut seg_start = 0u64;
    (0..segments.len()).flat_map(move |seg_index| {
        let seg = segments[seg_index].clone();
        let this_start = seg_start;
        seg_start += seg.size_bytes;
        let lo = range.start.max(this_start);
        let hi = range.end.min(this_start + seg.size_bytes);
        let (first, last) = if lo < hi && seg.chunk_size_bytes > 0 {
            (
                (lo - this_start) / seg.chunk_size_bytes,
                (hi - this_start - 1) / seg.chunk_size_bytes + 1,
            )
        } else {
            (0, 0)
        };
        (first..last).map(move |chunk| {
            let chunk_start = this_start + chunk * seg.chunk_size_bytes;
            let chunk_len = seg.chunk_len(chunk);
            let from = lo.max(chunk_start) - chunk_start;
            let to = hi.min(chunk_start + chunk_len) - chunk_start;
            ChunkRead {
                segment: seg_index,
                chunk: u32::try_from(chunk).unwrap_or(u32::MAX),
                range: from..to,
                chunk_len,
            }
        })
    })
}

struct Writer(BytesMut);

impl Writer {
    fn new() -> Self {
        let mut out = BytesMut::with_capacity(128);
        out.put_u8(FORMAT_VERSION);
        Self(out)
    }
    fn str(&mut self, s: &str) {
        let len = u16::try_from(s.len().min(MAX_FIELD_BYTES)).unwrap_or(u16::MAX);
        self.0.put_u16_le(len);
        self.0.put_slice(&s.as_bytes()[..usize::from(len)]);
    }
    fn opt_str(&mut self, s: Option<&String>) {
        match s {
            Some(s) => {
                self.0.put_u8(1);
                self.str(s);
            }
            None => self.0.put_u8(0),
        }
    }
    fn headers(&mut self, h: &Headers) {
        self.opt_str(h.content_type.as_ref());
        self.opt_str(h.cache_control.as_ref());
        self.opt_str(h.content_disposition.as_ref());
        self.opt_str(h.content_encoding.as_ref());
        self.opt_str(h.content_language.as_ref());
        self.opt_str(h.expires.as_ref());
        self.0
            .put_u16_le(u16::try_from(h.user_meta.len()).unwrap_or(u16::MAX));
        for (k, v) in h.user_meta.iter().take(usize::from(u16::MAX)) {
            self.str(k);
            self.str(v);
        }
    }
    fn checksums(&mut self, c: &[StoredChecksum]) {
        self.0.put_u8(u8::try_from(c.len()).unwrap_or(0));
        for cs in c {
            self.0.put_u8(cs.kind as u8);
            self.str(&cs.value);
        }
    }
    fn segment(&mut self, s: &Segment) {
        self.0.put_slice(&s.version.0);
        self.0.put_u64_le(s.size_bytes);
        self.0.put_u64_le(s.chunk_size_bytes);
        self.0.put_slice(&s.md5);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Result<Self, LayoutError> {
        let mut r = Self { buf, what };
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(r.corrupt("unknown format version"));
        }
        Ok(r)
    }
    fn corrupt(&self, detail: &'static str) -> LayoutError {
        LayoutError {
            what: self.what,
            detail,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], LayoutError> {
        if self.buf.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, LayoutError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, LayoutError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, LayoutError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, LayoutError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn md5(&mut self) -> Result<[u8; 16], LayoutError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(a)
    }
    fn str(&mut self) -> Result<String, LayoutError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("string is not UTF-8"))
    }
    fn opt_str(&mut self) -> Result<Option<String>, LayoutError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(self.corrupt("bad option tag")),
        }
    }
    fn headers(&mut self) -> Result<Headers, LayoutError> {
        let content_type = self.opt_str()?;
        let cache_control = self.opt_str()?;
        let content_disposition = self.opt_str()?;
        let content_encoding = self.opt_str()?;
        let content_language = self.opt_str()?;
        let expires = self.opt_str()?;
        let n = usize::from(self.u16()?);
        let mut user_meta = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            user_meta.push((self.str()?, self.str()?));
        }
        Ok(Headers {
            content_type,
            cache_control,
            content_disposition,
            content_encoding,
            content_language,
            expires,
            user_meta,
        })
    }
    fn checksums(&mut self) -> Result<Vec<StoredChecksum>, LayoutError> {
        let n = self.u8()?;
        let mut out = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let kind = ChecksumKind::from_u8(self.u8()?)
                .ok_or_else(|| self.corrupt("unknown checksum kind"))?;
            out.push(StoredChecksum {
                kind,
                value: self.str()?,
            });
        }
        Ok(out)
    }
    fn segment(&mut self) -> Result<Segment, LayoutError> {
        let mut version = [0u8; VERSION_ID_BYTES];
        version.copy_from_slice(self.take(VERSION_ID_BYTES)?);
        let size_bytes = self.u64()?;
        let chunk_size_bytes = self.u64()?;
        if chunk_size_bytes == 0 && size_bytes > 0 {
            return Err(self.corrupt("zero chunk size"));
        }
        Ok(Segment {
            version: VersionId(version),
            size_bytes,
            chunk_size_bytes,
            md5: self.md5()?,
        })
    }
}

/// Layout byte of an inline body in the manifest encoding.
const LAYOUT_INLINE: u8 = 0;
/// Layout byte of a chunked body in the manifest encoding.
const LAYOUT_CHUNKED: u8 = 1;

impl ObjectMeta {
    /// Serializes the manifest (format version, size, md5, parts, headers, checksums, layout).
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.0.put_u64_le(self.size_bytes);
        w.0.put_slice(&self.md5);
        w.0.put_u32_le(self.parts_count);
        w.headers(&self.headers);
        w.checksums(&self.checksums);
        match &self.layout {
            BodyLayout::Inline => w.0.put_u8(LAYOUT_INLINE),
            BodyLayout::Chunked(segments) => {
                w.0.put_u8(LAYOUT_CHUNKED);
                w.0.put_u32_le(u32::try_from(segments.len()).unwrap_or(u32::MAX));
                for s in segments {
                    w.segment(s);
                }
            }
        }
        w.0.freeze()
    }

    /// Parses a manifest written by [`ObjectMeta::encode`].
    pub fn decode(buf: &[u8]) -> Result<Self, LayoutError> {
        let mut r = Reader::new(buf, "object manifest")?;
        let size_bytes = r.u64()?;
        let md5 = r.md5()?;
        let parts_count = r.u32()?;
        let headers = r.headers()?;
        let checksums = r.checksums()?;
        let layout = match r.u8()? {
            LAYOUT_INLINE => BodyLayout::Inline,
            LAYOUT_CHUNKED => {
                let n = r.u32()?;
                let n = usize::try_from(n).map_err(|_| r.corrupt("segment count"))?;
                if n > r.buf.len() / (VERSION_ID_BYTES + 32) {
                    return Err(r.corrupt("segment count exceeds record"));
                }
                let mut segments = Vec::with_capacity(n);
                for _ in 0..n {
                    segments.push(r.segment()?);
                }
                let total: u64 = segments.iter().map(|s| s.size_bytes).sum();
                if total != size_bytes {
                    return Err(r.corrupt("segment sizes do not add up to the object size"));
                }
                BodyLayout::Chunked(segments)
            }
            _ => return Err(r.corrupt("unknown layout")),
        };
        Ok(Self {
            size_bytes,
            md5,
            parts_count,
            headers,
            checksums,
            layout,
        })
    }
}

impl UploadMeta {
    /// Serializes an upload record's metadata.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.headers(&self.headers);
        w.0.put_u8(self.checksum_algorithm.map_or(0, |k| k as u8));
        w.str(&self.initiator);
        w.0.freeze()
    }

    /// Parses an upload record's metadata.
    pub fn decode(buf: &[u8]) -> Result<Self, LayoutError> {
        let mut r = Reader::new(buf, "upload record")?;
        let headers = r.headers()?;
        let checksum_algorithm = match r.u8()? {
            0 => None,
            v => Some(ChecksumKind::from_u8(v).ok_or_else(|| r.corrupt("unknown checksum kind"))?),
        };
        let initiator = r.str()?;
        Ok(Self {
            headers,
            checksum_algorithm,
            initiator,
        })
    }
}

impl PartMeta {
    /// Serializes a part record's metadata.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.segment(&self.segment);
        w.checksums(&self.checksums);
        w.0.freeze()
    }

    /// Parses a part record's metadata.
    pub fn decode(buf: &[u8]) -> Result<Self, LayoutError> {
        let mut r = Reader::new(buf, "part record")?;
        let segment = r.segment()?;
        let checksums = r.checksums()?;
        Ok(Self { segment, checksums })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_ids_carry_the_incarnation_and_old_buckets_keep_their_bare_name() {
        assert_eq!(BucketId::new("photos", 0).as_str(), "photos");
        assert_eq!(
            BucketId::new("photos", 0xab).as_str(),
            "photos~00000000000000ab"
        );
        let (old, new) = (BucketId::new("photos", 1), BucketId::new("photos", 2));
        assert_ne!(object_key(old.as_str(), "k"), object_key(new.as_str(), "k"));
        assert!(!object_key(new.as_str(), "k").starts_with(&object_prefix(old.as_str())));
        assert!(!object_key(old.as_str(), "k").starts_with(&object_prefix("photos")));
    }

    fn seg(size: u64, cs: u64) -> Segment {
        Segment {
            version: VersionId([7; 16]),
            size_bytes: size,
            chunk_size_bytes: cs,
            md5: [1; 16],
        }
    }

    #[test]
    fn manifest_round_trips() {
        let meta = ObjectMeta {
            size_bytes: 25,
            md5: [9; 16],
            parts_count: 2,
            headers: Headers {
                content_type: Some("text/plain".into()),
                expires: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
                user_meta: vec![("a".into(), "b".into())],
                ..Headers::default()
            },
            checksums: vec![StoredChecksum {
                kind: ChecksumKind::Crc32,
                value: "AAAAAA==".into(),
            }],
            layout: BodyLayout::Chunked(vec![seg(10, 4), seg(15, 4)]),
        };
        let decoded = ObjectMeta::decode(&meta.encode()).unwrap();
        assert_eq!(decoded, meta);
        assert_eq!(decoded.part_range(2), Some(10..25));
        assert_eq!(decoded.part_range(3), None);
    }

    #[test]
    fn truncated_manifest_is_corrupt_not_a_panic() {
        let meta = ObjectMeta {
            size_bytes: 0,
            md5: [0; 16],
            parts_count: 0,
            headers: Headers::default(),
            checksums: vec![],
            layout: BodyLayout::Inline,
        };
        let bytes = meta.encode();
        for len in 0..bytes.len() {
            assert!(ObjectMeta::decode(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn read_plan_covers_exactly_the_range() {
        let segments: Rc<[Segment]> = Rc::from(vec![seg(10, 4), seg(7, 4)]);
        let plan: Vec<_> = plan_reads(segments.clone(), 3..12).collect();
        let pieces: Vec<_> = plan
            .iter()
            .map(|p| (p.segment, p.chunk, p.range.clone()))
            .collect();
        assert_eq!(
            pieces,
            vec![(0, 0, 3..4), (0, 1, 0..4), (0, 2, 0..2), (1, 0, 0..2)]
        );
        let total: u64 = plan_reads(segments.clone(), 0..17)
            .map(|p| p.range.end - p.range.start)
            .sum();
        assert_eq!(total, 17);
        assert_eq!(plan_reads(segments, 5..5).count(), 0);
    }

    #[test]
    fn chunk_and_garbage_keys_parse_back() {
        let v = VersionId([9; 16]);
        let k = chunk_key("bkt", "a/\u{0}odd key", &v, 7);
        assert_eq!(parse_chunk_key(&k), Some(("bkt", "a/\u{0}odd key", v, 7)));
        assert_eq!(parse_chunk_key(&object_key("bkt", "x")), None);
        assert_eq!(parse_chunk_key(b"c"), None);
        let g = garbage_key("bkt", "some/key", &[3; 16]);
        assert_eq!(parse_garbage_key(&g), Some(("bkt", "some/key")));
        assert_eq!(parse_garbage_key(&k), None);
    }

    #[test]
    fn keys_sort_by_object_key_within_a_bucket() {
        assert!(object_key("b", "a") < object_key("b", "a/b"));
        assert!(object_key("b", "a/b") < object_key("b", "ab"));
        assert!(object_key("b", "zz") < object_key("b0", ""));
        let upload = upload_key("b", "some/key", "0123");
        let suffix = &upload[upload_prefix("b").len()..];
        assert_eq!(split_upload_suffix(suffix), Some(("some/key", "0123")));
    }
}
