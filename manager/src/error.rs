//! Every way a manager operation can fail, in one enum; the gateway maps it to S3 error codes and
//! the admin API to HTTP statuses.

use std::path::PathBuf;

/// Every way a manager operation can fail; the gateway maps these to S3 error codes.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The bucket name breaks the S3 naming rules (the string says which rule).
    #[error("invalid bucket name {name:?}: {reason}")]
    InvalidBucketName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Another user owns a bucket of that name.
    #[error("bucket {0} already exists")]
    BucketAlreadyExists(String),
    /// The caller already owns a bucket of that name.
    #[error("bucket {0} already exists and is owned by you")]
    BucketAlreadyOwnedByYou(String),
    /// No bucket of that name.
    #[error("no such bucket {0}")]
    NoSuchBucket(String),
    /// The bucket to delete holds objects or multipart uploads.
    #[error("bucket {0} is not empty")]
    BucketNotEmpty(String),
    /// A user of that id already exists.
    #[error("user {0} already exists")]
    UserExists(String),
    /// No user of that id.
    #[error("no such user {0}")]
    NoSuchUser(String),
    /// The user still owns buckets.
    #[error("user {0} still owns buckets")]
    UserOwnsBuckets(String),
    /// A bucket policy names the user: the policy is to be changed first.
    #[error("user {0} is named as a principal; change or delete that policy first")]
    UserNamedInPolicy(String),
    /// The user id breaks the naming rules (the string says which rule).
    #[error("invalid user id {user_id:?}: {reason}")]
    InvalidUserId {
        /// The rejected id.
        user_id: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Root credentials given at first start are unusable (the string says why).
    #[error("invalid root credentials: {0}")]
    InvalidCredentials(&'static str),
    /// The admin API could not bind its address or start its thread.
    #[error("cannot start the admin API on {addr}: {source}")]
    AdminBind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the state on disk failed.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Too many catalog changes are waiting for the manager's thread; the caller may retry.
    #[error("the manager is busy: {queued_max} catalog changes are already waiting")]
    Busy {
        /// The bound on waiting changes.
        queued_max: usize,
    },
    /// The manager's thread has stopped (the node is shutting down).
    #[error("the manager's thread has stopped")]
    Stopped,
    /// This node holds a read-only copy of the catalog (it has no manager role); changes go
    /// to the manager of the node it joined.
    #[error("this node holds a read-only copy of the catalog; change it through the manager")]
    ReadOnlyCopy,
    /// The manager of the node this one joined cannot be reached (retryable).
    #[error("the manager is unreachable: {0}")]
    Unreachable(String),
    /// The manager of the node this one joined failed the change.
    #[error("the manager failed the change: {0}")]
    Remote(String),
    /// The manager's Raft group failed (storage, or a stopped group).
    #[error("the manager's Raft group failed: {0}")]
    Raft(String),
    /// The manager's thread could not be started.
    #[error("cannot start the manager's thread: {0}")]
    Thread(#[source] std::io::Error),
    /// No node of that id.
    #[error("no such node {0}")]
    NoSuchNode(u32),
    /// A node or a cluster change conflicts with the cluster as it is (the string says how).
    #[error("{0}")]
    NodeConflict(String),
    /// Quorums that cannot be met with the cluster's N.
    #[error("{0}")]
    InvalidConsistency(String),
    /// A cluster setting out of its bounds.
    #[error("{0}")]
    InvalidSetting(String),
    /// The state file on disk is unreadable.
    #[error("corrupt manager state in {path}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}
