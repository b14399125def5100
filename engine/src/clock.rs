//! The engine's hybrid logical clock: wall-clock microseconds plus a counter, never going back.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Hlc;

/// A per-engine HLC (also the clock of a core without an engine); monotonic even if the wall
/// clock steps backwards.
pub struct HlcClock {
    last: Cell<Hlc>,
    node_id: u32,
}

/// A test-only offset added to the wall clock every HLC of this process reads, in µs.
static TEST_OFFSET_US: AtomicI64 = AtomicI64::new(0);

/// Shifts the wall clock this process's HLCs read by `offset_us`: only for tests of clock skew
/// between nodes on one machine (`LEOFS_TEST_CLOCK_OFFSET_MS`).
pub fn set_test_clock_offset_us(offset_us: i64) {
    TEST_OFFSET_US.store(offset_us, Ordering::Relaxed);
}

/// The wall clock an HLC reads: µs since the Unix epoch (plus the test offset, if set).
pub fn wall_us() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    now.saturating_add_signed(TEST_OFFSET_US.load(Ordering::Relaxed))
}

impl HlcClock {
    /// A clock stamping `node_id`, starting no earlier than `floor` (the newest timestamp seen on disk).
    pub fn new(node_id: u32, floor: Hlc) -> Self {
        Self {
            last: Cell::new(Hlc { node_id, ..floor }),
            node_id,
        }
    }

    /// A timestamp greater than every one issued or observed before.
    pub fn now(&self) -> Hlc {
        self.next_after(wall_us())
    }

    fn next_after(&self, wall_us: u64) -> Hlc {
        let last = self.last.get();
        let next = if wall_us > last.physical_us {
            Hlc {
                physical_us: wall_us,
                logical: 0,
                node_id: self.node_id,
            }
        } else if last.logical == u32::MAX {
            Hlc {
                physical_us: last.physical_us + 1,
                logical: 0,
                node_id: self.node_id,
            }
        } else {
            Hlc {
                physical_us: last.physical_us,
                logical: last.logical + 1,
                node_id: self.node_id,
            }
        };
        self.last.set(next);
        next
    }

    /// Moves the clock past a timestamp received from elsewhere (replication, relocation, a
    /// replica's newer version): it never issues one at or below it again.
    pub fn observe(&self, seen: Hlc) {
        let last = self.last.get();
        if (seen.physical_us, seen.logical) > (last.physical_us, last.logical) {
            self.last.set(Hlc {
                physical_us: seen.physical_us,
                logical: seen.logical,
                node_id: self.node_id,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_when_wall_clock_goes_back() {
        let clock = HlcClock::new(3, Hlc::default());
        let a = clock.next_after(1_000);
        let b = clock.next_after(500);
        let c = clock.next_after(1_000);
        let d = clock.next_after(2_000);
        assert!(a < b && b < c && c < d);
        assert_eq!(b.physical_us, 1_000);
        assert_eq!(
            d,
            Hlc {
                physical_us: 2_000,
                logical: 0,
                node_id: 3
            }
        );
    }

    #[test]
    fn observe_moves_past_remote_time() {
        let clock = HlcClock::new(1, Hlc::default());
        let far = Hlc {
            physical_us: wall_us() + 10_000_000,
            logical: 5,
            node_id: 9,
        };
        clock.observe(far);
        let next = clock.now();
        assert!(next > far);
        assert_eq!(next.node_id, 1);
    }
}
