//! This node's clock offset from each storage node of the ring, measured directly (DESIGN §7:
//! the HLC bound holds between the node that stamps a write and the replicas that check it, so
//! each pair matters, not only each node against the managers). A thread of its own reads
//! every peer's clock over the wire every [`PEER_CLOCK_INTERVAL`], keeps the sample with the
//! shortest round trip of [`PEER_CLOCK_SAMPLES`] (its error is at most half that round trip),
//! and says in the log when a peer's clock goes beyond the cluster's bound and when it is back.
//! The figures go in the node's heartbeats (`leofs-adm status`), status and `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use leofs_manager::Manager;
use leofs_manager::cluster::{PeerClock, clock_within_bound};
use leofs_shard::RingInstaller;
use leofs_shard::remote::blocking::{BlockingPeer, ClockSample};
use leofs_wire::ClusterAuth;

/// How often every peer's clock is read.
pub const PEER_CLOCK_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on each step of one read (connect, send, answer): a dead peer costs at most this.
pub const PEER_CLOCK_TIMEOUT: Duration = Duration::from_secs(1);
/// Reads per peer and interval; the one with the shortest round trip is kept.
pub const PEER_CLOCK_SAMPLES: usize = 3;
/// Most intervals a peer that did not answer (down, or too old to know the request) is left
/// alone: one after its first failure in a row, doubling with each (a peer not up yet is read
/// again soon; a dead one costs its timeout once a minute, and an old one logs a refusal as
/// seldom).
pub const PEER_CLOCK_REST_INTERVALS_MAX: u64 = 12;
/// Threads that read the peers' clocks at once (each takes its share of the peers in turn).
pub const PEER_CLOCK_THREADS_MAX: usize = 8;

/// The last measure of each peer's clock, shared with the heartbeat, status and `/metrics`.
#[derive(Default)]
pub struct PeerClocks(Mutex<Vec<PeerClock>>);

impl PeerClocks {
    /// The peers measured in the last interval, by node id (a peer that did not answer is
    /// left out).
    pub fn get(&self) -> Vec<PeerClock> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, clocks: Vec<PeerClock>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = clocks;
    }
}

/// What the measuring thread needs.
pub struct ClockProber {
    /// The ring, for its storage nodes' addresses.
    pub installer: RingInstaller,
    /// The catalog, for the cluster's bound (`max_clock_offset_ms`).
    pub catalog: Arc<Manager>,
    /// This node's own `--rpc-listen` (not measured).
    pub own_addr: Option<SocketAddr>,
    /// How to reach the peers.
    pub auth: ClusterAuth,
    /// Where the measures go.
    pub clocks: Arc<PeerClocks>,
}

impl ClockProber {
    /// Starts the thread that reads every peer's clock each [`PEER_CLOCK_INTERVAL`].
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("leofs-peer-clock".into())
            .spawn(move || self.run())
    }

    fn run(self) {
        let mut peers: BTreeMap<u32, BlockingPeer> = BTreeMap::new();
        let mut beyond: BTreeSet<u32> = BTreeSet::new();
        // Peers that did not answer: the interval from which they are read again.
        let mut resting: BTreeMap<u32, u64> = BTreeMap::new();
        // Failures in a row, by peer.
        let mut failures: BTreeMap<u32, u32> = BTreeMap::new();
        for interval in 0u64.. {
            let started = std::time::Instant::now();
            let installed = self.installer.installed();
            let ring: BTreeMap<u32, SocketAddr> = installed
                .nodes
                .iter()
                .filter(|(_, addr)| Some(*addr) != self.own_addr)
                .map(|(node, addr)| (*node, *addr))
                .collect();
            peers.retain(|node, peer| ring.get(node) == Some(&peer.addr()));
            resting.retain(|node, until| peers.contains_key(node) && *until > interval);
            failures.retain(|node, _| peers.contains_key(node));
            for (node, addr) in &ring {
                peers.entry(*node).or_insert_with(|| {
                    BlockingPeer::new(*addr, self.auth.clone(), PEER_CLOCK_TIMEOUT)
                });
            }
            let mut due: Vec<(u32, &mut BlockingPeer)> = peers
                .iter_mut()
                .filter(|(node, _)| !resting.contains_key(node))
                .map(|(node, peer)| (*node, peer))
                .collect();
            let results = read_clocks(&mut due);
            let bound_ms = self.catalog.snapshot().settings.max_clock_offset_ms;
            let mut measured = Vec::with_capacity(results.len());
            for (node, result) in results {
                match result {
                    Ok(sample) => {
                        failures.remove(&node);
                        report_bound(node, sample.offset_us, bound_ms, &mut beyond);
                        measured.push(PeerClock {
                            node,
                            offset_us: sample.offset_us,
                            round_trip_us: sample.round_trip_us,
                        });
                    }
                    Err(e) => {
                        let failed = failures.entry(node).or_insert(0);
                        *failed = failed.saturating_add(1);
                        let rest =
                            (1u64 << (*failed - 1).min(4)).min(PEER_CLOCK_REST_INTERVALS_MAX);
                        tracing::debug!(peer = node, error = %e, rest_intervals = rest, "could not read a peer's clock");
                        resting.insert(node, interval + rest);
                    }
                }
            }
            measured.sort_by_key(|c| c.node);
            beyond.retain(|node| ring.contains_key(node));
            self.clocks.set(measured);
            std::thread::sleep(PEER_CLOCK_INTERVAL.saturating_sub(started.elapsed()));
        }
    }
}

/// Reads the clocks of `due` on up to [`PEER_CLOCK_THREADS_MAX`] threads at once, so that
/// peers that time out do not hold up the others' measures.
fn read_clocks(
    due: &mut [(u32, &mut BlockingPeer)],
) -> Vec<(u32, Result<ClockSample, leofs_shard::ShardError>)> {
    if due.is_empty() {
        return Vec::new();
    }
    let share = due.len().div_ceil(PEER_CLOCK_THREADS_MAX);
    std::thread::scope(|scope| {
        let threads: Vec<_> = due
            .chunks_mut(share)
            .map(|group| {
                scope.spawn(move || {
                    group
                        .iter_mut()
                        .map(|(node, peer)| (*node, best_sample(peer)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap_or_default())
            .collect()
    })
}

/// The sample with the shortest round trip of [`PEER_CLOCK_SAMPLES`] (the first failure ends
/// the reads; it fails only if none succeeded).
fn best_sample(peer: &mut BlockingPeer) -> Result<ClockSample, leofs_shard::ShardError> {
    let mut best: Option<ClockSample> = None;
    for _ in 0..PEER_CLOCK_SAMPLES {
        match peer.clock_sample() {
            Ok(sample) if best.is_none_or(|b| sample.round_trip_us < b.round_trip_us) => {
                best = Some(sample);
            }
            Ok(_) => {}
            Err(e) if best.is_none() => return Err(e),
            Err(_) => break,
        }
    }
    best.ok_or_else(|| leofs_shard::ShardError::BadAnswer("no clock sample".into()))
}

/// Says once when a peer's clock goes beyond the cluster's bound from this node's, and once
/// when it is back within.
fn report_bound(node: u32, offset_us: i64, bound_ms: u64, beyond: &mut BTreeSet<u32>) {
    let offset_ms = offset_us as f64 / 1000.0;
    if !clock_within_bound(offset_us, bound_ms) {
        if beyond.insert(node) {
            tracing::warn!(
                peer = node,
                offset_ms,
                bound_ms,
                "this node's clock and a peer's differ by more than the cluster's bound: fix \
                 their time sources (NTP); writes stamped on one may be refused by the other"
            );
        }
    } else if beyond.remove(&node) {
        tracing::info!(
            peer = node,
            offset_ms,
            bound_ms,
            "this node's clock and a peer's are back within the cluster's bound"
        );
    }
}
