//! Object tagging (S3): tags given with `x-amz-tagging` on PutObject, CopyObject (with the
//! tagging directive) and CreateMultipartUpload, and Get/Put/DeleteObjectTagging. Tags are
//! kept in the object's manifest (shard/FORMAT.md §3), so they are replicated, repaired and
//! collected with it, and the lifecycle worker can filter on them.
//!
//! Put/DeleteObjectTagging rewrite the object record with the new tags and the same body (its
//! chunks are referenced by the new manifest, so nothing is copied or collected), under the
//! precondition that the record is still the one read (`WriteCondition::if_latest`): a write
//! racing the change makes it read and try again, never revert the write. The rewrite is a new
//! record, so the object's Last-Modified becomes the time of the change (S3 keeps it). In a
//! bucket that has had versioning, a version is never rewritten (shard/VERSIONING.md §5): its
//! changed tags (and ACL) go to an attribute record of its own (§10a), under the precondition
//! that the version is live and its attribute record is still the one read, and every read of
//! the version takes them from there; its Last-Modified stays.

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::{require_bucket_id, versions};
use crate::error::GatewayError;
use crate::layout::{BucketId, MAX_OBJECT_TAGS, VersionAttributes, Versioning};
use crate::store::{Ctx, RecordStamps};

/// Longest tag key, in Unicode characters (S3's limit).
pub const TAG_KEY_CHARS_MAX: usize = 128;
/// Longest tag value, in Unicode characters (S3's limit).
pub const TAG_VALUE_CHARS_MAX: usize = 256;
/// Times a change of an object's tags or ACL is tried when writes to the object keep replacing
/// it under the change.
const TAG_CHANGE_ATTEMPTS_MAX: usize = 5;

fn invalid_tag(message: impl Into<String>) -> GatewayError {
    GatewayError::s3(S3ErrorCode::InvalidTag, message)
}

/// Checks a tag set as S3 does (`InvalidTag`): at most [`MAX_OBJECT_TAGS`] tags, keys of 1 to
/// [`TAG_KEY_CHARS_MAX`] characters not starting with `aws:`, values of at most
/// [`TAG_VALUE_CHARS_MAX`], unique keys. (Characters are not checked beyond UTF-8: S3's
/// documented set is letters, digits, spaces and `+ - = . _ : / @`, but refusing more than S3
/// does would fail writes S3 takes.)
pub fn check_tags(tags: &[(String, String)]) -> Result<(), GatewayError> {
    check_tag_set(
        tags,
        MAX_OBJECT_TAGS,
        "Object tags cannot be greater than 10",
    )
}

/// Checks a tag set of at most `max` tags (`too_many` otherwise) as [`check_tags`] checks an
/// object's (a bucket's tag set has a limit of its own).
pub fn check_tag_set(
    tags: &[(String, String)],
    max: usize,
    too_many: &'static str,
) -> Result<(), GatewayError> {
    if tags.len() > max {
        return Err(invalid_tag(too_many));
    }
    for (n, (key, value)) in tags.iter().enumerate() {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > TAG_KEY_CHARS_MAX {
            return Err(invalid_tag("The TagKey you have provided is invalid"));
        }
        if value.chars().count() > TAG_VALUE_CHARS_MAX {
            return Err(invalid_tag("The TagValue you have provided is invalid"));
        }
        if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(invalid_tag("Your TagKey cannot be prefixed with aws:"));
        }
        if tags[..n].iter().any(|(k, _)| k == key) {
            return Err(invalid_tag(
                "Cannot provide multiple Tags with the same key",
            ));
        }
    }
    Ok(())
}

/// Decodes one `x-amz-tagging` component (form encoding: `+` is a space, `%XX` a byte).
fn form_decode(text: &str) -> Option<String> {
    crate::rest::percent_decode(&text.replace('+', " "))
}

/// The tags an `x-amz-tagging` header gives (`k1=v1&k2=v2`, URL-encoded), checked; none when
/// the header is absent or empty.
pub fn tags_of_header(header: Option<&str>) -> Result<Vec<(String, String)>, GatewayError> {
    let Some(header) = header.filter(|h| !h.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut tags = Vec::new();
    for pair in header.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(key), Some(value)) = (form_decode(key), form_decode(value)) else {
            return Err(invalid_tag(
                "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates.",
            ));
        };
        tags.push((key, value));
    }
    check_tags(&tags)?;
    Ok(tags)
}

/// The (key, value) pairs of S3 `Tag`s, unchecked (a missing key or value is empty).
pub fn pairs_of(tags: &[Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| {
            (
                t.key.clone().unwrap_or_default(),
                t.value.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// The tags of a `Tagging` document, checked.
fn tags_of_document(tagging: &Tagging) -> Result<Vec<(String, String)>, GatewayError> {
    let tags = pairs_of(&tagging.tag_set);
    check_tags(&tags)?;
    Ok(tags)
}

/// The S3 form of stored tags.
pub fn tag_set_of(tags: &[(String, String)]) -> TagSet {
    tags.iter()
        .map(|(key, value)| Tag {
            key: Some(key.clone()),
            value: Some(value.clone()),
        })
        .collect()
}

/// `x-amz-tagging-count` of an object with `tags`: none when it has no tags, as S3 answers.
pub fn tag_count(tags: &[(String, String)]) -> Option<i32> {
    (!tags.is_empty()).then(|| i32::try_from(tags.len()).unwrap_or(i32::MAX))
}

/// The tags a CopyObject gives its destination: the source's (`COPY`, the default), or those
/// of its `x-amz-tagging` header (`REPLACE`). Any other directive is refused before this runs.
pub fn copied_tags(
    input: &CopyObjectInput,
    source_tags: &[(String, String)],
) -> Result<Vec<(String, String)>, GatewayError> {
    let replace = input
        .tagging_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == TaggingDirective::REPLACE);
    if replace {
        tags_of_header(input.tagging.as_deref())
    } else {
        Ok(source_tags.to_vec())
    }
}

/// GetObjectTagging (of the latest version, or of `versionId`).
pub async fn get_object_tagging(
    ctx: &Ctx,
    req: S3Request<GetObjectTaggingInput>,
) -> Result<S3Response<GetObjectTaggingOutput>, GatewayError> {
    let input = req.input;
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    let (obj, version_id) =
        versions::read_object(ctx, &bucket, &input.key, input.version_id.as_deref(), true).await?;
    Ok(S3Response::new(GetObjectTaggingOutput {
        tag_set: tag_set_of(&obj.meta.headers.tags),
        version_id,
    }))
}

/// PutObjectTagging: replaces the object's tags.
pub async fn put_object_tagging(
    ctx: &Ctx,
    req: S3Request<PutObjectTaggingInput>,
) -> Result<S3Response<PutObjectTaggingOutput>, GatewayError> {
    let input = req.input;
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    let tags = tags_of_document(&input.tagging)?;
    let version_id =
        change_tags(ctx, &bucket, &input.key, input.version_id.as_deref(), tags).await?;
    Ok(S3Response::new(PutObjectTaggingOutput { version_id }))
}

/// DeleteObjectTagging: removes every tag of the object.
pub async fn delete_object_tagging(
    ctx: &Ctx,
    req: S3Request<DeleteObjectTaggingInput>,
) -> Result<S3Response<DeleteObjectTaggingOutput>, GatewayError> {
    let input = req.input;
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    let version_id = change_tags(
        ctx,
        &bucket,
        &input.key,
        input.version_id.as_deref(),
        Vec::new(),
    )
    .await?;
    Ok(S3Response::new(DeleteObjectTaggingOutput { version_id }))
}

/// Rewrites the object record of `key` with `tags` and its body as it is (see
/// [`rewrite_headers`]). Returns the version id to answer.
async fn change_tags(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    version_id: Option<&str>,
    tags: Vec<(String, String)>,
) -> Result<Option<String>, GatewayError> {
    rewrite_headers(ctx, bucket, key, version_id, None, "tags", |headers| {
        let changed = headers.tags != tags;
        headers.tags = tags.clone();
        changed
    })
    .await
}

/// Changes the headers of `key` (of `version_id`) with `change` (which says whether it changed
/// anything), while the object is still the one read (tried again when a write replaces it
/// meanwhile). In a bucket never versioned the object record is rewritten with its body as it
/// is; in one that has had versioning the version's tags and ACL go to its attribute record
/// (the version itself is never rewritten). With `checked`, only the object as stamped then is
/// changed (the one its requester's right to change was checked on): one written or changed
/// since is refused with `OperationAborted` (to retry). `what` names the change in refusals.
/// Returns the version id to answer.
pub async fn rewrite_headers(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    version_id: Option<&str>,
    checked: Option<RecordStamps>,
    what: &str,
    change: impl Fn(&mut crate::layout::Headers) -> bool,
) -> Result<Option<String>, GatewayError> {
    let versioned = bucket.versioning() != Versioning::Off;
    for _ in 0..TAG_CHANGE_ATTEMPTS_MAX {
        // Unversioned, read with its body: an inline body is rewritten with the record.
        let (mut obj, version) =
            versions::read_object_version(ctx, bucket, key, version_id, versioned).await?;
        let answered_id = version.map(|v| v.id());
        if checked.is_some_and(|stamps| stamps != obj.stamps()) {
            return Err(GatewayError::s3(
                S3ErrorCode::OperationAborted,
                format!(
                    "The object was replaced while its {what} was being changed; please retry."
                ),
            ));
        }
        if !change(&mut obj.meta.headers) {
            return Ok(answered_id);
        }
        if let Some(version) = version.filter(|_| versioned) {
            let attributes = VersionAttributes {
                tags: obj.meta.headers.tags.clone(),
                acl: obj.meta.headers.acl.clone(),
            };
            if ctx
                .set_version_attributes(bucket, key, version, &obj, &attributes)
                .await?
            {
                return Ok(answered_id);
            }
            continue;
        }
        let condition = leofs_shard::WriteCondition {
            if_latest: Some(obj.hlc),
            ..leofs_shard::WriteCondition::none()
        };
        match ctx
            .commit_object(bucket, key, &obj.meta, obj.inline.clone(), condition, None)
            .await
        {
            Ok(_) => return Ok(answered_id),
            Err(e) if e.is_precondition_failed() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(GatewayError::s3(
        S3ErrorCode::SlowDown,
        format!("The object was replaced under every attempt to change its {what}; please retry."),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_tagging_header_is_form_encoded() {
        assert_eq!(tags_of_header(None).unwrap(), vec![]);
        assert_eq!(tags_of_header(Some("")).unwrap(), vec![]);
        assert_eq!(
            tags_of_header(Some("team=a%20b&project=x+y&empty=&bare")).unwrap(),
            pairs(&[
                ("team", "a b"),
                ("project", "x y"),
                ("empty", ""),
                ("bare", "")
            ])
        );
        assert_eq!(
            tags_of_header(Some("k=%E2%82%AC")).unwrap(),
            pairs(&[("k", "€")])
        );
        assert!(tags_of_header(Some("k=%zz")).is_err());
        assert!(tags_of_header(Some("k=1&k=2")).is_err());
    }

    #[test]
    fn tag_sets_are_checked_as_s3_checks_them() {
        let ten: Vec<_> = (0..10).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(check_tags(&ten).is_ok());
        let eleven: Vec<_> = (0..11).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(check_tags(&eleven).is_err());
        assert!(check_tags(&pairs(&[("", "v")])).is_err());
        assert!(check_tags(&[("k".repeat(128), "v".repeat(256))]).is_ok());
        assert!(check_tags(&[("k".repeat(129), String::new())]).is_err());
        assert!(check_tags(&[("k".to_owned(), "v".repeat(257))]).is_err());
        assert!(check_tags(&pairs(&[("aws:x", "v")])).is_err());
        assert!(check_tags(&pairs(&[("AWS:x", "v")])).is_err());
        assert!(check_tags(&pairs(&[("a", "1"), ("a", "2")])).is_err());
        assert!(check_tags(&pairs(&[("ключ", "a b+c-d=e.f_g:h/i@j")])).is_ok());
    }
}
