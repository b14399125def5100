//! Entries by key in the order they were last used, with the bytes each is counted for: the
//! bookkeeping the memory cache ([`crate::cache`]) and the disk cache ([`crate::disk_cache`])
//! both keep (what they do with an entry that goes is theirs).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Entries `E` by key, least recently used first. `!Send` in use (each lives on its core).
pub(crate) struct Lru<E> {
    entries: HashMap<Bytes, Slot<E>>,
    /// Recency: use tick → key, the least recently used first.
    order: BTreeMap<u64, Bytes>,
    /// The last tick given to an entry used (they count up from [`FIRST_TICK`]).
    tick: u64,
    /// The last tick given to an entry put below every other (they count down from
    /// [`FIRST_TICK`]).
    coldest: u64,
    /// The bytes every entry is counted for, together.
    bytes: u64,
}

struct Slot<E> {
    entry: E,
    used: u64,
    bytes: u64,
}

/// Where the ticks start: entries used count up from it, entries put below every other
/// ([`Lru::insert_coldest`]) count down, and neither end is ever reached (2^62 each way).
const FIRST_TICK: u64 = 1 << 62;

impl<E> Default for Lru<E> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: FIRST_TICK,
            coldest: FIRST_TICK,
            bytes: 0,
        }
    }
}

impl<E> Lru<E> {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes the entries are counted for, together.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// `key`'s entry, its recency unchanged.
    pub(crate) fn peek(&self, key: &[u8]) -> Option<&E> {
        self.entries.get(key).map(|slot| &slot.entry)
    }

    /// `key`'s entry to change, its recency unchanged.
    pub(crate) fn peek_mut(&mut self, key: &[u8]) -> Option<&mut E> {
        self.entries.get_mut(key).map(|slot| &mut slot.entry)
    }

    /// `key`'s entry, marked as just used.
    pub(crate) fn touch(&mut self, key: &[u8]) -> Option<&mut E> {
        self.tick += 1;
        let slot = self.entries.get_mut(key)?;
        let old = std::mem::replace(&mut slot.used, self.tick);
        if let Some(k) = self.order.remove(&old) {
            self.order.insert(self.tick, k);
        }
        Some(&mut slot.entry)
    }

    /// Holds `entry` for `key`, counted for `bytes`, as the most recently used; the entry it
    /// replaces, if any.
    pub(crate) fn insert(&mut self, key: Bytes, entry: E, bytes: u64) -> Option<E> {
        let replaced = self.remove(&key);
        self.tick += 1;
        self.put(key, entry, bytes, self.tick);
        replaced
    }

    /// Holds `entry` for `key`, counted for `bytes`, as the least recently used of all (the
    /// first to go): what a cache finds again at start goes below what it has taken since.
    /// Does nothing if `key` is held.
    pub(crate) fn insert_coldest(&mut self, key: Bytes, entry: E, bytes: u64) {
        if self.entries.contains_key(&key) {
            return;
        }
        self.coldest -= 1;
        self.put(key, entry, bytes, self.coldest);
    }

    /// Holds `entry` for `key` (not held), counted for `bytes`, at tick `used` (not taken).
    fn put(&mut self, key: Bytes, entry: E, bytes: u64, used: u64) {
        self.order.insert(used, key.clone());
        self.entries.insert(key, Slot { entry, used, bytes });
        self.bytes += bytes;
        debug_assert_eq!(self.entries.len(), self.order.len());
    }

    /// Drops `key`'s entry; it, if there was one.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<E> {
        let slot = self.entries.remove(key)?;
        self.order.remove(&slot.used);
        self.bytes -= slot.bytes;
        Some(slot.entry)
    }

    /// The least recently used key.
    pub(crate) fn oldest(&self) -> Option<&Bytes> {
        self.order.values().next()
    }

    /// Every key, in no order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Bytes> {
        self.entries.keys()
    }

    /// Drops every entry.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_comes_first_and_bytes_follow_the_entries() {
        let mut lru = Lru::default();
        for (key, bytes) in [(&b"a"[..], 10), (b"b", 20), (b"c", 30)] {
            assert!(
                lru.insert(Bytes::copy_from_slice(key), key[0], bytes)
                    .is_none()
            );
        }
        assert_eq!((lru.len(), lru.bytes()), (3, 60));
        assert_eq!(lru.touch(b"a").copied(), Some(b'a'));
        assert_eq!(lru.oldest().map(|k| &k[..]), Some(&b"b"[..]));
        assert_eq!(lru.peek(b"b"), Some(&b'b'));
        assert_eq!(
            lru.oldest().map(|k| &k[..]),
            Some(&b"b"[..]),
            "a peek is no use"
        );
        assert_eq!(lru.insert(Bytes::from_static(b"b"), b'B', 5), Some(b'b'));
        assert_eq!((lru.len(), lru.bytes()), (3, 45));
        assert_eq!(lru.oldest().map(|k| &k[..]), Some(&b"c"[..]));
        assert_eq!(lru.remove(b"c"), Some(b'c'));
        assert_eq!(lru.remove(b"c"), None);
        assert_eq!((lru.len(), lru.bytes()), (2, 15));
        lru.clear();
        assert_eq!((lru.len(), lru.bytes(), lru.oldest()), (0, 0, None));
    }

    #[test]
    fn entries_put_coldest_go_below_every_other_in_the_order_they_come() {
        let mut lru = Lru::default();
        lru.insert(Bytes::from_static(b"new"), 1, 10);
        lru.insert_coldest(Bytes::from_static(b"found-newest"), 2, 10);
        lru.insert_coldest(Bytes::from_static(b"found-older"), 3, 10);
        lru.insert_coldest(Bytes::from_static(b"new"), 9, 99);
        assert_eq!(lru.peek(b"new"), Some(&1), "a key held is left as it is");
        assert_eq!((lru.len(), lru.bytes()), (3, 30));
        let mut order = Vec::new();
        while let Some(oldest) = lru.oldest().cloned() {
            lru.remove(&oldest);
            order.push(oldest);
        }
        assert_eq!(order, ["found-older", "found-newest", "new"]);
    }
}
