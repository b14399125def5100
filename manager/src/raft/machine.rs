//! The replicated state machine: the catalog (users, keys, buckets) with the Raft position it
//! reflects, durable in `<data_dir>/manager/state.json` (replaced atomically after every batch
//! of applied entries, before the new catalog is published to the data path). Its layout is
//! also the snapshot format that managers send each other:
//!
//! `{"format_version": 2, "applied": <log id or null>, "membership": <openraft stored
//! membership>, "state": {"users": …, "keys": …, "buckets": …, "cluster_id": …},
//! "proposals": [[<id>, <outcome>], …]}` (`proposals`: the last ones applied, so that a retried
//! proposal is answered without being applied twice; absent in older files).
//!
//! Version 1 (a single node's file before the manager ran on Raft: no `applied`, no
//! `membership`) is read as the state before the first entry, so an existing data dir keeps
//! its users, keys and buckets.

use std::collections::VecDeque;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};

use super::TypeConfig;
use crate::command::{Command, Outcome};
use crate::persist::{read_if_exists, write_atomic};
use crate::store::corrupt;
use crate::{ManagerError, ManagerState};

/// Version of `state.json` (and of snapshots) written by this manager.
pub const STATE_FORMAT_VERSION: u32 = 2;
/// The single-node layout before Raft; still read.
pub const STATE_FORMAT_VERSION_BEFORE_RAFT: u32 = 1;

/// `state.json` as read (every version).
#[derive(serde::Deserialize)]
struct StoredMachine {
    format_version: u32,
    #[serde(default)]
    applied: Option<LogId<u64>>,
    #[serde(default)]
    membership: StoredMembership<u64, BasicNode>,
    state: ManagerState,
    #[serde(default)]
    proposals: VecDeque<(String, Outcome)>,
}

/// `state.json` as written (borrows the state).
#[derive(serde::Serialize)]
struct StoredMachineRef<'a> {
    format_version: u32,
    applied: Option<LogId<u64>>,
    membership: &'a StoredMembership<u64, BasicNode>,
    state: &'a ManagerState,
    proposals: &'a VecDeque<(String, Outcome)>,
}

/// The state machine handed to openraft.
pub struct StateMachine {
    path: PathBuf,
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: ManagerState,
    /// The last [`PROPOSALS_REMEMBERED_MAX`] proposals applied and their outcomes: a proposal
    /// applied again (a retry after its answer was lost) gets its first outcome.
    proposals: VecDeque<(String, Outcome)>,
    /// What the data path reads; replaced after each durable change.
    published: Arc<ArcSwap<ManagerState>>,
}

/// Proposals the state machine remembers (and answers again without applying them twice).
pub const PROPOSALS_REMEMBERED_MAX: usize = 4096;

impl StateMachine {
    /// Opens `path`; None when it does not exist.
    pub fn open(
        path: &Path,
        published: Arc<ArcSwap<ManagerState>>,
    ) -> Result<Option<Self>, ManagerError> {
        let Some(bytes) = read_if_exists(path)? else {
            return Ok(None);
        };
        let stored = decode(&bytes).map_err(|detail| corrupt(path, detail))?;
        published.store(Arc::new(stored.state.clone()));
        Ok(Some(Self {
            path: path.to_path_buf(),
            applied: stored.applied,
            membership: stored.membership,
            state: stored.state,
            proposals: stored.proposals,
            published,
        }))
    }

    /// Creates `path` holding `state` before any entry (a first start), durably.
    pub fn create(
        path: &Path,
        state: ManagerState,
        published: Arc<ArcSwap<ManagerState>>,
    ) -> Result<Self, ManagerError> {
        let machine = Self {
            path: path.to_path_buf(),
            applied: None,
            membership: StoredMembership::default(),
            state,
            proposals: VecDeque::new(),
            published,
        };
        machine.persist()?;
        machine.published.store(Arc::new(machine.state.clone()));
        Ok(machine)
    }

    /// The last entry it applied; None before the first (or for a single node's catalog from
    /// before Raft).
    pub fn applied(&self) -> Option<LogId<u64>> {
        self.applied
    }

    /// Forgets the group it was in, keeping the catalog: the state of a manager that starts a
    /// new group from it (durable before returning).
    pub fn forget_group(&mut self) -> Result<(), ManagerError> {
        self.applied = None;
        self.membership = StoredMembership::default();
        self.persist()
    }

    /// Keeps the group's cluster id in the node's data directory once it is known (a manager
    /// that joined learns it here), for the handshakes of its next start.
    fn remember_cluster_id(&self) {
        let Some(id) = &self.state.cluster_id else {
            return;
        };
        let data_dir = self.path.parent().and_then(Path::parent);
        if let Some(data_dir) = data_dir
            && let Err(e) = crate::store::store_cluster_id(data_dir, id)
        {
            tracing::warn!(error = %e, "cannot keep the cluster id; it is written again on the next change");
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The catalog it publishes to.
    pub fn published(&self) -> Arc<ArcSwap<ManagerState>> {
        self.published.clone()
    }

    fn encode(&self) -> Vec<u8> {
        let stored = StoredMachineRef {
            format_version: STATE_FORMAT_VERSION,
            applied: self.applied,
            membership: &self.membership,
            state: &self.state,
            proposals: &self.proposals,
        };
        // Maps with string keys and plain values always serialize.
        serde_json::to_vec_pretty(&stored).unwrap_or_default()
    }

    /// Applies `command`; a proposal seen before gets its first outcome again.
    fn apply_command(&mut self, command: Command) -> Outcome {
        let Command::Proposal { id, command } = command else {
            return command.apply(&mut self.state);
        };
        if let Some((_, outcome)) = self.proposals.iter().find(|(seen, _)| *seen == id) {
            return outcome.clone();
        }
        let outcome = command.apply(&mut self.state);
        if self.proposals.len() == PROPOSALS_REMEMBERED_MAX {
            self.proposals.pop_front();
        }
        self.proposals.push_back((id, outcome.clone()));
        outcome
    }

    fn persist(&self) -> Result<(), ManagerError> {
        write_atomic(&self.path, &self.encode())
    }

    fn snapshot(&self) -> Snapshot<TypeConfig> {
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: match self.applied {
                Some(id) => format!(
                    "{}-{}-{}",
                    id.leader_id.term, id.leader_id.node_id, id.index
                ),
                None => "empty".into(),
            },
        };
        Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(self.encode())),
        }
    }
}

fn decode(bytes: &[u8]) -> Result<StoredMachine, String> {
    let stored: StoredMachine = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match stored.format_version {
        STATE_FORMAT_VERSION | STATE_FORMAT_VERSION_BEFORE_RAFT => {}
        other => {
            return Err(format!(
                "format version {other} is not supported (expected {STATE_FORMAT_VERSION})"
            ));
        }
    }
    crate::store::check_references(&stored.state)?;
    Ok(stored)
}

fn write_error(e: &ManagerError) -> StorageError<u64> {
    StorageIOError::write_state_machine(e).into()
}

/// A snapshot taken when openraft asked for a builder.
pub struct SnapshotCopy(Option<Snapshot<TypeConfig>>);

impl RaftSnapshotBuilder<TypeConfig> for SnapshotCopy {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        self.0.take().ok_or_else(|| {
            StorageIOError::read_state_machine(&std::io::Error::other("snapshot already built"))
                .into()
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotCopy;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        for entry in entries {
            assert!(
                Some(entry.log_id) > self.applied,
                "entries are applied once, in log order"
            );
            self.applied = Some(entry.log_id);
            outcomes.push(match entry.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Normal(command) => self.apply_command(command),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(())
                }
            });
            self.state.revision = entry.log_id.index;
        }
        self.persist().map_err(|e| write_error(&e))?;
        self.remember_cluster_id();
        self.published.store(Arc::new(self.state.clone()));
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotCopy(Some(self.snapshot()))
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let stored = decode(snapshot.get_ref()).map_err(|detail| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(detail),
            ))
        })?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.state = stored.state;
        self.proposals = stored.proposals;
        self.persist().map_err(|e| write_error(&e))?;
        self.remember_cluster_id();
        self.published.store(Arc::new(self.state.clone()));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        // state.json is the state machine at `applied`: always a valid, current snapshot.
        Ok(Some(self.snapshot()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Refusal;
    use crate::{AccessKey, User};

    fn create_user(id: &str) -> Command {
        Command::CreateUser {
            user: User {
                id: id.into(),
                is_admin: false,
                created_unix_ms: 1,
            },
            key: AccessKey {
                access_key_id: format!("KEY{id}"),
                secret_access_key: "secret".into(),
                user_id: id.into(),
            },
        }
    }

    fn proposal(id: &str, command: Command) -> Command {
        Command::Proposal {
            id: id.into(),
            command: Box::new(command),
        }
    }

    #[test]
    fn a_retried_proposal_gets_its_first_outcome_and_is_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let published = Arc::new(ArcSwap::from_pointee(ManagerState::default()));
        let mut machine =
            StateMachine::create(&path, ManagerState::default(), published.clone()).unwrap();
        assert_eq!(
            machine.apply_command(proposal("p1", create_user("alice"))),
            Ok(())
        );
        // The same proposal again (its answer was lost, the proposer retried): the first
        // outcome, not UserExists.
        assert_eq!(
            machine.apply_command(proposal("p1", create_user("alice"))),
            Ok(())
        );
        // Another proposal of the same change is a change of its own.
        assert_eq!(
            machine.apply_command(proposal("p2", create_user("alice"))),
            Err(Refusal::UserExists("alice".into()))
        );
        // What it remembers is durable, and bounded.
        machine.persist().unwrap();
        let mut machine = StateMachine::open(&path, published).unwrap().unwrap();
        assert_eq!(
            machine.apply_command(proposal("p1", create_user("alice"))),
            Ok(())
        );
        for i in 0..PROPOSALS_REMEMBERED_MAX {
            let _ = machine.apply_command(proposal(&format!("x{i}"), create_user("bob")));
        }
        assert_eq!(machine.proposals.len(), PROPOSALS_REMEMBERED_MAX);
        assert!(!machine.proposals.iter().any(|(id, _)| id == "p1"));
    }
}
