//! DeleteObject (204 whether or not the key existed, as S3) and DeleteObjects (≤ 1000 keys,
//! Quiet mode reporting only errors). Deleting an object tombstones its record, then its chunks;
//! in a versioned bucket it adds a delete marker, and a version id deletes that version.

use futures_util::{StreamExt, stream};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response};

use super::require_bucket_id;
use super::versions::delete_named;
use crate::auth::{Access, Requester, authorize};
use crate::error::GatewayError;
use crate::layout::MAX_OBJECT_KEY_BYTES;
use crate::store::Ctx;

/// Most keys one DeleteObjects request may name (S3's limit).
pub const MAX_DELETE_KEYS: usize = 1000;
/// Keys of one DeleteObjects request deleted concurrently.
const DELETE_OBJECTS_CONCURRENCY: usize = 16;

/// DeleteObject.
pub async fn delete_object(
    ctx: &Ctx,
    req: S3Request<DeleteObjectInput>,
) -> Result<S3Response<DeleteObjectOutput>, GatewayError> {
    let input = req.input;
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    let deletion = delete_named(ctx, &bucket, &input.key, input.version_id.as_deref()).await?;
    Ok(S3Response::new(DeleteObjectOutput {
        delete_marker: deletion.delete_marker.then_some(true),
        version_id: deletion.version_id,
        ..Default::default()
    }))
}

/// DeleteObjects.
pub async fn delete_objects(
    ctx: &Ctx,
    req: S3Request<DeleteObjectsInput>,
) -> Result<S3Response<DeleteObjectsOutput>, GatewayError> {
    let access_key = req.credentials.as_ref().map(|c| c.access_key.clone());
    let source_ip = Requester::of(&req).source_ip;
    let headers = req.headers.clone();
    let input = req.input;
    let bucket = require_bucket_id(ctx, &input.bucket)?;
    let objects = input.delete.objects;
    // Each key is a DeleteObject of its own for the bucket's policy (the access check let the
    // request through for this when the bucket has one).
    let state = ctx.manager.snapshot();
    let requester = Requester {
        access_key: access_key.as_deref(),
        source_ip,
        headers: Some(&headers),
    };
    let (state, name) = (&state, input.bucket.as_str());
    if objects.len() > MAX_DELETE_KEYS {
        return Err(GatewayError::s3(
            S3ErrorCode::MalformedXML,
            "DeleteObjects accepts at most 1000 keys",
        ));
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let bucket = &bucket;
    let outcomes: Vec<_> = stream::iter(objects)
        .map(|obj| async move {
            if obj.key.is_empty() || obj.key.len() > MAX_OBJECT_KEY_BYTES {
                let code = if obj.key.is_empty() {
                    S3ErrorCode::InvalidArgument
                } else {
                    S3ErrorCode::KeyTooLongError
                };
                return (obj, Err(S3Error::with_message(code, "invalid key")));
            }
            let access = Access {
                versioned: obj.version_id.is_some(),
                ..Access::new("DeleteObject", requester, Some(name), Some(&obj.key))
            };
            if let Err(denied) = authorize(state, &access) {
                return (obj, Err(denied));
            }
            let result = delete_named(ctx, bucket, &obj.key, obj.version_id.as_deref())
                .await
                .map_err(S3Error::from);
            (obj, result)
        })
        .buffered(DELETE_OBJECTS_CONCURRENCY)
        .collect()
        .await;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (obj, result) in outcomes {
        match result {
            Ok(_) if quiet => {}
            Ok(deletion) => {
                // A marker added answers its id as the marker's; a version deleted for good
                // answers the id asked for (and whether it was a marker).
                let (version_id, marker_version_id) = match obj.version_id {
                    Some(asked) => {
                        let marker = deletion.delete_marker.then(|| asked.clone());
                        (Some(asked), marker)
                    }
                    None => (None, deletion.version_id),
                };
                deleted.push(DeletedObject {
                    key: Some(obj.key),
                    version_id,
                    delete_marker: deletion.delete_marker.then_some(true),
                    delete_marker_version_id: marker_version_id,
                })
            }
            Err(err) => errors.push(Error {
                code: Some(err.code().as_str().to_owned()),
                key: Some(obj.key),
                message: err.message().map(str::to_owned),
                version_id: obj.version_id,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: if errors.is_empty() {
            None
        } else {
            Some(errors)
        },
        ..Default::default()
    }))
}
