//! Online compaction: sealed segments whose live fraction is below `compaction_live_ratio_min`
//! have their live records re-appended at the head (same HLC, new LSN; throttled to
//! `compaction_bytes_per_sec_max`, sleeping between groups so foreground work keeps flowing),
//! expired tombstones are dropped, a checkpoint is written (so recovery never needs the old
//! segment), and only then is each segment recycled: a new life in its header, state free.
//! Relocations may use the spare segment that foreground writes must leave. Partition-drop
//! records are never relocated; a segment holding one is recycled only once a checkpoint covers
//! the drop (FORMAT.md §7).
//!
//! On a full disk (creating a segment failed for lack of room) compaction also takes segments up
//! to [`PRESSURE_LIVE_RATIO_MAX`] live, fewest live bytes first, so that deleting frees nearly
//! all it deletes; it starts moving a segment only when the room left (the head's rest and the
//! free segments) holds its live bytes with a margin, so it never strands a half-moved segment.
//! When puts are being refused, no sealed segment qualifies, and the head holds more dead
//! records (deleted or overwritten since they were written there) than both a tenth of its
//! room and its rest, it has the writer seal the head into the spare first, then moves the old
//! head like any other segment.
//! A write that finds the disk full wakes it at once instead of waiting for the next interval.

use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::engine::{Counters, Inner};
use crate::index::Entry;
use crate::io::io_err;
use crate::record::{HEADER_BYTES, Kind};
use crate::scan::SegmentScanner;
use crate::segment::{SEGMENT_HEADER_BYTES, SegState, write_segment_header};
use crate::segment_pool::SPARE_SEGMENTS;
use crate::writer::{AppendReq, Appended};
use crate::{CompactionReport, EngineError, MAX_BODY_BYTES, MAX_KEY_BYTES, MAX_META_BYTES};

/// Bytes of relocations sent before waiting for them (one group commit's worth).
const RELOCATION_GROUP_BYTES: u64 = 1024 * 1024;
/// How often background compaction looks for work.
pub(crate) const COMPACTION_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest time between two passes woken by writes that found the disk full.
const COMPACTION_WAKE_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// On a full disk, segments up to this live fraction are compacted (each frees ≥ 10% of itself).
pub(crate) const PRESSURE_LIVE_RATIO_MAX: f64 = 0.9;
/// Relocations are appended in aligned batches of about 1 MiB (at most a block of padding each):
/// a 1/64 margin on the live bytes covers it.
const RELOCATION_ALIGNMENT_MARGIN_DIVISOR: u64 = 64;
/// Bytes of a record beyond its body, at most (header, longest key and metadata, padding).
const RECORD_OVERHEAD_MAX_BYTES: u64 = (112 + MAX_KEY_BYTES + MAX_META_BYTES + 8) as u64;

/// Runs one pass over every sealed segment below the live threshold.
pub(crate) async fn compact_once(inner: &Rc<Inner>) -> Result<CompactionReport, EngineError> {
    let report = compact_pass(inner).await;
    inner
        .counters
        .last_compaction_unix_us
        .set(crate::clock::wall_us());
    report
}

/// One pass of [`compact_once`].
async fn compact_pass(inner: &Rc<Inner>) -> Result<CompactionReport, EngineError> {
    let _guard = inner.compaction_lock.lock().await;
    let mut report = CompactionReport::default();
    if let Some(head) = head_to_seal(inner) {
        let (reply, sealed) = oneshot::channel();
        inner.send(crate::writer::Request::SealHead { head, reply })?;
        if sealed.await.unwrap_or(Err(EngineError::Closed))? {
            report.heads_sealed += 1;
        }
    }
    let candidates = candidates(inner);
    let mut moved = Vec::new();
    let mut throttle = Throttle {
        start: Instant::now(),
        bytes: 0,
        rate: inner.config.compaction_bytes_per_sec_max.max(1),
    };
    for segment in candidates {
        if !fits(inner, segment) {
            tracing::debug!(
                segment,
                "compaction: not enough room to move this segment's live records now"
            );
            continue;
        }
        move_live(inner, segment, &mut report, &mut throttle).await?;
        moved.push(segment);
        // Low on free segments (a full disk): make this one reusable before moving the next.
        if inner.state.borrow().log.free.len() <= SPARE_SEGMENTS {
            recycle_moved(inner, &mut moved, &mut report).await?;
        }
    }
    recycle_moved(inner, &mut moved, &mut report).await?;
    Ok(report)
}

/// Checkpoints (so recovery never needs the moved segments), then recycles them.
async fn recycle_moved(
    inner: &Rc<Inner>,
    moved: &mut Vec<u64>,
    report: &mut CompactionReport,
) -> Result<(), EngineError> {
    if moved.is_empty() {
        return Ok(());
    }
    crate::checkpoint_task::checkpoint_now(inner).await?;
    for segment in moved.drain(..) {
        if let Some(reclaimed) = recycle(inner, segment).await? {
            report.segments_compacted += 1;
            report.bytes_reclaimed += reclaimed;
            Counters::add(&inner.counters.segments_compacted, 1);
        }
    }
    Ok(())
}

/// Whether the disk is full: creating a segment failed for lack of room and few are free.
fn under_pressure(state: &crate::engine::State) -> bool {
    state.disk_full && state.log.free.len() <= crate::segment_pool::FREE_SEGMENTS_TARGET
}

/// Sealed segments worth compacting, fewest live bytes first: below the live threshold, or
/// below [`PRESSURE_LIVE_RATIO_MAX`] on a full disk.
fn candidates(inner: &Inner) -> Vec<u64> {
    candidates_of(inner, &inner.state.borrow())
}

/// [`candidates`] with the state borrowed.
fn candidates_of(inner: &Inner, state: &crate::engine::State) -> Vec<u64> {
    let ratio_max = if under_pressure(state) {
        PRESSURE_LIVE_RATIO_MAX.max(inner.config.compaction_live_ratio_min)
    } else {
        inner.config.compaction_live_ratio_min
    };
    let mut found: Vec<(u64, u64)> = state
        .log
        .sealed()
        .filter(|s| !state.has_unapplied_in(s.id) && state.checkpoints_cover(s.drop_lsn_max))
        .map(|s| (state.index.live_bytes(s.id as u32), s))
        .filter(|&(live, s)| {
            let room = (s.records_end() - SEGMENT_HEADER_BYTES) as f64;
            live == 0 || (live as f64 / room) < ratio_max
        })
        .map(|(live, s)| (live, s.id))
        .collect();
    found.sort_unstable();
    found.into_iter().map(|(_, id)| id).collect()
}

/// The head, when on a full disk it must be sealed for compaction to free anything: puts are
/// being refused (the head's rest did not take them, and there is no room for a segment), no
/// sealed segment is worth moving, and more than `1 - PRESSURE_LIVE_RATIO_MAX` of the head's
/// room, and more than its rest (which smaller puts may still use), is records deleted or
/// overwritten since they were written there (only sealed segments are compacted). The spare
/// becomes the head, the old head is moved into it and recycled as the new spare; puts wait
/// for that (507) as they would for any move on a full disk. The writer checks again when it
/// seals ([`crate::writer`]'s `seal_head`).
fn head_to_seal(inner: &Inner) -> Option<u64> {
    let state = inner.state.borrow();
    if !under_pressure(&state)
        || state.log.free.is_empty()
        || !inner.disk_full_log.full_now(Instant::now())
    {
        return None;
    }
    let head = state.log.head();
    let room = head.records_end() - SEGMENT_HEADER_BYTES;
    let dead = state
        .log
        .used_bytes(head)
        .saturating_sub(state.index.live_bytes(head.id as u32));
    let rest = head.records_end().saturating_sub(state.log.head_offset);
    let reachable = !state.has_unapplied_in(head.id) && state.checkpoints_cover(head.drop_lsn_max);
    (reachable
        && dead as f64 > (1.0 - PRESSURE_LIVE_RATIO_MAX) * room as f64
        && rest < dead
        && candidates_of(inner, &state).is_empty())
    .then_some(head.id)
}

/// Whether the live records of `segment` fit in the room left for relocations: all in the head's
/// rest, or in the free segments, less what rollovers between them can leave unused (a record
/// never crosses segments) and a margin for batch alignment.
fn fits(inner: &Inner, segment: u64) -> bool {
    let state = inner.state.borrow();
    let live = state.index.live_bytes(segment as u32);
    if live == 0 {
        return true;
    }
    let log = &state.log;
    let head_room = log.head().records_end().saturating_sub(log.head_offset);
    if live + live / RELOCATION_ALIGNMENT_MARGIN_DIVISOR <= head_room {
        return true;
    }
    let segment_room = inner.config.segment_size_bytes - 2 * SEGMENT_HEADER_BYTES;
    let free = log.free.len() as u64;
    let record_max = segment_room.min(MAX_BODY_BYTES + RECORD_OVERHEAD_MAX_BYTES);
    let unused_at_rollovers = free.saturating_sub(1) * record_max;
    live + live / RELOCATION_ALIGNMENT_MARGIN_DIVISOR + unused_at_rollovers <= free * segment_room
}

struct Throttle {
    start: Instant,
    bytes: u64,
    rate: u64,
}

impl Throttle {
    /// Sleeps until `bytes` moved so far fit the rate (always yields at least once).
    async fn pace(&mut self, bytes: u64) {
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let wait = due.saturating_sub(self.start.elapsed());
        monoio::time::sleep(wait.max(Duration::from_micros(1))).await;
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Re-appends every live record of `segment` and drops its expired tombstones.
async fn move_live(
    inner: &Rc<Inner>,
    segment: u64,
    report: &mut CompactionReport,
    throttle: &mut Throttle,
) -> Result<(), EngineError> {
    let fail = || -> Result<(), std::io::Error> {
        fail::fail_point!("engine::compaction_move", |arg| Err(crate::io::injected(
            arg
        )));
        Ok(())
    };
    fail().map_err(|e| {
        io_err(
            "compaction move",
            &crate::segment::segment_path(&inner.log_dir, segment),
            e,
        )
    })?;
    let mut scanner = {
        let state = inner.state.borrow();
        let Some(seg) = state.log.segments.get(&segment) else {
            return Ok(());
        };
        if state.index.live_bytes(segment as u32) == 0 {
            return Ok(());
        }
        SegmentScanner::new(seg, SEGMENT_HEADER_BYTES, 0)
    };
    let grace = inner.config.tombstone_grace;
    let mut group = Vec::new();
    let mut group_bytes = 0u64;
    while let Some(found) = scanner.next().await? {
        let h = found.header;
        if h.kind == Kind::PartitionDrop {
            // Never live: it goes with its segment, once a checkpoint covers it (see recycle).
            continue;
        }
        let rec = scanner.bytes(&found);
        let key = &rec[HEADER_BYTES..HEADER_BYTES + h.key_len as usize];
        let live: Option<Entry> = {
            let state = inner.state.borrow();
            state
                .index
                .get(h.partition, key)
                .filter(|e| {
                    e.segment as u64 == segment && e.offset as u64 == found.offset && e.lsn == h.lsn
                })
                .copied()
        };
        let Some(entry) = live else { continue };
        // Replay after a crash must never re-apply the older puts the tombstone hides: a write
        // still unapplied with a lower LSN (a long streamed put) holds every checkpoint's covered
        // LSN and replay start back, so the tombstone is then kept (relocated) this pass.
        if entry.tombstone
            && inner
                .tombstones
                .borrow()
                .drops(h.partition, entry.hlc, now_us(), grace)
            && inner.state.borrow().checkpoints_cover(entry.lsn)
        {
            if inner
                .state
                .borrow_mut()
                .index
                .remove_if(h.partition, key, &entry)
            {
                report.tombstones_dropped += 1;
            }
            continue;
        }
        let meta_at = HEADER_BYTES + h.key_len as usize;
        let body_at = meta_at + h.meta_len as usize;
        let (reply, rx) = oneshot::channel();
        let req = AppendReq {
            kind: h.kind,
            partition: h.partition,
            key: key.into(),
            meta: Bytes::copy_from_slice(&rec[meta_at..body_at]),
            body: Bytes::copy_from_slice(&rec[body_at..body_at + h.body_len as usize]),
            hlc: h.hlc,
            summary: h.summary,
            use_spare: true,
            relocates: Some(entry.lsn),
            reply,
        };
        debug_assert!(h.kind == Kind::Put || h.body_len == 0);
        inner.send(crate::writer::Request::Append(req))?;
        group.push(rx);
        group_bytes += h.len();
        report.bytes_moved += h.len();
        if group_bytes >= RELOCATION_GROUP_BYTES {
            wait_group(&mut group).await?;
            throttle.pace(group_bytes).await;
            group_bytes = 0;
        }
    }
    wait_group(&mut group).await?;
    throttle.pace(group_bytes).await;
    Ok(())
}

async fn wait_group(
    group: &mut Vec<oneshot::Receiver<Result<Appended, EngineError>>>,
) -> Result<(), EngineError> {
    let mut first_err = None;
    for rx in group.drain(..) {
        if let Err(e) = rx.await.unwrap_or(Err(EngineError::Closed)) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Recycles a segment nothing points into any more; returns the bytes reclaimed, or None if it
/// must be kept (a record could not be moved, e.g. because it is corrupt).
async fn recycle(inner: &Rc<Inner>, segment: u64) -> Result<Option<u64>, EngineError> {
    let (file, path, header, reclaimed) = {
        let mut state = inner.state.borrow_mut();
        if state.index.live_bytes(segment as u32) > 0 || state.has_unapplied_in(segment) {
            tracing::warn!(segment, "segment still referenced after compaction; kept");
            return Ok(None);
        }
        let Some(seg) = state.log.segments.get(&segment) else {
            return Ok(None);
        };
        if seg.drop_lsn_max > state.checkpoint_lsn {
            // Replay from the newest checkpoint may still apply records this drop removed.
            tracing::debug!(
                segment,
                "segment holds a partition drop no checkpoint covers yet; kept"
            );
            return Ok(None);
        }
        let reclaimed = state.log.used_bytes(seg);
        let (file, path, size_bytes) = (seg.file.clone(), seg.path.clone(), seg.size_bytes);
        let header = state.log.new_life(segment, size_bytes, SegState::Free);
        (file, path, header, reclaimed)
    };
    if let Err(e) = write_segment_header(&file, &path, &header, &inner.pool).await {
        crate::writer::poison_if_sync_failed(inner, &e);
        return Err(e);
    }
    let mut state = inner.state.borrow_mut();
    if state.log.segments.contains_key(&segment) {
        state.log.set_header(&header);
        state.log.free.push(segment);
    }
    Ok(Some(reclaimed))
}

/// Background compaction: a pass every [`COMPACTION_INTERVAL`], or sooner when a write found the
/// disk full (at most one such pass per [`COMPACTION_WAKE_INTERVAL_MIN`]); stops with the engine.
pub(crate) async fn run_periodic(weak: Weak<Inner>) {
    loop {
        let woken = {
            let Some(inner) = weak.upgrade() else { return };
            let (tx, rx) = oneshot::channel();
            inner.state.borrow_mut().compaction_wake = Some(tx);
            rx
        };
        let sleep = monoio::time::sleep(COMPACTION_INTERVAL);
        let was_woken = matches!(
            futures_util::future::select(std::pin::pin!(sleep), woken).await,
            futures_util::future::Either::Right((Ok(()), _))
        );
        if was_woken {
            monoio::time::sleep(COMPACTION_WAKE_INTERVAL_MIN).await;
        }
        let Some(inner) = weak.upgrade() else { return };
        // Paused by an operator: only a full disk (what wakes it) still compacts.
        if inner.counters.compaction_suspended.get() && !was_woken {
            continue;
        }
        {
            let state = inner.state.borrow();
            if state.closed {
                return;
            }
            if state.poisoned.is_some() {
                continue;
            }
        }
        if let Err(e) = compact_once(&inner).await {
            tracing::warn!(error = %e, "background compaction failed");
        }
    }
}
