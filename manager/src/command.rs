//! The changes the manager's replicated state machine makes, as values: each is proposed to the
//! Raft group, written to its log and applied in log order by every manager. Everything random
//! or time-dependent (key pairs, incarnations, creation times) is chosen by the proposer and
//! carried in the command, so applying it is a pure function of the state and the command and
//! every manager reaches the same state.
//!
//! Compatibility: commands are stored in the Raft log as JSON tagged by `op`; a newer manager
//! must apply every command an older one wrote, so variants and fields are only ever added
//! (new fields with a serde default), never renamed or removed.

use std::collections::BTreeSet;

use crate::cluster::{Member, NodeState, Registration, RingRecord};
use crate::{AccessKey, Bucket, BucketAcl, ManagerError, ManagerState, User};

/// One change to the catalog.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Command {
    /// Creates `bucket` (its name, owner, ACL, creation time and incarnation as proposed).
    CreateBucket {
        /// The bucket record.
        bucket: Bucket,
    },
    /// Removes bucket `name` if it is still at `incarnation`.
    DeleteBucket {
        /// Bucket name.
        name: String,
        /// The incarnation that was checked empty.
        incarnation: u64,
    },
    /// Marks bucket `name` at `incarnation` as being deleted (writes into it are refused).
    MarkBucketDeleting {
        /// Bucket name.
        name: String,
        /// The incarnation to delete.
        incarnation: u64,
    },
    /// Takes the mark away (the bucket was found not empty, or the deletion gave up).
    UnmarkBucketDeleting {
        /// Bucket name.
        name: String,
        /// The incarnation that was marked.
        incarnation: u64,
    },
    /// Replaces a bucket's canned ACL.
    SetBucketAcl {
        /// Bucket name.
        name: String,
        /// The new ACL.
        acl: BucketAcl,
    },
    /// Enables a bucket's versioning, or suspends it (it never goes back to never enabled).
    SetBucketVersioning {
        /// Bucket name.
        name: String,
        /// Enabled (true) or suspended (false).
        enabled: bool,
    },
    /// Replaces a bucket's lifecycle rules (none: its configuration is deleted).
    SetBucketLifecycle {
        /// Bucket name.
        name: String,
        /// The rules, checked by the gateway that took the configuration.
        rules: Vec<crate::lifecycle::LifecycleRule>,
    },
    /// Replaces one of a bucket's settings (tags, CORS rules).
    SetBucketSetting {
        /// Bucket name.
        name: String,
        /// The setting, checked by the gateway that took it.
        setting: crate::BucketSetting,
    },
    /// Creates `user` with its first access key.
    CreateUser {
        /// The user record.
        user: User,
        /// Its key pair.
        key: AccessKey,
    },
    /// Deletes a user and its keys (refused while it owns buckets or a bucket policy names it).
    DeleteUser {
        /// User id.
        user_id: String,
    },
    /// The catalog a group starts from: proposed once, as the first command, by the manager
    /// that bootstraps the group (its first start's admin user and key, or the catalog of a
    /// single node from before Raft), so that every manager added later replays it.
    Seed {
        /// The whole catalog (boxed: it is much larger than any other command; the stored
        /// form is the same).
        state: Box<ManagerState>,
    },
    /// `command`, proposed under `id` (random, drawn once per change): a proposal applied
    /// again (forwarded anew after its answer was lost) is answered with its first outcome and
    /// not applied twice.
    Proposal {
        /// The proposal's id (32 hex characters).
        id: String,
        /// The change.
        command: Box<Command>,
    },
    /// Gives a group bootstrapped before cluster ids existed its id (a no-op once it has one).
    AdoptClusterId {
        /// 32 hex characters.
        id: String,
    },
    /// Registers a node (at every start): a new address gets the next id and the state
    /// attached (running for a node without storage, or once a ring holds it); a known one
    /// keeps its id, and must keep its shards while the ring holds it.
    RegisterNode {
        /// What the node says of itself.
        registration: Registration,
        /// When it registered, ms since the Unix epoch.
        now_unix_ms: u64,
    },
    /// Moves a node from state `from` to `to` (refused if it is no longer in `from`).
    SetNodeState {
        /// The node.
        node: u32,
        /// Its state when the change was decided.
        from: NodeState,
        /// The new state.
        to: NodeState,
        /// When it was decided, ms since the Unix epoch (0 in entries from before it was
        /// recorded).
        #[serde(default)]
        at_unix_ms: u64,
    },
    /// Sets how long a storage node may stay stopped before its partitions are re-replicated
    /// onto the others (0: only once the tombstone grace is over).
    SetAutoRecoverAfter {
        /// Seconds.
        secs: u64,
    },
    /// Sets the tombstone grace: a storage node stopped for longer than it has its partitions
    /// re-replicated onto the others and rejoins wiped.
    SetTombstoneGrace {
        /// Seconds (at least 1).
        secs: u64,
    },
    /// Re-replicates the partitions of `node`, stopped since long enough, onto the other
    /// nodes: starts a rebalance of the ring at `epoch` towards `next` (planned without it).
    AutoRecover {
        /// The stopped node.
        node: u32,
        /// The epoch the rebalance was planned on (a fence).
        epoch: u64,
        /// The table partitions move to.
        next: Vec<(u32, u16)>,
        /// When it was decided, ms since the Unix epoch.
        now_unix_ms: u64,
    },
    /// Starts the cluster with its first ring: every node in it runs.
    StartRing {
        /// The ring (epoch 1).
        ring: RingRecord,
    },
    /// Sets a bucket's own W, R and D (refused unless each is 1 to N), or takes them away
    /// (None: the cluster's).
    SetBucketConsistency {
        /// Bucket name.
        name: String,
        /// Its quorums.
        consistency: Option<crate::cluster::Consistency>,
    },
    /// Sets the cluster's W, R and D (refused unless each is 1 to N).
    SetConsistency {
        /// The quorums.
        consistency: crate::cluster::Consistency,
    },
    /// Starts a rebalance of the ring at `epoch` towards `next` (refused if the ring moved on
    /// or another rebalance is under way): the ring's epoch increments, and until the flip
    /// every node writes to both replica sets of each moving partition.
    BeginRebalance {
        /// The epoch the rebalance was planned on (a fence).
        epoch: u64,
        /// The table partitions move to.
        next: Vec<(u32, u16)>,
        /// When it was decided, ms since the Unix epoch.
        now_unix_ms: u64,
    },
    /// Records that every node that is not stopped routes by the ring at `epoch`.
    RingKnown {
        /// The epoch the heartbeats showed.
        epoch: u64,
    },
    /// Records moving partitions of the rebalance at `epoch` whose new replicas were filled.
    PartitionsFilled {
        /// The moving ring's epoch.
        epoch: u64,
        /// The partitions.
        partitions: Vec<u32>,
    },
    /// Ends the rebalance at `epoch` (refused until every moving partition is filled and the
    /// ring is known everywhere): the next table becomes the ring, at the next epoch.
    FlipRing {
        /// The moving ring's epoch.
        epoch: u64,
    },
    /// Gives up the rebalance at `epoch`: the ring stays its table, at the next epoch.
    AbortRebalance {
        /// The moving ring's epoch.
        epoch: u64,
    },
    /// Pauses (or resumes) the movement of the rebalance under way.
    SuspendRebalance {
        /// Paused or not.
        suspended: bool,
    },
    /// Asks storage node `node` to compact now, or pauses or resumes its background
    /// compaction.
    Compact {
        /// The node.
        node: u32,
        /// What is asked.
        action: crate::cluster::CompactAction,
        /// When it was asked, ms since the Unix epoch.
        now_unix_ms: u64,
    },
    /// Records a purge of the gateways' object caches (refused for a bucket that does not
    /// exist).
    PurgeCache {
        /// The bucket's name.
        bucket: String,
        /// The key, or the prefix of the keys.
        key: String,
        /// Whether `key` is a prefix.
        prefix: bool,
    },
    /// Starts comparing and repairing every partition `node` holds (refused during a
    /// rebalance or another recovery).
    RecoverNode {
        /// The node.
        node: u32,
        /// When it was asked, ms since the Unix epoch (the recovery's id).
        now_unix_ms: u64,
    },
    /// Records partitions of the recovery asked at `requested_unix_ms` compared and repaired;
    /// the recovery ends when all are.
    PartitionsRecovered {
        /// The recovery's id.
        requested_unix_ms: u64,
        /// The partitions.
        partitions: Vec<u32>,
        /// When the leader recorded them, ms since the Unix epoch.
        now_unix_ms: u64,
    },
}

/// Why a command was not applied: the state it was proposed against changed (or never allowed
/// it). The state is left as it was. Serializable because openraft carries it back to the
/// proposer as the command's result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "refused", content = "name", rename_all = "kebab-case")]
pub enum Refusal {
    /// The user does not exist.
    NoSuchUser(String),
    /// A user with this id exists.
    UserExists(String),
    /// The user still owns buckets.
    UserOwnsBuckets(String),
    /// A bucket policy names the user (the user and the bucket).
    UserNamedInPolicy(String),
    /// Another owner has a bucket of this name.
    BucketAlreadyExists(String),
    /// The proposer's user already has a bucket of this name.
    BucketAlreadyOwnedByYou(String),
    /// No bucket of this name (or not at the incarnation given).
    NoSuchBucket(String),
    /// The generated access key id is taken (the proposer generates another).
    AccessKeyTaken(String),
    /// No node of this id.
    NoSuchNode(u32),
    /// A node's registration conflicts with the cluster (the string says how).
    NodeConflict(String),
    /// The cluster already has its ring.
    AlreadyStarted(u64),
    /// The node's state changed since the change was decided (its state now).
    NodeStateChanged(String),
    /// Quorums that cannot be met with the cluster's N (the string says why).
    ImpossibleConsistency(String),
    /// The ring is not where the change expected it (the string says how).
    RingChanged(String),
}

impl From<Refusal> for ManagerError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NoSuchUser(id) => ManagerError::NoSuchUser(id),
            Refusal::UserExists(id) => ManagerError::UserExists(id),
            Refusal::UserOwnsBuckets(id) => ManagerError::UserOwnsBuckets(id),
            Refusal::UserNamedInPolicy(what) => ManagerError::UserNamedInPolicy(what),
            Refusal::BucketAlreadyExists(name) => ManagerError::BucketAlreadyExists(name),
            Refusal::BucketAlreadyOwnedByYou(name) => ManagerError::BucketAlreadyOwnedByYou(name),
            Refusal::NoSuchBucket(name) => ManagerError::NoSuchBucket(name),
            Refusal::AccessKeyTaken(id) => {
                ManagerError::Remote(format!("access key id {id} is already taken"))
            }
            Refusal::NoSuchNode(id) => ManagerError::NoSuchNode(id),
            Refusal::NodeConflict(why) => ManagerError::NodeConflict(why),
            Refusal::AlreadyStarted(epoch) => ManagerError::NodeConflict(format!(
                "the cluster is already started (ring epoch {epoch})"
            )),
            Refusal::NodeStateChanged(why) => ManagerError::NodeConflict(why),
            Refusal::ImpossibleConsistency(why) => ManagerError::InvalidConsistency(why),
            Refusal::RingChanged(why) => ManagerError::NodeConflict(why),
        }
    }
}

/// The result of applying one log entry: `Ok` also for entries that carry no command (Raft's
/// own blank and membership entries).
pub type Outcome = Result<(), Refusal>;

/// A fresh proposal id: 16 random bytes as 32 hex characters.
pub fn new_proposal_id() -> Result<String, ManagerError> {
    crate::persist::random_hex(16)
}

impl Command {
    /// A one-line account of a ring step for the log.
    pub fn describe(&self) -> String {
        match self {
            Command::RingKnown { epoch } => format!("every node routes by ring epoch {epoch}"),
            Command::PartitionsFilled { epoch, partitions } => format!(
                "{} partitions of ring epoch {epoch} filled",
                partitions.len()
            ),
            Command::FlipRing { epoch } => {
                format!(
                    "rebalance flipped: ring epoch {} is the next ring",
                    epoch + 1
                )
            }
            Command::PartitionsRecovered { partitions, .. } => {
                format!("{} partitions recovered", partitions.len())
            }
            other => format!("{other:?}"),
        }
    }

    /// Applies the command to `state`, or refuses it and leaves `state` unchanged.
    pub fn apply(&self, state: &mut ManagerState) -> Outcome {
        match self {
            Command::CreateBucket { bucket } => {
                if state.user(&bucket.owner).is_none() {
                    return Err(Refusal::NoSuchUser(bucket.owner.clone()));
                }
                if let Some(existing) = state.bucket(&bucket.name) {
                    return Err(if existing.owner == bucket.owner {
                        Refusal::BucketAlreadyOwnedByYou(bucket.name.clone())
                    } else {
                        Refusal::BucketAlreadyExists(bucket.name.clone())
                    });
                }
                state.buckets.insert(bucket.name.clone(), bucket.clone());
                Ok(())
            }
            Command::DeleteBucket { name, incarnation } => match state.buckets.get(name) {
                Some(bucket) if bucket.incarnation == *incarnation => {
                    state.buckets.remove(name);
                    Ok(())
                }
                _ => Err(Refusal::NoSuchBucket(name.clone())),
            },
            Command::MarkBucketDeleting { name, incarnation }
            | Command::UnmarkBucketDeleting { name, incarnation } => {
                match state.buckets.get_mut(name) {
                    Some(bucket) if bucket.incarnation == *incarnation => {
                        bucket.deleting = matches!(self, Command::MarkBucketDeleting { .. });
                        Ok(())
                    }
                    _ => Err(Refusal::NoSuchBucket(name.clone())),
                }
            }
            Command::SetBucketAcl { name, acl } => match state.buckets.get_mut(name) {
                Some(bucket) => {
                    // A canned ACL replaces the whole ACL, grants included (as in S3).
                    bucket.acl = *acl;
                    bucket.grants.clear();
                    Ok(())
                }
                None => Err(Refusal::NoSuchBucket(name.clone())),
            },
            Command::SetBucketVersioning { name, enabled } => match state.buckets.get_mut(name) {
                Some(bucket) => {
                    bucket.versioning = if *enabled {
                        crate::BucketVersioning::Enabled
                    } else {
                        crate::BucketVersioning::Suspended
                    };
                    Ok(())
                }
                None => Err(Refusal::NoSuchBucket(name.clone())),
            },
            Command::SetBucketLifecycle { name, rules } => match state.buckets.get_mut(name) {
                Some(bucket) => {
                    bucket.lifecycle = rules.clone();
                    Ok(())
                }
                None => Err(Refusal::NoSuchBucket(name.clone())),
            },
            Command::SetBucketSetting { name, setting } => match state.buckets.get_mut(name) {
                Some(bucket) => {
                    match setting {
                        crate::BucketSetting::Tags(tags) => bucket.tags = tags.clone(),
                        crate::BucketSetting::Cors(rules) => bucket.cors = rules.clone(),
                        crate::BucketSetting::Policy(policy) => bucket.policy = policy.clone(),
                        crate::BucketSetting::Acl { canned, grants } => {
                            bucket.acl = *canned;
                            bucket.grants = grants.clone();
                        }
                    }
                    Ok(())
                }
                None => Err(Refusal::NoSuchBucket(name.clone())),
            },
            Command::CreateUser { user, key } => {
                if state.user(&user.id).is_some() {
                    return Err(Refusal::UserExists(user.id.clone()));
                }
                if state.access_key(&key.access_key_id).is_some() {
                    return Err(Refusal::AccessKeyTaken(key.access_key_id.clone()));
                }
                state.users.insert(user.id.clone(), user.clone());
                state.keys.insert(key.access_key_id.clone(), key.clone());
                Ok(())
            }
            // The state machine answers a repeated proposal without applying it again.
            Command::Proposal { command, .. } => command.apply(state),
            Command::AdoptClusterId { id } => {
                if state.cluster_id.is_none() {
                    state.cluster_id = Some(id.clone());
                }
                Ok(())
            }
            Command::RegisterNode {
                registration,
                now_unix_ms,
            } => register_node(state, registration, *now_unix_ms),
            Command::SetNodeState {
                node,
                from,
                to,
                at_unix_ms,
            } => match state.nodes.get_mut(node) {
                Some(member) if member.state == *from => {
                    member.state = *to;
                    member.state_since_unix_ms = *at_unix_ms;
                    Ok(())
                }
                Some(member) => Err(Refusal::NodeStateChanged(format!(
                    "node {node} is {}, not {}",
                    member.state.as_str(),
                    from.as_str()
                ))),
                None => Err(Refusal::NoSuchNode(*node)),
            },
            Command::StartRing { ring } => start_ring(state, ring),
            Command::SetBucketConsistency { name, consistency } => {
                if let Some(why) =
                    consistency.and_then(|c| c.impossible_with(state.settings.replicas))
                {
                    return Err(Refusal::ImpossibleConsistency(why));
                }
                match state.buckets.get_mut(name) {
                    Some(bucket) => {
                        bucket.consistency = *consistency;
                        Ok(())
                    }
                    None => Err(Refusal::NoSuchBucket(name.clone())),
                }
            }
            Command::SetConsistency { consistency } => {
                if let Some(why) = consistency.impossible_with(state.settings.replicas) {
                    return Err(Refusal::ImpossibleConsistency(why));
                }
                state.settings.consistency = Some(*consistency);
                Ok(())
            }
            Command::BeginRebalance {
                epoch,
                next,
                now_unix_ms,
            } => begin_rebalance(state, *epoch, next, *now_unix_ms),
            Command::RingKnown { epoch } => {
                let ring = ring_at(state, *epoch)?;
                ring.known_everywhere = true;
                Ok(())
            }
            Command::PartitionsFilled { epoch, partitions } => {
                let ring = ring_at(state, *epoch)?;
                let moving = ring
                    .rebalance
                    .as_ref()
                    .map(|r| ring.moving_partitions(&r.next))
                    .ok_or_else(|| no_rebalance(*epoch))?;
                let rebalance = ring
                    .rebalance
                    .as_mut()
                    .ok_or_else(|| no_rebalance(*epoch))?;
                rebalance.filled.extend(
                    partitions
                        .iter()
                        .filter(|p| moving.binary_search(p).is_ok()),
                );
                Ok(())
            }
            Command::FlipRing { epoch } => flip_ring(state, *epoch),
            Command::AbortRebalance { epoch } => {
                let ring = ring_at(state, *epoch)?;
                if ring.rebalance.take().is_none() {
                    return Err(no_rebalance(*epoch));
                }
                ring.epoch += 1;
                ring.known_everywhere = false;
                Ok(())
            }
            Command::Compact {
                node,
                action,
                now_unix_ms,
            } => {
                if !state.nodes.get(node).is_some_and(|m| m.storage) {
                    return Err(Refusal::NoSuchNode(*node));
                }
                let order = state.compaction.entry(*node).or_default();
                match action {
                    crate::cluster::CompactAction::Start => {
                        order.start_requested_unix_ms = *now_unix_ms
                    }
                    crate::cluster::CompactAction::Suspend => order.suspended = true,
                    crate::cluster::CompactAction::Resume => order.suspended = false,
                }
                Ok(())
            }
            Command::PurgeCache {
                bucket,
                key,
                prefix,
            } => {
                if state.bucket(bucket).is_none() {
                    return Err(Refusal::NoSuchBucket(bucket.clone()));
                }
                let seq = state.cache_purges.last().map_or(1, |p| p.seq + 1);
                state.cache_purges.push(crate::model::CachePurge {
                    seq,
                    bucket: bucket.clone(),
                    key: key.clone(),
                    prefix: *prefix,
                });
                let excess = state
                    .cache_purges
                    .len()
                    .saturating_sub(crate::model::CACHE_PURGES_KEPT);
                state.cache_purges.drain(..excess);
                Ok(())
            }
            Command::SetAutoRecoverAfter { secs } => {
                state.settings.auto_recover_after_secs = *secs;
                Ok(())
            }
            Command::SetTombstoneGrace { secs } => {
                state.settings.tombstone_grace_secs = (*secs).max(1);
                Ok(())
            }
            Command::AutoRecover {
                node,
                epoch,
                next,
                now_unix_ms,
            } => {
                match state.nodes.get(node) {
                    Some(member) if member.state == NodeState::Stopped => {}
                    Some(member) => {
                        return Err(Refusal::NodeStateChanged(format!(
                            "node {node} is {}, not stopped",
                            member.state.as_str()
                        )));
                    }
                    None => return Err(Refusal::NoSuchNode(*node)),
                }
                if next.iter().any(|(id, _)| id == node) {
                    return Err(Refusal::RingChanged(format!(
                        "the next ring still places partitions on node {node}"
                    )));
                }
                begin_rebalance(state, *epoch, next, *now_unix_ms)?;
                if let Some(rebalance) = state.ring.as_mut().and_then(|r| r.rebalance.as_mut()) {
                    rebalance.recovering_node = Some(*node);
                    rebalance.fill_quorum = rebalance.fill_quorum.saturating_sub(1).max(1);
                }
                Ok(())
            }
            Command::RecoverNode { node, now_unix_ms } => recover_node(state, *node, *now_unix_ms),
            Command::PartitionsRecovered {
                requested_unix_ms,
                partitions,
                now_unix_ms,
            } => partitions_recovered(state, *requested_unix_ms, partitions, *now_unix_ms),
            Command::SuspendRebalance { suspended } => {
                let rebalance = state
                    .ring
                    .as_mut()
                    .and_then(|ring| ring.rebalance.as_mut())
                    .ok_or_else(|| Refusal::RingChanged("no rebalance is under way".into()))?;
                rebalance.suspended = *suspended;
                Ok(())
            }
            Command::Seed { state: seed } => {
                *state = (**seed).clone();
                Ok(())
            }
            Command::DeleteUser { user_id } => {
                if state.user(user_id).is_none() {
                    return Err(Refusal::NoSuchUser(user_id.clone()));
                }
                if state
                    .buckets
                    .values()
                    .any(|bucket| &bucket.owner == user_id)
                {
                    return Err(Refusal::UserOwnsBuckets(user_id.clone()));
                }
                // A user created later under the same id must not inherit a policy's grants.
                if let Some(bucket) = state.buckets.values().find(|bucket| {
                    bucket
                        .policy
                        .as_ref()
                        .is_some_and(|policy| policy.names_user(user_id))
                }) {
                    return Err(Refusal::UserNamedInPolicy(format!(
                        "{user_id} (in the policy of bucket {})",
                        bucket.name
                    )));
                }
                state.users.remove(user_id);
                state.keys.retain(|_, key| &key.user_id != user_id);
                Ok(())
            }
        }
    }
}

/// Applies [`Command::RegisterNode`].
fn register_node(
    state: &mut ManagerState,
    registration: &Registration,
    now_unix_ms: u64,
) -> Outcome {
    let r = registration;
    if let (Some(ring), Some(layout)) = (&state.ring, r.layout_partitions)
        && r.storage
        && ring.partitions != layout
    {
        return Err(Refusal::NodeConflict(format!(
            "its data dir was created for {layout} partitions, the cluster has {}: give it an \
             empty data dir",
            ring.partitions
        )));
    }
    let in_ring = |id: u32| state.ring.as_ref().is_some_and(|ring| ring.places_node(id));
    if let Some(known) = state.nodes.values().find(|m| m.addr == r.addr) {
        let id = known.id;
        if r.known_id.is_some_and(|known_id| known_id != id) {
            return Err(Refusal::NodeConflict(format!(
                "{} is node {id} in this cluster, but its data dir says node {}",
                r.addr,
                r.known_id.unwrap_or_default()
            )));
        }
        if in_ring(id) && (known.shards != r.shards || known.storage != r.storage) {
            return Err(Refusal::NodeConflict(format!(
                "node {id} ({}) holds partitions with {} shards; it cannot come back with {} \
                 (start it with --cores {})",
                r.addr, known.shards, r.shards, known.shards
            )));
        }
        let member = state.nodes.get_mut(&id).ok_or(Refusal::NoSuchNode(id))?;
        member.shards = r.shards;
        member.storage = r.storage;
        member.gateway = r.gateway;
        member.capacity_bytes = r.capacity_bytes;
        member.zone = r.zone.clone();
        return Ok(());
    }
    if let Some(id) = r.known_id {
        return Err(Refusal::NodeConflict(format!(
            "its data dir says it is node {id} of this cluster, but no node {id} is registered \
             at {}: it may have moved (an address change is not supported yet) or belong to \
             another cluster",
            r.addr
        )));
    }
    let id = state.nodes.keys().next_back().map_or(0, |last| last + 1);
    let running = !r.storage;
    state.nodes.insert(
        id,
        Member {
            id,
            addr: r.addr.clone(),
            storage: r.storage,
            gateway: r.gateway,
            shards: r.shards,
            capacity_bytes: r.capacity_bytes,
            zone: r.zone.clone(),
            state: if running {
                NodeState::Running
            } else {
                NodeState::Attached
            },
            registered_unix_ms: now_unix_ms,
            state_since_unix_ms: now_unix_ms,
        },
    );
    Ok(())
}

/// The ring, if it is at `epoch`.
fn ring_at(state: &mut ManagerState, epoch: u64) -> Result<&mut RingRecord, Refusal> {
    match state.ring.as_mut() {
        Some(ring) if ring.epoch == epoch => Ok(ring),
        Some(ring) => Err(Refusal::RingChanged(format!(
            "the ring is at epoch {}, not {epoch}",
            ring.epoch
        ))),
        None => Err(Refusal::RingChanged("the cluster is not started".into())),
    }
}

fn no_rebalance(epoch: u64) -> Refusal {
    Refusal::RingChanged(format!("no rebalance is under way at ring epoch {epoch}"))
}

/// Applies [`Command::BeginRebalance`].
fn begin_rebalance(
    state: &mut ManagerState,
    epoch: u64,
    next: &[(u32, u16)],
    now_unix_ms: u64,
) -> Outcome {
    let ring = state
        .ring
        .as_ref()
        .ok_or_else(|| Refusal::RingChanged("the cluster is not started".into()))?;
    if ring.epoch != epoch {
        return Err(Refusal::RingChanged(format!(
            "the ring is at epoch {}, the rebalance was planned on {epoch}",
            ring.epoch
        )));
    }
    if ring.rebalance.is_some() || ring.recovery.is_some() {
        return Err(Refusal::RingChanged(format!(
            "a rebalance or a recovery is already under way (ring epoch {epoch})"
        )));
    }
    if next.len() != ring.table.len() {
        return Err(Refusal::RingChanged(format!(
            "the next ring has {} replicas, the ring {}",
            next.len(),
            ring.table.len()
        )));
    }
    check_vnodes(state, next)?;
    let n = (ring.replicas as usize).max(1);
    for (partition, set) in next.chunks_exact(n).enumerate() {
        let distinct: BTreeSet<u32> = set.iter().map(|(node, _)| *node).collect();
        if distinct.len() != set.len() {
            return Err(Refusal::RingChanged(format!(
                "the next ring places two replicas of partition {partition} on one node"
            )));
        }
    }
    let replicas = ring.replicas;
    // The smallest W or D any write may have been acknowledged with.
    let levels = |c: Option<crate::cluster::Consistency>| {
        let c = c.unwrap_or_else(|| crate::cluster::Consistency::defaults_for(replicas));
        c.write.min(c.delete)
    };
    let smallest = state
        .buckets
        .values()
        .filter_map(|b| b.consistency)
        .filter(|c| c.impossible_with(replicas).is_none())
        .map(|c| levels(Some(c)))
        .chain(std::iter::once(levels(state.settings.consistency)))
        .min()
        .unwrap_or(1)
        .max(1);
    let fill_quorum = replicas.saturating_sub(smallest) + 1;
    let moving = ring.moving_partitions(next);
    let next_plan = crate::ring_plan::RingPlan {
        partitions: ring.partitions,
        replicas: ring.replicas as usize,
        table: next.to_vec(),
    };
    let moved_replicas = next_plan.moves_from(&ring.as_plan()) as u32;
    let ring = state.ring.as_mut().ok_or(Refusal::NoSuchNode(0))?;
    ring.epoch += 1;
    ring.known_everywhere = false;
    ring.rebalance = Some(crate::cluster::Rebalance {
        next: next.to_vec(),
        filled: Default::default(),
        moving: moving.len() as u32,
        moved_replicas,
        started_unix_ms: now_unix_ms,
        suspended: false,
        recovering_node: None,
        fill_quorum,
    });
    Ok(())
}

/// Applies [`Command::RecoverNode`].
fn recover_node(state: &mut ManagerState, node: u32, now_unix_ms: u64) -> Outcome {
    let holds_storage = state.nodes.get(&node).is_some_and(|m| m.storage);
    let ring = state
        .ring
        .as_mut()
        .ok_or_else(|| Refusal::RingChanged("the cluster is not started".into()))?;
    if ring.rebalance.is_some() || ring.recovery.is_some() {
        return Err(Refusal::RingChanged(
            "a rebalance or another recovery is under way".into(),
        ));
    }
    if !holds_storage {
        return Err(Refusal::NoSuchNode(node));
    }
    let partitions = ring.partitions_of(node).len() as u32;
    if partitions == 0 {
        return Err(Refusal::NodeConflict(format!(
            "node {node} holds no partition of the ring"
        )));
    }
    ring.recovery = Some(crate::cluster::Recovery {
        node,
        requested_unix_ms: now_unix_ms,
        partitions,
        done: BTreeSet::new(),
        finished_unix_ms: 0,
    });
    Ok(())
}

/// Applies [`Command::PartitionsRecovered`].
fn partitions_recovered(
    state: &mut ManagerState,
    requested_unix_ms: u64,
    partitions: &[u32],
    now_unix_ms: u64,
) -> Outcome {
    let ring = state
        .ring
        .as_mut()
        .ok_or_else(|| Refusal::RingChanged("the cluster is not started".into()))?;
    let held = ring
        .recovery
        .as_ref()
        .filter(|r| r.requested_unix_ms == requested_unix_ms)
        .map(|r| ring.partitions_of(r.node))
        .ok_or_else(|| Refusal::RingChanged("that recovery is not under way".into()))?;
    let recovery = ring
        .recovery
        .as_mut()
        .ok_or_else(|| Refusal::RingChanged("that recovery is not under way".into()))?;
    recovery
        .done
        .extend(partitions.iter().filter(|p| held.binary_search(p).is_ok()));
    if recovery.done.len() as u32 >= recovery.partitions {
        recovery.finished_unix_ms = now_unix_ms;
        ring.last_recovery = ring.recovery.take();
    }
    Ok(())
}

/// Applies [`Command::FlipRing`].
fn flip_ring(state: &mut ManagerState, epoch: u64) -> Outcome {
    let ring = ring_at(state, epoch)?;
    let rebalance = ring.rebalance.as_ref().ok_or_else(|| no_rebalance(epoch))?;
    if !ring.known_everywhere {
        return Err(Refusal::RingChanged(format!(
            "not every node routes by ring epoch {epoch} yet"
        )));
    }
    let moving = ring.moving_partitions(&rebalance.next);
    if let Some(unfilled) = moving.iter().find(|p| !rebalance.filled.contains(p)) {
        return Err(Refusal::RingChanged(format!(
            "partition {unfilled} of ring epoch {epoch} is not filled yet"
        )));
    }
    let next = rebalance.next.clone();
    ring.table = next;
    ring.epoch += 1;
    ring.known_everywhere = false;
    ring.rebalance = None;
    let holders: BTreeSet<u32> = ring.table.iter().map(|(node, _)| *node).collect();
    for member in state.nodes.values_mut() {
        if member.state == NodeState::Attached && holders.contains(&member.id) {
            member.state = NodeState::Running;
        }
        // A stopped node whose partitions were re-replicated is out of the ring: detached
        // (it hands over what it holds when it comes back; `rollback` and a rebalance take
        // it back in).
        if member.state == NodeState::Stopped && member.storage && !holders.contains(&member.id) {
            member.state = NodeState::Detached;
        }
    }
    Ok(())
}

/// Refuses a table that places a replica on a shard a node does not have.
fn check_vnodes(state: &ManagerState, table: &[(u32, u16)]) -> Outcome {
    for (node, shard) in table {
        match state.nodes.get(node) {
            Some(member) if member.storage && *shard < member.shards => {}
            Some(_) => {
                return Err(Refusal::NodeConflict(format!(
                    "the ring places shard {shard} on node {node}, which has no such shard"
                )));
            }
            None => return Err(Refusal::NoSuchNode(*node)),
        }
    }
    Ok(())
}

/// Applies [`Command::StartRing`].
fn start_ring(state: &mut ManagerState, ring: &RingRecord) -> Outcome {
    if let Some(current) = &state.ring {
        return Err(Refusal::AlreadyStarted(current.epoch));
    }
    check_vnodes(state, &ring.table)?;
    for member in state.nodes.values_mut() {
        if member.storage && member.state == NodeState::Attached {
            member.state = NodeState::Running;
        }
    }
    // N is fixed when the cluster starts: the first ring's (quorums set for another N go).
    state.settings.replicas = ring.replicas;
    if state
        .settings
        .consistency
        .is_some_and(|c| c.impossible_with(ring.replicas).is_some())
    {
        state.settings.consistency = None;
    }
    state.ring = Some(ring.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> (User, AccessKey) {
        (
            User {
                id: id.into(),
                is_admin: false,
                created_unix_ms: 1,
            },
            AccessKey {
                access_key_id: format!("KEY{id}"),
                secret_access_key: "secret".into(),
                user_id: id.into(),
            },
        )
    }

    fn bucket(name: &str, owner: &str, incarnation: u64) -> Bucket {
        Bucket {
            name: name.into(),
            owner: owner.into(),
            acl: BucketAcl::Private,
            grants: Vec::new(),
            created_unix_ms: 2,
            incarnation,
            deleting: false,
            versioning: crate::BucketVersioning::Off,
            lifecycle: Vec::new(),
            tags: Vec::new(),
            cors: Vec::new(),
            policy: None,
            consistency: None,
        }
    }

    #[test]
    fn versioning_is_enabled_or_suspended_and_old_buckets_read_as_never_enabled() {
        let mut state = ManagerState::default();
        let (alice, key) = user("alice");
        let create_alice = Command::CreateUser { user: alice, key };
        assert_eq!(create_alice.apply(&mut state), Ok(()));
        let create = Command::CreateBucket {
            bucket: bucket("b1", "alice", 7),
        };
        assert_eq!(create.apply(&mut state), Ok(()));
        assert_eq!(state.buckets["b1"].versioning, crate::BucketVersioning::Off);
        for (enabled, want) in [
            (true, crate::BucketVersioning::Enabled),
            (false, crate::BucketVersioning::Suspended),
            (true, crate::BucketVersioning::Enabled),
        ] {
            let set = Command::SetBucketVersioning {
                name: "b1".into(),
                enabled,
            };
            assert_eq!(set.apply(&mut state), Ok(()));
            assert_eq!(state.buckets["b1"].versioning, want);
        }
        let missing = Command::SetBucketVersioning {
            name: "nope".into(),
            enabled: true,
        };
        assert_eq!(
            missing.apply(&mut state),
            Err(Refusal::NoSuchBucket("nope".into()))
        );
        // A bucket recorded before versioning existed has none; one never enabled writes none.
        let old = serde_json::to_value(bucket("old", "alice", 1)).unwrap();
        assert!(old.get("versioning").is_none());
        let decoded: Bucket = serde_json::from_value(old).unwrap();
        assert_eq!(decoded.versioning, crate::BucketVersioning::Off);
        let enabled = serde_json::to_value(&state.buckets["b1"]).unwrap();
        assert_eq!(enabled["versioning"], "enabled");
    }

    #[test]
    fn commands_apply_or_refuse_without_changing_the_state() {
        let mut state = ManagerState::default();
        let (alice, key) = user("alice");
        let create_alice = Command::CreateUser {
            user: alice.clone(),
            key: key.clone(),
        };
        assert_eq!(create_alice.apply(&mut state), Ok(()));
        assert_eq!(
            create_alice.apply(&mut state),
            Err(Refusal::UserExists("alice".into()))
        );
        let (bob, _) = user("bob");
        let same_key = Command::CreateUser { user: bob, key };
        assert!(matches!(
            same_key.apply(&mut state),
            Err(Refusal::AccessKeyTaken(_))
        ));
        assert!(state.user("bob").is_none());

        let create = Command::CreateBucket {
            bucket: bucket("b1", "alice", 7),
        };
        assert_eq!(create.apply(&mut state), Ok(()));
        assert_eq!(
            create.apply(&mut state),
            Err(Refusal::BucketAlreadyOwnedByYou("b1".into()))
        );
        let by_nobody = Command::CreateBucket {
            bucket: bucket("b2", "nobody", 8),
        };
        assert_eq!(
            by_nobody.apply(&mut state),
            Err(Refusal::NoSuchUser("nobody".into()))
        );
        let delete_alice = Command::DeleteUser {
            user_id: "alice".into(),
        };
        assert_eq!(
            delete_alice.apply(&mut state),
            Err(Refusal::UserOwnsBuckets("alice".into()))
        );
        let stale_delete = Command::DeleteBucket {
            name: "b1".into(),
            incarnation: 6,
        };
        assert_eq!(
            stale_delete.apply(&mut state),
            Err(Refusal::NoSuchBucket("b1".into()))
        );
        let acl = Command::SetBucketAcl {
            name: "b1".into(),
            acl: BucketAcl::PublicRead,
        };
        assert_eq!(acl.apply(&mut state), Ok(()));
        assert_eq!(state.bucket("b1").unwrap().acl, BucketAcl::PublicRead);
        let mark = Command::MarkBucketDeleting {
            name: "b1".into(),
            incarnation: 7,
        };
        assert_eq!(mark.apply(&mut state), Ok(()));
        assert!(state.bucket("b1").unwrap().deleting);
        let unmark_other = Command::UnmarkBucketDeleting {
            name: "b1".into(),
            incarnation: 6,
        };
        assert_eq!(
            unmark_other.apply(&mut state),
            Err(Refusal::NoSuchBucket("b1".into()))
        );
        assert!(state.bucket("b1").unwrap().deleting);
        let delete = Command::DeleteBucket {
            name: "b1".into(),
            incarnation: 7,
        };
        assert_eq!(delete.apply(&mut state), Ok(()));
        assert_eq!(delete_alice.apply(&mut state), Ok(()));
        assert!(state.keys.is_empty() && state.users.is_empty() && state.buckets.is_empty());
    }

    #[test]
    fn cache_purges_are_numbered_kept_bounded_and_refused_for_unknown_buckets() {
        let mut state = ManagerState::default();
        let (alice, key) = user("alice");
        Command::CreateUser { user: alice, key }
            .apply(&mut state)
            .unwrap();
        Command::CreateBucket {
            bucket: bucket("b1", "alice", 7),
        }
        .apply(&mut state)
        .unwrap();
        let purge = |bucket: &str, key: &str| Command::PurgeCache {
            bucket: bucket.into(),
            key: key.into(),
            prefix: false,
        };
        assert_eq!(
            purge("nosuch", "k").apply(&mut state),
            Err(Refusal::NoSuchBucket("nosuch".into()))
        );
        for i in 0..crate::model::CACHE_PURGES_KEPT + 10 {
            purge("b1", &format!("k{i}")).apply(&mut state).unwrap();
        }
        let purges = &state.cache_purges;
        assert_eq!(purges.len(), crate::model::CACHE_PURGES_KEPT);
        assert_eq!(purges[0].seq, 11);
        assert!(purges.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(
            purges.last().map(|p| (p.seq, p.key.as_str())),
            Some((crate::model::CACHE_PURGES_KEPT as u64 + 10, "k265"))
        );
    }

    #[test]
    fn quorums_are_set_only_when_n_can_meet_them() {
        use crate::cluster::Consistency;
        let mut state = ManagerState::default();
        state.settings.replicas = 3;
        let set = |write, read, delete| Command::SetConsistency {
            consistency: Consistency {
                write,
                read,
                delete,
            },
        };
        assert_eq!(set(3, 1, 3).apply(&mut state), Ok(()));
        for (w, r, d) in [(4, 1, 1), (0, 2, 2), (2, 2, 0), (2, 4, 2)] {
            assert!(matches!(
                set(w, r, d).apply(&mut state),
                Err(Refusal::ImpossibleConsistency(_))
            ));
        }
        assert_eq!(
            state.settings.consistency,
            Some(Consistency {
                write: 3,
                read: 1,
                delete: 3
            })
        );
        let (alice, key) = user("alice");
        Command::CreateUser { user: alice, key }
            .apply(&mut state)
            .unwrap();
        Command::CreateBucket {
            bucket: bucket("fast", "alice", 1),
        }
        .apply(&mut state)
        .unwrap();
        let for_bucket = |name: &str, consistency| Command::SetBucketConsistency {
            name: name.into(),
            consistency,
        };
        let r1 = Consistency {
            write: 2,
            read: 1,
            delete: 2,
        };
        assert_eq!(for_bucket("fast", Some(r1)).apply(&mut state), Ok(()));
        assert_eq!(state.bucket("fast").unwrap().consistency, Some(r1));
        let impossible = Consistency { read: 4, ..r1 };
        assert!(matches!(
            for_bucket("fast", Some(impossible)).apply(&mut state),
            Err(Refusal::ImpossibleConsistency(_))
        ));
        assert_eq!(
            for_bucket("nope", Some(r1)).apply(&mut state),
            Err(Refusal::NoSuchBucket("nope".into()))
        );
        assert_eq!(for_bucket("fast", None).apply(&mut state), Ok(()));
        assert_eq!(state.bucket("fast").unwrap().consistency, None);
        // Settings from before quorums existed read as "the defaults for N".
        let old: crate::cluster::ClusterSettings = serde_json::from_str(
            r#"{"replicas":3,"tombstone_grace_secs":1,"max_clock_offset_ms":500}"#,
        )
        .unwrap();
        assert_eq!(old.consistency, None);
    }

    #[test]
    fn a_rebalance_begins_on_its_epoch_fills_and_flips_only_when_filled_and_known() {
        let mut state = ManagerState::default();
        for id in 0..4u32 {
            state.nodes.insert(
                id,
                Member {
                    id,
                    addr: format!("127.0.0.1:{}", 4000 + id),
                    storage: true,
                    gateway: false,
                    shards: 1,
                    capacity_bytes: 0,
                    zone: String::new(),
                    state: if id == 3 {
                        NodeState::Attached
                    } else {
                        NodeState::Running
                    },
                    registered_unix_ms: 1,
                    state_since_unix_ms: 1,
                },
            );
        }
        let old = vec![(0, 0), (1, 0), (1, 0), (2, 0)];
        let next = vec![(0, 0), (1, 0), (3, 0), (2, 0)];
        state.ring = Some(RingRecord {
            epoch: 4,
            partitions: 2,
            replicas: 2,
            table: old,
            known_everywhere: true,
            rebalance: None,
            recovery: None,
            last_recovery: None,
        });
        let settled_checksum = state.ring_checksum();
        let begin = |epoch| Command::BeginRebalance {
            epoch,
            next: next.clone(),
            now_unix_ms: 9,
        };
        assert!(matches!(
            begin(3).apply(&mut state),
            Err(Refusal::RingChanged(_))
        ));
        assert_eq!(begin(4).apply(&mut state), Ok(()));
        assert!(matches!(
            begin(5).apply(&mut state),
            Err(Refusal::RingChanged(_))
        ));
        let ring = state.ring.clone().unwrap();
        assert_eq!((ring.epoch, ring.known_everywhere), (5, false));
        assert_ne!(state.ring_checksum(), settled_checksum);
        let rebalance = ring.rebalance.clone().unwrap();
        assert_eq!((rebalance.moving, rebalance.moved_replicas), (1, 1));
        // Not known everywhere yet, and partition 1 not filled: no flip.
        let flip = Command::FlipRing { epoch: 5 };
        assert!(flip.apply(&mut state).is_err());
        Command::RingKnown { epoch: 5 }.apply(&mut state).unwrap();
        assert!(flip.apply(&mut state).is_err());
        // A partition that does not move is not recorded as filled.
        Command::PartitionsFilled {
            epoch: 5,
            partitions: vec![0, 1],
        }
        .apply(&mut state)
        .unwrap();
        let filled = &state
            .ring
            .as_ref()
            .unwrap()
            .rebalance
            .as_ref()
            .unwrap()
            .filled;
        assert_eq!(filled.iter().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(flip.apply(&mut state), Ok(()));
        let ring = state.ring.clone().unwrap();
        assert_eq!((ring.epoch, ring.table.clone()), (6, next.clone()));
        assert!(ring.rebalance.is_none() && !ring.known_everywhere);
        assert_eq!(state.nodes[&3].state, NodeState::Running);
        // A stale step of the old epoch changes nothing.
        assert!(Command::RingKnown { epoch: 5 }.apply(&mut state).is_err());
        // A rebalance given up leaves the ring as it was, at a new epoch.
        let back = vec![(0, 0), (1, 0), (1, 0), (2, 0)];
        Command::BeginRebalance {
            epoch: 6,
            next: back,
            now_unix_ms: 10,
        }
        .apply(&mut state)
        .unwrap();
        assert!(
            Command::AbortRebalance { epoch: 6 }
                .apply(&mut state)
                .is_err()
        );
        Command::AbortRebalance { epoch: 7 }
            .apply(&mut state)
            .unwrap();
        let ring = state.ring.clone().unwrap();
        assert_eq!((ring.epoch, ring.table), (8, next));
        assert!(ring.rebalance.is_none());
        // A next table with two replicas of a partition on one node is refused.
        let doubled = Command::BeginRebalance {
            epoch: 8,
            next: vec![(0, 0), (0, 0), (1, 0), (2, 0)],
            now_unix_ms: 11,
        };
        assert!(matches!(
            doubled.apply(&mut state),
            Err(Refusal::RingChanged(_))
        ));
    }

    #[test]
    fn commands_keep_their_stored_form() {
        // The Raft log holds this form: a newer manager must read what an older one wrote.
        let command = Command::DeleteBucket {
            name: "b".into(),
            incarnation: 3,
        };
        let json = serde_json::to_string(&command).unwrap();
        assert_eq!(json, r#"{"op":"delete-bucket","name":"b","incarnation":3}"#);
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), command);
        let refusal: Outcome = Err(Refusal::NoSuchBucket("b".into()));
        let json = serde_json::to_string(&refusal).unwrap();
        assert_eq!(
            serde_json::from_str::<Outcome>(&json).unwrap(),
            refusal,
            "{json}"
        );
    }
}
