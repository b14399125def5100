//! The `leofs-adm` commands: each calls the admin API through [`AdminClient`] and renders the
//! answer as an aligned table (LeoFS style) or, with `--json`, as pretty JSON for scripts. The
//! binary (`src/adm.rs` at the workspace root) only parses arguments and prints.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::admin::NodeStatus;
use crate::admin::wire::{
    ClusterStatus, Deleted, NodeInfo, RebalanceStatus, RecoveryStatus, RingDump, RingSummary,
    StartRequest, UserInfo, Whereabouts,
};
use crate::client::{AdminClient, ClientError};
use crate::cluster::{PeerClock, re_replicate_after_ms};
use crate::raft::GroupStatus;
use crate::store::{ADMIN_TOKEN_FILE, MANAGER_DIR};
use crate::{Bucket, Credentials};

/// Default admin API address (`--admin`, `LEOFS_ADMIN_LISTEN`).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:10010";
/// Default data directory, where the admin token is read from (`--data-dir`, `LEOFS_DATA_DIR`).
pub const DEFAULT_DATA_DIR: &str = "./leofs-data";

const SECONDS_PER_MINUTE: u64 = 60;
const SECONDS_PER_HOUR: u64 = 60 * SECONDS_PER_MINUTE;
const SECONDS_PER_DAY: u64 = 24 * SECONDS_PER_HOUR;
const MILLIS_PER_SECOND: u64 = 1_000;
const BYTE_UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// One `leofs-adm` command with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmCommand {
    /// The cluster (its nodes, states and ring) and the asked node's own figures; with a node
    /// id, that node.
    Status {
        /// A node of the cluster, or None for the whole.
        node: Option<u32>,
    },
    /// Start the cluster: the first ring over the attached storage nodes.
    Start {
        /// Partitions P (a power of two); chosen from the shards when absent.
        partitions: Option<u32>,
        /// Shards the cluster is expected to grow to (P is chosen for them).
        expected_shards: Option<u32>,
        /// Replicas per partition N; the cluster's setting when absent.
        replicas: Option<u32>,
    },
    /// Set the quorums (W, R and D) of the cluster, or of one bucket.
    UpdateConsistencyLevel {
        /// W, R and D; None (a bucket only): the bucket goes back to the cluster's.
        levels: Option<(u32, u32, u32)>,
        /// The bucket whose own quorums these are (None: the cluster's).
        bucket: Option<String>,
    },
    /// Take a storage node out of service.
    Suspend {
        /// The node id.
        node: u32,
    },
    /// Put a suspended storage node back in service.
    Resume {
        /// The node id.
        node: u32,
    },
    /// Where an object's replicas are, with their HLC, size and checksum.
    Whereis {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// A storage node's disk use, per shard.
    Du {
        /// The node id.
        node: u32,
    },
    /// The whole ring: each partition's replicas.
    DumpRing,
    /// Create a user and print its key pair once.
    CreateUser {
        /// The new user's id.
        user_id: String,
    },
    /// List users and their access key ids.
    GetUsers,
    /// Delete a user (refused while it owns buckets).
    DeleteUser {
        /// The user to delete.
        user_id: String,
    },
    /// Create a bucket owned by the user of an access key.
    AddBucket {
        /// The bucket name.
        bucket: String,
        /// An access key id of the owner.
        access_key_id: String,
    },
    /// List buckets.
    GetBuckets,
    /// Delete an empty bucket.
    DeleteBucket {
        /// The bucket name.
        bucket: String,
    },
    /// Change a bucket's canned ACL.
    UpdateAcl {
        /// The bucket name.
        bucket: String,
        /// An access key id of the owner (or an administrator).
        access_key_id: String,
        /// `private`, `public-read` or `public-read-write`.
        acl: String,
    },
    /// Attach a detached storage node again (it joins the ring at the next rebalance).
    Attach {
        /// The node id.
        node: u32,
    },
    /// Mark a storage node to leave the ring at the next rebalance.
    Detach {
        /// The node id.
        node: u32,
    },
    /// Take a detach back before a rebalance.
    Rollback {
        /// The node id.
        node: u32,
    },
    /// Plan the next ring (attached nodes in, detached ones out) and move to it online.
    Rebalance {
        /// Wait until it is done, showing its progress on stderr.
        wait: bool,
    },
    /// Where the ring stands: partitions moving, filled, bytes moved, nodes behind.
    RebalanceStatus,
    /// Compare every partition a node holds with its other replicas and repair it now.
    RecoverNode {
        /// The node id.
        node: u32,
        /// Wait until it is done, showing its progress on stderr.
        wait: bool,
    },
    /// Where the recovery under way (or the last one) stands.
    RecoveryStatus,
    /// Compact every shard of a storage node now.
    CompactStart {
        /// The node id.
        node: u32,
    },
    /// Pause a storage node's background compaction.
    CompactSuspend {
        /// The node id.
        node: u32,
    },
    /// Resume it.
    CompactResume {
        /// The node id.
        node: u32,
    },
    /// A storage node's compaction per shard: paused or not, last pass, live and dead bytes.
    CompactStatus {
        /// The node id.
        node: u32,
    },
    /// Set how long a storage node may stay stopped before its partitions are re-replicated
    /// (never longer than the tombstone grace).
    UpdateAutoRecoverAfter {
        /// Seconds (0: only once the tombstone grace is over).
        secs: u64,
    },
    /// Set the tombstone grace: a storage node stopped for longer has its partitions
    /// re-replicated onto the others and rejoins wiped.
    UpdateTombstoneGrace {
        /// Seconds (at least 1).
        secs: u64,
    },
    /// Compare one object (and its chunks) on every replica and repair the copies behind.
    RecoverFile {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Drop an object (or every object under a prefix) from every gateway's object cache.
    PurgeCache {
        /// The bucket.
        bucket: String,
        /// The key, or the prefix.
        key: String,
        /// Whether `key` is a prefix.
        prefix: bool,
    },
    /// Pause the movement of the rebalance under way.
    RebalanceSuspend,
    /// Give up the rebalance under way (the ring stays what it was).
    RebalanceAbort,
    /// Resume it.
    RebalanceResume,
    /// The manager group: members, leader, term.
    Managers,
    /// Add the manager at an address (its `--rpc-listen`) to the group.
    AddManager {
        /// The new manager's address.
        addr: String,
    },
    /// Remove a manager from the group by its node id.
    RemoveManager {
        /// Its Raft node id (see `managers`).
        node_id: u64,
    },
}

/// Why a command failed; its `Display` is the one line printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum AdmError {
    /// The admin API call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The command's arguments do not make a request.
    #[error("{0}")]
    Usage(String),
    /// No token given and none in the data directory.
    #[error("admin token not found at {}: pass --token or --data-dir", path.display())]
    TokenNotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The token file exists but cannot be read.
    #[error("cannot read admin token at {}: {source} (run as the user that runs `leofs server`, or pass --token)", path.display())]
    TokenUnreadable {
        /// The token file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The answer could not be rendered as JSON.
    #[error("cannot render the answer as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The admin token: `explicit` (from `--token` or `LEOFS_ADMIN_TOKEN`) if given, else the one
/// stored in `<data_dir>/manager/admin.token`.
pub fn resolve_token(explicit: Option<String>, data_dir: &Path) -> Result<String, AdmError> {
    if let Some(token) = explicit.filter(|token| !token.trim().is_empty()) {
        return Ok(token.trim().to_owned());
    }
    let path = data_dir.join(MANAGER_DIR).join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => Err(AdmError::TokenNotFound { path }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(AdmError::TokenNotFound { path }),
        Err(source) => Err(AdmError::TokenUnreadable { path, source }),
    }
}

/// Runs `command` against `client`; returns what to print on stdout (JSON if `json`).
pub fn run(client: &AdminClient, command: &AdmCommand, json: bool) -> Result<String, AdmError> {
    match command {
        AdmCommand::Status { node: None } => {
            let cluster = client.cluster()?;
            let status = client.status()?;
            if json {
                // The node's figures at the top level (as before the cluster), the cluster
                // beside them.
                let mut value = serde_json::to_value(&status)?;
                if let serde_json::Value::Object(fields) = &mut value {
                    fields.insert("cluster".into(), serde_json::to_value(&cluster)?);
                }
                return Ok(serde_json::to_string_pretty(&value)?);
            }
            Ok(format!(
                "{}\n\n{}",
                cluster_text(&cluster),
                status_text(&status)
            ))
        }
        AdmCommand::Status { node: Some(id) } => render(&client.node(*id)?, json, node_text),
        AdmCommand::Start {
            partitions,
            expected_shards,
            replicas,
        } => {
            let request = StartRequest {
                partitions: *partitions,
                expected_shards: *expected_shards,
                replicas: *replicas,
            };
            render(&client.start(&request)?, json, |ring| {
                format!("OK: the cluster is started\n{}", ring_text(ring))
            })
        }
        AdmCommand::UpdateConsistencyLevel { levels, bucket } => {
            let consistency = levels.map(|(write, read, delete)| crate::cluster::Consistency {
                write,
                read,
                delete,
            });
            match (bucket, consistency) {
                (Some(bucket), consistency) => render(
                    &client.set_bucket_consistency(bucket, consistency)?,
                    json,
                    |b| match b.consistency {
                        Some(c) => format!(
                            "OK: bucket {} uses W={} R={} D={}",
                            b.name, c.write, c.read, c.delete
                        ),
                        None => format!("OK: bucket {} uses the cluster's levels", b.name),
                    },
                ),
                (None, Some(consistency)) => {
                    render(&client.set_consistency(&consistency)?, json, |cluster| {
                        format!(
                            "OK: the consistency level is {}",
                            levels_text(cluster.settings.replicas, cluster.settings.consistency)
                        )
                    })
                }
                (None, None) => Err(AdmError::Usage(
                    "update-consistency-level needs W R D (or --bucket B --cluster-default)".into(),
                )),
            }
        }
        AdmCommand::Suspend { node } => {
            render(&client.set_node_suspended(*node, true)?, json, |info| {
                format!(
                    "OK: node {} is {}",
                    info.member.id,
                    info.member.state.as_str()
                )
            })
        }
        AdmCommand::Resume { node } => {
            render(&client.set_node_suspended(*node, false)?, json, |info| {
                format!(
                    "OK: node {} is {}",
                    info.member.id,
                    info.member.state.as_str()
                )
            })
        }
        AdmCommand::Whereis { bucket, key } => {
            render(&client.whereis(bucket, key)?, json, whereis_text)
        }
        AdmCommand::Du { node } => render(&client.node(*node)?, json, du_text),
        AdmCommand::DumpRing => render(&client.ring()?, json, dump_ring_text),
        AdmCommand::CreateUser { user_id } => {
            render(&client.create_user(user_id)?, json, credentials_text)
        }
        AdmCommand::GetUsers => render(&client.users()?, json, |users| users_table(users)),
        AdmCommand::DeleteUser { user_id } => render(&client.delete_user(user_id)?, json, ok_text),
        AdmCommand::AddBucket {
            bucket,
            access_key_id,
        } => render(
            &client.add_bucket(bucket, access_key_id, None)?,
            json,
            |_| "OK".to_owned(),
        ),
        AdmCommand::GetBuckets => {
            render(&client.buckets()?, json, |buckets| buckets_table(buckets))
        }
        AdmCommand::DeleteBucket { bucket } => {
            render(&client.delete_bucket(bucket)?, json, ok_text)
        }
        AdmCommand::UpdateAcl {
            bucket,
            access_key_id,
            acl,
        } => render(
            &client.update_acl(bucket, access_key_id, acl)?,
            json,
            |_| "OK".to_owned(),
        ),
        AdmCommand::Attach { node } => render(&client.attach_node(*node)?, json, |info| {
            format!(
                "OK: node {} is {}; `leofs-adm rebalance` gives it partitions",
                info.member.id,
                info.member.state.as_str()
            )
        }),
        AdmCommand::Detach { node } => render(&client.detach_node(*node, true)?, json, |info| {
            format!(
                "OK: node {} is detached; `leofs-adm rebalance` moves its partitions away",
                info.member.id
            )
        }),
        AdmCommand::Rollback { node } => render(&client.detach_node(*node, false)?, json, |info| {
            format!(
                "OK: node {} is {}",
                info.member.id,
                info.member.state.as_str()
            )
        }),
        AdmCommand::Rebalance { wait } => {
            let started = client.rebalance()?;
            if !wait || started.phase == "idle" {
                return render(&started, json, rebalance_text);
            }
            let done = follow_rebalance(client, started)?;
            render(&done, json, rebalance_text)
        }
        AdmCommand::RebalanceStatus => render(&client.rebalance_status()?, json, rebalance_text),
        AdmCommand::RecoverNode { node, wait } => {
            let mut status = client.recover_node(*node)?;
            if *wait {
                status = follow_recovery(client, status)?;
            }
            render(&status, json, recovery_text)
        }
        AdmCommand::RecoveryStatus => render(&client.recovery_status()?, json, recovery_text),
        AdmCommand::CompactStart { node } => render(&client.compact(*node, "start")?, json, |_| {
            format!("OK: node {node} compacts every shard now (see compact-status {node})")
        }),
        AdmCommand::CompactSuspend { node } => {
            render(&client.compact(*node, "suspend")?, json, |_| {
                format!(
                    "OK: node {node}'s background compaction is paused (a full disk still wakes it)"
                )
            })
        }
        AdmCommand::CompactResume { node } => {
            render(&client.compact(*node, "resume")?, json, |_| {
                format!("OK: node {node}'s background compaction runs again")
            })
        }
        AdmCommand::CompactStatus { node } => render(&client.node(*node)?, json, compact_text),
        AdmCommand::UpdateAutoRecoverAfter { secs } => {
            render(&client.set_auto_recover_after(*secs)?, json, |cluster| {
                let settings = &cluster.settings;
                let after = format_duration_secs(re_replicate_after_ms(settings) / 1000);
                match settings.auto_recover_after_secs {
                    0 => format!(
                        "OK: a stopped storage node's partitions are re-replicated onto the others only once it has been away for the tombstone grace ({after})"
                    ),
                    secs if secs > settings.tombstone_grace_secs => format!(
                        "OK: a storage node stopped for {after} (the tombstone grace, shorter than {}) has its partitions re-replicated onto the others",
                        format_duration_secs(secs)
                    ),
                    _ => format!(
                        "OK: a storage node stopped for {after} has its partitions re-replicated onto the others"
                    ),
                }
            })
        }
        AdmCommand::UpdateTombstoneGrace { secs } => {
            render(&client.set_tombstone_grace(*secs)?, json, |cluster| {
                format!(
                    "OK: a storage node stopped for longer than {} has its partitions re-replicated onto the others (at the latest) and, when it comes back, rejoins wiped",
                    format_duration_secs(cluster.settings.tombstone_grace_secs)
                )
            })
        }
        AdmCommand::RecoverFile { bucket, key } => {
            render(&client.recover_file(bucket, key)?, json, |found| {
                format!(
                    "OK: {}/{}: {} cop{} repaired",
                    found.bucket,
                    found.key,
                    found.repaired,
                    if found.repaired == 1 { "y" } else { "ies" }
                )
            })
        }
        AdmCommand::PurgeCache {
            bucket,
            key,
            prefix,
        } => render(&client.purge_cache(bucket, key, *prefix)?, json, purge_text),
        AdmCommand::RebalanceAbort => render(&client.abort_rebalance()?, json, rebalance_text),
        AdmCommand::RebalanceSuspend => {
            render(&client.suspend_rebalance(true)?, json, rebalance_text)
        }
        AdmCommand::RebalanceResume => {
            render(&client.suspend_rebalance(false)?, json, rebalance_text)
        }
        AdmCommand::Managers => render(&client.managers()?, json, managers_table),
        AdmCommand::AddManager { addr } => render(&client.add_manager(addr)?, json, |added| {
            format!(
                "OK: manager {} at {} is a member",
                added.node_id, added.addr
            )
        }),
        AdmCommand::RemoveManager { node_id } => {
            render(&client.remove_manager(*node_id)?, json, ok_text)
        }
    }
}

/// How often `rebalance` looks at the progress.
const REBALANCE_POLL: std::time::Duration = std::time::Duration::from_millis(500);
/// Cells of the progress bar.
const PROGRESS_CELLS: usize = 30;

/// Polls the rebalance until the ring is idle again, drawing a progress bar on stderr
/// (partitions filled, bytes moved, rate, ETA); the last status. Interrupting it leaves the
/// rebalance going.
fn follow_rebalance(
    client: &AdminClient,
    first: RebalanceStatus,
) -> Result<RebalanceStatus, AdmError> {
    let started = std::time::Instant::now();
    let bytes_at_start = first.moved_bytes;
    // The partitions that move, as the rebalance said while it moved (0 once it flipped).
    let mut moving = first.moving_partitions;
    follow(
        first,
        || client.rebalance_status(),
        |status| status.phase != "idle",
        |status| {
            moving = moving.max(status.moving_partitions);
            let done = match status.phase.as_str() {
                "moving" => status.filled_partitions,
                _ => moving,
            };
            let moved = status.moved_bytes.saturating_sub(bytes_at_start);
            let elapsed = started.elapsed();
            let eta = if status.phase == "moving" && done > 0 && done < moving {
                let secs = elapsed.as_secs_f64();
                let left = secs * f64::from(moving - done) / f64::from(done);
                format!(", ETA {}", format_duration_secs(left.ceil() as u64))
            } else {
                String::new()
            };
            format!(
                "{}{eta}",
                progress_line(&status.phase, done, moving, moved, elapsed)
            )
        },
    )
}

/// Polls the recovery until it is over, drawing a progress bar on stderr; the last status.
fn follow_recovery(
    client: &AdminClient,
    first: RecoveryStatus,
) -> Result<RecoveryStatus, AdmError> {
    let started = std::time::Instant::now();
    let bytes_at_start = first.moved_bytes;
    follow(
        first,
        || client.recovery_status(),
        |status| status.phase == "recovering",
        |status| {
            let done = if status.phase == "recovering" {
                status.done
            } else {
                status.partitions
            };
            let moved = status.moved_bytes.saturating_sub(bytes_at_start);
            progress_line(
                &status.phase,
                done,
                status.partitions,
                moved,
                started.elapsed(),
            )
        },
    )
}

/// Shows `line_of` each status `poll` answers on stderr (in place on a terminal, a line per
/// change otherwise) every [`REBALANCE_POLL`] while it is `under_way`; the last status.
fn follow<T>(
    first: T,
    mut poll: impl FnMut() -> Result<T, ClientError>,
    under_way: impl Fn(&T) -> bool,
    mut line_of: impl FnMut(&T) -> String,
) -> Result<T, AdmError> {
    use std::io::{IsTerminal, Write};
    let terminal = io::stderr().is_terminal();
    let mut last_line = String::new();
    let mut status = first;
    loop {
        let line = line_of(&status);
        if line != last_line {
            let mut err = io::stderr();
            // Best effort: progress that cannot be shown does not stop the command.
            let _ = if terminal {
                write!(err, "\r{line:<100}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
            last_line = line;
        }
        if !under_way(&status) {
            if terminal {
                let _ = writeln!(io::stderr());
            }
            return Ok(status);
        }
        std::thread::sleep(REBALANCE_POLL);
        status = poll()?;
    }
}

/// One line of progress: a bar of `done` partitions of `total`, the bytes moved and their
/// rate over `elapsed`.
fn progress_line(
    phase: &str,
    done: u32,
    total: u32,
    moved: u64,
    elapsed: std::time::Duration,
) -> String {
    // Nothing to move is done.
    let cells = match total {
        0 => PROGRESS_CELLS,
        _ => done.min(total) as usize * PROGRESS_CELLS / total as usize,
    };
    let rate = (moved as f64 / elapsed.as_secs_f64().max(0.001)) as u64;
    format!(
        "[{}{}] {phase} {}/{total} partitions, {} moved ({}/s)",
        "#".repeat(cells),
        ".".repeat(PROGRESS_CELLS - cells),
        done.min(total),
        format_bytes(moved),
        format_bytes(rate),
    )
}

fn recovery_text(status: &RecoveryStatus) -> String {
    let Some(node) = status.node else {
        return "no recovery has run".to_owned();
    };
    let when = if status.phase == "recovering" {
        format!("asked {}", format_unix_ms(status.requested_unix_ms))
    } else {
        format!("finished {}", format_unix_ms(status.finished_unix_ms))
    };
    format!(
        "recovery of node {node}: {}, {} of {} partitions compared and repaired ({when})",
        status.phase, status.done, status.partitions
    )
}

fn compact_text(info: &NodeInfo) -> String {
    let Some(beat) = &info.heartbeat else {
        return format!("node {}: no heartbeat yet", info.member.id);
    };
    let rows: Vec<Vec<String>> = beat
        .shards
        .iter()
        .map(|s| {
            vec![
                s.shard.to_string(),
                if s.compaction_suspended {
                    "suspended".to_owned()
                } else {
                    "enabled".to_owned()
                },
                match s.last_compaction_unix_ms {
                    0 => "-".to_owned(),
                    at => format_unix_ms(at),
                },
                s.segments_compacted.to_string(),
                format_bytes(s.live_bytes),
                format_bytes(s.dead_bytes),
                s.segments.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "shard",
            "compaction",
            "last pass",
            "segments compacted",
            "live",
            "dead",
            "segments",
        ],
        &rows,
    )
}

fn rebalance_text(status: &RebalanceStatus) -> String {
    let mut lines = vec![format!(
        "ring epoch {}: {}{}",
        status.ring_epoch,
        status.phase,
        if status.suspended { " (suspended)" } else { "" }
    )];
    if let Some(node) = status.recovering_node {
        lines.push(format!(
            "re-replicating the partitions of node {node}, stopped for longer than auto_recover_after (or the tombstone grace)"
        ));
    }
    if status.phase == "moving" {
        lines.push(format!(
            "partitions filled: {} of {} moving ({} replicas move)",
            status.filled_partitions, status.moving_partitions, status.moved_replicas
        ));
        lines.push(format!(
            "started: {}",
            format_unix_ms(status.started_unix_ms)
        ));
    }
    if status.foreign_partitions > 0 {
        lines.push(format!(
            "partitions former owners still hold: {}",
            status.foreign_partitions
        ));
    }
    if !status.nodes_behind.is_empty() {
        lines.push(format!(
            "nodes not routing by this ring yet: {:?}",
            status.nodes_behind
        ));
    }
    lines.push(format!(
        "bytes moved by the nodes since they started: {}",
        format_bytes(status.moved_bytes)
    ));
    lines.join("\n")
}

fn managers_table(group: &GroupStatus) -> String {
    let rows: Vec<Vec<String>> = group
        .members
        .iter()
        .map(|member| {
            let role = match (group.leader == Some(member.node_id), member.voter) {
                (true, _) => "leader",
                (false, true) => "voter",
                (false, false) => "learner",
            };
            let here = if member.node_id == group.node_id {
                " (asked)"
            } else {
                ""
            };
            vec![
                member.node_id.to_string(),
                member.addr.clone(),
                format!("{role}{here}"),
            ]
        })
        .collect();
    let applied = group
        .applied_index
        .map_or_else(|| "-".to_owned(), |index| index.to_string());
    format!(
        "term {}, applied index {applied}, this manager is {}\n{}",
        group.term,
        group.state,
        table(&["node_id", "address", "role"], &rows)
    )
}

/// N, W, R and D as `status` shows them (the defaults for N when none were set).
fn levels_text(replicas: u32, consistency: Option<crate::cluster::Consistency>) -> String {
    let (set, c) = match consistency {
        Some(c) => ("", c),
        None => (
            " (defaults)",
            crate::cluster::Consistency::defaults_for(replicas),
        ),
    };
    format!(
        "N={replicas} W={} R={} D={}{set}",
        c.write, c.read, c.delete
    )
}

fn cluster_text(cluster: &ClusterStatus) -> String {
    let head = table(
        &["item", "value"],
        &[
            vec![
                "cluster id".to_owned(),
                cluster.cluster_id.clone().unwrap_or_else(|| "-".to_owned()),
            ],
            vec![
                "ring epoch".to_owned(),
                if cluster.ring_epoch == 0 {
                    "- (not started: leofs-adm start)".to_owned()
                } else {
                    cluster.ring_epoch.to_string()
                },
            ],
            vec![
                "ring checksum".to_owned(),
                format!("{:016x}", cluster.ring_checksum),
            ],
            vec!["partitions".to_owned(), cluster.partitions.to_string()],
            vec!["replicas".to_owned(), cluster.settings.replicas.to_string()],
            vec![
                "consistency".to_owned(),
                levels_text(cluster.settings.replicas, cluster.settings.consistency),
            ],
        ],
    );
    let rows: Vec<Vec<String>> = cluster.nodes.iter().map(node_row).collect();
    format!(
        "[cluster]\n{head}\n\n[nodes]\n{}",
        table(NODE_HEADERS, &rows)
    )
}

const NODE_HEADERS: &[&str] = &[
    "id",
    "address",
    "roles",
    "state",
    "shards",
    "partitions",
    "ring epoch",
    "ring checksum",
    "disk used",
    "clock offset",
    "peer clocks",
    "last heartbeat",
];

fn node_row(info: &NodeInfo) -> Vec<String> {
    let member = &info.member;
    let roles: Vec<&str> = [(member.storage, "storage"), (member.gateway, "gateway")]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect();
    let beat = info.heartbeat.as_ref();
    vec![
        member.id.to_string(),
        member.addr.clone(),
        roles.join(","),
        member.state.as_str().to_owned(),
        member.shards.to_string(),
        info.partitions.to_string(),
        beat.map_or_else(|| "-".to_owned(), |b| b.ring_epoch.to_string()),
        beat.map_or_else(|| "-".to_owned(), |b| format!("{:016x}", b.ring_checksum)),
        beat.map_or_else(
            || "-".to_owned(),
            |b| {
                let full: Vec<String> = b
                    .shards
                    .iter()
                    .filter(|s| s.disk_full)
                    .map(|s| s.shard.to_string())
                    .collect();
                let used = format!(
                    "{} / {}",
                    format_bytes(b.disk_used_bytes),
                    format_bytes(b.disk_capacity_bytes)
                );
                match full.len() {
                    0 => used,
                    _ => format!("{used} FULL (shard {} refuses writes)", full.join(", ")),
                }
            },
        ),
        match beat.and_then(|b| b.clock_offset_us) {
            None => "-".to_owned(),
            Some(us) if info.clock_beyond_bound => {
                format!("{:+.1} ms (beyond the bound)", us as f64 / 1000.0)
            }
            Some(us) => format!("{:+.1} ms", us as f64 / 1000.0),
        },
        beat.map_or_else(|| "-".to_owned(), |b| widest_peer_clock(&b.peer_clocks)),
        info.heartbeat_age_ms.map_or_else(
            || "never".to_owned(),
            |ms| format!("{:.1} s ago", ms as f64 / 1000.0),
        ),
    ]
}

/// The peer whose clock is farthest from the node's, as "+1.2 ms (node 3)" ("-": none measured).
fn widest_peer_clock(clocks: &[PeerClock]) -> String {
    clocks
        .iter()
        .max_by_key(|c| c.offset_us.unsigned_abs())
        .map_or_else(
            || "-".to_owned(),
            |c| format!("{:+.1} ms (node {})", c.offset_us as f64 / 1000.0, c.node),
        )
}

/// A gateway's object cache, all its cores together.
fn gateway_cache_text(cache: &crate::admin::GatewayCacheStatus) -> String {
    let memory = format!(
        "gateway cache: {} objects, {}; hits {}, misses {}, revalidations {}, stale {}, \
         evictions {}",
        cache.entries,
        format_bytes(cache.bytes),
        cache.hits,
        cache.misses,
        cache.revalidations,
        cache.stale,
        cache.evictions
    );
    if cache.disk_entries + cache.disk_hits + cache.disk_write_failures == 0 {
        return memory;
    }
    format!(
        "{memory}; disk: {} objects, {}, hits {}, dropped damaged {}, write failures {}, \
         skipped {}",
        cache.disk_entries,
        format_bytes(cache.disk_bytes),
        cache.disk_hits,
        cache.disk_dropped,
        cache.disk_write_failures,
        cache.disk_skipped
    )
}

/// Every peer's clock as the node measured it.
fn peer_clocks_text(clocks: &[PeerClock]) -> String {
    let rows: Vec<Vec<String>> = clocks
        .iter()
        .map(|c| {
            vec![
                c.node.to_string(),
                format!("{:+.3} ms", c.offset_us as f64 / 1000.0),
                format!("{:.3} ms", c.round_trip_us as f64 / 1000.0),
            ]
        })
        .collect();
    table(
        &["peer", "this clock minus the peer's", "round trip"],
        &rows,
    )
}

fn node_text(info: &NodeInfo) -> String {
    let member = &info.member;
    let mut text = table(NODE_HEADERS, &[node_row(info)]);
    text.push_str(&format!(
        "\nzone: {}\ncapacity: {}\nregistered: {}\n\n",
        if member.zone.is_empty() {
            "-"
        } else {
            &member.zone
        },
        format_bytes(member.capacity_bytes),
        format_unix_ms(member.registered_unix_ms)
    ));
    text.push_str(&du_text(info));
    if let Some(beat) = info
        .heartbeat
        .as_ref()
        .filter(|b| !b.peer_clocks.is_empty())
    {
        text.push_str("\n\n[peer clocks]\n");
        text.push_str(&peer_clocks_text(&beat.peer_clocks));
    }
    if let Some(beat) = info.heartbeat.as_ref().filter(|_| member.gateway) {
        text.push_str(&format!("\n\n{}", gateway_cache_text(&beat.gateway_cache)));
    }
    if let Some(beat) = info
        .heartbeat
        .as_ref()
        .filter(|b| member.storage && b.lifecycle.passes > 0)
    {
        text.push_str(&format!("\n\n{}", lifecycle_text(&beat.lifecycle)));
    }
    text
}

/// A storage node's lifecycle workers, all its cores together.
fn lifecycle_text(lifecycle: &crate::admin::LifecycleStatus) -> String {
    format!(
        "lifecycle: {} passes, {} versions examined; expired {}, noncurrent deleted {}, \
         delete markers removed {}, uploads aborted {}",
        lifecycle.passes,
        lifecycle.examined,
        lifecycle.expired,
        lifecycle.noncurrent_deleted,
        lifecycle.markers_removed,
        lifecycle.uploads_aborted
    )
}

fn du_text(info: &NodeInfo) -> String {
    let Some(beat) = &info.heartbeat else {
        return format!(
            "node {} has sent no heartbeat to this manager",
            info.member.id
        );
    };
    let rows: Vec<Vec<String>> = beat
        .shards
        .iter()
        .map(|s| {
            vec![
                s.shard.to_string(),
                s.live_records.to_string(),
                format_bytes(s.live_bytes),
                format_bytes(s.dead_bytes),
                s.segments.to_string(),
                s.garbage_pending.to_string(),
            ]
        })
        .collect();
    let disk = table(
        &["shard", "records", "live", "dead", "segments", "gc queue"],
        &rows,
    );
    if beat
        .shards
        .iter()
        .all(|s| s.anti_entropy_passes == 0 && s.hints_held == 0)
    {
        return disk;
    }
    let rows: Vec<Vec<String>> = beat
        .shards
        .iter()
        .map(|s| {
            vec![
                s.shard.to_string(),
                s.hints_held.to_string(),
                s.anti_entropy_passes.to_string(),
                s.partitions_under_replicated.to_string(),
                format_duration_secs(s.oldest_unrepaired_partition_seconds),
            ]
        })
        .collect();
    let replication = table(
        &[
            "shard",
            "hints held",
            "anti-entropy passes",
            "under-replicated partitions",
            "oldest unrepaired",
        ],
        &rows,
    );
    format!("{disk}\n\n{replication}")
}

fn ring_text(ring: &RingSummary) -> String {
    let rows: Vec<Vec<String>> = ring
        .partitions_by_node
        .iter()
        .map(|(node, count)| vec![node.to_string(), count.to_string()])
        .collect();
    format!(
        "ring epoch {}, checksum {:016x}, {} partitions, {} replica(s)\n{}",
        ring.epoch,
        ring.checksum,
        ring.partitions,
        ring.replicas,
        table(&["node", "partitions"], &rows)
    )
}

fn dump_ring_text(dump: &RingDump) -> String {
    let replicas = (dump.ring.replicas as usize).max(1);
    let rows: Vec<Vec<String>> = dump
        .ring
        .table
        .chunks(replicas)
        .enumerate()
        .map(|(partition, set)| {
            let places: Vec<String> = set
                .iter()
                .map(|(node, shard)| {
                    let addr = dump.nodes.get(node).map_or("?", String::as_str);
                    format!("{node}/{shard} ({addr})")
                })
                .collect();
            vec![partition.to_string(), places.join(", ")]
        })
        .collect();
    format!(
        "{}\n\n{}",
        ring_text(&dump.summary),
        table(&["partition", "replicas (node/shard)"], &rows)
    )
}

fn whereis_text(found: &Whereabouts) -> String {
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = found
        .replicas
        .iter()
        .map(|r| {
            vec![
                format!("{}/{}", r.node, r.shard),
                r.addr.clone(),
                match (&r.error, r.found) {
                    (Some(e), _) => format!("error: {e}"),
                    (None, true) => "found".to_owned(),
                    (None, false) => "absent".to_owned(),
                },
                r.hlc.clone().unwrap_or_else(dash),
                r.size.map_or_else(dash, format_bytes),
                r.checksum.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    format!(
        "{}/{} is in partition {}\n{}",
        found.bucket,
        found.key,
        found.partition,
        table(
            &["replica", "address", "state", "hlc", "size", "checksum"],
            &rows
        )
    )
}

fn render<T: Serialize>(
    value: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<String, AdmError> {
    if json {
        Ok(serde_json::to_string_pretty(value)?)
    } else {
        Ok(text(value))
    }
}

fn ok_text(_: &Deleted) -> String {
    "OK".to_owned()
}

fn credentials_text(credentials: &Credentials) -> String {
    format!(
        "user-id: {}\naccess-key-id: {}\nsecret-access-key: {}",
        credentials.user_id, credentials.access_key_id, credentials.secret_access_key
    )
}

fn users_table(users: &[UserInfo]) -> String {
    let mut rows = Vec::new();
    for user in users {
        let role = if user.is_admin { "admin" } else { "user" };
        let created = format_unix_ms(user.created_unix_ms);
        if user.access_key_ids.is_empty() {
            rows.push(vec![
                user.user_id.clone(),
                role.to_owned(),
                "-".to_owned(),
                created.clone(),
            ]);
        }
        for key in &user.access_key_ids {
            rows.push(vec![
                user.user_id.clone(),
                role.to_owned(),
                key.clone(),
                created.clone(),
            ]);
        }
    }
    table(&["user_id", "role", "access_key_id", "created_at"], &rows)
}

fn buckets_table(buckets: &[Bucket]) -> String {
    let rows: Vec<Vec<String>> = buckets
        .iter()
        .map(|bucket| {
            vec![
                bucket.name.clone(),
                bucket.owner.clone(),
                bucket.acl.as_str().to_owned(),
                bucket.consistency.map_or_else(
                    || "cluster's".to_owned(),
                    |c| format!("W={} R={} D={}", c.write, c.read, c.delete),
                ),
                format_unix_ms(bucket.created_unix_ms),
            ]
        })
        .collect();
    table(
        &[
            "bucket",
            "owner",
            "permissions",
            "consistency",
            "created_at",
        ],
        &rows,
    )
}

fn status_text(status: &NodeStatus) -> String {
    let summary = table(
        &["item", "value"],
        &[
            vec!["version".to_owned(), status.version.clone()],
            vec!["s3 endpoint".to_owned(), status.s3_endpoint.clone()],
            vec!["cores".to_owned(), status.cores.to_string()],
            vec!["partitions".to_owned(), status.partitions.to_string()],
            vec![
                "uptime".to_owned(),
                format_duration_secs(status.uptime_secs),
            ],
        ],
    );
    let shards: Vec<Vec<String>> = status
        .shards
        .iter()
        .map(|shard| {
            vec![
                shard.core.to_string(),
                shard.partitions_owned.to_string(),
                shard.live_records.to_string(),
                shard.tombstones.to_string(),
                format_bytes(shard.live_bytes),
                format_bytes(shard.dead_bytes),
                shard.segments.to_string(),
                shard.free_segments.to_string(),
                format_bytes(shard.index_bytes),
                shard.corrupt_records.to_string(),
                shard.garbage_pending.to_string(),
            ]
        })
        .collect();
    let shard_table = table(
        &[
            "core",
            "partitions",
            "records",
            "tombstones",
            "live",
            "dead",
            "segments",
            "free",
            "index",
            "corrupt",
            "gc queue",
        ],
        &shards,
    );
    format!("[node]\n{summary}\n\n[shards]\n{shard_table}")
}

/// An aligned table in the LeoFS `leofs-adm` style: ` | ` between columns, `-+-` under headers.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join(" | ").trim_end().to_owned()
    };
    let mut out = vec![line(&mut headers.iter().copied())];
    out.push(
        widths
            .iter()
            .map(|width| "-".repeat(*width))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    for row in rows {
        out.push(line(&mut row.iter().map(String::as_str)));
    }
    out.join("\n")
}

/// `1536` → `1.5 KiB`; exact bytes below 1 KiB.
pub fn format_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < BYTE_UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", BYTE_UNITS[unit])
}

/// `93784` → `1d 02:03:04`; `3723` → `01:02:03`.
pub fn format_duration_secs(secs: u64) -> String {
    let days = secs / SECONDS_PER_DAY;
    let hours = secs % SECONDS_PER_DAY / SECONDS_PER_HOUR;
    let minutes = secs % SECONDS_PER_HOUR / SECONDS_PER_MINUTE;
    let seconds = secs % SECONDS_PER_MINUTE;
    if days > 0 {
        format!("{days}d {hours:02}:{minutes:02}:{seconds:02}")
    } else {
        format!("{hours:02}:{minutes:02}:{seconds:02}")
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD hh:mm:ss +0000` (UTC).
pub fn format_unix_ms(unix_ms: u64) -> String {
    let secs = unix_ms / MILLIS_PER_SECOND;
    let (year, month, day) = civil_from_days(secs / SECONDS_PER_DAY);
    let of_day = secs % SECONDS_PER_DAY;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} +0000",
        of_day / SECONDS_PER_HOUR,
        of_day % SECONDS_PER_HOUR / SECONDS_PER_MINUTE,
        of_day % SECONDS_PER_MINUTE
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for non-negative day counts); also the gateway's access
/// log dates.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `purge-cache`'s answer in words.
fn purge_text(purged: &crate::admin::wire::CachePurged) -> String {
    let what = if purged.prefix {
        format!("every object of {} under '{}'", purged.bucket, purged.key)
    } else {
        format!("{}/{}", purged.bucket, purged.key)
    };
    let seen = (purged.gateways as usize).saturating_sub(purged.gateways_behind.len());
    let mut text = format!(
        "OK: purge {} recorded: every gateway drops {what} from its object cache before its \
         next cached read ({seen} of {} running gateway(s) have it)",
        purged.seq, purged.gateways
    );
    if !purged.gateways_behind.is_empty() {
        text.push_str(&format!(
            "; gateway node(s) {:?} apply it once their catalog catches up",
            purged.gateways_behind
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["alice".to_owned(), "1".to_owned()],
            vec!["b".to_owned(), "12345".to_owned()],
        ];
        assert_eq!(
            table(&["user_id", "n"], &rows),
            "user_id | n\n--------+------\nalice   | 1\nb       | 12345"
        );
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(format_unix_ms(0), "1970-01-01 00:00:00 +0000");
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29 00:00:00 +0000");
        assert_eq!(
            format_unix_ms(1_795_545_039_999),
            "2026-11-24 18:30:39 +0000"
        );
    }

    #[test]
    fn progress_lines_show_the_share_done_and_the_rate() {
        let half = progress_line("moving", 15, 30, 2 << 20, std::time::Duration::from_secs(2));
        let bar = format!("[{}{}]", "#".repeat(15), ".".repeat(15));
        assert_eq!(
            half,
            format!("{bar} moving 15/30 partitions, 2.0 MiB moved (1.0 MiB/s)")
        );
        // Nothing to move is done.
        let none = progress_line("idle", 0, 0, 0, std::time::Duration::from_secs(1));
        assert!(
            none.starts_with(&format!("[{}] idle 0/0", "#".repeat(30))),
            "{none}"
        );
    }

    #[test]
    fn a_gateway_cache_reads_as_one_line() {
        let cache = crate::admin::GatewayCacheStatus {
            hits: 9,
            misses: 2,
            stale: 1,
            evictions: 0,
            entries: 3,
            bytes: 3 << 20,
            ..Default::default()
        };
        assert_eq!(
            gateway_cache_text(&cache),
            "gateway cache: 3 objects, 3.0 MiB; hits 9, misses 2, revalidations 0, stale 1, \
             evictions 0"
        );
        let with_disk = crate::admin::GatewayCacheStatus {
            disk_entries: 5,
            disk_bytes: 5 << 20,
            disk_hits: 4,
            disk_dropped: 1,
            ..cache
        };
        assert_eq!(
            gateway_cache_text(&with_disk),
            "gateway cache: 3 objects, 3.0 MiB; hits 9, misses 2, revalidations 0, stale 1, \
             evictions 0; disk: 5 objects, 5.0 MiB, hits 4, dropped damaged 1, write failures 0, \
             skipped 0"
        );
    }

    #[test]
    fn the_widest_peer_clock_is_shown_with_its_peer() {
        assert_eq!(widest_peer_clock(&[]), "-");
        let clocks = [
            PeerClock {
                node: 2,
                offset_us: 1_200,
                round_trip_us: 90,
            },
            PeerClock {
                node: 3,
                offset_us: -3_000_400,
                round_trip_us: 110,
            },
        ];
        assert_eq!(widest_peer_clock(&clocks), "-3000.4 ms (node 3)");
        let text = peer_clocks_text(&clocks);
        assert!(text.contains("2    | +1.200 ms"), "{text}");
        assert!(text.contains("| 0.110 ms"), "{text}");
    }

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(format_duration_secs(3_723), "01:02:03");
        assert_eq!(format_duration_secs(93_784), "1d 02:03:04");
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1_023), "1023 B");
        assert_eq!(format_bytes(1_536), "1.5 KiB");
        assert_eq!(format_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn token_comes_from_the_flag_first_then_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_token(Some("t0k".to_owned()), dir.path()).unwrap(),
            "t0k"
        );
        let err = resolve_token(None, dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "admin token not found at {}: pass --token or --data-dir",
                dir.path().join("manager/admin.token").display()
            )
        );
        std::fs::create_dir_all(dir.path().join("manager")).unwrap();
        std::fs::write(dir.path().join("manager/admin.token"), "abc\n").unwrap();
        assert_eq!(resolve_token(None, dir.path()).unwrap(), "abc");
    }
}
