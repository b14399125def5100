//! leofs-shard: the thread-per-core node. One pinned OS thread per core, each with its own
//! monoio io_uring runtime and storage engine; a fixed partition map from object hashes to
//! owning cores; cross-core forwarding; HTTP listeners with SO_REUSEPORT.
//!
//! - [`partition`]: hash → partition → core, the local layout a single node's ring is built from.
//! - [`ring`]: [`RingView`], the versioned partition → replica vnodes map every request is
//!   routed by.
//! - [`request`]: the storage vocabulary, [`StorageRequest`] and [`StorageResponse`], and the
//!   executor that serves them on the vnode holding the data.
//! - [`cross_core`]: the only way to reach another core (bounded, counted messages, values only).
//! - [`shard`]: [`Shard`], the per-core handle the gateway calls.
//! - `replicated`: with N > 1, the coordinator's side of every request: write rounds with W/D
//!   acks, serialized object commits copied to the other replicas, read rounds with digests and
//!   read repair; `hinted`: durable hints for replicas that missed a write, replayed when they
//!   are back.
//! - [`remote`]: the vocabulary over the wire to and from other nodes (`leofs-wire`).
//! - [`replication`]: replication's decisions, sans-IO (quorum rounds, hints, anti-entropy, the
//!   repaired-at watermark), run by a seeded simulation in the tests and driven by [`replicated`].
//! - [`http`]: [`serve_http`], listeners and graceful connection shutdown.
//! - `balance`: moves new connections to the core serving the fewest, up to a cap per core.
//! - [`node`]: [`start_node`], [`NodeHandle`], signals, shutdown, stats.
//! - [`layout`]: `<data_dir>/node.toml`, the counts fixed at creation.
//! - [`metrics`]: requests served per core, by operation and status, for `/metrics`.
//! - [`object`]: object records' keys and encodings (manifests, uploads, parts).
//! - [`objects`]: object commits with their preconditions, deletes, part commits, writes in
//!   flight and read leases, on the owning core; `collector`: the durable garbage queue and the
//!   orphan sweeper of each core.

pub mod antientropy;
mod balance;
mod collector;
pub mod cross_core;
mod error;
mod hinted;
pub mod http;
pub mod layout;
pub mod metrics;
pub mod node;
pub mod object;
pub mod objects;
pub mod partition;
pub mod remote;
mod replicated;
pub mod replication;
pub mod request;
pub mod ring;
pub mod shard;

pub use antientropy::{AntiEntropyStatus, ReplicationConfig};
pub use error::ErrorClass;
pub use error::ShardError;
pub use http::{OverloadAnswer, PeerAddr, serve_http};
pub use layout::{NodeLayout, read_layout};
pub use leofs_engine::{
    EngineConfig, EngineError, Head, Hlc, Lookup, MAX_META_BYTES, PartitionId, PutValue, ScanEntry,
    Summary, Value,
};

/// Largest body of one record in bytes: what the engine stores, and what one frame carries
/// between nodes (a record's body is one frame's payload).
pub const MAX_RECORD_BODY_BYTES: u64 = {
    let wire = leofs_wire::frame::PAYLOAD_BYTES_MAX as u64;
    if leofs_engine::MAX_BODY_BYTES < wire {
        leofs_engine::MAX_BODY_BYTES
    } else {
        wire
    }
};
pub use node::{
    CoreStats, DEFAULT_CONNECTIONS_PER_CORE_MAX, InstalledRing, JoinedCluster, NodeConfig,
    NodeHandle, NodeStats, Progressed, RingInstaller, RingWanted, ShutdownTrigger,
    block_shutdown_signals, start_node,
};
pub use objects::{
    ChunkLease, EtagCondition, GcConfig, GcStats, PendingWrite, WriteCondition, WriteRegistration,
};
pub use partition::PartitionMap;
pub use remote::{NodeServices, PeersConfig, RpcConfig};
pub use request::{StorageRequest, StorageResponse};
pub use ring::{NodeId, RingView, Vnode};
pub use shard::Shard;

/// Default number of partitions of a node (power of two, fixed at creation; DESIGN §4).
pub const DEFAULT_PARTITIONS: u32 = 1024;

/// Longest `bucket ‖ 0x00 ‖ key` hashed from a stack buffer; longer inputs use the streaming hasher.
const OBJECT_HASH_STACK_BYTES: usize = 1280;

/// xxh3_64(bucket ‖ 0x00 ‖ key) (DESIGN §4); other namespaces hash their own byte strings with
/// [`hash_bytes`]. No allocation for S3-sized names (bucket ≤ 63, key ≤ 1024 bytes).
pub fn object_hash(bucket: &[u8], key: &[u8]) -> u64 {
    let len = bucket.len() + 1 + key.len();
    if len <= OBJECT_HASH_STACK_BYTES {
        let mut buf = [0u8; OBJECT_HASH_STACK_BYTES];
        buf[..bucket.len()].copy_from_slice(bucket);
        buf[bucket.len() + 1..len].copy_from_slice(key);
        return hash_bytes(&buf[..len]);
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(bucket);
    hasher.update(&[0]);
    hasher.update(key);
    hasher.digest()
}

/// xxh3_64 of a byte string: the ring hash for namespaces other than objects.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_hash_is_xxh3_of_bucket_nul_key_for_short_and_long_names() {
        for key_len in [0usize, 1, 100, 1024, 2000, 5000] {
            let key = vec![b'k'; key_len];
            let mut joined = b"bucket".to_vec();
            joined.push(0);
            joined.extend_from_slice(&key);
            assert_eq!(
                object_hash(b"bucket", &key),
                hash_bytes(&joined),
                "key_len={key_len}"
            );
        }
        assert_ne!(object_hash(b"ab", b"c"), object_hash(b"a", b"bc"));
    }
}
