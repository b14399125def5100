//! Anti-entropy on the data path (DESIGN §7): each storage core, at a configured low rate,
//! takes the next partition it drives (one whose first replica known up is this core's vnode)
//! and runs one pass of [`crate::replication::antientropy::Pass`] over its replicas: hashes of
//! the partition's key ranges from every replica, the entries of the ranges that differ, and
//! the newest version of each key pushed, as stamped, to every replica that lacks it
//! (tombstones included). A pass that hears all N replicas identical raises the partition's
//! repaired-at watermark on each: from then on the tombstones at or below it may be dropped by
//! compaction ([`leofs_engine::Engine::drop_tombstones_at_floors`]) and a key the replica no
//! longer holds takes nothing at or below it (a late hint or repair of an older version is
//! discarded, a serialized commit is stamped above it), so that a dropped tombstone never lets
//! its object back. A key the replica holds goes by HLC order, watermark or not.
//!
//! Only replicated records take part: objects, chunks, uploads and parts. A replica's garbage
//! queue, hints and watermarks are its own.
//!
//! Watermark record: key `w` ‖ partition (u32 BE) in the partition itself, no metadata or
//! body, stamped with the watermark (the index keeps it, so a restart reloads it without a
//! read).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use leofs_engine::{EngineError, Hlc, PartitionId, PutValue, ScanEntry};

use crate::object::keys::{NS_CHUNK, NS_OBJECT, NS_PART, NS_UPLOAD};
use crate::object::versions::{NS_ATTRIBUTES, NS_VERSION};
use crate::replication::Version;
use crate::replication::antientropy::{Entries, Pass, PassStep, RangeHashes, range_of};
use crate::request::{SCAN_LIMIT_MAX, StorageRequest, StorageResponse};
use crate::ring::{NodeId, RingView, Vnode};
use crate::shard::Traffic;
use crate::{Shard, ShardError};

/// Key ranges a partition's replicas compare (the leaves of the one-level Merkle tree).
pub const RANGES: u32 = 64;
/// Most ranges a peer may ask a partition's hashes in.
pub const RANGES_MAX: u32 = 4096;
/// Namespace byte of watermark records.
pub const NS_WATERMARK: u8 = b'w';
/// How far behind the start of a pass its watermark lies: twice the age past which a replica
/// refuses a client's write ([`crate::replicated::CLIENT_WRITE_AGE_MAX`]), which leaves room
/// for a clock bound of up to 15 s, so that every client write at or below the watermark was
/// stored, or refused, before the pass compared the replicas.
pub const WATERMARK_LAG: Duration = Duration::from_secs(60);
/// Index entries read per step of a walk over a partition.
const INDEX_PAGE_KEYS: usize = 4096;
/// Entries asked per call when a pass fetches the ranges that differ.
const ENTRIES_PAGE_KEYS: usize = 1024;
/// Default of the most entries a pass takes from one replica
/// ([`ReplicationConfig::anti_entropy_entries_per_pass`]).
pub const PASS_ENTRIES_MAX: usize = 65_536;

/// Anti-entropy settings of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// How often each core runs one anti-entropy pass over the next partition it drives.
    pub anti_entropy_interval: Duration,
    /// How long a hint is kept before it is dropped and its partition left to anti-entropy
    /// (well below the tombstone grace).
    pub hint_ttl: Duration,
    /// Most entries one pass takes from each replica (memory per pass): past it, the pass
    /// repairs the keys up to where the shortest list was cut, and the next pass over the
    /// partition goes on from there.
    pub anti_entropy_entries_per_pass: usize,
    /// Most bytes per second each core pushes to other replicas (rebalance fills, hand-overs,
    /// recoveries and anti-entropy repairs), whether clients are served or not; `None`: as
    /// fast as the disks go while the node is idle (paced while clients are served).
    pub push_bytes_per_sec_per_core: Option<NonZeroU64>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            anti_entropy_interval: Duration::from_secs(1),
            hint_ttl: crate::hinted::HINT_TTL,
            anti_entropy_entries_per_pass: PASS_ENTRIES_MAX,
            push_bytes_per_sec_per_core: None,
        }
    }
}

/// One core's anti-entropy state: the watermarks of the partitions it holds, where its
/// passes are, and what they found (metrics).
#[derive(Default)]
pub(crate) struct AntiEntropyBook {
    /// Repaired-at watermarks by partition (as stored in `w` records).
    watermarks: RefCell<HashMap<PartitionId, Hlc>>,
    /// Whether the engine drops tombstones at the watermarks (a replicated ring).
    floors: Cell<bool>,
    /// The partition after the last one passed over.
    cursor: Cell<PartitionId>,
    /// For a partition whose last pass was cut at the entries per pass: the key its
    /// next pass lists from.
    windows: RefCell<HashMap<PartitionId, Bytes>>,
    /// Partitions this core drives whose last pass did not find all N replicas answering and
    /// identical.
    unrepaired: RefCell<HashSet<PartitionId>>,
    /// When the watermark of each partition this core drives was last raised (µs, wall
    /// clock), or when the core started for one never raised.
    repaired_at_us: RefCell<HashMap<PartitionId, u64>>,
    /// When this core's anti-entropy started (µs, wall clock).
    started_us: Cell<u64>,
    /// Passes run since start.
    pub(crate) passes: Cell<u64>,
    /// Entries pushed to replicas that lacked them since start.
    pub(crate) pushed: Cell<u64>,
    /// Partitions this core no longer holds whose records it hands over to their replicas
    /// before it drops them: it still serves anti-entropy's requests for them meanwhile.
    pub(crate) handing_over: RefCell<HashSet<PartitionId>>,
    /// The moving ring's epoch, and the moving partitions this core drives whose new
    /// replicas its passes found filled at it.
    filled: RefCell<PartitionsDone>,
    /// The moving partition after the last one this core filled.
    fill_cursor: Cell<PartitionId>,
    /// The recovery under way (its id), and the partitions this core drives that its passes
    /// compared and repaired for it.
    recovered: RefCell<PartitionsDone>,
    /// The partition after the last one this core passed over for a recovery.
    recover_cursor: Cell<PartitionId>,
    /// The partition after the last one this core tried to hand over.
    hand_over_cursor: Cell<PartitionId>,
    /// Bytes this core pushed to other replicas during rebalances (fills and hand-overs).
    moved_bytes: Cell<u64>,
    /// The partitions a rebalance, hand-over or recovery step of this core passes over now
    /// (several run at once): the next step takes another.
    in_pass: RefCell<HashSet<PartitionId>>,
    /// When this core last served a client's request (the movement throttle's signal, told
    /// to peers in answers to their background requests).
    foreground_at: Cell<Option<Instant>>,
    /// When a peer core last answered a background request of this one saying it serves
    /// clients (the throttle's other signal).
    peer_busy_at: Cell<Option<Instant>>,
    /// When the pushes made so far are paid for at the operator's push cap
    /// ([`ReplicationConfig::push_bytes_per_sec_per_core`]): the next push waits until then.
    push_budget_at: Cell<Option<Instant>>,
}

/// Marks a partition as passed over by a movement step until dropped.
struct InPass<'a> {
    book: &'a AntiEntropyBook,
    partition: PartitionId,
}

impl<'a> InPass<'a> {
    fn new(book: &'a AntiEntropyBook, partition: PartitionId) -> Self {
        book.in_pass.borrow_mut().insert(partition);
        Self { book, partition }
    }
}

impl Drop for InPass<'_> {
    fn drop(&mut self) {
        self.book.in_pass.borrow_mut().remove(&self.partition);
    }
}

/// The partitions a core has done for one rebalance (its moving ring's epoch) or one
/// recovery (its id); those of an earlier one are forgotten once a later one has some.
#[derive(Clone, Default)]
struct PartitionsDone {
    id: u64,
    partitions: BTreeSet<PartitionId>,
}

impl PartitionsDone {
    /// Whether `partition` is done for `id`.
    fn contains(&self, id: u64, partition: PartitionId) -> bool {
        self.id == id && self.partitions.contains(&partition)
    }

    /// Books `partition` done for `id`.
    fn insert(&mut self, id: u64, partition: PartitionId) {
        if self.id != id {
            *self = Self {
                id,
                partitions: BTreeSet::new(),
            };
        }
        self.partitions.insert(partition);
    }
}

/// The first of `partitions` partitions, going round from `cursor`, that `wanted` takes; the
/// cursor then points past it (each core's passes go round its partitions this way).
fn next_from(
    cursor: &Cell<PartitionId>,
    partitions: u32,
    mut wanted: impl FnMut(PartitionId) -> bool,
) -> Option<PartitionId> {
    let found = (0..partitions)
        .map(|step| (cursor.get() + step) % partitions)
        .find(|&partition| wanted(partition))?;
    cursor.set((found + 1) % partitions);
    Some(found)
}

/// What one core's anti-entropy reports (`/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AntiEntropyStatus {
    /// Passes run since start.
    pub passes: u64,
    /// Entries pushed to replicas that lacked them since start.
    pub pushed: u64,
    /// Partitions this core drives whose last pass did not find all N replicas answering and
    /// identical.
    pub under_replicated: u64,
    /// Seconds since the partition this core drives that was repaired longest ago had its
    /// watermark raised (since the core started, for one never raised).
    pub oldest_unrepaired_secs: u64,
    /// The ring epoch of `filled`.
    pub filled_epoch: u64,
    /// Moving partitions this core drives whose new replicas it found filled (what the
    /// managers flip the ring on).
    pub filled: Vec<PartitionId>,
    /// Partitions this core holds records of but no longer owns (it drops them once every
    /// node routes by the ring without them).
    pub foreign_partitions: u64,
    /// Bytes this core pushed to other replicas during rebalances since start.
    pub moved_bytes: u64,
    /// The recovery under way (its id) of `recovered`.
    pub recovered_id: u64,
    /// Partitions of that recovery this core drives that it compared and repaired.
    pub recovered: Vec<PartitionId>,
}

/// The engine key of `partition`'s watermark record.
fn watermark_key(partition: PartitionId) -> Bytes {
    let mut key = BytesMut::with_capacity(5);
    key.put_u8(NS_WATERMARK);
    key.put_u32(partition);
    key.freeze()
}

/// The stamp of the tombstone that collects a replicated record stamped `put` (a chunk, a
/// forgotten part): one logical tick above it, the same on every replica that collects it,
/// so that replicas which collected it at different times still compare identical.
pub(crate) fn collection_stamp(put: Hlc) -> Hlc {
    Hlc {
        logical: put.logical.saturating_add(1),
        ..put
    }
}

/// Whether `key` names a record every replica of its partition holds alike.
fn is_replicated_key(key: &[u8]) -> bool {
    matches!(
        key.first(),
        Some(&NS_OBJECT)
            | Some(&NS_VERSION)
            | Some(&NS_ATTRIBUTES)
            | Some(&NS_CHUNK)
            | Some(&NS_UPLOAD)
            | Some(&NS_PART)
    )
}

/// Whether an index entry counts in anti-entropy: a replicated record, and not a tombstone at
/// or below the watermark (those may be gone already on some replicas).
fn compared(entry: &ScanEntry, watermark: Option<Hlc>) -> bool {
    is_replicated_key(&entry.key)
        && !(entry.tombstone && watermark.is_some_and(|mark| entry.hlc <= mark))
}

/// One replica's entries in a pass.
struct Listed {
    /// In key order.
    entries: Entries<Bytes, Vnode>,
    /// Cut at the entries per pass: more follow the last one.
    cut: bool,
}

/// How one pass went.
struct PassReport {
    /// All the replicas passed over answered with identical hashes.
    identical: bool,
    /// Entries pushed.
    pushed: u64,
    /// Bytes of the records pushed.
    pushed_bytes: u64,
    /// The replicas that answered with their hashes.
    heard: Vec<Vnode>,
    /// Whether the pass compared entries and pushed every difference it found: no push
    /// failed, and no list was cut at the entries per pass.
    complete: bool,
}

impl Shard {
    /// Loads this core's watermarks from its engine (at start, before it serves anything);
    /// on a replicated ring the engine then drops tombstones only at them.
    pub(crate) fn load_watermarks(&self) {
        let Ok(engine) = self.core.engine() else {
            return;
        };
        let book = &self.core.anti_entropy;
        book.started_us.set(leofs_engine::wall_us());
        let mut after: Option<Bytes> = None;
        loop {
            let page = engine.scan(&[NS_WATERMARK], after.as_deref(), INDEX_PAGE_KEYS);
            let done = page.len() < INDEX_PAGE_KEYS;
            after = page.last().map(|e| e.key.clone());
            for entry in page {
                if entry.key == watermark_key(entry.partition) {
                    self.note_watermark(entry.partition, entry.hlc);
                }
            }
            if done {
                break;
            }
        }
        self.use_tombstone_floors();
    }

    /// On a replicated ring, makes the engine drop tombstones only at the watermarks (once).
    pub(crate) fn use_tombstone_floors(&self) {
        let book = &self.core.anti_entropy;
        if book.floors.get() || self.ring().replicas() < 2 {
            return;
        }
        let Ok(engine) = self.core.engine() else {
            return;
        };
        engine.drop_tombstones_at_floors();
        for (partition, mark) in book.watermarks.borrow().iter() {
            engine.raise_tombstone_floor(*partition, *mark);
        }
        book.floors.set(true);
    }

    /// The repaired-at watermark of `partition` here, if it has one.
    pub(crate) fn watermark(&self, partition: PartitionId) -> Option<Hlc> {
        self.core
            .anti_entropy
            .watermarks
            .borrow()
            .get(&partition)
            .copied()
    }

    /// The executor's [`StorageRequest::SetWatermark`]: stores a higher watermark durably,
    /// then lets compaction drop the tombstones at or below it.
    pub(crate) async fn take_watermark(
        &self,
        partition: PartitionId,
        hlc: Hlc,
    ) -> Result<(), ShardError> {
        if self.watermark(partition).is_some_and(|held| held >= hlc) {
            return Ok(());
        }
        // A watermark lies WATERMARK_LAG behind its driver's clock: one further ahead of this
        // replica's clock than the bound comes from a clock that is off, and is refused.
        let bound_us = self.max_clock_offset_us();
        let latest_us = leofs_engine::wall_us()
            .saturating_sub(WATERMARK_LAG.as_micros() as u64)
            .saturating_add(bound_us);
        if hlc.physical_us > latest_us {
            return Err(ShardError::ClockAhead {
                ahead_us: hlc.physical_us - latest_us + bound_us,
                bound_us,
            });
        }
        let engine = self.core.engine()?;
        let record = PutValue {
            meta: Bytes::new(),
            body: Bytes::new(),
            summary: Default::default(),
            hlc: Some(hlc),
        };
        engine
            .put(partition, &watermark_key(partition), record)
            .await?;
        engine.raise_tombstone_floor(partition, self.note_watermark(partition, hlc));
        Ok(())
    }

    /// Raises `partition`'s watermark in memory to `hlc` (never lowers it); the watermark now.
    fn note_watermark(&self, partition: PartitionId, hlc: Hlc) -> Hlc {
        let mut marks = self.core.anti_entropy.watermarks.borrow_mut();
        let mark = marks.entry(partition).or_default();
        *mark = (*mark).max(hlc);
        *mark
    }

    /// The executor's [`StorageRequest::RangeHashes`]: the hashes of `partition`'s replicated
    /// records in `ranges` ranges, and its watermark.
    pub(crate) fn range_hashes_here(
        &self,
        partition: PartitionId,
        ranges: u32,
    ) -> Result<(Vec<u64>, Option<Hlc>), ShardError> {
        check_ranges(ranges)?;
        let mut hashes = RangeHashes::new(ranges);
        self.walk_compared(partition, None, |entry| {
            hashes.add(&entry.key, entry.hlc, entry.tombstone);
            true
        })?;
        Ok((hashes.into_hashes(), self.watermark(partition)))
    }

    /// The executor's [`StorageRequest::RangeEntries`].
    pub(crate) fn range_entries_here(
        &self,
        partition: PartitionId,
        ranges: u32,
        wanted: &[u32],
        start_after: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<ScanEntry>, ShardError> {
        check_ranges(ranges)?;
        if limit > SCAN_LIMIT_MAX {
            return Err(ShardError::LimitExceeded {
                what: "anti-entropy entries asked (keys)",
                limit: SCAN_LIMIT_MAX as u64,
                got: limit as u64,
            });
        }
        let mut is_wanted = vec![false; ranges as usize];
        for &range in wanted {
            if let Some(slot) = is_wanted.get_mut(range as usize) {
                *slot = true;
            }
        }
        let mut out = Vec::new();
        if limit == 0 || !is_wanted.contains(&true) {
            return Ok(out);
        }
        self.walk_compared(partition, start_after, |entry| {
            if is_wanted[range_of(&entry.key, ranges) as usize] {
                out.push(entry);
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Visits the entries of `partition` that anti-entropy compares ([`compared`]) after
    /// `start_after`, in key order, page by page through the index, until `visit` answers
    /// false or the keys run out.
    fn walk_compared(
        &self,
        partition: PartitionId,
        start_after: Option<Bytes>,
        mut visit: impl FnMut(ScanEntry) -> bool,
    ) -> Result<(), ShardError> {
        let engine = self.core.engine()?;
        let watermark = self.watermark(partition);
        let mut after = start_after;
        loop {
            let page = engine.scan_partition(partition, after.as_deref(), INDEX_PAGE_KEYS, true);
            let done = page.len() < INDEX_PAGE_KEYS;
            after = page.last().map(|e| e.key.clone());
            for entry in page.into_iter().filter(|e| compared(e, watermark)) {
                if !visit(entry) {
                    return Ok(());
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Whether this core drives `partition`'s passes: it is the partition's first replica
    /// known up.
    fn drives(&self, ring: &RingView, partition: PartitionId) -> bool {
        let here = self.here();
        ring.route(partition)
            .is_ok_and(|replicas| replicas.iter().find(|v| self.is_up(**v)) == Some(&here))
    }

    /// The next partition this core drives, after the last one passed over.
    fn next_driven_partition(&self) -> Option<PartitionId> {
        let ring = self.ring();
        next_from(&self.core.anti_entropy.cursor, ring.partitions(), |p| {
            self.drives(&ring, p)
        })
    }

    /// One anti-entropy pass over every vnode that holds `partition` (its replicas, and
    /// those it moves to during a rebalance).
    async fn anti_entropy_pass(&self, partition: PartitionId) -> Result<PassReport, ShardError> {
        let ring = self.ring();
        // While an operator pauses a rebalance, nothing is copied to the new replicas.
        let replicas = if self.core.node.rebalance_suspended() {
            ring.route(partition)?.to_vec()
        } else {
            ring.holders(partition)?
        };
        self.anti_entropy_pass_over(partition, replicas, &[]).await
    }

    /// One anti-entropy pass over `replicas` of `partition`: a watermark only when all of
    /// them answer identical. The pass is complete only if each of `filling` took every
    /// record pushed to it as pushed (one that keeps a newer version, or refuses an older
    /// one below its watermark, leaves it incomplete). Nothing is pushed to a vnode the ring
    /// no longer places the partition on (a former owner handing it over lacks the writes
    /// made since: they are not its to take).
    async fn anti_entropy_pass_over(
        &self,
        partition: PartitionId,
        replicas: Vec<Vnode>,
        filling: &[Vnode],
    ) -> Result<PassReport, ShardError> {
        let holders = self.ring().holders(partition)?;
        let lag_us = WATERMARK_LAG.as_micros() as u64;
        let mut pass: Pass<Vnode, Bytes, Vnode> = Pass::start(replicas.len(), self.now(), lag_us);
        let asks = replicas
            .iter()
            .filter(|v| self.is_up(**v))
            .map(|&vnode| async move {
                let request = StorageRequest::RangeHashes {
                    partition,
                    ranges: RANGES,
                };
                let answer = self
                    .send_to_vnode_as(vnode, request, Traffic::Background)
                    .await;
                (vnode, answer.and_then(StorageResponse::into_hashes))
            });
        let mut heard = Vec::new();
        let mut heard_from = Vec::new();
        let mut step = PassStep::Pending;
        for (vnode, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok((hashes, watermark)) => {
                    let hashes = RangeHashes::from_hashes(hashes);
                    heard.push(hashes.clone());
                    heard_from.push(vnode);
                    step = pass.hashes(vnode, hashes, watermark);
                }
                Err(e) => {
                    tracing::debug!(error = %e, partition, node = vnode.node, "a replica did not answer an anti-entropy pass")
                }
            }
        }
        if step == PassStep::Pending {
            step = pass.timed_out();
        }
        let identical = heard.len() == replicas.len() && heard.windows(2).all(|w| w[0] == w[1]);
        let (mut pushed, mut pushed_bytes) = (0, 0);
        let mut compared = false;
        let mut failed = false;
        loop {
            step = match step {
                PassStep::Pending => break,
                PassStep::Done => {
                    compared = true;
                    break;
                }
                PassStep::Watermark { hlc, to } => {
                    for vnode in to {
                        let request = StorageRequest::SetWatermark { partition, hlc };
                        if let Err(e) = self
                            .send_to_vnode_as(vnode, request, Traffic::Background)
                            .await
                        {
                            tracing::debug!(error = %e, partition, node = vnode.node, "a replica did not take a watermark");
                        }
                    }
                    break;
                }
                PassStep::AskEntries { ranges, from } => {
                    // A partition too large for one pass is compared window after window:
                    // each pass lists from where the last one was cut.
                    let windows = &self.core.anti_entropy.windows;
                    let start = windows.borrow().get(&partition).cloned();
                    // A pass that lists from a window compares only the keys after it.
                    failed |= start.is_some();
                    let asks = from.iter().map(|&vnode| {
                        self.entries_of(vnode, partition, ranges.clone(), start.clone())
                    });
                    let answers = futures_util::future::join_all(asks).await;
                    // Keys past the shortest cut list are not compared in this pass (one
                    // replica's list stops before them, which does not mean it lacks them).
                    let end = answers
                        .iter()
                        .filter_map(|a| a.as_ref().ok())
                        .filter(|listed| listed.cut)
                        .filter_map(|listed| listed.entries.last().map(|(k, _)| k.clone()))
                        .min();
                    failed |= end.is_some() || answers.iter().any(Result::is_err);
                    match &end {
                        Some(end) => windows.borrow_mut().insert(partition, end.clone()),
                        None => windows.borrow_mut().remove(&partition),
                    };
                    let mut next = PassStep::Pending;
                    for (vnode, answer) in from.iter().zip(answers) {
                        match answer {
                            Ok(listed) => {
                                let entries = listed
                                    .entries
                                    .into_iter()
                                    .filter(|(k, _)| end.as_ref().is_none_or(|end| k <= end))
                                    .collect();
                                next = pass.entries(*vnode, entries);
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, partition, node = vnode.node, "a replica did not list its entries for anti-entropy")
                            }
                        }
                    }
                    if next == PassStep::Pending {
                        next = pass.timed_out();
                    }
                    next
                }
                PassStep::Push(pushes) => {
                    compared = true;
                    // Several pushes at once (the targets' group commits share one sync
                    // among them), one at a time while clients are served here.
                    let mut lacking = pushes
                        .into_iter()
                        .filter(|(target, _)| holders.contains(target))
                        .flat_map(|(target, lacking)| {
                            lacking
                                .into_iter()
                                .map(move |(key, version)| (target, key, version))
                        });
                    let mut in_flight = FuturesUnordered::new();
                    loop {
                        while in_flight.len() < self.movement_width(PUSHES_IN_FLIGHT_IDLE) {
                            let Some((target, key, version)) = lacking.next() else {
                                break;
                            };
                            in_flight.push(async move {
                                (
                                    target,
                                    self.push_entry(partition, target, key, version).await,
                                )
                            });
                        }
                        let Some((target, outcome)) = in_flight.next().await else {
                            break;
                        };
                        match outcome {
                            Ok((applied, bytes)) => {
                                if applied {
                                    pushed += 1;
                                    pushed_bytes += bytes;
                                } else if filling.contains(&target) {
                                    failed = true;
                                }
                                self.pace_push(bytes).await;
                            }
                            Err(e) => {
                                failed = true;
                                tracing::debug!(error = %e, partition, node = target.node, "anti-entropy could not repair an entry; the next pass will");
                            }
                        }
                    }
                    break;
                }
            };
        }
        Ok(PassReport {
            identical,
            pushed,
            pushed_bytes,
            heard: heard_from,
            complete: compared && !failed,
        })
    }

    /// `vnode`'s entries of `partition` in `ranges` after `start_after`, each with the version
    /// it holds (a put's value names the vnode holding it), at most the entries per pass.
    async fn entries_of(
        &self,
        vnode: Vnode,
        partition: PartitionId,
        ranges: Vec<u32>,
        start_after: Option<Bytes>,
    ) -> Result<Listed, ShardError> {
        let mut entries: Entries<Bytes, Vnode> = Vec::new();
        let mut after = start_after;
        let most = self.core.replication.anti_entropy_entries_per_pass;
        loop {
            if entries.len() >= most {
                return Ok(Listed { entries, cut: true });
            }
            let request = StorageRequest::RangeEntries {
                partition,
                ranges: RANGES,
                wanted: ranges.clone(),
                start_after: after.clone(),
                limit: ENTRIES_PAGE_KEYS.min(most - entries.len()),
            };
            let page = self
                .send_to_vnode_as(vnode, request, Traffic::Background)
                .await?
                .into_entries()?;
            let Some(last) = page.last() else {
                return Ok(Listed {
                    entries,
                    cut: false,
                });
            };
            if after.as_ref().is_some_and(|a| last.key <= *a) {
                return Err(ShardError::BadAnswer(
                    "an anti-entropy page that does not move past its start".into(),
                ));
            }
            after = Some(last.key.clone());
            // Only what was asked: a replicated record in one of the ranges.
            let asked =
                |key: &[u8]| is_replicated_key(key) && ranges.contains(&range_of(key, RANGES));
            entries.extend(page.into_iter().filter(|e| asked(&e.key)).map(|e| {
                let value = (!e.tombstone).then_some(vnode);
                (e.key, Version { hlc: e.hlc, value })
            }));
        }
    }

    /// Gives `target` the newest `version` of `key`, as stamped: a tombstone, or the record
    /// read from the replica holding it. Whether the target stored that version (it may
    /// keep a newer one, or refuse an older one below its watermark), and the bytes given.
    async fn push_entry(
        &self,
        partition: PartitionId,
        target: Vnode,
        key: Bytes,
        version: Version<Vnode>,
    ) -> Result<(bool, u64), ShardError> {
        let request = match version.value {
            None => StorageRequest::Delete {
                partition,
                key,
                hlc: Some(version.hlc),
                fresh: false,
            },
            // Gone altogether (its tombstone dropped at a watermark): nothing to give.
            Some(holder) => match self
                .repair_from(partition, &key, holder, Traffic::Background)
                .await?
            {
                Some(request) => request,
                None => return Ok((true, 0)),
            },
        };
        let (stamp, bytes) = match &request {
            StorageRequest::Put { key, value, .. } => (
                value.hlc,
                (key.len() + value.meta.len() + value.body.len()) as u64,
            ),
            StorageRequest::Delete { hlc, .. } => (*hlc, 0),
            _ => (None, 0),
        };
        let answer = self
            .send_to_vnode_as(target, request, Traffic::Background)
            .await?;
        let stored = match answer {
            StorageResponse::Stored(hlc) => Some(hlc),
            StorageResponse::Deleted(hlc) | StorageResponse::Removed { hlc, .. } => hlc,
            _ => None,
        };
        Ok((stored.is_none() || stored == stamp, bytes))
    }

    /// This core's anti-entropy figures.
    pub(crate) fn anti_entropy_status(&self) -> AntiEntropyStatus {
        let book = &self.core.anti_entropy;
        let now_us = leofs_engine::wall_us();
        let oldest_us = book
            .unrepaired
            .borrow()
            .iter()
            .map(|p| {
                book.repaired_at_us
                    .borrow()
                    .get(p)
                    .copied()
                    .unwrap_or(book.started_us.get())
            })
            .min();
        let filled = book.filled.borrow().clone();
        let recovered = book.recovered.borrow().clone();
        AntiEntropyStatus {
            passes: book.passes.get(),
            pushed: book.pushed.get(),
            under_replicated: book.unrepaired.borrow().len() as u64,
            oldest_unrepaired_secs: oldest_us.map_or(0, |at| now_us.saturating_sub(at) / 1_000_000),
            filled_epoch: filled.id,
            filled: filled.partitions.into_iter().collect(),
            // Counted now, by the ring this core routes by now: a heartbeat that reports an
            // epoch reports the partitions still to hand over by that same ring.
            foreign_partitions: self.foreign_partitions(&self.ring()).len() as u64,
            moved_bytes: book.moved_bytes.get(),
            recovered_id: recovered.id,
            recovered: recovered.partitions.into_iter().collect(),
        }
    }

    /// One step of this core's part in a rebalance (DESIGN §4); whether it had one to take:
    ///
    /// - while the ring moves, a pass over the next moving partition this core drives whose
    ///   new replicas it has not found filled: the old replicas and the new ones compare and
    ///   the new ones get every record they lack. Once every node routes by the moving ring
    ///   (no write can miss the new replicas any more), a pass that heard every new replica
    ///   and the ring's fill quorum of the old ones, and had every push to a new replica
    ///   stored, fills the partition: the managers flip the ring once all are;
    /// - once the ring is settled and known everywhere, a partition this core holds records
    ///   of but no longer owns is handed over (a last pass pushes what its replicas lack)
    ///   and dropped.
    async fn rebalance_step(&self) -> Result<bool, ShardError> {
        let ring = self.ring();
        if ring.is_moving() {
            if self.core.node.rebalance_suspended() {
                return Ok(false);
            }
            let Some(partition) = self.next_unfilled_partition(&ring) else {
                return Ok(false);
            };
            let _in_pass = InPass::new(&self.core.anti_entropy, partition);
            let counts = ring.is_known_everywhere();
            let replicas = ring.holders(partition)?;
            let old = ring.route(partition)?;
            let joining: Vec<Vnode> = ring
                .next_route(partition)
                .unwrap_or_default()
                .iter()
                .copied()
                .filter(|v| !old.contains(v))
                .collect();
            let report = self
                .anti_entropy_pass_over(partition, replicas, &joining)
                .await?;
            self.book_moved(&report);
            let new = ring.next_route(partition).unwrap_or_default();
            let old_heard = old.iter().filter(|v| report.heard.contains(v)).count();
            let filled = new.iter().all(|v| report.heard.contains(v))
                && old_heard >= ring.fill_quorum(old.len())
                && (report.identical || report.complete);
            // The pass counts only if the ring it began on is still the one routed by (its
            // epoch) and was known everywhere when it began.
            if counts && filled && self.ring().epoch() == ring.epoch() {
                let mut book = self.core.anti_entropy.filled.borrow_mut();
                book.insert(ring.epoch(), partition);
                self.core.node.tell_progress();
            }
            // A pass that moved nothing and recorded nothing (a replica down, or the ring not
            // known everywhere yet) waits for the next interval rather than spinning.
            return Ok((counts && filled) || report.pushed > 0);
        }
        if let Some((node, id)) = ring.recovering() {
            return self.recovery_step(&ring, node, id).await;
        }
        if !ring.is_known_everywhere() {
            return Ok(false);
        }
        let foreign = self.foreign_partitions(&ring);
        let book = &self.core.anti_entropy;
        // One after another, so that one that cannot be handed over yet (a replica down)
        // does not hold up the others.
        let cursor = book.hand_over_cursor.get();
        let free: Vec<PartitionId> = {
            let in_pass = book.in_pass.borrow();
            foreign
                .into_iter()
                .filter(|p| !in_pass.contains(p))
                .collect()
        };
        let Some(&partition) = free.iter().find(|p| **p >= cursor).or_else(|| free.first()) else {
            return Ok(false);
        };
        book.hand_over_cursor.set(partition + 1);
        let _in_pass = InPass::new(book, partition);
        self.hand_over(&ring, partition).await
    }

    /// One pass of the recovery `id` under way (`leofs-adm recover-node`): over the next
    /// partition this core drives that `node` holds and that it has not compared for it yet.
    /// A pass that heard every replica and left nothing unpushed (or found them identical)
    /// counts. Whether there was one to pass over.
    async fn recovery_step(
        &self,
        ring: &RingView,
        node: NodeId,
        id: u64,
    ) -> Result<bool, ShardError> {
        let book = &self.core.anti_entropy;
        let next = next_from(&book.recover_cursor, ring.partitions(), |p| {
            !book.recovered.borrow().contains(id, p)
                && !book.in_pass.borrow().contains(&p)
                && ring
                    .route(p)
                    .is_ok_and(|set| set.iter().any(|v| v.node == node))
                && self.drives(ring, p)
        });
        let Some(partition) = next else {
            return Ok(false);
        };
        let _in_pass = InPass::new(book, partition);
        let replicas = ring.route(partition)?.to_vec();
        let recovered: Vec<Vnode> = replicas
            .iter()
            .copied()
            .filter(|v| v.node == node)
            .collect();
        let report = self
            .anti_entropy_pass_over(partition, replicas.clone(), &recovered)
            .await?;
        self.book_moved(&report);
        let repaired = replicas.iter().all(|v| report.heard.contains(v))
            && (report.identical || report.complete);
        if repaired && self.ring().recovering() == Some((node, id)) {
            book.recovered.borrow_mut().insert(id, partition);
            self.core.node.tell_progress();
        }
        Ok(repaired || report.pushed > 0)
    }

    /// Books what a rebalance, hand-over or recovery pass pushed.
    fn book_moved(&self, report: &PassReport) {
        let book = &self.core.anti_entropy;
        book.pushed.set(book.pushed.get() + report.pushed);
        book.moved_bytes
            .set(book.moved_bytes.get() + report.pushed_bytes);
    }

    /// The next moving partition this core drives that it has not found filled, after the
    /// last one it passed over.
    fn next_unfilled_partition(&self, ring: &RingView) -> Option<PartitionId> {
        let book = &self.core.anti_entropy;
        let filled = book.filled.borrow();
        let in_pass = book.in_pass.borrow();
        next_from(&book.fill_cursor, ring.partitions(), |p| {
            ring.next_route(p).is_some()
                && !in_pass.contains(&p)
                && self.drives(ring, p)
                && !filled.contains(ring.epoch(), p)
        })
    }

    /// The partitions this core's engine holds records of that `ring` does not place on it.
    fn foreign_partitions(&self, ring: &RingView) -> Vec<PartitionId> {
        let Ok(engine) = self.core.engine() else {
            return Vec::new();
        };
        let here = self.here();
        engine
            .partitions()
            .into_iter()
            .filter(|p| *p < ring.partitions() && !ring.holds(here, *p))
            .collect()
    }

    /// Hands `partition` (no longer held here by `ring`) over to its replicas and drops it:
    /// a pass over this core and them pushes whatever they lack; only when every one of them
    /// answered and nothing was left unpushed is it dropped, and only if the ring still does
    /// not place it here (checked with no wait between the check and the drop's append).
    /// Whether it was dropped.
    async fn hand_over(&self, ring: &RingView, partition: PartitionId) -> Result<bool, ShardError> {
        let book = &self.core.anti_entropy;
        let replicas = ring.route(partition)?.to_vec();
        let mut over = vec![self.here()];
        over.extend(replicas.iter().copied());
        book.handing_over.borrow_mut().insert(partition);
        let report = self.anti_entropy_pass_over(partition, over, &[]).await;
        book.handing_over.borrow_mut().remove(&partition);
        let report = report?;
        self.book_moved(&report);
        let all_heard = replicas.iter().all(|v| report.heard.contains(v));
        if !(all_heard && (report.identical || report.complete)) {
            tracing::debug!(
                partition,
                "a partition no longer held here is not handed over yet; trying again"
            );
            return Ok(false);
        }
        self.drop_handed_over(partition, report.pushed).await
    }

    /// Drops `partition`, handed over (`pushed` records pushed to its replicas), unless the
    /// ring places it here again (checked with no wait between the check and the drop's
    /// append); whether it was dropped.
    async fn drop_handed_over(
        &self,
        partition: PartitionId,
        pushed: u64,
    ) -> Result<bool, ShardError> {
        if self.ring().holds(self.here(), partition) {
            return Ok(false);
        }
        let book = &self.core.anti_entropy;
        let engine = self.core.engine()?;
        let dropped = engine.drop_partition(partition).await?;
        book.watermarks.borrow_mut().remove(&partition);
        book.windows.borrow_mut().remove(&partition);
        book.unrepaired.borrow_mut().remove(&partition);
        self.core.node.tell_progress();
        tracing::info!(
            partition,
            records = dropped,
            pushed,
            "handed a partition over to its new replicas and dropped it here"
        );
        Ok(true)
    }

    /// Runs one pass over the next partition this core drives, and books what it found.
    async fn anti_entropy_step(&self) -> Result<(), ShardError> {
        self.use_tombstone_floors();
        // A node whose clock is off by more than the bound drives no pass (its watermarks
        // would be off too): the partitions it drives wait until it is back within.
        if self.check_clock().is_err() {
            return Ok(());
        }
        let Some(partition) = self.next_driven_partition() else {
            return Ok(());
        };
        let report = self.anti_entropy_pass(partition).await?;
        let book = &self.core.anti_entropy;
        book.passes.set(book.passes.get() + 1);
        book.pushed.set(book.pushed.get() + report.pushed);
        if report.identical {
            book.unrepaired.borrow_mut().remove(&partition);
            book.repaired_at_us
                .borrow_mut()
                .insert(partition, leofs_engine::wall_us());
        } else {
            book.unrepaired.borrow_mut().insert(partition);
        }
        if report.pushed > 0 {
            tracing::info!(
                partition,
                pushed = report.pushed,
                "anti-entropy repaired replicas"
            );
        }
        Ok(())
    }
}

/// Refuses a range count out of bounds.
fn check_ranges(ranges: u32) -> Result<(), ShardError> {
    if (1..=RANGES_MAX).contains(&ranges) {
        Ok(())
    } else {
        Err(ShardError::LimitExceeded {
            what: "anti-entropy ranges",
            limit: u64::from(RANGES_MAX),
            got: u64::from(ranges),
        })
    }
}

/// Pause between two rounds of a core's rebalance steps while it has more to move.
const REBALANCE_STEP_PAUSE: Duration = Duration::from_millis(2);
/// First pause before the next round of a core's rebalance steps when the last one moved
/// nothing but there is movement to do (a peer not reachable yet, the ring not known
/// everywhere); it doubles while that lasts, up to the anti-entropy interval.
const MOVEMENT_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How recently this core must have served a client for the movement to yield to clients.
const FOREGROUND_RECENT: Duration = Duration::from_millis(250);
/// Rebalance, hand-over or recovery passes a core runs at once while it serves no client
/// (one at a time while it does).
const MOVEMENT_PASSES_IDLE: usize = 4;
/// Records one pass pushes at once while its core serves no client (one at a time while it
/// does). With [`MOVEMENT_PASSES_IDLE`], at most 16 records per core in flight, each at most
/// a chunk: 64 MiB with the default 4 MiB chunks (the bulk lane's in-flight byte cap per peer
/// bounds them further).
const PUSHES_IN_FLIGHT_IDLE: usize = 4;
/// While clients are served, each record pushed (by a rebalance, hand-over, recovery or
/// anti-entropy pass) is followed by a pause as long as its bytes take at this rate: each core
/// pushes at most this many bytes a second (the default throttle that keeps foreground latency
/// bounded).
const BUSY_MOVE_BYTES_PER_SEC: u64 = 8 << 20;
/// Longest pause after one push.
const BUSY_PAUSE_MAX: Duration = Duration::from_secs(1);

impl Shard {
    /// Books that this core serves a client's request now: the node's background movement
    /// (rebalance, hand-over, recovery) yields while clients are served.
    pub fn note_foreground(&self) {
        self.core
            .anti_entropy
            .foreground_at
            .set(Some(Instant::now()));
    }

    /// Books that a peer core answered a background request of this one while it serves
    /// clients: this core's movement yields as if it served them itself.
    pub(crate) fn note_peer_busy(&self) {
        self.core
            .anti_entropy
            .peer_busy_at
            .set(Some(Instant::now()));
    }

    /// Whether this core served a client within [`FOREGROUND_RECENT`].
    pub(crate) fn clients_served_recently(&self) -> bool {
        recent(self.core.anti_entropy.foreground_at.get())
    }

    /// Whether the movement yields now: this core, or a peer core it moved records to or
    /// from, served a client within [`FOREGROUND_RECENT`].
    fn movement_yields(&self) -> bool {
        self.clients_served_recently() || recent(self.core.anti_entropy.peer_busy_at.get())
    }

    /// How many movement tasks may run at once: `idle` while no client is served here or by
    /// the peers moved to or from, one while clients are.
    fn movement_width(&self, idle: usize) -> usize {
        if self.movement_yields() { 1 } else { idle }
    }

    /// Rebalance steps ([`Shard::rebalance_step`]), several at once while no client is served
    /// here, one at a time and paced while clients are, until one finds nothing more to do
    /// or the core stops; whether any of them worked.
    async fn movement_round(&self) -> Result<bool, ShardError> {
        let mut in_flight = FuturesUnordered::new();
        let (mut worked, mut more) = (false, true);
        loop {
            more &= !self.core.objects.stopping.get();
            while more && in_flight.len() < self.movement_width(MOVEMENT_PASSES_IDLE) {
                in_flight.push(self.paced_rebalance_step());
            }
            match in_flight.next().await {
                None => return Ok(worked),
                Some(Ok(true)) => worked = true,
                Some(Ok(false)) => more = false,
                Some(Err(ShardError::Engine(EngineError::Closed))) => {
                    return Err(ShardError::Engine(EngineError::Closed));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "a rebalance step failed");
                    more = false;
                }
            }
        }
    }

    /// Whether this core has a part in a rebalance, hand-over or recovery still to do: the
    /// ring moves or a recovery is under way, or it holds partitions the ring does not place
    /// on it.
    fn movement_pending(&self) -> bool {
        let ring = self.ring();
        ring.is_moving()
            || ring.recovering().is_some()
            || !self.foreign_partitions(&ring).is_empty()
    }

    /// One rebalance step, followed by [`REBALANCE_STEP_PAUSE`] while clients are served
    /// (its pushes are paced on their own: [`Shard::pace_push`]).
    async fn paced_rebalance_step(&self) -> Result<bool, ShardError> {
        let worked = self.rebalance_step().await?;
        if worked && self.movement_yields() {
            monoio::time::sleep(REBALANCE_STEP_PAUSE).await;
        }
        Ok(worked)
    }

    /// After a push of `bytes`: a pause while clients are served here or by the peers moved
    /// to or from, as long as the bytes take at [`BUSY_MOVE_BYTES_PER_SEC`] (pushes then go
    /// one at a time, so the core's pushes stay under that rate), or until the core's pushes
    /// fit under the operator's cap ([`ReplicationConfig::push_bytes_per_sec_per_core`], one
    /// budget for every pass of the core), whichever ends later.
    async fn pace_push(&self, bytes: u64) {
        let now = Instant::now();
        let mut until = now;
        if bytes > 0 && self.movement_yields() {
            until += Duration::from_secs_f64(bytes as f64 / BUSY_MOVE_BYTES_PER_SEC as f64)
                .min(BUSY_PAUSE_MAX);
        }
        if let Some(cap) = self.core.replication.push_bytes_per_sec_per_core {
            let book = &self.core.anti_entropy;
            let start = book.push_budget_at.get().map_or(now, |at| at.max(now));
            let paid_at = start + Duration::from_secs_f64(bytes as f64 / cap.get() as f64);
            book.push_budget_at.set(Some(paid_at));
            until = until.max(paid_at);
        }
        if until > now {
            monoio::time::sleep(until - now).await;
        }
    }
}

/// Whether `at` lies within [`FOREGROUND_RECENT`].
fn recent(at: Option<Instant>) -> bool {
    at.is_some_and(|at| at.elapsed() < FOREGROUND_RECENT)
}

/// Runs this core's anti-entropy until the core stops: its part in a rebalance first
/// (rounds of steps while there are some), then, every `interval`, one pass over the next
/// partition it drives (on a ring of one replica, only the rebalance part).
pub(crate) async fn run(shard: Shard) {
    let interval = shard.core.replication.anti_entropy_interval;
    let mut pause = interval;
    let mut retry = MOVEMENT_RETRY_PAUSE;
    let mut last_pass = Instant::now();
    loop {
        monoio::time::sleep(pause).await;
        if shard.core.objects.stopping.get() {
            return;
        }
        // Only a closed engine ends a round with an error.
        let Ok(worked) = shard.movement_round().await else {
            return;
        };
        pause = if worked {
            retry = MOVEMENT_RETRY_PAUSE;
            REBALANCE_STEP_PAUSE
        } else if shard.movement_pending() {
            // A movement that cannot go on (a replica down) is retried less and less often,
            // down to once an interval.
            let now = retry;
            retry = (retry * 2).min(interval.max(MOVEMENT_RETRY_PAUSE));
            now
        } else {
            interval
        };
        // Passes keep their own pace while a stalled movement is retried more often.
        if worked || shard.ring().replicas() < 2 || last_pass.elapsed() < interval {
            continue;
        }
        last_pass = Instant::now();
        match shard.anti_entropy_step().await {
            Ok(()) => {}
            Err(ShardError::Engine(EngineError::Closed)) => return,
            Err(e) => tracing::warn!(error = %e, "an anti-entropy pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_replicated_records_are_compared_and_old_tombstones_are_left_out() {
        let entry = |key: &'static [u8], physical_us: u64, tombstone: bool| ScanEntry {
            partition: 3,
            key: Bytes::from_static(key),
            hlc: crate::replication::test_hlc(physical_us, 1),
            summary: Default::default(),
            body_len: 0,
            tombstone,
        };
        let mark = Some(crate::replication::test_hlc(10, 1));
        assert!(compared(&entry(b"ob\0k", 5, false), mark));
        assert!(compared(&entry(b"ob\0k", 11, true), mark));
        assert!(!compared(&entry(b"ob\0k", 10, true), mark));
        assert!(compared(&entry(b"ob\0k", 10, true), None));
        for local in [&b"gb\0k"[..], b"h\0\0\0\x01", b"w\0\0\0\x03"] {
            let mut e = entry(b"", 5, false);
            e.key = Bytes::copy_from_slice(local);
            assert!(!compared(&e, mark), "{local:?}");
        }
        assert_eq!(&watermark_key(3)[..], b"w\0\0\0\x03");
    }
}
