//! The manager's state on Raft (openraft 0.9): the catalog is a replicated state machine whose
//! changes are [`Command`]s in a durable log ([`log`]) applied in order ([`machine`]).
//!
//! openraft runs on the manager's own thread (`leofs-raft`, a current-thread tokio runtime);
//! nothing of it runs on a core thread. Callers on other non-core threads (the admin API, the
//! catalog thread) propose a command and block until it is applied ([`RaftGroup::write`]);
//! the data path only ever reads the published catalog.
//!
//! A manager whose data dir has no Raft log yet bootstraps a group of one with itself as the
//! only voter (what `leofs server` has always been), exactly once: the log's presence records
//! it. A manager started to join others never bootstraps: it waits, empty, until the group
//! adds it (`leofs-adm add-manager`). Managers reach each other over the node wire
//! ([`network`]).

pub mod log;
pub mod machine;
pub mod network;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};

use crate::command::{Command, Outcome};
use crate::{ManagerError, ManagerState};
use log::LogStore;
use machine::StateMachine;
use network::{ProposeAnswer, RaftCall, RaftTransport, WireNetwork};

openraft::declare_raft_types!(
    /// The manager's Raft types: catalog commands in, their outcomes out, nodes by their
    /// wire address.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = BasicNode,
);

/// Interval between the leader's heartbeats to the other managers.
pub const HEARTBEAT_INTERVAL_MS: u64 = 250;
/// Shortest time without a leader's heartbeat before a manager stands for election.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 1_000;
/// Longest such time (each manager picks at random in between).
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 2_000;
/// Entries applied since the last snapshot that trigger a new one (and a purge of the log).
pub const SNAPSHOT_AFTER_ENTRIES: u64 = 1_000;
/// Entries kept in the log behind a snapshot (a lagging manager catches up from them).
pub const ENTRIES_KEPT_BEHIND_SNAPSHOT: u64 = 200;
/// How long a proposal waits for a leader and for its entry to be applied.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two reopenings of a group that openraft stopped.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before forwarding a change again after the leader could not be reached.
pub const FORWARD_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One manager's membership in the Raft group, with its thread. Dropping it stops openraft and
/// joins the thread.
pub struct RaftGroup {
    /// Replaced whole when the group is reopened after a fatal storage error.
    raft: ArcSwap<Raft<TypeConfig>>,
    /// Serializes reopening.
    reopening: Mutex<()>,
    config: Arc<Config>,
    /// The state machine's file (beside the log), to reopen from.
    state_path: PathBuf,
    addr: String,
    published: Arc<ArcSwap<ManagerState>>,
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    node_id: u64,
    transport: Option<Arc<dyn RaftTransport>>,
    /// When the group was last reopened (or started).
    reopened_at: Mutex<std::time::Instant>,
}

/// A manager's view of its group, for `leofs-adm status`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GroupStatus {
    /// This manager's Raft node id.
    pub node_id: u64,
    /// Its role: leader, follower, candidate or learner.
    pub state: String,
    /// The current term.
    pub term: u64,
    /// The leader's node id, if one is known.
    pub leader: Option<u64>,
    /// The members.
    pub members: Vec<GroupMember>,
    /// Index of the last entry applied here.
    pub applied_index: Option<u64>,
}

/// One member of the group.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GroupMember {
    /// Raft node id.
    pub node_id: u64,
    /// Its wire address.
    pub addr: String,
    /// A voter (else a learner catching up).
    pub voter: bool,
}

impl RaftGroup {
    /// Starts openraft over `log` and `machine` on the `leofs-raft` thread, reaching other
    /// managers through `transport`. With a `seed` (a log created just now by a manager that
    /// joins no other), bootstraps the group with this manager, reachable at `addr`, as its
    /// only voter, and makes the seed catalog its first command. A group whose only voter is
    /// this manager is led by it before this returns.
    pub fn start(
        node_id: u64,
        addr: String,
        log: LogStore,
        machine: StateMachine,
        seed: Option<ManagerState>,
        transport: Option<Arc<dyn RaftTransport>>,
    ) -> Result<Self, ManagerError> {
        let (state_path, published) = (machine.path().to_path_buf(), machine.published());
        let config = Config {
            cluster_name: "leofs".into(),
            heartbeat_interval: HEARTBEAT_INTERVAL_MS,
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_AFTER_ENTRIES),
            max_in_snapshot_log_to_keep: ENTRIES_KEPT_BEHIND_SNAPSHOT,
            ..Config::default()
        }
        .validate()
        .map_err(|e| ManagerError::Raft(e.to_string()))?;
        let config = Arc::new(config);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ManagerError::Thread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = spawn_without_shutdown_signals(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        let network = WireNetwork {
            transport: transport.clone(),
        };
        let raft = handle.block_on(Raft::new(node_id, config.clone(), network, log, machine));
        let raft = raft.map_err(|e| ManagerError::Raft(e.to_string()))?;
        let group = Self {
            raft: ArcSwap::from_pointee(raft),
            reopening: Mutex::new(()),
            config,
            state_path,
            addr: addr.clone(),
            published,
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
            node_id,
            transport,
            reopened_at: Mutex::new(
                std::time::Instant::now()
                    .checked_sub(REOPEN_INTERVAL)
                    .unwrap_or_else(std::time::Instant::now),
            ),
        };
        group.begin(seed, addr)?;
        Ok(group)
    }

    /// The running Raft instance.
    fn raft(&self) -> Raft<TypeConfig> {
        Raft::clone(&self.raft.load())
    }

    /// Reopens the group from its files when openraft has stopped on a storage error (a full
    /// or failing disk: openraft treats every storage error as fatal), so that changes work
    /// again once the disk does. At most once per [`REOPEN_INTERVAL`].
    fn reopen_if_stopped(&self) {
        let _reopening = self
            .reopening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.raft();
        let stopped = match &old.metrics().borrow().running_state {
            Ok(()) => return,
            Err(fatal) => fatal.to_string(),
        };
        let since = self
            .reopened_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        if since < REOPEN_INTERVAL {
            return;
        }
        tracing::error!(reason = %stopped, "the manager's Raft group stopped; reopening it from its files");
        let _ = self.runtime.block_on(async move { old.shutdown().await });
        *self
            .reopened_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = std::time::Instant::now();
        let reopened = (|| {
            let dir = self.state_path.parent().unwrap_or(&self.state_path);
            let (log, _, _) = LogStore::open(dir)?;
            let machine = StateMachine::open(&self.state_path, self.published.clone())?
                .ok_or_else(|| ManagerError::Raft("the state machine's file is gone".into()))?;
            let network = WireNetwork {
                transport: self.transport.clone(),
            };
            let raft = self.runtime.block_on(Raft::new(
                self.node_id,
                self.config.clone(),
                network,
                log,
                machine,
            ));
            self.raft.store(Arc::new(
                raft.map_err(|e| ManagerError::Raft(e.to_string()))?,
            ));
            self.begin(None, self.addr.clone())
        })();
        match reopened {
            Ok(()) => tracing::info!("the manager's Raft group runs again"),
            Err(e) => {
                tracing::error!(error = %e, "the manager's Raft group could not be reopened; changes fail until it can")
            }
        }
    }

    /// Bootstraps if given a seed; a group whose only voter is this manager is brought to a
    /// leader at once (not after an election timeout) and learns this manager's current
    /// address.
    fn begin(&self, seed: Option<ManagerState>, addr: String) -> Result<(), ManagerError> {
        let raft = self.raft();
        let node_id = self.node_id;
        self.runtime.block_on(async move {
            if seed.is_some() {
                let members = BTreeMap::from([(node_id, BasicNode { addr: addr.clone() })]);
                raft.initialize(members)
                    .await
                    .map_err(|e| ManagerError::Raft(format!("cannot bootstrap the group: {e}")))?;
            }
            let (sole_voter, known_addr) = {
                let metrics = raft.metrics().borrow().clone();
                let membership = metrics.membership_config.membership();
                let voters: Vec<u64> = membership.voter_ids().collect();
                let known = membership.get_node(&node_id).map(|node| node.addr.clone());
                (voters == [node_id], known)
            };
            // Just bootstrapped, the metrics may not show the membership yet.
            if !sole_voter && seed.is_none() {
                return Ok(());
            }
            raft.trigger()
                .elect()
                .await
                .map_err(|e| ManagerError::Raft(e.to_string()))?;
            raft.wait(Some(WRITE_TIMEOUT))
                .state(ServerState::Leader, "this manager leads its group of one")
                .await
                .map_err(|e| ManagerError::Raft(e.to_string()))?;
            if let Some(state) = seed {
                raft.client_write(Command::Seed {
                    state: Box::new(state),
                })
                .await
                .map_err(|e| ManagerError::Raft(format!("cannot seed the group: {e}")))?;
            }
            if known_addr.is_some_and(|known| known != addr) {
                let nodes = BTreeMap::from([(node_id, BasicNode { addr })]);
                raft.change_membership(ChangeMembers::SetNodes(nodes), true)
                    .await
                    .map_err(membership_error)?;
            }
            Ok(())
        })
    }

    /// Proposes `command` and blocks until it is applied: its outcome (applied, or refused
    /// against the state it met). A manager that is not the leader forwards it to the
    /// leader. Must not be called from an async runtime's thread.
    pub fn write(&self, command: Command) -> Result<Outcome, ManagerError> {
        let written = self.propose(command);
        if written.is_err() {
            self.reopen_if_stopped();
        }
        written
    }

    fn propose(&self, command: Command) -> Result<Outcome, ManagerError> {
        // One id for every attempt at this change: a retry after a lost answer is not applied
        // twice (the state machine answers it with the first outcome).
        let command = Command::Proposal {
            id: crate::command::new_proposal_id()?,
            command: Box::new(command),
        };
        let (raft, node_id) = (self.raft(), self.node_id);
        let transport = self.transport.clone();
        self.runtime.block_on(async move {
            let write = async {
                loop {
                    match raft.client_write(command.clone()).await {
                        Ok(response) => return Ok(response.data),
                        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))
                            if forward.leader_id.is_none_or(|leader| leader == node_id) =>
                        {
                            // Between leaders (an election, or this manager taking office):
                            // wait for the outcome, then propose again.
                            let elected = |m: &openraft::RaftMetrics<u64, BasicNode>| {
                                m.state == ServerState::Leader
                                    || m.current_leader.is_some_and(|leader| leader != node_id)
                            };
                            let _ = raft.wait(None).metrics(elected, "a leader").await;
                        }
                        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                                                        let Some(leader) = forward.leader_node else {
                                return Err(ManagerError::Unreachable(
                                    "the manager group's leader has no known address".into(),
                                ));
                            };
                            match forward_to(&transport, &leader.addr, &command).await {
                                Err(ManagerError::Unreachable(why)) => {
                                    // The leader is gone or lost office: wait for the group
                                    // to move on (bounded by WRITE_TIMEOUT), then again.
                                    tracing::info!(leader = %leader.addr, %why, "forwarding a change failed; waiting for a leader");
                                    let old = forward.leader_id;
                                    let moved = |m: &openraft::RaftMetrics<u64, BasicNode>| {
                                        m.current_leader != old
                                    };
                                    let _ = raft.wait(None).metrics(moved, "another leader").await;
                                    tokio::time::sleep(FORWARD_RETRY_PAUSE).await;
                                }
                                answer => return answer,
                            }
                        }
                        Err(e) => return Err(ManagerError::Raft(e.to_string())),
                    }
                }
            };
            tokio::time::timeout(WRITE_TIMEOUT, write)
                .await
                .unwrap_or_else(|_| {
                    Err(ManagerError::Unreachable(format!(
                        "no answer from the manager group within {WRITE_TIMEOUT:?}"
                    )))
                })
        })
    }

    /// This manager's Raft node id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Serves a call from another manager on the Raft thread; the returned future is `Send`
    /// and may be awaited on any runtime (a core thread awaits it without blocking).
    pub fn serve(
        &self,
        call: RaftCall,
        body: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, ManagerError>> + Send + 'static {
        let (raft, node_id) = (self.raft(), self.node_id);
        let (answer, answered) = futures_channel::oneshot::channel();
        self.runtime.spawn(async move {
            let _ = answer.send(network::serve(raft, node_id, call, body).await);
        });
        async move { answered.await.map_err(|_| ManagerError::Stopped)? }
    }

    /// The group as this manager sees it.
    pub fn status(&self) -> GroupStatus {
        let metrics = self.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        GroupStatus {
            node_id: self.node_id,
            state: format!("{:?}", metrics.state).to_lowercase(),
            term: metrics.current_term,
            leader: metrics.current_leader,
            members: membership
                .nodes()
                .map(|(&node_id, node)| GroupMember {
                    node_id,
                    addr: node.addr.clone(),
                    voter: voters.contains(&node_id),
                })
                .collect(),
            applied_index: metrics.last_applied.map(|id| id.index),
        }
    }

    /// Adds the manager at `addr` to the group as a voter: asks it for its node id, lets it
    /// catch up as a learner, then makes it a voter. Made on the leader.
    pub fn add_manager(&self, addr: &str) -> Result<u64, ManagerError> {
        let (raft, transport) = (self.raft(), self.transport.clone());
        let addr = addr.to_owned();
        self.runtime.block_on(async move {
            let identify = network::send(
                &transport,
                &addr,
                RaftCall::Identify,
                Vec::new(),
                WRITE_TIMEOUT,
            );
            let answer = identify
                .await
                .map_err(|e| ManagerError::Unreachable(format!("the manager at {addr}: {e}")))?;
            let id: u64 = serde_json::from_slice(&answer)
                .map_err(|e| ManagerError::Remote(format!("the manager at {addr}: {e}")))?;
            raft.add_learner(id, BasicNode { addr: addr.clone() }, true)
                .await
                .map_err(membership_error)?;
            raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                .await
                .map_err(membership_error)?;
            Ok(id)
        })
    }

    /// Removes the manager `node_id` from the group. Made on the leader.
    pub fn remove_manager(&self, node_id: u64) -> Result<(), ManagerError> {
        let raft = self.raft();
        self.runtime.block_on(async move {
            raft.change_membership(ChangeMembers::RemoveVoters([node_id].into()), false)
                .await
                .map_err(membership_error)?;
            raft.change_membership(ChangeMembers::RemoveNodes([node_id].into()), false)
                .await
                .map_err(membership_error)?;
            Ok(())
        })
    }
}

impl Drop for RaftGroup {
    fn drop(&mut self) {
        let raft = self.raft();
        if let Err(e) = self.runtime.block_on(async move { raft.shutdown().await }) {
            tracing::warn!(error = %e, "the Raft group did not stop cleanly");
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Proposes `command` through the leader at `addr`.
async fn forward_to(
    transport: &Option<Arc<dyn RaftTransport>>,
    addr: &str,
    command: &Command,
) -> Result<Outcome, ManagerError> {
    let body = serde_json::to_vec(command).unwrap_or_default();
    let answer = network::send(transport, addr, RaftCall::Propose, body, WRITE_TIMEOUT)
        .await
        .map_err(|e| ManagerError::Unreachable(format!("the leader at {addr}: {e}")))?;
    let answer: ProposeAnswer = serde_json::from_slice(&answer)
        .map_err(|e| ManagerError::Remote(format!("the leader at {addr}: {e}")))?;
    answer.map_err(ManagerError::Unreachable)
}

fn membership_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> ManagerError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            ManagerError::Unreachable(match forward.leader_node {
                Some(leader) => format!(
                    "the group changes its members through its leader: run this against the manager at {}",
                    leader.addr
                ),
                None => "the manager group has no leader".into(),
            })
        }
        other => ManagerError::Raft(other.to_string()),
    }
}

/// Starts the `leofs-raft` thread with SIGTERM and SIGINT blocked (the node's signal watcher
/// takes them; a thread that did not block them would end the process without a graceful
/// shutdown). The spawning thread's mask is restored after.
fn spawn_without_shutdown_signals(
    run: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, ManagerError> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use; pthread_sigmask
    // only changes the calling thread's mask, and the previous mask is restored below.
    let previous = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
        previous
    };
    let thread = std::thread::Builder::new()
        .name("leofs-raft".into())
        .spawn(run)
        .map_err(ManagerError::Thread);
    // SAFETY: as above; `previous` was filled by the call that changed the mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
    }
    thread
}
