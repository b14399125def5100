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
    /// The episode going on, if any: when it began and the writes refused in it.
    episode: Cell<Option<(Instant, u64)>>,
    /// Writes refused since the last warning.
    refused_since_warning: Cell<u64>,
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
        match (&result, log.episode.get()) {
            (Err(EngineError::DiskFull { dir }), episode) => {
                let now = Instant::now();
                let (began, refused) = episode.unwrap_or((now, 0));
                log.episode.set(Some((began, refused + 1)));
                log.refused_total.set(log.refused_total.get() + 1);
                log.refused_since_warning
                    .set(log.refused_since_warning.get() + 1);
                log.last_refusal.set(Some(now));
                let due = log
                    .warned
                    .get()
                    .is_none_or(|at| now.duration_since(at) >= WARNING_INTERVAL);
                if due {
                    let (free_segments, dead_bytes) = {
                        let state = self.state.borrow();
                        (state.log.free.len(), state.dead_bytes())
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
            (Ok(_), Some((began, refused))) => {
                let now = Instant::now();
                let quiet = log
                    .last_refusal
                    .get()
                    .is_none_or(|at| now.duration_since(at) >= FULL_FOR);
                if quiet {
                    tracing::info!(
                        dir = %self.config.dir.display(),
                        refused,
                        lasted_s = now.duration_since(began).as_secs(),
                        "disk has room again: writes to this shard go in"
                    );
                    log.episode.set(None);
                    log.refused_since_warning.set(0);
                }
            }
            _ => {}
        }
        result
    }
}
