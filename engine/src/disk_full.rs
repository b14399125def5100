//! Telling an operator that writes are refused for lack of room. On a replicated ring a replica
//! whose disk is full refuses its copies while the others still make a write quorum: no client
//! sees an error, so the shard says it in its log (a warning when refusals start, at most one a
//! [`WARNING_INTERVAL`] while they go on, and a line when writes go in again) and in its stats
//! ([`crate::EngineStats::disk_full`], [`crate::EngineStats::writes_refused_disk_full`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::EngineError;
use crate::engine::Inner;

/// Least time between two warnings while writes keep being refused.
pub(crate) const WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// A shard counts as full while its last refused write is at most this old; writes accepted
/// only after this much quiet end an episode (so that a disk at the edge, refusing large
/// writes and taking small ones, does not flood the log).
pub(crate) const FULL_FOR: Duration = Duration::from_secs(10);

/// Refusals of foreground writes for lack of room, as the log and the stats tell them.
#[derive(Default)]
pub(crate) struct DiskFullLog {
    /// Writes refused since the engine opened.
    refused_total: Cell<u64>,
    /// Writes refused in the current episode (0: none going on).
    refused_in_episode: Cell<u64>,
    /// Writes refused since the last warning.
    refused_since_warning: Cell<u64>,
    /// When the current episode began.
    episode_began: Cell<Option<Instant>>,
    /// The last refusal.
    last_refusal: Cell<Option<Instant>>,
    /// The last warning (kept across episodes: a disk at the edge, refusing now and then, is
    /// warned of once a minute at most).
    warned: Cell<Option<Instant>>,
}

impl DiskFullLog {
    /// Writes refused for lack of room since the engine opened.
    pub(crate) fn refused_total(&self) -> u64 {
        self.refused_total.get()
    }

    /// Whether a write was refused for lack of room within [`FULL_FOR`].
    pub(crate) fn full_now(&self, now: Instant) -> bool {
        self.last_refusal
            .get()
            .is_some_and(|at| now.duration_since(at) <= FULL_FOR)
    }
}

impl Inner {
    /// Notes how a foreground put ended: a refusal for lack of room, or an accepted write
    /// (which may end an episode). Other errors say nothing about room.
    pub(crate) fn note_put<T>(&self, result: Result<T, EngineError>) -> Result<T, EngineError> {
        let log = &self.disk_full_log;
        let now = Instant::now();
        match &result {
            Err(EngineError::DiskFull { dir }) => {
                log.refused_total.set(log.refused_total.get() + 1);
                log.refused_in_episode.set(log.refused_in_episode.get() + 1);
                log.refused_since_warning
                    .set(log.refused_since_warning.get() + 1);
                log.last_refusal.set(Some(now));
                if log.episode_began.get().is_none() {
                    log.episode_began.set(Some(now));
                }
                let due = log
                    .warned
                    .get()
                    .is_none_or(|at| now.duration_since(at) >= WARNING_INTERVAL);
                if due {
                    let (free_segments, dead_bytes) = {
                        let state = self.state.borrow();
                        let live = state.index.live_bytes_total();
                        let used: u64 = state
                            .log
                            .segments
                            .values()
                            .map(|s| state.log.used_bytes(s))
                            .sum();
                        (state.log.free.len(), used.saturating_sub(live))
                    };
                    tracing::warn!(
                        dir = %dir.display(),
                        refused = log.refused_since_warning.get(),
                        free_segments,
                        dead_bytes,
                        "disk full: writes to this shard are refused until deletes and compaction \
                         free room (reads and deletes go on)"
                    );
                    log.refused_since_warning.set(0);
                    log.warned.set(Some(now));
                }
            }
            Ok(_) if log.refused_in_episode.get() > 0 => {
                let quiet = log
                    .last_refusal
                    .get()
                    .is_none_or(|at| now.duration_since(at) >= FULL_FOR);
                if quiet {
                    let lasted = log
                        .episode_began
                        .get()
                        .map_or(Duration::ZERO, |at| now.duration_since(at));
                    tracing::info!(
                        dir = %self.config.dir.display(),
                        refused = log.refused_in_episode.get(),
                        lasted_s = lasted.as_secs(),
                        "disk has room again: writes to this shard go in"
                    );
                    log.refused_in_episode.set(0);
                    log.refused_since_warning.set(0);
                    log.episode_began.set(None);
                }
            }
            _ => {}
        }
        result
    }
}
