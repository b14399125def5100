//! Hinted handoff (DESIGN §7): a replica that stored a write keeps a hint for each replica that
//! missed it, durably, and replays them in order once that replica answers again. A queue is
//! capped in bytes per target, and a hint older than the expiry (shorter than the tombstone
//! grace) is dropped with its key reported, so that the partition is marked for anti-entropy
//! instead: a hint never outlives the window in which it is safe to apply.

use std::collections::VecDeque;

use super::Version;

/// One missed write or delete, for one target replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint<K, V> {
    /// The object's key.
    pub key: K,
    /// The version the target missed.
    pub version: Version<V>,
    /// When the hint was made (the holder's clock, µs).
    pub made_at_us: u64,
    /// What it costs in the queue (key and value bytes).
    pub bytes: u64,
}

/// Why a hint was not queued: the partition must be marked for anti-entropy instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the hint queue for this replica holds {queued_bytes} bytes, at most {cap_bytes}")]
pub struct HintQueueFull {
    /// Bytes queued.
    pub queued_bytes: u64,
    /// The cap.
    pub cap_bytes: u64,
}

/// The hints one replica keeps for one other replica, oldest first.
#[derive(Clone, Debug)]
pub struct HintQueue<K, V> {
    hints: VecDeque<Hint<K, V>>,
    queued_bytes: u64,
    cap_bytes: u64,
}

impl<K: PartialEq, V> HintQueue<K, V> {
    /// An empty queue of at most `cap_bytes`.
    pub fn new(cap_bytes: u64) -> Self {
        Self {
            hints: VecDeque::new(),
            queued_bytes: 0,
            cap_bytes,
        }
    }

    /// Queues `hint`, or refuses it when the queue would pass its cap.
    pub fn push(&mut self, hint: Hint<K, V>) -> Result<(), HintQueueFull> {
        if self.queued_bytes + hint.bytes > self.cap_bytes {
            return Err(HintQueueFull {
                queued_bytes: self.queued_bytes,
                cap_bytes: self.cap_bytes,
            });
        }
        self.queued_bytes += hint.bytes;
        self.hints.push_back(hint);
        Ok(())
    }

    /// The hint to replay next (the oldest).
    pub fn next(&self) -> Option<&Hint<K, V>> {
        self.hints.front()
    }

    /// The target stored (or already held newer) the oldest hint: it goes.
    pub fn delivered(&mut self) -> Option<Hint<K, V>> {
        let hint = self.hints.pop_front()?;
        self.queued_bytes -= hint.bytes;
        Some(hint)
    }

    /// Drops the hints made before `now_us - max_age_us`; their keys, whose partitions must be
    /// marked for anti-entropy.
    pub fn expire(&mut self, now_us: u64, max_age_us: u64) -> Vec<K> {
        let mut expired = Vec::new();
        while let Some(front) = self.hints.front() {
            if now_us.saturating_sub(front.made_at_us) <= max_age_us {
                break;
            }
            if let Some(hint) = self.delivered() {
                expired.push(hint.key);
            }
        }
        expired
    }

    /// Hints queued.
    pub fn len(&self) -> usize {
        self.hints.len()
    }

    /// Whether none is queued.
    pub fn is_empty(&self) -> bool {
        self.hints.is_empty()
    }

    /// Bytes queued.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Every hint, oldest first (to persist or inspect).
    pub fn iter(&self) -> impl Iterator<Item = &Hint<K, V>> {
        self.hints.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leofs_engine::Hlc;

    fn hint(key: u8, at: u64, bytes: u64) -> Hint<u8, ()> {
        Hint {
            key,
            version: Version {
                hlc: Hlc {
                    physical_us: at,
                    logical: 0,
                    node_id: 0,
                },
                value: Some(()),
            },
            made_at_us: at,
            bytes,
        }
    }

    #[test]
    fn hints_replay_in_order_within_their_cap_and_expire() {
        let mut queue = HintQueue::new(100);
        queue.push(hint(1, 10, 40)).unwrap();
        queue.push(hint(2, 20, 40)).unwrap();
        assert_eq!(
            queue.push(hint(3, 30, 40)),
            Err(HintQueueFull {
                queued_bytes: 80,
                cap_bytes: 100
            })
        );
        assert_eq!(queue.next().map(|h| h.key), Some(1));
        assert_eq!(queue.delivered().map(|h| h.key), Some(1));
        queue.push(hint(3, 30, 40)).unwrap();
        assert_eq!(queue.queued_bytes(), 80);
        assert_eq!(queue.expire(35, 10), vec![2]);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.expire(1000, 10), vec![3]);
        assert!(queue.is_empty());
        assert_eq!(queue.queued_bytes(), 0);
    }
}
