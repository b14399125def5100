//! The [`Engine`] handle, the shared per-engine state ([`Inner`]) and the public operations;
//! each operation delegates to the module that owns its mechanism (writer, stream, read,
//! checkpoint, compaction, recovery).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};

use crate::aligned::BufPool;
use crate::cache::ObjectCache;
use crate::clock::HlcClock;
use crate::index::{Applied, Entry, Index};
use crate::record::{Kind, record_len};
use crate::segment::{Log, SegState};
use crate::writer::{AppendReq, Appended, Request};
use crate::{
    CompactionReport, EngineConfig, EngineError, EngineStats, Head, Hlc, Lookup, MAX_BODY_BYTES,
    MAX_KEY_BYTES, MAX_META_BYTES, PartitionId, PutValue, ScanEntry, Summary, Value,
};

/// Checkpoint room foreground writes of new keys leave to the writes that free space and may
/// add index entries too (tombstones of keys a replica never held, garbage-queue entries,
/// relocations): about 2,000 such entries, so deleting keeps working on a full disk.
pub(crate) const SPACE_FREEING_HEADROOM_BYTES: u64 = 256 * 1024;

/// Segment rows a checkpoint may gain beyond the segments known when a write is admitted
/// (segments created before the next checkpoint).
const SEGMENT_ROWS_AHEAD: usize = 4;

/// Counters reported by [`Engine::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub corrupt_records: Cell<u64>,
    pub replayed_records: Cell<u64>,
    pub batches_written: Cell<u64>,
    pub syncs: Cell<u64>,
    pub cache_hits: Cell<u64>,
    pub cache_misses: Cell<u64>,
    pub segments_compacted: Cell<u64>,
    pub segment_headers_repaired: Cell<u64>,
    /// When the last compaction pass ended (µs since the Unix epoch; 0: none since open).
    pub last_compaction_unix_us: Cell<u64>,
    /// An operator paused background compaction (`leofs-adm compact-suspend`).
    pub compaction_suspended: Cell<bool>,
}

impl Counters {
    pub(crate) fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }
}

/// Mutable state of an engine (never borrowed across an await).
pub(crate) struct State {
    pub index: Index,
    pub log: Log,
    /// Next LSN to hand out.
    pub next_lsn: u64,
    /// Writes whose LSN is assigned but not yet applied to the index: first LSN → (segment, offset).
    pub unapplied: BTreeMap<u64, (u64, u64)>,
    /// Set after a failed fdatasync: writes are refused until the engine is reopened.
    pub poisoned: Option<String>,
    /// Set by [`Engine::close`].
    pub closed: bool,
    /// Sequence number of the newest checkpoint file.
    pub checkpoint_seq: u64,
    /// LSN covered by the newest checkpoint.
    pub checkpoint_lsn: u64,
    /// The segment pre-writer is running.
    pub prewriting: bool,
    /// Group-commit batches are being written: the pre-writer zero-fills ahead of the head
    /// (cleared by reservations, whose large writes go straight into unwritten extents).
    pub zero_wanted: bool,
    /// The zero-fill write in flight, if any (the writer waits for it if it overlaps).
    pub zero_claim: Option<crate::segment_pool::ZeroClaim>,
    /// Creating a segment last failed for lack of room (the disk or `disk_bytes_max`):
    /// compaction then also takes segments it would leave alone on a roomy disk.
    pub disk_full: bool,
    /// Wakes the background compaction task before its next interval.
    pub compaction_wake: Option<oneshot::Sender<()>>,
}

impl State {
    /// Bytes of the log's active segments that no live record holds (superseded or deleted
    /// records, padding, unused tails of sealed segments): what compaction can reclaim.
    pub(crate) fn dead_bytes(&self) -> u64 {
        let used: u64 = self
            .log
            .segments
            .values()
            .filter(|s| s.state == SegState::Active)
            .map(|s| self.log.used_bytes(s))
            .sum();
        used.saturating_sub(self.index.live_bytes_total())
    }

    /// Applies a durable record to the index (and invalidates the cached value on change).
    pub(crate) fn apply(
        &mut self,
        cache: &RefCell<Option<ObjectCache>>,
        partition: PartitionId,
        key: &[u8],
        entry: Entry,
    ) {
        if let Applied::Won { .. } = self.index.apply(partition, key, entry)
            && let Some(cache) = cache.borrow_mut().as_mut()
        {
            cache.invalidate(partition, key);
        }
    }

    /// Applies a durable partition drop with LSN `lsn`, written in `segment`: forgets the
    /// partition's entries below it (and the cached values), and notes the drop in its segment
    /// (recycled only once a checkpoint covers it). Returns how many entries were removed.
    pub(crate) fn drop_partition(
        &mut self,
        cache: &RefCell<Option<ObjectCache>>,
        partition: PartitionId,
        lsn: u64,
        segment: u64,
    ) -> u64 {
        let removed = self.index.drop_partition(partition, lsn);
        if let Some(cache) = cache.borrow_mut().as_mut() {
            cache.invalidate_partition(partition);
        }
        if let Some(seg) = self.log.segments.get_mut(&segment) {
            seg.drop_lsn_max = seg.drop_lsn_max.max(lsn);
        }
        removed
    }

    /// Whether a segment holds a write that is not applied yet (compaction must not touch it).
    pub(crate) fn has_unapplied_in(&self, segment: u64) -> bool {
        self.unapplied.values().any(|&(s, _)| s == segment)
    }

    /// Whether every checkpoint taken from now on covers `lsn`: no write with a lower LSN is
    /// still unapplied (such a write holds the covered LSN and the replay start before it).
    pub(crate) fn checkpoints_cover(&self, lsn: u64) -> bool {
        self.unapplied
            .first_key_value()
            .is_none_or(|(&oldest, _)| oldest > lsn)
    }
}

/// Everything one engine owns; shared by the handle and its background tasks.
pub(crate) struct Inner {
    pub config: EngineConfig,
    pub log_dir: PathBuf,
    pub index_dir: PathBuf,
    pub state: RefCell<State>,
    pub cache: RefCell<Option<ObjectCache>>,
    pub clock: HlcClock,
    pub tx: mpsc::UnboundedSender<Request>,
    pub pool: BufPool,
    pub counters: Counters,
    /// Serialises checkpoints.
    pub checkpoint_lock: futures_util::lock::Mutex<()>,
    /// Serialises compaction passes.
    pub compaction_lock: futures_util::lock::Mutex<()>,
    /// Serialises segment creation (writer and pre-writer).
    pub segment_create_lock: futures_util::lock::Mutex<()>,
    /// fdatasync tasks running beside the writer.
    pub sync_tasks: Cell<usize>,
    /// Disk room held for the next checkpoint.
    pub reserve: crate::reserve::CheckpointReserve,
    /// How compaction decides that a tombstone may go (see [`TombstonePolicy`]).
    pub tombstones: RefCell<TombstonePolicy>,
    /// Writes refused for lack of room, for the log and the stats.
    pub disk_full_log: crate::disk_full::DiskFullLog,
}

/// When compaction may drop a tombstone. A single replica drops it once it is older than
/// the configured grace; a replica of a replicated partition only at or below the partition's
/// repaired-at watermark (every replica holds it, so no other copy can bring the object back),
/// never by age alone.
#[derive(Clone, Debug, Default)]
pub enum TombstonePolicy {
    /// Older than [`crate::EngineConfig::tombstone_grace`].
    #[default]
    Age,
    /// At or below the floor of its partition; never in a partition without one.
    Floors(HashMap<PartitionId, Hlc>),
}

impl TombstonePolicy {
    /// Whether a tombstone of `partition` stamped `hlc` may be dropped at `now_us`.
    pub(crate) fn drops(
        &self,
        partition: PartitionId,
        hlc: Hlc,
        now_us: u64,
        grace: Duration,
    ) -> bool {
        match self {
            Self::Age => now_us.saturating_sub(hlc.physical_us) >= grace.as_micros() as u64,
            Self::Floors(floors) => floors.get(&partition).is_some_and(|floor| hlc <= *floor),
        }
    }

    /// Forgets `partition`'s floor (the partition was dropped: if it comes back, it comes with
    /// fresh data and a fresh floor).
    pub(crate) fn reset_floor(&mut self, partition: PartitionId) {
        if let Self::Floors(floors) = self {
            floors.remove(&partition);
        }
    }
}

impl Inner {
    /// Err(Closed) once closed or after a failed fdatasync.
    pub(crate) fn check_writable(&self) -> Result<(), EngineError> {
        let state = self.state.borrow();
        if state.closed || state.poisoned.is_some() {
            Err(EngineError::Closed)
        } else {
            Ok(())
        }
    }

    /// Err(Closed) once closed (reads keep working after a failed fdatasync).
    pub(crate) fn check_open(&self) -> Result<(), EngineError> {
        if self.state.borrow().closed {
            Err(EngineError::Closed)
        } else {
            Ok(())
        }
    }

    /// Bytes the checkpoint reserve should hold for the index as it is (see `reserve`).
    pub(crate) fn reserve_bytes_needed(&self, state: &State) -> u64 {
        crate::reserve::CheckpointReserve::bytes_needed(
            &state.index,
            state.log.segments.len() + state.log.set_aside.len(),
            self.config.segment_size_bytes,
        )
    }

    /// Checkpoint room a write needs before it adds `added_bytes` of index entries: a
    /// checkpoint of the index as it is, a few segment rows to come, the entries of streamed
    /// records under way (not in the index until they end; their keys counted at the longest)
    /// and those bytes; foreground writes (`frees_space` false) also leave
    /// [`SPACE_FREEING_HEADROOM_BYTES`] to the writes that free space.
    pub(crate) fn checkpoint_room_needed(
        &self,
        state: &State,
        added_bytes: u64,
        frees_space: bool,
    ) -> u64 {
        let rows = state.log.segments.len() + state.log.set_aside.len() + SEGMENT_ROWS_AHEAD;
        let headroom = if frees_space {
            0
        } else {
            SPACE_FREEING_HEADROOM_BYTES
        };
        crate::checkpoint::encoded_bytes_bound(&state.index, rows)
            + state.unapplied.len() as u64 * crate::checkpoint::entry_bytes(MAX_KEY_BYTES)
            + added_bytes
            + headroom
    }

    /// Makes sure a checkpoint fits in the reserve once `added_bytes` more bytes of entries are
    /// in the index ([`Self::checkpoint_room_needed`]), growing the reserve if it must
    /// (geometrically: rarely); DiskFull when the disk has no room for that. Every write that
    /// adds index entries passes here first, so the checkpoint that lets compaction give space
    /// back can always be written, however small the records that filled the head segment
    /// since the reserve was last sized.
    pub(crate) fn reserve_covers(
        &self,
        added_bytes: u64,
        frees_space: bool,
    ) -> Result<(), EngineError> {
        let need = self.checkpoint_room_needed(&self.state.borrow(), added_bytes, frees_space);
        if self.reserve.room() >= need {
            return Ok(());
        }
        self.reserve
            .ensure(need)
            .map_err(|e| crate::recovery::reserve_error(&self.config, e))?;
        if self.reserve.room() < need {
            // Fewer checkpoint files of this build's format than kept (the first checkpoints
            // could not be written at open): no room can be relied on.
            return Err(EngineError::DiskFull {
                dir: self.config.dir.clone(),
            });
        }
        Ok(())
    }

    /// Asks background compaction to run a pass now (a write found the disk full).
    pub(crate) fn wake_compaction(&self) {
        if let Some(wake) = self.state.borrow_mut().compaction_wake.take() {
            let _ = wake.send(());
        }
    }

    /// Sends a request to the writer task.
    pub(crate) fn send(&self, req: Request) -> Result<(), EngineError> {
        self.tx.unbounded_send(req).map_err(|_| EngineError::Closed)
    }

    /// Appends one record through group commit and waits for its acknowledgement.
    pub(crate) async fn append(
        &self,
        req: AppendReq,
        rx: oneshot::Receiver<Result<Appended, EngineError>>,
    ) -> Result<Appended, EngineError> {
        self.send(Request::Append(req))?;
        rx.await.map_err(|_| EngineError::Closed)?
    }
}

/// One shard's storage engine: a cheap, cloneable, thread-local handle.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Rc<Inner>,
}

fn check_limits(key: &[u8], meta_len: usize, body_len: u64) -> Result<(), EngineError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(EngineError::TooLarge {
            what: "key",
            len: key.len() as u64,
            max: MAX_KEY_BYTES as u64,
        });
    }
    if meta_len > MAX_META_BYTES {
        return Err(EngineError::TooLarge {
            what: "metadata",
            len: meta_len as u64,
            max: MAX_META_BYTES as u64,
        });
    }
    if body_len > MAX_BODY_BYTES {
        return Err(EngineError::TooLarge {
            what: "body",
            len: body_len,
            max: MAX_BODY_BYTES,
        });
    }
    Ok(())
}

impl Engine {
    /// Opens (or creates) the shard directory, loads the newest valid checkpoint and replays the
    /// log after it, truncating a torn tail, then starts the writer, checkpoint and compaction tasks.
    pub async fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        crate::recovery::open(config).await
    }

    fn stamp(&self, hlc: Option<Hlc>) -> Hlc {
        match hlc {
            Some(h) => {
                self.inner.clock.observe(h);
                h
            }
            None => self.inner.clock.now(),
        }
    }

    /// Stores `value` under `key`; returns once the record is durable per the sync policy.
    /// Returns the timestamp stored. A put with an older `hlc` than the key's newest is
    /// written but does not replace it.
    pub async fn put(
        &self,
        partition: PartitionId,
        key: &[u8],
        value: PutValue,
    ) -> Result<Hlc, EngineError> {
        check_limits(key, value.meta.len(), value.body.len() as u64)?;
        self.inner.check_writable()?;
        let len = record_len(key.len(), value.meta.len(), value.body.len() as u64);
        if len > self.inner.config.batch_bytes_max as u64 {
            let body_len = value.body.len() as u64;
            let body = futures_util::stream::iter([Ok(value.body.clone())]);
            return self.put_stream(partition, key, value, body_len, body).await;
        }
        let result = self.append_put(partition, key, value, false).await;
        self.inner.note_put(result)
    }

    /// Stores a small record whose purpose is to free space (the durable note that a deleted
    /// object's chunks are garbage): like a tombstone it may use the spare segment that
    /// foreground puts must leave, so that deleting works on a full disk. The record must fit a
    /// group-commit batch.
    pub async fn put_reclaiming(
        &self,
        partition: PartitionId,
        key: &[u8],
        value: PutValue,
    ) -> Result<Hlc, EngineError> {
        check_limits(key, value.meta.len(), value.body.len() as u64)?;
        self.inner.check_writable()?;
        let len = record_len(key.len(), value.meta.len(), value.body.len() as u64);
        if len > self.inner.config.batch_bytes_max as u64 {
            return Err(EngineError::TooLarge {
                what: "space-freeing record",
                len,
                max: self.inner.config.batch_bytes_max as u64,
            });
        }
        self.append_put(partition, key, value, true).await
    }

    /// Appends a put record that fits one group-commit batch (checked by the caller); with
    /// `use_spare` it may take the spare segment foreground puts must leave.
    async fn append_put(
        &self,
        partition: PartitionId,
        key: &[u8],
        value: PutValue,
        use_spare: bool,
    ) -> Result<Hlc, EngineError> {
        let hlc = self.stamp(value.hlc);
        let (reply, rx) = oneshot::channel();
        let req = AppendReq {
            kind: Kind::Put,
            partition,
            key: key.into(),
            meta: value.meta,
            body: value.body,
            hlc,
            summary: value.summary,
            use_spare,
            relocates: None,
            reply,
        };
        Ok(self.inner.append(req, rx).await?.hlc)
    }

    /// What the index knows of `key`'s newest record (tombstones included), without I/O: cheap
    /// enough to evaluate a write's precondition at its commit point.
    pub fn lookup(&self, partition: PartitionId, key: &[u8]) -> Option<Lookup> {
        let state = self.inner.state.borrow();
        let e = state.index.get(partition, key)?;
        Some(Lookup {
            hlc: e.hlc,
            summary: if e.tombstone {
                Summary::default()
            } else {
                e.summary
            },
            body_len: if e.tombstone { 0 } else { e.body_len },
            tombstone: e.tombstone,
        })
    }

    /// Like [`Engine::put`] but the body of `body_len` bytes arrives in pieces from `body`,
    /// written to the log in bounded pieces without holding the whole body in memory.
    pub async fn put_stream<S>(
        &self,
        partition: PartitionId,
        key: &[u8],
        header: PutValue,
        body_len: u64,
        body: S,
    ) -> Result<Hlc, EngineError>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        check_limits(key, header.meta.len(), body_len)?;
        self.inner.check_writable()?;
        let hlc = self.stamp(header.hlc);
        let result =
            crate::stream::put_stream(&self.inner, partition, key, header, hlc, body_len, body)
                .await;
        self.inner.note_put(result)
    }

    /// Reads the newest value for `key`, verified by checksum; None if absent or deleted.
    pub async fn get(
        &self,
        partition: PartitionId,
        key: &[u8],
    ) -> Result<Option<Value>, EngineError> {
        crate::read::get(&self.inner, partition, key).await
    }

    /// Reads only `range` of the body (clamped to the body); for ranged GETs of large chunks.
    pub async fn get_range(
        &self,
        partition: PartitionId,
        key: &[u8],
        range: Range<u64>,
    ) -> Result<Option<Value>, EngineError> {
        crate::read::get_range(&self.inner, partition, key, range).await
    }

    /// Reads metadata and summary for `key` without its body; None if absent or deleted.
    pub async fn head(
        &self,
        partition: PartitionId,
        key: &[u8],
    ) -> Result<Option<Head>, EngineError> {
        crate::read::head(&self.inner, partition, key).await
    }

    /// Appends a tombstone for `key` (durable per the sync policy). Returns the timestamp of the
    /// tombstone, or None when the key had no live value (a tombstone is still written if `hlc` is given).
    pub async fn delete(
        &self,
        partition: PartitionId,
        key: &[u8],
        hlc: Option<Hlc>,
    ) -> Result<Option<Hlc>, EngineError> {
        check_limits(key, 0, 0)?;
        self.inner.check_writable()?;
        let had_live = self
            .inner
            .state
            .borrow()
            .index
            .get(partition, key)
            .is_some_and(|e| !e.tombstone);
        if !had_live && hlc.is_none() {
            return Ok(None);
        }
        let hlc = self.stamp(hlc);
        let (reply, rx) = oneshot::channel();
        let req = AppendReq {
            kind: Kind::Tombstone,
            partition,
            key: key.into(),
            meta: Bytes::new(),
            body: Bytes::new(),
            hlc,
            summary: Summary::default(),
            use_spare: true,
            relocates: None,
            reply,
        };
        let hlc = self.inner.append(req, rx).await?.hlc;
        Ok(had_live.then_some(hlc))
    }

    /// Forgets every entry of `partition` written before this call (puts, tombstones, any key),
    /// durably: for a shard that stops owning a ring partition (rebalancing), without a
    /// tombstone per key. Appends one partition-drop record (FORMAT.md §4.1) through group commit
    /// and returns after its fdatasync (like a delete, it may use the spare segment: it frees
    /// space), with the number of index entries removed.
    ///
    /// Writes are ordered by LSN: every entry of the partition with a lower LSN than the drop's
    /// is gone, now and after any reopen, including a streamed put that was in flight (begun
    /// before this call) and completes later: it is acknowledged and never visible. Writes with
    /// a higher LSN (every write made after this call returns) are kept. The partition's
    /// tombstone floor ([`Engine::raise_tombstone_floor`]) is reset, [`Engine::partitions`] no
    /// longer lists it unless it is written again, and the removed records' bytes become dead,
    /// so compaction reclaims them.
    pub async fn drop_partition(&self, partition: PartitionId) -> Result<u64, EngineError> {
        self.inner.check_writable()?;
        let (reply, rx) = oneshot::channel();
        let req = AppendReq {
            kind: Kind::PartitionDrop,
            partition,
            key: Box::default(),
            meta: Bytes::new(),
            body: Bytes::new(),
            hlc: self.inner.clock.now(),
            summary: Summary::default(),
            use_spare: true,
            relocates: None,
            reply,
        };
        Ok(self.inner.append(req, rx).await?.removed)
    }

    /// Live keys across all partitions of this engine that start with `prefix` and sort after
    /// `start_after` (exclusive), in key order, at most `limit`. Index only, no disk I/O.
    pub fn scan(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Vec<ScanEntry> {
        self.inner
            .state
            .borrow()
            .index
            .scan(prefix, start_after, limit, false)
    }

    /// Like [`Engine::scan`], with tombstones too (counted in `limit`): what a replicated
    /// listing merges by HLC, so that a delete on one replica outvotes an older copy on another.
    pub fn scan_with_tombstones(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Vec<ScanEntry> {
        self.inner
            .state
            .borrow()
            .index
            .scan(prefix, start_after, limit, true)
    }

    /// Keys of one partition after `start_after`, in order, at most `limit`, including
    /// tombstones when asked (for repair and rebalancing).
    pub fn scan_partition(
        &self,
        partition: PartitionId,
        start_after: Option<&[u8]>,
        limit: usize,
        include_tombstones: bool,
    ) -> Vec<ScanEntry> {
        self.inner.state.borrow().index.scan_partition(
            partition,
            start_after,
            limit,
            include_tombstones,
        )
    }

    /// Keys of `partition` that start with `prefix`, after `start_after`, in key order, at most
    /// `limit` (tombstones too when `include_tombstones`): one seek in the partition's index,
    /// for a range of keys that one partition holds (a versioned object's versions), or one
    /// partition's share of a bucket.
    pub fn scan_partition_prefix(
        &self,
        partition: PartitionId,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
        include_tombstones: bool,
    ) -> Vec<ScanEntry> {
        self.inner.state.borrow().index.scan_partition_prefix(
            partition,
            prefix,
            start_after,
            limit,
            include_tombstones,
        )
    }

    /// Partitions that have at least one key (live or tombstone) in this engine.
    pub fn partitions(&self) -> Vec<PartitionId> {
        self.inner.state.borrow().index.partitions()
    }

    /// A fresh timestamp from this engine's hybrid logical clock.
    pub fn now(&self) -> Hlc {
        self.inner.clock.now()
    }

    /// From now on, tombstones are dropped only at or below the floor of their partition
    /// (a replicated partition's repaired-at watermark), never by age alone.
    pub fn drop_tombstones_at_floors(&self) {
        let mut policy = self.inner.tombstones.borrow_mut();
        if matches!(*policy, TombstonePolicy::Age) {
            *policy = TombstonePolicy::Floors(HashMap::new());
        }
    }

    /// Raises `partition`'s tombstone floor to `floor` (never lowers it); see
    /// [`Engine::drop_tombstones_at_floors`].
    pub fn raise_tombstone_floor(&self, partition: PartitionId, floor: Hlc) {
        if let TombstonePolicy::Floors(floors) = &mut *self.inner.tombstones.borrow_mut() {
            let held = floors.entry(partition).or_default();
            *held = (*held).max(floor);
        }
    }

    /// Moves this engine's clock past `seen` (a newer version held elsewhere): every later
    /// [`Engine::now`] is above it.
    pub fn observe(&self, seen: Hlc) {
        self.inner.clock.observe(seen);
    }

    /// Current counters.
    pub fn stats(&self) -> EngineStats {
        let state = self.inner.state.borrow();
        let c = &self.inner.counters;
        EngineStats {
            live_bytes: state.index.live_bytes_total(),
            dead_bytes: state.dead_bytes(),
            live_records: state.index.len() - state.index.tombstones(),
            tombstones: state.index.tombstones(),
            segments: state.log.segments.len() as u64,
            segments_set_aside: state.log.set_aside.len() as u64,
            segment_headers_repaired: c.segment_headers_repaired.get(),
            free_segments: state.log.free.len() as u64,
            disk_full: self.inner.disk_full_log.full_now(std::time::Instant::now()),
            writes_refused_disk_full: self.inner.disk_full_log.refused_total(),
            index_bytes_per_entry: state.index.bytes_per_entry(),
            index_bytes: state.index.bytes_total(),
            corrupt_records: c.corrupt_records.get(),
            replayed_records: c.replayed_records.get(),
            batches_written: c.batches_written.get(),
            syncs: c.syncs.get(),
            cache_hits: c.cache_hits.get(),
            cache_misses: c.cache_misses.get(),
            segments_compacted: c.segments_compacted.get(),
            last_compaction_unix_us: c.last_compaction_unix_us.get(),
            compaction_suspended: c.compaction_suspended.get(),
        }
    }

    /// Pauses (or resumes) background compaction: while paused, only a full disk still wakes
    /// it (space must come back without an operator) and [`Engine::compact`] still runs.
    pub fn set_compaction_suspended(&self, suspended: bool) {
        self.inner.counters.compaction_suspended.set(suspended);
    }

    /// Writes an index checkpoint now.
    pub async fn checkpoint(&self) -> Result<(), EngineError> {
        self.inner.check_open()?;
        crate::checkpoint_task::checkpoint_now(&self.inner).await
    }

    /// Runs one compaction pass now over every segment below the live threshold.
    pub async fn compact(&self) -> Result<CompactionReport, EngineError> {
        self.inner.check_writable()?;
        crate::compaction::compact_once(&self.inner).await
    }

    /// Flushes pending writes, writes a checkpoint and stops background tasks.
    pub async fn close(&self) -> Result<(), EngineError> {
        if self.inner.state.borrow().closed {
            return Ok(());
        }
        // A sync request is answered after every request queued before it.
        let (reply, rx) = oneshot::channel();
        let head = self.inner.state.borrow().log.head;
        let flushed = match self.inner.send(Request::Sync {
            segment: head,
            reply,
        }) {
            Ok(()) => rx.await.unwrap_or(Err(EngineError::Closed)),
            Err(e) => Err(e),
        };
        self.inner.state.borrow_mut().closed = true;
        self.inner.tx.close_channel();
        let checkpointed = crate::checkpoint_task::checkpoint_now(&self.inner).await;
        match (flushed, checkpointed) {
            (Ok(()), result) => result,
            (Err(_), Ok(())) if self.inner.state.borrow().poisoned.is_some() => Ok(()),
            (Err(e), _) => Err(e),
        }
    }
}
