//! Who may do what: SigV4 secret lookup for s3s (backed by the manager's lock-free snapshot),
//! canned bucket ACL enforcement (and, in the same access check, the refusal of requests the node
//! cannot honour), virtual-host parsing for the configured domain, and the bucket
//! naming rules. Signature verification itself (headers, presigned URLs, expiry, aws-chunked
//! chunk signatures) is done by s3s with the secret returned here.

use std::sync::Arc;

use leofs_manager::{BucketAcl, CatalogWriter, Manager, ManagerState};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::host::{S3Host, VirtualHost};
use s3s::path::S3Path;
use s3s::validation::NameValidation;
use s3s::{S3Error, S3ErrorCode, S3Result};

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
        | "GetBucketLocation" => OpClass::Read,
        "PutObject"
        | "PostObject"
        | "DeleteObject"
        | "DeleteObjects"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "ListParts"
        | "ListMultipartUploads" => OpClass::Write,
        "ListBuckets" | "CreateBucket" => OpClass::Service,
        _ => OpClass::Owner,
    }
}

fn denied() -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, "Access Denied")
}

/// Decides whether the holder of `access_key` (None: anonymous) may perform an operation of
/// class `class` on `bucket` (None: no bucket in the request).
pub fn authorize(
    state: &ManagerState,
    access_key: Option<&str>,
    bucket: Option<&str>,
    class: OpClass,
) -> S3Result<()> {
    let user = access_key
        .and_then(|ak| state.access_key(ak))
        .map(|k| k.user_id.as_str());
    let (Some(bucket), false) = (bucket, class == OpClass::Service) else {
        return if user.is_some() {
            Ok(())
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
            Ok(())
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
    if let Some(user) = user
        && (b.owner == user || state.user(user).is_some_and(|u| u.is_admin))
    {
        return Ok(());
    }
    let allowed = matches!(
        (b.acl, class),
        (BucketAcl::PublicRead, OpClass::Read)
            | (BucketAcl::PublicReadWrite, OpClass::Read | OpClass::Write)
    );
    if allowed { Ok(()) } else { Err(denied()) }
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
        let bucket = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(&**bucket),
        };
        let access_key = cx.credentials().map(|c| c.access_key.as_str());
        let op = cx.s3_op().name();
        let missing = bucket.is_some_and(|name| state.bucket(name).is_none());
        if missing || authorize(&state, access_key, bucket, classify(op)).is_err() {
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
        authorize(&state, access_key, bucket, classify(op))?;
        let request = unsupported::RequestView {
            op,
            headers: cx.headers(),
            query: cx.uri().query(),
            bucket,
            signed: access_key.is_some(),
        };
        unsupported::check_operation(&request, &state)
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
                created_unix_ms: 0,
                incarnation: 1,
                deleting: false,
                consistency: None,
                versioning: Default::default(),
                lifecycle: Vec::new(),
                tags: Vec::new(),
                cors: Vec::new(),
            },
        );
        s
    }

    #[test]
    fn private_bucket_is_owner_and_admin_only() {
        let s = state(BucketAcl::Private);
        assert!(authorize(&s, Some("AKowner"), Some("b"), OpClass::Write).is_ok());
        assert!(authorize(&s, Some("AKroot"), Some("b"), OpClass::Owner).is_ok());
        assert!(authorize(&s, Some("AKother"), Some("b"), OpClass::Read).is_err());
        assert!(authorize(&s, None, Some("b"), OpClass::Read).is_err());
    }

    #[test]
    fn public_acls_open_reads_then_writes_to_anyone() {
        let s = state(BucketAcl::PublicRead);
        assert!(authorize(&s, None, Some("b"), OpClass::Read).is_ok());
        assert!(authorize(&s, None, Some("b"), OpClass::Write).is_err());
        let s = state(BucketAcl::PublicReadWrite);
        assert!(authorize(&s, None, Some("b"), OpClass::Write).is_ok());
        assert!(authorize(&s, Some("AKother"), Some("b"), OpClass::Owner).is_err());
    }

    #[test]
    fn listing_buckets_needs_a_signature() {
        let s = state(BucketAcl::PublicReadWrite);
        assert!(authorize(&s, None, None, OpClass::Service).is_err());
        assert!(authorize(&s, Some("AKother"), None, OpClass::Service).is_ok());
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
