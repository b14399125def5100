//! The per-engine memory cache of hot small objects (`quick_cache`'s unsync cache, weighted by
//! bytes). Entries are invalidated when the key's index entry changes; a value read from disk
//! is inserted only if the index still points at the record that was read.

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use quick_cache::{Equivalent, Weighter};

use crate::{Head, Hlc, PartitionId, Summary, Value};

/// Bytes charged per cached object on top of its buffer (key, map slot, `Bytes` headers).
const CACHE_ENTRY_OVERHEAD_BYTES: u64 = 128;
/// Assumed average object size when sizing the cache's slot table.
const CACHE_AVG_OBJECT_BYTES: u64 = 4096;

#[derive(PartialEq, Eq)]
struct CacheKey {
    partition: PartitionId,
    key: Box<[u8]>,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.partition.hash(state);
        self.key[..].hash(state);
    }
}

struct CacheKeyRef<'a> {
    partition: PartitionId,
    key: &'a [u8],
}

impl Hash for CacheKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.partition.hash(state);
        self.key.hash(state);
    }
}

impl Equivalent<CacheKey> for CacheKeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.partition == key.partition && self.key == &key.key[..]
    }
}

/// A cached object: the value and the memory it pins.
#[derive(Clone)]
pub(crate) struct CachedValue {
    pub meta: Bytes,
    pub body: Bytes,
    pub summary: Summary,
    pub hlc: Hlc,
    /// Bytes of memory the value keeps alive (its read buffer).
    pub pinned_bytes: u64,
}

impl CachedValue {
    pub(crate) fn value(&self) -> Value {
        Value {
            meta: self.meta.clone(),
            body: self.body.clone(),
            body_len: self.body.len() as u64,
            summary: self.summary,
            hlc: self.hlc,
        }
    }

    pub(crate) fn head(&self) -> Head {
        Head {
            meta: self.meta.clone(),
            body_len: self.body.len() as u64,
            summary: self.summary,
            hlc: self.hlc,
        }
    }
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<CacheKey, CachedValue> for ByBytes {
    fn weight(&self, key: &CacheKey, val: &CachedValue) -> u64 {
        key.key.len() as u64 + val.pinned_bytes + CACHE_ENTRY_OVERHEAD_BYTES
    }
}

/// The object cache of one engine.
pub(crate) struct ObjectCache {
    cache: quick_cache::unsync::Cache<CacheKey, CachedValue, ByBytes>,
    object_bytes_max: u64,
}

impl ObjectCache {
    /// A cache of `capacity_bytes`; None when the capacity is 0 (disabled).
    pub(crate) fn new(capacity_bytes: u64, object_bytes_max: u64) -> Option<Self> {
        if capacity_bytes == 0 {
            return None;
        }
        let items = (capacity_bytes / CACHE_AVG_OBJECT_BYTES).clamp(16, 1 << 20) as usize;
        Some(Self {
            cache: quick_cache::unsync::Cache::with_weighter(items, capacity_bytes, ByBytes),
            object_bytes_max,
        })
    }

    /// Whether an object with this body length may be cached.
    pub(crate) fn admits(&self, body_len: u64) -> bool {
        body_len <= self.object_bytes_max
    }

    pub(crate) fn get(&mut self, partition: PartitionId, key: &[u8]) -> Option<CachedValue> {
        self.cache.get(&CacheKeyRef { partition, key }).cloned()
    }

    pub(crate) fn insert(&mut self, partition: PartitionId, key: &[u8], value: CachedValue) {
        self.cache.insert(
            CacheKey {
                partition,
                key: key.into(),
            },
            value,
        );
    }

    pub(crate) fn invalidate(&mut self, partition: PartitionId, key: &[u8]) {
        self.cache.remove(&CacheKeyRef { partition, key });
    }

    /// Removes every cached value of `partition` (the partition was dropped).
    pub(crate) fn invalidate_partition(&mut self, partition: PartitionId) {
        self.cache.retain(|k, _| k.partition != partition);
    }
}
