//! The ring view (DESIGN §4): which vnodes (node, shard) hold each partition, versioned by an
//! epoch and identified by a checksum of its canonical encoding. Every storage request is
//! routed through it. A single node is a ring of one node with one replica per partition, the
//! core its [`PartitionMap`] names: there is one code path, not a local one beside a cluster one.
//!
//! During a rebalance (DESIGN §4) the view also holds the table its partitions move to: a
//! partition whose replica set differs there is *moving*: its writes need their quorum in both
//! sets, its reads merge both, and anti-entropy fills its new replicas from the old ones.
//!
//! Must hold: P is a power of two; every partition has exactly `replicas` vnodes, on distinct
//! nodes, in both tables; the checksum is a pure function of the assignment (two views with
//! equal checksums route every partition alike).

use std::ops::Range;

use leofs_engine::PartitionId;

use crate::partition::MAX_PARTITIONS;
use crate::{PartitionMap, ShardError};

/// A node's id in the cluster (a single node is node 0).
pub type NodeId = u32;

/// The id of the node in a ring of one.
pub const SINGLE_NODE_ID: NodeId = 0;

/// The id of a node that holds no vnode (a gateway-only node), until the manager hands out
/// node ids.
pub const NO_VNODE_NODE_ID: NodeId = NodeId::MAX;

/// Node ids an HLC issuer id can name: 2^22, with [`crate::partition::MAX_CORES`] (1024)
/// cores each in the 32 bits of an issuer id.
pub const ISSUER_NODES: u32 = 1 << 22;

/// The HLC issuer id of core `core` of node `node`: unique in the cluster (node ids are handed
/// out by the manager, cores are below 1024), so no two cores ever stamp the same timestamp.
/// A node id past [`ISSUER_NODES`] wraps (the manager hands out ids from 0 upwards).
pub fn issuer_id(node: NodeId, core: usize) -> u32 {
    debug_assert!(core < crate::partition::MAX_CORES);
    (node % ISSUER_NODES) * crate::partition::MAX_CORES as u32 + core as u32
}

/// Most replicas of one partition.
pub const MAX_REPLICAS: usize = 8;

/// What a listing asks of each vnode: the ranges of partitions it is read for.
pub type ReadPlan = Vec<(Vnode, Vec<Range<PartitionId>>)>;

/// One shard (core) of one node: where a replica of a partition lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vnode {
    /// The node.
    pub node: NodeId,
    /// The shard (core) on that node.
    pub shard: u16,
}

/// A versioned assignment of partitions to replica vnodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingView {
    epoch: u64,
    checksum: u64,
    partitions: u32,
    /// `64 - log2(partitions)`: the right shift from a hash to its partition.
    shift: u32,
    replicas: usize,
    /// `partitions × replicas` vnodes: partition `p`'s replicas at `[p·N, (p+1)·N)`.
    table: Box<[Vnode]>,
    /// The listing plan, derived from `table` once ([`RingView::first_replica_ranges`]).
    listing_plan: Vec<(Vnode, Vec<Range<PartitionId>>)>,
    /// Every vnode of the table (and of the next one) once, in order.
    vnodes: Vec<Vnode>,
    /// During a rebalance: the table partitions move to (same P and N), else None.
    next: Option<Box<[Vnode]>>,
    /// Whether every running node routes by this epoch, as the managers saw in heartbeats.
    known_everywhere: bool,
    /// The recovery under way (`leofs-adm recover-node`): the node whose partitions are
    /// compared now, and the recovery's id.
    recovering: Option<(NodeId, u64)>,
    /// During a rebalance: how many old replicas of a moving partition a fill pass must hear
    /// (0: all of them).
    fill_quorum: usize,
}

impl RingView {
    /// A ring at `epoch` from its table (`partitions × replicas` vnodes, partition-major),
    /// checked: P a power of two ≤ [`MAX_PARTITIONS`], 1 ≤ N ≤ [`MAX_REPLICAS`], the replicas of
    /// a partition on distinct nodes.
    pub fn new(
        epoch: u64,
        partitions: u32,
        replicas: usize,
        table: Vec<Vnode>,
    ) -> Result<Self, ShardError> {
        if !partitions.is_power_of_two() || partitions > MAX_PARTITIONS {
            return Err(ShardError::Config(format!(
                "ring partitions must be a power of two between 1 and {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        if replicas == 0 || replicas > MAX_REPLICAS {
            return Err(ShardError::Config(format!(
                "ring replicas must be between 1 and {MAX_REPLICAS}, got {replicas}"
            )));
        }
        if table.len() != partitions as usize * replicas {
            return Err(ShardError::Config(format!(
                "ring table has {} vnodes, expected {partitions} partitions × {replicas} replicas",
                table.len()
            )));
        }
        check_distinct_nodes(&table, replicas)?;
        let mut ring = Self {
            epoch,
            checksum: 0,
            partitions,
            shift: 64 - partitions.trailing_zeros(),
            replicas,
            table: table.into_boxed_slice(),
            listing_plan: Vec::new(),
            vnodes: Vec::new(),
            next: None,
            known_everywhere: false,
            recovering: None,
            fill_quorum: 0,
        };
        ring.checksum = ring.compute_checksum();
        ring.listing_plan = ring.plan_listing();
        ring.vnodes = ring.collect_vnodes();
        Ok(ring)
    }

    /// This ring during a rebalance towards `next` (a table of the same P and N, checked like
    /// the ring's own); its checksum then covers both tables.
    pub fn moving_to(mut self, next: Vec<Vnode>) -> Result<Self, ShardError> {
        if next.len() != self.table.len() {
            return Err(ShardError::Config(format!(
                "the next ring's table has {} vnodes, expected {} partitions × {} replicas",
                next.len(),
                self.partitions,
                self.replicas
            )));
        }
        check_distinct_nodes(&next, self.replicas)?;
        self.next = Some(next.into_boxed_slice());
        self.checksum = self.compute_checksum();
        self.vnodes = self.collect_vnodes();
        Ok(self)
    }

    /// This ring, marked as routed by every running node (or not).
    pub fn known_everywhere_if(mut self, known: bool) -> Self {
        self.known_everywhere = known;
        self
    }

    /// This ring with the recovery under way (the node whose partitions are compared and
    /// repaired now, and the recovery's id), or none.
    pub fn recovering_if(mut self, recovering: Option<(NodeId, u64)>) -> Self {
        self.recovering = recovering;
        self
    }

    /// This ring with the number of old replicas a fill pass must hear (0: all of them).
    pub fn fill_quorum_if(mut self, quorum: usize) -> Self {
        self.fill_quorum = quorum;
        self
    }

    /// How many of a moving partition's `old` replicas a fill pass must hear: enough that
    /// every write acknowledged before the move (W of them, with the smallest W or D of the
    /// cluster and its buckets) is on one of those heard, as the managers computed it; all
    /// of them when not known.
    pub fn fill_quorum(&self, old: usize) -> usize {
        match self.fill_quorum {
            0 => old,
            quorum => quorum.min(old),
        }
    }

    /// The recovery under way: the node whose partitions are compared and repaired now, and
    /// the recovery's id.
    pub fn recovering(&self) -> Option<(NodeId, u64)> {
        self.recovering
    }

    /// Whether every running node routes by this epoch, as the managers saw in heartbeats:
    /// only then do a rebalance's fills count (no node still writes without the new
    /// replicas), and only then does a settled ring's former owner drop what it no longer
    /// holds.
    pub fn is_known_everywhere(&self) -> bool {
        self.known_everywhere
    }

    /// The table partitions move to during a rebalance (partition-major), else None.
    pub fn next_table(&self) -> Option<&[Vnode]> {
        self.next.as_deref()
    }

    /// Whether `other` routes and acts alike: the same epoch and assignment (by checksum),
    /// and the same managers' marks (known everywhere, recovery, fill quorum). Cheaper than
    /// `==`, which compares the tables.
    pub fn same_as(&self, other: &RingView) -> bool {
        self.epoch == other.epoch
            && self.checksum == other.checksum
            && self.known_everywhere == other.known_everywhere
            && self.recovering == other.recovering
            && self.fill_quorum == other.fill_quorum
    }

    /// Whether a rebalance is under way (the ring has a next table).
    pub fn is_moving(&self) -> bool {
        self.next.is_some()
    }

    /// The replica set `partition` moves to, when a rebalance moves it (its set differs in
    /// the next table), else None.
    pub fn next_route(&self, partition: PartitionId) -> Option<&[Vnode]> {
        let next = self.next.as_deref()?;
        let first = partition as usize * self.replicas;
        let now = self.table.get(first..first + self.replicas)?;
        let then = next.get(first..first + self.replicas)?;
        let same = then.iter().all(|v| now.contains(v));
        (!same).then_some(then)
    }

    /// Whether `vnode` holds `partition`: a replica of it now, or in the set it moves to.
    pub fn holds(&self, vnode: Vnode, partition: PartitionId) -> bool {
        self.route(partition).is_ok_and(|set| set.contains(&vnode))
            || self
                .next_route(partition)
                .is_some_and(|set| set.contains(&vnode))
    }

    /// Every vnode that holds `partition` now or will once it moves: the replicas in ring
    /// order, then those it moves to.
    pub fn holders(&self, partition: PartitionId) -> Result<Vec<Vnode>, ShardError> {
        let mut all = self.route(partition)?.to_vec();
        if let Some(next) = self.next_route(partition) {
            all.extend(
                next.iter()
                    .filter(|v| !all.contains(v))
                    .copied()
                    .collect::<Vec<_>>(),
            );
        }
        Ok(all)
    }

    fn collect_vnodes(&self) -> Vec<Vnode> {
        let mut vnodes: Vec<Vnode> = self.table.to_vec();
        vnodes.extend(self.next.iter().flat_map(|next| next.iter().copied()));
        vnodes.sort_unstable();
        vnodes.dedup();
        vnodes
    }

    /// The ring of one node: each partition's single replica is the core `map` names.
    pub fn single_node(node: NodeId, map: PartitionMap) -> Self {
        let table = (0..map.partitions())
            .map(|p| Vnode {
                node,
                // PartitionMap caps cores at MAX_CORES (1024), which fits u16.
                shard: map.owner_of(p) as u16,
            })
            .collect();
        Self::new(1, map.partitions(), 1, table)
            .expect("a partition map is a valid ring of one node")
    }

    /// The ring of a node that has none yet (the cluster is not started): epoch 0, one
    /// partition held by no node. Nothing is routed by it ([`ShardError::NoRing`]).
    pub fn unstarted() -> Self {
        let nowhere = Vnode {
            node: NO_VNODE_NODE_ID,
            shard: 0,
        };
        Self::new(0, 1, 1, vec![nowhere]).expect("one partition on one vnode is a valid ring")
    }

    /// Increments on every change of the assignment (0: [`RingView::unstarted`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// xxh3 of the canonical encoding of the assignment (P, N, the table).
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// Number of partitions P.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Replicas per partition N.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The partition of a hash: its top `log2 P` bits.
    pub fn partition_of(&self, hash: u64) -> PartitionId {
        // A shift of 64 (one partition) is not defined for `>>`: everything is partition 0.
        hash.checked_shr(self.shift).unwrap_or(0) as PartitionId
    }

    /// The replica vnodes of `partition`, in preference order.
    pub fn route(&self, partition: PartitionId) -> Result<&[Vnode], ShardError> {
        if self.epoch == 0 {
            return Err(ShardError::NoRing);
        }
        if partition >= self.partitions {
            return Err(ShardError::PartitionOutOfRange {
                partition,
                partitions: self.partitions,
            });
        }
        let first = partition as usize * self.replicas;
        Ok(&self.table[first..first + self.replicas])
    }

    /// The assignment: `partitions × replicas` vnodes, partition-major.
    pub fn table(&self) -> &[Vnode] {
        &self.table
    }

    /// Every vnode that holds some partition, once each, in order.
    pub fn vnodes(&self) -> &[Vnode] {
        &self.vnodes
    }

    /// Each vnode that is the first replica of some partition, with the ranges of partitions it
    /// is first for, in partition order: the plan of a listing (one replica per partition).
    pub fn first_replica_ranges(&self) -> &[(Vnode, Vec<Range<PartitionId>>)] {
        &self.listing_plan
    }

    /// How many partitions `vnode` is the first replica of (what a core reports it owns).
    pub fn partitions_first_on(&self, vnode: Vnode) -> u32 {
        self.listing_plan
            .iter()
            .filter(|(v, _)| *v == vnode)
            .flat_map(|(_, ranges)| ranges.iter().map(|r| r.end - r.start))
            .sum()
    }

    /// The plan of a replicated listing: each partition read from its first `r` replicas that
    /// are `up` (fewer if fewer are up), each vnode with the ranges of partitions it is read
    /// for, in vnode order; Err with the first partition none of whose replicas is up.
    pub fn read_plan_among(
        &self,
        r: usize,
        up: impl Fn(Vnode) -> bool,
    ) -> Result<ReadPlan, PartitionId> {
        let mut by_vnode: std::collections::BTreeMap<Vnode, Vec<Range<PartitionId>>> =
            std::collections::BTreeMap::new();
        for (partition, set) in self.table.chunks_exact(self.replicas).enumerate() {
            let partition = partition as PartitionId;
            let mut chosen = set.iter().copied().filter(|v| up(*v)).take(r).peekable();
            if chosen.peek().is_none() {
                return Err(partition);
            }
            for vnode in chosen {
                let ranges = by_vnode.entry(vnode).or_default();
                match ranges.last_mut() {
                    Some(last) if last.end == partition => last.end = partition + 1,
                    _ => ranges.push(partition..partition + 1),
                }
            }
        }
        Ok(by_vnode.into_iter().collect())
    }

    /// The plan of [`RingView::read_plan_among`] without the vnodes `without`, only if it
    /// reads every partition from as many replicas as the plan with them does (so a listing
    /// planned again around vnodes that answer nothing is no less complete); None otherwise.
    pub fn read_plan_without(
        &self,
        r: usize,
        up: impl Fn(Vnode) -> bool,
        without: &[Vnode],
    ) -> Option<ReadPlan> {
        let keeps_r = self.table.chunks_exact(self.replicas).all(|set| {
            let with = set.iter().filter(|v| up(**v)).take(r).count();
            let rest = set
                .iter()
                .filter(|v| up(**v) && !without.contains(v))
                .take(r)
                .count();
            rest == with
        });
        if !keeps_r {
            return None;
        }
        self.read_plan_among(r, |v| up(v) && !without.contains(&v))
            .ok()
    }

    fn plan_listing(&self) -> Vec<(Vnode, Vec<Range<PartitionId>>)> {
        let firsts: Vec<Vnode> = self.table.iter().step_by(self.replicas).copied().collect();
        group_runs(&firsts)
    }

    fn compute_checksum(&self) -> u64 {
        let table = self.table.iter().map(|v| (v.node, v.shard));
        match &self.next {
            None => leofs_wire::ring_checksum(self.partitions, self.replicas as u32, table),
            Some(next) => leofs_wire::moving_ring_checksum(
                self.partitions,
                self.replicas as u32,
                table,
                next.iter().map(|v| (v.node, v.shard)),
            ),
        }
    }
}

/// Refuses a table (partition-major, `replicas` per partition) with two replicas of one
/// partition on one node.
fn check_distinct_nodes(table: &[Vnode], replicas: usize) -> Result<(), ShardError> {
    for (partition, set) in table.chunks_exact(replicas).enumerate() {
        for (i, vnode) in set.iter().enumerate() {
            if set[..i].iter().any(|other| other.node == vnode.node) {
                return Err(ShardError::Config(format!(
                    "ring partition {partition} has two replicas on node {}",
                    vnode.node
                )));
            }
        }
    }
    Ok(())
}

/// Each vnode of `firsts` (the vnode listing partition `p` at `firsts[p]`) with the runs of
/// partitions it lists, in partition order.
fn group_runs(firsts: &[Vnode]) -> Vec<(Vnode, Vec<Range<PartitionId>>)> {
    let mut plan: Vec<(Vnode, Vec<Range<PartitionId>>)> = Vec::new();
    let mut start = 0;
    let partitions = firsts.len() as PartitionId;
    for partition in 1..=partitions {
        let vnode = firsts[start as usize];
        let ends = partition == partitions || firsts[partition as usize] != vnode;
        if !ends {
            continue;
        }
        let range = start..partition;
        match plan.iter_mut().find(|(v, _)| *v == vnode) {
            Some((_, ranges)) => ranges.push(range),
            None => plan.push((vnode, vec![range])),
        }
        start = partition;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vnode(node: NodeId, shard: u16) -> Vnode {
        Vnode { node, shard }
    }

    /// The listing plan as (vnode, [(start, end)]).
    fn spans(ring: &RingView) -> Vec<(Vnode, Vec<(u32, u32)>)> {
        ring.first_replica_ranges()
            .iter()
            .map(|(v, ranges)| (*v, ranges.iter().map(|r| (r.start, r.end)).collect()))
            .collect()
    }

    #[test]
    fn a_single_node_ring_routes_like_its_partition_map() {
        let map = PartitionMap::new(1024, 3).unwrap();
        let ring = RingView::single_node(SINGLE_NODE_ID, map);
        assert_eq!(
            (ring.epoch(), ring.partitions(), ring.replicas()),
            (1, 1024, 1)
        );
        for p in 0..1024 {
            assert_eq!(
                ring.route(p).unwrap(),
                &[vnode(SINGLE_NODE_ID, map.owner_of(p) as u16)]
            );
        }
        for hash in [0, 1 << 54, u64::MAX] {
            assert_eq!(ring.partition_of(hash), map.partition_of(hash));
        }
        assert!(matches!(
            ring.route(1024),
            Err(ShardError::PartitionOutOfRange { .. })
        ));
        assert_eq!(
            spans(&ring),
            vec![
                (vnode(0, 0), vec![(0, 342)]),
                (vnode(0, 1), vec![(342, 683)]),
                (vnode(0, 2), vec![(683, 1024)])
            ]
        );
    }

    #[test]
    fn issuer_ids_differ_for_every_node_and_core() {
        let mut seen = std::collections::HashSet::new();
        for node in [0, 1, 2, 1000, ISSUER_NODES - 1] {
            for core in [0, 1, 511, crate::partition::MAX_CORES - 1] {
                assert!(
                    seen.insert(issuer_id(node, core)),
                    "node {node} core {core}"
                );
            }
        }
    }

    #[test]
    fn the_checksum_follows_the_assignment_not_the_epoch() {
        let table = vec![vnode(1, 0), vnode(2, 0), vnode(2, 1), vnode(1, 1)];
        let a = RingView::new(1, 2, 2, table.clone()).unwrap();
        let b = RingView::new(7, 2, 2, table).unwrap();
        assert_eq!(a.checksum(), b.checksum());
        let c = RingView::new(
            8,
            2,
            2,
            vec![vnode(1, 0), vnode(2, 0), vnode(1, 1), vnode(2, 1)],
        )
        .unwrap();
        assert_ne!(a.checksum(), c.checksum());
        assert_eq!(c.route(1).unwrap(), &[vnode(1, 1), vnode(2, 1)]);
        // A vnode first for partitions that are not adjacent gets one range for each run.
        let d = RingView::new(
            1,
            4,
            1,
            vec![vnode(1, 0), vnode(1, 0), vnode(2, 0), vnode(1, 0)],
        )
        .unwrap();
        assert_eq!(
            spans(&d),
            vec![
                (vnode(1, 0), vec![(0, 2), (3, 4)]),
                (vnode(2, 0), vec![(2, 3)])
            ]
        );
    }

    #[test]
    fn a_replicated_listing_reads_r_replicas_up_of_each_partition() {
        let ring = RingView::new(
            1,
            4,
            2,
            vec![
                vnode(1, 0),
                vnode(2, 0),
                vnode(1, 0),
                vnode(3, 0),
                vnode(2, 0),
                vnode(3, 0),
                vnode(3, 0),
                vnode(1, 0),
            ],
        )
        .unwrap();
        let firsts = ring.read_plan_among(1, |_| true).unwrap();
        let mut expected = ring.first_replica_ranges().to_vec();
        expected.sort_by_key(|(v, _)| *v);
        assert_eq!(firsts, expected);
        let pairs = |plan: ReadPlan| -> Vec<(Vnode, Vec<(u32, u32)>)> {
            plan.into_iter()
                .map(|(v, ranges)| (v, ranges.iter().map(|r| (r.start, r.end)).collect()))
                .collect()
        };
        assert_eq!(
            pairs(ring.read_plan_among(2, |_| true).unwrap()),
            vec![
                (vnode(1, 0), vec![(0, 2), (3, 4)]),
                (vnode(2, 0), vec![(0, 1), (2, 3)]),
                (vnode(3, 0), vec![(1, 4)])
            ]
        );
        let without_1 = ring.read_plan_among(2, |v| v.node != 1).unwrap();
        assert_eq!(
            pairs(without_1),
            vec![
                (vnode(2, 0), vec![(0, 1), (2, 3)]),
                (vnode(3, 0), vec![(1, 4)])
            ]
        );
        // Nodes 2 and 3 both down: partition 2 has no replica left.
        assert_eq!(ring.read_plan_among(2, |v| v.node == 1), Err(2));
        // Around a vnode that answers nothing, only if every partition is still read from R:
        // with two replicas a partition and R=2 it never is; with R=1 it is, by the other.
        assert_eq!(ring.read_plan_without(2, |_| true, &[vnode(1, 0)]), None);
        assert_eq!(
            pairs(ring.read_plan_without(1, |_| true, &[vnode(1, 0)]).unwrap()),
            vec![
                (vnode(2, 0), vec![(0, 1), (2, 3)]),
                (vnode(3, 0), vec![(1, 2), (3, 4)])
            ]
        );
        // Node 1 already down: the plan without it reads what the plan with it reads.
        assert_eq!(
            ring.read_plan_without(2, |v| v.node != 1, &[vnode(1, 0)]),
            ring.read_plan_among(2, |v| v.node != 1).ok()
        );
    }

    #[test]
    fn a_moving_ring_routes_by_the_old_table_and_holds_by_both() {
        let old = vec![vnode(1, 0), vnode(2, 0), vnode(2, 0), vnode(3, 0)];
        let new = vec![vnode(2, 0), vnode(1, 0), vnode(2, 0), vnode(4, 0)];
        let settled = RingView::new(5, 2, 2, old.clone()).unwrap();
        let moving = RingView::new(5, 2, 2, old).unwrap().moving_to(new).unwrap();
        assert!(moving.is_moving() && !settled.is_moving());
        assert_ne!(moving.checksum(), settled.checksum());
        // Partition 0 keeps its set (in another order): it does not move.
        assert_eq!(moving.next_route(0), None);
        assert_eq!(moving.next_route(1), Some(&[vnode(2, 0), vnode(4, 0)][..]));
        assert_eq!(moving.route(1).unwrap(), &[vnode(2, 0), vnode(3, 0)]);
        assert_eq!(
            moving.holders(1).unwrap(),
            vec![vnode(2, 0), vnode(3, 0), vnode(4, 0)]
        );
        assert!(moving.holds(vnode(4, 0), 1) && moving.holds(vnode(3, 0), 1));
        assert!(!moving.holds(vnode(4, 0), 0) && !settled.holds(vnode(4, 0), 1));
        assert!(moving.vnodes().contains(&vnode(4, 0)));
        assert!(!moving.is_known_everywhere());
        assert!(
            moving
                .clone()
                .known_everywhere_if(true)
                .is_known_everywhere()
        );
        // A next table of another size, or with two replicas on a node, is refused.
        let bad = RingView::new(5, 2, 2, vec![vnode(1, 0); 4]);
        assert!(bad.is_err());
        let short = settled.clone().moving_to(vec![vnode(1, 0)]);
        assert!(short.is_err());
        let doubled = settled.moving_to(vec![vnode(1, 0), vnode(1, 1), vnode(2, 0), vnode(3, 0)]);
        assert!(doubled.is_err());
    }

    #[test]
    fn rejects_bad_rings() {
        assert!(RingView::new(1, 3, 1, vec![vnode(0, 0); 3]).is_err());
        assert!(RingView::new(1, 2, 0, vec![]).is_err());
        assert!(RingView::new(1, 2, 1, vec![vnode(0, 0)]).is_err());
        let same_node = vec![vnode(1, 0), vnode(1, 1), vnode(1, 0), vnode(2, 0)];
        assert!(RingView::new(1, 2, 2, same_node).is_err());
    }
}
