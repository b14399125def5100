//! Free segments ahead of need: creating (fallocated) segments within `disk_bytes_max`, and the
//! background pre-writer that keeps [`FREE_SEGMENTS_TARGET`] of them so a rollover rarely waits
//! and, while group-commit batches are being written, zero-fills up to [`ZERO_AHEAD_BYTES`]
//! ahead of the write head (see FORMAT.md §1 and §3: an fdatasync after writes into unwritten
//! extents also commits their conversion, which makes small synced batches slow).
//! One free segment ([`SPARE_SEGMENTS`]) is reserved for compaction: foreground writes never
//! take it, so compaction can always make progress on a full disk.
//!
//! Zeroing never touches bytes the writer wrote or is writing: a piece is claimed
//! ([`ZeroClaim`]) in the same state borrow that checks it lies at or after the head offset
//! (or in a free segment), the writer advances the head offset before it writes, and a write
//! that overlaps a claim still in flight waits for it ([`wait_for_zeroing`]).

use std::path::PathBuf;
use std::rc::Rc;

use futures_channel::oneshot;
use monoio::buf::IoBuf;
use monoio::fs::File;

use crate::EngineError;
use crate::aligned::AlignedBuf;
use crate::engine::{Inner, State};
use crate::io::io_err;
use crate::segment::{SEGMENT_HEADER_BYTES, SegState, create_segment};

/// Free segments foreground writes must leave for compaction.
pub(crate) const SPARE_SEGMENTS: usize = 1;
/// Free segments the pre-writer keeps ready (the spare plus one ahead of the head).
pub(crate) const FREE_SEGMENTS_TARGET: usize = SPARE_SEGMENTS + 1;
/// Bytes of one background zero-fill write.
const ZERO_PIECE_BYTES: u64 = 1024 * 1024;
/// How far ahead of the write head the pre-writer keeps blocks zero-filled while group-commit
/// batches are written (the head segment, then the next free segment).
const ZERO_AHEAD_BYTES: u64 = 16 * 1024 * 1024;

/// A region of a segment whose zero-fill write is in flight.
pub(crate) struct ZeroClaim {
    segment: u64,
    start: u64,
    end: u64,
    /// Writers waiting for this zero write to complete (woken when dropped).
    waiters: Vec<oneshot::Sender<()>>,
}

/// Creates one free segment unless another task created one meanwhile.
/// Fails with [`EngineError::DiskFull`] at `disk_bytes_max` or on ENOSPC.
pub(crate) async fn create_one(inner: &Rc<Inner>) -> Result<(), EngineError> {
    let free_before = inner.state.borrow().log.free.len();
    let _guard = inner.segment_create_lock.lock().await;
    let result = create_one_locked(inner, free_before).await;
    let mut state = inner.state.borrow_mut();
    match &result {
        Ok(()) => state.disk_full = false,
        Err(EngineError::DiskFull { .. }) => state.disk_full = true,
        Err(_) => {}
    }
    result
}

async fn create_one_locked(inner: &Rc<Inner>, free_before: usize) -> Result<(), EngineError> {
    let reserve_bytes = {
        let state = inner.state.borrow();
        if state.log.free.len() > free_before {
            return Ok(());
        }
        if let Some(max) = inner.config.disk_bytes_max
            && state.log.disk_bytes() + inner.config.segment_size_bytes > max
        {
            return Err(EngineError::DiskFull {
                dir: inner.config.dir.clone(),
            });
        }
        inner.reserve_bytes_needed(&state)
    };
    // The room for the next checkpoint comes first: segments may fill the disk, never past it.
    inner
        .reserve
        .ensure(reserve_bytes)
        .map_err(|e| crate::recovery::reserve_error(&inner.config, e))?;
    let (id, header) = {
        let mut state = inner.state.borrow_mut();
        state.log.next_segment_id += 1;
        let id = state.log.next_segment_id - 1;
        let size = inner.config.segment_size_bytes;
        (id, state.log.new_life(id, size, SegState::Free))
    };
    let seg = create_segment(&inner.log_dir, header, &inner.pool)
        .await
        .inspect_err(|e| crate::writer::poison_if_sync_failed(inner, e))?;
    let mut state = inner.state.borrow_mut();
    state.log.segments.insert(id, seg);
    state.log.free.push(id);
    Ok(())
}

/// Starts the pre-writer if free segments are below target or zeroing ahead of the head is
/// wanted, and it is not already running.
pub(crate) fn kick(inner: &Rc<Inner>) {
    {
        let mut state = inner.state.borrow_mut();
        if state.prewriting
            || state.closed
            || (state.log.free.len() >= FREE_SEGMENTS_TARGET && zero_work(&state).is_none())
        {
            return;
        }
        state.prewriting = true;
    }
    let inner = inner.clone();
    monoio::spawn(async move {
        let mut zeros = None;
        loop {
            if inner.state.borrow().closed {
                break;
            }
            if inner.state.borrow().log.free.len() < FREE_SEGMENTS_TARGET {
                if let Err(e) = create_one(&inner).await {
                    tracing::debug!(error = %e, "pre-writing a segment failed");
                    break;
                }
                continue;
            }
            let Some((segment, start, end, file, path)) = claim_next(&inner) else {
                break;
            };
            let zeros = zeros.get_or_insert_with(|| {
                let mut buf = AlignedBuf::new(ZERO_PIECE_BYTES as usize);
                buf.set_len(ZERO_PIECE_BYTES as usize);
                Rc::new(buf)
            });
            if let Err(e) = zero_piece(&inner, zeros, segment, start, end, &file, &path).await {
                tracing::debug!(error = %e, "zero-filling ahead of the head failed");
                inner.state.borrow_mut().zero_wanted = false;
                break;
            }
        }
        inner.state.borrow_mut().prewriting = false;
    });
}

/// The next piece to zero-fill, if zeroing is wanted: (segment, start, end). It starts at or
/// after the head offset in the head, or in the next free segment once the head is covered.
fn zero_work(state: &State) -> Option<(u64, u64, u64)> {
    if !state.zero_wanted || state.poisoned.is_some() || state.zero_claim.is_some() {
        return None;
    }
    let log = &state.log;
    let head = log.segments.get(&log.head)?;
    let target = log.head_offset + ZERO_AHEAD_BYTES;
    let head_end = head.records_end();
    let from = head.zeroed_until.max(log.head_offset);
    if from < target.min(head_end) {
        return Some((head.id, from, (from + ZERO_PIECE_BYTES).min(head_end)));
    }
    if target <= head_end {
        return None;
    }
    // A free segment: never its header copies (the mirror is rewritten when it is activated).
    let next = log.segments.get(log.free.first()?)?;
    let next_end = next.records_end();
    let want = (SEGMENT_HEADER_BYTES + target - head_end).min(next_end);
    let from = next.zeroed_until.max(SEGMENT_HEADER_BYTES);
    (from < want).then(|| (next.id, from, (from + ZERO_PIECE_BYTES).min(next_end)))
}

/// Claims the next piece to zero-fill (in the same borrow that checked it is ahead of the head).
fn claim_next(inner: &Inner) -> Option<(u64, u64, u64, Rc<File>, PathBuf)> {
    let mut state = inner.state.borrow_mut();
    let (segment, start, end) = zero_work(&state)?;
    let seg = state.log.segments.get(&segment)?;
    let (file, path) = (seg.file.clone(), seg.path.clone());
    state.zero_claim = Some(ZeroClaim {
        segment,
        start,
        end,
        waiters: Vec::new(),
    });
    Some((segment, start, end, file, path))
}

/// Releases the zero claim (waking its waiters) however the zero write ends.
struct ClaimGuard<'a>(&'a Inner);

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        self.0.state.borrow_mut().zero_claim = None;
    }
}

/// Writes zeros over a claimed piece, then fdatasyncs it so that the extent conversion is
/// committed before the writer's own fdatasyncs (a failed fdatasync poisons the engine).
async fn zero_piece(
    inner: &Inner,
    zeros: &Rc<AlignedBuf>,
    segment: u64,
    start: u64,
    end: u64,
    file: &File,
    path: &std::path::Path,
) -> Result<(), EngineError> {
    {
        let _claim = ClaimGuard(inner);
        let piece = zeros.clone().slice(0..(end - start) as usize);
        let (res, _) = file.write_all_at(piece, start).await;
        res.map_err(|e| io_err("write", path, e))?;
        let mut state = inner.state.borrow_mut();
        if let Some(seg) = state.log.segments.get_mut(&segment) {
            seg.zeroed_until = seg.zeroed_until.max(end);
        }
    }
    if inner.state.borrow().poisoned.is_some() {
        return Err(EngineError::Closed);
    }
    file.sync_data()
        .await
        .map_err(|e| io_err("fdatasync", path, e))
        .inspect_err(|e| crate::writer::poison_if_sync_failed(inner, e))
}

/// Waits until no zero-fill write in flight overlaps `start..end` of `segment`. Called by the
/// writer after it advanced the head offset past that region, so no later claim can overlap it.
pub(crate) async fn wait_for_zeroing(inner: &Inner, segment: u64, start: u64, end: u64) {
    loop {
        let rx = {
            let mut state = inner.state.borrow_mut();
            match state.zero_claim.as_mut() {
                Some(c) if c.segment == segment && c.start < end && start < c.end => {
                    let (tx, rx) = oneshot::channel();
                    c.waiters.push(tx);
                    rx
                }
                _ => return,
            }
        };
        let _ = rx.await;
    }
}
