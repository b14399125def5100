//! Who may do what: SigV4 secret lookup for s3s (backed by the manager's lock-free snapshot),
//! canned bucket ACL enforcement (and, in the same access check, the refusal of requests the node
//! cannot honour), virtual-host parsing for the configured domain, and the bucket
//! naming rules. Signature verification itself (headers, presigned URLs, expiry, aws-chunked
//! chunk signatures) is done by s3s with the secret returned here.

use std::sync::Arc;

use std::net::IpAddr;

use http::HeaderMap;
use leofs_manager::policy::{ActionLevel, Decision, PolicyRequest};
use leofs_manager::{Bucket, BucketPermission, CatalogWriter, Manager, ManagerState};
use leofs_shard::PeerAddr;
use leofs_shard::object::{ObjectAcl, Permission};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::host::{S3Host, VirtualHost};
use s3s::path::S3Path;
use s3s::validation::NameValidation;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Result};

use crate::error::GatewayError;
use crate::s3::unsupported;

/// What an operation needs from the bucket's ACL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// Reading objects or listing (allowed to anyone on public-read and public-read-write).
    Read,
    /// Writing objects (allowed to anyone on public-read-write).
    Write,
    /// Bucket administration (owner or admin only).
    Owner,
    /// Not about one existing bucket (ListBuckets, CreateBucket): any authenticated user.
    Service,
}

/// Classifies an s3s operation name.
pub fn classify(op: &str) -> OpClass {
    match op {
        "GetObject"
        | "HeadObject"
        | "GetObjectAttributes"
        | "ListObjects"
        | "ListObjectsV2"
        | "ListObjectVersions"
        | "HeadBucket"
        | "GetBucketLocation"
        | "ListParts"
        | "ListMultipartUploads" => OpClass::Read,
        "PutObject"
        | "PostObject"
        | "DeleteObject"
        | "DeleteObjects"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload" => OpClass::Write,
        "ListBuckets" | "CreateBucket" => OpClass::Service,
        _ => OpClass::Owner,
    }
}

fn denied() -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, "Access Denied")
}

/// Who sent a request and from where: what ACLs and bucket policies judge besides the
/// operation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Requester<'a> {
    /// The access key whose signature was verified; None for an anonymous request.
    pub access_key: Option<&'a str>,
    /// The address the request came from (`aws:SourceIp`).
    pub source_ip: Option<IpAddr>,
    /// The request's headers (`aws:Referer`, `aws:UserAgent`).
    pub headers: Option<&'a HeaderMap>,
}

impl<'a> Requester<'a> {
    /// The requester of an operation's request.
    pub fn of<T>(req: &'a S3Request<T>) -> Self {
        Requester {
            access_key: req.credentials.as_ref().map(|c| c.access_key.as_str()),
            source_ip: req.extensions.get::<PeerAddr>().map(|p| p.0.ip()),
            headers: Some(&req.headers),
        }
    }

    /// A requester known only by its access key.
    pub fn with_key(access_key: Option<&'a str>) -> Self {
        Requester {
            access_key,
            ..Requester::default()
        }
    }
}

/// One request as the access decision sees it.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    /// s3s's operation name (`GetObject`, …): its ACL class and policy action follow from it.
    pub op: &'a str,
    /// Who asks.
    pub requester: Requester<'a>,
    /// The bucket the request names, if any.
    pub bucket: Option<&'a str>,
    /// The key the request names, if any.
    pub key: Option<&'a str>,
    /// Whether the request names a version (`s3:GetObjectVersion` rather than `s3:GetObject`).
    pub versioned: bool,
    /// The raw query string (a listing's `prefix` and `delimiter` for policy conditions).
    pub query: Option<&'a str>,
}

impl<'a> Access<'a> {
    /// `op` by `requester` on `bucket` (and `key`), with no version and no query.
    pub fn new(
        op: &'a str,
        requester: Requester<'a>,
        bucket: Option<&'a str>,
        key: Option<&'a str>,
    ) -> Self {
        Access {
            op,
            requester,
            bucket,
            key,
            versioned: false,
            query: None,
        }
    }
}

/// The S3 action (as bucket policies name it) an operation is; None for operations no bucket
/// policy governs (ListBuckets, CreateBucket) or that the node refuses anyway.
pub fn policy_action(op: &str, versioned: bool) -> Option<&'static str> {
    let pick = |plain: &'static str, version: &'static str| if versioned { version } else { plain };
    Some(match op {
        "GetObject" | "HeadObject" => pick("s3:GetObject", "s3:GetObjectVersion"),
        "GetObjectAttributes" => pick("s3:GetObjectAttributes", "s3:GetObjectVersionAttributes"),
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "s3:PutObject",
        "DeleteObject" => pick("s3:DeleteObject", "s3:DeleteObjectVersion"),
        "AbortMultipartUpload" => "s3:AbortMultipartUpload",
        "ListParts" => "s3:ListMultipartUploadParts",
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "s3:ListBucket",
        "ListObjectVersions" => "s3:ListBucketVersions",
        "GetBucketLocation" => "s3:GetBucketLocation",
        "GetObjectTagging" => pick("s3:GetObjectTagging", "s3:GetObjectVersionTagging"),
        "PutObjectTagging" => pick("s3:PutObjectTagging", "s3:PutObjectVersionTagging"),
        "DeleteObjectTagging" => pick("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),
        "GetObjectAcl" => pick("s3:GetObjectAcl", "s3:GetObjectVersionAcl"),
        "PutObjectAcl" => pick("s3:PutObjectAcl", "s3:PutObjectVersionAcl"),
        "GetBucketAcl" => "s3:GetBucketAcl",
        "PutBucketAcl" => "s3:PutBucketAcl",
        "GetBucketPolicy" => "s3:GetBucketPolicy",
        "PutBucketPolicy" => "s3:PutBucketPolicy",
        "DeleteBucketPolicy" => "s3:DeleteBucketPolicy",
        "GetBucketPolicyStatus" => "s3:GetBucketPolicyStatus",
        "GetBucketTagging" => "s3:GetBucketTagging",
        "PutBucketTagging" | "DeleteBucketTagging" => "s3:PutBucketTagging",
        "GetBucketCors" => "s3:GetBucketCORS",
        "PutBucketCors" | "DeleteBucketCors" => "s3:PutBucketCORS",
        "GetBucketVersioning" => "s3:GetBucketVersioning",
        "PutBucketVersioning" => "s3:PutBucketVersioning",
        "GetBucketLifecycleConfiguration" => "s3:GetLifecycleConfiguration",
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => {
            "s3:PutLifecycleConfiguration"
        }
        "DeleteBucket" => "s3:DeleteBucket",
        _ => return None,
    })
}

/// Operations only the bucket owner (and the admins) may perform, whatever the bucket's policy
/// allows or denies: a policy never locks its owner out, nor lets anyone else change it.
const POLICY_OPERATIONS: &[&str] = &[
    "GetBucketPolicy",
    "PutBucketPolicy",
    "DeleteBucketPolicy",
    "GetBucketPolicyStatus",
];

/// Operations whose keys are in the body, not the path: under a bucket policy, which judges
/// keys, the operation authorizes each key itself (DeleteObjects as a DeleteObject of each,
/// a form upload as a PutObject of its key).
const JUDGED_PER_KEY: &[&str] = &["DeleteObjects", "PostObject"];

/// Whether `access` is a write that gives the object tags (`x-amz-tagging`).
fn sets_tags(access: &Access<'_>) -> bool {
    matches!(
        access.op,
        "PutObject" | "CopyObject" | "CreateMultipartUpload"
    ) && access
        .requester
        .headers
        .and_then(|h| h.get("x-amz-tagging"))
        .is_some_and(|v| !v.is_empty())
}

/// What the bucket's policy says about `access` (`NotApplicable` without a policy).
fn policy_decision(bucket: &Bucket, user: Option<&str>, access: &Access<'_>) -> Decision {
    let (Some(policy), Some(action)) = (&bucket.policy, policy_action(access.op, access.versioned))
    else {
        return Decision::NotApplicable;
    };
    let key = match leofs_manager::policy::action_level(action) {
        Some(ActionLevel::Object) => access.key,
        _ => None,
    };
    let header = |name: &str| {
        access
            .requester
            .headers
            .and_then(|h| h.get(name))
            .and_then(|v| v.to_str().ok())
    };
    // Decoded as s3s decodes the listing's own parameters (`+` is a space).
    let query = access.query.map(|q| q.replace('+', "%20"));
    let prefix = unsupported::query_param(query.as_deref(), "prefix");
    let delimiter = unsupported::query_param(query.as_deref(), "delimiter");
    policy.evaluate(&PolicyRequest {
        user,
        action,
        bucket: &bucket.name,
        key,
        source_ip: access.requester.source_ip,
        // The node serves plain HTTP (a TLS proxy in front is not seen).
        secure_transport: false,
        prefix: prefix.as_deref(),
        delimiter: delimiter.as_deref(),
        referer: header("referer"),
        user_agent: header("user-agent"),
    })
}

/// What [`authorize`] leaves to the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The request may proceed.
    Allowed,
    /// The object's own ACL decides, once the operation has read it ([`authorize_object`]).
    ObjectAclDecides,
}

/// Object operations whose permission comes from the object's ACL, with the permission.
const OBJECT_ACL_OPERATIONS: &[(&str, Permission)] = &[
    ("GetObject", Permission::Read),
    ("HeadObject", Permission::Read),
    ("GetObjectAttributes", Permission::Read),
    ("GetObjectAcl", Permission::ReadAcp),
    ("PutObjectAcl", Permission::WriteAcp),
];

fn object_acl_permission(op: &str) -> Option<Permission> {
    OBJECT_ACL_OPERATIONS
        .iter()
        .find(|(name, _)| *name == op)
        .map(|(_, p)| *p)
}

/// The user a request's verified key belongs to.
fn user_of<'s>(state: &'s ManagerState, access: &Access<'_>) -> Option<&'s str> {
    access
        .requester
        .access_key
        .and_then(|ak| state.access_key(ak))
        .map(|k| k.user_id.as_str())
}

/// Whether `user` owns `bucket` or is an admin.
fn privileged(state: &ManagerState, bucket: &Bucket, user: Option<&str>) -> bool {
    user.is_some_and(|u| bucket.owner == u || state.user(u).is_some_and(|u| u.is_admin))
}

/// Decides, after an object-ACL operation ([`Verdict::ObjectAclDecides`]) has read the object,
/// whether `access` may have it: the bucket policy, then the bucket owner and the admins, then
/// the object's ACL (`stored`, or its bucket's for an object without one: [`crate::acl`]).
pub fn authorize_object(
    state: &ManagerState,
    access: &Access<'_>,
    stored: Option<&ObjectAcl>,
) -> S3Result<()> {
    let Some(b) = access.bucket.and_then(|name| state.bucket(name)) else {
        return Err(denied());
    };
    let user = user_of(state, access);
    match policy_decision(b, user, access) {
        Decision::Deny => return Err(denied()),
        Decision::Allow => return Ok(()),
        Decision::NotApplicable => {}
    }
    if privileged(state, b, user) {
        return Ok(());
    }
    let wanted = object_acl_permission(access.op).unwrap_or(Permission::FullControl);
    if crate::acl::acl_permits(&crate::acl::effective_acl(stored, b), user, wanted) {
        Ok(())
    } else {
        Err(denied())
    }
}

/// The answer to an object-ACL operation whose object is not there (or is a delete marker):
/// its `NoSuchKey`, `NoSuchVersion`, or a marker's answer only for a requester who may list the
/// bucket, `AccessDenied` otherwise, as S3 answers (a requester must not learn which keys exist
/// from a bucket it cannot list).
pub fn hide_missing(
    state: &ManagerState,
    access: &Access<'_>,
    error: GatewayError,
) -> GatewayError {
    let missing = matches!(&error, GatewayError::S3(e)
        if matches!(e.code(), S3ErrorCode::NoSuchKey | S3ErrorCode::NoSuchVersion
            | S3ErrorCode::MethodNotAllowed | S3ErrorCode::InvalidRequest));
    let list = Access {
        versioned: false,
        query: None,
        ..Access::new("ListObjects", access.requester, access.bucket, None)
    };
    if missing && !matches!(authorize(state, &list), Ok(Verdict::Allowed)) {
        GatewayError::S3(denied())
    } else {
        error
    }
}

/// Decides whether `access` may proceed: the bucket's policy first (an explicit deny refuses
/// anyone, the bucket owner too, except for the policy operations; an allow admits anyone),
/// then the owner and the admins, then, for reading an object or its ACL, the object's ACL
/// (left to the operation), and for everything else the bucket's canned ACL.
pub fn authorize(state: &ManagerState, access: &Access<'_>) -> S3Result<Verdict> {
    let class = classify(access.op);
    let user = user_of(state, access);
    let (Some(bucket), false) = (access.bucket, class == OpClass::Service) else {
        return if user.is_some() {
            Ok(Verdict::Allowed)
        } else {
            Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "Signature is required",
            ))
        };
    };
    let Some(b) = state.bucket(bucket) else {
        // The operation reports NoSuchBucket to authenticated callers; anonymous ones get it
        // here, as S3 answers them (the operation never runs for them).
        return if user.is_some() {
            Ok(Verdict::Allowed)
        } else {
            Err(S3Error::with_message(
                S3ErrorCode::NoSuchBucket,
                "The specified bucket does not exist",
            ))
        };
    };
    if b.deleting && class == OpClass::Write {
        return Err(S3Error::with_message(
            S3ErrorCode::OperationAborted,
            "The bucket is being deleted; writes into it are refused.",
        ));
    }
    if b.policy.is_some() && JUDGED_PER_KEY.contains(&access.op) {
        // The keys are in the body: the operation asks for each (as DeleteObject, PutObject).
        return Ok(Verdict::Allowed);
    }
    let privileged = privileged(state, b, user);
    if POLICY_OPERATIONS.contains(&access.op) {
        // Only the bucket owner (and the admins) read or change a bucket's policy, whatever the
        // policy says (as S3 keeps them to the owner's account).
        return if privileged {
            Ok(Verdict::Allowed)
        } else {
            Err(denied())
        };
    }
    let mut decision = policy_decision(b, user, access);
    if sets_tags(access) {
        // Tags given with a write are a PutObjectTagging too (as S3 judges them).
        let tagging = Access {
            op: "PutObjectTagging",
            ..*access
        };
        decision = match (decision, policy_decision(b, user, &tagging)) {
            (Decision::Deny, _) | (_, Decision::Deny) => Decision::Deny,
            (Decision::Allow, Decision::Allow) => Decision::Allow,
            _ => Decision::NotApplicable,
        };
    }
    match decision {
        Decision::Deny => return Err(denied()),
        Decision::Allow => return Ok(Verdict::Allowed),
        Decision::NotApplicable => {}
    }
    if privileged {
        return Ok(Verdict::Allowed);
    }
    if access.key.is_some() && object_acl_permission(access.op).is_some() {
        return Ok(Verdict::ObjectAclDecides);
    }
    // A bucket's READ lists it (its objects are read by their own ACLs, above), its WRITE
    // writes and deletes objects, its READ_ACP and WRITE_ACP read and change its ACL.
    let wanted = match (access.op, class) {
        ("GetBucketAcl", _) => Some(BucketPermission::ReadAcp),
        ("PutBucketAcl", _) => Some(BucketPermission::WriteAcp),
        (_, OpClass::Read) => Some(BucketPermission::Read),
        (_, OpClass::Write) => Some(BucketPermission::Write),
        _ => None,
    };
    if wanted.is_some_and(|wanted| crate::acl::bucket_permits(b, user, wanted)) {
        Ok(Verdict::Allowed)
    } else {
        Err(denied())
    }
}

/// The caller's user id, if the request was signed with a known key.
pub fn caller_user(state: &ManagerState, access_key: Option<&str>) -> Option<String> {
    access_key
        .and_then(|ak| state.access_key(ak))
        .map(|k| k.user_id.clone())
}

/// s3s secret lookup: unknown key → `InvalidAccessKeyId`; s3s then checks the signature
/// (mismatch → `SignatureDoesNotMatch`).
pub struct ManagerAuth {
    manager: Arc<Manager>,
    catalog: CatalogWriter,
}

impl ManagerAuth {
    /// Looks secrets up in `manager`'s current snapshot; a key not there is looked for again
    /// once `catalog` has brought a copied catalog up to date.
    pub fn new(manager: Arc<Manager>, catalog: CatalogWriter) -> Self {
        Self { manager, catalog }
    }
}

#[async_trait::async_trait]
impl S3Auth for ManagerAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let mut state = self.manager.snapshot();
        if state.access_key(access_key).is_none() {
            refresh(&self.catalog).await?;
            state = self.manager.snapshot();
        }
        match state.access_key(access_key) {
            Some(k) => Ok(SecretKey::from(k.secret_access_key.as_str())),
            None => Err(S3Error::with_message(
                S3ErrorCode::InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records.",
            )),
        }
    }
}

/// s3s access check, before every operation runs: [`authorize`], then the refusal of what the
/// node cannot honour ([`crate::s3::unsupported::check_operation`]).
pub struct AclAccess {
    manager: Arc<Manager>,
    catalog: CatalogWriter,
}

impl AclAccess {
    /// Checks against `manager`'s current snapshot; a bucket not there is looked for again
    /// once `catalog` has brought a copied catalog up to date.
    pub fn new(manager: Arc<Manager>, catalog: CatalogWriter) -> Self {
        Self { manager, catalog }
    }
}

// A copied catalog is served from however long the managers are unreachable (DESIGN §8: the
// data path keeps serving with its cached ring and catalog while every manager is down); what
// it does not hold (a new bucket or key) is asked for, and is a 503 while no manager answers.
// The price: a key revoked while this node cannot reach any manager works here until it can.

/// Brings a copied catalog up to date (a no-op for the manager's own).
async fn refresh(catalog: &CatalogWriter) -> S3Result<()> {
    catalog
        .refresh()
        .await
        .map_err(|e| S3Error::with_message(S3ErrorCode::ServiceUnavailable, e.to_string()))
}

#[async_trait::async_trait]
impl S3Access for AclAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let mut state = self.manager.snapshot();
        // s3s verified the signature before this check: the log may name its signer.
        if let Some(key) = cx.credentials().map(|c| c.access_key.clone()) {
            crate::access_log::VerifiedRequester::record(cx.extensions_mut(), &state, &key);
        }
        let source_ip = cx.extensions_mut().get::<PeerAddr>().map(|p| p.0.ip());
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(&**bucket), None),
            S3Path::Object { bucket, key } => (Some(&**bucket), Some(&**key)),
        };
        let access_key = cx.credentials().map(|c| c.access_key.as_str());
        let op = cx.s3_op().name();
        let query = cx.uri().query();
        let access = Access {
            op,
            requester: Requester {
                access_key,
                source_ip,
                headers: Some(cx.headers()),
            },
            bucket,
            key,
            versioned: unsupported::query_param(query, "versionId").is_some(),
            query,
        };
        let missing = bucket.is_some_and(|name| state.bucket(name).is_none());
        if missing || authorize(&state, &access).is_err() {
            // A copied catalog may be a moment late (a bucket, key or ACL changed through
            // another node): look again once it is up to date.
            refresh(&self.catalog).await?;
            state = self.manager.snapshot();
            if let Some(key) = access_key
                && state.access_key(key).is_none()
            {
                // Deleted since the signature was checked against the copy.
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidAccessKeyId,
                    "The AWS Access Key Id you provided does not exist in our records.",
                ));
            }
        }
        authorize(&state, &access)?;
        let request = unsupported::RequestView {
            op,
            headers: cx.headers(),
            query: cx.uri().query(),
            bucket,
            signed: access_key.is_some(),
        };
        match unsupported::check_operation(&request, &state) {
            // A grantee created a moment ago through another node: look again once the copied
            // catalog is up to date.
            Err(e) if crate::acl::unknown_grantee(&e) => {
                refresh(&self.catalog).await?;
                unsupported::check_operation(&request, &self.manager.snapshot())
            }
            checked => checked,
        }
    }
}

/// Virtual-host parsing for one configured domain: `bucket.<domain>` addresses `bucket`; the
/// domain itself and any other host name are path-style (unlike s3s's `SingleDomain`, which would
/// take an unknown host such as `localhost` for a bucket name).
pub struct DomainHost {
    domain: String,
}

impl DomainHost {
    /// Virtual hosts under `domain` (lowercase, without port).
    pub fn new(domain: &str) -> Self {
        Self {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        }
    }
}

impl S3Host for DomainHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let name = name.trim_end_matches('.');
        if let Some(bucket) = name
            .strip_suffix(self.domain.as_str())
            .and_then(|h| h.strip_suffix('.'))
            && !bucket.is_empty()
        {
            return Ok(VirtualHost::new(self.domain.as_str()).with_bucket(bucket));
        }
        Ok(VirtualHost::new(name))
    }
}

/// Bucket names follow the manager's rules (one definition for S3, REST and admin).
pub struct ManagerNameValidation;

impl NameValidation for ManagerNameValidation {
    fn validate_bucket_name(&self, name: &str) -> bool {
        leofs_manager::validate_bucket_name(name).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leofs_manager::BucketAcl;
    use leofs_manager::{AccessKey, Bucket, User};

    fn state(acl: BucketAcl) -> ManagerState {
        let mut s = ManagerState::default();
        for (user, admin) in [("owner", false), ("other", false), ("root", true)] {
            s.users.insert(
                user.into(),
                User {
                    id: user.into(),
                    is_admin: admin,
                    created_unix_ms: 0,
                },
            );
            s.keys.insert(
                format!("AK{user}"),
                AccessKey {
                    access_key_id: format!("AK{user}"),
                    secret_access_key: "s".into(),
                    user_id: user.into(),
                },
            );
        }
        s.buckets.insert(
            "b".into(),
            Bucket {
                name: "b".into(),
                owner: "owner".into(),
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
            },
        );
        s
    }

    /// Whether `key`'s holder (None: anonymous) may perform `op` on key `k` of bucket `b`.
    fn allows(s: &ManagerState, key: Option<&str>, op: &str) -> bool {
        matches!(
            authorize(
                s,
                &Access::new(op, Requester::with_key(key), Some("b"), Some("k"))
            ),
            Ok(Verdict::Allowed)
        )
    }

    /// Whether the check leaves `op` by `key`'s holder to the object's ACL.
    fn left_to_object(s: &ManagerState, key: Option<&str>, op: &str) -> bool {
        matches!(
            authorize(
                s,
                &Access::new(op, Requester::with_key(key), Some("b"), Some("k"))
            ),
            Ok(Verdict::ObjectAclDecides)
        )
    }

    #[test]
    fn private_bucket_is_owner_and_admin_only() {
        let s = state(BucketAcl::Private);
        assert!(allows(&s, Some("AKowner"), "PutObject"));
        assert!(allows(&s, Some("AKroot"), "PutBucketAcl"));
        assert!(!allows(&s, Some("AKother"), "ListObjects"));
        assert!(!allows(&s, None, "PutObject"));
        // An object may be readable by others: its ACL decides, once read.
        assert!(left_to_object(&s, Some("AKother"), "GetObject"));
        assert!(left_to_object(&s, None, "HeadObject"));
        assert!(!left_to_object(&s, None, "GetObjectTagging"));
    }

    #[test]
    fn public_acls_open_reads_then_writes_to_anyone() {
        let s = state(BucketAcl::PublicRead);
        assert!(allows(&s, None, "ListObjects"));
        assert!(
            left_to_object(&s, None, "GetObject"),
            "a bucket's READ lists it only"
        );
        assert!(!allows(&s, None, "PutObject"));
        let s = state(BucketAcl::PublicReadWrite);
        assert!(allows(&s, None, "PutObject"));
        assert!(!allows(&s, Some("AKother"), "PutBucketAcl"));
    }

    #[test]
    fn listing_buckets_needs_a_signature() {
        let s = state(BucketAcl::PublicReadWrite);
        assert!(
            authorize(
                &s,
                &Access::new("ListBuckets", Requester::default(), None, None)
            )
            .is_err()
        );
        assert!(
            authorize(
                &s,
                &Access::new(
                    "ListBuckets",
                    Requester::with_key(Some("AKother")),
                    None,
                    None
                )
            )
            .is_ok()
        );
    }

    #[test]
    fn a_policy_denies_even_the_owner_but_never_the_way_back_and_allows_anyone() {
        let mut s = state(BucketAcl::Private);
        let policy = leofs_manager::policy::BucketPolicy::parse(
            r#"{"Statement":[
                {"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/k"},
                {"Effect":"Deny","Principal":"*","Action":["s3:PutObject","s3:*Policy"],"Resource":["arn:aws:s3:::b/*","arn:aws:s3:::b"]}]}"#,
        )
        .unwrap();
        s.buckets.get_mut("b").unwrap().policy = Some(policy);
        assert!(
            allows(&s, None, "GetObject"),
            "allowed to anyone by the policy"
        );
        assert!(allows(&s, Some("AKother"), "HeadObject"));
        assert!(
            !allows(&s, Some("AKowner"), "PutObject"),
            "denied to the owner too"
        );
        assert!(
            !allows(&s, Some("AKroot"), "PutObject"),
            "and to the admins"
        );
        assert!(
            allows(&s, Some("AKowner"), "DeleteBucketPolicy"),
            "the way back"
        );
        assert!(!allows(&s, Some("AKother"), "DeleteBucketPolicy"));
        assert!(
            !allows(&s, None, "GetBucketPolicy"),
            "never opened by an allow"
        );
        assert!(!allows(&s, None, "ListObjects"), "left to the ACL");
        assert!(
            allows(&s, None, "DeleteObjects"),
            "judged per key by the operation"
        );
    }

    #[test]
    fn virtual_host_only_under_the_domain() {
        let h = DomainHost::new("s3.example.com");
        assert_eq!(
            h.parse_host_header("b.s3.example.com:8080")
                .unwrap()
                .bucket(),
            Some("b")
        );
        assert_eq!(
            h.parse_host_header("s3.example.com").unwrap().bucket(),
            None
        );
        assert_eq!(
            h.parse_host_header("localhost:8080").unwrap().bucket(),
            None
        );
    }
}
