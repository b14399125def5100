//! The ring's checksum: one canonical encoding of an assignment that every node and every
//! manager computes alike, so a heartbeat's checksum can be compared with the managers' and
//! two rings with equal checksums route every partition alike.

/// Format version of the canonical encoding the checksum is taken over.
const RING_ENCODING_VERSION: u8 = 1;

/// xxh3 of the canonical encoding of a ring: the version, P, N, then every (node, shard) of
/// the partition-major table, little-endian.
pub fn ring_checksum(
    partitions: u32,
    replicas: u32,
    table: impl IntoIterator<Item = (u32, u16)>,
) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&[RING_ENCODING_VERSION]);
    hasher.update(&partitions.to_le_bytes());
    hasher.update(&replicas.to_le_bytes());
    for (node, shard) in table {
        hasher.update(&node.to_le_bytes());
        hasher.update(&shard.to_le_bytes());
    }
    hasher.digest()
}

/// The checksum of a ring during a rebalance: [`ring_checksum`] of its table, then every
/// (node, shard) of the table its partitions move to, so that two nodes agree on a moving
/// ring only when they agree on both tables.
pub fn moving_ring_checksum(
    partitions: u32,
    replicas: u32,
    table: impl IntoIterator<Item = (u32, u16)>,
    next: impl IntoIterator<Item = (u32, u16)>,
) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&ring_checksum(partitions, replicas, table).to_le_bytes());
    hasher.update(b"next");
    for (node, shard) in next {
        hasher.update(&node.to_le_bytes());
        hasher.update(&shard.to_le_bytes());
    }
    hasher.digest()
}
