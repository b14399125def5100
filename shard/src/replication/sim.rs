//! The deterministic simulation of replication (DESIGN §7): five storage nodes, four partitions
//! of N = 3 replicas, W = R = D = 2, in one thread with one seeded random source. The
//! coordinator, replica, hint and anti-entropy decisions are the production ones
//! ([`WriteRound`], [`ReadRound`], [`Condition`], [`decide_write`], [`client_write_too_old`],
//! [`HintQueue`], [`RangeHashes`], [`Pass`]); around them the simulator plays the network (delay, drop,
//! duplicate, reorder, partitions), the clocks (each node off by up to half the bound), the
//! disks (a crash loses what was not synced: acks wait for the sync) and crashes with restarts.
//!
//! After the faulty phase every node is healed and restarted; hints drain with anti-entropy off
//! (every hint stored must then have reached its target), then anti-entropy runs until nothing
//! moves. A run then checks that replicas are identical, that the final version of every key
//! is one a client issued, as stamped, and no older than any acknowledged write or delete of it
//! (nothing acknowledged lost, nothing deleted back), and that every read returned a version
//! no older than every write acknowledged before it began. Conditional creators (`If-None-Match:
//! *`, through any node, at nearly the same time) go through the partition's serializing
//! replica ([`Condition`]): at most one wins each key, and the key then holds the winner's value.
//!
//! Planted bugs ([`Bug`]) prove the checks bite; a failing seed prints the line that replays it.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use leofs_engine::Hlc;

use super::antientropy::{Pass, PassStep, RangeHashes, range_of};
use super::coordinator::{
    Condition, ReadAnswer, ReadAsk, ReadProgress, ReadRound, WriteAnswer, WriteProgress, WriteRound,
};
use super::hints::{Hint, HintQueue};
use super::{
    Version, WriteDecision, client_write_age_max_us, client_write_too_old, decide_write,
    watermark_lag_us,
};

const NODES: usize = 5;
const PARTITIONS: usize = 4;
const N: usize = 3;
const W: usize = 2;
const R: usize = 2;
const D: usize = 2;
const KEYS: u8 = 8;
const RANGES: u32 = 4;
/// The cluster's clock bound; every node is off by at most half of it.
const MAX_CLOCK_OFFSET_US: u64 = 20_000;
const ROUND_DEADLINE_US: u64 = 30_000;
/// When a read round still waiting hedges (under two network delays: some rounds hedge
/// while their answers are on the way).
const HEDGE_AFTER_US: u64 = 5_000;
const NET_DELAY_MAX_US: u64 = 4_000;
const SYNC_EVERY_US: u64 = 1_500;
const HINT_REPLAY_EVERY_US: u64 = 5_000;
const AE_EVERY_US: u64 = 40_000;
const FAULTY_US: u64 = 1_500_000;
const DRAIN_US: u64 = 1_000_000;
/// Once faults stop, the reads that must all answer start after this (twice a suspicion's
/// length) and within as long again.
const HEALTHY_READS_AFTER_US: u64 = 100_000;
const SETTLE_US: u64 = 3_000_000;
const OPS: usize = 220;
/// Keys only conditional creators write.
const CREATE_KEYS: std::ops::Range<Key> = 100..103;
const HINT_CAP_BYTES: u64 = 1 << 20;
/// What one hint costs in its queue.
const HINT_BYTES: u64 = 64;
const RESTAMPS_MAX: u32 = 3;
/// A client write stamped longer ago than this by a replica's clock is refused there: its
/// round is over, whatever the clocks.
const CLIENT_WRITE_AGE_MAX_US: u64 =
    client_write_age_max_us(ROUND_DEADLINE_US, MAX_CLOCK_OFFSET_US);
/// A pass's watermark lies this far behind its start.
const WATERMARK_LAG_US: u64 = watermark_lag_us(ROUND_DEADLINE_US, MAX_CLOCK_OFFSET_US);

type Node = usize;
type Key = u8;
type Value = u32;

/// A bug planted on purpose: the simulation must catch each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bug {
    /// The coordinator acknowledges a write after W − 1 stores.
    AckAtWMinusOne,
    /// A replica holding a hint drops it instead of replaying it.
    DropHint,
    /// Replicas drop tombstones by age, not at the repaired-at watermark.
    TombstoneDroppedEarly,
    /// Read repair and anti-entropy stamp what they copy with a new HLC.
    RepairRestamps,
    /// A conditional create is decided by whichever replica the coordinator picks, not by the
    /// partition's serializing replica.
    UnserializedCreate,
}

/// splitmix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Why a write travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Client,
    Hint,
    Repair,
}

#[derive(Clone, Debug)]
enum Msg {
    Write {
        round: u64,
        key: Key,
        version: Version<Value>,
        kind: Kind,
    },
    Written {
        round: u64,
        answer: WriteAnswer,
    },
    Read {
        round: u64,
        key: Key,
        ask: ReadAsk,
    },
    ReadDone {
        round: u64,
        answer: ReadAnswer<Value>,
    },
    StoreHint {
        target: Node,
        key: Key,
        version: Version<Value>,
    },
    HashesAsk {
        pass: u64,
        partition: usize,
    },
    Hashes {
        pass: u64,
        hashes: RangeHashes,
        watermark: Option<Hlc>,
    },
    EntriesAsk {
        pass: u64,
        partition: usize,
        ranges: Vec<u32>,
    },
    Entries {
        pass: u64,
        entries: Vec<(Key, Version<Value>)>,
    },
    Watermark {
        partition: usize,
        hlc: Hlc,
    },
    /// A conditional create (`If-None-Match: *`), sent to the partition's serializing replica.
    Create {
        op: usize,
        key: Key,
        value: Value,
    },
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: Node,
        to: Node,
        msg: Msg,
    },
    Op(usize),
    Deadline {
        node: Node,
        round: u64,
    },
    /// A read round still waiting asks other replicas as well (as a core does for replicas
    /// that answer nothing; here for every ask still unanswered).
    Hedge {
        node: Node,
        round: u64,
    },
    PassDeadline {
        node: Node,
        pass: u64,
    },
    HintTimeout {
        node: Node,
        target: Node,
        round: u64,
    },
    Sync(Node),
    ReplayHints(Node),
    AntiEntropy(usize),
    Crash(Node),
    Restart(Node),
    Isolate(Node),
    Heal(Node),
}

/// One queued event, ordered by time then by the order it was queued in.
struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A client operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Put(Value),
    Delete,
    Get,
    /// A read of one replica's answer (a bucket on plain R=1: it may be older than an
    /// acknowledged write, and is only checked to answer).
    GetOne,
    /// A put only if the key holds nothing.
    Create(Value),
}

#[derive(Clone, Debug)]
struct Op {
    key: Key,
    kind: OpKind,
    coordinator: Node,
    started_at: u64,
}

/// What became of a client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    /// A write or delete acknowledged at `at` with this stamp.
    Acked {
        hlc: Hlc,
        at: u64,
    },
    /// A read's answer (None: nothing or deleted).
    Read(Option<Version<Value>>),
    /// A conditional write whose condition did not hold.
    Refused,
    Failed,
}

/// A client's write or delete as its coordinator runs it.
#[derive(Clone, Copy, Debug)]
struct ClientWrite {
    op: usize,
    key: Key,
    /// None: a delete.
    value: Option<Value>,
    /// A conditional create this serializing replica runs (the key is locked).
    conditional: bool,
}

enum Round {
    Write {
        write: ClientWrite,
        version: Version<Value>,
        round: WriteRound<Node>,
        restamps: u32,
    },
    Read {
        op: usize,
        key: Key,
        round: ReadRound<Node, Value>,
        /// The value of the conditional create this read decides (at the serializer).
        create: Option<Value>,
    },
}

/// A pass of anti-entropy the node drives, and its partition.
struct DrivenPass {
    partition: usize,
    pass: Pass<Node, Key, Value>,
}

struct NodeState {
    up: bool,
    isolated: bool,
    skew_us: i64,
    last_hlc: Hlc,
    /// What the replica holds, synced or not.
    entries: BTreeMap<Key, Version<Value>>,
    /// What survives a crash (what reads and anti-entropy see).
    durable: BTreeMap<Key, Version<Value>>,
    /// Answers waiting for the next sync.
    unsynced_answers: Vec<(Node, Msg)>,
    unsynced_hints: Vec<(Node, Hint<Key, Value>)>,
    /// Durable: hint queues by target, and the repaired-at watermark of each partition.
    hints: BTreeMap<Node, HintQueue<Key, Value>>,
    hint_in_flight: HashSet<Node>,
    watermarks: BTreeMap<usize, Hlc>,
    /// Coordinator state (lost in a crash).
    rounds: HashMap<u64, Round>,
    passes: HashMap<u64, DrivenPass>,
    /// Peers that timed out recently, until when (the local failure detector).
    suspect: HashMap<Node, u64>,
    /// When each tombstone arrived (for the planted early drop).
    tombstone_arrivals: BTreeMap<Key, u64>,
    /// As a partition's serializing replica: keys with a conditional write running, and the
    /// ones waiting behind it (lost in a crash).
    serialized: HashMap<Key, std::collections::VecDeque<(usize, Value)>>,
}

impl NodeState {
    fn clock_us(&self, now: u64) -> u64 {
        now.saturating_add_signed(self.skew_us)
    }

    /// A stamp above every one issued or seen, and above `above`.
    fn stamp(&mut self, node: Node, now: u64, above: Option<Hlc>) -> Hlc {
        let floor = self.last_hlc.max(above.unwrap_or_default());
        let wall = self.clock_us(now);
        let next = if wall > floor.physical_us {
            Hlc {
                physical_us: wall,
                logical: 0,
                node_id: node as u32,
            }
        } else {
            Hlc {
                physical_us: floor.physical_us,
                logical: floor.logical + 1,
                node_id: node as u32,
            }
        };
        self.last_hlc = next;
        next
    }

    fn held(&self, key: Key) -> Option<&Version<Value>> {
        self.durable.get(&key)
    }
}

fn partition_of(key: Key) -> usize {
    key as usize % PARTITIONS
}

fn replicas_of(partition: usize) -> [Node; N] {
    [
        partition % NODES,
        (partition + 1) % NODES,
        (partition + 2) % NODES,
    ]
}

struct Sim {
    bug: Option<Bug>,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    nodes: Vec<NodeState>,
    ops: Vec<Op>,
    outcomes: Vec<Outcome>,
    /// Every (key, stamp, value) a coordinator sent, acknowledged or not.
    issued: HashSet<(Key, Hlc, Option<Value>)>,
    /// Every hint made durable: (holder, target, key, stamp).
    hints_stored: Vec<(Node, Node, Key, Hlc)>,
    next_id: u64,
    faults: bool,
    anti_entropy: bool,
    settling: bool,
}

impl Sim {
    fn new(seed: u64, bug: Option<Bug>) -> Self {
        let mut rng = Rng(seed);
        let half = (MAX_CLOCK_OFFSET_US / 2) as i64;
        let nodes = (0..NODES)
            .map(|_| NodeState {
                up: true,
                isolated: false,
                skew_us: rng.below(2 * half as u64 + 1) as i64 - half,
                last_hlc: Hlc::default(),
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
                unsynced_answers: Vec::new(),
                unsynced_hints: Vec::new(),
                hints: BTreeMap::new(),
                hint_in_flight: HashSet::new(),
                watermarks: BTreeMap::new(),
                rounds: HashMap::new(),
                passes: HashMap::new(),
                suspect: HashMap::new(),
                tombstone_arrivals: BTreeMap::new(),
                serialized: HashMap::new(),
            })
            .collect();
        Self {
            bug,
            rng,
            now: 1_000_000_000,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            ops: Vec::new(),
            outcomes: Vec::new(),
            issued: HashSet::new(),
            hints_stored: Vec::new(),
            next_id: 1,
            faults: true,
            anti_entropy: true,
            settling: false,
        }
    }

    fn at(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at: self.now + delay,
            seq: self.seq,
            event,
        });
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send(&mut self, from: Node, to: Node, msg: Msg) {
        if self.faults && self.rng.chance(20) {
            return;
        }
        let copies = if self.faults && self.rng.chance(20) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 50 + self.rng.below(NET_DELAY_MAX_US);
            self.at(
                delay,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn believed_up(&self, node: Node, peer: Node) -> bool {
        self.nodes[node]
            .suspect
            .get(&peer)
            .is_none_or(|until| *until <= self.now)
    }

    /// The whole run; the violations found (empty: the run holds).
    fn run(&mut self) -> Vec<String> {
        let start = self.now;
        for node in 0..NODES {
            let (sync, replay) = (
                self.rng.below(SYNC_EVERY_US),
                self.rng.below(HINT_REPLAY_EVERY_US),
            );
            self.at(sync, Event::Sync(node));
            self.at(replay, Event::ReplayHints(node));
        }
        for partition in 0..PARTITIONS {
            let first = self.rng.below(AE_EVERY_US);
            self.at(first, Event::AntiEntropy(partition));
        }
        for i in 0..OPS {
            let key = self.rng.below(u64::from(KEYS)) as u8;
            let kind = match self.rng.below(100) {
                0..=54 => OpKind::Put(i as Value),
                55..=69 => OpKind::Delete,
                _ => OpKind::Get,
            };
            let at = self.rng.below(FAULTY_US);
            let coordinator = self.rng.below(NODES as u64) as usize;
            self.schedule_op(key, kind, coordinator, at);
        }
        // Concurrent conditional creators of keys nobody else writes.
        for key in CREATE_KEYS {
            let at = self.rng.below(FAULTY_US);
            for _ in 0..3 + self.rng.below(4) {
                let value = self.ops.len() as Value;
                let coordinator = self.rng.below(NODES as u64) as usize;
                let jitter = self.rng.below(10_000);
                self.schedule_op(key, OpKind::Create(value), coordinator, at + jitter);
            }
        }
        for _ in 0..4 {
            let node = self.rng.below(NODES as u64) as usize;
            let at = self.rng.below(FAULTY_US);
            let down = 20_000 + self.rng.below(200_000);
            self.at(at, Event::Crash(node));
            self.at(at + down, Event::Restart(node));
        }
        for _ in 0..3 {
            let node = self.rng.below(NODES as u64) as usize;
            let at = self.rng.below(FAULTY_US);
            self.at(at, Event::Isolate(node));
            let heal = at + 30_000 + self.rng.below(250_000);
            self.at(heal, Event::Heal(node));
        }
        self.run_until(start + FAULTY_US);
        // Faults stop: every node up and reachable, nothing dropped.
        self.faults = false;
        for node in 0..NODES {
            self.nodes[node].isolated = false;
            if !self.nodes[node].up {
                self.restart(node);
            }
        }
        self.anti_entropy = false;
        // Reads of every key once the nodes' suspicions have expired, while the replicas
        // still differ (anti-entropy is off): with every replica up and the network sound,
        // each must answer.
        let healthy_reads = self.ops.len()..self.ops.len() + 2 * usize::from(KEYS);
        for (key, kind) in (0..KEYS).flat_map(|k| [(k, OpKind::Get), (k, OpKind::GetOne)]) {
            let coordinator = self.rng.below(NODES as u64) as usize;
            let at = HEALTHY_READS_AFTER_US + self.rng.below(HEALTHY_READS_AFTER_US);
            self.schedule_op(key, kind, coordinator, at);
        }
        self.run_until(start + FAULTY_US + DRAIN_US);
        let mut violations = self.check_hints_delivered();
        for i in healthy_reads {
            if !matches!(self.outcomes[i], Outcome::Read(_)) {
                violations.push(format!(
                    "read {i} of key {} failed with every replica up and the network sound: {:?}",
                    self.ops[i].key, self.outcomes[i]
                ));
            }
        }
        self.anti_entropy = true;
        self.run_until(start + FAULTY_US + DRAIN_US + SETTLE_US);
        // No more ticks: what is in flight lands, then the state is compared.
        self.settling = true;
        self.run_until(u64::MAX);
        violations.extend(self.check_final());
        violations
    }

    /// A client operation started by `coordinator` `at` µs from now.
    fn schedule_op(&mut self, key: Key, kind: OpKind, coordinator: Node, at: u64) {
        let i = self.ops.len();
        self.ops.push(Op {
            key,
            kind,
            coordinator,
            started_at: 0,
        });
        self.outcomes.push(Outcome::Pending);
        self.at(at, Event::Op(i));
    }

    fn run_until(&mut self, until: u64) {
        while let Some(next) = self.queue.peek() {
            if next.at > until {
                break;
            }
            let Some(Queued { at, event, .. }) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.handle(event);
        }
        if until != u64::MAX {
            self.now = until;
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, msg } => {
                let cut = self.nodes[from].isolated || self.nodes[to].isolated;
                if self.nodes[to].up && !cut {
                    self.deliver(from, to, msg);
                }
            }
            Event::Op(i) => self.start_op(i),
            Event::Deadline { node, round } => self.deadline(node, round),
            Event::Hedge { node, round } => {
                if let Some(Round::Read { round: read, .. }) =
                    self.nodes[node].rounds.get_mut(&round)
                {
                    let progress = read.hedge(|_| true);
                    self.read_progress(node, round, progress);
                }
            }
            Event::PassDeadline { node, pass } => self.drive_pass(node, pass, Pass::timed_out),
            Event::HintTimeout {
                node,
                target,
                round,
            } => {
                let replaying = self.nodes[node].hints.get(&target).and_then(|q| q.next());
                if replaying.is_some_and(|h| hint_round(h) == round) {
                    self.nodes[node].hint_in_flight.remove(&target);
                }
            }
            Event::Sync(node) => {
                self.sync(node);
                if !self.settling {
                    self.at(SYNC_EVERY_US, Event::Sync(node));
                }
            }
            Event::ReplayHints(node) => {
                self.replay_hints(node);
                if !self.settling {
                    self.at(HINT_REPLAY_EVERY_US, Event::ReplayHints(node));
                }
            }
            Event::AntiEntropy(partition) => {
                if self.anti_entropy {
                    self.start_pass(partition);
                }
                if !self.settling {
                    self.at(AE_EVERY_US, Event::AntiEntropy(partition));
                }
            }
            Event::Crash(node) => self.crash(node),
            Event::Restart(node) => {
                if self.faults && !self.nodes[node].up {
                    self.restart(node);
                }
            }
            Event::Isolate(node) => {
                if self.faults {
                    self.nodes[node].isolated = true;
                }
            }
            Event::Heal(node) => self.nodes[node].isolated = false,
        }
    }

    fn crash(&mut self, node: Node) {
        if !self.faults {
            return;
        }
        let state = &mut self.nodes[node];
        state.up = false;
        state.entries = state.durable.clone();
        state.unsynced_answers.clear();
        state.unsynced_hints.clear();
        state.hint_in_flight.clear();
        state.suspect.clear();
        // The clock restarts from the newest stamp on disk.
        state.last_hlc = Hlc::default();
        let rounds: Vec<Round> = state.rounds.drain().map(|(_, r)| r).collect();
        state.passes.clear();
        let waiting: Vec<usize> = state
            .serialized
            .drain()
            .flat_map(|(_, queue)| queue.into_iter().map(|(op, _)| op))
            .collect();
        for op in waiting {
            if self.outcomes[op] == Outcome::Pending {
                self.outcomes[op] = Outcome::Failed;
            }
        }
        for round in rounds {
            let op = match round {
                Round::Write {
                    write: ClientWrite { op, .. },
                    ..
                }
                | Round::Read { op, .. } => op,
            };
            if self.outcomes[op] == Outcome::Pending {
                self.outcomes[op] = Outcome::Failed;
            }
        }
    }

    fn restart(&mut self, node: Node) {
        let state = &mut self.nodes[node];
        state.up = true;
        // The clock never goes back over a restart (the engine keeps its newest HLC).
        state.last_hlc = state
            .durable
            .values()
            .map(|v| v.hlc)
            .max()
            .unwrap_or_default()
            .max(state.last_hlc);
    }

    fn sync(&mut self, node: Node) {
        if !self.nodes[node].up {
            return;
        }
        let state = &mut self.nodes[node];
        state.durable = state.entries.clone();
        let hints: Vec<(Node, Hint<Key, Value>)> = state.unsynced_hints.drain(..).collect();
        for (target, hint) in hints {
            let (key, hlc) = (hint.key, hint.version.hlc);
            let queue = self.nodes[node]
                .hints
                .entry(target)
                .or_insert_with(|| HintQueue::new(HINT_CAP_BYTES));
            if queue.push(hint).is_ok() {
                self.hints_stored.push((node, target, key, hlc));
            }
        }
        let answers: Vec<(Node, Msg)> = self.nodes[node].unsynced_answers.drain(..).collect();
        for (to, msg) in answers {
            self.send(node, to, msg);
        }
        if self.bug == Some(Bug::TombstoneDroppedEarly) {
            let now = self.now;
            let state = &mut self.nodes[node];
            let old: Vec<Key> = state
                .tombstone_arrivals
                .iter()
                .filter(|(_, at)| now - **at > 60_000)
                .map(|(k, _)| *k)
                .collect();
            for key in old {
                state.tombstone_arrivals.remove(&key);
                if state.entries.get(&key).is_some_and(Version::is_tombstone) {
                    state.entries.remove(&key);
                    state.durable.remove(&key);
                }
            }
        }
    }

    fn start_op(&mut self, i: usize) {
        let Op {
            key,
            kind,
            coordinator,
            ..
        } = self.ops[i].clone();
        if !self.nodes[coordinator].up {
            self.outcomes[i] = Outcome::Failed;
            return;
        }
        self.ops[i].started_at = self.now;
        match kind {
            OpKind::Get => self.start_read(coordinator, i, key, None, R),
            OpKind::GetOne => self.start_read(coordinator, i, key, None, 1),
            OpKind::Put(value) => {
                let write = ClientWrite {
                    op: i,
                    key,
                    value: Some(value),
                    conditional: false,
                };
                self.start_write(coordinator, write, 0, None);
            }
            OpKind::Delete => {
                let write = ClientWrite {
                    op: i,
                    key,
                    value: None,
                    conditional: false,
                };
                self.start_write(coordinator, write, 0, None);
            }
            OpKind::Create(value) => {
                let replicas = replicas_of(partition_of(key));
                let serializer = if self.bug == Some(Bug::UnserializedCreate) {
                    replicas[self.rng.below(N as u64) as usize]
                } else {
                    replicas[0]
                };
                self.send(coordinator, serializer, Msg::Create { op: i, key, value });
            }
        }
    }

    /// The serializing replica takes a conditional create: it runs now, or after the one
    /// running on its key.
    fn serialize(&mut self, node: Node, op: usize, key: Key, value: Value) {
        if let Some(queue) = self.nodes[node].serialized.get_mut(&key) {
            queue.push_back((op, value));
            return;
        }
        self.nodes[node]
            .serialized
            .insert(key, std::collections::VecDeque::new());
        self.start_read(node, op, key, Some(value), R);
    }

    /// The conditional write on `key` is over: the next one waiting runs.
    fn unlock(&mut self, node: Node, key: Key) {
        let next = self.nodes[node]
            .serialized
            .get_mut(&key)
            .and_then(|queue| queue.pop_front());
        match next {
            Some((op, value)) => self.start_read(node, op, key, Some(value), R),
            None => {
                self.nodes[node].serialized.remove(&key);
            }
        }
    }

    /// Stamps `write` (above `above`, after `restamps` restamps) and sends it to the replicas.
    fn start_write(&mut self, node: Node, write: ClientWrite, restamps: u32, above: Option<Hlc>) {
        let ClientWrite {
            op,
            key,
            value,
            conditional,
        } = write;
        let hlc = self.nodes[node].stamp(node, self.now, above);
        let version = Version { hlc, value };
        self.issued.insert((key, hlc, value));
        let replicas = replicas_of(partition_of(key));
        let mut needed = if value.is_some() { W } else { D };
        if self.bug == Some(Bug::AckAtWMinusOne) {
            needed -= 1;
        }
        let started = WriteRound::start(&replicas, |r| self.believed_up(node, *r), needed);
        let Ok((round, targets)) = started else {
            self.outcomes[op] = Outcome::Failed;
            if conditional {
                self.unlock(node, key);
            }
            return;
        };
        let id = self.id();
        for target in targets {
            let msg = Msg::Write {
                round: id,
                key,
                version: version.clone(),
                kind: Kind::Client,
            };
            self.send(node, target, msg);
        }
        self.nodes[node].rounds.insert(
            id,
            Round::Write {
                write,
                version,
                round,
                restamps,
            },
        );
        self.at(ROUND_DEADLINE_US, Event::Deadline { node, round: id });
    }

    /// A read round of `r` replicas; for a conditional create (`create`), the one that
    /// decides it.
    fn start_read(&mut self, node: Node, op: usize, key: Key, create: Option<Value>, r: usize) {
        let replicas = replicas_of(partition_of(key));
        let started = ReadRound::start(&replicas, |n| self.believed_up(node, *n), r);
        let Ok((round, asks)) = started else {
            self.outcomes[op] = Outcome::Failed;
            if create.is_some() {
                self.unlock(node, key);
            }
            return;
        };
        let id = self.id();
        self.send_reads(node, id, key, asks);
        self.nodes[node].rounds.insert(
            id,
            Round::Read {
                op,
                key,
                round,
                create,
            },
        );
        self.at(HEDGE_AFTER_US, Event::Hedge { node, round: id });
        self.at(ROUND_DEADLINE_US, Event::Deadline { node, round: id });
    }

    /// Sends read round `id`'s asks for `key`.
    fn send_reads(&mut self, node: Node, id: u64, key: Key, asks: Vec<(Node, ReadAsk)>) {
        for (target, ask) in asks {
            let msg = Msg::Read {
                round: id,
                key,
                ask,
            };
            self.send(node, target, msg);
        }
    }

    fn deliver(&mut self, from: Node, to: Node, msg: Msg) {
        match msg {
            Msg::Write {
                round,
                key,
                version,
                kind,
            } => self.replica_write(from, to, round, key, version, kind),
            Msg::Written { round, answer } => self.write_answer(to, from, round, answer),
            Msg::Read { round, key, ask } => {
                let held = self.nodes[to].held(key).cloned();
                let answer = match ask {
                    ReadAsk::Body => ReadAnswer::Body(held),
                    ReadAsk::Digest => ReadAnswer::Digest(held.map(|v| v.hlc)),
                };
                self.send(to, from, Msg::ReadDone { round, answer });
            }
            Msg::ReadDone { round, answer } => self.read_answer(to, from, round, answer),
            Msg::StoreHint {
                target,
                key,
                version,
            } => {
                let hint = Hint {
                    key,
                    version,
                    made_at_us: self.nodes[to].clock_us(self.now),
                    bytes: HINT_BYTES,
                };
                self.nodes[to].unsynced_hints.push((target, hint));
            }
            Msg::HashesAsk { pass, partition } => {
                let hashes = RangeHashes::of(
                    self.nodes[to]
                        .durable
                        .iter()
                        .filter(|(k, _)| partition_of(**k) == partition)
                        .map(|(k, v)| (std::slice::from_ref(k), v.hlc, v.is_tombstone())),
                    RANGES,
                );
                let watermark = self.nodes[to].watermarks.get(&partition).copied();
                let msg = Msg::Hashes {
                    pass,
                    hashes,
                    watermark,
                };
                self.send(to, from, msg);
            }
            Msg::Hashes {
                pass,
                hashes,
                watermark,
            } => self.drive_pass(to, pass, |p| p.hashes(from, hashes, watermark)),
            Msg::EntriesAsk {
                pass,
                partition,
                ranges,
            } => {
                let entries = self.nodes[to]
                    .durable
                    .iter()
                    .filter(|(k, _)| {
                        partition_of(**k) == partition
                            && ranges.contains(&range_of(std::slice::from_ref(*k), RANGES))
                    })
                    .map(|(k, v)| (*k, v.clone()))
                    .collect();
                self.send(to, from, Msg::Entries { pass, entries });
            }
            Msg::Entries { pass, entries } => {
                self.drive_pass(to, pass, |p| p.entries(from, entries))
            }
            Msg::Watermark { partition, hlc } => self.take_watermark(to, partition, hlc),
            Msg::Create { op, key, value } => self.serialize(to, op, key, value),
        }
    }

    /// A replica takes a write, a hint or a repair: the newest version wins; nothing at or
    /// below the partition's watermark lands (a client write is told to restamp above it, a
    /// hint or repair is done); a client write whose round must be over is refused.
    fn replica_write(
        &mut self,
        from: Node,
        to: Node,
        round: u64,
        key: Key,
        version: Version<Value>,
        kind: Kind,
    ) {
        let watermark = self.nodes[to].watermarks.get(&partition_of(key)).copied();
        let state = &mut self.nodes[to];
        let now_us = state.clock_us(self.now);
        if kind == Kind::Client
            && client_write_too_old(version.hlc, now_us, CLIENT_WRITE_AGE_MAX_US)
        {
            let answer = WriteAnswer::Failed;
            self.send(to, from, Msg::Written { round, answer });
            return;
        }
        let current = state.entries.get(&key).map(|v| v.hlc);
        let answer = match decide_write(
            current.max(watermark),
            version.hlc,
            now_us,
            MAX_CLOCK_OFFSET_US,
        ) {
            WriteDecision::Apply => {
                if version.is_tombstone() {
                    state.tombstone_arrivals.insert(key, self.now);
                }
                // The replica's clock moves past what it stores.
                state.last_hlc = state.last_hlc.max(version.hlc);
                state.entries.insert(key, version);
                // Acknowledged once synced.
                let answer = WriteAnswer::Stored;
                state
                    .unsynced_answers
                    .push((from, Msg::Written { round, answer }));
                return;
            }
            WriteDecision::AlreadyHeld => {
                let answer = WriteAnswer::Stored;
                state
                    .unsynced_answers
                    .push((from, Msg::Written { round, answer }));
                return;
            }
            WriteDecision::KeepNewer(held) => WriteAnswer::Newer(held),
            WriteDecision::TooFarAhead { .. } => WriteAnswer::Failed,
        };
        self.send(to, from, Msg::Written { round, answer });
    }

    fn write_answer(&mut self, node: Node, from: Node, id: u64, answer: WriteAnswer) {
        // A hint's answer: it is delivered once stored or superseded there.
        let replaying = self.nodes[node].hints.get(&from).and_then(|q| q.next());
        if self.nodes[node].hint_in_flight.contains(&from)
            && replaying.is_some_and(|h| hint_round(h) == id)
        {
            self.nodes[node].hint_in_flight.remove(&from);
            if matches!(answer, WriteAnswer::Stored | WriteAnswer::Newer(_))
                && let Some(queue) = self.nodes[node].hints.get_mut(&from)
            {
                queue.delivered();
            }
            return;
        }
        let Some(Round::Write { round, .. }) = self.nodes[node].rounds.get_mut(&id) else {
            return;
        };
        let progress = round.answer(from, answer);
        self.write_progress(node, id, progress);
    }

    fn deadline(&mut self, node: Node, id: u64) {
        match self.nodes[node].rounds.get_mut(&id) {
            Some(Round::Write { round, .. }) => {
                let progress = round.timed_out();
                self.note_silent(node, id);
                self.write_progress(node, id, progress);
                self.finish_write(node, id);
            }
            Some(Round::Read { round, .. }) => {
                let progress = round.timed_out();
                let asks_more = matches!(progress, ReadProgress::Ask(_));
                self.read_progress(node, id, progress);
                if asks_more {
                    self.at(ROUND_DEADLINE_US, Event::Deadline { node, round: id });
                } else {
                    self.nodes[node].rounds.remove(&id);
                }
            }
            None => {}
        }
    }

    /// Replicas that never answered a round are suspected for a while (the local failure
    /// detector: the next requests skip them).
    fn note_silent(&mut self, node: Node, id: u64) {
        let silent: Vec<Node> = match self.nodes[node].rounds.get(&id) {
            Some(Round::Write { round, .. }) => round.missing(),
            _ => Vec::new(),
        };
        let until = self.now + 50_000;
        for peer in silent {
            self.nodes[node].suspect.insert(peer, until);
        }
    }

    fn write_progress(&mut self, node: Node, id: u64, progress: WriteProgress) {
        let Some(Round::Write {
            write,
            version,
            restamps,
            ..
        }) = self.nodes[node].rounds.get(&id)
        else {
            return;
        };
        let (write, hlc, restamps) = (*write, version.hlc, *restamps);
        let ClientWrite {
            op,
            key,
            conditional,
            ..
        } = write;
        match progress {
            WriteProgress::Pending => {}
            WriteProgress::Acknowledged => {
                if self.outcomes[op] == Outcome::Pending {
                    self.outcomes[op] = Outcome::Acked { hlc, at: self.now };
                }
            }
            WriteProgress::Restamp { above } => {
                self.nodes[node].rounds.remove(&id);
                if self.outcomes[op] == Outcome::Pending && restamps < RESTAMPS_MAX {
                    self.start_write(node, write, restamps + 1, Some(above));
                } else {
                    if self.outcomes[op] == Outcome::Pending {
                        self.outcomes[op] = Outcome::Failed;
                    }
                    if conditional {
                        self.unlock(node, key);
                    }
                }
            }
            WriteProgress::Failed => {
                if self.outcomes[op] == Outcome::Pending {
                    self.outcomes[op] = Outcome::Failed;
                }
            }
        }
    }

    /// The round is over: replicas that did not store an acknowledged write get hints, kept
    /// by a replica that stored it.
    fn finish_write(&mut self, node: Node, id: u64) {
        let Some(Round::Write {
            write:
                ClientWrite {
                    op,
                    key,
                    conditional,
                    ..
                },
            version,
            round,
            ..
        }) = self.nodes[node].rounds.remove(&id)
        else {
            return;
        };
        if conditional {
            self.unlock(node, key);
        }
        if !matches!(self.outcomes[op], Outcome::Acked { .. }) {
            return;
        }
        let Some(&holder) = round.stored().first() else {
            return;
        };
        for target in round.missing() {
            let msg = Msg::StoreHint {
                target,
                key,
                version: version.clone(),
            };
            self.send(node, holder, msg);
        }
    }

    fn read_answer(&mut self, node: Node, from: Node, id: u64, answer: ReadAnswer<Value>) {
        let Some(Round::Read { round, .. }) = self.nodes[node].rounds.get_mut(&id) else {
            return;
        };
        let progress = round.answer(from, answer);
        self.read_progress(node, id, progress);
    }

    fn read_progress(&mut self, node: Node, id: u64, progress: ReadProgress<Node, Value>) {
        let Some(Round::Read {
            op, key, create, ..
        }) = self.nodes[node].rounds.get(&id)
        else {
            return;
        };
        let (op, key, create) = (*op, *key, *create);
        match progress {
            ReadProgress::Pending => {}
            ReadProgress::Ask(asks) => {
                self.send_reads(node, id, key, asks);
            }
            ReadProgress::Done { version, stale } => {
                self.nodes[node].rounds.remove(&id);
                match create {
                    // The serializer decides a conditional create on the newest version.
                    Some(value) if Condition::Absent.holds(version.as_ref()) => {
                        let above = version.as_ref().map(|v| v.hlc);
                        let write = ClientWrite {
                            op,
                            key,
                            value: Some(value),
                            conditional: true,
                        };
                        self.start_write(node, write, 0, above);
                    }
                    Some(_) => {
                        self.outcomes[op] = Outcome::Refused;
                        self.unlock(node, key);
                    }
                    None if self.outcomes[op] == Outcome::Pending => {
                        self.outcomes[op] = Outcome::Read(version.clone());
                    }
                    None => {}
                }
                if let Some(version) = version {
                    let version = self.repaired(node, version);
                    for target in stale {
                        let msg = Msg::Write {
                            round: 0,
                            key,
                            version: version.clone(),
                            kind: Kind::Repair,
                        };
                        self.send(node, target, msg);
                    }
                }
            }
            ReadProgress::Failed => {
                self.nodes[node].rounds.remove(&id);
                if self.outcomes[op] == Outcome::Pending {
                    self.outcomes[op] = Outcome::Failed;
                }
                if create.is_some() {
                    self.unlock(node, key);
                }
            }
        }
    }

    /// What a repair sends: the version as stamped (restamped only by the planted bug).
    fn repaired(&mut self, node: Node, version: Version<Value>) -> Version<Value> {
        if self.bug == Some(Bug::RepairRestamps) {
            let hlc = self.nodes[node].stamp(node, self.now, Some(version.hlc));
            return Version {
                hlc,
                value: version.value,
            };
        }
        version
    }

    fn replay_hints(&mut self, node: Node) {
        if !self.nodes[node].up {
            return;
        }
        let targets: Vec<Node> = self.nodes[node].hints.keys().copied().collect();
        for target in targets {
            if self.nodes[node].hint_in_flight.contains(&target) {
                continue;
            }
            let Some(hint) = self.nodes[node]
                .hints
                .get(&target)
                .and_then(|q| q.next())
                .cloned()
            else {
                continue;
            };
            if self.bug == Some(Bug::DropHint) && self.rng.chance(300) {
                if let Some(queue) = self.nodes[node].hints.get_mut(&target) {
                    queue.delivered();
                }
                continue;
            }
            let msg = Msg::Write {
                round: hint_round(&hint),
                key: hint.key,
                version: hint.version.clone(),
                kind: Kind::Hint,
            };
            self.nodes[node].hint_in_flight.insert(target);
            self.send(node, target, msg);
            // An unanswered replay is tried again later.
            let round = hint_round(&hint);
            self.at(
                ROUND_DEADLINE_US,
                Event::HintTimeout {
                    node,
                    target,
                    round,
                },
            );
        }
    }

    fn start_pass(&mut self, partition: usize) {
        let replicas = replicas_of(partition);
        let driver = replicas[self.rng.below(N as u64) as usize];
        if !self.nodes[driver].up {
            return;
        }
        let id = self.id();
        let started = self.nodes[driver].stamp(driver, self.now, None);
        let pass = Pass::start(N, started, WATERMARK_LAG_US);
        self.nodes[driver]
            .passes
            .insert(id, DrivenPass { partition, pass });
        for replica in replicas {
            let msg = Msg::HashesAsk {
                pass: id,
                partition,
            };
            self.send(driver, replica, msg);
        }
        self.at(
            ROUND_DEADLINE_US,
            Event::PassDeadline {
                node: driver,
                pass: id,
            },
        );
    }

    /// Feeds the pass `id` that `node` drives and does what it asks.
    fn drive_pass(
        &mut self,
        node: Node,
        id: u64,
        feed: impl FnOnce(&mut Pass<Node, Key, Value>) -> PassStep<Node, Key, Value>,
    ) {
        let Some(driven) = self.nodes[node].passes.get_mut(&id) else {
            return;
        };
        let partition = driven.partition;
        match feed(&mut driven.pass) {
            PassStep::Pending => return,
            PassStep::Watermark { hlc, to } => {
                for target in to {
                    self.send(node, target, Msg::Watermark { partition, hlc });
                }
            }
            PassStep::AskEntries { ranges, from } => {
                for target in from {
                    let msg = Msg::EntriesAsk {
                        pass: id,
                        partition,
                        ranges: ranges.clone(),
                    };
                    self.send(node, target, msg);
                }
                let pass = id;
                self.at(ROUND_DEADLINE_US, Event::PassDeadline { node, pass });
                return;
            }
            PassStep::Push(pushes) => {
                for (target, entries) in pushes {
                    for (key, version) in entries {
                        let version = self.repaired(node, version);
                        let msg = Msg::Write {
                            round: 0,
                            key,
                            version,
                            kind: Kind::Repair,
                        };
                        self.send(node, target, msg);
                    }
                }
            }
            PassStep::Done => {}
        }
        self.nodes[node].passes.remove(&id);
    }

    /// A replica takes a partition's watermark: the tombstones at or below it go (all N
    /// replicas hold them), and nothing at or below it lands from now on.
    fn take_watermark(&mut self, node: Node, partition: usize, hlc: Hlc) {
        let state = &mut self.nodes[node];
        let goes = |key: &Key, version: &Version<Value>| {
            partition_of(*key) == partition && version.is_tombstone() && version.hlc <= hlc
        };
        state.entries.retain(|k, v| !goes(k, v));
        state.durable.retain(|k, v| !goes(k, v));
        let mark = state.watermarks.entry(partition).or_default();
        *mark = (*mark).max(hlc);
    }

    /// Every hint made durable reached its target (anti-entropy is off meanwhile).
    fn check_hints_delivered(&self) -> Vec<String> {
        let mut out = Vec::new();
        for &(holder, target, key, hlc) in &self.hints_stored {
            let there = self.nodes[target].held(key).map(|v| v.hlc);
            let mark = self.nodes[target]
                .watermarks
                .get(&partition_of(key))
                .copied();
            if there.max(mark) < Some(hlc) {
                out.push(format!(
                    "a hint from node {holder} for node {target} (key {key}, {hlc:?}) never reached it"
                ));
            }
        }
        out
    }

    fn check_final(&self) -> Vec<String> {
        let mut out = Vec::new();
        for partition in 0..PARTITIONS {
            let replicas = replicas_of(partition);
            let view = |n: Node| -> Vec<(Key, Version<Value>)> {
                self.nodes[n]
                    .durable
                    .iter()
                    .filter(|(k, _)| partition_of(**k) == partition)
                    .map(|(k, v)| (*k, v.clone()))
                    .collect()
            };
            let first = view(replicas[0]);
            for &other in &replicas[1..] {
                if view(other) != first {
                    out.push(format!(
                        "partition {partition}: replicas {} and {other} did not converge: {:?} against {:?}",
                        replicas[0],
                        first,
                        view(other)
                    ));
                }
            }
        }
        for key in (0..KEYS).chain(CREATE_KEYS) {
            let replica = replicas_of(partition_of(key))[0];
            let last = self.nodes[replica].held(key);
            if let Some(version) = last
                && !self.issued.contains(&(key, version.hlc, version.value))
            {
                out.push(format!(
                    "key {key}: holds {version:?}, which no client wrote as stamped"
                ));
            }
            let newest_acked = self.acked(key, u64::MAX);
            if let Some((hlc, kind)) = newest_acked
                && self.effective(key, last) < Some(hlc)
            {
                out.push(format!(
                    "key {key}: the acknowledged {kind:?} at {hlc:?} is lost (holds {last:?})"
                ));
            }
        }
        for key in CREATE_KEYS {
            let winners: Vec<usize> = (0..self.ops.len())
                .filter(|&i| {
                    self.ops[i].key == key && matches!(self.outcomes[i], Outcome::Acked { .. })
                })
                .collect();
            if winners.len() > 1 {
                out.push(format!(
                    "key {key}: {} conditional creators won ({winners:?})",
                    winners.len()
                ));
            }
            let held = self.nodes[replicas_of(partition_of(key))[0]].held(key);
            if let [winner] = winners[..]
                && held.and_then(|v| v.value) != Some(winner as Value)
            {
                out.push(format!(
                    "key {key}: creator {winner} won, but the key holds {held:?}"
                ));
            }
        }
        for (i, op) in self.ops.iter().enumerate() {
            let Outcome::Read(got) = &self.outcomes[i] else {
                continue;
            };
            if op.kind == OpKind::GetOne {
                continue;
            }
            if let Some((hlc, kind)) = self.acked(op.key, op.started_at)
                && self.effective(op.key, got.as_ref()) < Some(hlc)
            {
                out.push(format!(
                    "read {i} of key {} at {} returned {got:?}, older than the {kind:?} acknowledged at {hlc:?} before it began",
                    op.key, op.started_at
                ));
            }
        }
        out
    }

    /// The stamp of what a replica or a read shows for `key`: its version's, or for nothing
    /// at all (a tombstone collected at a watermark) the newest delete any client sent.
    fn effective(&self, key: Key, shown: Option<&Version<Value>>) -> Option<Hlc> {
        match shown {
            Some(version) => Some(version.hlc),
            None => self
                .issued
                .iter()
                .filter(|(k, _, value)| *k == key && value.is_none())
                .map(|(_, hlc, _)| *hlc)
                .max(),
        }
    }

    /// The newest write or delete of `key` acknowledged before `before`.
    fn acked(&self, key: Key, before: u64) -> Option<(Hlc, OpKind)> {
        self.ops
            .iter()
            .zip(&self.outcomes)
            .filter(|(op, _)| op.key == key)
            .filter_map(|(op, outcome)| match outcome {
                Outcome::Acked { hlc, at } if *at < before => Some((*hlc, op.kind)),
                _ => None,
            })
            .max_by_key(|(hlc, _)| *hlc)
    }
}

/// A hint's replay is matched to its answer by a round id made from its key and stamp (the
/// top bit keeps it apart from the coordinators' round ids).
fn hint_round(hint: &Hint<Key, Value>) -> u64 {
    let hlc = hint.version.hlc;
    let mut bytes = vec![hint.key];
    bytes.extend_from_slice(&hlc.physical_us.to_le_bytes());
    bytes.extend_from_slice(&hlc.logical.to_le_bytes());
    bytes.extend_from_slice(&hlc.node_id.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes) | 1 << 63
}

/// Runs `seeds` seeds with `bug` planted; the first failing seed and what it broke.
fn first_failure(seeds: std::ops::Range<u64>, bug: Option<Bug>) -> Option<(u64, Vec<String>)> {
    seeds.into_iter().find_map(|seed| {
        let violations = Sim::new(seed, bug).run();
        (!violations.is_empty()).then_some((seed, violations))
    })
}

/// Seeds from `LEOFS_SIM_SEED` (one seed, to replay) or the range given.
fn seeds(default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    match std::env::var("LEOFS_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => seed..seed + 1,
        None => default,
    }
}

fn assert_holds(range: std::ops::Range<u64>) {
    if let Some((seed, violations)) = first_failure(seeds(range), None) {
        panic!(
            "seed {seed} broke replication:\n  {}\nreplay: LEOFS_SIM_SEED={seed} cargo test -p leofs-shard replication::sim",
            violations.join("\n  ")
        );
    }
}

#[test]
fn replication_holds_under_faults_seeds_0_to_400() {
    assert_holds(0..400);
}

#[test]
fn replication_holds_under_faults_seeds_400_to_800() {
    assert_holds(400..800);
}

#[test]
fn replication_holds_under_faults_seeds_800_to_1200() {
    assert_holds(800..1200);
}

#[test]
fn replication_holds_under_faults_seeds_1200_to_1600() {
    assert_holds(1200..1600);
}

#[test]
fn replication_holds_under_faults_seeds_1600_to_2000() {
    assert_holds(1600..2000);
}

#[test]
fn planted_bugs_are_caught() {
    for bug in [
        Bug::AckAtWMinusOne,
        Bug::DropHint,
        Bug::TombstoneDroppedEarly,
        Bug::RepairRestamps,
        Bug::UnserializedCreate,
    ] {
        let caught = first_failure(0..400, Some(bug));
        let (seed, violations) =
            caught.unwrap_or_else(|| panic!("{bug:?} was not caught in 400 seeds"));
        eprintln!("{bug:?}: caught by seed {seed}: {}", violations[0]);
    }
}

#[test]
fn a_seed_replays_exactly() {
    let a = Sim::new(7, Some(Bug::RepairRestamps)).run();
    let b = Sim::new(7, Some(Bug::RepairRestamps)).run();
    assert_eq!(a, b);
}
