//! Other nodes: the storage vocabulary over `leofs-wire` (DESIGN §4a, §9).
//!
//! - [`codec`]: [`StorageRequest`]/[`StorageResponse`] (and the few node requests: the ring,
//!   the catalog) to and from envelopes.
//! - `server`: each core of a node with an RPC address serves its peers on `rpc_port + core`
//!   (a request crosses no core on the receiving node); storage requests run on the core's
//!   executor, catalog requests go to the node's [`NodeServices`].
//! - Calling: a core reaches a vnode on another node through its [`leofs_wire::Peer`] for that
//!   node (one per node per core), with the lane and in-flight bytes chosen here.
//!
//! A request whose vnode is on another node goes there and nowhere else: the ring decides, and
//! [`Shard::send_to_vnode`](crate::Shard::send_to_vnode) is the one place that tells the two
//! apart.

pub mod blocking;
pub mod codec;
pub(crate) mod server;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use leofs_wire::{ClusterAuth, Lane, Peer};

use crate::request::{StorageRequest, StorageResponse};
use crate::ring::{NodeId, Vnode};
use crate::shard::Traffic;
use crate::{Shard, ShardError};
use codec::{CatalogChange, CatalogRefusal, CatalogSnapshot, Expect, NodeAnswer, NodeRequest};

/// Bodies of at least this many bytes travel on the bulk lane.
pub const BULK_BYTES_MIN: usize = 64 * 1024;
/// What a whole-record read holds of the peer's in-flight byte budget (its size is unknown
/// until it arrives).
pub const GET_BUDGET_BYTES: usize = 64 * 1024;

/// How this node serves its peers.
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Shard 0's address; shard *i* listens on its port + *i* (the port must not be 0).
    pub listen: SocketAddr,
    /// The cluster secret and id every peer must prove.
    pub auth: ClusterAuth,
}

/// How this node reaches its peers.
#[derive(Clone, Debug)]
pub struct PeersConfig {
    /// Each peer node's `--rpc-listen` address.
    pub nodes: Vec<(NodeId, SocketAddr)>,
    /// The cluster secret and id to prove.
    pub auth: ClusterAuth,
    /// Longest time a call to a peer waits for its answer.
    pub request_timeout: Duration,
}

/// What a node with the manager role offers its peers besides storage. Implemented by the
/// binary (which holds the manager); called on core threads, so nothing here may block.
pub trait NodeServices: Send + Sync {
    /// The catalog, unless the asker's `known_version` is current.
    fn catalog(&self, known_version: u64) -> Result<CatalogSnapshot, CatalogRefusal>;
    /// Makes a catalog change (on the manager's own thread) and answers.
    fn change_catalog(
        &self,
        change: CatalogChange,
    ) -> Pin<Box<dyn Future<Output = Result<(), CatalogRefusal>>>>;
    /// Serves a call from another manager (on the manager's own thread) and answers.
    fn raft(&self, call: u8, body: Bytes) -> Pin<Box<dyn Future<Output = Result<Bytes, String>>>>;
}

/// The peers one core calls, with its wire counters.
#[derive(Default)]
pub(crate) struct RemotePeers {
    /// How peers are reached (None: this node reaches none).
    config: Option<(ClusterAuth, Duration)>,
    peers: RefCell<HashMap<NodeId, Rc<Peer>>>,
    /// Nodes requests must not be sent to now (suspended by an operator): a request for one
    /// of their partitions fails at once.
    unavailable: RefCell<Vec<NodeId>>,
    /// Requests this core sent to peers.
    pub(crate) sent: Cell<u64>,
    /// Requests this core served for peers.
    pub(crate) served: Cell<u64>,
    /// When this core last logged a request it refused for want of a newer ring.
    pub(crate) ring_behind_logged: Cell<Option<std::time::Instant>>,
}

impl RemotePeers {
    /// One [`Peer`] per node of `config`.
    pub(crate) fn new(config: Option<&PeersConfig>) -> Self {
        let peers = Self {
            config: config.map(|c| (c.auth.clone(), c.request_timeout)),
            ..Self::default()
        };
        if let Some(config) = config {
            peers.set_nodes(&config.nodes, &[]);
        }
        peers
    }

    /// Reaches `nodes` at their addresses from now on (a peer whose address is unchanged keeps
    /// its connections) and sends nothing to `unavailable`.
    pub(crate) fn set_nodes(&self, nodes: &[(NodeId, SocketAddr)], unavailable: &[NodeId]) {
        *self.unavailable.borrow_mut() = unavailable.to_vec();
        let Some((auth, timeout)) = &self.config else {
            return;
        };
        let mut peers = self.peers.borrow_mut();
        for (node, addr) in nodes {
            if peers
                .get(node)
                .is_none_or(|peer| peer.shard_addr(0) != *addr)
            {
                peers.insert(*node, Peer::new(*addr, auth.clone(), *timeout));
            }
        }
    }

    /// Probes, in the background, every peer known down (each at most once per back-off), so
    /// that a node back is seen up before a request needs it: a gateway without traffic to
    /// a returned node would otherwise learn of it only when the others fail.
    pub(crate) fn probe_down_peers(&self) {
        let peers: Vec<(NodeId, Rc<Peer>)> = self
            .peers
            .borrow()
            .iter()
            .map(|(node, peer)| (*node, peer.clone()))
            .collect();
        for (node, peer) in peers {
            if self.is_unavailable(node) {
                continue;
            }
            for shard in peer.down_shards() {
                probe(&peer, shard);
            }
        }
    }

    fn peer(&self, node: NodeId) -> Option<Rc<Peer>> {
        self.peers.borrow().get(&node).cloned()
    }

    fn is_unavailable(&self, node: NodeId) -> bool {
        self.unavailable.borrow().contains(&node)
    }

    /// Whether requests to shard `shard` of `node` may go now: the node is known and not
    /// suspended, and the shard has not failed since it last answered, nor is the whole node
    /// silent ([`Peer::is_down`]; DESIGN §7: failure detection on the data path is local; per
    /// shard, as one core of a node can hang while the others serve). A shard that is down is
    /// probed in the background, at most once per back-off.
    pub(crate) fn is_reachable(&self, node: NodeId, shard: u16) -> bool {
        if self.is_unavailable(node) {
            return false;
        }
        match self.peer(node) {
            Some(peer) if peer.is_down(shard) => {
                probe(&peer, shard);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Shard `shard` of `node` has answered nothing for a while and a caller asked another
    /// replica instead of waiting: one small call to it goes on in the background, so that if
    /// it is hung it is known down after one request timeout, as if the caller had waited
    /// (its own call is dropped with the caller's round).
    pub(crate) fn suspect(&self, node: NodeId, shard: u16) {
        if let Some(peer) = self.peer(node) {
            probe(&peer, shard);
        }
    }

    /// Whether shard `shard` of `node` answered any call from this core at or after `at`
    /// ([`Peer::answered_since`]; false for a node this core has no peer for).
    pub(crate) fn answered_since(&self, node: NodeId, shard: u16, at: Instant) -> bool {
        self.peer(node)
            .is_some_and(|peer| peer.answered_since(shard, at))
    }
}

/// Checks in the background whether shard `shard` of `peer` answers (known down: again;
/// suspected: still): a ring fetch, a small request every shard answers.
fn probe(peer: &Rc<Peer>, shard: u16) {
    peer.probe(shard, |id| {
        codec::encode_request(id, 0, &NodeRequest::FetchRing)
    });
}

/// How often each core probes the peers it knows down.
pub(crate) const DOWN_PEER_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Probes this core's down peers every [`DOWN_PEER_PROBE_INTERVAL`] until the core stops.
pub(crate) async fn run_down_peer_prober(shard: Shard) {
    loop {
        monoio::time::sleep(DOWN_PEER_PROBE_INTERVAL).await;
        if shard.core.objects.stopping.get() {
            return;
        }
        shard.core.remote.probe_down_peers();
    }
}

/// The lane a request travels on: bodies (and reads of them, and scans) on the bulk lane.
fn lane_of(request: &StorageRequest) -> Lane {
    match request {
        StorageRequest::Put { value, .. }
        | StorageRequest::CommitObject { value, .. }
        | StorageRequest::CommitPart { value, .. }
            if value.body.len() >= BULK_BYTES_MIN =>
        {
            Lane::Bulk
        }
        StorageRequest::Get { .. }
        | StorageRequest::GetRange { .. }
        | StorageRequest::Scan { .. }
        | StorageRequest::RangeEntries { .. } => Lane::Bulk,
        _ => Lane::Small,
    }
}

/// What a request holds of the peer's in-flight byte budget: its body, or the answer it expects.
fn budget_bytes(request: &StorageRequest) -> usize {
    match request {
        StorageRequest::Put { value, .. }
        | StorageRequest::CommitObject { value, .. }
        | StorageRequest::CommitPart { value, .. } => value.body.len() + value.meta.len(),
        StorageRequest::GetRange { range, .. } => {
            usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX)
        }
        StorageRequest::Get { .. } => GET_BUDGET_BYTES,
        _ => 0,
    }
}

impl Shard {
    /// The peer of `vnode`'s node, or why there is none.
    fn peer_of(&self, vnode: Vnode, request: &StorageRequest) -> Result<Rc<Peer>, ShardError> {
        let partition = request.partition().unwrap_or(0);
        if self.core.remote.is_unavailable(vnode.node) {
            return Err(ShardError::NodeSuspended {
                partition,
                node: vnode.node,
            });
        }
        self.core
            .remote
            .peer(vnode.node)
            .ok_or(ShardError::RemoteVnode {
                partition,
                node: vnode.node,
            })
    }

    /// Serves `request` on `vnode` of another node; a peer that answers "not held here" may
    /// route by a newer ring: this node then takes the peer's ring if it is newer and, on a
    /// ring of one replica per partition, sends the request once more, where that ring
    /// routes it (a replicated round decides for itself where to send it again).
    pub(crate) async fn call_remote(
        &self,
        vnode: Vnode,
        request: StorageRequest,
        traffic: Traffic,
    ) -> Result<StorageResponse, ShardError> {
        match self.call_remote_once(vnode, request.clone(), traffic).await {
            Err(e) if e.class() == crate::error::ErrorClass::NotHeldHere => {
                let peer = self.peer_of(vnode, &request)?;
                if !self.take_ring_of(&peer).await? || self.replicated() {
                    return Err(e);
                }
                let partition = request.partition().ok_or(e)?;
                let vnode = self.vnode_of(partition)?;
                Box::pin(self.send_to_vnode_as(vnode, request, traffic)).await
            }
            answer => answer,
        }
    }

    /// Fetches `peer`'s ring and installs it on every core of this node if it is newer than
    /// this core's; whether it was.
    async fn take_ring_of(&self, peer: &Rc<Peer>) -> Result<bool, ShardError> {
        let message = peer
            .call(0, Lane::Small, 0, |id| {
                codec::encode_request(id, self.ring().epoch(), &NodeRequest::FetchRing)
            })
            .await?;
        let NodeAnswer::Ring(ring) = codec::decode_answer(&message, Expect::Ring)? else {
            return Err(ShardError::BadAnswer(
                "a ring request answered otherwise".into(),
            ));
        };
        if ring.ring.epoch() <= self.ring().epoch() {
            return Ok(false);
        }
        tracing::info!(
            epoch = ring.ring.epoch(),
            from = %peer.shard_addr(0),
            "a peer routes by a newer ring: taking it"
        );
        let installed = crate::node::InstalledRing {
            ring: Arc::new(ring.ring),
            nodes: ring.nodes,
            unavailable: Vec::new(),
        };
        // This core routes by it at once (the retry follows); the others when their mailbox
        // brings it.
        self.core
            .remote
            .set_nodes(&installed.nodes, &installed.unavailable);
        *self.core.ring.borrow_mut() = installed.ring.clone();
        self.core.node.install_ring(installed);
        Ok(true)
    }

    /// Serves `request` on `vnode` of another node and returns its answer.
    async fn call_remote_once(
        &self,
        vnode: Vnode,
        request: StorageRequest,
        traffic: Traffic,
    ) -> Result<StorageResponse, ShardError> {
        let peer = self.peer_of(vnode, &request)?;
        let epoch = self.ring().epoch();
        let encode = match traffic {
            Traffic::Foreground => codec::encode_request,
            Traffic::Background => codec::encode_background_request,
        };
        if let StorageRequest::Scan {
            partitions,
            prefix,
            start_after,
            limit,
            tombstones,
        } = request
        {
            // A page cut to bound its frame is continued after its last key.
            let mut entries = Vec::new();
            let mut after = start_after;
            loop {
                let request = NodeRequest::Storage(StorageRequest::Scan {
                    partitions: partitions.clone(),
                    prefix: prefix.clone(),
                    start_after: after.clone(),
                    limit: limit - entries.len(),
                    tombstones,
                });
                self.core.remote.sent.set(self.core.remote.sent.get() + 1);
                let message = peer
                    .call(vnode.shard, Lane::Bulk, 0, |id| encode(id, epoch, &request))
                    .await?;
                let page = codec::decode_scan_answer(&message)?;
                let progressed = page
                    .entries
                    .last()
                    .is_some_and(|last| after.as_ref().is_none_or(|a| last.key > *a));
                if page.truncated && !progressed {
                    // A cut page must move the scan on, or asking again would never end.
                    return Err(ShardError::BadAnswer(
                        "a truncated scan page that does not move past its start".into(),
                    ));
                }
                if let Some(last) = page.entries.last() {
                    after = Some(last.key.clone());
                }
                entries.extend(page.entries);
                if !page.truncated || entries.len() >= limit {
                    return Ok(StorageResponse::Entries(entries));
                }
            }
        }
        let (kind, lane, bytes) = (request.kind(), lane_of(&request), budget_bytes(&request));
        let request = NodeRequest::Storage(request);
        self.core.remote.sent.set(self.core.remote.sent.get() + 1);
        let message = peer
            .call(vnode.shard, lane, bytes, |id| encode(id, epoch, &request))
            .await?;
        if message.envelope().busy() {
            self.note_peer_busy();
        }
        match codec::decode_answer(&message, Expect::Storage(kind))? {
            NodeAnswer::Storage(response) => Ok(response),
            _ => Err(ShardError::BadAnswer(format!(
                "a {kind} request answered with a node answer"
            ))),
        }
    }

    /// Posts a one-way `request` to `vnode` of another node (best effort: releases and
    /// abandonments from `Drop`; what a lost one leaves, the sweeper finds).
    pub(crate) fn post_remote(&self, vnode: Vnode, request: StorageRequest) {
        let peer = match self.peer_of(vnode, &request) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, request = request.kind(), "a one-way request has nowhere to go");
                return;
            }
        };
        let frame = codec::encode_request(0, self.ring().epoch(), &NodeRequest::Storage(request));
        self.core.remote.sent.set(self.core.remote.sent.get() + 1);
        peer.post(vnode.shard, frame);
    }
}
