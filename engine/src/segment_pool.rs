//! Free segments ahead of need: creating zero-filled segments within `disk_bytes_max`, and the
//! background pre-writer that keeps [`FREE_SEGMENTS_TARGET`] of them so a rollover rarely waits.
//! One free segment ([`SPARE_SEGMENTS`]) is reserved for compaction: foreground writes never
//! take it, so compaction can always make progress on a full disk.

use std::rc::Rc;

use crate::EngineError;
use crate::engine::Inner;
use crate::segment::create_segment;

/// Free segments foreground writes must leave for compaction.
pub(crate) const SPARE_SEGMENTS: usize = 1;
/// Free segments the pre-writer keeps ready (the spare plus one ahead of the head).
pub(crate) const FREE_SEGMENTS_TARGET: usize = SPARE_SEGMENTS + 1;

/// Creates one free segment unless another task created one meanwhile.
/// Fails with [`EngineError::DiskFull`] at `disk_bytes_max` or on ENOSPC.
pub(crate) async fn create_one(inner: &Rc<Inner>) -> Result<(), EngineError> {
    let free_before = inner.state.borrow().log.free.len();
    let _guard = inner.segment_create_lock.lock().await;
    let (id, life_seq) = {
        let mut state = inner.state.borrow_mut();
        if state.log.free.len() > free_before {
            return Ok(());
        }
        let size = inner.config.segment_size_bytes;
        if let Some(max) = inner.config.disk_bytes_max
            && state.log.disk_bytes() + size > max
        {
            return Err(EngineError::DiskFull {
                dir: inner.config.dir.clone(),
            });
        }
        state.log.next_segment_id += 1;
        state.log.next_life += 1;
        (state.log.next_segment_id - 1, state.log.next_life - 1)
    };
    let seg = create_segment(
        &inner.log_dir,
        id,
        inner.config.segment_size_bytes,
        life_seq,
        &inner.pool,
    )
    .await
    .inspect_err(|e| crate::writer::poison_if_sync_failed(inner, e))?;
    let mut state = inner.state.borrow_mut();
    state.log.segments.insert(id, seg);
    state.log.free.push(id);
    Ok(())
}

/// Starts the pre-writer if free segments are below target and it is not already running.
pub(crate) fn kick(inner: &Rc<Inner>) {
    {
        let mut state = inner.state.borrow_mut();
        if state.prewriting || state.closed || state.log.free.len() >= FREE_SEGMENTS_TARGET {
            return;
        }
        state.prewriting = true;
    }
    let inner = inner.clone();
    monoio::spawn(async move {
        while inner.state.borrow().log.free.len() < FREE_SEGMENTS_TARGET
            && !inner.state.borrow().closed
        {
            if let Err(e) = create_one(&inner).await {
                tracing::debug!(error = %e, "pre-writing a segment failed");
                break;
            }
        }
        inner.state.borrow_mut().prewriting = false;
    });
}
