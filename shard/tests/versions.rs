//! Versioned buckets in storage (shard/VERSIONING.md), through the `Shard` API on a real node:
//! every write into an enabled bucket is a version and the newest is the latest; delete
//! markers; versions deleted for good; the null version while suspended; the chunks of
//! noncurrent versions kept until their version is deleted for good.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use leofs_shard::object::{
    BodyLayout, VersionAttributes, VersionRef, Versioning, attributes_key, is_delete_marker,
    object_key, version_key, version_prefix,
};
use leofs_shard::{EtagCondition, Hlc, PutValue, Shard, ShardError, WriteCondition};

const BUCKET: &str = "versioned";

fn inline(body: &'static [u8]) -> PutValue {
    PutValue {
        body: Bytes::from_static(body),
        ..manifest(BodyLayout::Inline, body.len() as u64)
    }
}

async fn commit(shard: &Shard, key: &str, body: &'static [u8], versioning: Versioning) -> Hlc {
    shard
        .commit_object_in(
            BUCKET,
            key,
            inline(body),
            WriteCondition::none(),
            None,
            versioning,
        )
        .await
        .unwrap()
}

/// The record the latest version of `key` is (its engine key), and whether it is a marker.
async fn latest(shard: &Shard, key: &str) -> Option<(Bytes, bool)> {
    shard
        .latest_version(BUCKET, key)
        .await
        .unwrap()
        .map(|entry| (entry.key, is_delete_marker(entry.summary.tag)))
}

/// The body of a record of key "photo" (its versions are in its object record's partition).
async fn body_of(shard: &Shard, record: Bytes) -> Option<Bytes> {
    let partition = shard.object_partition(BUCKET, "photo");
    shard.get(partition, record).await.unwrap().map(|v| v.body)
}

#[test]
fn every_write_is_a_version_and_the_newest_is_the_latest() {
    run_on_core0(Box::new(|shard: Shard| {
        Box::pin(async move {
            let key = "photo";
            let vkey = |hlc| version_key(BUCKET, key, hlc);
            // The null version: written before versioning was enabled.
            let null = commit(&shard, key, b"null", Versioning::Off).await;
            let v1 = commit(&shard, key, b"one", Versioning::Enabled).await;
            let v2 = commit(&shard, key, b"two", Versioning::Enabled).await;
            assert!(null < v1 && v1 < v2);
            assert_eq!(latest(&shard, key).await, Some((vkey(v2), false)));
            assert_eq!(
                body_of(&shard, vkey(v1)).await.as_deref(),
                Some(&b"one"[..])
            );
            assert_eq!(
                body_of(&shard, object_key(BUCKET, key)).await.as_deref(),
                Some(&b"null"[..])
            );

            // A delete without a version id adds a marker, the newest version.
            let (removed, marker) = shard
                .delete_object_in(BUCKET, key, Versioning::Enabled, None)
                .await
                .unwrap();
            let marker = marker.unwrap();
            assert!(removed && marker > v2);
            assert_eq!(latest(&shard, key).await, Some((vkey(marker), true)));
            // A key whose latest version is a marker is absent to a precondition.
            let if_match = WriteCondition {
                if_match: Some(EtagCondition::Any),
                ..WriteCondition::none()
            };
            let refused = shard
                .commit_object_in(
                    BUCKET,
                    key,
                    inline(b"x"),
                    if_match,
                    None,
                    Versioning::Enabled,
                )
                .await;
            assert!(
                matches!(refused, Err(ShardError::NoSuchObject)),
                "{refused:?}"
            );
            let if_none_match = WriteCondition {
                if_none_match: Some(EtagCondition::Any),
                ..WriteCondition::none()
            };
            let v3 = shard
                .commit_object_in(
                    BUCKET,
                    key,
                    inline(b"three"),
                    if_none_match.clone(),
                    None,
                    Versioning::Enabled,
                )
                .await
                .unwrap();
            let refused = shard
                .commit_object_in(
                    BUCKET,
                    key,
                    inline(b"x"),
                    if_none_match,
                    None,
                    Versioning::Enabled,
                )
                .await;
            assert!(
                matches!(refused, Err(ShardError::PreconditionFailed)),
                "{refused:?}"
            );

            // Versions deleted for good: the next newest becomes the latest, with no write.
            for (gone, next) in [(v3, vkey(marker)), (marker, vkey(v2)), (v2, vkey(v1))] {
                let (removed, _) = shard
                    .delete_object_in(
                        BUCKET,
                        key,
                        Versioning::Enabled,
                        Some(VersionRef::Stamped(gone)),
                    )
                    .await
                    .unwrap();
                assert!(removed);
                assert_eq!(latest(&shard, key).await.map(|l| l.0), Some(next));
            }
            assert_eq!(body_of(&shard, vkey(v2)).await, None);
            // A version that is not there: nothing deleted.
            let (removed, _) = shard
                .delete_object_in(
                    BUCKET,
                    key,
                    Versioning::Enabled,
                    Some(VersionRef::Stamped(v2)),
                )
                .await
                .unwrap();
            assert!(!removed);
            // The null version is older than v1; deleting v1 makes it the latest again.
            shard
                .delete_object_in(
                    BUCKET,
                    key,
                    Versioning::Enabled,
                    Some(VersionRef::Stamped(v1)),
                )
                .await
                .unwrap();
            assert_eq!(
                latest(&shard, key).await,
                Some((object_key(BUCKET, key), false))
            );
            assert_eq!(
                null,
                shard
                    .latest_version(BUCKET, key)
                    .await
                    .unwrap()
                    .unwrap()
                    .hlc
            );
            let (removed, _) = shard
                .delete_object_in(BUCKET, key, Versioning::Enabled, Some(VersionRef::Null))
                .await
                .unwrap();
            assert!(removed);
            assert_eq!(latest(&shard, key).await, None);
        })
    }));
}

#[test]
fn a_suspended_bucket_replaces_the_null_version_and_keeps_the_others() {
    run_on_core0(Box::new(|shard: Shard| {
        Box::pin(async move {
            let key = "photo";
            let v1 = commit(&shard, key, b"one", Versioning::Enabled).await;
            let s1 = commit(&shard, key, b"s1", Versioning::Suspended).await;
            assert!(s1 > v1);
            assert_eq!(
                latest(&shard, key).await,
                Some((object_key(BUCKET, key), false))
            );
            let s2 = commit(&shard, key, b"s2", Versioning::Suspended).await;
            assert!(s2 > s1);
            assert_eq!(
                body_of(&shard, object_key(BUCKET, key)).await.as_deref(),
                Some(&b"s2"[..])
            );
            // A delete makes the null version a marker; the enabled-era version stays.
            let (removed, marker) = shard
                .delete_object_in(BUCKET, key, Versioning::Suspended, None)
                .await
                .unwrap();
            assert!(removed && marker.unwrap() > s2);
            assert_eq!(
                latest(&shard, key).await,
                Some((object_key(BUCKET, key), true))
            );
            let versions = shard
                .scan_all_pages(version_prefix(BUCKET, key))
                .await
                .unwrap();
            assert_eq!(versions.len(), 1);
            assert_eq!(versions[0].key, version_key(BUCKET, key, v1));
        })
    }));
}

#[test]
fn concurrent_writes_each_make_a_version_in_newest_first_order() {
    run_on_core0(Box::new(|shard: Shard| {
        Box::pin(async move {
            let key = "contended";
            let writes = (0..16).map(|_| commit(&shard, key, b"same", Versioning::Enabled));
            let mut stamps = futures_util::future::join_all(writes).await;
            stamps.sort();
            stamps.dedup();
            assert_eq!(stamps.len(), 16);
            let listed: Vec<Bytes> = shard
                .scan_all_pages(version_prefix(BUCKET, key))
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.key)
                .collect();
            let newest_first: Vec<Bytes> = stamps
                .iter()
                .rev()
                .map(|hlc| version_key(BUCKET, key, *hlc))
                .collect();
            assert_eq!(listed, newest_first);
            assert_eq!(
                latest(&shard, key).await.map(|l| l.0),
                newest_first.first().cloned()
            );
        })
    }));
}

#[test]
fn noncurrent_versions_keep_their_chunks_until_deleted_for_good() {
    run_on_core0(Box::new(|shard: Shard| {
        Box::pin(async move {
            let key = "big";
            let mut runs = Vec::new();
            for _ in 0..2 {
                let (registration, run) = write_chunks(&shard, BUCKET, key).await;
                let size = run.size_bytes;
                let hlc = shard
                    .commit_object_in(
                        BUCKET,
                        key,
                        manifest(BodyLayout::Chunked(vec![run.clone()]), size),
                        WriteCondition::none(),
                        Some(registration),
                        Versioning::Enabled,
                    )
                    .await
                    .unwrap();
                runs.push((hlc, run));
            }
            // An orphan beside them, so that a sweep is seen to have run.
            let orphan = leofs_shard::object::VersionId::random();
            for index in 0..CHUNKS {
                put_chunk(&shard, BUCKET, "crashed", &orphan, index).await;
            }
            wait_for_collection(&shard, BUCKET, "crashed", &orphan).await;
            monoio::time::sleep(Duration::from_millis(500)).await;
            for (_, run) in &runs {
                assert_eq!(chunks_left(&shard, BUCKET, key, &run.version).await, CHUNKS);
            }
            // The noncurrent version deleted for good: its chunks go, the latest's stay.
            let (old, old_run) = &runs[0];
            let (removed, _) = shard
                .delete_object_in(
                    BUCKET,
                    key,
                    Versioning::Enabled,
                    Some(VersionRef::Stamped(*old)),
                )
                .await
                .unwrap();
            assert!(removed);
            wait_for_collection(&shard, BUCKET, key, &old_run.version).await;
            assert_eq!(
                chunks_left(&shard, BUCKET, key, &runs[1].1.version).await,
                CHUNKS
            );
            // A marker on top keeps them too.
            shard
                .delete_object_in(BUCKET, key, Versioning::Enabled, None)
                .await
                .unwrap();
            monoio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(
                chunks_left(&shard, BUCKET, key, &runs[1].1.version).await,
                CHUNKS
            );
        })
    }));
}

/// The attribute record of the version of "photo" stamped `stamp`, as the engine holds it:
/// its tags, or None when it is absent or deleted.
async fn attributes_of(shard: &Shard, stamp: Hlc) -> Option<Vec<(String, String)>> {
    let partition = shard.object_partition(BUCKET, "photo");
    let record = attributes_key(BUCKET, "photo", stamp);
    let head = shard.head(partition, record).await.unwrap()?;
    Some(VersionAttributes::decode(&head.meta).unwrap().tags)
}

fn tagged(value: &str) -> PutValue {
    VersionAttributes {
        tags: vec![("k".to_owned(), value.to_owned())],
        acl: None,
    }
    .to_record()
    .unwrap()
}

#[test]
fn version_attributes_are_a_record_of_their_own_that_goes_with_the_version() {
    run_on_core0(Box::new(|shard: Shard| {
        Box::pin(async move {
            let key = "photo";
            let null = commit(&shard, key, b"null", Versioning::Off).await;
            let v1 = commit(&shard, key, b"one", Versioning::Enabled).await;
            let set = |null_version, stamp, value, expected| {
                let shard = shard.clone();
                async move {
                    shard
                        .set_attributes(BUCKET, key, null_version, stamp, value, expected)
                        .await
                }
            };

            // Set on a version, then changed only by who read the record now held.
            let first = set(false, v1, tagged("a"), None).await.unwrap();
            assert_eq!(
                attributes_of(&shard, v1).await,
                Some(vec![("k".into(), "a".into())])
            );
            assert!(matches!(
                set(false, v1, tagged("b"), None).await,
                Err(ShardError::PreconditionFailed)
            ));
            let second = set(false, v1, tagged("b"), Some(first)).await.unwrap();
            assert!(second > first);
            assert_eq!(
                attributes_of(&shard, v1).await,
                Some(vec![("k".into(), "b".into())])
            );
            // The version record itself is untouched.
            assert_eq!(
                body_of(&shard, version_key(BUCKET, key, v1))
                    .await
                    .as_deref(),
                Some(&b"one"[..])
            );

            // The null version: named by the object record's stamp, and only that one.
            assert!(matches!(
                set(true, v1, tagged("x"), None).await,
                Err(ShardError::PreconditionFailed)
            ));
            set(true, null, tagged("n"), None).await.unwrap();
            assert_eq!(
                attributes_of(&shard, null).await,
                Some(vec![("k".into(), "n".into())])
            );

            // A version deleted for good takes its attributes with it, and none can be set on
            // it (nor on a delete marker).
            shard
                .delete_object_in(
                    BUCKET,
                    key,
                    Versioning::Enabled,
                    Some(VersionRef::Stamped(v1)),
                )
                .await
                .unwrap();
            assert_eq!(attributes_of(&shard, v1).await, None);
            assert!(matches!(
                set(false, v1, tagged("c"), None).await,
                Err(ShardError::PreconditionFailed)
            ));
            let (_, marker) = shard
                .delete_object_in(BUCKET, key, Versioning::Enabled, None)
                .await
                .unwrap();
            assert!(matches!(
                set(false, marker.unwrap(), tagged("m"), None).await,
                Err(ShardError::PreconditionFailed)
            ));

            // A version's tombstone stored as a plain record delete (a replica's copy of a
            // delete, a hint, a repair) takes the attribute record with it, at its own stamp.
            let v2 = commit(&shard, key, b"two", Versioning::Enabled).await;
            let attributes = set(false, v2, tagged("t"), None).await.unwrap();
            let partition = shard.object_partition(BUCKET, key);
            let removal = Hlc {
                logical: attributes.logical + 100,
                ..attributes
            };
            shard
                .delete(partition, version_key(BUCKET, key, v2), Some(removal))
                .await
                .unwrap();
            assert_eq!(attributes_of(&shard, v2).await, None);
            let tombstone = shard
                .lookup(partition, attributes_key(BUCKET, key, v2))
                .await
                .unwrap()
                .unwrap();
            assert!(tombstone.tombstone && tombstone.hlc == removal);

            // A suspended write replaces the null version: its attributes go with it, and the
            // new null version starts with none.
            let replaced = commit(&shard, key, b"null 2", Versioning::Suspended).await;
            assert_eq!(attributes_of(&shard, null).await, None);
            assert_eq!(attributes_of(&shard, replaced).await, None);
        })
    }));
}
