//! Storage owns its garbage, tested through the `Shard` API on a real node (real engines and
//! core threads): chunks a read leases survive an overwrite until the lease ends, then go;
//! an abandoned write's chunks go; orphan chunks (no manifest, no write) are swept; a lease on
//! collected chunks is refused; concurrent `If-None-Match: *` commits have one winner.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use leofs_shard::object::{BodyLayout, VersionChunks, VersionId, chunk_key};
use leofs_shard::{EtagCondition, PutValue, Shard, ShardError, WriteCondition, hash_bytes};

#[test]
fn leased_chunks_outlive_an_overwrite_until_the_read_ends() {
    run_on_core0(Box::new(|shard: Shard| {
        Box::pin(async move {
            // The deferral is counted where a chunk lives and this test reads core 0's
            // counters: take a version with a chunk there (3 chunks all land on core 1 one
            // time in 8; the others are abandoned and collected).
            let (registration, segment) = loop {
                let (registration, segment) = write_chunks(&shard, "b", "leased").await;
                let on_core0 = (0..CHUNKS).any(|index| {
                    let ckey = chunk_key("b", "leased", &segment.version, index);
                    let partition = shard.partition_of(hash_bytes(&ckey));
                    shard.partition_map().owner_of(partition) == 0
                });
                if on_core0 {
                    break (registration, segment);
                }
            };
            let version = segment.version;
            let size = segment.size_bytes;
            shard
                .commit_object(
                    "b",
                    "leased",
                    manifest(BodyLayout::Chunked(vec![segment.clone()]), size),
                    WriteCondition::none(),
                    Some(registration),
                )
                .await
                .unwrap();
            let lease = shard
                .lease_chunks("b", "leased", &[segment.version_chunks()])
                .await
                .unwrap();
            // Overwritten while the read holds its lease: the old chunks stay.
            shard
                .commit_object(
                    "b",
                    "leased",
                    manifest(BodyLayout::Inline, 0),
                    WriteCondition::none(),
                    None,
                )
                .await
                .unwrap();
            // The collector tries at once and is put off by the lease (it then retries every
            // second); however long that takes on a busy machine, the chunks stay.
            let deadline = Instant::now() + Duration::from_secs(30);
            while shard.gc_stats().chunks_deferred == 0 {
                assert!(Instant::now() < deadline, "the collector never tried");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
            monoio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(chunks_left(&shard, "b", "leased", &version).await, CHUNKS);
            // The read ends: they go.
            drop(lease);
            wait_for_collection(&shard, "b", "leased", &version).await;
            // A read that finds them gone is told so.
            let refused = shard
                .lease_chunks("b", "leased", &[segment.version_chunks()])
                .await;
            assert!(matches!(refused, Err(ShardError::MissingChunk { .. })));
        })
    }));
}

#[test]
fn an_abandoned_write_and_a_deleted_object_free_their_chunks() {
    run_on_core0(Box::new(|shard: Shard| {
        Box::pin(async move {
            let (registration, segment) = write_chunks(&shard, "b", "abandoned").await;
            drop(registration);
            wait_for_collection(&shard, "b", "abandoned", &segment.version).await;

            let (registration, segment) = write_chunks(&shard, "b", "deleted").await;
            let size = segment.size_bytes;
            let version = segment.version;
            shard
                .commit_object(
                    "b",
                    "deleted",
                    manifest(BodyLayout::Chunked(vec![segment]), size),
                    WriteCondition::none(),
                    Some(registration),
                )
                .await
                .unwrap();
            assert_eq!(chunks_left(&shard, "b", "deleted", &version).await, CHUNKS);
            assert!(shard.delete_object("b", "deleted").await.unwrap());
            wait_for_collection(&shard, "b", "deleted", &version).await;
            assert!(!shard.delete_object("b", "deleted").await.unwrap());
        })
    }));
}

#[test]
fn orphan_chunks_are_swept_and_referenced_ones_are_not() {
    run_on_core0(Box::new(|shard: Shard| {
        Box::pin(async move {
            // What a crash in the middle of an upload leaves: chunks, no write, no manifest.
            let orphan = VersionId::random();
            for index in 0..CHUNKS {
                put_chunk(&shard, "b", "crashed", &orphan, index).await;
            }
            // A committed object and a write still in progress, both with chunks.
            let (registration, kept) = write_chunks(&shard, "b", "kept").await;
            let size = kept.size_bytes;
            shard
                .commit_object(
                    "b",
                    "kept",
                    manifest(BodyLayout::Chunked(vec![kept.clone()]), size),
                    WriteCondition::none(),
                    Some(registration),
                )
                .await
                .unwrap();
            let (in_progress, writing) = write_chunks(&shard, "b", "writing").await;
            // The first sweep runs 5 s after start.
            wait_for_collection(&shard, "b", "crashed", &orphan).await;
            assert_eq!(
                chunks_left(&shard, "b", "kept", &kept.version).await,
                CHUNKS
            );
            assert_eq!(
                chunks_left(&shard, "b", "writing", &writing.version).await,
                CHUNKS
            );
            drop(in_progress);
            wait_for_collection(&shard, "b", "writing", &writing.version).await;
            let lease = shard
                .lease_chunks(
                    "b",
                    "kept",
                    &[VersionChunks {
                        version: kept.version,
                        chunks: CHUNKS,
                    }],
                )
                .await;
            assert!(lease.is_ok());
        })
    }));
}

#[test]
fn concurrent_if_none_match_commits_have_exactly_one_winner() {
    run_on_core0(Box::new(|shard: Shard| {
        Box::pin(async move {
            let attempts = (0..16).map(|i| {
                let shard = shard.clone();
                async move {
                    let condition = WriteCondition {
                        if_none_match: Some(EtagCondition::Any),
                        ..WriteCondition::none()
                    };
                    let value = PutValue {
                        body: Bytes::from(vec![i as u8; 4096]),
                        ..manifest(BodyLayout::Inline, 4096)
                    };
                    shard
                        .commit_object("b", "contended", value, condition, None)
                        .await
                }
            });
            let results = futures_util::future::join_all(attempts).await;
            let won = results.iter().filter(|r| r.is_ok()).count();
            let refused = results
                .iter()
                .filter(|r| matches!(r, Err(ShardError::PreconditionFailed)))
                .count();
            assert_eq!((won, refused), (1, 15), "{results:?}");
        })
    }));
}
