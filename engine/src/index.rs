//! The in-memory index: per partition an ordered map key → newest record's location and facts.
//!
//! It decides which record wins for a key (newer HLC; equal HLC: higher LSN, which is how a
//! compaction relocation replaces the old location), forgets whole partitions (a partition
//! drop: every entry below the drop's LSN, and any such record applied later) and keeps
//! per-segment live byte counts so compaction knows what is worth moving. It never does I/O.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::ops::Bound;

use bytes::Bytes;

use crate::{Hlc, PartitionId, ScanEntry, Summary};

/// Where the newest record of a key lives and what the index knows of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Segment id holding the record.
    pub segment: u32,
    /// Byte offset of the record in the segment.
    pub offset: u32,
    /// Bytes of the record on disk (padding included).
    pub len: u32,
    /// True for a tombstone.
    pub tombstone: bool,
    pub hlc: Hlc,
    pub lsn: u64,
    pub summary: Summary,
    pub body_len: u64,
}

impl Entry {
    /// Whether `self` replaces `old` for the same key.
    pub(crate) fn wins_over(&self, old: &Entry) -> bool {
        (self.hlc, self.lsn) > (old.hlc, old.lsn)
    }

    fn scan_entry(&self, partition: PartitionId, key: &[u8]) -> ScanEntry {
        ScanEntry {
            partition,
            key: Bytes::copy_from_slice(key),
            hlc: self.hlc,
            summary: if self.tombstone {
                Summary::default()
            } else {
                self.summary
            },
            body_len: if self.tombstone { 0 } else { self.body_len },
            tombstone: self.tombstone,
        }
    }
}

/// Bytes of one key/value slot in a B-tree node: the key's `Box<[u8]>` and the [`Entry`].
const BTREE_SLOT_BYTES: u64 = (size_of::<Box<[u8]>>() + size_of::<Entry>()) as u64;
/// Estimated bytes per entry of the BTreeMap itself: a slot divided by an average node fill of
/// 3/4 (bulk-built maps start full, random inserts split nodes toward 1/2), plus 8 bytes for
/// node headers and internal nodes; see FORMAT.md.
pub(crate) const BTREE_BYTES_PER_ENTRY: u64 = BTREE_SLOT_BYTES * 4 / 3 + 8;
/// glibc malloc's per-allocation overhead and rounding for a key's heap block.
const MALLOC_OVERHEAD_BYTES: u64 = 8;
/// glibc malloc's smallest chunk.
const MALLOC_MIN_CHUNK_BYTES: u64 = 32;

fn key_heap_bytes(key_len: usize) -> u64 {
    ((key_len as u64 + MALLOC_OVERHEAD_BYTES).div_ceil(16) * 16).max(MALLOC_MIN_CHUNK_BYTES)
}

/// What applying a record to the index changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The record is now the key's newest; `replaced` is the previous newest, if any.
    Won { replaced: Option<Entry> },
    /// An entry at least as new exists; the record is dead on arrival.
    Lost,
    /// The record's partition was dropped at a higher LSN; the record is dead on arrival.
    Dropped,
}

/// What [`Index::bulk_load`] sorts: an item's partition, the first 8 key bytes after the
/// batch's common prefix (big-endian, zero-padded: ordered like the keys, ties possible) and
/// the item's position.
struct SortSlot {
    partition: PartitionId,
    key_bytes: u64,
    index: usize,
}

/// Length of the prefix shared by all keys.
fn common_prefix_len<'a>(mut keys: impl Iterator<Item = &'a [u8]>) -> usize {
    let Some(first) = keys.next() else {
        return 0;
    };
    keys.fold(first.len(), |common, key| {
        first[..common]
            .iter()
            .zip(key)
            .take_while(|(a, b)| a == b)
            .count()
    })
}

/// The 8 key bytes after `skip` as a big-endian number, zero-padded; comparing two of them
/// orders the keys correctly whenever they differ (a zero-padded tie needs the whole keys).
fn key_bytes_after(key: &[u8], skip: usize) -> u64 {
    let mut bytes = [0u8; 8];
    let tail = key.get(skip..).unwrap_or_default();
    let n = tail.len().min(8);
    bytes[..n].copy_from_slice(&tail[..n]);
    u64::from_be_bytes(bytes)
}

/// All keys of one engine.
#[derive(Default)]
pub(crate) struct Index {
    parts: BTreeMap<PartitionId, BTreeMap<Box<[u8]>, Entry>>,
    /// Per dropped partition, the LSN of its newest drop: records of the partition with a lower
    /// LSN are never indexed again (a streamed put that completes after the drop). Not kept in
    /// checkpoints: see FORMAT.md §4.1 for why replay rebuilds what it needs.
    dropped_below: HashMap<PartitionId, u64>,
    /// Live bytes per segment id (records the index points to); ids are small and dense.
    live_by_segment: Vec<u64>,
    entries: u64,
    tombstones: u64,
    key_heap_bytes: u64,
}

impl Index {
    /// The newest entry for a key.
    pub(crate) fn get(&self, partition: PartitionId, key: &[u8]) -> Option<&Entry> {
        self.parts.get(&partition)?.get(key)
    }

    /// Whether a record of `partition` with this LSN was written before a drop of the partition.
    fn is_dropped(&self, partition: PartitionId, lsn: u64) -> bool {
        !self.dropped_below.is_empty()
            && self
                .dropped_below
                .get(&partition)
                .is_some_and(|&below| lsn < below)
    }

    /// Applies a record; it replaces the current entry only if it wins (see [`Entry::wins_over`])
    /// and its partition was not dropped after it was written.
    pub(crate) fn apply(&mut self, partition: PartitionId, key: &[u8], entry: Entry) -> Applied {
        if self.is_dropped(partition, entry.lsn) {
            return Applied::Dropped;
        }
        let part = self.parts.entry(partition).or_default();
        if let Some(old) = part.get_mut(key) {
            if !entry.wins_over(old) {
                return Applied::Lost;
            }
            let replaced = *old;
            *old = entry;
            self.tombstones = self.tombstones + entry.tombstone as u64 - replaced.tombstone as u64;
            self.sub_live(replaced.segment, replaced.len);
            self.add_live(entry.segment, entry.len);
            return Applied::Won {
                replaced: Some(replaced),
            };
        }
        part.insert(key.into(), entry);
        self.entries += 1;
        self.tombstones += entry.tombstone as u64;
        self.key_heap_bytes += key_heap_bytes(key.len());
        self.add_live(entry.segment, entry.len);
        Applied::Won { replaced: None }
    }

    /// Adds many entries at once: sorted and deduplicated (the winner of each key is kept),
    /// then each partition's map is bulk-built (far faster than one insert per record, and
    /// the nodes come out full). Existing keys are merged through [`Index::apply`].
    ///
    /// The sort moves 24-byte [`SortSlot`]s, not the 104-byte items, and compares whole keys
    /// only when partition and the 8 key bytes after the batch's common prefix tie: replay
    /// spent most of its time in `memcmp` through boxed keys before.
    pub(crate) fn bulk_load(&mut self, mut items: Vec<(PartitionId, Box<[u8]>, Entry)>) {
        if !self.dropped_below.is_empty() {
            items.retain(|(partition, _, e)| !self.is_dropped(*partition, e.lsn));
        }
        let common = common_prefix_len(items.iter().map(|i| &i.1[..]));
        let mut order: Vec<SortSlot> = items
            .iter()
            .enumerate()
            .map(|(index, (partition, key, _))| SortSlot {
                partition: *partition,
                key_bytes: key_bytes_after(key, common),
                index,
            })
            .collect();
        let same_key = |a: &SortSlot, b: &SortSlot| {
            (a.partition, a.key_bytes) == (b.partition, b.key_bytes)
                && items[a.index].1 == items[b.index].1
        };
        order.sort_unstable_by(|a, b| {
            (a.partition, a.key_bytes)
                .cmp(&(b.partition, b.key_bytes))
                .then_with(|| {
                    let (x, y) = (&items[a.index], &items[b.index]);
                    x.1.cmp(&y.1)
                        .then((x.2.hlc, x.2.lsn).cmp(&(y.2.hlc, y.2.lsn)))
                })
        });
        // Keep the last (winning) slot of each run of equal keys.
        let mut winners = Vec::with_capacity(order.len());
        for (i, slot) in order.iter().enumerate() {
            if order.get(i + 1).is_none_or(|next| !same_key(slot, next)) {
                winners.push((slot.partition, slot.index));
            }
        }
        drop(order);
        let mut rest = winners.into_iter().peekable();
        while let Some(&(partition, _)) = rest.peek() {
            let mut run = Vec::new();
            while let Some((_, index)) = rest.next_if(|w| w.0 == partition) {
                let item = &mut items[index];
                run.push((std::mem::take(&mut item.1), item.2));
            }
            if self.parts.get(&partition).is_some_and(|p| !p.is_empty()) {
                for (key, entry) in run {
                    self.apply(partition, &key, entry);
                }
                continue;
            }
            for (key, entry) in &run {
                self.entries += 1;
                self.tombstones += entry.tombstone as u64;
                self.key_heap_bytes += key_heap_bytes(key.len());
                self.add_live(entry.segment, entry.len);
            }
            self.parts.insert(partition, run.into_iter().collect());
        }
    }

    /// Removes the key if its entry is still exactly `expected` (compaction dropping a tombstone).
    pub(crate) fn remove_if(
        &mut self,
        partition: PartitionId,
        key: &[u8],
        expected: &Entry,
    ) -> bool {
        let Some(part) = self.parts.get_mut(&partition) else {
            return false;
        };
        if part.get(key) != Some(expected) {
            return false;
        }
        part.remove(key);
        if part.is_empty() {
            self.parts.remove(&partition);
        }
        self.entries -= 1;
        self.tombstones -= expected.tombstone as u64;
        self.key_heap_bytes -= key_heap_bytes(key.len());
        self.sub_live(expected.segment, expected.len);
        true
    }

    /// Applies a drop of `partition` with LSN `lsn`: removes every entry of the partition with a
    /// lower LSN and refuses such records from now on; returns how many entries were removed.
    pub(crate) fn drop_partition(&mut self, partition: PartitionId, lsn: u64) -> u64 {
        let below = self.dropped_below.entry(partition).or_default();
        *below = (*below).max(lsn);
        let Index {
            parts,
            live_by_segment,
            entries,
            tombstones,
            key_heap_bytes: heap,
            ..
        } = self;
        let Some(part) = parts.remove(&partition) else {
            return 0;
        };
        let mut removed = 0u64;
        // Usually nothing is kept: walking the map once beats removing keys one by one, and
        // what is kept (in order) is bulk-built.
        let kept: BTreeMap<Box<[u8]>, Entry> = part
            .into_iter()
            .filter(|(key, e)| {
                if e.lsn > lsn {
                    return true;
                }
                removed += 1;
                *tombstones -= e.tombstone as u64;
                *heap -= key_heap_bytes(key.len());
                sub_live(live_by_segment, e.segment, e.len);
                false
            })
            .collect();
        *entries -= removed;
        if !kept.is_empty() {
            parts.insert(partition, kept);
        }
        removed
    }

    /// Drops every entry pointing into `segment` (its content is gone); returns how many.
    pub(crate) fn drop_segment(&mut self, segment: u32) -> u64 {
        let mut dropped = Vec::new();
        for (&p, part) in &self.parts {
            for (k, e) in part {
                if e.segment == segment {
                    dropped.push((p, k.clone(), *e));
                }
            }
        }
        for (p, k, e) in &dropped {
            self.remove_if(*p, k, e);
        }
        dropped.len() as u64
    }

    fn add_live(&mut self, segment: u32, len: u32) {
        let i = segment as usize;
        if i >= self.live_by_segment.len() {
            self.live_by_segment.resize(i + 1, 0);
        }
        self.live_by_segment[i] += len as u64;
    }

    fn sub_live(&mut self, segment: u32, len: u32) {
        sub_live(&mut self.live_by_segment, segment, len);
    }

    /// Live bytes in a segment.
    pub(crate) fn live_bytes(&self, segment: u32) -> u64 {
        self.live_by_segment
            .get(segment as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Live bytes over all segments.
    pub(crate) fn live_bytes_total(&self) -> u64 {
        self.live_by_segment.iter().sum()
    }

    /// Number of keys (live and tombstones).
    pub(crate) fn len(&self) -> u64 {
        self.entries
    }

    /// Number of keys whose newest record is a tombstone.
    pub(crate) fn tombstones(&self) -> u64 {
        self.tombstones
    }

    /// Estimated bytes of memory per entry (see FORMAT.md, "Memory per index entry").
    pub(crate) fn bytes_per_entry(&self) -> u64 {
        match self.entries {
            0 => BTREE_BYTES_PER_ENTRY + key_heap_bytes(0),
            n => BTREE_BYTES_PER_ENTRY + self.key_heap_bytes / n,
        }
    }

    /// Heap bytes of all keys (each at least its length: a safe upper bound of key bytes).
    pub(crate) fn key_heap_bytes_total(&self) -> u64 {
        self.key_heap_bytes
    }

    /// Estimated bytes of memory of the whole index.
    pub(crate) fn bytes_total(&self) -> u64 {
        self.entries * BTREE_BYTES_PER_ENTRY + self.key_heap_bytes
    }

    /// Partitions holding at least one key.
    pub(crate) fn partitions(&self) -> Vec<PartitionId> {
        self.parts.keys().copied().collect()
    }

    /// Every entry, partition by partition in key order (checkpoints).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (PartitionId, &[u8], &Entry)> {
        self.parts
            .iter()
            .flat_map(|(&p, part)| part.iter().map(move |(k, e)| (p, &k[..], e)))
    }

    /// Keys of one partition after `start_after`, at most `limit`.
    pub(crate) fn scan_partition(
        &self,
        partition: PartitionId,
        start_after: Option<&[u8]>,
        limit: usize,
        include_tombstones: bool,
    ) -> Vec<ScanEntry> {
        let Some(part) = self.parts.get(&partition) else {
            return Vec::new();
        };
        range_after(part, start_after)
            .filter(|(_, e)| include_tombstones || !e.tombstone)
            .take(limit)
            .map(|(k, e)| e.scan_entry(partition, k))
            .collect()
    }

    /// Keys of one partition that start with `prefix`, after `start_after`, in key order, at
    /// most `limit`: live ones, and tombstones too when `include_tombstones`. One seek in the partition's ordered
    /// index, then a walk that never leaves the prefix.
    pub(crate) fn scan_partition_prefix(
        &self,
        partition: PartitionId,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
        include_tombstones: bool,
    ) -> Vec<ScanEntry> {
        let Some(part) = self.parts.get(&partition) else {
            return Vec::new();
        };
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        part.range::<[u8], _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| include_tombstones || !e.tombstone)
            .take(limit)
            .map(|(k, e)| e.scan_entry(partition, k))
            .collect()
    }

    /// Keys of all partitions with `prefix`, after `start_after`, merged in key order: live
    /// ones, and tombstones too when `include_tombstones`.
    pub(crate) fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
        include_tombstones: bool,
    ) -> Vec<ScanEntry> {
        let lower = match start_after {
            Some(s) if s >= prefix => Some(s),
            _ => None,
        };
        let mut iters: Vec<_> = self
            .parts
            .iter()
            .map(|(&p, part)| {
                let it: Box<dyn Iterator<Item = (&Box<[u8]>, &Entry)>> = match lower {
                    Some(s) => Box::new(range_after(part, Some(s))),
                    None => {
                        Box::new(part.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded)))
                    }
                };
                (
                    p,
                    it.filter(move |(_, e)| include_tombstones || !e.tombstone)
                        .take_while(|(k, _)| k.starts_with(prefix)),
                )
            })
            .collect();
        // Heads of every partition's iterator; the heap orders them by (key, iterator index).
        let mut heads: Vec<Option<&Entry>> = vec![None; iters.len()];
        let mut heap = BinaryHeap::new();
        for (i, (_, it)) in iters.iter_mut().enumerate() {
            if let Some((k, e)) = it.next() {
                heads[i] = Some(e);
                heap.push(Reverse((&k[..], i)));
            }
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(Reverse((k, i))) = heap.pop() else {
                break;
            };
            if let Some(e) = heads[i].take() {
                out.push(e.scan_entry(iters[i].0, k));
            }
            if let Some((k, e)) = iters[i].1.next() {
                heads[i] = Some(e);
                heap.push(Reverse((&k[..], i)));
            }
        }
        out
    }
}

/// Takes a record's bytes off its segment's live count.
fn sub_live(live_by_segment: &mut [u64], segment: u32, len: u32) {
    if let Some(v) = live_by_segment.get_mut(segment as usize) {
        *v = v.saturating_sub(len as u64);
    }
}

fn range_after<'a>(
    part: &'a BTreeMap<Box<[u8]>, Entry>,
    start_after: Option<&[u8]>,
) -> std::collections::btree_map::Range<'a, Box<[u8]>, Entry> {
    match start_after {
        Some(s) => part.range::<[u8], _>((Bound::Excluded(s), Bound::Unbounded)),
        None => part.range::<[u8], _>(..),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(physical_us: u64, lsn: u64, segment: u32, tombstone: bool) -> Entry {
        Entry {
            segment,
            offset: 4096,
            len: 200,
            tombstone,
            hlc: Hlc {
                physical_us,
                logical: 0,
                node_id: 0,
            },
            lsn,
            summary: Summary {
                size: 5,
                ..Summary::default()
            },
            body_len: 5,
        }
    }

    #[test]
    fn newer_hlc_wins_and_equal_hlc_higher_lsn_wins() {
        let mut idx = Index::default();
        assert_eq!(
            idx.apply(1, b"k", entry(10, 1, 0, false)),
            Applied::Won { replaced: None }
        );
        assert_eq!(idx.apply(1, b"k", entry(5, 2, 0, false)), Applied::Lost);
        assert!(matches!(
            idx.apply(1, b"k", entry(10, 3, 1, false)),
            Applied::Won { replaced: Some(_) }
        ));
        assert_eq!(idx.get(1, b"k").unwrap().segment, 1);
        assert_eq!(idx.live_bytes(0), 0);
        assert_eq!(idx.live_bytes(1), 200);
        assert!(matches!(
            idx.apply(1, b"k", entry(11, 4, 1, true)),
            Applied::Won { .. }
        ));
        assert_eq!(idx.tombstones(), 1);
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn scan_merges_partitions_in_key_order_with_prefix_and_marker() {
        let mut idx = Index::default();
        for (p, k) in [(1, "a/1"), (2, "a/2"), (1, "a/3"), (3, "b/1"), (2, "a/0")] {
            idx.apply(p, k.as_bytes(), entry(1, 1, 0, false));
        }
        idx.apply(3, b"a/4", entry(1, 1, 0, true));
        let keys = |v: Vec<ScanEntry>| {
            v.into_iter()
                .map(|e| String::from_utf8(e.key.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(idx.scan(b"a/", None, 10, false)),
            ["a/0", "a/1", "a/2", "a/3"]
        );
        assert_eq!(
            keys(idx.scan(b"a/", Some(b"a/1"), 2, false)),
            ["a/2", "a/3"]
        );
        assert_eq!(keys(idx.scan(b"", Some(b"a/3"), 10, false)), ["b/1"]);
        assert_eq!(keys(idx.scan(b"", Some(b"a/3"), 10, true)), ["a/4", "b/1"]);
        assert_eq!(keys(idx.scan_partition(3, None, 10, true)), ["a/4", "b/1"]);
        assert_eq!(keys(idx.scan_partition(3, None, 10, false)), ["b/1"]);
        assert_eq!(idx.partitions(), [1, 2, 3]);
        // One partition's keys under a prefix: the walk stops at the prefix's end.
        idx.apply(1, b"a/5", entry(1, 1, 0, true));
        idx.apply(1, b"b/0", entry(1, 1, 0, false));
        assert_eq!(
            keys(idx.scan_partition_prefix(1, b"a/", None, 10, false)),
            ["a/1", "a/3"]
        );
        assert_eq!(
            keys(idx.scan_partition_prefix(1, b"a/", None, 10, true)),
            ["a/1", "a/3", "a/5"]
        );
        assert_eq!(
            keys(idx.scan_partition_prefix(1, b"a/", None, 1, false)),
            ["a/1"]
        );
        assert!(
            idx.scan_partition_prefix(1, b"a/9", None, 10, true)
                .is_empty()
        );
        assert!(
            idx.scan_partition_prefix(7, b"a/", None, 10, true)
                .is_empty()
        );
        assert_eq!(
            keys(idx.scan_partition_prefix(1, b"a/", Some(b"a/1"), 10, false)),
            ["a/3"]
        );
        assert_eq!(
            keys(idx.scan_partition_prefix(1, b"a/", Some(b"0"), 10, false)),
            ["a/1", "a/3"]
        );
    }

    #[test]
    fn entry_layout_is_compact() {
        assert_eq!(size_of::<Entry>(), 80);
        assert_eq!(BTREE_BYTES_PER_ENTRY, 136);
    }

    #[test]
    fn bulk_load_keeps_the_winner_and_merges() {
        let mut idx = Index::default();
        idx.apply(2, b"old", entry(1, 1, 0, false));
        let items = vec![
            (1, b"b".to_vec().into_boxed_slice(), entry(5, 3, 1, false)),
            (1, b"a".to_vec().into_boxed_slice(), entry(9, 2, 1, true)),
            (1, b"b".to_vec().into_boxed_slice(), entry(7, 4, 2, false)),
            (1, b"b".to_vec().into_boxed_slice(), entry(6, 5, 1, false)),
            (2, b"new".to_vec().into_boxed_slice(), entry(1, 6, 2, false)),
        ];
        idx.bulk_load(items);
        assert_eq!(idx.get(1, b"b").unwrap().hlc.physical_us, 7);
        assert!(idx.get(1, b"a").unwrap().tombstone);
        assert!(idx.get(2, b"old").is_some() && idx.get(2, b"new").is_some());
        assert_eq!((idx.len(), idx.tombstones()), (4, 1));
        assert_eq!(idx.live_bytes(1), 200);
        assert_eq!(idx.live_bytes(2), 400);
        assert_eq!(idx.live_bytes(0), 200);
    }

    #[test]
    fn bulk_load_orders_keys_that_tie_on_the_sort_prefix_like_apply() {
        // Long shared prefixes, keys that are prefixes of others, zero bytes where the sort
        // prefix pads with zeros, repeated keys: bulk_load must agree with one apply per record.
        let keys: [&[u8]; 9] = [
            b"shared/prefix/aaaaaaaa1",
            b"shared/prefix/aaaaaaaa",
            b"shared/prefix/aaaaaaaa\0",
            b"shared/prefix/aaaaaaaa\0\0",
            b"shared/prefix/b",
            b"shared/prefix/",
            b"shared/prefix/aaaaaaaa1",
            b"shared/prefix/aaaaaaab",
            b"shared/prefix/aaaaaaaa",
        ];
        let mut bulk = Index::default();
        let mut one_by_one = Index::default();
        let mut items = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let e = entry(100 - i as u64 % 3, i as u64 + 1, i as u32 % 2, i % 4 == 0);
            one_by_one.apply(7, key, e);
            items.push((7, key.to_vec().into_boxed_slice(), e));
        }
        bulk.bulk_load(items);
        let all = |idx: &Index| {
            idx.iter()
                .map(|(p, k, e)| (p, k.to_vec(), *e))
                .collect::<Vec<_>>()
        };
        assert_eq!(all(&bulk), all(&one_by_one));
        assert_eq!(bulk.len(), 7);
        assert_eq!(
            common_prefix_len(keys.iter().copied()),
            b"shared/prefix/".len()
        );
        assert_eq!(common_prefix_len(std::iter::empty()), 0);
    }

    #[test]
    fn drop_partition_forgets_lower_lsns_now_and_later() {
        let mut idx = Index::default();
        idx.apply(1, b"a", entry(10, 1, 0, false));
        idx.apply(1, b"b", entry(10, 2, 1, true));
        idx.apply(2, b"a", entry(10, 3, 0, false));
        idx.apply(1, b"c", entry(1, 5, 1, false));
        assert_eq!(
            idx.drop_partition(1, 4),
            2,
            "a and b are below the drop, c above"
        );
        assert!(idx.get(1, b"a").is_none() && idx.get(1, b"b").is_none());
        assert!(idx.get(1, b"c").is_some() && idx.get(2, b"a").is_some());
        assert_eq!((idx.len(), idx.tombstones()), (2, 0));
        assert_eq!((idx.live_bytes(0), idx.live_bytes(1)), (200, 200));
        // A record written before the drop but applied after it (a streamed put) stays out.
        assert_eq!(
            idx.apply(1, b"late", entry(99, 3, 0, false)),
            Applied::Dropped
        );
        assert_eq!(
            idx.apply(1, b"after", entry(1, 6, 0, false)),
            Applied::Won { replaced: None }
        );
        idx.bulk_load(vec![
            (1, b"old".to_vec().into_boxed_slice(), entry(5, 2, 0, false)),
            (1, b"new".to_vec().into_boxed_slice(), entry(5, 7, 0, false)),
        ]);
        assert!(idx.get(1, b"old").is_none() && idx.get(1, b"new").is_some());
        assert_eq!(idx.drop_partition(1, 8), 3);
        assert_eq!(idx.drop_partition(3, 9), 0, "a partition with no entries");
        assert_eq!(idx.partitions(), [2]);
        assert_eq!(idx.live_bytes_total(), 200);
        assert_eq!(idx.key_heap_bytes_total(), key_heap_bytes(1));
    }

    #[test]
    fn remove_if_and_memory_estimate() {
        let mut idx = Index::default();
        let e = entry(1, 1, 4, true);
        idx.apply(9, b"key", e);
        assert!(idx.bytes_per_entry() >= BTREE_BYTES_PER_ENTRY + 32);
        assert!(!idx.remove_if(9, b"key", &entry(2, 1, 4, true)));
        assert!(idx.remove_if(9, b"key", &e));
        assert_eq!(idx.len(), 0);
        assert_eq!(idx.live_bytes_total(), 0);
        assert!(idx.partitions().is_empty());
    }
}
