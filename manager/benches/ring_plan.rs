//! The ring planner at DESIGN §4's scale: 1,000 nodes × 16 shards over 4 zones, P = 65,536,
//! N = 3. Prints the time to plan from nothing, to add a node and to remove one, with the
//! replicas each change moves against the ideal (the share of the node added or removed) and
//! the largest vnode load against the ideal. Run with
//! `cargo bench -p leofs-manager --bench ring_plan`.

use std::time::Instant;

use leofs_manager::ring_plan::{PlanNode, RingPlan, plan};

const NODES: u32 = 1_000;
const SHARDS: u16 = 16;
const ZONES: u32 = 4;
const PARTITIONS: u32 = 65_536;
const REPLICAS: usize = 3;

fn node(id: u32) -> PlanNode {
    PlanNode {
        id,
        shards: SHARDS,
        capacity_bytes: 0,
        zone: format!("z{}", id % ZONES),
    }
}

fn report(what: &str, ring: &RingPlan, nodes: usize, seconds: f64) {
    let vnodes = nodes * usize::from(SHARDS);
    let ideal = ring.table.len() as f64 / vnodes as f64;
    let max = ring.loads().values().copied().max().unwrap_or(0);
    println!("{what}: {seconds:.3} s; largest vnode load {max} (ideal {ideal:.2})");
}

fn main() {
    let nodes: Vec<PlanNode> = (0..NODES).map(node).collect();
    let started = Instant::now();
    let first = plan(&nodes, PARTITIONS, REPLICAS, None).expect("plan");
    report(
        "plan 1000 nodes",
        &first,
        nodes.len(),
        started.elapsed().as_secs_f64(),
    );

    let mut grown = nodes.clone();
    grown.push(node(NODES));
    change("add one node", &first, &grown);
    let shrunk: Vec<PlanNode> = nodes.iter().filter(|n| n.id != 7).cloned().collect();
    change("remove one node", &first, &shrunk);
}

/// Plans `nodes` from `first` and reports the time and the replicas moved against the ideal
/// (the replicas of one node: those of the node added or removed).
fn change(what: &str, first: &RingPlan, nodes: &[PlanNode]) {
    let started = Instant::now();
    let after = plan(nodes, PARTITIONS, REPLICAS, Some(first)).expect("plan");
    report(what, &after, nodes.len(), started.elapsed().as_secs_f64());
    // One node's share of the larger of the two memberships.
    let ideal = first.table.len() as f64 / nodes.len().max(NODES as usize) as f64;
    println!(
        "  moved {} replicas (ideal {ideal:.0})",
        after.moves_from(first)
    );
}
