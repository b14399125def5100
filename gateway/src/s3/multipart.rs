//! Multipart uploads: Create (an upload record), UploadPart (the part's bytes as chunk records
//! plus a part record), Complete (a manifest referencing the parts' chunks, no copy), Abort,
//! ListParts and ListMultipartUploads. Uploads are records, so they survive restarts.
//!
//! Garbage is storage's: a replaced part, the parts an upload leaves out or aborts go to the
//! object's durable garbage queue, always after the record that referenced them is gone or
//! replaced, so that a version is at every moment referenced by a part record, a manifest, or
//! nothing (and then collected, or swept after a crash).

use bytes::Bytes;
use futures_util::StreamExt;
use leofs_shard::{Hlc, PutValue, ScanEntry, Summary};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::list::{Item, RawEntry, list_page};
use super::put::{check_write_conditions, write_condition};
use super::{
    access_key, checksum_fields, checksum_request, etag, headers_from, owner_of, require_bucket,
    require_bucket_id, timestamp, verify_integrity,
};
use crate::auth::caller_user;
use crate::error::{GatewayError, body_error};
use crate::layout::{
    BodyLayout, BucketId, ChunkRun, MAX_PART_NUMBER, MIN_PART_BYTES, ObjectMeta, PartMeta,
    StoredChecksum, TAG_PART, TAG_UPLOAD, UploadMeta, bucket_id, is_valid_upload_id, multipart_md5,
    new_upload_id, part_key, part_prefix, upload_key, upload_prefix,
};
use crate::store::{Ctx, Written};

/// Default and largest max-parts / max-uploads (S3's limit).
const MAX_LIST: usize = 1000;
/// Largest manifest a completion writes (bytes): the engine's metadata limit less room for
/// what may be added to the record later (a hint's bytes, tags set by PutObjectTagging).
const MANIFEST_BYTES_MAX: usize = leofs_shard::MAX_META_BYTES - 8 * 1024;
/// Upload records ListMultipartUploads reads at once.
const UPLOAD_READS_IN_FLIGHT: usize = 16;
/// Initiator recorded for anonymous uploads (public-read-write buckets).
const ANONYMOUS: &str = "anonymous";

fn no_such_upload() -> GatewayError {
    GatewayError::s3(
        S3ErrorCode::NoSuchUpload,
        "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
}

fn part_number_of(n: i32) -> Result<u32, GatewayError> {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        Ok(n.unsigned_abs())
    } else {
        Err(GatewayError::s3(
            S3ErrorCode::InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive",
        ))
    }
}

/// The runs of a chunked manifest (none for an inline one).
fn runs_of(meta: &ObjectMeta) -> &[ChunkRun] {
    match &meta.layout {
        BodyLayout::Chunked(runs) => runs,
        BodyLayout::Inline => &[],
    }
}

/// Reads an upload record, or `NoSuchUpload`.
pub async fn load_upload(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    upload_id: &str,
) -> Result<(UploadMeta, Hlc), GatewayError> {
    if !is_valid_upload_id(upload_id) {
        return Err(no_such_upload());
    }
    let ukey = upload_key(bucket, key, upload_id);
    let head = ctx
        .storage
        .for_bucket(bucket)
        .head_record(ukey)
        .await?
        .ok_or_else(no_such_upload)?;
    Ok((UploadMeta::decode(&head.meta)?, head.hlc))
}

/// Every part record of an upload, in part-number order.
async fn scan_parts(
    ctx: &Ctx,
    bucket: &BucketId,
    upload_id: &str,
) -> Result<Vec<ScanEntry>, GatewayError> {
    let prefix = Bytes::from(part_prefix(upload_id));
    Ok(ctx
        .storage
        .for_bucket(bucket)
        .scan_all_pages(prefix)
        .await?)
}

fn part_number_of_key(key: &[u8]) -> Option<u32> {
    let tail: [u8; 4] = key.get(key.len().checked_sub(4)?..)?.try_into().ok()?;
    Some(u32::from_be_bytes(tail))
}

async fn read_part(
    ctx: &Ctx,
    bucket: &BucketId,
    key: Bytes,
) -> Result<Option<PartMeta>, GatewayError> {
    match ctx.storage.for_bucket(bucket).head_record(key).await? {
        Some(h) => Ok(Some(PartMeta::decode(&h.meta)?)),
        None => Ok(None),
    }
}

/// Stores a written part (record after chunks); storage queues the part it replaced.
pub async fn store_part(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    upload_id: &str,
    part_number: u32,
    written: Written,
) -> Result<PartMeta, GatewayError> {
    let run = written.run.unwrap_or(ChunkRun {
        version: crate::layout::VersionId::random(),
        size_bytes: 0,
        chunk_size_bytes: ctx.config.chunk_size_bytes,
        md5: written.md5,
    });
    let run = ChunkRun {
        md5: written.md5,
        ..run
    };
    let meta = PartMeta {
        run,
        checksums: written.checksums,
    };
    let summary = Summary {
        size: meta.run.size_bytes,
        digest: meta.run.md5,
        tag: TAG_PART,
    };
    let value = PutValue {
        meta: meta.encode()?,
        body: Bytes::new(),
        summary,
        hlc: None,
    };
    ctx.storage
        .commit_part(
            bucket,
            key,
            part_key(upload_id, part_number),
            value,
            written.registration,
        )
        .await?;
    Ok(meta)
}

/// Deletes an upload: its upload record first (its parts are then referenced by nothing), then
/// queues its parts' chunks as garbage with storage, then deletes its part records.
pub async fn abort_upload(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    upload_id: &str,
) -> Result<(), GatewayError> {
    let ukey = upload_key(bucket, key, upload_id);
    ctx.storage.for_bucket(bucket).delete_record(ukey).await?;
    drop_parts(ctx, bucket, key, upload_id, &[]).await
}

/// Queues the chunks of an upload's parts (except the numbers in `kept`, sorted) as garbage,
/// then deletes every part record of the upload.
async fn drop_parts(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    upload_id: &str,
    kept: &[u32],
) -> Result<(), GatewayError> {
    let parts = scan_parts(ctx, bucket, upload_id).await?;
    let mut garbage = Vec::new();
    for entry in &parts {
        let used = part_number_of_key(&entry.key).is_some_and(|n| kept.binary_search(&n).is_ok());
        if !used && let Some(part) = read_part(ctx, bucket, entry.key.clone()).await? {
            garbage.push(part.run.version_chunks());
        }
    }
    ctx.storage.queue_garbage(bucket, key, garbage).await?;
    for entry in parts {
        ctx.storage
            .for_bucket(bucket)
            .delete_record(entry.key)
            .await?;
    }
    Ok(())
}

/// CreateMultipartUpload.
pub async fn create_multipart_upload(
    ctx: &Ctx,
    req: S3Request<CreateMultipartUploadInput>,
) -> Result<S3Response<CreateMultipartUploadOutput>, GatewayError> {
    let initiator =
        caller_user(&ctx.manager.snapshot(), access_key(&req)).unwrap_or_else(|| ANONYMOUS.into());
    let sealed = crate::sse::sealed_for_write(&req.headers)?;
    let bucket_id = require_bucket_id(ctx, &req.input.bucket)?;
    // The object the upload completes gets the ACL asked for here.
    let acl = crate::acl::acl_of_request(
        &ctx.manager.snapshot(),
        &req.input.bucket,
        access_key(&req),
        &req.headers,
    )?;
    let input = req.input;
    let checksum = super::multipart_checksum::upload_checksum(
        input.checksum_algorithm.as_ref(),
        input.checksum_type.as_ref(),
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
    let (sse_customer_algorithm, sse_customer_key_md5) = crate::sse::answered(cipher.as_ref());
    let meta = UploadMeta {
        headers,
        checksum_algorithm: checksum.map(|(kind, _)| kind),
        checksum_type: checksum.map(|(_, how)| how),
        initiator,
    };
    let upload_id = new_upload_id();
    let ukey = upload_key(&bucket_id, &input.key, &upload_id);
    let summary = Summary {
        size: 0,
        digest: [0; 16],
        tag: TAG_UPLOAD,
    };
    let value = PutValue {
        meta: meta.encode()?,
        body: Bytes::new(),
        summary,
        hlc: None,
    };
    ctx.storage
        .for_bucket(&bucket_id)
        .put_record(ukey, value)
        .await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload_id),
        checksum_algorithm: input.checksum_algorithm,
        checksum_type: checksum.map(|(_, how)| ChecksumType::from(how.name().to_owned())),
        sse_customer_algorithm,
        sse_customer_key_md5,
        ..Default::default()
    }))
}

/// UploadPart.
pub async fn upload_part(
    ctx: &Ctx,
    req: S3Request<UploadPartInput>,
) -> Result<S3Response<UploadPartOutput>, GatewayError> {
    let trailers = req.trailing_headers.clone();
    let headers = req.headers;
    let input = req.input;
    let bucket_id = require_bucket_id(ctx, &input.bucket)?;
    let part_number = part_number_of(input.part_number)?;
    let (upload, _) = load_upload(ctx, &bucket_id, &input.key, &input.upload_id).await?;
    let mut sums = checksum_request(
        input.checksum_algorithm.as_ref(),
        checksum_values!(input),
        &headers,
    )?;
    if let Some(kind) = upload.checksum_algorithm
        && !sums.kinds.contains(&kind)
    {
        sums.kinds.push(kind);
    }
    let body = input
        .body
        .ok_or_else(|| GatewayError::s3(S3ErrorCode::MissingContentLength, "missing body"))?
        .map(|r| r.map_err(body_error));
    let cipher = crate::sse::part_cipher(&headers, upload.headers.sse_c.as_ref())?;
    let mut written = ctx
        .write_body(
            &bucket_id,
            &input.key,
            body,
            false,
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
    let part = store_part(
        ctx,
        &bucket_id,
        &input.key,
        &input.upload_id,
        part_number,
        written,
    )
    .await?;
    let [crc32, crc32c, crc64nvme, sha1, sha256] = checksum_fields(&part.checksums);
    let (sse_customer_algorithm, sse_customer_key_md5) = crate::sse::answered(cipher.as_ref());
    Ok(S3Response::new(UploadPartOutput {
        sse_customer_algorithm,
        sse_customer_key_md5,
        e_tag: Some(etag(hex::encode(part.run.md5))),
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_crc64nvme: crc64nvme,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        ..Default::default()
    }))
}

fn invalid_part(msg: &str) -> GatewayError {
    GatewayError::s3(S3ErrorCode::InvalidPart, msg.to_owned())
}

/// CompleteMultipartUpload.
pub async fn complete_multipart_upload(
    ctx: &Ctx,
    req: S3Request<CompleteMultipartUploadInput>,
) -> Result<S3Response<CompleteMultipartUploadOutput>, GatewayError> {
    let key_given = crate::sse::CustomerKey::from_headers(&req.headers, false)?.is_some();
    let request_headers = req.headers;
    let mut input = req.input;
    let bucket_id = require_bucket_id(ctx, &input.bucket)?;
    let requested = input
        .multipart_upload
        .take()
        .and_then(|m| m.parts)
        .unwrap_or_default();
    let upload = match load_upload(ctx, &bucket_id, &input.key, &input.upload_id).await {
        // A key given here must be the upload's (it is not needed: the parts are written).
        Ok((upload, _)) if key_given => {
            crate::sse::part_cipher(&request_headers, upload.headers.sse_c.as_ref())?;
            upload
        }
        Ok((upload, _)) => upload,
        Err(gone) => {
            return completed_before(
                ctx,
                &bucket_id,
                &input.bucket,
                &input.key,
                &input.upload_id,
                &requested,
            )
            .await?
            .ok_or(gone);
        }
    };
    if requested.is_empty() {
        return Err(GatewayError::s3(
            S3ErrorCode::MalformedXML,
            "You must specify at least one part",
        ));
    }
    let mut numbers = Vec::with_capacity(requested.len());
    for p in &requested {
        let n = part_number_of(p.part_number.unwrap_or(0))
            .map_err(|_| invalid_part("invalid part number"))?;
        if numbers.last().is_some_and(|&last| n <= last) {
            return Err(GatewayError::s3(
                S3ErrorCode::InvalidPartOrder,
                "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
            ));
        }
        numbers.push(n);
    }
    let object_checksum = ObjectChecksumRequest::of(&input, &upload)?;
    let mut runs = Vec::with_capacity(requested.len());
    let mut part_checksums = Vec::new();
    for (i, (p, &n)) in requested.iter().zip(&numbers).enumerate() {
        let part = read_part(ctx, &bucket_id, part_key(&input.upload_id, n))
            .await?
            .ok_or_else(|| {
                invalid_part("One or more of the specified parts could not be found.")
            })?;
        if let Some(given) = &p.e_tag
            && given.value().trim_matches('"') != hex::encode(part.run.md5)
        {
            return Err(invalid_part(
                "One or more of the specified parts could not be found.",
            ));
        }
        let given = checksum_values!(p);
        for (kind, value) in given {
            if let Some(value) = value
                && let Some(stored) = part.checksums.iter().find(|c| c.kind == kind)
                && stored.value != *value
            {
                return Err(invalid_part(
                    "One or more of the specified parts could not be found.",
                ));
            }
        }
        if let (Some(kind), Some(how)) = (upload.checksum_algorithm, upload.checksum_type) {
            // A composite checksum is made from the parts the client names with their
            // checksums (S3 requires them); a full-object one from the parts' own.
            let named = given.iter().any(|(k, v)| *k == kind && v.is_some());
            if how == crate::layout::ChecksumType::Composite && !named {
                return Err(GatewayError::s3(
                    S3ErrorCode::InvalidRequest,
                    format!(
                        "The upload was created using a {} checksum. The complete request must include the checksum for each part. It was missing for part {n} in the request.",
                        kind.name().to_ascii_lowercase()
                    ),
                ));
            }
            let stored = part
                .checksums
                .iter()
                .find(|c| c.kind == kind)
                .ok_or_else(|| {
                    invalid_part("One or more of the specified parts could not be found.")
                })?;
            part_checksums.push(stored.clone());
        }
        if i + 1 < requested.len() && part.run.size_bytes < MIN_PART_BYTES {
            return Err(GatewayError::s3(
                S3ErrorCode::EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed object size.",
            ));
        }
        runs.push(part.run);
    }
    let size_bytes = runs.iter().map(|s| s.size_bytes).sum();
    if let Some(expected) = input.mpu_object_size
        && u64::try_from(expected) != Ok(size_bytes)
    {
        return Err(GatewayError::s3(
            S3ErrorCode::InvalidRequest,
            format!(
                "The provided 'x-amz-mp-object-size' header value {expected} does not match what was computed: {size_bytes}"
            ),
        ));
    }
    let checksums = match (upload.checksum_algorithm, upload.checksum_type) {
        (Some(kind), Some(how)) => {
            let parts: Vec<_> = part_checksums
                .iter()
                .zip(&runs)
                .map(|(sum, run)| (sum, run.size_bytes))
                .collect();
            let sum = super::multipart_checksum::object_checksum(kind, how, &parts)?;
            object_checksum.verify(&sum)?;
            vec![sum]
        }
        _ => Vec::new(),
    };
    check_write_conditions(
        ctx,
        &bucket_id,
        &input.key,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
    )
    .await?;
    let md5 = multipart_md5(runs.iter().map(|s| &s.md5));
    let meta = ObjectMeta {
        completed_upload: Some(input.upload_id.clone()),
        part_checksums,
        size_bytes,
        md5,
        parts_count: u32::try_from(runs.len()).unwrap_or(u32::MAX),
        headers: upload.headers,
        checksums,
        layout: BodyLayout::Chunked(runs),
    };
    let manifest_bytes = meta.encode()?.len();
    if manifest_bytes > MANIFEST_BYTES_MAX {
        return Err(GatewayError::s3(
            S3ErrorCode::InvalidRequest,
            format!(
                "A multipart object of {} parts needs a {manifest_bytes}-byte manifest; this node stores at most {} bytes (about 1,190 parts, fewer with part checksums). Complete the upload with fewer, larger parts.",
                runs_of(&meta).len(),
                MANIFEST_BYTES_MAX
            ),
        ));
    }
    // The listed parts' chunks must all be there, and stay there until the manifest that
    // references them is committed (an abort or a collection racing this completion).
    let versions: Vec<_> = runs_of(&meta)
        .iter()
        .map(ChunkRun::version_chunks)
        .collect();
    let lease = ctx
        .storage
        .lease_chunks(&bucket_id, &input.key, &versions)
        .await
        .map_err(|e| match e.missing_chunk() {
            Some(_) => invalid_part("One or more of the specified parts could not be found."),
            None => e.into(),
        })?;
    let hlc = ctx
        .commit_object(
            &bucket_id,
            &input.key,
            &meta,
            Bytes::new(),
            write_condition(input.if_match.as_ref(), input.if_none_match.as_ref()),
            None,
        )
        .await?;
    drop(lease);
    // The manifest now references the listed parts: the upload goes first, then the parts it
    // left out are queued as garbage and every part record is deleted.
    let ukey = upload_key(&bucket_id, &input.key, &input.upload_id);
    ctx.storage
        .for_bucket(&bucket_id)
        .delete_record(ukey)
        .await?;
    drop_parts(ctx, &bucket_id, &input.key, &input.upload_id, &numbers).await?;
    Ok(S3Response::new(completed_output(
        &input.bucket,
        &input.key,
        &meta,
        super::versions::written_version_id(&bucket_id, hlc),
    )))
}

/// CompleteMultipartUpload's answer for the object `meta` it wrote.
fn completed_output(
    bucket: &str,
    key: &str,
    meta: &ObjectMeta,
    version_id: Option<String>,
) -> CompleteMultipartUploadOutput {
    let [crc32, crc32c, crc64nvme, sha1, sha256] = checksum_fields(&meta.checksums);
    CompleteMultipartUploadOutput {
        bucket: Some(bucket.to_owned()),
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_crc64nvme: crc64nvme,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        checksum_type: meta
            .checksum_type()
            .map(|t| ChecksumType::from(t.name().to_owned())),
        e_tag: Some(etag(meta.etag())),
        key: Some(key.to_owned()),
        location: Some(format!("/{bucket}/{key}")),
        version_id,
        ..Default::default()
    }
}

/// What a CompleteMultipartUpload says the object's checksum is (its `x-amz-checksum-*` and
/// `x-amz-checksum-type` headers), checked against the upload's settings before anything is
/// read and against the made checksum before anything is written.
struct ObjectChecksumRequest {
    /// The expected checksum, if one was sent.
    expected: Option<StoredChecksum>,
}

impl ObjectChecksumRequest {
    fn of(input: &CompleteMultipartUploadInput, upload: &UploadMeta) -> Result<Self, GatewayError> {
        let algorithm = upload
            .checksum_algorithm
            .map_or_else(|| "no".to_owned(), |k| format!("the {}", k.name()));
        if let Some(how) = &input.checksum_type {
            let how = super::multipart_checksum::checksum_type_of(how.as_str())?;
            if upload.checksum_type != Some(how) {
                // S3's answer to a checksum type other than the upload's.
                return Err(GatewayError::s3(
                    S3ErrorCode::BadDigest,
                    format!(
                        "The upload was created with {algorithm} checksum algorithm and the {} checksum type; the complete request must name the same checksum type (x-amz-checksum-type: {}).",
                        upload.checksum_type.map_or("no", |t| t.name()),
                        how.name()
                    ),
                ));
            }
        }
        let mut expected = None;
        for (kind, value) in checksum_values!(input) {
            let Some(value) = value else { continue };
            if upload.checksum_algorithm != Some(kind) || expected.is_some() {
                return Err(GatewayError::s3(
                    S3ErrorCode::InvalidRequest,
                    format!(
                        "The upload was created with {algorithm} checksum algorithm; the object's {} checksum ({}) cannot be checked.",
                        kind.name(),
                        kind.header()
                    ),
                ));
            }
            expected = Some(StoredChecksum {
                kind,
                value: value.clone(),
            });
        }
        Ok(Self { expected })
    }

    /// `BadDigest` if the sent checksum is not `made` (a composite one may be sent with or
    /// without its `-N` suffix).
    fn verify(&self, made: &StoredChecksum) -> Result<(), GatewayError> {
        match &self.expected {
            Some(sent) if sent.value != made.value && sent.value != made.digest() => {
                Err(GatewayError::s3(
                    S3ErrorCode::BadDigest,
                    format!(
                        "The {} you specified did not match the calculated checksum.",
                        made.kind.header()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The answer to a CompleteMultipartUpload of an upload that is gone because it was completed:
/// S3 answers a repeated completion (a client retrying after a lost answer) as the first, when
/// the key's current object is that completion and the parts named are the ones it assembled
/// (their ETags make its ETag). None otherwise: the upload is unknown, or was aborted.
async fn completed_before(
    ctx: &Ctx,
    bucket: &BucketId,
    bucket_name: &str,
    key: &str,
    upload_id: &str,
    requested: &[CompletedPart],
) -> Result<Option<S3Response<CompleteMultipartUploadOutput>>, GatewayError> {
    let named = match super::versions::read_named(ctx, bucket, key, None, true).await {
        Ok(named) => named,
        Err(_) => return Ok(None),
    };
    let super::versions::Named::Object(obj, version) = named else {
        return Ok(None);
    };
    if obj.meta.completed_upload.as_deref() != Some(upload_id)
        || obj.meta.parts_count as usize != requested.len()
    {
        return Ok(None);
    }
    let mut md5s = Vec::with_capacity(requested.len());
    for part in requested {
        let Some(md5) = part
            .e_tag
            .as_ref()
            .and_then(|e| hex::decode(e.value().trim_matches('"')).ok())
            .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
        else {
            return Ok(None);
        };
        md5s.push(md5);
    }
    if multipart_md5(md5s.iter()) != obj.meta.md5 {
        return Ok(None);
    }
    Ok(Some(S3Response::new(completed_output(
        bucket_name,
        key,
        &obj.meta,
        version.map(|v| v.id()),
    ))))
}

/// AbortMultipartUpload.
pub async fn abort_multipart_upload(
    ctx: &Ctx,
    req: S3Request<AbortMultipartUploadInput>,
) -> Result<S3Response<AbortMultipartUploadOutput>, GatewayError> {
    let input = req.input;
    let bucket_id = require_bucket_id(ctx, &input.bucket)?;
    load_upload(ctx, &bucket_id, &input.key, &input.upload_id).await?;
    abort_upload(ctx, &bucket_id, &input.key, &input.upload_id).await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

/// ListParts.
pub async fn list_parts(
    ctx: &Ctx,
    req: S3Request<ListPartsInput>,
) -> Result<S3Response<ListPartsOutput>, GatewayError> {
    let key = crate::sse::CustomerKey::from_headers(&req.headers, false)?;
    let input = req.input;
    let bucket = require_bucket(ctx, &input.bucket)?;
    let bucket_id = bucket_id(&bucket);
    let (upload, _) = load_upload(ctx, &bucket_id, &input.key, &input.upload_id).await?;
    // The parts' checksums are of the plaintext: of an upload encrypted with a customer key,
    // they are listed only to whoever gives that key.
    let plaintext_sums = match (&upload.headers.sse_c, key) {
        (None, None) => true,
        (Some(sse), Some(key)) => key.open(sse).map(|_| true)?,
        (Some(_), None) => false,
        (None, Some(_)) => {
            return Err(GatewayError::s3(
                S3ErrorCode::InvalidRequest,
                "The encryption parameters are not applicable to this upload.",
            ));
        }
    };
    let max_parts = input
        .max_parts
        .map_or(MAX_LIST, |n| usize::try_from(n).unwrap_or(0).min(MAX_LIST));
    let marker = input.part_number_marker.unwrap_or(0);
    let start_after = u32::try_from(marker)
        .ok()
        .filter(|&m| m > 0)
        .map(|m| part_key(&input.upload_id, m));
    let entries = ctx
        .storage
        .for_bucket(&bucket_id)
        .scan(
            Bytes::from(part_prefix(&input.upload_id)),
            start_after,
            max_parts + 1,
        )
        .await?;
    let truncated = entries.len() > max_parts;
    let listed = &entries[..entries.len().min(max_parts)];
    // An upload with a checksum algorithm lists each part's checksum, from its part record
    // (at most UPLOAD_READS_IN_FLIGHT read at once): a client resuming an upload names them
    // when it completes.
    let checksums: Vec<Vec<StoredChecksum>> =
        if upload.checksum_algorithm.is_some() && plaintext_sums {
            futures_util::stream::iter(listed)
                .map(|e| read_part(ctx, &bucket_id, e.key.clone()))
                .buffered(UPLOAD_READS_IN_FLIGHT)
                .map(|part| {
                    part.map(|p| {
                        p.map(|p| p.checksums)
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|c| Some(c.kind) == upload.checksum_algorithm)
                            .collect()
                    })
                })
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
    let parts: Vec<Part> = listed
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let n = part_number_of_key(&e.key)?;
            let [crc32, crc32c, crc64nvme, sha1, sha256] =
                checksum_fields(checksums.get(i).map_or(&[][..], Vec::as_slice));
            Some(Part {
                checksum_crc32: crc32,
                checksum_crc32c: crc32c,
                checksum_crc64nvme: crc64nvme,
                checksum_sha1: sha1,
                checksum_sha256: sha256,
                e_tag: Some(etag(hex::encode(e.summary.digest))),
                last_modified: Some(timestamp(e.hlc)),
                part_number: i32::try_from(n).ok(),
                size: i64::try_from(e.summary.size).ok(),
            })
        })
        .collect();
    let next = parts.last().and_then(|p| p.part_number);
    let owner = owner_of(&bucket);
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        initiator: Some(Initiator {
            display_name: Some(upload.initiator.clone()),
            id: Some(upload.initiator),
        }),
        owner: Some(owner),
        max_parts: i32::try_from(max_parts).ok(),
        part_number_marker: Some(marker),
        next_part_number_marker: if truncated { next } else { None },
        is_truncated: Some(truncated),
        parts: Some(parts),
        checksum_algorithm: upload
            .checksum_algorithm
            .map(|k| ChecksumAlgorithm::from(k.name().to_owned())),
        checksum_type: upload
            .checksum_type
            .map(|t| ChecksumType::from(t.name().to_owned())),
        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
        ..Default::default()
    }))
}

/// ListMultipartUploads (prefix, delimiter, key-marker, upload-id-marker, max-uploads).
pub async fn list_multipart_uploads(
    ctx: &Ctx,
    req: S3Request<ListMultipartUploadsInput>,
) -> Result<S3Response<ListMultipartUploadsOutput>, GatewayError> {
    let input = req.input;
    let bucket = require_bucket(ctx, &input.bucket)?;
    let bucket_id = bucket_id(&bucket);
    let max_uploads = input
        .max_uploads
        .map_or(MAX_LIST, |n| usize::try_from(n).unwrap_or(0).min(MAX_LIST));
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
    let ns = upload_prefix(&bucket_id);
    let mut scan_prefix = ns.clone();
    scan_prefix.extend_from_slice(prefix.as_bytes());
    let scan_prefix = Bytes::from(scan_prefix);
    // Upload entries are listed as "key\0upload-id" so that key-marker/upload-id-marker resume exactly.
    let marker = input
        .key_marker
        .as_ref()
        .map(|k| match &input.upload_id_marker {
            Some(id) => format!("{k}\0{id}"),
            None => format!("{k}\u{1}"),
        });
    let storage = ctx.storage.for_bucket(&bucket_id);
    let fetch = |after: Option<Vec<u8>>, limit: usize| {
        let ns = ns.clone();
        let scan_prefix = scan_prefix.clone();
        let storage = storage.clone();
        async move {
            let start_after = after.map(|a| {
                let mut k = ns.clone();
                k.extend_from_slice(&a);
                Bytes::from(k)
            });
            let entries = storage.scan(scan_prefix, start_after, limit).await?;
            Ok(entries
                .into_iter()
                .filter_map(|e| {
                    let key = std::str::from_utf8(e.key.get(ns.len()..)?).ok()?.to_owned();
                    Some(RawEntry {
                        key,
                        summary: e.summary,
                        hlc: e.hlc,
                    })
                })
                .collect())
        }
    };
    let page = list_page(fetch, &prefix, delimiter, marker.as_deref(), max_uploads).await?;
    let owner = owner_of(&bucket);
    // Each upload's record says who initiated it and with which checksum settings: read
    // concurrently, at most UPLOAD_READS_IN_FLIGHT at a time (an upload completed or aborted
    // since the scan is left out).
    let listed: Vec<_> = page
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Object(e) => e.key.rsplit_once('\0').map(|(key, id)| (key, id, e.hlc)),
            Item::Prefix(_) => None,
        })
        .collect();
    let records: Vec<_> = futures_util::stream::iter(&listed)
        .map(|(key, id, _)| load_upload(ctx, &bucket_id, key, id))
        .buffered(UPLOAD_READS_IN_FLIGHT)
        .collect()
        .await;
    let mut uploads = Vec::with_capacity(listed.len());
    for ((key, id, hlc), record) in listed.into_iter().zip(records) {
        let upload = match record {
            Ok((upload, _)) => upload,
            Err(GatewayError::S3(e)) if *e.code() == S3ErrorCode::NoSuchUpload => continue,
            // Listed without what it says: the listing of the others is not refused for it.
            Err(e @ GatewayError::Corrupt { .. }) => {
                tracing::warn!(bucket = %input.bucket, key, upload_id = id, error = %e, "an upload record does not decode");
                UploadMeta {
                    headers: Default::default(),
                    checksum_algorithm: None,
                    checksum_type: None,
                    initiator: owner.id.clone().unwrap_or_default(),
                }
            }
            Err(e) => return Err(e),
        };
        uploads.push(MultipartUpload {
            checksum_algorithm: upload
                .checksum_algorithm
                .map(|k| ChecksumAlgorithm::from(k.name().to_owned())),
            checksum_type: upload
                .checksum_type
                .map(|t| ChecksumType::from(t.name().to_owned())),
            initiated: Some(timestamp(hlc)),
            initiator: Some(Initiator {
                display_name: Some(upload.initiator.clone()),
                id: Some(upload.initiator),
            }),
            key: Some(key.to_owned()),
            owner: Some(owner.clone()),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            upload_id: Some(id.to_owned()),
        });
    }
    let common_prefixes: Vec<_> = page
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Prefix(p) => Some(CommonPrefix {
                prefix: Some(p.clone()),
            }),
            Item::Object(_) => None,
        })
        .collect();
    let (next_key_marker, next_upload_id_marker) = match page.next_marker() {
        Some(m) => match m.rsplit_once('\0') {
            Some((k, id)) => (Some(k.to_owned()), Some(id.to_owned())),
            None => (Some(m), None),
        },
        None => (None, None),
    };
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        common_prefixes: Some(common_prefixes),
        delimiter: input.delimiter,
        is_truncated: Some(page.truncated),
        key_marker: input.key_marker,
        max_uploads: i32::try_from(max_uploads).ok(),
        next_key_marker,
        next_upload_id_marker,
        prefix: input.prefix,
        upload_id_marker: input.upload_id_marker,
        uploads: Some(uploads),
        ..Default::default()
    }))
}
