//! The S3 API on s3s: [`S3Gateway`] implements `s3s::S3` by dispatching each operation to its
//! family's file (through a wrapper here when [`unsupported`] checks or honours an input field
//! the operation does not read), and this module holds what the families share (bucket lookup,
//! timestamps, ETags, standard headers, checksums, preconditions).
//!
//! s3s wants `Send` futures, but a core's [`Shard`](leofs_shard::Shard) is `!Send` (`Rc`). Every
//! operation therefore runs inside `send_wrapper::SendWrapper`. This is sound because the service
//! is built per core and served by that core's monoio runtime, which never moves a task to another
//! thread: the wrapped future is created, polled and dropped on the thread that owns the shard
//! (SendWrapper would panic rather than allow anything else).

/// The `x-amz-checksum-*` values an S3 input or a completed part carries, by algorithm (s3s
/// gives each its own field); defined before the modules that use it.
macro_rules! checksum_values {
    ($x:expr) => {
        [
            (
                $crate::layout::ChecksumKind::Crc32,
                $x.checksum_crc32.as_ref(),
            ),
            (
                $crate::layout::ChecksumKind::Crc32c,
                $x.checksum_crc32c.as_ref(),
            ),
            (
                $crate::layout::ChecksumKind::Crc64Nvme,
                $x.checksum_crc64nvme.as_ref(),
            ),
            (
                $crate::layout::ChecksumKind::Sha1,
                $x.checksum_sha1.as_ref(),
            ),
            (
                $crate::layout::ChecksumKind::Sha256,
                $x.checksum_sha256.as_ref(),
            ),
        ]
    };
}

pub mod attributes;
pub mod bucket;
pub mod bucket_settings;
pub mod copy;
pub mod delete;
pub mod get;
pub mod lifecycle;
pub mod list;
pub mod list_versions;
pub mod multipart;
pub mod multipart_checksum;
pub mod object_acl;
pub mod put;
pub mod tagging;
pub mod unsupported;
pub mod versions;

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use leofs_shard::Hlc;
use s3s::dto::*;
use s3s::dto::{ChecksumAlgorithm, ETag, ETagCondition, Metadata, Timestamp, TimestampFormat};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use send_wrapper::SendWrapper;

use crate::error::GatewayError;
use crate::layout::{BucketId, ChecksumKind, Headers, StoredChecksum, base64_encode, bucket_id};
use crate::store::Ctx;

/// The per-core S3 implementation handed to s3s.
pub struct S3Gateway {
    ctx: SendWrapper<Ctx>,
}

impl S3Gateway {
    /// Wraps a core's context; must be built on, and only used from, that core's thread.
    pub fn new(ctx: Ctx) -> Self {
        Self {
            ctx: SendWrapper::new(ctx),
        }
    }
}

macro_rules! dispatch {
    ($($name:ident($input:ty) -> $output:ty => $path:path;)*) => {
        #[async_trait::async_trait]
        impl S3 for S3Gateway {
            $(
                async fn $name(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    // Sound: see the module docs (created, polled and dropped on this core).
                    SendWrapper::new($path(&self.ctx, req)).await.map_err(S3Error::from)
                }
            )*
        }
    };
}

dispatch! {
    list_buckets(ListBucketsInput) -> ListBucketsOutput => list_buckets_page;
    create_bucket(CreateBucketInput) -> CreateBucketOutput => create_bucket_checked;
    head_bucket(HeadBucketInput) -> HeadBucketOutput => bucket::head_bucket;
    delete_bucket(DeleteBucketInput) -> DeleteBucketOutput => bucket::delete_bucket;
    get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput => bucket::get_bucket_location;
    get_bucket_acl(GetBucketAclInput) -> GetBucketAclOutput => bucket::get_bucket_acl;
    put_bucket_acl(PutBucketAclInput) -> PutBucketAclOutput => bucket::put_bucket_acl;
    get_bucket_versioning(GetBucketVersioningInput) -> GetBucketVersioningOutput => versions::get_bucket_versioning;
    put_bucket_versioning(PutBucketVersioningInput) -> PutBucketVersioningOutput => versions::put_bucket_versioning;
    put_bucket_lifecycle_configuration(PutBucketLifecycleConfigurationInput) -> PutBucketLifecycleConfigurationOutput => lifecycle::put_bucket_lifecycle_configuration;
    get_bucket_lifecycle_configuration(GetBucketLifecycleConfigurationInput) -> GetBucketLifecycleConfigurationOutput => lifecycle::get_bucket_lifecycle_configuration;
    delete_bucket_lifecycle(DeleteBucketLifecycleInput) -> DeleteBucketLifecycleOutput => lifecycle::delete_bucket_lifecycle;
    put_object(PutObjectInput) -> PutObjectOutput => put_or_post_object;
    get_object(GetObjectInput) -> GetObjectOutput => get_object_overridden;
    head_object(HeadObjectInput) -> HeadObjectOutput => head_object_overridden;
    delete_object(DeleteObjectInput) -> DeleteObjectOutput => delete::delete_object;
    delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput => delete_objects_checked;
    copy_object(CopyObjectInput) -> CopyObjectOutput => copy_object_if;
    list_objects(ListObjectsInput) -> ListObjectsOutput => list::list_objects;
    list_objects_v2(ListObjectsV2Input) -> ListObjectsV2Output => list::list_objects_v2;
    list_object_versions(ListObjectVersionsInput) -> ListObjectVersionsOutput => list::list_object_versions;
    create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput => multipart::create_multipart_upload;
    upload_part(UploadPartInput) -> UploadPartOutput => multipart::upload_part;
    upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput => copy::upload_part_copy;
    complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput => multipart::complete_multipart_upload;
    abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput => multipart::abort_multipart_upload;
    list_parts(ListPartsInput) -> ListPartsOutput => multipart::list_parts;
    list_multipart_uploads(ListMultipartUploadsInput) -> ListMultipartUploadsOutput => list_multipart_uploads_encoded;
    get_object_attributes(GetObjectAttributesInput) -> GetObjectAttributesOutput => attributes::get_object_attributes;
    get_object_tagging(GetObjectTaggingInput) -> GetObjectTaggingOutput => tagging::get_object_tagging;
    put_object_tagging(PutObjectTaggingInput) -> PutObjectTaggingOutput => tagging::put_object_tagging;
    delete_object_tagging(DeleteObjectTaggingInput) -> DeleteObjectTaggingOutput => tagging::delete_object_tagging;
    put_bucket_tagging(PutBucketTaggingInput) -> PutBucketTaggingOutput => bucket_settings::put_bucket_tagging;
    get_bucket_tagging(GetBucketTaggingInput) -> GetBucketTaggingOutput => bucket_settings::get_bucket_tagging;
    delete_bucket_tagging(DeleteBucketTaggingInput) -> DeleteBucketTaggingOutput => bucket_settings::delete_bucket_tagging;
    put_bucket_cors(PutBucketCorsInput) -> PutBucketCorsOutput => bucket_settings::put_bucket_cors;
    get_bucket_cors(GetBucketCorsInput) -> GetBucketCorsOutput => bucket_settings::get_bucket_cors;
    delete_bucket_cors(DeleteBucketCorsInput) -> DeleteBucketCorsOutput => bucket_settings::delete_bucket_cors;
    get_object_acl(GetObjectAclInput) -> GetObjectAclOutput => object_acl::get_object_acl;
    put_object_acl(PutObjectAclInput) -> PutObjectAclOutput => object_acl::put_object_acl;
    put_bucket_policy(PutBucketPolicyInput) -> PutBucketPolicyOutput => bucket_settings::put_bucket_policy;
    get_bucket_policy(GetBucketPolicyInput) -> GetBucketPolicyOutput => bucket_settings::get_bucket_policy;
    delete_bucket_policy(DeleteBucketPolicyInput) -> DeleteBucketPolicyOutput => bucket_settings::delete_bucket_policy;
    get_bucket_policy_status(GetBucketPolicyStatusInput) -> GetBucketPolicyStatusOutput => bucket_settings::get_bucket_policy_status;
}

// What `unsupported` checks or honours once s3s has parsed the input: the operations never read
// these fields (see `unsupported`'s module docs).

/// PutObject, and PostObject (s3s's default `post_object` calls `put_object`). A browser form
/// carries its fields (ACL, encryption, tags, storage class, …) in the form, where the access
/// check cannot see them, so a POST's fields are checked here as headers would be.
async fn put_or_post_object(
    ctx: &Ctx,
    req: S3Request<PutObjectInput>,
) -> Result<S3Response<PutObjectOutput>, GatewayError> {
    if req.method == http::Method::POST {
        let fields = unsupported::put_input_headers(&req.input);
        let request = unsupported::RequestView {
            op: "PutObject",
            headers: &fields,
            query: None,
            bucket: Some(&req.input.bucket),
            signed: req.credentials.is_some(),
        };
        unsupported::check_operation(&request, &ctx.manager.snapshot())?;
        // The access check saw no key (it is a form field): the upload is a PutObject of it.
        crate::auth::authorize(
            &ctx.manager.snapshot(),
            &crate::auth::Access::new(
                "PutObject",
                crate::auth::Requester::of(&req),
                Some(&req.input.bucket),
                Some(&req.input.key),
            ),
        )?;
        // A form's `tagging` field is a Tagging XML document, not the header's encoding.
        if req.input.tagging.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(GatewayError::s3(
                S3ErrorCode::NotImplemented,
                "The tagging field of a POST form is not implemented by this node; the request is refused rather than accepted and ignored.",
            ));
        }
    }
    put::put_object(ctx, req).await
}

/// GetObject with its `response-*` overrides applied.
async fn get_object_overridden(
    ctx: &Ctx,
    req: S3Request<GetObjectInput>,
) -> Result<S3Response<GetObjectOutput>, GatewayError> {
    let overrides = unsupported::ResponseOverrides::of_get(&req.input)?;
    let mut resp = get::get_object(ctx, req).await?;
    overrides.apply_to_get(&mut resp.output);
    Ok(resp)
}

/// HeadObject with its `response-*` overrides applied.
async fn head_object_overridden(
    ctx: &Ctx,
    req: S3Request<HeadObjectInput>,
) -> Result<S3Response<HeadObjectOutput>, GatewayError> {
    let overrides = unsupported::ResponseOverrides::of_head(&req.input)?;
    let mut resp = get::head_object(ctx, req).await?;
    overrides.apply_to_head(&mut resp.output);
    Ok(resp)
}

/// CopyObject with its destination's `If-Match` / `If-None-Match` (which s3s does not parse):
/// checked before the copy to fail fast, and decided by storage at the commit point, atomically
/// with the write, as PutObject's.
async fn copy_object_if(
    ctx: &Ctx,
    req: S3Request<CopyObjectInput>,
) -> Result<S3Response<CopyObjectOutput>, GatewayError> {
    let (if_match, if_none_match) = unsupported::destination_conditions(&req.headers)?;
    if if_match.is_some() || if_none_match.is_some() {
        let bucket = require_bucket_id(ctx, &req.input.bucket)?;
        put::check_write_conditions(
            ctx,
            &bucket,
            &req.input.key,
            if_match.as_ref(),
            if_none_match.as_ref(),
        )
        .await?;
    }
    let condition = put::write_condition(if_match.as_ref(), if_none_match.as_ref());
    copy::copy_object(ctx, req, condition).await
}

/// DeleteObjects without the keys it cannot honour (a version, a condition), which are reported
/// as errors instead of being deleted.
async fn delete_objects_checked(
    ctx: &Ctx,
    mut req: S3Request<DeleteObjectsInput>,
) -> Result<S3Response<DeleteObjectsOutput>, GatewayError> {
    // Too many keys is the operation's refusal, for all of them.
    if req.input.delete.objects.len() > delete::MAX_DELETE_KEYS {
        return delete::delete_objects(ctx, req).await;
    }
    let (kept, refused) = unsupported::split_deletes(std::mem::take(&mut req.input.delete.objects));
    req.input.delete.objects = kept;
    let mut resp = delete::delete_objects(ctx, req).await?;
    if !refused.is_empty() {
        resp.output
            .errors
            .get_or_insert_with(Vec::new)
            .extend(refused);
    }
    Ok(resp)
}

/// CreateBucket without a directory bucket's configuration.
async fn create_bucket_checked(
    ctx: &Ctx,
    req: S3Request<CreateBucketInput>,
) -> Result<S3Response<CreateBucketOutput>, GatewayError> {
    unsupported::check_bucket_configuration(req.input.create_bucket_configuration.as_ref())?;
    bucket::create_bucket(ctx, req).await
}

/// ListBuckets with its region filter and paging applied.
async fn list_buckets_page(
    ctx: &Ctx,
    req: S3Request<ListBucketsInput>,
) -> Result<S3Response<ListBucketsOutput>, GatewayError> {
    let page = unsupported::BucketPage::of(&req.input);
    let mut resp = bucket::list_buckets(ctx, req).await?;
    page.apply(&mut resp.output, &ctx.config.region);
    Ok(resp)
}

/// ListMultipartUploads, percent-encoded when `encoding-type=url` asks for it.
async fn list_multipart_uploads_encoded(
    ctx: &Ctx,
    req: S3Request<ListMultipartUploadsInput>,
) -> Result<S3Response<ListMultipartUploadsOutput>, GatewayError> {
    let url = req
        .input
        .encoding_type
        .as_ref()
        .is_some_and(|e| e.as_str().eq_ignore_ascii_case(EncodingType::URL));
    let mut resp = multipart::list_multipart_uploads(ctx, req).await?;
    if url {
        unsupported::url_encode_uploads(&mut resp.output);
    }
    Ok(resp)
}

/// The bucket record, or `NoSuchBucket`.
pub fn require_bucket(ctx: &Ctx, name: &str) -> Result<leofs_manager::Bucket, GatewayError> {
    ctx.manager.snapshot().bucket(name).cloned().ok_or_else(|| {
        GatewayError::s3(
            S3ErrorCode::NoSuchBucket,
            "The specified bucket does not exist",
        )
    })
}

/// The storage identity (name and incarnation) of an existing bucket, or `NoSuchBucket`.
pub fn require_bucket_id(ctx: &Ctx, name: &str) -> Result<BucketId, GatewayError> {
    require_bucket(ctx, name).map(|bucket| bucket_id(&bucket))
}

/// `NoSuchKey`.
pub fn no_such_key() -> GatewayError {
    GatewayError::s3(S3ErrorCode::NoSuchKey, "The specified key does not exist.")
}

/// Last-Modified of a record: its HLC's wall clock, truncated to whole seconds (HTTP dates have
/// second precision, so conditional requests compare consistently).
pub fn timestamp(hlc: Hlc) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_secs(hlc.physical_us / 1_000_000))
}

/// A strong ETag.
pub fn etag(value: String) -> ETag {
    ETag::Strong(value)
}

/// The owner element of listings: the bucket owner (a key's own owner is in its manifest's ACL,
/// which listings do not read).
pub fn owner_of(bucket: &leofs_manager::Bucket) -> Owner {
    Owner {
        display_name: Some(bucket.owner.clone()),
        id: Some(bucket.owner.clone()),
    }
}

/// Most bytes of user metadata (names and values, UTF-8) an object may carry (S3's limit).
pub const MAX_USER_META_BYTES: usize = 2 * 1024;

/// Standard headers and user metadata, as given on PUT, CopyObject (REPLACE) or
/// CreateMultipartUpload; more than [`MAX_USER_META_BYTES`] of user metadata is `MetadataTooLarge`.
#[allow(clippy::too_many_arguments)]
pub fn headers_from(
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
) -> Result<Headers, GatewayError> {
    let expires = expires.and_then(|t| {
        let mut buf = Vec::new();
        t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
        String::from_utf8(buf).ok()
    });
    let mut user_meta: Vec<(String, String)> = metadata.unwrap_or_default().into_iter().collect();
    user_meta.sort();
    let user_meta_bytes: usize = user_meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if user_meta_bytes > MAX_USER_META_BYTES {
        return Err(GatewayError::s3(
            S3ErrorCode::MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size.",
        ));
    }
    Ok(Headers {
        content_type,
        cache_control,
        content_disposition,
        content_encoding: content_encoding.and_then(|e| without_aws_chunked(&e)),
        content_language,
        expires,
        user_meta,
        tags: Vec::new(),
        acl: None,
        sse_c: None,
    })
}

/// A Content-Encoding without `aws-chunked`, which names how the request body was framed, not
/// how the object is encoded (S3 does not store it); None when nothing else is left.
fn without_aws_chunked(encoding: &str) -> Option<String> {
    let kept: Vec<&str> = encoding
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

/// Response fields carrying a stored object's headers.
pub struct HeaderFields {
    /// Content-Type.
    pub content_type: Option<String>,
    /// Cache-Control.
    pub cache_control: Option<String>,
    /// Content-Disposition.
    pub content_disposition: Option<String>,
    /// Content-Encoding.
    pub content_encoding: Option<String>,
    /// Content-Language.
    pub content_language: Option<String>,
    /// Expires.
    pub expires: Option<Timestamp>,
    /// User metadata.
    pub metadata: Option<Metadata>,
}

/// Splits stored headers into response fields.
pub fn header_fields(h: &Headers) -> HeaderFields {
    HeaderFields {
        content_type: Some(
            h.content_type
                .clone()
                .unwrap_or_else(|| "binary/octet-stream".into()),
        ),
        cache_control: h.cache_control.clone(),
        content_disposition: h.content_disposition.clone(),
        content_encoding: h.content_encoding.clone(),
        content_language: h.content_language.clone(),
        expires: h
            .expires
            .as_deref()
            .and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok()),
        metadata: if h.user_meta.is_empty() {
            None
        } else {
            Some(h.user_meta.iter().cloned().collect())
        },
    }
}

/// The checksums a request asks to compute and the values it expects (from headers; trailer
/// values arrive after the body and are checked with [`verify_integrity`]).
#[derive(Default)]
pub struct ChecksumRequest {
    /// Kinds to compute.
    pub kinds: Vec<ChecksumKind>,
    /// Values given in headers.
    pub expected: Vec<StoredChecksum>,
    /// Kind announced in `x-amz-trailer`.
    pub trailer: Option<ChecksumKind>,
}

/// Works out which checksums to compute: header values, `x-amz-checksum-algorithm` (or the SDK's
/// header) and `x-amz-trailer`.
pub fn checksum_request(
    algorithm: Option<&ChecksumAlgorithm>,
    given: [(ChecksumKind, Option<&String>); 5],
    headers: &HeaderMap,
) -> Result<ChecksumRequest, GatewayError> {
    let mut out = ChecksumRequest::default();
    for (kind, value) in given {
        if let Some(value) = value {
            out.expected.push(StoredChecksum {
                kind,
                value: value.clone(),
            });
            out.kinds.push(kind);
        }
    }
    let named = algorithm.map(|a| a.as_str().to_owned()).or_else(|| {
        headers
            .get("x-amz-sdk-checksum-algorithm")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    if let Some(name) = named {
        let kind = ChecksumKind::from_name(&name).ok_or_else(|| {
            GatewayError::s3(
                S3ErrorCode::InvalidArgument,
                format!("unknown checksum algorithm {name}"),
            )
        })?;
        if !out.kinds.contains(&kind) {
            out.kinds.push(kind);
        }
    }
    if let Some(trailer) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
        let kind = ChecksumKind::ALL
            .into_iter()
            .find(|k| trailer.trim().eq_ignore_ascii_case(k.header()));
        if let Some(kind) = kind {
            out.trailer = Some(kind);
            if !out.kinds.contains(&kind) {
                out.kinds.push(kind);
            }
        }
    }
    Ok(out)
}

/// True when `value` can be the base64 form of a 16-byte MD5: 22 alphabet characters and `==`.
fn is_base64_md5(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Checks Content-MD5 and every expected checksum (headers and trailer) against what was
/// computed: a malformed Content-MD5 is `InvalidDigest`, a mismatch is `BadDigest`.
pub fn verify_integrity(
    content_md5: Option<&str>,
    md5: &[u8; 16],
    request: &ChecksumRequest,
    trailers: Option<&s3s::TrailingHeaders>,
    computed: &[StoredChecksum],
) -> Result<(), GatewayError> {
    if let Some(given) = content_md5 {
        let given = given.trim();
        if !is_base64_md5(given) {
            return Err(GatewayError::s3(
                S3ErrorCode::InvalidDigest,
                "The Content-MD5 you specified is not valid.",
            ));
        }
        if given != base64_encode(md5) {
            return Err(GatewayError::s3(
                S3ErrorCode::BadDigest,
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
    }
    let mut expected = request.expected.clone();
    if let (Some(kind), Some(trailers)) = (request.trailer, trailers)
        && let Some(value) = trailers
            .read(|h| {
                h.get(kind.header())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .flatten()
    {
        expected.push(StoredChecksum { kind, value });
    }
    for want in &expected {
        let got = computed.iter().find(|c| c.kind == want.kind);
        if got.is_none_or(|c| c.value != want.value.trim()) {
            return Err(GatewayError::s3(
                S3ErrorCode::BadDigest,
                format!(
                    "The {} you specified did not match the calculated checksum.",
                    want.kind.name()
                ),
            ));
        }
    }
    Ok(())
}

/// Stored checksums as the five response fields (CRC32, CRC32C, CRC64NVME, SHA1, SHA256).
pub fn checksum_fields(c: &[StoredChecksum]) -> [Option<String>; 5] {
    let get = |k: ChecksumKind| c.iter().find(|x| x.kind == k).map(|x| x.value.clone());
    [
        get(ChecksumKind::Crc32),
        get(ChecksumKind::Crc32c),
        get(ChecksumKind::Crc64Nvme),
        get(ChecksumKind::Sha1),
        get(ChecksumKind::Sha256),
    ]
}

/// Conditional headers of a read (GET/HEAD or a copy source).
pub struct Conditions<'a> {
    /// If-Match.
    pub if_match: Option<&'a ETagCondition>,
    /// If-None-Match.
    pub if_none_match: Option<&'a ETagCondition>,
    /// If-Modified-Since.
    pub if_modified_since: Option<&'a Timestamp>,
    /// If-Unmodified-Since.
    pub if_unmodified_since: Option<&'a Timestamp>,
}

/// What a failed precondition turns into.
#[derive(Debug, PartialEq, Eq)]
pub enum ConditionOutcome {
    /// Serve the request.
    Proceed,
    /// 304 Not Modified (reads only).
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

fn condition_matches(cond: &ETagCondition, etag_value: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag_value,
    }
}

/// Evaluates preconditions in RFC 9110 order (If-Match, else If-Unmodified-Since; then
/// If-None-Match, else If-Modified-Since), as S3 does.
pub fn evaluate(
    c: &Conditions<'_>,
    etag_value: &str,
    last_modified: &Timestamp,
) -> ConditionOutcome {
    if let Some(m) = c.if_match {
        if !condition_matches(m, etag_value) {
            return ConditionOutcome::Failed;
        }
    } else if let Some(t) = c.if_unmodified_since
        && last_modified > t
    {
        return ConditionOutcome::Failed;
    }
    if let Some(m) = c.if_none_match {
        if condition_matches(m, etag_value) {
            return ConditionOutcome::NotModified;
        }
    } else if let Some(t) = c.if_modified_since
        && last_modified <= t
    {
        return ConditionOutcome::NotModified;
    }
    ConditionOutcome::Proceed
}

/// Applies [`evaluate`] for GET/HEAD: 304 carries ETag and Last-Modified, 412 is PreconditionFailed.
pub fn check_read_conditions(
    c: &Conditions<'_>,
    etag_value: &str,
    last_modified: &Timestamp,
) -> Result<(), GatewayError> {
    match evaluate(c, etag_value, last_modified) {
        ConditionOutcome::Proceed => Ok(()),
        ConditionOutcome::Failed => Err(precondition_failed()),
        ConditionOutcome::NotModified => {
            let mut err = S3Error::new(S3ErrorCode::NotModified);
            let mut headers = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag_value}\"")) {
                headers.insert(http::header::ETAG, v);
            }
            let mut date = Vec::new();
            if last_modified
                .format(TimestampFormat::HttpDate, &mut date)
                .is_ok()
                && let Ok(v) = http::HeaderValue::from_bytes(&date)
            {
                headers.insert(http::header::LAST_MODIFIED, v);
            }
            err.set_headers(headers);
            Err(GatewayError::S3(err))
        }
    }
}

/// 412 PreconditionFailed.
pub fn precondition_failed() -> GatewayError {
    GatewayError::s3(
        S3ErrorCode::PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold",
    )
}

/// The access key that signed a request, if any.
pub fn access_key<T>(req: &S3Request<T>) -> Option<&str> {
    req.credentials.as_ref().map(|c| c.access_key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_chunked_is_not_stored_as_a_content_encoding() {
        assert_eq!(without_aws_chunked("aws-chunked"), None);
        assert_eq!(
            without_aws_chunked("aws-chunked,gzip").as_deref(),
            Some("gzip")
        );
        assert_eq!(
            without_aws_chunked("gzip, AWS-CHUNKED").as_deref(),
            Some("gzip")
        );
        assert_eq!(without_aws_chunked("gzip,br").as_deref(), Some("gzip,br"));
    }

    #[test]
    fn content_md5_must_be_24_base64_characters() {
        assert!(is_base64_md5("1B2M2Y8AsgTpgAmY7PhCfg=="));
        assert!(!is_base64_md5("not base64 at all!!!!!!="));
        assert!(!is_base64_md5("1B2M2Y8AsgTpgAmY7PhCfg"));
        assert!(!is_base64_md5(""));
    }

    fn ts(secs: u64) -> Timestamp {
        Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn preconditions_follow_rfc_order() {
        let lm = ts(1000);
        let any = ETagCondition::Any;
        let other = ETagCondition::ETag(ETag::Strong("zzz".into()));
        let same = ETagCondition::ETag(ETag::Strong("abc".into()));
        let none = Conditions {
            if_match: None,
            if_none_match: None,
            if_modified_since: None,
            if_unmodified_since: None,
        };
        assert_eq!(evaluate(&none, "abc", &lm), ConditionOutcome::Proceed);
        let c = Conditions {
            if_match: Some(&other),
            ..none
        };
        assert_eq!(evaluate(&c, "abc", &lm), ConditionOutcome::Failed);
        // If-Match true wins over a failing If-Unmodified-Since.
        let early = ts(10);
        let c = Conditions {
            if_match: Some(&same),
            if_unmodified_since: Some(&early),
            ..none
        };
        assert_eq!(evaluate(&c, "abc", &lm), ConditionOutcome::Proceed);
        let c = Conditions {
            if_none_match: Some(&any),
            ..none
        };
        assert_eq!(evaluate(&c, "abc", &lm), ConditionOutcome::NotModified);
        let later = ts(2000);
        let c = Conditions {
            if_modified_since: Some(&later),
            ..none
        };
        assert_eq!(evaluate(&c, "abc", &lm), ConditionOutcome::NotModified);
        let c = Conditions {
            if_modified_since: Some(&early),
            ..none
        };
        assert_eq!(evaluate(&c, "abc", &lm), ConditionOutcome::Proceed);
    }
}
