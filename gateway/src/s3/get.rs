//! GetObject and HeadObject: preconditions (304/412), single ranges (206 + Content-Range, 416
//! InvalidRange), `partNumber`, checksums on request, and a body streamed chunk by chunk with
//! bounded read-ahead (never the whole object in memory).

use std::ops::Range as ByteRange;

use http::StatusCode;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response};
use send_wrapper::SendWrapper;

use super::{
    Conditions, check_read_conditions, checksum_fields, etag, header_fields, require_bucket_id,
    timestamp,
};
use crate::error::GatewayError;
use crate::layout::{MAX_PART_NUMBER, ObjectMeta};
use crate::store::Ctx;

/// The byte range a read serves and how to describe it.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadSpan {
    /// Bytes served.
    pub range: ByteRange<u64>,
    /// Content-Range when the response is partial.
    pub content_range: Option<String>,
    /// x-amz-mp-parts-count when a part was asked for.
    pub parts_count: Option<i32>,
}

fn invalid_part_number() -> GatewayError {
    let mut err = S3Error::with_message(
        S3ErrorCode::Custom("InvalidPartNumber".into()),
        "The requested partnumber is not satisfiable",
    );
    err.set_status_code(StatusCode::RANGE_NOT_SATISFIABLE);
    GatewayError::S3(err)
}

/// Resolves `Range` / `partNumber` against an object.
pub fn resolve_span(
    meta: &ObjectMeta,
    part_number: Option<i32>,
    range: Option<&Range>,
) -> Result<ReadSpan, GatewayError> {
    let size = meta.size_bytes;
    let describe = |r: &ByteRange<u64>| {
        Some(format!(
            "bytes {}-{}/{size}",
            r.start,
            r.end.saturating_sub(1)
        ))
    };
    match (part_number, range) {
        (Some(_), Some(_)) => Err(GatewayError::s3(
            S3ErrorCode::InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter",
        )),
        (Some(n), None) => {
            if !(1..=MAX_PART_NUMBER).contains(&n) {
                return Err(GatewayError::s3(
                    S3ErrorCode::InvalidArgument,
                    "Part number must be an integer between 1 and 10000, inclusive",
                ));
            }
            if meta.parts_count == 0 {
                return if n == 1 {
                    Ok(ReadSpan {
                        range: 0..size,
                        content_range: None,
                        parts_count: None,
                    })
                } else {
                    Err(invalid_part_number())
                };
            }
            let r = meta
                .part_range(n.unsigned_abs())
                .ok_or_else(invalid_part_number)?;
            let content_range = describe(&r);
            Ok(ReadSpan {
                range: r,
                content_range,
                parts_count: i32::try_from(meta.parts_count).ok(),
            })
        }
        (None, Some(r)) => {
            let r = r.check(size).map_err(|_| {
                GatewayError::s3(
                    S3ErrorCode::InvalidRange,
                    "The requested range is not satisfiable",
                )
            })?;
            let content_range = describe(&r);
            Ok(ReadSpan {
                range: r,
                content_range,
                parts_count: None,
            })
        }
        (None, None) => Ok(ReadSpan {
            range: 0..size,
            content_range: None,
            parts_count: None,
        }),
    }
}

/// The checksums a read answers with when asked (`x-amz-checksum-mode: ENABLED`) and their
/// type: the object's for a whole read; for a part of a multipart object, that part's (the
/// checksum of exactly the bytes served); none for a byte range.
pub fn read_checksums(
    mode: Option<&ChecksumMode>,
    span: &ReadSpan,
    part_number: Option<i32>,
    meta: &ObjectMeta,
) -> ([Option<String>; 5], Option<ChecksumType>) {
    if !mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED)) {
        return Default::default();
    }
    let how = meta
        .checksum_type()
        .map(|t| ChecksumType::from(t.name().to_owned()));
    match (span.content_range.is_some(), part_number) {
        (false, _) => (checksum_fields(&meta.checksums), how),
        (true, Some(n)) if span.parts_count.is_some() => {
            let part = usize::try_from(n - 1)
                .ok()
                .and_then(|i| meta.part_checksums.get(i));
            match part {
                Some(sum) => (checksum_fields(std::slice::from_ref(sum)), how),
                None => Default::default(),
            }
        }
        (true, _) => Default::default(),
    }
}

/// GetObject.
pub async fn get_object(
    ctx: &Ctx,
    req: S3Request<GetObjectInput>,
) -> Result<S3Response<GetObjectOutput>, GatewayError> {
    let (who, input) = super::object_acl::RequesterOf::split(req);
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    let (obj, version_id) = super::object_acl::read_object_as(
        ctx,
        &who,
        "GetObject",
        &input.bucket,
        &bucket,
        &input.key,
        input.version_id.as_deref(),
        false,
    )
    .await?;
    let cipher = crate::sse::reader(who.headers(), false, obj.meta.headers.sse_c.as_ref())?;
    let (sse_customer_algorithm, sse_customer_key_md5) = crate::sse::answered(cipher.as_ref());
    let cipher = cipher.map(std::rc::Rc::new);

    let last_modified = timestamp(obj.hlc);
    let etag_value = obj.meta.etag();
    let conditions = Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    };
    check_read_conditions(&conditions, &etag_value, &last_modified)?;
    let span = resolve_span(&obj.meta, input.part_number, input.range.as_ref())?;
    let ([crc32, crc32c, crc64nvme, sha1, sha256], checksum_type) = read_checksums(
        input.checksum_mode.as_ref(),
        &span,
        input.part_number,
        &obj.meta,
    );
    let h = header_fields(&obj.meta.headers);
    let content_length = i64::try_from(span.range.end - span.range.start).unwrap_or(i64::MAX);
    let body = ctx
        .open_body(&bucket, &input.key, &obj, span.range.clone(), cipher)
        .await?;
    // Sound: the stream is polled and dropped by this core's hyper connection task (module docs).
    let body = StreamingBlob::wrap(SendWrapper::new(body));
    Ok(S3Response::new(GetObjectOutput {
        accept_ranges: Some("bytes".into()),
        body: Some(body),
        cache_control: h.cache_control,
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_crc64nvme: crc64nvme,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        checksum_type,
        content_disposition: h.content_disposition,
        content_encoding: h.content_encoding,
        content_language: h.content_language,
        content_length: Some(content_length),
        content_range: span.content_range,
        content_type: h.content_type,
        e_tag: Some(etag(etag_value)),
        expires: h.expires,
        last_modified: Some(last_modified),
        metadata: h.metadata,
        parts_count: span.parts_count,
        tag_count: super::tagging::tag_count(&obj.meta.headers.tags),
        sse_customer_algorithm,
        sse_customer_key_md5,
        version_id,
        ..Default::default()
    }))
}

/// HeadObject.
pub async fn head_object(
    ctx: &Ctx,
    req: S3Request<HeadObjectInput>,
) -> Result<S3Response<HeadObjectOutput>, GatewayError> {
    let (who, input) = super::object_acl::RequesterOf::split(req);
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    let (obj, version_id) = super::object_acl::read_object_as(
        ctx,
        &who,
        "HeadObject",
        &input.bucket,
        &bucket,
        &input.key,
        input.version_id.as_deref(),
        true,
    )
    .await?;
    let cipher = crate::sse::reader(who.headers(), false, obj.meta.headers.sse_c.as_ref())?;
    let (sse_customer_algorithm, sse_customer_key_md5) = crate::sse::answered(cipher.as_ref());

    let last_modified = timestamp(obj.hlc);
    let etag_value = obj.meta.etag();
    let conditions = Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    };
    check_read_conditions(&conditions, &etag_value, &last_modified)?;
    let span = resolve_span(&obj.meta, input.part_number, input.range.as_ref())?;
    let ([crc32, crc32c, crc64nvme, sha1, sha256], checksum_type) = read_checksums(
        input.checksum_mode.as_ref(),
        &span,
        input.part_number,
        &obj.meta,
    );
    let h = header_fields(&obj.meta.headers);
    let partial = span.content_range.is_some();
    let mut resp = S3Response::new(HeadObjectOutput {
        accept_ranges: Some("bytes".into()),
        cache_control: h.cache_control,
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_crc64nvme: crc64nvme,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        checksum_type,
        content_disposition: h.content_disposition,
        content_encoding: h.content_encoding,
        content_language: h.content_language,
        content_length: Some(i64::try_from(span.range.end - span.range.start).unwrap_or(i64::MAX)),
        content_range: span.content_range,
        content_type: h.content_type,
        e_tag: Some(etag(etag_value)),
        expires: h.expires,
        last_modified: Some(last_modified),
        metadata: h.metadata,
        parts_count: span.parts_count,
        version_id,
        sse_customer_algorithm,
        sse_customer_key_md5,
        ..Default::default()
    });
    if partial {
        resp.status = Some(StatusCode::PARTIAL_CONTENT);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{BodyLayout, ChunkRun, Headers, VersionId};

    fn meta(size: u64, parts: &[u64]) -> ObjectMeta {
        let layout = if parts.is_empty() {
            BodyLayout::Inline
        } else {
            BodyLayout::Chunked(
                parts
                    .iter()
                    .map(|&s| ChunkRun {
                        version: VersionId([0; 16]),
                        size_bytes: s,
                        chunk_size_bytes: 4,
                        md5: [0; 16],
                    })
                    .collect(),
            )
        };
        ObjectMeta {
            completed_upload: None,
            part_checksums: Vec::new(),
            size_bytes: size,
            md5: [0; 16],
            parts_count: u32::try_from(parts.len()).unwrap(),
            headers: Headers::default(),
            checksums: vec![],
            layout,
        }
    }

    #[test]
    fn ranges_resolve_like_s3() {
        let m = meta(100, &[]);
        let r = |s: &str| resolve_span(&m, None, Some(&Range::parse(s).unwrap()));
        assert_eq!(r("bytes=0-9").unwrap().range, 0..10);
        assert_eq!(
            r("bytes=0-9").unwrap().content_range.as_deref(),
            Some("bytes 0-9/100")
        );
        assert_eq!(r("bytes=-10").unwrap().range, 90..100);
        assert_eq!(r("bytes=95-").unwrap().range, 95..100);
        assert_eq!(r("bytes=90-200").unwrap().range, 90..100);
        assert!(r("bytes=100-").is_err());
    }

    #[test]
    fn part_numbers_select_parts() {
        let m = meta(25, &[10, 15]);
        let span = resolve_span(&m, Some(2), None).unwrap();
        assert_eq!(span.range, 10..25);
        assert_eq!(span.parts_count, Some(2));
        assert!(resolve_span(&m, Some(3), None).is_err());
        let single = meta(7, &[]);
        assert_eq!(resolve_span(&single, Some(1), None).unwrap().range, 0..7);
        assert!(resolve_span(&single, Some(2), None).is_err());
    }
}
