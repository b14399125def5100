//! `GET /metrics`: the node in the Prometheus text format, rendered at each scrape from the
//! same figures as `leofs-adm status` (per shard: the engine's records and bytes, the garbage
//! queue's depth, calls over the wire) and from the manager (its Raft group, the catalog's
//! size). Served without the admin token (the figures hold no secret, and scrapers rarely carry
//! one); the admin listener is on loopback unless configured otherwise.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::NodeStatus;
use crate::ManagerState;
use crate::raft::GroupStatus;

type Labels = Vec<(&'static str, String)>;
type GaugeU64 = Gauge<u64, AtomicU64>;

/// A gauge family per shard, filled from `value`.
fn per_shard_gauge(
    registry: &mut Registry,
    name: &str,
    help: &str,
    status: &NodeStatus,
    value: impl Fn(&super::ShardStatus) -> u64,
) {
    let family = Family::<Labels, GaugeU64>::default();
    for shard in &status.shards {
        family
            .get_or_create(&vec![("core", shard.core.to_string())])
            .set(value(shard));
    }
    registry.register(name, help, family);
}

/// A counter family per shard (a figure that only grows while the node runs).
fn per_shard_counter(
    registry: &mut Registry,
    name: &str,
    help: &str,
    status: &NodeStatus,
    value: impl Fn(&super::ShardStatus) -> u64,
) {
    let family = Family::<Labels, Counter<u64, AtomicU64>>::default();
    for shard in &status.shards {
        family
            .get_or_create(&vec![("core", shard.core.to_string())])
            .inc_by(value(shard));
    }
    registry.register(name, help, family);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let gauge = GaugeU64::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

/// This node's clock offset from each storage node it reached (seconds, this clock minus the
/// peer's).
fn peer_clocks(registry: &mut Registry, status: &NodeStatus) {
    if status.peer_clocks.is_empty() {
        return;
    }
    let offsets = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for clock in &status.peer_clocks {
        offsets
            .get_or_create(&vec![("peer", clock.node.to_string())])
            .set(clock.offset_us as f64 / 1e6);
    }
    registry.register(
        "peer_clock_offset_seconds",
        "This node's clock minus a peer's, measured over a round trip between the two",
        offsets,
    );
}

/// Hinted handoff: hints each core holds for each replica that missed writes (what a node down
/// or slow leaves to replay), and the hints replayed and dropped since start.
fn hints(registry: &mut Registry, status: &NodeStatus) {
    let pending = Family::<Labels, GaugeU64>::default();
    let pending_bytes = Family::<Labels, GaugeU64>::default();
    for shard in &status.shards {
        for target in &shard.hints_pending {
            let labels = vec![
                ("core", shard.core.to_string()),
                ("target_node", target.node.to_string()),
                ("target_shard", target.shard.to_string()),
            ];
            pending.get_or_create(&labels).set(target.count);
            pending_bytes.get_or_create(&labels).set(target.bytes);
        }
    }
    registry.register(
        "hints_pending",
        "Hints held for a replica that missed writes, replayed when it answers again",
        pending,
    );
    registry.register(
        "hints_pending_bytes",
        "Bytes of the hints held for a replica",
        pending_bytes,
    );
    per_shard_counter(
        registry,
        "hints_replayed",
        "Hints replayed to their replica",
        status,
        |s| s.hints_replayed,
    );
    per_shard_counter(
        registry,
        "hints_dropped",
        "Hints dropped (expired, or over a replica's cap): left to anti-entropy",
        status,
        |s| s.hints_dropped,
    );
}

/// Anti-entropy: passes run, entries repaired, and the partitions it has not yet found
/// identical on all N replicas (how many, and for how long the oldest).
fn anti_entropy(registry: &mut Registry, status: &NodeStatus) {
    per_shard_counter(
        registry,
        "anti_entropy_passes",
        "Anti-entropy passes run over a partition's replicas",
        status,
        |s| s.anti_entropy_passes,
    );
    per_shard_counter(
        registry,
        "anti_entropy_repaired",
        "Entries anti-entropy gave to replicas that lacked them",
        status,
        |s| s.anti_entropy_repaired,
    );
    per_shard_gauge(
        registry,
        "partitions_under_replicated",
        "Partitions whose last anti-entropy pass did not find all N replicas answering and identical",
        status,
        |s| s.partitions_under_replicated,
    );
    per_shard_gauge(
        registry,
        "oldest_unrepaired_partition_seconds",
        "Seconds since the longest-unrepaired partition was last found identical on all N replicas",
        status,
        |s| s.oldest_unrepaired_partition_seconds,
    );
}

/// The S3 requests of every core: counts by operation and status, bytes by operation, and a
/// latency histogram by operation.
fn requests(registry: &mut Registry, status: &NodeStatus) {
    let counts = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let bytes_in = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let bytes_out = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let mut latency: BTreeMap<String, Latency> = BTreeMap::new();
    for request in status.shards.iter().flat_map(|s| &s.requests) {
        let operation = ("operation", request.operation.clone());
        counts
            .get_or_create(&vec![
                operation.clone(),
                ("status", request.status.to_string()),
            ])
            .inc_by(request.requests);
        bytes_in
            .get_or_create(&vec![operation.clone()])
            .inc_by(request.bytes_in);
        bytes_out
            .get_or_create(&vec![operation])
            .inc_by(request.bytes_out);
        latency
            .entry(request.operation.clone())
            .or_insert_with(|| Latency::new(&status.latency_buckets_us))
            .add(request);
    }
    registry.register(
        "s3_requests",
        "S3 and REST requests answered (REST operations are named Rest*)",
        counts,
    );
    registry.register("s3_request_bytes", "Request body bytes received", bytes_in);
    registry.register("s3_response_bytes", "Answer body bytes sent", bytes_out);
    registry.register(
        "s3_request_duration_seconds",
        "Time from a request to its answer's head",
        LatencyFamily(latency.into_iter().collect()),
    );
}

/// One operation's latency histogram, summed over cores and statuses.
#[derive(Debug)]
struct Latency {
    /// (upper bound in seconds, requests in the bucket); the last bound is +Inf.
    buckets: Vec<(f64, u64)>,
    sum_seconds: f64,
    count: u64,
}

impl Latency {
    fn new(bounds_us: &[u64]) -> Self {
        let mut buckets: Vec<(f64, u64)> =
            bounds_us.iter().map(|&us| (us as f64 / 1e6, 0)).collect();
        buckets.push((f64::INFINITY, 0));
        Self {
            buckets,
            sum_seconds: 0.0,
            count: 0,
        }
    }

    fn add(&mut self, request: &super::RequestStatus) {
        for (bucket, count) in self.buckets.iter_mut().zip(&request.latency_buckets) {
            bucket.1 += count;
        }
        self.sum_seconds += request.latency_us_sum as f64 / 1e6;
        self.count += request.requests;
    }
}

/// Latency histograms labelled by operation.
#[derive(Debug)]
struct LatencyFamily(Vec<(String, Latency)>);

impl TypedMetric for LatencyFamily {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (operation, latency) in &self.0 {
            let labels: Labels = vec![("operation", operation.clone())];
            encoder
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    latency.sum_seconds,
                    latency.count,
                    &latency.buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The exposition text for one scrape.
pub(super) fn render(
    status: &NodeStatus,
    group: Option<&GroupStatus>,
    catalog: &ManagerState,
) -> String {
    let mut registry = Registry::with_prefix("leofs");
    gauge(
        &mut registry,
        "uptime_seconds",
        "Seconds since the node started",
        status.uptime_secs,
    );
    gauge(
        &mut registry,
        "cores",
        "Cores (shards) serving",
        status.cores as u64,
    );
    if let Some(offset_us) = status.clock_offset_us {
        let offset = Gauge::<f64, AtomicU64>::default();
        offset.set(offset_us as f64 / 1e6);
        registry.register(
            "clock_offset_seconds",
            "This node's clock minus the managers', as its heartbeats measured it",
            offset,
        );
    }
    peer_clocks(&mut registry, status);
    hints(&mut registry, status);
    anti_entropy(&mut registry, status);
    let r = &mut registry;
    per_shard_gauge(
        r,
        "partitions_owned",
        "Partitions this core owns",
        status,
        |s| u64::from(s.partitions_owned),
    );
    per_shard_gauge(r, "live_records", "Live objects (records)", status, |s| {
        s.live_records
    });
    per_shard_gauge(
        r,
        "tombstones",
        "Tombstones not yet compacted away",
        status,
        |s| s.tombstones,
    );
    per_shard_gauge(
        r,
        "live_bytes",
        "Bytes of live data in the log",
        status,
        |s| s.live_bytes,
    );
    per_shard_gauge(
        r,
        "dead_bytes",
        "Bytes of dead data compaction can reclaim",
        status,
        |s| s.dead_bytes,
    );
    per_shard_gauge(r, "segments", "Log segments on disk", status, |s| {
        s.segments
    });
    per_shard_gauge(
        r,
        "free_segments",
        "Free (recycled or pre-allocated) segments",
        status,
        |s| s.free_segments,
    );
    per_shard_gauge(
        r,
        "disk_full",
        "1 while the shard refuses writes for lack of room (a refusal in the last 10 s)",
        status,
        |s| u64::from(s.disk_full),
    );
    per_shard_counter(
        r,
        "writes_refused_disk_full",
        "Writes the shard refused for lack of room",
        status,
        |s| s.writes_refused_disk_full,
    );
    per_shard_gauge(
        r,
        "segments_set_aside",
        "Segments set aside as damaged",
        status,
        |s| s.segments_set_aside,
    );
    per_shard_gauge(
        r,
        "index_bytes",
        "Bytes of the in-memory index",
        status,
        |s| s.index_bytes,
    );
    per_shard_gauge(r, "corrupt_records", "Records found corrupt", status, |s| {
        s.corrupt_records
    });
    per_shard_gauge(
        r,
        "garbage_queue_depth",
        "Garbage-queue entries waiting",
        status,
        |s| s.garbage_pending,
    );
    per_shard_counter(
        r,
        "chunks_collected",
        "Chunks the garbage queue collected",
        status,
        |s| s.chunks_collected,
    );
    per_shard_counter(
        r,
        "orphan_chunks_swept",
        "Orphan chunks the sweeper collected",
        status,
        |s| s.orphan_chunks_swept,
    );
    per_shard_counter(
        r,
        "wire_requests_sent",
        "Requests sent to other nodes",
        status,
        |s| s.wire_requests_sent,
    );
    per_shard_counter(
        r,
        "wire_requests_served",
        "Requests served for other nodes",
        status,
        |s| s.wire_requests_served,
    );
    per_shard_counter(
        r,
        "cache_hits",
        "Reads served from the engine's cache",
        status,
        |s| s.cache_hits,
    );
    per_shard_counter(
        r,
        "cache_misses",
        "Reads that missed the engine's cache",
        status,
        |s| s.cache_misses,
    );
    for (name, help, field) in [
        (
            "lifecycle_passes",
            "Passes of the core's lifecycle worker over the partitions it decides for",
            (|s: &super::ShardStatus| s.lifecycle.passes) as fn(&super::ShardStatus) -> u64,
        ),
        (
            "lifecycle_examined",
            "Versions and delete markers the lifecycle worker examined",
            |s| s.lifecycle.examined,
        ),
        (
            "lifecycle_expired",
            "Current versions the lifecycle worker expired (a delete marker added, or deleted)",
            |s| s.lifecycle.expired,
        ),
        (
            "lifecycle_noncurrent_deleted",
            "Noncurrent versions the lifecycle worker deleted for good",
            |s| s.lifecycle.noncurrent_deleted,
        ),
        (
            "lifecycle_markers_removed",
            "Delete markers that were their key's only version, deleted by the lifecycle worker",
            |s| s.lifecycle.markers_removed,
        ),
        (
            "lifecycle_uploads_aborted",
            "Incomplete multipart uploads the lifecycle worker aborted",
            |s| s.lifecycle.uploads_aborted,
        ),
    ] {
        per_shard_counter(r, name, help, status, field);
    }
    per_shard_counter(
        r,
        "gateway_cache_hits",
        "Reads served from the gateway's object cache, its version confirmed by the replicas",
        status,
        |s| s.gateway_cache.hits,
    );
    per_shard_counter(
        r,
        "gateway_cache_misses",
        "Reads of objects the gateway's object cache did not hold",
        status,
        |s| s.gateway_cache.misses,
    );
    per_shard_counter(
        r,
        "gateway_cache_stale",
        "Reads of objects the gateway's object cache held in an older version than the replicas'",
        status,
        |s| s.gateway_cache.stale,
    );
    per_shard_counter(
        r,
        "gateway_cache_revalidations",
        "Digest reads the gateway's cache made to confirm a version it held as the newest",
        status,
        |s| s.gateway_cache.revalidations,
    );
    per_shard_counter(
        r,
        "gateway_cache_evictions",
        "Entries the gateway's object cache dropped to make room",
        status,
        |s| s.gateway_cache.evictions,
    );
    per_shard_gauge(
        r,
        "gateway_cache_entries",
        "Objects the gateway's object cache holds",
        status,
        |s| s.gateway_cache.entries,
    );
    per_shard_gauge(
        r,
        "gateway_cache_bytes",
        "Bytes the gateway's object cache holds",
        status,
        |s| s.gateway_cache.bytes,
    );
    per_shard_counter(
        r,
        "gateway_disk_cache_hits",
        "Reads served from the gateway's disk cache, its version confirmed by the replicas",
        status,
        |s| s.gateway_cache.disk_hits,
    );
    per_shard_counter(
        r,
        "gateway_disk_cache_dropped",
        "Disk cache entries found damaged on read (checksum, length or key) and dropped",
        status,
        |s| s.gateway_cache.disk_dropped,
    );
    per_shard_counter(
        r,
        "gateway_disk_cache_skipped",
        "Entries not written to the disk cache because its writer's queue was full",
        status,
        |s| s.gateway_cache.disk_skipped,
    );
    per_shard_counter(
        r,
        "gateway_disk_cache_write_failures",
        "Disk cache writes that failed (a full or failing cache disk)",
        status,
        |s| s.gateway_cache.disk_write_failures,
    );
    per_shard_gauge(
        r,
        "gateway_disk_cache_entries",
        "Objects the gateway's disk cache holds",
        status,
        |s| s.gateway_cache.disk_entries,
    );
    per_shard_gauge(
        r,
        "gateway_disk_cache_bytes",
        "Disk space the gateway's disk cache takes (whole 4 KiB blocks)",
        status,
        |s| s.gateway_cache.disk_bytes,
    );
    per_shard_counter(
        r,
        "cross_core_calls",
        "Calls forwarded to another core",
        status,
        |s| s.cross_core_calls,
    );
    per_shard_gauge(
        r,
        "open_connections",
        "HTTP connections served now",
        status,
        |s| s.open_connections,
    );
    requests(r, status);
    gauge(
        r,
        "buckets",
        "Buckets in the catalog",
        catalog.buckets.len() as u64,
    );
    gauge(
        r,
        "users",
        "Users in the catalog",
        catalog.users.len() as u64,
    );
    if let Some(group) = group {
        gauge(
            r,
            "raft_term",
            "The manager group's current term",
            group.term,
        );
        let leader = group.leader == Some(group.node_id);
        gauge(
            r,
            "raft_is_leader",
            "1 when this manager leads its group",
            u64::from(leader),
        );
        gauge(
            r,
            "raft_has_leader",
            "1 when this manager knows a leader",
            u64::from(group.leader.is_some()),
        );
        gauge(
            r,
            "raft_members",
            "Members of the manager group",
            group.members.len() as u64,
        );
        gauge(
            r,
            "raft_applied_index",
            "Index of the last entry this manager applied",
            group.applied_index.unwrap_or(0),
        );
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::ShardStatus;

    #[test]
    fn the_exposition_names_every_figure_with_its_shard() {
        let shard = |core, live_bytes| ShardStatus {
            core,
            partitions_owned: 512,
            live_records: 3,
            tombstones: 1,
            live_bytes,
            dead_bytes: 0,
            segments: 2,
            index_bytes: 100,
            corrupt_records: 0,
            free_segments: 1,
            disk_full: false,
            writes_refused_disk_full: 0,
            segments_set_aside: 0,
            garbage_pending: 4,
            chunks_collected: 5,
            orphan_chunks_swept: 0,
            wire_requests_sent: 6,
            wire_requests_served: 7,
            cache_hits: 8,
            cache_misses: 9,
            cross_core_calls: 10,
            open_connections: 2,
            hints_pending: vec![crate::admin::HintsPending {
                node: 4,
                shard: 1,
                count: 12,
                bytes: 4096,
            }],
            hints_replayed: 30,
            hints_dropped: 0,
            anti_entropy_passes: 0,
            anti_entropy_repaired: 0,
            partitions_under_replicated: 0,
            oldest_unrepaired_partition_seconds: 0,
            requests: vec![crate::admin::RequestStatus {
                operation: "GetObject".into(),
                status: 200,
                requests: 3,
                bytes_in: 0,
                bytes_out: 300,
                latency_us_sum: 1_500,
                latency_buckets: vec![2, 1, 0],
            }],
            gateway_cache: crate::admin::GatewayCacheStatus {
                hits: 21,
                entries: 2,
                ..Default::default()
            },
            lifecycle: crate::admin::LifecycleStatus {
                expired: 4,
                ..Default::default()
            },
        };
        let status = NodeStatus {
            version: "0".into(),
            s3_endpoint: String::new(),
            cores: 2,
            partitions: 1024,
            uptime_secs: 9,
            shards: vec![shard(0, 4096), shard(1, 8192)],
            latency_buckets_us: vec![250, 1_000],
            clock_offset_us: Some(-1_500),
            peer_clocks: vec![crate::cluster::PeerClock {
                node: 3,
                offset_us: 2_500,
                round_trip_us: 80,
            }],
        };
        let group = GroupStatus {
            node_id: 1,
            state: "leader".into(),
            term: 3,
            leader: Some(1),
            members: Vec::new(),
            applied_index: Some(12),
        };
        let text = render(&status, Some(&group), &ManagerState::default());
        for line in [
            "leofs_live_bytes{core=\"1\"} 8192",
            "leofs_garbage_queue_depth{core=\"0\"} 4",
            "leofs_wire_requests_served_total{core=\"0\"} 7",
            "leofs_raft_term 3",
            "leofs_clock_offset_seconds -0.0015",
            "leofs_peer_clock_offset_seconds{peer=\"3\"} 0.0025",
            "leofs_gateway_cache_hits_total{core=\"1\"} 21",
            "leofs_lifecycle_expired_total{core=\"1\"} 4",
            "leofs_gateway_cache_entries{core=\"0\"} 2",
            "leofs_hints_pending{core=\"1\",target_node=\"4\",target_shard=\"1\"} 12",
            "leofs_hints_replayed_total{core=\"0\"} 30",
            "leofs_raft_is_leader 1",
            "leofs_raft_applied_index 12",
            "leofs_buckets 0",
            "# TYPE leofs_chunks_collected counter",
            "leofs_cache_misses_total{core=\"1\"} 9",
            "leofs_s3_requests_total{operation=\"GetObject\",status=\"200\"} 6",
            "leofs_s3_response_bytes_total{operation=\"GetObject\"} 600",
            "leofs_s3_request_duration_seconds_bucket{le=\"0.00025\",operation=\"GetObject\"} 4",
            "leofs_s3_request_duration_seconds_bucket{le=\"0.001\",operation=\"GetObject\"} 6",
            "leofs_s3_request_duration_seconds_count{operation=\"GetObject\"} 6",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
