//! Get/PutObjectAcl, and the reads that an object's ACL judges (GetObject, HeadObject,
//! GetObjectAttributes and the ACL operations themselves, by anyone but the bucket owner and the
//! admins; see [`crate::acl`]). A PutObjectAcl changes the object's ACL as a tag change changes
//! its tags ([`super::tagging::rewrite_headers`]).

use http::HeaderMap;
use leofs_manager::ManagerState;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::{require_bucket, versions};
use crate::acl::{ALL_USERS_URI, AUTHENTICATED_USERS_URI};
use crate::auth::{Access, Requester, authorize_object, hide_missing};
use crate::error::GatewayError;
use crate::layout::{self, BucketId, bucket_id};
use crate::store::{Ctx, StoredObject};

/// A request's requester, kept apart from the request (operations take its input apart).
pub struct RequesterOf {
    access_key: Option<String>,
    source_ip: Option<std::net::IpAddr>,
    headers: HeaderMap,
}

impl RequesterOf {
    /// The requester of `req`, and its input (the headers are moved here, not copied).
    pub fn split<T>(req: S3Request<T>) -> (Self, T) {
        let r = Requester::of(&req);
        let (access_key, source_ip) = (r.access_key.map(str::to_owned), r.source_ip);
        let who = RequesterOf {
            access_key,
            source_ip,
            headers: req.headers,
        };
        (who, req.input)
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// As the access checks take it.
    pub fn requester(&self) -> Requester<'_> {
        Requester {
            access_key: self.access_key.as_deref(),
            source_ip: self.source_ip,
            headers: Some(&self.headers),
        }
    }
}

/// Reads what `op` (an object-ACL operation) names and checks that `who` may have it: a
/// missing object is `NoSuchKey` only for a requester who may list the bucket.
#[allow(clippy::too_many_arguments)]
pub async fn read_object_as(
    ctx: &Ctx,
    who: &RequesterOf,
    op: &str,
    bucket_name: &str,
    bucket: &BucketId,
    key: &str,
    version_id: Option<&str>,
    head: bool,
) -> Result<(StoredObject, Option<String>), GatewayError> {
    let access = Access {
        versioned: version_id.is_some(),
        ..Access::new(op, who.requester(), Some(bucket_name), Some(key))
    };
    let read = versions::read_object(ctx, bucket, key, version_id, head).await;
    let state = ctx.manager.snapshot();
    let (obj, id) = read.map_err(|e| hide_missing(&state, &access, e))?;
    authorize_object(&state, &access, obj.meta.headers.acl.as_ref())?;
    Ok((obj, id))
}

fn user_grantee(id: &str) -> Grantee {
    Grantee {
        display_name: Some(id.to_owned()),
        email_address: None,
        id: Some(id.to_owned()),
        type_: Type::from_static(Type::CANONICAL_USER),
        uri: None,
    }
}

fn group_grantee(uri: &str) -> Grantee {
    Grantee {
        display_name: None,
        email_address: None,
        id: None,
        type_: Type::from_static(Type::GROUP),
        uri: Some(uri.to_owned()),
    }
}

fn permission_name(p: layout::Permission) -> &'static str {
    match p {
        layout::Permission::Read => Permission::READ,
        layout::Permission::Write => Permission::WRITE,
        layout::Permission::ReadAcp => Permission::READ_ACP,
        layout::Permission::WriteAcp => Permission::WRITE_ACP,
        layout::Permission::FullControl => Permission::FULL_CONTROL,
    }
}

/// The S3 form of an ACL: the owner's FULL_CONTROL first, then its grants.
pub fn grants_of(acl: &layout::ObjectAcl) -> (Owner, Vec<Grant>) {
    let id = crate::acl::presented_id(&acl.owner);
    let name = if acl.owner == crate::acl::ANONYMOUS_OWNER {
        "anonymous"
    } else {
        id
    };
    let owner = Owner {
        display_name: Some(name.to_owned()),
        id: Some(id.to_owned()),
    };
    let mut grants = vec![Grant {
        grantee: Some(Grantee {
            display_name: Some(name.to_owned()),
            ..user_grantee(id)
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }];
    for g in &acl.grants {
        let grantee = match &g.grantee {
            layout::Grantee::User(id) => user_grantee(id),
            layout::Grantee::AllUsers => group_grantee(ALL_USERS_URI),
            layout::Grantee::AuthenticatedUsers => group_grantee(AUTHENTICATED_USERS_URI),
        };
        grants.push(Grant {
            grantee: Some(grantee),
            permission: Some(Permission::from_static(permission_name(g.permission))),
        });
    }
    (owner, grants)
}

fn malformed_acl(message: impl Into<String>) -> GatewayError {
    GatewayError::s3(S3ErrorCode::MalformedACLError, message)
}

/// The grants of a Put{Object,Bucket}Acl document for what `owner` owns (the owner's own
/// FULL_CONTROL is implied and not kept).
pub fn grants_of_document(
    policy: &AccessControlPolicy,
    owner: &str,
    state: &ManagerState,
) -> Result<Vec<layout::Grant>, GatewayError> {
    if let Some(id) = policy.owner.as_ref().and_then(|o| o.id.as_deref())
        && id != crate::acl::presented_id(owner)
    {
        return Err(GatewayError::s3(
            S3ErrorCode::InvalidArgument,
            "The owner cannot be changed: the document's Owner must be the current owner",
        ));
    }
    let mut out = Vec::new();
    for grant in policy.grants.as_deref().unwrap_or_default() {
        let (Some(grantee), Some(permission)) = (&grant.grantee, &grant.permission) else {
            return Err(malformed_acl("A Grant needs a Grantee and a Permission"));
        };
        let permission = match permission.as_str() {
            Permission::READ => layout::Permission::Read,
            Permission::WRITE => layout::Permission::Write,
            Permission::READ_ACP => layout::Permission::ReadAcp,
            Permission::WRITE_ACP => layout::Permission::WriteAcp,
            Permission::FULL_CONTROL => layout::Permission::FullControl,
            other => return Err(malformed_acl(format!("Unknown permission {other}"))),
        };
        let (kind, value) = match grantee.type_.as_str() {
            Type::CANONICAL_USER => ("id", grantee.id.as_deref()),
            Type::GROUP => ("uri", grantee.uri.as_deref()),
            Type::AMAZON_CUSTOMER_BY_EMAIL => ("emailAddress", grantee.email_address.as_deref()),
            other => return Err(malformed_acl(format!("Unknown grantee type {other}"))),
        };
        let value = value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| malformed_acl(format!("A grantee of type {kind} needs its value")))?;
        let grantee = crate::acl::grantee_of(kind, value, state)?;
        if grantee == layout::Grantee::User(owner.to_owned())
            && permission == layout::Permission::FullControl
        {
            continue;
        }
        out.push(layout::Grant {
            grantee,
            permission,
        });
    }
    crate::acl::check_grant_count(&out)?;
    Ok(out)
}

/// GetObjectAcl (of the latest version, or of `versionId`).
pub async fn get_object_acl(
    ctx: &Ctx,
    req: S3Request<GetObjectAclInput>,
) -> Result<S3Response<GetObjectAclOutput>, GatewayError> {
    let (who, input) = RequesterOf::split(req);
    let bucket = require_bucket(ctx, &input.bucket)?;
    let (obj, _) = read_object_as(
        ctx,
        &who,
        "GetObjectAcl",
        &input.bucket,
        &bucket_id(&bucket),
        &input.key,
        input.version_id.as_deref(),
        true,
    )
    .await?;
    let acl = crate::acl::effective_acl(obj.meta.headers.acl.as_ref(), &bucket);
    let (owner, grants) = grants_of(&acl);
    Ok(S3Response::new(GetObjectAclOutput {
        grants: Some(grants),
        owner: Some(owner),
        request_charged: None,
    }))
}

/// PutObjectAcl: a canned ACL, grant headers or an AccessControlPolicy document (exactly one
/// of them), by the bucket owner, an admin, the object's owner or a holder of WRITE_ACP.
pub async fn put_object_acl(
    ctx: &Ctx,
    req: S3Request<PutObjectAclInput>,
) -> Result<S3Response<PutObjectAclOutput>, GatewayError> {
    let (who, input) = RequesterOf::split(req);
    let headers = who.headers();
    let bucket = require_bucket(ctx, &input.bucket)?;
    let id = bucket_id(&bucket);
    let by_headers = crate::acl::has_acl_headers(headers);
    match (by_headers, &input.access_control_policy) {
        (true, Some(_)) => {
            return Err(GatewayError::s3(
                S3ErrorCode::UnexpectedContent,
                "This request does not support content beside ACL headers",
            ));
        }
        (false, None) => {
            return Err(GatewayError::s3(
                S3ErrorCode::MissingSecurityHeader,
                "Your request was missing a required header: x-amz-acl, x-amz-grant-* or an AccessControlPolicy document",
            ));
        }
        _ => {}
    }
    let (obj, _) = read_object_as(
        ctx,
        &who,
        "PutObjectAcl",
        &input.bucket,
        &id,
        &input.key,
        input.version_id.as_deref(),
        true,
    )
    .await?;
    let owner = crate::acl::effective_acl(obj.meta.headers.acl.as_ref(), &bucket).owner;
    let grants = crate::acl::with_fresh_grantees(ctx, |state| {
        Ok(match &input.access_control_policy {
            Some(document) => grants_of_document(document, &owner, state)?,
            None => crate::acl::grants_of_headers(headers, &owner, &bucket, state)?,
        })
    })
    .await?;
    let acl = layout::ObjectAcl { owner, grants };
    super::tagging::rewrite_headers(
        ctx,
        &id,
        &input.key,
        input.version_id.as_deref(),
        Some(obj.stamps()),
        "ACL",
        |h| {
            let changed = h.acl.as_ref() != Some(&acl);
            h.acl = Some(acl.clone());
            changed
        },
    )
    .await?;
    Ok(S3Response::new(PutObjectAclOutput::default()))
}
