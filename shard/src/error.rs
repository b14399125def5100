//! The one error type of the node: every way starting, routing or serving can fail.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Every way a node operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The owning core's engine failed.
    #[error(transparent)]
    Engine(#[from] leofs_engine::EngineError),
    /// The node configuration is unusable (the string says why and what to do).
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// The data directory was created with a different layout than requested.
    #[error(
        "data dir {dir} was created with {stored_cores} cores and {stored_partitions} partitions, \
         but {cores} cores and {partitions} partitions were requested; start with --cores \
         {stored_cores} (changing the core count of a data dir is not supported)"
    )]
    LayoutMismatch {
        /// The data directory.
        dir: PathBuf,
        /// Core count stored in `node.toml`.
        stored_cores: usize,
        /// Partition count stored in `node.toml`.
        stored_partitions: u32,
        /// Core count requested.
        cores: usize,
        /// Partition count requested.
        partitions: u32,
    },
    /// Reading or writing a node file failed.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The node layout file exists but cannot be understood.
    #[error("corrupt node layout {path}: {detail}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A listener could not be bound.
    #[error("cannot bind {addr}: {}", bind_reason(error))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error (not a `source`: the message already says it, once).
        error: std::io::Error,
    },
    /// A core thread or its io_uring runtime could not be started.
    #[error("cannot start core {core}: {source}")]
    CoreStart {
        /// The core.
        core: usize,
        /// The OS error (a failed io_uring setup usually means RLIMIT_MEMLOCK is below 1 MiB).
        #[source]
        source: std::io::Error,
    },
    /// The caller's per-core initialisation failed.
    #[error("initialising core {core} failed: {source}")]
    Init {
        /// The core.
        core: usize,
        /// The caller's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A partition number outside the node's partition map.
    #[error("partition {partition} out of range (the node has {partitions} partitions)")]
    PartitionOutOfRange {
        /// The partition asked for.
        partition: u32,
        /// Partitions of the node.
        partitions: u32,
    },
    /// The core that owns the data has stopped (the node is shutting down).
    #[error("core {core} has stopped")]
    CoreStopped {
        /// The core.
        core: usize,
    },
    /// The node is shutting down and accepts no new listeners.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A core thread panicked.
    #[error("core {core} panicked")]
    CorePanicked {
        /// The core.
        core: usize,
    },
    /// A write's precondition (`If-Match`, `If-None-Match`) did not hold at its commit point.
    #[error("the write's precondition does not hold")]
    PreconditionFailed,
    /// A write required an object (`If-Match`) that does not exist at its commit point.
    #[error("the write requires an existing object, and there is none")]
    NoSuchObject,
    /// A chunk a manifest (or a part) references is missing.
    #[error("chunk {index} of {bucket}/{key} is missing")]
    MissingChunk {
        /// The object's bucket.
        bucket: String,
        /// The object's key.
        key: String,
        /// Index of the chunk within its version.
        index: u32,
    },
    /// A request named a partition whose first replica is on another node; this node cannot
    /// reach other nodes yet.
    #[error("partition {partition} is held by node {node}, which this node cannot reach")]
    RemoteVnode {
        /// The partition.
        partition: u32,
        /// The node holding it.
        node: u32,
    },
    /// A request named a partition held by a node an operator suspended.
    #[error(
        "partition {partition} is held by node {node}, which is suspended (leofs-adm resume {node})"
    )]
    NodeSuspended {
        /// The partition.
        partition: u32,
        /// The node holding it.
        node: u32,
    },
    /// This node has no ring yet (the cluster is not started).
    #[error("the cluster has no ring yet (leofs-adm start)")]
    NoRing,
    /// A conditional write reached a replica that may not decide it now: it is not the
    /// partition's first replica in its ring, or the ring changed and not every node routes by
    /// it yet (two could then decide concurrent creators differently). Retried by the client.
    #[error(
        "partition {partition}'s ring is changing: a conditional write cannot be decided now; try again"
    )]
    RingChanging {
        /// The partition.
        partition: u32,
    },
    /// A peer routed a request by a newer ring than this node's, and this node could not
    /// fetch that ring in time: it serves nothing by an older ring.
    #[error(
        "a peer routes by ring epoch {wanted}, this node only has epoch {have} and could not fetch the newer ring within {waited_ms} ms (are the managers reachable?)"
    )]
    RingBehind {
        /// The sender's ring epoch.
        wanted: u64,
        /// This node's.
        have: u64,
        /// How long it waited for the newer ring.
        waited_ms: u64,
    },
    /// A write was stamped further ahead of this replica's clock than the cluster tolerates:
    /// the coordinator's clock is off (see `leofs-adm status`, column "clock offset").
    #[error(
        "a write stamped {ahead_us} µs ahead of this node's clock, more than the cluster's bound of {bound_us} µs: the coordinating node's clock is off"
    )]
    ClockAhead {
        /// By how much the stamp was ahead.
        ahead_us: u64,
        /// The bound.
        bound_us: u64,
    },
    /// A client's write arrived after its coordinator's round must have ended (a replica
    /// stopped or stalled that long): refused, so that it cannot land below a repaired-at
    /// watermark set meanwhile; the coordinator's hint or anti-entropy brings the replica level.
    #[error(
        "a client write stamped {age_ms} ms ago arrived after its round must have ended (at most {max_ms} ms)"
    )]
    WriteTooOld {
        /// How old the stamp was.
        age_ms: u64,
        /// The longest a client write may travel.
        max_ms: u64,
    },
    /// This node's clock is off the managers' by more than the cluster's bound, so it stamps
    /// no replicated write: the request can go through another gateway.
    #[error(
        "this node's clock is off the cluster's by more than the bound (see leofs-adm status): it coordinates no write until its time source is fixed; send writes through another gateway"
    )]
    ClockBeyondBound,
    /// Fewer replicas of a partition are known up than the request's quorum: it fails at once
    /// and nothing is written.
    #[error("{up} replicas of partition {partition} are up, {needed} are needed: try again later")]
    TooFewReplicas {
        /// The partition.
        partition: u32,
        /// Replicas known up.
        up: usize,
        /// The quorum (W, R or D).
        needed: usize,
    },
    /// A replicated request could not reach its quorum: a write is indeterminate where some
    /// replicas stored it (repair makes them converge to one outcome).
    #[error(
        "partition {partition}: {stored} replicas answered, {needed} were needed (last failure: {last})"
    )]
    QuorumFailed {
        /// The partition.
        partition: u32,
        /// Replicas that answered.
        stored: usize,
        /// The quorum.
        needed: usize,
        /// The last replica failure seen.
        last: String,
        /// Every replica that failed the round refused for lack of room (none was down or
        /// unreachable): retrying will not help until room is made, so it is a full disk
        /// (507), not an unavailable service (503).
        disk_full: bool,
    },
    /// A request reached a vnode that does not hold its partition (the sender routed with
    /// another ring).
    #[error("partition {partition} is not held by core {core} at ring epoch {epoch}")]
    NotHeldHere {
        /// The partition.
        partition: u32,
        /// The core the request reached.
        core: usize,
        /// The ring epoch of the core.
        epoch: u64,
    },
    /// A request that must name its partition did not.
    #[error("a {kind} request names no partition and cannot be routed")]
    UnaddressedRequest {
        /// The request's kind.
        kind: &'static str,
    },
    /// The executor answered a request with the wrong kind of response (a bug).
    #[error("expected a {expected} response, got {got}")]
    UnexpectedResponse {
        /// The response kind the request calls for.
        expected: &'static str,
        /// The response kind received.
        got: &'static str,
    },
    /// A request asked for more than a named limit allows.
    #[error("{what} of {got} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What was limited, with its unit.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// What was asked.
        got: u64,
    },
    /// A stored object-layout record does not decode.
    #[error(transparent)]
    Record(#[from] crate::object::LayoutError),
    /// A peer node could not be reached, or its connection failed (retryable).
    #[error("storage node unreachable: {0}")]
    Wire(#[from] leofs_wire::WireError),
    /// A peer node's storage failed or refused the request; `class` says how, as it would
    /// for the same failure on this node.
    #[error("storage node answered: {message}")]
    Remote {
        /// What kind of failure.
        class: ErrorClass,
        /// The peer's sentence.
        message: String,
        /// For [`ErrorClass::MissingChunk`], the chunk's index.
        index: u32,
    },
    /// A peer sent an answer this node cannot use (a bug or a version skew).
    #[error("bad answer from a storage node: {0}")]
    BadAnswer(String),
    /// A storage request reached a node without the storage role.
    #[error("this node stores nothing (it has no storage role)")]
    NoStorage,
    /// A call for the manager reached a node that cannot serve it now (no manager role, or a
    /// manager that failed the call).
    #[error("the manager cannot serve this call: {0}")]
    ManagerUnavailable(String),
}

/// What kind of failure a [`ShardError`] is, the same whether it happened on this node or on a
/// peer: what a gateway answers for it, and what travels on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A bug or a failed disk: the request cannot succeed as asked.
    Internal,
    /// Storage is stopping, unreachable or busy: retry later.
    Unavailable,
    /// No room for new data.
    DiskFull,
    /// A body or metadata over its limit.
    TooLarge,
    /// A key over its limit.
    KeyTooLarge,
    /// The request's body stream failed.
    Body,
    /// A write's precondition did not hold.
    PreconditionFailed,
    /// A write required an object that does not exist.
    NoSuchObject,
    /// A chunk a manifest references is missing.
    MissingChunk,
    /// The vnode does not hold the partition (rings differ).
    NotHeldHere,
    /// A stored record does not decode, or fails its checksum.
    Corrupt,
    /// A request asked for more than a named limit.
    LimitExceeded,
}

impl ShardError {
    /// The kind of failure (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        use leofs_engine::EngineError as E;
        match self {
            Self::Engine(E::DiskFull { .. })
            | Self::QuorumFailed {
                disk_full: true, ..
            } => ErrorClass::DiskFull,
            Self::Engine(E::TooLarge { what, .. }) if what.contains("key") => {
                ErrorClass::KeyTooLarge
            }
            Self::Engine(E::TooLarge { .. }) => ErrorClass::TooLarge,
            Self::Engine(E::Body(_)) => ErrorClass::Body,
            Self::Engine(E::Closed)
            | Self::CoreStopped { .. }
            | Self::ShuttingDown
            | Self::RemoteVnode { .. }
            | Self::NodeSuspended { .. }
            | Self::NoRing
            | Self::RingBehind { .. }
            | Self::RingChanging { .. }
            | Self::TooFewReplicas { .. }
            | Self::ClockAhead { .. }
            | Self::WriteTooOld { .. }
            | Self::ClockBeyondBound
            | Self::QuorumFailed { .. }
            | Self::Wire(_)
            | Self::NoStorage
            | Self::ManagerUnavailable(_) => ErrorClass::Unavailable,
            Self::PreconditionFailed => ErrorClass::PreconditionFailed,
            Self::NoSuchObject => ErrorClass::NoSuchObject,
            Self::MissingChunk { .. } => ErrorClass::MissingChunk,
            Self::NotHeldHere { .. } => ErrorClass::NotHeldHere,
            Self::Record(_) | Self::Engine(E::Corrupt { .. }) => ErrorClass::Corrupt,
            Self::LimitExceeded { .. } => ErrorClass::LimitExceeded,
            Self::Remote { class, .. } => *class,
            Self::Engine(E::Io { .. } | E::Format { .. })
            | Self::Config(_)
            | Self::LayoutMismatch { .. }
            | Self::Io { .. }
            | Self::Layout { .. }
            | Self::Bind { .. }
            | Self::CoreStart { .. }
            | Self::Init { .. }
            | Self::PartitionOutOfRange { .. }
            | Self::CorePanicked { .. }
            | Self::UnaddressedRequest { .. }
            | Self::UnexpectedResponse { .. }
            | Self::BadAnswer(_) => ErrorClass::Internal,
        }
    }

    /// The index of the missing chunk, for a [`ErrorClass::MissingChunk`] failure.
    pub fn missing_chunk(&self) -> Option<u32> {
        match self {
            Self::MissingChunk { index, .. } => Some(*index),
            Self::Remote {
                class: ErrorClass::MissingChunk,
                index,
                ..
            } => Some(*index),
            _ => None,
        }
    }
}

/// A short human reason for a bind failure ("address in use" rather than the errno text).
fn bind_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    }
}
