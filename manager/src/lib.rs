//! leofs-manager: users, access keys and buckets as the state machine of a Raft group of
//! managers (a group of one on a single node), the ring planner, the admin API (HTTP+JSON on
//! loopback, and `/metrics`) and the `leofs-adm` commands.
//!
//! CONTRACT (fixed; the gateway and the binaries build against it): the public items re-exported
//! below and their signatures. Implementations may add items, never change these without
//! coordinating.
//!
//! - [`model`]: users, keys, buckets, ACLs and the lock-free [`ManagerState`] snapshot.
//! - [`error`]: the [`ManagerError`] enum.
//! - [`bucket_name`]: the S3 bucket naming rules.
//! - [`store`]: the durable [`Manager`] (`<data_dir>/manager/`).
//! - [`command`]: the catalog changes, as the values the Raft log holds.
//! - [`raft`]: the manager's state on openraft: its log, state machine and thread.
//! - [`cluster`]: the cluster's members, their states and heartbeats, the RING and the settings
//!   every node agrees on.
//! - [`ring_plan`]: the ring planner, a pure function from membership to ring.
//! - [`catalog`]: [`CatalogWriter`], the manager's own thread that makes catalog changes asked
//!   for from core threads (which must never block on the state file's fsync).
//! - [`persist`]: atomic, owner-only file writes and secret generation.
//! - [`saved_copy`]: the catalog a node without the manager role keeps on disk, to start from
//!   while no manager answers.
//! - [`admin`]: the token-protected HTTP+JSON admin API server.
//! - [`client`]: a small blocking client of the admin API.
//! - [`adm`]: the `leofs-adm` commands and their table/JSON output.

pub mod adm;
pub mod admin;
pub mod bucket_name;
pub mod catalog;
pub mod client;
pub mod cluster;
pub mod command;
pub mod cors;
pub mod error;
pub mod lifecycle;
pub mod model;
pub mod persist;
pub mod policy;
pub mod raft;
pub mod ring_plan;
pub mod saved_copy;
pub mod store;

pub use bucket_name::{validate_bucket_name, validate_new_bucket_name};
pub use catalog::{CatalogApplier, CatalogWriter};
pub use error::ManagerError;
pub use model::{
    AccessKey, Bucket, BucketAcl, BucketGrant, BucketGrantee, BucketPermission, BucketSetting,
    BucketVersioning, Credentials, ManagerState, User,
};
pub use store::Manager;
