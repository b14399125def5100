//! Object I/O shared by the S3 and REST front ends: streaming a request body into chunk records
//! (≤ ~2 chunks in memory) under a version registered with storage, committing manifests (the
//! commit point, where storage evaluates the write's precondition), leasing a chunked object's
//! chunks for a read and streaming them back with bounded read-ahead, and deleting objects.
//!
//! It never owns garbage: storage queues what an overwrite, a delete or an abandoned write
//! leaves behind (`leofs_shard::objects`), and a read's lease keeps the chunks it streams until
//! it ends. It never buffers a whole object: memory per request is bounded by
//! ~2 × `chunk_size_bytes` on PUT and `READ_AHEAD_CHUNKS` chunks on GET.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream};
use leofs_manager::{CatalogWriter, Manager};
use leofs_shard::{ChunkLease, Hlc, PutValue, Shard, Summary, WriteCondition, WriteRegistration};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;

use crate::GatewayConfig;
use crate::disk_cache::DiskCache;
use crate::error::GatewayError;
use crate::layout::{
    BodyLayout, BucketId, ChecksumKind, ChunkRun, NS_VERSION, ObjectMeta, StoredChecksum,
    TAG_CHUNK, VersionId, VersionRef, Versioning, chunk_key, is_delete_marker, object_key,
    plan_reads,
};
use crate::md5::Md5;
use crate::sse::BodyCipher;
use crate::storage::{RECORD_BODY_BYTES_MAX, Storage, slice_of};

/// How often a large write whose body is still arriving follows the ring with its
/// registration ([`WriteRegistration::follow_ring`]), besides after every chunk.
const REGISTRATION_FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Chunks fetched ahead of the one being sent on a GET.
pub const READ_AHEAD_CHUNKS: usize = 2;
/// Times a read re-reads a manifest whose chunks went missing under it (it was overwritten or
/// deleted between reading the manifest and leasing the chunks).
const LEASE_ATTEMPTS_MAX: usize = 5;

/// What every request handler on a core needs: the core's storage handle, the manager and the
/// config.
#[derive(Clone)]
pub struct Ctx {
    /// The core's storage handle (`!Send`; lives on this core).
    pub storage: Storage,
    /// Users, keys and buckets: the lock-free snapshot is read here.
    pub manager: Arc<Manager>,
    /// Catalog changes (bucket create, delete, ACL), made on the manager's own thread.
    pub catalog: CatalogWriter,
    /// Gateway settings.
    pub config: Arc<crate::GatewayConfig>,
}

/// A stored object: its manifest, timestamp and (for inline objects) body.
pub struct StoredObject {
    /// The decoded manifest.
    pub meta: ObjectMeta,
    /// Timestamp of the object record (Last-Modified).
    pub hlc: Hlc,
    /// The inline body (empty for chunked objects or when read with `head`).
    pub inline: Bytes,
    /// For a chunked object read with [`Ctx::get_object`]: the lease that keeps its chunks
    /// until the read (and every body stream opened from it) ends.
    pub lease: Option<Rc<ChunkLease>>,
    /// For a chunked object read with [`Ctx::get_object`] whose every chunk the core's cache
    /// held: their bodies by chunk key (read from here, with no lease and no storage read).
    pub cached_chunks: Option<Rc<HashMap<Bytes, Bytes>>>,
    /// In a bucket that has had versioning: the stamp of the attribute record whose tags and
    /// ACL are the version's now, in place of those it was written with (None: its own).
    pub attributes: Option<Hlc>,
}

/// What identifies an object as read, for a change that must apply to that very state: its
/// record's stamp and, in a bucket that has had versioning, its attribute record's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordStamps {
    /// The object (version) record's stamp.
    pub record: Hlc,
    /// Its attribute record's stamp (None: it has none).
    pub attributes: Option<Hlc>,
}

impl StoredObject {
    /// The stamps that identify it as read.
    pub fn stamps(&self) -> RecordStamps {
        RecordStamps {
            record: self.hlc,
            attributes: self.attributes,
        }
    }
}

/// One version of an object, as [`Ctx::read_version`] finds it.
pub enum VersionRead {
    /// An object: its record (boxed: it is large beside a marker) and which version it is.
    Object(Box<StoredObject>, VersionRef),
    /// A delete marker.
    Marker {
        /// Which version the marker is.
        version: VersionRef,
        /// Its timestamp (Last-Modified).
        hlc: Hlc,
    },
}

impl VersionRead {
    /// The object, unless this is a delete marker (which reads as no object).
    pub fn into_object(self) -> Option<StoredObject> {
        match self {
            VersionRead::Object(obj, _) => Some(*obj),
            VersionRead::Marker { .. } => None,
        }
    }
}

/// A body written by [`write_body`].
pub struct Written {
    /// Bytes written.
    pub size_bytes: u64,
    /// MD5 of the body.
    pub md5: [u8; 16],
    /// Checksums computed for the requested kinds.
    pub checksums: Vec<StoredChecksum>,
    /// Inline body (`Some`) or the chunked run written.
    pub inline: Option<Bytes>,
    /// The chunked run written (`None` for inline bodies).
    pub run: Option<ChunkRun>,
    /// The registration of the run's version: hand it to the commit that references the
    /// run; dropped instead, storage queues the chunks as garbage.
    pub registration: Option<WriteRegistration>,
}

impl Written {
    /// Replaces the body's MD5 (and its run's) with the keyed one of an SSE-C body
    /// ([`BodyCipher::etag_md5`]), once the plaintext's has been checked.
    pub fn key_md5(&mut self, cipher: &BodyCipher) {
        self.md5 = cipher.etag_md5(&self.md5);
        if let Some(run) = &mut self.run {
            run.md5 = self.md5;
        }
    }
}

/// This core's disk cache, if the node has one (a core whose directory cannot be opened goes
/// without, and says so).
fn open_disk_cache(shard: &Shard, config: &GatewayConfig) -> Option<DiskCache> {
    let disk = config.disk_cache.as_ref()?;
    let dir = disk.dir.join(format!("core-{}", shard.core_id()));
    match DiskCache::open(dir.clone(), disk.bytes_per_core, disk.writer.clone()) {
        Ok(cache) => Some(cache),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "disk cache unavailable on this core");
            None
        }
    }
}

impl Ctx {
    /// Builds the per-core context.
    pub fn new(
        shard: Shard,
        manager: Arc<Manager>,
        catalog: CatalogWriter,
        config: Arc<GatewayConfig>,
    ) -> Self {
        Self {
            storage: Storage::with_cache(
                shard.clone(),
                config.object_cache_bytes_per_core,
                config.object_cache_r1_staleness,
                open_disk_cache(&shard, &config),
            ),
            manager,
            catalog,
            config,
        }
    }

    /// A context for a core's background work (the lifecycle worker): no object cache.
    pub fn without_cache(
        shard: Shard,
        manager: Arc<Manager>,
        catalog: CatalogWriter,
        config: Arc<GatewayConfig>,
    ) -> Self {
        Self {
            storage: Storage::new(shard),
            manager,
            catalog,
            config,
        }
    }

    /// Reads an object record with its inline body; for a chunked object, also leases its
    /// chunks (checking they exist) so that an overwrite or a delete that commits while the
    /// body streams does not collect them. A chunk found missing because the object changed
    /// meanwhile means reading it again; missing under an unchanged manifest, it is an error.
    pub async fn get_object(
        &self,
        bucket: &BucketId,
        key: &str,
    ) -> Result<Option<StoredObject>, GatewayError> {
        if bucket.versioning() != Versioning::Off {
            return Ok(self
                .read_version(bucket, key, None, false)
                .await?
                .and_then(VersionRead::into_object));
        }
        for _ in 0..LEASE_ATTEMPTS_MAX {
            let Some(mut obj) = self.read_object_record(bucket, key).await? else {
                return Ok(None);
            };
            let versions = obj.meta.versions();
            if versions.is_empty() {
                return Ok(Some(obj));
            }
            // The manifest is the newest (the cache revalidated it, or it was just read), so
            // chunks of its versions held in the cache are its bytes.
            if let Some(held) = self.storage.cached_chunks(bucket, key, &versions) {
                obj.cached_chunks = Some(Rc::new(held));
                return Ok(Some(obj));
            }
            match self.storage.lease_chunks(bucket, key, &versions).await {
                // Still the current manifest once the lease is held: whatever replaces it from
                // now on is collected only after the lease ends. (A version replaced and
                // collected before the lease would stream missing chunks.)
                Ok(lease) if self.is_current(bucket, key, &obj).await? => {
                    obj.lease = Some(Rc::new(lease));
                    return Ok(Some(obj));
                }
                // The manifest is no longer the newest (held unconfirmed in the cache, it may
                // be older still): read it again from the replicas.
                Ok(_) => self.storage.forget(bucket, key),
                Err(e) => {
                    let Some(index) = e.missing_chunk() else {
                        return Err(e.into());
                    };
                    self.storage.forget(bucket, key);
                    if self.is_current(bucket, key, &obj).await? {
                        return Err(GatewayError::MissingChunk(format!(
                            "chunk {index} of {}/{key}",
                            bucket.as_str()
                        )));
                    }
                }
            }
        }
        Err(GatewayError::s3(
            s3s::S3ErrorCode::SlowDown,
            "The object changed under every read attempt; please retry.",
        ))
    }

    /// Whether `obj` is still the object's newest record (an index lookup on its core).
    async fn is_current(
        &self,
        bucket: &BucketId,
        key: &str,
        obj: &StoredObject,
    ) -> Result<bool, GatewayError> {
        let now = self.storage.lookup_object(bucket, key).await?;
        Ok(now.is_some_and(|n| !n.tombstone && n.hlc == obj.hlc))
    }

    async fn read_object_record(
        &self,
        bucket: &BucketId,
        key: &str,
    ) -> Result<Option<StoredObject>, GatewayError> {
        self.manager
            .with_snapshot(|state| self.storage.apply_cache_purges(state));
        let Some(v) = self.storage.get_object_record(bucket, key).await? else {
            return Ok(None);
        };
        Ok(Some(StoredObject {
            meta: ObjectMeta::decode(&v.meta)?,
            hlc: v.hlc,
            inline: v.body,
            lease: None,
            cached_chunks: None,
            attributes: None,
        }))
    }

    /// Reads version `version` of an object (None: its latest version) in a versioned bucket,
    /// or by id in any bucket, with its body unless `head`. For a chunked version read with
    /// its body, its chunks are leased (as [`Ctx::get_object`] does). None: no such version
    /// (or, for the latest, no version at all).
    pub async fn read_version(
        &self,
        bucket: &BucketId,
        key: &str,
        version: Option<VersionRef>,
        head: bool,
    ) -> Result<Option<VersionRead>, GatewayError> {
        for _ in 0..LEASE_ATTEMPTS_MAX {
            // The record, which version it is, and its stamp when known before it is read.
            let (record, named, stamp) = match version {
                Some(VersionRef::Null) => {
                    (object_key(bucket.as_str(), key), VersionRef::Null, None)
                }
                Some(VersionRef::Stamped(hlc)) => (
                    crate::layout::version_key(bucket.as_str(), key, hlc),
                    VersionRef::Stamped(hlc),
                    Some(hlc),
                ),
                None => match self.storage.latest_version(bucket, key).await? {
                    None => return Ok(None),
                    Some(latest) if latest.key.first() == Some(&NS_VERSION) => (
                        latest.key,
                        VersionRef::Stamped(latest.hlc),
                        Some(latest.hlc),
                    ),
                    Some(latest) => (latest.key, VersionRef::Null, Some(latest.hlc)),
                },
            };
            // In a bucket that has had versioning, the version's attribute record is read
            // beside it (shard/VERSIONING.md §10a).
            let versioned = bucket.versioning() != Versioning::Off;
            let (found, attributes) = futures_util::future::join(
                self.storage
                    .get_version_record(bucket, key, record.clone(), head),
                self.read_attributes(bucket, key, stamp.filter(|_| versioned)),
            )
            .await;
            let Some(value) = found? else {
                if version.is_none() {
                    // The latest version was deleted for good meanwhile: find the next one.
                    continue;
                }
                return Ok(None);
            };
            if is_delete_marker(value.summary.tag) {
                return Ok(Some(VersionRead::Marker {
                    version: named,
                    hlc: value.hlc,
                }));
            }
            let mut obj = StoredObject {
                meta: ObjectMeta::decode(&value.meta)?,
                hlc: value.hlc,
                inline: value.body,
                lease: None,
                cached_chunks: None,
                attributes: None,
            };
            if versioned {
                // A null version replaced since its stamp was learnt: its own attributes.
                let attributes = if stamp == Some(obj.hlc) {
                    attributes?
                } else {
                    self.read_attributes(bucket, key, Some(obj.hlc)).await?
                };
                if let Some((hlc, attributes)) = attributes {
                    obj.meta.headers.tags = attributes.tags;
                    obj.meta.headers.acl = attributes.acl;
                    obj.attributes = Some(hlc);
                }
            }
            let versions = obj.meta.versions();
            if head || versions.is_empty() {
                return Ok(Some(VersionRead::Object(Box::new(obj), named)));
            }
            let current = |obj: &StoredObject| {
                let record = record.clone();
                let hlc = obj.hlc;
                async move {
                    let now = self
                        .storage
                        .lookup_version_record(bucket, key, record)
                        .await?;
                    Ok::<_, GatewayError>(now.is_some_and(|n| !n.tombstone && n.hlc == hlc))
                }
            };
            match self.storage.lease_chunks(bucket, key, &versions).await {
                Ok(lease) if current(&obj).await? => {
                    obj.lease = Some(Rc::new(lease));
                    return Ok(Some(VersionRead::Object(Box::new(obj), named)));
                }
                Ok(_) => {}
                Err(e) => {
                    let Some(index) = e.missing_chunk() else {
                        return Err(e.into());
                    };
                    if current(&obj).await? {
                        return Err(GatewayError::MissingChunk(format!(
                            "chunk {index} of {}/{key} version {}",
                            bucket.as_str(),
                            named.id()
                        )));
                    }
                }
            }
        }
        Err(GatewayError::s3(
            s3s::S3ErrorCode::SlowDown,
            "The object changed under every read attempt; please retry.",
        ))
    }

    /// The attribute record of the version of an object stamped `stamp` (its stamp and what it
    /// holds), if it has one (shard/VERSIONING.md §10a); None without a stamp.
    async fn read_attributes(
        &self,
        bucket: &BucketId,
        key: &str,
        stamp: Option<Hlc>,
    ) -> Result<Option<(Hlc, crate::layout::VersionAttributes)>, GatewayError> {
        let Some(stamp) = stamp else {
            return Ok(None);
        };
        let record = crate::layout::attributes_key(bucket.as_str(), key, stamp);
        let Some(found) = self
            .storage
            .get_version_record(bucket, key, record, true)
            .await?
        else {
            return Ok(None);
        };
        let attributes = crate::layout::VersionAttributes::decode(&found.meta)?;
        Ok(Some((found.hlc, attributes)))
    }

    /// Stores the tags and ACL of `version` of an object (read as `obj`, whose attributes
    /// they replace) in its attribute record, while the version is live and its attribute
    /// record is still the one `obj` was read with. False when either changed meanwhile
    /// (nothing is written): the caller reads it again.
    pub async fn set_version_attributes(
        &self,
        bucket: &BucketId,
        key: &str,
        version: VersionRef,
        obj: &StoredObject,
        attributes: &crate::layout::VersionAttributes,
    ) -> Result<bool, GatewayError> {
        let value = attributes.to_record()?;
        // A version's stamp is its record's HLC (a version record's too).
        let null_version = version == VersionRef::Null;
        match self
            .storage
            .set_attributes(bucket, key, null_version, obj.hlc, value, obj.attributes)
            .await
            .map_err(GatewayError::from)
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_precondition_failed() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads an object record's manifest without its body.
    pub async fn head_object(
        &self,
        bucket: &BucketId,
        key: &str,
    ) -> Result<Option<StoredObject>, GatewayError> {
        if bucket.versioning() != Versioning::Off {
            return Ok(self
                .read_version(bucket, key, None, true)
                .await?
                .and_then(VersionRead::into_object));
        }
        let Some(h) = self.storage.head_object_record(bucket, key).await? else {
            return Ok(None);
        };
        Ok(Some(StoredObject {
            meta: ObjectMeta::decode(&h.meta)?,
            hlc: h.hlc,
            inline: Bytes::new(),
            lease: None,
            cached_chunks: None,
            attributes: None,
        }))
    }

    /// Commits the object record (the commit point): storage checks `condition` there,
    /// atomically with the write, and queues the chunks of the version it replaces as garbage.
    /// `registration` is the written run's (it ends with the commit). Returns the record's
    /// timestamp.
    pub async fn commit_object(
        &self,
        bucket: &BucketId,
        key: &str,
        meta: &ObjectMeta,
        inline: Bytes,
        condition: WriteCondition,
        registration: Option<WriteRegistration>,
    ) -> Result<Hlc, GatewayError> {
        let value = PutValue {
            meta: meta.encode()?,
            body: inline,
            summary: meta.summary(),
            hlc: None,
        };
        Ok(self
            .storage
            .commit_object(bucket, key, value, condition, registration)
            .await?)
    }

    /// Deletes an object; storage queues its chunks as garbage. False when there was no object.
    pub async fn delete_object(&self, bucket: &BucketId, key: &str) -> Result<bool, GatewayError> {
        Ok(self.storage.delete_object(bucket, key).await?)
    }

    /// Streams `body` into storage. With `allow_inline`, a body of at most one chunk is returned
    /// inline (the caller stores it in the object record); otherwise it is cut into chunk records
    /// under a fresh version registered with storage, the next chunk being read while the
    /// previous one is written. On error the registration is dropped: storage queues the chunks
    /// already written as garbage.
    pub async fn write_body<S>(
        &self,
        bucket: &BucketId,
        key: &str,
        body: S,
        allow_inline: bool,
        checksum_kinds: &[ChecksumKind],
        cipher: Option<&BodyCipher>,
    ) -> Result<Written, GatewayError>
    where
        S: Stream<Item = Result<Bytes, GatewayError>> + Unpin,
    {
        let chunk_size = self.config.chunk_size_bytes.clamp(1, RECORD_BODY_BYTES_MAX);
        let mut g = Gather::new(body, checksum_kinds);
        g.fill(chunk_size + 1).await?;
        if allow_inline && g.ended && g.pending_len <= chunk_size {
            let len = g.pending_len;
            let inline = encrypted(g.take(len), cipher, None, 0);
            let (md5, checksums, size_bytes) = g.finish();
            return Ok(Written {
                size_bytes,
                md5,
                checksums,
                inline: Some(inline),
                run: None,
                registration: None,
            });
        }
        let mut registration = self.storage.begin_write(bucket, key).await?;
        self.write_chunks(bucket, key, &mut registration, &mut g, chunk_size, cipher)
            .await?;
        let (md5, checksums, size_bytes) = g.finish();
        let run = ChunkRun {
            version: registration.version(),
            size_bytes,
            chunk_size_bytes: chunk_size,
            md5,
        };
        Ok(Written {
            size_bytes,
            md5,
            checksums,
            inline: None,
            run: Some(run),
            registration: Some(registration),
        })
    }

    async fn write_chunks<S>(
        &self,
        bucket: &BucketId,
        key: &str,
        registration: &mut WriteRegistration,
        g: &mut Gather<S>,
        chunk_size: u64,
        cipher: Option<&BodyCipher>,
    ) -> Result<(), GatewayError>
    where
        S: Stream<Item = Result<Bytes, GatewayError>> + Unpin,
    {
        let version = registration.version();
        let mut index = 0u32;
        while g.pending_len > 0 {
            let chunk = encrypted(
                g.take(g.pending_len.min(chunk_size)),
                cipher,
                Some(&version),
                u64::from(index) * chunk_size,
            );
            let ckey = chunk_key(bucket, key, &version, index);
            // Counted before it is written: if the write is abandoned, a chunk that landed
            // anyway is collected with the others (deleting one that did not is a no-op).
            registration.chunk_written();
            let summary = Summary {
                size: chunk.len() as u64,
                digest: [0; 16],
                tag: TAG_CHUNK,
            };
            let value = PutValue {
                meta: Bytes::new(),
                body: chunk,
                summary,
                hlc: None,
            };
            let (put, filled) = futures_util::future::join(
                self.storage.for_bucket(bucket).put_record(ckey, value),
                g.fill_following(chunk_size, registration),
            )
            .await;
            put?;
            filled?;
            registration.follow_ring().await?;
            // A chunk index names a chunk and, encrypted, its place in the key stream: never
            // wrapped.
            index = index.checked_add(1).ok_or_else(|| {
                GatewayError::s3(
                    s3s::S3ErrorCode::EntityTooLarge,
                    "The body has more chunks than one object can hold at this chunk size.",
                )
            })?;
        }
        Ok(())
    }

    /// Streams `range` of a chunked body: chunk after chunk, `READ_AHEAD_CHUNKS` in flight;
    /// the chunks in `cached` are taken from there.
    pub fn read_chunks(
        &self,
        bucket: &BucketId,
        key: &str,
        runs: Rc<[ChunkRun]>,
        range: Range<u64>,
        cached: Option<Rc<HashMap<Bytes, Bytes>>>,
        cipher: Option<Rc<BodyCipher>>,
    ) -> impl Stream<Item = Result<Bytes, GatewayError>> + 'static {
        let storage = self.storage.for_bucket(bucket);
        let bucket = Rc::new(bucket.clone());
        let key: Rc<str> = Rc::from(key);
        let plan = plan_reads(runs.clone(), range);
        stream::iter(plan)
            .map(move |piece| {
                let storage = storage.clone();
                let run = &runs[piece.run];
                let ckey = chunk_key(&bucket, &key, &run.version, piece.chunk);
                let pinned = cached.as_ref().and_then(|c| c.get(&ckey).cloned());
                let decrypt = cipher.clone().map(|c| {
                    let offset = u64::from(piece.chunk) * run.chunk_size_bytes + piece.range.start;
                    (c, run.version, offset)
                });
                async move {
                    let want = piece.range.end - piece.range.start;
                    let body = match pinned {
                        Some(body) => {
                            storage.count_pinned_hit();
                            slice_of(&body, &piece.range)
                        }
                        None => {
                            storage
                                .get_chunk(ckey.clone(), piece.range.clone(), piece.chunk_len)
                                .await?
                        }
                    };
                    match body {
                        Some(body) if body.len() as u64 == want => Ok(match decrypt {
                            Some((c, version, offset)) => {
                                encrypted(body, Some(&c), Some(&version), offset)
                            }
                            None => body,
                        }),
                        _ => Err(GatewayError::MissingChunk(
                            String::from_utf8_lossy(&ckey[1..]).into_owned(),
                        )),
                    }
                }
            })
            .buffered(READ_AHEAD_CHUNKS)
    }

    /// Streams `range` of a stored object, whatever its layout, with its first piece already
    /// read: a missing or corrupt first chunk is an error here, before any status or byte is
    /// sent (later chunks are verified as they are read; a failure there cuts the body short).
    pub async fn open_body(
        &self,
        bucket: &BucketId,
        key: &str,
        obj: &StoredObject,
        range: Range<u64>,
        cipher: Option<Rc<BodyCipher>>,
    ) -> Result<
        futures_util::stream::LocalBoxStream<'static, Result<Bytes, GatewayError>>,
        GatewayError,
    > {
        let mut body = self.read_object(bucket, key, obj, range, cipher);
        let first = match body.next().await {
            None => return Ok(stream::empty().boxed_local()),
            Some(Err(e)) => return Err(e),
            Some(Ok(first)) => first,
        };
        // The stream holds the object's chunk lease until it ends or is dropped.
        let lease = obj.lease.clone();
        Ok(stream::once(async move { Ok(first) })
            .chain(body)
            .map(move |piece| {
                let _held = &lease;
                piece
            })
            .boxed_local())
    }

    /// Streams `range` of a stored object, whatever its layout (lazily: nothing is read yet).
    fn read_object(
        &self,
        bucket: &BucketId,
        key: &str,
        obj: &StoredObject,
        range: Range<u64>,
        cipher: Option<Rc<BodyCipher>>,
    ) -> futures_util::stream::LocalBoxStream<'static, Result<Bytes, GatewayError>> {
        match &obj.meta.layout {
            BodyLayout::Inline => {
                let len = obj.inline.len() as u64;
                let start = range.start.min(len);
                let body = obj
                    .inline
                    .slice(start as usize..range.end.min(len) as usize);
                let body = encrypted(body, cipher.as_deref(), None, start);
                stream::once(async move { Ok(body) }).boxed_local()
            }
            BodyLayout::Chunked(runs) => self
                .read_chunks(
                    bucket,
                    key,
                    Rc::from(runs.as_slice()),
                    range,
                    obj.cached_chunks.clone(),
                    cipher,
                )
                .boxed_local(),
        }
    }
}

/// `data` run through `cipher`'s key stream at `offset` of run `run` (None: of an inline body);
/// `data` itself without a cipher.
fn encrypted(
    data: Bytes,
    cipher: Option<&BodyCipher>,
    run: Option<&VersionId>,
    offset: u64,
) -> Bytes {
    match cipher {
        None => data,
        Some(c) => {
            let mut out = data.to_vec();
            c.apply(run, offset, &mut out);
            Bytes::from(out)
        }
    }
}

/// Collects body pieces into chunks while hashing them.
struct Gather<S> {
    body: S,
    pending: VecDeque<Bytes>,
    pending_len: u64,
    ended: bool,
    total: u64,
    md5: Md5,
    sums: ChecksumHasher,
}

impl<S> Gather<S>
where
    S: Stream<Item = Result<Bytes, GatewayError>> + Unpin,
{
    fn new(body: S, kinds: &[ChecksumKind]) -> Self {
        let mut sums = ChecksumHasher::default();
        for kind in kinds {
            match kind {
                ChecksumKind::Crc32 => sums.crc32 = Some(s3s::crypto::Crc32::new()),
                ChecksumKind::Crc32c => sums.crc32c = Some(s3s::crypto::Crc32c::new()),
                ChecksumKind::Crc64Nvme => sums.crc64nvme = Some(s3s::crypto::Crc64Nvme::new()),
                ChecksumKind::Sha1 => sums.sha1 = Some(s3s::crypto::Sha1::new()),
                ChecksumKind::Sha256 => sums.sha256 = Some(s3s::crypto::Sha256::new()),
            }
        }
        Self {
            body,
            pending: VecDeque::new(),
            pending_len: 0,
            ended: false,
            total: 0,
            md5: Md5::new(),
            sums,
        }
    }

    /// Reads pieces until `want` bytes are pending or the body ends.
    async fn fill(&mut self, want: u64) -> Result<(), GatewayError> {
        while !self.ended && self.pending_len < want {
            match self.body.next().await {
                Some(Ok(piece)) => {
                    if piece.is_empty() {
                        continue;
                    }
                    self.md5.update(&piece);
                    self.sums.update(&piece);
                    self.total += piece.len() as u64;
                    self.pending_len += piece.len() as u64;
                    self.pending.push_back(piece);
                }
                Some(Err(e)) => return Err(e),
                None => self.ended = true,
            }
        }
        Ok(())
    }

    /// [`Gather::fill`], and every [`REGISTRATION_FOLLOW_INTERVAL`] meanwhile (a slow client's
    /// chunk can take long) the write's registration follows the ring: after a rebalance
    /// that moved the object's partition, its new replicas learn of the write well before
    /// the sweeper there, holding off for the chunk grace, would take its chunks as orphans.
    async fn fill_following(
        &mut self,
        want: u64,
        registration: &mut WriteRegistration,
    ) -> Result<(), GatewayError> {
        loop {
            let deadline = monoio::time::sleep(REGISTRATION_FOLLOW_INTERVAL);
            match futures_util::future::select(
                std::pin::pin!(self.fill(want)),
                std::pin::pin!(deadline),
            )
            .await
            {
                futures_util::future::Either::Left((filled, _)) => return filled,
                futures_util::future::Either::Right(_) => registration.follow_ring().await?,
            }
        }
    }

    /// Takes `n` pending bytes (n ≤ pending_len), without copying when one piece suffices.
    fn take(&mut self, n: u64) -> Bytes {
        let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
        self.pending_len -= n;
        if let Some(front) = self.pending.front_mut()
            && front.len() >= n_usize
        {
            let out = front.split_to(n_usize);
            if front.is_empty() {
                self.pending.pop_front();
            }
            return out;
        }
        let mut out = BytesMut::with_capacity(n_usize);
        while out.len() < n_usize {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let need = n_usize - out.len();
            if front.len() <= need {
                out.extend_from_slice(front);
                self.pending.pop_front();
            } else {
                out.extend_from_slice(&front.split_to(need));
            }
        }
        out.freeze()
    }

    fn finish(self) -> ([u8; 16], Vec<StoredChecksum>, u64) {
        let md5 = self.md5.finalize();
        let c = self.sums.finalize();
        let mut checksums = Vec::new();
        for (kind, value) in [
            (ChecksumKind::Crc32, c.checksum_crc32),
            (ChecksumKind::Crc32c, c.checksum_crc32c),
            (ChecksumKind::Crc64Nvme, c.checksum_crc64nvme),
            (ChecksumKind::Sha1, c.checksum_sha1),
            (ChecksumKind::Sha256, c.checksum_sha256),
        ] {
            if let Some(value) = value {
                checksums.push(StoredChecksum { kind, value });
            }
        }
        (md5, checksums, self.total)
    }
}
