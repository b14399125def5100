//! The ring planner (DESIGN §4): membership in, ring out. A pure, deterministic function that
//! assigns each of P partitions N replica vnodes (node, shard):
//!
//! - **weighted**: a node's share of the replicas is proportional to its capacity (or to its
//!   shard count when some node reports no capacity), split evenly over its shards; each vnode
//!   gets its target rounded down or up, so no vnode holds more than ⌈target⌉ replicas unless
//!   the placement rules leave no other choice;
//! - **placement rules**: the replicas of a partition are on distinct nodes, and on distinct
//!   zones whenever there are at least N zones;
//! - **minimal movement**: given the previous ring, an assignment is kept whenever its vnode
//!   still exists, the rules still hold and the vnode is within its new quota; only the rest
//!   moves (roughly the share of the node added or removed). Which replicas a vnode over its
//!   quota sheds is spread over the partitions by a hash, so the moves are too;
//! - **deterministic**: the same membership and previous ring give the same ring, on every
//!   manager.
//!
//! Cost: O(P·N·log V) for V vnodes (a heap of vnodes by deficit); measured by
//! `cargo bench -p leofs-manager --bench ring_plan`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use xxhash_rust::xxh3::xxh3_64;

/// Most replicas of a partition.
pub const REPLICAS_MAX: usize = 8;
/// Most partitions of a ring (a power of two).
pub const PARTITIONS_MAX: u32 = 1 << 20;
/// Most (giver slot, place) pairs one rebalancing step examines for a trade through a third
/// vnode, bounding the planner's time when the placement rules leave a vnode short.
const TRADE_PAIRS_MAX: usize = 1 << 22;

/// A storage node as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlanNode {
    /// The node's id in the cluster.
    pub id: u32,
    /// Its shards (cores); each is a vnode.
    pub shards: u16,
    /// Bytes it can hold (0: unknown; the node is then weighted by its shards, and so is every
    /// other node).
    pub capacity_bytes: u64,
    /// Its zone (rack, room); empty for none.
    pub zone: String,
}

/// One replica's place: (node id, shard).
pub type PlanVnode = (u32, u16);

/// A ring: partition `p`'s replicas at `table[p·N .. (p+1)·N]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RingPlan {
    /// Partitions (a power of two).
    pub partitions: u32,
    /// Replicas per partition.
    pub replicas: usize,
    /// `partitions × replicas` vnodes, partition-major.
    pub table: Vec<PlanVnode>,
}

/// Why no ring can be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// P is not a power of two in range.
    #[error("partitions must be a power of two between 1 and {PARTITIONS_MAX}, got {0}")]
    Partitions(u32),
    /// N is out of range.
    #[error("replicas must be between 1 and {REPLICAS_MAX}, got {0}")]
    Replicas(usize),
    /// Fewer nodes than replicas.
    #[error(
        "{replicas} replicas need at least {replicas} storage nodes with shards, there are {nodes}"
    )]
    TooFewNodes {
        /// N.
        replicas: usize,
        /// Nodes with at least one shard.
        nodes: usize,
    },
    /// Two nodes with one id.
    #[error("node {0} is listed twice")]
    DuplicateNode(u32),
}

impl RingPlan {
    /// Replicas each vnode holds.
    pub fn loads(&self) -> BTreeMap<PlanVnode, u32> {
        let mut loads = BTreeMap::new();
        for vnode in &self.table {
            *loads.entry(*vnode).or_insert(0) += 1;
        }
        loads
    }

    /// Replica slots whose vnode differs from `other`'s (the replicas a change moves).
    pub fn moves_from(&self, other: &RingPlan) -> usize {
        if other.partitions != self.partitions || other.replicas != self.replicas {
            return self.table.len();
        }
        // A replica that stays on its vnode in another slot of the same partition does not move.
        self.table
            .chunks_exact(self.replicas)
            .zip(other.table.chunks_exact(other.replicas))
            .map(|(new, old)| new.iter().filter(|v| !old.contains(v)).count())
            .sum()
    }
}

/// A vnode being filled: how many more replicas it should take.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Candidate {
    deficit: i64,
    /// Spreads ties deterministically.
    tiebreak: u64,
    vnode: PlanVnode,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.deficit
            .cmp(&other.deficit)
            .then(self.tiebreak.cmp(&other.tiebreak))
            .then(other.vnode.cmp(&self.vnode))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn mix(a: u64, b: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    xxh3_64(&bytes)
}

fn vnode_key(vnode: PlanVnode) -> u64 {
    (u64::from(vnode.0) << 16) | u64::from(vnode.1)
}

/// Plans a ring of `partitions` × `replicas` over `nodes`, moving as little as possible from
/// `previous` (see the module docs).
pub fn plan(
    nodes: &[PlanNode],
    partitions: u32,
    replicas: usize,
    previous: Option<&RingPlan>,
) -> Result<RingPlan, PlanError> {
    if !partitions.is_power_of_two() || partitions > PARTITIONS_MAX {
        return Err(PlanError::Partitions(partitions));
    }
    if replicas == 0 || replicas > REPLICAS_MAX {
        return Err(PlanError::Replicas(replicas));
    }
    let mut seen = BTreeSet::new();
    for node in nodes {
        if !seen.insert(node.id) {
            return Err(PlanError::DuplicateNode(node.id));
        }
    }
    let nodes: Vec<&PlanNode> = {
        let mut live: Vec<&PlanNode> = nodes.iter().filter(|n| n.shards > 0).collect();
        live.sort_by_key(|n| n.id);
        live
    };
    if nodes.len() < replicas {
        return Err(PlanError::TooFewNodes {
            replicas,
            nodes: nodes.len(),
        });
    }
    let zone_of: HashMap<u32, &str> = nodes.iter().map(|n| (n.id, n.zone.as_str())).collect();
    let zones: BTreeSet<&str> = nodes.iter().map(|n| n.zone.as_str()).collect();
    let distinct_zones = zones.len() >= replicas;

    // Targets: each node's share of P·N by weight, split over its shards.
    let by_capacity = nodes.iter().all(|n| n.capacity_bytes > 0);
    let weight = |n: &PlanNode| -> f64 {
        if by_capacity {
            n.capacity_bytes as f64
        } else {
            f64::from(n.shards)
        }
    };
    let total_weight: f64 = nodes.iter().map(|n| weight(n)).sum();
    let slots = partitions as usize * replicas;
    let mut vnodes: Vec<(PlanVnode, f64)> = Vec::new();
    for node in &nodes {
        let per_shard = slots as f64 * weight(node) / total_weight / f64::from(node.shards);
        for shard in 0..node.shards {
            vnodes.push(((node.id, shard), per_shard));
        }
    }

    // Current loads from the previous ring (vnodes that still exist).
    let exists: BTreeSet<PlanVnode> = vnodes.iter().map(|(v, _)| *v).collect();
    let same_shape = previous.filter(|p| p.partitions == partitions && p.replicas == replicas);
    let mut current: HashMap<PlanVnode, i64> = HashMap::new();
    if let Some(previous) = same_shape {
        for vnode in &previous.table {
            if exists.contains(vnode) {
                *current.entry(*vnode).or_insert(0) += 1;
            }
        }
    }

    // Quotas: ⌊target⌋, plus one for the vnodes that hold the most now (so that a change
    // keeps the rounding where it was), until the quotas add up to P·N.
    let mut quota: HashMap<PlanVnode, i64> = vnodes
        .iter()
        .map(|(v, target)| (*v, target.floor() as i64))
        .collect();
    let assigned: i64 = quota.values().sum();
    let mut extra = slots as i64 - assigned;
    let mut by_claim: Vec<(PlanVnode, f64)> = vnodes.clone();
    by_claim.sort_by(|(a, ta), (b, tb)| {
        let held = |v: &PlanVnode| current.get(v).copied().unwrap_or(0);
        held(b)
            .cmp(&held(a))
            .then((tb - tb.floor()).total_cmp(&(ta - ta.floor())))
            .then(a.cmp(b))
    });
    for (vnode, _) in by_claim.iter().cycle() {
        if extra <= 0 {
            break;
        }
        if let Some(q) = quota.get_mut(vnode) {
            *q += 1;
            extra -= 1;
        }
    }

    // Keep every previous assignment that is still valid (its vnode exists, the rules hold);
    // moving replicas off vnodes over their share is the rebalancing's work, which picks the
    // replicas that can go where they are needed.
    let mut table: Vec<Option<PlanVnode>> = vec![None; slots];
    let mut load: HashMap<PlanVnode, i64> = HashMap::new();
    if let Some(previous) = same_shape {
        for (slot, &vnode) in previous.table.iter().enumerate() {
            let partition = slot / replicas;
            let set = &table[partition * replicas..(partition + 1) * replicas];
            if exists.contains(&vnode) && allowed(vnode, set, &zone_of, distinct_zones) {
                table[slot] = Some(vnode);
                *load.entry(vnode).or_insert(0) += 1;
            }
        }
    }

    // Fill the free slots, each with the allowed vnode that lacks the most.
    let mut heap: BinaryHeap<Candidate> = vnodes
        .iter()
        .map(|(vnode, _)| Candidate {
            deficit: quota[vnode] - load.get(vnode).copied().unwrap_or(0),
            tiebreak: mix(vnode_key(*vnode), 0),
            vnode: *vnode,
        })
        .collect();
    let mut skipped: Vec<Candidate> = Vec::new();
    for partition in 0..partitions as usize {
        for replica in 0..replicas {
            let slot = partition * replicas + replica;
            if table[slot].is_some() {
                continue;
            }
            let chosen = loop {
                let Some(candidate) = heap.pop() else {
                    unreachable!("at least N nodes: some vnode is always allowed");
                };
                let set = &table[partition * replicas..(partition + 1) * replicas];
                if allowed(candidate.vnode, set, &zone_of, distinct_zones) {
                    break candidate;
                }
                skipped.push(candidate);
            };
            table[slot] = Some(chosen.vnode);
            heap.push(Candidate {
                deficit: chosen.deficit - 1,
                tiebreak: mix(vnode_key(chosen.vnode), slot as u64),
                ..chosen
            });
            heap.extend(skipped.drain(..));
        }
    }
    let mut table: Vec<PlanVnode> = table
        .into_iter()
        .map(|vnode| vnode.unwrap_or_else(|| unreachable!("every slot was filled")))
        .collect();
    let floor: HashMap<PlanVnode, i64> = vnodes
        .iter()
        .map(|(vnode, target)| (*vnode, target.floor() as i64))
        .collect();
    rebalance(&mut table, replicas, &floor, &zone_of, distinct_zones);
    let plan = RingPlan {
        partitions,
        replicas,
        table,
    };
    debug_assert!(
        plan.table.chunks_exact(replicas).all(|set| {
            set.iter()
                .enumerate()
                .all(|(i, v)| set[..i].iter().all(|o| o.0 != v.0))
        }),
        "the replicas of a partition are on distinct nodes"
    );
    Ok(plan)
}

/// Brings every vnode to ⌊target⌋ or ⌊target⌋ + 1 replicas: after a membership change (kept
/// assignments leave the old vnodes over their new share and the new ones under it) and where
/// the greedy fill met the placement rules. A vnode under its floor takes a replica from one
/// over its floor, preferring those furthest over, choosing a replica the rules let it take;
/// when none fits directly, a third vnode trades places. Every step moves one replica (two
/// through a third vnode), so the moves are what the change needs.
fn rebalance(
    table: &mut [PlanVnode],
    replicas: usize,
    floor: &HashMap<PlanVnode, i64>,
    zone_of: &HashMap<u32, &str>,
    distinct_zones: bool,
) {
    // Vnodes by index, their floors, loads and slots.
    let mut ids: Vec<PlanVnode> = floor.keys().copied().collect();
    ids.sort_unstable();
    let index: HashMap<PlanVnode, usize> = ids.iter().enumerate().map(|(i, v)| (*v, i)).collect();
    let floors: Vec<i64> = ids.iter().map(|v| floor[v]).collect();
    let mut slots_of: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
    for (slot, vnode) in table.iter().enumerate() {
        slots_of[index[vnode]].push(slot);
    }
    let fits = |table: &[PlanVnode], vnode: PlanVnode, slot: usize| {
        let partition = slot / replicas;
        table[partition * replicas..(partition + 1) * replicas]
            .iter()
            .enumerate()
            .filter(|(i, _)| partition * replicas + i != slot)
            .all(|(_, other)| {
                other.0 != vnode.0
                    && (!distinct_zones || zone_of.get(&other.0) != zone_of.get(&vnode.0))
            })
    };
    let over = |slots_of: &[Vec<usize>], i: usize| slots_of[i].len() as i64 - floors[i];
    // Two rounds: first every vnode up to its floor (givers: above their floor), then vnodes
    // still more than one over their floor give to vnodes at their floor.
    for (taker_below, giver_above) in [(0, 0), (1, 1)] {
        let takers: Vec<usize> = (0..ids.len())
            .filter(|&i| over(&slots_of, i) < taker_below)
            .collect();
        for taker in takers {
            while over(&slots_of, taker) < taker_below {
                let mut givers: Vec<usize> = (0..ids.len())
                    .filter(|&i| over(&slots_of, i) > giver_above)
                    .collect();
                if givers.is_empty() {
                    return;
                }
                givers.sort_by_key(|&i| (std::cmp::Reverse(over(&slots_of, i)), i));
                // A direct move from the vnode furthest over its floor that the rules allow.
                let direct = givers.iter().find_map(|&giver| {
                    slots_of[giver]
                        .iter()
                        .position(|&slot| fits(table, ids[taker], slot))
                        .map(|at| (giver, at))
                });
                if let Some((giver, at)) = direct {
                    let slot = slots_of[giver].swap_remove(at);
                    table[slot] = ids[taker];
                    slots_of[taker].push(slot);
                    continue;
                }
                // Through a third vnode: it takes the giver's place, the taker takes its place.
                let places: Vec<usize> = (0..table.len())
                    .filter(|&other| fits(table, ids[taker], other))
                    .collect();
                let mut pairs = 0usize;
                let traded = givers.iter().find_map(|&giver| {
                    slots_of[giver].iter().enumerate().find_map(|(at, &slot)| {
                        places
                            .iter()
                            .copied()
                            .take_while(|_| {
                                pairs += 1;
                                pairs <= TRADE_PAIRS_MAX
                            })
                            .find(|&other| {
                                other / replicas != slot / replicas
                                    && table[other] != table[slot]
                                    && fits(table, table[other], slot)
                            })
                            .map(|other| (giver, at, other))
                    })
                });
                let Some((giver, at, other)) = traded else {
                    break; // The rules leave this vnode short: nothing it may take.
                };
                let slot = slots_of[giver].swap_remove(at);
                let third = index[&table[other]];
                let moved = slots_of[third]
                    .iter()
                    .position(|&s| s == other)
                    .unwrap_or_else(|| unreachable!("a vnode's slots are tracked"));
                slots_of[third][moved] = slot;
                table[slot] = table[other];
                table[other] = ids[taker];
                slots_of[taker].push(other);
            }
        }
    }
}

/// Whether `vnode` may join a partition whose replicas so far are `set`.
fn allowed(
    vnode: PlanVnode,
    set: &[Option<PlanVnode>],
    zone_of: &HashMap<u32, &str>,
    distinct_zones: bool,
) -> bool {
    set.iter().flatten().all(|other| {
        other.0 != vnode.0 && (!distinct_zones || zone_of.get(&other.0) != zone_of.get(&vnode.0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(nodes: u32, shards: u16, zones: u32) -> Vec<PlanNode> {
        (0..nodes)
            .map(|id| PlanNode {
                id,
                shards,
                capacity_bytes: 0,
                zone: format!("z{}", id % zones),
            })
            .collect()
    }

    fn ideal_per_vnode(plan: &RingPlan, nodes: &[PlanNode]) -> f64 {
        let vnodes: u32 = nodes.iter().map(|n| u32::from(n.shards)).sum();
        plan.table.len() as f64 / f64::from(vnodes)
    }

    fn check_rules(plan: &RingPlan, nodes: &[PlanNode]) {
        let zone: HashMap<u32, &str> = nodes.iter().map(|n| (n.id, n.zone.as_str())).collect();
        let zones: BTreeSet<&str> = zone.values().copied().collect();
        for set in plan.table.chunks_exact(plan.replicas) {
            for (i, v) in set.iter().enumerate() {
                for o in &set[..i] {
                    assert_ne!(o.0, v.0, "two replicas on one node: {set:?}");
                    if zones.len() >= plan.replicas {
                        assert_ne!(zone[&o.0], zone[&v.0], "two replicas in one zone: {set:?}");
                    }
                }
            }
        }
    }

    /// The largest load any vnode may carry: ⌈1.05 × ideal⌉ (loads are whole replicas).
    fn check_balance(plan: &RingPlan, nodes: &[PlanNode]) {
        let ideal = ideal_per_vnode(plan, nodes);
        let bound = (1.05 * ideal).ceil() as u32;
        let loads = plan.loads();
        let max = loads.values().copied().max().unwrap();
        assert!(
            max <= bound,
            "a vnode holds {max} replicas; ideal {ideal:.2}, bound {bound}"
        );
        let vnodes: usize = nodes.iter().map(|n| usize::from(n.shards)).sum();
        assert_eq!(loads.len(), vnodes, "every vnode holds replicas");
    }

    #[test]
    fn a_thousand_nodes_of_sixteen_shards_are_balanced_and_a_change_moves_little() {
        let (partitions, replicas) = (65_536, 3);
        let nodes = cluster(1_000, 16, 4);
        let first = plan(&nodes, partitions, replicas, None).unwrap();
        check_rules(&first, &nodes);
        check_balance(&first, &nodes);
        assert_eq!(
            first,
            plan(&nodes, partitions, replicas, None).unwrap(),
            "deterministic"
        );

        // One node more: it takes its share, and little else moves.
        let mut grown = nodes.clone();
        grown.push(PlanNode {
            id: 1_000,
            shards: 16,
            capacity_bytes: 0,
            zone: "z0".into(),
        });
        let after = plan(&grown, partitions, replicas, Some(&first)).unwrap();
        check_rules(&after, &grown);
        check_balance(&after, &grown);
        let ideal_moves = first.table.len() as f64 / grown.len() as f64;
        let moves = after.moves_from(&first);
        assert!(
            moves as f64 <= 1.1 * ideal_moves,
            "adding a node moved {moves} replicas; ideal {ideal_moves:.0}"
        );

        // One node less: only its replicas move.
        let shrunk: Vec<PlanNode> = nodes.iter().filter(|n| n.id != 7).cloned().collect();
        let after = plan(&shrunk, partitions, replicas, Some(&first)).unwrap();
        check_rules(&after, &shrunk);
        check_balance(&after, &shrunk);
        let ideal_moves = first.table.len() as f64 / nodes.len() as f64;
        let moves = after.moves_from(&first);
        assert!(
            moves as f64 <= 1.1 * ideal_moves,
            "removing a node moved {moves} replicas; ideal {ideal_moves:.0}"
        );
    }

    #[test]
    fn capacity_and_shards_weigh_and_zones_spread() {
        let nodes = vec![
            PlanNode {
                id: 1,
                shards: 2,
                capacity_bytes: 100,
                zone: "a".into(),
            },
            PlanNode {
                id: 2,
                shards: 2,
                capacity_bytes: 300,
                zone: "b".into(),
            },
            PlanNode {
                id: 3,
                shards: 4,
                capacity_bytes: 200,
                zone: "c".into(),
            },
            PlanNode {
                id: 4,
                shards: 1,
                capacity_bytes: 200,
                zone: "c".into(),
            },
        ];
        // Weights, without placement rules in the way (one replica).
        let ring = plan(&nodes, 1024, 1, None).unwrap();
        let per_node = |id: u32| ring.table.iter().filter(|v| v.0 == id).count() as f64;
        let total = ring.table.len() as f64;
        for (id, share) in [
            (1, 100.0 / 800.0),
            (2, 300.0 / 800.0),
            (3, 200.0 / 800.0),
            (4, 200.0 / 800.0),
        ] {
            let got = per_node(id) / total;
            assert!(
                (got - share).abs() < 0.01,
                "node {id}: {got:.3} of the replicas, wanted {share:.3}"
            );
        }
        // Two replicas over three zones: never two in one zone.
        let ring = plan(&nodes, 1024, 2, None).unwrap();
        check_rules(&ring, &nodes);
        // By shards when a capacity is unknown.
        let mut unknown = nodes.clone();
        unknown[0].capacity_bytes = 0;
        let ring = plan(&unknown, 1024, 1, None).unwrap();
        let per_node = |id: u32| ring.table.iter().filter(|v| v.0 == id).count();
        assert!(
            per_node(3).abs_diff(4 * per_node(4)) <= 4,
            "{} {}",
            per_node(3),
            per_node(4)
        );
    }

    #[test]
    fn a_single_node_and_impossible_plans() {
        let one = cluster(1, 4, 1);
        let ring = plan(&one, 1024, 1, None).unwrap();
        assert!(ring.loads().values().all(|&load| load == 256));
        assert_eq!(
            plan(&one, 1024, 2, None),
            Err(PlanError::TooFewNodes {
                replicas: 2,
                nodes: 1
            })
        );
        assert_eq!(plan(&one, 1000, 1, None), Err(PlanError::Partitions(1000)));
        assert_eq!(plan(&one, 1024, 0, None), Err(PlanError::Replicas(0)));
        let mut twice = cluster(2, 1, 1);
        twice[1].id = 0;
        assert_eq!(plan(&twice, 16, 1, None), Err(PlanError::DuplicateNode(0)));
        // Fewer zones than replicas: distinct nodes still.
        let two_zones = cluster(5, 2, 2);
        let ring = plan(&two_zones, 256, 3, None).unwrap();
        check_rules(&ring, &two_zones);
    }
}
