//! The durable manager: owns `<data_dir>/manager/`. Every change to users, keys and buckets is
//! a [`Command`] proposed to the manager's Raft group ([`crate::raft`]) and applied by its
//! state machine, which publishes each new state through an `ArcSwap`, so the data path reads a
//! snapshot without ever taking a lock.
//!
//! Files (directory mode 0700, every file mode 0600, each replaced atomically: write
//! `<name>.tmp`, fsync, rename, fsync the directory; a leftover `.tmp` is ignored):
//! - `state.json`: the state machine (see [`crate::raft::machine`]), rewritten whole after
//!   every applied batch before it is published. Unparseable content, an unknown version or a
//!   dangling reference is reported as [`ManagerError::Corrupt`]; the file is never reset. A
//!   version-1 file (a single node before Raft) is read and carried over.
//! - `raft.log`, `raft-meta.json`: the Raft log, vote and node id (see [`crate::raft::log`]).
//! - `admin.token`: the admin API bearer token (64 hex characters and a newline).
//! - `credentials`: the root key pair in the AWS shared-credentials format, written at first start.
//!
//! First start is detected by the absence of `state.json`, which is written before the Raft
//! log; a Raft log without `state.json` is refused as damage.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::cluster::{
    Heartbeat, HeartbeatAnswer, Liveness, Member, NodeState, Registration, RingRecord, plan_nodes,
};
use crate::command::{Command, Refusal};
use crate::persist::{
    ensure_private_dir, new_hex_secret, random_string, read_if_exists, write_atomic,
};
use crate::raft::log::{LOG_FILE, LogStore, META_FILE};
use crate::raft::machine::StateMachine;
use crate::raft::network::{RaftCall, RaftTransport};
use crate::raft::{GroupStatus, RaftGroup};
use crate::{
    AccessKey, Bucket, BucketAcl, Credentials, ManagerError, ManagerState, User,
    validate_new_bucket_name,
};

/// Directory of the manager's files inside the data directory.
pub const MANAGER_DIR: &str = "manager";
/// The state machine: users, keys and buckets (JSON, holds secrets).
pub const STATE_FILE: &str = "state.json";
/// The admin API bearer token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The root key pair, in the AWS shared-credentials format.
pub const CREDENTIALS_FILE: &str = "credentials";
/// Version of the catalog snapshot that nodes without the manager role fetch
/// ([`Manager::encode_snapshot`]); bumped on any incompatible change.
pub const CATALOG_SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// Attempts at creating a user when its generated access key id turns out to be taken.
const CREATE_USER_ATTEMPTS: usize = 3;
/// Longest wait for a change the leader applied to be applied on this manager too.
const APPLIED_HERE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often that wait looks.
const APPLIED_HERE_POLL: std::time::Duration = std::time::Duration::from_millis(10);
/// Longest DeleteBucket waits for every running gateway to report the deletion mark
/// (heartbeats come every second, and a gateway's catalog copy follows within one).
pub const MARK_SEEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How often that wait looks.
const MARK_SEEN_POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// Id of the administrator created at first start.
pub const ADMIN_USER_ID: &str = "admin";
/// Length of generated access key ids.
pub const ACCESS_KEY_ID_CHARS: usize = 20;
/// Length of generated secret access keys.
pub const SECRET_KEY_CHARS: usize = 40;
/// Shortest root access key id accepted from the operator.
pub const ROOT_ACCESS_KEY_MIN_CHARS: usize = 3;
/// Longest root access key id accepted from the operator.
pub const ROOT_ACCESS_KEY_MAX_CHARS: usize = 128;
/// Shortest root secret accepted from the operator.
pub const ROOT_SECRET_MIN_CHARS: usize = 8;
/// Longest user id.
pub const USER_ID_MAX_CHARS: usize = 64;

/// Characters of generated access key ids.
const ACCESS_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Characters of generated secrets.
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The catalog snapshot, as read.
#[derive(serde::Deserialize)]
struct StateFile {
    format_version: u32,
    state: ManagerState,
}

/// The catalog snapshot, as written (borrows the state instead of cloning it).
#[derive(serde::Serialize)]
struct StateFileRef<'a> {
    format_version: u32,
    state: &'a ManagerState,
}

/// How a manager takes part in its Raft group.
#[derive(Clone, Default)]
pub struct GroupOptions {
    /// This manager's wire address (its `--rpc-listen`) as other managers reach it; empty for
    /// a manager without one (it can only ever be a group of one).
    pub addr: String,
    /// Join an existing group instead of bootstrapping one: on first start the manager holds
    /// nothing and waits until the group adds it (`leofs-adm add-manager`).
    pub join: bool,
    /// Start a new group of one from this manager's catalog, setting its Raft log aside (after
    /// the group lost its quorum for good).
    pub recover: bool,
    /// The id a group bootstrapped by this manager gets, unless its catalog has one already
    /// (32 hex characters; see [`crate::ManagerState::cluster_id`]).
    pub cluster_id: Option<String>,
    /// How it reaches other managers.
    pub transport: Option<Arc<dyn RaftTransport>>,
}

/// The durable manager: `Send + Sync`, shared as `Arc<Manager>` by every core.
pub struct Manager {
    /// None: a read-only copy of another node's catalog ([`Manager::read_only_copy`]).
    raft: Option<RaftGroup>,
    state: Arc<ArcSwap<ManagerState>>,
    admin_token: String,
    /// The nodes' last heartbeats (not replicated).
    liveness: Liveness,
    /// DeleteBucket's check where the data lives (set once the node runs).
    emptiness: OnceLock<EmptinessCheck>,
    /// This manager's own node, if it stores or serves S3.
    local_member: OnceLock<u32>,
}

/// Whether a bucket holds no object, checked where the data lives (None: cannot tell).
pub type EmptinessCheck = Box<dyn Fn(&Bucket) -> Option<bool> + Send + Sync>;

impl Manager {
    /// Opens `<data_dir>/manager/`, creating it on first start together with the admin user and
    /// its key pair (`root` if given, e.g. from `LEOFS_ROOT_ACCESS_KEY`/`LEOFS_ROOT_SECRET_KEY`,
    /// else generated) and the admin API token. Returns the root credentials when they were
    /// created by this call, so the caller prints them once.
    pub fn open(
        data_dir: &Path,
        root: Option<Credentials>,
    ) -> Result<(Manager, Option<Credentials>), ManagerError> {
        Self::open_with(data_dir, root, GroupOptions::default())
    }

    /// As [`Manager::open`], taking part in a group as `group` says. A manager that joins
    /// creates no user and no key on first start: it receives the group's state.
    pub fn open_with(
        data_dir: &Path,
        root: Option<Credentials>,
        group: GroupOptions,
    ) -> Result<(Manager, Option<Credentials>), ManagerError> {
        let dir = data_dir.join(MANAGER_DIR);
        ensure_private_dir(&dir)?;
        let admin_token = load_or_create_token(&dir.join(ADMIN_TOKEN_FILE))?;
        let state_path = dir.join(STATE_FILE);
        let published = Arc::new(ArcSwap::from_pointee(ManagerState::default()));
        let (machine, created) = match StateMachine::open(&state_path, published.clone())? {
            Some(machine) => {
                if let Some(root) = &root {
                    warn_if_root_differs(&published.load(), root);
                }
                (machine, None)
            }
            None if dir.join(META_FILE).exists() => {
                return Err(corrupt(
                    &state_path,
                    "missing, but the manager's Raft log exists".into(),
                ));
            }
            None if group.join => {
                let machine =
                    StateMachine::create(&state_path, ManagerState::default(), published.clone())?;
                (machine, None)
            }
            None => {
                let root = match root {
                    Some(root) => validate_root(root)?,
                    None => generate_credentials(ADMIN_USER_ID, &ManagerState::default())?,
                };
                write_atomic(
                    &dir.join(CREDENTIALS_FILE),
                    credentials_file(&root).as_bytes(),
                )?;
                let state = first_state(&root, now_unix_ms());
                let machine = StateMachine::create(&state_path, state, published.clone())?;
                (machine, Some(root))
            }
        };
        let mut machine = machine;
        if group.recover {
            let aside = set_log_aside(&dir)?;
            tracing::warn!(
                set_aside = %aside,
                "recovering the manager group: starting a new group of one from this manager's catalog"
            );
            machine.forget_group()?;
        } else if !group.join
            && !dir.join(META_FILE).exists()
            && let Some(applied) = machine.applied()
        {
            return Err(corrupt(
                &dir.join(LOG_FILE),
                format!(
                    "missing, but state.json says this manager was in a Raft group (applied \
                     index {}): restore the log, or, if the group lost its quorum for good, start \
                     this manager once with --recover-group (README: Recovering a manager group)",
                    applied.index
                ),
            ));
        }
        let (log, node_id, log_created) = LogStore::open(&dir)?;
        let bootstrap = log_created && !group.join;
        if bootstrap {
            tracing::info!(
                node_id,
                "bootstrapping the manager group with this manager as its only member"
            );
        } else if log_created {
            tracing::info!(
                node_id,
                addr = %group.addr,
                "this manager waits to be added to its group: run `leofs-adm add-manager {}` against a member",
                group.addr
            );
        }
        let seed = bootstrap.then(|| {
            let mut seed = ManagerState::clone(&published.load());
            if seed.cluster_id.is_none() {
                seed.cluster_id = group.cluster_id.clone();
            }
            seed
        });
        let raft = RaftGroup::start(node_id, group.addr, log, machine, seed, group.transport)?;
        let manager = Manager {
            raft: Some(raft),
            state: published,
            admin_token,
            liveness: Liveness::default(),
            emptiness: OnceLock::new(),
            local_member: OnceLock::new(),
        };
        Ok((manager, created))
    }

    /// A read-only copy of another node's catalog, for a node without the manager role: it is
    /// replaced whole by [`Manager::install`]; every change through it is refused with
    /// [`ManagerError::ReadOnlyCopy`].
    pub fn read_only_copy(state: ManagerState) -> Manager {
        Manager {
            raft: None,
            state: Arc::new(ArcSwap::from_pointee(state)),
            admin_token: String::new(),
            liveness: Liveness::default(),
            emptiness: OnceLock::new(),
            local_member: OnceLock::new(),
        }
    }

    /// Whether this is a read-only copy of the catalog (a node without the manager role).
    pub fn is_read_only_copy(&self) -> bool {
        self.raft.is_none()
    }

    /// Replaces a read-only copy's state with a newer snapshot of the catalog.
    pub fn install(&self, state: ManagerState) -> Result<(), ManagerError> {
        if self.raft.is_some() {
            return Err(ManagerError::Corrupt {
                path: PathBuf::new(),
                detail: "a snapshot can only be installed into a read-only copy".into(),
            });
        }
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// The state encoded as a snapshot (the `state.json` layout, compact): what a node
    /// without the manager role fetches.
    pub fn encode_snapshot(state: &ManagerState) -> Vec<u8> {
        let file = StateFileRef {
            format_version: CATALOG_SNAPSHOT_FORMAT_VERSION,
            state,
        };
        // Maps with string keys and plain values always serialize.
        serde_json::to_vec(&file).unwrap_or_default()
    }

    /// Decodes (and checks) a snapshot made by [`Manager::encode_snapshot`].
    pub fn decode_snapshot(bytes: &[u8]) -> Result<ManagerState, ManagerError> {
        parse_state(Path::new("<catalog snapshot>"), bytes)
    }

    /// The current state; lock-free, cheap enough to call on every request.
    pub fn snapshot(&self) -> Arc<ManagerState> {
        self.state.load_full()
    }

    /// Runs `read` on the current state without touching a shared reference count (cheaper than
    /// [`Manager::snapshot`] on hot paths shared by many cores); `read` must not block.
    pub fn with_snapshot<R>(&self, read: impl FnOnce(&ManagerState) -> R) -> R {
        read(&self.state.load())
    }

    /// Creates a bucket owned by `owner` (durable before returning).
    pub fn create_bucket(
        &self,
        name: &str,
        owner: &str,
        acl: BucketAcl,
    ) -> Result<Bucket, ManagerError> {
        validate_new_bucket_name(name)?;
        let bucket = Bucket {
            name: name.to_owned(),
            owner: owner.to_owned(),
            acl,
            grants: Vec::new(),
            created_unix_ms: now_unix_ms(),
            // Random and nonzero: 0 marks buckets older than incarnations.
            incarnation: crate::persist::random_nonzero_u64()?,
            deleting: false,
            consistency: None,
            versioning: Default::default(),
            lifecycle: Vec::new(),
            tags: Vec::new(),
            cors: Vec::new(),
            policy: None,
        };
        self.propose(Command::CreateBucket {
            bucket: bucket.clone(),
        })?;
        Ok(bucket)
    }

    /// Marks bucket `name` at `incarnation` as being deleted: from then on every gateway
    /// that has seen the mark refuses writes into it (the first phase of DeleteBucket).
    pub fn mark_bucket_deleting(&self, name: &str, incarnation: u64) -> Result<(), ManagerError> {
        self.propose(Command::MarkBucketDeleting {
            name: name.to_owned(),
            incarnation,
        })
    }

    /// Deletes bucket `name` at `incarnation`, in two phases once the node has given its
    /// emptiness check ([`Manager::set_emptiness_check`]): the bucket is marked (writes into
    /// it are refused), the manager waits until every running gateway reports a catalog with
    /// the mark (at most [`MARK_SEEN_TIMEOUT`]), checks the bucket empty where the data lives,
    /// and only then removes it; if it is not empty, or a gateway does not confirm, or the
    /// check cannot be made, the mark is taken away and the bucket stays. Without a check (a
    /// manager used on its own) the caller has checked and the record is removed at once. A
    /// bucket of that name created again since is left alone (NoSuchBucket).
    pub fn delete_bucket(&self, name: &str, incarnation: u64) -> Result<(), ManagerError> {
        let delete = Command::DeleteBucket {
            name: name.to_owned(),
            incarnation,
        };
        let Some(is_empty) = self.emptiness.get() else {
            return self.propose(delete);
        };
        let at_incarnation = |state: &ManagerState| {
            state
                .bucket(name)
                .filter(|b| b.incarnation == incarnation)
                .cloned()
        };
        let bucket =
            at_incarnation(&self.snapshot()).ok_or(ManagerError::NoSuchBucket(name.into()))?;
        if !bucket.deleting {
            self.mark_bucket_deleting(name, incarnation)?;
        }
        let unmark = |why: ManagerError| {
            let unmarked = self.propose(Command::UnmarkBucketDeleting {
                name: name.to_owned(),
                incarnation,
            });
            if let Err(e) = unmarked {
                tracing::warn!(bucket = name, error = %e, "cannot take a deletion mark away; the bucket refuses writes until it is deleted");
            }
            Err(why)
        };
        let revision = match self
            .wait_applied_here(|state| at_incarnation(state).is_some_and(|b| b.deleting))
        {
            Some(revision) => revision,
            None => {
                return unmark(ManagerError::Unreachable(format!(
                    "bucket {name} was marked for deletion, but this manager has not applied it yet"
                )));
            }
        };
        if let Err(e) = self.wait_seen_by_gateways(revision) {
            return unmark(e);
        }
        match is_empty(&bucket) {
            Some(true) => self.propose(delete),
            Some(false) => unmark(ManagerError::BucketNotEmpty(name.into())),
            None => unmark(ManagerError::Unreachable(format!(
                "cannot check that bucket {name} is empty where its data lives; it stays"
            ))),
        }
    }

    /// Gives the check DeleteBucket makes where the data lives (whether a bucket holds no
    /// object); set once, when the node runs.
    pub fn set_emptiness_check(&self, check: EmptinessCheck) {
        if self.emptiness.set(check).is_err() {
            tracing::warn!("the emptiness check was already set");
        }
    }

    /// Names this manager's own node (which reads the manager's state itself, so it has seen
    /// every change applied here).
    pub fn set_local_member(&self, node: u32) {
        if self.local_member.set(node).is_err() {
            tracing::warn!("the local member was already set");
        }
    }

    /// Waits until this manager's state satisfies `applied` (a change the leader applied is
    /// applied here a moment later); that state's revision, or None after [`APPLIED_HERE_WAIT`].
    fn wait_applied_here(&self, applied: impl Fn(&ManagerState) -> bool) -> Option<u64> {
        let deadline = std::time::Instant::now() + APPLIED_HERE_WAIT;
        loop {
            let state = self.snapshot();
            if applied(&state) {
                return Some(state.revision);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(APPLIED_HERE_POLL);
        }
    }

    /// Waits until every running gateway's last heartbeat reports a catalog at `revision` or
    /// later (bounded by [`MARK_SEEN_TIMEOUT`]). Stopped nodes are not waited for.
    fn wait_seen_by_gateways(&self, revision: u64) -> Result<(), ManagerError> {
        let behind = self.gateways_behind_after_wait(revision);
        if behind.is_empty() {
            return Ok(());
        }
        Err(ManagerError::Unreachable(format!(
            "gateway node(s) {behind:?} did not confirm within {MARK_SEEN_TIMEOUT:?} that they \
             refuse writes into the bucket being deleted; it stays"
        )))
    }

    /// The running gateways (but this node) whose last heartbeat reports a catalog older than
    /// `revision`, once none does or [`MARK_SEEN_TIMEOUT`] has passed.
    fn gateways_behind_after_wait(&self, revision: u64) -> Vec<u32> {
        let deadline = std::time::Instant::now() + MARK_SEEN_TIMEOUT;
        loop {
            let behind = self.gateways_behind(revision);
            if behind.is_empty() || std::time::Instant::now() >= deadline {
                return behind;
            }
            std::thread::sleep(MARK_SEEN_POLL);
        }
    }

    /// The running gateways (but this node) whose last heartbeat reports a catalog older than
    /// `revision`.
    fn gateways_behind(&self, revision: u64) -> Vec<u32> {
        let local = self.local_member.get().copied();
        self.running_gateways()
            .into_iter()
            .filter(|&id| Some(id) != local)
            .filter(|&id| {
                self.liveness
                    .last(id)
                    .is_none_or(|(_, beat)| beat.catalog_revision < revision)
            })
            .collect()
    }

    /// The gateway nodes the managers consider running.
    fn running_gateways(&self) -> Vec<u32> {
        self.snapshot()
            .nodes
            .values()
            .filter(|m| m.gateway && matches!(m.state, NodeState::Running | NodeState::Restarted))
            .map(|m| m.id)
            .collect()
    }

    /// `leofs-adm purge-cache BUCKET/KEY [--prefix]`: records the purge, then waits (a few
    /// seconds at most) until every running gateway's catalog has it.
    pub fn purge_cache(
        &self,
        bucket: &str,
        key: &str,
        prefix: bool,
    ) -> Result<crate::admin::wire::CachePurged, ManagerError> {
        let before = self.snapshot().cache_purges.last().map_or(0, |p| p.seq);
        self.propose(Command::PurgeCache {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            prefix,
        })?;
        // This purge: the newest of its name recorded since the proposal (an earlier one of
        // the same name does not count).
        let purge = |state: &ManagerState| {
            state
                .cache_purges
                .iter()
                .rev()
                .take_while(|p| p.seq > before)
                .find(|p| p.bucket == bucket && p.key == key && p.prefix == prefix)
                .map(|p| p.seq)
        };
        let revision = self.wait_applied_here(|state| purge(state).is_some());
        let behind = revision.map_or_else(
            || self.running_gateways(),
            |revision| self.gateways_behind_after_wait(revision),
        );
        Ok(crate::admin::wire::CachePurged {
            seq: purge(&self.snapshot()).unwrap_or(0),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            prefix,
            gateways: self.running_gateways().len() as u32,
            gateways_behind: behind,
        })
    }

    /// Replaces a bucket's canned ACL.
    pub fn set_bucket_acl(&self, name: &str, acl: BucketAcl) -> Result<(), ManagerError> {
        self.propose(Command::SetBucketAcl {
            name: name.to_owned(),
            acl,
        })
    }

    /// Enables a bucket's versioning, or suspends it (S3 PutBucketVersioning).
    pub fn set_bucket_versioning(&self, name: &str, enabled: bool) -> Result<(), ManagerError> {
        self.propose(Command::SetBucketVersioning {
            name: name.to_owned(),
            enabled,
        })
    }

    /// Replaces a bucket's lifecycle rules (S3 PutBucketLifecycleConfiguration; none: its
    /// configuration is deleted).
    pub fn set_bucket_lifecycle(
        &self,
        name: &str,
        rules: Vec<crate::lifecycle::LifecycleRule>,
    ) -> Result<(), ManagerError> {
        self.propose(Command::SetBucketLifecycle {
            name: name.to_owned(),
            rules,
        })
    }

    /// Replaces one of a bucket's settings (S3 bucket tagging, CORS).
    pub fn set_bucket_setting(
        &self,
        name: &str,
        setting: crate::BucketSetting,
    ) -> Result<(), ManagerError> {
        self.propose(Command::SetBucketSetting {
            name: name.to_owned(),
            setting,
        })
    }

    /// Creates a user with a fresh key pair.
    pub fn create_user(&self, user_id: &str) -> Result<Credentials, ManagerError> {
        validate_user_id(user_id)?;
        let mut attempts = 0;
        loop {
            let credentials = generate_credentials(user_id, &self.state.load())?;
            let command = Command::CreateUser {
                user: User {
                    id: user_id.to_owned(),
                    is_admin: false,
                    created_unix_ms: now_unix_ms(),
                },
                key: access_key(&credentials),
            };
            attempts += 1;
            match self.raft()?.write(command)? {
                Ok(()) => return Ok(credentials),
                Err(Refusal::AccessKeyTaken(_)) if attempts < CREATE_USER_ATTEMPTS => continue,
                Err(refusal) => return Err(refusal.into()),
            }
        }
    }

    /// Deletes a user and its keys (refused while it owns buckets).
    pub fn delete_user(&self, user_id: &str) -> Result<(), ManagerError> {
        self.propose(Command::DeleteUser {
            user_id: user_id.to_owned(),
        })
    }

    /// Registers a node (at every start of a node without the manager role, and of this
    /// node's own storage); its member record as the state machine now has it.
    pub fn register_node(&self, registration: Registration) -> Result<Member, ManagerError> {
        let addr = registration.addr.clone();
        let command = Command::RegisterNode {
            registration,
            now_unix_ms: now_unix_ms(),
        };
        // A node that registers again as it is (every restart) changes nothing: no Raft entry,
        // so a restart works while the managers' disk is full.
        let known = self.snapshot();
        if let Some(member) = known.node_at(&addr) {
            let mut probe = crate::ManagerState::clone(&known);
            if command.apply(&mut probe).is_ok() && probe.nodes == known.nodes {
                return Ok(member.clone());
            }
        }
        self.propose(command)?;
        self.wait_applied_here(|state| state.node_at(&addr).is_some())
            .and_then(|_| self.snapshot().node_at(&addr).cloned())
            .ok_or_else(|| {
                ManagerError::Unreachable(format!(
                    "node {addr} was registered, but this manager has not applied it yet"
                ))
            })
    }

    /// Moves node `node` from `from` to `to` (refused if it is no longer in `from`).
    pub fn set_node_state(
        &self,
        node: u32,
        from: NodeState,
        to: NodeState,
    ) -> Result<(), ManagerError> {
        self.propose(Command::SetNodeState {
            node,
            from,
            to,
            at_unix_ms: now_unix_ms(),
        })
    }

    /// `leofs-adm suspend`: a running node stops being sent requests.
    pub fn suspend_node(&self, node: u32) -> Result<(), ManagerError> {
        self.change_operator_state(node, NodeState::Running, NodeState::Suspended)
    }

    /// `leofs-adm resume`: a suspended node is sent requests again.
    pub fn resume_node(&self, node: u32) -> Result<(), ManagerError> {
        self.change_operator_state(node, NodeState::Suspended, NodeState::Running)
    }

    fn change_operator_state(
        &self,
        node: u32,
        from: NodeState,
        to: NodeState,
    ) -> Result<(), ManagerError> {
        let state = self.snapshot();
        let member = state
            .nodes
            .get(&node)
            .ok_or(ManagerError::NoSuchNode(node))?;
        if !member.storage {
            return Err(ManagerError::NodeConflict(format!(
                "node {node} has no storage: only storage nodes are suspended and resumed"
            )));
        }
        if member.state != from {
            return Err(ManagerError::NodeConflict(format!(
                "node {node} is {}; only a {} node can be made {}",
                member.state.as_str(),
                from.as_str(),
                to.as_str()
            )));
        }
        self.set_node_state(node, from, to)
    }

    /// `leofs-adm start`: plans the first ring over the attached storage nodes (P chosen from
    /// their shards, or from `expected_vnodes`, unless `partitions` is given; N from
    /// `replicas`, else the settings) and starts the cluster with it.
    pub fn start_cluster(
        &self,
        partitions: Option<u32>,
        expected_vnodes: Option<u32>,
        replicas: Option<u32>,
    ) -> Result<RingRecord, ManagerError> {
        let state = self.snapshot();
        if let Some(ring) = &state.ring {
            return Err(ManagerError::NodeConflict(format!(
                "the cluster is already started (ring epoch {})",
                ring.epoch
            )));
        }
        let nodes = plan_nodes(
            state
                .nodes
                .values()
                .filter(|m| m.state == NodeState::Attached),
        );
        if nodes.is_empty() {
            return Err(ManagerError::NodeConflict(
                "no storage node is attached: start storage nodes with --join first".into(),
            ));
        }
        let vnodes: u32 = nodes.iter().map(|n| u32::from(n.shards)).sum();
        let partitions = partitions
            .unwrap_or_else(|| crate::cluster::choose_partitions(vnodes, expected_vnodes));
        let replicas = replicas.unwrap_or(state.settings.replicas) as usize;
        let plan = crate::ring_plan::plan(&nodes, partitions, replicas, None)
            .map_err(|e| ManagerError::NodeConflict(format!("cannot plan the ring: {e}")))?;
        let ring = RingRecord::from_plan(1, plan);
        self.propose(Command::StartRing { ring: ring.clone() })?;
        Ok(ring)
    }

    /// `leofs-adm rebalance`: plans the next ring over the storage nodes (attached ones in,
    /// detached ones out) with minimal movement from the current one and starts moving to it
    /// (DESIGN §4); the ring as it then is. Refused while another rebalance is under way or
    /// while a node routes by another ring than the managers'; a plan equal to the ring moves
    /// nothing and starts nothing.
    pub fn rebalance(&self) -> Result<RingRecord, ManagerError> {
        let state = self.snapshot();
        let ring = state
            .ring
            .as_ref()
            .ok_or_else(|| ManagerError::NodeConflict("the cluster is not started".into()))?;
        if ring.rebalance.is_some() || ring.recovery.is_some() {
            return Err(ManagerError::NodeConflict(format!(
                "a rebalance or a recovery is already under way (ring epoch {}): see `leofs-adm rebalance-status`",
                ring.epoch
            )));
        }
        // A node that still holds partitions a rebalance moved away hands them over and drops
        // them first: planned back onto it now, its stale copies would count as filled.
        let settling: Vec<u32> = state
            .nodes
            .keys()
            .copied()
            .filter(|id| {
                self.liveness
                    .recent(*id)
                    .is_some_and(|b| b.shards.iter().any(|s| s.foreign_partitions > 0))
            })
            .collect();
        if !ring.known_everywhere || !settling.is_empty() {
            return Err(ManagerError::NodeConflict(format!(
                "the last ring change is still settling (node(s) {settling:?} still hold partitions they hand over, or not every node routes by ring epoch {} yet): try again once `leofs-adm rebalance-status` says idle",
                ring.epoch
            )));
        }
        let behind = crate::cluster::nodes_behind(&state.nodes, ring, &self.liveness);
        if !behind.is_empty() {
            return Err(ManagerError::NodeConflict(format!(
                "node(s) {behind:?} do not route by the managers' ring (epoch {}) yet: the ring changes only once every node agrees on it; try again in a few seconds, or check `leofs-adm status`",
                ring.epoch
            )));
        }
        // Partitions go only to nodes that can take them: not stopped ones, and not attached
        // ones that are not heard from.
        let nodes = plan_nodes(state.nodes.values().filter(|m| {
            m.state != NodeState::Stopped
                && (m.state != NodeState::Attached || self.liveness.recent(m.id).is_some())
        }));
        let plan = ring
            .plan_next(&nodes)
            .map_err(|e| ManagerError::NodeConflict(format!("cannot plan the next ring: {e}")))?;
        if plan.table == ring.table {
            return Ok(ring.clone());
        }
        self.propose(Command::BeginRebalance {
            epoch: ring.epoch,
            next: plan.table,
            now_unix_ms: now_unix_ms(),
        })?;
        self.snapshot()
            .ring
            .clone()
            .ok_or_else(|| ManagerError::NodeConflict("the cluster is not started".into()))
    }

    /// Storage nodes that registered (attached) less than [`NODE_STOPPED_AFTER`] ago and have
    /// not sent a heartbeat yet: a rebalance planned now would leave them out.
    pub fn attached_not_heard_yet(&self) -> Vec<u32> {
        let now_ms = now_unix_ms();
        let window_ms = crate::cluster::NODE_STOPPED_AFTER.as_millis() as u64;
        self.snapshot()
            .nodes
            .values()
            .filter(|m| {
                m.storage
                    && m.state == NodeState::Attached
                    && now_ms.saturating_sub(m.state_since_unix_ms) < window_ms
                    && self.liveness.recent(m.id).is_none()
            })
            .map(|m| m.id)
            .collect()
    }

    /// `leofs-adm rebalance-abort`: gives up the rebalance under way; the ring stays the one
    /// it was (writes met their quorum in it all along), and what the new replicas took is
    /// handed over and dropped like any partition a node does not hold.
    pub fn abort_rebalance(&self) -> Result<(), ManagerError> {
        let epoch = self
            .snapshot()
            .ring
            .as_ref()
            .filter(|r| r.rebalance.is_some())
            .map(|r| r.epoch)
            .ok_or_else(|| ManagerError::NodeConflict("no rebalance is under way".into()))?;
        self.propose(Command::AbortRebalance { epoch })
    }

    /// `leofs-adm rebalance-suspend` / `rebalance-resume`: pauses or resumes the movement.
    pub fn suspend_rebalance(&self, suspended: bool) -> Result<(), ManagerError> {
        self.propose(Command::SuspendRebalance { suspended })
    }

    /// `leofs-adm detach NODE`: the next rebalance moves the node's partitions to the others.
    /// Refused during a rebalance, and when too few storage nodes would be left for N.
    pub fn detach_node(&self, node: u32) -> Result<(), ManagerError> {
        let state = self.snapshot();
        if state.ring.as_ref().is_some_and(|r| r.rebalance.is_some()) {
            return Err(ManagerError::NodeConflict(
                "a rebalance is under way: detach once it is done".into(),
            ));
        }
        let member = state
            .nodes
            .get(&node)
            .ok_or(ManagerError::NoSuchNode(node))?;
        if !member.storage {
            return Err(ManagerError::NodeConflict(format!(
                "node {node} has no storage: only storage nodes are detached"
            )));
        }
        let left = plan_nodes(state.nodes.values().filter(|m| m.id != node)).len();
        if left < state.settings.replicas as usize {
            return Err(ManagerError::NodeConflict(format!(
                "detaching node {node} would leave {left} storage node(s) for {} replicas",
                state.settings.replicas
            )));
        }
        match member.state {
            NodeState::Detached => Ok(()),
            NodeState::Attached
            | NodeState::Running
            | NodeState::Suspended
            | NodeState::Stopped => self.set_node_state(node, member.state, NodeState::Detached),
            other => Err(ManagerError::NodeConflict(format!(
                "node {node} is {}: wait until it runs, then detach it",
                other.as_str()
            ))),
        }
    }

    /// `leofs-adm attach NODE`: a detached storage node is attached again (the next
    /// rebalance gives it partitions; one detached but still in the ring stays in it). A node
    /// that registers with a started cluster is attached already.
    pub fn attach_node(&self, node: u32) -> Result<(), ManagerError> {
        let member = self
            .snapshot()
            .nodes
            .get(&node)
            .cloned()
            .ok_or(ManagerError::NoSuchNode(node))?;
        if !member.storage {
            return Err(ManagerError::NodeConflict(format!(
                "node {node} has no storage: only storage nodes are attached"
            )));
        }
        match member.state {
            NodeState::Attached => Ok(()),
            NodeState::Detached => self.rollback_node(node),
            other => Err(ManagerError::NodeConflict(format!(
                "node {node} is {}: only a detached node is attached (a storage node that \
                 registers with a started cluster is attached already)",
                other.as_str()
            ))),
        }
    }

    /// `leofs-adm rollback NODE`: takes a detach back before a rebalance has moved anything.
    pub fn rollback_node(&self, node: u32) -> Result<(), ManagerError> {
        let state = self.snapshot();
        if state.ring.as_ref().is_some_and(|r| r.rebalance.is_some()) {
            return Err(ManagerError::NodeConflict(
                "a rebalance is under way: it cannot be rolled back; detach or attach again once it is done".into(),
            ));
        }
        let member = state
            .nodes
            .get(&node)
            .ok_or(ManagerError::NoSuchNode(node))?;
        if member.state != NodeState::Detached {
            return Err(ManagerError::NodeConflict(format!(
                "node {node} is {}: only a detached node is rolled back",
                member.state.as_str()
            )));
        }
        let in_ring = state
            .ring
            .as_ref()
            .is_some_and(|r| r.table.iter().any(|(n, _)| *n == node));
        let to = if in_ring {
            NodeState::Running
        } else {
            NodeState::Attached
        };
        self.set_node_state(node, NodeState::Detached, to)
    }

    /// `leofs-adm recover-node NODE` / `recover-consistency NODE`: every partition the node
    /// holds is compared with its other replicas and repaired now (refused during a
    /// rebalance or another recovery).
    pub fn recover_node(&self, node: u32) -> Result<(), ManagerError> {
        self.propose(Command::RecoverNode {
            node,
            now_unix_ms: now_unix_ms(),
        })
    }

    /// `leofs-adm compact-start|compact-suspend|compact-resume NODE`.
    pub fn compact(
        &self,
        node: u32,
        action: crate::cluster::CompactAction,
    ) -> Result<(), ManagerError> {
        self.propose(Command::Compact {
            node,
            action,
            now_unix_ms: now_unix_ms(),
        })
    }

    /// `leofs-adm update-auto-recover-after SECS`: how long a storage node may stay stopped
    /// before its partitions are re-replicated onto the others (0: only once the tombstone
    /// grace is over).
    pub fn set_auto_recover_after(&self, secs: u64) -> Result<(), ManagerError> {
        self.propose(Command::SetAutoRecoverAfter { secs })
    }

    /// `leofs-adm update-tombstone-grace SECS`: a storage node stopped for longer than this has
    /// its partitions re-replicated onto the others and rejoins wiped.
    pub fn set_tombstone_grace(&self, secs: u64) -> Result<(), ManagerError> {
        if secs == 0 {
            return Err(ManagerError::InvalidSetting(
                "the tombstone grace is at least 1 second".into(),
            ));
        }
        self.propose(Command::SetTombstoneGrace { secs })
    }

    /// Proposes a step [`crate::cluster::ring_steps`] decided (the leader's watch).
    pub fn propose_ring_step(&self, step: Command) -> Result<(), ManagerError> {
        self.propose(step)
    }

    /// `leofs-adm update-consistency-level`: the cluster's W, R and D, refused unless each is
    /// 1 to N.
    pub fn set_consistency(
        &self,
        consistency: crate::cluster::Consistency,
    ) -> Result<(), ManagerError> {
        let replicas = self.snapshot().settings.replicas;
        if let Some(why) = consistency.impossible_with(replicas) {
            return Err(ManagerError::InvalidConsistency(why));
        }
        self.propose(Command::SetConsistency { consistency })
    }

    /// `leofs-adm update-consistency-level --bucket`: a bucket's own W, R and D (None: the
    /// cluster's), refused unless each is 1 to N.
    pub fn set_bucket_consistency(
        &self,
        name: &str,
        consistency: Option<crate::cluster::Consistency>,
    ) -> Result<Bucket, ManagerError> {
        let replicas = self.snapshot().settings.replicas;
        if let Some(why) = consistency.and_then(|c| c.impossible_with(replicas)) {
            return Err(ManagerError::InvalidConsistency(why));
        }
        self.propose(Command::SetBucketConsistency {
            name: name.to_owned(),
            consistency,
        })?;
        self.snapshot()
            .bucket(name)
            .cloned()
            .ok_or_else(|| ManagerError::NoSuchBucket(name.to_owned()))
    }

    /// Starts the ring of a node with the manager and storage roles that leads a group of its
    /// own: `table` is its own partition map (node `node`), as it has always routed.
    pub fn start_own_ring(&self, ring: RingRecord) -> Result<(), ManagerError> {
        match self.propose(Command::StartRing { ring }) {
            Err(ManagerError::NodeConflict(_)) if self.snapshot().ring.is_some() => Ok(()),
            other => other,
        }
    }

    /// Records a node's heartbeat (no Raft write: the leader turns what heartbeats show into
    /// state changes) and answers with the managers the node should beat to and the ring this
    /// manager has (a node whose ring differs fetches it at once).
    pub fn heartbeat(&self, beat: Heartbeat) -> HeartbeatAnswer {
        let state = self.snapshot();
        let answer = HeartbeatAnswer {
            managers: self
                .group_status()
                .map(|group| group.members.into_iter().map(|m| m.addr).collect())
                .unwrap_or_default(),
            ring_epoch: state.ring.as_ref().map_or(0, |ring| ring.epoch),
            ring_checksum: state.ring_checksum().unwrap_or(0),
            manager_unix_us: crate::cluster::unix_now_us(),
        };
        self.liveness.record(beat);
        answer
    }

    /// The last heartbeat of every node, as this manager received them.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Whether this manager leads its group now.
    pub fn is_leader(&self) -> bool {
        self.group_status()
            .is_some_and(|group| group.leader == Some(group.node_id))
    }

    /// The token that authorizes admin API calls (stored mode 0600 in the data dir).
    pub fn admin_token(&self) -> String {
        self.admin_token.clone()
    }

    /// Gives a group without a cluster id (bootstrapped before ids existed) the id `id`; the
    /// group's id after (which may be one it had already).
    pub fn adopt_cluster_id(&self, id: &str) -> Result<Option<String>, ManagerError> {
        if self.snapshot().cluster_id.is_none() {
            self.propose(Command::AdoptClusterId { id: id.to_owned() })?;
        }
        Ok(self.snapshot().cluster_id.clone())
    }

    /// The manager group as this manager sees it; None for a read-only copy.
    pub fn group_status(&self) -> Option<GroupStatus> {
        self.raft.as_ref().map(RaftGroup::status)
    }

    /// Adds the manager at `addr` (its `--rpc-listen` address) to the group; its node id.
    pub fn add_manager(&self, addr: &str) -> Result<u64, ManagerError> {
        self.raft()?.add_manager(addr)
    }

    /// Removes manager `node_id` from the group.
    pub fn remove_manager(&self, node_id: u64) -> Result<(), ManagerError> {
        self.raft()?.remove_manager(node_id)
    }

    /// Serves a call from another manager (see [`RaftGroup::serve`]).
    pub fn serve_raft(
        &self,
        call: RaftCall,
        body: Vec<u8>,
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<u8>, ManagerError>> + Send + 'static,
        ManagerError,
    > {
        Ok(self.raft()?.serve(call, body))
    }

    /// The Raft group changes go through; a read-only copy has none.
    fn raft(&self) -> Result<&RaftGroup, ManagerError> {
        self.raft.as_ref().ok_or(ManagerError::ReadOnlyCopy)
    }

    /// Proposes `command` and waits until it is applied (durable on the group, published
    /// here); a refusal becomes its error. Blocks: never called on a core thread.
    fn propose(&self, command: Command) -> Result<(), ManagerError> {
        self.raft()?.write(command)?.map_err(ManagerError::from)
    }
}

/// The file of a node's cluster id, in its data directory.
pub const CLUSTER_ID_FILE: &str = "cluster.id";
/// Characters of a cluster id (16 bytes, hex).
pub const CLUSTER_ID_CHARS: usize = 32;

/// A fresh cluster id: 16 random bytes as 32 hex characters.
pub fn new_cluster_id() -> Result<String, ManagerError> {
    crate::persist::random_hex(CLUSTER_ID_CHARS / 2)
}

/// The cluster id kept in `<data_dir>/cluster.id`; None when the node has not learned one.
pub fn load_cluster_id(data_dir: &Path) -> Result<Option<String>, ManagerError> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    let Some(bytes) = read_if_exists(&path)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).unwrap_or_default();
    let id = text.trim();
    if id.len() != CLUSTER_ID_CHARS || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(corrupt(&path, format!("not a cluster id: {id:?}")));
    }
    Ok(Some(id.to_ascii_lowercase()))
}

/// Keeps `id` in `<data_dir>/cluster.id` (atomically), unless the file exists.
pub fn store_cluster_id(data_dir: &Path, id: &str) -> Result<(), ManagerError> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    if path.exists() {
        return Ok(());
    }
    write_atomic(&path, format!("{id}\n").as_bytes())?;
    tracing::info!(
        cluster_id = id,
        "this node belongs to cluster {id} from now on"
    );
    Ok(())
}

/// Renames the Raft log and its meta file to `<name>.before-recovery-<unix ms>`; the new
/// names, for the log line.
fn set_log_aside(dir: &Path) -> Result<String, ManagerError> {
    let suffix = format!("before-recovery-{}", now_unix_ms());
    let mut moved = Vec::new();
    for name in [LOG_FILE, META_FILE] {
        let from = dir.join(name);
        if from.exists() {
            let to = dir.join(format!("{name}.{suffix}"));
            std::fs::rename(&from, &to).map_err(crate::persist::io_error("rename", &from))?;
            moved.push(to.display().to_string());
        }
    }
    crate::persist::sync_parent_dir(&dir.join(LOG_FILE))?;
    Ok(moved.join(", "))
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// User ids: 1–64 characters among ASCII letters, digits, '.', '_', '-', '@'.
fn validate_user_id(user_id: &str) -> Result<(), ManagerError> {
    let reject = |reason: &'static str| {
        Err(ManagerError::InvalidUserId {
            user_id: user_id.to_owned(),
            reason,
        })
    };
    if user_id.is_empty() {
        return reject("must not be empty");
    }
    if user_id.len() > USER_ID_MAX_CHARS {
        return reject("longer than 64 characters");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@');
    if !user_id.bytes().all(allowed) {
        return reject("only ASCII letters, digits, '.', '_', '-' and '@' are allowed");
    }
    Ok(())
}

/// Checks operator-supplied root credentials and binds them to the admin user.
fn validate_root(root: Credentials) -> Result<Credentials, ManagerError> {
    let key_len = root.access_key_id.chars().count();
    if !(ROOT_ACCESS_KEY_MIN_CHARS..=ROOT_ACCESS_KEY_MAX_CHARS).contains(&key_len) {
        return Err(ManagerError::InvalidCredentials(
            "access key id must be 3 to 128 characters",
        ));
    }
    let printable = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
    if !printable(&root.access_key_id) || !printable(&root.secret_access_key) {
        return Err(ManagerError::InvalidCredentials(
            "access key id and secret must be printable ASCII without spaces",
        ));
    }
    if root.secret_access_key.chars().count() < ROOT_SECRET_MIN_CHARS {
        return Err(ManagerError::InvalidCredentials(
            "secret key must be at least 8 characters",
        ));
    }
    Ok(Credentials {
        user_id: ADMIN_USER_ID.to_owned(),
        ..root
    })
}

/// A fresh key pair for `user_id`, with an access key id not used in `state`.
fn generate_credentials(user_id: &str, state: &ManagerState) -> Result<Credentials, ManagerError> {
    let access_key_id = loop {
        let candidate = random_string(ACCESS_KEY_ALPHABET, ACCESS_KEY_ID_CHARS)?;
        if state.access_key(&candidate).is_none() {
            break candidate;
        }
    };
    Ok(Credentials {
        user_id: user_id.to_owned(),
        access_key_id,
        secret_access_key: random_string(SECRET_ALPHABET, SECRET_KEY_CHARS)?,
    })
}

fn access_key(credentials: &Credentials) -> AccessKey {
    AccessKey {
        access_key_id: credentials.access_key_id.clone(),
        secret_access_key: credentials.secret_access_key.clone(),
        user_id: credentials.user_id.clone(),
    }
}

/// The state of a first start: the admin user and its key pair.
fn first_state(root: &Credentials, now_unix_ms: u64) -> ManagerState {
    let mut state = ManagerState::default();
    state.users.insert(
        root.user_id.clone(),
        User {
            id: root.user_id.clone(),
            is_admin: true,
            created_unix_ms: now_unix_ms,
        },
    );
    state
        .keys
        .insert(root.access_key_id.clone(), access_key(root));
    state
}

/// Logs when the operator passes root keys that differ from the stored admin key: the stored
/// key stays (replacing it silently would lock out whoever uses it).
fn warn_if_root_differs(state: &ManagerState, root: &Credentials) {
    let matches = state.access_key(&root.access_key_id).is_some_and(|key| {
        key.secret_access_key == root.secret_access_key
            && state.user(&key.user_id).is_some_and(|user| user.is_admin)
    });
    if !matches {
        tracing::warn!(
            access_key_id = %root.access_key_id,
            "root credentials given at start differ from the stored admin key; keeping the stored key \
             (root credentials only apply on first start)"
        );
    }
}

/// The root key pair in the AWS shared-credentials format (usable as `AWS_SHARED_CREDENTIALS_FILE`).
fn credentials_file(root: &Credentials) -> String {
    format!(
        "# leofs root credentials (user {}), created at first start\n[default]\n\
         aws_access_key_id = {}\naws_secret_access_key = {}\n",
        root.user_id, root.access_key_id, root.secret_access_key
    )
}

fn load_or_create_token(path: &Path) -> Result<String, ManagerError> {
    let (token, _) = load_or_create_secret(path, "admin token", true)?
        .unwrap_or_else(|| unreachable!("a token is created when the file is missing"));
    Ok(token)
}

/// A secret kept in a file of its own (`admin.token`, the cluster secret): the trimmed text of
/// `path`, or, when the file does not exist and `create` is set, a fresh one (32 random bytes,
/// hex-encoded) written there atomically with mode 0600. Returns the text and whether it was
/// created now; None when the file is missing and `create` is not set. `what` names the secret
/// in errors.
pub fn load_or_create_secret(
    path: &Path,
    what: &str,
    create: bool,
) -> Result<Option<(String, bool)>, ManagerError> {
    match read_if_exists(path)? {
        Some(bytes) => {
            let secret = String::from_utf8(bytes)
                .map(|text| text.trim().to_owned())
                .map_err(|_| corrupt(path, format!("{what} is not UTF-8")))?;
            if secret.is_empty() {
                return Err(corrupt(path, format!("{what} file is empty")));
            }
            Ok(Some((secret, false)))
        }
        None if create => {
            let secret = new_hex_secret()?;
            write_atomic(path, format!("{secret}\n").as_bytes())?;
            Ok(Some((secret, true)))
        }
        None => Ok(None),
    }
}

fn parse_state(path: &Path, bytes: &[u8]) -> Result<ManagerState, ManagerError> {
    let file: StateFile =
        serde_json::from_slice(bytes).map_err(|err| corrupt(path, err.to_string()))?;
    if file.format_version != CATALOG_SNAPSHOT_FORMAT_VERSION {
        return Err(corrupt(
            path,
            format!(
                "format version {} is not supported (expected {CATALOG_SNAPSHOT_FORMAT_VERSION})",
                file.format_version
            ),
        ));
    }
    check_references(&file.state).map_err(|detail| corrupt(path, detail))?;
    Ok(file.state)
}

/// Every record must point at records that exist, under the id it is filed by.
pub(crate) fn check_references(state: &ManagerState) -> Result<(), String> {
    for (id, user) in &state.users {
        if *id != user.id {
            return Err(format!("user filed as {id:?} has id {:?}", user.id));
        }
    }
    for (id, key) in &state.keys {
        if *id != key.access_key_id {
            return Err(format!(
                "key filed as {id:?} has id {:?}",
                key.access_key_id
            ));
        }
        if state.user(&key.user_id).is_none() {
            return Err(format!(
                "key {id:?} belongs to unknown user {:?}",
                key.user_id
            ));
        }
    }
    for (name, bucket) in &state.buckets {
        if *name != bucket.name {
            return Err(format!(
                "bucket filed as {name:?} has name {:?}",
                bucket.name
            ));
        }
        if state.user(&bucket.owner).is_none() {
            return Err(format!(
                "bucket {name:?} belongs to unknown user {:?}",
                bucket.owner
            ));
        }
    }
    Ok(())
}

/// A [`ManagerError::Corrupt`] for `path`.
pub(crate) fn corrupt(path: &Path, detail: String) -> ManagerError {
    ManagerError::Corrupt {
        path: path.to_path_buf(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::Ordering;

    fn open(dir: &Path) -> (Manager, Option<Credentials>) {
        Manager::open(dir, None).unwrap()
    }

    fn incarnation_of(manager: &Manager, bucket: &str) -> u64 {
        manager.snapshot().bucket(bucket).unwrap().incarnation
    }

    /// A node registering at `addr` with `shards` shards of storage (0: a gateway).
    fn registration(addr: &str, shards: u16) -> Registration {
        Registration {
            format_version: crate::cluster::MEMBERSHIP_FORMAT_VERSION,
            addr: addr.into(),
            storage: shards > 0,
            gateway: shards == 0,
            shards,
            capacity_bytes: 0,
            zone: String::new(),
            layout_partitions: None,
            known_id: None,
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn first_start_creates_admin_with_generated_keys_and_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, created) = open(dir.path());
        let root = created.expect("first start returns the root credentials");
        assert_eq!(root.user_id, ADMIN_USER_ID);
        assert_eq!(root.access_key_id.len(), ACCESS_KEY_ID_CHARS);
        assert!(
            root.access_key_id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        assert_eq!(root.secret_access_key.len(), SECRET_KEY_CHARS);
        assert!(
            root.secret_access_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );

        let snapshot = manager.snapshot();
        assert!(snapshot.user(ADMIN_USER_ID).unwrap().is_admin);
        let key = snapshot.access_key(&root.access_key_id).unwrap();
        assert_eq!(key.secret_access_key, root.secret_access_key);
        assert_eq!(key.user_id, ADMIN_USER_ID);

        let manager_dir = dir.path().join(MANAGER_DIR);
        assert_eq!(mode_of(&manager_dir), 0o700);
        for file in [STATE_FILE, ADMIN_TOKEN_FILE, CREDENTIALS_FILE] {
            assert_eq!(mode_of(&manager_dir.join(file)), 0o600, "{file}");
        }
        let credentials = fs::read_to_string(manager_dir.join(CREDENTIALS_FILE)).unwrap();
        assert!(credentials.contains(&format!("aws_access_key_id = {}", root.access_key_id)));
        assert!(credentials.contains(&format!(
            "aws_secret_access_key = {}",
            root.secret_access_key
        )));
        let token = fs::read_to_string(manager_dir.join(ADMIN_TOKEN_FILE)).unwrap();
        assert_eq!(token.trim(), manager.admin_token());
        assert_eq!(manager.admin_token().len(), 64);
    }

    #[test]
    fn reopen_keeps_everything_and_returns_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, root) = open(dir.path());
        let root = root.unwrap();
        let alice = manager.create_user("alice").unwrap();
        manager
            .create_bucket("photos", "alice", BucketAcl::PublicRead)
            .unwrap();
        let token = manager.admin_token();
        drop(manager);

        let (manager, created) = open(dir.path());
        assert!(created.is_none());
        assert_eq!(manager.admin_token(), token);
        let snapshot = manager.snapshot();
        assert!(snapshot.access_key(&root.access_key_id).is_some());
        assert_eq!(
            snapshot.access_key(&alice.access_key_id).unwrap().user_id,
            "alice"
        );
        let bucket = snapshot.bucket("photos").unwrap();
        assert_eq!(
            (bucket.owner.as_str(), bucket.acl),
            ("alice", BucketAcl::PublicRead)
        );
    }

    #[test]
    fn given_root_credentials_are_used_on_first_start_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = Credentials {
            user_id: "ignored".to_owned(),
            access_key_id: "ROOTKEY".to_owned(),
            secret_access_key: "rootsecret".to_owned(),
        };
        let (manager, created) = Manager::open(dir.path(), Some(root.clone())).unwrap();
        let created = created.unwrap();
        assert_eq!(created.user_id, ADMIN_USER_ID);
        assert_eq!(created.access_key_id, "ROOTKEY");
        assert_eq!(
            manager
                .snapshot()
                .access_key("ROOTKEY")
                .unwrap()
                .secret_access_key,
            "rootsecret"
        );
        drop(manager);

        let other = Credentials {
            access_key_id: "OTHERKEY".to_owned(),
            ..root
        };
        let (manager, created) = Manager::open(dir.path(), Some(other)).unwrap();
        assert!(created.is_none());
        let snapshot = manager.snapshot();
        assert!(snapshot.access_key("ROOTKEY").is_some());
        assert!(snapshot.access_key("OTHERKEY").is_none());
    }

    #[test]
    fn invalid_root_credentials_are_refused_before_anything_is_stored() {
        for (key, secret) in [
            ("AB", "longenough"),
            (&*"K".repeat(129), "longenough"),
            ("GOODKEY", "short"),
            ("BAD KEY", "longenough"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let root = Credentials {
                user_id: ADMIN_USER_ID.to_owned(),
                access_key_id: key.to_owned(),
                secret_access_key: secret.to_owned(),
            };
            let err = Manager::open(dir.path(), Some(root)).err().unwrap();
            assert!(
                matches!(err, ManagerError::InvalidCredentials(_)),
                "{key:?}/{secret:?}: {err}"
            );
            assert!(!dir.path().join(MANAGER_DIR).join(STATE_FILE).exists());
        }
    }

    #[test]
    fn bucket_creation_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        manager.create_user("bob").unwrap();
        let bucket = manager
            .create_bucket("shared", "alice", BucketAcl::Private)
            .unwrap();
        assert_eq!(bucket.owner, "alice");
        assert!(matches!(
            manager.create_bucket("shared", "alice", BucketAcl::Private),
            Err(ManagerError::BucketAlreadyOwnedByYou(name)) if name == "shared"
        ));
        assert!(matches!(
            manager.create_bucket("shared", "bob", BucketAcl::Private),
            Err(ManagerError::BucketAlreadyExists(name)) if name == "shared"
        ));
        assert!(matches!(
            manager.create_bucket("Bad_Name", "alice", BucketAcl::Private),
            Err(ManagerError::InvalidBucketName { .. })
        ));
        assert!(matches!(
            manager.create_bucket("orphan", "nobody", BucketAcl::Private),
            Err(ManagerError::NoSuchUser(_))
        ));
        assert!(manager.snapshot().bucket("orphan").is_none());
    }

    #[test]
    fn heartbeat_answers_name_the_managers_ring_once_started() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        let storage = manager
            .register_node(registration("127.0.0.1:4100", 2))
            .unwrap();
        let beat = || Heartbeat {
            node: storage.id,
            ..Heartbeat::default()
        };
        let before = manager.heartbeat(beat());
        assert_eq!((before.ring_epoch, before.ring_checksum), (0, 0));
        let ring = manager.start_cluster(None, None, None).unwrap();
        let after = manager.heartbeat(beat());
        assert_eq!(after.ring_epoch, ring.epoch);
        assert_eq!(
            Some(after.ring_checksum),
            manager.snapshot().ring_checksum()
        );
        assert_ne!(after.ring_checksum, 0);
    }

    #[test]
    fn attach_takes_a_detached_node_back_and_the_tombstone_grace_is_at_least_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        let register = |i: u32| {
            manager
                .register_node(registration(&format!("127.0.0.1:41{i:02}"), 1))
                .unwrap()
                .id
        };
        let mut nodes: Vec<u32> = (0..3).map(register).collect();
        manager.start_cluster(None, None, Some(3)).unwrap();
        // Registered with a started cluster: attached already.
        nodes.push(register(3));
        let state = |node: u32| manager.snapshot().nodes[&node].state;
        assert_eq!(state(nodes[3]), NodeState::Attached);
        manager.attach_node(nodes[3]).unwrap();
        assert_eq!(state(nodes[3]), NodeState::Attached);
        // Detached while still in the ring: attached again, it simply stays in it.
        manager.detach_node(nodes[0]).unwrap();
        assert_eq!(state(nodes[0]), NodeState::Detached);
        manager.attach_node(nodes[0]).unwrap();
        assert_ne!(state(nodes[0]), NodeState::Detached);
        assert!(matches!(
            manager.attach_node(nodes[0]),
            Err(ManagerError::NodeConflict(why)) if why.contains("only a detached node")
        ));
        assert!(matches!(
            manager.attach_node(99),
            Err(ManagerError::NoSuchNode(99))
        ));

        assert!(matches!(
            manager.set_tombstone_grace(0),
            Err(ManagerError::InvalidSetting(_))
        ));
        manager.set_tombstone_grace(3).unwrap();
        assert_eq!(manager.snapshot().settings.tombstone_grace_secs, 3);
    }

    #[test]
    fn delete_bucket_marks_waits_for_gateways_checks_and_unmarks_when_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        manager
            .create_bucket("full", "alice", BucketAcl::Private)
            .unwrap();
        let empty = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = empty.clone();
        manager.set_emptiness_check(Box::new(move |_| Some(seen.load(Ordering::SeqCst))));
        // A running gateway that never reports the mark holds the deletion back.
        let gateway = manager.register_node(registration("gw-1", 0)).unwrap();
        let incarnation = incarnation_of(&manager, "full");
        let started = std::time::Instant::now();
        assert!(matches!(
            manager.delete_bucket("full", incarnation),
            Err(ManagerError::Unreachable(why)) if why.contains("did not confirm")
        ));
        assert!(started.elapsed() >= MARK_SEEN_TIMEOUT);
        assert!(!manager.snapshot().bucket("full").unwrap().deleting);
        // Once it reports a catalog with the mark: checked, found not empty, unmarked.
        let beating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let beats = {
            let (manager, beating) = (&manager, beating.clone());
            move || {
                while beating.load(Ordering::SeqCst) {
                    manager.heartbeat(Heartbeat {
                        node: gateway.id,
                        catalog_revision: manager.snapshot().revision,
                        ..Heartbeat::default()
                    });
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        };
        std::thread::scope(|scope| {
            scope.spawn(beats);
            assert!(matches!(
                manager.delete_bucket("full", incarnation),
                Err(ManagerError::BucketNotEmpty(_))
            ));
            assert!(!manager.snapshot().bucket("full").unwrap().deleting);
            // A deletion cut off after its mark is finished or undone by the next one.
            manager.mark_bucket_deleting("full", incarnation).unwrap();
            assert!(matches!(
                manager.delete_bucket("full", incarnation),
                Err(ManagerError::BucketNotEmpty(_))
            ));
            assert!(!manager.snapshot().bucket("full").unwrap().deleting);
            empty.store(true, Ordering::SeqCst);
            manager.delete_bucket("full", incarnation).unwrap();
            beating.store(false, Ordering::SeqCst);
        });
        assert!(manager.snapshot().bucket("full").is_none());
    }

    #[test]
    fn delete_and_acl_semantics_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        manager
            .create_bucket("keep", "alice", BucketAcl::Private)
            .unwrap();
        manager
            .create_bucket("drop", "alice", BucketAcl::Private)
            .unwrap();
        manager
            .set_bucket_acl("keep", BucketAcl::PublicReadWrite)
            .unwrap();
        manager
            .delete_bucket("drop", incarnation_of(&manager, "drop"))
            .unwrap();
        assert!(matches!(
            manager.delete_bucket("drop", 0),
            Err(ManagerError::NoSuchBucket(_))
        ));
        assert!(matches!(
            manager.set_bucket_acl("drop", BucketAcl::Private),
            Err(ManagerError::NoSuchBucket(_))
        ));
        drop(manager);
        let (manager, _) = open(dir.path());
        let snapshot = manager.snapshot();
        assert!(snapshot.bucket("drop").is_none());
        assert_eq!(
            snapshot.bucket("keep").unwrap().acl,
            BucketAcl::PublicReadWrite
        );
    }

    #[test]
    fn a_bucket_created_again_gets_a_new_incarnation_and_old_buckets_keep_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        let first = manager
            .create_bucket("again", "alice", BucketAcl::Private)
            .unwrap();
        manager.delete_bucket("again", first.incarnation).unwrap();
        let second = manager
            .create_bucket("again", "alice", BucketAcl::Private)
            .unwrap();
        assert_ne!(first.incarnation, 0);
        assert_ne!(second.incarnation, 0);
        assert_ne!(first.incarnation, second.incarnation);
        drop(manager);
        // A state file written before incarnations existed: its buckets read as incarnation 0.
        let path = dir.path().join(MANAGER_DIR).join(STATE_FILE);
        let mut state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let reopened_incarnation = state["state"]["buckets"]["again"]["incarnation"].clone();
        assert_eq!(reopened_incarnation, serde_json::json!(second.incarnation));
        state["state"]["buckets"]["again"]
            .as_object_mut()
            .unwrap()
            .remove("incarnation");
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let (manager, _) = open(dir.path());
        assert_eq!(manager.snapshot().bucket("again").unwrap().incarnation, 0);
    }

    #[test]
    fn user_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        let alice = manager.create_user("alice").unwrap();
        assert!(matches!(
            manager.create_user("alice"),
            Err(ManagerError::UserExists(_))
        ));
        for bad in ["", "has space", "slash/user", &"u".repeat(65)] {
            assert!(
                matches!(
                    manager.create_user(bad),
                    Err(ManagerError::InvalidUserId { .. })
                ),
                "{bad:?}"
            );
        }
        manager
            .create_bucket("alices", "alice", BucketAcl::Private)
            .unwrap();
        assert!(matches!(
            manager.delete_user("alice"),
            Err(ManagerError::UserOwnsBuckets(_))
        ));
        manager
            .delete_bucket("alices", incarnation_of(&manager, "alices"))
            .unwrap();
        manager.delete_user("alice").unwrap();
        assert!(matches!(
            manager.delete_user("alice"),
            Err(ManagerError::NoSuchUser(_))
        ));
        let snapshot = manager.snapshot();
        assert!(snapshot.user("alice").is_none());
        assert!(snapshot.access_key(&alice.access_key_id).is_none());
        drop(manager);
        let (manager, _) = open(dir.path());
        assert!(
            manager
                .snapshot()
                .access_key(&alice.access_key_id)
                .is_none()
        );
    }

    #[test]
    fn snapshots_are_immutable_points_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        let before = manager.snapshot();
        manager.create_user("carol").unwrap();
        assert!(before.user("carol").is_none());
        assert!(manager.snapshot().user("carol").is_some());
        assert!(manager.with_snapshot(|state| state.user("carol").is_some()));
    }

    #[test]
    fn concurrent_mutations_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        let manager = Arc::new(manager);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let manager = Arc::clone(&manager);
                std::thread::spawn(move || {
                    let user = format!("user{i}");
                    manager.create_user(&user).unwrap();
                    manager
                        .create_bucket(&format!("bucket-{i}"), &user, BucketAcl::Private)
                        .unwrap();
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(manager);
        let (manager, _) = open(dir.path());
        let snapshot = manager.snapshot();
        assert_eq!(snapshot.users.len(), 9);
        assert_eq!(snapshot.buckets.len(), 8);
        assert_eq!(snapshot.keys.len(), 9);
    }

    #[test]
    fn corrupt_state_is_reported_never_reset() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        drop(manager);
        let state_path = dir.path().join(MANAGER_DIR).join(STATE_FILE);
        let good = fs::read(&state_path).unwrap();

        let truncated = &good[..good.len() / 2];
        let unknown_owner = String::from_utf8(good.clone()).unwrap().replacen(
            "\"buckets\": {}",
            "\"buckets\": {\"b1\": {\"name\": \"b1\", \"owner\": \"ghost\", \"acl\": \"private\", \"created_unix_ms\": 0}}",
            1,
        );
        let future_version = String::from_utf8(good.clone())
            .unwrap()
            .replace("\"format_version\": 2", "\"format_version\": 99");
        for bad in [
            truncated,
            b"not json at all",
            unknown_owner.as_bytes(),
            future_version.as_bytes(),
        ] {
            assert_ne!(bad, good.as_slice());
            fs::write(&state_path, bad).unwrap();
            match Manager::open(dir.path(), None) {
                Err(ManagerError::Corrupt { path, .. }) => assert_eq!(path, state_path),
                Err(other) => panic!("expected Corrupt, got {other}"),
                Ok(_) => panic!("corrupt state accepted: {}", String::from_utf8_lossy(bad)),
            }
            assert_eq!(
                fs::read(&state_path).unwrap(),
                bad,
                "the corrupt file must be left as it is"
            );
        }
    }

    #[test]
    fn leftover_temporary_file_from_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        drop(manager);
        let state_path = dir.path().join(MANAGER_DIR).join(STATE_FILE);
        fs::write(
            crate::persist::temporary_path(&state_path),
            b"{half written",
        )
        .unwrap();
        let (manager, _) = open(dir.path());
        assert!(manager.snapshot().user("alice").is_some());
        manager.create_user("bob").unwrap();
        assert!(!crate::persist::temporary_path(&state_path).exists());
    }

    #[test]
    fn a_single_node_data_dir_from_before_raft_keeps_its_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let manager_dir = dir.path().join(MANAGER_DIR);
        fs::create_dir_all(&manager_dir).unwrap();
        let before_raft = r#"{
          "format_version": 1,
          "state": {
            "users": {"admin": {"id": "admin", "is_admin": true, "created_unix_ms": 5}},
            "keys": {"OLDKEY": {"access_key_id": "OLDKEY", "secret_access_key": "oldsecret1", "user_id": "admin"}},
            "buckets": {"old": {"name": "old", "owner": "admin", "acl": "private", "created_unix_ms": 6}}
          }
        }"#;
        fs::write(manager_dir.join(STATE_FILE), before_raft).unwrap();
        let (manager, created) = open(dir.path());
        assert!(
            created.is_none(),
            "no new root credentials for an existing data dir"
        );
        let state = manager.snapshot();
        assert_eq!(
            state.access_key("OLDKEY").unwrap().secret_access_key,
            "oldsecret1"
        );
        assert_eq!(state.bucket("old").unwrap().incarnation, 0);
        manager
            .create_bucket("new", "admin", BucketAcl::Private)
            .unwrap();
        drop(manager);
        assert!(manager_dir.join(crate::raft::log::LOG_FILE).exists());
        let (manager, _) = open(dir.path());
        let state = manager.snapshot();
        assert!(state.bucket("old").is_some() && state.bucket("new").is_some());
        assert!(state.access_key("OLDKEY").is_some());
    }

    #[test]
    fn a_raft_log_without_its_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let state_path = dir.path().join(MANAGER_DIR).join(STATE_FILE);
        fs::remove_file(&state_path).unwrap();
        match Manager::open(dir.path(), None) {
            Err(ManagerError::Corrupt { path, .. }) => assert_eq!(path, state_path),
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("a manager without its state must not start afresh"),
        }
    }

    #[test]
    fn snapshots_purge_the_log_and_everything_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        let changes = crate::raft::SNAPSHOT_AFTER_ENTRIES + 50;
        for i in 0..changes {
            let acl = if i.is_multiple_of(2) {
                BucketAcl::Private
            } else {
                BucketAcl::PublicRead
            };
            if i == 0 {
                manager.create_bucket("bkt", "alice", acl).unwrap();
            } else {
                manager.set_bucket_acl("bkt", acl).unwrap();
            }
        }
        drop(manager);
        let log = fs::read(
            dir.path()
                .join(MANAGER_DIR)
                .join(crate::raft::log::LOG_FILE),
        )
        .unwrap();
        // A purged log holds at most the entries kept behind the snapshot and those since.
        let entries_bound = (crate::raft::ENTRIES_KEPT_BEHIND_SNAPSHOT + 100) as usize;
        let record_bytes_max = 400;
        assert!(
            log.len() < entries_bound * record_bytes_max,
            "the log was not purged: {} bytes",
            log.len()
        );
        let (manager, _) = open(dir.path());
        let last_acl = if (changes - 1).is_multiple_of(2) {
            BucketAcl::Private
        } else {
            BucketAcl::PublicRead
        };
        assert_eq!(manager.snapshot().bucket("bkt").unwrap().acl, last_acl);
        manager.create_user("bob").unwrap();
    }
}
