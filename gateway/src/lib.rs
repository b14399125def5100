//! leofs-gateway: S3 and REST over HTTP/1.1 on s3s and hyper: routing, auth, chunking, multipart,
//! listing.
//!
//! - [`service`]: `serve_core`, building the s3s service (auth, host, access) per core;
//! - [`cluster`]: the catalog between nodes (a manager's services, a joined node's copy);
//! - [`body`]: request bodies with the no-progress timer (S3's `RequestTimeout`);
//! - [`auth`]: SigV4 secret lookup, bucket ACL checks, virtual-host parsing, bucket-name rules;
//! - [`fast_path`]: plain GetObject/HeadObject/PutObject answered in front of s3s, with
//!   [`sigv4`] verification and a per-core signing-key cache;
//! - [`metered`]: every S3 request counted by operation and status, for `/metrics`;
//! - [`s3`]: the S3 operations, one file per family (bucket, put, get, list, multipart, copy, delete);
//! - [`rest`]: LeoFS's plain REST API;
//! - [`store`]: object I/O (chunked streaming writes and reads, manifest commit, leases);
//! - [`storage`]: [`storage::Storage`], the one handle every storage call goes through;
//! - [`layout`]: engine keys, chunk arithmetic, ETags and record encodings;
//! - [`error`]: every internal error mapped to one S3 error code.

pub mod access_log;
pub mod acl;
pub mod auth;
pub mod body;
pub mod cache;
pub mod cluster;
pub mod cors;
pub mod disk_cache;
pub mod error;
pub mod fast_path;
pub mod layout;
pub mod lifecycle;
mod lru;
pub mod md5;
pub mod metered;
pub mod post_form;
pub mod rest;
pub mod s3;
pub mod service;
pub mod sigv4;
pub mod sse;
pub mod storage;
pub mod store;

pub use error::GatewayError;
pub use service::serve_core;

use std::time::Duration;

/// Default chunk size of large objects (bytes).
pub const DEFAULT_CHUNK_SIZE_BYTES: u64 = 4 * 1024 * 1024;

/// Default longest wait for the next byte of a request body before the request ends with
/// `RequestTimeout` (see [`body`]).
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Gateway settings shared by every core.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Region reported to clients and accepted as location constraint ("us-east-1").
    pub region: String,
    /// Base domain for virtual-host-style addressing (`bucket.<domain>`); None: path style only.
    pub virtual_host_domain: Option<String>,
    /// Objects larger than this are cut into chunks of this size (bytes, ≤ the engine's body limit).
    pub chunk_size_bytes: u64,
    /// Longest wait for the next byte of a request body (S3, fast path and REST alike); then
    /// the request ends with `RequestTimeout` and its connection closes.
    pub body_idle_timeout: Duration,
    /// Bytes of each core's object cache ([`cache`]); 0: no cache.
    pub object_cache_bytes_per_core: u64,
    /// For buckets read at R=1 only: how long after the replicas last confirmed it a cached
    /// object is served without asking them again (zero: every hit is revalidated). The bound
    /// on how stale such a read may be after an overwrite or delete through another gateway.
    pub object_cache_r1_staleness: Duration,
    /// The disk cache of a gateway-only node ([`disk_cache`]); None: none.
    pub disk_cache: Option<DiskCacheConfig>,
    /// How the lifecycle worker of a storage node runs ([`lifecycle`]).
    pub lifecycle: lifecycle::LifecycleSettings,
    /// The node's access log ([`access_log`]); None: none.
    pub access_log: Option<access_log::AccessLog>,
}

/// Where and how large a gateway's disk cache is, and its writer thread.
#[derive(Clone, Debug)]
pub struct DiskCacheConfig {
    /// The cache's directory; each core keeps its files in `core-<i>` under it.
    pub dir: std::path::PathBuf,
    /// Disk space each core's files may take (bytes).
    pub bytes_per_core: u64,
    /// The node's writer thread.
    pub writer: disk_cache::DiskCacheWriter,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            virtual_host_domain: None,
            chunk_size_bytes: DEFAULT_CHUNK_SIZE_BYTES,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            object_cache_bytes_per_core: 0,
            object_cache_r1_staleness: Duration::ZERO,
            disk_cache: None,
            lifecycle: lifecycle::LifecycleSettings::default(),
            access_log: None,
        }
    }
}
