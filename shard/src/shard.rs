//! [`Shard`]: the per-core handle the gateway uses. It owns this core's engine and sends every
//! data call as a [`StorageRequest`] to the vnode the ring routes its partition to: this core's
//! executor when that is this core, else exactly one message through [`crate::cross_core`].

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::Either;
use leofs_engine::{Engine, Head, Hlc, HlcClock, PartitionId, PutValue, ScanEntry, Value};

use crate::cross_core::Forwarder;
use crate::http::ConnectionHub;
use crate::node::NodeShared;
use crate::remote::RemotePeers;
use crate::request::{StorageRequest, StorageResponse};
use crate::ring::{NodeId, ReadPlan, RingView, Vnode};
use crate::{PartitionMap, ShardError};

/// Everything one core owns; reachable only from its own thread.
pub(crate) struct Core {
    pub(crate) id: usize,
    /// The node this core belongs to (its id in the ring).
    pub(crate) node_id: NodeId,
    pub(crate) map: PartitionMap,
    /// The ring every request is routed by.
    pub(crate) ring: RefCell<Arc<RingView>>,
    /// None on a node without the storage role.
    pub(crate) engine: Option<Engine>,
    /// Timestamps on a node without storage (with storage, the engine's clock).
    pub(crate) clock: HlcClock,
    pub(crate) forwarder: Forwarder,
    pub(crate) connections: ConnectionHub,
    /// The other nodes this core calls, and its wire counters.
    pub(crate) remote: RemotePeers,
    pub(crate) node: Arc<NodeShared>,
    /// Key locks, writes in flight, read leases and the collector's inbox (`objects`).
    pub(crate) objects: crate::objects::ObjectState,
    /// Requests this core answered, by operation and status.
    pub(crate) requests: RefCell<crate::metrics::RequestMetrics>,
    /// The gateway's object cache on this core.
    pub(crate) object_cache: crate::metrics::ObjectCacheMetrics,
    /// The core's lifecycle worker's counters.
    pub(crate) lifecycle: crate::metrics::LifecycleMetrics,
    /// The hints this core holds for replicas that missed writes (`hinted`).
    pub(crate) hints: crate::hinted::HintBook,
    /// Watermarks and passes of anti-entropy (`antientropy`).
    pub(crate) anti_entropy: crate::antientropy::AntiEntropyBook,
    /// Anti-entropy and hint settings.
    pub(crate) replication: crate::antientropy::ReplicationConfig,
}

impl Core {
    /// This core's engine, or [`ShardError::NoStorage`] on a node without the storage role.
    pub(crate) fn engine(&self) -> Result<&Engine, ShardError> {
        self.engine.as_ref().ok_or(ShardError::NoStorage)
    }
}

/// Per-core handle given to the gateway. Clone, `!Send` (`Rc` inside). Every data call goes to
/// the core that holds the partition: this core's executor if local, else one cross-core message.
#[derive(Clone)]
pub struct Shard {
    pub(crate) core: Rc<Core>,
    /// The quorums (W, R, D) of the bucket this handle serves, when it overrides the
    /// cluster's ([`Shard::with_levels`]).
    pub(crate) bucket_levels: Option<(u16, u16, u16)>,
}

impl Shard {
    /// This handle with a bucket's own quorums (W, R, D), used instead of the cluster's when
    /// they fit the ring's N (None: the cluster's).
    pub fn with_levels(&self, levels: Option<(u16, u16, u16)>) -> Shard {
        Shard {
            core: self.core.clone(),
            bucket_levels: levels,
        }
    }

    /// This core's index (0-based).
    pub fn core_id(&self) -> usize {
        self.core.id
    }

    /// Whether this core is shutting down (its services were told to stop): a periodic task
    /// of a service ends then.
    pub fn is_stopping(&self) -> bool {
        self.core.connections.is_stopping()
    }

    /// The gateway's object cache counters of this core (the gateway keeps them; the core's
    /// stats report them).
    pub fn object_cache_metrics(&self) -> &crate::metrics::ObjectCacheMetrics {
        &self.core.object_cache
    }

    /// The counters of this core's lifecycle worker (kept by the gateway's worker).
    pub fn lifecycle_metrics(&self) -> &crate::metrics::LifecycleMetrics {
        &self.core.lifecycle
    }

    /// Counts a request this core answered (see [`crate::metrics`]).
    pub fn record_request(
        &self,
        operation: &'static str,
        status: u16,
        latency: std::time::Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.core
            .requests
            .borrow_mut()
            .record(operation, status, latency, bytes_in, bytes_out);
    }

    /// Number of cores (shards) of the node.
    pub fn core_count(&self) -> usize {
        self.core.map.cores()
    }

    /// The node's partition map.
    pub fn partition_map(&self) -> PartitionMap {
        self.core.map
    }

    /// The ring this core routes by.
    pub fn ring(&self) -> Arc<RingView> {
        self.core.ring.borrow().clone()
    }

    /// The partition of a hash (`hash >> (64 - log2 P)`).
    pub fn partition_of(&self, hash: u64) -> PartitionId {
        self.core.ring.borrow().partition_of(hash)
    }

    /// Cross-core calls this core has forwarded since start (a metric).
    pub fn forwarded_calls(&self) -> u64 {
        self.core.forwarder.forwarded()
    }

    /// The vnode that serves `partition`: its first replica in the ring known up (the
    /// partition's serializing replica), or its first replica when none is.
    pub(crate) fn vnode_of(&self, partition: PartitionId) -> Result<Vnode, ShardError> {
        let ring = self.core.ring.borrow();
        let replicas = ring.route(partition)?;
        if replicas.len() == 1 {
            return Ok(replicas[0]);
        }
        Ok(replicas
            .iter()
            .copied()
            .find(|v| self.is_up(*v))
            .unwrap_or(replicas[0]))
    }

    /// This core as a vnode.
    pub(crate) fn here(&self) -> Vnode {
        Vnode {
            node: self.core.node_id,
            // PartitionMap caps cores at MAX_CORES (1024), which fits u16.
            shard: self.core.id as u16,
        }
    }

    /// Partitions whose background decisions this core makes: those it is the first replica
    /// of in the ring, so that one core decides for each partition (a lifecycle action is
    /// taken once in the cluster, not once per replica).
    pub fn partitions_led_here(&self) -> Vec<PartitionId> {
        let ring = self.ring();
        (0..ring.partitions())
            .filter(|p| self.leads(&ring, *p))
            .collect()
    }

    /// Whether this core is still the first replica of `partition` in the ring it routes by
    /// now (a worker deciding for a partition checks it before each partition).
    pub fn leads_partition(&self, partition: PartitionId) -> bool {
        self.leads(&self.ring(), partition)
    }

    fn leads(&self, ring: &RingView, partition: PartitionId) -> bool {
        ring.route(partition)
            .is_ok_and(|replicas| replicas.first() == Some(&self.here()))
    }

    /// This core's own live records of `partition` under `prefix`, after `start_after`, at
    /// most `limit`, from its index (no I/O): what a background worker deciding for the
    /// partition reads.
    pub fn scan_local(
        &self,
        partition: PartitionId,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<ScanEntry>, ShardError> {
        Ok(self
            .core
            .engine()?
            .scan_partition_prefix(partition, prefix, start_after, limit, false))
    }

    /// Partitions this core is the first replica of.
    pub(crate) fn partitions_owned(&self) -> u32 {
        self.ring().partitions_first_on(self.here())
    }

    /// Serves `request` on `vnode`: a core of this node (see [`Shard::send_to`]) or a shard
    /// of another node over the wire. A request that changes object state runs detached from
    /// the caller either way.
    pub async fn send_to_vnode(
        &self,
        vnode: Vnode,
        request: StorageRequest,
    ) -> Result<StorageResponse, ShardError> {
        self.send_to_vnode_as(vnode, request, Traffic::Foreground)
            .await
    }

    /// Serves `request` on `vnode` as [`Shard::send_to_vnode`] does, sent as `traffic` (a
    /// request of the node's background work is marked so on the wire).
    pub(crate) async fn send_to_vnode_as(
        &self,
        vnode: Vnode,
        request: StorageRequest,
        traffic: Traffic,
    ) -> Result<StorageResponse, ShardError> {
        if vnode.node == self.core.node_id {
            return self.send_to(usize::from(vnode.shard), request).await;
        }
        if request.runs_detached() {
            let shard = self.clone();
            monoio::spawn(async move { shard.call_remote(vnode, request, traffic).await }).await
        } else {
            self.call_remote(vnode, request, traffic).await
        }
    }

    /// Posts a one-way `request` to `vnode` without waiting (releases and abandonments from
    /// `Drop`).
    pub(crate) fn post_to_vnode(&self, vnode: Vnode, request: StorageRequest) {
        if vnode.node == self.core.node_id {
            self.core.forwarder.post(usize::from(vnode.shard), request);
        } else {
            self.post_remote(vnode, request);
        }
    }

    /// Serves `request` on core `core` of this node: this core's executor, or one message to
    /// that core, which refuses it if it does not hold the request's partition. A request that
    /// changes object state runs detached from the caller (it finishes even if the caller goes
    /// away).
    pub async fn send_to(
        &self,
        core: usize,
        request: StorageRequest,
    ) -> Result<StorageResponse, ShardError> {
        if core >= self.core_count() {
            return Err(ShardError::NotHeldHere {
                partition: request.partition().unwrap_or(0),
                core,
                epoch: self.core.ring.borrow().epoch(),
            });
        }
        match (core == self.core.id, request.runs_detached()) {
            (true, false) => self.execute(request).await,
            (true, true) => {
                let shard = self.clone();
                monoio::spawn(async move { shard.execute(request).await }).await
            }
            (false, false) => self.core.forwarder.call(core, request).await,
            (false, true) => {
                let shard = self.clone();
                monoio::spawn(async move { shard.core.forwarder.call(core, request).await }).await
            }
        }
    }

    /// Serves a request that names its partition on the vnode the ring routes it to (with
    /// N > 1, the partition's first replica up; if that one cannot be reached, the next).
    pub(crate) async fn send(
        &self,
        request: StorageRequest,
    ) -> Result<StorageResponse, ShardError> {
        let partition = request.partition().ok_or(ShardError::UnaddressedRequest {
            kind: request.kind(),
        })?;
        let vnode = self.vnode_of(partition)?;
        if !self.replicated() {
            return self.send_to_vnode(vnode, request).await;
        }
        match self.send_to_vnode(vnode, request.clone()).await {
            // The replica failed (it is down from now on): the next one up serves it.
            Err(ShardError::Wire(e)) => match self.vnode_of(partition)? {
                next if next != vnode => {
                    tracing::debug!(error = %e, node = vnode.node, partition, "a replica failed; the next one serves the request");
                    self.send_to_vnode(next, request).await
                }
                _ => Err(ShardError::Wire(e)),
            },
            answer => answer,
        }
    }

    /// Stores `value` under `key` on the partition's replicas (W of them durably, with N > 1);
    /// returns the stored timestamp once durable.
    pub async fn put(
        &self,
        partition: PartitionId,
        key: Bytes,
        value: PutValue,
    ) -> Result<Hlc, ShardError> {
        if !self.replicated() {
            return self
                .send(StorageRequest::Put {
                    partition,
                    key,
                    value,
                    fresh: false,
                })
                .await?
                .into_stored();
        }
        let stamp = value.hlc.unwrap_or_else(|| self.now());
        let (stored, _) = self
            .write_everywhere(partition, self.levels().w, stamp, |hlc| {
                StorageRequest::Put {
                    partition,
                    key: key.clone(),
                    value: PutValue {
                        hlc: Some(hlc),
                        ..value.clone()
                    },
                    fresh: true,
                }
            })
            .await?;
        Ok(stored)
    }

    /// Reads the newest value for `key`; None if absent or deleted.
    pub async fn get(
        &self,
        partition: PartitionId,
        key: Bytes,
    ) -> Result<Option<Value>, ShardError> {
        let body = StorageRequest::Get {
            partition,
            key: key.clone(),
        };
        self.read(partition, key, body, self.levels().r)
            .await?
            .into_value()
    }

    /// Reads `range` of the body of `key` (clamped to the body); None if absent or deleted.
    /// For records that never change once written (chunks): one replica is read, and a miss is
    /// checked against the others.
    pub async fn get_range(
        &self,
        partition: PartitionId,
        key: Bytes,
        range: Range<u64>,
    ) -> Result<Option<Value>, ShardError> {
        let body = StorageRequest::GetRange {
            partition,
            key: key.clone(),
            range,
        };
        self.read(partition, key, body, 1).await?.into_value()
    }

    /// Reads metadata and summary of `key` without its body; None if absent or deleted.
    pub async fn head(
        &self,
        partition: PartitionId,
        key: Bytes,
    ) -> Result<Option<Head>, ShardError> {
        let body = StorageRequest::Head {
            partition,
            key: key.clone(),
        };
        self.read(partition, key, body, self.levels().r)
            .await?
            .into_head()
    }

    /// Serves a read (`body`: Get, GetRange or Head) on the partition's replica, or with
    /// N > 1, over `r` of its replicas (the newest answer wins).
    async fn read(
        &self,
        partition: PartitionId,
        key: Bytes,
        body: StorageRequest,
        r: usize,
    ) -> Result<StorageResponse, ShardError> {
        if !self.replicated() {
            return self.send(body).await;
        }
        self.read_newest(crate::replicated::ReadOf {
            partition,
            key,
            body,
            r,
        })
        .await
    }

    /// Deletes `key` (a durable tombstone, on D replicas with N > 1); returns the tombstone's
    /// timestamp, None if the key had no live value (on any replica that answered).
    pub async fn delete(
        &self,
        partition: PartitionId,
        key: Bytes,
        hlc: Option<Hlc>,
    ) -> Result<Option<Hlc>, ShardError> {
        if !self.replicated() {
            return self
                .send(StorageRequest::Delete {
                    partition,
                    key,
                    hlc,
                    fresh: false,
                })
                .await?
                .into_deleted();
        }
        let stamp = hlc.unwrap_or_else(|| self.now());
        let (_, answers) = self
            .write_everywhere(partition, self.levels().d, stamp, |hlc| {
                StorageRequest::Delete {
                    partition,
                    key: key.clone(),
                    hlc: Some(hlc),
                    fresh: true,
                }
            })
            .await?;
        let mut deleted = None;
        for answer in answers {
            deleted = deleted.max(answer.into_deleted()?);
        }
        Ok(deleted)
    }

    /// Live keys starting with `prefix`, after `start_after`, across every partition of the
    /// ring, merged in key order, at most `limit`: one scan request per range of partitions
    /// that a vnode is first replica for, all in parallel, each for its first `limit` keys.
    pub async fn scan_all(
        &self,
        prefix: Bytes,
        start_after: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<ScanEntry>, ShardError> {
        let mut tries = 0;
        loop {
            let epoch = self.ring().epoch();
            tries += 1;
            match self
                .scan_once(prefix.clone(), start_after.clone(), limit)
                .await
            {
                // A replica failed during the scan: it is in its back-off now, and the listing
                // is planned again over the replicas up (a node restarting may fail one try
                // after another as its cores come up).
                Err(ShardError::Wire(e)) if self.replicated() && tries < SCAN_TRIES_MAX => {
                    tracing::debug!(error = %e, "a replica failed during a listing; listing again without it");
                }
                // A vnode no longer held a partition (a rebalance flipped the ring, taken from
                // it meanwhile): the listing is planned again by the new ring.
                Err(e) if self.ring().epoch() != epoch && tries < SCAN_TRIES_MAX => {
                    tracing::debug!(error = %e, "the ring changed during a listing; listing again by the new ring");
                }
                answer => return answer,
            }
        }
    }

    /// One try of [`Shard::scan_all`].
    async fn scan_once(
        &self,
        prefix: Bytes,
        start_after: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<ScanEntry>, ShardError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(crate::request::SCAN_LIMIT_MAX);
        let ring = self.ring();
        if ring.epoch() == 0 {
            return Err(ShardError::NoRing);
        }
        if ring.replicas() > 1 {
            return self.scan_replicas(&ring, prefix, start_after, limit).await;
        }
        // One request per vnode, for every range of partitions it holds.
        let pages = self
            .scan_pages(
                ring.first_replica_ranges(),
                &prefix,
                &start_after,
                limit,
                false,
            )
            .await?;
        Ok(merge_sorted(pages, limit))
    }

    /// One scan request per vnode of `plan`, for its ranges of partitions, all in parallel.
    async fn scan_pages(
        &self,
        plan: &[(Vnode, Vec<Range<PartitionId>>)],
        prefix: &Bytes,
        start_after: &Option<Bytes>,
        limit: usize,
        tombstones: bool,
    ) -> Result<Vec<Vec<ScanEntry>>, ShardError> {
        let scans = plan.iter().map(|(vnode, ranges)| {
            let request = StorageRequest::Scan {
                partitions: ranges.clone(),
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit,
                tombstones,
            };
            self.send_to_vnode(*vnode, request)
        });
        futures_util::future::join_all(scans)
            .await
            .into_iter()
            .map(|answer| answer?.into_entries())
            .collect()
    }

    /// A listing over R replicas of every partition (those up, if fewer are): their pages,
    /// tombstones included, merged by key with the newest HLC winning, so that a key written or
    /// deleted by an acknowledged request is listed as it was left, whichever replica missed
    /// it. A full page only vouches for keys up to its last one: past the smallest such key
    /// the replicas are asked again.
    async fn scan_replicas(
        &self,
        ring: &RingView,
        prefix: Bytes,
        start_after: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<ScanEntry>, ShardError> {
        let mut plan = ring
            .read_plan_among(self.levels().r, |v| self.is_up(v))
            .map_err(|partition| ShardError::TooFewReplicas {
                partition,
                up: 0,
                needed: 1,
            })?;
        let mut listed = Vec::new();
        let mut after = start_after;
        loop {
            let (pages, replan) = self
                .scan_pages_hedged(ring, &plan, &prefix, &after, limit)
                .await?;
            if let Some(replan) = replan {
                plan = replan;
            }
            let complete_to = pages
                .iter()
                .filter(|page| page.len() >= limit)
                .filter_map(|page| page.last().map(|e| e.key.clone()))
                .min();
            for entry in merge_newest(pages) {
                if complete_to.as_ref().is_some_and(|end| entry.key > *end) {
                    break;
                }
                if !entry.tombstone {
                    listed.push(entry);
                    if listed.len() == limit {
                        return Ok(listed);
                    }
                }
            }
            match complete_to {
                None => return Ok(listed),
                Some(end) => after = Some(end),
            }
        }
    }

    /// [`Shard::scan_pages`] over `plan` (tombstones included), hedged: if some vnodes of the
    /// plan have answered nothing at all (to any call from this core) after
    /// [`SCAN_HEDGE_AFTER`] (a hung core, a stopped node not yet known down), the listing is
    /// planned again without them, if every partition is still read from as many replicas,
    /// and sent again; the first plan to answer whole is the answer. Returns the pages, and
    /// the new plan if it answered (for the listing's next pages).
    async fn scan_pages_hedged(
        &self,
        ring: &RingView,
        plan: &ReadPlan,
        prefix: &Bytes,
        after: &Option<Bytes>,
        limit: usize,
    ) -> Result<(Vec<Vec<ScanEntry>>, Option<ReadPlan>), ShardError> {
        let started = std::time::Instant::now();
        let mut first = std::pin::pin!(self.scan_pages(plan, prefix, after, limit, true));
        if let Ok(pages) = monoio::time::timeout(SCAN_HEDGE_AFTER, first.as_mut()).await {
            return Ok((pages?, None));
        }
        let stalled: Vec<Vnode> = plan
            .iter()
            .map(|(vnode, _)| *vnode)
            .filter(|vnode| !self.answered_since(*vnode, started))
            .collect();
        if stalled.is_empty() {
            return Ok((first.await?, None));
        }
        // Only a plan as complete as the first: every partition still read from as many
        // replicas (a listing from fewer than R could miss an acknowledged write or delete).
        let Some(replan) = ring.read_plan_without(self.levels().r, |v| self.is_up(v), &stalled)
        else {
            return Ok((first.await?, None));
        };
        for vnode in &stalled {
            self.core.remote.suspect(vnode.node, vnode.shard);
        }
        tracing::debug!(stalled = ?stalled, "replicas answer nothing; listing again without them");
        let answered = {
            let second = std::pin::pin!(self.scan_pages(&replan, prefix, after, limit, true));
            match futures_util::future::select(first, second).await {
                Either::Left((Ok(pages), _)) => Ok((pages, false)),
                Either::Right((Ok(pages), _)) => Ok((pages, true)),
                // Both failed: a replica's failure (a Wire error, which the listing retries
                // without it) rather than the other plan's error.
                Either::Left((Err(failed), second)) => match second.await {
                    Ok(pages) => Ok((pages, true)),
                    Err(e) => Err(wire_first(failed, e)),
                },
                Either::Right((Err(failed), first)) => match first.await {
                    Ok(pages) => Ok((pages, false)),
                    Err(e) => Err(wire_first(failed, e)),
                },
            }
        };
        let (pages, replanned) = answered?;
        Ok((pages, replanned.then_some(replan)))
    }

    /// Every live key starting with `prefix`, in key order, read [`SCAN_PAGE_KEYS`] at a
    /// time. Only for prefixes whose keys are few (an upload's parts, an object's uploads): the
    /// whole answer is held in memory.
    pub async fn scan_all_pages(&self, prefix: Bytes) -> Result<Vec<ScanEntry>, ShardError> {
        let mut out: Vec<ScanEntry> = Vec::new();
        loop {
            let after = out.last().map(|e| e.key.clone());
            let page = self.scan_all(prefix.clone(), after, SCAN_PAGE_KEYS).await?;
            let done = page.len() < SCAN_PAGE_KEYS;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// A fresh timestamp from this core's clock (its engine's, on a storage node).
    pub fn now(&self) -> Hlc {
        match &self.core.engine {
            Some(engine) => engine.now(),
            None => self.core.clock.now(),
        }
    }

    /// Moves this core's clock past `seen`: every later [`Shard::now`] is above it.
    pub(crate) fn observe(&self, seen: Hlc) {
        match &self.core.engine {
            Some(engine) => engine.observe(seen),
            None => self.core.clock.observe(seen),
        }
    }
}

/// Of two errors, the first that is a replica's failure ([`ShardError::Wire`]), else `b`.
fn wire_first(a: ShardError, b: ShardError) -> ShardError {
    if matches!(a, ShardError::Wire(_)) {
        a
    } else {
        b
    }
}

/// Most tries of one listing page while replicas fail or the ring changes under it.
const SCAN_TRIES_MAX: u32 = 3;

/// How long a listing page waits for its replicas before it is planned again without those
/// that answered nothing at all meanwhile: longer than a read's hedge, as a page of a big
/// partition's scan takes longer and a listing sent again costs every replica another scan.
const SCAN_HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Keys per page of [`Shard::scan_all_pages`].
pub const SCAN_PAGE_KEYS: usize = 1000;

/// Who a request to a vnode is sent for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Traffic {
    /// A client's request, or work a client waits on.
    Foreground,
    /// The node's background work (anti-entropy, rebalance, recovery): marked so on the wire,
    /// the receiver does not count it as the foreground traffic background work yields to.
    Background,
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

/// Pages of the replicas of the same partitions (each sorted by key, tombstones included)
/// merged into one list sorted by key, each key once, at its newest HLC.
fn merge_newest(pages: Vec<Vec<ScanEntry>>) -> Vec<ScanEntry> {
    let mut all: Vec<ScanEntry> = pages.into_iter().flatten().collect();
    all.sort_by(|a, b| a.key.cmp(&b.key).then(b.hlc.cmp(&a.hlc)));
    all.dedup_by(|later, first| later.key == first.key);
    all
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
    fn replicas_merge_to_the_newest_version_of_each_key() {
        let at = |key: &str, physical_us: u64, tombstone: bool| ScanEntry {
            hlc: Hlc {
                physical_us,
                logical: 0,
                node_id: 1,
            },
            tombstone,
            ..entry(key)
        };
        let merged = merge_newest(vec![
            vec![at("a", 5, false), at("b", 9, true), at("c", 1, false)],
            vec![at("a", 7, true), at("b", 3, false), at("d", 2, false)],
        ]);
        let got: Vec<(&[u8], u64, bool)> = merged
            .iter()
            .map(|e| (&e.key[..], e.hlc.physical_us, e.tombstone))
            .collect();
        assert_eq!(
            got,
            [
                (&b"a"[..], 7, true),
                (&b"b"[..], 9, true),
                (&b"c"[..], 1, false),
                (&b"d"[..], 2, false)
            ]
        );
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
