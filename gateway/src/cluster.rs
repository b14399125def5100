//! The catalog and the membership between nodes: what a node with the manager role offers its
//! peers ([`ManagerServices`]: the catalog, registrations, heartbeats, Raft), and how a node
//! without it registers, keeps a copy of the catalog and the ring in it, and forwards its
//! changes ([`ManagerPeers`], [`CatalogCopy`], [`fetch_catalog`], [`installed_ring`]).
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
use leofs_manager::cluster::NodeState;
use leofs_manager::cluster::{
    HEARTBEAT_CALL, Heartbeat, HeartbeatAnswer, REGISTER_CALL, RegisterAnswer, RegisterRefusal,
    Registration,
};
use leofs_manager::raft::network::{RaftCall, RaftTransport};
use leofs_manager::{
    Bucket, BucketAcl, CatalogApplier, CatalogWriter, Manager, ManagerError, ManagerState,
};
use leofs_shard::remote::blocking::BlockingPeer;
use leofs_shard::remote::codec::{
    CatalogChange, CatalogRefusal, CatalogRefusalKind, CatalogSnapshot,
};
use leofs_shard::ring::{RingView, Vnode};
use leofs_shard::{InstalledRing, NodeServices, ShardError, hash_bytes};
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
        ManagerError::BucketNotEmpty(_) => CatalogRefusalKind::BucketNotEmpty,
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
        CatalogRefusalKind::BucketNotEmpty => ManagerError::BucketNotEmpty(name.into()),
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
                CatalogChange::MarkBucketDeleting { name, incarnation } => {
                    catalog.mark_bucket_deleting(&name, incarnation).await
                }
                CatalogChange::DeleteBucket { name, incarnation } => {
                    catalog.delete_bucket(&name, incarnation).await
                }
                CatalogChange::SetBucketAcl { name, acl } => {
                    let acl = parse_acl(&acl)?;
                    catalog.set_bucket_acl(&name, acl).await
                }
                CatalogChange::SetBucketVersioning { name, enabled } => {
                    catalog.set_bucket_versioning(&name, enabled).await
                }
                CatalogChange::SetBucketLifecycle { name, rules_json } => {
                    let rules = serde_json::from_str(&rules_json).map_err(|e| CatalogRefusal {
                        kind: CatalogRefusalKind::Internal,
                        message: format!("lifecycle rules that do not decode: {e}"),
                    })?;
                    catalog.set_bucket_lifecycle(&name, rules).await
                }
                CatalogChange::SetBucketSetting { name, setting_json } => {
                    let setting =
                        serde_json::from_str(&setting_json).map_err(|e| CatalogRefusal {
                            kind: CatalogRefusalKind::Internal,
                            message: format!("a bucket setting that does not decode: {e}"),
                        })?;
                    catalog.set_bucket_setting(&name, setting).await
                }
            };
            made.map_err(|e| refusal(&e))
        })
    }

    fn raft(&self, call: u8, body: Bytes) -> Pin<Box<dyn Future<Output = Result<Bytes, String>>>> {
        match call {
            REGISTER_CALL => return self.register(body),
            HEARTBEAT_CALL => {
                let answer = serde_json::from_slice::<Heartbeat>(&body)
                    .map_err(|e| format!("malformed heartbeat: {e}"))
                    .map(|beat| self.manager.heartbeat(beat))
                    .and_then(|answer| encode_json(&answer));
                return Box::pin(async move { answer });
            }
            _ => {}
        }
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

impl ManagerServices {
    /// Registers a node on a thread of its own (a Raft write blocks; registrations are rare:
    /// one per node start).
    fn register(&self, body: Bytes) -> Pin<Box<dyn Future<Output = Result<Bytes, String>>>> {
        let registration = match serde_json::from_slice::<Registration>(&body) {
            Ok(registration) => registration,
            Err(e) => {
                let e = format!("malformed registration: {e}");
                return Box::pin(async move { Err(e) });
            }
        };
        let manager = self.manager.clone();
        let (answer, answered) = futures_channel::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("leofs-register".into())
            .spawn(move || {
                let made: RegisterAnswer =
                    manager
                        .register_node(registration)
                        .map_err(|e| RegisterRefusal {
                            conflict: matches!(
                                e,
                                ManagerError::NodeConflict(_) | ManagerError::NoSuchNode(_)
                            ),
                            message: e.to_string(),
                        });
                let _ = answer.send(encode_json(&made));
            });
        Box::pin(async move {
            spawned.map_err(|e| format!("cannot start a registration thread: {e}"))?;
            answered
                .await
                .map_err(|_| "the registration thread ended without an answer".to_owned())?
        })
    }
}

fn encode_json<T: serde::Serialize>(value: &T) -> Result<Bytes, String> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| format!("cannot encode an answer: {e}"))
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

/// The managers a node without the manager role talks to, tried in turn: a call that cannot
/// reach one goes to the next.
pub struct ManagerPeers {
    peers: Vec<BlockingPeer>,
    current: usize,
}

impl ManagerPeers {
    /// The managers at `addrs` (at least one), reached with `auth`, every step bounded by
    /// `timeout`.
    pub fn new(addrs: &[SocketAddr], auth: &ClusterAuth, timeout: Duration) -> Self {
        Self {
            peers: addrs
                .iter()
                .map(|addr| BlockingPeer::new(*addr, auth.clone(), timeout))
                .collect(),
            current: 0,
        }
    }

    /// The manager calls go to first.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.peers.get(self.current).map(BlockingPeer::addr)
    }

    /// Runs `call` on the current manager, then on each other one while they cannot be
    /// reached; the last failure when none could.
    fn call<T>(
        &mut self,
        mut call: impl FnMut(&mut BlockingPeer) -> Result<T, ShardError>,
    ) -> Result<T, ShardError> {
        let mut last = ShardError::ManagerUnavailable("no manager address is configured".into());
        for _ in 0..self.peers.len() {
            let peer = &mut self.peers[self.current];
            match call(peer) {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    tracing::debug!(manager = %peer.addr(), error = %e, "a manager did not answer; trying the next");
                    last = e;
                    self.current = (self.current + 1) % self.peers.len();
                }
            }
        }
        Err(last)
    }

    /// The catalog, unless `known_version` is current.
    pub fn fetch_catalog(
        &mut self,
        known_version: u64,
    ) -> Result<Result<CatalogSnapshot, CatalogRefusal>, ShardError> {
        self.call(|peer| peer.fetch_catalog(known_version))
    }

    /// Registers this node.
    pub fn register(&mut self, registration: &Registration) -> Result<RegisterAnswer, ShardError> {
        let body = Bytes::from(serde_json::to_vec(registration).unwrap_or_default());
        self.call(|peer| {
            let answer = peer.raft(REGISTER_CALL, body.clone())?;
            serde_json::from_slice(&answer)
                .map_err(|e| ShardError::BadAnswer(format!("a registration answer: {e}")))
        })
    }

    fn change_catalog(
        &mut self,
        change: &CatalogChange,
    ) -> Result<Result<(), CatalogRefusal>, ShardError> {
        self.call(|peer| peer.change_catalog(change.clone()))
    }
}

/// Sends `beat` to the manager `peer` reaches; its answer.
pub fn send_heartbeat(
    peer: &mut BlockingPeer,
    beat: &Heartbeat,
) -> Result<HeartbeatAnswer, ShardError> {
    let body = Bytes::from(serde_json::to_vec(beat).unwrap_or_default());
    let answer = peer.raft(HEARTBEAT_CALL, body)?;
    serde_json::from_slice(&answer)
        .map_err(|e| ShardError::BadAnswer(format!("a heartbeat answer: {e}")))
}

/// A node without the manager role: its copy of the catalog (and the ring in it), kept fresh
/// from the managers, and its changes forwarded there. Runs on the catalog thread.
pub struct CatalogCopy {
    managers: ManagerPeers,
    copy: Arc<Manager>,
    version: u64,
    /// Poked whenever a newer catalog is installed: the node's heartbeat then reports it at
    /// once (a bucket deletion waits for every gateway to report its mark).
    changed: Option<std::sync::mpsc::SyncSender<()>>,
    /// Where each newer catalog is saved (see [`leofs_manager::saved_copy`]).
    saved: Option<std::path::PathBuf>,
    /// Whether the last refresh failed (said once per outage).
    unreachable: bool,
}

impl CatalogCopy {
    /// A copy at `version` (from [`fetch_catalog`]), refreshed through `managers`; `changed`
    /// is poked after each newer catalog installed.
    pub fn new(
        managers: ManagerPeers,
        copy: Arc<Manager>,
        version: u64,
        changed: Option<std::sync::mpsc::SyncSender<()>>,
    ) -> Self {
        Self {
            managers,
            copy,
            version,
            changed,
            saved: None,
            unreachable: false,
        }
    }

    /// Saves every newer catalog in `path` from now on, so that the node can start from it
    /// while no manager answers.
    pub fn saving_to(mut self, path: std::path::PathBuf) -> Self {
        self.saved = Some(path);
        self
    }

    /// Fetches the catalog if it changed and installs it.
    fn fetch(&mut self) -> Result<(), ManagerError> {
        let snapshot = self
            .managers
            .fetch_catalog(self.version)
            .map_err(|e| ManagerError::Unreachable(e.to_string()))?
            .map_err(|refusal| ManagerError::Unreachable(refusal.message))?;
        if let Some(bytes) = snapshot.bytes {
            self.copy.install(Manager::decode_snapshot(&bytes)?)?;
            self.version = snapshot.version;
            if let Some(path) = &self.saved {
                save_catalog(path, snapshot.version, &bytes);
            }
            if let Some(changed) = &self.changed {
                // Full: a beat is due anyway.
                let _ = changed.try_send(());
            }
        }
        Ok(())
    }

    /// Forwards `change`, then refreshes the copy so the caller sees its own change. Once the
    /// manager made the change it is reported made, even if the refresh fails (the next one
    /// brings it).
    fn forward(&mut self, change: CatalogChange, name: &str) -> Result<(), ManagerError> {
        self.managers
            .change_catalog(&change)
            .map_err(|e| ManagerError::Unreachable(e.to_string()))?
            .map_err(|refusal| manager_error(refusal, name))?;
        if let Err(e) = self.fetch() {
            tracing::warn!(error = %e, "a catalog change was made, but the copy could not be refreshed yet");
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
        leofs_manager::validate_new_bucket_name(name)?;
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

    fn mark_bucket_deleting(&mut self, name: &str, incarnation: u64) -> Result<(), ManagerError> {
        let change = CatalogChange::MarkBucketDeleting {
            name: name.to_owned(),
            incarnation,
        };
        self.forward(change, name)
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

    fn set_bucket_versioning(&mut self, name: &str, enabled: bool) -> Result<(), ManagerError> {
        let change = CatalogChange::SetBucketVersioning {
            name: name.to_owned(),
            enabled,
        };
        self.forward(change, name)
    }

    fn set_bucket_lifecycle(
        &mut self,
        name: &str,
        rules: Vec<leofs_manager::lifecycle::LifecycleRule>,
    ) -> Result<(), ManagerError> {
        let rules_json = serde_json::to_string(&rules)
            .map_err(|e| ManagerError::Remote(format!("cannot encode lifecycle rules: {e}")))?;
        let change = CatalogChange::SetBucketLifecycle {
            name: name.to_owned(),
            rules_json,
        };
        self.forward(change, name)
    }

    fn set_bucket_setting(
        &mut self,
        name: &str,
        setting: leofs_manager::BucketSetting,
    ) -> Result<(), ManagerError> {
        let setting_json = serde_json::to_string(&setting)
            .map_err(|e| ManagerError::Remote(format!("cannot encode a bucket setting: {e}")))?;
        let change = CatalogChange::SetBucketSetting {
            name: name.to_owned(),
            setting_json,
        };
        self.forward(change, name)
    }

    fn refresh(&mut self) -> Result<(), ManagerError> {
        self.fetch()
    }

    fn idle(&mut self) {
        match self.fetch() {
            Ok(()) if self.unreachable => {
                self.unreachable = false;
                tracing::info!("the managers answer again; the catalog is current");
            }
            Ok(()) => {}
            Err(e) if !self.unreachable => {
                self.unreachable = true;
                tracing::warn!(error = %e, "no manager answers; serving with the last catalog and ring");
            }
            Err(e) => tracing::debug!(error = %e, "still no manager answers"),
        }
    }
}

/// A catalog fetched from the managers: decoded, its version, and its bytes as sent (what a
/// node saves, see [`save_catalog`]).
pub struct FetchedCatalog {
    /// The catalog, with the ring and the members in it.
    pub state: ManagerState,
    /// Its version.
    pub version: u64,
    /// Its encoded snapshot.
    pub bytes: Bytes,
}

/// Fetches the catalog from the managers (blocking; at start-up).
pub fn fetch_catalog(managers: &mut ManagerPeers) -> Result<FetchedCatalog, JoinError> {
    let snapshot = managers
        .fetch_catalog(0)?
        .map_err(|r| JoinError::Catalog(r.message))?;
    let bytes = snapshot
        .bytes
        .ok_or_else(|| JoinError::Catalog("the manager sent no catalog".into()))?;
    Ok(FetchedCatalog {
        state: Manager::decode_snapshot(&bytes)?,
        version: snapshot.version,
        bytes,
    })
}

/// Saves the catalog snapshot `bytes` at `version` in `path` for a restart while no manager
/// answers (see [`leofs_manager::saved_copy`]); a failure is logged, not fatal.
pub fn save_catalog(path: &std::path::Path, version: u64, bytes: &[u8]) {
    if let Err(e) = leofs_manager::saved_copy::save(path, version, bytes) {
        tracing::warn!(error = %e, "cannot save the catalog on disk: a restart needs a manager");
    }
}

/// The ring a node routes by, from the managers' record of it: None before the cluster is
/// started. Nodes that are not running (suspended, stopped) are sent no requests.
pub fn installed_ring(state: &ManagerState) -> Result<Option<InstalledRing>, String> {
    let Some(record) = &state.ring else {
        return Ok(None);
    };
    let table = record
        .table
        .iter()
        .map(|(node, shard)| Vnode {
            node: *node,
            shard: *shard,
        })
        .collect();
    let invalid = |e: ShardError| {
        format!(
            "the managers' ring epoch {} is not valid: {e}",
            record.epoch
        )
    };
    let mut ring = RingView::new(
        record.epoch,
        record.partitions,
        record.replicas as usize,
        table,
    )
    .map_err(invalid)?;
    if let Some(rebalance) = &record.rebalance {
        let next = rebalance
            .next
            .iter()
            .map(|(node, shard)| Vnode {
                node: *node,
                shard: *shard,
            })
            .collect();
        ring = ring
            .moving_to(next)
            .map_err(invalid)?
            .fill_quorum_if(rebalance.fill_quorum as usize);
    }
    let ring = ring
        .known_everywhere_if(record.known_everywhere)
        .recovering_if(
            record
                .recovery
                .as_ref()
                .map(|r| (r.node, r.requested_unix_ms)),
        );
    let mut nodes = Vec::new();
    let mut unavailable = Vec::new();
    for member in state.nodes.values() {
        if let Ok(addr) = member.addr.parse::<SocketAddr>() {
            nodes.push((member.id, addr));
        }
        if member.state == NodeState::Suspended {
            unavailable.push(member.id);
        }
    }
    Ok(Some(InstalledRing {
        ring: Arc::new(ring),
        nodes,
        unavailable,
    }))
}

/// Why joining a cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No manager could be reached, or one answered badly.
    #[error(transparent)]
    Node(#[from] ShardError),
    /// The catalog could not be had.
    #[error("the manager has no catalog to give: {0}")]
    Catalog(String),
    /// The catalog does not decode.
    #[error(transparent)]
    Manager(#[from] ManagerError),
}
