//! Replication's decisions, sans-IO (DESIGN §7): which version of an object wins, when a write
//! or read round has its quorum, which replicas need a hint, what anti-entropy must exchange,
//! and when a tombstone may go. Every piece is a plain value or state machine fed answers and
//! time and returning what to do next, so the data path drives them over the wire and the
//! engine while a seeded simulator (`sim`, in the tests) drives the very same code over a fake
//! network, fake clocks and fake disks, with crashes, and checks that nothing acknowledged is
//! lost and nothing deleted comes back.
//!
//! - [`Version`], [`Levels`], [`decide_write`]: last write wins by HLC, and the clock bound.
//! - [`coordinator`]: a write round (W or D acks, fail fast, who needs a hint, restamp above a
//!   newer replica), a read round (a body from one replica, digests from others, read repair)
//!   and the precondition a serializing replica decides conditional writes by.
//! - [`hints`]: a replica's queue of hints for one other replica (capped, expiring, in order).
//! - [`antientropy`]: per-range hashes of a partition, their differences, and the repaired-at
//!   watermark below which tombstones are dropped.

pub mod antientropy;
pub mod coordinator;
pub mod hints;
#[cfg(test)]
mod sim;

use leofs_engine::Hlc;

/// An object's state at one replica: the HLC of the write or delete that made it, and its value
/// (None: a tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version<V> {
    /// Who wins: the newest HLC.
    pub hlc: Hlc,
    /// The value; None for a delete.
    pub value: Option<V>,
}

impl<V> Version<V> {
    /// Whether this version is a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// The newer of two optional versions (by HLC; HLCs never tie across issuers).
pub fn newest<'a, V>(
    a: Option<&'a Version<V>>,
    b: Option<&'a Version<V>>,
) -> Option<&'a Version<V>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.hlc > a.hlc { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The largest clock difference between nodes the cluster tolerates, in µs: the default of
/// the manager's `max_clock_offset` setting (500 ms). A replica refuses a write stamped further
/// ahead of its clock than this.
pub const MAX_CLOCK_OFFSET_US: u64 = 500_000;

/// Replica counts and quorums: N replicas of every partition, W acks for a write, R answers
/// for a read, D acks for a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Levels {
    /// Replicas per partition.
    pub n: usize,
    /// Acks a write needs.
    pub w: usize,
    /// Replicas a read consults.
    pub r: usize,
    /// Acks a delete needs.
    pub d: usize,
}

/// Why a set of levels is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LevelsError {
    /// A quorum is zero or larger than N, or N is zero or over the replica bound.
    #[error("impossible levels N={n} W={w} R={r} D={d}: need 1 ≤ W, R, D ≤ N ≤ {max}")]
    Impossible {
        /// N.
        n: usize,
        /// W.
        w: usize,
        /// R.
        r: usize,
        /// D.
        d: usize,
        /// Most replicas of a partition.
        max: usize,
    },
}

impl Levels {
    /// Levels, refused when impossible (a quorum of zero or above N).
    pub fn new(n: usize, w: usize, r: usize, d: usize) -> Result<Self, LevelsError> {
        let max = crate::ring::MAX_REPLICAS;
        let fits = |q: usize| (1..=n).contains(&q);
        if n == 0 || n > max || !fits(w) || !fits(r) || !fits(d) {
            return Err(LevelsError::Impossible { n, w, r, d, max });
        }
        Ok(Self { n, w, r, d })
    }

    /// The cluster's defaults for `n` replicas (DESIGN §7): writes and deletes need a
    /// majority, reads consult just enough replicas that R + W > N and R + D > N (N = 3: a
    /// body from one replica and a digest from a second); a single replica is 1/1/1.
    pub fn defaults(n: usize) -> Self {
        let n = n.clamp(1, crate::ring::MAX_REPLICAS);
        let majority = n / 2 + 1;
        Self {
            n,
            w: majority,
            r: n - majority + 1,
            d: majority,
        }
    }

    /// Whether a read is sure to see every acknowledged write and delete (R + W > N and
    /// R + D > N).
    pub fn reads_see_acknowledged(&self) -> bool {
        self.r + self.w > self.n && self.r + self.d > self.n
    }
}

/// What a replica does with an incoming write or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteDecision {
    /// It is newer than what the replica holds: store it (durably, then ack).
    Apply,
    /// The replica holds this very version already: ack without writing.
    AlreadyHeld,
    /// The replica holds a newer version: keep it and answer its HLC (a coordinator stamps a
    /// client's write above it; a repair or hint is simply done).
    KeepNewer(Hlc),
    /// The HLC is further ahead of this replica's clock than the cluster's bound: refused.
    TooFarAhead {
        /// By how much, in µs.
        ahead_us: u64,
    },
}

/// Decides an incoming version with HLC `incoming` against the replica's `current` one, at the
/// replica's clock `now_us`, with the cluster's `max_clock_offset_us`.
pub fn decide_write(
    current: Option<Hlc>,
    incoming: Hlc,
    now_us: u64,
    max_clock_offset_us: u64,
) -> WriteDecision {
    let ahead_us = incoming.physical_us.saturating_sub(now_us);
    if ahead_us > max_clock_offset_us {
        return WriteDecision::TooFarAhead { ahead_us };
    }
    match current {
        Some(held) if held == incoming => WriteDecision::AlreadyHeld,
        Some(held) if held > incoming => WriteDecision::KeepNewer(held),
        _ => WriteDecision::Apply,
    }
}

/// Longest a client write may travel (by the replica's clock, from its stamp) and still be
/// stored: its round's deadline, plus the clocks' bound. Later, its round is over (acknowledged
/// without this replica, or failed) and it is refused, so that a repaired-at watermark behind
/// [`watermark_lag_us`] never sees a client write arrive at or below it.
pub const fn client_write_age_max_us(round_deadline_us: u64, max_clock_offset_us: u64) -> u64 {
    round_deadline_us + max_clock_offset_us
}

/// How far behind the start of an anti-entropy pass its watermark lies: past the age of any
/// client write still stored ([`client_write_age_max_us`]) and one more clock bound, so that
/// every write at or below the watermark was stored before the pass compared the replicas.
pub const fn watermark_lag_us(round_deadline_us: u64, max_clock_offset_us: u64) -> u64 {
    client_write_age_max_us(round_deadline_us, max_clock_offset_us) + max_clock_offset_us + 1
}

/// Whether a client write stamped `incoming` is too old to store at the replica's clock
/// `now_us` (see [`client_write_age_max_us`]).
pub fn client_write_too_old(incoming: Hlc, now_us: u64, age_max_us: u64) -> bool {
    incoming.physical_us.saturating_add(age_max_us) < now_us
}

/// A timestamp for the tests of this module and its children.
#[cfg(test)]
pub(crate) fn test_hlc(physical_us: u64, node_id: u32) -> Hlc {
    Hlc {
        physical_us,
        logical: 0,
        node_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hlc(physical_us: u64, node_id: u32) -> Hlc {
        test_hlc(physical_us, node_id)
    }

    #[test]
    fn the_defaults_see_every_acknowledged_write() {
        for n in 1..=crate::ring::MAX_REPLICAS {
            let levels = Levels::defaults(n);
            assert_eq!(Levels::new(n, levels.w, levels.r, levels.d), Ok(levels));
            assert!(levels.reads_see_acknowledged(), "N={n}");
        }
        assert_eq!(Levels::defaults(3), Levels::new(3, 2, 2, 2).unwrap());
        assert_eq!(Levels::defaults(1), Levels::new(1, 1, 1, 1).unwrap());
    }

    #[test]
    fn impossible_levels_are_refused() {
        assert!(Levels::new(3, 2, 2, 2).unwrap().reads_see_acknowledged());
        assert!(!Levels::new(3, 2, 1, 2).unwrap().reads_see_acknowledged());
        for (n, w, r, d) in [
            (3, 4, 2, 2),
            (3, 0, 2, 2),
            (0, 1, 1, 1),
            (9, 1, 1, 1),
            (3, 2, 2, 4),
        ] {
            assert!(Levels::new(n, w, r, d).is_err(), "{n} {w} {r} {d}");
        }
    }

    #[test]
    fn the_newest_hlc_wins_and_the_clock_bound_holds() {
        let bound = 500_000;
        assert_eq!(
            decide_write(None, hlc(10, 1), 10, bound),
            WriteDecision::Apply
        );
        assert_eq!(
            decide_write(Some(hlc(9, 2)), hlc(10, 1), 10, bound),
            WriteDecision::Apply
        );
        assert_eq!(
            decide_write(Some(hlc(10, 2)), hlc(10, 1), 10, bound),
            WriteDecision::KeepNewer(hlc(10, 2))
        );
        assert_eq!(
            decide_write(Some(hlc(10, 1)), hlc(10, 1), 10, bound),
            WriteDecision::AlreadyHeld
        );
        assert_eq!(
            decide_write(None, hlc(10 + bound + 1, 1), 10, bound),
            WriteDecision::TooFarAhead {
                ahead_us: bound + 1
            }
        );
        assert_eq!(
            decide_write(None, hlc(10 + bound, 1), 10, bound),
            WriteDecision::Apply
        );
    }
}
