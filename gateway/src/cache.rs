//! The gateway's object cache (issue 15, its first step): per core, in memory, whole objects
//! whose body is inline in their record (at most one chunk), each with the HLC of the version
//! it holds. [`crate::storage::Storage`] serves a hit only once the replicas confirm, by an
//! HLC digest read under the bucket's read level (a Lookup: no body moves), that this version
//! is still the newest; so no gateway answers with bytes older than an acknowledged overwrite
//! or delete made through any gateway.
//!
//! The record of a chunked object (its manifest, without a body) is held the same way, and its
//! chunks each on their own, keyed by their chunk key: a chunk never changes (its key names
//! its version), so a chunk held needs no confirmation, and a read, ranged or whole, of an
//! object whose chunks are all held reads no body from storage (nor leases them).
//!
//! In a bucket read at R=1, a gateway may be configured to serve a hit unconfirmed for a
//! bounded time after the replicas last confirmed it (`object_cache_r1_staleness`, off by
//! default).
//!
//! Bounded in bytes, the bookkeeping counted. While the cache has room for it, an object enters
//! on its first miss (it pushes nothing out); once the cache is full, and always for a chunk of
//! a large object (one large read must not fill the cache), only on its second miss among the
//! last missed keys (at most [`RECENT_MISSES_MAX`], and one per
//! [`MISS_WINDOW_BYTES_PER_KEY`] of the cache), and never when it would take more than
//! 1/[`ENTRY_SHARE_DIVISOR`] of the cache: a pass over many objects read once (a scan, a backup)
//! does not push out the ones read again and again. The least recently used go first.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use leofs_shard::Value;
use leofs_shard::metrics::ObjectCacheMetrics;

use crate::lru::Lru;

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
    entries: Lru<Entry>,
    /// Keys missed once recently.
    missed: MissWindow,
}

/// The keys (their hashes) missed once recently, for the second-miss admission of a full
/// cache (the memory's and the disk's).
#[derive(Default)]
pub(crate) struct MissWindow {
    /// Hashes of keys missed once, with when (a miss count) they were remembered.
    missed: HashMap<u64, u64>,
    /// The same, oldest first; an entry whose hash was taken or remembered again since is
    /// skipped when it comes out.
    order: VecDeque<(u64, u64)>,
    misses: u64,
    /// Most hashes in `missed`.
    max: usize,
}

impl MissWindow {
    /// A window for a cache of `capacity_bytes`: one key per [`MISS_WINDOW_BYTES_PER_KEY`],
    /// at most [`RECENT_MISSES_MAX`].
    pub(crate) fn for_capacity(capacity_bytes: u64) -> Self {
        let window = (capacity_bytes / MISS_WINDOW_BYTES_PER_KEY).max(1);
        Self {
            max: usize::try_from(window)
                .unwrap_or(usize::MAX)
                .min(RECENT_MISSES_MAX),
            ..Self::default()
        }
    }

    /// Whether the key (its hash) was missed once recently; if not, it is remembered.
    pub(crate) fn second_miss(&mut self, hash: u64) -> bool {
        if self.missed.remove(&hash).is_some() {
            return true;
        }
        // Entries of hashes taken since are dropped as they come out; the queue is kept at
        // most twice the window.
        while self.missed.len() >= self.max || self.order.len() >= 2 * self.max {
            let Some((oldest, at)) = self.order.pop_front() else {
                break;
            };
            if self.missed.get(&oldest) == Some(&at) {
                self.missed.remove(&oldest);
            }
        }
        self.misses += 1;
        self.missed.insert(hash, self.misses);
        self.order.push_back((hash, self.misses));
        false
    }
}

struct Entry {
    value: Value,
    /// When the replicas last confirmed this version as the newest (or it was read).
    confirmed_at: Instant,
}

impl ObjectCache {
    /// A cache of at most `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            capacity_bytes,
            inner: RefCell::new(Inner {
                missed: MissWindow::for_capacity(capacity_bytes),
                ..Inner::default()
            }),
        }
    }

    /// Most bytes a read may pin out of the cache (an entry's largest share of it): a larger
    /// object is read chunk by chunk.
    pub fn pin_bytes_max(&self) -> u64 {
        self.capacity_bytes / ENTRY_SHARE_DIVISOR
    }

    /// The version held for `key` (its HLC says which), marked as just used.
    pub fn get(&self, key: &[u8]) -> Option<Value> {
        self.get_confirmed(key).map(|(value, _)| value)
    }

    /// The version held for `key`, with when the replicas last confirmed it; marked as just
    /// used.
    pub fn get_confirmed(&self, key: &[u8]) -> Option<(Value, Instant)> {
        let mut inner = self.inner.borrow_mut();
        let entry = inner.entries.touch(key)?;
        Some((entry.value.clone(), entry.confirmed_at))
    }

    /// Notes that the replicas just confirmed the version held for `key` as the newest.
    pub fn confirmed(&self, key: &[u8]) {
        if let Some(entry) = self.inner.borrow_mut().entries.peek_mut(key) {
            entry.confirmed_at = Instant::now();
        }
    }

    /// Drops what is held for `key` (a newer version exists, or this core changed it).
    pub fn remove(&self, key: &[u8], metrics: &ObjectCacheMetrics) {
        let mut inner = self.inner.borrow_mut();
        inner.entries.remove(key);
        publish(&inner, metrics);
    }

    /// Drops every entry whose key is one of `names`, or starts with it when it is marked as
    /// a prefix (a purge); how many.
    pub fn remove_named(&self, names: &[(Bytes, bool)], metrics: &ObjectCacheMetrics) -> usize {
        let mut inner = self.inner.borrow_mut();
        let doomed: Vec<Bytes> = inner
            .entries
            .keys()
            .filter(|k| named(k, names))
            .cloned()
            .collect();
        for key in &doomed {
            inner.entries.remove(key);
        }
        publish(&inner, metrics);
        doomed.len()
    }

    /// Drops every entry.
    pub fn clear(&self, metrics: &ObjectCacheMetrics) {
        let mut inner = self.inner.borrow_mut();
        inner.entries.clear();
        publish(&inner, metrics);
    }

    /// Offers a version just read from the replicas: kept if admitted (see the module's
    /// documentation), pushing out the least recently used as needed. Its bytes are copied,
    /// so that the entry holds no larger buffer it was received in.
    pub fn offer(&self, key: &[u8], value: &Value, is_chunk: bool, metrics: &ObjectCacheMetrics) {
        let bytes = (key.len() + value.meta.len() + value.body.len()) as u64 + ENTRY_OVERHEAD_BYTES;
        if bytes > self.capacity_bytes / ENTRY_SHARE_DIVISOR
            || value.body.len() as u64 != value.body_len
        {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        let at_once = !is_chunk && inner.entries.bytes() + bytes <= self.capacity_bytes;
        if !at_once && !inner.missed.second_miss(leofs_shard::hash_bytes(key)) {
            return;
        }
        inner.entries.remove(key);
        while inner.entries.bytes() + bytes > self.capacity_bytes {
            let Some(oldest) = inner.entries.oldest().cloned() else {
                break;
            };
            inner.entries.remove(&oldest);
            ObjectCacheMetrics::count(&metrics.evictions);
        }
        let value = Value {
            meta: Bytes::copy_from_slice(&value.meta),
            body: Bytes::copy_from_slice(&value.body),
            ..value.clone()
        };
        let entry = Entry {
            value,
            confirmed_at: Instant::now(),
        };
        inner
            .entries
            .insert(Bytes::copy_from_slice(key), entry, bytes);
        debug_assert!(inner.entries.bytes() <= self.capacity_bytes);
        publish(&inner, metrics);
    }
}

/// Whether `key` is one of `names`, or starts with one marked as a prefix (a purge's names).
pub(crate) fn named(key: &[u8], names: &[(Bytes, bool)]) -> bool {
    names.iter().any(|(name, prefix)| {
        if *prefix {
            key.starts_with(name)
        } else {
            key == &name[..]
        }
    })
}

fn publish(inner: &Inner, metrics: &ObjectCacheMetrics) {
    metrics.entries.set(inner.entries.len() as u64);
    metrics.bytes.set(inner.entries.bytes());
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

    /// Fills `cache` (16 KiB) to the last byte it can hold with 40 entries of 400 bytes.
    fn fill(cache: &ObjectCache, metrics: &ObjectCacheMetrics) {
        for i in 0..40u8 {
            cache.offer(&[b'f', i], &value(1, 10), false, metrics);
        }
        assert_eq!(metrics.entries.get(), 40);
    }

    #[test]
    fn an_object_enters_at_once_while_there_is_room_and_on_its_second_miss_once_full() {
        let metrics = ObjectCacheMetrics::default();
        let cache = ObjectCache::new(16 << 10);
        fill(&cache, &metrics);
        let held = cache.get(&[b'f', 0]).unwrap();
        assert_eq!((held.hlc.physical_us, held.body.len()), (1, 10));
        assert_eq!(metrics.evictions.get(), 0);
        cache.offer(b"kk", &value(5, 10), false, &metrics);
        assert!(cache.get(b"kk").is_none());
        cache.offer(b"kk", &value(5, 10), false, &metrics);
        let held = cache.get(b"kk").unwrap();
        assert_eq!((held.hlc.physical_us, held.body.len()), (5, 10));
        assert_eq!((metrics.entries.get(), metrics.evictions.get()), (40, 1));
        cache.remove(b"kk", &metrics);
        assert!(cache.get(b"kk").is_none());
        assert_eq!(metrics.entries.get(), 39);
    }

    #[test]
    fn a_chunk_enters_on_its_second_miss_even_with_room() {
        let metrics = ObjectCacheMetrics::default();
        let cache = ObjectCache::new(1 << 20);
        cache.offer(b"chunk", &value(1, 100), true, &metrics);
        assert!(cache.get(b"chunk").is_none());
        cache.offer(b"chunk", &value(1, 100), true, &metrics);
        assert!(cache.get(b"chunk").is_some());
    }

    #[test]
    fn a_purge_drops_the_names_given_and_the_keys_under_the_prefixes_given() {
        let metrics = ObjectCacheMetrics::default();
        let cache = ObjectCache::new(1 << 20);
        let keys: [&[u8]; 4] = [b"oa", b"oab", b"ob", b"cab"];
        for key in keys {
            cache.offer(key, &value(1, 10), false, &metrics);
            cache.offer(key, &value(1, 10), false, &metrics);
        }
        let names = [
            (Bytes::from_static(b"oa"), false),
            (Bytes::from_static(b"ca"), true),
        ];
        assert_eq!(cache.remove_named(&names, &metrics), 2);
        assert!(cache.get(b"oa").is_none() && cache.get(b"cab").is_none());
        assert!(cache.get(b"oab").is_some() && cache.get(b"ob").is_some());
        assert_eq!(metrics.entries.get(), 2);
        cache.clear(&metrics);
        assert!(cache.get(b"ob").is_none());
        assert_eq!((metrics.entries.get(), metrics.bytes.get()), (0, 0));
    }

    #[test]
    fn a_confirmation_is_dated_by_the_offer_and_by_each_confirmation() {
        let metrics = ObjectCacheMetrics::default();
        let cache = ObjectCache::new(1 << 20);
        cache.offer(b"k", &value(1, 10), false, &metrics);
        cache.offer(b"k", &value(1, 10), false, &metrics);
        let (_, offered) = cache.get_confirmed(b"k").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        cache.confirmed(b"k");
        let (_, confirmed) = cache.get_confirmed(b"k").unwrap();
        assert!(confirmed > offered);
    }

    #[test]
    fn the_least_recently_used_make_room_and_large_or_partial_bodies_stay_out() {
        let metrics = ObjectCacheMetrics::default();
        // Room for eight entries of ~9 KiB (each under an eighth of the cache); nine go in.
        let cache = ObjectCache::new(80 << 10);
        let keys: Vec<Vec<u8>> = (0..9u8).map(|i| vec![b'k', i]).collect();
        for (i, key) in keys.iter().enumerate() {
            cache.offer(key, &value(1, 9 << 10), false, &metrics);
            cache.offer(key, &value(1, 9 << 10), false, &metrics);
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
        cache.offer(b"big", &big, false, &metrics);
        cache.offer(b"big", &big, false, &metrics);
        assert!(cache.get(b"big").is_none());
        let mut part = value(1, 100);
        part.body_len = 1000;
        cache.offer(b"part", &part, false, &metrics);
        cache.offer(b"part", &part, false, &metrics);
        assert!(cache.get(b"part").is_none());
    }

    #[test]
    fn a_small_cache_remembers_few_misses() {
        let metrics = ObjectCacheMetrics::default();
        // 16 KiB, full: four keys remembered as missed once.
        let cache = ObjectCache::new(16 << 10);
        fill(&cache, &metrics);
        for key in [b"ka", b"kb", b"kc", b"kd", b"ke"] {
            cache.offer(key, &value(1, 10), false, &metrics);
        }
        // "ka" was forgotten: this is a first miss again; "ke" enters on its second.
        cache.offer(b"ka", &value(1, 10), false, &metrics);
        cache.offer(b"ke", &value(1, 10), false, &metrics);
        assert!(cache.get(b"ka").is_none());
        assert!(cache.get(b"ke").is_some());
        // Missed, taken, missed again (the room it left taken by another): remembered once
        // more, and enters on the next miss.
        cache.remove(b"ke", &metrics);
        cache.offer(b"g0", &value(1, 10), false, &metrics);
        cache.offer(b"ke", &value(1, 10), false, &metrics);
        assert!(cache.get(b"ke").is_none());
        cache.offer(b"ke", &value(1, 10), false, &metrics);
        assert!(cache.get(b"ke").is_some());
    }

    #[test]
    fn a_scan_of_objects_read_once_leaves_the_hot_set_in_place() {
        let metrics = ObjectCacheMetrics::default();
        let cache = ObjectCache::new(64 << 10);
        cache.offer(b"hot", &value(1, 4 << 10), false, &metrics);
        // The scan's first objects take the room left; the rest find the cache full.
        for i in 0..1000u32 {
            cache.offer(&i.to_le_bytes(), &value(1, 4 << 10), false, &metrics);
        }
        assert!(cache.get(b"hot").is_some());
        assert_eq!(metrics.evictions.get(), 0);
    }
}
