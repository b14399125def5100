//! The partition map of one node: which partition a hash falls in (`hash >> (64 - log2 P)`)
//! and which core owns a partition. It never changes while a node runs.
//!
//! Ownership is by contiguous ranges: core `c` of `n` owns partitions
//! `[ceil(c·P/n), ceil((c+1)·P/n))`, i.e. `owner(p) = p·n / P`. Contiguous ranges keep a core's
//! partitions adjacent in the ring (a later move hands over whole ranges) and spread evenly
//! (owned counts differ by at most one).

use leofs_engine::PartitionId;

use crate::ShardError;

/// Most partitions a node may have (2^20: more only costs index overhead).
pub const MAX_PARTITIONS: u32 = 1 << 20;
/// Most cores a node may run.
pub const MAX_CORES: usize = 1024;

/// Partition count and core count of a node, and the arithmetic between hashes, partitions and cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionMap {
    partitions: u32,
    /// `64 - log2(partitions)`: the right shift from a hash to its partition.
    shift: u32,
    cores: usize,
}

impl PartitionMap {
    /// Checks the counts (partitions a power of two ≤ [`MAX_PARTITIONS`], 1 ≤ cores ≤ partitions).
    pub fn new(partitions: u32, cores: usize) -> Result<Self, ShardError> {
        if !partitions.is_power_of_two() || partitions > MAX_PARTITIONS {
            return Err(ShardError::Config(format!(
                "partitions must be a power of two between 1 and {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        if cores == 0 || cores > MAX_CORES || cores > partitions as usize {
            return Err(ShardError::Config(format!(
                "cores must be between 1 and min({MAX_CORES}, partitions = {partitions}), got {cores}"
            )));
        }
        Ok(Self {
            partitions,
            shift: 64 - partitions.trailing_zeros(),
            cores,
        })
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The partition of a hash: its top `log2 P` bits.
    pub fn partition_of(&self, hash: u64) -> PartitionId {
        // A shift of 64 (one partition) is not defined for `>>`: everything is partition 0.
        hash.checked_shr(self.shift).unwrap_or(0) as PartitionId
    }

    /// The core owning `partition` (which must be < partitions).
    pub fn owner_of(&self, partition: PartitionId) -> usize {
        debug_assert!(partition < self.partitions);
        (u64::from(partition) * self.cores as u64 / u64::from(self.partitions)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_the_top_bits_of_the_hash() {
        let map = PartitionMap::new(1024, 2).unwrap();
        assert_eq!(map.partition_of(0), 0);
        assert_eq!(map.partition_of(u64::MAX), 1023);
        assert_eq!(map.partition_of(1 << 54), 1);
        let single = PartitionMap::new(1, 1).unwrap();
        assert_eq!(single.partition_of(u64::MAX), 0);
    }

    #[test]
    fn every_partition_has_exactly_one_owner_and_counts_match() {
        for cores in [1usize, 2, 3, 5, 8, 64] {
            let map = PartitionMap::new(1024, cores).unwrap();
            let mut counted = vec![0u32; cores];
            let mut previous_owner = 0;
            for p in 0..1024 {
                let owner = map.owner_of(p);
                assert!(owner >= previous_owner, "ranges are contiguous");
                previous_owner = owner;
                counted[owner] += 1;
            }
            // What the node reports each core owns: its ranges in the ring of one node.
            let ring = crate::RingView::single_node(0, map);
            for (core, count) in counted.iter().enumerate() {
                let vnode = crate::Vnode {
                    node: 0,
                    shard: core as u16,
                };
                assert_eq!(
                    *count,
                    ring.partitions_first_on(vnode),
                    "cores={cores} core={core}"
                );
            }
            let (min, max) = (counted.iter().min().unwrap(), counted.iter().max().unwrap());
            assert!(max - min <= 1);
        }
    }

    #[test]
    fn rejects_bad_counts() {
        assert!(PartitionMap::new(1000, 2).is_err());
        assert!(PartitionMap::new(0, 1).is_err());
        assert!(PartitionMap::new(4, 8).is_err());
        assert!(PartitionMap::new(1024, 0).is_err());
    }
}
