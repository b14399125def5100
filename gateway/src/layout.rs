//! The object layout as the gateway uses it: engine keys and record encodings belong to storage
//! (`leofs_shard::object`, re-exported here so the S3 and REST code reads `layout::…`),
//! plus the digest only the gateway computes: the multipart ETag.
//! The key functions that name a bucket take a [`BucketId`] here (never a bare bucket name), so
//! every key the gateway builds carries the bucket's incarnation.

pub use leofs_shard::object::*;

use bytes::Bytes;
use leofs_shard::object as stored;

use crate::md5::Md5;

/// The storage identity of a bucket from its catalog record.
pub fn bucket_id(bucket: &leofs_manager::Bucket) -> BucketId {
    let versioning = match bucket.versioning {
        leofs_manager::BucketVersioning::Off => Versioning::Off,
        leofs_manager::BucketVersioning::Enabled => Versioning::Enabled,
        leofs_manager::BucketVersioning::Suspended => Versioning::Suspended,
    };
    BucketId::new(&bucket.name, bucket.incarnation)
        .with_levels(bucket.consistency.map(|c| c.quorums()))
        .with_versioning(versioning)
}

/// Engine key prefix under which every object record of `bucket` lives.
pub fn object_prefix(bucket: &BucketId) -> Vec<u8> {
    stored::object_prefix(bucket.as_str())
}

/// Engine key prefix of every multipart upload of `bucket`.
pub fn upload_prefix(bucket: &BucketId) -> Vec<u8> {
    stored::upload_prefix(bucket.as_str())
}

/// What makes a bucket non-empty: the one definition that S3's DeleteBucket and the admin API's
/// `delete-bucket` share. A bucket holds content while an object record, a version (a delete
/// marker included, as in S3) or a multipart upload in progress lives under one of these
/// prefixes: uploads must be completed or aborted before
/// their bucket can be deleted (a deliberate choice, as several S3-compatible stores make it;
/// nothing is discarded that a client did not discard).
pub fn bucket_content_prefixes(bucket: &BucketId) -> [Vec<u8>; 3] {
    [
        object_prefix(bucket),
        stored::bucket_version_prefix(bucket.as_str()),
        upload_prefix(bucket),
    ]
}

/// Engine key of an upload record.
pub fn upload_key(bucket: &BucketId, key: &str, upload_id: &str) -> Bytes {
    stored::upload_key(bucket.as_str(), key, upload_id)
}

/// Engine key of chunk `index` of version `version` of (bucket, key).
pub fn chunk_key(bucket: &BucketId, key: &str, version: &VersionId, index: u32) -> Bytes {
    stored::chunk_key(bucket.as_str(), key, version, index)
}

/// The MD5 of the concatenated binary part MD5s (the digest part of a multipart ETag).
pub fn multipart_md5<'a>(part_md5s: impl IntoIterator<Item = &'a [u8; 16]>) -> [u8; 16] {
    let mut hasher = Md5::new();
    for md5 in part_md5s {
        hasher.update(md5);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etag_is_md5_of_part_md5s() {
        use ::md5::Digest as _;
        let p1: [u8; 16] = ::md5::Md5::digest(b"hello").into();
        let p2: [u8; 16] = ::md5::Md5::digest(b"world").into();
        let mut cat = Vec::new();
        cat.extend_from_slice(&p1);
        cat.extend_from_slice(&p2);
        let expected: [u8; 16] = ::md5::Md5::digest(&cat).into();
        let md5 = multipart_md5([&p1, &p2]);
        assert_eq!(md5, expected);
        assert_eq!(etag_string(&md5, 2), format!("{}-2", hex::encode(expected)));
    }
}
