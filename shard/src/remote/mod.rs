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

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use leofs_wire::{ClusterAuth, Lane, Peer};

use crate::request::{StorageRequest, StorageResponse};
use crate::ring::{NodeId, Vnode};
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
    peers: HashMap<NodeId, Rc<Peer>>,
    /// Requests this core sent to peers.
    pub(crate) sent: Cell<u64>,
    /// Requests this core served for peers.
    pub(crate) served: Cell<u64>,
}

impl RemotePeers {
    /// One [`Peer`] per node of `config`.
    pub(crate) fn new(config: Option<&PeersConfig>) -> Self {
        let peers = config.map_or_else(HashMap::new, |config| {
            config
                .nodes
                .iter()
                .map(|(node, addr)| {
                    let peer = Peer::new(*addr, config.auth.clone(), config.request_timeout);
                    (*node, peer)
                })
                .collect()
        });
        Self {
            peers,
            ..Self::default()
        }
    }

    fn peer(&self, node: NodeId) -> Option<&Rc<Peer>> {
        self.peers.get(&node)
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
        | StorageRequest::Scan { .. } => Lane::Bulk,
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
        self.core
            .remote
            .peer(vnode.node)
            .cloned()
            .ok_or(ShardError::RemoteVnode {
                partition: request.partition().unwrap_or(0),
                node: vnode.node,
            })
    }

    /// Serves `request` on `vnode` of another node and returns its answer.
    pub(crate) async fn call_remote(
        &self,
        vnode: Vnode,
        request: StorageRequest,
    ) -> Result<StorageResponse, ShardError> {
        let peer = self.peer_of(vnode, &request)?;
        let epoch = self.ring().epoch();
        if let StorageRequest::Scan {
            partitions,
            prefix,
            start_after,
            limit,
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
                });
                self.core.remote.sent.set(self.core.remote.sent.get() + 1);
                let message = peer
                    .call(vnode.shard, Lane::Bulk, 0, |id| {
                        codec::encode_request(id, epoch, &request)
                    })
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
            .call(vnode.shard, lane, bytes, |id| {
                codec::encode_request(id, epoch, &request)
            })
            .await?;
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
