//! Requests the node would accept on the wire but cannot honour yet, refused in S3's error format
//! before any operation runs, so that a request either does what it asks or fails:
//! - server-side encryption of any kind (SSE-S3, SSE-KMS, SSE-C, and SSE-C copy sources):
//!   objects are stored in plain text, so an encryption header is `NotImplemented`;
//! - object ACL headers (`x-amz-acl`, `x-amz-grant-*`) whose effect would differ from what the
//!   bucket's canned ACL already grants (see [`check_object_acl`]): `NotImplemented`;
//! - grant headers on bucket ACL operations (only canned bucket ACLs exist): `NotImplemented`;
//! - SigV4 presigned URLs valid for more than S3's 7 days, or with a negative or non-numeric
//!   `X-Amz-Expires`: `AccessDenied` (403), as S3 refuses them.
//!
//! Callers, which between them see every request: [`crate::auth::AclAccess`] runs
//! [`check_operation`] for every S3 operation on the s3s path once the signature is verified;
//! `s3::put_object` runs it for PostObject, whose ACL and SSE fields come in the form rather than
//! in headers; [`crate::fast_path::FastPath`] runs [`check_presigned_expiry`] before s3s parses
//! a presigned URL (s3s answers a negative expiry with 400 and accepts any positive one); the REST
//! API runs [`check_object_write`] on PUT. The fast path's own reads and writes never carry any
//! of these headers: its header whitelist sends such requests to s3s (a test keeps it so).
//!
//! Must never: refuse what the node honours (`x-amz-acl: private` into a private bucket, as
//! rclone sends by default, is what the bucket grants anyway).

use http::{HeaderMap, HeaderValue};
use leofs_manager::{Bucket, BucketAcl};
use s3s::dto::{ObjectCannedACL, PutObjectInput, ServerSideEncryption};
use s3s::{S3Error, S3ErrorCode, S3Result};

/// Request headers that ask for server-side encryption (or name the key of an encrypted copy
/// source); any of them on any request is `NotImplemented`.
pub const SSE_HEADERS: &[&str] = &[
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-context",
    "x-amz-server-side-encryption-bucket-key-enabled",
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
    "x-amz-copy-source-server-side-encryption-customer-algorithm",
    "x-amz-copy-source-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key-md5",
];

/// The canned ACL header.
const CANNED_ACL_HEADER: &str = "x-amz-acl";

/// The grant headers, each with the permission it grants.
const GRANT_HEADERS: &[(&str, Permission)] = &[
    ("x-amz-grant-read", Permission::Read),
    ("x-amz-grant-write", Permission::Write),
    ("x-amz-grant-read-acp", Permission::ReadAcp),
    ("x-amz-grant-write-acp", Permission::WriteAcp),
    ("x-amz-grant-full-control", Permission::FullControl),
];

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

/// Operations that set a bucket's ACL (canned only; see `s3::bucket`).
const BUCKET_ACL_OPERATIONS: &[&str] = &["CreateBucket", "PutBucketAcl"];

/// The grantee URI of S3's "all users" group (anyone, signed or not).
const ALL_USERS_URI: &str = "http://acs.amazonaws.com/groups/global/AllUsers";

/// Longest validity of a SigV4 presigned URL in seconds (7 days; S3's limit).
pub const PRESIGNED_EXPIRES_SECS_MAX: u64 = 7 * 24 * 60 * 60;

/// What a grant header grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Permission {
    Read,
    Write,
    ReadAcp,
    WriteAcp,
    FullControl,
}

/// Who may read a bucket's objects besides its owner and the admins: what leofs enforces (the
/// bucket's canned ACL), or what an object ACL would grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readers {
    /// Nobody else.
    OwnerOnly,
    /// Anyone, signed or anonymous.
    Everyone,
}

impl Readers {
    fn of_bucket(acl: BucketAcl) -> Self {
        match acl {
            BucketAcl::Private => Readers::OwnerOnly,
            BucketAcl::PublicRead | BucketAcl::PublicReadWrite => Readers::Everyone,
        }
    }
}

/// All checks of one S3 operation `op` (s3s's operation name) carrying `headers`, on `bucket`
/// (`None`: no bucket in the request, or no such bucket; the operation then reports it).
pub fn check_operation(op: &str, headers: &HeaderMap, bucket: Option<&Bucket>) -> S3Result<()> {
    check_encryption(headers)?;
    if OBJECT_ACL_OPERATIONS.contains(&op)
        && let Some(bucket) = bucket
    {
        check_object_acl(headers, bucket)?;
    }
    if BUCKET_ACL_OPERATIONS.contains(&op) {
        check_bucket_grants(headers)?;
    }
    Ok(())
}

/// The ACL and encryption fields of a PutObject input as the headers they stand for: what a
/// PostObject form carried (a value that cannot be a header value is dropped; it could not
/// have been honoured either, and s3s has already parsed it as text).
pub fn put_input_headers(input: &PutObjectInput) -> HeaderMap {
    let fields: [(&'static str, Option<&str>); 12] = [
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
pub fn check_object_write(headers: &HeaderMap, bucket: &Bucket) -> S3Result<()> {
    check_encryption(headers)?;
    check_object_acl(headers, bucket)
}

/// `NotImplemented` if the request asks for server-side encryption of any kind.
pub fn check_encryption(headers: &HeaderMap) -> S3Result<()> {
    match SSE_HEADERS.iter().find(|name| headers.contains_key(**name)) {
        None => Ok(()),
        Some(name) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!(
                "Server-side encryption ({name}) is not implemented by this node yet; objects \
                 are stored unencrypted, so the request is refused rather than ignored."
            ),
        )),
    }
}

/// Refuses object ACL headers whose effect would differ from the bucket's canned ACL.
///
/// leofs applies the bucket's canned ACL to every object in it (LeoFS's meaning: `public-read`
/// lets anyone read the objects) and keeps no per-object ACL; every object belongs to the bucket
/// owner, who (like the admins) may do anything with it. An object ACL header is therefore
/// honoured exactly when the readers it grants are the readers the bucket already has:
/// - `private`, `bucket-owner-read` and `bucket-owner-full-control` grant nobody but the owner
///   (who is the bucket owner): equal to a `private` bucket;
/// - `public-read` and `public-read-write` let anyone read the object (S3 gives object WRITE no
///   meaning; writing keys is the bucket's permission): equal to a `public-read` or
///   `public-read-write` bucket;
/// - `x-amz-grant-read` to the AllUsers group is `public-read`; any grant to the bucket owner's
///   id adds nothing;
/// - `authenticated-read`, `aws-exec-read`, and grants to other users, to authenticated users or
///   of ACL permissions (`-read-acp`, `-write-acp`, full control) to the public, differ always.
///
/// A canned ACL and grant headers together are `InvalidRequest`, as in S3; an unknown canned ACL
/// is `InvalidArgument`.
pub fn check_object_acl(headers: &HeaderMap, bucket: &Bucket) -> S3Result<()> {
    let canned = headers.get(CANNED_ACL_HEADER);
    let grants: Vec<_> = GRANT_HEADERS
        .iter()
        .filter_map(|(name, permission)| headers.get(*name).map(|v| (*name, *permission, v)))
        .collect();
    let bucket_readers = Readers::of_bucket(bucket.acl);
    let differs = |what: &str| {
        S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!(
                "Object ACLs are not implemented yet: every object has the ACL of its bucket, and \
                 {what} would grant something other than bucket {}'s canned ACL ({}).",
                bucket.name,
                bucket.acl.as_str()
            ),
        )
    };
    if let Some(canned) = canned {
        if !grants.is_empty() {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "Specifying both Canned ACLs and Header Grants is not allowed",
            ));
        }
        let name = canned.to_str().map(str::trim).unwrap_or("");
        let readers = match name {
            "private" | "bucket-owner-read" | "bucket-owner-full-control" => Readers::OwnerOnly,
            "public-read" | "public-read-write" => Readers::Everyone,
            "authenticated-read" | "aws-exec-read" => {
                return Err(differs(&format!("x-amz-acl: {name}")));
            }
            _ => {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("Unknown canned ACL in x-amz-acl: {name:?}"),
                ));
            }
        };
        return if readers == bucket_readers {
            Ok(())
        } else {
            Err(differs(&format!("x-amz-acl: {name}")))
        };
    }
    if grants.is_empty() {
        return Ok(());
    }
    let mut readers = Readers::OwnerOnly;
    for (name, permission, value) in grants {
        let text = value.to_str().unwrap_or("");
        let Some(grantees) = parse_grantees(text) else {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!("Invalid grantee list in {name}: {text:?}"),
            ));
        };
        for grantee in grantees {
            match grantee {
                Grantee::Id(id) if id == bucket.owner => {}
                Grantee::AllUsers if permission == Permission::Read => {
                    readers = Readers::Everyone;
                }
                _ => return Err(differs(&format!("{name}: {text}"))),
            }
        }
    }
    if readers == bucket_readers {
        Ok(())
    } else {
        Err(differs("the grant headers"))
    }
}

/// One grantee of a grant header.
#[derive(Debug, PartialEq, Eq)]
enum Grantee<'a> {
    /// `id="…"`: a canonical user id (a leofs user id).
    Id(&'a str),
    /// `uri="http://acs.amazonaws.com/groups/global/AllUsers"`.
    AllUsers,
    /// Any other grantee (another group, an e-mail address).
    Other,
}

/// Parses a grant header's value, `type="value"[, type="value"]…` (quotes optional); `None` if
/// it is empty or malformed.
fn parse_grantees(text: &str) -> Option<Vec<Grantee<'_>>> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let (kind, value) = item.trim().split_once('=')?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if value.is_empty() {
            return None;
        }
        out.push(match kind.trim() {
            "id" => Grantee::Id(value),
            "uri" if value == ALL_USERS_URI => Grantee::AllUsers,
            "uri" | "emailAddress" => Grantee::Other,
            _ => return None,
        });
    }
    (!out.is_empty()).then_some(out)
}

/// `NotImplemented` for grant headers on a bucket ACL operation: buckets have canned ACLs only,
/// so a grant would otherwise be ignored.
pub fn check_bucket_grants(headers: &HeaderMap) -> S3Result<()> {
    match GRANT_HEADERS
        .iter()
        .find(|(name, _)| headers.contains_key(*name))
    {
        None => Ok(()),
        Some((name, _)) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!(
                "Bucket ACL grants ({name}) are not implemented yet; use a canned ACL \
                 (x-amz-acl: private, public-read or public-read-write)."
            ),
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(acl: BucketAcl) -> Bucket {
        Bucket {
            name: "b".into(),
            owner: "alice".into(),
            acl,
            created_unix_ms: 0,
        }
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
    fn every_encryption_header_is_not_implemented_on_every_operation() {
        for name in SSE_HEADERS {
            for op in [
                "PutObject",
                "GetObject",
                "UploadPart",
                "CopyObject",
                "HeadObject",
            ] {
                let h = headers(&[(name, "AES256")]);
                let err = check_operation(op, &h, Some(&bucket(BucketAcl::Private))).unwrap_err();
                assert_eq!(err.code(), &S3ErrorCode::NotImplemented, "{name} on {op}");
                assert!(err.message().unwrap().contains(name));
            }
        }
        assert!(check_encryption(&headers(&[("x-amz-meta-sse", "x")])).is_ok());
    }

    #[test]
    fn canned_object_acls_pass_only_when_they_match_the_bucket() {
        let private = bucket(BucketAcl::Private);
        let public = bucket(BucketAcl::PublicRead);
        let open = bucket(BucketAcl::PublicReadWrite);
        for acl in ["private", "bucket-owner-read", "bucket-owner-full-control"] {
            let h = headers(&[("x-amz-acl", acl)]);
            assert_eq!(code(check_object_acl(&h, &private)), None, "{acl}");
            assert_eq!(
                code(check_object_acl(&h, &public)).as_deref(),
                Some("NotImplemented")
            );
            assert_eq!(
                code(check_object_acl(&h, &open)).as_deref(),
                Some("NotImplemented")
            );
        }
        for acl in ["public-read", "public-read-write"] {
            let h = headers(&[("x-amz-acl", acl)]);
            assert_eq!(
                code(check_object_acl(&h, &private)).as_deref(),
                Some("NotImplemented")
            );
            assert_eq!(code(check_object_acl(&h, &public)), None, "{acl}");
            assert_eq!(code(check_object_acl(&h, &open)), None, "{acl}");
        }
        for acl in ["authenticated-read", "aws-exec-read"] {
            let h = headers(&[("x-amz-acl", acl)]);
            for b in [&private, &public, &open] {
                assert_eq!(
                    code(check_object_acl(&h, b)).as_deref(),
                    Some("NotImplemented")
                );
            }
        }
        let h = headers(&[("x-amz-acl", "log-delivery-write")]);
        assert_eq!(
            code(check_object_acl(&h, &private)).as_deref(),
            Some("InvalidArgument")
        );
        assert_eq!(code(check_object_acl(&HeaderMap::new(), &public)), None);
    }

    #[test]
    fn grant_headers_are_compared_by_what_they_grant() {
        let private = bucket(BucketAcl::Private);
        let public = bucket(BucketAcl::PublicRead);
        let all_users = format!("uri=\"{ALL_USERS_URI}\"");
        let h = headers(&[("x-amz-grant-read", &all_users)]);
        assert_eq!(code(check_object_acl(&h, &public)), None);
        assert_eq!(
            code(check_object_acl(&h, &private)).as_deref(),
            Some("NotImplemented")
        );
        let h = headers(&[("x-amz-grant-full-control", "id=\"alice\"")]);
        assert_eq!(code(check_object_acl(&h, &private)), None);
        assert_eq!(
            code(check_object_acl(&h, &public)).as_deref(),
            Some("NotImplemented")
        );
        let h = headers(&[("x-amz-grant-full-control", "id=alice, id=\"bob\"")]);
        assert_eq!(
            code(check_object_acl(&h, &private)).as_deref(),
            Some("NotImplemented")
        );
        let h = headers(&[("x-amz-grant-read-acp", &all_users)]);
        assert_eq!(
            code(check_object_acl(&h, &public)).as_deref(),
            Some("NotImplemented")
        );
        let h = headers(&[(
            "x-amz-grant-read",
            "uri=\"http://acs.amazonaws.com/groups/global/AuthenticatedUsers\"",
        )]);
        assert_eq!(
            code(check_object_acl(&h, &public)).as_deref(),
            Some("NotImplemented")
        );
        let h = headers(&[("x-amz-grant-read", "emailAddress=\"a@example.com\"")]);
        assert_eq!(
            code(check_object_acl(&h, &private)).as_deref(),
            Some("NotImplemented")
        );
        let h = headers(&[("x-amz-grant-read", "nonsense")]);
        assert_eq!(
            code(check_object_acl(&h, &private)).as_deref(),
            Some("InvalidArgument")
        );
        let h = headers(&[("x-amz-acl", "private"), ("x-amz-grant-read", "id=alice")]);
        assert_eq!(
            code(check_object_acl(&h, &private)).as_deref(),
            Some("InvalidRequest")
        );
    }

    #[test]
    fn acl_headers_are_checked_on_object_writes_and_bucket_grants_refused() {
        let public = bucket(BucketAcl::PublicRead);
        let h = headers(&[("x-amz-acl", "private")]);
        for op in OBJECT_ACL_OPERATIONS {
            assert_eq!(
                code(check_operation(op, &h, Some(&public))).as_deref(),
                Some("NotImplemented")
            );
        }
        // No bucket: the operation itself answers NoSuchBucket.
        assert_eq!(code(check_operation("PutObject", &h, None)), None);
        // A canned bucket ACL is the bucket operations' own business.
        assert_eq!(code(check_operation("CreateBucket", &h, None)), None);
        let grant = headers(&[("x-amz-grant-write", "id=alice")]);
        for op in BUCKET_ACL_OPERATIONS {
            assert_eq!(
                code(check_operation(op, &grant, Some(&public))).as_deref(),
                Some("NotImplemented")
            );
        }
    }

    #[test]
    fn post_object_form_fields_are_checked_like_headers() {
        let private = bucket(BucketAcl::Private);
        let mut input = PutObjectInput::default();
        assert!(put_input_headers(&input).is_empty());
        input.acl = Some(ObjectCannedACL::from_static(ObjectCannedACL::PRIVATE));
        assert_eq!(
            code(check_operation(
                "PutObject",
                &put_input_headers(&input),
                Some(&private)
            )),
            None
        );
        input.acl = Some(ObjectCannedACL::from_static(ObjectCannedACL::PUBLIC_READ));
        assert_eq!(
            code(check_operation(
                "PutObject",
                &put_input_headers(&input),
                Some(&private)
            ))
            .as_deref(),
            Some("NotImplemented")
        );
        let input = PutObjectInput {
            sse_customer_key: Some("key".into()),
            ..PutObjectInput::default()
        };
        assert_eq!(
            code(check_operation(
                "PutObject",
                &put_input_headers(&input),
                Some(&private)
            ))
            .as_deref(),
            Some("NotImplemented")
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
