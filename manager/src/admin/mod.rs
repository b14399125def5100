//! The admin API: HTTP+JSON on its own OS thread (a current-thread monoio runtime serving hyper
//! http1), bound to loopback by default, every request authorized by the bearer token stored in
//! `<data_dir>/manager/admin.token`. It never touches the data path: object counts and bucket
//! emptiness come from the node through [`NodeStatusSource`].
//!
//! Connections: at most [`MAX_ADMIN_CONNECTIONS`] are served at once, each for at most
//! [`MAX_ADMIN_CONNECTION_MS`]. When all are taken, a new connection replaces the one that has
//! been idle the longest (no request being handled on it), as a web server reuses idle keep-alive
//! connections: idle or half-sent connections cannot lock an operator out. Only when every
//! connection is busy with a request is a new one closed.

mod metrics;
mod routes;
pub mod wire;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::{Either, select};
use hyper_util::rt::TokioIo;
use monoio::io::IntoPollIo;

use crate::{Manager, ManagerError};

/// Most admin connections served at once; a new one beyond replaces the one idle the longest.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Longest an admin connection may stay open (bounds slow or idle clients; requests are tiny).
pub const MAX_ADMIN_CONNECTION_MS: u64 = 60_000;
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY_DELAY_MS: u64 = 100;
/// How long `shutdown` waits to connect to the listener to wake its accept loop.
const WAKE_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// What the node tells the admin API about itself; implemented by the binary over the running node.
pub trait NodeStatusSource: Send + Sync + 'static {
    /// A point-in-time view of the node and its shards (may block briefly to gather shard stats).
    fn node_status(&self) -> NodeStatus;

    /// Whether `bucket` holds no object (`None`: this node cannot tell). `delete-bucket` only
    /// removes a bucket when this returns `Some(true)`; the default refuses every deletion.
    fn bucket_is_empty(&self, bucket: &crate::Bucket) -> Option<bool> {
        let _ = bucket;
        None
    }

    /// Where the replicas of `key` in `bucket` are and what each holds (`leofs-adm whereis`);
    /// None: this node cannot ask the storage nodes.
    fn whereis(&self, bucket: &crate::Bucket, key: &str) -> Option<wire::Whereabouts> {
        let _ = (bucket, key);
        None
    }

    /// Compares `key` in `bucket` on every replica and gives each the newest version, with
    /// its chunks (`leofs-adm recover-file`): the copies repaired, or why it failed; None:
    /// this node cannot ask the storage nodes.
    fn recover_file(&self, bucket: &crate::Bucket, key: &str) -> Option<Result<u64, String>> {
        let _ = (bucket, key);
        None
    }
}

/// The node as `leofs-adm status` shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// leofs version.
    pub version: String,
    /// The S3 endpoint URL or address.
    pub s3_endpoint: String,
    /// Cores (shards) serving.
    pub cores: usize,
    /// Partitions of the ring.
    pub partitions: u32,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// One entry per shard.
    pub shards: Vec<ShardStatus>,
    /// Upper bounds of the request latency buckets, in microseconds.
    #[serde(default)]
    pub latency_buckets_us: Vec<u64>,
    /// This node's clock minus the managers' (µs), as its heartbeats measured it; None until
    /// measured.
    #[serde(default)]
    pub clock_offset_us: Option<i64>,
    /// This node's clock offset from each storage node it reached, measured directly.
    #[serde(default)]
    pub peer_clocks: Vec<crate::cluster::PeerClock>,
}

/// The hints a core holds for one replica (a vnode of another node) that missed writes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HintsPending {
    /// The replica's node.
    pub node: u32,
    /// The replica's shard.
    pub shard: u16,
    /// Hints held for it.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One shard (core) of the node: its partitions and its engine's figures.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ShardStatus {
    /// Core index.
    pub core: usize,
    /// Partitions this core owns.
    pub partitions_owned: u32,
    /// Live objects (records).
    pub live_records: u64,
    /// Tombstones not yet compacted away.
    pub tombstones: u64,
    /// Bytes of live data.
    pub live_bytes: u64,
    /// Bytes of dead data (reclaimable by compaction).
    pub dead_bytes: u64,
    /// Log segments on disk.
    pub segments: u64,
    /// Bytes of the in-memory index.
    pub index_bytes: u64,
    /// Records found corrupt while reading or recovering.
    pub corrupt_records: u64,
    /// Free segments (recycled or pre-allocated, the compaction spare among them).
    #[serde(default)]
    pub free_segments: u64,
    /// Whether a write was refused for lack of room in the last 10 s (its disk is full).
    #[serde(default)]
    pub disk_full: bool,
    /// Writes refused for lack of room since start.
    #[serde(default)]
    pub writes_refused_disk_full: u64,
    /// Segments set aside because their header could not be established (entries into them
    /// read as corrupt until they are repaired).
    #[serde(default)]
    pub segments_set_aside: u64,
    /// Garbage-queue entries (replaced, deleted or abandoned chunks) not yet collected.
    #[serde(default)]
    pub garbage_pending: u64,
    /// Chunks the garbage queue collected since start.
    #[serde(default)]
    pub chunks_collected: u64,
    /// Orphan chunks the sweeper collected since start.
    #[serde(default)]
    pub orphan_chunks_swept: u64,
    /// Requests this core sent to other nodes over the wire since start.
    #[serde(default)]
    pub wire_requests_sent: u64,
    /// Requests this core served for other nodes over the wire since start.
    #[serde(default)]
    pub wire_requests_served: u64,
    /// Reads served from the engine's cache since start.
    #[serde(default)]
    pub cache_hits: u64,
    /// Reads that missed the engine's cache since start.
    #[serde(default)]
    pub cache_misses: u64,
    /// Calls this core forwarded to other cores since start.
    #[serde(default)]
    pub cross_core_calls: u64,
    /// HTTP connections it serves now.
    #[serde(default)]
    pub open_connections: u64,
    /// Hints it holds for replicas that missed writes, by target.
    #[serde(default)]
    pub hints_pending: Vec<HintsPending>,
    /// Hints it replayed to their replica since start.
    #[serde(default)]
    pub hints_replayed: u64,
    /// Hints it dropped since start (expired, or over a target's cap): those partitions are
    /// left to anti-entropy.
    #[serde(default)]
    pub hints_dropped: u64,
    /// Anti-entropy passes this core ran since start.
    #[serde(default)]
    pub anti_entropy_passes: u64,
    /// Entries anti-entropy pushed to replicas that lacked them since start.
    #[serde(default)]
    pub anti_entropy_repaired: u64,
    /// Partitions this core drives whose last anti-entropy pass did not find all N replicas
    /// answering and identical.
    #[serde(default)]
    pub partitions_under_replicated: u64,
    /// Seconds since the longest-unrepaired of those partitions was last found identical on
    /// all N replicas (0: none is).
    #[serde(default)]
    pub oldest_unrepaired_partition_seconds: u64,
    /// S3 requests it answered since start, by operation and status.
    #[serde(default)]
    pub requests: Vec<RequestStatus>,
    /// The gateway's object cache on this core: what it holds and did since start.
    #[serde(default)]
    pub gateway_cache: GatewayCacheStatus,
    /// What this core's lifecycle worker did since start.
    #[serde(default)]
    pub lifecycle: LifecycleStatus,
}

/// One core's lifecycle worker (see `leofs_gateway::lifecycle`), or a node's cores together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LifecycleStatus {
    /// Passes over the partitions the core decides for.
    pub passes: u64,
    /// Versions (and delete markers) examined.
    pub examined: u64,
    /// Current versions expired (a delete marker added, or deleted when never versioned).
    pub expired: u64,
    /// Noncurrent versions deleted for good.
    pub noncurrent_deleted: u64,
    /// Delete markers that were their key's only version, deleted.
    pub markers_removed: u64,
    /// Incomplete multipart uploads aborted.
    pub uploads_aborted: u64,
}

impl LifecycleStatus {
    /// The figures of two workers together (a node's cores).
    pub fn plus(self, other: Self) -> Self {
        Self {
            passes: self.passes + other.passes,
            examined: self.examined + other.examined,
            expired: self.expired + other.expired,
            noncurrent_deleted: self.noncurrent_deleted + other.noncurrent_deleted,
            markers_removed: self.markers_removed + other.markers_removed,
            uploads_aborted: self.uploads_aborted + other.uploads_aborted,
        }
    }
}

/// One core's gateway object cache (see `leofs_gateway::cache`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GatewayCacheStatus {
    /// Reads answered from the cache, the replicas having confirmed the version current.
    pub hits: u64,
    /// Reads of objects it did not hold.
    pub misses: u64,
    /// Reads of objects it held in an older version than the replicas' (revalidation failed).
    pub stale: u64,
    /// Digest reads made to confirm a version held as the newest.
    #[serde(default)]
    pub revalidations: u64,
    /// Entries dropped to make room.
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Reads answered from the disk cache (gateway-only nodes), the version confirmed.
    #[serde(default)]
    pub disk_hits: u64,
    /// Disk cache entries found damaged on read and dropped.
    #[serde(default)]
    pub disk_dropped: u64,
    /// Entries not written to the disk cache (its writer's queue full).
    #[serde(default)]
    pub disk_skipped: u64,
    /// Disk cache writes that failed (a full or failing cache disk).
    #[serde(default)]
    pub disk_write_failures: u64,
    /// Entries the disk cache holds now.
    #[serde(default)]
    pub disk_entries: u64,
    /// Disk space the disk cache takes now.
    #[serde(default)]
    pub disk_bytes: u64,
}

impl GatewayCacheStatus {
    /// The figures of two caches together (a node's cores).
    pub fn plus(self, other: Self) -> Self {
        Self {
            hits: self.hits + other.hits,
            misses: self.misses + other.misses,
            stale: self.stale + other.stale,
            revalidations: self.revalidations + other.revalidations,
            evictions: self.evictions + other.evictions,
            entries: self.entries + other.entries,
            bytes: self.bytes + other.bytes,
            disk_hits: self.disk_hits + other.disk_hits,
            disk_dropped: self.disk_dropped + other.disk_dropped,
            disk_skipped: self.disk_skipped + other.disk_skipped,
            disk_write_failures: self.disk_write_failures + other.disk_write_failures,
            disk_entries: self.disk_entries + other.disk_entries,
            disk_bytes: self.disk_bytes + other.disk_bytes,
        }
    }
}

/// The S3 requests one core answered with one status for one operation.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RequestStatus {
    /// The S3 operation (`GetObject`, `PutObject`, …, `Other`).
    pub operation: String,
    /// The HTTP status.
    pub status: u16,
    /// Requests.
    pub requests: u64,
    /// Request body bytes declared.
    pub bytes_in: u64,
    /// Answer body bytes.
    pub bytes_out: u64,
    /// Sum of the times to the answer's head, in microseconds.
    pub latency_us_sum: u64,
    /// Requests per latency bucket ([`NodeStatus::latency_buckets_us`], then the rest).
    pub latency_buckets: Vec<u64>,
}

/// A running admin API server; `shutdown` stops it. Dropping it leaves the server running until
/// the process exits.
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl AdminServer {
    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, drops open connections and joins the server thread.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop with a connection of our own; it then sees `stop`.
        let wake_addr = SocketAddr::new(connectable(self.local_addr.ip()), self.local_addr.port());
        if let Err(err) =
            TcpStream::connect_timeout(&wake_addr, Duration::from_millis(WAKE_CONNECT_TIMEOUT_MS))
        {
            tracing::warn!(%wake_addr, %err, "could not wake the admin API accept loop");
        }
        if self.thread.join().is_err() {
            tracing::error!("the admin API thread panicked");
        }
    }
}

/// An address to connect to for a listener bound to `ip` (loopback for a wildcard bind).
fn connectable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// Serves the admin API on its own OS thread (loopback by default), token-protected.
pub fn spawn_admin_server(
    addr: SocketAddr,
    manager: Arc<Manager>,
    status: Arc<dyn NodeStatusSource>,
) -> Result<AdminServer, ManagerError> {
    let bind_error = |source| ManagerError::AdminBind { addr, source };
    let listener = TcpListener::bind(addr).map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    if !local_addr.ip().is_loopback() {
        tracing::warn!(%local_addr, "the admin API listens beyond loopback; only the token protects it");
    }
    let context = routes::AdminContext::new(manager, status);
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("leofs-admin".to_owned())
        .spawn(move || run_server(listener, context, thread_stop, ready_tx))
        .map_err(bind_error)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(AdminServer {
            local_addr,
            stop,
            thread,
        }),
        Ok(Err(source)) => {
            // The thread has already returned after reporting the failure.
            let _ = thread.join();
            Err(bind_error(source))
        }
        Err(_) => Err(bind_error(io::Error::other(
            "the admin API thread exited while starting",
        ))),
    }
}

/// The server thread: a current-thread monoio runtime accepting until `stop` is set.
fn run_server(
    listener: TcpListener,
    context: routes::AdminContext,
    stop: Arc<AtomicBool>,
    ready: mpsc::SyncSender<io::Result<()>>,
) {
    let mut runtime = match monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let context = Rc::new(context);
        let connections = Rc::new(Connections::default());
        loop {
            let accepted = listener.accept().await;
            if stop.load(Ordering::Acquire) {
                break;
            }
            match accepted {
                Ok((stream, peer)) => {
                    let Some(admitted) = connections.admit() else {
                        tracing::warn!(%peer, "every admin API connection is busy with a request; closing connection");
                        continue;
                    };
                    monoio::spawn(serve_connection(stream, Rc::clone(&context), admitted));
                }
                Err(err) => {
                    tracing::warn!(%err, "admin API accept failed");
                    // Blocking this thread is fine: it only serves the admin API.
                    std::thread::sleep(Duration::from_millis(ACCEPT_RETRY_DELAY_MS));
                }
            }
        }
    });
}

/// The admin connections of the server thread (see the module docs).
#[derive(Default)]
struct Connections {
    next_id: Cell<u64>,
    /// Every connection whose task still runs, by accept order.
    live: RefCell<BTreeMap<u64, Connection>>,
}

/// One admin connection as [`Connections`] sees it.
struct Connection {
    activity: Activity,
    /// Tells the connection's task to drop it; `None` once sent.
    replace: Option<oneshot::Sender<()>>,
}

/// When a connection last did something, and whether it is doing something now.
#[derive(Clone)]
struct Activity {
    /// Requests being handled on the connection.
    in_flight: Rc<Cell<usize>>,
    /// When a request last started or ended on it (its accept time at first).
    last: Rc<Cell<Instant>>,
}

impl Activity {
    /// Marks a request as being handled until the guard drops.
    fn begin(&self) -> Busy {
        self.in_flight.set(self.in_flight.get() + 1);
        self.last.set(Instant::now());
        Busy(self.clone())
    }
}

/// A request being handled (see [`Activity::begin`]).
struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .in_flight
            .set(activity.in_flight.get().saturating_sub(1));
        activity.last.set(Instant::now());
    }
}

/// A connection admitted by [`Connections::admit`]; leaves the set when dropped.
struct Admitted {
    connections: Rc<Connections>,
    id: u64,
    activity: Activity,
    /// Resolves when the connection is replaced by a newer one.
    replaced: Option<oneshot::Receiver<()>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.live.borrow_mut().remove(&self.id);
    }
}

impl Connections {
    /// Admits a new connection. When [`MAX_ADMIN_CONNECTIONS`] are served, the one idle the
    /// longest is told to go (its task drops it at once); `None` when every connection is busy
    /// with a request, or when that many replaced ones have not ended yet.
    fn admit(self: &Rc<Self>) -> Option<Admitted> {
        let mut live = self.live.borrow_mut();
        let serving = live.values().filter(|c| c.replace.is_some()).count();
        if serving >= MAX_ADMIN_CONNECTIONS {
            let idlest = live
                .values_mut()
                .filter(|c| c.replace.is_some() && c.activity.in_flight.get() == 0)
                .min_by_key(|c| c.activity.last.get())?;
            if let Some(replace) = idlest.replace.take() {
                // A task that already ended has dropped its receiver: nothing to tell it.
                let _ = replace.send(());
            }
        }
        if live.len() >= 2 * MAX_ADMIN_CONNECTIONS {
            return None;
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let activity = Activity {
            in_flight: Rc::new(Cell::new(0)),
            last: Rc::new(Cell::new(Instant::now())),
        };
        let (replace, replaced) = oneshot::channel();
        live.insert(
            id,
            Connection {
                activity: activity.clone(),
                replace: Some(replace),
            },
        );
        Some(Admitted {
            connections: Rc::clone(self),
            id,
            activity,
            replaced: Some(replaced),
        })
    }
}

/// Serves one connection with hyper http1 (keep-alive) until the client closes it, it reaches
/// [`MAX_ADMIN_CONNECTION_MS`], or a newer connection replaces it while it is idle.
async fn serve_connection(
    stream: monoio::net::TcpStream,
    context: Rc<routes::AdminContext>,
    mut admitted: Admitted,
) {
    let io = match stream.into_poll_io() {
        Ok(io) => TokioIo::new(io),
        Err(err) => {
            tracing::debug!(%err, "admin API connection setup failed");
            return;
        }
    };
    let activity = admitted.activity.clone();
    let service = hyper::service::service_fn(move |request| {
        let context = Rc::clone(&context);
        let busy = activity.begin();
        async move {
            let response = routes::handle(&context, request).await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    let bounded = monoio::time::timeout(Duration::from_millis(MAX_ADMIN_CONNECTION_MS), connection);
    let Some(replaced) = admitted.replaced.take() else {
        return;
    };
    match select(pin!(bounded), replaced).await {
        Either::Left((Ok(Ok(())), _)) => {}
        Either::Left((Ok(Err(err)), _)) => {
            tracing::debug!(%err, "admin API connection ended with an error");
        }
        Either::Left((Err(_), _)) => {
            tracing::debug!("admin API connection closed after {MAX_ADMIN_CONNECTION_MS} ms");
        }
        Either::Right(_) => {
            tracing::debug!("idle admin API connection replaced by a new one");
        }
    }
}
