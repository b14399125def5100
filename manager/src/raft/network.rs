//! Managers talking to managers: openraft's messages, a proposal forwarded to the leader and a
//! manager asked for its Raft node id, each a [`RaftCall`] with a JSON body. The bytes travel
//! over the node wire (the node supplies a [`RaftTransport`]); this module only encodes them
//! and serves them on the manager's thread.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::TypeConfig;
use crate::ManagerError;
use crate::command::{Command, Outcome};

/// What one manager asks another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RaftCall {
    /// openraft's AppendEntries (replication and heartbeats).
    AppendEntries = 0,
    /// openraft's RequestVote.
    Vote = 1,
    /// openraft's InstallSnapshot (a chunk of the leader's state machine).
    InstallSnapshot = 2,
    /// A command proposed through a manager that is not the leader.
    Propose = 3,
    /// The manager's Raft node id (asked before adding it to the group).
    Identify = 4,
}

impl RaftCall {
    /// The call with this wire value.
    pub fn from_u8(value: u8) -> Option<Self> {
        [
            Self::AppendEntries,
            Self::Vote,
            Self::InstallSnapshot,
            Self::Propose,
            Self::Identify,
        ]
        .into_iter()
        .find(|call| *call as u8 == value)
    }
}

/// How a manager reaches another at its wire address: one request, one answer, blocking (it
/// runs on the Raft runtime's blocking pool, never on a core thread). The error is the
/// transport's failure as text (the peer is then unreachable for openraft).
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends `body` as `call` to the manager at `addr` and returns its answer, within
    /// `timeout`.
    fn call(
        &self,
        addr: &str,
        call: RaftCall,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String>;
}

/// The answer to a forwarded proposal.
pub(crate) type ProposeAnswer = Result<Outcome, String>;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // openraft's messages and our commands are plain data: they always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ManagerError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ManagerError::Remote(format!("malformed Raft message: {e}")))
}

/// Sends one call through `transport` on the blocking pool.
pub(crate) async fn send(
    transport: &Option<Arc<dyn RaftTransport>>,
    addr: &str,
    call: RaftCall,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let Some(transport) = transport.clone() else {
        return Err(
            "this manager has no wire to other managers (start it with --rpc-listen)".into(),
        );
    };
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || transport.call(&addr, call, body, timeout))
        .await
        .unwrap_or_else(|e| Err(format!("the call did not finish: {e}")))
}

/// Serves one call from another manager on the Raft runtime; the answer's bytes.
pub(crate) async fn serve(
    raft: Raft<TypeConfig>,
    node_id: u64,
    call: RaftCall,
    body: Vec<u8>,
) -> Result<Vec<u8>, ManagerError> {
    Ok(match call {
        RaftCall::AppendEntries => encode(&raft.append_entries(decode(&body)?).await),
        RaftCall::Vote => encode(&raft.vote(decode(&body)?).await),
        RaftCall::InstallSnapshot => encode(&raft.install_snapshot(decode(&body)?).await),
        RaftCall::Propose => {
            let command: Command = decode(&body)?;
            let written = tokio::time::timeout(super::WRITE_TIMEOUT, raft.client_write(command));
            let answer: ProposeAnswer = match written.await {
                Ok(Ok(response)) => Ok(response.data),
                Ok(Err(e)) => Err(format!("manager {node_id} cannot make the change: {e}")),
                Err(_) => Err(format!(
                    "manager {node_id} could not commit the change within {:?}",
                    super::WRITE_TIMEOUT
                )),
            };
            encode(&answer)
        }
        RaftCall::Identify => encode(&node_id),
    })
}

/// openraft's network over a [`RaftTransport`].
pub(crate) struct WireNetwork {
    pub(crate) transport: Option<Arc<dyn RaftTransport>>,
}

/// One peer manager, as openraft's network client.
pub(crate) struct PeerManager {
    transport: Option<Arc<dyn RaftTransport>>,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for WireNetwork {
    type Network = PeerManager;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        PeerManager {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl PeerManager {
    async fn rpc<Req, Resp, E>(
        &self,
        call: RaftCall,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer = send(
            &self.transport,
            &self.addr,
            call,
            encode(request),
            option.hard_ttl(),
        )
        .await
        .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        let answer: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&answer)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerManager {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(RaftCall::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc(RaftCall::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(RaftCall::Vote, &rpc, &option).await
    }
}
