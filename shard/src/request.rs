//! The storage vocabulary (DESIGN §4a): every request that reaches a shard's storage is one
//! [`StorageRequest`] value, answered by one [`StorageResponse`], and served by one executor
//! ([`Shard::execute`]) on the vnode that holds the data. The same values cross cores inside a
//! node (no closure ever does) and, with `leofs-wire`, will cross nodes; replication, hints and
//! read repair will add variants here rather than paths beside it.
//!
//! Requests are addressed to a vnode: most name the partition they act on (and are refused by
//! a vnode that does not hold it); leases, releases and chunk collection act on the vnode's own
//! chunks, which the sender chose by routing each chunk's partition.
//!
//! Must hold: a request that changes an object's state (commits, deletes, write registrations,
//! queued garbage) runs to its end on the owner even when its sender goes away.

use std::ops::Range;

use bytes::Bytes;
use leofs_engine::{Head, Hlc, Lookup, PartitionId, PutValue, ScanEntry, Value};

use crate::object::{VersionChunks, VersionId, VersionRef, Versioning};
use crate::objects::{PendingWrite, WriteCondition};
use crate::replication::WriteDecision;
use crate::{Shard, ShardError};

/// Most keys one scan request returns.
pub const SCAN_LIMIT_MAX: usize = 100_000;
/// Most partition ranges one scan request names (a vnode's share of the largest ring, its
/// partitions as scattered as they can be).
pub const SCAN_RANGES_MAX: usize = crate::partition::MAX_PARTITIONS as usize / 2;

/// One request to a vnode's storage.
#[derive(Clone, Debug)]
pub enum StorageRequest {
    /// Stores a record; answered [`StorageResponse::Stored`] once durable.
    Put {
        /// The record's partition.
        partition: PartitionId,
        /// The record's key.
        key: Bytes,
        /// What to store.
        value: PutValue,
        /// A client's write in its coordinator's round (not a hint, repair or copy of an old
        /// version): refused once older than the round could still be going on (see
        /// [`crate::replication::client_write_age_max_us`]), so that no client write lands at
        /// or below a repaired-at watermark set after it was stamped.
        fresh: bool,
    },
    /// Reads a record's newest value; [`StorageResponse::Value`].
    Get {
        /// The record's partition.
        partition: PartitionId,
        /// The record's key.
        key: Bytes,
    },
    /// Reads a byte range of a record's body (clamped to the body); [`StorageResponse::Value`].
    GetRange {
        /// The record's partition.
        partition: PartitionId,
        /// The record's key.
        key: Bytes,
        /// Body bytes wanted.
        range: Range<u64>,
    },
    /// Reads a record's metadata without its body; [`StorageResponse::Head`].
    Head {
        /// The record's partition.
        partition: PartitionId,
        /// The record's key.
        key: Bytes,
    },
    /// What the index knows of a record, without disk I/O; [`StorageResponse::Lookup`].
    Lookup {
        /// The record's partition.
        partition: PartitionId,
        /// The record's key.
        key: Bytes,
    },
    /// Deletes a record (a durable tombstone); [`StorageResponse::Deleted`].
    Delete {
        /// The record's partition.
        partition: PartitionId,
        /// The record's key.
        key: Bytes,
        /// The tombstone's timestamp (None: a fresh one).
        hlc: Option<Hlc>,
        /// A client's delete in its coordinator's round (see [`StorageRequest::Put`]'s).
        fresh: bool,
    },
    /// Live keys (and tombstones, if asked) of the partitions in `partitions` that start with
    /// `prefix`, after `start_after`, in key order, at most `limit` (≤ [`SCAN_LIMIT_MAX`]);
    /// [`StorageResponse::Entries`].
    Scan {
        /// The ranges of partitions to list, in order and disjoint (all of them held by the
        /// vnode): one request covers every partition a vnode is asked for.
        partitions: Vec<Range<PartitionId>>,
        /// Key prefix.
        prefix: Bytes,
        /// Exclusive lower bound.
        start_after: Option<Bytes>,
        /// Most entries.
        limit: usize,
        /// Tombstones too (counted in `limit`): a replicated listing merges replicas by HLC.
        tombstones: bool,
    },
    /// Commits an object record (manifest or inline body) under the key's lock, after checking
    /// `condition`, together with a garbage-queue entry for what it replaces; ends `writing`'s
    /// registration (queuing its chunks if the commit fails). [`StorageResponse::Stored`].
    CommitObject {
        /// The object record's partition.
        partition: PartitionId,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The record.
        value: PutValue,
        /// The precondition, decided at the commit point (boxed: most commits have none, and
        /// every request is as large as its largest variant).
        condition: Box<WriteCondition>,
        /// The registered write whose chunks the record references.
        writing: Option<PendingWrite>,
        /// The bucket's versioning: off, the record replaces the object record; enabled, it is
        /// a new version; suspended, it replaces the null version (shard/VERSIONING.md §5).
        versioning: Versioning,
        /// Enabled: the version an earlier try of this write stored below a newer version a
        /// replica held; it is tombstoned with this commit (the write is one version).
        retract: Option<Hlc>,
    },
    /// Deletes an object and queues its chunks; [`StorageResponse::Removed`]. In a versioned
    /// bucket: without `version`, adds a delete marker (enabled: a new version; suspended: the
    /// null version), answering its stamp; with one, deletes that version for good.
    DeleteObject {
        /// The object record's partition.
        partition: PartitionId,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The tombstone's timestamp, stamped by the coordinator (None: a fresh one). With
        /// one, the tombstone is written even where there is no object, so that a replica
        /// holding an older copy never outvotes the delete.
        hlc: Option<Hlc>,
        /// The bucket's versioning.
        versioning: Versioning,
        /// The version deleted for good, if one is named.
        version: Option<VersionRef>,
        /// Deletes only while the key's latest version is the one stamped this (a lifecycle
        /// action decided on it); otherwise `PreconditionFailed`, nothing written.
        only_if: Option<Hlc>,
    },
    /// Registers a version of an object as being written; [`StorageResponse::Done`].
    BeginWrite {
        /// The object record's partition.
        partition: PartitionId,
        /// The version.
        version: VersionId,
    },
    /// Ends a registration (if any), then queues `garbage` as the object's garbage;
    /// [`StorageResponse::Done`].
    EndWrite {
        /// The object record's partition.
        partition: PartitionId,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The registration to end.
        ended: Option<VersionId>,
        /// Versions to queue for collection.
        garbage: Vec<VersionChunks>,
    },
    /// Commits a multipart part record under its key's lock; then the part's registration ends
    /// and the part it replaced is queued, on the object's vnode. [`StorageResponse::Stored`].
    CommitPart {
        /// The part record's partition.
        partition: PartitionId,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The part record's key.
        part_key: Bytes,
        /// The part record.
        value: PutValue,
        /// The registered write of the part's chunks.
        writing: Option<PendingWrite>,
    },
    /// Leases this vnode's chunks of `versions` for a read, checking (if asked) that each of
    /// them exists; [`StorageResponse::Leased`].
    LeaseChunks {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The versions read.
        versions: Vec<VersionChunks>,
        /// Whether to check that every chunk this vnode holds exists.
        check_presence: bool,
    },
    /// Releases a lease taken by [`StorageRequest::LeaseChunks`]; [`StorageResponse::Done`].
    ReleaseChunks {
        /// The versions leased.
        versions: Vec<VersionId>,
    },
    /// Deletes the chunks in `keys` (all held by this vnode) that no read leases;
    /// [`StorageResponse::Deferred`].
    CollectChunks {
        /// Chunk keys.
        keys: Vec<Bytes>,
        /// Count them as orphans swept rather than garbage collected.
        orphans: bool,
    },
    /// Which of `versions` of an object nothing references (not its manifest, a registered
    /// write, or a live upload's part); [`StorageResponse::Versions`].
    Unreferenced {
        /// The object record's partition.
        partition: PartitionId,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The versions asked about.
        versions: Vec<VersionChunks>,
    },
    /// Anti-entropy: the hashes of the partition's replicated records in `ranges` key ranges
    /// (tombstones included, those at or below the repaired-at watermark left out), and the
    /// watermark; [`StorageResponse::Hashes`].
    RangeHashes {
        /// The partition compared.
        partition: PartitionId,
        /// How many ranges its keys fall in (≤ [`crate::antientropy::RANGES_MAX`]).
        ranges: u32,
    },
    /// Anti-entropy: the partition's replicated records whose keys fall in the `wanted` ranges
    /// (of `ranges`), tombstones included, after `start_after`, in key order, at most `limit`
    /// (≤ [`SCAN_LIMIT_MAX`]); [`StorageResponse::Entries`].
    RangeEntries {
        /// The partition compared.
        partition: PartitionId,
        /// How many ranges its keys fall in.
        ranges: u32,
        /// The ranges that differ.
        wanted: Vec<u32>,
        /// Exclusive lower bound.
        start_after: Option<Bytes>,
        /// Most entries.
        limit: usize,
    },
    /// Anti-entropy: raises the partition's repaired-at watermark (durably): tombstones at or
    /// below it may go, and a key the replica does not hold takes nothing at or below it;
    /// [`StorageResponse::Done`].
    SetWatermark {
        /// The partition.
        partition: PartitionId,
        /// Its watermark.
        hlc: Hlc,
    },
    /// What this replica holds of a versioned key's newest versions, from its index alone: its
    /// object record (the null version) and its first live version record, with the deletions
    /// of versions newer than that one; [`StorageResponse::Entries`]. The coordinator merges
    /// the answers of R replicas and takes the newest live version (a delete marker included).
    LatestVersion {
        /// The object record's partition.
        partition: PartitionId,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },
    /// Stores the attributes (tags, ACL) a version of an object has now, as a record of their
    /// own beside it (shard/VERSIONING.md §10a), under the key's lock: only while the version
    /// is live here and the attribute record held is the one stamped `expected` (None: none is
    /// held); otherwise `PreconditionFailed`, nothing written. [`StorageResponse::Stored`].
    SetAttributes {
        /// The object record's partition.
        partition: PartitionId,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The version is the null version (the object record) stamped `stamp`, rather than
        /// the version record stamped `stamp`.
        null_version: bool,
        /// The version's stamp.
        stamp: Hlc,
        /// The attribute record (its HLC stamped by the coordinator, or None: a fresh one).
        value: PutValue,
        /// The stamp of the attribute record the change was decided on.
        expected: Option<Hlc>,
    },
}

impl StorageRequest {
    /// The request's name (logs and errors).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Put { .. } => "put",
            Self::Get { .. } => "get",
            Self::GetRange { .. } => "get-range",
            Self::Head { .. } => "head",
            Self::Lookup { .. } => "lookup",
            Self::Delete { .. } => "delete",
            Self::Scan { .. } => "scan",
            Self::CommitObject { .. } => "commit-object",
            Self::DeleteObject { .. } => "delete-object",
            Self::BeginWrite { .. } => "begin-write",
            Self::EndWrite { .. } => "end-write",
            Self::CommitPart { .. } => "commit-part",
            Self::LeaseChunks { .. } => "lease-chunks",
            Self::ReleaseChunks { .. } => "release-chunks",
            Self::CollectChunks { .. } => "collect-chunks",
            Self::Unreferenced { .. } => "unreferenced",
            Self::RangeHashes { .. } => "range-hashes",
            Self::RangeEntries { .. } => "range-entries",
            Self::SetWatermark { .. } => "set-watermark",
            Self::LatestVersion { .. } => "latest-version",
            Self::SetAttributes { .. } => "set-attributes",
        }
    }

    /// The partition the request acts on, for those that name one.
    pub fn partition(&self) -> Option<PartitionId> {
        match self {
            Self::Put { partition, .. }
            | Self::Get { partition, .. }
            | Self::GetRange { partition, .. }
            | Self::Head { partition, .. }
            | Self::Lookup { partition, .. }
            | Self::Delete { partition, .. }
            | Self::CommitObject { partition, .. }
            | Self::DeleteObject { partition, .. }
            | Self::BeginWrite { partition, .. }
            | Self::EndWrite { partition, .. }
            | Self::CommitPart { partition, .. }
            | Self::Unreferenced { partition, .. }
            | Self::RangeHashes { partition, .. }
            | Self::RangeEntries { partition, .. }
            | Self::SetWatermark { partition, .. }
            | Self::LatestVersion { partition, .. }
            | Self::SetAttributes { partition, .. } => Some(*partition),
            Self::Scan { .. }
            | Self::LeaseChunks { .. }
            | Self::ReleaseChunks { .. }
            | Self::CollectChunks { .. } => None,
        }
    }

    /// Whether the request changes object state (beyond a record) and must finish even if its
    /// sender goes away.
    pub fn runs_detached(&self) -> bool {
        matches!(
            self,
            Self::CommitObject { .. }
                | Self::DeleteObject { .. }
                | Self::BeginWrite { .. }
                | Self::EndWrite { .. }
                | Self::CommitPart { .. }
                | Self::CollectChunks { .. }
                | Self::SetWatermark { .. }
                | Self::SetAttributes { .. }
        )
    }
}

/// The answer to one [`StorageRequest`].
#[derive(Clone, Debug)]
pub enum StorageResponse {
    /// A record was stored, at this timestamp.
    Stored(Hlc),
    /// A record's value (None: absent or deleted).
    Value(Option<Value>),
    /// A read found the record deleted, by a tombstone at this timestamp: what a replicated
    /// read needs to let a delete outvote an older copy on another replica. Read as "absent"
    /// by [`StorageResponse::into_value`] and [`StorageResponse::into_head`].
    Gone(Hlc),
    /// A record's metadata (None: absent or deleted).
    Head(Option<Head>),
    /// What the index knows of a record (None: never written, or forgotten).
    Lookup(Option<Lookup>),
    /// A tombstone's timestamp (None: there was no live value).
    Deleted(Option<Hlc>),
    /// Whether an object existed and was deleted.
    Removed {
        /// Whether there was an object.
        removed: bool,
        /// The tombstone's timestamp, when one was written (it may be above the one asked
        /// for: a serializing replica holding a newer version stamps the delete above it).
        hlc: Option<Hlc>,
    },
    /// Scanned entries, in key order.
    Entries(Vec<ScanEntry>),
    /// Done, nothing to return.
    Done,
    /// The versions leased here.
    Leased(Vec<VersionId>),
    /// Chunk collections put off because a read leases them.
    Deferred(u64),
    /// Versions (of an [`StorageRequest::Unreferenced`] question).
    Versions(Vec<VersionChunks>),
    /// A partition's range hashes and repaired-at watermark (anti-entropy).
    Hashes {
        /// One hash per range.
        hashes: Vec<u64>,
        /// The partition's repaired-at watermark, if it has one.
        watermark: Option<Hlc>,
    },
}

impl StorageResponse {
    /// The response's name (errors).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stored(_) => "stored",
            Self::Value(_) => "value",
            Self::Gone(_) => "gone",
            Self::Head(_) => "head",
            Self::Lookup(_) => "lookup",
            Self::Deleted(_) => "deleted",
            Self::Removed { .. } => "removed",
            Self::Entries(_) => "entries",
            Self::Done => "done",
            Self::Leased(_) => "leased",
            Self::Deferred(_) => "deferred",
            Self::Versions(_) => "versions",
            Self::Hashes { .. } => "hashes",
        }
    }

    fn unexpected(self, expected: &'static str) -> ShardError {
        ShardError::UnexpectedResponse {
            expected,
            got: self.kind(),
        }
    }

    /// The timestamp of [`StorageResponse::Stored`].
    pub fn into_stored(self) -> Result<Hlc, ShardError> {
        match self {
            Self::Stored(hlc) => Ok(hlc),
            other => Err(other.unexpected("stored")),
        }
    }

    /// The value of [`StorageResponse::Value`].
    pub fn into_value(self) -> Result<Option<Value>, ShardError> {
        match self {
            Self::Value(value) => Ok(value),
            Self::Gone(_) => Ok(None),
            other => Err(other.unexpected("value")),
        }
    }

    /// The metadata of [`StorageResponse::Head`].
    pub fn into_head(self) -> Result<Option<Head>, ShardError> {
        match self {
            Self::Head(head) => Ok(head),
            Self::Gone(_) => Ok(None),
            other => Err(other.unexpected("head")),
        }
    }

    /// The index entry of [`StorageResponse::Lookup`].
    pub fn into_lookup(self) -> Result<Option<Lookup>, ShardError> {
        match self {
            Self::Lookup(lookup) => Ok(lookup),
            other => Err(other.unexpected("lookup")),
        }
    }

    /// The tombstone of [`StorageResponse::Deleted`].
    pub fn into_deleted(self) -> Result<Option<Hlc>, ShardError> {
        match self {
            Self::Deleted(hlc) => Ok(hlc),
            other => Err(other.unexpected("deleted")),
        }
    }

    /// Whether [`StorageResponse::Removed`] found an object, and its tombstone's timestamp.
    pub fn into_removal(self) -> Result<(bool, Option<Hlc>), ShardError> {
        match self {
            Self::Removed { removed, hlc } => Ok((removed, hlc)),
            other => Err(other.unexpected("removed")),
        }
    }

    /// The answer of [`StorageResponse::Removed`].
    pub fn into_removed(self) -> Result<bool, ShardError> {
        match self {
            Self::Removed { removed, .. } => Ok(removed),
            other => Err(other.unexpected("removed")),
        }
    }

    /// The entries of [`StorageResponse::Entries`].
    pub fn into_entries(self) -> Result<Vec<ScanEntry>, ShardError> {
        match self {
            Self::Entries(entries) => Ok(entries),
            other => Err(other.unexpected("entries")),
        }
    }

    /// [`StorageResponse::Done`].
    pub fn into_done(self) -> Result<(), ShardError> {
        match self {
            Self::Done => Ok(()),
            other => Err(other.unexpected("done")),
        }
    }

    /// The versions of [`StorageResponse::Leased`].
    pub fn into_leased(self) -> Result<Vec<VersionId>, ShardError> {
        match self {
            Self::Leased(versions) => Ok(versions),
            other => Err(other.unexpected("leased")),
        }
    }

    /// The count of [`StorageResponse::Deferred`].
    pub fn into_deferred(self) -> Result<u64, ShardError> {
        match self {
            Self::Deferred(count) => Ok(count),
            other => Err(other.unexpected("deferred")),
        }
    }

    /// The hashes and watermark of [`StorageResponse::Hashes`].
    pub fn into_hashes(self) -> Result<(Vec<u64>, Option<Hlc>), ShardError> {
        match self {
            Self::Hashes { hashes, watermark } => Ok((hashes, watermark)),
            other => Err(other.unexpected("hashes")),
        }
    }

    /// The versions of [`StorageResponse::Versions`].
    pub fn into_versions(self) -> Result<Vec<VersionChunks>, ShardError> {
        match self {
            Self::Versions(versions) => Ok(versions),
            other => Err(other.unexpected("versions")),
        }
    }
}

/// What a replica does with a write or delete a coordinator stamped (`stamp`; None: an
/// unreplicated one the engine stamps): None to store it, or the HLC to answer without
/// storing, the version it holds already (the same one, or a newer one: the coordinator then
/// stamps the client's write above it). A stamp further ahead of this replica's clock than the
/// cluster's bound is refused, and so is a client's write (`fresh`) older than its round can
/// last.
fn stamped_write(
    shard: &Shard,
    engine: &leofs_engine::Engine,
    partition: PartitionId,
    key: &[u8],
    stamp: Option<Hlc>,
    fresh: bool,
) -> Result<Option<Hlc>, ShardError> {
    let Some(stamp) = stamp else {
        return Ok(None);
    };
    let now_us = leofs_engine::wall_us();
    let age_max_us = crate::replicated::CLIENT_WRITE_AGE_MAX.as_micros() as u64;
    if fresh && crate::replication::client_write_too_old(stamp, now_us, age_max_us) {
        return Err(ShardError::WriteTooOld {
            age_ms: now_us.saturating_sub(stamp.physical_us) / 1000,
            max_ms: age_max_us / 1000,
        });
    }
    // A key this replica does not hold takes nothing at or below the partition's repaired-at
    // watermark: its tombstone may be gone already, and the older version would come back. A
    // key it holds (a tombstone included) goes by HLC order, so that a repair of a damaged or
    // lost-and-recovered copy is still taken.
    let held = engine
        .lookup(partition, key)
        .map(|l| l.hlc)
        .or_else(|| shard.watermark(partition));
    let bound = shard.max_clock_offset_us();
    match crate::replication::decide_write(held, stamp, now_us, bound) {
        WriteDecision::Apply => Ok(None),
        WriteDecision::AlreadyHeld => Ok(Some(stamp)),
        WriteDecision::KeepNewer(held) => Ok(Some(held)),
        WriteDecision::TooFarAhead { ahead_us } => Err(ShardError::ClockAhead {
            ahead_us,
            bound_us: bound,
        }),
    }
}

/// Whether this replica's copy of `key` fails its checksum (and so must be written again).
async fn copy_is_damaged(
    engine: &leofs_engine::Engine,
    partition: PartitionId,
    key: &[u8],
) -> bool {
    matches!(
        engine.get(partition, key).await,
        Err(leofs_engine::EngineError::Corrupt { .. })
    )
}

/// The answer to a read that found nothing live: [`StorageResponse::Gone`] with the tombstone's
/// timestamp when the key was deleted, else `missing`.
fn absent(
    engine: &leofs_engine::Engine,
    partition: PartitionId,
    key: &[u8],
    missing: StorageResponse,
) -> StorageResponse {
    match engine.lookup(partition, key) {
        Some(lookup) if lookup.tombstone => StorageResponse::Gone(lookup.hlc),
        _ => missing,
    }
}

impl Shard {
    /// The executor: serves `request` on this vnode, which must hold the data it names.
    pub(crate) async fn execute(
        &self,
        request: StorageRequest,
    ) -> Result<StorageResponse, ShardError> {
        if let Some(partition) = request.partition()
            && let Err(e) = self.check_holds(partition, &request)
        {
            // A write's registration is this core's, not the partition's: it ends here even
            // where the partition has moved away (what it would queue is left to the sweeper).
            if let StorageRequest::EndWrite { ended, garbage, .. } = &request {
                if let Some(version) = ended {
                    self.core.objects.end_write(version);
                }
                if garbage.is_empty() {
                    return Ok(StorageResponse::Done);
                }
            }
            return Err(e);
        }
        let engine = self.core.engine()?;
        Ok(match request {
            StorageRequest::Put {
                partition,
                key,
                value,
                fresh,
            } => match stamped_write(self, engine, partition, &key, value.hlc, fresh)? {
                // The same version again (a retry, a hint replayed after its copy landed, the
                // repair of a copy that failed its checksum): kept unless it no longer reads.
                Some(held)
                    if Some(held) == value.hlc
                        && copy_is_damaged(engine, partition, &key).await =>
                {
                    StorageResponse::Stored(engine.put(partition, &key, value).await?)
                }
                Some(held) => StorageResponse::Stored(held),
                None => {
                    if crate::hinted::is_hint_key(&key) {
                        let bytes = (key.len() + value.meta.len() + value.body.len()) as u64;
                        self.admit_hint(&key, bytes)?;
                    }
                    let stored = engine.put(partition, &key, value).await?;
                    StorageResponse::Stored(if fresh {
                        self.newer_version_than(partition, &key, stored)?
                            .unwrap_or(stored)
                    } else {
                        stored
                    })
                }
            },
            StorageRequest::Get { partition, key } => match engine.get(partition, &key).await? {
                Some(value) => StorageResponse::Value(Some(value)),
                None => absent(engine, partition, &key, StorageResponse::Value(None)),
            },
            StorageRequest::GetRange {
                partition,
                key,
                range,
            } => match engine.get_range(partition, &key, range).await? {
                Some(value) => StorageResponse::Value(Some(value)),
                None => absent(engine, partition, &key, StorageResponse::Value(None)),
            },
            StorageRequest::Head { partition, key } => match engine.head(partition, &key).await? {
                Some(head) => StorageResponse::Head(Some(head)),
                None => absent(engine, partition, &key, StorageResponse::Head(None)),
            },
            StorageRequest::Lookup { partition, key } => {
                StorageResponse::Lookup(engine.lookup(partition, &key))
            }
            StorageRequest::Delete {
                partition,
                key,
                hlc,
                fresh,
            } => match stamped_write(self, engine, partition, &key, hlc, fresh)? {
                Some(held) => StorageResponse::Deleted(Some(held)),
                None => {
                    let deleted = engine.delete(partition, &key, hlc).await?;
                    // A version's tombstone takes its attribute record with it, once it is
                    // stored (a failed delete leaves the version and its attributes as they
                    // were).
                    self.drop_attributes_of_deleted(partition, &key, hlc).await;
                    StorageResponse::Deleted(deleted)
                }
            },
            StorageRequest::Scan {
                partitions,
                prefix,
                start_after,
                limit,
                tombstones,
            } => StorageResponse::Entries(self.scan_here(
                partitions,
                &prefix,
                start_after,
                limit,
                tombstones,
            )?),
            // The object operations are boxed: they are large futures, and the record
            // operations above are the hot path.
            StorageRequest::CommitObject {
                partition,
                bucket,
                key,
                value,
                condition,
                writing,
                versioning,
                retract,
            } => StorageResponse::Stored(
                Box::pin(self.commit_object_here(
                    partition, &bucket, &key, value, &condition, writing, versioning, retract,
                ))
                .await?,
            ),
            StorageRequest::DeleteObject {
                partition,
                bucket,
                key,
                hlc,
                versioning,
                version,
                only_if,
            } => {
                let (removed, hlc) = Box::pin(self.delete_object_here(
                    partition, &bucket, &key, hlc, versioning, version, only_if,
                ))
                .await?;
                StorageResponse::Removed { removed, hlc }
            }
            StorageRequest::LatestVersion {
                partition,
                bucket,
                key,
            } => StorageResponse::Entries(self.latest_view_here(partition, &bucket, &key)?),
            StorageRequest::SetAttributes {
                partition,
                bucket,
                key,
                null_version,
                stamp,
                value,
                expected,
            } => StorageResponse::Stored(
                Box::pin(self.set_attributes_here(
                    partition,
                    &bucket,
                    &key,
                    null_version,
                    stamp,
                    value,
                    expected,
                ))
                .await?,
            ),
            StorageRequest::BeginWrite { version, .. } => {
                self.core.objects.begin_write(version);
                StorageResponse::Done
            }
            StorageRequest::EndWrite {
                partition,
                bucket,
                key,
                ended,
                garbage,
            } => {
                Box::pin(self.end_write_here(partition, &bucket, &key, ended, &garbage)).await?;
                StorageResponse::Done
            }
            StorageRequest::CommitPart {
                partition,
                bucket,
                key,
                part_key,
                value,
                writing,
            } => StorageResponse::Stored(
                Box::pin(self.commit_part_here(partition, &bucket, &key, part_key, value, writing))
                    .await?,
            ),
            StorageRequest::LeaseChunks {
                bucket,
                key,
                versions,
                check_presence,
            } => StorageResponse::Leased(self.lease_here(
                &bucket,
                &key,
                &versions,
                check_presence,
            )?),
            StorageRequest::ReleaseChunks { versions } => {
                self.core.objects.release(&versions);
                StorageResponse::Done
            }
            StorageRequest::CollectChunks { keys, orphans } => {
                StorageResponse::Deferred(Box::pin(self.collect_here(keys, orphans)).await?)
            }
            StorageRequest::Unreferenced {
                partition,
                bucket,
                key,
                versions,
            } => StorageResponse::Versions(
                Box::pin(self.unreferenced_here(partition, &bucket, &key, versions)).await?,
            ),
            StorageRequest::RangeHashes { partition, ranges } => {
                let (hashes, watermark) = self.range_hashes_here(partition, ranges)?;
                StorageResponse::Hashes { hashes, watermark }
            }
            StorageRequest::RangeEntries {
                partition,
                ranges,
                wanted,
                start_after,
                limit,
            } => StorageResponse::Entries(self.range_entries_here(
                partition,
                ranges,
                &wanted,
                start_after,
                limit,
            )?),
            StorageRequest::SetWatermark { partition, hlc } => {
                Box::pin(self.take_watermark(partition, hlc)).await?;
                StorageResponse::Done
            }
        })
    }

    /// For a client's new version record or object record (a version record's key is new, so
    /// the store itself never finds a newer one): the stamp of a newer version of the same
    /// object this replica holds, which makes the coordinator write it again above it (the
    /// serializing replica was behind), so that a later write is never ordered before an
    /// earlier one.
    fn newer_version_than(
        &self,
        partition: PartitionId,
        key: &[u8],
        stored: Hlc,
    ) -> Result<Option<Hlc>, ShardError> {
        let names = crate::object::parse_version_key(key)
            .map(|(bucket, object, _)| (bucket, object))
            .or_else(|| crate::object::parse_object_key(key));
        let Some((bucket, object)) = names else {
            return Ok(None);
        };
        Ok(self
            .latest_version_here(partition, bucket, object)?
            .map(|latest| latest.hlc)
            .filter(|&latest| latest > stored))
    }

    /// Refuses a request for a partition this vnode does not hold (a sender routing with
    /// another ring); while it hands a partition over, anti-entropy's requests for it only.
    /// A conditional commit is decided only by the partition's first replica, and not while a
    /// ring that changed since the first one is not known everywhere (two nodes could then
    /// each take a different replica for the first).
    fn check_holds(
        &self,
        partition: PartitionId,
        request: &StorageRequest,
    ) -> Result<(), ShardError> {
        let ring = self.core.ring.borrow();
        let replicas = ring.route(partition)?;
        let anti_entropy = matches!(
            request,
            StorageRequest::RangeHashes { .. }
                | StorageRequest::RangeEntries { .. }
                | StorageRequest::SetWatermark { .. }
                | StorageRequest::Get { .. }
                | StorageRequest::Lookup { .. }
                | StorageRequest::Put { fresh: false, .. }
                | StorageRequest::Delete { fresh: false, .. }
        );
        let conditional = match request {
            StorageRequest::CommitObject { condition, .. } => condition.is_conditional(),
            StorageRequest::DeleteObject { only_if, .. } => only_if.is_some(),
            StorageRequest::SetAttributes { .. } => true,
            _ => false,
        };
        if conditional {
            let first = replicas.first() == Some(&self.here());
            if !first || (ring.epoch() > 1 && !ring.is_known_everywhere()) {
                return Err(ShardError::RingChanging { partition });
            }
        }
        let holds = ring.holds(self.here(), partition)
            || (anti_entropy
                && self
                    .core
                    .anti_entropy
                    .handing_over
                    .borrow()
                    .contains(&partition));
        if holds {
            Ok(())
        } else {
            Err(ShardError::NotHeldHere {
                partition,
                core: self.core.id,
                epoch: ring.epoch(),
            })
        }
    }

    /// Keys of `partitions` (ranges in order, disjoint; tombstones too if asked) with `prefix` after
    /// `start_after`, at most `limit`. Every partition in them must be held here.
    fn scan_here(
        &self,
        partitions: Vec<Range<PartitionId>>,
        prefix: &[u8],
        start_after: Option<Bytes>,
        limit: usize,
        tombstones: bool,
    ) -> Result<Vec<ScanEntry>, ShardError> {
        if limit > SCAN_LIMIT_MAX {
            return Err(ShardError::LimitExceeded {
                what: "scan limit (keys)",
                limit: SCAN_LIMIT_MAX as u64,
                got: limit as u64,
            });
        }
        if limit == 0 || partitions.iter().all(Range::is_empty) {
            return Ok(Vec::new());
        }
        // The codec refuses any other request from a peer; this node's own are built so.
        debug_assert!(
            partitions
                .windows(2)
                .all(|pair| pair[0].end <= pair[1].start),
            "a scan's partition ranges are in order and disjoint"
        );
        for partition in partitions.iter().flat_map(Range::clone) {
            let ring = self.core.ring.borrow();
            if !ring.holds(self.here(), partition) {
                return Err(ShardError::NotHeldHere {
                    partition,
                    core: self.core.id,
                    epoch: ring.epoch(),
                });
            }
        }
        let wanted = |partition: PartitionId| {
            let next = partitions.partition_point(|r| r.end <= partition);
            partitions.get(next).is_some_and(|r| r.contains(&partition))
        };
        let engine = self.core.engine()?;
        let mut entries = Vec::new();
        let mut after = start_after;
        // The engine lists all of its partitions; the ones outside the range are skipped, and
        // the scan goes on until `limit` entries of the range are found or the keys run out.
        loop {
            let page = if tombstones {
                engine.scan_with_tombstones(prefix, after.as_deref(), limit)
            } else {
                engine.scan(prefix, after.as_deref(), limit)
            };
            let exhausted = page.len() < limit;
            after = page.last().map(|e| e.key.clone());
            entries.extend(page.into_iter().filter(|e| wanted(e.partition)));
            if exhausted || entries.len() >= limit {
                entries.truncate(limit);
                return Ok(entries);
            }
        }
    }
}
