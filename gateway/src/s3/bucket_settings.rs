//! Bucket settings kept with the bucket in the catalog (Raft; in effect on every gateway within
//! a second): Put/Get/DeleteBucketTagging, Put/Get/DeleteBucketCors and Put/Get/
//! DeleteBucketPolicy (with GetBucketPolicyStatus), with S3's checks. The CORS rules are applied
//! by [`crate::cors`] in front of every S3 request, the policy by [`crate::auth::authorize`]
//! before every operation.

use leofs_manager::BucketSetting;
use leofs_manager::cors::{CORS_METHODS, CORS_RULES_MAX, CorsRule};
use leofs_manager::policy::{BucketPolicy, PolicyError};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::require_bucket;
use crate::error::GatewayError;
use crate::store::Ctx;

/// Most tags one bucket carries (S3's limit).
pub const BUCKET_TAGS_MAX: usize = 50;
/// Largest CORS configuration, in bytes of the rules as the catalog keeps them (S3's limit on
/// the document is 64 KB); it bounds the Raft entry, the wire frame that forwards it and the
/// work of every preflight.
pub const CORS_CONFIGURATION_BYTES_MAX: usize = 64 * 1024;

/// PutBucketTagging: replaces the bucket's tag set.
pub async fn put_bucket_tagging(
    ctx: &Ctx,
    req: S3Request<PutBucketTaggingInput>,
) -> Result<S3Response<PutBucketTaggingOutput>, GatewayError> {
    let input = req.input;
    require_bucket(ctx, &input.bucket)?;
    let tags = super::tagging::pairs_of(&input.tagging.tag_set);
    super::tagging::check_tag_set(
        &tags,
        BUCKET_TAGS_MAX,
        "Bucket tag count cannot be greater than 50",
    )?;
    ctx.catalog
        .set_bucket_setting(&input.bucket, BucketSetting::Tags(tags))
        .await?;
    Ok(S3Response::new(PutBucketTaggingOutput::default()))
}

/// GetBucketTagging: `NoSuchTagSet` (404) when the bucket has no tags.
pub async fn get_bucket_tagging(
    ctx: &Ctx,
    req: S3Request<GetBucketTaggingInput>,
) -> Result<S3Response<GetBucketTaggingOutput>, GatewayError> {
    let bucket = require_bucket(ctx, &req.input.bucket)?;
    if bucket.tags.is_empty() {
        return Err(GatewayError::s3(
            S3ErrorCode::NoSuchTagSet,
            "The TagSet does not exist",
        ));
    }
    Ok(S3Response::new(GetBucketTaggingOutput {
        tag_set: super::tagging::tag_set_of(&bucket.tags),
    }))
}

/// DeleteBucketTagging.
pub async fn delete_bucket_tagging(
    ctx: &Ctx,
    req: S3Request<DeleteBucketTaggingInput>,
) -> Result<S3Response<DeleteBucketTaggingOutput>, GatewayError> {
    require_bucket(ctx, &req.input.bucket)?;
    ctx.catalog
        .set_bucket_setting(&req.input.bucket, BucketSetting::Tags(Vec::new()))
        .await?;
    Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
}

fn invalid_cors(message: impl Into<String>) -> GatewayError {
    GatewayError::s3(S3ErrorCode::InvalidRequest, message)
}

/// Checks one S3 CORS rule as S3 does and reduces it to the catalog's.
fn cors_rule_of(rule: &CORSRule) -> Result<CorsRule, GatewayError> {
    if rule.allowed_methods.is_empty() || rule.allowed_origins.is_empty() {
        return Err(GatewayError::s3(
            S3ErrorCode::MalformedXML,
            "A CORS rule needs at least one AllowedMethod and one AllowedOrigin",
        ));
    }
    if let Some(method) = rule
        .allowed_methods
        .iter()
        .find(|m| !CORS_METHODS.contains(&m.as_str()))
    {
        return Err(invalid_cors(format!(
            "Found unsupported HTTP method in CORS config. Unsupported method is {method}"
        )));
    }
    if let Some(origin) = rule
        .allowed_origins
        .iter()
        .find(|o| o.matches('*').count() > 1)
    {
        return Err(invalid_cors(format!(
            "AllowedOrigin \"{origin}\" can not have more than one wildcard."
        )));
    }
    let expose_headers = rule.expose_headers.clone().unwrap_or_default();
    if let Some(header) = expose_headers
        .iter()
        .find(|h| *h == "*" || http::HeaderName::from_bytes(h.as_bytes()).is_err())
    {
        return Err(invalid_cors(format!(
            "ExposeHeader \"{header}\" contains wildcard. We currently do not support wildcard for ExposeHeader."
        )));
    }
    let allowed_headers = rule.allowed_headers.clone().unwrap_or_default();
    if let Some(header) = allowed_headers.iter().find(|h| h.matches('*').count() > 1) {
        return Err(invalid_cors(format!(
            "AllowedHeader \"{header}\" can not have more than one wildcard."
        )));
    }
    if rule.id.as_ref().is_some_and(|id| id.chars().count() > 255) {
        return Err(GatewayError::s3(
            S3ErrorCode::InvalidArgument,
            "ID length should not exceed allowed limit of 255",
        ));
    }
    Ok(CorsRule {
        id: rule.id.clone().filter(|id| !id.is_empty()),
        allowed_origins: rule.allowed_origins.clone(),
        allowed_methods: rule.allowed_methods.clone(),
        allowed_headers,
        expose_headers,
        max_age_seconds: rule.max_age_seconds,
    })
}

/// PutBucketCors: replaces the bucket's CORS rules (1 to [`CORS_RULES_MAX`]).
pub async fn put_bucket_cors(
    ctx: &Ctx,
    req: S3Request<PutBucketCorsInput>,
) -> Result<S3Response<PutBucketCorsOutput>, GatewayError> {
    let input = req.input;
    require_bucket(ctx, &input.bucket)?;
    let rules = &input.cors_configuration.cors_rules;
    if rules.is_empty() {
        return Err(GatewayError::s3(
            S3ErrorCode::MalformedXML,
            "A CORS configuration needs at least one CORSRule",
        ));
    }
    if rules.len() > CORS_RULES_MAX {
        return Err(invalid_cors("A CORS configuration holds at most 100 rules"));
    }
    let rules = rules
        .iter()
        .map(cors_rule_of)
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = serde_json::to_vec(&rules).map_or(usize::MAX, |json| json.len());
    if bytes > CORS_CONFIGURATION_BYTES_MAX {
        return Err(invalid_cors(format!(
            "The CORS configuration is {bytes} bytes long; at most {CORS_CONFIGURATION_BYTES_MAX} are allowed"
        )));
    }
    ctx.catalog
        .set_bucket_setting(&input.bucket, BucketSetting::Cors(rules))
        .await?;
    Ok(S3Response::new(PutBucketCorsOutput::default()))
}

/// GetBucketCors: `NoSuchCORSConfiguration` (404) when the bucket has none.
pub async fn get_bucket_cors(
    ctx: &Ctx,
    req: S3Request<GetBucketCorsInput>,
) -> Result<S3Response<GetBucketCorsOutput>, GatewayError> {
    let bucket = require_bucket(ctx, &req.input.bucket)?;
    if bucket.cors.is_empty() {
        return Err(GatewayError::s3(
            S3ErrorCode::NoSuchCORSConfiguration,
            "The CORS configuration does not exist",
        ));
    }
    let rules = bucket
        .cors
        .iter()
        .map(|rule| CORSRule {
            allowed_headers: (!rule.allowed_headers.is_empty())
                .then(|| rule.allowed_headers.clone()),
            allowed_methods: rule.allowed_methods.clone(),
            allowed_origins: rule.allowed_origins.clone(),
            expose_headers: (!rule.expose_headers.is_empty()).then(|| rule.expose_headers.clone()),
            id: rule.id.clone(),
            max_age_seconds: rule.max_age_seconds,
        })
        .collect();
    Ok(S3Response::new(GetBucketCorsOutput {
        cors_rules: Some(rules),
    }))
}

/// DeleteBucketCors.
pub async fn delete_bucket_cors(
    ctx: &Ctx,
    req: S3Request<DeleteBucketCorsInput>,
) -> Result<S3Response<DeleteBucketCorsOutput>, GatewayError> {
    require_bucket(ctx, &req.input.bucket)?;
    ctx.catalog
        .set_bucket_setting(&req.input.bucket, BucketSetting::Cors(Vec::new()))
        .await?;
    Ok(S3Response::new(DeleteBucketCorsOutput::default()))
}

fn no_such_policy() -> GatewayError {
    GatewayError::s3(
        S3ErrorCode::NoSuchBucketPolicy,
        "The bucket policy does not exist",
    )
}

/// PutBucketPolicy: the policy is parsed and checked whole (`MalformedPolicy`, or
/// `NotImplemented` for what leofs does not evaluate) before the catalog takes it.
pub async fn put_bucket_policy(
    ctx: &Ctx,
    req: S3Request<PutBucketPolicyInput>,
) -> Result<S3Response<PutBucketPolicyOutput>, GatewayError> {
    let input = req.input;
    require_bucket(ctx, &input.bucket)?;
    if input.confirm_remove_self_bucket_access == Some(true) {
        // The owner can always change the policy here; the confirmation would mean nothing.
        return Err(GatewayError::s3(
            S3ErrorCode::NotImplemented,
            "x-amz-confirm-remove-self-bucket-access is not supported: the bucket owner can \
             always change the bucket's policy",
        ));
    }
    let refused = |e: PolicyError| match e {
        PolicyError::Malformed(m) => GatewayError::s3(S3ErrorCode::MalformedPolicy, m),
        PolicyError::Unsupported(m) => GatewayError::s3(S3ErrorCode::NotImplemented, m),
    };
    let policy = BucketPolicy::parse(&input.policy).map_err(refused)?;
    let named_users_exist = || {
        let state = ctx.manager.snapshot();
        policy.check_for(&input.bucket, |user| state.user(user).is_some())
    };
    if named_users_exist().is_err() {
        // A user created a moment ago through another node: look again once the copied
        // catalog is up to date.
        ctx.catalog.refresh().await?;
    }
    named_users_exist().map_err(refused)?;
    ctx.catalog
        .set_bucket_setting(&input.bucket, BucketSetting::Policy(Some(policy)))
        .await?;
    Ok(S3Response::new(PutBucketPolicyOutput::default()))
}

/// GetBucketPolicy: the document as it was put; `NoSuchBucketPolicy` (404) without one.
pub async fn get_bucket_policy(
    ctx: &Ctx,
    req: S3Request<GetBucketPolicyInput>,
) -> Result<S3Response<GetBucketPolicyOutput>, GatewayError> {
    let bucket = require_bucket(ctx, &req.input.bucket)?;
    let policy = bucket.policy.as_ref().ok_or_else(no_such_policy)?;
    Ok(S3Response::new(GetBucketPolicyOutput {
        policy: Some(policy.document().to_owned()),
    }))
}

/// DeleteBucketPolicy (204 whether or not there was one, as S3).
pub async fn delete_bucket_policy(
    ctx: &Ctx,
    req: S3Request<DeleteBucketPolicyInput>,
) -> Result<S3Response<DeleteBucketPolicyOutput>, GatewayError> {
    require_bucket(ctx, &req.input.bucket)?;
    ctx.catalog
        .set_bucket_setting(&req.input.bucket, BucketSetting::Policy(None))
        .await?;
    Ok(S3Response::new(DeleteBucketPolicyOutput::default()))
}

/// GetBucketPolicyStatus: whether the policy grants anything to everyone;
/// `NoSuchBucketPolicy` without one.
pub async fn get_bucket_policy_status(
    ctx: &Ctx,
    req: S3Request<GetBucketPolicyStatusInput>,
) -> Result<S3Response<GetBucketPolicyStatusOutput>, GatewayError> {
    let bucket = require_bucket(ctx, &req.input.bucket)?;
    let policy = bucket.policy.as_ref().ok_or_else(no_such_policy)?;
    Ok(S3Response::new(GetBucketPolicyStatusOutput {
        policy_status: Some(PolicyStatus {
            is_public: Some(policy.is_public()),
        }),
    }))
}
