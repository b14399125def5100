//! Put/Get/DeleteBucketLifecycleConfiguration (shard/VERSIONING.md §10): a configuration is
//! checked as S3 checks it, reduced to the rules the lifecycle worker of every storage node
//! applies (`crate::lifecycle`), and kept with the bucket in the catalog. Filters select keys
//! by prefix and versions by tags (all of them) and size. What the worker cannot honour is
//! refused: transitions (there is one storage class).

use std::time::{Duration, SystemTime};

use leofs_manager::lifecycle::{
    Expiration, LIFECYCLE_RULES_MAX, LifecycleRule, NoncurrentExpiration,
};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::require_bucket;
use crate::error::GatewayError;
use crate::store::Ctx;

/// Longest rule id (S3's limit).
const RULE_ID_CHARS_MAX: usize = 255;
/// Most noncurrent versions a rule may keep (S3's limit).
const NEWER_NONCURRENT_VERSIONS_MAX: i32 = 100;
/// Milliseconds in a day.
const DAY_MS: u64 = 86_400_000;

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::s3(S3ErrorCode::InvalidArgument, message.into())
}

fn malformed(message: impl Into<String>) -> GatewayError {
    GatewayError::s3(S3ErrorCode::MalformedXML, message.into())
}

fn not_implemented(message: impl Into<String>) -> GatewayError {
    GatewayError::s3(S3ErrorCode::NotImplemented, message.into())
}

/// A positive number of days.
fn days_of(days: i32, what: &str) -> Result<u32, GatewayError> {
    u32::try_from(days).ok().filter(|d| *d > 0).ok_or_else(|| {
        invalid(format!(
            "'{what}' for a lifecycle rule must be a positive integer"
        ))
    })
}

/// A date of an expiration: midnight UTC, as ms since the Unix epoch.
fn date_of(date: &Timestamp) -> Result<u64, GatewayError> {
    let mut text = Vec::new();
    date.format(TimestampFormat::EpochSeconds, &mut text)
        .map_err(|_| invalid("Invalid date"))?;
    let seconds: f64 = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| invalid("Invalid date"))?;
    if !(0.0..=(u64::MAX / 1000) as f64).contains(&seconds) {
        return Err(invalid("Invalid date"));
    }
    let ms = (seconds * 1000.0) as u64;
    if !ms.is_multiple_of(DAY_MS) {
        return Err(invalid("'Date' must be at midnight GMT"));
    }
    Ok(ms)
}

/// What a rule's filter selects: keys under a prefix, versions carrying tags, of a size.
#[derive(Debug, Default)]
struct Selection {
    prefix: String,
    tags: Vec<(String, String)>,
    size_greater_than: Option<u64>,
    size_less_than: Option<u64>,
}

/// A size bound of a filter: not negative (`InvalidArgument`).
fn size_of(bytes: Option<i64>, what: &str) -> Result<Option<u64>, GatewayError> {
    bytes
        .map(|b| u64::try_from(b).map_err(|_| invalid(format!("'{what}' should not be negative"))))
        .transpose()
}

/// The tags a filter names, checked as object tags are.
fn tags_of(tags: &[Tag]) -> Result<Vec<(String, String)>, GatewayError> {
    let tags = super::tagging::pairs_of(tags);
    super::tagging::check_tags(&tags)?;
    Ok(tags)
}

/// What a rule selects: its `Filter` (one of Prefix, Tag, ObjectSizeGreaterThan,
/// ObjectSizeLessThan and And, or none: every key), or its older top-level `Prefix`.
fn selection_of(
    rule: &LifecycleRule_,
    filter: Option<&LifecycleRuleFilter>,
) -> Result<Selection, GatewayError> {
    let Some(filter) = filter else {
        return rule
            .prefix
            .clone()
            .map(|prefix| Selection {
                prefix,
                ..Selection::default()
            })
            .ok_or_else(|| malformed("A rule needs a Filter or a Prefix"));
    };
    if rule.prefix.is_some() {
        return Err(malformed("A rule names both a Prefix and a Filter"));
    }
    let given = usize::from(filter.prefix.is_some())
        + usize::from(filter.tag.is_some())
        + usize::from(filter.object_size_greater_than.is_some())
        + usize::from(filter.object_size_less_than.is_some())
        + usize::from(filter.and.is_some());
    if given > 1 {
        return Err(malformed(
            "A Filter names at most one of Prefix, Tag, ObjectSizeGreaterThan, ObjectSizeLessThan and And",
        ));
    }
    let selection = match &filter.and {
        Some(and) => Selection {
            prefix: and.prefix.clone().unwrap_or_default(),
            tags: tags_of(and.tags.as_deref().unwrap_or_default())?,
            size_greater_than: size_of(and.object_size_greater_than, "ObjectSizeGreaterThan")?,
            size_less_than: size_of(and.object_size_less_than, "ObjectSizeLessThan")?,
        },
        None => Selection {
            prefix: filter.prefix.clone().unwrap_or_default(),
            tags: tags_of(filter.tag.as_slice())?,
            size_greater_than: size_of(filter.object_size_greater_than, "ObjectSizeGreaterThan")?,
            size_less_than: size_of(filter.object_size_less_than, "ObjectSizeLessThan")?,
        },
    };
    if let (Some(min), Some(max)) = (selection.size_greater_than, selection.size_less_than)
        && min >= max
    {
        return Err(invalid(
            "ObjectSizeGreaterThan must be less than ObjectSizeLessThan",
        ));
    }
    Ok(selection)
}

/// The s3s rule type, named apart from the catalog's.
type LifecycleRule_ = s3s::dto::LifecycleRule;

/// Checks one S3 rule and reduces it to the catalog's.
fn rule_of(rule: &LifecycleRule_) -> Result<LifecycleRule, GatewayError> {
    let id = rule.id.clone().unwrap_or_default();
    if id.chars().count() > RULE_ID_CHARS_MAX {
        return Err(invalid("ID length should not exceed allowed limit of 255"));
    }
    let enabled = match rule.status.as_str() {
        ExpirationStatus::ENABLED => true,
        ExpirationStatus::DISABLED => false,
        _ => return Err(malformed("Status must be Enabled or Disabled")),
    };
    if rule.transitions.as_ref().is_some_and(|t| !t.is_empty())
        || rule
            .noncurrent_version_transitions
            .as_ref()
            .is_some_and(|t| !t.is_empty())
    {
        return Err(not_implemented(
            "Lifecycle transitions are not implemented by this node (there is one storage class)",
        ));
    }
    let selection = selection_of(rule, rule.filter.as_ref())?;
    let (mut expiration, mut expired_object_delete_marker) = (None, false);
    if let Some(e) = &rule.expiration {
        let given = usize::from(e.days.is_some())
            + usize::from(e.date.is_some())
            + usize::from(e.expired_object_delete_marker.is_some());
        if given != 1 {
            return Err(malformed(
                "An Expiration names exactly one of Days, Date and ExpiredObjectDeleteMarker",
            ));
        }
        if let Some(days) = e.days {
            expiration = Some(Expiration::Days(days_of(days, "Days")?));
        }
        if let Some(date) = &e.date {
            expiration = Some(Expiration::DateUnixMs(date_of(date)?));
        }
        expired_object_delete_marker = e.expired_object_delete_marker == Some(true);
    }
    let noncurrent = match &rule.noncurrent_version_expiration {
        None => None,
        Some(n) => {
            let days = days_of(
                n.noncurrent_days
                    .ok_or_else(|| malformed("NoncurrentVersionExpiration needs NoncurrentDays"))?,
                "NoncurrentDays",
            )?;
            let kept = match n.newer_noncurrent_versions {
                None => 0,
                Some(k) if (1..=NEWER_NONCURRENT_VERSIONS_MAX).contains(&k) => k.unsigned_abs(),
                Some(_) => {
                    return Err(invalid("NewerNoncurrentVersions must be between 1 and 100"));
                }
            };
            Some(NoncurrentExpiration {
                days,
                newer_versions_kept: kept,
            })
        }
    };
    let abort_incomplete_multipart_days = rule
        .abort_incomplete_multipart_upload
        .as_ref()
        .map(|a| {
            days_of(
                a.days_after_initiation.ok_or_else(|| {
                    malformed("AbortIncompleteMultipartUpload needs DaysAfterInitiation")
                })?,
                "DaysAfterInitiation",
            )
        })
        .transpose()?;
    if expiration.is_none()
        && !expired_object_delete_marker
        && noncurrent.is_none()
        && abort_incomplete_multipart_days.is_none()
    {
        return Err(invalid(
            "At least one action needs to be specified in a rule",
        ));
    }
    let rule = LifecycleRule {
        id,
        enabled,
        prefix: selection.prefix,
        expiration,
        expired_object_delete_marker,
        noncurrent,
        abort_incomplete_multipart_days,
        tags: selection.tags,
        size_greater_than: selection.size_greater_than,
        size_less_than: selection.size_less_than,
    };
    // A marker and an upload carry no tags and no size: such a rule could never act on them.
    if rule.filters_objects() {
        if rule.expired_object_delete_marker {
            return Err(invalid(
                "ExpiredObjectDeleteMarker cannot be specified with object tags or object sizes",
            ));
        }
        if rule.abort_incomplete_multipart_days.is_some() {
            return Err(invalid(
                "AbortIncompleteMultipartUpload cannot be specified with object tags or object sizes",
            ));
        }
    }
    Ok(rule)
}

/// Checks a whole configuration (ids unique, at most [`LIFECYCLE_RULES_MAX`] rules).
pub fn rules_of(config: &BucketLifecycleConfiguration) -> Result<Vec<LifecycleRule>, GatewayError> {
    if config.rules.is_empty() {
        return Err(malformed(
            "A lifecycle configuration needs at least one rule",
        ));
    }
    if config.rules.len() > LIFECYCLE_RULES_MAX {
        return Err(invalid(
            "A lifecycle configuration holds at most 1000 rules",
        ));
    }
    let mut rules: Vec<LifecycleRule> = Vec::with_capacity(config.rules.len());
    for (n, rule) in config.rules.iter().enumerate() {
        let mut rule = rule_of(rule)?;
        if rule.id.is_empty() {
            // S3 names a rule without an id itself.
            rule.id = format!("rule-{}", n + 1);
        }
        if rules.iter().any(|r| r.id == rule.id) {
            return Err(invalid(
                "Rule ID must be unique. Found same ID for more than one rule",
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// The S3 form of a rule's selection: its one condition alone, or an And of them.
fn filter_of(rule: &LifecycleRule) -> LifecycleRuleFilter {
    let size_greater_than = rule
        .size_greater_than
        .map(|b| i64::try_from(b).unwrap_or(i64::MAX));
    let size_less_than = rule
        .size_less_than
        .map(|b| i64::try_from(b).unwrap_or(i64::MAX));
    let tags = super::tagging::tag_set_of(&rule.tags);
    let conditions = usize::from(!rule.prefix.is_empty())
        + tags.len()
        + usize::from(size_greater_than.is_some())
        + usize::from(size_less_than.is_some());
    if conditions > 1 {
        return LifecycleRuleFilter {
            and: Some(LifecycleRuleAndOperator {
                prefix: (!rule.prefix.is_empty()).then(|| rule.prefix.clone()),
                tags: (!tags.is_empty()).then_some(tags),
                object_size_greater_than: size_greater_than,
                object_size_less_than: size_less_than,
            }),
            ..Default::default()
        };
    }
    match tags.into_iter().next() {
        Some(tag) => LifecycleRuleFilter {
            tag: Some(tag),
            ..Default::default()
        },
        None if size_greater_than.is_some() || size_less_than.is_some() => LifecycleRuleFilter {
            object_size_greater_than: size_greater_than,
            object_size_less_than: size_less_than,
            ..Default::default()
        },
        None => LifecycleRuleFilter {
            prefix: Some(rule.prefix.clone()),
            ..Default::default()
        },
    }
}

/// The S3 form of a catalog rule.
fn dto_of(rule: &LifecycleRule) -> LifecycleRule_ {
    LifecycleRule_ {
        id: Some(rule.id.clone()),
        status: ExpirationStatus::from_static(if rule.enabled {
            ExpirationStatus::ENABLED
        } else {
            ExpirationStatus::DISABLED
        }),
        filter: Some(filter_of(rule)),
        expiration: match (rule.expiration, rule.expired_object_delete_marker) {
            (None, false) => None,
            (expiration, marker) => Some(LifecycleExpiration {
                days: match expiration {
                    Some(Expiration::Days(d)) => i32::try_from(d).ok(),
                    _ => None,
                },
                date: match expiration {
                    Some(Expiration::DateUnixMs(ms)) => Some(Timestamp::from(
                        SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
                    )),
                    _ => None,
                },
                expired_object_delete_marker: marker.then_some(true),
            }),
        },
        noncurrent_version_expiration: rule.noncurrent.map(|n| NoncurrentVersionExpiration {
            noncurrent_days: i32::try_from(n.days).ok(),
            newer_noncurrent_versions: (n.newer_versions_kept > 0)
                .then(|| i32::try_from(n.newer_versions_kept).ok())
                .flatten(),
        }),
        abort_incomplete_multipart_upload: rule.abort_incomplete_multipart_days.map(|d| {
            AbortIncompleteMultipartUpload {
                days_after_initiation: i32::try_from(d).ok(),
            }
        }),
        noncurrent_version_transitions: None,
        prefix: None,
        transitions: None,
    }
}

/// PutBucketLifecycleConfiguration.
pub async fn put_bucket_lifecycle_configuration(
    ctx: &Ctx,
    req: S3Request<PutBucketLifecycleConfigurationInput>,
) -> Result<S3Response<PutBucketLifecycleConfigurationOutput>, GatewayError> {
    let input = req.input;
    require_bucket(ctx, &input.bucket)?;
    // `x-amz-transition-default-minimum-object-size` only bounds transitions, which no rule
    // here can have (they are refused): it holds whatever it says.
    let config = input
        .lifecycle_configuration
        .ok_or_else(|| malformed("The lifecycle configuration is missing"))?;
    let rules = rules_of(&config)?;
    ctx.catalog
        .set_bucket_lifecycle(&input.bucket, rules)
        .await?;
    Ok(S3Response::new(
        PutBucketLifecycleConfigurationOutput::default(),
    ))
}

/// GetBucketLifecycleConfiguration: `NoSuchLifecycleConfiguration` (404) when there is none.
pub async fn get_bucket_lifecycle_configuration(
    ctx: &Ctx,
    req: S3Request<GetBucketLifecycleConfigurationInput>,
) -> Result<S3Response<GetBucketLifecycleConfigurationOutput>, GatewayError> {
    let bucket = require_bucket(ctx, &req.input.bucket)?;
    if bucket.lifecycle.is_empty() {
        return Err(GatewayError::s3(
            S3ErrorCode::NoSuchLifecycleConfiguration,
            "The lifecycle configuration does not exist",
        ));
    }
    Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
        rules: Some(bucket.lifecycle.iter().map(dto_of).collect()),
        ..Default::default()
    }))
}

/// DeleteBucketLifecycle (204 whether or not there was a configuration).
pub async fn delete_bucket_lifecycle(
    ctx: &Ctx,
    req: S3Request<DeleteBucketLifecycleInput>,
) -> Result<S3Response<DeleteBucketLifecycleOutput>, GatewayError> {
    let bucket = require_bucket(ctx, &req.input.bucket)?;
    if !bucket.lifecycle.is_empty() {
        ctx.catalog
            .set_bucket_lifecycle(&req.input.bucket, Vec::new())
            .await?;
    }
    Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
}
