//! `leofs-adm`: the operator CLI of a running `leofs server`, talking to its admin API. This file
//! only parses arguments and prints; the commands live in `leofs_manager::adm`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leofs_manager::adm::{self, AdmCommand, DEFAULT_ADMIN_ADDR, DEFAULT_DATA_DIR};
use leofs_manager::client::AdminClient;

/// Manage users, keys and buckets of a leofs node, and show its status.
#[derive(Parser)]
#[command(name = "leofs-adm", version)]
struct Cli {
    /// Address of the admin API.
    #[arg(long, value_name = "ADDR", env = "LEOFS_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_ADDR, global = true)]
    admin: String,
    /// Data directory of the node; the admin token is read from <DIR>/manager/admin.token.
    #[arg(long, value_name = "DIR", env = "LEOFS_DATA_DIR", default_value = DEFAULT_DATA_DIR, global = true)]
    data_dir: PathBuf,
    /// Admin token (overrides the one in the data directory).
    #[arg(
        long,
        value_name = "T",
        env = "LEOFS_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the cluster (nodes with roles, state, shards, ring epoch and checksum, disk use)
    /// and the asked node's own figures; with NODE, that node.
    Status {
        /// A node id (see `status`).
        node: Option<u32>,
    },
    /// Start the cluster: plan the first ring over the attached storage nodes.
    Start {
        /// Partitions P, a power of two [default: chosen from the shards].
        #[arg(long)]
        partitions: Option<u32>,
        /// Shards the cluster is expected to grow to (P is chosen for them).
        #[arg(long)]
        expected_shards: Option<u32>,
        /// Replicas per partition N, each on a distinct storage node (and zone, when zones are
        /// set); fixed for the cluster's life [default: 1].
        #[arg(long)]
        replicas: Option<u32>,
    },
    /// Set the cluster's quorums (as LeoFS): acks a write needs, replicas a read consults
    /// and acks a delete needs, each 1 to N. With R + W ≤ N a read may miss the newest
    /// acknowledged write.
    UpdateConsistencyLevel {
        /// W: acks a write needs.
        #[arg(required_unless_present = "cluster_default")]
        write: Option<u32>,
        /// R: replicas a read consults.
        #[arg(required_unless_present = "cluster_default")]
        read: Option<u32>,
        /// D: acks a delete needs.
        #[arg(required_unless_present = "cluster_default")]
        delete: Option<u32>,
        /// Set the quorums of this bucket's objects only (a bucket may opt into R=1 for
        /// speed, or W=N for safety).
        #[arg(long)]
        bucket: Option<String>,
        /// With --bucket: the bucket goes back to the cluster's quorums.
        #[arg(long, requires = "bucket", conflicts_with_all = ["write", "read", "delete"])]
        cluster_default: bool,
    },
    /// Take storage node NODE out of service: requests for its partitions fail at once.
    Suspend {
        /// The node id.
        node: u32,
    },
    /// Put suspended storage node NODE back in service.
    Resume {
        /// The node id.
        node: u32,
    },
    /// Show where BUCKET/KEY's replicas are, with their HLC, size and checksum.
    Whereis {
        /// BUCKET/KEY.
        path: String,
    },
    /// Show storage node NODE's disk use per shard.
    Du {
        /// The node id.
        node: u32,
    },
    /// Show the whole ring: each partition's replicas.
    DumpRing,
    /// Create a user with a fresh key pair (the secret is shown only once).
    CreateUser {
        /// User id.
        name: String,
    },
    /// List users and their access key ids.
    GetUsers,
    /// Delete a user and its keys (refused while it owns buckets).
    DeleteUser {
        /// User id.
        name: String,
    },
    /// Create a bucket owned by the user of ACCESS_KEY_ID.
    AddBucket {
        /// Bucket name (S3 naming rules).
        bucket: String,
        /// An access key id of the owner.
        access_key_id: String,
    },
    /// List buckets with their owners and ACLs.
    GetBuckets,
    /// Delete an empty bucket.
    DeleteBucket {
        /// Bucket name.
        bucket: String,
    },
    /// Set a bucket's canned ACL: private, public-read or public-read-write.
    UpdateAcl {
        /// Bucket name.
        bucket: String,
        /// An access key id of the owner (or an administrator).
        access_key_id: String,
        /// private | public-read | public-read-write
        acl: String,
    },
    /// Attach storage node NODE again after a detach: the next `rebalance` gives it
    /// partitions. (A storage node started with --join on a started cluster registers as
    /// attached by itself; see `status`.)
    Attach {
        /// The node id.
        node: u32,
    },
    /// Mark storage node NODE to leave the ring: the next `rebalance` moves its partitions to
    /// the other nodes (refused if fewer than N would be left).
    Detach {
        /// The node id.
        node: u32,
    },
    /// Take back the detach of NODE before a rebalance has started.
    Rollback {
        /// The node id.
        node: u32,
    },
    /// Plan the next ring (storage nodes started since are attached and join, detached ones
    /// leave) and move to it online: writes go to old and new replicas until every moved
    /// partition is filled, then the ring flips. Shows a progress bar until done (the
    /// rebalance goes on if this command is interrupted).
    Rebalance {
        /// Start it and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show where a rebalance stands: partitions filled, bytes moved, nodes behind.
    RebalanceStatus,
    /// Get back every replica NODE should hold (a wiped or replaced node): every partition it
    /// holds is compared with its other replicas and what it lacks is pulled, in parallel
    /// over the cores of the cluster. Shows a progress bar until done.
    RecoverNode {
        /// The node id.
        node: u32,
        /// Start it and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Make every replica of NODE's partitions consistent now (the same comparison as
    /// recover-node, for a node that missed writes rather than lost its data).
    RecoverConsistency {
        /// The node id.
        node: u32,
        /// Start it and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show where the recovery under way (or the last one) stands.
    RecoveryStatus,
    /// Compact every shard of storage node NODE now (segments below the live ratio).
    CompactStart {
        /// The node id.
        node: u32,
    },
    /// Pause storage node NODE's background compaction (a full disk still wakes it).
    CompactSuspend {
        /// The node id.
        node: u32,
    },
    /// Resume storage node NODE's background compaction.
    CompactResume {
        /// The node id.
        node: u32,
    },
    /// Show storage node NODE's compaction per shard: paused or not, last pass, segments
    /// compacted, live and dead bytes.
    CompactStatus {
        /// The node id.
        node: u32,
    },
    /// Set how long a storage node may stay stopped before its partitions are re-replicated
    /// onto the other nodes automatically (one node at a time, never a suspended one, only
    /// onto nodes with room) [default: 1800; 0: never].
    UpdateAutoRecoverAfter {
        /// Seconds.
        secs: u64,
    },
    /// Set the tombstone grace: a storage node that comes back detached (its partitions moved
    /// to the others) after longer than this drops what it held without handing it over and
    /// rejoins wiped [default: 604800, 7 days].
    UpdateTombstoneGrace {
        /// Seconds (at least 1).
        secs: u64,
    },
    /// Compare BUCKET/KEY (and its chunks) on every replica and repair the copies behind.
    RecoverFile {
        /// BUCKET/KEY.
        path: String,
    },
    /// Drop BUCKET/KEY from every gateway's object cache (with --prefix: every object of
    /// BUCKET whose key starts with KEY). A changed object is never served from a cache, but
    /// in R=1 buckets served with --gateway-cache-r1-staleness-ms.
    PurgeCache {
        /// BUCKET/KEY (or BUCKET/PREFIX with --prefix; BUCKET/ with --prefix: the whole bucket).
        path: String,
        /// KEY is a prefix.
        #[arg(long)]
        prefix: bool,
    },
    /// Pause the movement of the rebalance under way (writes still go to both rings).
    RebalanceSuspend,
    /// Give up the rebalance under way: the ring stays what it was (writes met their quorum
    /// in it all along); what the new replicas took is handed over and dropped.
    RebalanceAbort,
    /// Resume a paused rebalance.
    RebalanceResume,
    /// Show the manager group: members, their roles, the leader and the term.
    Managers,
    /// Add the manager listening at ADDR (its --rpc-listen, started with --join) to the group.
    AddManager {
        /// The new manager's --rpc-listen address.
        addr: String,
    },
    /// Remove the manager NODE_ID from the group (see `managers` for the ids).
    RemoveManager {
        /// The manager's node id.
        node_id: u64,
    },
}

impl From<Command> for AdmCommand {
    fn from(command: Command) -> AdmCommand {
        match command {
            Command::Status { node } => AdmCommand::Status { node },
            Command::Start {
                partitions,
                expected_shards,
                replicas,
            } => AdmCommand::Start {
                partitions,
                expected_shards,
                replicas,
            },
            Command::UpdateConsistencyLevel {
                write,
                read,
                delete,
                bucket,
                cluster_default: _,
            } => AdmCommand::UpdateConsistencyLevel {
                levels: write.zip(read).zip(delete).map(|((w, r), d)| (w, r, d)),
                bucket,
            },
            Command::Suspend { node } => AdmCommand::Suspend { node },
            Command::Resume { node } => AdmCommand::Resume { node },
            Command::Whereis { path } => {
                let (bucket, key) = path.split_once('/').unwrap_or((path.as_str(), ""));
                AdmCommand::Whereis {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                }
            }
            Command::Du { node } => AdmCommand::Du { node },
            Command::DumpRing => AdmCommand::DumpRing,
            Command::CreateUser { name } => AdmCommand::CreateUser { user_id: name },
            Command::GetUsers => AdmCommand::GetUsers,
            Command::DeleteUser { name } => AdmCommand::DeleteUser { user_id: name },
            Command::AddBucket {
                bucket,
                access_key_id,
            } => AdmCommand::AddBucket {
                bucket,
                access_key_id,
            },
            Command::GetBuckets => AdmCommand::GetBuckets,
            Command::DeleteBucket { bucket } => AdmCommand::DeleteBucket { bucket },
            Command::UpdateAcl {
                bucket,
                access_key_id,
                acl,
            } => AdmCommand::UpdateAcl {
                bucket,
                access_key_id,
                acl,
            },
            Command::Attach { node } => AdmCommand::Attach { node },
            Command::Detach { node } => AdmCommand::Detach { node },
            Command::Rollback { node } => AdmCommand::Rollback { node },
            Command::Rebalance { no_wait } => AdmCommand::Rebalance { wait: !no_wait },
            Command::RebalanceStatus => AdmCommand::RebalanceStatus,
            Command::RecoverNode { node, no_wait }
            | Command::RecoverConsistency { node, no_wait } => AdmCommand::RecoverNode {
                node,
                wait: !no_wait,
            },
            Command::RecoveryStatus => AdmCommand::RecoveryStatus,
            Command::CompactStart { node } => AdmCommand::CompactStart { node },
            Command::CompactSuspend { node } => AdmCommand::CompactSuspend { node },
            Command::CompactResume { node } => AdmCommand::CompactResume { node },
            Command::CompactStatus { node } => AdmCommand::CompactStatus { node },
            Command::UpdateAutoRecoverAfter { secs } => AdmCommand::UpdateAutoRecoverAfter { secs },
            Command::UpdateTombstoneGrace { secs } => AdmCommand::UpdateTombstoneGrace { secs },
            Command::RecoverFile { path } => {
                let (bucket, key) = path.split_once('/').unwrap_or((path.as_str(), ""));
                AdmCommand::RecoverFile {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                }
            }
            Command::PurgeCache { path, prefix } => {
                let (bucket, key) = path.split_once('/').unwrap_or((path.as_str(), ""));
                AdmCommand::PurgeCache {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    prefix,
                }
            }
            Command::RebalanceSuspend => AdmCommand::RebalanceSuspend,
            Command::RebalanceAbort => AdmCommand::RebalanceAbort,
            Command::RebalanceResume => AdmCommand::RebalanceResume,
            Command::Managers => AdmCommand::Managers,
            Command::AddManager { addr } => AdmCommand::AddManager { addr },
            Command::RemoveManager { node_id } => AdmCommand::RemoveManager { node_id },
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = adm::resolve_token(cli.token, &cli.data_dir).and_then(|token| {
        let client = AdminClient::new(cli.admin, token);
        adm::run(&client, &cli.command.into(), cli.json)
    });
    match outcome {
        Ok(output) => {
            // A reader that closed the pipe early (`| head`) is not an error of the command.
            let _ = writeln!(std::io::stdout(), "{output}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("leofs-adm: {err}");
            ExitCode::FAILURE
        }
    }
}
