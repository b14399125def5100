//! The storage vocabulary on the wire: [`NodeRequest`] and [`NodeAnswer`] to and from
//! `leofs-wire` envelopes (`wire/schema/storage.fbs`).
//!
//! A record's body travels as the frame's raw payload, never copied into the envelope; the
//! envelope carries an xxh3 of the metadata and body of every record sent to storage, computed
//! here on the sending node and checked by [`decode_request`] on the storage node before the
//! request runs. Long answers (a scan page, the ring) are a second flatbuffer in the payload,
//! verified before use. Every field a peer sends is checked: a malformed request is answered
//! with an error, never trusted.

use std::net::SocketAddr;

use bytes::Bytes;
use leofs_engine::{Head, Hlc, Lookup, PutValue, ScanEntry, Summary, Value};
use leofs_wire::flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use leofs_wire::frame::PAYLOAD_BYTES_MAX;
use leofs_wire::{Frame, Message, fb, flatbuffers};

use crate::ShardError;
use crate::error::ErrorClass;
use crate::object::{VersionChunks, VersionId, VersionRef, Versioning};
use crate::objects::{
    EtagCondition, LEASE_PRESENCE_CHECK_CHUNKS_MAX, PendingWrite, WriteCondition,
};
use crate::request::{SCAN_LIMIT_MAX, SCAN_RANGES_MAX, StorageRequest, StorageResponse};
use crate::ring::{NodeId, RingView, Vnode};

/// Bytes of a scan page's payload beyond which the page is cut (and marked truncated).
pub const SCAN_PAGE_BYTES_MAX: usize = PAYLOAD_BYTES_MAX / 2;
/// Most chunks one version of an object may name in a request from a peer: 8 TiB of 4 MiB
/// chunks (S3 objects are at most 5 TiB). A larger count is refused before any work.
pub const CHUNKS_PER_VERSION_MAX: u32 = 1 << 21;

/// A request one node serves for another.
#[derive(Debug)]
pub enum NodeRequest {
    /// A storage request for the receiving shard's executor.
    Storage(StorageRequest),
    /// The ring and its nodes' addresses (a gateway-only node joining).
    FetchRing,
    /// The catalog snapshot, unless it is still `known_version`.
    FetchCatalog {
        /// The version the asker holds (0: none).
        known_version: u64,
    },
    /// A catalog change for the manager.
    Catalog(CatalogChange),
    /// A call between managers (`leofs_manager::raft::network::RaftCall` as a byte), its body
    /// the manager's own encoding.
    Raft {
        /// Which call.
        call: u8,
        /// Its body.
        body: Bytes,
    },
    /// The receiver's wall clock, for this node's measure of its clock offset from the peer.
    ReadClock,
}

/// A catalog change a gateway-only node forwards to the node with the manager role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogChange {
    /// Create a bucket.
    CreateBucket {
        /// The bucket name.
        name: String,
        /// The owner's user id.
        owner: String,
        /// The canned ACL (`private`, `public-read`, `public-read-write`).
        acl: String,
    },
    /// Mark a bucket at an incarnation as being deleted: the first phase of a deletion (every
    /// gateway refuses writes into it once its catalog has the mark).
    MarkBucketDeleting {
        /// The bucket name.
        name: String,
        /// The incarnation to delete.
        incarnation: u64,
    },
    /// Delete a marked bucket at an incarnation: the manager waits until every gateway has
    /// seen the mark, checks the bucket empty where the data lives, then deletes it (or takes
    /// the mark away and answers that it is not empty).
    DeleteBucket {
        /// The bucket name.
        name: String,
        /// The incarnation to delete.
        incarnation: u64,
    },
    /// Set a bucket's canned ACL.
    SetBucketAcl {
        /// The bucket name.
        name: String,
        /// The canned ACL.
        acl: String,
    },
    /// Enable (or suspend) a bucket's versioning.
    SetBucketVersioning {
        /// The bucket name.
        name: String,
        /// Enabled (true) or suspended (false).
        enabled: bool,
    },
    /// Replace a bucket's lifecycle rules.
    SetBucketLifecycle {
        /// The bucket name.
        name: String,
        /// The rules in the manager's JSON (`[]`: the configuration deleted).
        rules_json: String,
    },
    /// Replace one of a bucket's settings (tags, CORS rules).
    SetBucketSetting {
        /// The bucket name.
        name: String,
        /// The setting in the manager's JSON.
        setting_json: String,
    },
}

/// Why the manager refused a catalog change (the gateway maps it to an S3 error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogRefusalKind {
    /// The name breaks the bucket naming rules.
    InvalidBucketName,
    /// Another user owns a bucket of that name.
    BucketAlreadyExists,
    /// The caller owns it already.
    BucketAlreadyOwnedByYou,
    /// No such bucket (or not at that incarnation).
    NoSuchBucket,
    /// The bucket to delete holds objects or multipart uploads.
    BucketNotEmpty,
    /// Too many changes are waiting; retry.
    Busy,
    /// The manager is stopping or unreachable; retry.
    Unavailable,
    /// Anything else.
    Internal,
}

/// A refused catalog change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CatalogRefusal {
    /// How it was refused.
    pub kind: CatalogRefusalKind,
    /// The manager's sentence.
    pub message: String,
}

/// The catalog as a joined node fetches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogSnapshot {
    /// The snapshot's version (a checksum of its bytes).
    pub version: u64,
    /// The manager's encoding of the catalog; None when the asker's version is current.
    pub bytes: Option<Bytes>,
}

/// The ring and the addresses of its nodes, as a joining node fetches them.
#[derive(Clone, Debug)]
pub struct ClusterRing {
    /// The ring.
    pub ring: RingView,
    /// Each node's `--rpc-listen` address (shard *i* listens on its port + *i*).
    pub nodes: Vec<(NodeId, SocketAddr)>,
}

/// An answer one node gives another.
#[derive(Debug)]
pub enum NodeAnswer {
    /// The answer of a storage request.
    Storage(StorageResponse),
    /// The ring.
    Ring(ClusterRing),
    /// The catalog.
    Catalog(CatalogSnapshot),
    /// A catalog change was made.
    CatalogChanged,
    /// A catalog change was refused.
    CatalogRefused(CatalogRefusal),
    /// The answer to a call between managers.
    Raft(Bytes),
    /// The answering node's wall clock when it answered (µs since the Unix epoch).
    Clock(u64),
}

/// Why a request from a peer cannot be served as sent.
#[derive(Debug, thiserror::Error)]
#[error("malformed request: {0}")]
pub struct Malformed(pub String);

fn malformed(what: impl Into<String>) -> Malformed {
    Malformed(what.into())
}

fn hlc_fb(hlc: &Hlc) -> fb::Hlc {
    fb::Hlc::new(hlc.physical_us, hlc.logical, hlc.node_id)
}

fn hlc_of(hlc: &fb::Hlc) -> Hlc {
    Hlc {
        physical_us: hlc.physical_us(),
        logical: hlc.logical(),
        node_id: hlc.node_id(),
    }
}

fn summary_fb(summary: &Summary) -> fb::Summary {
    fb::Summary::new(summary.size, &summary.digest, summary.tag)
}

fn summary_of(summary: Option<&fb::Summary>) -> Summary {
    summary.map_or_else(Summary::default, |s| Summary {
        size: s.size(),
        digest: <[u8; 16]>::from(s.digest()),
        tag: s.tag(),
    })
}

fn version_fb(version: &VersionId) -> fb::VersionId {
    fb::VersionId::new(&version.0)
}

fn version_of(version: &fb::VersionId) -> VersionId {
    VersionId(<[u8; 16]>::from(version.bytes()))
}

fn version_chunks_fb(versions: &[VersionChunks]) -> Vec<fb::VersionChunks> {
    versions
        .iter()
        .map(|v| fb::VersionChunks::new(&version_fb(&v.version), v.chunks))
        .collect()
}

fn version_chunks_of(
    versions: Option<flatbuffers::Vector<'_, fb::VersionChunks>>,
) -> Vec<VersionChunks> {
    versions.map_or_else(Vec::new, |vs| {
        vs.iter()
            .map(|v| VersionChunks {
                version: version_of(v.version()),
                chunks: v.chunks(),
            })
            .collect()
    })
}

/// Versions a peer sent, each of at most [`CHUNKS_PER_VERSION_MAX`] chunks.
fn bounded_versions(
    versions: Option<flatbuffers::Vector<'_, fb::VersionChunks>>,
) -> Result<Vec<VersionChunks>, Malformed> {
    let versions = version_chunks_of(versions);
    match versions.iter().find(|v| v.chunks > CHUNKS_PER_VERSION_MAX) {
        Some(v) => Err(malformed(format!(
            "a version of {} chunks (at most {CHUNKS_PER_VERSION_MAX})",
            v.chunks
        ))),
        None => Ok(versions),
    }
}

fn bytes_of(vector: Option<flatbuffers::Vector<'_, u8>>) -> Bytes {
    vector.map_or_else(Bytes::new, |v| Bytes::copy_from_slice(v.bytes()))
}

fn required<T>(field: Option<T>, what: &str) -> Result<T, Malformed> {
    field.ok_or_else(|| malformed(format!("{what} is missing")))
}

fn string_of(field: Option<&str>, what: &str) -> Result<String, Malformed> {
    required(field, what).map(str::to_owned)
}

fn versioning_of(value: u8) -> Result<Versioning, Malformed> {
    Versioning::from_wire(value).ok_or_else(|| malformed(format!("unknown versioning {value}")))
}

/// `DeleteObject.version_kind`: no version named.
const VERSION_KIND_NONE: u8 = 0;
/// `DeleteObject.version_kind`: the null version.
const VERSION_KIND_NULL: u8 = 1;
/// `DeleteObject.version_kind`: the version stamped `version`.
const VERSION_KIND_STAMPED: u8 = 2;

/// xxh3 of a record's metadata and body: the end-to-end check of what storage is asked to keep.
fn record_checksum(meta: &[u8], body: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(meta.len() as u64).to_le_bytes());
    hasher.update(meta);
    hasher.update(body);
    hasher.digest()
}

/// Builds one envelope.
struct Envelope {
    builder: FlatBufferBuilder<'static>,
    /// Marks a request sent by the node's background work (see [`encode_background_request`]).
    background: bool,
    /// Marks an answer from a core that served a client just now (see [`encode_answer_as`]).
    busy: bool,
}

impl Envelope {
    fn bytes(&mut self, bytes: &[u8]) -> WIPOffset<flatbuffers::Vector<'static, u8>> {
        self.builder.create_vector(bytes)
    }

    fn new() -> Self {
        Self {
            builder: FlatBufferBuilder::with_capacity(256),
            background: false,
            busy: false,
        }
    }

    fn record(
        &mut self,
        meta: &[u8],
        body_len: u64,
        summary: &Summary,
        hlc: Option<&Hlc>,
    ) -> WIPOffset<fb::Record<'static>> {
        let meta = self.builder.create_vector(meta);
        let (summary, hlc) = (summary_fb(summary), hlc.map(hlc_fb));
        fb::Record::create(
            &mut self.builder,
            &fb::RecordArgs {
                meta: Some(meta),
                body_len,
                summary: Some(&summary),
                hlc: hlc.as_ref(),
            },
        )
    }

    fn put_value(&mut self, value: &PutValue) -> WIPOffset<fb::Record<'static>> {
        self.record(
            &value.meta,
            value.body.len() as u64,
            &value.summary,
            value.hlc.as_ref(),
        )
    }

    fn condition(&mut self, condition: &WriteCondition) -> WIPOffset<fb::Condition<'static>> {
        let (if_match, if_match_etag) = self.etag(condition.if_match.as_ref());
        let (if_none_match, if_none_match_etag) = self.etag(condition.if_none_match.as_ref());
        let if_latest = condition.if_latest.as_ref().map(hlc_fb);
        fb::Condition::create(
            &mut self.builder,
            &fb::ConditionArgs {
                if_match,
                if_match_etag,
                if_none_match,
                if_none_match_etag,
                if_latest: if_latest.as_ref(),
            },
        )
    }

    fn etag(
        &mut self,
        condition: Option<&EtagCondition>,
    ) -> (fb::EtagMatch, Option<WIPOffset<&'static str>>) {
        match condition {
            None => (fb::EtagMatch::None, None),
            Some(EtagCondition::Any) => (fb::EtagMatch::Any, None),
            Some(EtagCondition::Etag(etag)) => {
                (fb::EtagMatch::Etag, Some(self.builder.create_string(etag)))
            }
        }
    }

    fn pending(
        &mut self,
        writing: Option<&PendingWrite>,
    ) -> Option<WIPOffset<fb::PendingWrite<'static>>> {
        writing.map(|w| {
            let version = version_fb(&w.version);
            fb::PendingWrite::create(
                &mut self.builder,
                &fb::PendingWriteArgs {
                    version: Some(&version),
                    chunks: w.chunks,
                },
            )
        })
    }

    fn finish(
        mut self,
        request_id: u64,
        ring_epoch: u64,
        body_type: fb::Body,
        body: WIPOffset<UnionWIPOffset>,
        payload: Bytes,
        payload_xxh3: u64,
    ) -> Frame {
        let envelope = fb::Envelope::create(
            &mut self.builder,
            &fb::EnvelopeArgs {
                request_id,
                ring_epoch,
                body_type,
                body: Some(body),
                payload_xxh3,
                background: self.background,
                busy: self.busy,
            },
        );
        self.builder.finish(envelope, None);
        Frame {
            envelope: Bytes::copy_from_slice(self.builder.finished_data()),
            payload,
        }
    }
}

/// Encodes `request` as the frame of request `request_id` (0: one-way) at `ring_epoch`.
pub fn encode_request(request_id: u64, ring_epoch: u64, request: &NodeRequest) -> Frame {
    encode_request_as(request_id, ring_epoch, request, false)
}

/// Encodes `request` as [`encode_request`] does, marked as sent by the node's background work
/// (anti-entropy, rebalance, recovery): the receiver does not count it as foreground traffic.
pub fn encode_background_request(request_id: u64, ring_epoch: u64, request: &NodeRequest) -> Frame {
    encode_request_as(request_id, ring_epoch, request, true)
}

fn encode_request_as(
    request_id: u64,
    ring_epoch: u64,
    request: &NodeRequest,
    background: bool,
) -> Frame {
    let mut e = Envelope::new();
    e.background = background;
    let mut payload = Bytes::new();
    let mut checksum = 0;
    let (body_type, body) = match request {
        NodeRequest::Storage(request) => match request {
            StorageRequest::Put {
                partition,
                key,
                value,
                fresh,
            } => {
                let key = e.bytes(key);
                let value_offset = e.put_value(value);
                payload = value.body.clone();
                checksum = record_checksum(&value.meta, &value.body);
                let t = fb::Put::create(
                    &mut e.builder,
                    &fb::PutArgs {
                        partition: *partition,
                        key: Some(key),
                        value: Some(value_offset),
                        fresh: *fresh,
                    },
                );
                (fb::Body::Put, t.as_union_value())
            }
            StorageRequest::Get { partition, key } => {
                let key = e.bytes(key);
                let t = fb::Get::create(
                    &mut e.builder,
                    &fb::GetArgs {
                        partition: *partition,
                        key: Some(key),
                    },
                );
                (fb::Body::Get, t.as_union_value())
            }
            StorageRequest::GetRange {
                partition,
                key,
                range,
            } => {
                let key = e.bytes(key);
                let t = fb::GetRange::create(
                    &mut e.builder,
                    &fb::GetRangeArgs {
                        partition: *partition,
                        key: Some(key),
                        start: range.start,
                        end: range.end,
                    },
                );
                (fb::Body::GetRange, t.as_union_value())
            }
            StorageRequest::Head { partition, key } => {
                let key = e.bytes(key);
                let t = fb::Head::create(
                    &mut e.builder,
                    &fb::HeadArgs {
                        partition: *partition,
                        key: Some(key),
                    },
                );
                (fb::Body::Head, t.as_union_value())
            }
            StorageRequest::Lookup { partition, key } => {
                let key = e.bytes(key);
                let t = fb::Lookup::create(
                    &mut e.builder,
                    &fb::LookupArgs {
                        partition: *partition,
                        key: Some(key),
                    },
                );
                (fb::Body::Lookup, t.as_union_value())
            }
            StorageRequest::Delete {
                partition,
                key,
                hlc,
                fresh,
            } => {
                let key = e.bytes(key);
                let hlc = hlc.as_ref().map(hlc_fb);
                let t = fb::Delete::create(
                    &mut e.builder,
                    &fb::DeleteArgs {
                        partition: *partition,
                        key: Some(key),
                        hlc: hlc.as_ref(),
                        fresh: *fresh,
                    },
                );
                (fb::Body::Delete, t.as_union_value())
            }
            StorageRequest::Scan {
                partitions,
                prefix,
                start_after,
                limit,
                tombstones,
            } => {
                let prefix = e.bytes(prefix);
                let after = start_after.as_ref().map(|a| e.bytes(a));
                let pairs: Vec<u32> = partitions.iter().flat_map(|r| [r.start, r.end]).collect();
                let ranges = e.builder.create_vector(&pairs);
                let first = partitions.first().cloned().unwrap_or(0..0);
                let t = fb::Scan::create(
                    &mut e.builder,
                    &fb::ScanArgs {
                        ranges: Some(ranges),
                        partitions_start: first.start,
                        partitions_end: first.end,
                        prefix: Some(prefix),
                        start_after: after,
                        has_start_after: start_after.is_some(),
                        limit: u32::try_from(*limit).unwrap_or(u32::MAX),
                        tombstones: *tombstones,
                    },
                );
                (fb::Body::Scan, t.as_union_value())
            }
            StorageRequest::CommitObject {
                partition,
                bucket,
                key,
                value,
                condition,
                writing,
                versioning,
                retract,
            } => {
                let bucket = e.builder.create_string(bucket);
                let key = e.builder.create_string(key);
                let value_offset = e.put_value(value);
                let condition = e.condition(condition);
                let writing = e.pending(writing.as_ref());
                let retract = retract.as_ref().map(hlc_fb);
                payload = value.body.clone();
                checksum = record_checksum(&value.meta, &value.body);
                let t = fb::CommitObject::create(
                    &mut e.builder,
                    &fb::CommitObjectArgs {
                        partition: *partition,
                        bucket: Some(bucket),
                        key: Some(key),
                        value: Some(value_offset),
                        condition: Some(condition),
                        writing,
                        versioning: versioning.to_wire(),
                        retract: retract.as_ref(),
                    },
                );
                (fb::Body::CommitObject, t.as_union_value())
            }
            StorageRequest::DeleteObject {
                partition,
                bucket,
                key,
                hlc,
                versioning,
                version,
                only_if,
            } => {
                let bucket = e.builder.create_string(bucket);
                let key = e.builder.create_string(key);
                let hlc = hlc.as_ref().map(hlc_fb);
                let only_if = only_if.as_ref().map(hlc_fb);
                let (version_kind, version) = match version {
                    None => (VERSION_KIND_NONE, None),
                    Some(VersionRef::Null) => (VERSION_KIND_NULL, None),
                    Some(VersionRef::Stamped(stamp)) => (VERSION_KIND_STAMPED, Some(hlc_fb(stamp))),
                };
                let t = fb::DeleteObject::create(
                    &mut e.builder,
                    &fb::DeleteObjectArgs {
                        partition: *partition,
                        bucket: Some(bucket),
                        key: Some(key),
                        hlc: hlc.as_ref(),
                        versioning: versioning.to_wire(),
                        version_kind,
                        version: version.as_ref(),
                        only_if: only_if.as_ref(),
                    },
                );
                (fb::Body::DeleteObject, t.as_union_value())
            }
            StorageRequest::LatestVersion {
                partition,
                bucket,
                key,
            } => {
                let bucket = e.builder.create_string(bucket);
                let key = e.builder.create_string(key);
                let t = fb::LatestVersion::create(
                    &mut e.builder,
                    &fb::LatestVersionArgs {
                        partition: *partition,
                        bucket: Some(bucket),
                        key: Some(key),
                    },
                );
                (fb::Body::LatestVersion, t.as_union_value())
            }
            StorageRequest::SetAttributes {
                partition,
                bucket,
                key,
                null_version,
                stamp,
                value,
                expected,
            } => {
                let bucket = e.builder.create_string(bucket);
                let key = e.builder.create_string(key);
                let value_offset = e.put_value(value);
                let stamp = hlc_fb(stamp);
                let expected = expected.as_ref().map(hlc_fb);
                payload = value.body.clone();
                checksum = record_checksum(&value.meta, &value.body);
                let t = fb::SetAttributes::create(
                    &mut e.builder,
                    &fb::SetAttributesArgs {
                        partition: *partition,
                        bucket: Some(bucket),
                        key: Some(key),
                        null_version: *null_version,
                        stamp: Some(&stamp),
                        value: Some(value_offset),
                        expected: expected.as_ref(),
                    },
                );
                (fb::Body::SetAttributes, t.as_union_value())
            }
            StorageRequest::BeginWrite { partition, version } => {
                let version = version_fb(version);
                let t = fb::BeginWrite::create(
                    &mut e.builder,
                    &fb::BeginWriteArgs {
                        partition: *partition,
                        version: Some(&version),
                    },
                );
                (fb::Body::BeginWrite, t.as_union_value())
            }
            StorageRequest::EndWrite {
                partition,
                bucket,
                key,
                ended,
                garbage,
            } => {
                let bucket = e.builder.create_string(bucket);
                let key = e.builder.create_string(key);
                let garbage = e.builder.create_vector(&version_chunks_fb(garbage));
                let ended = ended.as_ref().map(version_fb);
                let t = fb::EndWrite::create(
                    &mut e.builder,
                    &fb::EndWriteArgs {
                        partition: *partition,
                        bucket: Some(bucket),
                        key: Some(key),
                        ended: ended.as_ref(),
                        garbage: Some(garbage),
                    },
                );
                (fb::Body::EndWrite, t.as_union_value())
            }
            StorageRequest::CommitPart {
                partition,
                bucket,
                key,
                part_key,
                value,
                writing,
            } => {
                let bucket = e.builder.create_string(bucket);
                let key = e.builder.create_string(key);
                let part_key = e.bytes(part_key);
                let value_offset = e.put_value(value);
                let writing = e.pending(writing.as_ref());
                payload = value.body.clone();
                checksum = record_checksum(&value.meta, &value.body);
                let t = fb::CommitPart::create(
                    &mut e.builder,
                    &fb::CommitPartArgs {
                        partition: *partition,
                        bucket: Some(bucket),
                        key: Some(key),
                        part_key: Some(part_key),
                        value: Some(value_offset),
                        writing,
                    },
                );
                (fb::Body::CommitPart, t.as_union_value())
            }
            StorageRequest::LeaseChunks {
                bucket,
                key,
                versions,
                check_presence,
            } => {
                let bucket = e.builder.create_string(bucket);
                let key = e.builder.create_string(key);
                let versions = e.builder.create_vector(&version_chunks_fb(versions));
                let t = fb::LeaseChunks::create(
                    &mut e.builder,
                    &fb::LeaseChunksArgs {
                        bucket: Some(bucket),
                        key: Some(key),
                        versions: Some(versions),
                        check_presence: *check_presence,
                    },
                );
                (fb::Body::LeaseChunks, t.as_union_value())
            }
            StorageRequest::ReleaseChunks { versions } => {
                let ids: Vec<fb::VersionId> = versions.iter().map(version_fb).collect();
                let versions = e.builder.create_vector(&ids);
                let t = fb::ReleaseChunks::create(
                    &mut e.builder,
                    &fb::ReleaseChunksArgs {
                        versions: Some(versions),
                    },
                );
                (fb::Body::ReleaseChunks, t.as_union_value())
            }
            StorageRequest::CollectChunks { keys, orphans } => {
                let keys: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        let key = e.builder.create_vector(k);
                        fb::Key::create(&mut e.builder, &fb::KeyArgs { key: Some(key) })
                    })
                    .collect();
                let keys = e.builder.create_vector(&keys);
                let t = fb::CollectChunks::create(
                    &mut e.builder,
                    &fb::CollectChunksArgs {
                        keys: Some(keys),
                        orphans: *orphans,
                    },
                );
                (fb::Body::CollectChunks, t.as_union_value())
            }
            StorageRequest::Unreferenced {
                partition,
                bucket,
                key,
                versions,
            } => {
                let bucket = e.builder.create_string(bucket);
                let key = e.builder.create_string(key);
                let versions = e.builder.create_vector(&version_chunks_fb(versions));
                let t = fb::Unreferenced::create(
                    &mut e.builder,
                    &fb::UnreferencedArgs {
                        partition: *partition,
                        bucket: Some(bucket),
                        key: Some(key),
                        versions: Some(versions),
                    },
                );
                (fb::Body::Unreferenced, t.as_union_value())
            }
            StorageRequest::RangeHashes { partition, ranges } => {
                let t = fb::RangeHashes::create(
                    &mut e.builder,
                    &fb::RangeHashesArgs {
                        partition: *partition,
                        ranges: *ranges,
                    },
                );
                (fb::Body::RangeHashes, t.as_union_value())
            }
            StorageRequest::RangeEntries {
                partition,
                ranges,
                wanted,
                start_after,
                limit,
            } => {
                let wanted = e.builder.create_vector(wanted);
                let after = start_after.as_ref().map(|a| e.bytes(a));
                let t = fb::RangeEntries::create(
                    &mut e.builder,
                    &fb::RangeEntriesArgs {
                        partition: *partition,
                        ranges: *ranges,
                        wanted: Some(wanted),
                        start_after: after,
                        has_start_after: start_after.is_some(),
                        limit: u32::try_from(*limit).unwrap_or(u32::MAX),
                    },
                );
                (fb::Body::RangeEntries, t.as_union_value())
            }
            StorageRequest::SetWatermark { partition, hlc } => {
                let t = fb::SetWatermark::create(
                    &mut e.builder,
                    &fb::SetWatermarkArgs {
                        partition: *partition,
                        hlc: Some(&hlc_fb(hlc)),
                    },
                );
                (fb::Body::SetWatermark, t.as_union_value())
            }
        },
        NodeRequest::FetchRing => {
            let t = fb::FetchRing::create(&mut e.builder, &fb::FetchRingArgs {});
            (fb::Body::FetchRing, t.as_union_value())
        }
        NodeRequest::FetchCatalog { known_version } => {
            let t = fb::FetchCatalog::create(
                &mut e.builder,
                &fb::FetchCatalogArgs {
                    known_version: *known_version,
                },
            );
            (fb::Body::FetchCatalog, t.as_union_value())
        }
        NodeRequest::Catalog(change) => match change {
            CatalogChange::CreateBucket { name, owner, acl } => {
                let name = e.builder.create_string(name);
                let owner = e.builder.create_string(owner);
                let acl = e.builder.create_string(acl);
                let t = fb::CreateBucket::create(
                    &mut e.builder,
                    &fb::CreateBucketArgs {
                        name: Some(name),
                        owner: Some(owner),
                        acl: Some(acl),
                    },
                );
                (fb::Body::CreateBucket, t.as_union_value())
            }
            CatalogChange::DeleteBucket { name, incarnation }
            | CatalogChange::MarkBucketDeleting { name, incarnation } => {
                let mark_only = matches!(change, CatalogChange::MarkBucketDeleting { .. });
                let name = e.builder.create_string(name);
                let t = fb::DeleteBucket::create(
                    &mut e.builder,
                    &fb::DeleteBucketArgs {
                        name: Some(name),
                        incarnation: *incarnation,
                        mark_only,
                    },
                );
                (fb::Body::DeleteBucket, t.as_union_value())
            }
            CatalogChange::SetBucketAcl { name, acl } => {
                let name = e.builder.create_string(name);
                let acl = e.builder.create_string(acl);
                let t = fb::SetBucketAcl::create(
                    &mut e.builder,
                    &fb::SetBucketAclArgs {
                        name: Some(name),
                        acl: Some(acl),
                    },
                );
                (fb::Body::SetBucketAcl, t.as_union_value())
            }
            CatalogChange::SetBucketVersioning { name, enabled } => {
                let name = e.builder.create_string(name);
                let t = fb::SetBucketVersioning::create(
                    &mut e.builder,
                    &fb::SetBucketVersioningArgs {
                        name: Some(name),
                        enabled: *enabled,
                    },
                );
                (fb::Body::SetBucketVersioning, t.as_union_value())
            }
            CatalogChange::SetBucketLifecycle { name, rules_json } => {
                let name = e.builder.create_string(name);
                let rules_json = e.builder.create_string(rules_json);
                let t = fb::SetBucketLifecycle::create(
                    &mut e.builder,
                    &fb::SetBucketLifecycleArgs {
                        name: Some(name),
                        rules_json: Some(rules_json),
                    },
                );
                (fb::Body::SetBucketLifecycle, t.as_union_value())
            }
            CatalogChange::SetBucketSetting { name, setting_json } => {
                let name = e.builder.create_string(name);
                let setting_json = e.builder.create_string(setting_json);
                let t = fb::SetBucketSetting::create(
                    &mut e.builder,
                    &fb::SetBucketSettingArgs {
                        name: Some(name),
                        setting_json: Some(setting_json),
                    },
                );
                (fb::Body::SetBucketSetting, t.as_union_value())
            }
        },
        NodeRequest::Raft { call, body } => {
            payload = body.clone();
            let t = fb::RaftRequest::create(&mut e.builder, &fb::RaftRequestArgs { call: *call });
            (fb::Body::RaftRequest, t.as_union_value())
        }
        NodeRequest::ReadClock => {
            let t = fb::ReadClock::create(&mut e.builder, &fb::ReadClockArgs {});
            (fb::Body::ReadClock, t.as_union_value())
        }
    };
    e.finish(request_id, ring_epoch, body_type, body, payload, checksum)
}

/// A record sent to storage: its value with the payload as its body, checked against the
/// sender's xxh3.
fn put_value_of(
    record: Option<fb::Record<'_>>,
    payload: &Bytes,
    checksum: u64,
) -> Result<PutValue, Malformed> {
    let record = required(record, "the record")?;
    let meta = bytes_of(record.meta());
    if record.body_len() != payload.len() as u64 {
        return Err(malformed(format!(
            "the record says {} body bytes, the payload has {}",
            record.body_len(),
            payload.len()
        )));
    }
    let actual = record_checksum(&meta, payload);
    if actual != checksum {
        return Err(malformed(format!(
            "the record's end-to-end checksum does not match: sender {checksum:#018x}, received {actual:#018x}"
        )));
    }
    Ok(PutValue {
        meta,
        body: payload.clone(),
        summary: summary_of(record.summary()),
        hlc: record.hlc().map(hlc_of),
    })
}

fn etag_of(kind: fb::EtagMatch, etag: Option<&str>) -> Result<Option<EtagCondition>, Malformed> {
    match kind {
        fb::EtagMatch::None => Ok(None),
        fb::EtagMatch::Any => Ok(Some(EtagCondition::Any)),
        fb::EtagMatch::Etag => Ok(Some(EtagCondition::Etag(string_of(etag, "the ETag")?))),
        _ => Err(malformed("an unknown ETag condition")),
    }
}

fn pending_of(writing: Option<fb::PendingWrite<'_>>) -> Result<Option<PendingWrite>, Malformed> {
    writing
        .map(|w| {
            if w.chunks() > CHUNKS_PER_VERSION_MAX {
                return Err(malformed(format!(
                    "a write of {} chunks (at most {CHUNKS_PER_VERSION_MAX})",
                    w.chunks()
                )));
            }
            Ok(PendingWrite {
                version: version_of(required(w.version(), "the pending write's version")?),
                chunks: w.chunks(),
            })
        })
        .transpose()
}

/// Decodes a request a peer sent; a [`Malformed`] one is answered with an error, not run.
pub fn decode_request(message: &Message) -> Result<NodeRequest, Malformed> {
    let envelope = message.envelope();
    let payload = message.payload();
    let checksum = envelope.payload_xxh3();
    let missing = || malformed("the body does not match its type");
    let storage = |request| Ok(NodeRequest::Storage(request));
    match envelope.body_type() {
        fb::Body::Put => {
            let t = envelope.body_as_put().ok_or_else(missing)?;
            storage(StorageRequest::Put {
                partition: t.partition(),
                key: bytes_of(t.key()),
                value: put_value_of(t.value(), payload, checksum)?,
                fresh: t.fresh(),
            })
        }
        fb::Body::Get => {
            let t = envelope.body_as_get().ok_or_else(missing)?;
            storage(StorageRequest::Get {
                partition: t.partition(),
                key: bytes_of(t.key()),
            })
        }
        fb::Body::GetRange => {
            let t = envelope.body_as_get_range().ok_or_else(missing)?;
            if t.start() > t.end() {
                return Err(malformed("a range that ends before it starts"));
            }
            storage(StorageRequest::GetRange {
                partition: t.partition(),
                key: bytes_of(t.key()),
                range: t.start()..t.end(),
            })
        }
        fb::Body::Head => {
            let t = envelope.body_as_head().ok_or_else(missing)?;
            storage(StorageRequest::Head {
                partition: t.partition(),
                key: bytes_of(t.key()),
            })
        }
        fb::Body::Lookup => {
            let t = envelope.body_as_lookup().ok_or_else(missing)?;
            storage(StorageRequest::Lookup {
                partition: t.partition(),
                key: bytes_of(t.key()),
            })
        }
        fb::Body::Delete => {
            let t = envelope.body_as_delete().ok_or_else(missing)?;
            storage(StorageRequest::Delete {
                partition: t.partition(),
                key: bytes_of(t.key()),
                hlc: t.hlc().map(hlc_of),
                fresh: t.fresh(),
            })
        }
        fb::Body::Scan => {
            let t = envelope.body_as_scan().ok_or_else(missing)?;
            let limit = t.limit() as usize;
            if limit > SCAN_LIMIT_MAX {
                return Err(malformed(format!(
                    "a scan limit of {limit} keys is over {SCAN_LIMIT_MAX}"
                )));
            }
            let partitions = match t.ranges() {
                Some(pairs) if !pairs.is_empty() => {
                    if pairs.len() % 2 != 0 || pairs.len() / 2 > SCAN_RANGES_MAX {
                        return Err(malformed(format!(
                            "a scan's ranges must be at most {SCAN_RANGES_MAX} (start, end) pairs"
                        )));
                    }
                    let pairs: Vec<u32> = pairs.iter().collect();
                    let ranges: Vec<std::ops::Range<u32>> =
                        pairs.chunks_exact(2).map(|p| p[0]..p[1]).collect();
                    let ordered = ranges.iter().all(|r| r.start <= r.end)
                        && ranges.windows(2).all(|pair| pair[0].end <= pair[1].start);
                    if !ordered {
                        return Err(malformed(
                            "a scan's partition ranges must be in order and disjoint",
                        ));
                    }
                    ranges
                }
                _ => std::iter::once(t.partitions_start()..t.partitions_end()).collect(),
            };
            storage(StorageRequest::Scan {
                partitions,
                prefix: bytes_of(t.prefix()),
                start_after: t.has_start_after().then(|| bytes_of(t.start_after())),
                limit,
                tombstones: t.tombstones(),
            })
        }
        fb::Body::CommitObject => {
            let t = envelope.body_as_commit_object().ok_or_else(missing)?;
            let condition = required(t.condition(), "the condition")?;
            storage(StorageRequest::CommitObject {
                partition: t.partition(),
                bucket: string_of(t.bucket(), "the bucket")?,
                key: string_of(t.key(), "the key")?,
                value: put_value_of(t.value(), payload, checksum)?,
                condition: Box::new(WriteCondition {
                    if_match: etag_of(condition.if_match(), condition.if_match_etag())?,
                    if_none_match: etag_of(
                        condition.if_none_match(),
                        condition.if_none_match_etag(),
                    )?,
                    if_latest: condition.if_latest().map(hlc_of),
                }),
                writing: pending_of(t.writing())?,
                versioning: versioning_of(t.versioning())?,
                retract: t.retract().map(hlc_of),
            })
        }
        fb::Body::DeleteObject => {
            let t = envelope.body_as_delete_object().ok_or_else(missing)?;
            let version = match t.version_kind() {
                VERSION_KIND_NONE => None,
                VERSION_KIND_NULL => Some(VersionRef::Null),
                VERSION_KIND_STAMPED => Some(VersionRef::Stamped(hlc_of(required(
                    t.version(),
                    "the version",
                )?))),
                other => return Err(malformed(format!("unknown version kind {other}"))),
            };
            storage(StorageRequest::DeleteObject {
                partition: t.partition(),
                bucket: string_of(t.bucket(), "the bucket")?,
                key: string_of(t.key(), "the key")?,
                hlc: t.hlc().map(hlc_of),
                versioning: versioning_of(t.versioning())?,
                version,
                only_if: t.only_if().map(hlc_of),
            })
        }
        fb::Body::LatestVersion => {
            let t = envelope.body_as_latest_version().ok_or_else(missing)?;
            storage(StorageRequest::LatestVersion {
                partition: t.partition(),
                bucket: string_of(t.bucket(), "the bucket")?,
                key: string_of(t.key(), "the key")?,
            })
        }
        fb::Body::SetAttributes => {
            let t = envelope.body_as_set_attributes().ok_or_else(missing)?;
            storage(StorageRequest::SetAttributes {
                partition: t.partition(),
                bucket: string_of(t.bucket(), "the bucket")?,
                key: string_of(t.key(), "the key")?,
                null_version: t.null_version(),
                stamp: hlc_of(required(t.stamp(), "the version's stamp")?),
                value: put_value_of(t.value(), payload, checksum)?,
                expected: t.expected().map(hlc_of),
            })
        }
        fb::Body::BeginWrite => {
            let t = envelope.body_as_begin_write().ok_or_else(missing)?;
            storage(StorageRequest::BeginWrite {
                partition: t.partition(),
                version: version_of(required(t.version(), "the version")?),
            })
        }
        fb::Body::EndWrite => {
            let t = envelope.body_as_end_write().ok_or_else(missing)?;
            storage(StorageRequest::EndWrite {
                partition: t.partition(),
                bucket: string_of(t.bucket(), "the bucket")?,
                key: string_of(t.key(), "the key")?,
                ended: t.ended().map(version_of),
                garbage: bounded_versions(t.garbage())?,
            })
        }
        fb::Body::CommitPart => {
            let t = envelope.body_as_commit_part().ok_or_else(missing)?;
            storage(StorageRequest::CommitPart {
                partition: t.partition(),
                bucket: string_of(t.bucket(), "the bucket")?,
                key: string_of(t.key(), "the key")?,
                part_key: bytes_of(t.part_key()),
                value: put_value_of(t.value(), payload, checksum)?,
                writing: pending_of(t.writing())?,
            })
        }
        fb::Body::LeaseChunks => {
            let t = envelope.body_as_lease_chunks().ok_or_else(missing)?;
            let versions = bounded_versions(t.versions())?;
            let total: u64 = versions.iter().map(|v| u64::from(v.chunks)).sum();
            if t.check_presence() && total > LEASE_PRESENCE_CHECK_CHUNKS_MAX {
                return Err(malformed(format!(
                    "a presence check of {total} chunks (at most {LEASE_PRESENCE_CHECK_CHUNKS_MAX})"
                )));
            }
            storage(StorageRequest::LeaseChunks {
                bucket: string_of(t.bucket(), "the bucket")?,
                key: string_of(t.key(), "the key")?,
                versions,
                check_presence: t.check_presence(),
            })
        }
        fb::Body::ReleaseChunks => {
            let t = envelope.body_as_release_chunks().ok_or_else(missing)?;
            storage(StorageRequest::ReleaseChunks {
                versions: t
                    .versions()
                    .map_or_else(Vec::new, |vs| vs.iter().map(version_of).collect()),
            })
        }
        fb::Body::CollectChunks => {
            let t = envelope.body_as_collect_chunks().ok_or_else(missing)?;
            storage(StorageRequest::CollectChunks {
                keys: t.keys().map_or_else(Vec::new, |ks| {
                    ks.iter().map(|k| bytes_of(k.key())).collect()
                }),
                orphans: t.orphans(),
            })
        }
        fb::Body::Unreferenced => {
            let t = envelope.body_as_unreferenced().ok_or_else(missing)?;
            storage(StorageRequest::Unreferenced {
                partition: t.partition(),
                bucket: string_of(t.bucket(), "the bucket")?,
                key: string_of(t.key(), "the key")?,
                versions: bounded_versions(t.versions())?,
            })
        }
        fb::Body::RangeHashes => {
            let t = envelope.body_as_range_hashes().ok_or_else(missing)?;
            storage(StorageRequest::RangeHashes {
                partition: t.partition(),
                ranges: t.ranges(),
            })
        }
        fb::Body::RangeEntries => {
            let t = envelope.body_as_range_entries().ok_or_else(missing)?;
            let limit = t.limit() as usize;
            if limit > SCAN_LIMIT_MAX {
                return Err(malformed(format!(
                    "an anti-entropy limit of {limit} keys is over {SCAN_LIMIT_MAX}"
                )));
            }
            let wanted: Vec<u32> = t.wanted().map_or_else(Vec::new, |w| w.iter().collect());
            if wanted.len() > crate::antientropy::RANGES_MAX as usize {
                return Err(malformed(format!(
                    "{} anti-entropy ranges wanted (at most {})",
                    wanted.len(),
                    crate::antientropy::RANGES_MAX
                )));
            }
            storage(StorageRequest::RangeEntries {
                partition: t.partition(),
                ranges: t.ranges(),
                wanted,
                start_after: t.has_start_after().then(|| bytes_of(t.start_after())),
                limit,
            })
        }
        fb::Body::SetWatermark => {
            let t = envelope.body_as_set_watermark().ok_or_else(missing)?;
            storage(StorageRequest::SetWatermark {
                partition: t.partition(),
                hlc: hlc_of(required(t.hlc(), "the watermark")?),
            })
        }
        fb::Body::FetchRing => Ok(NodeRequest::FetchRing),
        fb::Body::FetchCatalog => {
            let t = envelope.body_as_fetch_catalog().ok_or_else(missing)?;
            Ok(NodeRequest::FetchCatalog {
                known_version: t.known_version(),
            })
        }
        fb::Body::CreateBucket => {
            let t = envelope.body_as_create_bucket().ok_or_else(missing)?;
            Ok(NodeRequest::Catalog(CatalogChange::CreateBucket {
                name: string_of(t.name(), "the bucket name")?,
                owner: string_of(t.owner(), "the owner")?,
                acl: string_of(t.acl(), "the ACL")?,
            }))
        }
        fb::Body::SetBucketVersioning => {
            let t = envelope
                .body_as_set_bucket_versioning()
                .ok_or_else(missing)?;
            Ok(NodeRequest::Catalog(CatalogChange::SetBucketVersioning {
                name: string_of(t.name(), "the bucket name")?,
                enabled: t.enabled(),
            }))
        }
        fb::Body::SetBucketLifecycle => {
            let t = envelope
                .body_as_set_bucket_lifecycle()
                .ok_or_else(missing)?;
            Ok(NodeRequest::Catalog(CatalogChange::SetBucketLifecycle {
                name: string_of(t.name(), "the bucket name")?,
                rules_json: string_of(t.rules_json(), "the rules")?,
            }))
        }
        fb::Body::SetBucketSetting => {
            let t = envelope.body_as_set_bucket_setting().ok_or_else(missing)?;
            Ok(NodeRequest::Catalog(CatalogChange::SetBucketSetting {
                name: string_of(t.name(), "the bucket name")?,
                setting_json: string_of(t.setting_json(), "the setting")?,
            }))
        }
        fb::Body::DeleteBucket => {
            let t = envelope.body_as_delete_bucket().ok_or_else(missing)?;
            let (name, incarnation) = (string_of(t.name(), "the bucket name")?, t.incarnation());
            Ok(NodeRequest::Catalog(if t.mark_only() {
                CatalogChange::MarkBucketDeleting { name, incarnation }
            } else {
                CatalogChange::DeleteBucket { name, incarnation }
            }))
        }
        fb::Body::SetBucketAcl => {
            let t = envelope.body_as_set_bucket_acl().ok_or_else(missing)?;
            Ok(NodeRequest::Catalog(CatalogChange::SetBucketAcl {
                name: string_of(t.name(), "the bucket name")?,
                acl: string_of(t.acl(), "the ACL")?,
            }))
        }
        fb::Body::RaftRequest => {
            let t = envelope.body_as_raft_request().ok_or_else(missing)?;
            Ok(NodeRequest::Raft {
                call: t.call(),
                body: payload.clone(),
            })
        }
        fb::Body::ReadClock => Ok(NodeRequest::ReadClock),
        other => Err(malformed(format!("body type {} is not a request", other.0))),
    }
}

fn class_fb(class: ErrorClass) -> fb::ErrorKind {
    match class {
        ErrorClass::Internal => fb::ErrorKind::Internal,
        ErrorClass::Unavailable => fb::ErrorKind::Unavailable,
        ErrorClass::DiskFull => fb::ErrorKind::DiskFull,
        ErrorClass::TooLarge => fb::ErrorKind::TooLarge,
        ErrorClass::KeyTooLarge => fb::ErrorKind::KeyTooLarge,
        ErrorClass::Body => fb::ErrorKind::Body,
        ErrorClass::PreconditionFailed => fb::ErrorKind::PreconditionFailed,
        ErrorClass::NoSuchObject => fb::ErrorKind::NoSuchObject,
        ErrorClass::MissingChunk => fb::ErrorKind::MissingChunk,
        ErrorClass::NotHeldHere => fb::ErrorKind::NotHeldHere,
        ErrorClass::Corrupt => fb::ErrorKind::Corrupt,
        ErrorClass::LimitExceeded => fb::ErrorKind::LimitExceeded,
    }
}

fn refusal_fb(kind: CatalogRefusalKind) -> fb::ErrorKind {
    match kind {
        CatalogRefusalKind::InvalidBucketName => fb::ErrorKind::InvalidBucketName,
        CatalogRefusalKind::BucketAlreadyExists => fb::ErrorKind::BucketAlreadyExists,
        CatalogRefusalKind::BucketAlreadyOwnedByYou => fb::ErrorKind::BucketAlreadyOwnedByYou,
        CatalogRefusalKind::NoSuchBucket => fb::ErrorKind::NoSuchBucket,
        CatalogRefusalKind::BucketNotEmpty => fb::ErrorKind::BucketNotEmpty,
        CatalogRefusalKind::Busy => fb::ErrorKind::ManagerBusy,
        CatalogRefusalKind::Unavailable => fb::ErrorKind::Unavailable,
        CatalogRefusalKind::Internal => fb::ErrorKind::Internal,
    }
}

/// The error answer of request `request_id`.
fn error_frame(
    request_id: u64,
    kind: fb::ErrorKind,
    message: &str,
    index: u32,
    epoch: u64,
) -> Frame {
    let mut e = Envelope::new();
    let message = e.builder.create_string(message);
    let t = fb::Error::create(
        &mut e.builder,
        &fb::ErrorArgs {
            kind,
            message: Some(message),
            index,
            epoch,
        },
    );
    e.finish(
        request_id,
        epoch,
        fb::Body::Error,
        t.as_union_value(),
        Bytes::new(),
        0,
    )
}

/// The answer to a request that could not be decoded.
pub fn encode_malformed(request_id: u64, ring_epoch: u64, why: &Malformed) -> Frame {
    error_frame(
        request_id,
        fb::ErrorKind::BadRequest,
        &why.to_string(),
        0,
        ring_epoch,
    )
}

/// Encodes the answer to request `request_id`.
pub fn encode_answer(
    request_id: u64,
    ring_epoch: u64,
    answer: Result<NodeAnswer, ShardError>,
) -> Frame {
    encode_answer_as(request_id, ring_epoch, answer, false)
}

/// Encodes `answer` as [`encode_answer`] does; a successful one marked `busy` tells the sender
/// of a background request that the answering core served a client just now (its background
/// work then slows down as it does for clients of its own).
pub fn encode_answer_as(
    request_id: u64,
    ring_epoch: u64,
    answer: Result<NodeAnswer, ShardError>,
    busy: bool,
) -> Frame {
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            let (index, epoch) = match &e {
                ShardError::NotHeldHere {
                    partition, epoch, ..
                } => (*partition, *epoch),
                other => (other.missing_chunk().unwrap_or(0), ring_epoch),
            };
            return error_frame(
                request_id,
                class_fb(e.class()),
                &e.to_string(),
                index,
                epoch,
            );
        }
    };
    let mut e = Envelope::new();
    e.busy = busy;
    let mut payload = Bytes::new();
    macro_rules! table {
        ($ty:ident, $args:expr) => {{
            let t = fb::$ty::create(&mut e.builder, &$args);
            (fb::Body::$ty, t.as_union_value())
        }};
    }
    let (body_type, body) = match answer {
        NodeAnswer::Storage(response) => match response {
            StorageResponse::Stored(hlc) => {
                table!(
                    Stored,
                    fb::StoredArgs {
                        hlc: Some(&hlc_fb(&hlc))
                    }
                )
            }
            StorageResponse::Value(None)
            | StorageResponse::Head(None)
            | StorageResponse::Lookup(None) => {
                table!(NotFound, fb::NotFoundArgs { hlc: None })
            }
            StorageResponse::Gone(hlc) => {
                table!(
                    NotFound,
                    fb::NotFoundArgs {
                        hlc: Some(&hlc_fb(&hlc))
                    }
                )
            }
            StorageResponse::Value(Some(value)) => {
                let record = e.record(
                    &value.meta,
                    value.body_len,
                    &value.summary,
                    Some(&value.hlc),
                );
                payload = value.body;
                table!(
                    Found,
                    fb::FoundArgs {
                        value: Some(record)
                    }
                )
            }
            StorageResponse::Head(Some(head)) => {
                let record = e.record(&head.meta, head.body_len, &head.summary, Some(&head.hlc));
                table!(
                    Found,
                    fb::FoundArgs {
                        value: Some(record)
                    }
                )
            }
            StorageResponse::Lookup(Some(lookup)) => table!(
                LookupFound,
                fb::LookupFoundArgs {
                    hlc: Some(&hlc_fb(&lookup.hlc)),
                    summary: Some(&summary_fb(&lookup.summary)),
                    body_len: lookup.body_len,
                    tombstone: lookup.tombstone,
                }
            ),
            StorageResponse::Deleted(hlc) => {
                let hlc = hlc.as_ref().map(hlc_fb);
                table!(Deleted, fb::DeletedArgs { hlc: hlc.as_ref() })
            }
            StorageResponse::Removed { removed, hlc } => {
                let hlc = hlc.as_ref().map(hlc_fb);
                table!(
                    Removed,
                    fb::RemovedArgs {
                        removed,
                        hlc: hlc.as_ref()
                    }
                )
            }
            StorageResponse::Entries(entries) => {
                payload = encode_scan_page(&entries);
                table!(Entries, fb::EntriesArgs {})
            }
            StorageResponse::Done => table!(Done, fb::DoneArgs {}),
            StorageResponse::Leased(versions) => {
                let ids: Vec<fb::VersionId> = versions.iter().map(version_fb).collect();
                let versions = e.builder.create_vector(&ids);
                table!(
                    Leased,
                    fb::LeasedArgs {
                        versions: Some(versions)
                    }
                )
            }
            StorageResponse::Deferred(count) => table!(Deferred, fb::DeferredArgs { count }),
            StorageResponse::Versions(versions) => {
                let versions = e.builder.create_vector(&version_chunks_fb(&versions));
                table!(
                    Versions,
                    fb::VersionsArgs {
                        versions: Some(versions)
                    }
                )
            }
            StorageResponse::Hashes { hashes, watermark } => {
                let hashes = e.builder.create_vector(&hashes);
                let watermark = watermark.as_ref().map(hlc_fb);
                table!(
                    Hashes,
                    fb::HashesArgs {
                        hashes: Some(hashes),
                        watermark: watermark.as_ref(),
                    }
                )
            }
        },
        NodeAnswer::Ring(ring) => {
            payload = encode_ring(&ring);
            table!(Ring, fb::RingArgs {})
        }
        NodeAnswer::Catalog(snapshot) => {
            let unchanged = snapshot.bytes.is_none();
            payload = snapshot.bytes.unwrap_or_default();
            table!(
                Catalog,
                fb::CatalogArgs {
                    version: snapshot.version,
                    unchanged,
                }
            )
        }
        NodeAnswer::CatalogChanged => table!(Done, fb::DoneArgs {}),
        NodeAnswer::Raft(bytes) => {
            payload = bytes;
            table!(RaftAnswer, fb::RaftAnswerArgs {})
        }
        NodeAnswer::Clock(unix_us) => table!(Clock, fb::ClockArgs { unix_us }),
        NodeAnswer::CatalogRefused(refusal) => {
            return error_frame(
                request_id,
                refusal_fb(refusal.kind),
                &refusal.message,
                0,
                ring_epoch,
            );
        }
    };
    e.finish(request_id, ring_epoch, body_type, body, payload, 0)
}

/// A scan page as a ScanPage flatbuffer, cut (and marked truncated) at
/// [`SCAN_PAGE_BYTES_MAX`] bytes of keys.
fn encode_scan_page(entries: &[ScanEntry]) -> Bytes {
    let mut builder = FlatBufferBuilder::with_capacity(1024);
    let mut offsets = Vec::with_capacity(entries.len());
    let mut bytes = 0;
    let mut truncated = false;
    for entry in entries {
        bytes += entry.key.len() + 64;
        if bytes > SCAN_PAGE_BYTES_MAX && !offsets.is_empty() {
            truncated = true;
            break;
        }
        let key = builder.create_vector(&entry.key);
        offsets.push(fb::ScanEntry::create(
            &mut builder,
            &fb::ScanEntryArgs {
                partition: entry.partition,
                key: Some(key),
                hlc: Some(&hlc_fb(&entry.hlc)),
                summary: Some(&summary_fb(&entry.summary)),
                body_len: entry.body_len,
                tombstone: entry.tombstone,
            },
        ));
    }
    let entries = builder.create_vector(&offsets);
    let page = fb::ScanPage::create(
        &mut builder,
        &fb::ScanPageArgs {
            entries: Some(entries),
            truncated,
        },
    );
    builder.finish(page, None);
    Bytes::copy_from_slice(builder.finished_data())
}

/// A scan page: its entries, and whether the page was cut before the scan's limit.
pub struct ScanPage {
    /// Entries in key order.
    pub entries: Vec<ScanEntry>,
    /// More entries follow the last one (ask again after it).
    pub truncated: bool,
}

fn decode_scan_page(payload: &[u8]) -> Result<ScanPage, ShardError> {
    let page = flatbuffers::root::<fb::ScanPage>(payload)
        .map_err(|e| ShardError::BadAnswer(format!("scan page: {e}")))?;
    let entries = page.entries().map_or_else(Vec::new, |entries| {
        entries
            .iter()
            .map(|entry| ScanEntry {
                partition: entry.partition(),
                key: bytes_of(entry.key()),
                hlc: entry.hlc().map_or_else(Hlc::default, hlc_of),
                summary: summary_of(entry.summary()),
                body_len: entry.body_len(),
                tombstone: entry.tombstone(),
            })
            .collect()
    });
    Ok(ScanPage {
        entries,
        truncated: page.truncated(),
    })
}

fn encode_ring(ring: &ClusterRing) -> Bytes {
    let mut builder = FlatBufferBuilder::with_capacity(16 * 1024);
    let vnodes: Vec<fb::Vnode> = ring
        .ring
        .table()
        .iter()
        .map(|v| fb::Vnode::new(v.node, v.shard))
        .collect();
    let vnodes = builder.create_vector(&vnodes);
    let next_vnodes = ring.ring.next_table().map(|next| {
        let next: Vec<fb::Vnode> = next
            .iter()
            .map(|v| fb::Vnode::new(v.node, v.shard))
            .collect();
        builder.create_vector(&next)
    });
    let nodes: Vec<_> = ring
        .nodes
        .iter()
        .map(|(node, addr)| {
            let addr = builder.create_string(&addr.to_string());
            fb::NodeAddress::create(
                &mut builder,
                &fb::NodeAddressArgs {
                    node: *node,
                    rpc_addr: Some(addr),
                },
            )
        })
        .collect();
    let nodes = builder.create_vector(&nodes);
    let table = fb::RingTable::create(
        &mut builder,
        &fb::RingTableArgs {
            epoch: ring.ring.epoch(),
            partitions: ring.ring.partitions(),
            replicas: ring.ring.replicas() as u32,
            vnodes: Some(vnodes),
            nodes: Some(nodes),
            checksum: ring.ring.checksum(),
            next_vnodes,
            known_everywhere: ring.ring.is_known_everywhere(),
        },
    );
    builder.finish(table, None);
    Bytes::copy_from_slice(builder.finished_data())
}

fn decode_ring(payload: &[u8]) -> Result<ClusterRing, ShardError> {
    let bad = |what: String| ShardError::BadAnswer(format!("ring: {what}"));
    let table = flatbuffers::root::<fb::RingTable>(payload).map_err(|e| bad(e.to_string()))?;
    let vnodes_of = |vs: flatbuffers::Vector<'_, fb::Vnode>| -> Vec<Vnode> {
        vs.iter()
            .map(|v| Vnode {
                node: v.node(),
                shard: v.shard(),
            })
            .collect()
    };
    let vnodes = table.vnodes().map_or_else(Vec::new, vnodes_of);
    let mut ring = RingView::new(
        table.epoch(),
        table.partitions(),
        table.replicas() as usize,
        vnodes,
    )?;
    if let Some(next) = table.next_vnodes().filter(|next| !next.is_empty()) {
        ring = ring.moving_to(vnodes_of(next))?;
    }
    let ring = ring.known_everywhere_if(table.known_everywhere());
    if ring.checksum() != table.checksum() {
        return Err(bad(format!(
            "checksum {:#x} does not match the table's {:#x}",
            table.checksum(),
            ring.checksum()
        )));
    }
    let mut nodes = Vec::new();
    for node in table.nodes().iter().flatten() {
        let addr = node
            .rpc_addr()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .ok_or_else(|| bad(format!("node {} has no valid address", node.node())))?;
        nodes.push((node.node(), addr));
    }
    Ok(ClusterRing { ring, nodes })
}

fn record_of(record: Option<fb::Record<'_>>) -> Result<(Bytes, u64, Summary, Hlc), ShardError> {
    let record = record.ok_or_else(|| ShardError::BadAnswer("a record is missing".into()))?;
    Ok((
        bytes_of(record.meta()),
        record.body_len(),
        summary_of(record.summary()),
        record.hlc().map_or_else(Hlc::default, hlc_of),
    ))
}

fn class_of(kind: fb::ErrorKind) -> ErrorClass {
    match kind {
        fb::ErrorKind::Unavailable | fb::ErrorKind::ManagerBusy => ErrorClass::Unavailable,
        fb::ErrorKind::DiskFull => ErrorClass::DiskFull,
        fb::ErrorKind::TooLarge => ErrorClass::TooLarge,
        fb::ErrorKind::KeyTooLarge => ErrorClass::KeyTooLarge,
        fb::ErrorKind::Body => ErrorClass::Body,
        fb::ErrorKind::PreconditionFailed => ErrorClass::PreconditionFailed,
        fb::ErrorKind::NoSuchObject => ErrorClass::NoSuchObject,
        fb::ErrorKind::MissingChunk => ErrorClass::MissingChunk,
        fb::ErrorKind::NotHeldHere => ErrorClass::NotHeldHere,
        fb::ErrorKind::Corrupt => ErrorClass::Corrupt,
        fb::ErrorKind::LimitExceeded => ErrorClass::LimitExceeded,
        _ => ErrorClass::Internal,
    }
}

fn refusal_of(kind: fb::ErrorKind) -> CatalogRefusalKind {
    match kind {
        fb::ErrorKind::InvalidBucketName => CatalogRefusalKind::InvalidBucketName,
        fb::ErrorKind::BucketAlreadyExists => CatalogRefusalKind::BucketAlreadyExists,
        fb::ErrorKind::BucketAlreadyOwnedByYou => CatalogRefusalKind::BucketAlreadyOwnedByYou,
        fb::ErrorKind::NoSuchBucket => CatalogRefusalKind::NoSuchBucket,
        fb::ErrorKind::BucketNotEmpty => CatalogRefusalKind::BucketNotEmpty,
        fb::ErrorKind::ManagerBusy => CatalogRefusalKind::Busy,
        fb::ErrorKind::Unavailable => CatalogRefusalKind::Unavailable,
        _ => CatalogRefusalKind::Internal,
    }
}

/// What a request expects back, to decode its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A storage response to a request of this kind ([`StorageRequest::kind`]).
    Storage(&'static str),
    /// The ring.
    Ring,
    /// The catalog.
    Catalog,
    /// A catalog change's outcome.
    CatalogChange,
    /// The answer to a call between managers.
    Raft,
    /// A peer's wall clock.
    Clock,
}

/// Decodes the answer to a request that expected `expect`. A storage error answer is a
/// [`ShardError::Remote`] carrying the peer's class and sentence.
pub fn decode_answer(message: &Message, expect: Expect) -> Result<NodeAnswer, ShardError> {
    let envelope = message.envelope();
    let payload = message.payload();
    let bad =
        |what: &str| ShardError::BadAnswer(format!("{what} (expected an answer to {expect:?})"));
    if let Some(error) = envelope.body_as_error() {
        let message = error.message().unwrap_or("").to_owned();
        if expect == Expect::CatalogChange {
            return Ok(NodeAnswer::CatalogRefused(CatalogRefusal {
                kind: refusal_of(error.kind()),
                message,
            }));
        }
        if error.kind() == fb::ErrorKind::BadRequest {
            return Err(ShardError::BadAnswer(format!(
                "the peer refused the request: {message}"
            )));
        }
        return Err(ShardError::Remote {
            class: class_of(error.kind()),
            message,
            index: error.index(),
        });
    }
    let storage = |response| Ok(NodeAnswer::Storage(response));
    match (expect, envelope.body_type()) {
        (Expect::Ring, fb::Body::Ring) => Ok(NodeAnswer::Ring(decode_ring(payload)?)),
        (Expect::Catalog, fb::Body::Catalog) => {
            let t = envelope.body_as_catalog().ok_or_else(|| bad("catalog"))?;
            Ok(NodeAnswer::Catalog(CatalogSnapshot {
                version: t.version(),
                bytes: (!t.unchanged()).then(|| payload.clone()),
            }))
        }
        (Expect::CatalogChange, fb::Body::Done) => Ok(NodeAnswer::CatalogChanged),
        (Expect::Raft, fb::Body::RaftAnswer) => Ok(NodeAnswer::Raft(payload.clone())),
        (Expect::Clock, fb::Body::Clock) => {
            let t = envelope.body_as_clock().ok_or_else(|| bad("clock"))?;
            Ok(NodeAnswer::Clock(t.unix_us()))
        }
        (Expect::Storage(kind), body) => match (kind, body) {
            (_, fb::Body::Stored) => {
                let t = envelope.body_as_stored().ok_or_else(|| bad("stored"))?;
                let hlc = t.hlc().ok_or_else(|| bad("stored without a timestamp"))?;
                storage(StorageResponse::Stored(hlc_of(hlc)))
            }
            ("get" | "get-range" | "head", fb::Body::NotFound)
                if let Some(hlc) = envelope.body_as_not_found().and_then(|t| t.hlc()) =>
            {
                storage(StorageResponse::Gone(hlc_of(hlc)))
            }
            ("get" | "get-range", fb::Body::NotFound) => storage(StorageResponse::Value(None)),
            ("head", fb::Body::NotFound) => storage(StorageResponse::Head(None)),
            ("lookup", fb::Body::NotFound) => storage(StorageResponse::Lookup(None)),
            ("get" | "get-range", fb::Body::Found) => {
                let t = envelope.body_as_found().ok_or_else(|| bad("found"))?;
                let (meta, body_len, summary, hlc) = record_of(t.value())?;
                storage(StorageResponse::Value(Some(Value {
                    meta,
                    body: payload.clone(),
                    body_len,
                    summary,
                    hlc,
                })))
            }
            ("head", fb::Body::Found) => {
                let t = envelope.body_as_found().ok_or_else(|| bad("found"))?;
                let (meta, body_len, summary, hlc) = record_of(t.value())?;
                storage(StorageResponse::Head(Some(Head {
                    meta,
                    body_len,
                    summary,
                    hlc,
                })))
            }
            (_, fb::Body::LookupFound) => {
                let t = envelope
                    .body_as_lookup_found()
                    .ok_or_else(|| bad("lookup"))?;
                storage(StorageResponse::Lookup(Some(Lookup {
                    hlc: t.hlc().map_or_else(Hlc::default, hlc_of),
                    summary: summary_of(t.summary()),
                    body_len: t.body_len(),
                    tombstone: t.tombstone(),
                })))
            }
            (_, fb::Body::Deleted) => {
                let t = envelope.body_as_deleted().ok_or_else(|| bad("deleted"))?;
                storage(StorageResponse::Deleted(t.hlc().map(hlc_of)))
            }
            (_, fb::Body::Removed) => {
                let t = envelope.body_as_removed().ok_or_else(|| bad("removed"))?;
                storage(StorageResponse::Removed {
                    removed: t.removed(),
                    hlc: t.hlc().map(hlc_of),
                })
            }
            (_, fb::Body::Entries) => Ok(NodeAnswer::Storage(StorageResponse::Entries(
                decode_scan_page(payload)?.entries,
            ))),
            (_, fb::Body::Done) => storage(StorageResponse::Done),
            (_, fb::Body::Leased) => {
                let t = envelope.body_as_leased().ok_or_else(|| bad("leased"))?;
                storage(StorageResponse::Leased(
                    t.versions()
                        .map_or_else(Vec::new, |vs| vs.iter().map(version_of).collect()),
                ))
            }
            (_, fb::Body::Deferred) => {
                let t = envelope.body_as_deferred().ok_or_else(|| bad("deferred"))?;
                storage(StorageResponse::Deferred(t.count()))
            }
            (_, fb::Body::Versions) => {
                let t = envelope.body_as_versions().ok_or_else(|| bad("versions"))?;
                storage(StorageResponse::Versions(version_chunks_of(t.versions())))
            }
            (_, fb::Body::Hashes) => {
                let t = envelope.body_as_hashes().ok_or_else(|| bad("hashes"))?;
                let hashes: Vec<u64> = t.hashes().map_or_else(Vec::new, |h| h.iter().collect());
                if hashes.len() > crate::antientropy::RANGES_MAX as usize {
                    return Err(bad("more range hashes than ranges may be"));
                }
                storage(StorageResponse::Hashes {
                    hashes,
                    watermark: t.watermark().map(hlc_of),
                })
            }
            (_, other) => Err(bad(&format!("body type {}", other.0))),
        },
        (_, other) => Err(bad(&format!("body type {}", other.0))),
    }
}

/// Decodes the answer to a scan: its page with the truncation flag.
pub fn decode_scan_answer(message: &Message) -> Result<ScanPage, ShardError> {
    let envelope = message.envelope();
    if envelope.body_type() == fb::Body::Entries {
        return decode_scan_page(message.payload());
    }
    match decode_answer(message, Expect::Storage("scan"))? {
        NodeAnswer::Storage(other) => Err(ShardError::UnexpectedResponse {
            expected: "entries",
            got: other.kind(),
        }),
        _ => Err(ShardError::BadAnswer(
            "a scan answered with a node answer".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(frame: Frame) -> Message {
        // Through the byte stream, as a peer receives it.
        let mut bytes = bytes::BytesMut::new();
        frame.encode(&mut bytes).unwrap();
        let frame = leofs_wire::FrameDecoder::new()
            .decode(&mut bytes)
            .unwrap()
            .unwrap();
        Message::parse(frame).unwrap()
    }

    fn hlc(n: u64) -> Hlc {
        Hlc {
            physical_us: n,
            logical: 7,
            node_id: 3,
        }
    }

    fn value(body: &'static [u8]) -> PutValue {
        PutValue {
            meta: Bytes::from_static(b"meta"),
            body: Bytes::from_static(body),
            summary: Summary {
                size: 99,
                digest: [5; 16],
                tag: 2,
            },
            hlc: Some(hlc(1)),
        }
    }

    fn round_trip(request: StorageRequest) -> StorageRequest {
        let text = format!("{request:?}");
        let message = message(encode_request(42, 9, &NodeRequest::Storage(request)));
        assert_eq!(message.request_id(), 42);
        assert_eq!(message.envelope().ring_epoch(), 9);
        match decode_request(&message).unwrap() {
            NodeRequest::Storage(decoded) => {
                assert_eq!(format!("{decoded:?}"), text);
                decoded
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn background_requests_and_busy_answers_are_marked_and_others_are_not() {
        let request = NodeRequest::Storage(StorageRequest::Get {
            partition: 3,
            key: Bytes::from_static(b"k"),
        });
        let plain = message(encode_request(1, 1, &request));
        assert!(!plain.envelope().background());
        let background = message(encode_background_request(2, 1, &request));
        assert!(background.envelope().background() && !background.envelope().busy());
        assert!(matches!(
            decode_request(&background).unwrap(),
            NodeRequest::Storage(StorageRequest::Get { partition: 3, .. })
        ));
        let answer = || Ok(NodeAnswer::Storage(StorageResponse::Value(None)));
        assert!(!message(encode_answer(2, 1, answer())).envelope().busy());
        let busy = message(encode_answer_as(2, 1, answer(), true));
        assert!(busy.envelope().busy() && !busy.envelope().background());
        assert!(matches!(
            decode_answer(&busy, Expect::Storage("get")).unwrap(),
            NodeAnswer::Storage(StorageResponse::Value(None))
        ));
    }

    #[test]
    fn a_clock_read_and_its_answer_survive_the_wire() {
        let request = message(encode_request(5, 1, &NodeRequest::ReadClock));
        assert!(matches!(
            decode_request(&request).unwrap(),
            NodeRequest::ReadClock
        ));
        let answer = message(encode_answer(
            5,
            1,
            Ok(NodeAnswer::Clock(1_765_000_000_123_456)),
        ));
        assert!(matches!(
            decode_answer(&answer, Expect::Clock).unwrap(),
            NodeAnswer::Clock(1_765_000_000_123_456)
        ));
        assert!(decode_answer(&answer, Expect::Ring).is_err());
    }

    #[test]
    fn both_phases_of_a_bucket_deletion_and_its_refusal_survive_the_wire() {
        for change in [
            CatalogChange::MarkBucketDeleting {
                name: "b".into(),
                incarnation: 7,
            },
            CatalogChange::DeleteBucket {
                name: "b".into(),
                incarnation: 7,
            },
            CatalogChange::SetBucketVersioning {
                name: "b".into(),
                enabled: true,
            },
            CatalogChange::SetBucketVersioning {
                name: "b".into(),
                enabled: false,
            },
            CatalogChange::SetBucketLifecycle {
                name: "b".into(),
                rules_json: "[]".into(),
            },
            CatalogChange::SetBucketSetting {
                name: "b".into(),
                setting_json: "{\"tags\":[]}".into(),
            },
        ] {
            let message = message(encode_request(3, 1, &NodeRequest::Catalog(change.clone())));
            match decode_request(&message).unwrap() {
                NodeRequest::Catalog(decoded) => assert_eq!(decoded, change),
                other => panic!("{other:?}"),
            }
        }
        let refusal = CatalogRefusal {
            kind: CatalogRefusalKind::BucketNotEmpty,
            message: "bucket b is not empty".into(),
        };
        let answer = message(encode_answer(
            3,
            1,
            Ok(NodeAnswer::CatalogRefused(refusal.clone())),
        ));
        match decode_answer(&answer, Expect::CatalogChange).unwrap() {
            NodeAnswer::CatalogRefused(decoded) => assert_eq!(decoded, refusal),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_storage_request_survives_the_wire() {
        let version = VersionId([4; 16]);
        let chunks = vec![VersionChunks { version, chunks: 3 }];
        let requests = vec![
            StorageRequest::Put {
                partition: 5,
                key: Bytes::from_static(b"key"),
                value: value(b"body bytes"),
                fresh: true,
            },
            StorageRequest::Get {
                partition: 1,
                key: Bytes::from_static(b"k"),
            },
            StorageRequest::GetRange {
                partition: 1,
                key: Bytes::from_static(b"k"),
                range: 3..9,
            },
            StorageRequest::Head {
                partition: 2,
                key: Bytes::from_static(b"h"),
            },
            StorageRequest::Lookup {
                partition: 2,
                key: Bytes::from_static(b"l"),
            },
            StorageRequest::Delete {
                partition: 2,
                key: Bytes::from_static(b"d"),
                hlc: Some(hlc(8)),
                fresh: false,
            },
            StorageRequest::Scan {
                partitions: vec![0..3, 7..9, 20..512],
                prefix: Bytes::from_static(b"p"),
                start_after: Some(Bytes::new()),
                limit: 1000,
                tombstones: true,
            },
            StorageRequest::CommitObject {
                partition: 7,
                bucket: "b~00000000000000ff".into(),
                key: "a/b".into(),
                value: value(b""),
                condition: Box::new(WriteCondition {
                    if_match: Some(EtagCondition::Etag("abc".into())),
                    if_none_match: Some(EtagCondition::Any),
                    if_latest: Some(hlc(12)),
                }),
                writing: Some(PendingWrite { version, chunks: 2 }),
                versioning: Versioning::Off,
                retract: None,
            },
            StorageRequest::CommitObject {
                partition: 7,
                bucket: "b".into(),
                key: "k".into(),
                value: value(b"v"),
                condition: Box::default(),
                writing: None,
                versioning: Versioning::Enabled,
                retract: Some(hlc(4)),
            },
            StorageRequest::DeleteObject {
                partition: 7,
                bucket: "b".into(),
                key: "k".into(),
                hlc: None,
                versioning: Versioning::Off,
                version: None,
                only_if: None,
            },
            StorageRequest::DeleteObject {
                partition: 7,
                bucket: "b".into(),
                key: "k".into(),
                hlc: Some(hlc(9)),
                versioning: Versioning::Suspended,
                version: Some(VersionRef::Null),
                only_if: None,
            },
            StorageRequest::DeleteObject {
                partition: 7,
                bucket: "b".into(),
                key: "k".into(),
                hlc: Some(hlc(9)),
                versioning: Versioning::Enabled,
                version: Some(VersionRef::Stamped(hlc(3))),
                only_if: Some(hlc(5)),
            },
            StorageRequest::LatestVersion {
                partition: 7,
                bucket: "b".into(),
                key: "k".into(),
            },
            StorageRequest::SetAttributes {
                partition: 7,
                bucket: "b".into(),
                key: "k".into(),
                null_version: false,
                stamp: hlc(3),
                value: value(b""),
                expected: Some(hlc(4)),
            },
            StorageRequest::SetAttributes {
                partition: 7,
                bucket: "b".into(),
                key: "k".into(),
                null_version: true,
                stamp: hlc(3),
                value: value(b""),
                expected: None,
            },
            StorageRequest::BeginWrite {
                partition: 7,
                version,
            },
            StorageRequest::EndWrite {
                partition: 7,
                bucket: "b".into(),
                key: "k".into(),
                ended: None,
                garbage: chunks.clone(),
            },
            StorageRequest::CommitPart {
                partition: 7,
                bucket: "b".into(),
                key: "k".into(),
                part_key: Bytes::from_static(b"part"),
                value: value(b"part body"),
                writing: None,
            },
            StorageRequest::LeaseChunks {
                bucket: "b".into(),
                key: "k".into(),
                versions: chunks.clone(),
                check_presence: true,
            },
            StorageRequest::ReleaseChunks {
                versions: vec![version],
            },
            StorageRequest::CollectChunks {
                keys: vec![Bytes::from_static(b"c1"), Bytes::from_static(b"c2")],
                orphans: true,
            },
            StorageRequest::Unreferenced {
                partition: 7,
                bucket: "b".into(),
                key: "k".into(),
                versions: chunks,
            },
            StorageRequest::RangeHashes {
                partition: 8,
                ranges: 64,
            },
            StorageRequest::RangeEntries {
                partition: 8,
                ranges: 64,
                wanted: vec![3, 17],
                start_after: Some(Bytes::from_static(b"ob\0k")),
                limit: 1024,
            },
            StorageRequest::RangeEntries {
                partition: 8,
                ranges: 64,
                wanted: vec![0],
                start_after: None,
                limit: 1,
            },
            StorageRequest::SetWatermark {
                partition: 8,
                hlc: hlc(12),
            },
        ];
        for request in requests {
            round_trip(request);
        }
        for watermark in [Some(hlc(4)), None] {
            let hashes = vec![1, u64::MAX, 0];
            let answer = encode_answer(
                3,
                1,
                Ok(NodeAnswer::Storage(StorageResponse::Hashes {
                    hashes: hashes.clone(),
                    watermark,
                })),
            );
            match decode_answer(&message(answer), Expect::Storage("range-hashes")).unwrap() {
                NodeAnswer::Storage(StorageResponse::Hashes {
                    hashes: got,
                    watermark: mark,
                }) => assert_eq!((got, mark), (hashes, watermark)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn chunk_counts_beyond_the_bounds_are_refused_before_any_work() {
        let version = VersionId([1; 16]);
        let huge = vec![VersionChunks {
            version,
            chunks: u32::MAX,
        }];
        let requests = [
            StorageRequest::LeaseChunks {
                bucket: "b".into(),
                key: "k".into(),
                versions: huge.clone(),
                check_presence: false,
            },
            StorageRequest::LeaseChunks {
                bucket: "b".into(),
                key: "k".into(),
                versions: vec![VersionChunks {
                    version,
                    chunks: LEASE_PRESENCE_CHECK_CHUNKS_MAX as u32 + 1,
                }],
                check_presence: true,
            },
            StorageRequest::EndWrite {
                partition: 0,
                bucket: "b".into(),
                key: "k".into(),
                ended: None,
                garbage: huge,
            },
        ];
        for request in requests {
            let frame = encode_request(1, 1, &NodeRequest::Storage(request));
            assert!(decode_request(&message(frame)).is_err());
        }
    }

    #[test]
    fn calls_between_managers_carry_their_bytes() {
        let body = Bytes::from_static(br#"{"vote":1}"#);
        let frame = encode_request(
            9,
            1,
            &NodeRequest::Raft {
                call: 1,
                body: body.clone(),
            },
        );
        match decode_request(&message(frame)).unwrap() {
            NodeRequest::Raft { call, body: got } => assert_eq!((call, got), (1, body.clone())),
            other => panic!("{other:?}"),
        }
        let answer = encode_answer(9, 1, Ok(NodeAnswer::Raft(body.clone())));
        match decode_answer(&message(answer), Expect::Raft).unwrap() {
            NodeAnswer::Raft(got) => assert_eq!(got, body),
            other => panic!("{other:?}"),
        }
        let refused = ShardError::ManagerUnavailable("no manager role".into());
        let error =
            decode_answer(&message(encode_answer(9, 1, Err(refused))), Expect::Raft).unwrap_err();
        assert_eq!(error.class(), ErrorClass::Unavailable);
        assert!(error.to_string().contains("no manager role"), "{error}");
    }

    #[test]
    fn a_body_that_changed_on_the_way_is_refused() {
        let request = NodeRequest::Storage(StorageRequest::Put {
            partition: 0,
            key: Bytes::from_static(b"k"),
            value: value(b"original"),
            fresh: false,
        });
        let mut frame = encode_request(1, 1, &request);
        // Bytes changed before the frame checksum was taken (in the sender's memory): the
        // frame is valid, the end-to-end checksum is not.
        frame.payload = Bytes::from_static(b"origina!");
        let error = decode_request(&message(frame)).unwrap_err();
        assert!(error.0.contains("end-to-end checksum"), "{error}");
    }

    #[test]
    fn answers_and_errors_survive_the_wire() {
        let found = NodeAnswer::Storage(StorageResponse::Value(Some(Value {
            meta: Bytes::from_static(b"m"),
            body: Bytes::from_static(b"range"),
            body_len: 100,
            summary: Summary::default(),
            hlc: hlc(3),
        })));
        let answer = decode_answer(
            &message(encode_answer(3, 1, Ok(found))),
            Expect::Storage("get-range"),
        );
        match answer.unwrap() {
            NodeAnswer::Storage(StorageResponse::Value(Some(v))) => {
                assert_eq!(
                    (&v.body[..], v.body_len, v.hlc),
                    (&b"range"[..], 100, hlc(3))
                );
            }
            other => panic!("{other:?}"),
        }
        // A deleted record's tombstone timestamp reaches a replicated read; a plain miss
        // stays a miss.
        for kind in ["get", "get-range", "head"] {
            let gone = NodeAnswer::Storage(StorageResponse::Gone(hlc(5)));
            match decode_answer(
                &message(encode_answer(3, 1, Ok(gone))),
                Expect::Storage(kind),
            ) {
                Ok(NodeAnswer::Storage(StorageResponse::Gone(at))) => assert_eq!(at, hlc(5)),
                other => panic!("{kind}: {other:?}"),
            }
        }
        let miss = NodeAnswer::Storage(StorageResponse::Value(None));
        assert!(matches!(
            decode_answer(
                &message(encode_answer(3, 1, Ok(miss))),
                Expect::Storage("get")
            ),
            Ok(NodeAnswer::Storage(StorageResponse::Value(None)))
        ));
        let missing = ShardError::MissingChunk {
            bucket: "b".into(),
            key: "k".into(),
            index: 4,
        };
        let error = decode_answer(
            &message(encode_answer(4, 1, Err(missing))),
            Expect::Storage("lease-chunks"),
        )
        .unwrap_err();
        assert_eq!(
            (error.class(), error.missing_chunk()),
            (ErrorClass::MissingChunk, Some(4))
        );
        let entries: Vec<ScanEntry> = (0..3000)
            .map(|i| ScanEntry {
                partition: i,
                key: Bytes::from(vec![b'k'; 2000]),
                hlc: hlc(u64::from(i)),
                summary: Summary::default(),
                body_len: 1,
                tombstone: false,
            })
            .collect();
        let page = decode_scan_answer(&message(encode_answer(
            5,
            1,
            Ok(NodeAnswer::Storage(StorageResponse::Entries(entries))),
        )))
        .unwrap();
        // Cut to bound the frame, and said so.
        assert!(page.truncated && page.entries.len() < 3000 && !page.entries.is_empty());
        assert_eq!(page.entries[1].partition, 1);
    }
}
