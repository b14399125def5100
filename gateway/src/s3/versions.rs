//! S3 versioning (shard/VERSIONING.md): Put/GetBucketVersioning, version ids on requests and
//! answers (`versionId`, `x-amz-version-id`, `x-amz-delete-marker`), and reading the version a
//! GET, HEAD or copy names, with S3's errors (`NoSuchVersion`, `InvalidArgument` for an id this
//! store never issues, `MethodNotAllowed` for a delete marker asked for by id).

use http::{HeaderMap, HeaderValue, StatusCode};
use leofs_shard::Hlc;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response};

use super::{no_such_key, require_bucket};
use crate::error::GatewayError;
use crate::layout::{BucketId, VersionRef, Versioning};
use crate::store::{Ctx, StoredObject, VersionRead};

/// `x-amz-delete-marker`.
const DELETE_MARKER_HEADER: &str = "x-amz-delete-marker";
/// `x-amz-version-id`.
const VERSION_ID_HEADER: &str = "x-amz-version-id";

/// The version a request's `versionId` names (None: absent, the latest). An id this store
/// never issues is S3's `InvalidArgument`.
pub fn parse_version_id(version_id: Option<&str>) -> Result<Option<VersionRef>, GatewayError> {
    version_id
        .map(|id| VersionRef::parse(id).map_err(|_| invalid_version_id()))
        .transpose()
}

/// S3's answer to a version id it never issued (`400 InvalidArgument`).
fn invalid_version_id() -> GatewayError {
    GatewayError::s3(S3ErrorCode::InvalidArgument, "Invalid version id specified")
}

/// In a bucket that never had versioning, `null` is the only version id: any other is
/// `InvalidArgument`, as S3 answers.
fn refuse_stamped_in_unversioned(
    bucket: &BucketId,
    version: Option<VersionRef>,
) -> Result<(), GatewayError> {
    match version {
        Some(VersionRef::Stamped(_)) if bucket.versioning() == Versioning::Off => {
            Err(invalid_version_id())
        }
        _ => Ok(()),
    }
}

/// The `x-amz-version-id` of a version written into `bucket` stamped `hlc`: none in a bucket
/// that never had versioning, `null` while it is suspended.
pub fn written_version_id(bucket: &BucketId, hlc: Hlc) -> Option<String> {
    match bucket.versioning() {
        Versioning::Off => None,
        Versioning::Enabled => Some(VersionRef::Stamped(hlc).id()),
        Versioning::Suspended => Some(VersionRef::Null.id()),
    }
}

/// `NoSuchVersion` (404).
pub fn no_such_version() -> GatewayError {
    GatewayError::s3(
        S3ErrorCode::NoSuchVersion,
        "The specified version does not exist.",
    )
}

/// The answer to a GET or HEAD that finds a delete marker: without a version id, `NoSuchKey`
/// (404); naming the marker, `MethodNotAllowed` (405); both with `x-amz-delete-marker: true`
/// and the marker's version id, as S3 answers.
pub fn delete_marker_found(by_id: bool, marker: &VersionRef) -> GatewayError {
    let mut err = if by_id {
        let mut err = S3Error::with_message(
            S3ErrorCode::MethodNotAllowed,
            "The specified method is not allowed against this resource.",
        );
        err.set_status_code(StatusCode::METHOD_NOT_ALLOWED);
        err
    } else {
        S3Error::with_message(S3ErrorCode::NoSuchKey, "The specified key does not exist.")
    };
    let mut headers = HeaderMap::new();
    headers.insert(DELETE_MARKER_HEADER, HeaderValue::from_static("true"));
    if let Ok(id) = HeaderValue::from_str(&marker.id()) {
        headers.insert(VERSION_ID_HEADER, id);
    }
    err.set_headers(headers);
    GatewayError::S3(err)
}

/// What a read by version found: the object, or a delete marker.
pub enum Named {
    /// The object and which version it is (None: a bucket that never had versioning, read
    /// without a version id).
    Object(Box<StoredObject>, Option<VersionRef>),
    /// A delete marker: which version, and whether the request named it by id.
    Marker(VersionRef, bool),
}

/// Reads what a GET, HEAD or copy source names: the latest version, or `version_id`, with its
/// body unless `head`. A bucket that never had versioning, read without a version id, takes
/// the unversioned path (its object cache included).
pub async fn read_named(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    version_id: Option<&str>,
    head: bool,
) -> Result<Named, GatewayError> {
    let version = parse_version_id(version_id)?;
    refuse_stamped_in_unversioned(bucket, version)?;
    if bucket.versioning() == Versioning::Off && version.is_none() {
        let found = if head {
            ctx.head_object(bucket, key).await?
        } else {
            ctx.get_object(bucket, key).await?
        };
        let obj = found.ok_or_else(no_such_key)?;
        return Ok(Named::Object(Box::new(obj), None));
    }
    match ctx.read_version(bucket, key, version, head).await? {
        None if version.is_some() => Err(no_such_version()),
        None => Err(no_such_key()),
        Some(VersionRead::Marker { version: found, .. }) => {
            Ok(Named::Marker(found, version.is_some()))
        }
        Some(VersionRead::Object(obj, found)) => Ok(Named::Object(obj, Some(found))),
    }
}

/// [`read_named`] for a GET or HEAD: a delete marker is the error S3 answers. The object and
/// the version id to answer.
pub async fn read_object(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    version_id: Option<&str>,
    head: bool,
) -> Result<(StoredObject, Option<String>), GatewayError> {
    let (obj, version) = read_object_version(ctx, bucket, key, version_id, head).await?;
    Ok((obj, version.map(|v| v.id())))
}

/// [`read_object`], with which version the object is rather than its id.
pub async fn read_object_version(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    version_id: Option<&str>,
    head: bool,
) -> Result<(StoredObject, Option<VersionRef>), GatewayError> {
    match read_named(ctx, bucket, key, version_id, head).await? {
        Named::Object(obj, version) => Ok((*obj, version)),
        Named::Marker(marker, by_id) => Err(delete_marker_found(by_id, &marker)),
    }
}

/// What a DELETE did, as S3 answers it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deletion {
    /// `x-amz-version-id`: the marker added, or the version deleted for good.
    pub version_id: Option<String>,
    /// `x-amz-delete-marker`: a marker was added, or the version deleted was one.
    pub delete_marker: bool,
}

/// Deletes what a DELETE names: in a bucket that never had versioning and without a version
/// id, the object; without one in a versioned bucket, a delete marker is added; with one,
/// that version is deleted for good (a version that is not there deletes nothing and
/// succeeds, as in S3).
pub async fn delete_named(
    ctx: &Ctx,
    bucket: &BucketId,
    key: &str,
    version_id: Option<&str>,
) -> Result<Deletion, GatewayError> {
    let version = parse_version_id(version_id)?;
    refuse_stamped_in_unversioned(bucket, version)?;
    let Some(version) = version else {
        let (_, stamp) = ctx.storage.delete_version(bucket, key, None).await?;
        return Ok(match bucket.versioning() {
            Versioning::Off => Deletion::default(),
            Versioning::Enabled | Versioning::Suspended => Deletion {
                version_id: stamp.and_then(|hlc| written_version_id(bucket, hlc)),
                delete_marker: true,
            },
        });
    };
    let record = match version {
        VersionRef::Null => crate::layout::object_key(bucket.as_str(), key),
        VersionRef::Stamped(hlc) => crate::layout::version_key(bucket.as_str(), key, hlc),
    };
    let was_marker = ctx
        .storage
        .lookup_version_record(bucket, key, record)
        .await?
        .is_some_and(|l| !l.tombstone && crate::layout::is_delete_marker(l.summary.tag));
    ctx.storage
        .delete_version(bucket, key, Some(version))
        .await?;
    Ok(Deletion {
        version_id: Some(version.id()),
        delete_marker: was_marker,
    })
}

/// PutBucketVersioning: `Enabled` or `Suspended` (a bucket never goes back to unversioned).
/// MFA delete is refused: it needs a device this store has no notion of.
pub async fn put_bucket_versioning(
    ctx: &Ctx,
    req: S3Request<PutBucketVersioningInput>,
) -> Result<S3Response<PutBucketVersioningOutput>, GatewayError> {
    let input = req.input;
    require_bucket(ctx, &input.bucket)?;
    let config = input.versioning_configuration;
    if input.mfa.is_some()
        || config
            .mfa_delete
            .as_ref()
            .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
    {
        return Err(GatewayError::s3(
            S3ErrorCode::NotImplemented,
            "MFA delete is not implemented by this node",
        ));
    }
    let enabled = match config.status.as_ref().map(BucketVersioningStatus::as_str) {
        Some(BucketVersioningStatus::ENABLED) => true,
        Some(BucketVersioningStatus::SUSPENDED) => false,
        // S3 leaves a bucket as it is when the configuration names no status.
        None => return Ok(S3Response::new(PutBucketVersioningOutput {})),
        Some(_) => {
            return Err(GatewayError::s3(
                S3ErrorCode::MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema",
            ));
        }
    };
    // Suspending a bucket that never had versioning changes only what its writes answer
    // (`x-amz-version-id: null`), as in S3.
    ctx.catalog
        .set_bucket_versioning(&input.bucket, enabled)
        .await?;
    Ok(S3Response::new(PutBucketVersioningOutput {}))
}

/// GetBucketVersioning: the status, absent for a bucket that never had versioning.
pub async fn get_bucket_versioning(
    ctx: &Ctx,
    req: S3Request<GetBucketVersioningInput>,
) -> Result<S3Response<GetBucketVersioningOutput>, GatewayError> {
    let bucket = require_bucket(ctx, &req.input.bucket)?;
    let status = match bucket.versioning {
        leofs_manager::BucketVersioning::Off => None,
        leofs_manager::BucketVersioning::Enabled => Some(BucketVersioningStatus::from_static(
            BucketVersioningStatus::ENABLED,
        )),
        leofs_manager::BucketVersioning::Suspended => Some(BucketVersioningStatus::from_static(
            BucketVersioningStatus::SUSPENDED,
        )),
    };
    Ok(S3Response::new(GetBucketVersioningOutput {
        status,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_are_checked_and_null_names_the_object_record() {
        assert_eq!(parse_version_id(None).unwrap(), None);
        assert_eq!(
            parse_version_id(Some("null")).unwrap(),
            Some(VersionRef::Null)
        );
        let stamp = Hlc {
            physical_us: 1_765_000_000_000_000,
            logical: 2,
            node_id: 3,
        };
        let id = VersionRef::Stamped(stamp).id();
        assert_eq!(
            parse_version_id(Some(&id)).unwrap(),
            Some(VersionRef::Stamped(stamp))
        );
        for bad in ["", "abc", "NULL", &id.to_lowercase()] {
            assert!(parse_version_id(Some(bad)).is_err(), "{bad}");
        }
        let bucket = BucketId::new("b", 1);
        assert_eq!(written_version_id(&bucket, stamp), None);
        assert_eq!(
            written_version_id(&bucket.clone().with_versioning(Versioning::Enabled), stamp),
            Some(id)
        );
        assert_eq!(
            written_version_id(&bucket.with_versioning(Versioning::Suspended), stamp).as_deref(),
            Some("null")
        );
    }
}
