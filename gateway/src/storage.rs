//! [`Storage`]: the one handle through which the gateway reaches storage (DESIGN §4a). Every
//! storage call of the S3 and REST front ends goes through it; it is the only gateway module
//! that knows records live in partitions: it hashes a record's key to its partition with the
//! ring and hands the request to `leofs-shard`, which routes it to the vnode holding it (a
//! local core today; a remote shard over the wire once nodes talk).
//!
//! Records are named by their storage key (`layout`'s namespaces): object records by
//! (bucket, key), everything else (chunks, uploads, parts) by its full key. A bucket is always a
//! [`BucketId`] (its name and incarnation), never a bare name.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use leofs_shard::metrics::ObjectCacheMetrics;
use leofs_shard::object::{
    BucketId, KEY_SEP, VersionChunks, VersionRef, chunk_key, chunk_prefix, object_key,
};
use leofs_shard::{
    ChunkLease, Head, Hlc, Lookup, PutValue, ScanEntry, Shard, ShardError, Value, WriteCondition,
    WriteRegistration, hash_bytes,
};

use leofs_manager::ManagerState;

use crate::cache::ObjectCache;
use crate::disk_cache::DiskCache;

/// `range` of `body`, if it lies within it.
pub(crate) fn slice_of(body: &Bytes, range: &Range<u64>) -> Option<Bytes> {
    let (start, end) = (
        usize::try_from(range.start).ok()?,
        usize::try_from(range.end).ok()?,
    );
    (start <= end && end <= body.len()).then(|| body.slice(start..end))
}

/// Largest body of one record (bytes): chunks are at most this long.
pub const RECORD_BODY_BYTES_MAX: u64 = leofs_shard::MAX_RECORD_BODY_BYTES;

/// The gateway's handle to storage on one core. Clone, `!Send` (it lives on its core).
#[derive(Clone)]
pub struct Storage {
    shard: Shard,
    /// The core's object cache (None: off).
    cache: Option<Rc<ObjectCache>>,
    /// The core's disk cache, beneath the object cache (None: off).
    disk: Option<Rc<DiskCache>>,
    /// How long a hit in a bucket read at R=1 is served unconfirmed (see
    /// [`crate::GatewayConfig::object_cache_r1_staleness`]).
    r1_staleness: Duration,
    /// The last cache purge of the catalog this core's cache applied (None: none seen yet).
    purges_applied: Rc<Cell<Option<u64>>>,
}

impl Storage {
    /// The handle of the core `shard` belongs to, without an object cache.
    pub fn new(shard: Shard) -> Self {
        Self {
            shard,
            cache: None,
            disk: None,
            r1_staleness: Duration::ZERO,
            purges_applied: Rc::default(),
        }
    }

    /// The handle of the core `shard` belongs to, with an object cache of `cache_bytes`
    /// (none when 0) whose hits in buckets read at R=1 are served unconfirmed for up to
    /// `r1_staleness` after the replicas last confirmed them, and beneath it `disk` (only
    /// with an object cache).
    pub fn with_cache(
        shard: Shard,
        cache_bytes: u64,
        r1_staleness: Duration,
        disk: Option<DiskCache>,
    ) -> Self {
        let disk = disk.filter(|_| cache_bytes > 0);
        if let Some(disk) = &disk {
            disk.publish_metrics(shard.object_cache_metrics());
        }
        Self {
            shard,
            cache: (cache_bytes > 0).then(|| Rc::new(ObjectCache::new(cache_bytes))),
            disk: disk.map(Rc::new),
            r1_staleness,
            purges_applied: Rc::default(),
        }
    }

    /// An object record with its inline body; None if absent or deleted. With the object
    /// cache, a version held is answered once the replicas' digests (at the bucket's read
    /// level) name it as the newest; otherwise the record is read and offered to the cache.
    pub async fn get_object_record(
        &self,
        bucket: &BucketId,
        key: &str,
    ) -> Result<Option<Value>, ShardError> {
        let partition = self.shard.object_partition(bucket.as_str(), key);
        let storage_key = object_key(bucket.as_str(), key);
        let shard = self.of(bucket);
        let Some(cache) = &self.cache else {
            return shard.get(partition, storage_key).await;
        };
        let metrics = self.shard.object_cache_metrics();
        if let Some((held, confirmed_at)) = cache.get_confirmed(&storage_key) {
            if !self.r1_staleness.is_zero()
                && shard.read_level() == 1
                && confirmed_at.elapsed() < self.r1_staleness
            {
                ObjectCacheMetrics::count(&metrics.hits);
                return Ok(Some(held));
            }
            // A digest read that fails (a replica slow or gone, the ring changing) is no
            // answer: the object is read as if it were not held, with that read's retries.
            ObjectCacheMetrics::count(&metrics.revalidations);
            let newest = shard.lookup(partition, storage_key.clone()).await;
            if newest.is_ok_and(|n| n.is_some_and(|n| !n.tombstone && n.hlc == held.hlc)) {
                ObjectCacheMetrics::count(&metrics.hits);
                cache.confirmed(&storage_key);
                return Ok(Some(held));
            }
            ObjectCacheMetrics::count(&metrics.stale);
            cache.remove(&storage_key, metrics);
            self.drop_from_disk(&storage_key);
        } else {
            ObjectCacheMetrics::count(&metrics.misses);
            if let Some(held) = self.read_disk(&storage_key).await {
                // Confirmed like a hit in memory (after a restart, nothing is known of it).
                ObjectCacheMetrics::count(&metrics.revalidations);
                match shard.lookup(partition, storage_key.clone()).await {
                    Ok(Some(n)) if !n.tombstone && n.hlc == held.hlc => {
                        ObjectCacheMetrics::count(&metrics.disk_hits);
                        cache.offer(&storage_key, &held, false, metrics);
                        return Ok(Some(held));
                    }
                    Ok(_) => {
                        ObjectCacheMetrics::count(&metrics.stale);
                        self.drop_from_disk(&storage_key);
                    }
                    // No answer is no verdict: the entry stays, the object is read.
                    Err(_) => {}
                }
            }
        }
        let value = shard.get(partition, storage_key.clone()).await?;
        if let Some(value) = &value {
            cache.offer(&storage_key, value, false, metrics);
            self.offer_disk(&storage_key, value, false);
        }
        Ok(value)
    }

    /// Reads `range` of the chunk `key` (`chunk_len` bytes long); None if absent. Chunks never
    /// change (their key names their version), so one held in the cache is served as it is;
    /// a whole chunk read from storage is offered to it.
    pub async fn get_chunk(
        &self,
        key: Bytes,
        range: Range<u64>,
        chunk_len: u64,
    ) -> Result<Option<Bytes>, ShardError> {
        let metrics = self.shard.object_cache_metrics();
        if let Some(cache) = &self.cache {
            if let Some(body) = cache
                .get(&key)
                .and_then(|held| slice_of(&held.body, &range))
            {
                ObjectCacheMetrics::count(&metrics.hits);
                return Ok(Some(body));
            }
            ObjectCacheMetrics::count(&metrics.misses);
            if let Some(held) = self.read_disk(&key).await
                && let Some(body) = slice_of(&held.body, &range)
            {
                ObjectCacheMetrics::count(&metrics.disk_hits);
                // On disk, it was read twice already: it enters the memory like an object.
                cache.offer(&key, &held, false, metrics);
                return Ok(Some(body));
            }
        }
        if range.start != 0 || range.end != chunk_len {
            return Ok(self.get_record_range(key, range).await?.map(|v| v.body));
        }
        let value = self.get_record(key.clone()).await?;
        if let (Some(cache), Some(value)) = (&self.cache, &value) {
            cache.offer(&key, value, true, metrics);
            self.offer_disk(&key, value, true);
        }
        Ok(value.map(|v| v.body))
    }

    /// Whether this core has a disk cache.
    pub fn has_disk_cache(&self) -> bool {
        self.disk.is_some()
    }

    /// Hands the disk cache's entries whose write delay is over to its writer (the core's
    /// timer calls it).
    pub fn write_due_disk_entries(&self) {
        if let Some(disk) = &self.disk {
            disk.write_due_entries(self.shard.object_cache_metrics());
        }
    }

    /// `key`'s entry in the disk cache, verified (None: none, or it was damaged).
    async fn read_disk(&self, key: &[u8]) -> Option<Value> {
        let disk = self.disk.as_ref()?;
        disk.get(key, self.shard.object_cache_metrics()).await
    }

    /// Offers `value` (a chunk's, or an object record's) to the disk cache too (written in the
    /// background if it takes it).
    fn offer_disk(&self, key: &[u8], value: &Value, is_chunk: bool) {
        if let Some(disk) = &self.disk {
            disk.offer(key, value, is_chunk, self.shard.object_cache_metrics());
        }
    }

    fn drop_from_disk(&self, key: &[u8]) {
        if let Some(disk) = &self.disk {
            disk.remove(key, self.shard.object_cache_metrics());
        }
    }

    /// Applies the catalog's cache purges this core's cache has not applied yet
    /// (`leofs-adm purge-cache`): called before every cached read. The first catalog seen
    /// sets the mark (the memory cache is empty then; the disk cache applies the purges made
    /// since the mark it kept from its last run, or is emptied if it kept none); a core behind
    /// by more purges than the catalog keeps drops everything.
    pub fn apply_cache_purges(&self, state: &ManagerState) {
        let Some(cache) = &self.cache else {
            return;
        };
        let newest = state.cache_purges.last().map_or(0, |p| p.seq);
        let metrics = self.shard.object_cache_metrics();
        let applied = match self.purges_applied.get() {
            Some(applied) if applied >= newest => return,
            Some(applied) => applied,
            None => match &self.disk {
                Some(disk) => match disk.purges_applied_at_start() {
                    Some(kept) if kept < newest => kept,
                    Some(_) => {
                        self.purges_applied.set(Some(newest));
                        return;
                    }
                    None => {
                        if newest > 0 {
                            disk.clear(metrics);
                        }
                        self.purges_applied.set(Some(newest));
                        disk.save_purges_applied(newest);
                        return;
                    }
                },
                None => {
                    self.purges_applied.set(Some(newest));
                    return;
                }
            },
        };
        self.purges_applied.set(Some(newest));
        if state
            .cache_purges
            .first()
            .is_none_or(|p| p.seq > applied + 1)
        {
            cache.clear(metrics);
            if let Some(disk) = &self.disk {
                disk.clear(metrics);
                disk.save_purges_applied(newest);
            }
            return;
        }
        let mut names = Vec::new();
        for purge in state.cache_purges.iter().filter(|p| p.seq > applied) {
            let Some(bucket) = state.bucket(&purge.bucket) else {
                continue;
            };
            let id = crate::layout::bucket_id(bucket);
            let mut chunks = chunk_prefix(id.as_str(), &purge.key);
            if !purge.prefix {
                chunks.push(KEY_SEP);
            }
            names.push((object_key(id.as_str(), &purge.key), purge.prefix));
            names.push((Bytes::from(chunks), true));
        }
        let purged = cache.remove_named(&names, metrics);
        // The mark is kept after the removals it stands for (the writer takes them in order).
        let purged_from_disk = self.disk.as_ref().map_or(0, |disk| {
            let purged = disk.remove_named(&names, metrics);
            disk.save_purges_applied(newest);
            purged
        });
        tracing::debug!(purged, purged_from_disk, "object cache purged");
    }

    /// Counts a hit of the object cache served from bytes pinned out of it
    /// ([`Storage::cached_chunks`]).
    pub fn count_pinned_hit(&self) {
        ObjectCacheMetrics::count(&self.shard.object_cache_metrics().hits);
    }

    /// The bodies of every chunk of `versions` of an object, if this core's cache holds them
    /// all and they are at most [`ObjectCache::pin_bytes_max`] (a read of them then needs no
    /// storage, and no lease: the bytes are pinned here while it streams).
    pub fn cached_chunks(
        &self,
        bucket: &BucketId,
        key: &str,
        versions: &[VersionChunks],
    ) -> Option<HashMap<Bytes, Bytes>> {
        let cache = self.cache.as_ref()?;
        let mut held = HashMap::new();
        let mut bytes = 0;
        for v in versions {
            for index in 0..v.chunks {
                let ckey = chunk_key(bucket.as_str(), key, &v.version, index);
                let value = cache.get(&ckey)?;
                bytes += value.body.len() as u64;
                if bytes > cache.pin_bytes_max() {
                    return None;
                }
                held.insert(ckey, value.body);
            }
        }
        Some(held)
    }

    /// Drops this core's cached copy of an object: one it changes (the replicas' digests
    /// would refuse it anyway; this saves the round trip that finds out), or one whose chunks
    /// went missing under it (an R=1 hit served unconfirmed may be an older version).
    pub fn forget(&self, bucket: &BucketId, key: &str) {
        if let Some(cache) = &self.cache {
            let storage_key = object_key(bucket.as_str(), key);
            cache.remove(&storage_key, self.shard.object_cache_metrics());
            self.drop_from_disk(&storage_key);
        }
    }

    /// An object record's metadata without its body; None if absent or deleted.
    pub async fn head_object_record(
        &self,
        bucket: &BucketId,
        key: &str,
    ) -> Result<Option<Head>, ShardError> {
        let partition = self.shard.object_partition(bucket.as_str(), key);
        self.of(bucket)
            .head(partition, object_key(bucket.as_str(), key))
            .await
    }

    /// What the index knows of an object record (no disk I/O).
    pub async fn lookup_object(
        &self,
        bucket: &BucketId,
        key: &str,
    ) -> Result<Option<Lookup>, ShardError> {
        let partition = self.shard.object_partition(bucket.as_str(), key);
        self.of(bucket)
            .lookup(partition, object_key(bucket.as_str(), key))
            .await
    }

    /// Commits an object record (the commit point): `condition` is checked there, atomically
    /// with the write, and what the record replaces is queued as garbage.
    pub async fn commit_object(
        &self,
        bucket: &BucketId,
        key: &str,
        value: PutValue,
        condition: WriteCondition,
        writing: Option<WriteRegistration>,
    ) -> Result<Hlc, ShardError> {
        self.forget(bucket, key);
        self.of(bucket)
            .commit_object_in(
                bucket.as_str(),
                key,
                value,
                condition,
                writing,
                bucket.versioning(),
            )
            .await
    }

    /// Deletes an object and queues its chunks; false when there was no object. In a
    /// versioned bucket: adds a delete marker (see [`Storage::delete_version`]).
    pub async fn delete_object(&self, bucket: &BucketId, key: &str) -> Result<bool, ShardError> {
        Ok(self.delete_version(bucket, key, None).await?.0)
    }

    /// Deletes `version` of an object for good, or without one, what a DELETE without a
    /// version id does in the bucket (unversioned: the object; versioned: a delete marker is
    /// added). Whether something was deleted, and the stamp of the marker or tombstone.
    pub async fn delete_version(
        &self,
        bucket: &BucketId,
        key: &str,
        version: Option<VersionRef>,
    ) -> Result<(bool, Option<Hlc>), ShardError> {
        self.forget(bucket, key);
        self.of(bucket)
            .delete_object_in(bucket.as_str(), key, bucket.versioning(), version)
            .await
    }

    /// Stores the attributes of one version of an object (see
    /// [`leofs_shard::Shard::set_attributes`]).
    pub async fn set_attributes(
        &self,
        bucket: &BucketId,
        key: &str,
        null_version: bool,
        stamp: Hlc,
        value: PutValue,
        expected: Option<Hlc>,
    ) -> Result<Hlc, ShardError> {
        self.of(bucket)
            .set_attributes(bucket.as_str(), key, null_version, stamp, value, expected)
            .await
    }

    /// A versioned key's latest version (a delete marker included): its index entry, from
    /// the bucket's read quorum.
    pub async fn latest_version(
        &self,
        bucket: &BucketId,
        key: &str,
    ) -> Result<Option<ScanEntry>, ShardError> {
        self.of(bucket).latest_version(bucket.as_str(), key).await
    }

    /// Reads one version's record of an object (`record`: its object record or a version
    /// record, both in the object's partition), with its body unless `head`; None if absent
    /// or deleted.
    pub async fn get_version_record(
        &self,
        bucket: &BucketId,
        key: &str,
        record: Bytes,
        head: bool,
    ) -> Result<Option<Value>, ShardError> {
        let partition = self.shard.object_partition(bucket.as_str(), key);
        let shard = self.of(bucket);
        if !head {
            return shard.get(partition, record).await;
        }
        Ok(shard.head(partition, record).await?.map(|h| Value {
            meta: h.meta,
            body: Bytes::new(),
            summary: h.summary,
            hlc: h.hlc,
            body_len: h.body_len,
        }))
    }

    /// What the index knows of one version's record of an object (no disk I/O).
    pub async fn lookup_version_record(
        &self,
        bucket: &BucketId,
        key: &str,
        record: Bytes,
    ) -> Result<Option<Lookup>, ShardError> {
        let partition = self.shard.object_partition(bucket.as_str(), key);
        self.of(bucket).lookup(partition, record).await
    }

    /// Registers a new version of an object as being written.
    pub async fn begin_write(
        &self,
        bucket: &BucketId,
        key: &str,
    ) -> Result<WriteRegistration, ShardError> {
        self.of(bucket).begin_write(bucket.as_str(), key).await
    }

    /// Leases the chunks of `versions` of an object for a read.
    pub async fn lease_chunks(
        &self,
        bucket: &BucketId,
        key: &str,
        versions: &[VersionChunks],
    ) -> Result<ChunkLease, ShardError> {
        self.of(bucket)
            .lease_chunks(bucket.as_str(), key, versions)
            .await
    }

    /// Commits a multipart part record (`value`) under `part_key`.
    pub async fn commit_part(
        &self,
        bucket: &BucketId,
        key: &str,
        part_key: Bytes,
        value: PutValue,
        writing: Option<WriteRegistration>,
    ) -> Result<Hlc, ShardError> {
        self.of(bucket)
            .commit_part(bucket.as_str(), key, part_key, value, writing)
            .await
    }

    /// Queues versions of an object for collection once nothing references them.
    pub async fn queue_garbage(
        &self,
        bucket: &BucketId,
        key: &str,
        versions: Vec<VersionChunks>,
    ) -> Result<(), ShardError> {
        self.of(bucket)
            .queue_garbage(bucket.as_str(), key, versions)
            .await
    }

    /// Stores a record other than an object record (a chunk, an upload, a part).
    pub async fn put_record(&self, key: Bytes, value: PutValue) -> Result<Hlc, ShardError> {
        let partition = self.record_partition(&key);
        self.shard.put(partition, key, value).await
    }

    /// Reads a record other than an object record; None if absent or deleted.
    pub async fn get_record(&self, key: Bytes) -> Result<Option<Value>, ShardError> {
        let partition = self.record_partition(&key);
        self.shard.get(partition, key).await
    }

    /// Reads `range` of a record's body; None if absent or deleted.
    pub async fn get_record_range(
        &self,
        key: Bytes,
        range: Range<u64>,
    ) -> Result<Option<Value>, ShardError> {
        let partition = self.record_partition(&key);
        self.shard.get_range(partition, key, range).await
    }

    /// Reads a record's metadata without its body; None if absent or deleted.
    pub async fn head_record(&self, key: Bytes) -> Result<Option<Head>, ShardError> {
        let partition = self.record_partition(&key);
        self.shard.head(partition, key).await
    }

    /// Deletes a record (a tombstone) whose key comes from a scan; the tombstone's timestamp,
    /// None if it had no live value.
    pub async fn delete_record(&self, key: Bytes) -> Result<Option<Hlc>, ShardError> {
        let partition = self.record_partition(&key);
        self.shard.delete(partition, key, None).await
    }

    /// Live keys (of any namespace) starting with `prefix`, after `start_after`, in key order,
    /// at most `limit`, over every partition of the ring.
    pub async fn scan(
        &self,
        prefix: Bytes,
        start_after: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<ScanEntry>, ShardError> {
        self.shard.note_foreground();
        self.shard.scan_all(prefix, start_after, limit).await
    }

    /// Every live key starting with `prefix`, in key order, page after page: only for prefixes
    /// whose keys are few (an upload's parts).
    pub async fn scan_all_pages(&self, prefix: Bytes) -> Result<Vec<ScanEntry>, ShardError> {
        self.shard.note_foreground();
        self.shard.scan_all_pages(prefix).await
    }

    /// This handle for the records of `bucket` (its chunks, uploads and parts too): with the
    /// bucket's own quorums, when it has them.
    pub fn for_bucket(&self, bucket: &BucketId) -> Storage {
        Storage {
            shard: self.of(bucket),
            cache: self.cache.clone(),
            disk: self.disk.clone(),
            r1_staleness: self.r1_staleness,
            purges_applied: self.purges_applied.clone(),
        }
    }

    /// The shard handle for `bucket`'s records; books the core's foreground traffic (see
    /// [`Shard::note_foreground`]).
    fn of(&self, bucket: &BucketId) -> Shard {
        self.shard.note_foreground();
        self.shard.with_levels(bucket.levels())
    }

    /// A fresh timestamp from this core's clock.
    pub fn now(&self) -> Hlc {
        self.shard.now()
    }

    /// The partition of a record other than an object record: its key's hash on the ring.
    /// Every call for such a record asks it, so it also books the core's foreground traffic
    /// (as [`Storage::of`] does for object records), which background movement yields to.
    fn record_partition(&self, key: &[u8]) -> leofs_shard::PartitionId {
        self.shard.note_foreground();
        self.shard.partition_of(hash_bytes(key))
    }
}
