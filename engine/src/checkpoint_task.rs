//! Taking checkpoints: snapshotting the index with the log position it covers (on demand, on
//! close, and periodically from a background task).

use std::rc::Weak;

use crate::EngineError;
use crate::checkpoint::{self, LogPosition, SegmentRow};
use crate::engine::Inner;

/// Writes a checkpoint of the current index. The snapshot is encoded synchronously (no await),
/// so it is consistent: it covers every LSN below the oldest unapplied write, and replay
/// resumes at that write (or at the head when everything is applied).
pub(crate) async fn checkpoint_now(inner: &Inner) -> Result<(), EngineError> {
    let _guard = inner.checkpoint_lock.lock().await;
    let (seq, covered_lsn, bytes, reserve_bytes) = {
        let state = inner.state.borrow();
        let (covered_lsn, (replay_segment, replay_offset)) = match state.unapplied.first_key_value()
        {
            Some((&lsn, &at)) => (lsn - 1, at),
            None => (state.next_lsn - 1, (state.log.head, state.log.head_offset)),
        };
        let replay_life = state
            .log
            .segments
            .get(&replay_segment)
            .map_or(0, |s| s.life_seq);
        let position = LogPosition {
            covered_lsn,
            next_lsn: state.next_lsn,
            replay_segment,
            replay_life,
            replay_offset,
        };
        // Set-aside segments keep the row they were last seen with, so the entries that still
        // point into them stay valid in this checkpoint (they read as corrupt until repaired).
        let rows: Vec<SegmentRow> = state
            .log
            .segments
            .values()
            .map(|s| SegmentRow {
                id: s.id,
                life: s.life_seq,
                salt: Some(s.salt),
                state: Some(s.state),
                version: Some(s.version),
            })
            .chain(state.log.set_aside.iter().filter_map(|a| a.row))
            .collect();
        let seq = state.checkpoint_seq + 1;
        let reserve_bytes = inner.reserve_bytes_needed(&state);
        (
            seq,
            covered_lsn,
            checkpoint::encode(seq, &position, &rows, state.log.shard_salt, &state.index),
            reserve_bytes,
        )
    };
    checkpoint::write(&inner.index_dir, seq, bytes, &inner.reserve).await?;
    // Take the room for the next checkpoint again (if this one used it); a new segment insists.
    if let Err(e) = inner.reserve.ensure(reserve_bytes) {
        tracing::debug!(error = %e, "checkpoint reserve not restored yet");
    }
    let mut state = inner.state.borrow_mut();
    state.checkpoint_seq = seq;
    state.checkpoint_lsn = covered_lsn;
    Ok(())
}

/// Checkpoints every `checkpoint_interval` when something changed; stops with the engine.
pub(crate) async fn run_periodic(weak: Weak<Inner>) {
    let Some(interval) = weak.upgrade().map(|i| i.config.checkpoint_interval) else {
        return;
    };
    loop {
        monoio::time::sleep(interval).await;
        let Some(inner) = weak.upgrade() else { return };
        let due = {
            let state = inner.state.borrow();
            if state.closed {
                return;
            }
            state.poisoned.is_none() && state.next_lsn - 1 > state.checkpoint_lsn
        };
        if due && let Err(e) = checkpoint_now(&inner).await {
            tracing::warn!(error = %e, "periodic checkpoint failed");
        }
    }
}
