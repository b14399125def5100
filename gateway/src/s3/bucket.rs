//! Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation and
//! canned bucket ACLs (Get/PutBucketAcl). Bucket records live in the manager (changed on its own
//! thread); emptiness is `layout::bucket_content_prefixes`, the definition the admin API shares.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use leofs_manager::{BucketAcl, BucketGrant, BucketSetting};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::{access_key, require_bucket};
use crate::auth::caller_user;
use crate::error::GatewayError;
use crate::layout::{bucket_content_prefixes, bucket_id};
use crate::store::Ctx;

use crate::acl::ALL_USERS_URI;

fn caller(ctx: &Ctx, key: Option<&str>) -> Result<String, GatewayError> {
    caller_user(&ctx.manager.snapshot(), key).ok_or_else(|| match key {
        // Deleted since the signature was checked (through another node, on a copied catalog).
        Some(_) => GatewayError::s3(
            S3ErrorCode::InvalidAccessKeyId,
            "The AWS Access Key Id you provided does not exist in our records.",
        ),
        None => GatewayError::s3(S3ErrorCode::AccessDenied, "Access Denied"),
    })
}

/// ListBuckets: the buckets the caller owns (all buckets for an admin).
pub async fn list_buckets(
    ctx: &Ctx,
    req: S3Request<ListBucketsInput>,
) -> Result<S3Response<ListBucketsOutput>, GatewayError> {
    // A copied catalog is brought up to date first, so the list shows buckets created a moment
    // ago through another node.
    ctx.catalog.refresh().await?;
    let user = caller(ctx, access_key(&req))?;
    let state = ctx.manager.snapshot();
    let is_admin = state.user(&user).is_some_and(|u| u.is_admin);
    let prefix = req.input.prefix.as_deref().unwrap_or("");
    let buckets = state
        .buckets
        .values()
        .filter(|b| (is_admin || b.owner == user) && b.name.starts_with(prefix))
        .map(|b| Bucket {
            bucket_region: Some(ctx.config.region.clone()),
            creation_date: Some(Timestamp::from(
                SystemTime::UNIX_EPOCH + Duration::from_millis(b.created_unix_ms),
            )),
            name: Some(b.name.clone()),
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(Owner {
            display_name: Some(user.clone()),
            id: Some(user),
        }),
        ..Default::default()
    }))
}

/// The region where S3 answers a CreateBucket of a bucket its owner already has with 200.
const US_EAST_1: &str = "us-east-1";

/// A bucket's whole ACL: its canned ACL and its grants.
type WholeAcl = (BucketAcl, Vec<BucketGrant>);

/// Whether a CreateBucket of its owner's bucket `name` asks for nothing it does not have: the
/// bucket is not being deleted, and `acl` (None: none asked for) is its ACL.
fn recreated_as_it_is(ctx: &Ctx, name: &str, acl: Option<&WholeAcl>) -> bool {
    ctx.manager.with_snapshot(|state| {
        state.bucket(name).is_some_and(|b| {
            !b.deleting
                && acl.is_none_or(|(canned, grants)| *canned == b.acl && *grants == b.grants)
        })
    })
}

/// CreateBucket with the manager's naming rules and an optional canned ACL.
pub async fn create_bucket(
    ctx: &Ctx,
    req: S3Request<CreateBucketInput>,
) -> Result<S3Response<CreateBucketOutput>, GatewayError> {
    let user = caller(ctx, access_key(&req))?;
    let asked = crate::acl::bucket_acl_of_headers(&req.headers, &ctx.manager.snapshot())?;
    let input = req.input;
    leofs_manager::validate_new_bucket_name(&input.bucket)?;
    if let Some(constraint) = input
        .create_bucket_configuration
        .as_ref()
        .and_then(|c| c.location_constraint.as_ref())
        && !constraint.as_str().is_empty()
        && constraint.as_str() != ctx.config.region
    {
        return Err(GatewayError::s3(
            S3ErrorCode::IllegalLocationConstraintException,
            format!(
                "The {} location constraint is incompatible for the region specific endpoint this request was sent to.",
                constraint.as_str()
            ),
        ));
    }
    let canned = asked
        .as_ref()
        .map_or(BucketAcl::Private, |(canned, _)| *canned);
    match ctx
        .catalog
        .create_bucket(&input.bucket, &user, canned)
        .await
    {
        Ok(_) => {
            // Grants are set once the bucket exists (until then it has only its canned ACL,
            // which grants no more than the grants asked for).
            if let Some((canned, grants)) = asked.clone().filter(|(_, g)| !g.is_empty()) {
                ctx.catalog
                    .set_bucket_setting(&input.bucket, BucketSetting::Acl { canned, grants })
                    .await?;
            }
        }
        // S3's legacy answer in us-east-1: the owner's bucket is "created" again (200);
        // elsewhere BucketAlreadyOwnedByYou. S3 would also reset its ACL; here nothing changes,
        // so a request asking for another ACL than the bucket's gets BucketAlreadyOwnedByYou
        // rather than a 200 that ignored it (rclone, for one, creates the bucket it copies into
        // with `x-amz-acl: private` by default: a reset would close a public bucket).
        Err(leofs_manager::ManagerError::BucketAlreadyOwnedByYou(_))
            if ctx.config.region == US_EAST_1 =>
        {
            // This node's copy of the catalog may not hold the bucket yet (created through
            // another node a moment ago).
            if !ctx
                .manager
                .with_snapshot(|s| s.bucket(&input.bucket).is_some())
            {
                ctx.catalog.refresh().await?;
            }
            if !recreated_as_it_is(ctx, &input.bucket, asked.as_ref()) {
                return Err(
                    leofs_manager::ManagerError::BucketAlreadyOwnedByYou(input.bucket).into(),
                );
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{}", input.bucket)),
    }))
}

/// HeadBucket: 200 if it exists (access already checked), else 404.
pub async fn head_bucket(
    ctx: &Ctx,
    req: S3Request<HeadBucketInput>,
) -> Result<S3Response<HeadBucketOutput>, GatewayError> {
    require_bucket(ctx, &req.input.bucket)?;
    Ok(S3Response::new(HeadBucketOutput {
        bucket_region: Some(ctx.config.region.clone()),
        ..Default::default()
    }))
}

/// DeleteBucket: refused with BucketNotEmpty while the bucket holds an object or a multipart
/// upload in progress (`layout::bucket_content_prefixes`, shared with the admin API).
pub async fn delete_bucket(
    ctx: &Ctx,
    req: S3Request<DeleteBucketInput>,
) -> Result<S3Response<DeleteBucketOutput>, GatewayError> {
    let name = req.input.bucket;
    let record = require_bucket(ctx, &name)?;
    let bucket = bucket_id(&record);
    // A quick answer for the usual non-empty bucket; a bucket already marked (a deletion cut
    // off between its phases) goes to the manager, which finishes it or takes the mark away.
    let prefixes = bucket_content_prefixes(&bucket)
        .into_iter()
        .filter(|_| !record.deleting);
    for prefix in prefixes {
        let any = ctx
            .storage
            .for_bucket(&bucket)
            .scan(Bytes::from(prefix), None, 1)
            .await?;
        if !any.is_empty() {
            return Err(GatewayError::s3(
                S3ErrorCode::BucketNotEmpty,
                "The bucket you tried to delete is not empty (objects, or multipart uploads in progress)",
            ));
        }
    }
    // Two phases (the manager checks again where the data lives once every gateway refuses
    // writes into the bucket); only the incarnation checked here: one created again stays.
    ctx.catalog
        .mark_bucket_deleting(&name, record.incarnation)
        .await?;
    ctx.catalog.delete_bucket(&name, record.incarnation).await?;
    Ok(S3Response::new(DeleteBucketOutput {}))
}

/// GetBucketLocation: empty for us-east-1 (S3's convention), else the configured region.
pub async fn get_bucket_location(
    ctx: &Ctx,
    req: S3Request<GetBucketLocationInput>,
) -> Result<S3Response<GetBucketLocationOutput>, GatewayError> {
    require_bucket(ctx, &req.input.bucket)?;
    let region = &ctx.config.region;
    let location_constraint = if region == "us-east-1" {
        None
    } else {
        Some(BucketLocationConstraint::from(region.clone()))
    };
    Ok(S3Response::new(GetBucketLocationOutput {
        location_constraint,
    }))
}

/// GetBucketAcl: the owner's FULL_CONTROL plus AllUsers READ/WRITE per the canned ACL.
pub async fn get_bucket_acl(
    ctx: &Ctx,
    req: S3Request<GetBucketAclInput>,
) -> Result<S3Response<GetBucketAclOutput>, GatewayError> {
    let bucket = require_bucket(ctx, &req.input.bucket)?;
    let owner = super::owner_of(&bucket);
    let mut grants = vec![Grant {
        grantee: Some(Grantee {
            display_name: owner.display_name.clone(),
            email_address: None,
            id: owner.id.clone(),
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }];
    let all_users = |perm: &'static str| Grant {
        grantee: Some(Grantee {
            display_name: None,
            email_address: None,
            id: None,
            type_: Type::from_static(Type::GROUP),
            uri: Some(ALL_USERS_URI.into()),
        }),
        permission: Some(Permission::from_static(perm)),
    };
    match bucket.acl {
        BucketAcl::Private => {}
        BucketAcl::PublicRead => grants.push(all_users(Permission::READ)),
        BucketAcl::PublicReadWrite => {
            grants.push(all_users(Permission::READ));
            grants.push(all_users(Permission::WRITE));
        }
    }
    let own = leofs_shard::object::ObjectAcl {
        owner: bucket.owner.clone(),
        grants: bucket.grants.iter().map(crate::acl::object_grant).collect(),
    };
    grants.extend(super::object_acl::grants_of(&own).1.into_iter().skip(1));
    Ok(S3Response::new(GetBucketAclOutput {
        grants: Some(grants),
        owner: Some(owner),
    }))
}

/// PutBucketAcl: a canned ACL, grant headers or an AccessControlPolicy document (exactly one of
/// them), replacing the bucket's whole ACL at once.
pub async fn put_bucket_acl(
    ctx: &Ctx,
    req: S3Request<PutBucketAclInput>,
) -> Result<S3Response<PutBucketAclOutput>, GatewayError> {
    let input = &req.input;
    let bucket = require_bucket(ctx, &input.bucket)?;
    let (canned, grants) = crate::acl::with_fresh_grantees(ctx, |state| {
        whole_acl_asked(&req.headers, input, &bucket.owner, state)
    })
    .await?;
    ctx.catalog
        .set_bucket_setting(&input.bucket, BucketSetting::Acl { canned, grants })
        .await?;
    Ok(S3Response::new(PutBucketAclOutput {}))
}

/// The whole ACL a PutBucketAcl asks for, by its headers or its document.
fn whole_acl_asked(
    headers: &http::HeaderMap,
    input: &PutBucketAclInput,
    owner: &str,
    state: &leofs_manager::ManagerState,
) -> Result<WholeAcl, GatewayError> {
    let by_headers = crate::acl::bucket_acl_of_headers(headers, state)?;
    Ok(match (by_headers, &input.access_control_policy) {
        (Some(_), Some(_)) => {
            return Err(GatewayError::s3(
                S3ErrorCode::UnexpectedContent,
                "This request does not support content beside ACL headers",
            ));
        }
        (None, None) => {
            return Err(GatewayError::s3(
                S3ErrorCode::MissingSecurityHeader,
                "Your request was missing a required header: x-amz-acl, x-amz-grant-* or an AccessControlPolicy document",
            ));
        }
        (Some(asked), None) => asked,
        (None, Some(document)) => {
            let grants = super::object_acl::grants_of_document(document, owner, state)?;
            (
                BucketAcl::Private,
                grants.iter().map(crate::acl::bucket_grant).collect(),
            )
        }
    })
}
