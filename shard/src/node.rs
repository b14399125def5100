//! Starting and stopping a node: one OS thread per core (pinned unless configured otherwise), each with its own monoio io_uring
//! runtime and engine, the SIGTERM/SIGINT watcher, shutdown and cross-thread stats.
//!
//! Lifecycle of a core thread: pin (if configured) → build runtime → open engine (`<data_dir>/shard-<i>`) →
//! serve its mailbox → run `init_core` when told (cores initialise one after another, so port 0
//! resolves to one port for all) → on shutdown: stop listeners and let connections finish
//! (all cores, bounded by [`DRAIN_TIMEOUT`]) → close the engine (checkpoint) → exit.
//!
//! Signals: SIGTERM and SIGINT are blocked in the thread calling [`start_node`] before any core
//! thread is spawned (threads inherit the mask), and one watcher thread takes them with
//! `sigtimedwait`. No async-signal-safety concerns (nothing runs in a handler), no extra crate,
//! and io_uring waits on core threads are never interrupted. A second signal during shutdown
//! exits the process at once.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{Either, select};
use leofs_engine::{
    Engine, EngineConfig, EngineStats, Head, Hlc, HlcClock, PartitionId, ScanEntry,
};

use crate::balance::ConnectionBalancer;
use crate::cross_core::{self, Forwarder, Mailboxes, Message};
use crate::http::ConnectionHub;
use crate::layout::ensure_layout;
use crate::remote::{NodeServices, PeersConfig, RemotePeers, RpcConfig};
use crate::ring::{NodeId, RingView, SINGLE_NODE_ID, Vnode};
use crate::shard::Core;
use crate::{PartitionMap, Shard, ShardError, StorageRequest, StorageResponse};

/// Default most connections one core serves ([`NodeConfig::connections_per_core_max`]). Each
/// connection costs a file descriptor, a task and hyper's buffers, and an upload in flight holds
/// up to a chunk (4 MiB) of memory; 1024 per core keeps that bounded while leaving far more than
/// any benchmark or client pool here uses (at most a few hundred).
pub const DEFAULT_CONNECTIONS_PER_CORE_MAX: usize = 1024;
/// Longest time shutdown waits for in-flight requests before closing the engines anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a draining core checks whether its connections are gone.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Longest time [`NodeStats::stats`] and [`NodeStats::scan_all`] wait for the cores to answer.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the signal watcher checks whether the node has finished.
const SIGNAL_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// io_uring submission queue entries per core.
const URING_ENTRIES: u32 = 1024;

/// What a node needs to start.
#[derive(Clone)]
pub struct NodeConfig {
    /// The data directory (`node.toml`, `shard-<i>/`).
    pub data_dir: std::path::PathBuf,
    /// Cores (shards) to run; fixed when the data directory is created.
    pub cores: usize,
    /// Partitions (power of two, default [`crate::DEFAULT_PARTITIONS`]); fixed at creation.
    pub partitions: u32,
    /// Engine configuration template; `dir` is replaced by `<data_dir>/shard-<i>` per core.
    pub engine: EngineConfig,
    /// Pin each core thread to its own CPU (the default). Turn off when other busy processes
    /// share the CPUs (a load generator on the same machine, an overcommitted VM): a pinned
    /// thread waits for its CPU while another CPU idles, where the kernel would move it.
    pub pin_cores: bool,
    /// Most connections one core serves (all its listeners together); a connection accepted
    /// while every core serves this many is answered `503` and closed (see [`crate::http`]).
    pub connections_per_core_max: usize,
    /// Garbage collection: the read-lease grace and the orphan sweep interval.
    pub gc: crate::objects::GcConfig,
    /// Anti-entropy's rate and the hints' lifetime.
    pub replication: crate::antientropy::ReplicationConfig,
    /// The storage role: each core opens its engine (`<data_dir>/shard-<i>`). A node without
    /// it stores nothing and routes every request to the peers its ring names.
    pub storage: bool,
    /// Serve peers over the wire: core *i* on the RPC port + *i*.
    pub rpc: Option<RpcConfig>,
    /// The ring and peers of a node that joined another (a gateway-only node); None: the
    /// node is a ring of one.
    pub joined: Option<JoinedCluster>,
    /// What peers may ask besides storage (the catalog, on a node with the manager role).
    pub services: Option<Arc<dyn NodeServices>>,
}

/// The cluster a node joined: the ring it routes by and how to reach the nodes in it.
#[derive(Clone, Debug)]
pub struct JoinedCluster {
    /// This node's id (not in the ring for a gateway-only node).
    pub node_id: NodeId,
    /// The ring.
    pub ring: RingView,
    /// The peers' addresses and the credentials to reach them.
    pub peers: PeersConfig,
}

/// A node control message to a core (not storage: stats, drain, admin scans), sent from any
/// thread; each answers on a std channel.
pub(crate) enum Control {
    /// Report the core's counters.
    Stats {
        /// Where the counters go.
        reply: mpsc::Sender<CoreStats>,
    },
    /// List live keys of the whole node (core 0 runs the merge).
    ScanAll {
        /// Key prefix.
        prefix: Bytes,
        /// Most entries.
        limit: usize,
        /// Where the entries go.
        reply: mpsc::Sender<Result<Vec<ScanEntry>, ShardError>>,
    },
    /// Route by `ring` from now on.
    InstallRing(Arc<InstalledRing>),
    /// Ask every replica of an object for its record's head (`leofs-adm whereis`).
    Whereis {
        /// The bucket's storage name (name and incarnation).
        bucket: String,
        /// The key.
        key: String,
        /// Where the answer goes.
        reply: mpsc::Sender<Result<Whereabouts, ShardError>>,
    },
    /// Compare an object on every replica and give each the newest version, with every chunk
    /// it names (`leofs-adm recover-file`).
    RecoverFile {
        /// The bucket's storage name (name and incarnation).
        bucket: String,
        /// The key.
        key: String,
        /// Where the answer goes: the copies repaired.
        reply: mpsc::Sender<Result<u64, ShardError>>,
    },
    /// Stop the core's listeners and report, by `deadline`, `(core, connections still open)`.
    Drain {
        /// When to report even if connections remain.
        deadline: Instant,
        /// Where the report goes.
        reply: mpsc::Sender<(usize, usize)>,
    },
}

/// Serves a control message on the core it was sent to.
pub(crate) fn serve_control(shard: &Shard, control: Control) {
    match control {
        Control::Stats { reply } => {
            let core = &shard.core;
            let _ = reply.send(CoreStats {
                core: core.id,
                engine: core.engine.as_ref().map(Engine::stats).unwrap_or_default(),
                partitions_owned: shard.partitions_owned(),
                forwarded_calls: core.forwarder.forwarded(),
                open_connections: core.node.balancer.open_on(core.id),
                gc: shard.gc_stats(),
                wire_requests_sent: core.remote.sent.get(),
                wire_requests_served: core.remote.served.get(),
                requests: core.requests.borrow().clone(),
                object_cache: core.object_cache.snapshot(),
                lifecycle: core.lifecycle.snapshot(),
                hints_pending: core.hints.by_target(),
                hints_replayed: core.hints.replayed.get(),
                hints_dropped: core.hints.dropped.get(),
                anti_entropy: shard.anti_entropy_status(),
            });
        }
        Control::ScanAll {
            prefix,
            limit,
            reply,
        } => {
            let shard = shard.clone();
            monoio::spawn(async move {
                let _ = reply.send(shard.scan_all(prefix, None, limit).await);
            });
        }
        Control::Whereis { bucket, key, reply } => {
            let shard = shard.clone();
            monoio::spawn(async move {
                let _ = reply.send(shard.whereis(&bucket, &key).await);
            });
        }
        Control::RecoverFile { bucket, key, reply } => {
            let shard = shard.clone();
            monoio::spawn(async move {
                let _ = reply.send(shard.recover_file(&bucket, &key).await);
            });
        }
        Control::InstallRing(installed) => {
            let core = &shard.core;
            core.remote
                .set_nodes(&installed.nodes, &installed.unavailable);
            let newer = installed.ring.epoch() > core.ring.borrow().epoch()
                || installed.ring.checksum() == core.ring.borrow().checksum();
            if newer {
                *core.ring.borrow_mut() = installed.ring.clone();
                // On a replicated ring, tombstones go only at the watermarks from now on.
                shard.use_tombstone_floors();
            }
        }
        Control::Drain { deadline, reply } => {
            shard.core.connections.stop_all();
            let shard = shard.clone();
            monoio::spawn(async move {
                let deadline = monoio::time::Instant::from_std(deadline);
                while shard.core.connections.live_count() > 0
                    && monoio::time::Instant::now() < deadline
                {
                    monoio::time::sleep(DRAIN_POLL_INTERVAL).await;
                }
                let _ = reply.send((shard.core.id, shard.core.connections.live_count()));
            });
        }
    }
}

/// State of the node shared by every thread (Send + Sync).
pub(crate) struct NodeShared {
    mailboxes: Mailboxes,
    map: PartitionMap,
    /// This node's id in the ring.
    node_id: NodeId,
    /// The ring the cores route by (the last installed), with the nodes' addresses.
    current: Mutex<Arc<InstalledRing>>,
    /// How peers reach this node (None: they do not).
    rpc: Option<RpcConfig>,
    /// How this node reaches its peers.
    peers: Option<PeersConfig>,
    /// What peers may ask besides storage.
    services: Option<Arc<dyn NodeServices>>,
    shutdown: Arc<ShutdownState>,
    /// (ordinal of the listener on a core, requested address) → bound address, for port 0.
    bound: Mutex<Vec<(usize, SocketAddr, SocketAddr)>>,
    /// Open connections per core; where a new connection is served.
    pub(crate) balancer: ConnectionBalancer,
    /// Asked for a ring of at least the given epoch when a peer routes by a newer ring than
    /// this node's (set once by whoever follows the managers' ring).
    ring_wanted: std::sync::OnceLock<RingWanted>,
    /// Told when the node's part in a rebalance or recovery moved on (set once by whoever
    /// sends its heartbeats, which then report it at once).
    progressed: std::sync::OnceLock<Progressed>,
    /// This node's clock is off the managers' by more than the cluster's bound: it stamps
    /// no replicated write (DESIGN §7) until it is back within.
    pub(crate) clock_beyond_bound: std::sync::atomic::AtomicBool,
    /// The cluster's W, R and D as the managers set them, packed by [`pack_levels`] (0: the
    /// defaults for N).
    levels_set: std::sync::atomic::AtomicU64,
    /// The cluster's clock bound (`max_clock_offset`), in µs.
    pub(crate) max_clock_offset_us: std::sync::atomic::AtomicU64,
    /// An operator paused the rebalance under way: the cores move nothing meanwhile.
    rebalance_suspended: std::sync::atomic::AtomicBool,
    /// The last compaction pass an operator asked for (its id, 0: none): each core runs
    /// one pass per id.
    pub(crate) compaction_asked: std::sync::atomic::AtomicU64,
    /// An operator paused background compaction.
    pub(crate) compaction_suspended: std::sync::atomic::AtomicBool,
}

/// W, R and D in one word (16 bits each; each is at most [`crate::ring::MAX_REPLICAS`]).
fn pack_levels(write: u16, read: u16, delete: u16) -> u64 {
    (u64::from(write) << 32) | (u64::from(read) << 16) | u64::from(delete)
}

/// Called with an epoch when a peer routes by a newer ring than the node's: whoever follows
/// the managers' ring fetches it now rather than at its next poll. Must not block.
pub type RingWanted = Arc<dyn Fn(u64) + Send + Sync>;

/// Called when the node took a newer ring or its cores moved a rebalance or recovery on (a
/// partition filled, recovered or handed over): its heartbeat then reports it at once.
pub type Progressed = Arc<dyn Fn() + Send + Sync>;

impl NodeShared {
    /// Whether an operator paused the rebalance under way.
    pub(crate) fn rebalance_suspended(&self) -> bool {
        self.rebalance_suspended
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The W, R and D the managers set, if any: (w, r, d).
    pub(crate) fn levels_set(&self) -> Option<(usize, usize, usize)> {
        let packed = self.levels_set.load(std::sync::atomic::Ordering::Relaxed);
        let field = |shift: u32| usize::from((packed >> shift) as u16);
        (packed != 0).then(|| (field(32), field(16), field(0)))
    }

    /// The ring the cores route by, with the nodes' addresses.
    pub(crate) fn installed(&self) -> Arc<InstalledRing> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes every core route by `installed` (a ring older than the one installed is ignored;
    /// the same ring with other node states replaces them).
    pub(crate) fn install_ring(&self, installed: InstalledRing) {
        let installed = Arc::new(installed);
        {
            let mut current = self
                .current
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if installed.ring.epoch() < current.ring.epoch() {
                return;
            }
            *current = installed.clone();
        }
        self.tell_progress();
        for core in 0..self.map.cores() {
            let message = Message::Control(Control::InstallRing(installed.clone()));
            if let Err(e) = cross_core::post(&self.mailboxes, core, message) {
                tracing::debug!(core, error = %e, "a stopped core takes no ring");
            }
        }
    }

    /// Tells whoever sends the heartbeats that the node's part in the ring moved on (see
    /// [`Progressed`]).
    pub(crate) fn tell_progress(&self) {
        if let Some(progressed) = self.progressed.get() {
            progressed();
        }
    }

    /// Asks for a ring of at least `epoch` (see [`RingWanted`]); whether anyone follows the
    /// managers' ring to fetch it.
    pub(crate) fn want_ring(&self, epoch: u64) -> bool {
        match self.ring_wanted.get() {
            Some(wanted) => {
                wanted(epoch);
                true
            }
            None => false,
        }
    }

    /// The address peers reach this node on, if they do.
    pub(crate) fn own_rpc_addr(&self) -> Option<SocketAddr> {
        self.rpc.as_ref().map(|rpc| rpc.listen)
    }

    /// What peers may ask besides storage.
    pub(crate) fn services(&self) -> Option<&Arc<dyn NodeServices>> {
        self.services.as_ref()
    }

    /// The address an earlier core bound for the `ordinal`-th listener requested at `requested`.
    pub(crate) fn bound_addr(&self, ordinal: usize, requested: SocketAddr) -> Option<SocketAddr> {
        let bound = self
            .bound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        bound
            .iter()
            .find(|(o, r, _)| *o == ordinal && *r == requested)
            .map(|(_, _, b)| *b)
    }

    /// Records the address the first core bound for a listener.
    pub(crate) fn record_bound_addr(
        &self,
        ordinal: usize,
        requested: SocketAddr,
        bound: SocketAddr,
    ) {
        let mut all = self
            .bound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        all.push((ordinal, requested, bound));
    }
}

/// An object's partition and what each of its replicas holds: its record's head, None if
/// absent or deleted there, or why the replica could not say.
pub type Whereabouts = (PartitionId, Vec<(Vnode, Result<Option<Head>, ShardError>)>);

/// How often a core looks at what operators asked of its compaction.
const COMPACTION_ORDERS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs what operators ask of this core's compaction (`leofs-adm compact-*`): pauses or
/// resumes its engine's background compaction, and runs one pass for each new request,
/// until the core stops.
async fn follow_compaction_orders(shard: Shard) {
    use std::sync::atomic::Ordering::Relaxed;
    let Ok(engine) = shard.core.engine().cloned() else {
        return;
    };
    // The request the node knew of when this core started is taken as run; one the ring
    // follower brings in later (after a restart, the last one asked) runs once more, which is
    // harmless: a pass only compacts segments below the live ratio.
    let mut done = shard.core.node.compaction_asked.load(Relaxed);
    loop {
        monoio::time::sleep(COMPACTION_ORDERS_INTERVAL).await;
        if shard.core.objects.stopping.get() {
            return;
        }
        engine.set_compaction_suspended(shard.core.node.compaction_suspended.load(Relaxed));
        let asked = shard.core.node.compaction_asked.load(Relaxed);
        if asked == done {
            continue;
        }
        done = asked;
        match engine.compact().await {
            Ok(report) => tracing::info!(
                core = shard.core.id,
                segments = report.segments_compacted,
                reclaimed = report.bytes_reclaimed,
                "compacted as an operator asked"
            ),
            Err(leofs_engine::EngineError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "a compaction an operator asked for failed"),
        }
    }
}

/// Longest `recover-file` waits for its object and chunks to be compared and repaired.
const RECOVER_FILE_TIMEOUT: Duration = Duration::from_secs(120);

impl Shard {
    /// Compares `key` in `bucket` (its storage name) on every replica that holds it and gives
    /// each the newest version as stamped; then the same for each chunk of that version's
    /// manifest. Every replica must answer. The copies repaired.
    async fn recover_file(&self, bucket: &str, key: &str) -> Result<u64, ShardError> {
        let partition = self.object_partition(bucket, key);
        let storage_key = crate::object::object_key(bucket, key);
        let (mut repaired, newest) = self.recover_key(partition, storage_key).await?;
        let Some(StorageResponse::Value(Some(value))) = newest else {
            return Ok(repaired);
        };
        let meta = crate::object::ObjectMeta::decode(&value.meta).map_err(ShardError::Record)?;
        for run in meta.versions() {
            for index in 0..run.chunks {
                let ckey = crate::object::keys::chunk_key(bucket, key, &run.version, index);
                let partition = self.partition_of(crate::hash_bytes(&ckey));
                repaired += self.recover_key(partition, ckey).await?.0;
            }
        }
        Ok(repaired)
    }

    /// Gives every replica of `key` the newest version any of them holds (a record read from
    /// its holder, or a tombstone); the copies repaired and the newest record, if live.
    async fn recover_key(
        &self,
        partition: PartitionId,
        key: Bytes,
    ) -> Result<(u64, Option<StorageResponse>), ShardError> {
        let holders = self.ring().holders(partition)?;
        let lookups = holders.iter().map(|vnode| {
            let request = StorageRequest::Lookup {
                partition,
                key: key.clone(),
            };
            async move { self.send_to_vnode(*vnode, request).await?.into_lookup() }
        });
        let mut held = Vec::with_capacity(holders.len());
        for (vnode, answer) in holders
            .iter()
            .zip(futures_util::future::join_all(lookups).await)
        {
            held.push((*vnode, answer?));
        }
        let Some((holder, newest)) = held
            .iter()
            .filter_map(|(v, found)| found.map(|f| (*v, f)))
            .max_by_key(|(_, found)| found.hlc)
        else {
            return Ok((0, None));
        };
        let record = if newest.tombstone {
            None
        } else {
            let read = StorageRequest::Get {
                partition,
                key: key.clone(),
            };
            Some(self.send_to_vnode(holder, read).await?)
        };
        let repair = match &record {
            Some(answer) => crate::replicated::repair_request(partition, &key, answer),
            None => crate::replicated::repair_request(
                partition,
                &key,
                &StorageResponse::Gone(newest.hlc),
            ),
        };
        let Some(repair) = repair else {
            return Ok((0, record));
        };
        let mut repaired = 0;
        for (vnode, found) in &held {
            if found.is_some_and(|f| f.hlc >= newest.hlc) {
                continue;
            }
            self.send_to_vnode(*vnode, repair.clone()).await?;
            repaired += 1;
        }
        Ok((repaired, record))
    }

    /// Asks every replica of `key` in `bucket` (its storage name) for its record's head.
    async fn whereis(&self, bucket: &str, key: &str) -> Result<Whereabouts, ShardError> {
        let partition = self.object_partition(bucket, key);
        let vnodes = self.ring().holders(partition)?;
        let storage_key = crate::object::object_key(bucket, key);
        let asks = vnodes.iter().map(|vnode| {
            let request = crate::StorageRequest::Head {
                partition,
                key: storage_key.clone(),
            };
            async move { self.send_to_vnode(*vnode, request).await?.into_head() }
        });
        let heads = futures_util::future::join_all(asks).await;
        Ok((partition, vnodes.into_iter().zip(heads).collect()))
    }
}

/// A ring as a node routes by it: the assignment, where each node is, and which nodes are
/// not to be sent requests now.
#[derive(Clone, Debug)]
pub struct InstalledRing {
    /// The ring.
    pub ring: Arc<RingView>,
    /// Each node's `--rpc-listen` address.
    pub nodes: Vec<(NodeId, SocketAddr)>,
    /// Nodes an operator suspended.
    pub unavailable: Vec<NodeId>,
}

/// Installs rings on a running node from any thread (the thread that follows the managers'
/// ring). Send + Sync + Clone.
#[derive(Clone)]
pub struct RingInstaller {
    shared: Arc<NodeShared>,
}

impl RingInstaller {
    /// Makes every core route by `installed` (see [`InstalledRing`]); an older ring than the
    /// one installed is ignored.
    pub fn install(&self, installed: InstalledRing) {
        self.shared.install_ring(installed);
    }

    /// Tells the cores whether this node's clock is off the managers' by more than the
    /// cluster's bound: while it is, they coordinate no replicated write (each fails with 503
    /// and says why), since a stamp from a clock that far off could lose to older writes.
    pub fn set_clock_beyond_bound(&self, beyond: bool) {
        self.shared
            .clock_beyond_bound
            .store(beyond, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the cluster's W, R and D as the managers hold them (None: the defaults for N).
    /// Quorums impossible with the ring's N are not used: the defaults for N are.
    pub fn set_levels(&self, levels: Option<(u16, u16, u16)>) {
        let packed = levels.map_or(0, |(w, r, d)| pack_levels(w, r, d));
        self.shared
            .levels_set
            .store(packed, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the cluster's clock bound: a replica refuses a write stamped further ahead of its
    /// clock than this.
    pub fn set_max_clock_offset(&self, bound: std::time::Duration) {
        let bound_us = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
        self.shared
            .max_clock_offset_us
            .store(bound_us, std::sync::atomic::Ordering::Relaxed);
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// Follows what operators asked of this node's compaction: a pass on every core for each
    /// new `asked` id (ms since the Unix epoch), and background compaction paused or not.
    pub fn set_compaction(&self, asked: u64, suspended: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.shared.compaction_asked.store(asked, Relaxed);
        self.shared.compaction_suspended.store(suspended, Relaxed);
    }

    /// Pauses (or resumes) the cores' part in the rebalance under way, as the managers say.
    pub fn set_rebalance_suspended(&self, suspended: bool) {
        self.shared
            .rebalance_suspended
            .store(suspended, std::sync::atomic::Ordering::Relaxed);
    }

    /// The ring the node routes by now.
    pub fn installed(&self) -> Arc<InstalledRing> {
        self.shared.installed()
    }

    /// Asks whoever follows the managers' ring for a ring of at least `epoch` now (see
    /// [`RingWanted`]); whether anyone does.
    pub fn want_ring(&self, epoch: u64) -> bool {
        self.shared.want_ring(epoch)
    }

    /// Sets what is called when a peer routes by a newer ring than this node's (once; a
    /// second call is ignored and says so).
    pub fn when_ring_wanted(&self, wanted: RingWanted) -> bool {
        self.shared.ring_wanted.set(wanted).is_ok()
    }

    /// Sets what is called when the node's part in a rebalance or recovery moves on (once; a
    /// second call is ignored and says so).
    pub fn when_progressed(&self, progressed: Progressed) -> bool {
        self.shared.progressed.set(progressed).is_ok()
    }
}

/// Set once when shutdown is requested; wakes whoever waits in [`NodeHandle::wait`].
#[derive(Default)]
struct ShutdownState {
    requested: Mutex<bool>,
    changed: Condvar,
    /// Set when the node has stopped: the signal watcher exits.
    finished: AtomicBool,
}

impl ShutdownState {
    fn request(&self) {
        let mut requested = self
            .requested
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *requested = true;
        self.changed.notify_all();
    }

    fn is_requested(&self) -> bool {
        *self
            .requested
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait(&self) {
        let mut requested = self
            .requested
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while !*requested {
            requested = self
                .changed
                .wait(requested)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// Requests a graceful shutdown of the node from any thread. Send + Sync + Clone.
#[derive(Clone)]
pub struct ShutdownTrigger {
    state: Arc<ShutdownState>,
}

impl ShutdownTrigger {
    /// Requests shutdown; [`NodeHandle::wait`] then stops the node. Idempotent.
    pub fn trigger(&self) {
        self.state.request();
    }
}

/// Gathers per-core stats from any thread (blocking). Send + Sync + Clone, for status sources.
#[derive(Clone)]
pub struct NodeStats {
    shared: Arc<NodeShared>,
}

impl NodeStats {
    /// `(core, engine stats, partitions owned, cross-core calls forwarded)` of every core that
    /// answers within [`STATS_TIMEOUT`], by core.
    pub fn core_stats(&self) -> Vec<CoreStats> {
        let cores = self.shared.map.cores();
        let (tx, rx) = mpsc::channel();
        let mut asked = 0;
        for core in 0..cores {
            let message = Message::Control(Control::Stats { reply: tx.clone() });
            if cross_core::post(&self.shared.mailboxes, core, message).is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        let deadline = Instant::now() + STATS_TIMEOUT;
        let mut stats = Vec::with_capacity(asked);
        while stats.len() < asked {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(one) => stats.push(one),
                Err(_) => break,
            }
        }
        stats.sort_by_key(|s| s.core);
        stats
    }

    /// Per-shard `(core, engine stats, partitions owned)`, as [`NodeHandle::stats`].
    pub fn stats(&self) -> Vec<(usize, EngineStats, u32)> {
        self.core_stats()
            .into_iter()
            .map(|s| (s.core, s.engine, s.partitions_owned))
            .collect()
    }

    /// Live keys starting with `prefix` across all cores, in key order, at most `limit`, asked
    /// from a non-core thread (blocking; core 0 runs the merge). For admin checks such as
    /// "is this bucket empty".
    pub fn scan_all(
        &self,
        prefix: impl Into<Bytes>,
        limit: usize,
    ) -> Result<Vec<ScanEntry>, ShardError> {
        let (tx, rx) = mpsc::channel();
        let message = Message::Control(Control::ScanAll {
            prefix: prefix.into(),
            limit,
            reply: tx,
        });
        cross_core::post(&self.shared.mailboxes, 0, message)?;
        rx.recv_timeout(STATS_TIMEOUT)
            .unwrap_or(Err(ShardError::CoreStopped { core: 0 }))
    }

    /// Asks every replica of `key` in `bucket` (its storage name) for its record's head
    /// (blocking; core 0 asks).
    pub fn whereis(&self, bucket: &str, key: &str) -> Result<Whereabouts, ShardError> {
        let (tx, rx) = mpsc::channel();
        let message = Message::Control(Control::Whereis {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reply: tx,
        });
        cross_core::post(&self.shared.mailboxes, 0, message)?;
        rx.recv_timeout(STATS_TIMEOUT * 2)
            .unwrap_or(Err(ShardError::CoreStopped { core: 0 }))
    }

    /// Compares an object (`key` in `bucket`, its storage name) on every replica and gives
    /// each the newest version, with every chunk it names (blocking; core 0 asks); the copies
    /// repaired.
    pub fn recover_file(&self, bucket: &str, key: &str) -> Result<u64, ShardError> {
        let (tx, rx) = mpsc::channel();
        let message = Message::Control(Control::RecoverFile {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reply: tx,
        });
        cross_core::post(&self.shared.mailboxes, 0, message)?;
        rx.recv_timeout(RECOVER_FILE_TIMEOUT)
            .unwrap_or(Err(ShardError::CoreStopped { core: 0 }))
    }

    /// Number of cores of the node.
    pub fn cores(&self) -> usize {
        self.shared.map.cores()
    }

    /// Number of partitions of the node.
    pub fn partitions(&self) -> u32 {
        self.shared.map.partitions()
    }
}

/// One core's counters.
#[derive(Clone, Debug)]
pub struct CoreStats {
    /// The core.
    pub core: usize,
    /// Its engine's counters.
    pub engine: EngineStats,
    /// Partitions it owns.
    pub partitions_owned: u32,
    /// Cross-core calls it forwarded since start.
    pub forwarded_calls: u64,
    /// HTTP connections it serves now (all listeners).
    pub open_connections: usize,
    /// Its garbage collector's counters.
    pub gc: crate::objects::GcStats,
    /// Requests it sent to other nodes over the wire.
    pub wire_requests_sent: u64,
    /// Requests it served for other nodes over the wire.
    pub wire_requests_served: u64,
    /// Requests it answered, by operation and status.
    pub requests: crate::metrics::RequestMetrics,
    /// The gateway's object cache on it.
    pub object_cache: crate::metrics::ObjectCacheStats,
    /// What its lifecycle worker did.
    pub lifecycle: crate::metrics::LifecycleStats,
    /// Hints it holds for replicas that missed writes: (target, count, bytes).
    pub hints_pending: Vec<(Vnode, u64, u64)>,
    /// Hints it replayed since start.
    pub hints_replayed: u64,
    /// Hints it dropped since start (expired, or over a target's cap).
    pub hints_dropped: u64,
    /// What its anti-entropy did and found.
    pub anti_entropy: crate::AntiEntropyStatus,
}

/// A running node, returned by [`start_node`].
pub struct NodeHandle {
    shared: Arc<NodeShared>,
    /// Core threads, by core; each returns its engine's close result.
    threads: Vec<JoinHandle<Result<(), ShardError>>>,
    /// Tells each core to close its engine and exit.
    exits: Vec<oneshot::Sender<()>>,
    /// The SIGTERM/SIGINT watcher thread.
    watcher: Option<JoinHandle<()>>,
}

/// What a core thread reports to the starting thread.
enum CoreEvent {
    /// The engine is open (or failed to open).
    Opened(Result<(), ShardError>),
    /// `init_core` ran (or failed).
    Initialised(Result<(), ShardError>),
}

/// Starts one thread per core (pinned if `config.pin_cores`), each with its own monoio io_uring runtime and engine
/// (`<data_dir>/shard-<i>`), then calls `init_core(shard)` on that thread inside its runtime
/// (that is where the caller spawns its listeners with [`crate::serve_http`]).
///
/// Blocks SIGTERM and SIGINT in the calling thread (see the module docs); call it before
/// spawning other threads that must not receive them.
pub fn start_node<F>(config: NodeConfig, init_core: F) -> Result<NodeHandle, ShardError>
where
    F: Fn(Shard) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync + 'static,
{
    let map = PartitionMap::new(config.partitions, config.cores)?;
    if config.storage {
        ensure_layout(&config.data_dir, config.cores, config.partitions)?;
    }
    let (node_id, ring, peers) = match config.joined {
        Some(joined) => (joined.node_id, joined.ring, Some(joined.peers)),
        None if !config.storage => (SINGLE_NODE_ID, RingView::unstarted(), None),
        None => (
            SINGLE_NODE_ID,
            RingView::single_node(SINGLE_NODE_ID, map),
            None,
        ),
    };
    if config.storage && ring.partitions() != map.partitions() {
        return Err(ShardError::Config(format!(
            "the ring has {} partitions, the node was configured with {}",
            ring.partitions(),
            map.partitions()
        )));
    }
    let signals = block_shutdown_signals()?;
    let (mailboxes, receivers) = cross_core::mailboxes(map.cores());
    let shared = Arc::new(NodeShared {
        mailboxes,
        map,
        node_id,
        current: Mutex::new(Arc::new(InstalledRing {
            ring: Arc::new(ring),
            nodes: peers.as_ref().map(|p| p.nodes.clone()).unwrap_or_default(),
            unavailable: Vec::new(),
        })),
        rpc: config.rpc,
        peers,
        services: config.services,
        shutdown: Arc::new(ShutdownState::default()),
        bound: Mutex::new(Vec::new()),
        balancer: ConnectionBalancer::new(map.cores(), config.connections_per_core_max),
        ring_wanted: std::sync::OnceLock::new(),
        progressed: std::sync::OnceLock::new(),
        clock_beyond_bound: std::sync::atomic::AtomicBool::new(false),
        levels_set: std::sync::atomic::AtomicU64::new(0),
        max_clock_offset_us: std::sync::atomic::AtomicU64::new(
            crate::replication::MAX_CLOCK_OFFSET_US,
        ),
        rebalance_suspended: std::sync::atomic::AtomicBool::new(false),
        compaction_asked: std::sync::atomic::AtomicU64::new(0),
        compaction_suspended: std::sync::atomic::AtomicBool::new(false),
    });
    let cpus = if config.pin_cores {
        allowed_cpus()
    } else {
        Vec::new()
    };
    let init_core = Arc::new(init_core);
    let (events_tx, events) = mpsc::channel();
    let mut handle = NodeHandle {
        shared: shared.clone(),
        threads: Vec::new(),
        exits: Vec::new(),
        watcher: None,
    };
    let mut go_inits = Vec::new();
    for (id, receiver) in receivers.into_iter().enumerate() {
        let (go_init, go_init_rx) = oneshot::channel();
        let (exit, exit_rx) = oneshot::channel();
        go_inits.push(go_init);
        handle.exits.push(exit);
        let engine = config.storage.then(|| {
            let mut engine = config.engine.clone();
            engine.dir = config.data_dir.join(format!("shard-{id}"));
            engine.node_id = crate::ring::issuer_id(shared.node_id, id);
            engine
        });
        let cpu = (!cpus.is_empty()).then(|| cpus[id % cpus.len()]);
        let thread = CoreThread {
            id,
            cpu,
            engine,
            gc: config.gc,
            replication: config.replication,
            shared: shared.clone(),
            receiver,
            go_init: go_init_rx,
            exit: exit_rx,
            events: events_tx.clone(),
            init_core: init_core.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("leofs-core-{id}"))
            .spawn(move || thread.run());
        match spawned {
            Ok(join) => handle.threads.push(join),
            Err(source) => {
                drop(go_inits);
                handle.abort();
                return Err(ShardError::CoreStart { core: id, source });
            }
        }
    }
    drop(events_tx);
    // Every engine opens in parallel; then cores initialise one after another.
    if let Err(e) = wait_opened(&events, map.cores()) {
        drop(go_inits);
        handle.abort();
        return Err(e);
    }
    let mut pending = go_inits.into_iter().enumerate();
    while let Some((id, go_init)) = pending.next() {
        let _ = go_init.send(());
        let initialised = match events.recv() {
            Ok(CoreEvent::Initialised(result)) => result,
            // Only Initialised events are sent at this stage; anything else means the thread died.
            Ok(CoreEvent::Opened(..)) | Err(_) => Err(ShardError::CorePanicked { core: id }),
        };
        if let Err(e) = initialised {
            // Cores not initialised yet see their go-ahead dropped and wait for the exit.
            drop(pending);
            handle.abort();
            return Err(e);
        }
    }
    handle.watcher = Some(spawn_signal_watcher(signals, shared.shutdown.clone())?);
    Ok(handle)
}

/// Waits until every core reported its engine open; the first failure is returned.
fn wait_opened(events: &mpsc::Receiver<CoreEvent>, cores: usize) -> Result<(), ShardError> {
    let mut first_error = None;
    for _ in 0..cores {
        match events.recv() {
            Ok(CoreEvent::Opened(Ok(()))) => {}
            Ok(CoreEvent::Opened(Err(e))) | Ok(CoreEvent::Initialised(Err(e))) => {
                first_error.get_or_insert(e);
            }
            Ok(CoreEvent::Initialised(Ok(()))) => {}
            Err(_) => {
                first_error.get_or_insert(ShardError::CorePanicked { core: 0 });
                break;
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl NodeHandle {
    /// Blocks until SIGTERM/SIGINT or a [`ShutdownTrigger`], then stops listeners, lets in-flight
    /// requests finish (bounded by [`DRAIN_TIMEOUT`]), checkpoints and closes every engine.
    pub fn wait(mut self) -> Result<(), ShardError> {
        self.shared.shutdown.wait();
        tracing::info!("shutting down: draining connections");
        self.drain();
        tracing::info!("closing engines");
        self.stop_threads()
    }

    /// A handle that requests shutdown from any thread.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger {
            state: self.shared.shutdown.clone(),
        }
    }

    /// Per-shard stats, gathered from the core threads (callable from any thread, blocking).
    pub fn stats(&self) -> Vec<(usize, EngineStats, u32)> {
        self.stats_handle().stats()
    }

    /// A handle that installs rings on this node from any thread.
    pub fn ring_installer(&self) -> RingInstaller {
        RingInstaller {
            shared: self.shared.clone(),
        }
    }

    /// A cloneable, thread-safe stats source that outlives [`NodeHandle::wait`]'s borrow.
    pub fn stats_handle(&self) -> NodeStats {
        NodeStats {
            shared: self.shared.clone(),
        }
    }

    /// Addresses the listeners of core 0 are bound to, in the order `init_core` bound them
    /// (the real port when port 0 was asked for).
    pub fn bound_addrs(&self) -> Vec<SocketAddr> {
        let bound = self
            .shared
            .bound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut bound: Vec<_> = bound
            .iter()
            .map(|(ordinal, _, addr)| (*ordinal, *addr))
            .collect();
        bound.sort_by_key(|(ordinal, _)| *ordinal);
        bound.into_iter().map(|(_, addr)| addr).collect()
    }

    /// Tells every core to stop its listeners and waits until their connections are gone.
    fn drain(&self) {
        let (tx, rx) = mpsc::channel();
        let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
        let mut asked = 0;
        for core in 0..self.shared.map.cores() {
            let message = Message::Control(Control::Drain {
                deadline,
                reply: tx.clone(),
            });
            if cross_core::post(&self.shared.mailboxes, core, message).is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        for _ in 0..asked {
            let left = deadline.saturating_duration_since(std::time::Instant::now())
                + DRAIN_POLL_INTERVAL * 10;
            match rx.recv_timeout(left) {
                Ok((core, 0)) => tracing::debug!(core, "drained"),
                Ok((core, live)) => {
                    tracing::warn!(core, live, "connections still open after the drain timeout")
                }
                Err(_) => break,
            }
        }
    }

    /// Tells every core to close its engine and exit; joins them and returns the first error.
    fn stop_threads(&mut self) -> Result<(), ShardError> {
        for exit in self.exits.drain(..) {
            let _ = exit.send(());
        }
        let mut first_error = None;
        for (core, thread) in self.threads.drain(..).enumerate() {
            let result = thread
                .join()
                .unwrap_or(Err(ShardError::CorePanicked { core }));
            if let Err(e) = result {
                tracing::error!(core, error = %e, "core stopped with an error");
                first_error.get_or_insert(e);
            }
        }
        self.shared.shutdown.finished.store(true, Ordering::Release);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops a node that failed to start (no drain: nothing was served yet).
    fn abort(&mut self) {
        self.shared.shutdown.request();
        if let Err(e) = self.stop_threads() {
            tracing::debug!(error = %e, "a core failed while aborting the start");
        }
    }
}

impl Drop for NodeHandle {
    /// A handle dropped without [`NodeHandle::wait`] still stops its cores (without draining).
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.abort();
        }
    }
}

/// Everything one core thread starts with.
struct CoreThread<F> {
    id: usize,
    cpu: Option<usize>,
    /// None: the node has no storage role.
    engine: Option<EngineConfig>,
    gc: crate::objects::GcConfig,
    replication: crate::antientropy::ReplicationConfig,
    shared: Arc<NodeShared>,
    receiver: futures_channel::mpsc::UnboundedReceiver<Message>,
    go_init: oneshot::Receiver<()>,
    exit: oneshot::Receiver<()>,
    events: mpsc::Sender<CoreEvent>,
    init_core: Arc<F>,
}

impl<F> CoreThread<F>
where
    F: Fn(Shard) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync + 'static,
{
    /// The thread body: pin, build the runtime, run the core.
    fn run(self) -> Result<(), ShardError> {
        let id = self.id;
        if let Some(cpu) = self.cpu
            && let Err(e) = monoio::utils::bind_to_cpu_set([cpu])
        {
            tracing::warn!(core = id, cpu, error = %e, "cannot pin core thread; running unpinned");
        }
        let runtime = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build();
        let mut runtime = match runtime {
            Ok(runtime) => runtime,
            Err(source) => {
                let reporter = Reporter::new(id, self.events);
                reporter.opened(Err(ShardError::CoreStart { core: id, source }));
                return Ok(());
            }
        };
        runtime.block_on(self.serve())
    }

    /// Inside the runtime: open the engine, serve the mailbox, initialise when told, close on exit.
    async fn serve(self) -> Result<(), ShardError> {
        let CoreThread {
            id,
            engine,
            gc,
            replication,
            shared,
            receiver,
            go_init,
            exit,
            events,
            init_core,
            ..
        } = self;
        let reporter = Reporter::new(id, events);
        let engine = match engine {
            Some(config) => match Engine::open(config).await {
                Ok(engine) => Some(engine),
                Err(e) => {
                    reporter.opened(Err(e.into()));
                    return Ok(());
                }
            },
            None => None,
        };
        let shard = Shard {
            bucket_levels: None,
            core: Rc::new(Core {
                id,
                node_id: shared.node_id,
                map: shared.map,
                ring: std::cell::RefCell::new(shared.installed().ring.clone()),
                engine: engine.clone(),
                clock: HlcClock::new(crate::ring::issuer_id(shared.node_id, id), Hlc::default()),
                forwarder: Forwarder::new(shared.mailboxes.clone()),
                connections: ConnectionHub::default(),
                remote: RemotePeers::new(shared.peers.as_ref()),
                node: shared.clone(),
                objects: Default::default(),
                requests: Default::default(),
                object_cache: Default::default(),
                lifecycle: Default::default(),
                hints: Default::default(),
                anti_entropy: Default::default(),
                replication,
            }),
        };
        shard.core.objects.config.set(gc);
        if engine.is_some() {
            shard.load_watermarks();
            crate::collector::start(&shard);
            monoio::spawn(crate::hinted::run_replayer(shard.clone()));
            monoio::spawn(crate::antientropy::run(shard.clone()));
            monoio::spawn(follow_compaction_orders(shard.clone()));
        }
        monoio::spawn(crate::remote::run_down_peer_prober(shard.clone()));
        if let Some(rpc) = &shared.rpc
            && let Err(e) = crate::remote::server::start(&shard, rpc)
        {
            reporter.opened(Err(e));
            return Ok(());
        }
        reporter.opened(Ok(()));
        let lifecycle = async {
            if go_init.await.is_ok() {
                let initialised = init_core(shard.clone())
                    .map_err(|source| ShardError::Init { core: id, source });
                reporter.initialised(initialised);
            }
            let _ = exit.await;
        };
        let mailbox = cross_core::run_mailbox(shard.clone(), receiver);
        match select(std::pin::pin!(lifecycle), std::pin::pin!(mailbox)).await {
            Either::Left(((), _)) | Either::Right(((), _)) => {}
        }
        shard.core.connections.stop_all();
        crate::collector::stop(&shard);
        drop(shard);
        if let Some(engine) = engine {
            engine.close().await?;
            tracing::debug!(core = id, "engine closed");
        }
        Ok(())
    }
}

/// Reports a core's start to [`start_node`]; if the thread dies (panics) before it finished
/// starting, the drop reports that instead, so the starting thread never waits forever.
struct Reporter {
    core: usize,
    events: mpsc::Sender<CoreEvent>,
    stage: std::cell::Cell<StartStage>,
}

/// How far a core got in starting.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StartStage {
    Opening,
    Initialising,
    Started,
}

impl Reporter {
    fn new(core: usize, events: mpsc::Sender<CoreEvent>) -> Self {
        Self {
            core,
            events,
            stage: std::cell::Cell::new(StartStage::Opening),
        }
    }

    fn opened(&self, result: Result<(), ShardError>) {
        let next = if result.is_ok() {
            StartStage::Initialising
        } else {
            StartStage::Started
        };
        self.stage.set(next);
        let _ = self.events.send(CoreEvent::Opened(result));
    }

    fn initialised(&self, result: Result<(), ShardError>) {
        self.stage.set(StartStage::Started);
        let _ = self.events.send(CoreEvent::Initialised(result));
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let died = Err(ShardError::CorePanicked { core: self.core });
        let _ = match self.stage.get() {
            StartStage::Opening => self.events.send(CoreEvent::Opened(died)),
            StartStage::Initialising => self.events.send(CoreEvent::Initialised(died)),
            StartStage::Started => Ok(()),
        };
    }
}

/// CPUs this process may run on, in order (empty if unknown: threads are then left unpinned).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data, valid when zeroed; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it, and CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread (inherited by threads it spawns later) and
/// returns the set, for a thread that takes them with `sigtimedwait` (the node's watcher, or
/// `leofs demo`'s main thread).
pub fn block_shutdown_signals() -> Result<libc::sigset_t, ShardError> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use; pthread_sigmask
    // only changes the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(ShardError::CoreStart {
                core: 0,
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        Ok(set)
    }
}

/// Takes SIGTERM/SIGINT on a dedicated thread: the first requests a graceful shutdown, a second
/// one exits the process immediately.
fn spawn_signal_watcher(
    signals: libc::sigset_t,
    shutdown: Arc<ShutdownState>,
) -> Result<JoinHandle<()>, ShardError> {
    std::thread::Builder::new()
        .name("leofs-signals".to_owned())
        .spawn(move || {
            let timeout = libc::timespec {
                tv_sec: 0,
                tv_nsec: SIGNAL_POLL_INTERVAL.as_nanos() as libc::c_long,
            };
            while !shutdown.finished.load(Ordering::Acquire) {
                // SAFETY: `signals` is an initialised set; a null siginfo pointer is allowed.
                let signal =
                    unsafe { libc::sigtimedwait(&signals, std::ptr::null_mut(), &timeout) };
                if signal != libc::SIGTERM && signal != libc::SIGINT {
                    continue;
                }
                let name = if signal == libc::SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                if shutdown.is_requested() {
                    tracing::warn!(signal = name, "second signal during shutdown: exiting now");
                    std::process::exit(1);
                }
                // Request first: the shutdown must not depend on logging working.
                shutdown.request();
                tracing::info!(signal = name, "signal received: graceful shutdown");
            }
        })
        .map_err(|source| ShardError::CoreStart { core: 0, source })
}
