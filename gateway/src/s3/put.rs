//! PutObject: conditional writes (If-None-Match: *, If-Match: checked early to spare the upload,
//! and decided by storage at the commit point, atomically with the write), the body streamed
//! into storage with MD5 and requested `x-amz-checksum-*` computed on the way, Content-MD5 and
//! checksums verified (BadDigest) before the manifest commits.

use futures_util::StreamExt;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::{
    checksum_fields, checksum_request, etag, headers_from, no_such_key, precondition_failed,
    require_bucket_id, verify_integrity,
};
use leofs_shard::{EtagCondition, WriteCondition};

use crate::error::{GatewayError, body_error};
use crate::layout::{BodyLayout, BucketId, ObjectMeta};
use crate::store::Ctx;

/// The precondition storage evaluates at a write's commit point.
pub fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> WriteCondition {
    let convert = |c: &ETagCondition| match c {
        ETagCondition::Any => EtagCondition::Any,
        ETagCondition::ETag(e) => EtagCondition::Etag(e.value().to_owned()),
    };
    WriteCondition {
        if_match: if_match.map(convert),
        if_none_match: if_none_match.map(convert),
        if_latest: None,
    }
}

/// Checks `If-None-Match: *` / `If-Match` of a write against the current object before its body
/// is read (a request that cannot succeed fails at once); the decision that counts is taken
/// again by storage at the commit point ([`write_condition`]).
pub async fn check_write_conditions(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> Result<(), GatewayError> {
    if if_match.is_none() && if_none_match.is_none() {
        return Ok(());
    }
    let current = ctx.head_object(bucket, key).await?;
    if let Some(cond) = if_none_match {
        match (cond, &current) {
            (ETagCondition::Any, Some(_)) => return Err(precondition_failed()),
            (ETagCondition::ETag(e), Some(obj)) if e.value() == obj.meta.etag() => {
                return Err(precondition_failed());
            }
            _ => {}
        }
    }
    if let Some(cond) = if_match {
        let Some(obj) = &current else {
            return Err(no_such_key());
        };
        if let ETagCondition::ETag(e) = cond
            && e.value() != obj.meta.etag()
        {
            return Err(precondition_failed());
        }
    }
    Ok(())
}

/// PutObject.
pub async fn put_object(
    ctx: &Ctx,
    req: S3Request<PutObjectInput>,
) -> Result<S3Response<PutObjectOutput>, GatewayError> {
    let trailers = req.trailing_headers.clone();
    let access_key = req.credentials.as_ref().map(|c| c.access_key.clone());
    let form_upload = req.method == http::Method::POST;
    let request_headers = req.headers;
    let input = req.input;
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    // A form upload's ACL and key are in its fields, a PUT's in its headers.
    let fields = form_upload.then(|| super::unsupported::put_input_headers(&input));
    let asked = fields.as_ref().unwrap_or(&request_headers);
    let acl = crate::acl::acl_of_request(
        &ctx.manager.snapshot(),
        &input.bucket,
        access_key.as_deref(),
        asked,
    )?;
    let sealed = crate::sse::sealed_for_write(asked)?;
    check_write_conditions(
        ctx,
        &bucket,
        &input.key,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
    )
    .await?;
    let sums = checksum_request(
        input.checksum_algorithm.as_ref(),
        checksum_values!(input),
        &request_headers,
    )?;
    let mut headers = headers_from(
        input.content_type,
        input.cache_control,
        input.content_disposition,
        input.content_encoding,
        input.content_language,
        input.expires,
        input.metadata,
    )?;
    headers.tags = super::tagging::tags_of_header(input.tagging.as_deref())?;
    headers.acl = Some(acl);
    let cipher = sealed.map(|(sse, cipher)| {
        headers.sse_c = Some(sse);
        cipher
    });
    let body = input
        .body
        .ok_or_else(|| GatewayError::s3(S3ErrorCode::MissingContentLength, "missing body"))?
        .map(|r| r.map_err(body_error));
    let mut written = ctx
        .write_body(
            &bucket,
            &input.key,
            body,
            true,
            &sums.kinds,
            cipher.as_ref(),
        )
        .await?;
    // On failure the written chunks' registration is dropped: storage collects them.
    verify_integrity(
        input.content_md5.as_deref(),
        &written.md5,
        &sums,
        trailers.as_ref(),
        &written.checksums,
    )?;
    if let Some(cipher) = &cipher {
        written.key_md5(cipher);
    }
    let meta = ObjectMeta {
        completed_upload: None,
        part_checksums: Vec::new(),
        size_bytes: written.size_bytes,
        md5: written.md5,
        parts_count: 0,
        headers,
        checksums: written.checksums,
        layout: match written.run {
            Some(seg) => BodyLayout::Chunked(vec![seg]),
            None => BodyLayout::Inline,
        },
    };
    let hlc = ctx
        .commit_object(
            &bucket,
            &input.key,
            &meta,
            written.inline.unwrap_or_default(),
            write_condition(input.if_match.as_ref(), input.if_none_match.as_ref()),
            written.registration,
        )
        .await?;
    let [crc32, crc32c, crc64nvme, sha1, sha256] = checksum_fields(&meta.checksums);
    let (sse_customer_algorithm, sse_customer_key_md5) = crate::sse::answered(cipher.as_ref());
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(etag(meta.etag())),
        version_id: super::versions::written_version_id(&bucket, hlc),
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_crc64nvme: crc64nvme,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        sse_customer_algorithm,
        sse_customer_key_md5,
        ..Default::default()
    }))
}
