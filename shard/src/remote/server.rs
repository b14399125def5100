//! The serving side: each core listens on `rpc_port + core` and serves every request that
//! arrives there on its own executor.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use leofs_wire::connection::serve_connection;
use leofs_wire::frame::PAYLOAD_BYTES_MAX;
use leofs_wire::{Frame, Message};
use monoio::net::{ListenerOpts, TcpListener};

use super::RpcConfig;
use super::codec::{
    self, CatalogRefusal, CatalogRefusalKind, ClusterRing, NodeAnswer, NodeRequest,
};
use crate::http::{ACCEPT_ERROR_BACKOFF, LISTEN_BACKLOG};
use crate::{Shard, ShardError, StorageRequest};

/// Most peer connections one core serves at once (handshakes included); one more is closed at
/// once with a log line.
pub const RPC_CONNECTIONS_PER_CORE_MAX: usize = 256;
/// Longest a request routed by a newer ring than this node's waits for that ring to arrive
/// before it is refused ([`ShardError::RingBehind`]).
pub const RING_CATCH_UP_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a waiting request looks whether the newer ring arrived.
const RING_CATCH_UP_POLL: std::time::Duration = std::time::Duration::from_millis(10);
/// Least time between two log lines about a ring this node could not fetch (per core).
const RING_BEHIND_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The address core `core` serves peers on: the RPC port + `core`.
pub(crate) fn core_addr(listen: SocketAddr, core: usize) -> Result<SocketAddr, ShardError> {
    let port = u16::try_from(core)
        .ok()
        .and_then(|core| listen.port().checked_add(core))
        .filter(|_| listen.port() != 0)
        .ok_or_else(|| {
            ShardError::Config(format!(
                "rpc listen port {} cannot serve core {core} (shard i listens on the port + i; the port must not be 0)",
                listen.port()
            ))
        })?;
    let mut addr = listen;
    addr.set_port(port);
    Ok(addr)
}

/// Binds this core's RPC port and serves peers on it until the core stops.
pub(crate) fn start(shard: &Shard, rpc: &RpcConfig) -> Result<(), ShardError> {
    let addr = core_addr(rpc.listen, shard.core_id())?;
    // One listener a port (each core has its own): without SO_REUSEPORT (monoio's default
    // sets it), a second process given the same port fails to start instead of sharing the
    // node's peer connections.
    let opts = ListenerOpts::new()
        .reuse_port(false)
        .backlog(LISTEN_BACKLOG);
    let listener = TcpListener::bind_with_config(addr, &opts)
        .map_err(|error| ShardError::Bind { addr, error })?;
    let (shard, auth) = (shard.clone(), rpc.auth.clone());
    let open = Rc::new(Cell::new(0usize));
    monoio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((_, peer)) if open.get() >= RPC_CONNECTIONS_PER_CORE_MAX => {
                    tracing::warn!(%peer, "refused a node connection: {RPC_CONNECTIONS_PER_CORE_MAX} are open on this core");
                }
                Ok((stream, peer)) => {
                    let (shard, auth, open) = (shard.clone(), auth.clone(), open.clone());
                    open.set(open.get() + 1);
                    monoio::spawn(async move {
                        serve_connection(stream, peer, &auth, |message| {
                            answer(shard.clone(), message)
                        })
                        .await;
                        open.set(open.get() - 1);
                    });
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "rpc accept failed");
                    monoio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    });
    Ok(())
}

/// Serves one request from a peer; the answer frame, None for a one-way request.
async fn answer(shard: Shard, message: Message) -> Option<Frame> {
    let id = message.request_id();
    let epoch = shard.ring().epoch();
    let core = &shard.core;
    core.remote.served.set(core.remote.served.get() + 1);
    let request = match codec::decode_request(&message) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(error = %e, "refused a request from a peer");
            return (id != 0).then(|| codec::encode_malformed(id, epoch, &e));
        }
    };
    let answer = match request {
        NodeRequest::Storage(request) => {
            let kind = request.kind();
            let sender_epoch = message.envelope().ring_epoch();
            if !message.envelope().background() {
                shard.note_foreground();
            }
            let answer = match catch_up_ring(&shard, sender_epoch).await {
                Ok(()) => match refuse_write_of_older_ring(&shard, sender_epoch, &request) {
                    Ok(()) => shard.execute(request).await.map(NodeAnswer::Storage),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if id == 0 {
                if let Err(e) = answer {
                    tracing::warn!(error = %e, request = kind, "a one-way request from a peer failed; the sweeper will find what it left");
                }
                return None;
            }
            answer
        }
        NodeRequest::FetchRing => {
            let installed = core.node.installed();
            let mut nodes = installed.nodes.clone();
            if let Some(own) = core.node.own_rpc_addr()
                && !nodes.iter().any(|(node, _)| *node == core.node_id)
            {
                nodes.push((core.node_id, own));
            }
            Ok(NodeAnswer::Ring(ClusterRing {
                ring: (*installed.ring).clone(),
                nodes,
            }))
        }
        NodeRequest::FetchCatalog { known_version } => Ok(match core.node.services() {
            Some(services) => match services.catalog(known_version) {
                Ok(snapshot) => NodeAnswer::Catalog(snapshot),
                Err(refusal) => NodeAnswer::CatalogRefused(refusal),
            },
            None => no_manager(),
        }),
        NodeRequest::Raft { call, body } => match core.node.services() {
            Some(services) => services
                .raft(call, body)
                .await
                .map(NodeAnswer::Raft)
                .map_err(ShardError::ManagerUnavailable),
            None => Err(ShardError::ManagerUnavailable(
                "this node has no manager role".into(),
            )),
        },
        NodeRequest::Catalog(change) => Ok(match core.node.services() {
            Some(services) => match services.change_catalog(change).await {
                Ok(()) => NodeAnswer::CatalogChanged,
                Err(refusal) => NodeAnswer::CatalogRefused(refusal),
            },
            None => no_manager(),
        }),
        NodeRequest::ReadClock => Ok(NodeAnswer::Clock(leofs_engine::wall_us())),
    };
    if id == 0 {
        return None;
    }
    // The ring may have been caught up while the request waited.
    let epoch = shard.ring().epoch();
    let busy = message.envelope().background() && shard.clients_served_recently();
    let frame = codec::encode_answer_as(id, epoch, answer, busy);
    if let Err(e) = frame.check_bounds() {
        // Too large for one frame (a catalog beyond the payload bound): the asker gets an
        // error now rather than a timeout.
        tracing::error!(error = %e, "an answer does not fit a frame");
        let e = ShardError::LimitExceeded {
            what: "answer (bytes in one frame)",
            limit: PAYLOAD_BYTES_MAX as u64,
            got: frame.payload.len() as u64,
        };
        return Some(codec::encode_answer(id, epoch, Err(e)));
    }
    Some(frame)
}

/// Refuses a write from a sender that routes by an older ring than this core's (DESIGN §4:
/// "stale ring"): it may not know where the partition is now (a rebalance moves it, or moved
/// it), and could leave the replicas that count without the write, or raise a watermark over
/// a replica set that is no longer the partition's. The sender takes the newer ring and
/// writes again by it.
fn refuse_write_of_older_ring(
    shard: &Shard,
    sender_epoch: u64,
    request: &StorageRequest,
) -> Result<(), ShardError> {
    let ring = shard.ring();
    if sender_epoch >= ring.epoch() {
        return Ok(());
    }
    let write = matches!(
        request,
        StorageRequest::Put { .. }
            | StorageRequest::Delete { .. }
            | StorageRequest::CommitObject { .. }
            | StorageRequest::DeleteObject { .. }
            | StorageRequest::CommitPart { .. }
            | StorageRequest::SetWatermark { .. }
            | StorageRequest::SetAttributes { .. }
    );
    match request.partition() {
        Some(partition) if write => Err(ShardError::NotHeldHere {
            partition,
            core: shard.core.id,
            epoch: ring.epoch(),
        }),
        _ => Ok(()),
    }
}

/// Makes sure this core routes by a ring at least as new as `wanted` (the sender's) before a
/// request is served by it: a newer ring is asked for at once (from the managers, through
/// whoever follows their ring) and waited for at most [`RING_CATCH_UP_MAX`]. A node never
/// serves by an older ring than its sender's: the newer one may have moved the partition.
async fn catch_up_ring(shard: &Shard, wanted: u64) -> Result<(), ShardError> {
    if shard.ring().epoch() >= wanted {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let followed = shard.core.node.want_ring(wanted);
    while followed && started.elapsed() < RING_CATCH_UP_MAX {
        monoio::time::sleep(RING_CATCH_UP_POLL).await;
        if shard.ring().epoch() >= wanted {
            tracing::debug!(
                epoch = wanted,
                waited_ms = started.elapsed().as_millis() as u64,
                "took a newer ring before serving a peer"
            );
            return Ok(());
        }
    }
    let e = ShardError::RingBehind {
        wanted,
        have: shard.ring().epoch(),
        waited_ms: started.elapsed().as_millis() as u64,
    };
    let remote = &shard.core.remote;
    if remote
        .ring_behind_logged
        .get()
        .is_none_or(|at| at.elapsed() >= RING_BEHIND_LOG_INTERVAL)
    {
        remote
            .ring_behind_logged
            .set(Some(std::time::Instant::now()));
        tracing::warn!(error = %e, "refused a peer's request routed by a ring this node does not have");
    }
    Err(e)
}

fn no_manager() -> NodeAnswer {
    NodeAnswer::CatalogRefused(CatalogRefusal {
        kind: CatalogRefusalKind::Unavailable,
        message: "this node has no manager role: join a node that has one".into(),
    })
}
