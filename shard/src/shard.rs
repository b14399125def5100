//! [`Shard`]: the per-core handle the gateway uses. It owns this core's engine and routes every
//! data call to the core owning the partition: a direct engine call when that is this core,
//! else exactly one message through [`crate::cross_core`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use leofs_engine::{Engine, Head, Hlc, PartitionId, PutValue, ScanEntry, Value};

use crate::cross_core::Forwarder;
use crate::http::ConnectionHub;
use crate::node::NodeShared;
use crate::{PartitionMap, ShardError};

/// Everything one core owns; reachable only from its own thread.
pub(crate) struct Core {
    pub(crate) id: usize,
    pub(crate) map: PartitionMap,
    pub(crate) engine: Engine,
    pub(crate) forwarder: Forwarder,
    pub(crate) connections: ConnectionHub,
    pub(crate) node: Arc<NodeShared>,
    /// Key locks, writes in flight, read leases and the collector's inbox (`objects`).
    pub(crate) objects: crate::objects::ObjectState,
}

/// Per-core handle given to the gateway. Clone, `!Send` (`Rc` inside). Every data call goes to
/// the core that owns the partition: a direct engine call if local, else one cross-core message.
#[derive(Clone)]
pub struct Shard {
    pub(crate) core: Rc<Core>,
}

impl Shard {
    /// This core's index (0-based).
    pub fn core_id(&self) -> usize {
        self.core.id
    }

    /// Number of cores (shards) of the node.
    pub fn core_count(&self) -> usize {
        self.core.map.cores()
    }

    /// The node's partition map.
    pub fn partition_map(&self) -> PartitionMap {
        self.core.map
    }

    /// The partition of a hash (`hash >> (64 - log2 P)`).
    pub fn partition_of(&self, hash: u64) -> PartitionId {
        self.core.map.partition_of(hash)
    }

    /// The core owning `partition` (partitions past the map's end are clamped to the last core).
    pub fn owner_of(&self, partition: PartitionId) -> usize {
        self.core
            .map
            .owner_of(partition.min(self.core.map.partitions() - 1))
    }

    /// Cross-core calls this core has forwarded since start (a metric).
    pub fn forwarded_calls(&self) -> u64 {
        self.core.forwarder.forwarded()
    }

    /// The owner of `partition`, checked against the map.
    fn route(&self, partition: PartitionId) -> Result<usize, ShardError> {
        let partitions = self.core.map.partitions();
        if partition >= partitions {
            return Err(ShardError::PartitionOutOfRange {
                partition,
                partitions,
            });
        }
        Ok(self.core.map.owner_of(partition))
    }

    /// The owner's engine must be the one serving: checked where a forwarded call lands.
    fn debug_assert_owns(&self, partition: PartitionId) {
        debug_assert_eq!(self.core.map.owner_of(partition), self.core.id);
    }

    /// Stores `value` under `key` on the owning core; returns the stored timestamp once durable.
    pub async fn put(
        &self,
        partition: PartitionId,
        key: Bytes,
        value: PutValue,
    ) -> Result<Hlc, ShardError> {
        let owner = self.route(partition)?;
        if owner == self.core.id {
            return Ok(self.core.engine.put(partition, &key, value).await?);
        }
        self.core
            .forwarder
            .call(owner, move |shard| async move {
                shard.debug_assert_owns(partition);
                shard.core.engine.put(partition, &key, value).await
            })
            .await?
            .map_err(ShardError::from)
    }

    /// Reads the newest value for `key`; None if absent or deleted.
    pub async fn get(
        &self,
        partition: PartitionId,
        key: Bytes,
    ) -> Result<Option<Value>, ShardError> {
        let owner = self.route(partition)?;
        if owner == self.core.id {
            return Ok(self.core.engine.get(partition, &key).await?);
        }
        self.core
            .forwarder
            .call(owner, move |shard| async move {
                shard.debug_assert_owns(partition);
                shard.core.engine.get(partition, &key).await
            })
            .await?
            .map_err(ShardError::from)
    }

    /// Reads `range` of the body of `key` (clamped to the body); None if absent or deleted.
    pub async fn get_range(
        &self,
        partition: PartitionId,
        key: Bytes,
        range: Range<u64>,
    ) -> Result<Option<Value>, ShardError> {
        let owner = self.route(partition)?;
        if owner == self.core.id {
            return Ok(self.core.engine.get_range(partition, &key, range).await?);
        }
        self.core
            .forwarder
            .call(owner, move |shard| async move {
                shard.debug_assert_owns(partition);
                shard.core.engine.get_range(partition, &key, range).await
            })
            .await?
            .map_err(ShardError::from)
    }

    /// Reads metadata and summary of `key` without its body; None if absent or deleted.
    pub async fn head(
        &self,
        partition: PartitionId,
        key: Bytes,
    ) -> Result<Option<Head>, ShardError> {
        let owner = self.route(partition)?;
        if owner == self.core.id {
            return Ok(self.core.engine.head(partition, &key).await?);
        }
        self.core
            .forwarder
            .call(owner, move |shard| async move {
                shard.debug_assert_owns(partition);
                shard.core.engine.head(partition, &key).await
            })
            .await?
            .map_err(ShardError::from)
    }

    /// Deletes `key` (a durable tombstone); returns the tombstone's timestamp, None if the key
    /// had no live value.
    pub async fn delete(
        &self,
        partition: PartitionId,
        key: Bytes,
        hlc: Option<Hlc>,
    ) -> Result<Option<Hlc>, ShardError> {
        let owner = self.route(partition)?;
        if owner == self.core.id {
            return Ok(self.core.engine.delete(partition, &key, hlc).await?);
        }
        self.core
            .forwarder
            .call(owner, move |shard| async move {
                shard.debug_assert_owns(partition);
                shard.core.engine.delete(partition, &key, hlc).await
            })
            .await?
            .map_err(ShardError::from)
    }

    /// Live keys starting with `prefix`, after `start_after`, across ALL cores, merged in key
    /// order, at most `limit`. Every core is asked in parallel for its first `limit` keys.
    pub async fn scan_all(
        &self,
        prefix: Bytes,
        start_after: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<ScanEntry>, ShardError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let remote = (0..self.core_count())
            .filter(|&core| core != self.core.id)
            .map(|core| {
                let (prefix, start_after) = (prefix.clone(), start_after.clone());
                self.core.forwarder.call(core, move |shard| async move {
                    shard
                        .core
                        .engine
                        .scan(&prefix, start_after.as_deref(), limit)
                })
            });
        let remote = futures_util::future::join_all(remote);
        let local = self
            .core
            .engine
            .scan(&prefix, start_after.as_deref(), limit);
        let mut pages = remote.await.into_iter().collect::<Result<Vec<_>, _>>()?;
        pages.push(local);
        Ok(merge_sorted(pages, limit))
    }

    /// A fresh timestamp from this core's engine clock.
    pub fn now(&self) -> Hlc {
        self.core.engine.now()
    }
}

/// K-way merge of pages each sorted by key (keys are disjoint across pages: each partition has
/// one owner), keeping the first `limit` entries.
pub(crate) fn merge_sorted(pages: Vec<Vec<ScanEntry>>, limit: usize) -> Vec<ScanEntry> {
    let total: usize = pages.iter().map(Vec::len).sum();
    let mut merged = Vec::with_capacity(total.min(limit));
    let mut cursors: Vec<std::vec::IntoIter<ScanEntry>> =
        pages.into_iter().map(Vec::into_iter).collect();
    let mut heads = BinaryHeap::with_capacity(cursors.len());
    for (page, cursor) in cursors.iter_mut().enumerate() {
        if let Some(entry) = cursor.next() {
            heads.push(Reverse(PageHead { entry, page }));
        }
    }
    while merged.len() < limit {
        let Some(Reverse(PageHead { entry, page })) = heads.pop() else {
            break;
        };
        merged.push(entry);
        if let Some(next) = cursors[page].next() {
            heads.push(Reverse(PageHead { entry: next, page }));
        }
    }
    merged
}

/// The current first entry of one page in the merge heap, ordered by key.
struct PageHead {
    entry: ScanEntry,
    page: usize,
}

impl PartialEq for PageHead {
    fn eq(&self, other: &Self) -> bool {
        self.entry.key == other.entry.key
    }
}

impl Eq for PageHead {}

impl PartialOrd for PageHead {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PageHead {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.entry
            .key
            .cmp(&other.entry.key)
            .then(self.page.cmp(&other.page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> ScanEntry {
        ScanEntry {
            partition: 0,
            key: Bytes::copy_from_slice(key.as_bytes()),
            hlc: Hlc::default(),
            summary: Default::default(),
            body_len: 0,
            tombstone: false,
        }
    }

    #[test]
    fn merge_interleaves_pages_in_key_order_and_stops_at_limit() {
        let pages = vec![
            vec![entry("a"), entry("d"), entry("g")],
            vec![entry("b"), entry("c")],
            vec![],
            vec![entry("e"), entry("f"), entry("h")],
        ];
        let keys = |v: Vec<ScanEntry>| v.into_iter().map(|e| e.key).collect::<Vec<_>>();
        let all = keys(merge_sorted(pages.clone(), 100));
        assert_eq!(
            all,
            ["a", "b", "c", "d", "e", "f", "g", "h"].map(|s| Bytes::from_static(s.as_bytes()))
        );
        assert_eq!(
            keys(merge_sorted(pages, 3)),
            ["a", "b", "c"].map(|s| Bytes::from_static(s.as_bytes()))
        );
    }
}
