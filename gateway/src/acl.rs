//! Object ACLs (S3's meaning): who may read an object and its ACL. Every object written through
//! S3 carries its ACL in its manifest (`leofs_shard::object::ObjectAcl`): its owner (who wrote
//! it; anonymous requests for an anonymous write, as in S3) and the grants given with `x-amz-acl` or
//! `x-amz-grant-*` (none: private). An object READ grant reads the object, READ_ACP reads its
//! ACL, WRITE_ACP changes it, FULL_CONTROL all three; a bucket's ACL grants listing and writing,
//! never reading the objects (S3's semantics).
//!
//! Objects without an ACL — written before object ACLs existed, or through the REST API without
//! ACL headers — keep the access they had: their bucket's canned ACL applies to them as LeoFS
//! applied it (`public-read` lets anyone read them). That is how existing data dirs migrate:
//! nothing is rewritten, and such an object gets an ACL of its own only when one is put on it.
//!
//! The bucket owner and the admins may do anything with every object in the bucket (as with S3's
//! bucket-owner-enforced ownership), the object's owner anything with the object; a bucket policy
//! is judged before both ([`crate::auth`]).

use http::HeaderMap;
use leofs_manager::{
    Bucket, BucketAcl, BucketGrant, BucketGrantee, BucketPermission, ManagerState,
};
use leofs_shard::object::{Grant, Grantee, MAX_ACL_GRANTS, ObjectAcl, Permission};
use s3s::{S3Error, S3ErrorCode, S3Result};

/// The URI of S3's AllUsers group (anyone, signed or not).
pub const ALL_USERS_URI: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
/// The URI of S3's AuthenticatedUsers group (any signed request of a known user).
pub const AUTHENTICATED_USERS_URI: &str =
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// The owner of what an anonymous request writes (into a `public-read-write` bucket): no user
/// id can be this (user ids have no `:`), so only anonymous requests are its owner, as in S3.
pub const ANONYMOUS_OWNER: &str = ":anonymous";
/// How S3 names the anonymous owner (its canonical id), in ACL documents.
pub const ANONYMOUS_CANONICAL_ID: &str = "65a011a29cdf8ec533ec3d1ccaae921c";

/// The id an owner is shown with in ACL documents.
pub fn presented_id(owner: &str) -> &str {
    if owner == ANONYMOUS_OWNER {
        ANONYMOUS_CANONICAL_ID
    } else {
        owner
    }
}

/// The canned ACL header.
pub const CANNED_ACL_HEADER: &str = "x-amz-acl";

/// The grant headers, each with the permission it grants.
pub const GRANT_HEADERS: &[(&str, Permission)] = &[
    ("x-amz-grant-read", Permission::Read),
    ("x-amz-grant-write", Permission::Write),
    ("x-amz-grant-read-acp", Permission::ReadAcp),
    ("x-amz-grant-write-acp", Permission::WriteAcp),
    ("x-amz-grant-full-control", Permission::FullControl),
];

fn invalid_argument(message: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, message.into())
}

/// The grants of an object canned ACL written by `owner` into `bucket`.
pub fn canned_grants(name: &str, owner: &str, bucket: &Bucket) -> S3Result<Vec<Grant>> {
    let grant = |grantee: Grantee, permission: Permission| Grant {
        grantee,
        permission,
    };
    let bucket_owner = |permission| {
        if bucket.owner == owner {
            Vec::new()
        } else {
            vec![grant(Grantee::User(bucket.owner.clone()), permission)]
        }
    };
    Ok(match name {
        "private" => Vec::new(),
        "public-read" => vec![grant(Grantee::AllUsers, Permission::Read)],
        "public-read-write" => vec![
            grant(Grantee::AllUsers, Permission::Read),
            grant(Grantee::AllUsers, Permission::Write),
        ],
        "authenticated-read" => vec![grant(Grantee::AuthenticatedUsers, Permission::Read)],
        "bucket-owner-read" => bucket_owner(Permission::Read),
        "bucket-owner-full-control" => bucket_owner(Permission::FullControl),
        "aws-exec-read" | "log-delivery-write" => {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                format!(
                    "The canned ACL {name} grants to an AWS service group leofs does not have; \
                     the request is refused rather than accepted and ignored."
                ),
            ));
        }
        other => return Err(invalid_argument(format!("Unknown canned ACL: {other:?}"))),
    })
}

/// The grantee one `type="value"` item of a grant header names. A user id must be a user's;
/// an e-mail address names the user whose id it is (leofs users have no separate address).
pub fn grantee_of(kind: &str, value: &str, state: &ManagerState) -> S3Result<Grantee> {
    match kind {
        "id" => match state.user(value) {
            Some(_) => Ok(Grantee::User(value.to_owned())),
            None => Err(invalid_argument("Invalid id")),
        },
        "emailAddress" => match state.user(value) {
            Some(_) => Ok(Grantee::User(value.to_owned())),
            None => Err(S3Error::with_message(
                S3ErrorCode::UnresolvableGrantByEmailAddress,
                "The e-mail address you provided does not match any account on record.",
            )),
        },
        "uri" => match value {
            ALL_USERS_URI => Ok(Grantee::AllUsers),
            AUTHENTICATED_USERS_URI => Ok(Grantee::AuthenticatedUsers),
            _ => Err(invalid_argument(format!(
                "Invalid group uri (leofs has AllUsers and AuthenticatedUsers): {value}"
            ))),
        },
        _ => Err(invalid_argument(format!("Invalid grantee type: {kind}"))),
    }
}

/// Whether `error` names a grantee this node's catalog does not know (which a copied catalog may
/// learn when brought up to date).
pub fn unknown_grantee(error: &S3Error) -> bool {
    matches!(
        error.code(),
        S3ErrorCode::InvalidArgument | S3ErrorCode::UnresolvableGrantByEmailAddress
    )
}

/// Runs `f` on the catalog, and once more after bringing a copied catalog up to date if it
/// named a grantee the catalog did not know (created a moment ago through another node).
pub async fn with_fresh_grantees<T>(
    ctx: &crate::store::Ctx,
    f: impl Fn(&ManagerState) -> Result<T, crate::error::GatewayError>,
) -> Result<T, crate::error::GatewayError> {
    match f(&ctx.manager.snapshot()) {
        Err(crate::error::GatewayError::S3(e)) if unknown_grantee(&e) => {
            ctx.catalog.refresh().await?;
            f(&ctx.manager.snapshot())
        }
        other => other,
    }
}

/// Parses one grant header's value, `type="value"[, type="value"]…` (quotes optional).
fn grantees_of_header(name: &str, text: &str, state: &ManagerState) -> S3Result<Vec<Grantee>> {
    let malformed = || invalid_argument(format!("Invalid grantee list in {name}: {text:?}"));
    let mut out = Vec::new();
    for item in text.split(',') {
        let (kind, value) = item.trim().split_once('=').ok_or_else(malformed)?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if value.is_empty() {
            return Err(malformed());
        }
        out.push(grantee_of(kind.trim(), value, state)?);
    }
    Ok(out)
}

/// Whether a request carries ACL headers (a canned ACL or grants).
pub fn has_acl_headers(headers: &HeaderMap) -> bool {
    headers.contains_key(CANNED_ACL_HEADER)
        || GRANT_HEADERS
            .iter()
            .any(|(name, _)| headers.contains_key(*name))
}

/// The grants a request's ACL headers give an object written by `owner` into `bucket` (none
/// without headers: private). A canned ACL with grants is `InvalidRequest`, as in S3.
pub fn grants_of_headers(
    headers: &HeaderMap,
    owner: &str,
    bucket: &Bucket,
    state: &ManagerState,
) -> S3Result<Vec<Grant>> {
    match canned_of(headers)? {
        Some(name) => canned_grants(name, owner, bucket),
        None => grants_of_grant_headers(headers, state),
    }
}

/// The canned ACL a request names, if any; with grant headers beside it, `InvalidRequest`, as
/// in S3.
fn canned_of(headers: &HeaderMap) -> S3Result<Option<&str>> {
    let Some(canned) = headers.get(CANNED_ACL_HEADER) else {
        return Ok(None);
    };
    if GRANT_HEADERS
        .iter()
        .any(|(name, _)| headers.contains_key(*name))
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Specifying both Canned ACLs and Header Grants is not allowed",
        ));
    }
    Ok(Some(canned.to_str().map(str::trim).unwrap_or("")))
}

/// The grants of a request's `x-amz-grant-*` headers, at most [`MAX_ACL_GRANTS`].
fn grants_of_grant_headers(headers: &HeaderMap, state: &ManagerState) -> S3Result<Vec<Grant>> {
    let grant_headers: Vec<_> = GRANT_HEADERS
        .iter()
        .filter_map(|(name, permission)| headers.get(*name).map(|v| (*name, *permission, v)))
        .collect();
    let mut grants = Vec::new();
    for (name, permission, value) in grant_headers {
        let text = value.to_str().unwrap_or("");
        for grantee in grantees_of_header(name, text, state)? {
            grants.push(Grant {
                grantee,
                permission,
            });
        }
    }
    check_grant_count(&grants)?;
    Ok(grants)
}

/// At most [`MAX_ACL_GRANTS`] grants (S3's limit).
pub fn check_grant_count(grants: &[Grant]) -> S3Result<()> {
    if grants.len() > MAX_ACL_GRANTS {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedACLError,
            "The ACL you provided has more than 100 grants",
        ));
    }
    Ok(())
}

/// Who owns what `user` (None: anonymous) writes: the writer, or [`ANONYMOUS_OWNER`].
pub fn writer_of(user: Option<&str>) -> String {
    user.unwrap_or(ANONYMOUS_OWNER).to_owned()
}

/// The ACL an object written by `user` into `bucket` with `headers` gets.
pub fn acl_for_write(
    headers: &HeaderMap,
    user: Option<&str>,
    bucket: &Bucket,
    state: &ManagerState,
) -> S3Result<ObjectAcl> {
    let owner = writer_of(user);
    let grants = grants_of_headers(headers, &owner, bucket, state)?;
    Ok(ObjectAcl { owner, grants })
}

/// The ACL of an object a request signed with `access_key` (None: anonymous) writes into
/// bucket `bucket` with ACL headers `headers`.
pub fn acl_of_request(
    state: &ManagerState,
    bucket: &str,
    access_key: Option<&str>,
    headers: &HeaderMap,
) -> S3Result<ObjectAcl> {
    let record = state.bucket(bucket).ok_or_else(|| {
        S3Error::with_message(
            S3ErrorCode::NoSuchBucket,
            "The specified bucket does not exist",
        )
    })?;
    let user = access_key
        .and_then(|ak| state.access_key(ak))
        .map(|k| k.user_id.as_str());
    acl_for_write(headers, user, record, state)
}

/// The ACL that applies to an object with `stored` (its own) in `bucket`: its own, or, for an
/// object without one, the bucket owner's with a read for whoever may list the bucket (the
/// bucket's canned ACL and its READ grants, as LeoFS applied a bucket's ACL to its objects).
pub fn effective_acl(stored: Option<&ObjectAcl>, bucket: &Bucket) -> ObjectAcl {
    match stored {
        Some(acl) => acl.clone(),
        None => ObjectAcl {
            owner: bucket.owner.clone(),
            grants: bucket_grants(bucket)
                .iter()
                .filter(|g| g.permission.covers(BucketPermission::Read))
                .map(|g| Grant {
                    grantee: object_grantee(&g.grantee),
                    permission: Permission::Read,
                })
                .collect(),
        },
    }
}

/// Every grant of a bucket's ACL: its canned ACL's, then its own.
pub fn bucket_grants(bucket: &Bucket) -> Vec<BucketGrant> {
    let all_users = |permission| BucketGrant {
        grantee: BucketGrantee::AllUsers,
        permission,
    };
    let mut out = match bucket.acl {
        BucketAcl::Private => Vec::new(),
        BucketAcl::PublicRead => vec![all_users(BucketPermission::Read)],
        BucketAcl::PublicReadWrite => vec![
            all_users(BucketPermission::Read),
            all_users(BucketPermission::Write),
        ],
    };
    out.extend(bucket.grants.iter().cloned());
    out
}

/// Whether `bucket`'s ACL gives `user` (None: anonymous) `wanted` (its owner has everything).
pub fn bucket_permits(bucket: &Bucket, user: Option<&str>, wanted: BucketPermission) -> bool {
    user == Some(bucket.owner.as_str())
        || bucket_grants(bucket).iter().any(|g| {
            let to_caller = match &g.grantee {
                BucketGrantee::AllUsers => true,
                BucketGrantee::AuthenticatedUsers => user.is_some(),
                BucketGrantee::User(id) => user == Some(id.as_str()),
            };
            to_caller && g.permission.covers(wanted)
        })
}

fn object_grantee(g: &BucketGrantee) -> Grantee {
    match g {
        BucketGrantee::User(id) => Grantee::User(id.clone()),
        BucketGrantee::AllUsers => Grantee::AllUsers,
        BucketGrantee::AuthenticatedUsers => Grantee::AuthenticatedUsers,
    }
}

/// A grant as a bucket's ACL keeps it.
pub fn bucket_grant(g: &Grant) -> BucketGrant {
    BucketGrant {
        grantee: match &g.grantee {
            Grantee::User(id) => BucketGrantee::User(id.clone()),
            Grantee::AllUsers => BucketGrantee::AllUsers,
            Grantee::AuthenticatedUsers => BucketGrantee::AuthenticatedUsers,
        },
        permission: match g.permission {
            Permission::Read => BucketPermission::Read,
            Permission::Write => BucketPermission::Write,
            Permission::ReadAcp => BucketPermission::ReadAcp,
            Permission::WriteAcp => BucketPermission::WriteAcp,
            Permission::FullControl => BucketPermission::FullControl,
        },
    }
}

/// A bucket grant as S3's grant of an ACL document takes it.
pub fn object_grant(g: &BucketGrant) -> Grant {
    Grant {
        grantee: object_grantee(&g.grantee),
        permission: match g.permission {
            BucketPermission::Read => Permission::Read,
            BucketPermission::Write => Permission::Write,
            BucketPermission::ReadAcp => Permission::ReadAcp,
            BucketPermission::WriteAcp => Permission::WriteAcp,
            BucketPermission::FullControl => Permission::FullControl,
        },
    }
}

/// The bucket ACL a request's ACL headers ask for (its canned ACL and its grants); None without
/// ACL headers. S3's bucket canned ACLs: `private`, `public-read`, `public-read-write`,
/// `authenticated-read` (`log-delivery-write`, for S3's log delivery group, is
/// `NotImplemented`).
pub fn bucket_acl_of_headers(
    headers: &HeaderMap,
    state: &ManagerState,
) -> S3Result<Option<(BucketAcl, Vec<BucketGrant>)>> {
    if !has_acl_headers(headers) {
        return Ok(None);
    }
    if let Some(name) = canned_of(headers)? {
        return Ok(Some(match BucketAcl::parse(name) {
            Some(acl) => (acl, Vec::new()),
            None if name == "authenticated-read" => (
                BucketAcl::Private,
                vec![BucketGrant {
                    grantee: BucketGrantee::AuthenticatedUsers,
                    permission: BucketPermission::Read,
                }],
            ),
            None if name == "log-delivery-write" => {
                return Err(S3Error::with_message(
                    S3ErrorCode::NotImplemented,
                    "The canned ACL log-delivery-write grants to S3's log delivery group, which \
                     leofs does not have; the request is refused rather than accepted and ignored.",
                ));
            }
            None => return Err(invalid_argument(format!("Unknown canned ACL: {name:?}"))),
        }));
    }
    // Grants alone: the bucket owner keeps full control, nobody else has anything but them.
    let grants = grants_of_grant_headers(headers, state)?;
    Ok(Some((
        BucketAcl::Private,
        grants.iter().map(bucket_grant).collect(),
    )))
}

/// Whether `acl` lets `user` (None: anonymous) have `wanted` (the owner has everything).
pub fn acl_permits(acl: &ObjectAcl, user: Option<&str>, wanted: Permission) -> bool {
    if user.unwrap_or(ANONYMOUS_OWNER) == acl.owner {
        return true;
    }
    acl.grants.iter().any(|g| {
        let to_caller = match &g.grantee {
            Grantee::AllUsers => true,
            Grantee::AuthenticatedUsers => user.is_some(),
            Grantee::User(id) => user == Some(id.as_str()),
        };
        to_caller && g.permission.covers(wanted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use leofs_manager::{AccessKey, User};

    fn state() -> (ManagerState, Bucket) {
        let mut s = ManagerState::default();
        for user in ["owner", "bob"] {
            s.users.insert(
                user.into(),
                User {
                    id: user.into(),
                    is_admin: false,
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
        let bucket = Bucket {
            name: "b".into(),
            owner: "owner".into(),
            acl: BucketAcl::PublicRead,
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
        };
        (s, bucket)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn canned_and_granted_acls_mean_what_s3_means() {
        let (s, b) = state();
        let acl = acl_for_write(&HeaderMap::new(), Some("bob"), &b, &s).unwrap();
        assert_eq!(acl.owner, "bob");
        assert!(acl_permits(&acl, Some("bob"), Permission::FullControl));
        assert!(
            !acl_permits(&acl, None, Permission::Read),
            "private by default"
        );
        let acl = acl_for_write(&headers(&[("x-amz-acl", "public-read")]), None, &b, &s).unwrap();
        assert_eq!(
            acl.owner, ANONYMOUS_OWNER,
            "an anonymous write is the anonymous owner's"
        );
        assert!(
            acl_permits(&acl, None, Permission::ReadAcp),
            "anonymous requests own it"
        );
        assert!(!acl_permits(&acl, Some("bob"), Permission::ReadAcp));
        assert!(acl_permits(&acl, Some("bob"), Permission::Read));
        let acl = acl_for_write(
            &headers(&[("x-amz-acl", "authenticated-read")]),
            Some("owner"),
            &b,
            &s,
        )
        .unwrap();
        assert!(acl_permits(&acl, Some("bob"), Permission::Read));
        assert!(!acl_permits(&acl, None, Permission::Read));
        let acl = acl_for_write(
            &headers(&[("x-amz-acl", "bucket-owner-read")]),
            Some("bob"),
            &b,
            &s,
        )
        .unwrap();
        assert!(acl_permits(&acl, Some("owner"), Permission::Read));
        let acl = acl_for_write(
            &headers(&[
                (
                    "x-amz-grant-read",
                    "id=\"owner\", uri=\"http://acs.amazonaws.com/groups/global/AllUsers\"",
                ),
                ("x-amz-grant-write-acp", "emailAddress=bob"),
            ]),
            Some("owner"),
            &b,
            &s,
        )
        .unwrap();
        assert!(acl_permits(&acl, None, Permission::Read));
        assert!(acl_permits(&acl, Some("bob"), Permission::WriteAcp));
        assert!(!acl_permits(&acl, Some("bob"), Permission::ReadAcp));
        let code = |h: &[(&'static str, &str)]| {
            acl_for_write(&headers(h), Some("owner"), &b, &s)
                .unwrap_err()
                .code()
                .as_str()
                .to_owned()
        };
        assert_eq!(code(&[("x-amz-acl", "shared")]), "InvalidArgument");
        assert_eq!(code(&[("x-amz-acl", "aws-exec-read")]), "NotImplemented");
        assert_eq!(
            code(&[("x-amz-acl", "private"), ("x-amz-grant-read", "id=bob")]),
            "InvalidRequest"
        );
        assert_eq!(
            code(&[("x-amz-grant-read", "id=nobody")]),
            "InvalidArgument"
        );
        assert_eq!(
            code(&[("x-amz-grant-read", "emailAddress=a@b.c")]),
            "UnresolvableGrantByEmailAddress"
        );
        assert_eq!(
            code(&[("x-amz-grant-read", "uri=http://x/y")]),
            "InvalidArgument"
        );
        assert_eq!(code(&[("x-amz-grant-read", "id=")]), "InvalidArgument");
    }

    #[test]
    fn objects_without_an_acl_keep_their_buckets() {
        let (_, mut b) = state();
        let legacy = effective_acl(None, &b);
        assert_eq!(legacy.owner, "owner");
        assert!(acl_permits(&legacy, None, Permission::Read));
        b.acl = BucketAcl::Private;
        assert!(!acl_permits(
            &effective_acl(None, &b),
            None,
            Permission::Read
        ));
    }
}
