//! GetObjectAttributes: what a HEAD tells about an object, and its parts, in one XML answer and
//! one metadata read. Only the attributes asked for are answered; a multipart object's parts are
//! listed (with their sizes and checksums, paged by `max-parts` and `part-number-marker`) only
//! when its upload named a checksum algorithm, as S3 lists them; otherwise only their count.

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::{checksum_fields, require_bucket_id, timestamp};
use crate::error::GatewayError;
use crate::layout::ObjectMeta;
use crate::store::Ctx;

/// Default and largest `max-parts` (S3's).
const MAX_PARTS: i32 = 1000;

/// Which attributes a request asks for.
#[derive(Default)]
struct Wanted {
    etag: bool,
    checksum: bool,
    parts: bool,
    storage_class: bool,
    size: bool,
}

/// The `x-amz-object-attributes` list: at least one, each one of S3's five names.
fn wanted(list: &[ObjectAttributes]) -> Result<Wanted, GatewayError> {
    let mut wanted = Wanted::default();
    for name in list
        .iter()
        .flat_map(|a| a.as_str().split(','))
        .map(str::trim)
    {
        match name {
            ObjectAttributes::ETAG => wanted.etag = true,
            ObjectAttributes::CHECKSUM => wanted.checksum = true,
            ObjectAttributes::OBJECT_PARTS => wanted.parts = true,
            ObjectAttributes::STORAGE_CLASS => wanted.storage_class = true,
            ObjectAttributes::OBJECT_SIZE => wanted.size = true,
            _ => {
                return Err(GatewayError::s3(
                    S3ErrorCode::InvalidArgument,
                    format!("Invalid attribute name specified: {name:?}"),
                ));
            }
        }
    }
    if !(wanted.etag || wanted.checksum || wanted.parts || wanted.storage_class || wanted.size) {
        return Err(GatewayError::s3(
            S3ErrorCode::InvalidArgument,
            "At least one attribute must be specified (x-amz-object-attributes).",
        ));
    }
    Ok(wanted)
}

/// The Checksum element: the object's checksum and its type (a composite one without its
/// `-N` suffix, as S3 writes it here).
fn checksum_of(meta: &ObjectMeta) -> Option<Checksum> {
    let how = meta.checksum_type()?;
    let digests: Vec<_> = meta
        .checksums
        .iter()
        .map(|c| crate::layout::StoredChecksum {
            kind: c.kind,
            value: c.digest().to_owned(),
        })
        .collect();
    let [crc32, crc32c, crc64nvme, sha1, sha256] = checksum_fields(&digests);
    Some(Checksum {
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_crc64nvme: crc64nvme,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        checksum_type: Some(ChecksumType::from(how.name().to_owned())),
    })
}

/// The ObjectParts element of a multipart object (None for any other).
fn parts_of(
    meta: &ObjectMeta,
    max_parts: Option<i32>,
    marker: Option<i32>,
) -> Result<Option<GetObjectAttributesParts>, GatewayError> {
    let crate::layout::BodyLayout::Chunked(runs) = &meta.layout else {
        return Ok(None);
    };
    if meta.parts_count == 0 {
        return Ok(None);
    }
    let total = i32::try_from(meta.parts_count).unwrap_or(i32::MAX);
    if meta.part_checksums.is_empty() {
        return Ok(Some(GetObjectAttributesParts {
            total_parts_count: Some(total),
            ..Default::default()
        }));
    }
    let max_parts = match max_parts {
        None => MAX_PARTS,
        Some(n) if n >= 0 => n.min(MAX_PARTS),
        Some(_) => {
            return Err(GatewayError::s3(
                S3ErrorCode::InvalidArgument,
                "Argument max-parts must be an integer between 0 and 2147483647",
            ));
        }
    };
    let marker = marker.unwrap_or(0);
    if marker < 0 {
        return Err(GatewayError::s3(
            S3ErrorCode::InvalidArgument,
            "Argument part-number-marker must be an integer between 0 and 2147483647",
        ));
    }
    let first = usize::try_from(marker).unwrap_or(usize::MAX);
    let take = usize::try_from(max_parts).unwrap_or(0);
    let parts: Vec<ObjectPart> = runs
        .iter()
        .zip(&meta.part_checksums)
        .enumerate()
        .skip(first)
        .take(take)
        .map(|(i, (run, sum))| {
            let [crc32, crc32c, crc64nvme, sha1, sha256] =
                checksum_fields(std::slice::from_ref(sum));
            ObjectPart {
                checksum_crc32: crc32,
                checksum_crc32c: crc32c,
                checksum_crc64nvme: crc64nvme,
                checksum_sha1: sha1,
                checksum_sha256: sha256,
                part_number: i32::try_from(i + 1).ok(),
                size: i64::try_from(run.size_bytes).ok(),
            }
        })
        .collect();
    let last = parts.last().and_then(|p| p.part_number);
    let truncated = first.saturating_add(parts.len()) < runs.len();
    Ok(Some(GetObjectAttributesParts {
        is_truncated: Some(truncated),
        max_parts: Some(max_parts),
        next_part_number_marker: if truncated {
            last.or(Some(marker))
        } else {
            None
        },
        part_number_marker: Some(marker),
        parts: Some(parts),
        total_parts_count: Some(total),
    }))
}

/// GetObjectAttributes.
pub async fn get_object_attributes(
    ctx: &Ctx,
    req: S3Request<GetObjectAttributesInput>,
) -> Result<S3Response<GetObjectAttributesOutput>, GatewayError> {
    let (who, input) = super::object_acl::RequesterOf::split(req);
    let wanted = wanted(&input.object_attributes)?;
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    let (obj, version_id) = super::object_acl::read_object_as(
        ctx,
        &who,
        "GetObjectAttributes",
        &input.bucket,
        &bucket,
        &input.key,
        input.version_id.as_deref(),
        true,
    )
    .await?;
    crate::sse::reader(who.headers(), false, obj.meta.headers.sse_c.as_ref())?;
    let meta = &obj.meta;
    let object_parts = if wanted.parts {
        parts_of(meta, input.max_parts, input.part_number_marker)?
    } else {
        None
    };
    Ok(S3Response::new(GetObjectAttributesOutput {
        checksum: wanted.checksum.then(|| checksum_of(meta)).flatten(),
        e_tag: wanted.etag.then(|| ETag::Strong(meta.etag())),
        last_modified: Some(timestamp(obj.hlc)),
        object_parts,
        object_size: wanted
            .size
            .then(|| i64::try_from(meta.size_bytes).unwrap_or(i64::MAX)),
        storage_class: wanted
            .storage_class
            .then(|| StorageClass::from_static(StorageClass::STANDARD)),
        version_id,
        ..Default::default()
    }))
}
