//! The catalog between nodes: what a node with the manager role offers its peers
//! ([`ManagerServices`]), and how a node without it keeps a copy of the catalog and forwards
//! its changes ([`CatalogCopy`], [`join`]).
//!
//! A copy is refreshed every [`leofs_manager::catalog::CATALOG_IDLE_INTERVAL`] and after each
//! change it forwards; between refreshes it may be a second late, which storage keys tolerate:
//! a bucket's incarnation is in every key, so a late copy never reads a re-created bucket's
//! objects as its own.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use leofs_manager::raft::network::{RaftCall, RaftTransport};
use leofs_manager::{
    Bucket, BucketAcl, CatalogApplier, CatalogWriter, Manager, ManagerError, ManagerState,
};
use leofs_shard::remote::blocking::BlockingPeer;
use leofs_shard::remote::codec::{
    CatalogChange, CatalogRefusal, CatalogRefusalKind, CatalogSnapshot, ClusterRing,
};
use leofs_shard::{NodeServices, ShardError, hash_bytes};
use leofs_wire::ClusterAuth;

/// Bound on connecting to another manager and on each read and write of a call to it.
pub const RAFT_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The catalog services of a node with the manager role.
pub struct ManagerServices {
    manager: Arc<Manager>,
    catalog: CatalogWriter,
    /// The last state encoded, with its version and encoding: every gateway asks once a
    /// second, and the state rarely changes.
    encoded: Mutex<Option<(Arc<ManagerState>, u64, Bytes)>>,
}

impl ManagerServices {
    /// Services over the node's manager and its catalog writer.
    pub fn new(manager: Arc<Manager>, catalog: CatalogWriter) -> Self {
        Self {
            manager,
            catalog,
            encoded: Mutex::new(None),
        }
    }

    /// The current state's version and encoding, encoded once per state.
    fn encoded(&self) -> (u64, Bytes) {
        let state = self.manager.snapshot();
        let mut encoded = self.encoded.lock().unwrap_or_else(PoisonError::into_inner);
        match &*encoded {
            Some((of, version, bytes)) if Arc::ptr_eq(of, &state) => (*version, bytes.clone()),
            _ => {
                let bytes = Bytes::from(Manager::encode_snapshot(&state));
                let version = hash_bytes(&bytes);
                *encoded = Some((state, version, bytes.clone()));
                (version, bytes)
            }
        }
    }
}

/// How the manager refused a change, as the wire carries it.
fn refusal(e: &ManagerError) -> CatalogRefusal {
    let kind = match e {
        ManagerError::InvalidBucketName { .. } => CatalogRefusalKind::InvalidBucketName,
        ManagerError::BucketAlreadyExists(_) => CatalogRefusalKind::BucketAlreadyExists,
        ManagerError::BucketAlreadyOwnedByYou(_) => CatalogRefusalKind::BucketAlreadyOwnedByYou,
        ManagerError::NoSuchBucket(_) => CatalogRefusalKind::NoSuchBucket,
        ManagerError::Busy { .. } => CatalogRefusalKind::Busy,
        ManagerError::Stopped | ManagerError::Unreachable(_) | ManagerError::Raft(_) => {
            CatalogRefusalKind::Unavailable
        }
        _ => CatalogRefusalKind::Internal,
    };
    CatalogRefusal {
        kind,
        message: e.to_string(),
    }
}

/// The manager error a forwarded change was refused with.
fn manager_error(refusal: CatalogRefusal, name: &str) -> ManagerError {
    match refusal.kind {
        CatalogRefusalKind::InvalidBucketName => ManagerError::InvalidBucketName {
            name: name.to_owned(),
            reason: "refused by the manager",
        },
        CatalogRefusalKind::BucketAlreadyExists => ManagerError::BucketAlreadyExists(name.into()),
        CatalogRefusalKind::BucketAlreadyOwnedByYou => {
            ManagerError::BucketAlreadyOwnedByYou(name.into())
        }
        CatalogRefusalKind::NoSuchBucket => ManagerError::NoSuchBucket(name.into()),
        CatalogRefusalKind::Busy => ManagerError::Busy {
            queued_max: leofs_manager::catalog::CATALOG_CHANGES_QUEUED_MAX,
        },
        CatalogRefusalKind::Unavailable => ManagerError::Unreachable(refusal.message),
        CatalogRefusalKind::Internal => ManagerError::Remote(refusal.message),
    }
}

fn parse_acl(acl: &str) -> Result<BucketAcl, CatalogRefusal> {
    BucketAcl::parse(acl).ok_or_else(|| CatalogRefusal {
        kind: CatalogRefusalKind::Internal,
        message: format!("unknown canned ACL {acl:?}"),
    })
}

impl NodeServices for ManagerServices {
    fn catalog(&self, known_version: u64) -> Result<CatalogSnapshot, CatalogRefusal> {
        let (version, bytes) = self.encoded();
        Ok(CatalogSnapshot {
            version,
            bytes: (version != known_version).then_some(bytes),
        })
    }

    fn change_catalog(
        &self,
        change: CatalogChange,
    ) -> Pin<Box<dyn Future<Output = Result<(), CatalogRefusal>>>> {
        let catalog = self.catalog.clone();
        Box::pin(async move {
            let made = match change {
                CatalogChange::CreateBucket { name, owner, acl } => {
                    let acl = parse_acl(&acl)?;
                    catalog.create_bucket(&name, &owner, acl).await.map(drop)
                }
                CatalogChange::DeleteBucket { name, incarnation } => {
                    catalog.delete_bucket(&name, incarnation).await
                }
                CatalogChange::SetBucketAcl { name, acl } => {
                    let acl = parse_acl(&acl)?;
                    catalog.set_bucket_acl(&name, acl).await
                }
            };
            made.map_err(|e| refusal(&e))
        })
    }

    fn raft(&self, call: u8, body: Bytes) -> Pin<Box<dyn Future<Output = Result<Bytes, String>>>> {
        let served = RaftCall::from_u8(call)
            .ok_or_else(|| format!("unknown manager call {call}"))
            .and_then(|call| {
                self.manager
                    .serve_raft(call, body.to_vec())
                    .map_err(|e| e.to_string())
            });
        Box::pin(async move { served?.await.map(Bytes::from).map_err(|e| e.to_string()) })
    }
}

/// Managers reach each other through the node wire: one blocking connection per manager
/// address (a call at a time; openraft sends one stream per peer), reopened after a failure.
pub struct WireRaftTransport {
    auth: ClusterAuth,
    peers: Mutex<HashMap<String, Arc<Mutex<BlockingPeer>>>>,
}

impl WireRaftTransport {
    /// A transport authenticating with `auth`.
    pub fn new(auth: ClusterAuth) -> Self {
        Self {
            auth,
            peers: Mutex::new(HashMap::new()),
        }
    }
}

impl RaftTransport for WireRaftTransport {
    fn call(
        &self,
        addr: &str,
        call: RaftCall,
        body: Vec<u8>,
        _timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        // openraft bounds each call itself; the connection's own bound is RAFT_CALL_TIMEOUT.
        let peer = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            match peers.get(addr) {
                Some(peer) => peer.clone(),
                None => {
                    let socket: SocketAddr = addr
                        .parse()
                        .map_err(|e| format!("manager address {addr:?}: {e}"))?;
                    let peer = Arc::new(Mutex::new(BlockingPeer::new(
                        socket,
                        self.auth.clone(),
                        RAFT_CALL_TIMEOUT,
                    )));
                    peers.insert(addr.to_owned(), peer.clone());
                    peer
                }
            }
        };
        let mut peer = peer.lock().unwrap_or_else(PoisonError::into_inner);
        peer.raft(call as u8, Bytes::from(body))
            .map(|bytes| bytes.to_vec())
            .map_err(|e| e.to_string())
    }
}

/// A node without the manager role: its copy of the catalog, kept fresh from the node it
/// joined, and its changes forwarded there. Runs on the catalog thread.
pub struct CatalogCopy {
    peer: BlockingPeer,
    copy: Arc<Manager>,
    version: u64,
}

impl CatalogCopy {
    /// A copy at `version` (from [`join`]), refreshed through `peer`.
    pub fn new(peer: BlockingPeer, copy: Arc<Manager>, version: u64) -> Self {
        Self {
            peer,
            copy,
            version,
        }
    }

    /// Fetches the catalog if it changed and installs it.
    fn fetch(&mut self) -> Result<(), ManagerError> {
        let snapshot = self
            .peer
            .fetch_catalog(self.version)
            .map_err(|e| ManagerError::Unreachable(e.to_string()))?
            .map_err(|refusal| ManagerError::Unreachable(refusal.message))?;
        match snapshot.bytes {
            Some(bytes) => {
                self.copy.install(Manager::decode_snapshot(&bytes)?)?;
                self.version = snapshot.version;
            }
            None => self.copy.confirm_current(),
        }
        Ok(())
    }

    /// Forwards `change`, then refreshes the copy so the caller sees its own change. Once the
    /// manager made the change it is reported made, even if the refresh fails (the next one
    /// brings it).
    fn forward(&mut self, change: CatalogChange, name: &str) -> Result<(), ManagerError> {
        self.peer
            .change_catalog(change)
            .map_err(|e| ManagerError::Unreachable(e.to_string()))?
            .map_err(|refusal| manager_error(refusal, name))?;
        if let Err(e) = self.fetch() {
            tracing::warn!(peer = %self.peer.addr(), error = %e, "a catalog change was made, but the copy could not be refreshed yet");
        }
        Ok(())
    }
}

impl CatalogApplier for CatalogCopy {
    fn create_bucket(
        &mut self,
        name: &str,
        owner: &str,
        acl: BucketAcl,
    ) -> Result<Bucket, ManagerError> {
        leofs_manager::validate_bucket_name(name)?;
        let change = CatalogChange::CreateBucket {
            name: name.to_owned(),
            owner: owner.to_owned(),
            acl: acl.as_str().to_owned(),
        };
        self.forward(change, name)?;
        self.copy.snapshot().bucket(name).cloned().ok_or_else(|| {
            ManagerError::Unreachable(format!(
                "bucket {name} was created, but this node's copy of the catalog is not refreshed yet"
            ))
        })
    }

    fn delete_bucket(&mut self, name: &str, incarnation: u64) -> Result<(), ManagerError> {
        let change = CatalogChange::DeleteBucket {
            name: name.to_owned(),
            incarnation,
        };
        self.forward(change, name)
    }

    fn set_bucket_acl(&mut self, name: &str, acl: BucketAcl) -> Result<(), ManagerError> {
        let change = CatalogChange::SetBucketAcl {
            name: name.to_owned(),
            acl: acl.as_str().to_owned(),
        };
        self.forward(change, name)
    }

    fn refresh(&mut self) -> Result<(), ManagerError> {
        self.fetch()
    }

    fn idle(&mut self) {
        if let Err(e) = self.fetch() {
            tracing::warn!(peer = %self.peer.addr(), error = %e, "cannot refresh the catalog copy; serving the last one");
        }
    }
}

/// What a node without storage learns from the node it joins: the ring, and the catalog with
/// its version.
pub struct Joined {
    /// The ring and the storage nodes' addresses.
    pub ring: ClusterRing,
    /// The catalog.
    pub catalog: ManagerState,
    /// Its version.
    pub catalog_version: u64,
}

/// Fetches the ring and the catalog from `peer` (blocking; at start-up).
pub fn join(peer: &mut BlockingPeer) -> Result<Joined, JoinError> {
    let ring = peer.fetch_ring()?;
    let snapshot = peer
        .fetch_catalog(0)?
        .map_err(|r| JoinError::Catalog(r.message))?;
    let bytes = snapshot
        .bytes
        .ok_or_else(|| JoinError::Catalog("the manager sent no catalog".into()))?;
    let catalog = Manager::decode_snapshot(&bytes)?;
    Ok(Joined {
        ring,
        catalog,
        catalog_version: snapshot.version,
    })
}

/// Why joining a node failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The node could not be reached, or answered badly.
    #[error(transparent)]
    Node(#[from] ShardError),
    /// Its catalog could not be had.
    #[error("the joined node has no catalog to give: {0}")]
    Catalog(String),
    /// Its catalog does not decode.
    #[error(transparent)]
    Manager(#[from] ManagerError),
}
