//! Engine keys of the object layout. Every key starts with one namespace byte; `bucket` in a
//! key is a [`BucketId`]'s storage name (`name~incarnation` in hex, or the bare name for buckets
//! older than incarnations):
//! - `o` bucket 0x00 key: the object record (manifest; inline body for small objects). Placed by
//!   `object_hash(bucket, key)`; a scan of `o` bucket 0x00 lists a bucket in key order.
//! - `c` bucket 0x00 key 0x00 version(16) index(u32 BE): one chunk of an object or part.
//! - `u` bucket 0x00 key 0x00 upload-id: a multipart upload in progress.
//! - `p` upload-id 0x00 part-number(u32 BE): one uploaded part.
//! - `g` bucket 0x00 key 0x00 entry-id(16): a garbage-queue entry (`collector`), placed in the
//!   object record's partition.
//! - `h` target HLC key: a hint of a write a replica missed (`hinted`), placed in the written
//!   record's partition.
//!
//! Records other than object records are placed by `hash_bytes(engine key)`.

use bytes::{BufMut, Bytes, BytesMut};

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
/// Bytes of a version id (also of an upload id before hex encoding).
pub const VERSION_ID_BYTES: usize = 16;

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
pub struct BucketId(String, Option<(u16, u16, u16)>, super::Versioning);

impl BucketId {
    /// The storage name of bucket `name` at `incarnation`.
    pub fn new(name: &str, incarnation: u64) -> Self {
        if incarnation == 0 {
            Self(name.to_owned(), None, super::Versioning::Off)
        } else {
            Self(
                format!("{name}{INCARNATION_SEP}{incarnation:016x}"),
                None,
                super::Versioning::Off,
            )
        }
    }

    /// The bucket with its versioning state (what its writes and reads do).
    pub fn with_versioning(mut self, versioning: super::Versioning) -> Self {
        self.2 = versioning;
        self
    }

    /// The bucket's versioning state.
    pub fn versioning(&self) -> super::Versioning {
        self.2
    }

    /// The bucket with its own quorums (W, R, D) for its objects, instead of the cluster's.
    pub fn with_levels(mut self, levels: Option<(u16, u16, u16)>) -> Self {
        self.1 = levels;
        self
    }

    /// The bucket's own quorums (W, R, D), if it has them.
    pub fn levels(&self) -> Option<(u16, u16, u16)> {
        self.1
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

/// The (bucket, key) an object record's engine key names; None if `object_key` is not one.
pub fn parse_object_key(object_key: &[u8]) -> Option<(&str, &str)> {
    let names = object_key.strip_prefix(&[NS_OBJECT])?;
    let sep = names.iter().position(|&b| b == KEY_SEP)?;
    Some((
        std::str::from_utf8(&names[..sep]).ok()?,
        std::str::from_utf8(&names[sep + 1..]).ok()?,
    ))
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

/// Engine key prefix of the chunks of every object of `bucket` whose key starts with
/// `key_prefix` (the chunks of one key are under its name followed by [`KEY_SEP`]).
pub fn chunk_prefix(bucket: &str, key_prefix: &str) -> Vec<u8> {
    with_bucket_key(NS_CHUNK, bucket, key_prefix, 0).to_vec()
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
