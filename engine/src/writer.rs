//! Group commit: the ONE writer task of an engine, and the write head (rollover, reservations).
//!
//! Puts and deletes send their record; the writer takes everything pending (up to
//! `batch_bytes_max`; a larger record goes alone, a partition drop goes alone, and records
//! allowed to use the spare segment (relocations, tombstones, drops) never share a batch with
//! puts), encodes it into one aligned buffer starting at a block boundary, issues one write and
//! one fdatasync, then applies the batch to the index and acknowledges every waiter. Records
//! arriving meanwhile form the next batch. Batches are applied one after the other, so a
//! relocation encoded after a partition drop was applied finds its source gone and is skipped:
//! a dropped record is never re-appended. Large records reserve a region instead
//! ([`Request::Reserve`]) and ask for a shared fdatasync afterwards ([`Request::Sync`]). It
//! never acknowledges before the data is durable (unless the sync policy is `NoneUnsafe`), and
//! after a failed fdatasync it refuses every further write.

use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::Instant;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use monoio::fs::File;

use crate::aligned::align_up;
use crate::engine::{Counters, Inner};
use crate::index::Entry;
use crate::io::{io_err, sync_data, write_all_at};
use crate::record::{HEADER_BYTES, Kind, RecordHeader, record_len, seal_record};
use crate::segment::{SEGMENT_HEADER_BYTES, SEGMENT_MIRROR_BYTES, SegState, write_segment_header};
use crate::segment_pool::SPARE_SEGMENTS;
use crate::{EngineError, Hlc, PartitionId, Summary, SyncPolicy};

/// fdatasync tasks for caller-written records that may run beside the writer.
const SYNC_TASKS_MAX: usize = 4;

/// One record to append through group commit.
pub(crate) struct AppendReq {
    pub kind: Kind,
    pub partition: PartitionId,
    pub key: Box<[u8]>,
    pub meta: Bytes,
    pub body: Bytes,
    pub hlc: Hlc,
    pub summary: Summary,
    /// May take the spare segment foreground puts must leave: compaction relocations and
    /// tombstones and partition drops (deleting is how space is freed on a full disk). Batches
    /// never mix the two kinds.
    pub use_spare: bool,
    /// For a compaction relocation, the LSN of the record it copies: the relocation is written
    /// only if the key's index entry is still that record when its batch is encoded (the key was
    /// not overwritten, its partition not dropped), so it never brings back what a drop removed.
    pub relocates: Option<u64>,
    pub reply: oneshot::Sender<Result<Appended, EngineError>>,
}

impl AppendReq {
    fn len(&self) -> u64 {
        record_len(self.key.len(), self.meta.len(), self.body.len() as u64)
    }

    /// A partition drop is a batch of its own: an older binary, which cannot parse it,
    /// resynchronises at the next block and so skips nothing but the drop (FORMAT.md §4.1).
    fn alone(&self) -> bool {
        self.kind == Kind::PartitionDrop
    }

    /// A relocation whose source the index no longer points at: nothing to move any more.
    fn is_stale_relocation(&self, index: &crate::index::Index) -> bool {
        self.relocates.is_some_and(|source_lsn| {
            index.get(self.partition, &self.key).map(|e| e.lsn) != Some(source_lsn)
        })
    }
}

/// What the writer answers once an appended record is durable and applied.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Appended {
    /// The record's timestamp.
    pub hlc: Hlc,
    /// Index entries a partition drop removed (0 for other records).
    pub removed: u64,
}

/// A region of the head segment handed to a large write.
pub(crate) struct Reservation {
    pub segment: u64,
    pub offset: u64,
    pub lsn: u64,
    pub life_seq: u64,
    pub salt: u64,
    pub file: Rc<File>,
    pub path: PathBuf,
}

/// What the writer task is asked to do.
pub(crate) enum Request {
    /// Append a record (group commit).
    Append(AppendReq),
    /// Reserve `len` bytes (block aligned) for a record written by the caller.
    Reserve {
        len: u64,
        /// Checkpoint bytes of the index entry the record adds (0 when its key is present).
        new_entry_bytes: u64,
        use_spare: bool,
        reply: oneshot::Sender<Result<Reservation, EngineError>>,
    },
    /// fdatasync `segment` after every write completed before this request was sent.
    Sync {
        segment: u64,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// Seal `head` (once what was gathered before is committed), taking a free segment (the
    /// spare included) as the next head; answers whether it did (see [`seal_head`]).
    SealHead {
        head: u64,
        reply: oneshot::Sender<Result<bool, EngineError>>,
    },
}

#[derive(Default)]
struct Batch {
    appends: Vec<AppendReq>,
    bytes: u64,
    use_spare: bool,
    syncs: Vec<(u64, oneshot::Sender<Result<(), EngineError>>)>,
}

impl Batch {
    /// Whether an append joins this batch (the first always does, alone if large or a drop).
    fn fits(&self, req: &AppendReq, bytes_max: u64) -> bool {
        self.appends.is_empty()
            || (self.bytes + req.len() <= bytes_max
                && req.use_spare == self.use_spare
                && !req.alone()
                && !self.appends.first().is_some_and(AppendReq::alone))
    }

    fn add(&mut self, req: AppendReq) {
        self.use_spare = req.use_spare;
        self.bytes += req.len();
        self.appends.push(req);
    }
}

/// Copies an error for every waiter of a failed batch (io::Error is not Clone).
fn copy_err(e: &EngineError) -> EngineError {
    match e {
        EngineError::Io { op, path, source } => EngineError::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        EngineError::DiskFull { dir } => EngineError::DiskFull { dir: dir.clone() },
        EngineError::TooLarge { what, len, max } => EngineError::TooLarge {
            what,
            len: *len,
            max: *max,
        },
        EngineError::Corrupt { path, offset } => EngineError::Corrupt {
            path: path.clone(),
            offset: *offset,
        },
        EngineError::Format { path, detail } => EngineError::Format {
            path: path.clone(),
            detail: detail.clone(),
        },
        EngineError::Closed => EngineError::Closed,
        EngineError::Body(s) => EngineError::Body(s.clone()),
    }
}

/// Answers and removes the relocations whose source moved on (see [`AppendReq::relocates`]);
/// returns the rest and their bytes.
fn skip_stale_relocations(inner: &Inner, appends: Vec<AppendReq>) -> (Vec<AppendReq>, u64) {
    let state = inner.state.borrow();
    let mut kept = Vec::with_capacity(appends.len());
    let mut bytes = 0;
    for req in appends {
        if req.is_stale_relocation(&state.index) {
            let _ = req.reply.send(Ok(Appended {
                hlc: req.hlc,
                removed: 0,
            }));
        } else {
            bytes += req.len();
            kept.push(req);
        }
    }
    (kept, bytes)
}

/// Refuses the appends that would add index entries a checkpoint could no longer hold (the
/// reserve cannot grow for them: the disk is full, or its files cannot be extended), and keeps
/// the rest with their bytes. Appends that replace an entry (overwrites, deletes and
/// relocations of present keys) and partition drops add none and always pass; the writes that
/// free space (`use_spare`) may use the headroom foreground writes leave
/// ([`crate::engine::SPACE_FREEING_HEADROOM_BYTES`]).
fn refuse_entries_past_reserve(
    inner: &Inner,
    appends: Vec<AppendReq>,
    bytes: u64,
    use_spare: bool,
) -> (Vec<AppendReq>, u64) {
    let adds_entry = |state: &crate::engine::State, req: &AppendReq| {
        req.kind != Kind::PartitionDrop && state.index.get(req.partition, &req.key).is_none()
    };
    let added_bytes = {
        let state = inner.state.borrow();
        let every_one: u64 = appends
            .iter()
            .map(|r| crate::checkpoint::entry_bytes(r.key.len()))
            .sum();
        if inner.reserve.room() >= inner.checkpoint_room_needed(&state, every_one, use_spare) {
            return (appends, bytes);
        }
        appends
            .iter()
            .filter(|r| adds_entry(&state, r))
            .map(|r| crate::checkpoint::entry_bytes(r.key.len()))
            .sum::<u64>()
    };
    if added_bytes == 0 {
        return (appends, bytes);
    }
    let refusal = match inner.reserve_covers(added_bytes, use_spare) {
        Ok(()) => return (appends, bytes),
        Err(e) => e,
    };
    let state = inner.state.borrow();
    let mut kept = Vec::with_capacity(appends.len());
    let mut kept_bytes = 0;
    for req in appends {
        if adds_entry(&state, &req) {
            let _ = req.reply.send(Err(copy_err(&refusal)));
        } else {
            kept_bytes += req.len();
            kept.push(req);
        }
    }
    (kept, kept_bytes)
}

/// The writer task: runs until every handle is gone or the engine is closed.
pub(crate) async fn run(weak: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut carry: Option<AppendReq> = None;
    loop {
        let mut batch = Batch::default();
        let first = match carry.take() {
            Some(req) => Request::Append(req),
            None => match rx.next().await {
                Some(req) => req,
                None => return,
            },
        };
        let Some(inner) = weak.upgrade() else { return };
        let bytes_max = inner.config.batch_bytes_max as u64;
        let window_deadline = match inner.config.sync {
            SyncPolicy::BatchWindow(d) => Some(Instant::now() + d),
            _ => None,
        };
        let mut next = Some(first);
        let mut seal = None;
        loop {
            match next.take() {
                Some(Request::Append(req)) => {
                    if !batch.fits(&req, bytes_max) {
                        carry = Some(req);
                        break;
                    }
                    batch.add(req);
                }
                Some(Request::Reserve {
                    len,
                    new_entry_bytes,
                    use_spare,
                    reply,
                }) => {
                    let _ = reply.send(reserve(&inner, len, new_entry_bytes, use_spare).await);
                }
                Some(Request::Sync { segment, reply }) => batch.syncs.push((segment, reply)),
                Some(Request::SealHead { head, reply }) => {
                    // What was gathered goes first, into the head it was gathered for.
                    seal = Some((head, reply));
                    break;
                }
                None => {}
            }
            next = match rx.try_recv() {
                Ok(req) => Some(req),
                Err(mpsc::TryRecvError::Closed) => break,
                Err(mpsc::TryRecvError::Empty) => match window_deadline {
                    Some(deadline) if !batch.appends.is_empty() && batch.bytes < bytes_max => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match monoio::time::timeout(left, rx.next()).await {
                            Ok(Some(req)) => Some(req),
                            _ => break,
                        }
                    }
                    _ => break,
                },
            };
        }
        commit(&inner, batch).await;
        if let Some((head, reply)) = seal {
            let _ = reply.send(seal_head(&inner, head).await);
        }
    }
}

/// Writes, syncs, applies and acknowledges one batch.
async fn commit(inner: &Rc<Inner>, batch: Batch) {
    let Batch {
        appends,
        use_spare,
        syncs,
        ..
    } = batch;
    if let Some(reason) = inner.state.borrow().poisoned.clone() {
        tracing::debug!(%reason, "write refused: engine stopped writing after a failed fdatasync");
        for req in appends {
            let _ = req.reply.send(Err(EngineError::Closed));
        }
        for (_, reply) in syncs {
            let _ = reply.send(Err(EngineError::Closed));
        }
        return;
    }
    let mut synced_head = None;
    // No drop can be applied between this check and the batch's LSNs: drops are batches, and
    // this task applies batches one after the other.
    let (appends, bytes) = skip_stale_relocations(inner, appends);
    let (appends, bytes) = refuse_entries_past_reserve(inner, appends, bytes, use_spare);
    if !appends.is_empty() {
        match write_batch(inner, &appends, bytes, use_spare).await {
            Ok((segment, entries)) => {
                synced_head = Some(segment);
                let mut state = inner.state.borrow_mut();
                for (req, entry) in appends.into_iter().zip(entries) {
                    let removed = if req.kind == Kind::PartitionDrop {
                        inner.tombstones.borrow_mut().reset_floor(req.partition);
                        state.drop_partition(&inner.cache, req.partition, entry.lsn, segment)
                    } else {
                        state.apply(&inner.cache, req.partition, &req.key, entry);
                        0
                    };
                    let _ = req.reply.send(Ok(Appended {
                        hlc: req.hlc,
                        removed,
                    }));
                }
            }
            Err(e) => {
                for req in appends {
                    let _ = req.reply.send(Err(copy_err(&e)));
                }
            }
        }
    }
    if syncs.is_empty() {
        return;
    }
    // Syncs of caller-written records do not hold up the next batch: up to
    // SYNC_TASKS_MAX of them run beside the writer (each still starts after its writes completed).
    if inner.sync_tasks.get() < SYNC_TASKS_MAX {
        inner.sync_tasks.set(inner.sync_tasks.get() + 1);
        let inner = inner.clone();
        monoio::spawn(async move {
            finish_syncs(&inner, syncs, synced_head).await;
            inner.sync_tasks.set(inner.sync_tasks.get() - 1);
        });
    } else {
        finish_syncs(inner, syncs, synced_head).await;
    }
}

/// Answers sync requests: one fdatasync per segment named (none for the head just synced).
async fn finish_syncs(
    inner: &Inner,
    syncs: Vec<(u64, oneshot::Sender<Result<(), EngineError>>)>,
    synced_head: Option<u64>,
) {
    let mut segments: Vec<u64> = syncs.iter().map(|(s, _)| *s).collect();
    segments.sort_unstable();
    segments.dedup();
    let mut results = Vec::new();
    for segment in segments {
        let result = if Some(segment) == synced_head || inner.config.sync == SyncPolicy::NoneUnsafe
        {
            Ok(())
        } else {
            sync_segment(inner, segment).await
        };
        results.push((segment, result));
    }
    for (segment, reply) in syncs {
        let result = match results.iter().find(|(s, _)| *s == segment) {
            Some((_, Ok(()))) => Ok(()),
            Some((_, Err(e))) => Err(copy_err(e)),
            None => Err(EngineError::Closed),
        };
        let _ = reply.send(result);
    }
}

/// fdatasync of one segment; a failure poisons the engine (see module docs). Refused once the
/// engine is poisoned: after a failed fdatasync a later one can succeed without the writes the
/// failed one covered being durable, so it must never acknowledge them.
pub(crate) async fn sync_segment(inner: &Inner, segment: u64) -> Result<(), EngineError> {
    let (file, path) = {
        let state = inner.state.borrow();
        if state.poisoned.is_some() {
            return Err(EngineError::Closed);
        }
        match state.log.segments.get(&segment) {
            Some(s) => (s.file.clone(), s.path.clone()),
            None => return Err(EngineError::Closed),
        }
    };
    Counters::add(&inner.counters.syncs, 1);
    sync_data(&file, &path)
        .await
        .inspect_err(|e| poison(inner, e))?;
    refuse_if_poisoned(inner)
}

/// Err(Closed) if an fdatasync failed while ours ran: one that overlapped a failed fdatasync of
/// the same device does not prove the writes it covers durable.
fn refuse_if_poisoned(inner: &Inner) -> Result<(), EngineError> {
    match inner.state.borrow().poisoned {
        Some(_) => Err(EngineError::Closed),
        None => Ok(()),
    }
}

fn poison(inner: &Inner, e: &EngineError) {
    tracing::error!(error = %e, "fdatasync failed: refusing further writes until the engine is reopened");
    inner.state.borrow_mut().poisoned = Some(e.to_string());
}

/// Poisons the engine if `e` is a failed fdatasync/fsync of any log file (a segment header
/// rewrite, a segment being created): a failed flush may have dropped other completed but not
/// yet synced writes (the device cache is shared), which a later successful fdatasync would
/// then acknowledge.
pub(crate) fn poison_if_sync_failed(inner: &Inner, e: &EngineError) {
    if let EngineError::Io {
        op: "fdatasync" | "fsync",
        ..
    } = e
    {
        poison(inner, e);
    }
}

/// Positions, encodes, writes and syncs a batch; returns the segment and each record's entry.
async fn write_batch(
    inner: &Rc<Inner>,
    appends: &[AppendReq],
    bytes: u64,
    use_spare: bool,
) -> Result<(u64, Vec<Entry>), EngineError> {
    let region = align_up(bytes);
    if !use_spare {
        ensure_spare(inner).await?;
    }
    ensure_room(inner, region, use_spare).await?;
    let mut buf = inner.pool.get(region as usize);
    let (segment, offset, first_lsn, file, path, entries) = {
        let mut state = inner.state.borrow_mut();
        let head = state.log.head();
        let (segment, life_seq, salt, file, path) = (
            head.id,
            head.life_seq,
            head.salt,
            head.file.clone(),
            head.path.clone(),
        );
        let offset = state.log.head_offset;
        debug_assert!(
            offset.is_multiple_of(crate::aligned::BLOCK_BYTES as u64),
            "batches start on a block"
        );
        debug_assert!(
            offset + region <= head.records_end(),
            "ensure_room made room"
        );
        let first_lsn = state.next_lsn;
        let out = buf.spare_mut();
        let mut at = 0usize;
        let mut entries = Vec::with_capacity(appends.len());
        for (i, req) in appends.iter().enumerate() {
            let len = req.len() as usize;
            let header = RecordHeader {
                kind: req.kind,
                flags: 0,
                partition: req.partition,
                key_len: req.key.len() as u32,
                meta_len: req.meta.len() as u32,
                body_len: req.body.len() as u64,
                hlc: req.hlc,
                lsn: first_lsn + i as u64,
                life_seq,
                summary: req.summary,
                record_checksum: 0,
            };
            let rec = &mut out[at..at + len];
            header.write_fields(rec);
            let mut p = HEADER_BYTES;
            for part in [&req.key[..], &req.meta[..], &req.body[..]] {
                rec[p..p + part.len()].copy_from_slice(part);
                p += part.len();
            }
            rec[p..].fill(0);
            seal_record(salt, rec, req.key.len(), req.meta.len(), req.body.len());
            entries.push(Entry {
                segment: segment as u32,
                offset: (offset + at as u64) as u32,
                len: len as u32,
                tombstone: req.kind == Kind::Tombstone,
                hlc: req.hlc,
                lsn: header.lsn,
                summary: req.summary,
                body_len: req.body.len() as u64,
            });
            at += len;
        }
        out[at..region as usize].fill(0);
        buf.set_len(region as usize);
        state.next_lsn += appends.len() as u64;
        state.log.head_offset += region;
        state.unapplied.insert(first_lsn, (segment, offset));
        state.zero_wanted = true;
        passed_zeroed(&mut state, segment, offset + region);
        (segment, offset, first_lsn, file, path, entries)
    };
    crate::segment_pool::wait_for_zeroing(inner, segment, offset, offset + region).await;
    crate::segment_pool::kick(inner);
    let result = write_and_sync(inner, buf, &file, &path, offset, region).await;
    inner.state.borrow_mut().unapplied.remove(&first_lsn);
    result?;
    Counters::add(&inner.counters.batches_written, 1);
    Ok((segment, entries))
}

async fn write_and_sync(
    inner: &Inner,
    buf: crate::aligned::AlignedBuf,
    file: &File,
    path: &std::path::Path,
    offset: u64,
    region: u64,
) -> Result<(), EngineError> {
    let (result, mut buf) = write_all_at(file, buf, offset, path).await;
    if let Err(e) = result {
        // The region becomes a hole; best effort so that no part of the failed batch survives.
        buf.spare_mut()[..region as usize].fill(0);
        let (_, buf) = write_all_at(file, buf, offset, path).await;
        inner.pool.put(buf);
        return Err(e);
    }
    inner.pool.put(buf);
    if inner.config.sync != SyncPolicy::NoneUnsafe {
        Counters::add(&inner.counters.syncs, 1);
        if let Err(e) = sync_data(file, path).await {
            poison(inner, &e);
            return Err(e);
        }
        refuse_if_poisoned(inner)?;
    }
    Ok(())
}

/// Reserves a block-aligned region of `len` bytes in the head for a caller-written record.
async fn reserve(
    inner: &Rc<Inner>,
    len: u64,
    new_entry_bytes: u64,
    use_spare: bool,
) -> Result<Reservation, EngineError> {
    if let Some(reason) = inner.state.borrow().poisoned.clone() {
        tracing::debug!(%reason, "reservation refused");
        return Err(EngineError::Closed);
    }
    let region = align_up(len);
    if !use_spare {
        if new_entry_bytes > 0 {
            inner.reserve_covers(new_entry_bytes, use_spare)?;
        }
        ensure_spare(inner).await?;
    }
    ensure_room(inner, region, use_spare).await?;
    let reservation = reserve_region(inner, region);
    let end = reservation.offset + region;
    crate::segment_pool::wait_for_zeroing(inner, reservation.segment, reservation.offset, end)
        .await;
    Ok(reservation)
}

/// Takes `region` bytes at the head offset (the head has room) for a caller-written record.
fn reserve_region(inner: &Inner, region: u64) -> Reservation {
    let mut state = inner.state.borrow_mut();
    let head = state.log.head();
    let reservation = Reservation {
        segment: head.id,
        offset: state.log.head_offset,
        lsn: state.next_lsn,
        life_seq: head.life_seq,
        salt: head.salt,
        file: head.file.clone(),
        path: head.path.clone(),
    };
    state.next_lsn += 1;
    state.log.head_offset += region;
    state
        .unapplied
        .insert(reservation.lsn, (reservation.segment, reservation.offset));
    // Large records go straight into unwritten extents (their fdatasync's extent conversion
    // is small next to their data); zeroing ahead is for small batches.
    state.zero_wanted = false;
    passed_zeroed(&mut state, reservation.segment, reservation.offset + region);
    reservation
}

/// The writer's region ends at `end`: the zero-fill frontier moves past it, so the pre-writer
/// never zero-fills behind the head.
fn passed_zeroed(state: &mut crate::engine::State, segment: u64, end: u64) {
    if let Some(seg) = state.log.segments.get_mut(&segment) {
        seg.zeroed_until = seg.zeroed_until.max(end);
    }
}

/// Makes sure the head has `region` bytes left, rolling over to a free segment if not.
async fn ensure_room(inner: &Rc<Inner>, region: u64, use_spare: bool) -> Result<(), EngineError> {
    let (end, offset) = {
        let state = inner.state.borrow();
        (state.log.head().records_end(), state.log.head_offset)
    };
    if offset + region <= end {
        return Ok(());
    }
    let room_max = inner.config.segment_size_bytes - SEGMENT_HEADER_BYTES - SEGMENT_MIRROR_BYTES;
    if region > room_max {
        return Err(EngineError::TooLarge {
            what: "record (for the segment size)",
            len: region,
            max: room_max,
        });
    }
    roll_over(inner, use_spare).await
}

/// Seals `head` and makes a free segment (the spare included) the head; compaction asks for it
/// on a full disk ([`Request::SealHead`]): the head's dead records are out of its reach until
/// the head is sealed. Decided here, where reservations are made, and not done (false) when
/// the head is no longer `head`, holds no record, holds a write still unapplied (compaction
/// could not move it yet), or no segment is free (it never creates one).
async fn seal_head(inner: &Rc<Inner>, head: u64) -> Result<bool, EngineError> {
    {
        let state = inner.state.borrow();
        if state.log.head != head
            || state.log.head_offset == SEGMENT_HEADER_BYTES
            || state.has_unapplied_in(head)
            || state.log.free.is_empty()
        {
            return Ok(false);
        }
    }
    roll_over(inner, true).await?;
    Ok(true)
}

/// Makes a free segment the head; the old head is sealed where it stands.
async fn roll_over(inner: &Rc<Inner>, use_spare: bool) -> Result<(), EngineError> {
    let rollover = || -> Result<(), std::io::Error> {
        fail::fail_point!("engine::segment_rollover", |arg| Err(crate::io::injected(
            arg
        )));
        Ok(())
    };
    rollover().map_err(|e| io_err("segment rollover", &inner.log_dir, e))?;
    let next = take_free(inner, use_spare).await?;
    let (file, path, header) = {
        let mut state = inner.state.borrow_mut();
        let s = &state.log.segments[&next];
        let (file, path, size_bytes) = (s.file.clone(), s.path.clone(), s.size_bytes);
        let header = state.log.new_life(next, size_bytes, SegState::Active);
        (file, path, header)
    };
    let result = write_segment_header(&file, &path, &header, &inner.pool).await;
    let mut state = inner.state.borrow_mut();
    if let Err(e) = result {
        // The segment's header may be half written; it stays free and is rewritten on next use.
        state.log.free.insert(0, next);
        drop(state);
        poison_if_sync_failed(inner, &e);
        return Err(e);
    }
    if !state.log.segments.contains_key(&next) {
        return Err(EngineError::Closed);
    }
    state.log.set_header(&header);
    state.log.head = next;
    state.log.head_offset = SEGMENT_HEADER_BYTES;
    drop(state);
    crate::segment_pool::kick(inner);
    Ok(())
}

/// Foreground writes never use the spare segment, not even its room as the head: while it is
/// not free (deletes or compaction took it when the head filled up, or compaction sealed the
/// head early to reclaim its dead records), a foreground write first
/// creates a segment, and fails with [`EngineError::DiskFull`] when there is no room for one
/// (compaction is woken to make some). Compaction can then always finish what it starts.
async fn ensure_spare(inner: &Rc<Inner>) -> Result<(), EngineError> {
    while inner.state.borrow().log.free.len() < SPARE_SEGMENTS {
        if let Err(e) = crate::segment_pool::create_one(inner).await {
            if matches!(e, EngineError::DiskFull { .. }) {
                inner.wake_compaction();
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Takes a free segment: foreground writes must leave one spare for compaction, and first make
/// sure the checkpoint reserve covers the index as it can grow in the segment they take (the
/// segment may be a recycled one, so creating segments alone would not keep it up to date).
async fn take_free(inner: &Rc<Inner>, use_spare: bool) -> Result<u64, EngineError> {
    if !use_spare {
        let reserve_bytes = inner.reserve_bytes_needed(&inner.state.borrow());
        if let Err(e) = inner.reserve.ensure(reserve_bytes) {
            let e = crate::recovery::reserve_error(&inner.config, e);
            if matches!(e, EngineError::DiskFull { .. }) {
                inner.state.borrow_mut().disk_full = true;
                inner.wake_compaction();
            }
            return Err(e);
        }
    }
    loop {
        {
            let mut state = inner.state.borrow_mut();
            let spare_needed = if use_spare { 0 } else { SPARE_SEGMENTS };
            if state.log.free.len() > spare_needed {
                let id = state.log.free.remove(0);
                if state.log.free.len() < SPARE_SEGMENTS {
                    // The spare became the head: compaction should give a segment back soon.
                    drop(state);
                    inner.wake_compaction();
                }
                return Ok(id);
            }
        }
        if let Err(e) = crate::segment_pool::create_one(inner).await {
            if matches!(e, EngineError::DiskFull { .. }) {
                inner.wake_compaction();
            }
            return Err(e);
        }
    }
}
