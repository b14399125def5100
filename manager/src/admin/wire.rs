//! The admin API's JSON bodies, shared by the server ([`super::spawn_admin_server`]) and the
//! client ([`crate::client`]) so both sides agree by construction.
//!
//! Endpoints (every request carries `Authorization: Bearer <token>`):
//! - `GET /v1/status` → [`super::NodeStatus`]
//! - `GET /v1/users` → `[UserInfo]`; `POST /v1/users` [`CreateUserRequest`] → 201 [`crate::Credentials`]
//! - `DELETE /v1/users/<id>` → [`Deleted`]
//! - `GET /v1/buckets` → `[Bucket]`; `POST /v1/buckets` [`AddBucketRequest`] → 201 [`crate::Bucket`]
//! - `DELETE /v1/buckets/<name>` → [`Deleted`] (only when the node reports the bucket empty)
//! - `PUT /v1/buckets/<name>/acl` [`UpdateAclRequest`] → [`crate::Bucket`]
//! - `GET /v1/cluster` → [`ClusterStatus`]; `POST /v1/cluster/start` [`StartRequest`] →
//!   [`RingSummary`]
//! - `GET /v1/nodes/<id>` → [`NodeInfo`]; `POST /v1/nodes/<id>/suspend` and `…/resume` →
//!   [`NodeInfo`]
//! - `GET /v1/ring` → [`RingDump`]
//! - `GET /v1/whereis/<bucket>/<key>` → [`Whereabouts`]
//!
//! Failures answer `{"error": code, "message": text}` ([`ApiError`]) with a 4xx/5xx status.

/// Path prefix of every endpoint (the API version).
pub const API_PREFIX: &str = "/v1";

/// A user and its access key ids (secrets are never listed).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserInfo {
    /// The user id.
    pub user_id: String,
    /// Whether the user administers every bucket.
    pub is_admin: bool,
    /// Its access key ids, sorted.
    pub access_key_ids: Vec<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// Body of `POST /v1/users`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CreateUserRequest {
    /// The new user's id.
    pub user_id: String,
}

/// Body of `POST /v1/buckets`: the owner is the user of `access_key_id`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AddBucketRequest {
    /// The bucket name.
    pub bucket: String,
    /// An access key id of the future owner.
    pub access_key_id: String,
    /// Canned ACL (`private` when absent).
    #[serde(default)]
    pub acl: Option<String>,
}

/// Body of `PUT /v1/buckets/<name>/acl`: the key must belong to the owner or an administrator.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct UpdateAclRequest {
    /// An access key id of the owner (or of an administrator).
    pub access_key_id: String,
    /// `private`, `public-read` or `public-read-write`.
    pub acl: String,
}

/// Body of `POST /v1/managers`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AddManagerRequest {
    /// The new manager's `--rpc-listen` address.
    pub addr: String,
}

/// Answer of `POST /v1/managers`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ManagerAdded {
    /// The new member's Raft node id.
    pub node_id: u64,
    /// Its address.
    pub addr: String,
}

/// Answer of the `DELETE` endpoints.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Deleted {
    /// What was deleted (user id or bucket name).
    pub deleted: String,
}

/// A node as `leofs-adm status` lists it: its record, and what its last heartbeat said.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// The member record.
    pub member: crate::cluster::Member,
    /// Partitions it is the first replica of.
    pub partitions: u32,
    /// Milliseconds since its last heartbeat reached this manager (None: none yet).
    pub heartbeat_age_ms: Option<u64>,
    /// Its last heartbeat.
    pub heartbeat: Option<crate::cluster::Heartbeat>,
    /// Whether its clock, as its last heartbeat measured it, is further off the managers'
    /// than the cluster's bound (`max_clock_offset_ms`).
    #[serde(default)]
    pub clock_beyond_bound: bool,
}

/// The cluster as `leofs-adm status` shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    /// The cluster id.
    pub cluster_id: Option<String>,
    /// The ring's epoch (0: not started).
    pub ring_epoch: u64,
    /// The ring's checksum (0: not started).
    pub ring_checksum: u64,
    /// Partitions P (0: not started).
    pub partitions: u32,
    /// The settings every node agrees on.
    pub settings: crate::cluster::ClusterSettings,
    /// Every node, by id.
    pub nodes: Vec<NodeInfo>,
}

/// Answer of `GET /v1/rebalance` (and of the calls that change a rebalance): where the ring
/// stands.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RebalanceStatus {
    /// The ring's epoch.
    pub ring_epoch: u64,
    /// `moving` (partitions are being filled on their new replicas), `settling` (the ring
    /// flipped; not every node routes by it yet, or former owners still hold partitions they
    /// drop), or `idle`.
    pub phase: String,
    /// Whether every node that is not stopped routes by the ring.
    pub known_everywhere: bool,
    /// Partitions the rebalance moves (0 when idle).
    pub moving_partitions: u32,
    /// Of those, the ones filled on their new replicas.
    pub filled_partitions: u32,
    /// Replica slots that change.
    pub moved_replicas: u32,
    /// Bytes the nodes moved for rebalances since they started (a rate is taken between two
    /// reads).
    pub moved_bytes: u64,
    /// Partitions that former owners still hold and will drop.
    pub foreign_partitions: u64,
    /// When the rebalance started, ms since the Unix epoch (0 when idle).
    pub started_unix_ms: u64,
    /// Whether an operator paused it.
    pub suspended: bool,
    /// Nodes that do not route by the ring yet.
    pub nodes_behind: Vec<u32>,
    /// The stopped node whose partitions the rebalance re-replicates (automatic recovery).
    #[serde(default)]
    pub recovering_node: Option<u32>,
}

/// Answer of `GET /v1/recovery` (and of `POST /v1/nodes/<id>/recover`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RecoveryStatus {
    /// `recovering` or `idle`.
    pub phase: String,
    /// The node whose partitions are (or were last) compared and repaired.
    pub node: Option<u32>,
    /// Partitions it holds.
    pub partitions: u32,
    /// Of those, compared and repaired.
    pub done: u32,
    /// When it was asked, ms since the Unix epoch.
    pub requested_unix_ms: u64,
    /// When the last recovery finished, ms since the Unix epoch (0 while under way).
    pub finished_unix_ms: u64,
    /// Bytes the nodes moved for rebalances and recoveries since they started.
    pub moved_bytes: u64,
}

/// Body of `PUT /v1/cluster/auto-recover`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct AutoRecoverRequest {
    /// Seconds a storage node may stay stopped before its partitions are re-replicated onto
    /// the others (0: only once the tombstone grace is over).
    pub after_secs: u64,
}

/// Body of `PUT /v1/cluster/tombstone-grace`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TombstoneGraceRequest {
    /// Seconds after which a stopped storage node's partitions are re-replicated onto the
    /// others and it rejoins wiped.
    pub grace_secs: u64,
}

/// Answer of `POST /v1/recover-file/<bucket>/<key>`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct FileRecovered {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// Copies (of the object record and its chunks) that were behind and were repaired.
    pub repaired: u64,
}

/// Body of `POST /v1/cluster/start`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StartRequest {
    /// Partitions P (a power of two); chosen from the shards when absent.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Shards the cluster is expected to grow to (P is chosen for them).
    #[serde(default)]
    pub expected_shards: Option<u32>,
    /// Replicas per partition N (cluster-wide, fixed at start); the settings' N when absent.
    #[serde(default)]
    pub replicas: Option<u32>,
}

/// What a ring is, in short.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RingSummary {
    /// Its epoch.
    pub epoch: u64,
    /// Its checksum.
    pub checksum: u64,
    /// Partitions P.
    pub partitions: u32,
    /// Replicas N.
    pub replicas: u32,
    /// Partitions each node is the first replica of, by node id.
    pub partitions_by_node: std::collections::BTreeMap<u32, u32>,
}

/// Answer of `GET /v1/ring`: the whole assignment.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RingDump {
    /// Its summary.
    pub summary: RingSummary,
    /// Each node's address, by id.
    pub nodes: std::collections::BTreeMap<u32, String>,
    /// The ring.
    pub ring: crate::cluster::RingRecord,
}

/// One replica of an object, as its node reports it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Replica {
    /// The node.
    pub node: u32,
    /// Its address.
    pub addr: String,
    /// The shard.
    pub shard: u16,
    /// Whether it holds the object (false: absent or deleted there).
    pub found: bool,
    /// Its HLC, as text (`physical_ms.logical.node`).
    pub hlc: Option<String>,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// Its checksum (the ETag).
    pub checksum: Option<String>,
    /// Why the node could not say (unreachable, …).
    pub error: Option<String>,
}

/// Answer of `GET /v1/whereis/<bucket>/<key>`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Whereabouts {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// Its partition.
    pub partition: u32,
    /// Its replicas, in preference order.
    pub replicas: Vec<Replica>,
}

/// Body of every error answer.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    /// A stable code (`NoSuchUser`, `BucketNotEmpty`, `Unauthorized`, …).
    pub error: String,
    /// A sentence for people.
    pub message: String,
}

/// Encodes one path segment: unreserved characters stay, every other byte becomes `%XX`.
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes one `%XX`-encoded path segment; `None` if malformed or not UTF-8.
pub fn decode_path_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_round_trip() {
        for segment in ["plain", "a b/c%d", "ünï", "user@example.com", ""] {
            let encoded = encode_path_segment(segment);
            assert!(!encoded.contains('/') && !encoded.contains(' '));
            assert_eq!(decode_path_segment(&encoded).as_deref(), Some(segment));
        }
    }

    #[test]
    fn malformed_segments_are_rejected() {
        for segment in ["%", "%4", "%zz", "%ff"] {
            assert_eq!(decode_path_segment(segment), None, "{segment:?}");
        }
    }
}

/// Body of `PUT /v1/buckets/<name>/consistency`: the bucket's own quorums, or null for the
/// cluster's.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BucketConsistencyRequest {
    /// W, R and D; None: the cluster's.
    pub consistency: Option<crate::cluster::Consistency>,
}

/// Body of `POST /v1/cache/purge`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PurgeCacheRequest {
    /// The bucket.
    pub bucket: String,
    /// The key, or the prefix of the keys.
    pub key: String,
    /// Whether `key` is a prefix.
    #[serde(default)]
    pub prefix: bool,
}

/// Answer of `POST /v1/cache/purge`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CachePurged {
    /// The purge's number.
    pub seq: u64,
    /// The bucket.
    pub bucket: String,
    /// The key, or the prefix of the keys.
    pub key: String,
    /// Whether `key` is a prefix.
    pub prefix: bool,
    /// Gateway nodes running.
    pub gateways: u32,
    /// Those that had not confirmed the purge within a few seconds (they apply it once their
    /// catalog catches up).
    pub gateways_behind: Vec<u32>,
}
