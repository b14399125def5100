//! The node's side of the cluster's membership: its name and id in its data dir, its
//! registration, the heartbeats it sends every manager, and the thread that makes the cores
//! route by the ring the managers hold.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leofs_gateway::cluster::{ManagerPeers, installed_ring, send_heartbeat};
use leofs_manager::admin::{GatewayCacheStatus, LifecycleStatus};
use leofs_manager::cluster::{
    HEARTBEAT_INTERVAL, Heartbeat, MEMBERSHIP_FORMAT_VERSION, Member, Registration, ShardUse,
};
use leofs_manager::{Manager, ManagerError};
use leofs_shard::remote::blocking::BlockingPeer;
use leofs_shard::{InstalledRing, NodeStats, RingInstaller, ShardError};
use leofs_wire::{ClusterAuth, WireError};

/// File of a node's name (when it has no `--rpc-listen` address to be known by).
const NODE_NAME_FILE: &str = "node.name";
/// File of the node id the cluster gave this node.
const NODE_ID_FILE: &str = "node.id";
/// Longest a starting node keeps trying to reach a manager.
pub const MANAGER_WAIT: Duration = Duration::from_secs(60);
/// Longest a starting node that saved a catalog tries to reach a manager before it starts
/// from that catalog instead.
pub const MANAGER_WAIT_WITH_SAVED_CATALOG: Duration = Duration::from_secs(10);
/// Pause between attempts to reach the managers at start.
const MANAGER_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How often the ring follower compares the managers' ring with the cores'.
const RING_FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// Shortest time between two heartbeats, however often the node has news (a rebalance
/// fills many partitions a second).
const BEAT_GAP_MIN: Duration = Duration::from_millis(100);
/// Bound on each step of a heartbeat to one manager (a dead manager must not hold up the
/// others' beats for long).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(800);

/// How a node registers and beats: through its own manager, or to the managers it joined.
pub enum Registry {
    /// This node has the manager role.
    Local(Arc<Manager>),
    /// This node joined the managers at these addresses.
    Remote(ManagerPeers),
}

impl Registry {
    /// Registers this node, trying the managers until one answers (within [`MANAGER_WAIT`]);
    /// a conflict with the cluster stops the node with the managers' reason.
    pub fn register(&mut self, registration: &Registration) -> anyhow::Result<Member> {
        if let Registry::Local(manager) = self
            && let Some(known) = manager.snapshot().node_at(&registration.addr)
            && registration.known_id == Some(known.id)
            && known.shards == registration.shards
            && known.storage == registration.storage
            && known.gateway == registration.gateway
        {
            // A restart of a node its own manager knows as it is: nothing to write (the group
            // may not have heard from this manager yet).
            return Ok(known.clone());
        }
        let deadline = Instant::now() + MANAGER_WAIT;
        loop {
            let attempt = match self {
                Registry::Local(manager) => match manager.register_node(registration.clone()) {
                    Ok(member) => Ok(member),
                    Err(e @ (ManagerError::NodeConflict(_) | ManagerError::NoSuchNode(_))) => {
                        bail!("the cluster refused this node: {e}")
                    }
                    Err(e) => Err(e.to_string()),
                },
                Registry::Remote(managers) => match managers.register(registration) {
                    Ok(Ok(member)) => Ok(member),
                    Ok(Err(refusal)) if refusal.conflict => {
                        bail!("the cluster refused this node: {}", refusal.message)
                    }
                    Ok(Err(refusal)) => Err(refusal.message),
                    Err(e) => {
                        refuse_if_not_of_the_cluster(&e)?;
                        Err(e.to_string())
                    }
                },
            };
            match attempt {
                Ok(member) => return Ok(member),
                Err(why) if Instant::now() >= deadline => {
                    bail!("no manager registered this node within {MANAGER_WAIT:?}: {why}")
                }
                Err(why) => {
                    tracing::info!(%why, "registering with the managers; trying again");
                    std::thread::sleep(MANAGER_RETRY_PAUSE);
                }
            }
        }
    }
}

/// This node's record in a catalog it saved, when it starts from that catalog (no manager
/// answers): it must be there as it is now (same id, address, roles and shards), since no
/// manager can register a change.
pub fn member_in_saved_catalog(
    catalog: &leofs_manager::ManagerState,
    registration: &Registration,
) -> anyhow::Result<Member> {
    let saved = registration.known_id.and_then(|id| catalog.nodes.get(&id));
    match saved {
        Some(member)
            if member.addr == registration.addr
                && member.storage == registration.storage
                && member.gateway == registration.gateway
                && member.shards == registration.shards =>
        {
            Ok(member.clone())
        }
        Some(member) => bail!(
            "no manager answers, and the catalog this node saved has it as {} ({} shards, \
             storage {}, gateway {}), not as it is now ({}, {} shards, storage {}, gateway {}): \
             start it as it was, or once a manager answers",
            member.addr,
            member.shards,
            member.storage,
            member.gateway,
            registration.addr,
            registration.shards,
            registration.storage,
            registration.gateway
        ),
        None => bail!(
            "no manager answers, and the catalog this node saved does not have node {:?} \
             ({}): start it once a manager answers",
            registration.known_id,
            registration.addr
        ),
    }
}

/// A failed handshake with a manager does not heal by waiting: this node's cluster secret
/// (or cluster id) is not the managers'.
pub fn refuse_if_not_of_the_cluster(e: &ShardError) -> anyhow::Result<()> {
    if let ShardError::Wire(WireError::Handshake(why)) = e {
        bail!(
            "the managers refused this node's handshake ({why}): it has another cluster secret or \
             belongs to another cluster"
        );
    }
    Ok(())
}

/// The name a node registers under: its `--rpc-listen` address, else a name drawn once and
/// kept in its data dir.
pub fn node_name(data_dir: &Path, rpc_listen: Option<SocketAddr>) -> anyhow::Result<String> {
    if let Some(listen) = rpc_listen {
        return Ok(listen.to_string());
    }
    let path = data_dir.join(NODE_NAME_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let name = text.trim();
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
    }
    let name = format!("node-{}", leofs_manager::persist::random_hex(6)?);
    leofs_manager::persist::write_atomic(&path, name.as_bytes())
        .with_context(|| format!("cannot keep the node name in {}", path.display()))?;
    Ok(name)
}

/// The node id this data dir was given, if it registered before.
pub fn known_node_id(data_dir: &Path) -> anyhow::Result<Option<u32>> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{} does not hold a node id", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Keeps the node id the cluster gave this node.
pub fn store_node_id(data_dir: &Path, id: u32) -> anyhow::Result<()> {
    let path = data_dir.join(NODE_ID_FILE);
    // Kept as it is when it says so already: a restart on a full disk must not need a block.
    if std::fs::read_to_string(&path).is_ok_and(|held| held.trim() == id.to_string()) {
        return Ok(());
    }
    leofs_manager::persist::write_atomic(&path, id.to_string().as_bytes())
        .with_context(|| format!("cannot keep the node id in {}", path.display()))
}

/// File in the data dir holding when this node was last seen alive by itself (unix ms, its
/// own clock), kept by the heartbeat thread every [`ALIVE_STAMP_INTERVAL`].
const ALIVE_STAMP_FILE: &str = "alive.at";
/// How often the heartbeat thread stamps the node alive: how long it was away is known to
/// within this.
pub const ALIVE_STAMP_INTERVAL: Duration = Duration::from_secs(60);

/// When this node last stamped itself alive (unix ms), if it ever did and the stamp reads.
pub fn last_alive_unix_ms(data_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(data_dir.join(ALIVE_STAMP_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Stamps this node alive now.
fn stamp_alive(data_dir: &Path) {
    let now_ms = leofs_manager::cluster::unix_now_us() / 1000;
    let path = data_dir.join(ALIVE_STAMP_FILE);
    if let Err(e) = leofs_manager::persist::write_atomic(&path, now_ms.to_string().as_bytes()) {
        tracing::warn!(error = %e, path = %path.display(), "cannot stamp this node alive");
    }
}

/// `(used, size)` of the file system holding `dir`, in bytes.
pub fn disk_use(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data, valid when zeroed; `path` is a valid NUL-terminated
    // string and `stat` a valid, writable statvfs for the duration of the call.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        stat
    };
    let block = stat.f_frsize as u64;
    let size = stat.f_blocks as u64 * block;
    let free = stat.f_bfree as u64 * block;
    Some((size.saturating_sub(free), size))
}

/// Starts the thread that keeps the cores routing by the ring in `catalog` (the manager's
/// own state, or this node's copy of it) and its nodes' states.
/// It looks at once, rather than at its next poll, when `poked`.
pub fn spawn_ring_follower(
    catalog: Arc<Manager>,
    installer: RingInstaller,
    poked: std::sync::mpsc::Receiver<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let catalog = Arc::downgrade(&catalog);
    std::thread::Builder::new()
        .name("leofs-ring".into())
        .spawn(move || {
            // The ring of the last catalog looked at: rebuilt only when the catalog changes.
            let mut followed: Option<(Arc<leofs_manager::ManagerState>, Option<InstalledRing>)> =
                None;
            loop {
                if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
                    poked.recv_timeout(RING_FOLLOW_INTERVAL)
                {
                    std::thread::sleep(RING_FOLLOW_INTERVAL);
                }
                let Some(catalog) = catalog.upgrade() else {
                    return;
                };
                let snapshot = catalog.snapshot();
                follow_settings(&installer, &snapshot.settings);
                if let Some(order) = snapshot.compaction.get(&installer.node_id()) {
                    installer.set_compaction(order.start_requested_unix_ms, order.suspended);
                }
                installer.set_rebalance_suspended(
                    snapshot
                        .ring
                        .as_ref()
                        .and_then(|ring| ring.rebalance.as_ref())
                        .is_some_and(|r| r.suspended),
                );
                if followed
                    .as_ref()
                    .is_none_or(|(seen, _)| !Arc::ptr_eq(seen, &snapshot))
                {
                    let wanted = installed_ring(&snapshot).unwrap_or_else(|e| {
                        tracing::error!(error = %e, "cannot route by the managers' ring");
                        None
                    });
                    followed = Some((snapshot, wanted));
                }
                let Some((_, Some(wanted))) = &followed else {
                    continue;
                };
                let current = installer.installed();
                let same = current.ring.same_as(&wanted.ring)
                    && current.nodes == wanted.nodes
                    && current.unavailable == wanted.unavailable;
                if !same {
                    tracing::info!(
                        epoch = wanted.ring.epoch(),
                        checksum = format!("{:016x}", wanted.ring.checksum()),
                        "routing by the managers' ring"
                    );
                    installer.install(wanted.clone());
                }
            }
        })
}

/// The partitions the cores report (`reported`: a core's, or None when it reports about
/// another rebalance or recovery) that the managers have not `recorded`, in order, once each.
fn unrecorded<'a>(
    cores: &'a [leofs_shard::CoreStats],
    reported: impl Fn(&'a leofs_shard::AntiEntropyStatus) -> Option<&'a Vec<u32>>,
    recorded: Option<&std::collections::BTreeSet<u32>>,
) -> Vec<u32> {
    let new: std::collections::BTreeSet<u32> = cores
        .iter()
        .filter_map(|s| reported(&s.anti_entropy))
        .flatten()
        .copied()
        .filter(|p| recorded.is_none_or(|done| !done.contains(p)))
        .collect();
    new.into_iter().collect()
}

/// Gives the cores the settings they act on: the quorums and the clock bound.
fn follow_settings(installer: &RingInstaller, settings: &leofs_manager::cluster::ClusterSettings) {
    installer.set_levels(settings.consistency.map(|c| c.quorums()));
    installer.set_max_clock_offset(std::time::Duration::from_millis(
        settings.max_clock_offset_ms,
    ));
}

/// What the heartbeat thread needs.
pub struct Beater {
    /// What this node registers as.
    pub registration: Registration,
    /// Its record, when it registered before it started; else the thread registers it first
    /// (through `registry`).
    pub member: Option<Member>,
    /// Where a deferred registration goes.
    pub registry: Registry,
    /// Its data dir (for the disk's use).
    pub data_dir: std::path::PathBuf,
    /// Its cores' figures.
    pub stats: NodeStats,
    /// The ring it routes by.
    pub installer: RingInstaller,
    /// Its own manager, if it has the manager role.
    pub local: Option<Arc<Manager>>,
    /// Its catalog (the manager's own state, or its copy): its revision goes in every beat.
    pub catalog: Arc<Manager>,
    /// The managers it joined (their heartbeat answers name the others).
    pub joined: Vec<SocketAddr>,
    /// Its own `--rpc-listen` (never beaten to over the wire).
    pub own_addr: Option<SocketAddr>,
    /// How to reach the managers.
    pub auth: Option<ClusterAuth>,
    /// A beat is sent at once when this is poked (the catalog copy changed).
    pub beat_now: Option<std::sync::mpsc::Receiver<()>>,
    /// Where the measured clock offset is kept for status and /metrics.
    pub clock: Arc<ClockOffset>,
    /// This node's clock offsets from its peers (measured by `peer_clock`), sent in each beat.
    pub peer_clocks: Arc<crate::peer_clock::PeerClocks>,
}

/// This node's clock minus the managers' (µs), as its heartbeats last measured it; None until
/// a manager other than its own has answered. Shared with the node's status and /metrics.
#[derive(Default)]
pub struct ClockOffset(std::sync::Mutex<Option<i64>>);

impl ClockOffset {
    /// The last measure.
    pub fn get(&self) -> Option<i64> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, offset_us: Option<i64>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = offset_us;
    }
}

impl Beater {
    /// Starts the thread that sends a heartbeat to every manager each [`HEARTBEAT_INTERVAL`].
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("leofs-heartbeat".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let node = match self.member.take() {
            Some(member) => member.id,
            None => match self.registry.register(&self.registration) {
                Ok(member) => {
                    if let Err(e) = store_node_id(&self.data_dir, member.id) {
                        tracing::error!(error = %e, "cannot keep the node id");
                    }
                    if let Some(local) = &self.local {
                        local.set_local_member(member.id);
                    }
                    tracing::info!(node = member.id, "registered with the managers");
                    member.id
                }
                Err(e) => {
                    tracing::error!(error = %e, "this node could not register: it serves, but is not a member of the cluster");
                    return;
                }
            },
        };
        let mut managers: BTreeMap<SocketAddr, BlockingPeer> = BTreeMap::new();
        let add = |managers: &mut BTreeMap<SocketAddr, BlockingPeer>, addr: SocketAddr| {
            if Some(addr) != self.own_addr
                && let Some(auth) = &self.auth
            {
                managers
                    .entry(addr)
                    .or_insert_with(|| BlockingPeer::new(addr, auth.clone(), HEARTBEAT_TIMEOUT));
            }
        };
        for addr in &self.joined {
            add(&mut managers, *addr);
        }
        let mut failing: BTreeMap<SocketAddr, bool> = BTreeMap::new();
        // The managers' ring last found to differ from this node's (logged once).
        let mut differing: Option<(u64, u64)> = None;
        // Whether the clock was last found beyond the cluster's bound (said once per change).
        let mut clock_beyond = false;
        let mut stamped: Option<Instant> = None;
        loop {
            let started = Instant::now();
            if stamped.is_none_or(|at| at.elapsed() >= ALIVE_STAMP_INTERVAL) {
                stamp_alive(&self.data_dir);
                stamped = Some(started);
            }
            if self
                .local
                .as_ref()
                .is_some_and(|m| Arc::strong_count(m) <= 1)
            {
                return;
            }
            let mut beat = self.beat(node);
            let mut named = Vec::new();
            // The newest ring the managers answered with, and this clock's offset from each.
            let mut theirs = (0, 0);
            let mut offsets = Vec::new();
            if let Some(local) = &self.local {
                beat.sent_unix_us = leofs_manager::cluster::unix_now_us();
                let answer = local.heartbeat(beat.clone());
                theirs = theirs.max((answer.ring_epoch, answer.ring_checksum));
                named.extend(answer.managers);
            }
            for (addr, peer) in managers.iter_mut() {
                beat.sent_unix_us = leofs_manager::cluster::unix_now_us();
                match send_heartbeat(peer, &beat) {
                    Ok(answer) => {
                        if failing.remove(addr) == Some(true) {
                            tracing::info!(manager = %addr, "heartbeats reach the manager again");
                        }
                        if answer.manager_unix_us != 0 {
                            let received = leofs_manager::cluster::unix_now_us();
                            offsets.push(leofs_manager::cluster::clock_offset_us(
                                beat.sent_unix_us,
                                received,
                                answer.manager_unix_us,
                            ));
                        }
                        theirs = theirs.max((answer.ring_epoch, answer.ring_checksum));
                        named.extend(answer.managers);
                    }
                    Err(e) => {
                        if !failing.insert(*addr, true).unwrap_or(false) {
                            tracing::warn!(manager = %addr, error = %e, "a heartbeat did not reach a manager");
                        }
                    }
                }
            }
            for addr in named.iter().filter_map(|a| a.parse::<SocketAddr>().ok()) {
                add(&mut managers, addr);
            }
            self.follow_managers_ring(theirs, &mut differing);
            if let Some(offset) = leofs_manager::cluster::median_offset_us(offsets) {
                self.clock.set(Some(offset));
                self.check_clock(offset, &mut clock_beyond);
            }
            let pause = HEARTBEAT_INTERVAL.saturating_sub(started.elapsed());
            match &self.beat_now {
                Some(poked) => {
                    let _ = poked.recv_timeout(pause);
                    std::thread::sleep(BEAT_GAP_MIN.saturating_sub(started.elapsed()));
                }
                None => std::thread::sleep(pause),
            }
        }
    }

    /// Says when this node's clock goes beyond the cluster's bound from the managers', and
    /// when it is back within.
    fn check_clock(&self, offset_us: i64, beyond: &mut bool) {
        let bound_ms = self.catalog.snapshot().settings.max_clock_offset_ms;
        let now_beyond = !leofs_manager::cluster::clock_within_bound(offset_us, bound_ms);
        if now_beyond && !*beyond {
            tracing::warn!(
                offset_ms = offset_us as f64 / 1000.0,
                bound_ms,
                "this node's clock is off the managers' by more than the cluster's bound: fix its \
                 time source (NTP); writes it stamps may lose to older ones elsewhere"
            );
        } else if !now_beyond && *beyond {
            tracing::info!(
                offset_ms = offset_us as f64 / 1000.0,
                bound_ms,
                "this node's clock is back within the cluster's bound"
            );
        }
        *beyond = now_beyond;
        self.installer.set_clock_beyond_bound(now_beyond);
    }

    /// A node whose ring differs from the managers' (`theirs`: epoch, checksum) asks for
    /// theirs at once (the ring follower fetches it); said once per differing ring.
    fn follow_managers_ring(&self, theirs: (u64, u64), differing: &mut Option<(u64, u64)>) {
        let ours = self.installer.installed();
        let ours = (ours.ring.epoch(), ours.ring.checksum());
        if theirs.0 == 0 || theirs == ours || theirs.0 < ours.0 {
            *differing = None;
            return;
        }
        if *differing != Some(theirs) {
            tracing::info!(
                ours_epoch = ours.0,
                ours_checksum = format!("{:016x}", ours.1),
                managers_epoch = theirs.0,
                managers_checksum = format!("{:016x}", theirs.1),
                "this node routes by another ring than the managers': fetching theirs"
            );
            *differing = Some(theirs);
        }
        self.installer.want_ring(theirs.0);
    }

    fn beat(&self, node: u32) -> Heartbeat {
        let installed = self.installer.installed();
        let (disk_used_bytes, disk_capacity_bytes) = disk_use(&self.data_dir).unwrap_or((0, 0));
        let cores = self.stats.core_stats();
        let shards: Vec<ShardUse> = cores
            .iter()
            .map(|s| ShardUse {
                shard: u16::try_from(s.core).unwrap_or(u16::MAX),
                live_records: s.engine.live_records,
                live_bytes: s.engine.live_bytes,
                dead_bytes: s.engine.dead_bytes,
                segments: s.engine.segments,
                garbage_pending: s.gc.entries_pending,
                hints_held: s.hints_pending.iter().map(|(_, count, _)| count).sum(),
                anti_entropy_passes: s.anti_entropy.passes,
                partitions_under_replicated: s.anti_entropy.under_replicated,
                oldest_unrepaired_partition_seconds: s.anti_entropy.oldest_unrepaired_secs,
                foreign_partitions: s.anti_entropy.foreign_partitions,
                rebalance_moved_bytes: s.anti_entropy.moved_bytes,
                last_compaction_unix_ms: s.engine.last_compaction_unix_us / 1000,
                compaction_suspended: s.engine.compaction_suspended,
                segments_compacted: s.engine.segments_compacted,
                disk_full: s.engine.disk_full,
            })
            .collect();
        // The moving partitions the cores found filled that the managers have not recorded.
        let catalog = self.catalog.snapshot();
        let ring = catalog.ring.as_ref();
        let recorded = ring.and_then(|r| r.rebalance.as_ref()).map(|r| &r.filled);
        let filled_epoch = installed.ring.epoch();
        let filled = unrecorded(
            &cores,
            |s| (s.filled_epoch == filled_epoch).then_some(&s.filled),
            recorded,
        );
        // Likewise the partitions of the recovery under way they compared and repaired.
        let recovery = ring.and_then(|r| r.recovery.as_ref());
        let recovered_id = recovery.map_or(0, |r| r.requested_unix_ms);
        let recovered = unrecorded(
            &cores,
            |s| (recovered_id != 0 && s.recovered_id == recovered_id).then_some(&s.recovered),
            recovery.map(|r| &r.done),
        );
        Heartbeat {
            format_version: MEMBERSHIP_FORMAT_VERSION,
            node,
            ring_epoch: installed.ring.epoch(),
            ring_checksum: installed.ring.checksum(),
            disk_used_bytes,
            disk_capacity_bytes,
            queue_depth: shards.iter().map(|s| s.garbage_pending).sum(),
            catalog_revision: self.catalog.snapshot().revision,
            shards,
            sent_unix_us: 0,
            clock_offset_us: self.clock.get(),
            filled_epoch,
            filled,
            recovered_id,
            recovered,
            peer_clocks: self.peer_clocks.get(),
            gateway_cache: cores
                .iter()
                .map(|s| gateway_cache_status(&s.object_cache))
                .fold(Default::default(), GatewayCacheStatus::plus),
            lifecycle: cores
                .iter()
                .map(|s| lifecycle_status(&s.lifecycle))
                .fold(Default::default(), LifecycleStatus::plus),
        }
    }
}

/// A core's lifecycle worker as status and heartbeats show it.
pub fn lifecycle_status(stats: &leofs_shard::metrics::LifecycleStats) -> LifecycleStatus {
    LifecycleStatus {
        passes: stats.passes,
        examined: stats.examined,
        expired: stats.expired,
        noncurrent_deleted: stats.noncurrent_deleted,
        markers_removed: stats.markers_removed,
        uploads_aborted: stats.uploads_aborted,
    }
}

/// A core's gateway object cache as status and heartbeats show it.
pub fn gateway_cache_status(stats: &leofs_shard::metrics::ObjectCacheStats) -> GatewayCacheStatus {
    GatewayCacheStatus {
        hits: stats.hits,
        misses: stats.misses,
        stale: stats.stale,
        revalidations: stats.revalidations,
        evictions: stats.evictions,
        entries: stats.entries,
        bytes: stats.bytes,
        disk_hits: stats.disk_hits,
        disk_dropped: stats.disk_dropped,
        disk_skipped: stats.disk_skipped,
        disk_write_failures: stats.disk_write_failures,
        disk_entries: stats.disk_entries,
        disk_bytes: stats.disk_bytes,
    }
}
