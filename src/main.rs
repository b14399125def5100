//! `leofs`: the storage node binary. This file parses arguments and configuration (flag > env >
//! leofs.toml > default) and wires the manager, the admin API, the thread-per-core node and the
//! S3 gateway together; the work lives in the crates.

use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use leofs_engine::{EngineConfig, SyncPolicy};
use leofs_gateway::GatewayConfig;
use leofs_gateway::cluster::{
    CatalogCopy, ManagerPeers, ManagerServices, WireRaftTransport, installed_ring,
};
use leofs_manager::admin::wire::{Replica, Whereabouts};
use leofs_manager::admin::{
    NodeStatus, NodeStatusSource, RequestStatus, ShardStatus, spawn_admin_server,
};
use leofs_manager::cluster::{MEMBERSHIP_FORMAT_VERSION, Registration, RingRecord};
use leofs_manager::raft::network::RaftTransport;
use leofs_manager::store::{
    ADMIN_USER_ID, CLUSTER_ID_FILE, GroupOptions, load_cluster_id, load_or_create_secret,
    new_cluster_id, store_cluster_id,
};
use leofs_manager::{Credentials, Manager};
use leofs_shard::ring::NO_VNODE_NODE_ID;
use leofs_shard::{
    DEFAULT_CONNECTIONS_PER_CORE_MAX, DEFAULT_PARTITIONS, GcConfig, JoinedCluster, NodeConfig,
    NodeServices, NodeStats, PartitionMap, PeersConfig, ReplicationConfig, RingView, RpcConfig,
    ShardError, read_layout, start_node,
};
use membership::Registry;

mod demo;
mod membership;
mod peer_clock;
use leofs_wire::{ClusterAuth, ClusterId, ClusterSecret};
use serde::Deserialize;

/// The process allocator. With glibc malloc the server's RSS grew by ~60 MB/s of 4 KiB PUTs
/// (723 MB after 10 s) while heaptrack saw a heap peak of 40 MB: its per-thread arenas kept
/// the freed memory (see BENCHMARKS.md). mimalloc stays near the live heap and is faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Data directory when none is configured.
const DEFAULT_DATA_DIR: &str = "./leofs-data";
/// S3 listen address when none is configured.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Admin API listen address when none is configured.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:10010";
/// Region when none is configured.
const DEFAULT_REGION: &str = "us-east-1";
/// Configuration file read from the working directory when present and no --config is given.
const DEFAULT_CONFIG_FILE: &str = "leofs.toml";

/// leofs: a thread-per-core S3-compatible object store.
#[derive(Parser)]
#[command(name = "leofs", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: S3 API, admin API and one shard per core (all three roles by default).
    Server(Box<ServerArgs>),
    /// Start a local cluster of separate processes on loopback (managers, storage nodes,
    /// gateways) and stop it on Ctrl-C.
    Demo(demo::DemoArgs),
}

/// Flags of `leofs server`; each also reads its LEOFS_* environment variable.
#[derive(Args)]
struct ServerArgs {
    /// Configuration file (default: ./leofs.toml if present).
    #[arg(long, value_name = "FILE", env = "LEOFS_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./leofs-data].
    #[arg(long, value_name = "DIR", env = "LEOFS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// S3 listen address [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", env = "LEOFS_LISTEN")]
    listen: Option<SocketAddr>,
    /// Admin API listen address [default: 127.0.0.1:10010].
    #[arg(long, value_name = "ADDR", env = "LEOFS_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// LeoFS REST API listen address [default: off].
    #[arg(long, value_name = "ADDR", env = "LEOFS_REST_LISTEN")]
    rest_listen: Option<SocketAddr>,
    /// Cores (shards) [default: the data dir's count, else the number of CPUs]; fixed when the
    /// data dir is created.
    #[arg(long, value_name = "N", env = "LEOFS_CORES")]
    cores: Option<usize>,
    /// Domain for virtual-host-style buckets (`bucket.DOMAIN`) [default: path style only].
    #[arg(long, value_name = "DOMAIN", env = "LEOFS_DOMAIN")]
    domain: Option<String>,
    /// Region reported to S3 clients [default: us-east-1].
    #[arg(long, value_name = "REGION", env = "LEOFS_REGION")]
    region: Option<String>,
    /// Pin each core thread to one CPU [default: false]; `true` on a host leofs has to itself
    /// (unpinned threads do better when a client or other nodes share the CPUs).
    #[arg(long, value_name = "BOOL", env = "LEOFS_PIN_CORES")]
    pin_cores: Option<bool>,
    /// Seconds a request body may make no progress before the request ends with
    /// RequestTimeout [default: 30].
    #[arg(long, value_name = "SECS", env = "LEOFS_BODY_IDLE_TIMEOUT_SECS")]
    body_idle_timeout_secs: Option<u64>,
    /// Bytes of each gateway core's object cache (0: none) [default: an eighth of the memory
    /// (physical, or the cgroup's limit when lower) split across the cores on a node without
    /// the storage role, else 0: its engines cache what they store].
    #[arg(long, value_name = "BYTES", env = "LEOFS_GATEWAY_CACHE_BYTES_PER_CORE")]
    gateway_cache_bytes_per_core: Option<u64>,
    /// Milliseconds a gateway serves a cached object of a bucket read at R=1 without asking
    /// its replica again, after the replica last confirmed it: how stale such a read may be
    /// after an overwrite or delete through another gateway (0: every hit is confirmed)
    /// [default: 0].
    #[arg(long, value_name = "MS", env = "LEOFS_GATEWAY_CACHE_R1_STALENESS_MS")]
    gateway_cache_r1_staleness_ms: Option<u64>,
    /// Seconds in a lifecycle "day": lifecycle rules count their days in it, and expiries
    /// round up to a multiple of it (S3's midnight UTC). Only tests shorten it
    /// [default: 86400].
    #[arg(long, value_name = "SECS", env = "LEOFS_LIFECYCLE_DAY_SECS")]
    lifecycle_day_secs: Option<u64>,
    /// Milliseconds between two passes of a storage core's lifecycle worker over its
    /// partitions [default: 3600000, an hour].
    #[arg(long, value_name = "MS", env = "LEOFS_LIFECYCLE_INTERVAL_MS")]
    lifecycle_interval_ms: Option<u64>,
    /// Disk space each gateway core's disk cache may take, in bytes (0: none); beneath the
    /// memory cache (which it needs), it survives restarts [default: a quarter of the data
    /// directory's file system, at most 64 GiB, split across the cores, on a node without the
    /// storage role; else 0, though a value given turns it on there too].
    #[arg(
        long,
        value_name = "BYTES",
        env = "LEOFS_GATEWAY_DISK_CACHE_BYTES_PER_CORE"
    )]
    gateway_disk_cache_bytes_per_core: Option<u64>,
    /// Write every S3 and REST request this node answers to FILE, in S3's server access log
    /// format [default: no access log].
    #[arg(long, value_name = "FILE", env = "LEOFS_ACCESS_LOG")]
    access_log: Option<PathBuf>,
    /// Size at which the access log is rotated to FILE.1 [default: 67108864, 64 MiB].
    #[arg(long, value_name = "BYTES", env = "LEOFS_ACCESS_LOG_MAX_BYTES")]
    access_log_max_bytes: Option<u64>,
    /// Rotated access log files kept (FILE.1 … FILE.N; 0: none) [default: 5].
    #[arg(long, value_name = "N", env = "LEOFS_ACCESS_LOG_FILES")]
    access_log_files: Option<u32>,
    /// Most connections one core serves; beyond, new connections get 503 SlowDown
    /// [default: 1024].
    #[arg(long, value_name = "N", env = "LEOFS_CONNECTIONS_PER_CORE_MAX")]
    connections_per_core_max: Option<usize>,
    /// Longest time a GET keeps the chunks it streams from being collected after an overwrite or
    /// delete; orphan chunks are swept within it [default: 3600].
    #[arg(long, value_name = "SECS", env = "LEOFS_CHUNK_GRACE_SECS")]
    chunk_grace_secs: Option<u64>,
    /// Milliseconds between two anti-entropy passes of each core, each over the next
    /// partition it drives (a replicated ring only) [default: 1000].
    #[arg(long, value_name = "MS", env = "LEOFS_ANTI_ENTROPY_INTERVAL_MS")]
    anti_entropy_interval_ms: Option<u64>,
    /// Seconds a hint for a replica that missed a write is kept; past it, it is dropped and
    /// anti-entropy repairs the partition [default: 10800].
    #[arg(long, value_name = "SECS", env = "LEOFS_HINT_TTL_SECS")]
    hint_ttl_secs: Option<u64>,
    /// Most entries one anti-entropy pass takes from each replica; a partition with more that
    /// differ is compared over several passes [default: 65536].
    #[arg(long, value_name = "N", env = "LEOFS_ANTI_ENTROPY_ENTRIES_PER_PASS")]
    anti_entropy_entries_per_pass: Option<usize>,
    /// Most bytes per second each core of this storage node pushes to other replicas:
    /// rebalance fills, hand-overs, recoveries and anti-entropy repairs [default: no cap; they
    /// go as fast as the disks while no client is served, and are paced while clients are].
    #[arg(long, value_name = "BYTES", env = "LEOFS_PUSH_BYTES_PER_SEC_PER_CORE")]
    push_bytes_per_sec_per_core: Option<u64>,
    /// This node's roles, any of `manager,storage,gateway` [default: all three]. Supported
    /// today: all three; `manager,storage` (with --rpc-listen); `manager` (with --rpc-listen);
    /// `gateway` (with --join).
    #[arg(long, value_name = "ROLES", env = "LEOFS_ROLES")]
    roles: Option<String>,
    /// Address peers reach this node's storage on; shard i listens on its port + i
    /// [default: off].
    #[arg(long, value_name = "ADDR", env = "LEOFS_RPC_LISTEN")]
    rpc_listen: Option<SocketAddr>,
    /// The --rpc-listen addresses of the cluster's managers, comma-separated (list every
    /// manager). A node without the manager role registers there and keeps a copy of the
    /// catalog and the ring; a manager joins their group instead of starting one of its own (it
    /// is added with `leofs-adm add-manager`).
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        env = "LEOFS_JOIN",
        value_delimiter = ','
    )]
    join: Vec<SocketAddr>,
    /// This storage node's zone (rack, room): replicas of a partition go to distinct zones
    /// [default: none].
    #[arg(long, value_name = "ZONE", env = "LEOFS_ZONE")]
    zone: Option<String>,
    /// File holding the cluster secret [default: LEOFS_CLUSTER_SECRET, else
    /// <data dir>/cluster.secret, generated there by a node with the manager role].
    #[arg(long, value_name = "FILE", env = "LEOFS_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Start a new manager group of one from this manager's catalog, setting its Raft log
    /// aside: the way back after the group lost its quorum for good (README: "Recovering a
    /// manager group"). Never while the old group can still elect a leader.
    #[arg(long)]
    recover_group: bool,
}

/// The keys of leofs.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    rest_listen: Option<SocketAddr>,
    cores: Option<usize>,
    domain: Option<String>,
    region: Option<String>,
    pin_cores: Option<bool>,
    body_idle_timeout_secs: Option<u64>,
    gateway_cache_bytes_per_core: Option<u64>,
    gateway_cache_r1_staleness_ms: Option<u64>,
    lifecycle_day_secs: Option<u64>,
    lifecycle_interval_ms: Option<u64>,
    gateway_disk_cache_bytes_per_core: Option<u64>,
    access_log: Option<PathBuf>,
    access_log_max_bytes: Option<u64>,
    access_log_files: Option<u32>,
    connections_per_core_max: Option<usize>,
    chunk_grace_secs: Option<u64>,
    anti_entropy_interval_ms: Option<u64>,
    hint_ttl_secs: Option<u64>,
    anti_entropy_entries_per_pass: Option<usize>,
    push_bytes_per_sec_per_core: Option<u64>,
    roles: Option<String>,
    rpc_listen: Option<SocketAddr>,
    join: Option<JoinList>,
    zone: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    #[serde(default)]
    engine: EngineFileConfig,
}

/// `join` in leofs.toml: one address or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JoinList {
    One(SocketAddr),
    Many(Vec<SocketAddr>),
}

/// The `[engine]` table of leofs.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineFileConfig {
    segment_size_bytes: Option<u64>,
    /// "always" | "batch:<ms>" | "none-unsafe".
    sync: Option<String>,
    cache_bytes: Option<u64>,
    cache_object_bytes_max: Option<u64>,
}

/// The server configuration after precedence is applied.
struct ServerConfig {
    data_dir: PathBuf,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    /// Whether the admin address was configured (a node without the manager role serves
    /// `/metrics` there only then: by default every node would take the same port).
    admin_listen_given: bool,
    rest_listen: Option<SocketAddr>,
    /// Explicitly configured core count, if any.
    cores: Option<usize>,
    /// Whether core threads are pinned to CPUs.
    pin_cores: bool,
    /// Most connections one core serves.
    connections_per_core_max: usize,
    /// Garbage collection of chunks (read-lease grace, orphan sweeps).
    gc: GcConfig,
    /// Anti-entropy's rate and the hints' lifetime.
    replication: ReplicationConfig,
    gateway: GatewayConfig,
    engine: EngineConfig,
    /// Whether `engine.cache_bytes` was configured (else it is sized from the machine's memory).
    cache_configured: bool,
    /// Bytes of each gateway core's object cache, if configured (else sized by the roles).
    gateway_cache_bytes_per_core: Option<u64>,
    /// Disk space of each gateway core's disk cache, if configured (else sized by the roles).
    gateway_disk_cache_bytes_per_core: Option<u64>,
    /// The access log, if one is configured.
    access_log: Option<leofs_gateway::access_log::AccessLogConfig>,
    /// This node's roles.
    roles: Roles,
    /// Where peers reach this node's storage.
    rpc_listen: Option<SocketAddr>,
    /// The managers to join.
    join: Vec<SocketAddr>,
    /// This storage node's zone.
    zone: String,
    /// The cluster secret's file, if configured.
    cluster_secret_file: Option<PathBuf>,
    /// Start a new manager group of one from this manager's catalog.
    recover_group: bool,
}

/// Which of the three roles a node runs (DESIGN §9a).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Roles {
    manager: bool,
    storage: bool,
    gateway: bool,
}

impl Roles {
    const ALL: Roles = Roles {
        manager: true,
        storage: true,
        gateway: true,
    };

    /// `manager,storage,gateway` in any order and combination.
    fn parse(text: &str) -> anyhow::Result<Roles> {
        let mut roles = Roles {
            manager: false,
            storage: false,
            gateway: false,
        };
        for role in text.split(',').map(str::trim) {
            match role {
                "manager" => roles.manager = true,
                "storage" => roles.storage = true,
                "gateway" => roles.gateway = true,
                other => bail!("unknown role {other:?}: roles are manager, storage and gateway"),
            }
        }
        Ok(roles)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Server(args) => resolve(*args).and_then(run_server),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Nowhere is left to report a failed write of the final error line.
            let _ = writeln!(std::io::stderr(), "leofs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the start-up lines on stdout. A closed stdout (the reader went away) must not stop
/// the server, so a failed write is logged instead of panicking as `println!` would.
fn announce(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    let written = lines
        .iter()
        .try_for_each(|line| writeln!(out, "{line}"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot print the start-up lines on stdout");
    }
}

/// Takes an exclusive `flock` on `<data_dir>/LOCK` for the life of the process, so a second
/// server on the same data dir is refused instead of corrupting it.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: `file` owns a valid open descriptor for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            bail!(
                "data dir {} is in use by another leofs process (lock {})",
                data_dir.display(),
                path.display()
            );
        }
        return Err(err).with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(file)
}

/// Logs to stderr, filtered by RUST_LOG (default `info,s3s=off,openraft=warn`: s3s logs every
/// 4xx answer, such as a 404 or 304, at error level, and the gateway logs its own internal
/// errors; openraft logs its whole state at info level on every start and election).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,s3s=off,openraft=warn"));
    // A closed stderr must not turn logging into panics (which would kill the signal watcher).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .init();
}

/// Applies flag > env (both via clap) > leofs.toml > default.
fn resolve(args: ServerArgs) -> anyhow::Result<ServerConfig> {
    let file = match &args.config {
        Some(path) => read_config_file(path)?,
        None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
            read_config_file(Path::new(DEFAULT_CONFIG_FILE))?
        }
        None => FileConfig::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| parse_default(DEFAULT_LISTEN));
    let admin_listen_given = args.admin_listen.or(file.admin_listen).is_some();
    let admin_listen = args
        .admin_listen
        .or(file.admin_listen)
        .unwrap_or_else(|| parse_default(DEFAULT_ADMIN_LISTEN));
    let mut gateway = GatewayConfig {
        region: args
            .region
            .or(file.region)
            .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
        virtual_host_domain: args.domain.or(file.domain),
        ..GatewayConfig::default()
    };
    if let Some(secs) = args.body_idle_timeout_secs.or(file.body_idle_timeout_secs) {
        if secs == 0 {
            bail!("body_idle_timeout_secs must be at least 1, got 0");
        }
        gateway.body_idle_timeout = Duration::from_secs(secs);
    }
    if let Some(ms) = args
        .gateway_cache_r1_staleness_ms
        .or(file.gateway_cache_r1_staleness_ms)
    {
        gateway.object_cache_r1_staleness = Duration::from_millis(ms);
    }
    if let Some(secs) = args.lifecycle_day_secs.or(file.lifecycle_day_secs) {
        if secs == 0 {
            bail!("lifecycle_day_secs must be at least 1");
        }
        gateway.lifecycle.day = Duration::from_secs(secs);
    }
    if let Some(ms) = args.lifecycle_interval_ms.or(file.lifecycle_interval_ms) {
        if ms == 0 {
            bail!("lifecycle_interval_ms must be at least 1");
        }
        gateway.lifecycle.pass_interval = Duration::from_millis(ms);
    }
    let access_log_max_bytes = args.access_log_max_bytes.or(file.access_log_max_bytes);
    let access_log_files = args.access_log_files.or(file.access_log_files);
    let access_log = match args.access_log.or(file.access_log) {
        Some(path) => {
            let max_bytes =
                access_log_max_bytes.unwrap_or(leofs_gateway::access_log::DEFAULT_MAX_BYTES);
            if max_bytes < 4096 {
                bail!("access_log_max_bytes must be at least 4096, got {max_bytes}");
            }
            let files_kept =
                access_log_files.unwrap_or(leofs_gateway::access_log::DEFAULT_FILES_KEPT);
            if files_kept > leofs_gateway::access_log::FILES_KEPT_MAX {
                bail!(
                    "access_log_files must be at most {}, got {files_kept}",
                    leofs_gateway::access_log::FILES_KEPT_MAX
                );
            }
            Some(leofs_gateway::access_log::AccessLogConfig {
                path,
                max_bytes,
                files_kept,
            })
        }
        None if access_log_max_bytes.is_some() || access_log_files.is_some() => {
            bail!("access_log_max_bytes and access_log_files need access_log (the log's file)")
        }
        None => None,
    };
    let connections_per_core_max = args
        .connections_per_core_max
        .or(file.connections_per_core_max)
        .unwrap_or(DEFAULT_CONNECTIONS_PER_CORE_MAX);
    if connections_per_core_max == 0 {
        bail!("connections_per_core_max must be at least 1, got 0");
    }
    let gc = match args.chunk_grace_secs.or(file.chunk_grace_secs) {
        Some(0) => bail!("chunk_grace_secs must be at least 1, got 0"),
        Some(secs) => GcConfig::with_grace(Duration::from_secs(secs)),
        None => GcConfig::default(),
    };
    let mut replication = ReplicationConfig::default();
    match args
        .anti_entropy_interval_ms
        .or(file.anti_entropy_interval_ms)
    {
        Some(0) => bail!("anti_entropy_interval_ms must be at least 1, got 0"),
        Some(ms) => replication.anti_entropy_interval = Duration::from_millis(ms),
        None => {}
    }
    match args.hint_ttl_secs.or(file.hint_ttl_secs) {
        Some(0) => bail!("hint_ttl_secs must be at least 1, got 0"),
        Some(secs) => replication.hint_ttl = Duration::from_secs(secs),
        None => {}
    }
    match args
        .anti_entropy_entries_per_pass
        .or(file.anti_entropy_entries_per_pass)
    {
        Some(0) => bail!("anti_entropy_entries_per_pass must be at least 1, got 0"),
        Some(entries) => replication.anti_entropy_entries_per_pass = entries,
        None => {}
    }
    if let Some(cap) = args
        .push_bytes_per_sec_per_core
        .or(file.push_bytes_per_sec_per_core)
    {
        replication.push_bytes_per_sec_per_core = Some(
            NonZeroU64::new(cap)
                .context("push_bytes_per_sec_per_core must be at least 1, got 0")?,
        );
    }
    let mut engine = EngineConfig::new(data_dir.join("shard-0"));
    if let Some(segment_size_bytes) = file.engine.segment_size_bytes {
        if segment_size_bytes == 0 || segment_size_bytes % 4096 != 0 {
            bail!(
                "engine.segment_size_bytes must be a positive multiple of 4096, got {segment_size_bytes}"
            );
        }
        engine.segment_size_bytes = segment_size_bytes;
    }
    if let Some(sync) = &file.engine.sync {
        engine.sync = parse_sync(sync)?;
    }
    if let Some(cache_bytes) = file.engine.cache_bytes {
        engine.cache_bytes = cache_bytes;
    }
    if let Some(max) = file.engine.cache_object_bytes_max {
        engine.cache_object_bytes_max = max;
    }
    let roles = match args.roles.or(file.roles) {
        Some(text) => Roles::parse(&text)?,
        None => Roles::ALL,
    };
    Ok(ServerConfig {
        roles,
        rpc_listen: args.rpc_listen.or(file.rpc_listen),
        join: if args.join.is_empty() {
            match file.join {
                Some(JoinList::One(addr)) => vec![addr],
                Some(JoinList::Many(addrs)) => addrs,
                None => Vec::new(),
            }
        } else {
            args.join
        },
        zone: args.zone.or(file.zone).unwrap_or_default(),
        cluster_secret_file: args.cluster_secret_file.or(file.cluster_secret_file),
        recover_group: args.recover_group,
        data_dir,
        listen,
        admin_listen,
        admin_listen_given,
        rest_listen: args.rest_listen.or(file.rest_listen),
        cores: args.cores.or(file.cores),
        pin_cores: args.pin_cores.or(file.pin_cores).unwrap_or(false),
        connections_per_core_max,
        gc,
        replication,
        gateway,
        engine,
        cache_configured: file.engine.cache_bytes.is_some(),
        gateway_cache_bytes_per_core: args
            .gateway_cache_bytes_per_core
            .or(file.gateway_cache_bytes_per_core),
        gateway_disk_cache_bytes_per_core: args
            .gateway_disk_cache_bytes_per_core
            .or(file.gateway_disk_cache_bytes_per_core),
        access_log,
    })
}

/// Longest a stopping node waits for the access log's last lines to be written.
const ACCESS_LOG_FLUSH_TIME_MAX: Duration = Duration::from_secs(5);

/// Fraction of physical memory the object caches of all shards get by default.
const DEFAULT_CACHE_MEMORY_DIVISOR: u64 = 8;

/// Default object cache of each shard: an eighth of the memory this process may use (the
/// machine's, or its cgroup's limit when lower) split across the cores (O_DIRECT bypasses the
/// page cache, so this cache is the only one), never below the engine's own default.
fn default_cache_bytes(cores: usize, engine_default: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, page_bytes) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical = u64::try_from(pages).unwrap_or(0) * u64::try_from(page_bytes).unwrap_or(0);
    let usable = cgroup_memory_limit().map_or(physical, |limit| limit.min(physical));
    (usable / DEFAULT_CACHE_MEMORY_DIVISOR / cores.max(1) as u64).max(engine_default)
}

/// A cgroup v1 limit at or above this many bytes means none (v1 writes "unlimited" as a page
/// multiple just under 2^63).
const CGROUP_UNLIMITED_BYTES: u64 = 1 << 60;

/// The memory limit of this process's cgroup (v2 `memory.max`, or v1
/// `memory.limit_in_bytes`), if it has one.
fn cgroup_memory_limit() -> Option<u64> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let files = groups.lines().filter_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        if controllers.is_empty() {
            Some(format!("/sys/fs/cgroup{path}/memory.max"))
        } else if controllers.split(',').any(|c| c == "memory") {
            Some(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
        } else {
            None
        }
    });
    files
        .filter_map(|file| {
            std::fs::read_to_string(file)
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .filter(|&limit| limit < CGROUP_UNLIMITED_BYTES)
        .min()
}

/// The gateway disk cache's directory under the data directory.
const GATEWAY_DISK_CACHE_DIR: &str = "gateway-cache";
/// Share (1/n) of the data directory's file system the gateway's disk cache takes by default.
const DEFAULT_DISK_CACHE_FS_DIVISOR: u64 = 4;
/// Most disk space the gateway's disk cache takes by default, all cores together (bytes).
const DEFAULT_DISK_CACHE_BYTES_MAX: u64 = 64 << 30;

/// A gateway core's default disk cache: a quarter of the file system `data_dir` lives on
/// (its size, not its free space: the cache's own files would shrink the next start's
/// figure), at most [`DEFAULT_DISK_CACHE_BYTES_MAX`] in all, split across `cores`. A disk that
/// fills first only fails cache writes, never a request.
fn default_disk_cache_bytes(data_dir: &Path, cores: usize) -> u64 {
    let size = membership::disk_use(data_dir).map_or(0, |(_, size)| size);
    (size / DEFAULT_DISK_CACHE_FS_DIVISOR).min(DEFAULT_DISK_CACHE_BYTES_MAX) / cores.max(1) as u64
}

fn parse_default(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|_| unreachable!("default address {addr} is valid"))
}

fn read_config_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow!("invalid config file {}: {}", path.display(), e.message()))
}

/// `always` | `batch:<ms>` | `none-unsafe`.
fn parse_sync(text: &str) -> anyhow::Result<SyncPolicy> {
    match text {
        "always" => Ok(SyncPolicy::Always),
        "none-unsafe" => Ok(SyncPolicy::NoneUnsafe),
        _ => match text
            .strip_prefix("batch:")
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            Some(ms) => Ok(SyncPolicy::BatchWindow(Duration::from_millis(ms))),
            None => bail!(
                "engine.sync must be \"always\", \"batch:<ms>\" or \"none-unsafe\", got {text:?}"
            ),
        },
    }
}

/// File descriptors a node needs besides its connections (segments, listeners, the admin API).
const OPEN_FILES_RESERVE: u64 = 256;

/// Warns when the open-files limit is below what `cores` cores at their connection cap need:
/// accepts would then fail (EMFILE) before the cap answers 503 SlowDown.
fn check_open_files_limit(cores: usize, connections_per_core_max: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let needed = (cores as u64)
        .saturating_mul(connections_per_core_max as u64)
        .saturating_add(OPEN_FILES_RESERVE);
    if limit.rlim_cur < needed {
        tracing::warn!(
            open_files_limit = limit.rlim_cur,
            needed,
            "the open-files limit is below cores x connections_per_core_max + {OPEN_FILES_RESERVE}: \
             raise it (ulimit -n, LimitNOFILE=) or lower connections_per_core_max"
        );
    }
}

/// Root credentials from LEOFS_ROOT_ACCESS_KEY / LEOFS_ROOT_SECRET_KEY (both or neither).
fn root_credentials() -> anyhow::Result<Option<Credentials>> {
    let access = std::env::var("LEOFS_ROOT_ACCESS_KEY")
        .ok()
        .filter(|v| !v.is_empty());
    let secret = std::env::var("LEOFS_ROOT_SECRET_KEY")
        .ok()
        .filter(|v| !v.is_empty());
    match (access, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
            user_id: ADMIN_USER_ID.to_owned(),
            access_key_id,
            secret_access_key,
        })),
        (None, None) => Ok(None),
        _ => bail!("set both LEOFS_ROOT_ACCESS_KEY and LEOFS_ROOT_SECRET_KEY, or neither"),
    }
}

/// The wire's form of a cluster id kept as 32 hex characters.
fn cluster_id_of(hex: &str) -> anyhow::Result<ClusterId> {
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = hex
            .get(2 * i..2 * i + 2)
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            .ok_or_else(|| anyhow!("not a cluster id: {hex:?}"))?;
    }
    Ok(ClusterId(id))
}

/// File of a generated cluster secret, in the data dir.
const CLUSTER_SECRET_FILE: &str = "cluster.secret";
/// Longest wait for each step of joining a node (connect, each answer).
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster secret: `--cluster-secret-file`, else LEOFS_CLUSTER_SECRET, else
/// `<data_dir>/cluster.secret`; generated there when `may_generate`. Returns the secret and,
/// when it was generated now, its text (printed once, like the keys).
fn cluster_secret(
    config: &ServerConfig,
    may_generate: bool,
) -> anyhow::Result<Option<(ClusterSecret, Option<String>)>> {
    let from_text = |text: &str, source: &str| -> anyhow::Result<ClusterSecret> {
        ClusterSecret::new(text.trim().as_bytes().to_vec())
            .map_err(|e| anyhow!("the cluster secret from {source}: {e}"))
    };
    if let Some(path) = &config.cluster_secret_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the cluster secret file {}", path.display()))?;
        return Ok(Some((from_text(&text, &path.display().to_string())?, None)));
    }
    if let Some(text) = std::env::var("LEOFS_CLUSTER_SECRET")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(Some((from_text(&text, "LEOFS_CLUSTER_SECRET")?, None)));
    }
    let path = config.data_dir.join(CLUSTER_SECRET_FILE);
    let Some((text, created)) = load_or_create_secret(&path, "cluster secret", may_generate)?
    else {
        return Ok(None);
    };
    let secret = from_text(&text, &path.display().to_string())?;
    Ok(Some((secret, created.then_some(text))))
}

/// Refuses role combinations and flags that cannot work together, saying what to set.
fn check_roles(config: &ServerConfig) -> anyhow::Result<()> {
    let roles = config.roles;
    let joins = !config.join.is_empty();
    if !roles.manager && !roles.storage && !roles.gateway {
        bail!("give at least one role: manager, storage or gateway");
    }
    if roles.manager && !roles.storage && !roles.gateway && config.rpc_listen.is_none() {
        bail!("a node with only the manager role serves other nodes: set --rpc-listen");
    }
    if roles.storage && (!roles.gateway || !roles.manager) && config.rpc_listen.is_none() {
        bail!("a storage node that other nodes use must be reachable by them: set --rpc-listen");
    }
    if !roles.manager && !joins {
        bail!(
            "a node without the manager role joins the cluster's managers: set --join to their \
             --rpc-listen addresses"
        );
    }
    if roles.manager && roles.storage && joins {
        bail!(
            "a manager that joins another group cannot have the storage role yet: run the \
             storage on a node of its own (--roles storage --join …)"
        );
    }
    if let Some(listen) = config.rpc_listen
        && listen.ip().is_unspecified()
    {
        bail!(
            "--rpc-listen {listen}: give the address peers reach this node on (it is handed to \
             them as is; an advertised address apart from the listen address is not built yet)"
        );
    }
    if config.recover_group && (!roles.manager || joins) {
        bail!(
            "--recover-group starts a new manager group from this node's catalog: it needs the \
             manager role and no --join"
        );
    }
    if roles.manager && joins && config.rpc_listen.is_none() {
        bail!("a manager that joins others (--join) must be reachable by them: set --rpc-listen");
    }
    Ok(())
}

/// Starts everything, prints the endpoints, waits for SIGTERM/SIGINT and stops gracefully.
fn run_server(config: ServerConfig) -> anyhow::Result<()> {
    check_roles(&config)?;
    test_clock_offset()?;
    let roles = config.roles;
    let joins = !config.join.is_empty();
    let root = root_credentials()?;
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let _data_dir_lock = lock_data_dir(data_dir)?;
    let needs_secret = config.rpc_listen.is_some() || joins;
    // Only a manager that starts a group of its own may create the group's secret.
    let secret = if needs_secret {
        cluster_secret(&config, roles.manager && !joins)?
    } else {
        None
    };
    // The cluster id this node presents: the one it keeps, or a new one for a manager that
    // starts a group of its own, else the joining id (it learns the cluster's when it joins).
    let known_id = load_cluster_id(data_dir).context("cannot read the cluster id")?;
    let bootstrap_id = match (&known_id, roles.manager && !joins) {
        (None, true) => Some(new_cluster_id().context("cannot draw a cluster id")?),
        _ => None,
    };
    let own_id = known_id.clone().or_else(|| bootstrap_id.clone());
    let auth = match (needs_secret, secret.as_ref()) {
        (false, _) => None,
        (true, Some((secret, _))) => Some(ClusterAuth {
            cluster: match &own_id {
                Some(id) => cluster_id_of(id)?,
                None => ClusterId::derived_from(secret),
            },
            secret: secret.clone(),
        }),
        (true, None) => bail!(
            "this node talks to peers and needs the cluster secret: --cluster-secret-file FILE or \
             LEOFS_CLUSTER_SECRET (the manager node generated it into <its data dir>/{CLUSTER_SECRET_FILE})"
        ),
    };
    // A node without the manager role holds a copy of the catalog (and of the ring in it),
    // fetched from the managers it joined.
    let mut copy_source = None;
    // Where a node without the manager role saves its copy of the catalog, and whether it
    // started from it (no manager answered).
    let saved_catalog = data_dir.join(leofs_manager::saved_copy::SAVED_CATALOG_FILE);
    let mut from_saved_catalog = false;
    let (manager, created, mut registry) = if roles.manager {
        let group = GroupOptions {
            addr: config
                .rpc_listen
                .map_or_else(String::new, |listen| listen.to_string()),
            join: joins,
            recover: config.recover_group,
            cluster_id: bootstrap_id.clone(),
            transport: auth
                .clone()
                .map(|auth| Arc::new(WireRaftTransport::new(auth)) as Arc<dyn RaftTransport>),
        };
        let (manager, created) =
            Manager::open_with(data_dir, root, group).context("cannot open the manager state")?;
        let mut group_id = manager.snapshot().cluster_id.clone();
        if let (None, Some(id)) = (&group_id, &bootstrap_id)
            && manager.is_leader()
        {
            // A group from before cluster ids: it takes the id this manager drew.
            group_id = manager
                .adopt_cluster_id(id)
                .context("cannot set the cluster id")?;
        }
        if let Some(group_id) = &group_id {
            if own_id.as_ref().is_some_and(|own| own != group_id) {
                bail!(
                    "this node presents cluster id {} but its manager group's is {group_id}: \
                     restore {}/{CLUSTER_ID_FILE} (it holds the group's id)",
                    own_id.as_deref().unwrap_or_default(),
                    data_dir.display()
                );
            }
            store_cluster_id(data_dir, group_id).context("cannot keep the cluster id")?;
        }
        let manager = Arc::new(manager);
        (manager.clone(), created, Registry::Local(manager))
    } else {
        let Some(auth) = auth.clone() else {
            unreachable!("checked above: a node without the manager role joins, with a secret");
        };
        let mut managers = ManagerPeers::new(&config.join, &auth, JOIN_TIMEOUT);
        let saved = leofs_manager::saved_copy::load(&saved_catalog).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the catalog saved on disk is not usable; a manager must answer");
            None
        });
        let wait = if saved.is_some() {
            membership::MANAGER_WAIT_WITH_SAVED_CATALOG
        } else {
            membership::MANAGER_WAIT
        };
        let (catalog, version) = match (fetch_catalog_waiting(&mut managers, wait)?, saved) {
            (Ok(fetched), _) => fetched,
            (Err(e), Some((catalog, version))) => {
                tracing::warn!(
                    error = %e,
                    "no manager answers: starting from the catalog and ring this node saved \
                     (kept current once a manager answers)"
                );
                from_saved_catalog = true;
                (catalog, version)
            }
            (Err(e), None) => return Err(anyhow!(e)).context("cannot reach any manager"),
        };
        if let Some(id) = &catalog.cluster_id {
            if known_id.as_ref().is_some_and(|known| known != id) {
                bail!(
                    "the managers at {:?} belong to cluster {id}, this node to another",
                    config.join
                );
            }
            store_cluster_id(data_dir, id).context("cannot keep the cluster id")?;
        }
        copy_source = Some(version);
        let copy = Arc::new(Manager::read_only_copy(catalog));
        (copy, None, Registry::Remote(managers))
    };
    let layout = read_layout(data_dir)?;
    let cores = match (config.cores, roles.storage, layout) {
        (Some(cores), _, _) => cores,
        (None, true, Some(layout)) => layout.cores,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Every node that stores or serves S3 is a member of the cluster.
    let registration = if roles.storage || roles.gateway {
        Some(Registration {
            format_version: MEMBERSHIP_FORMAT_VERSION,
            addr: membership::node_name(data_dir, config.rpc_listen)?,
            storage: roles.storage,
            gateway: roles.gateway,
            shards: if roles.storage {
                u16::try_from(cores).context("too many cores")?
            } else {
                0
            },
            capacity_bytes: membership::disk_use(data_dir).map_or(0, |(_, size)| size),
            zone: config.zone.clone(),
            layout_partitions: layout.filter(|_| roles.storage).map(|l| l.partitions),
            known_id: membership::known_node_id(data_dir)?,
        })
    } else {
        None
    };
    // A manager that joins a group cannot register before its group has taken it in (which
    // needs it running): it registers once it runs. Every other node registers now.
    let deferred = roles.manager && joins;
    let member = match &registration {
        Some(registration) if !deferred => {
            let member = if from_saved_catalog {
                membership::member_in_saved_catalog(&manager.snapshot(), registration)?
            } else {
                registry.register(registration)?
            };
            membership::store_node_id(data_dir, member.id)?;
            Some(member)
        }
        _ => None,
    };
    // A manager with storage that leads a group of its own routes by its own partition map,
    // as a single node always has: that is the cluster's first ring.
    let own_partitions = layout.map_or(DEFAULT_PARTITIONS, |l| l.partitions);
    if let (Some(member), true, false) = (&member, roles.manager && roles.storage, joins)
        && manager.snapshot().ring.is_none()
    {
        let map = PartitionMap::new(own_partitions, cores)?;
        let ring = RingView::single_node(member.id, map);
        manager
            .start_own_ring(RingRecord {
                epoch: ring.epoch(),
                partitions: ring.partitions(),
                replicas: ring.replicas() as u32,
                table: ring.table().iter().map(|v| (v.node, v.shard)).collect(),
                known_everywhere: false,
                rebalance: None,
                recovery: None,
                last_recovery: None,
            })
            .context("cannot start the cluster's ring")?;
    }
    // Registered, a node without the manager role saves a catalog that has it in (to start
    // from while no manager answers), and a storage node waits for its cluster to be started
    // (`leofs-adm start`).
    if let (Registry::Remote(managers), false) = (&mut registry, from_saved_catalog) {
        match refresh_saved_copy(managers, &manager, &saved_catalog) {
            Ok(version) => copy_source = Some(version),
            Err(e) => tracing::warn!(error = %e, "cannot refresh the catalog after registering"),
        }
        if roles.storage
            && let Some(version) = wait_for_ring(
                managers,
                &manager,
                &saved_catalog,
                member.as_ref().map_or(0, |m| m.id),
            )
        {
            copy_source = Some(version);
        }
    }
    let state = manager.snapshot();
    let installed = installed_ring(&state).map_err(|e| anyhow!(e))?;
    check_open_files_limit(cores, config.connections_per_core_max);
    let mut gateway = config.gateway;
    if roles.gateway {
        gateway.object_cache_bytes_per_core = match config.gateway_cache_bytes_per_core {
            Some(bytes) => bytes,
            None if !roles.storage => default_cache_bytes(cores, 0),
            None => 0,
        };
        tracing::info!(
            gateway_cache_mib_per_core = gateway.object_cache_bytes_per_core >> 20,
            "gateway object cache sized"
        );
        let disk_bytes = match config.gateway_disk_cache_bytes_per_core {
            Some(bytes) => bytes,
            None if !roles.storage && gateway.object_cache_bytes_per_core > 0 => {
                default_disk_cache_bytes(data_dir, cores)
            }
            None => 0,
        };
        if disk_bytes > 0 {
            if gateway.object_cache_bytes_per_core == 0 {
                bail!(
                    "gateway_disk_cache_bytes_per_core needs the memory cache \
                     (gateway_cache_bytes_per_core is 0): the disk keeps what it takes"
                );
            }
            gateway.disk_cache = Some(leofs_gateway::DiskCacheConfig {
                dir: data_dir.join(GATEWAY_DISK_CACHE_DIR),
                bytes_per_core: disk_bytes,
                writer: leofs_gateway::disk_cache::DiskCacheWriter::new(),
            });
        }
        tracing::info!(
            gateway_disk_cache_mib_per_core = disk_bytes >> 20,
            "gateway disk cache sized"
        );
    }
    if let Some(log) = config.access_log {
        if !roles.gateway {
            bail!("access_log needs the gateway role: only gateways answer requests");
        }
        let path = log.path.display().to_string();
        gateway.access_log = Some(
            leofs_gateway::access_log::AccessLog::open(log)
                .with_context(|| format!("cannot open the access log {path}"))?,
        );
        tracing::info!(path, "access log on");
    }
    let access_log = gateway.access_log.clone();
    let gateway = Arc::new(gateway);
    let (s3_addr, rest_addr) = (config.listen, config.rest_listen);
    let mut engine = config.engine;
    if roles.storage {
        if !config.cache_configured {
            engine.cache_bytes = default_cache_bytes(cores, engine.cache_bytes);
        }
        tracing::info!(
            cache_mib_per_shard = engine.cache_bytes >> 20,
            "object cache sized"
        );
    }
    // The manager's own thread makes catalog changes asked for from core threads. It is
    // started once the node runs (start_node blocks SIGTERM/SIGINT in this thread first, and
    // threads inherit that mask); changes wait in its queue until then.
    let (catalog, catalog_changes) = if roles.manager {
        leofs_manager::CatalogWriter::channel()
    } else {
        leofs_manager::CatalogWriter::channel_for_copy()
    };
    let rpc = match (config.rpc_listen, auth.clone()) {
        (Some(listen), Some(auth)) => Some(RpcConfig { listen, auth }),
        _ => None,
    };
    let services: Option<Arc<dyn NodeServices>> = (roles.manager && rpc.is_some()).then(|| {
        Arc::new(ManagerServices::new(manager.clone(), catalog.clone())) as Arc<dyn NodeServices>
    });
    // Read before the heartbeat thread stamps it anew.
    let last_alive_ms = membership::last_alive_unix_ms(data_dir);
    if let Some(member) = member.as_ref().filter(|_| roles.storage)
        && let Some(away_secs) = detached_past_tombstone_grace(&state, member, last_alive_ms)
    {
        tracing::warn!(
            node = member.id,
            away_secs,
            "this node comes back detached (out of the ring) after longer than the tombstone \
             grace: it rejoins wiped, its records dropped without handing them over (its \
             partitions' other replicas hold their watermarks above all of it); `leofs-adm \
             attach` it to give it partitions again"
        );
        wipe_shards(data_dir)?;
    }
    let node_id = member.as_ref().map_or(NO_VNODE_NODE_ID, |m| m.id);
    let partitions = installed
        .as_ref()
        .map_or(own_partitions, |i| i.ring.partitions());
    let joined_cluster = auth.clone().map(|auth| JoinedCluster {
        node_id,
        ring: installed
            .as_ref()
            .map_or_else(RingView::unstarted, |i| RingView::clone(&i.ring)),
        peers: PeersConfig {
            nodes: installed
                .as_ref()
                .map(|i| i.nodes.clone())
                .unwrap_or_default(),
            auth,
            request_timeout: leofs_wire::client::REQUEST_TIMEOUT,
        },
    });
    let node_config = NodeConfig {
        data_dir: data_dir.clone(),
        cores,
        partitions,
        engine,
        pin_cores: config.pin_cores,
        connections_per_core_max: config.connections_per_core_max,
        gc: config.gc,
        replication: config.replication,
        storage: roles.storage,
        rpc: rpc.clone(),
        joined: joined_cluster,
        services,
    };
    let core_manager = manager.clone();
    let ring_source = catalog.clone();
    let serves_s3 = roles.gateway;
    let stores = roles.storage;
    let started = Instant::now();
    let node = start_node(node_config, move |shard| {
        if stores {
            let background = leofs_gateway::store::Ctx::without_cache(
                shard.clone(),
                core_manager.clone(),
                catalog.clone(),
                gateway.clone(),
            );
            leofs_gateway::lifecycle::spawn(background, shard.clone(), gateway.lifecycle);
        }
        if serves_s3 {
            leofs_gateway::serve_core(
                shard,
                core_manager.clone(),
                catalog.clone(),
                gateway.clone(),
                s3_addr,
                rest_addr,
            )?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        // The gateway's own message already says what failed ("cannot bind …").
        ShardError::Init { source, .. } => anyhow!(source),
        other => anyhow!(other),
    })?;
    let (poke_follower, follower_poked) = std::sync::mpsc::sync_channel(1);
    let _ring_follower =
        membership::spawn_ring_follower(manager.clone(), node.ring_installer(), follower_poked)?;
    // A peer routing by a newer ring: the copy of the catalog (which carries the ring) is
    // refreshed now, and the follower looks at it at once.
    node.ring_installer()
        .when_ring_wanted(Arc::new(move |_epoch| {
            ring_source.request_refresh();
            let _ = poke_follower.try_send(());
        }));
    let (catalog_changed, beat_now) = std::sync::mpsc::sync_channel(1);
    // A newer ring taken, or a partition filled, recovered or handed over: the heartbeat
    // reports it at once (the managers move the ring on from heartbeats).
    let beat_soon = catalog_changed.clone();
    node.ring_installer().when_progressed(Arc::new(move || {
        let _ = beat_soon.try_send(());
    }));
    let clock = Arc::new(membership::ClockOffset::default());
    let peer_clocks = Arc::new(peer_clock::PeerClocks::default());
    if let (Some(_), Some(auth)) = (&registration, &auth) {
        peer_clock::ClockProber {
            installer: node.ring_installer(),
            catalog: manager.clone(),
            own_addr: config.rpc_listen,
            auth: auth.clone(),
            clocks: peer_clocks.clone(),
        }
        .spawn()?;
    }
    if let Some(registration) = registration {
        membership::Beater {
            registration,
            member: member.clone(),
            registry: Registry::Local(manager.clone()),
            data_dir: data_dir.clone(),
            stats: node.stats_handle(),
            installer: node.ring_installer(),
            local: roles.manager.then(|| manager.clone()),
            catalog: manager.clone(),
            joined: config.join.clone(),
            own_addr: config.rpc_listen,
            auth: auth.clone(),
            beat_now: Some(beat_now),
            clock: clock.clone(),
            peer_clocks: peer_clocks.clone(),
        }
        .spawn()?;
    }
    if roles.manager {
        leofs_manager::cluster::spawn_watch(&manager)?;
        if let Some(member) = &member {
            manager.set_local_member(member.id);
        }
        let stats = node.stats_handle();
        manager.set_emptiness_check(Box::new(move |bucket| bucket_is_empty(&stats, bucket)));
    }
    // Ends with the last writer (the cores' contexts), when the node has stopped.
    let _catalog_thread = match (registry, copy_source) {
        (Registry::Remote(managers), Some(version)) => catalog_changes.spawn_with(
            CatalogCopy::new(managers, manager.clone(), version, Some(catalog_changed))
                .saving_to(saved_catalog),
        )?,
        _ => catalog_changes.spawn(manager.clone())?,
    };
    let bound = node.bound_addrs();
    let mut lines = Vec::new();
    let s3_endpoint = bound.first().copied().unwrap_or(s3_addr);
    if roles.gateway {
        lines.push(format!("S3 endpoint: http://{s3_endpoint}"));
        if let (Some(_), Some(rest)) = (rest_addr, bound.get(1)) {
            lines.push(format!("REST API: http://{rest}"));
        }
    }
    if let Some(rpc) = &rpc {
        lines.push(format!(
            "RPC: {} (shard i on port {} + i, {cores} shards)",
            rpc.listen,
            rpc.listen.port()
        ));
    }
    match (joins, roles.manager, &rpc) {
        (true, true, Some(rpc)) => lines.push(format!(
            "Manager group: joining the group of {}; add this manager from any member: \
             leofs-adm add-manager {}",
            join_text(&config.join),
            rpc.listen
        )),
        (true, _, _) => lines.push(format!("Managers: {}", join_text(&config.join))),
        (false, _, _) => {}
    }
    if let Some(member) = &member {
        let state = manager.snapshot();
        let now = state
            .nodes
            .get(&member.id)
            .map_or(member.state, |m| m.state);
        lines.push(format!(
            "Node: {} ({}, {})",
            member.id,
            member.addr,
            now.as_str()
        ));
    }
    let admin = if roles.manager || config.admin_listen_given {
        let status = Arc::new(StatusSource {
            stats: node.stats_handle(),
            clock: clock.clone(),
            peer_clocks: peer_clocks.clone(),
            catalog: manager.clone(),
            s3_endpoint: if roles.gateway {
                format!("http://{s3_endpoint}")
            } else {
                String::new()
            },
            started,
        });
        let admin = spawn_admin_server(config.admin_listen, manager, status)?;
        lines.push(if roles.manager {
            format!("Admin API: http://{}", admin.local_addr())
        } else {
            format!("Metrics: http://{}/metrics", admin.local_addr())
        });
        Some(admin)
    } else {
        None
    };
    if let Some(root) = created {
        lines.push(format!("Access key: {}", root.access_key_id));
        lines.push(format!("Secret key: {}", root.secret_access_key));
    }
    if let Some((_, Some(text))) = &secret {
        lines.push(format!(
            "Cluster secret: {text} (kept in {})",
            data_dir.join(CLUSTER_SECRET_FILE).display()
        ));
    }
    lines.push("leofs ready".to_owned());
    announce(&lines);
    tracing::info!(cores, data_dir = %data_dir.display(), "leofs ready");
    let result = node.wait();
    if let Some(admin) = admin {
        admin.shutdown();
    }
    if let Some(log) = access_log
        && !log.flush(ACCESS_LOG_FLUSH_TIME_MAX)
    {
        tracing::warn!("the access log's last lines could not be written in time");
    }
    result?;
    tracing::info!("leofs stopped");
    Ok(())
}

/// Whether `bucket` holds no object and no multipart upload, over every node of the ring
/// (blocking; asked through core 0). None: the storage nodes could not be asked.
fn bucket_is_empty(stats: &NodeStats, bucket: &leofs_manager::Bucket) -> Option<bool> {
    let bucket = leofs_gateway::layout::bucket_id(bucket);
    for prefix in leofs_gateway::layout::bucket_content_prefixes(&bucket) {
        if !stats.scan_all(prefix, 1).ok()?.is_empty() {
            return Some(false);
        }
    }
    Some(true)
}

/// Applies `LEOFS_TEST_CLOCK_OFFSET_MS` (tests of clock skew between nodes on one machine
/// only): this process's wall clock, as heartbeats and HLCs read it, is shifted by that many ms.
fn test_clock_offset() -> anyhow::Result<()> {
    let Ok(text) = std::env::var("LEOFS_TEST_CLOCK_OFFSET_MS") else {
        return Ok(());
    };
    let offset_ms: i64 = text
        .trim()
        .parse()
        .with_context(|| format!("LEOFS_TEST_CLOCK_OFFSET_MS={text:?} is not a number of ms"))?;
    tracing::warn!(
        offset_ms,
        "test only: this node's clock reads {offset_ms} ms off the system's (LEOFS_TEST_CLOCK_OFFSET_MS)"
    );
    leofs_manager::cluster::set_test_clock_offset_ms(offset_ms);
    leofs_engine::set_test_clock_offset_us(offset_ms.saturating_mul(1000));
    Ok(())
}

/// `a,b,c`.
fn join_text(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Fetches the catalog from the managers, trying again for `wait`: the catalog and its
/// version, or the last failure once `wait` is over. A refused handshake (another secret or
/// cluster) is an error at once.
fn fetch_catalog_waiting(
    managers: &mut ManagerPeers,
    wait: Duration,
) -> anyhow::Result<Result<(leofs_manager::ManagerState, u64), leofs_gateway::cluster::JoinError>> {
    let deadline = Instant::now() + wait;
    loop {
        let e = match leofs_gateway::cluster::fetch_catalog(managers) {
            Ok(fetched) => return Ok(Ok((fetched.state, fetched.version))),
            Err(e) => e,
        };
        if let leofs_gateway::cluster::JoinError::Node(node) = &e {
            membership::refuse_if_not_of_the_cluster(node)?;
        }
        if Instant::now() >= deadline {
            return Ok(Err(e));
        }
        tracing::info!(error = %e, "waiting for a manager");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Fetches the catalog into `copy` and saves it in `saved` (see
/// [`leofs_manager::saved_copy`]); its version.
fn refresh_saved_copy(
    managers: &mut ManagerPeers,
    copy: &Manager,
    saved: &Path,
) -> anyhow::Result<u64> {
    let fetched = leofs_gateway::cluster::fetch_catalog(managers)?;
    copy.install(fetched.state)?;
    leofs_gateway::cluster::save_catalog(saved, fetched.version, &fetched.bytes);
    Ok(fetched.version)
}

/// Waits until the cluster has a ring (`leofs-adm start`), keeping `copy` (and its saved
/// form) current; the version of the catalog last fetched, if it fetched one.
fn wait_for_ring(
    managers: &mut ManagerPeers,
    copy: &Manager,
    saved: &Path,
    node: u32,
) -> Option<u64> {
    let mut told = false;
    let mut version = None;
    while copy.snapshot().ring.is_none() {
        if !told {
            announce(&[format!(
                "Node {node} is attached; waiting for the cluster to be started (leofs-adm start)"
            )]);
            told = true;
        }
        std::thread::sleep(Duration::from_secs(1));
        match refresh_saved_copy(managers, copy, saved) {
            Ok(fetched) => version = Some(fetched),
            Err(e) => {
                tracing::warn!(error = %e, "waiting for the cluster's ring: no manager answers")
            }
        }
    }
    version
}

/// The admin API's view of the running node.
struct StatusSource {
    stats: NodeStats,
    /// This node's clock offset from the managers', as heartbeats measure it.
    clock: Arc<membership::ClockOffset>,
    /// Its clock's offsets from each peer.
    peer_clocks: Arc<peer_clock::PeerClocks>,
    /// The catalog (for the nodes' addresses).
    catalog: Arc<Manager>,
    s3_endpoint: String,
    started: Instant,
}

impl NodeStatusSource for StatusSource {
    fn node_status(&self) -> NodeStatus {
        let shards = self
            .stats
            .core_stats()
            .into_iter()
            .map(|s| ShardStatus {
                core: s.core,
                partitions_owned: s.partitions_owned,
                live_records: s.engine.live_records,
                tombstones: s.engine.tombstones,
                live_bytes: s.engine.live_bytes,
                dead_bytes: s.engine.dead_bytes,
                segments: s.engine.segments,
                index_bytes: s.engine.index_bytes,
                corrupt_records: s.engine.corrupt_records,
                free_segments: s.engine.free_segments,
                disk_full: s.engine.disk_full,
                writes_refused_disk_full: s.engine.writes_refused_disk_full,
                segments_set_aside: s.engine.segments_set_aside,
                garbage_pending: s.gc.entries_pending,
                chunks_collected: s.gc.chunks_collected,
                orphan_chunks_swept: s.gc.orphan_chunks_swept,
                wire_requests_sent: s.wire_requests_sent,
                wire_requests_served: s.wire_requests_served,
                cache_hits: s.engine.cache_hits,
                cache_misses: s.engine.cache_misses,
                gateway_cache: membership::gateway_cache_status(&s.object_cache),
                lifecycle: membership::lifecycle_status(&s.lifecycle),
                cross_core_calls: s.forwarded_calls,
                open_connections: s.open_connections as u64,
                hints_pending: s
                    .hints_pending
                    .iter()
                    .map(
                        |(target, count, bytes)| leofs_manager::admin::HintsPending {
                            node: target.node,
                            shard: target.shard,
                            count: *count,
                            bytes: *bytes,
                        },
                    )
                    .collect(),
                hints_replayed: s.hints_replayed,
                hints_dropped: s.hints_dropped,
                anti_entropy_passes: s.anti_entropy.passes,
                anti_entropy_repaired: s.anti_entropy.pushed,
                partitions_under_replicated: s.anti_entropy.under_replicated,
                oldest_unrepaired_partition_seconds: s.anti_entropy.oldest_unrepaired_secs,
                requests: s
                    .requests
                    .tallies()
                    .map(|(operation, status, tally)| RequestStatus {
                        operation: operation.to_owned(),
                        status,
                        requests: tally.requests,
                        bytes_in: tally.bytes_in,
                        bytes_out: tally.bytes_out,
                        latency_us_sum: tally.latency_us_sum,
                        latency_buckets: tally.latency_buckets.to_vec(),
                    })
                    .collect(),
            })
            .collect();
        NodeStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            s3_endpoint: self.s3_endpoint.clone(),
            cores: self.stats.cores(),
            partitions: self.stats.partitions(),
            uptime_secs: self.started.elapsed().as_secs(),
            shards,
            latency_buckets_us: leofs_shard::metrics::LATENCY_BUCKETS_US.to_vec(),
            clock_offset_us: self.clock.get(),
            peer_clocks: self.peer_clocks.get(),
        }
    }

    fn whereis(&self, bucket: &leofs_manager::Bucket, key: &str) -> Option<Whereabouts> {
        let state = self.catalog.snapshot();
        let storage_bucket = leofs_gateway::layout::bucket_id(bucket);
        let (partition, replicas) = match self.stats.whereis(storage_bucket.as_str(), key) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "whereis: cannot ask the replicas");
                return None;
            }
        };
        let replicas = replicas
            .into_iter()
            .map(|(vnode, head)| {
                let addr = state
                    .nodes
                    .get(&vnode.node)
                    .map_or_else(String::new, |m| m.addr.clone());
                let (head, error) = match head {
                    Ok(head) => (head, None),
                    Err(e) => (None, Some(e.to_string())),
                };
                Replica {
                    node: vnode.node,
                    addr,
                    shard: vnode.shard,
                    found: head.is_some(),
                    hlc: head.as_ref().map(|h| {
                        format!("{}.{}.{}", h.hlc.physical_us, h.hlc.logical, h.hlc.node_id)
                    }),
                    size: head.as_ref().map(|h| h.summary.size),
                    checksum: head.as_ref().map(|h| {
                        leofs_shard::object::etag_string(
                            &h.summary.digest,
                            leofs_shard::object::parts_count_of_tag(h.summary.tag),
                        )
                    }),
                    error,
                }
            })
            .collect();
        Some(Whereabouts {
            bucket: bucket.name.clone(),
            key: key.to_owned(),
            partition,
            replicas,
        })
    }

    fn bucket_is_empty(&self, bucket: &leofs_manager::Bucket) -> Option<bool> {
        bucket_is_empty(&self.stats, bucket)
    }

    fn recover_file(
        &self,
        bucket: &leofs_manager::Bucket,
        key: &str,
    ) -> Option<Result<u64, String>> {
        let storage_bucket = leofs_gateway::layout::bucket_id(bucket);
        Some(
            self.stats
                .recover_file(storage_bucket.as_str(), key)
                .map_err(|e| e.to_string()),
        )
    }
}

/// How long this node was away (from its own last stamp alive, `last_alive_ms`, to now), if
/// `member` comes back detached and out of the ring after longer than the cluster's tombstone
/// grace (DESIGN §7: such a node rejoins wiped). A node still in the ring is never wiped: no
/// tombstone of a partition it holds is dropped while it is away (a partition's watermark
/// needs a pass that heard every replica), so its records resurrect nothing, and they may be
/// copies the cluster still needs. A node that never stamped itself alive is not wiped.
fn detached_past_tombstone_grace(
    state: &leofs_manager::ManagerState,
    member: &leofs_manager::cluster::Member,
    last_alive_ms: Option<u64>,
) -> Option<u64> {
    let in_ring = state.ring.as_ref()?.places_node(member.id);
    let away_secs =
        (leofs_manager::cluster::unix_now_us() / 1000).saturating_sub(last_alive_ms?) / 1000;
    (member.state == leofs_manager::cluster::NodeState::Detached
        && !in_ring
        && away_secs > state.settings.tombstone_grace_secs)
        .then_some(away_secs)
}

/// Removes every shard's log and index from `data_dir` (the node's id, layout and catalog
/// copy stay): the engines start empty.
fn wipe_shards(data_dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(data_dir)
        .with_context(|| format!("cannot read {}", data_dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot read {}", data_dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with("shard-") && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("cannot wipe {}", entry.path().display()))?;
        }
    }
    Ok(())
}
