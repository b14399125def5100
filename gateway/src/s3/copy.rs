//! CopyObject (COPY/REPLACE metadata directive; copying onto itself needs REPLACE) and
//! UploadPartCopy (with x-amz-copy-source-range). The source is streamed chunk by chunk into new
//! chunks of the destination, so a copy is bounded in memory like a PUT.

use std::rc::Rc;

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::{
    ConditionOutcome, Conditions, access_key, etag, evaluate, headers_from, multipart, no_such_key,
    precondition_failed, require_bucket_id, timestamp, versions,
};
use crate::auth::{Access, Requester, authorize, authorize_object, hide_missing};
use crate::error::GatewayError;
use crate::layout::{BodyLayout, BucketId, ObjectMeta};
use crate::store::{Ctx, StoredObject};

/// A copy's source: its bucket, key and object, and its version id to answer
/// (`x-amz-copy-source-version-id`; None in a bucket that never had versioning, named without
/// one).
struct Source {
    bucket: BucketId,
    key: String,
    object: StoredObject,
    version_id: Option<String>,
    /// The source named a version by id (copying it onto itself restores it, which S3 allows).
    by_id: bool,
}

/// Resolves `x-amz-copy-source` (with its `versionId`), checks the caller may read it and its
/// preconditions.
async fn load_source(
    ctx: &Ctx,
    requester: Requester<'_>,
    source: &CopySource,
    conditions: &Conditions<'_>,
) -> Result<Source, GatewayError> {
    let CopySource::Bucket {
        bucket,
        key,
        version_id,
    } = source
    else {
        return Err(GatewayError::s3(
            S3ErrorCode::NotImplemented,
            "access point copy sources are not supported",
        ));
    };
    // Reading the source is a GetObject of it, by the copy's requester: the bucket policy, then
    // the source object's ACL once it is read.
    authorize(
        &ctx.manager.snapshot(),
        &Access {
            versioned: version_id.is_some(),
            ..Access::new("GetObject", requester, Some(bucket), Some(key))
        },
    )?;
    let bucket_name: &str = bucket;
    let bucket = require_bucket_id(ctx, bucket)?;
    let access = Access {
        versioned: version_id.is_some(),
        ..Access::new("GetObject", requester, Some(bucket_name), Some(key))
    };
    let named = versions::read_named(ctx, &bucket, key, version_id.as_deref(), false)
        .await
        .map_err(|e| hide_missing(&ctx.manager.snapshot(), &access, e))?;
    if let versions::Named::Object(obj, _) = &named {
        authorize_object(
            &ctx.manager.snapshot(),
            &access,
            obj.meta.headers.acl.as_ref(),
        )?;
    }
    let (obj, found_id) = match named {
        versions::Named::Object(obj, version) => (*obj, version.map(|v| v.id())),
        // A marker is told only to whoever may list the source's bucket.
        versions::Named::Marker(_, true) => {
            return Err(hide_missing(
                &ctx.manager.snapshot(),
                &access,
                GatewayError::s3(
                    S3ErrorCode::InvalidRequest,
                    "The source of a copy request may not specifically refer to a delete marker by version id.",
                ),
            ));
        }
        versions::Named::Marker(_, false) => {
            return Err(hide_missing(
                &ctx.manager.snapshot(),
                &access,
                no_such_key(),
            ));
        }
    };
    // Copying a version named by id onto its own key restores it (in a versioned bucket).
    let by_id = version_id.is_some() && bucket.versioning() != crate::layout::Versioning::Off;
    match evaluate(conditions, &obj.meta.etag(), &timestamp(obj.hlc)) {
        ConditionOutcome::Proceed => Ok(Source {
            bucket,
            key: key.to_string(),
            object: obj,
            version_id: found_id,
            by_id,
        }),
        ConditionOutcome::NotModified | ConditionOutcome::Failed => Err(precondition_failed()),
    }
}

/// CopyObject.
pub async fn copy_object(
    ctx: &Ctx,
    req: S3Request<CopyObjectInput>,
    condition: leofs_shard::WriteCondition,
) -> Result<S3Response<CopyObjectOutput>, GatewayError> {
    let ak = access_key(&req).map(str::to_owned);
    let source_ip = Requester::of(&req).source_ip;
    let request_headers = req.headers.clone();
    let sealed = crate::sse::sealed_for_write(&req.headers)?;
    let input = req.input;
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    let conditions = Conditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    };
    let requester = Requester {
        access_key: ak.as_deref(),
        source_ip,
        headers: Some(&request_headers),
    };
    let source = load_source(ctx, requester, &input.copy_source, &conditions).await?;
    let (src_bucket, src_key, src) = (&source.bucket, &source.key, &source.object);
    let source_cipher =
        crate::sse::reader(&request_headers, true, src.meta.headers.sse_c.as_ref())?.map(Rc::new);
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    if let Some(d) = &input.metadata_directive
        && d.as_str() != MetadataDirective::REPLACE
        && d.as_str() != MetadataDirective::COPY
    {
        return Err(GatewayError::s3(
            S3ErrorCode::InvalidArgument,
            "Unknown metadata directive.",
        ));
    }
    if *src_bucket == bucket
        && *src_key == input.key
        && !replace
        && !source.by_id
        && sealed.is_none()
        && source_cipher.is_none()
    {
        return Err(GatewayError::s3(
            S3ErrorCode::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let tags = super::tagging::copied_tags(&input, &src.meta.headers.tags)?;
    let mut headers = if replace {
        headers_from(
            input.content_type,
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires,
            input.metadata,
        )?
    } else {
        src.meta.headers.clone()
    };
    headers.tags = tags;
    // A copy has the ACL its request asks for (private without one), never the source's.
    headers.acl = Some(crate::acl::acl_of_request(
        &ctx.manager.snapshot(),
        &input.bucket,
        ak.as_deref(),
        &request_headers,
    )?);
    // The copy is encrypted with the request's key, if it gives one, never with the source's.
    headers.sse_c = None;
    let dest_cipher = sealed.map(|(sse, cipher)| {
        headers.sse_c = Some(sse);
        cipher
    });
    let mut kinds: Vec<_> = src.meta.checksums.iter().map(|c| c.kind).collect();
    if let Some(k) = input
        .checksum_algorithm
        .as_ref()
        .and_then(|a| crate::layout::ChecksumKind::from_name(a.as_str()))
        && !kinds.contains(&k)
    {
        kinds.push(k);
    }
    let (meta, inline, registration) = match &src.meta.layout {
        // An inline source with no extra checksum asked for is copied as is (no re-hashing).
        BodyLayout::Inline
            if kinds.len() == src.meta.checksums.len()
                && source_cipher.is_none()
                && dest_cipher.is_none() =>
        {
            let meta = ObjectMeta {
                completed_upload: None,
                part_checksums: Vec::new(),
                headers,
                parts_count: 0,
                ..src.meta.clone()
            };
            (meta, src.inline.clone(), None)
        }
        _ => {
            let body = ctx
                .open_body(
                    src_bucket,
                    src_key,
                    src,
                    0..src.meta.size_bytes,
                    source_cipher.clone(),
                )
                .await?;
            let mut written = ctx
                .write_body(
                    &bucket,
                    &input.key,
                    body,
                    true,
                    &kinds,
                    dest_cipher.as_ref(),
                )
                .await?;
            if let Some(cipher) = &dest_cipher {
                written.key_md5(cipher);
            }
            let layout = match written.run {
                Some(seg) => BodyLayout::Chunked(vec![seg]),
                None => BodyLayout::Inline,
            };
            let meta = ObjectMeta {
                completed_upload: None,
                part_checksums: Vec::new(),
                size_bytes: written.size_bytes,
                md5: written.md5,
                parts_count: 0,
                headers,
                checksums: written.checksums,
                layout,
            };
            (
                meta,
                written.inline.unwrap_or_default(),
                written.registration,
            )
        }
    };
    let hlc = ctx
        .commit_object(&bucket, &input.key, &meta, inline, condition, registration)
        .await?;
    let [crc32, crc32c, crc64nvme, sha1, sha256] = super::checksum_fields(&meta.checksums);
    let (sse_customer_algorithm, sse_customer_key_md5) = crate::sse::answered(dest_cipher.as_ref());
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(meta.etag())),
            last_modified: Some(timestamp(hlc)),
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64nvme,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            ..Default::default()
        }),
        copy_source_version_id: source.version_id,
        version_id: versions::written_version_id(&bucket, hlc),
        sse_customer_algorithm,
        sse_customer_key_md5,
        ..Default::default()
    }))
}

/// UploadPartCopy.
pub async fn upload_part_copy(
    ctx: &Ctx,
    req: S3Request<UploadPartCopyInput>,
) -> Result<S3Response<UploadPartCopyOutput>, GatewayError> {
    let ak = access_key(&req).map(str::to_owned);
    let source_ip = Requester::of(&req).source_ip;
    let headers = req.headers.clone();
    let input = req.input;
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    let part_number = u32::try_from(input.part_number)
        .ok()
        .filter(|n| (1..=crate::layout::MAX_PART_NUMBER.unsigned_abs()).contains(n))
        .ok_or_else(|| {
            GatewayError::s3(
                S3ErrorCode::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })?;
    let (upload, _) = multipart::load_upload(ctx, &bucket, &input.key, &input.upload_id).await?;
    let conditions = Conditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    };
    let requester = Requester {
        access_key: ak.as_deref(),
        source_ip,
        headers: Some(&headers),
    };
    let source = load_source(ctx, requester, &input.copy_source, &conditions).await?;
    let (src_bucket, src_key, src) = (&source.bucket, &source.key, &source.object);
    let range = match &input.copy_source_range {
        Some(r) => {
            let parsed = Range::parse(r).map_err(|_| {
                GatewayError::s3(
                    S3ErrorCode::InvalidArgument,
                    "The x-amz-copy-source-range value must be of the form bytes=first-last",
                )
            })?;
            if let Range::Int {
                last: Some(last), ..
            } = parsed
                && last >= src.meta.size_bytes
            {
                return Err(GatewayError::s3(
                    S3ErrorCode::InvalidRange,
                    "The requested range is not satisfiable",
                ));
            }
            parsed.check(src.meta.size_bytes).map_err(|_| {
                GatewayError::s3(
                    S3ErrorCode::InvalidRange,
                    "The requested range is not satisfiable",
                )
            })?
        }
        None => 0..src.meta.size_bytes,
    };
    let kinds: Vec<_> = upload.checksum_algorithm.into_iter().collect();
    let source_cipher =
        crate::sse::reader(&headers, true, src.meta.headers.sse_c.as_ref())?.map(Rc::new);
    let part_cipher = crate::sse::part_cipher(&headers, upload.headers.sse_c.as_ref())?;
    let body = ctx
        .open_body(src_bucket, src_key, src, range, source_cipher)
        .await?;
    let mut written = ctx
        .write_body(
            &bucket,
            &input.key,
            body,
            false,
            &kinds,
            part_cipher.as_ref(),
        )
        .await?;
    if let Some(cipher) = &part_cipher {
        written.key_md5(cipher);
    }
    let part = multipart::store_part(
        ctx,
        &bucket,
        &input.key,
        &input.upload_id,
        part_number,
        written,
    )
    .await?;
    let [crc32, crc32c, crc64nvme, sha1, sha256] = super::checksum_fields(&part.checksums);
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(etag(hex::encode(part.run.md5))),
            last_modified: Some(timestamp(ctx.storage.now())),
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64nvme,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
        }),
        copy_source_version_id: source.version_id,
        ..Default::default()
    }))
}
