//! The manager's records (users, access keys, buckets, canned ACLs) and the immutable snapshot
//! that the data path reads without locks. Pure data: no I/O here.

use std::collections::{BTreeMap, HashMap};

use crate::cluster::{ClusterSettings, Member, RingRecord};

/// A canned bucket ACL (S3 `x-amz-acl`); the only access control leofs offers today.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketAcl {
    /// Only the owner may read or write.
    Private,
    /// Anyone may read objects (anonymous GET/HEAD/list); only the owner writes.
    PublicRead,
    /// Anyone may read and write.
    PublicReadWrite,
}

impl BucketAcl {
    /// The canonical S3 spelling (`private`, `public-read`, `public-read-write`).
    pub fn as_str(self) -> &'static str {
        match self {
            BucketAcl::Private => "private",
            BucketAcl::PublicRead => "public-read",
            BucketAcl::PublicReadWrite => "public-read-write",
        }
    }

    /// Parses the canonical S3 spelling; `None` for anything else.
    pub fn parse(text: &str) -> Option<BucketAcl> {
        match text {
            "private" => Some(BucketAcl::Private),
            "public-read" => Some(BucketAcl::PublicRead),
            "public-read-write" => Some(BucketAcl::PublicReadWrite),
            _ => None,
        }
    }
}

/// Whom a bucket grant is to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketGrantee {
    /// A user, by id.
    User(String),
    /// Everyone, anonymous requests included (S3's AllUsers group).
    AllUsers,
    /// Every signed request of a known user (S3's AuthenticatedUsers group).
    AuthenticatedUsers,
}

/// What a bucket grant permits (S3's permissions on a bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketPermission {
    /// List the bucket.
    Read,
    /// Write and delete objects in it.
    Write,
    /// Read the bucket's ACL.
    ReadAcp,
    /// Change the bucket's ACL.
    WriteAcp,
    /// All of the above.
    FullControl,
}

impl BucketPermission {
    /// Whether holding `self` permits `wanted`.
    pub fn covers(self, wanted: BucketPermission) -> bool {
        self == wanted || self == BucketPermission::FullControl
    }
}

/// One grant of a bucket's ACL beyond its canned ACL (S3 PutBucketAcl grants).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BucketGrant {
    /// To whom.
    pub grantee: BucketGrantee,
    /// What.
    pub permission: BucketPermission,
}

/// A bucket's versioning (S3 PutBucketVersioning; shard/VERSIONING.md): never enabled, enabled,
/// or suspended. Once enabled it never goes back to never enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketVersioning {
    /// Never enabled: an object has one version, `null`.
    #[default]
    Off,
    /// Every write creates a version.
    Enabled,
    /// Writes replace the `null` version; the versions made while enabled stay.
    Suspended,
}

impl BucketVersioning {
    /// Whether versioning was never enabled (what an older catalog's bucket has).
    pub fn is_off(&self) -> bool {
        *self == BucketVersioning::Off
    }
}

/// A bucket as the manager records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    /// The bucket name (S3 naming rules).
    pub name: String,
    /// User id of the owner.
    pub owner: String,
    /// Canned ACL.
    pub acl: BucketAcl,
    /// Grants beyond the canned ACL (S3 PutBucketAcl grants; `authenticated-read`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<BucketGrant>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Random and nonzero, set when the bucket is created; part of the storage key of each of
    /// its objects, so a bucket deleted and created again under the same name never sees the
    /// old bucket's objects. 0 for buckets created before incarnations existed.
    #[serde(default)]
    pub incarnation: u64,
    /// Being deleted (the first phase of DeleteBucket): gateways refuse writes into it, so
    /// that once every gateway has seen the mark, the bucket checked empty stays empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// The bucket's own quorums, used for its objects instead of the cluster's (`leofs-adm
    /// update-consistency-level --bucket`); None: the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<crate::cluster::Consistency>,
    /// The bucket's versioning.
    #[serde(default, skip_serializing_if = "BucketVersioning::is_off")]
    pub versioning: BucketVersioning,
    /// The bucket's lifecycle rules (none: no lifecycle configuration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycle: Vec<crate::lifecycle::LifecycleRule>,
    /// The bucket's tags (S3 bucket tagging; none: no tag set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// The bucket's CORS rules (none: no CORS configuration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors: Vec<crate::cors::CorsRule>,
    /// The bucket's policy (S3 PutBucketPolicy; none: no policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::BucketPolicy>,
}

/// A bucket setting kept whole with the bucket and replaced whole by one command (the S3
/// bucket configurations that have no effect on storage).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketSetting {
    /// The bucket's tag set (empty: deleted).
    Tags(Vec<(String, String)>),
    /// The bucket's CORS rules (empty: deleted).
    Cors(Vec<crate::cors::CorsRule>),
    /// The bucket's policy (none: deleted).
    Policy(Option<crate::policy::BucketPolicy>),
    /// The bucket's whole ACL: its canned ACL and its grants, replaced together.
    Acl {
        /// The canned ACL.
        canned: BucketAcl,
        /// The grants beyond it.
        grants: Vec<BucketGrant>,
    },
}

/// A user: owns buckets and access keys.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    /// Unique user id (also its display name).
    pub id: String,
    /// Administrators may manage every bucket.
    pub is_admin: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// An S3 access key pair and the user it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessKey {
    /// The public access key id (20 characters, `AKIA…`-like).
    pub access_key_id: String,
    /// The secret (40 characters).
    pub secret_access_key: String,
    /// Owner of the key.
    pub user_id: String,
}

/// Credentials returned when a user or the root key pair is created (printed once).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// The user the key belongs to.
    pub user_id: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

/// An immutable snapshot of users, keys and buckets; readers never take a lock.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManagerState {
    /// Users by id.
    pub users: BTreeMap<String, User>,
    /// Access keys by access key id.
    pub keys: HashMap<String, AccessKey>,
    /// Buckets by name.
    pub buckets: BTreeMap<String, Bucket>,
    /// The cluster's id (32 hex characters), drawn when its manager group was bootstrapped;
    /// every node keeps it in `<data dir>/cluster.id` and presents it in every handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The nodes of the cluster, by id.
    #[serde(default)]
    pub nodes: BTreeMap<u32, Member>,
    /// The RING; None until `leofs-adm start` (or a node with the manager and storage roles
    /// that starts a group of one) makes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingRecord>,
    /// Settings every node must agree on.
    #[serde(default)]
    pub settings: ClusterSettings,
    /// The index of the last Raft log entry applied: a node reports its copy's in every
    /// heartbeat, so the managers know which nodes have seen a change.
    #[serde(default)]
    pub revision: u64,
    /// What operators asked of each storage node's compaction (`leofs-adm compact-*`), by
    /// node id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compaction: BTreeMap<u32, crate::cluster::CompactionOrder>,
    /// The last purges of the gateways' object caches (`leofs-adm purge-cache`), oldest
    /// first, at most [`CACHE_PURGES_KEPT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_purges: Vec<CachePurge>,
}

/// Purges the catalog keeps: a gateway whose cache last applied one older than all of them
/// drops everything it holds.
pub const CACHE_PURGES_KEPT: usize = 256;

/// A purge of every gateway's object cache (`leofs-adm purge-cache`): each gateway core drops
/// what it holds of the objects of `bucket` named `key` (or, with `prefix`, starting with it)
/// before its next cached read.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachePurge {
    /// Its number: one more than the purge before it.
    pub seq: u64,
    /// The bucket's name.
    pub bucket: String,
    /// The key, or the prefix of the keys.
    pub key: String,
    /// Whether `key` is a prefix.
    pub prefix: bool,
}

impl ManagerState {
    /// The key pair for an access key id, if it exists.
    pub fn access_key(&self, access_key_id: &str) -> Option<&AccessKey> {
        self.keys.get(access_key_id)
    }

    /// A bucket by name, if it exists.
    pub fn bucket(&self, name: &str) -> Option<&Bucket> {
        self.buckets.get(name)
    }

    /// A user by id, if it exists.
    pub fn user(&self, user_id: &str) -> Option<&User> {
        self.users.get(user_id)
    }

    /// The member registered under `addr`, if any.
    pub fn node_at(&self, addr: &str) -> Option<&Member> {
        self.nodes.values().find(|m| m.addr == addr)
    }

    /// The ring's checksum ([`leofs_wire::ring_checksum`]); None before the ring exists.
    pub fn ring_checksum(&self) -> Option<u64> {
        self.ring.as_ref().map(RingRecord::checksum)
    }

    /// The access key ids of a user, sorted (for stable listings).
    pub fn keys_of(&self, user_id: &str) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .keys
            .values()
            .filter(|key| key.user_id == user_id)
            .map(|key| key.access_key_id.as_str())
            .collect();
        ids.sort_unstable();
        ids
    }
}
