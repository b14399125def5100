//! Online compaction: sealed segments whose live fraction is below `compaction_live_ratio_min`
//! have their live records re-appended at the head (same HLC, new LSN; throttled to
//! `compaction_bytes_per_sec_max`, sleeping between groups so foreground work keeps flowing),
//! expired tombstones are dropped, a checkpoint is written (so recovery never needs the old
//! segment), and only then is each segment recycled: a new life in its header, state free.
//! Relocations may use the spare segment that foreground writes must leave.

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
use crate::writer::AppendReq;
use crate::{CompactionReport, EngineError, Hlc};

/// Bytes of relocations sent before waiting for them (one group commit's worth).
const RELOCATION_GROUP_BYTES: u64 = 1024 * 1024;
/// How often background compaction looks for work.
pub(crate) const COMPACTION_INTERVAL: Duration = Duration::from_secs(10);

/// Runs one pass over every sealed segment below the live threshold.
pub(crate) async fn compact_once(inner: &Rc<Inner>) -> Result<CompactionReport, EngineError> {
    let _guard = inner.compaction_lock.lock().await;
    let mut report = CompactionReport::default();
    let candidates = candidates(inner);
    let mut moved = Vec::new();
    let mut throttle = Throttle {
        start: Instant::now(),
        bytes: 0,
        rate: inner.config.compaction_bytes_per_sec_max.max(1),
    };
    for segment in candidates {
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

/// Sealed segments worth compacting, emptiest first.
fn candidates(inner: &Inner) -> Vec<u64> {
    let state = inner.state.borrow();
    let mut found: Vec<(f64, u64)> = state
        .log
        .sealed()
        .filter(|s| !state.has_unapplied_in(s.id))
        .map(|s| {
            let room = (s.records_end() - SEGMENT_HEADER_BYTES) as f64;
            (state.index.live_bytes(s.id as u32) as f64 / room, s.id)
        })
        .filter(|(ratio, _)| *ratio < inner.config.compaction_live_ratio_min)
        .collect();
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    found.into_iter().map(|(_, id)| id).collect()
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
    let grace_us = inner.config.tombstone_grace.as_micros() as u64;
    let mut group = Vec::new();
    let mut group_bytes = 0u64;
    while let Some(found) = scanner.next().await? {
        let h = found.header;
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
        if entry.tombstone
            && now_us().saturating_sub(entry.hlc.physical_us) >= grace_us
            && replay_skips(inner, entry.lsn)
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

/// Whether every checkpoint taken from now on covers `lsn`, so that replay after a crash never
/// re-applies the older puts a tombstone with that LSN hides. A write still unapplied with a
/// lower LSN (a long streamed put) holds the covered LSN and the replay start back; dropping
/// the tombstone then would let replay resurrect the put under it, so it is kept this pass.
fn replay_skips(inner: &Inner, lsn: u64) -> bool {
    inner
        .state
        .borrow()
        .unapplied
        .first_key_value()
        .is_none_or(|(&oldest, _)| oldest > lsn)
}

async fn wait_group(
    group: &mut Vec<oneshot::Receiver<Result<Hlc, EngineError>>>,
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

/// Background compaction: a pass every [`COMPACTION_INTERVAL`]; stops with the engine.
pub(crate) async fn run_periodic(weak: Weak<Inner>) {
    loop {
        monoio::time::sleep(COMPACTION_INTERVAL).await;
        let Some(inner) = weak.upgrade() else { return };
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
