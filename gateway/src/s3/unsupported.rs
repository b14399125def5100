//! Requests the node would accept on the wire but would not honour, so that a request either does
//! what it asks or fails with an S3 error. Most are refused here, before any operation runs:
//! - server-side encryption with a key held by the cluster (SSE-S3, SSE-KMS), and SSE-C keys
//!   given to an operation that would not use them: `NotImplemented` (SSE-C itself is
//!   [`crate::sse`]'s);
//! - object ACL headers (`x-amz-acl`, `x-amz-grant-*`) that cannot be honoured (an unknown
//!   canned ACL or grantee, a canned ACL of an AWS service group; see [`check_object_acl`]);
//! - bucket ACL headers that cannot be honoured (a canned ACL of S3's log delivery group, an
//!   unknown canned ACL or grantee: [`crate::acl::bucket_acl_of_headers`]);
//! - SigV4 presigned URLs valid for more than S3's 7 days, or with a negative or non-numeric
//!   `X-Amz-Expires`: `AccessDenied` (403), as S3 refuses them;
//! - object settings the node has no place for (see [`check_object_settings`]): Object
//!   Lock (S3's answer for a bucket without it, which every bucket is), storage classes other
//!   than STANDARD, website redirects and appends;
//! - checksum algorithms the node does not compute (MD5, SHA-512, XXHASH): `NotImplemented`;
//! - a version id this store never issues (`InvalidArgument`, as S3), conditional deletes and
//!   aborts, Object Lock and object ownership on CreateBucket: `InvalidArgument` as S3, or
//!   `NotImplemented`;
//! - `x-amz-expected-bucket-owner` (and `x-amz-source-expected-bucket-owner`) naming someone
//!   other than the bucket's owner: `AccessDenied`, as S3 (this honours the header);
//! - values S3 refuses that an operation would otherwise ignore (`x-amz-request-payer` other
//!   than `requester`, a tagging directive, `max-buckets`, `encoding-type`, optional object
//!   attributes, response header overrides on anonymous requests).
//!
//! A few settings s3s parses and the operations never read are honoured around the operation
//! instead (the glue is in `s3/mod.rs`, the rules here): GetObject/HeadObject's `response-*`
//! overrides ([`ResponseOverrides`]), CopyObject's destination `If-Match`/`If-None-Match`
//! ([`destination_conditions`]), ListBuckets' `bucket-region`, `continuation-token` and
//! `max-buckets` ([`BucketPage`]), ListMultipartUploads' `encoding-type=url`
//! ([`url_encode_uploads`]). What needs the parsed body is checked there too: DeleteObjects'
//! per-key versions and conditions ([`split_deletes`]), CreateBucket's directory-bucket
//! configuration ([`check_bucket_configuration`]).
//!
//! Callers, which between them see every request: [`crate::auth::AclAccess`] runs
//! [`check_operation`] for every S3 operation on the s3s path once the signature is verified;
//! `s3::put_object` runs it for PostObject, whose fields come in the form rather than in headers
//! ([`put_input_headers`]); [`crate::fast_path::FastPath`] runs [`check_presigned_expiry`]
//! before s3s parses a presigned URL (s3s answers a negative expiry with 400 and accepts any
//! positive one); the REST API runs [`check_object_write`] on PUT. The fast path's own reads and
//! writes never carry any of these headers or a query: its header whitelist sends such requests
//! to s3s (a test keeps it so, with [`CHECKED_HEADERS`]).
//!
//! Must never: refuse what the node honours (`x-amz-acl: private` into a private bucket, as
//! rclone sends by default, or `x-amz-storage-class: STANDARD`, as s3cmd sends, are what the
//! node does anyway), nor honour a header S3 itself ignores on that operation.

use http::{HeaderMap, HeaderValue};
use leofs_manager::{Bucket, ManagerState};
use s3s::dto::{
    CopySource, CreateBucketConfiguration, ETagCondition, GetObjectInput, GetObjectOutput,
    HeadObjectInput, HeadObjectOutput, ListBucketsInput, ListBucketsOutput,
    ListMultipartUploadsOutput, ObjectCannedACL, ObjectIdentifier, PutObjectInput,
    ServerSideEncryption, Timestamp, TimestampFormat,
};
use s3s::{S3Error, S3ErrorCode, S3Result};

use crate::acl::CANNED_ACL_HEADER;

/// One request as the checks see it (before s3s has parsed its input).
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// s3s's operation name (`PutObject`, …).
    pub op: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// The bucket the request names, if any.
    pub bucket: Option<&'a str>,
    /// Whether the request is signed (header or presigned URL); `false` for anonymous ones.
    pub signed: bool,
}

/// Request headers that ask for SSE-S3 or SSE-KMS (a key held by the cluster, which leofs does
/// not keep): `NotImplemented` on any request.
pub const SSE_S3_KMS_HEADERS: &[&str] = &[
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-context",
    "x-amz-server-side-encryption-bucket-key-enabled",
];

/// A request's own SSE-C key ([`crate::sse`]), taken by [`SSE_C_OPERATIONS`].
pub const SSE_C_HEADERS: &[&str] = &[
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
];

/// A copy source's SSE-C key, taken by CopyObject and UploadPartCopy.
pub const SSE_C_SOURCE_HEADERS: &[&str] = &[
    "x-amz-copy-source-server-side-encryption-customer-algorithm",
    "x-amz-copy-source-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key-md5",
];

/// Operations that read or write an object's body or its encryption, and so take an SSE-C key.
const SSE_C_OPERATIONS: &[&str] = &[
    "PutObject",
    "GetObject",
    "HeadObject",
    "GetObjectAttributes",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "ListParts",
];

/// Every encryption request header.
pub fn sse_headers() -> impl Iterator<Item = &'static &'static str> {
    SSE_S3_KMS_HEADERS
        .iter()
        .chain(SSE_C_HEADERS)
        .chain(SSE_C_SOURCE_HEADERS)
}

/// Every ACL request header (canned and grants).
pub const ACL_HEADERS: &[&str] = &[
    CANNED_ACL_HEADER,
    "x-amz-grant-read",
    "x-amz-grant-write",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
    "x-amz-grant-full-control",
];

/// Operations that take object ACL headers and write an object.
const OBJECT_ACL_OPERATIONS: &[&str] = &["PutObject", "CopyObject", "CreateMultipartUpload"];

/// Operations that set a bucket's ACL (see `s3::bucket`).
const BUCKET_ACL_OPERATIONS: &[&str] = &["CreateBucket", "PutBucketAcl"];

/// Object tags (PutObject, CopyObject, CreateMultipartUpload): the node keeps none.
const TAGGING_HEADER: &str = "x-amz-tagging";

/// CopyObject's choice between the source's tags and the request's (`COPY` or `REPLACE`).
const TAGGING_DIRECTIVE_HEADER: &str = "x-amz-tagging-directive";

/// Object Lock settings of an object write.
const OBJECT_LOCK_HEADERS: &[&str] = &[
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
    "x-amz-object-lock-event-hold",
    "x-amz-object-lock-event-hold-duration-days",
    "x-amz-object-lock-event-hold-duration-years",
];

/// The storage class of an object write.
const STORAGE_CLASS_HEADER: &str = "x-amz-storage-class";

/// The one storage class the node has.
const STANDARD_STORAGE_CLASS: &str = "STANDARD";

/// S3's other storage classes: asking for one is `NotImplemented`; any other name is not a
/// storage class (`InvalidStorageClass`).
const OTHER_STORAGE_CLASSES: &[&str] = &[
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
    "FSX_OPENZFS",
    "FSX_ONTAP",
];

/// A website redirect stored with the object (served by S3's website endpoints).
const WEBSITE_REDIRECT_HEADER: &str = "x-amz-website-redirect-location";

/// An append at this offset (S3 Express One Zone only).
const WRITE_OFFSET_HEADER: &str = "x-amz-write-offset-bytes";

/// Checksum algorithms S3 knows and the node does not compute, with their value headers (it
/// computes CRC32, CRC32C, CRC64NVME, SHA-1 and SHA-256).
const UNCOMPUTED_CHECKSUMS: &[(&str, &str)] = &[
    ("MD5", "x-amz-checksum-md5"),
    ("SHA512", "x-amz-checksum-sha512"),
    ("XXHASH64", "x-amz-checksum-xxhash64"),
    ("XXHASH3", "x-amz-checksum-xxhash3"),
    ("XXHASH128", "x-amz-checksum-xxhash128"),
];

/// Headers naming a checksum algorithm for the request (the SDKs' name and S3's).
const CHECKSUM_ALGORITHM_HEADERS: &[&str] =
    &["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"];

/// The trailer header, naming the checksum header that follows an aws-chunked body.
const TRAILER_HEADER: &str = "x-amz-trailer";

/// The account the caller expects to own the bucket.
const EXPECTED_OWNER_HEADER: &str = "x-amz-expected-bucket-owner";

/// The account the caller expects to own the copy source's bucket.
const SOURCE_EXPECTED_OWNER_HEADER: &str = "x-amz-source-expected-bucket-owner";

/// The copy source of CopyObject and UploadPartCopy.
const COPY_SOURCE_HEADER: &str = "x-amz-copy-source";

/// The requester's consent to pay for a Requester Pays bucket.
const REQUEST_PAYER_HEADER: &str = "x-amz-request-payer";

/// The one value of [`REQUEST_PAYER_HEADER`].
const REQUESTER: &str = "requester";

/// Conditions of a DeleteObject (S3 deletes only when they hold).
const CONDITIONAL_DELETE_HEADERS: &[&str] = &[
    "if-match",
    "x-amz-if-match-last-modified-time",
    "x-amz-if-match-size",
];

/// The condition of an AbortMultipartUpload.
const IF_MATCH_INITIATED_TIME_HEADER: &str = "x-amz-if-match-initiated-time";

/// CreateBucket's Object Lock switch.
const BUCKET_OBJECT_LOCK_HEADER: &str = "x-amz-bucket-object-lock-enabled";

/// CreateBucket's object ownership setting.
const OBJECT_OWNERSHIP_HEADER: &str = "x-amz-object-ownership";

/// Listings' optional object attributes.
const OPTIONAL_ATTRIBUTES_HEADER: &str = "x-amz-optional-object-attributes";

/// The one optional object attribute: no object is archived, so there is no restore status to
/// report and asking for it is answered.
const RESTORE_STATUS: &str = "RestoreStatus";

/// Every request header the checks here read (besides [`sse_headers`] and [`ACL_HEADERS`]): the
/// fast path must send any request carrying one to s3s.
pub const CHECKED_HEADERS: &[&str] = &[
    TAGGING_HEADER,
    TAGGING_DIRECTIVE_HEADER,
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
    "x-amz-object-lock-event-hold",
    "x-amz-object-lock-event-hold-duration-days",
    "x-amz-object-lock-event-hold-duration-years",
    STORAGE_CLASS_HEADER,
    WEBSITE_REDIRECT_HEADER,
    WRITE_OFFSET_HEADER,
    "x-amz-checksum-md5",
    "x-amz-checksum-sha512",
    "x-amz-checksum-xxhash64",
    "x-amz-checksum-xxhash3",
    "x-amz-checksum-xxhash128",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-checksum-algorithm",
    TRAILER_HEADER,
    EXPECTED_OWNER_HEADER,
    SOURCE_EXPECTED_OWNER_HEADER,
    REQUEST_PAYER_HEADER,
    "if-match",
    "if-none-match",
    "x-amz-if-match-last-modified-time",
    "x-amz-if-match-size",
    IF_MATCH_INITIATED_TIME_HEADER,
    BUCKET_OBJECT_LOCK_HEADER,
    OBJECT_OWNERSHIP_HEADER,
    OPTIONAL_ATTRIBUTES_HEADER,
];

/// GetObject's and HeadObject's response header overrides (query parameters).
const RESPONSE_OVERRIDE_PARAMS: &[&str] = &[
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
];

/// Most buckets one ListBuckets page may hold (S3's limit and default).
pub const LIST_BUCKETS_MAX: usize = 10_000;

/// Longest validity of a SigV4 presigned URL in seconds (7 days; S3's limit).
pub const PRESIGNED_EXPIRES_SECS_MAX: u64 = 7 * 24 * 60 * 60;

/// All checks of one S3 operation, run before it reads its body; `state` is the manager's
/// snapshot (the request's bucket and a copy source's bucket are looked up in it; a missing
/// bucket is left to the operation, which reports it).
pub fn check_operation(req: &RequestView<'_>, state: &ManagerState) -> S3Result<()> {
    let headers = req.headers;
    let bucket = req.bucket.and_then(|name| state.bucket(name));
    check_encryption(req.op, headers)?;
    check_checksum_algorithms(headers)?;
    check_request_payer(headers)?;
    if let Some(bucket) = bucket {
        check_expected_owner(headers, EXPECTED_OWNER_HEADER, bucket)?;
    }
    if OBJECT_ACL_OPERATIONS.contains(&req.op) {
        if let Some(bucket) = bucket {
            check_object_acl(headers, bucket, state)?;
        }
        check_object_settings(req.op, headers)?;
    }
    if BUCKET_ACL_OPERATIONS.contains(&req.op) {
        crate::acl::bucket_acl_of_headers(headers, state)?;
    }
    match req.op {
        "CopyObject" | "UploadPartCopy" => check_source_owner(headers, state),
        "CreateBucket" => check_bucket_settings(headers),
        "AbortMultipartUpload" => refuse_given(
            headers,
            &[IF_MATCH_INITIATED_TIME_HEADER],
            "Conditional aborts",
        ),
        "DeleteObject" => {
            refuse_given(headers, CONDITIONAL_DELETE_HEADERS, "Conditional deletes")?;
            check_version_id(req.query)
        }
        "GetObjectAttributes" => check_version_id(req.query),
        "GetObject" | "HeadObject" => {
            check_version_id(req.query)?;
            check_response_overrides(req.query, req.signed)
        }
        "ListObjects" | "ListObjectsV2" => check_optional_attributes(headers),
        "ListObjectVersions" => {
            check_optional_attributes(headers)?;
            check_version_id_marker(req.query)
        }
        "ListMultipartUploads" => check_encoding_type(req.query),
        "ListBuckets" => check_max_buckets(req.query),
        _ => Ok(()),
    }
}

/// The fields of a PutObject input that stand for request headers, as those headers: what a
/// PostObject form carried (a value that cannot be a header value is dropped; it could not have
/// been honoured either, and s3s has already parsed it as text).
pub fn put_input_headers(input: &PutObjectInput) -> HeaderMap {
    let retain_until = input.object_lock_retain_until_date.as_ref().map(|t| {
        let mut buf = Vec::new();
        match t.format(TimestampFormat::DateTime, &mut buf) {
            Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
            Err(_) => "set".to_owned(),
        }
    });
    let write_offset = input.write_offset_bytes.map(|n| n.to_string());
    let fields: [(&'static str, Option<&str>); 21] = [
        (
            CANNED_ACL_HEADER,
            input.acl.as_ref().map(ObjectCannedACL::as_str),
        ),
        ("x-amz-grant-read", input.grant_read.as_deref()),
        ("x-amz-grant-read-acp", input.grant_read_acp.as_deref()),
        ("x-amz-grant-write-acp", input.grant_write_acp.as_deref()),
        (
            "x-amz-grant-full-control",
            input.grant_full_control.as_deref(),
        ),
        (
            "x-amz-server-side-encryption",
            input
                .server_side_encryption
                .as_ref()
                .map(ServerSideEncryption::as_str),
        ),
        (
            "x-amz-server-side-encryption-aws-kms-key-id",
            input.ssekms_key_id.as_deref(),
        ),
        (
            "x-amz-server-side-encryption-context",
            input.ssekms_encryption_context.as_deref(),
        ),
        (
            "x-amz-server-side-encryption-bucket-key-enabled",
            input
                .bucket_key_enabled
                .map(|on| if on { "true" } else { "false" }),
        ),
        (
            "x-amz-server-side-encryption-customer-algorithm",
            input.sse_customer_algorithm.as_deref(),
        ),
        (
            "x-amz-server-side-encryption-customer-key",
            input.sse_customer_key.as_deref(),
        ),
        (
            "x-amz-server-side-encryption-customer-key-md5",
            input.sse_customer_key_md5.as_deref(),
        ),
        (TAGGING_HEADER, input.tagging.as_deref()),
        (
            "x-amz-object-lock-mode",
            input.object_lock_mode.as_ref().map(|m| m.as_str()),
        ),
        (
            "x-amz-object-lock-retain-until-date",
            retain_until.as_deref(),
        ),
        (
            "x-amz-object-lock-legal-hold",
            input
                .object_lock_legal_hold_status
                .as_ref()
                .map(|h| h.as_str()),
        ),
        (
            STORAGE_CLASS_HEADER,
            input.storage_class.as_ref().map(|c| c.as_str()),
        ),
        (
            WEBSITE_REDIRECT_HEADER,
            input.website_redirect_location.as_deref(),
        ),
        (WRITE_OFFSET_HEADER, write_offset.as_deref()),
        (
            EXPECTED_OWNER_HEADER,
            input.expected_bucket_owner.as_deref(),
        ),
        (
            REQUEST_PAYER_HEADER,
            input.request_payer.as_ref().map(|p| p.as_str()),
        ),
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in fields {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    }
    headers
}

/// The checks of a plain object write (the REST API's PUT) into `bucket`.
pub fn check_object_write(
    headers: &HeaderMap,
    bucket: &Bucket,
    state: &ManagerState,
) -> S3Result<()> {
    // The REST API keeps no tags (they are an S3 feature): refused rather than dropped.
    if given(headers, TAGGING_HEADER).is_some() {
        return Err(not_implemented(
            "Object tags (x-amz-tagging) on the REST API are not implemented by this node",
        ));
    }
    // The REST API takes no SSE-C key (its reads of encrypted objects are refused too).
    check_encryption("RestPutObject", headers)?;
    check_object_acl(headers, bucket, state)?;
    check_object_settings("PutObject", headers)
}

/// The header's value when it is given: present and not empty (s3s reads an empty header as an
/// absent one). A value that is not text reads as `""`, so no check mistakes it for one it
/// takes.
fn given<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let value = headers.get(name).filter(|v| !v.is_empty())?;
    Some(value.to_str().map(str::trim).unwrap_or(""))
}

/// `NotImplemented` with a message naming what is not implemented and why it is refused.
fn not_implemented(what: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NotImplemented,
        format!("{what}; the request is refused rather than accepted and ignored."),
    )
}

/// `NotImplemented` if any of `names` is given.
fn refuse_given(headers: &HeaderMap, names: &[&str], what: &str) -> S3Result<()> {
    match names.iter().find(|name| given(headers, name).is_some()) {
        None => Ok(()),
        Some(name) => Err(not_implemented(format_args!(
            "{what} ({name}) are not implemented by this node"
        ))),
    }
}

/// Refuses what an object write (PutObject, CopyObject, CreateMultipartUpload) asks the node to
/// keep or do and it has no place for:
/// - a tagging directive other than `COPY` or `REPLACE` on CopyObject: `InvalidArgument`, as in
///   S3 (tags themselves are kept: `s3::tagging`);
/// - Object Lock (mode, retain-until date, legal hold, event hold): `InvalidRequest` with S3's
///   message for a bucket without Object Lock, which every bucket is;
/// - a storage class: `STANDARD` is what the node does; S3's other classes (including
///   `REDUCED_REDUNDANCY`, which would be reported back on reads and listings) are
///   `NotImplemented`; any other name is `InvalidStorageClass`, as in S3;
/// - a website redirect location: `NotImplemented` (no website endpoint serves it);
/// - an append (`x-amz-write-offset-bytes`, PutObject): `NotImplemented`;
/// - the checksum type of a multipart upload (CreateMultipartUpload): `NotImplemented`, since a
///   completed multipart object carries no object-level checksum yet.
pub fn check_object_settings(op: &str, headers: &HeaderMap) -> S3Result<()> {
    if op == "CopyObject"
        && let Some(directive) = given(headers, TAGGING_DIRECTIVE_HEADER)
        && directive != "COPY"
        && directive != "REPLACE"
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Unknown tagging directive.",
        ));
    }
    if let Some(name) = OBJECT_LOCK_HEADERS
        .iter()
        .find(|name| given(headers, name).is_some())
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            format!(
                "Bucket is missing Object Lock Configuration ({name}: Object Lock is not                  implemented by this node, so no bucket has it)"
            ),
        ));
    }
    check_storage_class(headers)?;
    refuse_given(headers, &[WEBSITE_REDIRECT_HEADER], "Website redirects")?;
    if op == "PutObject" {
        refuse_given(headers, &[WRITE_OFFSET_HEADER], "Appends")?;
    }
    Ok(())
}

/// `STANDARD` (or no class) passes; S3's other classes are `NotImplemented`; anything else is
/// `InvalidStorageClass` (400).
fn check_storage_class(headers: &HeaderMap) -> S3Result<()> {
    match given(headers, STORAGE_CLASS_HEADER) {
        None | Some(STANDARD_STORAGE_CLASS) => Ok(()),
        Some(class) if OTHER_STORAGE_CLASSES.contains(&class) => {
            Err(not_implemented(format_args!(
                "The {class} storage class is not implemented by this node: every object is stored \
             as STANDARD (send x-amz-storage-class: STANDARD or none)"
            )))
        }
        Some(class) => Err(S3Error::with_message(
            S3ErrorCode::InvalidStorageClass,
            format!("The storage class you specified is not valid: {class:?}"),
        )),
    }
}

/// `NotImplemented` for a checksum the node does not compute: its value header, an algorithm
/// header naming it, or a trailer naming its header (the value would otherwise go unverified).
pub fn check_checksum_algorithms(headers: &HeaderMap) -> S3Result<()> {
    let trailer = given(headers, TRAILER_HEADER).unwrap_or("");
    for (algorithm, header) in UNCOMPUTED_CHECKSUMS {
        let named = CHECKSUM_ALGORITHM_HEADERS
            .iter()
            .any(|name| given(headers, name).is_some_and(|v| v.eq_ignore_ascii_case(algorithm)));
        let trailing = trailer
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(header));
        if given(headers, header).is_some() || named || trailing {
            return Err(not_implemented(format_args!(
                "The {algorithm} checksum ({header}) is not computed by this node (it computes \
                 CRC32, CRC32C, CRC64NVME, SHA1 and SHA256), so it could not be verified"
            )));
        }
    }
    Ok(())
}

/// `InvalidArgument` for an `x-amz-request-payer` other than `requester`. The consent itself is
/// honoured: nobody is charged for requests, so it changes nothing.
fn check_request_payer(headers: &HeaderMap) -> S3Result<()> {
    match given(headers, REQUEST_PAYER_HEADER) {
        None | Some(REQUESTER) => Ok(()),
        Some(other) => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("x-amz-request-payer must be \"requester\", not {other:?}"),
        )),
    }
}

/// `AccessDenied` (403) when `header` names an account other than `bucket`'s owner, as S3's
/// bucket owner condition (the owner's id is what ListBuckets and GetBucketAcl report).
fn check_expected_owner(headers: &HeaderMap, header: &str, bucket: &Bucket) -> S3Result<()> {
    match given(headers, header) {
        Some(expected) if expected != bucket.owner => Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "Access Denied",
        )),
        _ => Ok(()),
    }
}

/// [`check_expected_owner`] of the copy source's bucket (CopyObject, UploadPartCopy). A source
/// that does not parse or does not exist is left to the operation, which reports it.
fn check_source_owner(headers: &HeaderMap, state: &ManagerState) -> S3Result<()> {
    if given(headers, SOURCE_EXPECTED_OWNER_HEADER).is_none() {
        return Ok(());
    }
    let Some(Ok(CopySource::Bucket { bucket, .. })) =
        given(headers, COPY_SOURCE_HEADER).map(CopySource::parse)
    else {
        return Ok(());
    };
    match state.bucket(&bucket) {
        Some(source) => check_expected_owner(headers, SOURCE_EXPECTED_OWNER_HEADER, source),
        None => Ok(()),
    }
}

/// CreateBucket: Object Lock (`x-amz-bucket-object-lock-enabled: true`) and object ownership
/// settings are `NotImplemented` (`false` is what every bucket is).
fn check_bucket_settings(headers: &HeaderMap) -> S3Result<()> {
    if given(headers, BUCKET_OBJECT_LOCK_HEADER).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(not_implemented(
            "Object Lock (x-amz-bucket-object-lock-enabled: true) is not implemented by this node",
        ));
    }
    refuse_given(
        headers,
        &[OBJECT_OWNERSHIP_HEADER],
        "Object ownership settings",
    )
}

/// The decoded value of the first query parameter `name`, if present.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (crate::rest::percent_decode(key).as_deref() == Some(name))
            .then(|| crate::rest::percent_decode(value).unwrap_or_else(|| value.to_owned()))
    })
}

/// `InvalidArgument`, with S3's message, for a `versionId` this store never issues (`null`, or
/// a version's id: shard/VERSIONING.md §2).
fn check_version_id(query: Option<&str>) -> S3Result<()> {
    match query_param(query, "versionId") {
        Some(id) if !is_version_id(&id) => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Invalid version id specified",
        )),
        _ => Ok(()),
    }
}

/// Whether `id` is a version id this store issues.
fn is_version_id(id: &str) -> bool {
    crate::layout::VersionRef::parse(id).is_ok()
}

/// ListObjectVersions: a `version-id-marker` needs a `key-marker` and must be a version id.
fn check_version_id_marker(query: Option<&str>) -> S3Result<()> {
    let Some(marker) = query_param(query, "version-id-marker").filter(|m| !m.is_empty()) else {
        return Ok(());
    };
    if query_param(query, "key-marker").is_none_or(|k| k.is_empty()) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "A version-id marker cannot be specified without a key marker.",
        ));
    }
    check_version_id(Some(&format!("versionId={marker}")))
}

/// `InvalidRequest`, with S3's message, for response header overrides on an anonymous
/// GetObject or HeadObject (signed ones are honoured: [`ResponseOverrides`]).
fn check_response_overrides(query: Option<&str>, signed: bool) -> S3Result<()> {
    if !signed
        && RESPONSE_OVERRIDE_PARAMS
            .iter()
            .any(|name| query_param(query, name).is_some())
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Request specific response headers cannot be used for anonymous GET requests.",
        ));
    }
    Ok(())
}

/// Listings: `RestoreStatus` is the only optional object attribute.
fn check_optional_attributes(headers: &HeaderMap) -> S3Result<()> {
    let Some(attributes) = given(headers, OPTIONAL_ATTRIBUTES_HEADER) else {
        return Ok(());
    };
    match attributes
        .split(',')
        .map(str::trim)
        .find(|a| *a != RESTORE_STATUS)
    {
        None => Ok(()),
        Some(other) => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("Invalid attribute name specified: {other:?}"),
        )),
    }
}

/// ListMultipartUploads: `encoding-type` can only be `url` (honoured: [`url_encode_uploads`]).
fn check_encoding_type(query: Option<&str>) -> S3Result<()> {
    match query_param(query, "encoding-type") {
        Some(e) if !e.eq_ignore_ascii_case("url") => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Invalid Encoding Method specified in Request",
        )),
        _ => Ok(()),
    }
}

/// ListBuckets: `max-buckets` is a number from 1 to [`LIST_BUCKETS_MAX`] (honoured:
/// [`BucketPage`]).
fn check_max_buckets(query: Option<&str>) -> S3Result<()> {
    match query_param(query, "max-buckets") {
        Some(n)
            if n.parse::<usize>()
                .is_ok_and(|n| (1..=LIST_BUCKETS_MAX).contains(&n)) =>
        {
            Ok(())
        }
        None => Ok(()),
        Some(n) => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("max-buckets must be an integer from 1 to {LIST_BUCKETS_MAX}, not {n:?}"),
        )),
    }
}

/// `NotImplemented` if the request asks for SSE-S3 or SSE-KMS, or gives an SSE-C key to an
/// operation that would not use it (a source key to one without a copy source); the keys the
/// operation takes are checked by it ([`crate::sse`]).
pub fn check_encryption(op: &str, headers: &HeaderMap) -> S3Result<()> {
    let unused = |names: &'static [&'static str], takers: &[&str]| -> Option<&'static str> {
        names
            .iter()
            .copied()
            .find(|name| headers.contains_key(*name))
            .filter(|_| !takers.contains(&op))
    };
    if let Some(name) = SSE_S3_KMS_HEADERS
        .iter()
        .find(|name| headers.contains_key(**name))
    {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!(
                "Server-side encryption with a key held by the cluster ({name}: SSE-S3, SSE-KMS) \
                 is not implemented by this node; SSE-C (a key given with each request) is. The \
                 request is refused rather than stored unencrypted."
            ),
        ));
    }
    let misplaced = unused(SSE_C_HEADERS, SSE_C_OPERATIONS)
        .or_else(|| unused(SSE_C_SOURCE_HEADERS, &["CopyObject", "UploadPartCopy"]));
    match misplaced {
        None => Ok(()),
        Some(name) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!(
                "{name} is not taken by {op} on this node; the request is refused rather than \
                 its key ignored."
            ),
        )),
    }
}

/// Checks an object write's ACL headers (canned ACL or grants) as the write will read them:
/// an unknown canned ACL, a malformed grant or an unknown grantee is refused before the body is
/// read ([`crate::acl`]).
pub fn check_object_acl(
    headers: &HeaderMap,
    bucket: &Bucket,
    state: &ManagerState,
) -> S3Result<()> {
    crate::acl::grants_of_headers(headers, &bucket.owner, bucket, state).map(drop)
}

/// `AccessDenied` (403) for a SigV4 presigned URL (a query with `X-Amz-Signature`) whose
/// `X-Amz-Expires` is not a number of seconds between 0 and [`PRESIGNED_EXPIRES_SECS_MAX`], with
/// S3's messages. A URL without `X-Amz-Expires` is left to s3s (it refuses it).
pub fn check_presigned_expiry(query: &str) -> S3Result<()> {
    let mut expires = None;
    let mut presigned = false;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "X-Amz-Signature" => presigned = true,
            "X-Amz-Expires" => expires = Some(value),
            _ => {}
        }
    }
    let (true, Some(raw)) = (presigned, expires) else {
        return Ok(());
    };
    let denied =
        |message: &'static str| Err(S3Error::with_message(S3ErrorCode::AccessDenied, message));
    // Digits and '-' never need escaping, but a client may escape them anyway.
    let value = crate::rest::percent_decode(raw).unwrap_or_default();
    let (negative, digits) = match value.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, value.as_str()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return denied("X-Amz-Expires should be a number");
    }
    if negative && digits.bytes().any(|b| b != b'0') {
        return denied("X-Amz-Expires must be non-negative");
    }
    // Too many digits for a u64 is more than a week too.
    if digits.parse::<u64>().unwrap_or(u64::MAX) > PRESIGNED_EXPIRES_SECS_MAX {
        return denied("X-Amz-Expires must be less than a week (in seconds) that is 604800");
    }
    Ok(())
}

/// GetObject's and HeadObject's `response-*` overrides, checked to be header values: the
/// answer carries them instead of the object's stored headers (which stay unchanged).
#[derive(Debug, Default, PartialEq)]
pub struct ResponseOverrides {
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    content_type: Option<String>,
    expires: Option<Timestamp>,
}

impl ResponseOverrides {
    /// The overrides of a GetObject; `InvalidArgument` for a value that cannot be a header.
    pub fn of_get(input: &GetObjectInput) -> S3Result<Self> {
        Self::checked(Self {
            cache_control: input.response_cache_control.clone(),
            content_disposition: input.response_content_disposition.clone(),
            content_encoding: input.response_content_encoding.clone(),
            content_language: input.response_content_language.clone(),
            content_type: input.response_content_type.clone(),
            expires: input.response_expires.clone(),
        })
    }

    /// The overrides of a HeadObject; `InvalidArgument` for a value that cannot be a header.
    pub fn of_head(input: &HeadObjectInput) -> S3Result<Self> {
        Self::checked(Self {
            cache_control: input.response_cache_control.clone(),
            content_disposition: input.response_content_disposition.clone(),
            content_encoding: input.response_content_encoding.clone(),
            content_language: input.response_content_language.clone(),
            content_type: input.response_content_type.clone(),
            expires: input.response_expires.clone(),
        })
    }

    fn checked(self) -> S3Result<Self> {
        let texts = [
            ("response-cache-control", &self.cache_control),
            ("response-content-disposition", &self.content_disposition),
            ("response-content-encoding", &self.content_encoding),
            ("response-content-language", &self.content_language),
            ("response-content-type", &self.content_type),
        ];
        for (name, value) in texts {
            if let Some(value) = value
                && HeaderValue::from_str(value).is_err()
            {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("{name} is not a valid header value: {value:?}"),
                ));
            }
        }
        Ok(self)
    }

    /// Sets the overridden headers of a GetObject answer.
    pub fn apply_to_get(self, out: &mut GetObjectOutput) {
        let Self {
            cache_control,
            content_disposition,
            content_encoding,
            content_language,
            content_type,
            expires,
        } = self;
        override_field(&mut out.cache_control, cache_control);
        override_field(&mut out.content_disposition, content_disposition);
        override_field(&mut out.content_encoding, content_encoding);
        override_field(&mut out.content_language, content_language);
        override_field(&mut out.content_type, content_type);
        override_field(&mut out.expires, expires);
    }

    /// Sets the overridden headers of a HeadObject answer.
    pub fn apply_to_head(self, out: &mut HeadObjectOutput) {
        let Self {
            cache_control,
            content_disposition,
            content_encoding,
            content_language,
            content_type,
            expires,
        } = self;
        override_field(&mut out.cache_control, cache_control);
        override_field(&mut out.content_disposition, content_disposition);
        override_field(&mut out.content_encoding, content_encoding);
        override_field(&mut out.content_language, content_language);
        override_field(&mut out.content_type, content_type);
        override_field(&mut out.expires, expires);
    }
}

fn override_field<T>(field: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *field = value;
    }
}

/// CopyObject's conditions on the destination (`If-Match`, `If-None-Match`), which s3s's input
/// does not carry: checked like PutObject's before the copy is written. A value that is not an
/// entity tag or `*` is `InvalidArgument`.
pub fn destination_conditions(
    headers: &HeaderMap,
) -> S3Result<(Option<ETagCondition>, Option<ETagCondition>)> {
    let parse = |name: http::HeaderName| -> S3Result<Option<ETagCondition>> {
        match headers.get(&name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => ETagCondition::parse_http_header(v.as_bytes())
                .map(Some)
                .map_err(|_| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidArgument,
                        format!("invalid header: {}: {v:?}", name.as_str()),
                    )
                }),
        }
    };
    Ok((
        parse(http::header::IF_MATCH)?,
        parse(http::header::IF_NONE_MATCH)?,
    ))
}

/// ListBuckets' region filter and paging, which the listing itself does not apply: every bucket
/// is in the node's region; pages are in name order and a page's continuation token is the name
/// of its last bucket.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BucketPage {
    region: Option<String>,
    after: Option<String>,
    max_buckets: usize,
    /// The prefix asked for, which S3 echoes (the listing applies it).
    prefix: Option<String>,
}

impl BucketPage {
    /// The paging of a ListBuckets request (`max-buckets` was checked by [`check_operation`];
    /// out of range here, it is clamped).
    pub fn of(input: &ListBucketsInput) -> Self {
        let max_buckets = input.max_buckets.map_or(LIST_BUCKETS_MAX, |n| {
            usize::try_from(n).unwrap_or(1).clamp(1, LIST_BUCKETS_MAX)
        });
        Self {
            region: input.bucket_region.clone().filter(|r| !r.is_empty()),
            after: input.continuation_token.clone().filter(|t| !t.is_empty()),
            max_buckets,
            prefix: input.prefix.clone().filter(|p| !p.is_empty()),
        }
    }

    /// Keeps the buckets of this page in `out` (the whole listing, in name order), with a
    /// continuation token when more follow.
    pub fn apply(self, out: &mut ListBucketsOutput, node_region: &str) {
        let mut buckets = out.buckets.take().unwrap_or_default();
        if self.region.as_deref().is_some_and(|r| r != node_region) {
            buckets.clear();
        }
        if let Some(after) = &self.after {
            buckets.retain(|b| b.name.as_deref().is_some_and(|name| name > after.as_str()));
        }
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        out.continuation_token = None;
        if buckets.len() > self.max_buckets {
            buckets.truncate(self.max_buckets);
            out.continuation_token = buckets.last().and_then(|b| b.name.clone());
        }
        out.buckets = Some(buckets);
        out.prefix = self.prefix;
    }
}

/// ListMultipartUploads with `encoding-type=url`: keys, prefixes, the delimiter and the key
/// markers percent-encoded as in S3's object listings.
pub fn url_encode_uploads(out: &mut ListMultipartUploadsOutput) {
    use crate::s3::list::url_encode;
    let encode = |field: &mut Option<String>| {
        if let Some(text) = field.as_mut() {
            *text = url_encode(text);
        }
    };
    for upload in out.uploads.iter_mut().flatten() {
        encode(&mut upload.key);
    }
    for prefix in out.common_prefixes.iter_mut().flatten() {
        encode(&mut prefix.prefix);
    }
    encode(&mut out.prefix);
    encode(&mut out.delimiter);
    encode(&mut out.key_marker);
    encode(&mut out.next_key_marker);
    out.encoding_type = Some(s3s::dto::EncodingType::from_static(
        s3s::dto::EncodingType::URL,
    ));
}

/// Splits DeleteObjects' keys into those the operation deletes and per-key errors for those it
/// cannot honour: a malformed version id (`InvalidArgument`, as DeleteObject) and a
/// condition on the ETag, modification time or size (`NotImplemented`).
pub fn split_deletes(
    objects: Vec<ObjectIdentifier>,
) -> (Vec<ObjectIdentifier>, Vec<s3s::dto::Error>) {
    let mut kept = Vec::with_capacity(objects.len());
    let mut refused = Vec::new();
    for object in objects {
        let (code, message) = if object
            .version_id
            .as_deref()
            .is_some_and(|v| !is_version_id(v))
        {
            ("InvalidArgument", "Invalid version id specified".to_owned())
        } else if object.e_tag.is_some()
            || object.last_modified_time.is_some()
            || object.size.is_some()
        {
            (
                "NotImplemented",
                "Conditional deletes (ETag, LastModifiedTime, Size) are not implemented by this \
                 node; the key is left in place rather than deleted unconditionally."
                    .to_owned(),
            )
        } else {
            kept.push(object);
            continue;
        };
        refused.push(s3s::dto::Error {
            code: Some(code.to_owned()),
            key: Some(object.key),
            message: Some(message),
            version_id: object.version_id,
        });
    }
    (kept, refused)
}

/// CreateBucket: a directory bucket's configuration (`Bucket`, `Location`) is `NotImplemented`
/// (the location constraint is checked by the operation).
pub fn check_bucket_configuration(config: Option<&CreateBucketConfiguration>) -> S3Result<()> {
    match config {
        Some(c) if c.bucket.is_some() || c.location.is_some() => Err(not_implemented(
            "Directory buckets (CreateBucketConfiguration Bucket and Location) are not \
             implemented by this node",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ChecksumKind;
    use leofs_manager::BucketAcl;

    fn bucket(acl: BucketAcl) -> Bucket {
        Bucket {
            name: "b".into(),
            owner: "alice".into(),
            acl,
            grants: Vec::new(),
            created_unix_ms: 0,
            incarnation: 1,
            deleting: false,
            consistency: None,
            versioning: Default::default(),
            lifecycle: Vec::new(),
            tags: Vec::new(),
            cors: Vec::new(),
            policy: None,
        }
    }

    /// A manager state with bucket `b` (owner alice, `acl`) and bucket `src` (owner bob).
    fn state(acl: BucketAcl) -> ManagerState {
        let mut state = ManagerState::default();
        state.buckets.insert("b".into(), bucket(acl));
        let src = Bucket {
            name: "src".into(),
            owner: "bob".into(),
            ..bucket(BucketAcl::Private)
        };
        state.buckets.insert("src".into(), src);
        state
    }

    /// `op` with `headers`, signed, on bucket `b` with `acl` (`None`: on a missing bucket).
    fn check_op(op: &str, headers: &HeaderMap, acl: Option<BucketAcl>) -> S3Result<()> {
        let req = RequestView {
            op,
            headers,
            query: None,
            bucket: Some(if acl.is_some() { "b" } else { "missing" }),
            signed: true,
        };
        check_operation(&req, &state(acl.unwrap_or(BucketAcl::Private)))
    }

    /// `op` with `query` (and no headers) on bucket `b`, signed or anonymous.
    fn check_query(op: &str, query: &str, signed: bool) -> Option<String> {
        let headers = HeaderMap::new();
        let req = RequestView {
            op,
            headers: &headers,
            query: Some(query),
            bucket: Some("b"),
            signed,
        };
        code(check_operation(&req, &state(BucketAcl::PublicRead)))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn code(result: S3Result<()>) -> Option<String> {
        result.err().map(|e| e.code().as_str().to_owned())
    }

    #[test]
    fn sse_s3_and_kms_are_not_implemented_and_sse_c_keys_go_where_they_are_used() {
        for name in SSE_S3_KMS_HEADERS {
            for op in [
                "PutObject",
                "GetObject",
                "UploadPart",
                "CopyObject",
                "HeadObject",
            ] {
                let h = headers(&[(name, "AES256")]);
                let err = check_op(op, &h, Some(BucketAcl::Private)).unwrap_err();
                assert_eq!(err.code(), &S3ErrorCode::NotImplemented, "{name} on {op}");
                assert!(err.message().unwrap().contains(name));
            }
        }
        let own = headers(&[("x-amz-server-side-encryption-customer-algorithm", "AES256")]);
        for op in SSE_C_OPERATIONS {
            assert_eq!(code(check_encryption(op, &own)), None, "{op}");
        }
        for op in ["DeleteObject", "PutObjectTagging", "RestPutObject"] {
            assert_eq!(
                code(check_encryption(op, &own)).as_deref(),
                Some("NotImplemented")
            );
        }
        let source = headers(&[("x-amz-copy-source-server-side-encryption-customer-key", "k")]);
        assert_eq!(code(check_encryption("CopyObject", &source)), None);
        assert_eq!(
            code(check_encryption("PutObject", &source)).as_deref(),
            Some("NotImplemented")
        );
        assert!(check_encryption("PutObject", &headers(&[("x-amz-meta-sse", "x")])).is_ok());
    }

    #[test]
    fn acl_headers_are_checked_on_object_writes_and_bucket_grants_refused() {
        for op in OBJECT_ACL_OPERATIONS {
            for (acl, refused) in [
                ("private", None),
                ("public-read", None),
                ("authenticated-read", None),
                ("aws-exec-read", Some("NotImplemented")),
                ("shared", Some("InvalidArgument")),
            ] {
                let h = headers(&[("x-amz-acl", acl)]);
                assert_eq!(
                    code(check_op(op, &h, Some(BucketAcl::PublicRead))).as_deref(),
                    refused,
                    "{op} {acl}"
                );
            }
            let h = headers(&[("x-amz-grant-read", "id=nobody")]);
            assert_eq!(
                code(check_op(op, &h, Some(BucketAcl::Private))).as_deref(),
                Some("InvalidArgument")
            );
        }
        let h = headers(&[("x-amz-acl", "private")]);
        // No bucket: the operation itself answers NoSuchBucket.
        assert_eq!(code(check_op("PutObject", &h, None)), None);
        // A canned bucket ACL is the bucket operations' own business.
        assert_eq!(code(check_op("CreateBucket", &h, None)), None);
        for op in BUCKET_ACL_OPERATIONS {
            for (pairs, refused) in [
                (
                    &[(
                        "x-amz-grant-write",
                        "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\"",
                    )][..],
                    None,
                ),
                (&[("x-amz-acl", "authenticated-read")][..], None),
                (
                    &[("x-amz-grant-write", "id=nobody")][..],
                    Some("InvalidArgument"),
                ),
                (
                    &[("x-amz-acl", "log-delivery-write")][..],
                    Some("NotImplemented"),
                ),
                (
                    &[("x-amz-acl", "bucket-owner-read")][..],
                    Some("InvalidArgument"),
                ),
            ] {
                assert_eq!(
                    code(check_op(op, &headers(pairs), Some(BucketAcl::PublicRead))).as_deref(),
                    refused,
                    "{op} {pairs:?}"
                );
            }
        }
    }

    #[test]
    fn post_object_form_fields_are_checked_like_headers() {
        let mut input = PutObjectInput::default();
        assert!(put_input_headers(&input).is_empty());
        input.acl = Some(ObjectCannedACL::from_static(ObjectCannedACL::PRIVATE));
        assert_eq!(
            code(check_op(
                "PutObject",
                &put_input_headers(&input),
                Some(BucketAcl::Private)
            )),
            None
        );
        input.acl = Some(ObjectCannedACL::from_static(ObjectCannedACL::AWS_EXEC_READ));
        assert_eq!(
            code(check_op(
                "PutObject",
                &put_input_headers(&input),
                Some(BucketAcl::Private)
            ))
            .as_deref(),
            Some("NotImplemented")
        );
        let input = PutObjectInput {
            ssekms_key_id: Some("key".into()),
            ..PutObjectInput::default()
        };
        assert_eq!(
            code(check_op(
                "PutObject",
                &put_input_headers(&input),
                Some(BucketAcl::Private)
            ))
            .as_deref(),
            Some("NotImplemented")
        );
        // An SSE-C key in a form is the upload's to use.
        let input = PutObjectInput {
            sse_customer_key: Some("key".into()),
            ..PutObjectInput::default()
        };
        assert!(
            put_input_headers(&input).contains_key("x-amz-server-side-encryption-customer-key")
        );
        let input = PutObjectInput {
            bucket_key_enabled: Some(false),
            ..PutObjectInput::default()
        };
        assert!(
            put_input_headers(&input)
                .contains_key("x-amz-server-side-encryption-bucket-key-enabled")
        );
    }

    const OBJECT_WRITES: [&str; 3] = ["PutObject", "CopyObject", "CreateMultipartUpload"];

    fn on(op: &str, pairs: &[(&'static str, &str)]) -> Option<String> {
        code(check_op(op, &headers(pairs), Some(BucketAcl::Private)))
    }

    #[test]
    fn lock_redirects_and_appends_are_refused_on_object_writes() {
        for op in OBJECT_WRITES {
            // Tags are kept (s3::tagging).
            assert_eq!(on(op, &[("x-amz-tagging", "team=a")]), None, "{op}");
            for name in OBJECT_LOCK_HEADERS {
                let err =
                    check_op(op, &headers(&[(name, "ON")]), Some(BucketAcl::Private)).unwrap_err();
                assert_eq!(err.code(), &S3ErrorCode::InvalidRequest, "{name} on {op}");
                assert!(err.message().unwrap().contains("Object Lock Configuration"));
            }
            assert_eq!(
                on(op, &[("x-amz-website-redirect-location", "/elsewhere")]).as_deref(),
                Some("NotImplemented"),
                "{op}"
            );
        }
        for directive in ["COPY", "REPLACE"] {
            assert_eq!(
                on("CopyObject", &[("x-amz-tagging-directive", directive)]),
                None
            );
        }
        assert_eq!(
            on("CopyObject", &[("x-amz-tagging-directive", "MERGE")]).as_deref(),
            Some("InvalidArgument")
        );
        assert_eq!(
            on("PutObject", &[("x-amz-write-offset-bytes", "0")]).as_deref(),
            Some("NotImplemented")
        );
        // Operations where S3 gives these headers no meaning ignore them, as S3 does.
        for op in ["UploadPart", "GetObject", "DeleteObject"] {
            assert_eq!(on(op, &[("x-amz-tagging", "team=a")]), None, "{op}");
            assert_eq!(on(op, &[("x-amz-storage-class", "GLACIER")]), None, "{op}");
        }
        // The REST API's PUT is an object write too, and keeps no tags.
        let h = headers(&[("x-amz-tagging", "team=a")]);
        assert_eq!(
            code(check_object_write(
                &h,
                &bucket(BucketAcl::PublicReadWrite),
                &state(BucketAcl::PublicReadWrite)
            ))
            .as_deref(),
            Some("NotImplemented")
        );
        let h = headers(&[("x-amz-storage-class", "GLACIER")]);
        assert_eq!(
            code(check_object_write(
                &h,
                &bucket(BucketAcl::PublicReadWrite),
                &state(BucketAcl::PublicReadWrite)
            ))
            .as_deref(),
            Some("NotImplemented")
        );
    }

    #[test]
    fn only_the_standard_storage_class_is_taken() {
        for op in OBJECT_WRITES {
            assert_eq!(on(op, &[("x-amz-storage-class", "STANDARD")]), None, "{op}");
            for class in OTHER_STORAGE_CLASSES {
                let err = check_op(
                    op,
                    &headers(&[("x-amz-storage-class", class)]),
                    Some(BucketAcl::Private),
                )
                .unwrap_err();
                assert_eq!(err.code(), &S3ErrorCode::NotImplemented, "{class}");
                assert!(err.message().unwrap().contains(class));
            }
            for bad in ["FASTEST", "standard", "GLACIER "] {
                let err = check_op(
                    op,
                    &headers(&[("x-amz-storage-class", bad)]),
                    Some(BucketAcl::Private),
                )
                .unwrap_err();
                // A trailing space is trimmed like every header value.
                let want = if bad.trim() == "GLACIER" {
                    S3ErrorCode::NotImplemented
                } else {
                    S3ErrorCode::InvalidStorageClass
                };
                assert_eq!(err.code(), &want, "{bad:?}");
            }
        }
        let err = check_storage_class(&headers(&[("x-amz-storage-class", "FASTEST")])).unwrap_err();
        assert_eq!(err.status_code(), Some(http::StatusCode::BAD_REQUEST));
    }

    #[test]
    fn checksums_the_node_does_not_compute_are_not_implemented_on_any_operation() {
        for (algorithm, header) in UNCOMPUTED_CHECKSUMS {
            for op in [
                "PutObject",
                "UploadPart",
                "CompleteMultipartUpload",
                "DeleteObjects",
            ] {
                assert_eq!(
                    on(op, &[(header, "AAAA")]).as_deref(),
                    Some("NotImplemented"),
                    "{header} on {op}"
                );
            }
            let lower = algorithm.to_ascii_lowercase();
            for name in CHECKSUM_ALGORITHM_HEADERS {
                assert_eq!(
                    on("PutObject", &[(name, &lower)]).as_deref(),
                    Some("NotImplemented"),
                    "{name}: {lower}"
                );
            }
            assert_eq!(
                on("PutObject", &[("x-amz-trailer", header)]).as_deref(),
                Some("NotImplemented")
            );
        }
        for kind in ChecksumKind::ALL {
            assert_eq!(on("PutObject", &[(kind.header(), "AAAA")]), None);
            assert_eq!(
                on(
                    "PutObject",
                    &[("x-amz-sdk-checksum-algorithm", kind.name())]
                ),
                None
            );
            assert_eq!(on("PutObject", &[("x-amz-trailer", kind.header())]), None);
        }
    }

    #[test]
    fn expected_bucket_owners_are_compared_with_the_owner() {
        for op in [
            "GetObject",
            "PutObject",
            "ListObjectsV2",
            "HeadBucket",
            "DeleteBucket",
        ] {
            assert_eq!(on(op, &[("x-amz-expected-bucket-owner", "alice")]), None);
            let err = check_op(
                op,
                &headers(&[("x-amz-expected-bucket-owner", "123456789012")]),
                Some(BucketAcl::Private),
            )
            .unwrap_err();
            assert_eq!(err.code(), &S3ErrorCode::AccessDenied, "{op}");
            assert_eq!(err.status_code(), Some(http::StatusCode::FORBIDDEN));
        }
        // No such bucket: the operation reports it.
        let h = headers(&[("x-amz-expected-bucket-owner", "123456789012")]);
        assert_eq!(code(check_op("GetObject", &h, None)), None);

        for op in ["CopyObject", "UploadPartCopy"] {
            for source in ["src/k", "/src/k", "src/a%20key?versionId=null"] {
                let ok = [
                    ("x-amz-copy-source", source),
                    ("x-amz-source-expected-bucket-owner", "bob"),
                ];
                assert_eq!(on(op, &ok), None, "{op} {source}");
                let wrong = [
                    ("x-amz-copy-source", source),
                    ("x-amz-source-expected-bucket-owner", "alice"),
                ];
                assert_eq!(on(op, &wrong).as_deref(), Some("AccessDenied"), "{source}");
            }
            // A missing source bucket is the operation's to report.
            let missing = [
                ("x-amz-copy-source", "nobucket/k"),
                ("x-amz-source-expected-bucket-owner", "alice"),
            ];
            assert_eq!(on(op, &missing), None);
        }
    }

    #[test]
    fn request_payer_is_requester_or_invalid() {
        assert_eq!(
            on("GetObject", &[("x-amz-request-payer", "requester")]),
            None
        );
        for bad in ["bucket-owner", "Requester", "yes"] {
            assert_eq!(
                on("GetObject", &[("x-amz-request-payer", bad)]).as_deref(),
                Some("InvalidArgument"),
                "{bad}"
            );
        }
    }

    #[test]
    fn conditions_and_checksums_the_operations_would_ignore_are_not_implemented() {
        for name in CONDITIONAL_DELETE_HEADERS {
            assert_eq!(
                on("DeleteObject", &[(name, "x")]).as_deref(),
                Some("NotImplemented")
            );
        }
        assert_eq!(
            on(
                "AbortMultipartUpload",
                &[(
                    "x-amz-if-match-initiated-time",
                    "Tue, 01 Jan 2030 00:00:00 GMT"
                )]
            )
            .as_deref(),
            Some("NotImplemented")
        );
        // PutObject's and CompleteMultipartUpload's If-Match are honoured by the operations.
        assert_eq!(on("PutObject", &[("if-match", "\"abc\"")]), None);
        assert_eq!(
            on("CompleteMultipartUpload", &[("if-none-match", "*")]),
            None
        );
    }

    #[test]
    fn only_version_ids_this_store_issues_are_accepted() {
        let issued = crate::layout::VersionRef::Stamped(leofs_shard::Hlc {
            physical_us: 1_765_000_000_000_000,
            logical: 0,
            node_id: 1,
        })
        .id();
        for op in ["GetObject", "HeadObject", "DeleteObject"] {
            assert_eq!(check_query(op, "versionId=null", true), None);
            assert_eq!(check_query(op, "versionId=%6Eull", true), None);
            assert_eq!(check_query(op, &format!("versionId={issued}"), true), None);
            assert_eq!(check_query(op, "partNumber=1", true), None);
            for bad in [
                "versionId=abc",
                "versionId=",
                "versionId",
                "x=1&versionId=NULL",
            ] {
                assert_eq!(
                    check_query(op, bad, true).as_deref(),
                    Some("InvalidArgument"),
                    "{op}?{bad}"
                );
            }
        }
        let versions = "ListObjectVersions";
        assert_eq!(
            check_query(
                versions,
                "versions&key-marker=k&version-id-marker=null",
                true
            ),
            None
        );
        assert_eq!(
            check_query(versions, "versions&version-id-marker=", true),
            None
        );
        for bad in [
            "versions&version-id-marker=null",
            "versions&key-marker=&version-id-marker=null",
            "versions&key-marker=k&version-id-marker=abc",
        ] {
            assert_eq!(
                check_query(versions, bad, true).as_deref(),
                Some("InvalidArgument"),
                "{bad}"
            );
        }
    }

    #[test]
    fn anonymous_reads_cannot_override_response_headers() {
        for op in ["GetObject", "HeadObject"] {
            for param in RESPONSE_OVERRIDE_PARAMS {
                let query = format!("{param}=x");
                assert_eq!(
                    check_query(op, &query, false).as_deref(),
                    Some("InvalidRequest")
                );
                assert_eq!(check_query(op, &query, true), None);
            }
            assert_eq!(check_query(op, "partNumber=1", false), None);
        }
    }

    #[test]
    fn listing_options_are_checked() {
        for op in ["ListObjects", "ListObjectsV2", "ListObjectVersions"] {
            let h = [("x-amz-optional-object-attributes", "RestoreStatus")];
            assert_eq!(on(op, &h), None);
            let h = [("x-amz-optional-object-attributes", "RestoreStatus,Owner")];
            assert_eq!(on(op, &h).as_deref(), Some("InvalidArgument"));
        }
        let uploads = "ListMultipartUploads";
        assert_eq!(
            check_query(uploads, "uploads&encoding-type=url", true),
            None
        );
        assert_eq!(
            check_query(uploads, "uploads&encoding-type=URL", true),
            None
        );
        assert_eq!(
            check_query(uploads, "uploads&encoding-type=base64", true).as_deref(),
            Some("InvalidArgument")
        );
        for ok in ["max-buckets=1", "max-buckets=10000", "prefix=a"] {
            assert_eq!(check_query("ListBuckets", ok, true), None, "{ok}");
        }
        for bad in [
            "max-buckets=0",
            "max-buckets=10001",
            "max-buckets=-1",
            "max-buckets=x",
        ] {
            assert_eq!(
                check_query("ListBuckets", bad, true).as_deref(),
                Some("InvalidArgument"),
                "{bad}"
            );
        }
    }

    #[test]
    fn bucket_settings_the_node_lacks_are_not_implemented() {
        let create =
            |pairs: &[(&'static str, &str)]| code(check_op("CreateBucket", &headers(pairs), None));
        assert_eq!(
            create(&[("x-amz-bucket-object-lock-enabled", "true")]).as_deref(),
            Some("NotImplemented")
        );
        assert_eq!(
            create(&[("x-amz-bucket-object-lock-enabled", "false")]),
            None
        );
        for ownership in [
            "BucketOwnerEnforced",
            "BucketOwnerPreferred",
            "ObjectWriter",
        ] {
            assert_eq!(
                create(&[("x-amz-object-ownership", ownership)]).as_deref(),
                Some("NotImplemented")
            );
        }
        assert!(check_bucket_configuration(None).is_ok());
        let constraint = CreateBucketConfiguration {
            location_constraint: Some("us-east-1".to_owned().into()),
            ..CreateBucketConfiguration::default()
        };
        assert!(check_bucket_configuration(Some(&constraint)).is_ok());
        let directory = CreateBucketConfiguration {
            bucket: Some(s3s::dto::BucketInfo::default()),
            ..CreateBucketConfiguration::default()
        };
        assert_eq!(
            code(check_bucket_configuration(Some(&directory))).as_deref(),
            Some("NotImplemented")
        );
        let directory = CreateBucketConfiguration {
            location: Some(s3s::dto::LocationInfo::default()),
            ..CreateBucketConfiguration::default()
        };
        assert_eq!(
            code(check_bucket_configuration(Some(&directory))).as_deref(),
            Some("NotImplemented")
        );
    }

    #[test]
    fn post_object_form_fields_include_the_object_settings() {
        let fields = [
            PutObjectInput {
                storage_class: Some(s3s::dto::StorageClass::from_static(
                    s3s::dto::StorageClass::GLACIER,
                )),
                ..PutObjectInput::default()
            },
            PutObjectInput {
                website_redirect_location: Some("/x".into()),
                ..PutObjectInput::default()
            },
            PutObjectInput {
                write_offset_bytes: Some(0),
                ..PutObjectInput::default()
            },
            PutObjectInput {
                object_lock_retain_until_date: Some(Timestamp::from(
                    std::time::SystemTime::UNIX_EPOCH,
                )),
                ..PutObjectInput::default()
            },
            PutObjectInput {
                expected_bucket_owner: Some("123456789012".into()),
                ..PutObjectInput::default()
            },
        ];
        for input in fields {
            let h = put_input_headers(&input);
            assert!(
                check_op("PutObject", &h, Some(BucketAcl::Private)).is_err(),
                "{h:?}"
            );
        }
        let owner = PutObjectInput {
            expected_bucket_owner: Some("alice".into()),
            ..PutObjectInput::default()
        };
        assert!(
            check_op(
                "PutObject",
                &put_input_headers(&owner),
                Some(BucketAcl::Private)
            )
            .is_ok()
        );
    }

    #[test]
    fn response_overrides_replace_the_stored_headers() {
        let input = GetObjectInput {
            response_content_type: Some("text/plain".into()),
            response_cache_control: Some("no-cache".into()),
            ..GetObjectInput::default()
        };
        let mut out = GetObjectOutput {
            content_type: Some("application/octet-stream".into()),
            content_language: Some("en".into()),
            ..GetObjectOutput::default()
        };
        ResponseOverrides::of_get(&input)
            .unwrap()
            .apply_to_get(&mut out);
        assert_eq!(out.content_type.as_deref(), Some("text/plain"));
        assert_eq!(out.cache_control.as_deref(), Some("no-cache"));
        assert_eq!(out.content_language.as_deref(), Some("en"));
        let input = HeadObjectInput {
            response_content_disposition: Some("attachment".into()),
            ..HeadObjectInput::default()
        };
        let mut out = HeadObjectOutput::default();
        ResponseOverrides::of_head(&input)
            .unwrap()
            .apply_to_head(&mut out);
        assert_eq!(out.content_disposition.as_deref(), Some("attachment"));
        let input = GetObjectInput {
            response_content_type: Some("text/plain\r\nx-evil: 1".into()),
            ..GetObjectInput::default()
        };
        assert_eq!(
            code(ResponseOverrides::of_get(&input).map(drop)).as_deref(),
            Some("InvalidArgument")
        );
    }

    #[test]
    fn copy_destination_conditions_are_parsed_from_the_headers() {
        let (m, n) = destination_conditions(&HeaderMap::new()).unwrap();
        assert!(m.is_none() && n.is_none());
        let h = headers(&[("if-match", "\"abc\""), ("if-none-match", "*")]);
        let (m, n) = destination_conditions(&h).unwrap();
        assert_eq!(
            m.and_then(ETagCondition::into_etag)
                .map(|e| e.value().to_owned())
                .as_deref(),
            Some("abc")
        );
        assert!(n.is_some_and(|c| c.is_any()));
        let h = headers(&[("if-match", "\"unterminated")]);
        assert_eq!(
            code(destination_conditions(&h).map(drop)).as_deref(),
            Some("InvalidArgument")
        );
    }

    fn listed(names: &[&str]) -> ListBucketsOutput {
        ListBucketsOutput {
            buckets: Some(
                names
                    .iter()
                    .map(|n| s3s::dto::Bucket {
                        name: Some((*n).to_owned()),
                        ..s3s::dto::Bucket::default()
                    })
                    .collect(),
            ),
            ..ListBucketsOutput::default()
        }
    }

    fn names(out: &ListBucketsOutput) -> Vec<&str> {
        out.buckets
            .iter()
            .flatten()
            .filter_map(|b| b.name.as_deref())
            .collect()
    }

    #[test]
    fn list_buckets_pages_in_name_order() {
        let page = |max: Option<i32>, after: Option<&str>, region: Option<&str>| {
            BucketPage::of(&ListBucketsInput {
                max_buckets: max,
                continuation_token: after.map(str::to_owned),
                bucket_region: region.map(str::to_owned),
                ..ListBucketsInput::default()
            })
        };
        let mut out = listed(&["c", "a", "b"]);
        page(Some(2), None, None).apply(&mut out, "us-east-1");
        assert_eq!(names(&out), ["a", "b"]);
        assert_eq!(out.continuation_token.as_deref(), Some("b"));
        let mut out = listed(&["a", "b", "c"]);
        page(Some(2), Some("b"), None).apply(&mut out, "us-east-1");
        assert_eq!(names(&out), ["c"]);
        assert_eq!(out.continuation_token, None);
        let mut out = listed(&["a", "b"]);
        page(None, None, Some("us-east-1")).apply(&mut out, "us-east-1");
        assert_eq!(names(&out), ["a", "b"]);
        let mut out = listed(&["a", "b"]);
        page(None, None, Some("eu-west-3")).apply(&mut out, "us-east-1");
        assert!(names(&out).is_empty() && out.buckets.is_some());
    }

    #[test]
    fn multipart_upload_listings_are_url_encoded_on_request() {
        let mut out = ListMultipartUploadsOutput {
            uploads: Some(vec![s3s::dto::MultipartUpload {
                key: Some("dir/a b+c%".into()),
                ..s3s::dto::MultipartUpload::default()
            }]),
            common_prefixes: Some(vec![s3s::dto::CommonPrefix {
                prefix: Some("p q/".into()),
            }]),
            prefix: Some("dir/a b".into()),
            next_key_marker: Some("k&".into()),
            ..ListMultipartUploadsOutput::default()
        };
        url_encode_uploads(&mut out);
        let upload = &out.uploads.as_ref().unwrap()[0];
        assert_eq!(upload.key.as_deref(), Some("dir/a%20b%2Bc%25"));
        assert_eq!(
            out.common_prefixes.as_ref().unwrap()[0].prefix.as_deref(),
            Some("p%20q/")
        );
        assert_eq!(out.prefix.as_deref(), Some("dir/a%20b"));
        assert_eq!(out.next_key_marker.as_deref(), Some("k%26"));
        assert_eq!(out.encoding_type.as_ref().map(|e| e.as_str()), Some("url"));
    }

    #[test]
    fn deletes_of_versions_or_with_conditions_are_reported_per_key() {
        let object = |key: &str, version: Option<&str>| ObjectIdentifier {
            key: key.into(),
            version_id: version.map(str::to_owned),
            ..ObjectIdentifier::default()
        };
        let conditional = ObjectIdentifier {
            size: Some(3),
            ..object("c", None)
        };
        let (kept, refused) = split_deletes(vec![
            object("a", None),
            object("b", Some("null")),
            object("v", Some("abc")),
            conditional,
        ]);
        let kept: Vec<_> = kept.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(kept, ["a", "b"]);
        let refused: Vec<_> = refused
            .iter()
            .map(|e| (e.key.as_deref().unwrap(), e.code.as_deref().unwrap()))
            .collect();
        assert_eq!(refused, [("v", "InvalidArgument"), ("c", "NotImplemented")]);
    }

    #[test]
    fn every_checked_header_is_lowercase_and_listed_once() {
        let mut all: Vec<_> = CHECKED_HEADERS
            .iter()
            .chain(sse_headers())
            .chain(ACL_HEADERS)
            .collect();
        assert!(
            all.iter()
                .all(|h| h.bytes().all(|b| !b.is_ascii_uppercase()))
        );
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        for header in OBJECT_LOCK_HEADERS
            .iter()
            .chain(UNCOMPUTED_CHECKSUMS.iter().map(|(_, h)| h))
            .chain(CHECKSUM_ALGORITHM_HEADERS)
            .chain(CONDITIONAL_DELETE_HEADERS)
        {
            assert!(CHECKED_HEADERS.contains(header), "{header}");
        }
    }

    #[test]
    fn presigned_urls_beyond_a_week_or_negative_are_access_denied() {
        let url = |expires: &str| {
            format!(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=ab"
            )
        };
        for ok in ["0", "-0", "1", "604800", "%36"] {
            assert!(check_presigned_expiry(&url(ok)).is_ok(), "{ok}");
        }
        for (bad, message) in [
            ("604801", "less than a week"),
            ("100000000", "less than a week"),
            ("-1", "non-negative"),
            ("%2D5", "non-negative"),
            ("ten", "number"),
            ("", "number"),
            ("99999999999999999999", "less than a week"),
            ("1e3", "number"),
        ] {
            let err = check_presigned_expiry(&url(bad)).unwrap_err();
            assert_eq!(err.code(), &S3ErrorCode::AccessDenied, "{bad}");
            assert_eq!(err.status_code(), Some(http::StatusCode::FORBIDDEN));
            assert!(err.message().unwrap().contains(message), "{bad}");
        }
        // Not a SigV4 presigned URL: nothing to check here.
        assert!(check_presigned_expiry("X-Amz-Expires=-1").is_ok());
        assert!(check_presigned_expiry("list-type=2&prefix=a").is_ok());
    }
}
