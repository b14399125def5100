//! The gateway's object cache (issue 15, its first step): per core, in memory, whole objects
//! whose body is inline in their record (at most one chunk), each with the HLC of the version
//! it holds. [`crate::storage::Storage`] serves a hit only once the replicas confirm, by an
//! HLC digest read under the bucket's read level (a Lookup: no body moves), that this version
//! is still the newest; so no gateway answers with bytes older than an acknowledged overwrite
//! or delete made through any gateway.
//!
//! The record of a chunked object (its manifest, without a body) is held the same way; its
//! chunks are read from storage (and leased) on every read.
//!
//! Bounded in bytes, the bookkeeping counted. An object enters on its second miss among the
//! last missed keys (at most [`RECENT_MISSES_MAX`], and one per [`MISS_WINDOW_BYTES_PER_KEY`]
//! of the cache), and never when it would take more than 1/[`ENTRY_SHARE_DIVISOR`] of the
//! cache: a pass over many objects read once (a scan, a backup) does not push out the ones read
//! again and again. The least recently used go first.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use leofs_shard::Value;
use leofs_shard::metrics::ObjectCacheMetrics;

/// Most keys (their hashes) remembered as missed once, for the second-miss admission.
pub const RECENT_MISSES_MAX: usize = 65_536;
/// Cache bytes per key remembered as missed once (a small cache remembers fewer).
pub const MISS_WINDOW_BYTES_PER_KEY: u64 = 4096;
/// An entry takes at most this fraction (1/n) of the cache.
pub const ENTRY_SHARE_DIVISOR: u64 = 8;
/// Bytes an entry is counted for beyond its key, metadata and body: the `Value` and entry
/// structs, a hash-map slot at up to half load, a B-tree slot, three allocations' headers.
const ENTRY_OVERHEAD_BYTES: u64 = 384;

/// One core's cache. `!Send` (it lives on its core).
pub struct ObjectCache {
    capacity_bytes: u64,
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Bytes, Entry>,
    /// Recency: use tick → key, the least recently used first.
    order: BTreeMap<u64, Bytes>,
    tick: u64,
    bytes: u64,
    /// Hashes of keys missed once, with when (a miss count) they were remembered.
    missed: HashMap<u64, u64>,
    /// The same, oldest first; an entry whose hash was taken or remembered again since is
    /// skipped when it comes out.
    missed_order: VecDeque<(u64, u64)>,
    misses: u64,
    /// Most hashes in `missed`.
    missed_max: usize,
}

struct Entry {
    value: Value,
    used: u64,
    bytes: u64,
}

impl ObjectCache {
    /// A cache of at most `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> Self {
        let window = (capacity_bytes / MISS_WINDOW_BYTES_PER_KEY).max(1);
        Self {
            capacity_bytes,
            inner: RefCell::new(Inner {
                missed_max: usize::try_from(window)
                    .unwrap_or(usize::MAX)
                    .min(RECENT_MISSES_MAX),
                ..Inner::default()
            }),
        }
    }

    /// The version held for `key` (its HLC says which), marked as just used.
    pub fn get(&self, key: &[u8]) -> Option<Value> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(key)?;
        let old = std::mem::replace(&mut entry.used, tick);
        let value = entry.value.clone();
        if let Some(k) = inner.order.remove(&old) {
            inner.order.insert(tick, k);
        }
        Some(value)
    }

    /// Drops what is held for `key` (a newer version exists, or this core changed it).
    pub fn remove(&self, key: &[u8], metrics: &ObjectCacheMetrics) {
        let mut inner = self.inner.borrow_mut();
        if let Some(entry) = inner.entries.remove(key) {
            inner.order.remove(&entry.used);
            inner.bytes -= entry.bytes;
        }
        publish(&inner, metrics);
    }

    /// Offers a version just read from the replicas: kept if admitted (see the module's
    /// documentation), pushing out the least recently used as needed. Its bytes are copied,
    /// so that the entry holds no larger buffer it was received in.
    pub fn offer(&self, key: &[u8], value: &Value, metrics: &ObjectCacheMetrics) {
        let bytes = (key.len() + value.meta.len() + value.body.len()) as u64 + ENTRY_OVERHEAD_BYTES;
        if bytes > self.capacity_bytes / ENTRY_SHARE_DIVISOR
            || value.body.len() as u64 != value.body_len
        {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        if !inner.second_miss(leofs_shard::hash_bytes(key)) {
            return;
        }
        if let Some(old) = inner.entries.remove(key) {
            inner.order.remove(&old.used);
            inner.bytes -= old.bytes;
        }
        while inner.bytes + bytes > self.capacity_bytes {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.bytes;
                ObjectCacheMetrics::count(&metrics.evictions);
            }
        }
        inner.tick += 1;
        let used = inner.tick;
        let key = Bytes::copy_from_slice(key);
        let value = Value {
            meta: Bytes::copy_from_slice(&value.meta),
            body: Bytes::copy_from_slice(&value.body),
            ..value.clone()
        };
        inner.order.insert(used, key.clone());
        inner.entries.insert(key, Entry { value, used, bytes });
        inner.bytes += bytes;
        debug_assert!(inner.bytes <= self.capacity_bytes);
        debug_assert_eq!(inner.entries.len(), inner.order.len());
        publish(&inner, metrics);
    }
}

impl Inner {
    /// Whether the key (its hash) was missed once recently; if not, it is remembered.
    fn second_miss(&mut self, hash: u64) -> bool {
        if self.missed.remove(&hash).is_some() {
            return true;
        }
        // Entries of hashes taken since are dropped as they come out; the queue is kept at
        // most twice the window.
        while self.missed.len() >= self.missed_max || self.missed_order.len() >= 2 * self.missed_max
        {
            let Some((oldest, at)) = self.missed_order.pop_front() else {
                break;
            };
            if self.missed.get(&oldest) == Some(&at) {
                self.missed.remove(&oldest);
            }
        }
        self.misses += 1;
        self.missed.insert(hash, self.misses);
        self.missed_order.push_back((hash, self.misses));
        false
    }
}

fn publish(inner: &Inner, metrics: &ObjectCacheMetrics) {
    metrics.entries.set(inner.entries.len() as u64);
    metrics.bytes.set(inner.bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use leofs_shard::{Hlc, Summary};

    fn value(at: u64, body_len: usize) -> Value {
        Value {
            meta: Bytes::from_static(b"meta"),
            body: Bytes::from(vec![7u8; body_len]),
            body_len: body_len as u64,
            summary: Summary::default(),
            hlc: Hlc {
                physical_us: at,
                logical: 0,
                node_id: 1,
            },
        }
    }

    #[test]
    fn an_object_enters_on_its_second_miss_and_is_served_with_its_version() {
        let metrics = ObjectCacheMetrics::default();
        let cache = ObjectCache::new(1 << 20);
        cache.offer(b"k", &value(5, 100), &metrics);
        assert!(cache.get(b"k").is_none());
        cache.offer(b"k", &value(5, 100), &metrics);
        let held = cache.get(b"k").unwrap();
        assert_eq!((held.hlc.physical_us, held.body.len()), (5, 100));
        assert_eq!(metrics.entries.get(), 1);
        cache.remove(b"k", &metrics);
        assert!(cache.get(b"k").is_none());
        assert_eq!((metrics.entries.get(), metrics.bytes.get()), (0, 0));
    }

    #[test]
    fn the_least_recently_used_make_room_and_large_or_partial_bodies_stay_out() {
        let metrics = ObjectCacheMetrics::default();
        // Room for eight entries of ~9 KiB (each under an eighth of the cache); nine go in.
        let cache = ObjectCache::new(80 << 10);
        let keys: Vec<Vec<u8>> = (0..9u8).map(|i| vec![b'k', i]).collect();
        for (i, key) in keys.iter().enumerate() {
            cache.offer(key, &value(1, 9 << 10), &metrics);
            cache.offer(key, &value(1, 9 << 10), &metrics);
            assert!(cache.get(key).is_some());
            if i == 1 {
                // The first is used again: the second becomes the least recently used.
                assert!(cache.get(&keys[0]).is_some());
            }
        }
        assert!(metrics.bytes.get() <= 80 << 10);
        assert_eq!(metrics.evictions.get(), 1);
        assert!(cache.get(&keys[1]).is_none());
        assert!(cache.get(&keys[0]).is_some() && cache.get(&keys[8]).is_some());
        // Over an eighth of the cache, or a sub-range of a body: never kept.
        let big = value(1, 11 << 10);
        cache.offer(b"big", &big, &metrics);
        cache.offer(b"big", &big, &metrics);
        assert!(cache.get(b"big").is_none());
        let mut part = value(1, 100);
        part.body_len = 1000;
        cache.offer(b"part", &part, &metrics);
        cache.offer(b"part", &part, &metrics);
        assert!(cache.get(b"part").is_none());
    }

    #[test]
    fn a_small_cache_remembers_few_misses() {
        let metrics = ObjectCacheMetrics::default();
        // 16 KiB: four keys remembered as missed once.
        let cache = ObjectCache::new(16 << 10);
        for key in [b"a", b"b", b"c", b"d", b"e"] {
            cache.offer(key, &value(1, 10), &metrics);
        }
        // "a" was forgotten: this is a first miss again; "e" enters on its second.
        cache.offer(b"a", &value(1, 10), &metrics);
        cache.offer(b"e", &value(1, 10), &metrics);
        assert!(cache.get(b"a").is_none());
        assert!(cache.get(b"e").is_some());
        // Missed, taken, missed again: remembered once more, and enters on the next miss.
        cache.remove(b"e", &metrics);
        cache.offer(b"e", &value(1, 10), &metrics);
        cache.offer(b"e", &value(1, 10), &metrics);
        assert!(cache.get(b"e").is_some());
    }

    #[test]
    fn a_scan_of_objects_read_once_leaves_the_hot_set_in_place() {
        let metrics = ObjectCacheMetrics::default();
        let cache = ObjectCache::new(64 << 10);
        for _ in 0..2 {
            cache.offer(b"hot", &value(1, 4 << 10), &metrics);
        }
        for i in 0..1000u32 {
            cache.offer(&i.to_le_bytes(), &value(1, 4 << 10), &metrics);
        }
        assert!(cache.get(b"hot").is_some());
        assert_eq!(metrics.evictions.get(), 0);
    }
}
