//! The garbage collector of one core: its durable garbage queue and its orphan sweeper, each a
//! task of the core.
//!
//! Queue entries (`g` records, `objects`) name versions of an object whose chunks may be garbage;
//! they live in the object's partition, so the core that owns the object's manifest processes
//! them. For each entry: the versions the current manifest references or a registered write
//! holds are dropped from it (a crash can leave an entry written beside a manifest that never
//! replaced the old one); the chunks of the rest are deleted on the cores that hold them, except
//! those a read leases; when nothing is left, the entry is deleted. An entry with leased chunks
//! is retried every [`LEASED_RETRY_INTERVAL`] until the reads end or their grace passes; an entry
//! whose object cannot be read is retried with a growing back-off, and one that is itself
//! corrupt is dropped (the sweeper finds its chunks). Entries are learnt from the core that
//! wrote them after their commit, and, at start, from the index.
//!
//! The sweeper scans this core's chunks every `sweep_interval` (and shortly after start) and
//! deletes those of versions nothing references (the manifest, a registered write, a part of a
//! live multipart upload): what a crash in the middle of an upload leaves. It sweeps no chunk
//! for the chunk grace after a ring change (writes in progress follow the ring meanwhile). It
//! also deletes part records older than the grace whose upload no longer exists. It skips any
//! object it cannot read.
//!
//! Must never: delete a chunk of a version something references, or block the core.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use leofs_engine::EngineError;

use crate::object::{
    NS_CHUNK, NS_GARBAGE, NS_PART, NS_UPLOAD, VERSION_ID_BYTES, VersionChunks, VersionId,
    chunk_key, parse_chunk_key, parse_garbage_key,
};
use crate::objects::decode_garbage;
use crate::ring::Vnode;
use crate::{Shard, ShardError, hash_bytes};

/// How often entries whose chunks a read leases are tried again.
const LEASED_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// First and longest back-off of an entry whose processing failed.
const FAILED_RETRY_MIN: Duration = Duration::from_secs(1);
const FAILED_RETRY_MAX: Duration = Duration::from_secs(60);
/// Delay of the first sweep after the core starts (what a crash left is swept then).
const SWEEP_DELAY_AFTER_START: Duration = Duration::from_secs(5);
/// Keys read per index scan page (queue entries at start, chunks and parts while sweeping).
const SCAN_PAGE_KEYS: usize = 4096;
/// Entries processed before the collector yields to other work on the core.
const ENTRIES_PER_ROUND_MAX: usize = 256;
/// Bytes of an upload id in keys (hex of a version id).
const UPLOAD_ID_BYTES: usize = 2 * VERSION_ID_BYTES;

/// Starts the collector and the sweeper tasks of this core; they run until the core stops.
pub(crate) fn start(shard: &Shard) {
    let (tx, rx) = mpsc::unbounded();
    *shard.core.objects.inbox.borrow_mut() = Some(tx);
    monoio::spawn(run_queue(shard.clone(), rx));
    monoio::spawn(run_sweeper(shard.clone()));
}

/// Stops the collector and the sweeper of this core (at shutdown, before the engine closes).
pub(crate) fn stop(shard: &Shard) {
    shard.core.objects.stopping.set(true);
    shard.core.objects.inbox.borrow_mut().take();
}

/// When a failing entry is tried next.
struct Backoff {
    failures: u32,
    next: Instant,
}

async fn run_queue(shard: Shard, mut inbox: mpsc::UnboundedReceiver<Bytes>) {
    let objects = &shard.core.objects;
    let mut pending: BTreeSet<Bytes> = queued_entries(&shard);
    if !pending.is_empty() {
        tracing::info!(
            core = shard.core_id(),
            entries = pending.len(),
            "garbage queue entries found at start"
        );
    }
    let mut leased = BTreeSet::new();
    let mut failing: BTreeMap<Bytes, Backoff> = BTreeMap::new();
    loop {
        objects.prune_leases();
        let mut round = 0;
        while let Some(entry) = pending.pop_first() {
            if round == ENTRIES_PER_ROUND_MAX {
                pending.insert(entry);
                break;
            }
            round += 1;
            match process(&shard, &entry).await {
                Ok(true) => {
                    failing.remove(&entry);
                }
                Ok(false) => {
                    leased.insert(entry);
                }
                Err(ShardError::Engine(EngineError::Closed)) => return,
                Err(e) => {
                    let backoff = failing.entry(entry.clone()).or_insert(Backoff {
                        failures: 0,
                        next: Instant::now(),
                    });
                    backoff.failures += 1;
                    let wait = FAILED_RETRY_MIN
                        .saturating_mul(1 << backoff.failures.min(6))
                        .min(FAILED_RETRY_MAX);
                    backoff.next = Instant::now() + wait;
                    tracing::warn!(error = %e, retry_in_secs = wait.as_secs(), "collecting a garbage queue entry failed");
                }
            }
        }
        let now = Instant::now();
        let due: Vec<Bytes> = failing
            .iter()
            .filter(|(e, b)| b.next <= now && !pending.contains(*e))
            .map(|(e, _)| e.clone())
            .collect();
        pending.extend(due);
        let next_failing = failing.values().map(|b| b.next).min();
        objects.count(|s| {
            s.entries_pending = (pending.len() + leased.len() + failing.len()) as u64;
        });
        let wait = if !pending.is_empty() {
            Duration::ZERO
        } else if !leased.is_empty() {
            LEASED_RETRY_INTERVAL
        } else {
            next_failing.map_or(FAILED_RETRY_MAX, |n| n.saturating_duration_since(now))
        };
        pending.append(&mut leased);
        let timer = monoio::time::sleep(wait);
        match select(inbox.next(), std::pin::pin!(timer)).await {
            Either::Left((Some(entry), _)) => {
                pending.insert(entry);
                while let Ok(entry) = inbox.try_recv() {
                    pending.insert(entry);
                }
            }
            Either::Left((None, _)) => return,
            Either::Right(((), _)) => {}
        }
        if objects.stopping.get() {
            return;
        }
    }
}

/// Garbage-queue entries in this core's index (written before a restart, or not yet learnt).
fn queued_entries(shard: &Shard) -> BTreeSet<Bytes> {
    let mut found = BTreeSet::new();
    let Some(engine) = &shard.core.engine else {
        return found;
    };
    let mut after: Option<Bytes> = None;
    loop {
        let page = engine.scan(&[NS_GARBAGE], after.as_deref(), SCAN_PAGE_KEYS);
        let done = page.len() < SCAN_PAGE_KEYS;
        after = page.last().map(|e| e.key.clone());
        found.extend(page.into_iter().map(|e| e.key));
        if done {
            return found;
        }
    }
}

/// Collects one queue entry; true when it is done (and deleted), false when a read still
/// leases some of its chunks.
async fn process(shard: &Shard, entry: &Bytes) -> Result<bool, ShardError> {
    let engine = shard.core.engine()?;
    let Some((bucket, key)) = parse_garbage_key(entry) else {
        tracing::warn!("unparseable garbage queue key; left alone");
        return Ok(true);
    };
    let partition = shard.object_partition(bucket, key);
    let record = match engine.get(partition, entry).await {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(true),
        Err(EngineError::Corrupt { .. }) => {
            tracing::warn!(%bucket, %key, "garbage queue entry is corrupt; dropped (the sweeper finds its chunks)");
            engine.delete(partition, entry, None).await?;
            return Ok(true);
        }
        Err(e) => return Err(e.into()),
    };
    let Some(versions) = decode_garbage(&record.meta) else {
        tracing::warn!(%bucket, %key, "garbage queue entry does not decode; dropped (the sweeper finds its chunks)");
        engine.delete(partition, entry, None).await?;
        return Ok(true);
    };
    let doomed: Vec<VersionChunks> = if shard.replicated() {
        // Every replica of the object must agree that nothing references them: one whose
        // copy of the commit that replaced them failed still serves the old manifest.
        shard.unreferenced(bucket, key, versions).await?
    } else {
        let referenced = shard
            .referenced_here(partition, bucket, key, &versions)
            .await?;
        versions
            .into_iter()
            .filter(|v| !referenced.contains(&v.version))
            .collect()
    };
    if collect_versions(shard, bucket, key, &doomed).await? > 0 {
        return Ok(false);
    }
    engine.delete(partition, entry, None).await?;
    shard.core.objects.count(|s| s.entries_done += 1);
    Ok(true)
}

/// Deletes the chunks of `versions` on the cores holding them; returns how many a read leases.
async fn collect_versions(
    shard: &Shard,
    bucket: &str,
    key: &str,
    versions: &[VersionChunks],
) -> Result<u64, ShardError> {
    let mut by_vnode: BTreeMap<Vnode, Vec<Bytes>> = BTreeMap::new();
    for v in versions {
        for index in 0..v.chunks {
            let ckey = chunk_key(bucket, key, &v.version, index);
            let partition = shard.partition_of(hash_bytes(&ckey));
            if !shard.replicated() {
                by_vnode
                    .entry(shard.vnode_of(partition)?)
                    .or_default()
                    .push(ckey);
                continue;
            }
            // Every copy up goes; a copy on a replica that is down now is an orphan there,
            // which its sweeper finds once every replica of the manifest agrees.
            for vnode in shard.replicas_up(partition)? {
                by_vnode.entry(vnode).or_default().push(ckey.clone());
            }
        }
    }
    let mut deferred = 0;
    for (vnode, keys) in by_vnode {
        deferred += shard.collect_chunks(vnode, keys, false).await?;
    }
    Ok(deferred)
}

async fn run_sweeper(shard: Shard) {
    let objects = &shard.core.objects;
    monoio::time::sleep(SWEEP_DELAY_AFTER_START).await;
    while !objects.stopping.get() {
        match sweep_chunks(&shard).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(
                core = shard.core_id(),
                chunks = swept,
                "orphan chunks swept"
            ),
            Err(ShardError::Engine(EngineError::Closed)) => return,
            Err(e) => tracing::warn!(error = %e, "sweeping orphan chunks failed"),
        }
        match sweep_parts(&shard).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(
                core = shard.core_id(),
                parts = swept,
                "part records of finished uploads swept"
            ),
            Err(ShardError::Engine(EngineError::Closed)) => return,
            Err(e) => tracing::warn!(error = %e, "sweeping orphan part records failed"),
        }
        monoio::time::sleep(objects.config.get().sweep_interval).await;
    }
}

/// One sweep of this core's chunks; returns how many orphan chunks were deleted. Chunk keys
/// sort by (bucket, key, version, index), so a page holds runs of one object's versions, asked
/// about together (one call to the object's core per object and page).
async fn sweep_chunks(shard: &Shard) -> Result<u64, ShardError> {
    if ring_changed_within_grace(shard) {
        return Ok(0);
    }
    let mut swept = 0;
    let mut after: Option<Bytes> = None;
    loop {
        if shard.core.objects.stopping.get() {
            return Ok(swept);
        }
        let page = shard
            .core
            .engine()?
            .scan(&[NS_CHUNK], after.as_deref(), SCAN_PAGE_KEYS);
        let done = page.len() < SCAN_PAGE_KEYS;
        after = page.last().map(|e| e.key.clone());
        let mut objects: Vec<(String, String, BTreeMap<VersionId, Vec<Bytes>>)> = Vec::new();
        for entry in page {
            let Some((bucket, key, version, _)) = parse_chunk_key(&entry.key) else {
                continue;
            };
            if objects.last().is_none_or(|o| o.0 != bucket || o.1 != key) {
                objects.push((bucket.to_owned(), key.to_owned(), BTreeMap::new()));
            }
            if let Some(last) = objects.last_mut() {
                last.2.entry(version).or_default().push(entry.key);
            }
        }
        for (bucket, key, versions) in objects {
            let asked = versions
                .keys()
                .map(|&version| VersionChunks { version, chunks: 0 })
                .collect();
            let orphaned = match shard.unreferenced(&bucket, &key, asked).await {
                Ok(orphaned) => orphaned,
                Err(ShardError::Engine(EngineError::Closed)) => {
                    return Err(EngineError::Closed.into());
                }
                Err(e) => {
                    tracing::warn!(error = %e, %bucket, %key, "object unreadable; its chunks are not swept");
                    continue;
                }
            };
            for orphan in orphaned {
                if let Some(keys) = versions.get(&orphan.version) {
                    let count = keys.len() as u64;
                    let deferred = shard
                        .collect_chunks(shard.here(), keys.clone(), true)
                        .await?;
                    swept += count - deferred;
                }
            }
        }
        if done {
            return Ok(swept);
        }
    }
}

/// Whether this core's ring changed less than the chunk grace ago (or the core started on a
/// ring that had changed, less than the grace ago): no chunk is swept then. A write that
/// began before the change is registered on the replicas of the old ring, and on the new ones
/// only once its gateway has learnt the new ring and followed it
/// ([`crate::WriteRegistration::follow_ring`], every second while the body arrives).
fn ring_changed_within_grace(shard: &Shard) -> bool {
    let objects = &shard.core.objects;
    let epoch = shard.ring().epoch();
    let grace = objects.config.get().chunk_grace;
    let changed_at = match objects.ring_seen.get() {
        Some((seen, changed_at)) if seen == epoch => changed_at,
        seen => {
            // The first ring of a cluster (after none, or at a start) is no change, unless
            // the cluster has rebalanced since.
            let from_a_ring = seen.is_some_and(|(seen, _)| seen > 0);
            let changed_at = (from_a_ring || epoch > 1).then(Instant::now);
            objects.ring_seen.set(Some((epoch, changed_at)));
            changed_at
        }
    };
    changed_at.is_some_and(|at| at.elapsed() < grace)
}

/// Deletes this core's part records older than the grace whose upload record no longer exists
/// (an UploadPart that committed after its upload was completed or aborted, or a crash between
/// deleting an upload and its parts); their chunks are then referenced by nothing, and the next
/// chunk sweep takes them. Returns how many were deleted.
async fn sweep_parts(shard: &Shard) -> Result<u64, ShardError> {
    let engine = shard.core.engine()?;
    if engine.scan(&[NS_PART], None, 1).is_empty() {
        return Ok(0);
    }
    // The live uploads, all of them (cross-core, paged). A part record of an upload created
    // after this scan is younger than the grace and is left alone.
    let mut live: HashSet<Bytes> = HashSet::new();
    let mut after: Option<Bytes> = None;
    loop {
        let page = shard
            .scan_all(
                Bytes::from_static(&[NS_UPLOAD]),
                after.clone(),
                SCAN_PAGE_KEYS,
            )
            .await?;
        let done = page.len() < SCAN_PAGE_KEYS;
        after = page.last().map(|e| e.key.clone());
        for entry in page {
            if entry.key.len() >= UPLOAD_ID_BYTES {
                live.insert(entry.key.slice(entry.key.len() - UPLOAD_ID_BYTES..));
            }
        }
        if done {
            break;
        }
    }
    let grace_us = shard.core.objects.config.get().chunk_grace.as_micros() as u64;
    let now_us = shard.now().physical_us;
    let mut swept = 0;
    let mut after: Option<Bytes> = None;
    loop {
        let page = engine.scan(&[NS_PART], after.as_deref(), SCAN_PAGE_KEYS);
        let done = page.len() < SCAN_PAGE_KEYS;
        after = page.last().map(|e| e.key.clone());
        for entry in page {
            // `p` upload-id 0x00 part-number(u32 BE)
            if entry.key.len() != 1 + UPLOAD_ID_BYTES + 1 + 4 {
                continue;
            }
            let upload_id = entry.key.slice(1..1 + UPLOAD_ID_BYTES);
            let old = now_us.saturating_sub(entry.hlc.physical_us) > grace_us;
            if old && !live.contains(&upload_id) {
                let stamp = crate::antientropy::collection_stamp(entry.hlc);
                engine
                    .delete(entry.partition, &entry.key, Some(stamp))
                    .await?;
                swept += 1;
            }
        }
        if done {
            break;
        }
    }
    shard.core.objects.count(|s| s.orphan_parts_swept += swept);
    Ok(swept)
}
