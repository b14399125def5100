//! Object operations storage runs on the core that owns the record they change (DESIGN §4a):
//! committing an object's manifest, with its precondition (`If-Match`, `If-None-Match`)
//! evaluated at that commit point, atomically with the write (a per-key lock orders the commits
//! and deletes of one key); deleting an object; committing a multipart part; the registry of
//! versions being written; and read leases on chunks, held where the chunks live. What an
//! overwrite, a delete, a replaced part or an abandoned write leaves behind is written to the
//! durable garbage queue of the object's core (`collector`) in the same group commit, so the
//! stateless gateway never owns garbage.
//!
//! Operations that change state run as tasks of the owner core even when called locally, so a
//! caller that goes away (a client that disconnects) never leaves one half done.
//!
//! Must never: let two commits of one key interleave, or let a version be collected while a
//! write of it is registered, a manifest or a live upload's part references it, or (for up to
//! `chunk_grace`) a read holds a lease on it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::StreamExt;
use leofs_engine::{
    Engine, Hlc, Lookup, MAX_META_BYTES, PartitionId, PutValue, ScanEntry, Summary,
};

use crate::object::{
    KEY_SEP, ObjectMeta, PartMeta, TAG_GARBAGE, TAG_INLINE, VERSION_ID_BYTES, VersionChunks,
    VersionId, VersionRef, Versioning, attributes_key, chunk_key, delete_marker, etag_string,
    garbage_key, is_delete_marker, object_key, parse_chunk_key, parts_count_of_tag, upload_key,
    version_key, version_prefix,
};
use crate::replicated::DecidedOn;
use crate::request::{StorageRequest, StorageResponse};
use crate::ring::Vnode;
use crate::{Shard, ShardError, hash_bytes, object_hash};

/// Default of [`GcConfig::chunk_grace`]: long enough for a slow client to stream a large object.
pub const DEFAULT_CHUNK_GRACE: Duration = Duration::from_secs(3600);
/// Shortest sweep interval derived from a grace.
const SWEEP_INTERVAL_MIN: Duration = Duration::from_secs(5);
/// Longest sweep interval derived from a grace.
const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(15 * 60);
/// Chunk deletes a core runs at once while collecting (they share group commits).
const COLLECT_CONCURRENCY_MAX: usize = 64;
/// Objects of at most this many chunks have every chunk checked for presence when a read
/// leases them (a missing one is then an error before the first byte); larger ones are leased
/// by version only, and a chunk missing later cuts the body short.
pub const LEASE_PRESENCE_CHECK_CHUNKS_MAX: u64 = 1024;
/// Format version of a garbage-queue entry's encoding.
const GARBAGE_FORMAT_VERSION: u8 = 1;
/// Bytes of a garbage-queue entry's value before its versions (format version, count).
const GARBAGE_HEADER_BYTES: usize = 5;
/// Bytes of one version in a garbage-queue entry (id, chunk count).
const GARBAGE_VERSION_BYTES: usize = VERSION_ID_BYTES + 4;
/// Most versions one garbage-queue entry names (what fits the engine's metadata limit); more
/// are written as several entries.
pub const GARBAGE_VERSIONS_MAX: usize =
    (MAX_META_BYTES - GARBAGE_HEADER_BYTES) / GARBAGE_VERSION_BYTES;

/// Settings of garbage collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcConfig {
    /// Longest time a read's lease keeps the chunks it streams from being collected: an
    /// overwritten or deleted object's chunks go as soon as no read holds them, and at the
    /// latest this long after the newest read that leased them started.
    pub chunk_grace: Duration,
    /// How often each core sweeps its chunks for orphans (versions nothing references: an
    /// upload cut by a crash). Each core also sweeps once shortly after it starts.
    pub sweep_interval: Duration,
}

impl GcConfig {
    /// A grace of `chunk_grace`, with sweeps every quarter of it (within 5 s ..= 15 min).
    pub fn with_grace(chunk_grace: Duration) -> Self {
        Self {
            chunk_grace,
            sweep_interval: (chunk_grace / 4).clamp(SWEEP_INTERVAL_MIN, SWEEP_INTERVAL_MAX),
        }
    }
}

impl Default for GcConfig {
    fn default() -> Self {
        Self::with_grace(DEFAULT_CHUNK_GRACE)
    }
}

/// One ETag condition of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtagCondition {
    /// `*`: any current object.
    Any,
    /// This ETag (without quotes).
    Etag(String),
}

/// A write's precondition (S3 `If-Match` / `If-None-Match`), evaluated by storage at the commit
/// point on the owning core, atomically with the write: of concurrent `If-None-Match: *`
/// creators of a key exactly one succeeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteCondition {
    /// `If-Match`: the current object must exist (and have this ETag).
    pub if_match: Option<EtagCondition>,
    /// `If-None-Match`: no current object (`*`), or not one with this ETag.
    pub if_none_match: Option<EtagCondition>,
    /// The current object (a versioned key's latest version) must be the one stamped this:
    /// a lifecycle action decided on that version acts only if nothing changed since.
    pub if_latest: Option<Hlc>,
}

impl WriteCondition {
    /// No precondition.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether the write is conditional (decided by the partition's first replica).
    pub fn is_conditional(&self) -> bool {
        self.if_match.is_some() || self.if_none_match.is_some() || self.if_latest.is_some()
    }

    /// Checks the condition against the key's newest record.
    pub fn check(&self, current: Option<&Lookup>) -> Result<(), ShardError> {
        if let Some(stamp) = self.if_latest
            && current.is_none_or(|c| c.tombstone || c.hlc != stamp)
        {
            return Err(ShardError::PreconditionFailed);
        }
        let etag = current
            .filter(|c| !c.tombstone)
            .map(|c| etag_string(&c.summary.digest, parts_count_of_tag(c.summary.tag)));
        if let Some(cond) = &self.if_none_match {
            match (cond, &etag) {
                (EtagCondition::Any, Some(_)) => return Err(ShardError::PreconditionFailed),
                (EtagCondition::Etag(want), Some(have)) if want == have => {
                    return Err(ShardError::PreconditionFailed);
                }
                _ => {}
            }
        }
        if let Some(cond) = &self.if_match {
            let Some(have) = &etag else {
                return Err(ShardError::NoSuchObject);
            };
            if let EtagCondition::Etag(want) = cond
                && want != have
            {
                return Err(ShardError::PreconditionFailed);
            }
        }
        Ok(())
    }
}

/// A version being written, as the commit that ends its registration names it (crosses cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    /// The version the chunks are written under.
    pub version: VersionId,
    /// Chunks written so far (what to collect if the write does not commit).
    pub chunks: u32,
}

impl PendingWrite {
    /// The chunks to collect if the write does not commit (none if none was written).
    fn garbage(&self) -> Vec<VersionChunks> {
        (self.chunks > 0)
            .then_some(VersionChunks {
                version: self.version,
                chunks: self.chunks,
            })
            .into_iter()
            .collect()
    }
}

/// Counters of garbage collection on one core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Garbage-queue entries written on this core since start.
    pub entries_queued: u64,
    /// Entries fully collected and removed since start.
    pub entries_done: u64,
    /// Entries the collector knows and has not finished (waiting for reads, or failing).
    pub entries_pending: u64,
    /// Chunks deleted by the collector (queued garbage) on this core.
    pub chunks_collected: u64,
    /// Chunk collections put off because a read held a lease.
    pub chunks_deferred: u64,
    /// Chunks deleted by the orphan sweeper on this core.
    pub orphan_chunks_swept: u64,
    /// Part records of uploads that no longer exist, deleted by the sweeper.
    pub orphan_parts_swept: u64,
    /// Versions registered as being written (manifest owner) now.
    pub writes_in_flight: u64,
    /// Versions with chunks on this core leased by reads now.
    pub versions_leased: u64,
}

/// A read's hold on the chunks of some versions on one core.
struct LeaseState {
    holders: u32,
    newest: Instant,
}

/// Per-core object state (the core's thread only).
#[derive(Default)]
pub(crate) struct ObjectState {
    locks: KeyLocks,
    /// Versions being written whose manifest this core owns, with how many writers (1).
    writes: RefCell<HashMap<VersionId, u32>>,
    /// Versions whose chunks on this core reads are streaming.
    leases: RefCell<HashMap<VersionId, LeaseState>>,
    /// Versions whose chunks on this core are being deleted now: never leased meanwhile (the
    /// index still shows a chunk until its tombstone is durable).
    collecting: RefCell<HashMap<VersionId, u32>>,
    pub(crate) config: Cell<GcConfig>,
    pub(crate) stats: Cell<GcStats>,
    /// Garbage-queue entries written here, for the collector task (it also finds them at start).
    pub(crate) inbox: RefCell<Option<futures_channel::mpsc::UnboundedSender<Bytes>>>,
    /// Set when the core stops: the collector and the sweeper end.
    pub(crate) stopping: Cell<bool>,
    /// The ring epoch the sweeper last saw, and when it saw it change (it sweeps no chunk for
    /// the chunk grace after a change).
    pub(crate) ring_seen: Cell<Option<(u64, Option<std::time::Instant>)>>,
}

impl ObjectState {
    pub(crate) fn count(&self, change: impl FnOnce(&mut GcStats)) {
        let mut stats = self.stats.get();
        change(&mut stats);
        self.stats.set(stats);
    }

    /// The counters, with the registries' current sizes.
    pub(crate) fn snapshot(&self) -> GcStats {
        let mut stats = self.stats.get();
        stats.writes_in_flight = self.writes.borrow().len() as u64;
        stats.versions_leased = self.leases.borrow().len() as u64;
        stats
    }

    fn lease(&self, versions: &[VersionId]) {
        let now = Instant::now();
        let mut leases = self.leases.borrow_mut();
        for v in versions {
            let state = leases.entry(*v).or_insert(LeaseState {
                holders: 0,
                newest: now,
            });
            state.holders += 1;
            state.newest = now;
        }
    }

    pub(crate) fn release(&self, versions: &[VersionId]) {
        let mut leases = self.leases.borrow_mut();
        for v in versions {
            if let Some(state) = leases.get_mut(v) {
                state.holders = state.holders.saturating_sub(1);
                if state.holders == 0 {
                    leases.remove(v);
                }
            }
        }
    }

    /// Forgets leases whose newest holder started more than the grace ago (a release lost to
    /// a stopping core, or a reader that vanished): they no longer hold anything.
    pub(crate) fn prune_leases(&self) {
        let grace = self.config.get().chunk_grace;
        self.leases
            .borrow_mut()
            .retain(|_, s| s.newest.elapsed() < grace);
    }

    /// Whether a read holds `version` (and its newest lease is younger than the grace).
    fn is_leased(&self, version: &VersionId) -> bool {
        let grace = self.config.get().chunk_grace;
        self.leases
            .borrow()
            .get(version)
            .is_some_and(|s| s.holders > 0 && s.newest.elapsed() < grace)
    }

    pub(crate) fn begin_write(&self, version: VersionId) {
        *self.writes.borrow_mut().entry(version).or_default() += 1;
    }

    pub(crate) fn end_write(&self, version: &VersionId) {
        let mut writes = self.writes.borrow_mut();
        if let Some(n) = writes.get_mut(version) {
            *n -= 1;
            if *n == 0 {
                writes.remove(version);
            }
        }
    }

    fn is_writing(&self, version: &VersionId) -> bool {
        self.writes.borrow().contains_key(version)
    }

    /// Hands a garbage-queue entry to the collector task.
    fn notify(&self, entry: Bytes) {
        if let Some(tx) = self.inbox.borrow().as_ref() {
            let _ = tx.unbounded_send(entry);
        }
    }
}

/// Marks versions as being collected on this core while it lives.
struct Collecting<'a> {
    state: &'a ObjectState,
    versions: Vec<VersionId>,
}

impl<'a> Collecting<'a> {
    fn mark(state: &'a ObjectState, versions: Vec<VersionId>) -> Self {
        let mut collecting = state.collecting.borrow_mut();
        for v in &versions {
            *collecting.entry(*v).or_default() += 1;
        }
        drop(collecting);
        Self { state, versions }
    }
}

impl Drop for Collecting<'_> {
    fn drop(&mut self) {
        let mut collecting = self.state.collecting.borrow_mut();
        for v in &self.versions {
            if let Some(n) = collecting.get_mut(v) {
                *n -= 1;
                if *n == 0 {
                    collecting.remove(v);
                }
            }
        }
    }
}

/// An async mutex per key, on one core: commits and deletes of a key run one at a time.
/// Waiters are woken when the holder releases and race again (cancellation-safe: a waiter that
/// goes away holds nothing).
#[derive(Default)]
struct KeyLocks {
    held: RefCell<HashMap<Bytes, Vec<oneshot::Sender<()>>>>,
}

impl KeyLocks {
    async fn lock(&self, key: &Bytes) -> KeyGuard<'_> {
        loop {
            let woken = {
                let mut held = self.held.borrow_mut();
                match held.get_mut(key) {
                    None => {
                        held.insert(key.clone(), Vec::new());
                        return KeyGuard {
                            locks: self,
                            key: key.clone(),
                        };
                    }
                    Some(waiters) => {
                        let (tx, rx) = oneshot::channel();
                        waiters.push(tx);
                        rx
                    }
                }
            };
            let _ = woken.await;
        }
    }
}

/// Holds a key's lock; releasing wakes its waiters.
struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: Bytes,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let waiters = self.locks.held.borrow_mut().remove(&self.key);
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(());
        }
    }
}

/// A version registered as being written. Its chunks are never collected while it is held;
/// dropped without being handed to a commit (the write failed, or the client went away), it
/// queues whatever chunks were written as garbage.
///
/// The registration is held on every replica up of the object's partition, and follows the
/// ring ([`WriteRegistration::follow_ring`]): a write that outlasts a rebalance is registered
/// on the partition's new replicas too, whom the sweeper then asks.
pub struct WriteRegistration {
    shard: Shard,
    bucket: String,
    key: String,
    pending: PendingWrite,
    /// The vnodes holding the registration.
    registered: Vec<Vnode>,
    /// The ring epoch `registered` was last brought up to date with.
    epoch: u64,
    armed: bool,
}

impl WriteRegistration {
    /// The version the chunks are written under.
    pub fn version(&self) -> VersionId {
        self.pending.version
    }

    /// Counts a chunk written (so an abandoned write collects it).
    pub fn chunk_written(&mut self) {
        self.pending.chunks += 1;
    }

    /// After a ring change: registers the version on the object partition's replicas up that
    /// lack it (the writer calls this after every chunk and every second while a chunk's bytes
    /// arrive, so the sweeper, holding off for the chunk grace after a ring change, finds it
    /// on the replicas it asks).
    pub async fn follow_ring(&mut self) -> Result<(), ShardError> {
        let epoch = self.shard.ring().epoch();
        if epoch == self.epoch {
            return Ok(());
        }
        self.register_on_replicas().await?;
        self.epoch = epoch;
        Ok(())
    }

    /// Registers the version on every replica up of the object's partition not holding it
    /// yet; Err when none of them holds it then.
    async fn register_on_replicas(&mut self) -> Result<(), ShardError> {
        let partition = self.shard.object_partition(&self.bucket, &self.key);
        let replicas = self.shard.write_registrars(partition)?;
        let version = self.pending.version;
        let missing: Vec<Vnode> = replicas
            .iter()
            .copied()
            .filter(|v| !self.registered.contains(v))
            .collect();
        let answers = futures_util::future::join_all(missing.iter().map(|&vnode| {
            self.shard
                .send_to_vnode(vnode, StorageRequest::BeginWrite { partition, version })
        }))
        .await;
        let mut failure = None;
        for (vnode, answer) in missing.into_iter().zip(answers) {
            match answer.and_then(StorageResponse::into_done) {
                Ok(()) => self.registered.push(vnode),
                Err(e) => failure = Some(e),
            }
        }
        if replicas.iter().any(|v| self.registered.contains(v)) {
            return Ok(());
        }
        Err(failure.unwrap_or(ShardError::TooFewReplicas {
            partition,
            up: 0,
            needed: 1,
        }))
    }

    /// Ends the registration through a commit (which ends it on the core committing it); the
    /// guard returned ends it on the other vnodes holding it once the commit is over.
    fn hand_over(mut self) -> (PendingWrite, RegistrationEnd) {
        self.armed = false;
        let end = self.take_end();
        (self.pending, end)
    }

    /// The end of the registration on the vnodes holding it, taken out of it (posted when
    /// dropped).
    fn take_end(&mut self) -> RegistrationEnd {
        RegistrationEnd {
            shard: self.shard.clone(),
            partition: self.shard.object_partition(&self.bucket, &self.key),
            bucket: std::mem::take(&mut self.bucket),
            key: std::mem::take(&mut self.key),
            version: self.pending.version,
            vnodes: std::mem::take(&mut self.registered),
        }
    }
}

impl Drop for WriteRegistration {
    /// Posts the abandonment to the object's core, and the registration's end to the other
    /// vnodes holding it (no task is spawned here: this may run while the runtime is being torn
    /// down, and then the messages are simply never delivered).
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (bucket, key) = (&self.bucket, &self.key);
        let partition = self.shard.object_partition(bucket, key);
        match self.shard.vnode_of(partition) {
            Ok(owner) => {
                let request = StorageRequest::EndWrite {
                    partition,
                    bucket: bucket.clone(),
                    key: key.clone(),
                    ended: Some(self.pending.version),
                    garbage: self.pending.garbage(),
                };
                self.shard.post_to_vnode(owner, request);
                self.registered.retain(|&v| v != owner);
            }
            Err(e) => {
                tracing::warn!(error = %e, %bucket, %key, "cannot queue an abandoned write's chunks; the sweeper will find them");
            }
        }
        drop(self.take_end());
    }
}

/// Ends a write's registration on the vnodes holding it when dropped (after the commit that
/// took the registration over: a second end where the commit ended it is a no-op).
struct RegistrationEnd {
    shard: Shard,
    partition: PartitionId,
    bucket: String,
    key: String,
    version: VersionId,
    vnodes: Vec<Vnode>,
}

impl RegistrationEnd {
    /// Runs `commit` (which took the registration over) detached from the caller, and ends
    /// the registration on its other holders only once the commit is over, even when the
    /// caller goes away meanwhile.
    async fn after(
        self,
        commit: impl std::future::Future<Output = Result<Hlc, ShardError>> + 'static,
    ) -> Result<Hlc, ShardError> {
        monoio::spawn(async move {
            let committed = commit.await;
            drop(self);
            committed
        })
        .await
    }
}

impl Drop for RegistrationEnd {
    fn drop(&mut self) {
        for &vnode in &self.vnodes {
            let request = StorageRequest::EndWrite {
                partition: self.partition,
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                ended: Some(self.version),
                garbage: Vec::new(),
            };
            self.shard.post_to_vnode(vnode, request);
        }
    }
}

/// A read's lease on the chunks of an object's versions, on every vnode that holds one of
/// them; released when dropped.
pub struct ChunkLease {
    shard: Shard,
    held: Vec<(Vnode, Vec<VersionId>)>,
}

impl Drop for ChunkLease {
    /// Releases at once on this core and posts the release to the others (no task is spawned:
    /// this may run while the runtime is being torn down).
    fn drop(&mut self) {
        for (vnode, versions) in std::mem::take(&mut self.held) {
            if vnode == self.shard.here() {
                self.shard.core.objects.release(&versions);
            } else {
                let request = StorageRequest::ReleaseChunks { versions };
                self.shard.post_to_vnode(vnode, request);
            }
        }
    }
}

/// The timestamp a serializing replica writes a coordinator's `stamp` (a replicated write or
/// delete) at: the stamp itself, or, when the replica holds a newer version of the key (or
/// holds none and the stamp is at or below the partition's repaired-at `watermark`, where
/// nothing may land), a fresh one of its own clock above it, so that a later client write
/// never loses to an earlier one stamped by a faster clock (DESIGN §7). Unstamped writes
/// (N = 1) are left to the engine's clock.
fn above_held(
    engine: &Engine,
    held: Option<&Lookup>,
    watermark: Option<Hlc>,
    stamp: Option<Hlc>,
) -> Option<Hlc> {
    let stamp = stamp?;
    let above = match held {
        Some(held) => Some(held.hlc).filter(|&h| h > stamp),
        None => watermark.filter(|&w| w >= stamp),
    };
    match above {
        Some(above) => {
            engine.observe(above);
            Some(engine.now())
        }
        None => Some(stamp),
    }
}

/// The stamp of the tombstone that removes an attribute record stamped `held` with the
/// removal of its version stamped `at`: the removal's own stamp (every replica stores the
/// removal at the same one), or one tick above the record when that is newer (a change that
/// raced the removal); None (a single node) lets the engine stamp it.
fn attributes_tombstone_stamp(held: Hlc, at: Option<Hlc>) -> Option<Hlc> {
    let at = at?;
    Some(if at > held {
        at
    } else {
        crate::antientropy::collection_stamp(held)
    })
}

/// The record of the version of (bucket, key) stamped `stamp`: the object record when it is the
/// null version, else its version record.
fn version_record_key(bucket: &str, key: &str, null_version: bool, stamp: Hlc) -> Bytes {
    if null_version {
        object_key(bucket, key)
    } else {
        version_key(bucket, key, stamp)
    }
}

/// Most live version records one replica's view of a key holds (see
/// [`Shard::latest_view_here`]).
pub const LATEST_VIEW_LIVE_MAX: usize = 8;
/// Most version records, live or deleted, one replica's view of a key holds.
pub const LATEST_VIEW_ENTRIES_MAX: usize = 64;

/// Whether a version record's index entry is one of `key`'s (not of a longer key that starts
/// with `key` and 0x00).
fn is_version_of(entry: &ScanEntry, key: &str) -> bool {
    crate::object::parse_version_key(&entry.key).is_some_and(|(_, k, _)| k == key)
}

/// The latest version among index entries of one key's records (its object record and
/// version records, tombstones included, one entry per record): the newest live one. A
/// version record's key is its stamp, so a tombstone of it means that version is gone.
fn latest_of(entries: &[ScanEntry]) -> Option<ScanEntry> {
    entries
        .iter()
        .filter(|e| !e.tombstone)
        .max_by_key(|e| e.hlc)
        .cloned()
}

/// What several replicas' views of a key say its latest version is.
#[derive(Debug, PartialEq, Eq)]
enum Merged {
    /// The latest version (None: the key has none).
    Latest(Option<ScanEntry>),
    /// A view stopped above the newest live version left after the merge: an older version
    /// that view did not show may be the latest, so the views cannot tell.
    BeyondViews,
}

/// The latest version among several replicas' views of a key (see
/// [`Shard::latest_view_here`]): each record's newest entry wins (a deletion outvotes a copy
/// that missed it), then the newest live version is the latest, if every view that stopped
/// at its limits reached down to it.
fn merged_latest(views: Vec<Vec<ScanEntry>>) -> Merged {
    let mut merged: HashMap<Bytes, ScanEntry> = HashMap::new();
    // The lowest stamp every view reaches: below the last version record of a view that
    // stopped at its limits, that view says nothing.
    let mut reached: Option<Hlc> = None;
    for view in views {
        let versions: Vec<&ScanEntry> = view
            .iter()
            .filter(|e| e.key.first() == Some(&crate::object::NS_VERSION))
            .collect();
        let live = versions.iter().filter(|e| !e.tombstone).count();
        if (live >= LATEST_VIEW_LIVE_MAX || versions.len() >= LATEST_VIEW_ENTRIES_MAX)
            && let Some((_, _, stamp)) = versions
                .last()
                .and_then(|e| crate::object::parse_version_key(&e.key))
        {
            reached = reached.max(Some(stamp));
        }
        for entry in view {
            match merged.get(&entry.key) {
                Some(held) if held.hlc >= entry.hlc => {}
                _ => {
                    merged.insert(entry.key.clone(), entry);
                }
            }
        }
    }
    let merged: Vec<ScanEntry> = merged.into_values().collect();
    let latest = latest_of(&merged);
    match (reached, &latest) {
        (Some(bound), Some(l)) if l.hlc < bound => Merged::BeyondViews,
        (Some(_), None) => Merged::BeyondViews,
        _ => Merged::Latest(latest),
    }
}

/// The engine key a commit into a bucket of `versioning` stamped `hlc` writes: its version
/// record when versioning is enabled, its object record otherwise.
fn written_key(bucket: &str, key: &str, okey: &Bytes, versioning: Versioning, hlc: Hlc) -> Bytes {
    match versioning {
        Versioning::Enabled => version_key(bucket, key, hlc),
        Versioning::Off | Versioning::Suspended => okey.clone(),
    }
}

/// What a precondition is decided on: the latest version, unless it is a delete marker (S3
/// treats a key whose latest version is a marker as absent).
fn latest_for_condition(latest: Option<&ScanEntry>) -> Option<Lookup> {
    latest
        .filter(|l| !is_delete_marker(l.summary.tag))
        .map(lookup_of)
}

/// What the index knows of `key` in `partition` as an index entry (the inverse of
/// [`lookup_of`]).
fn entry_of(partition: PartitionId, key: Bytes, lookup: &Lookup) -> ScanEntry {
    ScanEntry {
        partition,
        key,
        hlc: lookup.hlc,
        summary: lookup.summary,
        body_len: lookup.body_len,
        tombstone: lookup.tombstone,
    }
}

/// An index entry as a [`Lookup`].
fn lookup_of(entry: &ScanEntry) -> Lookup {
    Lookup {
        hlc: entry.hlc,
        summary: entry.summary,
        body_len: entry.body_len,
        tombstone: entry.tombstone,
    }
}

/// The newer of two index entries.
fn newer(a: Option<Lookup>, b: Option<Lookup>) -> Option<Lookup> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.hlc >= b.hlc { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Encodes a garbage-queue entry's value: the versions to collect.
fn encode_garbage(versions: &[VersionChunks]) -> Bytes {
    debug_assert!(versions.len() <= GARBAGE_VERSIONS_MAX);
    let mut out = Vec::with_capacity(GARBAGE_HEADER_BYTES + versions.len() * GARBAGE_VERSION_BYTES);
    out.push(GARBAGE_FORMAT_VERSION);
    out.extend_from_slice(&(versions.len() as u32).to_le_bytes());
    for v in versions {
        out.extend_from_slice(&v.version.0);
        out.extend_from_slice(&v.chunks.to_le_bytes());
    }
    Bytes::from(out)
}

/// Decodes a garbage-queue entry's value.
pub(crate) fn decode_garbage(meta: &[u8]) -> Option<Vec<VersionChunks>> {
    if meta.first() != Some(&GARBAGE_FORMAT_VERSION) || meta.len() < GARBAGE_HEADER_BYTES {
        return None;
    }
    let n = u32::from_le_bytes(meta[1..GARBAGE_HEADER_BYTES].try_into().ok()?) as usize;
    if n > GARBAGE_VERSIONS_MAX || meta.len() != GARBAGE_HEADER_BYTES + n * GARBAGE_VERSION_BYTES {
        return None;
    }
    meta[GARBAGE_HEADER_BYTES..]
        .chunks_exact(GARBAGE_VERSION_BYTES)
        .map(|c| {
            Some(VersionChunks {
                version: VersionId(c[..VERSION_ID_BYTES].try_into().ok()?),
                chunks: u32::from_le_bytes(c[VERSION_ID_BYTES..].try_into().ok()?),
            })
        })
        .collect()
}

impl Shard {
    /// The partition of an object's record.
    pub fn object_partition(&self, bucket: &str, key: &str) -> PartitionId {
        self.partition_of(object_hash(bucket.as_bytes(), key.as_bytes()))
    }

    /// What the index knows of `key`'s newest record, on the core owning `partition`.
    pub async fn lookup(
        &self,
        partition: PartitionId,
        key: Bytes,
    ) -> Result<Option<Lookup>, ShardError> {
        if self.replicated() {
            return self.lookup_newest(partition, key).await;
        }
        self.send(StorageRequest::Lookup { partition, key })
            .await?
            .into_lookup()
    }

    /// Commits an object record (manifest, inline body): on the core owning it, under the key's
    /// lock, checks `condition` against the current object, then writes the record together
    /// with a garbage-queue entry for the chunks of the version it replaces. `writing` ends the
    /// registration of the version whose chunks the manifest references; if the commit fails,
    /// those chunks are queued as garbage. Returns the record's timestamp.
    ///
    /// With N > 1 the coordinator stamps the record, the partition's serializing replica
    /// commits it (deciding the precondition), and the record is then stored on the other
    /// replicas at the same HLC: W stores in all.
    pub async fn commit_object(
        &self,
        bucket: &str,
        key: &str,
        value: PutValue,
        condition: WriteCondition,
        writing: Option<WriteRegistration>,
    ) -> Result<Hlc, ShardError> {
        self.commit_object_in(bucket, key, value, condition, writing, Versioning::Off)
            .await
    }

    /// [`Shard::commit_object`] into a bucket whose versioning is `versioning`
    /// (shard/VERSIONING.md §5): enabled, the record is a new version of the key, stamped above
    /// its latest version (the stamp is its version id); suspended, it replaces the null
    /// version (the object record). The precondition is decided on the latest version.
    pub async fn commit_object_in(
        &self,
        bucket: &str,
        key: &str,
        value: PutValue,
        condition: WriteCondition,
        writing: Option<WriteRegistration>,
        versioning: Versioning,
    ) -> Result<Hlc, ShardError> {
        let Some(writing) = writing else {
            return self
                .commit_object_pending(bucket, key, value, condition, None, versioning)
                .await;
        };
        let (pending, ended_after) = writing.hand_over();
        let (shard, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
        ended_after
            .after(async move {
                shard
                    .commit_object_pending(
                        &bucket,
                        &key,
                        value,
                        condition,
                        Some(pending),
                        versioning,
                    )
                    .await
            })
            .await
    }

    /// [`Shard::commit_object_in`] with the registration's pending write taken over.
    async fn commit_object_pending(
        &self,
        bucket: &str,
        key: &str,
        value: PutValue,
        condition: WriteCondition,
        writing: Option<PendingWrite>,
        versioning: Versioning,
    ) -> Result<Hlc, ShardError> {
        let partition = self.object_partition(bucket, key);
        if !self.replicated() {
            let request = StorageRequest::CommitObject {
                partition,
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                value,
                condition: Box::new(condition),
                writing,
                versioning,
                retract: None,
            };
            return self.send(request).await?.into_stored();
        }
        let okey = object_key(bucket, key);
        let conditional = condition.is_conditional();
        let at = |hlc: Hlc| PutValue {
            hlc: Some(hlc),
            ..value.clone()
        };
        let decided_on = match versioning {
            Versioning::Off => DecidedOn::Record(&okey),
            Versioning::Enabled | Versioning::Suspended => DecidedOn::LatestVersion { bucket, key },
        };
        let retracted = RefCell::new(Vec::new());
        let stored = self
            .serialize_then_copy(
                partition,
                self.levels().w,
                conditional.then_some(decided_on),
                |hlc, retract| {
                    let retract = retract.filter(|_| versioning == Versioning::Enabled);
                    if let Some(earlier) = retract {
                        retracted.borrow_mut().push(earlier);
                    }
                    StorageRequest::CommitObject {
                        partition,
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        value: at(hlc),
                        condition: Box::new(condition.clone()),
                        writing,
                        versioning,
                        retract,
                    }
                },
                |hlc| StorageRequest::Put {
                    partition,
                    key: written_key(bucket, key, &okey, versioning, hlc),
                    value: at(hlc),
                    fresh: true,
                },
            )
            .await?
            .into_stored()?;
        // The serializer retracted the earlier try's version with this commit; the replicas
        // that stored its copy are told too (a failure leaves it to anti-entropy, which
        // spreads the serializer's tombstone).
        for earlier in retracted.into_inner() {
            let retraction = Box::pin(self.delete_object_in(
                bucket,
                key,
                Versioning::Enabled,
                Some(VersionRef::Stamped(earlier)),
            ))
            .await;
            if let Err(e) = retraction {
                tracing::warn!(error = %e, %bucket, %key, "could not retract a restamped version on every replica; anti-entropy will");
            }
        }
        Ok(stored)
    }

    /// The executor's side of [`StorageRequest::CommitObject`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn commit_object_here(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        value: PutValue,
        condition: &WriteCondition,
        pending: Option<PendingWrite>,
        versioning: Versioning,
        retract: Option<Hlc>,
    ) -> Result<Hlc, ShardError> {
        let okey = object_key(bucket, key);
        let result = match versioning {
            Versioning::Enabled => {
                self.add_version(partition, bucket, key, &okey, value, condition, retract)
                    .await
            }
            Versioning::Off | Versioning::Suspended => {
                self.replace_record(partition, bucket, key, &okey, value, condition, versioning)
                    .await
            }
        };
        let Some(pending) = pending else {
            return result;
        };
        self.core.objects.end_write(&pending.version);
        let lost = match &result {
            Err(_) => true,
            // A newer record won (a write stamped later elsewhere): ours references nothing.
            Ok(hlc) => self
                .core
                .engine()?
                .lookup(
                    partition,
                    &written_key(bucket, key, &okey, versioning, *hlc),
                )
                .is_some_and(|now| now.hlc != *hlc),
        };
        let garbage = pending.garbage();
        if lost
            && !garbage.is_empty()
            && let Err(e) = self
                .queue_garbage_here(partition, bucket, key, &garbage)
                .await
        {
            tracing::warn!(error = %e, %bucket, %key, "could not queue the chunks of a write that did not commit; the sweeper will find them");
        }
        result
    }

    /// Under the key's lock: precondition, then the record and the garbage it replaces. In a
    /// versioned bucket (suspended) the record is the null version: decided on the key's latest
    /// version and stamped above it.
    #[allow(clippy::too_many_arguments)]
    async fn replace_record(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        okey: &Bytes,
        value: PutValue,
        condition: &WriteCondition,
        versioning: Versioning,
    ) -> Result<Hlc, ShardError> {
        let _lock = self.core.objects.locks.lock(okey).await;
        let engine = self.core.engine()?;
        let current = engine.lookup(partition, okey);
        let held = match versioning {
            Versioning::Off => {
                condition.check(current.as_ref())?;
                current
            }
            Versioning::Enabled | Versioning::Suspended => {
                let latest = self.latest_version_here(partition, bucket, key)?;
                condition.check(latest_for_condition(latest.as_ref()).as_ref())?;
                newer(current, latest.map(|l| lookup_of(&l)))
            }
        };
        let mut value = value;
        value.hlc = above_held(engine, held.as_ref(), self.watermark(partition), value.hlc);
        let dropped = self.drop_attributes(partition, bucket, key, versioning, current, value.hlc);
        let replaced = self.replaced_versions(partition, okey, current).await;
        if replaced.is_empty() {
            let (_, put) =
                futures_util::future::join(dropped, engine.put(partition, okey, value)).await;
            return Ok(put?);
        }
        let (entry, entry_value) = garbage_entry(bucket, key, &replaced);
        // One group commit for all: a crash leaves both, neither, or an entry whose versions
        // the (unchanged) manifest still references, which the collector then leaves alone.
        let (queued, put, _) = futures_util::future::join3(
            engine.put(partition, &entry, entry_value),
            engine.put(partition, okey, value),
            dropped,
        )
        .await;
        let _ = self.queued(queued, entry, bucket, key);
        Ok(put?)
    }

    /// The chunked versions the current record of an object references: none if it is inline,
    /// deleted or absent. Err when its manifest cannot be read or decoded: then nobody may
    /// conclude that its chunks are unreferenced.
    async fn manifest_versions(
        &self,
        partition: PartitionId,
        okey: &[u8],
        current: Option<Lookup>,
    ) -> Result<Vec<VersionChunks>, ShardError> {
        match current {
            Some(c)
                if !c.tombstone
                    && c.summary.tag & 0xff != TAG_INLINE
                    && !is_delete_marker(c.summary.tag) => {}
            _ => return Ok(Vec::new()),
        }
        match self.core.engine()?.head(partition, okey).await? {
            Some(head) => Ok(ObjectMeta::decode(&head.meta)?.versions()),
            None => Ok(Vec::new()),
        }
    }

    /// The versions a commit or delete replaces; an unreadable old manifest replaces none
    /// here (its chunks are left to the orphan sweeper, which skips objects it cannot read).
    async fn replaced_versions(
        &self,
        partition: PartitionId,
        okey: &[u8],
        current: Option<Lookup>,
    ) -> Vec<VersionChunks> {
        self.manifest_versions(partition, okey, current)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "replaced manifest unreadable; its chunks are left to the sweeper");
                Vec::new()
            })
    }

    /// Hands a written garbage-queue entry to the collector; a failed one is logged (the
    /// sweeper finds its chunks) and returned.
    fn queued(
        &self,
        queued: Result<Hlc, leofs_engine::EngineError>,
        entry: Bytes,
        bucket: &str,
        key: &str,
    ) -> Result<(), ShardError> {
        match queued {
            Ok(_) => {
                self.core.objects.count(|s| s.entries_queued += 1);
                self.core.objects.notify(entry);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, %bucket, %key, "could not queue chunks as garbage; the sweeper will find them");
                Err(e.into())
            }
        }
    }

    /// Deletes an object (a tombstone) and queues its chunks as garbage, in one group commit,
    /// on the owning core under the key's lock. False when there was no object.
    ///
    /// With N > 1 the coordinator stamps the tombstone, the serializing replica deletes and
    /// queues the chunks, and the tombstone is then stored on the other replicas: D in all.
    /// True when the serializing replica held the object.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, ShardError> {
        Ok(self
            .delete_object_in(bucket, key, Versioning::Off, None)
            .await?
            .0)
    }

    /// [`Shard::delete_object`] in a bucket whose versioning is `versioning`
    /// (shard/VERSIONING.md §5): with `version`, that version is deleted for good (its chunks
    /// queued); without one, a versioned bucket gets a delete marker (enabled: a new version;
    /// suspended: the null version, whose chunks are queued). Whether something was deleted
    /// (a marker always is), and the stamp of the marker or tombstone written.
    pub async fn delete_object_in(
        &self,
        bucket: &str,
        key: &str,
        versioning: Versioning,
        version: Option<VersionRef>,
    ) -> Result<(bool, Option<Hlc>), ShardError> {
        self.delete_object_when(bucket, key, versioning, version, None)
            .await
    }

    /// Deletes `version` of a key (None: what a DELETE without a version id does in a bucket
    /// of `versioning`), as a lifecycle rule decided on the key's latest version stamped
    /// `latest`: only while that is still its latest version. False when the key changed:
    /// nothing is written.
    pub async fn delete_if_latest(
        &self,
        bucket: &str,
        key: &str,
        versioning: Versioning,
        version: Option<VersionRef>,
        latest: Hlc,
    ) -> Result<bool, ShardError> {
        match self
            .delete_object_when(bucket, key, versioning, version, Some(latest))
            .await
        {
            Ok((removed, _)) => Ok(removed),
            Err(ShardError::PreconditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`Shard::delete_object_in`], only while the key's latest version (its object record,
    /// in a bucket never versioned) is the one stamped `only_if` (when given): decided by the
    /// partition's first replica, brought up to date first, as a conditional write.
    async fn delete_object_when(
        &self,
        bucket: &str,
        key: &str,
        versioning: Versioning,
        version: Option<VersionRef>,
        only_if: Option<Hlc>,
    ) -> Result<(bool, Option<Hlc>), ShardError> {
        if versioning == Versioning::Enabled && version.is_none() {
            // A delete marker is a new version: written as every version is.
            let marker = delete_marker(None);
            let stamp = self
                .commit_object_pending(
                    bucket,
                    key,
                    marker,
                    WriteCondition::none(),
                    None,
                    versioning,
                )
                .await?;
            return Ok((true, Some(stamp)));
        }
        let partition = self.object_partition(bucket, key);
        let request_at = |hlc: Option<Hlc>| StorageRequest::DeleteObject {
            partition,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            hlc,
            versioning,
            version,
            only_if,
        };
        if !self.replicated() {
            return self.send(request_at(None)).await?.into_removal();
        }
        let okey = object_key(bucket, key);
        // A delete decided on the key's latest version (a lifecycle action) is decided as a
        // conditional write: by the first replica, brought up to date first.
        let decided_on = only_if.map(|_| DecidedOn::LatestVersion { bucket, key });
        self.serialize_then_copy(
            partition,
            self.levels().d,
            decided_on,
            |hlc, _| request_at(Some(hlc)),
            |hlc| match (versioning, version) {
                (Versioning::Enabled | Versioning::Suspended, None) => StorageRequest::Put {
                    partition,
                    key: written_key(bucket, key, &okey, versioning, hlc),
                    value: delete_marker(Some(hlc)),
                    fresh: true,
                },
                (_, Some(VersionRef::Stamped(stamp))) => StorageRequest::Delete {
                    partition,
                    key: version_key(bucket, key, stamp),
                    hlc: Some(hlc),
                    fresh: true,
                },
                (Versioning::Off, None) | (_, Some(VersionRef::Null)) => StorageRequest::Delete {
                    partition,
                    key: okey.clone(),
                    hlc: Some(hlc),
                    fresh: true,
                },
            },
        )
        .await?
        .into_removal()
    }

    /// A versioned key's latest version (a delete marker included), read from `r` replicas:
    /// the record a GET or HEAD without a version id reads. Each replica answers what it
    /// holds of the key's newest versions, deletions included, so that a version deleted for
    /// good on the replicas that acknowledged the delete is not taken for the latest because
    /// a replica that missed the delete still holds it.
    pub async fn latest_version(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ScanEntry>, ShardError> {
        let partition = self.object_partition(bucket, key);
        let request = StorageRequest::LatestVersion {
            partition,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        };
        if !self.replicated() {
            return Ok(latest_of(&self.send(request).await?.into_entries()?));
        }
        let views = self
            .answers_of_r(partition, request)
            .await?
            .into_iter()
            .map(StorageResponse::into_entries)
            .collect::<Result<Vec<_>, _>>()?;
        match merged_latest(views) {
            Merged::Latest(latest) => Ok(latest),
            // A replica's view stopped above the newest version left: the whole range.
            Merged::BeyondViews => Ok(self.versions_of(bucket, key).await?.into_iter().next()),
        }
    }

    /// Every live version of a key (its version records and its null version), newest first,
    /// merged across the replicas (a deletion outvotes a copy that missed it): what a
    /// background decision taken on one replica's index is confirmed against before it acts.
    pub async fn versions_of(&self, bucket: &str, key: &str) -> Result<Vec<ScanEntry>, ShardError> {
        let partition = self.object_partition(bucket, key);
        let mut versions: Vec<ScanEntry> = self
            .scan_all_pages(version_prefix(bucket, key))
            .await?
            .into_iter()
            .filter(|e| is_version_of(e, key))
            .collect();
        let okey = object_key(bucket, key);
        if let Some(null) = self
            .lookup(partition, okey.clone())
            .await?
            .filter(|l| !l.tombstone)
        {
            versions.push(entry_of(partition, okey, &null));
        }
        versions.sort_by_key(|e| std::cmp::Reverse(e.hlc));
        Ok(versions)
    }

    /// The executor's side of [`StorageRequest::LatestVersion`]: what this replica holds of
    /// the key's newest versions, from its index alone: its object record (the null version,
    /// or its tombstone) and its newest version records, live or deleted (at most
    /// [`LATEST_VIEW_LIVE_MAX`] live ones, [`LATEST_VIEW_ENTRIES_MAX`] in all).
    /// [`latest_of`] picks the latest; the coordinator merges views with `merged_latest`.
    pub(crate) fn latest_view_here(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
    ) -> Result<Vec<ScanEntry>, ShardError> {
        let engine = self.core.engine()?;
        let okey = object_key(bucket, key);
        let prefix = version_prefix(bucket, key);
        // The newest version records, live or deleted, until LATEST_VIEW_LIVE_MAX live ones
        // or LATEST_VIEW_ENTRIES_MAX in all (the prefix also starts the versions of a key that
        // continues with 0x00: those are skipped, and a range they crowd is read whole).
        let mut scanned =
            engine.scan_partition_prefix(partition, &prefix, None, LATEST_VIEW_ENTRIES_MAX, true);
        if scanned.len() == LATEST_VIEW_ENTRIES_MAX
            && !scanned.iter().all(|e| is_version_of(e, key))
        {
            scanned = engine.scan_partition_prefix(partition, &prefix, None, usize::MAX, true);
        }
        let mut view: Vec<ScanEntry> = Vec::new();
        let mut live = 0;
        for entry in scanned {
            if !is_version_of(&entry, key) {
                continue;
            }
            live += usize::from(!entry.tombstone);
            view.push(entry);
            if live == LATEST_VIEW_LIVE_MAX || view.len() == LATEST_VIEW_ENTRIES_MAX {
                break;
            }
        }
        if let Some(null) = engine.lookup(partition, &okey) {
            view.push(entry_of(partition, okey, &null));
        }
        Ok(view)
    }

    /// The key's latest version on this replica (see [`Shard::latest_view_here`]).
    pub(crate) fn latest_version_here(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ScanEntry>, ShardError> {
        Ok(latest_of(&self.latest_view_here(partition, bucket, key)?))
    }

    /// Under the key's lock: a new version of the key (enabled versioning), decided on its
    /// latest version and stamped above it; `retract`, a version an earlier try of this write
    /// stored, is tombstoned in the same group commit. Nothing is replaced, so nothing is
    /// queued: the version made noncurrent keeps its chunks.
    #[allow(clippy::too_many_arguments)]
    async fn add_version(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        okey: &Bytes,
        value: PutValue,
        condition: &WriteCondition,
        retract: Option<Hlc>,
    ) -> Result<Hlc, ShardError> {
        let _lock = self.core.objects.locks.lock(okey).await;
        let engine = self.core.engine()?;
        let latest = self.latest_version_here(partition, bucket, key)?;
        condition.check(latest_for_condition(latest.as_ref()).as_ref())?;
        let held = latest.map(|l| lookup_of(&l));
        // The version's key is its stamp, so it is chosen here rather than by the engine.
        let hlc = match above_held(engine, held.as_ref(), self.watermark(partition), value.hlc) {
            Some(hlc) => hlc,
            None => {
                if let Some(held) = held {
                    engine.observe(held.hlc);
                }
                engine.now()
            }
        };
        debug_assert!(held.is_none_or(|h| h.hlc < hlc || Some(hlc) == value.hlc));
        let vkey = version_key(bucket, key, hlc);
        let value = PutValue {
            hlc: Some(hlc),
            ..value
        };
        let Some(retract) = retract.filter(|r| *r != hlc) else {
            return Ok(engine.put(partition, &vkey, value).await?);
        };
        let (put, retracted) = futures_util::future::join(
            engine.put(partition, &vkey, value),
            engine.delete(partition, &version_key(bucket, key, retract), Some(hlc)),
        )
        .await;
        if let Err(e) = retracted {
            tracing::warn!(error = %e, %bucket, %key, "could not retract a restamped version; anti-entropy leaves it a noncurrent version");
        }
        Ok(put?)
    }

    /// The executor's side of [`StorageRequest::DeleteObject`]. With `hlc` (a coordinator's
    /// stamp) the tombstone is written even when there is no object here, so that it outvotes
    /// an older copy another replica may hold.
    /// Whether there was an object, and the tombstone's timestamp if one was written.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn delete_object_here(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        hlc: Option<Hlc>,
        versioning: Versioning,
        version: Option<VersionRef>,
        only_if: Option<Hlc>,
    ) -> Result<(bool, Option<Hlc>), ShardError> {
        let okey = object_key(bucket, key);
        let condition = WriteCondition {
            if_latest: only_if,
            ..WriteCondition::none()
        };
        let target = match (versioning, version) {
            (Versioning::Enabled, None) => {
                let marker = delete_marker(hlc);
                let stamp = self
                    .add_version(partition, bucket, key, &okey, marker, &condition, None)
                    .await?;
                return Ok((true, Some(stamp)));
            }
            (Versioning::Suspended, None) => {
                let marker = delete_marker(hlc);
                let stamp = self
                    .replace_record(
                        partition, bucket, key, &okey, marker, &condition, versioning,
                    )
                    .await?;
                return Ok((true, Some(stamp)));
            }
            (_, Some(VersionRef::Stamped(stamp))) => version_key(bucket, key, stamp),
            (Versioning::Off, None) | (_, Some(VersionRef::Null)) => okey.clone(),
        };
        let _lock = self.core.objects.locks.lock(&okey).await;
        let engine = self.core.engine()?;
        let current = engine.lookup(partition, &target);
        if only_if.is_some() {
            let latest = self.latest_version_here(partition, bucket, key)?;
            condition.check(latest.map(|l| lookup_of(&l)).as_ref())?;
        }
        let hlc = above_held(engine, current.as_ref(), self.watermark(partition), hlc);
        if current.is_none_or(|c| c.tombstone) {
            if hlc.is_some() {
                engine.delete(partition, &target, hlc).await?;
            }
            return Ok((false, hlc));
        }
        let dropped = self.drop_attributes(partition, bucket, key, versioning, current, hlc);
        let replaced = self.replaced_versions(partition, &target, current).await;
        let okey = target;
        if replaced.is_empty() {
            let (_, deleted) =
                futures_util::future::join(dropped, engine.delete(partition, &okey, hlc)).await;
            let deleted = deleted?;
            return Ok((deleted.is_some(), deleted.or(hlc)));
        }
        let (entry, entry_value) = garbage_entry(bucket, key, &replaced);
        let (queued, deleted, _) = futures_util::future::join3(
            engine.put_reclaiming(partition, &entry, entry_value),
            engine.delete(partition, &okey, hlc),
            dropped,
        )
        .await;
        let _ = self.queued(queued, entry, bucket, key);
        let deleted = deleted?;
        Ok((deleted.is_some(), deleted.or(hlc)))
    }

    /// On the replica deciding a removal: the tombstone of the attribute record of `version` (a
    /// live version record, or null version, that a delete or a suspended write is removing),
    /// written with the removal (the caller joins it into the same group commit), when this
    /// replica holds one. Nothing in a bucket never versioned, which has no attribute records.
    /// The other replicas drop theirs when they store a version's tombstone
    /// ([`Shard::drop_attributes_of_deleted`]); a replaced null version's, by anti-entropy.
    fn drop_attributes(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        versioning: Versioning,
        version: Option<Lookup>,
        at: Option<Hlc>,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let version = version.filter(|v| !v.tombstone && versioning != Versioning::Off);
        let akey = version.map(|v| attributes_key(bucket, key, v.hlc));
        self.drop_attributes_record(partition, akey, at)
    }

    /// The tombstone of the attribute record `akey` (if given, and live here), stamped
    /// [`attributes_tombstone_stamp`]: the same on every replica that drops the same record
    /// for the same removal, so that anti-entropy finds them identical.
    fn drop_attributes_record(
        &self,
        partition: PartitionId,
        akey: Option<Bytes>,
        at: Option<Hlc>,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let found = self.core.engine().ok().and_then(|engine| {
            let akey = akey?;
            let held = engine.lookup(partition, &akey).filter(|h| !h.tombstone)?;
            Some((
                engine.clone(),
                akey,
                attributes_tombstone_stamp(held.hlc, at),
            ))
        });
        async move {
            let Some((engine, akey, hlc)) = found else {
                return;
            };
            if let Err(e) = engine.delete(partition, &akey, hlc).await {
                tracing::warn!(error = %e, "could not delete the attributes of a removed version; they name a version that is gone");
            }
        }
    }

    /// For a replica storing the tombstone of a version record (a copy of a delete, a hint,
    /// a repair): the tombstone of that version's attribute record, written with it, when
    /// this replica holds one (the replica that decided the delete drops its own in
    /// [`Shard::delete_object_here`]).
    pub(crate) fn drop_attributes_of_deleted(
        &self,
        partition: PartitionId,
        key: &[u8],
        at: Option<Hlc>,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let akey = crate::object::parse_version_key(key)
            .map(|(bucket, key, stamp)| attributes_key(bucket, key, stamp));
        self.drop_attributes_record(partition, akey, at)
    }

    /// Stores the attributes (tags, ACL) of one version of a key as a record of their own
    /// (shard/VERSIONING.md §10a), only while that version (the null version when
    /// `null_version`, else the version record stamped `stamp`) is live and the attribute
    /// record held is the one stamped `expected` (None: none): `PreconditionFailed` otherwise,
    /// nothing written. Decided by the partition's first replica, brought up to date with
    /// both records first, as a conditional write; then stored on the other replicas at the
    /// same HLC, W in all. Returns the attribute record's stamp.
    pub async fn set_attributes(
        &self,
        bucket: &str,
        key: &str,
        null_version: bool,
        stamp: Hlc,
        value: PutValue,
        expected: Option<Hlc>,
    ) -> Result<Hlc, ShardError> {
        let partition = self.object_partition(bucket, key);
        let request_at = |hlc: Option<Hlc>| StorageRequest::SetAttributes {
            partition,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            null_version,
            stamp,
            value: PutValue {
                hlc,
                ..value.clone()
            },
            expected,
        };
        if !self.replicated() {
            return self.send(request_at(None)).await?.into_stored();
        }
        let record = version_record_key(bucket, key, null_version, stamp);
        let akey = attributes_key(bucket, key, stamp);
        self.serialize_then_copy(
            partition,
            self.levels().w,
            Some(DecidedOn::Attributes {
                record: &record,
                attributes: &akey,
            }),
            |hlc, _| request_at(Some(hlc)),
            |hlc| StorageRequest::Put {
                partition,
                key: akey.clone(),
                value: PutValue {
                    hlc: Some(hlc),
                    ..value.clone()
                },
                fresh: true,
            },
        )
        .await?
        .into_stored()
    }

    /// The executor's side of [`StorageRequest::SetAttributes`], under the key's lock.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn set_attributes_here(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        null_version: bool,
        stamp: Hlc,
        value: PutValue,
        expected: Option<Hlc>,
    ) -> Result<Hlc, ShardError> {
        let okey = object_key(bucket, key);
        let _lock = self.core.objects.locks.lock(&okey).await;
        let engine = self.core.engine()?;
        let record = version_record_key(bucket, key, null_version, stamp);
        let live = engine
            .lookup(partition, &record)
            .is_some_and(|v| !v.tombstone && v.hlc == stamp && !is_delete_marker(v.summary.tag));
        let akey = attributes_key(bucket, key, stamp);
        let held = engine.lookup(partition, &akey);
        if !live || held.filter(|h| !h.tombstone).map(|h| h.hlc) != expected {
            return Err(ShardError::PreconditionFailed);
        }
        let value = PutValue {
            hlc: above_held(engine, held.as_ref(), self.watermark(partition), value.hlc),
            ..value
        };
        Ok(engine.put(partition, &akey, value).await?)
    }

    /// Registers a new version of (bucket, key) as being written, on the core owning the
    /// object's record: nothing collects its chunks until the registration is handed to a
    /// commit ([`Shard::commit_object`], [`Shard::commit_part`]) or dropped.
    pub async fn begin_write(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<WriteRegistration, ShardError> {
        // Armed before the replicas register it: a caller that goes away ends it either way.
        let mut registration = WriteRegistration {
            shard: self.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            pending: PendingWrite {
                version: VersionId::random(),
                chunks: 0,
            },
            registered: Vec::new(),
            epoch: self.ring().epoch(),
            armed: true,
        };
        registration.register_on_replicas().await?;
        Ok(registration)
    }

    /// The vnodes a write of `partition` is registered on: its replicas up (both sets while a
    /// rebalance moves it), or its one vnode on a ring of one replica.
    fn write_registrars(&self, partition: PartitionId) -> Result<Vec<Vnode>, ShardError> {
        if self.replicated() {
            self.replicas_up(partition)
        } else {
            Ok(vec![self.vnode_of(partition)?])
        }
    }

    /// On the object's core: ends the registration of `ended` (if any), then queues `garbage`.
    async fn end_write_and_queue(
        &self,
        bucket: &str,
        key: &str,
        ended: Option<VersionId>,
        garbage: Vec<VersionChunks>,
    ) -> Result<(), ShardError> {
        let request = StorageRequest::EndWrite {
            partition: self.object_partition(bucket, key),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            ended,
            garbage,
        };
        self.send(request).await?.into_done()
    }

    /// The executor's side of [`StorageRequest::EndWrite`].
    pub(crate) async fn end_write_here(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        ended: Option<VersionId>,
        garbage: &[VersionChunks],
    ) -> Result<(), ShardError> {
        if let Some(version) = ended {
            self.core.objects.end_write(&version);
        }
        if garbage.is_empty() {
            return Ok(());
        }
        self.queue_garbage_here(partition, bucket, key, garbage)
            .await
    }

    /// Queues versions of (bucket, key) as garbage in the object's durable queue: they are
    /// collected once nothing references them (an aborted upload's parts, the parts a
    /// completed upload left out).
    pub async fn queue_garbage(
        &self,
        bucket: &str,
        key: &str,
        versions: Vec<VersionChunks>,
    ) -> Result<(), ShardError> {
        for batch in versions.chunks(GARBAGE_VERSIONS_MAX) {
            self.end_write_and_queue(bucket, key, None, batch.to_vec())
                .await?;
        }
        Ok(())
    }

    async fn queue_garbage_here(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        garbage: &[VersionChunks],
    ) -> Result<(), ShardError> {
        for batch in garbage.chunks(GARBAGE_VERSIONS_MAX) {
            let (entry, value) = garbage_entry(bucket, key, batch);
            let queued = self
                .core
                .engine()?
                .put_reclaiming(partition, &entry, value)
                .await;
            self.queued(queued, entry, bucket, key)?;
        }
        Ok(())
    }

    /// Commits a multipart part record (`value`, a [`PartMeta`]) on the core owning it, under
    /// its key's lock; then, on the object's core, the registration of the part's own version
    /// ends and the part it replaced (an upload of the same number) is queued as garbage. If
    /// the commit fails, the part's own chunks are queued instead. All of it runs detached from
    /// the caller.
    pub async fn commit_part(
        &self,
        bucket: &str,
        key: &str,
        part_key: Bytes,
        value: PutValue,
        writing: Option<WriteRegistration>,
    ) -> Result<Hlc, ShardError> {
        let Some(writing) = writing else {
            return self
                .commit_part_pending(bucket, key, part_key, value, None)
                .await;
        };
        let (pending, ended_after) = writing.hand_over();
        let (shard, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
        ended_after
            .after(async move {
                shard
                    .commit_part_pending(&bucket, &key, part_key, value, Some(pending))
                    .await
            })
            .await
    }

    /// [`Shard::commit_part`] with the registration's pending write taken over.
    async fn commit_part_pending(
        &self,
        bucket: &str,
        key: &str,
        part_key: Bytes,
        value: PutValue,
        writing: Option<PendingWrite>,
    ) -> Result<Hlc, ShardError> {
        let partition = self.partition_of(hash_bytes(&part_key));
        let at = |hlc: Option<Hlc>| PutValue {
            hlc,
            ..value.clone()
        };
        let request_at = |hlc: Option<Hlc>| StorageRequest::CommitPart {
            partition,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            part_key: part_key.clone(),
            value: at(hlc),
            writing,
        };
        if !self.replicated() {
            return self.send(request_at(None)).await?.into_stored();
        }
        self.serialize_then_copy(
            partition,
            self.levels().w,
            None,
            |hlc, _| request_at(Some(hlc)),
            |hlc| StorageRequest::Put {
                partition,
                key: part_key.clone(),
                value: at(Some(hlc)),
                fresh: true,
            },
        )
        .await?
        .into_stored()
    }

    /// The executor's side of [`StorageRequest::CommitPart`].
    pub(crate) async fn commit_part_here(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        part_key: Bytes,
        value: PutValue,
        pending: Option<PendingWrite>,
    ) -> Result<Hlc, ShardError> {
        let result = self.replace_part_here(partition, part_key, value).await;
        let garbage = match &result {
            Ok((_, replaced)) => replaced
                .filter(|r| pending.is_none_or(|p| p.version != r.version))
                .into_iter()
                .collect(),
            Err(_) => pending.map(|p| p.garbage()).unwrap_or_default(),
        };
        let ended = pending.map(|p| p.version);
        if let Err(e) = self.end_write_and_queue(bucket, key, ended, garbage).await {
            tracing::warn!(error = %e, %bucket, %key, "could not end a part's write or queue what it replaced; the sweeper will find it");
        }
        result.map(|(hlc, _)| hlc)
    }

    async fn replace_part_here(
        &self,
        partition: PartitionId,
        part_key: Bytes,
        value: PutValue,
    ) -> Result<(Hlc, Option<VersionChunks>), ShardError> {
        let _lock = self.core.objects.locks.lock(&part_key).await;
        let engine = self.core.engine()?;
        let current = engine.lookup(partition, &part_key);
        let mut value = value;
        value.hlc = above_held(
            engine,
            current.as_ref(),
            self.watermark(partition),
            value.hlc,
        );
        let replaced = match current {
            Some(c) if !c.tombstone => match engine.head(partition, &part_key).await {
                Ok(Some(h)) => PartMeta::decode(&h.meta)
                    .ok()
                    .map(|m| m.run.version_chunks()),
                _ => None,
            },
            _ => None,
        };
        let hlc = engine.put(partition, &part_key, value).await?;
        Ok((hlc, replaced))
    }

    /// Leases the chunks of `versions` of (bucket, key) for a read, on every core that holds
    /// one: each keeps them from being collected until the lease is dropped (or
    /// [`GcConfig::chunk_grace`] has passed), and, for objects of at most
    /// [`LEASE_PRESENCE_CHECK_CHUNKS_MAX`] chunks, checks that each of its chunks exists. A
    /// version being collected, or a missing chunk, is [`ShardError::MissingChunk`] (nothing
    /// stays leased then). Detached from the caller: a lease taken for a caller that went away
    /// is released.
    pub async fn lease_chunks(
        &self,
        bucket: &str,
        key: &str,
        versions: &[VersionChunks],
    ) -> Result<ChunkLease, ShardError> {
        let shard = self.clone();
        let (bucket, key, versions) = (bucket.to_owned(), key.to_owned(), versions.to_vec());
        monoio::spawn(async move { shard.lease_everywhere(&bucket, &key, &versions).await }).await
    }

    async fn lease_everywhere(
        &self,
        bucket: &str,
        key: &str,
        versions: &[VersionChunks],
    ) -> Result<ChunkLease, ShardError> {
        let total: u64 = versions.iter().map(|v| u64::from(v.chunks)).sum();
        let few = total <= LEASE_PRESENCE_CHECK_CHUNKS_MAX;
        // With N > 1 a chunk missing on one replica (one that was down when it was written)
        // is read from another: only a single replica's absence is worth failing early for.
        let check = few && !self.replicated();
        let mut vnodes = BTreeSet::new();
        if few {
            for v in versions {
                for index in 0..v.chunks {
                    let ckey = chunk_key(bucket, key, &v.version, index);
                    vnodes.insert(self.vnode_of(self.partition_of(hash_bytes(&ckey)))?);
                }
            }
        } else {
            let ring = self.ring();
            let replicated = self.replicated();
            vnodes.extend(
                ring.vnodes()
                    .iter()
                    .copied()
                    .filter(|v| !replicated || self.is_up(*v)),
            );
        }
        let calls = vnodes.into_iter().map(|vnode| {
            let request = StorageRequest::LeaseChunks {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                versions: versions.to_vec(),
                check_presence: check,
            };
            async move {
                let got = match self.send_to_vnode(vnode, request).await {
                    Ok(answer) => answer.into_leased(),
                    Err(e) => Err(e),
                };
                (vnode, got)
            }
        });
        let mut lease = ChunkLease {
            shard: self.clone(),
            held: Vec::new(),
        };
        let mut failed = None;
        for (vnode, got) in futures_util::future::join_all(calls).await {
            match got {
                Ok(leased) => lease.held.push((vnode, leased)),
                // A replica that cannot be reached serves none of the read, nor collects
                // anything until it is back: its lease is not needed.
                Err(ShardError::Wire(e)) if self.replicated() => {
                    tracing::debug!(error = %e, node = vnode.node, "a replica to lease chunks on cannot be reached; the read goes on without it");
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            None => Ok(lease),
            Some(e) => Err(e),
        }
    }

    /// On this core: refuses versions being collected, checks (if asked) that every chunk of
    /// `versions` this core holds exists, then leases the versions.
    pub(crate) fn lease_here(
        &self,
        bucket: &str,
        key: &str,
        versions: &[VersionChunks],
        check: bool,
    ) -> Result<Vec<VersionId>, ShardError> {
        let missing = |index| ShardError::MissingChunk {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            index,
        };
        let objects = &self.core.objects;
        if versions
            .iter()
            .any(|v| objects.collecting.borrow().contains_key(&v.version))
        {
            return Err(missing(0));
        }
        if check {
            for v in versions {
                for index in 0..v.chunks {
                    let ckey = chunk_key(bucket, key, &v.version, index);
                    let partition = self.partition_of(hash_bytes(&ckey));
                    if self.vnode_of(partition)? != self.here() {
                        continue;
                    }
                    let present = self
                        .core
                        .engine()?
                        .lookup(partition, &ckey)
                        .is_some_and(|c| !c.tombstone);
                    if !present {
                        return Err(missing(index));
                    }
                }
            }
        }
        let leased: Vec<VersionId> = versions.iter().map(|v| v.version).collect();
        objects.lease(&leased);
        Ok(leased)
    }

    /// On `vnode`: deletes the chunks in `keys` that no read holds; returns how many were put
    /// off because one does. `orphans` counts them as swept rather than collected.
    pub(crate) async fn collect_chunks(
        &self,
        vnode: Vnode,
        keys: Vec<Bytes>,
        orphans: bool,
    ) -> Result<u64, ShardError> {
        let request = StorageRequest::CollectChunks { keys, orphans };
        self.send_to_vnode_as(vnode, request, crate::shard::Traffic::Background)
            .await?
            .into_deferred()
    }

    /// The executor's side of [`StorageRequest::CollectChunks`].
    pub(crate) async fn collect_here(
        &self,
        keys: Vec<Bytes>,
        orphans: bool,
    ) -> Result<u64, ShardError> {
        let objects = &self.core.objects;
        let mut deferred = 0u64;
        let mut doomed = Vec::with_capacity(keys.len());
        let mut versions: Vec<VersionId> = Vec::new();
        for ckey in keys {
            match parse_chunk_key(&ckey) {
                Some((_, _, version, _)) if objects.is_leased(&version) => deferred += 1,
                Some((_, _, version, _)) => {
                    if !versions.contains(&version) {
                        versions.push(version);
                    }
                    doomed.push(ckey);
                }
                None => {}
            }
        }
        // From here until the tombstones are durable, reads may not lease these versions: the
        // index shows their chunks until then.
        let _collecting = Collecting::mark(objects, versions);
        let engine = self.core.engine()?;
        let deletes = futures_util::stream::iter(doomed)
            .map(|ckey| async move {
                let partition = self.partition_of(hash_bytes(&ckey));
                let Some(live) = engine.lookup(partition, &ckey).filter(|l| !l.tombstone) else {
                    return Ok(None);
                };
                let stamp = crate::antientropy::collection_stamp(live.hlc);
                engine.delete(partition, &ckey, Some(stamp)).await
            })
            .buffer_unordered(COLLECT_CONCURRENCY_MAX);
        let results: Vec<_> = deletes.collect().await;
        let mut deleted = 0u64;
        for result in results {
            if result?.is_some() {
                deleted += 1;
            }
        }
        objects.count(|s| {
            if orphans {
                s.orphan_chunks_swept += deleted;
            } else {
                s.chunks_collected += deleted;
            }
            s.chunks_deferred += deferred;
        });
        Ok(deferred)
    }

    /// On this core (the object's owner): the versions among `versions` that the object's
    /// current manifest references or a registered write holds (under the key's lock, so no
    /// commit lands halfway through the check). Err when the manifest cannot be read: nothing
    /// may be collected then.
    pub(crate) async fn referenced_here(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        versions: &[VersionChunks],
    ) -> Result<Vec<VersionId>, ShardError> {
        let okey = object_key(bucket, key);
        let _lock = self.core.objects.locks.lock(&okey).await;
        self.referenced_now(partition, bucket, key, versions).await
    }

    /// The versions among `versions` the current manifest or a live version record of the key
    /// references, or a registered write holds. Exact only under the key's lock (a commit may
    /// land otherwise); without it, the answer may only be used to keep versions, never to
    /// collect them.
    async fn referenced_now(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        versions: &[VersionChunks],
    ) -> Result<Vec<VersionId>, ShardError> {
        let engine = self.core.engine()?;
        let okey = object_key(bucket, key);
        let mut records = vec![okey.clone()];
        // A key of an unversioned bucket has no version record: one seek finds none.
        let prefix = version_prefix(bucket, key);
        records.extend(
            engine
                .scan_partition_prefix(partition, &prefix, None, usize::MAX, false)
                .into_iter()
                .map(|entry| entry.key),
        );
        let mut manifest: Vec<VersionId> = Vec::new();
        for record in &records {
            let current = engine.lookup(partition, record);
            manifest.extend(
                self.manifest_versions(partition, record, current)
                    .await?
                    .into_iter()
                    .map(|v| v.version),
            );
        }
        Ok(versions
            .iter()
            .map(|v| v.version)
            .filter(|v| manifest.contains(v) || self.core.objects.is_writing(v))
            .collect())
    }

    /// On the object's core: which of `versions` nothing references (not the manifest, not a
    /// registered write, not a part of a live multipart upload of the object): for the sweeper.
    /// Err when something cannot be read: the object is skipped then.
    pub(crate) async fn unreferenced(
        &self,
        bucket: &str,
        key: &str,
        versions: Vec<VersionChunks>,
    ) -> Result<Vec<VersionChunks>, ShardError> {
        let partition = self.object_partition(bucket, key);
        let request = StorageRequest::Unreferenced {
            partition,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            versions,
        };
        if !self.replicated() {
            return self.send(request).await?.into_versions();
        }
        // A chunk is collected only when every replica of its manifest agrees that nothing
        // references it (a replica behind the others may not know the newest manifest yet).
        let mut answers = self
            .ask_every_replica(partition, request)
            .await?
            .into_iter();
        let mut unreferenced = match answers.next() {
            Some(first) => first.into_versions()?,
            None => return Ok(Vec::new()),
        };
        for answer in answers {
            let also = answer.into_versions()?;
            unreferenced.retain(|v| also.iter().any(|a| a.version == v.version));
        }
        Ok(unreferenced)
    }

    /// The executor's side of [`StorageRequest::Unreferenced`].
    pub(crate) async fn unreferenced_here(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        versions: Vec<VersionChunks>,
    ) -> Result<Vec<VersionChunks>, ShardError> {
        let objects = &self.core.objects;
        let okey = object_key(bucket, key);
        // Most chunks belong to the current manifest: those are settled by one read, without
        // the lock (keeping a version is always safe), and without the upload scan below.
        let referenced = self
            .referenced_now(partition, bucket, key, &versions)
            .await?;
        // The order from here is what makes this sound without holding the key's lock across
        // the upload scan: a part's registration ends only after its part record is durable,
        // and a completion commits its manifest before it deletes the upload. So a version not
        // registered now is in a part record found by the scan that follows, or, if that
        // upload is gone, in the manifest read after it.
        let mut left: Vec<VersionChunks> = versions
            .into_iter()
            .filter(|v| !referenced.contains(&v.version) && !objects.is_writing(&v.version))
            .collect();
        if left.is_empty() {
            return Ok(left);
        }
        let in_parts = self.upload_part_versions(bucket, key).await?;
        left.retain(|v| !in_parts.contains(&v.version));
        if left.is_empty() {
            return Ok(left);
        }
        let _lock = objects.locks.lock(&okey).await;
        let referenced = self.referenced_now(partition, bucket, key, &left).await?;
        left.retain(|v| !referenced.contains(&v.version));
        Ok(left)
    }

    /// Versions of the parts of every live multipart upload of (bucket, key). Err when a part
    /// record cannot be read or decoded.
    async fn upload_part_versions(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Vec<VersionId>, ShardError> {
        let prefix = upload_key(bucket, key, "");
        debug_assert_eq!(prefix.last(), Some(&KEY_SEP));
        let mut versions = Vec::new();
        for upload in self.scan_all_pages(prefix.clone()).await? {
            let Ok(upload_id) = std::str::from_utf8(&upload.key[prefix.len()..]) else {
                continue;
            };
            let part_prefix = Bytes::from(crate::object::part_prefix(upload_id));
            for part in self.scan_all_pages(part_prefix).await? {
                let partition = self.partition_of(hash_bytes(&part.key));
                if let Some(head) = self.head(partition, part.key).await? {
                    versions.push(PartMeta::decode(&head.meta)?.run.version);
                }
            }
        }
        Ok(versions)
    }

    /// Garbage-collection counters of this core.
    pub fn gc_stats(&self) -> GcStats {
        self.core.objects.snapshot()
    }
}

/// A garbage-queue entry naming `versions` of (bucket, key): its key and value.
fn garbage_entry(bucket: &str, key: &str, versions: &[VersionChunks]) -> (Bytes, PutValue) {
    let id: [u8; VERSION_ID_BYTES] = rand::random();
    let value = PutValue {
        meta: encode_garbage(versions),
        body: Bytes::new(),
        summary: Summary {
            size: 0,
            digest: [0; 16],
            tag: TAG_GARBAGE,
        },
        hlc: None,
    };
    (garbage_key(bucket, key, &id), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(physical_us: u64) -> Hlc {
        Hlc {
            physical_us,
            logical: 0,
            node_id: 1,
        }
    }

    fn entry(key: Bytes, hlc: Hlc, tombstone: bool) -> ScanEntry {
        ScanEntry {
            partition: 0,
            key,
            hlc,
            summary: Summary::default(),
            body_len: 0,
            tombstone,
        }
    }

    #[test]
    fn a_version_deleted_on_some_replicas_is_not_the_latest_from_one_that_missed_it() {
        let v = |t| version_key("b", "k", at(t));
        let null = object_key("b", "k");
        // A and B took the delete of version 20 (a tombstone at 30); C missed it.
        let a = vec![entry(v(20), at(30), true), entry(v(10), at(10), false)];
        let c = vec![entry(v(20), at(20), false)];
        let key_of = |m: Merged| match m {
            Merged::Latest(l) => l.map(|l| l.key),
            Merged::BeyondViews => panic!("the views reach the latest"),
        };
        assert_eq!(
            key_of(merged_latest(vec![c.clone(), a.clone()])),
            Some(v(10))
        );
        assert_eq!(key_of(merged_latest(vec![c])), Some(v(20)));
        // The null version: its newest entry wins, a deletion of it included.
        let with_null = vec![entry(null.clone(), at(25), false)];
        let null_deleted = vec![entry(null.clone(), at(40), true)];
        assert_eq!(
            key_of(merged_latest(vec![a.clone(), with_null.clone()])),
            Some(null)
        );
        assert_eq!(
            key_of(merged_latest(vec![a, with_null, null_deleted])),
            Some(v(10))
        );
        assert_eq!(
            key_of(merged_latest(vec![vec![entry(v(5), at(6), true)]])),
            None
        );
    }

    #[test]
    fn a_view_cut_above_the_newest_version_left_sends_the_read_to_the_whole_range() {
        let v = |t| version_key("b", "k", at(t));
        // B's view holds LATEST_VIEW_LIVE_MAX live versions, all deleted on A; below them B
        // also holds an acknowledged older version, which its view does not show.
        let newest: Vec<u64> = (0..LATEST_VIEW_LIVE_MAX as u64).map(|i| 200 - i).collect();
        let b: Vec<ScanEntry> = newest.iter().map(|t| entry(v(*t), at(*t), false)).collect();
        let a: Vec<ScanEntry> = newest
            .iter()
            .map(|t| entry(v(*t), at(300), true))
            .chain([entry(v(10), at(10), false)])
            .collect();
        assert_eq!(
            merged_latest(vec![a.clone(), b.clone()]),
            Merged::BeyondViews
        );
        // A view that ended by itself (below its limits) says all its replica holds.
        assert_eq!(
            merged_latest(vec![a, b[..2].to_vec()]),
            Merged::Latest(Some(entry(v(10), at(10), false)))
        );
    }

    fn lookup(tag: u32, digest: u8, tombstone: bool) -> Lookup {
        Lookup {
            hlc: Hlc::default(),
            summary: Summary {
                size: 1,
                digest: [digest; 16],
                tag,
            },
            body_len: 1,
            tombstone,
        }
    }

    #[test]
    fn a_lifecycle_action_holds_only_while_its_version_is_the_latest() {
        let stamp = Hlc {
            physical_us: 7,
            logical: 0,
            node_id: 1,
        };
        let if_latest = WriteCondition {
            if_latest: Some(stamp),
            ..WriteCondition::none()
        };
        assert!(if_latest.is_conditional());
        let mut current = lookup(TAG_INLINE, 1, false);
        current.hlc = stamp;
        assert!(if_latest.check(Some(&current)).is_ok());
        current.hlc.physical_us = 8;
        assert!(matches!(
            if_latest.check(Some(&current)),
            Err(ShardError::PreconditionFailed)
        ));
        assert!(matches!(
            if_latest.check(None),
            Err(ShardError::PreconditionFailed)
        ));
    }

    #[test]
    fn conditions_hold_as_s3_defines_them() {
        let none_match_any = WriteCondition {
            if_none_match: Some(EtagCondition::Any),
            ..WriteCondition::none()
        };
        let current = lookup(TAG_INLINE, 0xab, false);
        assert!(none_match_any.check(None).is_ok());
        assert!(
            none_match_any
                .check(Some(&lookup(TAG_INLINE, 1, true)))
                .is_ok()
        );
        assert!(matches!(
            none_match_any.check(Some(&current)),
            Err(ShardError::PreconditionFailed)
        ));
        let etag = etag_string(&[0xab; 16], 0);
        let if_match = |e: &str| WriteCondition {
            if_match: Some(EtagCondition::Etag(e.to_owned())),
            ..WriteCondition::none()
        };
        assert!(if_match(&etag).check(Some(&current)).is_ok());
        assert!(matches!(
            if_match("other").check(Some(&current)),
            Err(ShardError::PreconditionFailed)
        ));
        assert!(matches!(
            if_match(&etag).check(None),
            Err(ShardError::NoSuchObject)
        ));
        // A multipart object's ETag carries its part count.
        let multipart = lookup(crate::object::object_tag(3), 0xab, false);
        assert!(
            if_match(&format!("{etag}-3"))
                .check(Some(&multipart))
                .is_ok()
        );
        assert!(if_match(&etag).check(Some(&multipart)).is_err());
    }

    #[test]
    fn garbage_entries_round_trip_and_reject_garbage() {
        let versions = vec![
            VersionChunks {
                version: VersionId([1; 16]),
                chunks: 3,
            },
            VersionChunks {
                version: VersionId([2; 16]),
                chunks: 0,
            },
        ];
        let encoded = encode_garbage(&versions);
        assert_eq!(decode_garbage(&encoded), Some(versions));
        assert_eq!(decode_garbage(&encoded[..encoded.len() - 1]), None);
        assert_eq!(decode_garbage(b""), None);
        // The fullest entry still fits the engine's metadata limit.
        let most = vec![
            VersionChunks {
                version: VersionId([5; 16]),
                chunks: u32::MAX,
            };
            GARBAGE_VERSIONS_MAX
        ];
        let encoded = encode_garbage(&most);
        assert!(encoded.len() <= MAX_META_BYTES, "{}", encoded.len());
        assert_eq!(
            decode_garbage(&encoded).map(|v| v.len()),
            Some(GARBAGE_VERSIONS_MAX)
        );
    }

    #[monoio::test(enable_timer = true)]
    async fn a_key_lock_orders_holders_and_survives_cancelled_waiters() {
        let locks = std::rc::Rc::new(KeyLocks::default());
        let key = Bytes::from_static(b"k");
        let first = locks.lock(&key).await;
        // A waiter that gives up holds nothing.
        let gave_up = monoio::time::timeout(Duration::from_millis(10), locks.lock(&key)).await;
        assert!(gave_up.is_err());
        let (l2, k2) = (locks.clone(), key.clone());
        let second = monoio::spawn(async move {
            let _g = l2.lock(&k2).await;
        });
        monoio::time::sleep(Duration::from_millis(5)).await;
        drop(first);
        second.await;
        let _again = locks.lock(&key).await;
    }
}
