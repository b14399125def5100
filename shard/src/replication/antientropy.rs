//! Anti-entropy (DESIGN §7): the replicas of a partition compare hashes of key ranges (a
//! one-level Merkle tree: each key falls in one of `ranges` ranges by its hash, and a range's
//! hash sums the hashes of its entries, tombstones included, so it does not depend on order)
//! and exchange only the entries of the ranges that differ. Entries travel with their own HLC,
//! never restamped: the newest version of each key wins wherever it lands.
//!
//! A pass that finds all N replicas of a partition identical sets the partition's repaired-at
//! watermark to the HLC the pass started at: every tombstone at or below it is then on all N
//! replicas and may be dropped, and anything at or below it that arrives later (a hint, a
//! repair, a late write) is discarded, so a dropped tombstone can never let its object back.

use std::collections::BTreeMap;

use leofs_engine::Hlc;

use super::Version;

/// The hash of one entry as anti-entropy compares it.
pub fn entry_hash(key: &[u8], hlc: Hlc, tombstone: bool) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(&hlc.physical_us.to_le_bytes());
    hasher.update(&hlc.logical.to_le_bytes());
    hasher.update(&hlc.node_id.to_le_bytes());
    hasher.update(&[u8::from(tombstone)]);
    hasher.digest()
}

/// The range a key falls in, of `ranges`.
pub fn range_of(key: &[u8], ranges: u32) -> u32 {
    let hash = xxhash_rust::xxh3::xxh3_64(key);
    (((hash >> 32) * u64::from(ranges)) >> 32) as u32
}

/// The hashes of a partition's key ranges at one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeHashes {
    hashes: Vec<u64>,
}

impl RangeHashes {
    /// Hashes of `ranges` empty ranges.
    pub fn new(ranges: u32) -> Self {
        assert!(ranges >= 1, "at least one range");
        Self {
            hashes: vec![0; ranges as usize],
        }
    }

    /// The hashes of `entries` (key, HLC, whether a tombstone) in `ranges` ranges.
    pub fn of<'a>(entries: impl IntoIterator<Item = (&'a [u8], Hlc, bool)>, ranges: u32) -> Self {
        let mut hashes = Self::new(ranges);
        for (key, hlc, tombstone) in entries {
            hashes.add(key, hlc, tombstone);
        }
        hashes
    }

    /// Hashes as a replica sent them (one per range; at least one).
    pub fn from_hashes(hashes: Vec<u64>) -> Self {
        if hashes.is_empty() {
            return Self::new(1);
        }
        Self { hashes }
    }

    /// The hashes, one per range (to send to the pass's driver).
    pub fn into_hashes(self) -> Vec<u64> {
        self.hashes
    }

    /// Counts one entry in.
    pub fn add(&mut self, key: &[u8], hlc: Hlc, tombstone: bool) {
        let range = range_of(key, self.ranges()) as usize;
        self.hashes[range] = self.hashes[range].wrapping_add(entry_hash(key, hlc, tombstone));
    }

    /// How many ranges.
    pub fn ranges(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// The ranges whose hashes differ from `other`'s (all of them if the range counts differ).
    pub fn differing(&self, other: &Self) -> Vec<u32> {
        if self.hashes.len() != other.hashes.len() {
            return (0..self.ranges().max(other.ranges())).collect();
        }
        (0..self.ranges())
            .filter(|&r| self.hashes[r as usize] != other.hashes[r as usize])
            .collect()
    }
}

/// The newest version of every key among the replicas' entries (each as it was stamped).
pub fn merge_newest<K: Ord + Clone, V: Clone>(
    sides: impl IntoIterator<Item = Entries<K, V>>,
) -> BTreeMap<K, Version<V>> {
    let mut merged: BTreeMap<K, Version<V>> = BTreeMap::new();
    for side in sides {
        for (key, version) in side {
            match merged.get(&key) {
                Some(held) if held.hlc >= version.hlc => {}
                _ => {
                    merged.insert(key, version);
                }
            }
        }
    }
    merged
}

/// The repaired-at watermark a pass that started at `started` earns: Some(started) when all
/// `n` replicas answered and their hashes are identical, else None (the watermark stays).
pub fn watermark_after_pass(answers: &[RangeHashes], n: usize, started: Hlc) -> Option<Hlc> {
    let first = answers.first()?;
    (answers.len() == n && answers.iter().all(|a| a == first)).then_some(started)
}

/// Entries of one replica: each key with its version.
pub type Entries<K, V> = Vec<(K, Version<V>)>;

/// What a pass asks its driver to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassStep<N, K, V> {
    /// Wait for more answers.
    Pending,
    /// The replicas are identical (or one missed a watermark): send every replica that
    /// answered this watermark; the pass is over.
    Watermark {
        /// The partition's repaired-at watermark.
        hlc: Hlc,
        /// Who gets it.
        to: Vec<N>,
    },
    /// Ask these replicas for their entries in these ranges.
    AskEntries {
        /// The ranges that differ.
        ranges: Vec<u32>,
        /// Who to ask.
        from: Vec<N>,
    },
    /// Send each replica the entries it lacks (newest versions, as stamped); the pass is over.
    Push(Vec<(N, Entries<K, V>)>),
    /// Nothing to do; the pass is over.
    Done,
}

/// One anti-entropy pass over a partition's replicas, as its driver (one of them) runs it:
/// hashes from every replica, then the entries of the ranges that differ, then the newest
/// of each pushed where it lacks. A pass that hears all N replicas identical earns the
/// watermark `started − lag`; one that finds the replicas' watermarks unequal hands the newest
/// to all first (it was earned by an earlier pass, so it holds for all).
#[derive(Clone, Debug)]
pub struct Pass<N, K, V> {
    n: usize,
    watermark: Hlc,
    hashes: Vec<(N, RangeHashes, Option<Hlc>)>,
    asked: Option<Vec<N>>,
    entries: Vec<(N, Entries<K, V>)>,
}

impl<N: Copy + PartialEq, K: Ord + Clone, V: Clone> Pass<N, K, V> {
    /// A pass over `n` replicas started at `started` (the driver's clock): the watermark it
    /// can earn lies `lag_us` behind (see [`super::watermark_lag_us`]).
    pub fn start(n: usize, started: Hlc, lag_us: u64) -> Self {
        Self {
            n,
            watermark: Hlc {
                physical_us: started.physical_us.saturating_sub(lag_us),
                logical: 0,
                node_id: 0,
            },
            hashes: Vec::new(),
            asked: None,
            entries: Vec::new(),
        }
    }

    /// Takes `from`'s hashes and watermark.
    pub fn hashes(
        &mut self,
        from: N,
        hashes: RangeHashes,
        watermark: Option<Hlc>,
    ) -> PassStep<N, K, V> {
        if self.asked.is_some() || self.hashes.iter().any(|(n, _, _)| *n == from) {
            return PassStep::Pending;
        }
        self.hashes.push((from, hashes, watermark));
        if self.hashes.len() == self.n {
            return self.compare();
        }
        PassStep::Pending
    }

    /// Takes `from`'s entries of the ranges asked.
    pub fn entries(&mut self, from: N, entries: Entries<K, V>) -> PassStep<N, K, V> {
        let Some(asked) = &self.asked else {
            return PassStep::Pending;
        };
        if !asked.contains(&from) || self.entries.iter().any(|(n, _)| *n == from) {
            return PassStep::Pending;
        }
        self.entries.push((from, entries));
        if self.entries.len() == asked.len() {
            return self.push();
        }
        PassStep::Pending
    }

    /// The deadline passed: go on with the replicas that answered (two are enough to repair
    /// each other; no watermark without all N).
    pub fn timed_out(&mut self) -> PassStep<N, K, V> {
        match &self.asked {
            None if self.hashes.len() >= 2 => self.compare(),
            None => PassStep::Done,
            Some(_) => self.push(),
        }
    }

    fn compare(&mut self) -> PassStep<N, K, V> {
        let who: Vec<N> = self.hashes.iter().map(|(n, _, _)| *n).collect();
        // A newer watermark goes to the replicas that hold an older one. A replica that holds
        // none was never found identical to the others (it joined the partition, or lost its
        // data): it would refuse every record at or below the watermark that it lacks, so it
        // takes none until a pass finds it identical, and its records are compared meanwhile.
        let marked: Vec<(N, Hlc)> = self
            .hashes
            .iter()
            .filter_map(|(n, _, m)| m.map(|m| (*n, m)))
            .collect();
        if let Some(hlc) = marked.iter().map(|(_, m)| *m).max()
            && marked.iter().any(|(_, m)| *m != hlc)
        {
            let to = marked.iter().map(|(n, _)| *n).collect();
            return PassStep::Watermark { hlc, to };
        }
        let answers: Vec<RangeHashes> = self.hashes.iter().map(|(_, h, _)| h.clone()).collect();
        if let Some(hlc) = watermark_after_pass(&answers, self.n, self.watermark) {
            return PassStep::Watermark { hlc, to: who };
        }
        let mut ranges: Vec<u32> = Vec::new();
        for other in &answers[1..] {
            for range in answers[0].differing(other) {
                if !ranges.contains(&range) {
                    ranges.push(range);
                }
            }
        }
        if ranges.is_empty() {
            return PassStep::Done;
        }
        self.asked = Some(who.clone());
        PassStep::AskEntries { ranges, from: who }
    }

    fn push(&mut self) -> PassStep<N, K, V> {
        let merged = merge_newest(self.entries.iter().map(|(_, e)| e.clone()));
        let pushes: Vec<(N, Entries<K, V>)> = self
            .entries
            .iter()
            .map(|(node, held)| {
                let lacking = merged
                    .iter()
                    .filter(|(key, version)| {
                        !held.iter().any(|(k, v)| k == *key && v.hlc >= version.hlc)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (*node, lacking)
            })
            .filter(|(_, lacking): &(N, Entries<K, V>)| !lacking.is_empty())
            .collect();
        self.asked = Some(Vec::new());
        if pushes.is_empty() {
            PassStep::Done
        } else {
            PassStep::Push(pushes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hlc(physical_us: u64) -> Hlc {
        crate::replication::test_hlc(physical_us, 2)
    }

    #[test]
    fn range_hashes_find_the_ranges_that_differ_whatever_the_order() {
        let a = [(&b"a"[..], hlc(1), false), (&b"b"[..], hlc(2), true)];
        let b = [(&b"b"[..], hlc(2), true), (&b"a"[..], hlc(1), false)];
        assert_eq!(RangeHashes::of(a, 16), RangeHashes::of(b, 16));
        let c = [(&b"a"[..], hlc(1), false), (&b"b"[..], hlc(2), false)];
        assert_eq!(
            RangeHashes::of(a, 16).differing(&RangeHashes::of(c, 16)),
            vec![range_of(b"b", 16)]
        );
        assert!(range_of(b"anything", 16) < 16);
    }

    #[test]
    fn merging_keeps_the_newest_as_stamped_and_a_full_identical_pass_sets_the_watermark() {
        let old = Version {
            hlc: hlc(1),
            value: Some(1),
        };
        let gone = Version {
            hlc: hlc(2),
            value: None,
        };
        let merged = merge_newest([vec![("k", old.clone())], vec![("k", gone.clone())]]);
        assert_eq!(merged.get("k"), Some(&gone));
        let same = RangeHashes::of([(&b"k"[..], hlc(2), true)], 8);
        assert_eq!(
            watermark_after_pass(&[same.clone(), same.clone(), same.clone()], 3, hlc(9)),
            Some(hlc(9))
        );
        assert_eq!(
            watermark_after_pass(&[same.clone(), same.clone()], 3, hlc(9)),
            None
        );
        let other = RangeHashes::of([(&b"k"[..], hlc(1), false)], 8);
        assert_eq!(
            watermark_after_pass(&[same.clone(), same, other], 3, hlc(9)),
            None
        );
    }

    #[test]
    fn a_pass_repairs_what_differs_and_earns_a_watermark_once_identical() {
        let old = Version {
            hlc: hlc(1),
            value: Some(1u8),
        };
        let gone = Version {
            hlc: hlc(2),
            value: None,
        };
        let hashes = |v: &Version<u8>| RangeHashes::of([(&b"k"[..], v.hlc, v.is_tombstone())], 4);
        let mut pass = Pass::start(3, hlc(1_000), 100);
        assert_eq!(pass.hashes(1, hashes(&gone), None), PassStep::Pending);
        assert_eq!(pass.hashes(2, hashes(&gone), None), PassStep::Pending);
        let step = pass.hashes(3u8, hashes(&old), None);
        assert_eq!(
            step,
            PassStep::AskEntries {
                ranges: vec![range_of(b"k", 4)],
                from: vec![1, 2, 3]
            }
        );
        pass.entries(1, vec![("k", gone.clone())]);
        pass.entries(2, vec![("k", gone.clone())]);
        assert_eq!(
            pass.entries(3, vec![("k", old.clone())]),
            PassStep::Push(vec![(3, vec![("k", gone.clone())])])
        );
        let mut pass = Pass::<u8, &str, u8>::start(3, hlc(1_000), 100);
        pass.hashes(1, hashes(&gone), None);
        pass.hashes(2, hashes(&gone), None);
        assert_eq!(
            pass.hashes(3, hashes(&gone), None),
            PassStep::Watermark {
                hlc: Hlc {
                    physical_us: 900,
                    logical: 0,
                    node_id: 0
                },
                to: vec![1, 2, 3]
            }
        );
        // A replica that missed a newer watermark gets the newest before anything is
        // compared.
        let mut pass = Pass::<u8, &str, u8>::start(3, hlc(1_000), 100);
        pass.hashes(1, hashes(&gone), Some(hlc(5)));
        pass.hashes(2, hashes(&gone), Some(hlc(5)));
        assert_eq!(
            pass.hashes(3, hashes(&old), Some(hlc(4))),
            PassStep::Watermark {
                hlc: hlc(5),
                to: vec![1, 2, 3]
            }
        );
        // One that holds none (it joined the partition, or lost its data) takes none: it
        // would refuse what it lacks at or below it. Its records are compared instead.
        let mut pass = Pass::<u8, &str, u8>::start(3, hlc(1_000), 100);
        pass.hashes(1, hashes(&gone), Some(hlc(5)));
        pass.hashes(2, hashes(&gone), Some(hlc(5)));
        assert!(matches!(
            pass.hashes(3, hashes(&old), None),
            PassStep::AskEntries { .. }
        ));
    }
}
