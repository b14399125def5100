//! The cluster's membership as the manager keeps it (DESIGN §8): the nodes with their roles,
//! shards, capacity, zone and state (LeoFS's attached, running, suspended, stopped, restarted),
//! the RING, and the settings every node must agree on. Members, ring and settings are part
//! of the replicated [`crate::ManagerState`]; heartbeats are not (a node beats every second):
//! each manager keeps the last one of every node in memory ([`Liveness`]), and the leader turns
//! what they show into state changes ([`Transition`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ring_plan::{PlanNode, RingPlan};

/// How often a node sends its heartbeat to every manager.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A running node whose last heartbeat is older than this is marked stopped.
pub const NODE_STOPPED_AFTER: Duration = Duration::from_secs(5);
/// Partitions per vnode `leofs-adm start` aims for when it chooses P (at least this many, so
/// that the ring can be balanced within a few percent and grow several-fold before P limits it).
pub const PARTITIONS_PER_VNODE_MIN: u32 = 64;
/// The smallest P `leofs-adm start` chooses.
pub const PARTITIONS_CHOSEN_MIN: u32 = 1024;
/// The largest P `leofs-adm start` chooses by itself (more is possible when asked for).
pub const PARTITIONS_CHOSEN_MAX: u32 = 1 << 16;
/// Format version of a node's registration and heartbeat bodies.
pub const MEMBERSHIP_FORMAT_VERSION: u32 = 1;
/// The manager call (on the node wire, beside Raft's) that registers a node: a JSON
/// [`Registration`], answered with a JSON [`RegisterAnswer`].
pub const REGISTER_CALL: u8 = 16;
/// The manager call that carries a heartbeat: a JSON [`Heartbeat`], answered with a JSON
/// [`HeartbeatAnswer`].
pub const HEARTBEAT_CALL: u8 = 17;

/// The answer to a registration: the node's record, or why it may not join (for good: the
/// node stops with the message) or not now (it tries again).
pub type RegisterAnswer = Result<Member, RegisterRefusal>;

/// Why a registration failed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegisterRefusal {
    /// The node conflicts with the cluster: starting it again as it is will not help.
    pub conflict: bool,
    /// What happened, for the operator.
    pub message: String,
}

/// A node's state in the cluster, as LeoFS names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Registered, not in the ring yet (a storage node before `leofs-adm start`).
    Attached,
    /// Serving.
    Running,
    /// Taken out of service by an operator (`leofs-adm suspend`): requests for its partitions
    /// fail at once instead of waiting on it; `leofs-adm resume` brings it back.
    Suspended,
    /// Missed its heartbeats for [`NODE_STOPPED_AFTER`].
    Stopped,
    /// Stopped, then heard from again; running once it reports the current ring.
    Restarted,
    /// Taken out of the ring by an operator (`leofs-adm detach`): the next rebalance moves
    /// its partitions to the other nodes; it serves until then (`leofs-adm rollback` takes
    /// the detach back before that).
    Detached,
}

impl NodeState {
    /// The state as `leofs-adm status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Attached => "attached",
            NodeState::Running => "running",
            NodeState::Suspended => "suspended",
            NodeState::Stopped => "stopped",
            NodeState::Restarted => "restarted",
            NodeState::Detached => "detached",
        }
    }
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Its id: the node of a vnode, the HLC issuer.
    pub id: u32,
    /// Its address for peers (`--rpc-listen`; shard *i* on its port + *i*); for a node without
    /// one (a gateway), the name it registered under.
    pub addr: String,
    /// Whether it stores data (has vnodes).
    pub storage: bool,
    /// Whether it serves S3.
    pub gateway: bool,
    /// Its shards (cores); 0 without storage.
    pub shards: u16,
    /// Bytes it can hold (its data disk's size; 0 unknown).
    pub capacity_bytes: u64,
    /// Its zone (rack, room); empty for none.
    #[serde(default)]
    pub zone: String,
    /// Its state.
    pub state: NodeState,
    /// When it first registered, ms since the Unix epoch.
    pub registered_unix_ms: u64,
    /// When it entered its state, ms since the Unix epoch (0: not recorded).
    #[serde(default)]
    pub state_since_unix_ms: u64,
}

/// What a node says about itself when it registers (at every start).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    /// [`MEMBERSHIP_FORMAT_VERSION`].
    pub format_version: u32,
    /// Its address for peers, or its name when it has none.
    pub addr: String,
    /// Whether it stores data.
    pub storage: bool,
    /// Whether it serves S3.
    pub gateway: bool,
    /// Its shards (0 without storage).
    pub shards: u16,
    /// Bytes it can hold.
    pub capacity_bytes: u64,
    /// Its zone.
    pub zone: String,
    /// The partition count its data dir was created with, if it has one.
    pub layout_partitions: Option<u32>,
    /// The node id its data dir remembers, if it registered before.
    pub known_id: Option<u32>,
}

/// The ring as the state machine keeps it: epoch, P, N and the table of (node, shard).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RingRecord {
    /// Increments with every change of the assignment.
    pub epoch: u64,
    /// Partitions P (a power of two).
    pub partitions: u32,
    /// Replicas per partition N.
    pub replicas: u32,
    /// `partitions × replicas` (node, shard), partition-major.
    pub table: Vec<(u32, u16)>,
    /// Whether every node that is not stopped routes by this epoch (the leader saw it in
    /// their heartbeats): a rebalance's fills count only then, and former owners drop what
    /// they no longer hold only then.
    #[serde(default)]
    pub known_everywhere: bool,
    /// The rebalance under way, if one is.
    #[serde(default)]
    pub rebalance: Option<Rebalance>,
    /// The recovery under way, if one is (`leofs-adm recover-node` / `recover-consistency`).
    #[serde(default)]
    pub recovery: Option<Recovery>,
    /// The last recovery that finished.
    #[serde(default)]
    pub last_recovery: Option<Recovery>,
}

/// What operators asked of one storage node's compaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompactionOrder {
    /// When a pass was last asked for (`compact-start`), ms since the Unix epoch (its id:
    /// each shard runs one pass per id); 0 for none.
    pub start_requested_unix_ms: u64,
    /// Whether background compaction is paused (`compact-suspend`; a full disk still wakes
    /// it).
    pub suspended: bool,
}

/// What `leofs-adm compact-*` asks of a node's compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompactAction {
    /// Run a pass on every shard now.
    Start,
    /// Pause background compaction.
    Suspend,
    /// Resume it.
    Resume,
}

/// An operator's request that every partition one node holds be compared with its other
/// replicas and repaired now (anti-entropy on demand): what `recover-node` runs for a wiped or
/// replaced node, and `recover-consistency` for one that missed writes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recovery {
    /// The node whose partitions are compared.
    pub node: u32,
    /// When it was asked, ms since the Unix epoch (its id: nodes report progress against it).
    pub requested_unix_ms: u64,
    /// How many partitions the node holds.
    pub partitions: u32,
    /// Those compared and repaired so far.
    pub done: BTreeSet<u32>,
    /// When the last one was, ms since the Unix epoch (0 while under way).
    #[serde(default)]
    pub finished_unix_ms: u64,
}

/// A rebalance under way (DESIGN §4): the ring the partitions move to, and how far they are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rebalance {
    /// The table partitions move to (same P and N), partition-major.
    pub next: Vec<(u32, u16)>,
    /// Moving partitions whose new replicas were filled from the old ones, as the nodes
    /// driving them reported.
    pub filled: BTreeSet<u32>,
    /// Partitions whose replica set differs in `next`.
    pub moving: u32,
    /// Replica slots that change (what the move costs).
    pub moved_replicas: u32,
    /// When it started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// Whether an operator paused the movement (`leofs-adm rebalance-suspend`).
    #[serde(default)]
    pub suspended: bool,
    /// The stopped node whose partitions this rebalance re-replicates (automatic recovery),
    /// if that is what it is.
    #[serde(default)]
    pub recovering_node: Option<u32>,
    /// How many old replicas of a moving partition a fill must hear: N − (the smallest W or
    /// D of the cluster and its buckets) + 1, so that every acknowledged write is on one of
    /// them; one less for an automatic recovery, whose stopped node cannot answer (what only
    /// it held comes back when it does). 0: all of them.
    #[serde(default)]
    pub fill_quorum: u32,
}

impl RingRecord {
    /// Whether `node` holds vnodes in this ring or in the next one a rebalance moves to.
    pub fn places_node(&self, node: u32) -> bool {
        self.table
            .iter()
            .chain(self.rebalance.iter().flat_map(|r| r.next.iter()))
            .any(|(n, _)| *n == node)
    }

    /// The ring `plan` describes, at `epoch`.
    pub fn from_plan(epoch: u64, plan: RingPlan) -> Self {
        RingRecord {
            epoch,
            partitions: plan.partitions,
            replicas: plan.replicas as u32,
            table: plan.table,
            known_everywhere: false,
            rebalance: None,
            recovery: None,
            last_recovery: None,
        }
    }

    /// The ring as the planner takes it (the previous ring of a plan).
    pub fn as_plan(&self) -> RingPlan {
        RingPlan {
            partitions: self.partitions,
            replicas: self.replicas as usize,
            table: self.table.clone(),
        }
    }

    /// The next ring over `nodes`, moving as little as possible from this one.
    pub fn plan_next(&self, nodes: &[PlanNode]) -> Result<RingPlan, crate::ring_plan::PlanError> {
        crate::ring_plan::plan(
            nodes,
            self.partitions,
            self.replicas as usize,
            Some(&self.as_plan()),
        )
    }

    /// The partitions `node` holds a replica of.
    pub fn partitions_of(&self, node: u32) -> Vec<u32> {
        let n = (self.replicas as usize).max(1);
        self.table
            .chunks_exact(n)
            .enumerate()
            .filter(|(_, set)| set.iter().any(|(id, _)| *id == node))
            .map(|(p, _)| p as u32)
            .collect()
    }

    /// The ring's checksum as every node computes it: of its table, and of the table it
    /// moves to during a rebalance.
    pub fn checksum(&self) -> u64 {
        let table = self.table.iter().copied();
        match &self.rebalance {
            None => leofs_wire::ring_checksum(self.partitions, self.replicas, table),
            Some(rebalance) => leofs_wire::moving_ring_checksum(
                self.partitions,
                self.replicas,
                table,
                rebalance.next.iter().copied(),
            ),
        }
    }

    /// The partitions whose replica set differs between the table and `next`.
    pub fn moving_partitions(&self, next: &[(u32, u16)]) -> Vec<u32> {
        let n = (self.replicas as usize).max(1);
        self.table
            .chunks_exact(n)
            .zip(next.chunks_exact(n))
            .enumerate()
            .filter(|(_, (now, then))| then.iter().any(|v| !now.contains(v)))
            .map(|(p, _)| p as u32)
            .collect()
    }

    /// How many partitions each node is the first replica of.
    pub fn partitions_by_node(&self) -> BTreeMap<u32, u32> {
        let mut counts = BTreeMap::new();
        let step = (self.replicas as usize).max(1);
        for (node, _) in self.table.iter().step_by(step) {
            *counts.entry(*node).or_insert(0) += 1;
        }
        counts
    }
}

/// Settings every node of the cluster must agree on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterSettings {
    /// Replicas per partition N (1 until replication).
    pub replicas: u32,
    /// How long a tombstone is kept before compaction may drop it (seconds).
    pub tombstone_grace_secs: u64,
    /// The largest clock difference between nodes the cluster tolerates (milliseconds).
    pub max_clock_offset_ms: u64,
    /// W, R and D as the operator set them (`leofs-adm update-consistency-level`); None: the
    /// defaults for N (W = D = a majority, R = N − W + 1).
    #[serde(default)]
    pub consistency: Option<Consistency>,
    /// How long a storage node may stay stopped before its partitions are re-replicated
    /// onto the others, in seconds (0: only once the tombstone grace is over; never longer
    /// than it: [`re_replicate_after_ms`]).
    #[serde(default = "default_auto_recover_after_secs")]
    pub auto_recover_after_secs: u64,
}

/// Default of [`ClusterSettings::auto_recover_after_secs`]: 30 minutes.
pub const AUTO_RECOVER_AFTER_SECS: u64 = 30 * 60;

fn default_auto_recover_after_secs() -> u64 {
    AUTO_RECOVER_AFTER_SECS
}

/// Disk use (percent of capacity) above which a node takes no re-replicated partitions: the
/// automatic recovery waits rather than fill it.
pub const AUTO_RECOVER_DISK_USE_MAX_PERCENT: u64 = 90;

/// The cluster's quorums: acks a write needs, replicas a read consults, acks a delete needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Consistency {
    /// W.
    pub write: u32,
    /// R.
    pub read: u32,
    /// D.
    pub delete: u32,
}

impl Consistency {
    /// The quorums a cluster of `replicas` replicas uses when none are set: a majority for W
    /// and D, and R = N − W + 1 (the same rule as the data path's `Levels::defaults`).
    pub fn defaults_for(replicas: u32) -> Self {
        let majority = replicas / 2 + 1;
        Consistency {
            write: majority,
            read: replicas.saturating_sub(majority) + 1,
            delete: majority,
        }
    }

    /// (W, R, D) as the data path takes them (a quorum past `u16` saturates, and is then
    /// impossible for any N).
    pub fn quorums(&self) -> (u16, u16, u16) {
        let quorum = |q: u32| u16::try_from(q).unwrap_or(u16::MAX);
        (quorum(self.write), quorum(self.read), quorum(self.delete))
    }

    /// Why these quorums are impossible with `replicas` replicas (each must be 1..=N), if
    /// they are.
    pub fn impossible_with(&self, replicas: u32) -> Option<String> {
        let quorums = [("W", self.write), ("R", self.read), ("D", self.delete)];
        quorums
            .iter()
            .find(|(_, q)| !(1..=replicas).contains(q))
            .map(|(name, q)| {
                format!("{name}={q} is impossible with N={replicas} replicas: each of W, R and D must be 1 to N")
            })
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            replicas: 1,
            tombstone_grace_secs: 7 * 24 * 3600,
            max_clock_offset_ms: 500,
            consistency: None,
            auto_recover_after_secs: AUTO_RECOVER_AFTER_SECS,
        }
    }
}

/// The P `leofs-adm start` chooses for `vnodes` vnodes (shards over every storage node), or
/// for `expected_vnodes` when the operator says the cluster will grow to that many:
/// [`PARTITIONS_PER_VNODE_MIN`] per vnode, rounded up to a power of two, within
/// [`PARTITIONS_CHOSEN_MIN`]..=[`PARTITIONS_CHOSEN_MAX`].
pub fn choose_partitions(vnodes: u32, expected_vnodes: Option<u32>) -> u32 {
    let vnodes = vnodes.max(expected_vnodes.unwrap_or(0));
    vnodes
        .saturating_mul(PARTITIONS_PER_VNODE_MIN)
        .checked_next_power_of_two()
        .unwrap_or(PARTITIONS_CHOSEN_MAX)
        .clamp(PARTITIONS_CHOSEN_MIN, PARTITIONS_CHOSEN_MAX)
}

/// The storage nodes the planner places partitions on: the storage members given, but those
/// an operator detached.
pub fn plan_nodes<'a>(members: impl Iterator<Item = &'a Member>) -> Vec<PlanNode> {
    members
        .filter(|m| m.storage && m.shards > 0 && m.state != NodeState::Detached)
        .map(|m| PlanNode {
            id: m.id,
            shards: m.shards,
            capacity_bytes: m.capacity_bytes,
            zone: m.zone.clone(),
        })
        .collect()
}

/// One shard's figures in a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardUse {
    /// The shard.
    pub shard: u16,
    /// Live records (objects, chunks, parts).
    pub live_records: u64,
    /// Bytes of live records.
    pub live_bytes: u64,
    /// Bytes of dead records (compaction reclaims them).
    pub dead_bytes: u64,
    /// Log segments.
    pub segments: u64,
    /// Garbage entries waiting for collection (a queue depth).
    pub garbage_pending: u64,
    /// Hints it holds for replicas that missed writes.
    #[serde(default)]
    pub hints_held: u64,
    /// Anti-entropy passes it ran since start.
    #[serde(default)]
    pub anti_entropy_passes: u64,
    /// Partitions it drives whose last anti-entropy pass did not find all N replicas
    /// answering and identical.
    #[serde(default)]
    pub partitions_under_replicated: u64,
    /// Seconds since the longest-unrepaired of those was last found identical.
    #[serde(default)]
    pub oldest_unrepaired_partition_seconds: u64,
    /// Partitions it holds records of but no longer owns (a rebalance moved them away): it
    /// drops them once every node routes by the ring without them.
    #[serde(default)]
    pub foreign_partitions: u64,
    /// Bytes it moved to other replicas for rebalances since start.
    #[serde(default)]
    pub rebalance_moved_bytes: u64,
    /// When its last compaction pass ended, ms since the Unix epoch (0: none since start).
    #[serde(default)]
    pub last_compaction_unix_ms: u64,
    /// Whether its background compaction is paused.
    #[serde(default)]
    pub compaction_suspended: bool,
    /// Segments it compacted since start.
    #[serde(default)]
    pub segments_compacted: u64,
    /// Whether it refused a write for lack of room in the last 10 s (its disk is full).
    #[serde(default)]
    pub disk_full: bool,
}

/// What a node tells every manager each [`HEARTBEAT_INTERVAL`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    /// [`MEMBERSHIP_FORMAT_VERSION`].
    pub format_version: u32,
    /// The node.
    pub node: u32,
    /// The epoch of the ring it routes by (0: none yet).
    pub ring_epoch: u64,
    /// That ring's checksum, as the manager computes it from the record.
    pub ring_checksum: u64,
    /// Bytes used on its data disk.
    pub disk_used_bytes: u64,
    /// Its data disk's size.
    pub disk_capacity_bytes: u64,
    /// Requests waiting in its cores' queues.
    pub queue_depth: u64,
    /// The revision of its catalog ([`crate::ManagerState::revision`]): which changes it
    /// has seen.
    #[serde(default)]
    pub catalog_revision: u64,
    /// Per shard figures (storage nodes).
    pub shards: Vec<ShardUse>,
    /// The node's wall clock when it sent this beat (µs since the Unix epoch).
    #[serde(default)]
    pub sent_unix_us: u64,
    /// The node's clock minus the managers' (µs), as the node last measured it: the median
    /// over the managers that answered, each from a heartbeat's round trip. None until measured
    /// (or where the only manager is the node's own).
    #[serde(default)]
    pub clock_offset_us: Option<i64>,
    /// The ring epoch of `filled` (a rebalance's moving ring).
    #[serde(default)]
    pub filled_epoch: u64,
    /// Moving partitions this node's cores filled (their new replicas hold everything the
    /// old ones do) at `filled_epoch`, not yet recorded by the managers.
    #[serde(default)]
    pub filled: Vec<u32>,
    /// The recovery (its `requested_unix_ms`) of `recovered`.
    #[serde(default)]
    pub recovered_id: u64,
    /// Partitions of the recovery under way this node's cores compared and repaired, not yet
    /// recorded by the managers.
    #[serde(default)]
    pub recovered: Vec<u32>,
    /// The node's clock offset from each storage node it reached, measured directly.
    #[serde(default)]
    pub peer_clocks: Vec<PeerClock>,
    /// Its gateway object cache, all cores together.
    #[serde(default)]
    pub gateway_cache: crate::admin::GatewayCacheStatus,
    /// Its lifecycle workers, all cores together.
    #[serde(default)]
    pub lifecycle: crate::admin::LifecycleStatus,
}

/// One node's clock offset from one peer, measured over a round trip between the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerClock {
    /// The peer (a storage node of the ring).
    pub node: u32,
    /// This node's clock minus the peer's, in µs.
    pub offset_us: i64,
    /// The round trip it was measured over, in µs: the measure is within half of it.
    pub round_trip_us: u64,
}

/// The manager's answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatAnswer {
    /// The managers of the group (their `--rpc-listen` addresses): the node sends its
    /// heartbeats to each.
    pub managers: Vec<String>,
    /// The epoch of the ring this manager has (0: none yet): a node routing by another one
    /// fetches it at once rather than at its next poll.
    #[serde(default)]
    pub ring_epoch: u64,
    /// That ring's checksum (0: none).
    #[serde(default)]
    pub ring_checksum: u64,
    /// The manager's wall clock when it answered (µs since the Unix epoch; 0 from a manager
    /// too old to say): the node measures its clock's offset from it.
    #[serde(default)]
    pub manager_unix_us: u64,
}

/// A test-only offset added to this process's wall clock (see [`unix_now_us`]), in µs.
static TEST_CLOCK_OFFSET_US: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Shifts this process's wall clock as [`unix_now_us`] reads it by `offset_ms`: only for tests
/// of clock skew between nodes on one machine (`LEOFS_TEST_CLOCK_OFFSET_MS`).
pub fn set_test_clock_offset_ms(offset_ms: i64) {
    TEST_CLOCK_OFFSET_US.store(
        offset_ms.saturating_mul(1000),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The wall clock in µs since the Unix epoch, as heartbeats and clock checks read it.
pub fn unix_now_us() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    now.saturating_add_signed(TEST_CLOCK_OFFSET_US.load(std::sync::atomic::Ordering::Relaxed))
}

/// A node's clock minus a manager's, in µs, from one round trip: the node sent at `sent_us`
/// and received at `received_us` (its clock) the manager's answer stamped `manager_us`; the
/// manager's stamp is taken to be halfway through (the error is at most half the round trip).
pub fn clock_offset_us(sent_us: u64, received_us: u64, manager_us: u64) -> i64 {
    let halfway = sent_us / 2 + received_us / 2;
    halfway as i64 - manager_us as i64
}

/// The median of several offsets (None for none).
pub fn median_offset_us(mut offsets: Vec<i64>) -> Option<i64> {
    offsets.sort_unstable();
    offsets.get(offsets.len() / 2).copied()
}

/// Whether `beat` (after `last`, this node's previous one) may let the ring move on: it
/// reports partitions filled or recovered, another ring epoch, or its last foreign partition
/// handed over.
fn brings_ring_news(last: Option<&Heartbeat>, beat: &Heartbeat) -> bool {
    let foreign = |b: &Heartbeat| b.shards.iter().map(|s| s.foreign_partitions).sum::<u64>();
    !beat.filled.is_empty()
        || !beat.recovered.is_empty()
        || last.is_none_or(|last| {
            last.ring_epoch != beat.ring_epoch || (foreign(last) > 0 && foreign(beat) == 0)
        })
}

/// Wakes the leader's watch before its interval ends when a heartbeat brings news for the
/// ring, so that a rebalance or recovery moves on without waiting out the interval.
#[derive(Default)]
pub struct RingNews {
    came: Mutex<bool>,
    changed: Condvar,
}

impl RingNews {
    fn tell(&self) {
        *self.came.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.changed.notify_all();
    }

    /// Waits until news came or `timeout` passed, and takes the news.
    pub fn wait(&self, timeout: Duration) {
        let came = self.came.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut came, _) = self
            .changed
            .wait_timeout_while(came, timeout, |came| !*came)
            .unwrap_or_else(PoisonError::into_inner);
        *came = false;
    }
}

/// Whether an offset in µs is within the cluster's bound in ms.
pub fn clock_within_bound(offset_us: i64, max_clock_offset_ms: u64) -> bool {
    offset_us.unsigned_abs() <= max_clock_offset_ms.saturating_mul(1000)
}

/// The last heartbeat of each node, as this manager received them.
#[derive(Default)]
pub struct Liveness {
    beats: Mutex<HashMap<u32, (Instant, Heartbeat)>>,
    /// Wakes the leader's watch when a beat brings news for the ring.
    news: Arc<RingNews>,
}

impl Liveness {
    /// Records `beat`, received now; wakes the watch when it brings news for the ring
    /// ([`brings_ring_news`]).
    pub fn record(&self, beat: Heartbeat) {
        let mut beats = self.beats.lock().unwrap_or_else(PoisonError::into_inner);
        let news = brings_ring_news(beats.get(&beat.node).map(|(_, last)| last), &beat);
        beats.insert(beat.node, (Instant::now(), beat));
        drop(beats);
        if news {
            self.news.tell();
        }
    }

    /// What the leader's watch waits on between its rounds.
    pub fn ring_news(&self) -> Arc<RingNews> {
        self.news.clone()
    }

    /// The last heartbeat of `node`, if it came within [`NODE_STOPPED_AFTER`] (a node
    /// silent longer is, or is about to be, stopped).
    pub fn recent(&self, node: u32) -> Option<Heartbeat> {
        self.last(node)
            .filter(|(age, _)| *age <= NODE_STOPPED_AFTER)
            .map(|(_, beat)| beat)
    }

    /// The last heartbeat of `node` and its age.
    pub fn last(&self, node: u32) -> Option<(Duration, Heartbeat)> {
        let beats = self.beats.lock().unwrap_or_else(PoisonError::into_inner);
        beats
            .get(&node)
            .map(|(at, beat)| (at.elapsed(), beat.clone()))
    }
}

/// A change of a node's state the leader proposes from what heartbeats show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The node.
    pub node: u32,
    /// Its state now.
    pub from: NodeState,
    /// The state it moves to.
    pub to: NodeState,
}

/// The transitions heartbeats call for: a running or restarted node silent for
/// [`NODE_STOPPED_AFTER`] stops (unless this manager has led for less than that: it may not
/// have heard from everyone yet); a stopped node heard from again is restarted; a restarted node
/// that reports the current ring runs.
pub fn transitions(
    members: &BTreeMap<u32, Member>,
    ring: Option<&RingRecord>,
    ring_checksum: Option<u64>,
    liveness: &Liveness,
    leading_for: Duration,
) -> Vec<Transition> {
    let mut out = Vec::new();
    for member in members.values() {
        let last = liveness.last(member.id);
        let silent = last
            .as_ref()
            .is_none_or(|(age, _)| *age > NODE_STOPPED_AFTER);
        let heard = last
            .as_ref()
            .is_some_and(|(age, _)| *age <= HEARTBEAT_INTERVAL * 2);
        let to = match member.state {
            NodeState::Running | NodeState::Restarted
                if silent && leading_for > NODE_STOPPED_AFTER =>
            {
                Some(NodeState::Stopped)
            }
            NodeState::Stopped if heard => Some(NodeState::Restarted),
            NodeState::Restarted if heard => {
                let current = last.as_ref().is_some_and(|(_, beat)| {
                    ring.is_none_or(|ring| {
                        beat.ring_epoch == ring.epoch && Some(beat.ring_checksum) == ring_checksum
                    })
                });
                current.then_some(NodeState::Running)
            }
            _ => None,
        };
        if let Some(to) = to {
            out.push(Transition {
                node: member.id,
                from: member.state,
                to,
            });
        }
    }
    out
}

/// The nodes whose last heartbeat does not show `ring` (its epoch and checksum), of those
/// that must route by it: every node heard from within [`NODE_STOPPED_AFTER`] that is not
/// stopped. A silent node is left out (a running one is marked stopped then; an attached or
/// detached one may never start again): when it comes back it takes the ring before it is
/// running, and replicas refuse its writes until it does.
pub fn nodes_behind(
    members: &BTreeMap<u32, Member>,
    ring: &RingRecord,
    liveness: &Liveness,
) -> Vec<u32> {
    let checksum = ring.checksum();
    members
        .values()
        .filter(|m| m.state != NodeState::Stopped)
        .filter_map(|m| {
            let beat = liveness.recent(m.id)?;
            let current = beat.ring_epoch == ring.epoch && beat.ring_checksum == checksum;
            (!current).then_some(m.id)
        })
        .collect()
}

/// The partitions the nodes' last heartbeats report (`reported`: those of one beat, or None
/// when the beat is about another ring or recovery) that `recorded` does not hold yet.
fn newly_reported(
    state: &crate::ManagerState,
    liveness: &Liveness,
    reported: impl Fn(Heartbeat) -> Option<Vec<u32>>,
    recorded: &BTreeSet<u32>,
) -> Vec<u32> {
    let new: BTreeSet<u32> = state
        .nodes
        .keys()
        .filter_map(|id| liveness.last(*id))
        .filter_map(|(_, beat)| reported(beat))
        .flatten()
        .filter(|p| !recorded.contains(p))
        .collect();
    new.into_iter().collect()
}

/// What the leader proposes, from the heartbeats, to carry the ring forward: that a ring is
/// known everywhere; then, during a rebalance, the partitions the nodes report filled; then,
/// once every moving partition is filled, the flip to the next ring.
pub fn ring_steps(
    state: &crate::ManagerState,
    liveness: &Liveness,
) -> Vec<crate::command::Command> {
    let Some(ring) = &state.ring else {
        return Vec::new();
    };
    let epoch = ring.epoch;
    if !ring.known_everywhere {
        if nodes_behind(&state.nodes, ring, liveness).is_empty() {
            return vec![crate::command::Command::RingKnown { epoch }];
        }
        return Vec::new();
    }
    if let Some(recovery) = &ring.recovery {
        let id = recovery.requested_unix_ms;
        let reported = newly_reported(
            state,
            liveness,
            |beat| (beat.recovered_id == id).then_some(beat.recovered),
            &recovery.done,
        );
        if !reported.is_empty() {
            return vec![crate::command::Command::PartitionsRecovered {
                requested_unix_ms: id,
                partitions: reported,
                now_unix_ms: unix_now_us() / 1000,
            }];
        }
    }
    let Some(rebalance) = &ring.rebalance else {
        return Vec::new();
    };
    let reported = newly_reported(
        state,
        liveness,
        |beat| (beat.filled_epoch == epoch).then_some(beat.filled),
        &rebalance.filled,
    );
    if !reported.is_empty() {
        return vec![crate::command::Command::PartitionsFilled {
            epoch,
            partitions: reported,
        }];
    }
    let moving = ring.moving_partitions(&rebalance.next);
    if !rebalance.suspended && moving.iter().all(|p| rebalance.filled.contains(p)) {
        return vec![crate::command::Command::FlipRing { epoch }];
    }
    Vec::new()
}

/// How long a storage node may stay stopped before its partitions are re-replicated onto the
/// others, in ms: the cluster's `auto_recover_after` (0 turns that off), and never longer than
/// its tombstone grace. The grace is how long the cluster waits for a node's records: a node
/// away longer comes back out of the ring and rejoins wiped (DESIGN §7), so its partitions must
/// have been given to the others by then, whatever `auto_recover_after` says.
pub fn re_replicate_after_ms(settings: &ClusterSettings) -> u64 {
    let grace_ms = settings.tombstone_grace_secs.max(1).saturating_mul(1000);
    match settings.auto_recover_after_secs {
        0 => grace_ms,
        secs => secs.saturating_mul(1000).min(grace_ms),
    }
}

/// Automatic re-replication (DESIGN §7): the change the leader proposes when a storage node
/// holding partitions has been stopped for [`re_replicate_after_ms`] (the one stopped longest,
/// one at a time, only while no rebalance or recovery is under way and the ring is known
/// everywhere): a rebalance onto the other nodes, planned without it. Err says why it must
/// wait (too few nodes, or one without room).
pub fn auto_recovery(
    state: &crate::ManagerState,
    liveness: &Liveness,
    now_unix_ms: u64,
) -> Result<Option<crate::command::Command>, String> {
    let Some(ring) = &state.ring else {
        return Ok(None);
    };
    let after_ms = re_replicate_after_ms(&state.settings);
    if ring.rebalance.is_some() || ring.recovery.is_some() || !ring.known_everywhere {
        return Ok(None);
    }
    let holders: BTreeSet<u32> = ring.table.iter().map(|(node, _)| *node).collect();
    let Some(stopped) = state
        .nodes
        .values()
        .filter(|m| m.storage && m.state == NodeState::Stopped && holders.contains(&m.id))
        .filter(|m| {
            m.state_since_unix_ms > 0
                && now_unix_ms.saturating_sub(m.state_since_unix_ms) >= after_ms
        })
        .min_by_key(|m| m.state_since_unix_ms)
    else {
        return Ok(None);
    };
    let nodes = plan_nodes(state.nodes.values().filter(|m| m.id != stopped.id));
    for node in &nodes {
        let Some((_, beat)) = liveness.last(node.id) else {
            continue;
        };
        if beat.disk_capacity_bytes > 0
            && beat.disk_used_bytes.saturating_mul(100)
                > beat
                    .disk_capacity_bytes
                    .saturating_mul(AUTO_RECOVER_DISK_USE_MAX_PERCENT)
        {
            return Err(format!(
                "node {} has no room for node {}'s partitions (its disk is over {AUTO_RECOVER_DISK_USE_MAX_PERCENT}% used)",
                node.id, stopped.id
            ));
        }
    }
    let plan = ring
        .plan_next(&nodes)
        .map_err(|e| format!("cannot re-replicate node {}'s partitions: {e}", stopped.id))?;
    Ok(Some(crate::command::Command::AutoRecover {
        node: stopped.id,
        epoch: ring.epoch,
        next: plan.table,
        now_unix_ms,
    }))
}

/// How often the leader logs why an automatic re-replication waits.
const AUTO_RECOVERY_WAIT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How often the leader looks at the heartbeats.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest time between two rounds of the watch, however much news comes.
const WATCH_ROUND_GAP_MIN: Duration = Duration::from_millis(100);

/// Starts the thread that, while this manager leads its group, turns what the heartbeats show
/// into node state changes ([`transitions`]). It ends once the manager is dropped.
pub fn spawn_watch(
    manager: &std::sync::Arc<crate::Manager>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let manager = std::sync::Arc::downgrade(manager);
    std::thread::Builder::new()
        .name("leofs-members".into())
        .spawn(move || {
            let mut leading_since: Option<Instant> = None;
            let mut waiting_logged: Option<Instant> = None;
            let Some(news) = manager.upgrade().map(|m| m.liveness().ring_news()) else {
                return;
            };
            loop {
                let round = Instant::now();
                news.wait(WATCH_INTERVAL);
                std::thread::sleep(WATCH_ROUND_GAP_MIN.saturating_sub(round.elapsed()));
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                if !manager.is_leader() {
                    leading_since = None;
                    continue;
                }
                let since = *leading_since.get_or_insert_with(Instant::now);
                let state = manager.snapshot();
                let moves = transitions(
                    &state.nodes,
                    state.ring.as_ref(),
                    state.ring_checksum(),
                    manager.liveness(),
                    since.elapsed(),
                );
                for Transition { node, from, to } in moves {
                    match manager.set_node_state(node, from, to) {
                        Ok(()) => tracing::info!(
                            node,
                            from = from.as_str(),
                            to = to.as_str(),
                            "node state changed"
                        ),
                        Err(e) => tracing::warn!(node, error = %e, "cannot change a node's state"),
                    }
                }
                let now_unix_ms = unix_now_us() / 1000;
                match auto_recovery(&manager.snapshot(), manager.liveness(), now_unix_ms) {
                    Ok(None) => {}
                    Ok(Some(step)) => match manager.propose_ring_step(step) {
                        Ok(()) => tracing::warn!(
                            after_secs = re_replicate_after_ms(&manager.snapshot().settings) / 1000,
                            "a storage node stopped for longer than auto_recover_after (or the tombstone grace, if shorter): re-replicating its partitions onto the others"
                        ),
                        Err(e) => tracing::warn!(error = %e, "cannot start an automatic re-replication"),
                    },
                    Err(why) => {
                        if waiting_logged.is_none_or(|at: Instant| {
                            at.elapsed() >= AUTO_RECOVERY_WAIT_LOG_INTERVAL
                        }) {
                            tracing::warn!(%why, "an automatic re-replication waits");
                            waiting_logged = Some(Instant::now());
                        }
                    }
                }
                for step in ring_steps(&manager.snapshot(), manager.liveness()) {
                    let what = step.describe();
                    match manager.propose_ring_step(step) {
                        Ok(()) => tracing::info!(step = %what, "ring moved on"),
                        Err(e) => {
                            tracing::warn!(step = %what, error = %e, "cannot move the ring on")
                        }
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_that_may_move_the_ring_on_wake_the_watch_and_others_do_not() {
        let beat = |epoch: u64, foreign: u64| Heartbeat {
            node: 1,
            ring_epoch: epoch,
            shards: vec![ShardUse {
                foreign_partitions: foreign,
                ..ShardUse::default()
            }],
            ..Heartbeat::default()
        };
        assert!(brings_ring_news(None, &beat(3, 0)));
        assert!(!brings_ring_news(Some(&beat(3, 0)), &beat(3, 0)));
        assert!(brings_ring_news(Some(&beat(3, 0)), &beat(4, 0)));
        assert!(brings_ring_news(Some(&beat(3, 2)), &beat(3, 0)));
        assert!(!brings_ring_news(Some(&beat(3, 2)), &beat(3, 1)));
        let filled = Heartbeat {
            filled: vec![7],
            ..beat(3, 0)
        };
        assert!(brings_ring_news(Some(&beat(3, 0)), &filled));

        let liveness = Liveness::default();
        let news = liveness.ring_news();
        liveness.record(beat(3, 0));
        let started = Instant::now();
        news.wait(Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "news wakes the watch"
        );
        liveness.record(beat(3, 0));
        let started = Instant::now();
        news.wait(Duration::from_millis(50));
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "no news waits the interval"
        );
    }

    fn member(id: u32, state: NodeState) -> Member {
        Member {
            id,
            addr: format!("127.0.0.1:{}", 4000 + id),
            storage: true,
            gateway: false,
            shards: 2,
            capacity_bytes: 0,
            zone: String::new(),
            state,
            registered_unix_ms: 1,
            state_since_unix_ms: 1,
        }
    }

    #[test]
    fn clock_offsets_come_from_round_trips_and_their_median() {
        // Sent at 1,000, answered at 1,400, the manager's clock read 700 halfway: 500 ahead.
        assert_eq!(clock_offset_us(1_000, 1_400, 700), 500);
        assert_eq!(clock_offset_us(1_000, 1_400, 1_700), -500);
        assert_eq!(median_offset_us(vec![30, -10, 5_000]), Some(30));
        assert_eq!(median_offset_us(Vec::new()), None);
        assert!(clock_within_bound(-500_000, 500));
        assert!(!clock_within_bound(500_001, 500));
    }

    #[test]
    fn partitions_are_chosen_from_the_size() {
        assert_eq!(choose_partitions(3, None), 1024);
        assert_eq!(choose_partitions(6, Some(40)), 4096);
        assert_eq!(choose_partitions(16_000, None), PARTITIONS_CHOSEN_MAX);
        assert_eq!(choose_partitions(u32::MAX, None), PARTITIONS_CHOSEN_MAX);
    }

    #[test]
    fn heartbeats_move_nodes_between_states() {
        let members: BTreeMap<u32, Member> = [
            (0, member(0, NodeState::Running)),
            (1, member(1, NodeState::Stopped)),
            (2, member(2, NodeState::Restarted)),
            (3, member(3, NodeState::Suspended)),
            (4, member(4, NodeState::Attached)),
        ]
        .into_iter()
        .collect();
        let ring = RingRecord {
            epoch: 3,
            partitions: 1,
            replicas: 1,
            table: vec![(0, 0)],
            known_everywhere: false,
            rebalance: None,
            recovery: None,
            last_recovery: None,
        };
        let liveness = Liveness::default();
        for node in [1, 2, 3, 4] {
            liveness.record(Heartbeat {
                node,
                ring_epoch: 3,
                ring_checksum: 9,
                ..Heartbeat::default()
            });
        }
        let long = NODE_STOPPED_AFTER * 2;
        let moves = transitions(&members, Some(&ring), Some(9), &liveness, long);
        let got: Vec<(u32, NodeState)> = moves.iter().map(|t| (t.node, t.to)).collect();
        assert_eq!(
            got,
            vec![
                (0, NodeState::Stopped),
                (1, NodeState::Restarted),
                (2, NodeState::Running)
            ]
        );
        // A new leader waits before calling anyone stopped; a restarted node on another ring
        // stays restarted.
        let moves = transitions(&members, Some(&ring), Some(8), &liveness, Duration::ZERO);
        let got: Vec<(u32, NodeState)> = moves.iter().map(|t| (t.node, t.to)).collect();
        assert_eq!(got, vec![(1, NodeState::Restarted)]);
    }

    #[test]
    fn the_leader_moves_a_rebalance_on_from_what_heartbeats_show() {
        let mut state = crate::ManagerState::default();
        for id in 0..3 {
            state.nodes.insert(id, member(id, NodeState::Running));
        }
        // Registered once, never heard from, holding nothing: it does not hold the ring up.
        state.nodes.insert(7, member(7, NodeState::Attached));
        let mut ring = RingRecord {
            epoch: 2,
            partitions: 2,
            replicas: 1,
            table: vec![(0, 0), (1, 0)],
            known_everywhere: false,
            rebalance: Some(Rebalance {
                next: vec![(0, 0), (2, 0)],
                filled: BTreeSet::new(),
                moving: 1,
                moved_replicas: 1,
                started_unix_ms: 1,
                suspended: false,
                recovering_node: None,
                fill_quorum: 0,
            }),
            recovery: None,
            last_recovery: None,
        };
        state.ring = Some(ring.clone());
        let liveness = Liveness::default();
        let beat = |node: u32, checksum: u64, filled: Vec<u32>| Heartbeat {
            node,
            ring_epoch: 2,
            ring_checksum: checksum,
            filled_epoch: 2,
            filled,
            ..Heartbeat::default()
        };
        let checksum = ring.checksum();
        liveness.record(beat(0, checksum, vec![]));
        liveness.record(beat(1, checksum, vec![]));
        // Node 2 routes by another ring: nothing moves on.
        liveness.record(beat(2, checksum ^ 1, vec![]));
        assert_eq!(nodes_behind(&state.nodes, &ring, &liveness), vec![2]);
        assert!(ring_steps(&state, &liveness).is_empty());
        liveness.record(beat(2, checksum, vec![]));
        assert_eq!(
            ring_steps(&state, &liveness),
            vec![crate::command::Command::RingKnown { epoch: 2 }]
        );
        ring.known_everywhere = true;
        state.ring = Some(ring.clone());
        assert!(ring_steps(&state, &liveness).is_empty());
        liveness.record(beat(1, checksum, vec![1]));
        assert_eq!(
            ring_steps(&state, &liveness),
            vec![crate::command::Command::PartitionsFilled {
                epoch: 2,
                partitions: vec![1]
            }]
        );
        if let Some(rebalance) = ring.rebalance.as_mut() {
            rebalance.filled.insert(1);
            rebalance.suspended = true;
        }
        state.ring = Some(ring.clone());
        // Suspended: no flip until resumed.
        assert!(ring_steps(&state, &liveness).is_empty());
        if let Some(rebalance) = ring.rebalance.as_mut() {
            rebalance.suspended = false;
        }
        state.ring = Some(ring);
        assert_eq!(
            ring_steps(&state, &liveness),
            vec![crate::command::Command::FlipRing { epoch: 2 }]
        );
    }

    #[test]
    fn a_node_stopped_for_the_tombstone_grace_is_re_replicated_whatever_auto_recover_after_says() {
        let mut state = crate::ManagerState::default();
        for id in 0..4 {
            state.nodes.insert(id, member(id, NodeState::Running));
        }
        let mut stopped = member(3, NodeState::Stopped);
        stopped.state_since_unix_ms = 1_000_000;
        state.nodes.insert(3, stopped);
        let table: Vec<(u32, u16)> = (0..16).map(|p| (p % 4, 0)).collect();
        state.ring = Some(RingRecord {
            epoch: 5,
            partitions: 16,
            replicas: 2,
            table,
            known_everywhere: true,
            rebalance: None,
            recovery: None,
            last_recovery: None,
        });
        state.settings.replicas = 2;
        state.settings.tombstone_grace_secs = 60;
        let liveness = Liveness::default();
        let at = |secs: u64| 1_000_000 + secs * 1000;
        let recovers = |state: &crate::ManagerState, now| {
            matches!(
                auto_recovery(state, &liveness, now),
                Ok(Some(crate::command::Command::AutoRecover {
                    node: 3,
                    epoch: 5,
                    ..
                }))
            )
        };
        // auto_recover_after shorter than the grace decides; longer, or off, the grace does.
        for (after_secs, due_secs) in [(30, 30), (600, 60), (0, 60)] {
            state.settings.auto_recover_after_secs = after_secs;
            assert_eq!(re_replicate_after_ms(&state.settings), due_secs * 1000);
            assert!(!recovers(&state, at(due_secs - 1)), "{after_secs}");
            assert!(recovers(&state, at(due_secs)), "{after_secs}");
        }
    }
}
